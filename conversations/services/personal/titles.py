"""Chat titles written by a model: after a chat's first answer, and again when the user asks from the chat's menu.

Off the answer's path: ``after_answer`` starts a task of its own once the answer is stored and ``done`` has gone out,
and nothing it does (an upstream error, a refused parameter, too few credits, a bug) reaches the answer. A failure
leaves the title the chat already has (its first message's words, ``context.title_from``).

The request is small and non-streaming, with a tight output budget. Per-model rules (kimi/params.py) decide it: a
model with a thinking switch is asked without thinking; a model that always thinks gets room to think first (and
kimi-k3 the ``low`` effort), since reasoning spends the same budget and a tight one would leave no title
[notes §3 "Output budget"]. ``TITLE_MODEL`` may name a cheaper model than the one that answered.

Cost: reserved and settled like an answer, on a ledger row of kind ``title`` (usage page: "Title"); with
``TITLE_COST_ABSORBED`` the operator pays and the ledger is not touched. A user whose balance cannot cover the
reservation keeps the first-message title. The new title is announced to every socket of the user as a
``conversation`` frame (docs/websocket-protocol.md).
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass

from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.utils.translation import gettext

from conversations.kimi import errors as kimi_errors
from conversations.kimi.configured import get_client
from conversations.kimi.events import Usage
from conversations.kimi.params import ChatRequest, output_budget, rules_for
from conversations.kimi.tokens import estimate_messages_locally
from conversations.models import Conversation, CreditTransaction, Message
from conversations.serializers import conversation_to_dict
from conversations.services.billing import credits
from conversations.services.chat.relay import user_group

logger = logging.getLogger(__name__)

TITLE_MAX_CHARS = 80  # a generated title longer than this is cut at a word
TITLE_OUTPUT_TOKENS = 48  # without reasoning: a few words, with room for a verbose model
TITLE_THINKING_OUTPUT_TOKENS = 2048  # an always-thinking model reasons first on the same budget
QUESTION_CHARS = 2000  # of the first message, sent to name the chat
ANSWER_CHARS = 800  # of the first answer
INSTRUCTION = (
    "You write the title of a chat. Reply with the title only: at most 6 words (for Chinese, Japanese or Korean "
    "at most 12 characters), in the language of the user's message, with no quotes and no final punctuation."
)

# Tasks of this process, kept so the event loop does not drop them before they end.
_running: set[asyncio.Task] = set()


class TitleFailed(Exception):
    """No title was written; the message says why, for the person who asked again from the menu."""

    def __init__(self, message: str, code: str = "title_failed"):
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class _Chat:
    conversation_id: int
    owner_id: int
    model: str
    question: str
    answer: str
    answer_id: int


def title_request(model: str, question: str, answer: str, provider=None) -> ChatRequest:
    """The title's request for ``model``, within its parameter rules."""
    messages = [
        {"role": "system", "content": INSTRUCTION},
        {
            "role": "user",
            "content": f"User: {question[:QUESTION_CHARS]}\n\nAssistant: {answer[:ANSWER_CHARS]}\n\nTitle:",
        },
    ]
    rules = rules_for(model, provider)
    thinking = None
    effort = None
    budget = TITLE_OUTPUT_TOKENS
    if rules.thinking == "toggle":
        thinking = False
    elif rules.thinking == "always":
        budget = TITLE_THINKING_OUTPUT_TOKENS
        effort = "low" if "low" in rules.reasoning_efforts else None
    budget = output_budget(model, budget, estimate_messages_locally(messages), provider)
    return ChatRequest(model=model, messages=messages, max_tokens=budget, thinking=thinking, reasoning_effort=effort)


def clean_title(text: str) -> str:
    """The model's reply as a title: its first non-empty line, without quotes, a "Title:" label, Markdown marks or
    final punctuation, cut at a word. "" when nothing is left."""
    line = next((part.strip() for part in text.strip().splitlines() if part.strip()), "")
    marks = "#*_`\"'“”‘’「」『』«» "
    line = re.sub(r"^(title|标题)\s*[:：]\s*", "", line.strip(marks), flags=re.IGNORECASE)
    line = line.strip(marks)
    line = line.rstrip(".。!！?？,，;；:：").strip()
    line = " ".join(line.split())
    if len(line) > TITLE_MAX_CHARS:
        cut = line[:TITLE_MAX_CHARS]
        line = (cut[: cut.rindex(" ")] if " " in cut[TITLE_MAX_CHARS // 2 :] else cut).rstrip() + "…"
    return line


def _chat_for_title(conversation_id: int, *, user=None, answer_id: int | None = None) -> _Chat | None:
    """What the title is written from: the first question of the live thread and its answer. ``answer_id``: only
    if that answer is the chat's first (a regenerated or later answer does not rename a chat) and the title is
    still the first message's. ``user``: only the owner's chat (a title asked for from the menu)."""
    conversations = Conversation.objects.filter(pk=conversation_id)
    if user is not None:
        conversations = conversations.for_user(user)
    conversation = conversations.first()
    if conversation is None:
        return None
    if answer_id is not None and conversation.title_source:
        return None
    live = Message.objects.filter(conversation=conversation).current().order_by("id")
    question = live.filter(role=Message.Role.USER).first()
    answer = live.filter(role=Message.Role.ASSISTANT).exclude(content="").first()
    if question is None:
        return None
    if answer_id is not None and (answer is None or answer.pk != answer_id):
        return None
    return _Chat(
        conversation_id=conversation.pk,
        owner_id=conversation.owner_id,
        model=settings.KIMICHAT_TITLE_MODEL or (answer.model if answer else "") or conversation.model,
        question=question.content,
        answer=answer.content if answer else "",
        answer_id=answer.pk if answer else question.pk,
    )


def _reserve(chat: _Chat, request: ChatRequest) -> credits.Reservation | None:
    if settings.KIMICHAT_TITLE_COST_ABSORBED:
        return None
    from django.contrib.auth import get_user_model

    user = get_user_model()(pk=chat.owner_id)
    return credits.reserve(
        user,
        model=request.model,
        prompt_tokens=estimate_messages_locally(request.messages),
        max_completion_tokens=request.max_tokens,
        message=Message(pk=chat.answer_id),  # the row points at the answer the chat was named after
        kind=CreditTransaction.Kind.TITLE,
    )


def _store(chat: _Chat, title: str, *, only_if_untitled: bool) -> Conversation | None:
    """Write the title, unless (automatic titles) the user renamed the chat meanwhile; None if nothing changed."""
    rows = Conversation.objects.filter(pk=chat.conversation_id)
    if only_if_untitled:
        rows = rows.filter(title_source="")
    if not rows.update(title=title, title_source="generated"):
        return None
    return Conversation.objects.filter(pk=chat.conversation_id).first()


async def _ask(chat: _Chat, db=database_sync_to_async) -> str:
    """The title from the model, paid for; raises TitleFailed (every reservation closed) when there is none."""
    client = get_client()
    try:
        request = title_request(chat.model, chat.question, chat.answer, client.provider)
    except kimi_errors.KimiError as exc:
        raise TitleFailed(exc.message) from None
    try:
        reservation = await db(_reserve)(chat, request)
    except credits.InsufficientCredits:
        raise TitleFailed(gettext("You do not have enough credits for a title."), "insufficient_credits") from None
    result = None
    try:
        result = await client.complete_chat(request)
    except kimi_errors.KimiError as exc:
        if reservation is not None:
            await db(credits.release)(reservation, note=f"title: {exc.code}")
        raise TitleFailed(exc.message) from None
    except BaseException:
        if reservation is not None:  # cancelled or a bug: the held credits go back
            await asyncio.shield(db(credits.release)(reservation, note="title: not finished"))
        raise
    if reservation is not None:
        usage = result.usage or Usage(prompt_tokens=reservation.prompt_tokens)
        await db(credits.settle)(reservation, message=None, usage=usage, estimated=result.usage is None)
    title = clean_title(result.text)
    if not title:
        raise TitleFailed(gettext("The model wrote no title; try again."))
    return title


async def announce(conversation: Conversation) -> None:
    """A ``conversation`` frame to every socket of the owner, on every worker (their sidebars and headers)."""
    event = {"type": "chat.conversation", "conversation": conversation_to_dict(conversation)}
    await get_channel_layer().group_send(user_group(conversation.owner_id), event)


async def generate(
    conversation_id: int, *, user=None, answer_id: int | None = None, db=database_sync_to_async
) -> Conversation | None:
    """Write and store a title, announce it; the conversation, or None when it is not (or no longer) to be named.
    Raises TitleFailed. ``answer_id``: the automatic title after that answer; else the user's own request.
    ``db``: how the ORM is reached, ``database_sync_to_async`` in a task of its own, ``sync_to_async`` in a request
    (whose connection Django manages)."""
    chat = await db(_chat_for_title)(conversation_id, user=user, answer_id=answer_id)
    if chat is None:
        return None
    title = await _ask(chat, db)
    conversation = await db(_store)(chat, title, only_if_untitled=answer_id is not None)
    if conversation is not None:
        await announce(conversation)
    return conversation


def after_answer(conversation_id: int, answer_id: int) -> None:
    """Name the chat after its first answer, in a task of its own; whatever happens there stays there."""
    if not settings.KIMICHAT_AUTO_TITLES:
        return

    async def run() -> None:
        try:
            await generate(conversation_id, answer_id=answer_id)
        except TitleFailed as exc:
            logger.info("no title for conversation %s: %s", conversation_id, exc)
        except Exception:
            logger.exception("title of conversation %s failed", conversation_id)

    task = asyncio.create_task(run(), name=f"kimichat-title-{conversation_id}")
    _running.add(task)
    task.add_done_callback(_running.discard)


def release_orphaned(before=None) -> int:
    """Release the title reservations still open from before ``before`` (default: now), left by a worker that died
    while a title was being written (``manage.py reapgenerations`` at start-up, when no worker runs). Their requests
    never finished here: nothing is charged."""
    from django.utils import timezone

    rows = CreditTransaction.objects.filter(
        kind=CreditTransaction.Kind.TITLE,
        state=CreditTransaction.State.OPEN,
        created_at__lt=before or timezone.now(),
    ).select_related("account")
    released = 0
    for row in rows:
        reservation = credits.Reservation(
            transaction_id=row.pk,
            user_id=row.account.user_id,
            model=row.model,
            amount=-row.amount,
            prompt_tokens=row.prompt_tokens,
            message_id=row.message_id,
        )
        try:
            credits.release(reservation, note="title: worker_lost")
        except credits.ReservationClosed:
            continue  # settled meanwhile
        released += 1
    return released


async def wait_for_titles() -> None:
    """Let the titles being written finish (tests; a worker's shutdown)."""
    while _running:
        await asyncio.gather(*list(_running), return_exceptions=True)
