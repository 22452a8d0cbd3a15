"""The send path: check and do, in one transaction, before an answer runs.

``prepare_send``, ``prepare_regenerate`` and ``prepare_edit`` validate a request, store the user message and an
assistant placeholder in status ``streaming`` and reserve its credits; a refusal raises ``SendRefused`` and stores
nothing. ``aprepare_*`` run the rate limit and the preparation in one trip to the database thread. The accepted
answer is then started by ``registry.GenerationRegistry.launch``.
"""

from __future__ import annotations

import logging
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone, translation
from django.utils.translation import gettext

from conversations.kimi import errors as kimi_errors
from conversations.kimi.configured import get_client
from conversations.kimi.params import ChatRequest, output_budget, recommended_output, resolve_params, rules_for
from conversations.kimi.tokens import estimate_messages_locally, estimate_tokens_locally
from conversations.models import Conversation, Message
from conversations.services import batching, db_threads
from conversations.services.accounts import approval, model_access, sessions
from conversations.services.attachments import messages as attached
from conversations.services.attachments.limits import AttachmentRefused
from conversations.services.billing import credits, pricing, search_fees
from conversations.services.billing.ratelimit import RateLimited, check_rate_limit
from conversations.services.chat import tools
from conversations.services.chat.context import (
    ContextTooLong,
    build_messages,
    check_fits,
    history_token_budget,
    title_from,
)
from conversations.services.personal import preferences
from conversations.services.projects import context as project_context
from conversations.services.projects.membership import ProjectNotFound, owned_project_id

logger = logging.getLogger(__name__)


class SendRefused(Exception):
    """A send (or regenerate/edit) that was not accepted. Nothing was stored."""

    def __init__(self, code: str, message: str, *, retryable: bool = False, conversation_id=None, **extra):
        super().__init__(message)
        self.code = code
        self.message = message
        self.retryable = retryable
        self.conversation_id = conversation_id
        self.extra = extra


@dataclass(frozen=True)
class Continued:
    """How a continued answer stood before it went back to ``streaming``: restored if the continuation adds nothing."""

    status: str
    finish_reason: str
    error_code: str
    error_message: str
    seq: int
    had_reasoning: bool


@dataclass
class Accepted:
    conversation: Conversation
    assistant: Message
    user_message: Message | None = None  # None for a regenerate
    created_conversation: bool = False
    duplicate: bool = False  # a resend of a client_msg_id already stored: nothing new was created
    superseded: list[Message] = field(default_factory=list)  # earlier versions this send replaced
    request: ChatRequest | None = None
    reservation: credits.Reservation | None = None
    continued: Continued | None = None  # a Continue: the answer's row runs again from its stored text and seq


# --- check and do (synchronous, one transaction each) -----------------------------------------------------------


def _refuse_not_found(conversation_id) -> SendRefused:
    return SendRefused("not_found", "This conversation does not exist.", conversation_id=conversation_id)


def _existing(user, client_msg_id: uuid.UUID) -> Accepted | None:
    """The messages a client_msg_id already produced, for an idempotent resend."""
    stored = Message.objects.for_user(user).select_related("conversation").filter(client_msg_id=client_msg_id).first()
    if stored is None:
        return None
    conversation = stored.conversation
    if stored.role == Message.Role.ASSISTANT:  # a regenerate carries its id on the new answer
        return Accepted(conversation=conversation, assistant=stored, duplicate=True)
    answer = (
        Message.objects.filter(conversation=conversation, role=Message.Role.ASSISTANT, id__gt=stored.pk)
        .order_by("id")
        .first()
    )
    return Accepted(conversation=conversation, assistant=answer, user_message=stored, duplicate=True)


def _after_duplicate_id(user, client_msg_id: uuid.UUID) -> Accepted:
    """The client_msg_id hit its unique constraint: a concurrent resend of ours committed first (answer with what it
    stored), or the id belongs to someone else's message (refuse: retrying with it can never succeed)."""
    duplicate = _existing(user, client_msg_id)
    if duplicate is None:
        raise SendRefused("bad_frame", "'client_msg_id' is already in use; send with a new one.")
    return duplicate


def _locked_conversation(user, conversation_id: int) -> Conversation:
    # The row lock serializes sends in one conversation (two tabs at once): the second sees the first's answer.
    conversation = Conversation.objects.for_user(user).select_for_update().filter(pk=conversation_id).first()
    if conversation is None:
        raise _refuse_not_found(conversation_id)
    return conversation


def _check_project(user, new_conversation: dict | None) -> None:
    """A send that starts a chat in a project: the project must be the user's (another user's is a missing one)."""
    try:
        owned_project_id(user.pk, (new_conversation or {}).get("project_id"), lock=True)
    except ProjectNotFound:
        raise SendRefused("not_found", gettext("No such project.")) from None


class _AlreadyStored(Exception):  # noqa: N818 - not an error: the frame was a resend
    """The frame's client_msg_id was stored by a concurrent resend while this one waited for the conversation."""

    def __init__(self, accepted: Accepted) -> None:
        self.accepted = accepted


def _check_not_busy(conversation: Conversation, user, client_msg_id: uuid.UUID) -> None:
    """Refuse while an answer runs in the conversation, unless it is this frame's own: a resend (a reconnect, a
    second tab) that waited for the conversation's row lock while its first attempt was stored and started
    (``_AlreadyStored``: the caller answers with what was stored, as for any resend)."""
    if conversation.messages.in_progress().exists():
        if (duplicate := _existing(user, client_msg_id)) is not None:
            raise _AlreadyStored(duplicate)
        raise SendRefused(
            "busy",
            "An answer is still being written in this conversation. Wait for it or stop it first.",
            retryable=True,
            conversation_id=conversation.pk,
        )


def _check_concurrency(user, conversation_id) -> None:
    limit = settings.KIMICHAT_MAX_CONCURRENT_ANSWERS
    if Message.objects.for_user(user).in_progress().count() > limit:  # the new placeholder is counted already
        raise SendRefused(
            "too_many_answers",
            f"You already have {limit} answers being written at once. Wait for one to finish.",
            retryable=True,
            conversation_id=conversation_id,
            limit=limit,
        )


def _chat_request(
    conversation: Conversation,
    model: str,
    thread: list[Message],
    *,
    continuing: Message | None = None,
    own_prompt: str | None = None,
) -> tuple[ChatRequest, int]:
    """The upstream request and its estimated prompt tokens. Its output budget (``max_tokens``) is always set: the
    user's limit or a full answer's worth for the model, clamped to what the window leaves after the prompt. The
    same number is reserved in credits, so an answer can never cost more than was reserved.

    ``continuing``: an answer that was cut off, continued in partial mode from its text (or asked again when it has
    only reasoning: partial mode needs text to continue). Its budget is at least a full answer's worth, since the
    user's limit is what cut it off. ``own_prompt``: the chat's prompt with the owner's custom instructions, when the
    caller read them already (``preferences.system_prompt_with``)."""
    provider = get_client().provider
    request = ChatRequest(
        model=model,
        messages=[{"role": "user", "content": "-"}],  # replaced below, once the thinking mode is known
        temperature=conversation.temperature,
        top_p=conversation.top_p,
        max_tokens=conversation.max_tokens,
        json_mode=conversation.json_mode,
        thinking=conversation.thinking,
        # Kept on the conversation across model switches; only a model that takes it is sent it.
        reasoning_effort=conversation.reasoning_effort if rules_for(model, provider).reasoning_efforts else None,
        prompt_cache_key=f"kimichat-conversation-{conversation.pk}",
        continue_from=(continuing.content or None) if continuing is not None else None,
        tools=tools.search_tools(conversation.web_search),
    )
    if conversation.web_search and (refusal := tools.web_search_refusal(model)):
        raise SendRefused("invalid_parameter", refusal, conversation_id=conversation.pk)
    try:
        params = resolve_params(request, provider)
        request.messages, prompt_tokens = build_messages(
            thread,
            model=model,
            # The project's instructions and files (services/projects/context.py) go with the chat's own prompt and
            # the user's custom instructions (services/personal/preferences.py).
            system_prompt=project_context.system_prompt(
                conversation, preferences.system_prompt_for(conversation) if own_prompt is None else own_prompt
            ),
            documents=project_context.documents(conversation),
            max_tokens=conversation.max_tokens,
            thinks=params.thinks,
        )
        limit = conversation.max_tokens
        if continuing is not None:
            prompt_tokens += estimate_tokens_locally(request.continue_from or "")
            limit = max(limit or 0, recommended_output(model, provider))
        request.max_tokens = output_budget(model, limit, prompt_tokens, provider)
    except kimi_errors.ContextTooLong as exc:
        raise SendRefused("context_too_long", exc.message, conversation_id=conversation.pk) from None
    except kimi_errors.InvalidParameter as exc:
        raise SendRefused("invalid_parameter", exc.message, conversation_id=conversation.pk) from None
    except ContextTooLong as exc:
        raise SendRefused(
            "context_too_long", str(exc), conversation_id=conversation.pk, tokens=exc.tokens, window=exc.window
        ) from None
    return request, prompt_tokens


def _start_answer(
    user,
    conversation: Conversation,
    model: str,
    thread: list[Message],
    *,
    price: pricing.Price | None = None,
    created: bool = False,
    **fields,
) -> Accepted:
    """Store the assistant placeholder, reserve its credits, check the per-user cap. Inside the caller's atomic.
    ``price``: the model's price as ``_check_affordable`` read it in this transaction; ``created``: the conversation
    was created by this send (its ``updated_at`` is already now)."""
    request, prompt_tokens = _chat_request(conversation, model, thread)
    assistant = answer_row(conversation, model, thread[-1], **fields)
    assistant.save(force_insert=True)
    reservation = _reserve(user, conversation, assistant, request, prompt_tokens, price=price, bump=not created)
    assistant.prompt_tokens = prompt_tokens
    return Accepted(conversation=conversation, assistant=assistant, request=request, reservation=reservation)


def _reserve(
    user,
    conversation: Conversation,
    assistant: Message,
    request: ChatRequest,
    prompt_tokens: int,
    *,
    price: pricing.Price | None = None,
    bump: bool = True,
) -> credits.Reservation:
    """Reserve the answer's credits, check the per-user cap, bump the conversation (``bump``: to the top of the
    sidebar; a conversation created in this transaction is there already). Inside the caller's atomic."""
    reserved_prompt, fees = _reservation_terms(request, prompt_tokens, assistant.model)
    try:
        # Locks the user's credit account row until commit: concurrent sends of one user queue here, which also
        # makes the concurrency cap below exact.
        reservation = credits.reserve(
            user,
            model=assistant.model,
            prompt_tokens=reserved_prompt,
            max_completion_tokens=request.max_tokens,
            message=assistant,
            fees=fees,
            price=price,
        )
    except credits.InsufficientCredits as exc:
        raise SendRefused(
            "insufficient_credits",
            f"This answer may cost up to {exc.estimated_cost.normalize():f} credits and you have "
            f"{exc.balance.normalize():f}. Ask an administrator for more credits.",
            conversation_id=conversation.pk,
            balance=str(exc.balance),
            estimated_cost=str(exc.estimated_cost),
        ) from None
    except credits.BudgetExceeded as exc:  # a spending cap (services/billing/budgets.py): code names which
        raise SendRefused(exc.code, exc.message(), conversation_id=conversation.pk, **exc.details()) from None
    _check_concurrency(user, conversation.pk)
    if bump:
        conversation.updated_at = timezone.now()
        conversation.save(update_fields=["updated_at"])
    return reservation


def _reservation_terms(request: ChatRequest, prompt_tokens: int, model: str) -> tuple[int, Decimal]:
    """(prompt tokens, fees) an answer reserves for. A tool-using answer reserves for every round its loop may run,
    and a search's fee per round (chat/tools.py)."""
    reserved_prompt, searches = tools.reservation_size(request, prompt_tokens)
    return reserved_prompt, search_fees.search_fee(model) * searches if searches else Decimal(0)


def _check_model(user, model: str, known_models: list[str], conversation_id, allowed=model_access.is_allowed) -> None:
    """``allowed(user, model)``: the allow-lists' answer (the bulk path passes the lists it read for many users)."""
    if model not in known_models:
        raise SendRefused(
            "unknown_model", f"The model {model[:100]!r} is not available.", conversation_id=conversation_id
        )
    if not allowed(user, model):  # the allow-lists of the user's groups
        raise SendRefused(model_access.CODE, model_access.refusal(model), conversation_id=conversation_id, model=model)


# --- the rows a send writes (unsaved; the one-by-one path saves each, services/chat/bulk_send.py inserts many) --


def conversation_row(user, content: str, model: str | None, fields: dict) -> Conversation:
    """The conversation a send starts: ``fields``, the validated settings of the frame's ``conversation`` object."""
    return Conversation(
        owner=user,
        model=model or settings.KIMI_DEFAULT_MODEL,
        title=title_from(content),
        # A temporary chat is seen by its tab from the start (services/history/temporary.py).
        temporary_seen_at=timezone.now() if fields.get("temporary") else None,
        **fields,
    )


def question_row(conversation: Conversation, content: str, client_msg_id: uuid.UUID, parent: Message | None) -> Message:
    """The user's message, stored complete."""
    return Message(
        conversation=conversation,
        parent=parent,
        role=Message.Role.USER,
        content=content,
        client_msg_id=client_msg_id,
        status=Message.Status.COMPLETE,
        completed_at=timezone.now(),
    )


def answer_row(conversation: Conversation, model: str, parent: Message, **fields) -> Message:
    """The answer's row while it streams; ``parent``: the question it answers (the tree's branches,
    services/history/branches.py)."""
    return Message(
        conversation=conversation,
        role=Message.Role.ASSISTANT,
        status=Message.Status.STREAMING,
        model=model,
        parent=parent,
        **fields,
    )


def _user_message(
    conversation: Conversation, content: str, client_msg_id: uuid.UUID, files=(), *, parent: Message | None = None
) -> Message:
    message = question_row(conversation, content, client_msg_id, parent)
    message.save(force_insert=True)
    with _refusing(conversation.pk):
        attached.attach(message, list(files))
    return message


@contextmanager
def _refusing(conversation_id):
    """An attachment refusal is a send refusal (the transaction rolls back: nothing stored)."""
    try:
        yield
    except AttachmentRefused as exc:
        raise SendRefused(exc.code, exc.message, conversation_id=conversation_id, **exc.extra) from None


HISTORY_PAGE = 100  # messages per query while reading a thread newest first
# Up to this many live messages the whole thread is read, so trimming can keep its opening turns in front of the gap
# (context.py: the stable prefix Kimi's cache serves). A longer thread is read only as far as the window reaches.
WHOLE_THREAD_MESSAGES = 2000


def _thread(conversation: Conversation, model: str, *, before: int | None = None) -> list[Message]:
    """The live thread (the active branch, root to leaf; ``before``: only its messages older than that id), oldest
    first: whole up to ``WHOLE_THREAD_MESSAGES`` messages, else its newest messages, as
    many as can reach ``model``'s window. ``build_messages`` trims what is read to fit.

    Read newest first, ``HISTORY_PAGE`` rows per query. A long thread stops once the messages read would alone
    overflow the window (by an estimate that never exceeds ``build_messages``' for the same message: content only,
    no reasoning) and a user message was seen (a regenerate or edit needs the last one). A 20,000-message
    conversation cost a worker's database thread, which every socket shares, about 2 s per send when the whole of it
    was read; a thread of a few hundred turns costs a few milliseconds, and reading it whole keeps the prompt's
    prefix stable (cache hits) where dropping the oldest read turn would move it on every send.
    """
    budget = history_token_budget(model, conversation.max_tokens)
    whole = None  # counted only when the first page is full: most threads fit in one page, read without a COUNT
    newest_first: list[Message] = []
    # An edit reads the thread before the edited question only (its new version is the question answered).
    tokens, seen_user, until = 0, before is not None, before
    while True:
        rows = conversation.messages.current()
        if until is not None:
            rows = rows.filter(id__lt=until)
        page = list(rows.order_by("-id").prefetch_related("attachments")[:HISTORY_PAGE])
        for message in page:
            newest_first.append(message)
            tokens += estimate_messages_locally([{"role": message.role, "content": message.content}])
            seen_user = seen_user or message.role == Message.Role.USER
        if len(page) < HISTORY_PAGE:
            return newest_first[::-1]
        if whole is None:
            whole = conversation.messages.current().count() <= WHOLE_THREAD_MESSAGES
        if not whole and tokens > budget and seen_user:
            return newest_first[::-1]
        until = page[-1].pk


def _check_affordable(
    user,
    conversation: Conversation,
    model: str,
    content: str = "",
    balance: Decimal | None = None,
    price: pricing.Price | None = None,
) -> pricing.Price:
    """Refuse before any history is read when the balance cannot pay even the least this answer can cost (the
    new message alone as the prompt, one token of answer). The full reservation (``_start_answer``) follows, under
    the account's row lock: it is the exact check, so ``balance`` may be the one ``admit`` read just before.
    Returns the model's price it read (or ``price``, read by the caller), for the reservation to use (one read per
    send)."""
    prompt = [{"role": "system", "content": conversation.system_prompt}, {"role": "user", "content": content}]
    price = pricing.price_for(model) if price is None else price
    least = credits.estimate_cost(model, estimate_messages_locally(prompt), 1, price=price)
    if balance is None:
        balance = credits.get_balance(user)
    if balance < least:
        raise SendRefused(
            "insufficient_credits",
            gettext(
                "This answer costs at least %(cost)s credits and you have %(balance)s. "
                "Ask an administrator for more credits."
            )
            % {"cost": f"{least.normalize():f}", "balance": f"{balance.normalize():f}"},
            conversation_id=conversation.pk,
            balance=str(balance),
            estimated_cost=str(least),
        )
    return price


def _files_for_send(user, conversation: Conversation, attachments, model: str, content: str, previous=None):
    """The attachments a send or edit carries, checked for ``model`` and the window (``AttachmentRefused`` becomes a
    ``SendRefused``); ``previous``: the edited message, whose own files may be kept."""
    with _refusing(conversation.pk):
        return attached.for_send(
            user,
            attachments,
            model=model,
            content=content,
            system_prompt=conversation.system_prompt,
            max_tokens=conversation.max_tokens,
            previous=previous,
        )


def prepare_send(
    user,
    *,
    conversation_id: int | None,
    content: str,
    client_msg_id: uuid.UUID,
    model: str | None,
    known_models: list[str],
    new_conversation: dict | None = None,
    attachments: tuple[int, ...] = (),
    balance: Decimal | None = None,
) -> Accepted:
    """``new_conversation``: validated field values (system prompt, settings) for a conversation this send creates.
    ``balance``: the balance ``admit`` read in the same trip (saves reading it again for the early refusal)."""
    duplicate = _existing(user, client_msg_id)
    if duplicate is not None:
        return duplicate
    try:
        with transaction.atomic():
            created = conversation_id is None
            if created:
                _check_project(user, new_conversation)
                fields = new_conversation or {}
                conversation = conversation_row(user, content, model, fields)
                conversation.save(force_insert=True)
            else:
                conversation = _locked_conversation(user, conversation_id)
                _check_not_busy(conversation, user, client_msg_id)
            chosen = model or conversation.model or settings.KIMI_DEFAULT_MODEL
            _check_model(user, chosen, known_models, conversation_id)
            try:
                check_fits(
                    content, model=chosen, system_prompt=conversation.system_prompt, max_tokens=conversation.max_tokens
                )
            except ContextTooLong as exc:
                raise SendRefused(
                    "context_too_long", str(exc), conversation_id=conversation_id, tokens=exc.tokens, window=exc.window
                ) from None
            price = _check_affordable(user, conversation, chosen, content, balance)
            files = _files_for_send(user, conversation, attachments, chosen, content)
            thread = [] if created else _thread(conversation, chosen)
            user_message = _user_message(
                conversation, content, client_msg_id, files, parent=thread[-1] if thread else None
            )
            if not created and not conversation.title:
                conversation.title = title_from(content)
                conversation.save(update_fields=["title"])
            accepted = _start_answer(user, conversation, chosen, [*thread, user_message], price=price, created=created)
    except IntegrityError:
        return _after_duplicate_id(user, client_msg_id)
    except _AlreadyStored as stored:
        return stored.accepted
    accepted.user_message = user_message
    accepted.created_conversation = created
    return accepted


def _last_turn(conversation: Conversation, model: str) -> tuple[list[Message], Message, Message | None]:
    """The live thread (as much as reaches the window), its last user message, and the answer to it (if any)."""
    thread = _thread(conversation, model)
    users = [m for m in thread if m.role == Message.Role.USER]
    if not users:
        raise SendRefused("not_found", "There is no message to answer again.", conversation_id=conversation.pk)
    last_user = users[-1]
    answers = [m for m in thread if m.role == Message.Role.ASSISTANT and m.pk > last_user.pk]
    return thread, last_user, (answers[-1] if answers else None)


def prepare_regenerate(
    user,
    *,
    conversation_id: int,
    client_msg_id: uuid.UUID,
    model: str | None,
    known_models: list[str],
    balance: Decimal | None = None,
) -> Accepted:
    duplicate = _existing(user, client_msg_id)
    if duplicate is not None:
        return duplicate
    try:
        with transaction.atomic():
            conversation = _locked_conversation(user, conversation_id)
            _check_not_busy(conversation, user, client_msg_id)
            chosen = model or conversation.model
            _check_model(user, chosen, known_models, conversation_id)
            price = _check_affordable(user, conversation, chosen, balance=balance)
            thread, last_user, old_answer = _last_turn(conversation, chosen)
            upto = [m for m in thread if m.pk <= last_user.pk]
            with _refusing(conversation_id):
                attached.check_thread(upto, chosen)
            accepted = _start_answer(user, conversation, chosen, upto, price=price, client_msg_id=client_msg_id)
            if old_answer is not None:
                old_answer.superseded_by = accepted.assistant
                old_answer.save(update_fields=["superseded_by"])
                accepted.superseded = [old_answer]
    except IntegrityError:
        return _after_duplicate_id(user, client_msg_id)
    except _AlreadyStored as stored:
        return stored.accepted
    return accepted


def _edited(conversation: Conversation, message_id: int) -> Message:
    """The user message an edit replaces: any question of the active branch (``current``), not an answer."""
    # Its files are read now: it is published (serialized on the event loop, where a query is an error).
    message = conversation.messages.current().filter(pk=message_id).prefetch_related("attachments").first()
    if message is None:
        raise SendRefused(
            "not_found", "This message is not in the conversation as shown.", conversation_id=conversation.pk
        )
    if message.role != Message.Role.USER:
        raise SendRefused(
            "not_editable",
            "Only your own messages can be edited; regenerate an answer instead.",
            conversation_id=conversation.pk,
        )
    return message


def prepare_edit(
    user,
    *,
    conversation_id: int,
    message_id: int,
    content: str,
    client_msg_id: uuid.UUID,
    known_models: list[str],
    attachments: tuple[int, ...] | None = None,
    balance: Decimal | None = None,
) -> Accepted:
    """Edit any question of the active branch: its new version starts a branch beside it (same parent), and the old
    question with everything after it leaves the active branch, kept whole (``switch_branch`` shows it again)."""
    duplicate = _existing(user, client_msg_id)
    if duplicate is not None:
        return duplicate
    try:
        with transaction.atomic():
            conversation = _locked_conversation(user, conversation_id)
            _check_not_busy(conversation, user, client_msg_id)
            edited = _edited(conversation, message_id)
            chosen = conversation.model
            _check_model(user, chosen, known_models, conversation_id)
            price = _check_affordable(user, conversation, chosen, content, balance)
            thread = _thread(conversation, chosen, before=edited.pk)
            files = _files_for_send(user, conversation, attachments, chosen, content, previous=edited)
            new_user = _user_message(conversation, content, client_msg_id, files, parent=edited.parent)
            # The old branch: the edited question and what followed it (ids grow along a branch).
            conversation.messages.current().filter(id__gte=edited.pk, id__lt=new_user.pk).update(superseded_by=new_user)
            edited.superseded_by = new_user
            accepted = _start_answer(user, conversation, chosen, [*thread, new_user], price=price)
            accepted.superseded = [edited]
        accepted.user_message = new_user
    except IntegrityError:
        return _after_duplicate_id(user, client_msg_id)
    except _AlreadyStored as stored:
        return stored.accepted
    return accepted


def prepare_continue(
    user,
    *,
    conversation_id: int,
    message_id: int,
    client_msg_id: uuid.UUID,
    known_models: list[str],
    balance: Decimal | None = None,  # unused: a continuation's only check is its reservation
) -> Accepted:
    """Continue the last answer of the live thread where it was cut off, in its own row: it goes back to
    ``streaming`` from its stored text and seq, and a second reservation is charged for the new budget."""
    duplicate = _existing(user, client_msg_id)
    if duplicate is not None:
        return duplicate
    try:
        with transaction.atomic():
            conversation = _locked_conversation(user, conversation_id)
            _check_not_busy(conversation, user, client_msg_id)
            thread, last_user, answer = _last_turn(conversation, conversation.model)
            if answer is None or answer.pk != message_id or thread[-1].pk != answer.pk:
                raise SendRefused(
                    "not_found",
                    "Only the last answer of the conversation can be continued.",
                    conversation_id=conversation_id,
                )
            if answer.cut_off is None:
                raise SendRefused(
                    "not_continuable",
                    "This answer was not cut off, so there is nothing to continue.",
                    conversation_id=conversation_id,
                )
            _check_model(user, answer.model, known_models, conversation_id)
            upto = [m for m in thread if m.pk <= last_user.pk]
            request, prompt_tokens = _chat_request(conversation, answer.model, upto, continuing=answer)
            continued = Continued(
                status=answer.status,
                finish_reason=answer.finish_reason,
                error_code=answer.error_code,
                error_message=answer.error_message,
                seq=answer.seq,
                had_reasoning=bool(answer.reasoning),
            )
            answer.status = Message.Status.STREAMING
            answer.finish_reason = answer.error_code = answer.error_message = ""
            answer.client_msg_id = client_msg_id  # a resend of this frame finds the answer (``_existing``)
            answer.completed_at = timezone.now()  # while streaming: when it resumed (the reaper's grace counts from it)
            changed = ["status", "finish_reason", "error_code", "error_message", "client_msg_id", "completed_at"]
            answer.save(update_fields=changed)
            reservation = _reserve(user, conversation, answer, request, prompt_tokens)
    except IntegrityError:
        return _after_duplicate_id(user, client_msg_id)
    except _AlreadyStored as stored:
        return stored.accepted
    return Accepted(
        conversation=conversation, assistant=answer, request=request, reservation=reservation, continued=continued
    )


async def known_models() -> list[str]:
    models = await get_client().list_models()
    default = settings.KIMI_DEFAULT_MODEL
    return models if default in models else [*models, default]


def admit(user, balance: Decimal | None = None) -> Decimal:
    """Count the request against the user's rate limits (their tier follows the balance); ``SendRefused`` if over.
    Returns the balance it read (``balance``: read by the caller already)."""
    balance = credits.get_balance(user) if balance is None else balance
    try:
        check_rate_limit(user, balance)
    except RateLimited as exc:
        raise SendRefused(
            "rate_limited",
            f"You have reached your limit of {exc.limit} requests per {exc.window}. "
            f"Try again in {exc.retry_after} seconds.",
            retryable=True,
            retry_after=exc.retry_after,
        ) from None
    return balance


def waiting_refusal(language: str | None, conversation_id) -> SendRefused:
    """The refusal of a send from an account waiting for approval (it reads its chats but starts no answer)."""
    with translation.override(language):
        return SendRefused(approval.WAITING_CODE, approval.waiting_message(), conversation_id=conversation_id)


class _Admitted:
    """The socket's session check, ``admit`` and ``prepare``, in one trip off the event loop (a send made seven
    trips once; a burst of sends queued all their session checks ahead of the first one's preparation).
    ``session_key``: the socket's session, checked first (``sessions.SessionEnded``: nothing is counted or stored);
    then whether the account still waits for approval (refused in ``language``).

    The trip runs where ``db_threads.off_the_loop`` puts it (SQLite: the worker's database thread; PostgreSQL: the
    send threads). ``func``: the synchronous function (tests count its queries)."""

    def __init__(self, prepare) -> None:
        self.prepare = prepare

    def func(self, user, *, session_key: str | None, language: str | None = None, **kwargs) -> Accepted:
        sessions.check_session(session_key, user.pk)
        if approval.is_waiting(user.pk):
            raise waiting_refusal(language, kwargs.get("conversation_id"))
        return self.prepare(user, balance=admit(user), **kwargs)

    async def __call__(self, user, **kwargs) -> Accepted:
        return await db_threads.off_the_loop(self.func, user, **kwargs)


class _Batched(_Admitted):
    """``aprepare_send``: a send that can join a batch (``bulk_send.can_batch``: a new chat, no files, no project)
    waits for the batch being prepared to finish, then goes with every send that arrived meanwhile, in one trip
    (``services/batching.py``): ``bulk_send.prepare_sends`` admits and stores them with a fixed number of
    statements, where one by one each costs ~20 (a burst of 50 new chats queued 50 × 7.5 ms of ORM on the one
    database thread; docs/performance.md). A send that finds no batch running goes at once, in a batch of one."""

    def __init__(self, prepare) -> None:
        super().__init__(prepare)
        self.batches = batching.Batches(self._prepare_batch, lambda: settings.KIMICHAT_SEND_BATCH)

    async def __call__(self, user, **kwargs) -> Accepted:
        from conversations.services.chat import bulk_send

        if not bulk_send.can_batch(kwargs):
            return await super().__call__(user, **kwargs)
        return await self.batches.submit(bulk_send.Pending(user, kwargs))

    @staticmethod
    async def _prepare_batch(batch: list) -> list:
        from conversations.services.chat import bulk_send

        return await db_threads.off_the_loop(bulk_send.prepare_sends, batch)


aprepare_send = _Batched(prepare_send)
aprepare_regenerate = _Admitted(prepare_regenerate)
aprepare_edit = _Admitted(prepare_edit)
aprepare_continue = _Admitted(prepare_continue)
