"""The estimate the composer shows before sending: a message's tokens with its attachments, whether it fits the
model's window, and the most it may cost — the same numbers the credit reservation will use."""

from __future__ import annotations

from django.conf import settings
from django.utils.translation import gettext as _

from conversations.kimi import errors as kimi_errors
from conversations.kimi.configured import get_client
from conversations.kimi.params import output_budget
from conversations.kimi.tokens import estimate_tokens_locally
from conversations.models import Conversation
from conversations.services.attachments import prompt
from conversations.services.attachments.limits import AttachmentRefused
from conversations.services.billing import credits
from conversations.services.chat.context import answer_budget, context_window
from conversations.services.projects import context as project_context


def _bad(message: str, field: str) -> AttachmentRefused:
    return AttachmentRefused("bad_parameter", message, field=field)


def _ids(value) -> list[int]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise _bad(_("'attachments' must be a list of attachment ids."), "attachments")
    return value


def estimate_message(user, body) -> dict:
    if not isinstance(body, dict):
        raise _bad(_("The body must be a JSON object."), "body")
    content = body.get("content", "")
    if not isinstance(content, str):
        raise _bad(_("'content' must be a string."), "content")
    conversation = None
    if body.get("conversation_id") is not None:
        conversation = Conversation.objects.for_user(user).filter(pk=body["conversation_id"]).first()
        if conversation is None:
            raise AttachmentRefused("not_found", _("No such conversation."), status=404)
    model = body.get("model") or (conversation.model if conversation else settings.KIMI_DEFAULT_MODEL)
    if not isinstance(model, str) or len(model) > 100:
        raise _bad(_("'model' must be a model name."), "model")
    attachments = prompt.resolve(user, _ids(body.get("attachments")))
    system_prompt = ""
    if conversation is not None:  # with its project's instructions and files, as the send will count them
        documents = [d["content"] for d in project_context.documents(conversation)]
        system_prompt = "\n\n".join(
            [project_context.system_prompt(conversation, conversation.system_prompt), *documents]
        )
    max_tokens = conversation.max_tokens if conversation else None
    window = context_window(model)
    files = prompt.attachment_tokens(attachments)
    prompt_tokens = estimate_tokens_locally(content) + estimate_tokens_locally(system_prompt) + 4 + files
    result = {
        "model": model,
        "prompt_tokens": prompt_tokens,
        "attachment_tokens": files,
        "attachments": [{"id": a.pk, "name": a.name, "kind": a.kind, "tokens": a.tokens} for a in attachments],
        "context_window": window,
        "fits": True,
        "message": "",
        "max_completion_tokens": 0,
        "estimated_cost": "0",
    }
    refusal = prompt.too_long(
        content,
        attachments,
        system_tokens=estimate_tokens_locally(system_prompt),
        window=window,
        reserve=min(answer_budget(max_tokens), window // 4),
    )
    try:
        budget = output_budget(model, max_tokens, prompt_tokens, get_client().provider)
    except kimi_errors.ContextTooLong:
        budget = 0
    if refusal is not None or budget == 0:
        result.update(fits=False, message=refusal.message if refusal else _("The message does not fit the window."))
        return result
    cost = credits.estimate_cost(model, prompt_tokens, budget)
    result.update(max_completion_tokens=budget, estimated_cost=str(cost))
    return result
