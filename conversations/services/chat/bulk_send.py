"""The sends that wait together, prepared together: the path a burst of new chats takes.

One send costs ~20 statements and ~7.5 ms of Django ORM on the worker's database thread (``sending.prepare_send``).
When 50 people press send in the same second, their sends queued there one after the other and the last one's
answer started ~400 ms after its frame (docs/performance.md, issue 23). ``sending.aprepare_send`` now hands every
send that can join a batch (``can_batch``: a new chat, without files, outside a project) to ``prepare_sends`` with
the others that arrived while the previous batch was being prepared, and this module admits and stores the batch
with a fixed number of statements:

- admission for all: the sessions and their users (2 queries, ``sessions.valid_sessions``), the accounts waiting
  for approval (1), the balances (1), then each send's rate limit (the cache, as before);
- what the checks read for all: resends already stored (1), spending caps (2), the groups' allow-lists (1), custom
  instructions (1), each model's price (1 per model);
- one transaction: the accounts locked (1), the running answers counted per user (1), one INSERT each for the
  conversations, the questions and the answers, one UPDATE of the accounts and one INSERT of the ledger rows.

The rules stay ``sending``'s: this module calls the same checks (``_check_model``, ``check_fits``,
``_check_affordable``, ``_chat_request``, ``_reservation_terms``) on each send and only **accepts** here. A send
any check would refuse, a user's second send of the batch, a resend, a user with a spending cap (their check reads
their spending), an account not opened yet: each goes alone through ``prepare_send``, which gives the refusal (or
the acceptance) exactly as before. So does every send of a batch whose transaction fails. Stored rows are the ones
``prepare_send`` writes (``tests/test_bulk_send.py`` compares them field by field, and the refusals).

A batch of one takes this path too: a new chat sent alone costs the worker ~9 ms of CPU here against ~14 ms through
``prepare_send`` (``bench/sendpath.py``; the ORM's per-call work, not the statements, is what a send pays for).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from decimal import Decimal

from django.conf import settings
from django.db import transaction
from django.db.models import Count

from conversations.models import Conversation, Message
from conversations.services.accounts import approval, model_access, sessions
from conversations.services.attachments import messages as attached
from conversations.services.billing import budgets, credits, pricing
from conversations.services.chat import sending
from conversations.services.chat.context import ContextTooLong, check_fits
from conversations.services.personal import preferences

logger = logging.getLogger(__name__)


def can_batch(kwargs: dict) -> bool:
    """Whether a send (``aprepare_send``'s keyword arguments) may join a batch: it starts a chat, carries no file
    and names no project. Others (their conversation's row lock, files, the project's) go alone."""
    new = kwargs.get("new_conversation") or {}
    return kwargs.get("conversation_id") is None and not kwargs.get("attachments") and new.get("project_id") is None


@dataclass
class Pending:
    """A send waiting for its batch: ``aprepare_send``'s arguments."""

    user: object
    kwargs: dict  # session_key, language and prepare_send's keyword arguments


def prepare_sends(batch: list[Pending]) -> list:
    """Admit and prepare every send of ``batch``; returns, in its order, each one's ``Accepted`` or the exception it
    raises (``SendRefused``, ``sessions.SessionEnded``), as ``aprepare_send`` one by one would. Synchronous: on the
    database thread."""
    outcomes: list = [None] * len(batch)
    balances = _admit(batch, outcomes)
    first_of_user: dict[int, int] = {}
    for index in balances:
        first_of_user.setdefault(batch[index].user.pk, index)
    together = list(first_of_user.values())
    accepted: dict[int, sending.Accepted] = {}
    if together:
        try:
            accepted = _store_together([(index, batch[index], balances[index]) for index in together])
        except Exception:  # nothing of the batch was stored (one transaction): each goes alone, as before
            logger.exception("A batch of %d sends failed; preparing them one by one", len(together))
    logger.debug("prepared together: %d of %d sends", len(accepted), len(batch))
    users_stored = {batch[index].user.pk for index in accepted}
    for index, balance in balances.items():
        if index in accepted:
            outcomes[index] = accepted[index]
            continue
        pending = batch[index]
        stale = pending.user.pk in users_stored  # their balance moved since it was read
        outcomes[index] = _alone(pending, None if stale else balance)
    return outcomes


def _alone(pending: Pending, balance: Decimal | None):
    """``prepare_send`` for a send already admitted (its rate limit counted once)."""
    kwargs = {k: v for k, v in pending.kwargs.items() if k not in ("session_key", "language")}
    try:
        return sending.prepare_send(pending.user, balance=balance, **kwargs)
    except Exception as exc:  # noqa: BLE001 - handed to the socket that awaits it, as the one-by-one path raises it
        return exc


def _admit(batch: list[Pending], outcomes: list) -> dict[int, Decimal]:
    """``_Admitted.func``'s admission for the whole batch, in its order of checks: the session, approval, the rate
    limit. A refused send gets its exception in ``outcomes``; returns the admitted sends' balances by index."""
    valid = sessions.valid_sessions([(pending.kwargs.get("session_key"), pending.user.pk) for pending in batch])
    user_ids = {pending.user.pk for pending, ok in zip(batch, valid, strict=True) if ok}
    waiting = approval.waiting_among(user_ids)
    balances = credits.balances_of(user_ids - waiting)
    admitted = {}
    for index, (pending, ok) in enumerate(zip(batch, valid, strict=True)):
        if not ok:
            outcomes[index] = sessions.SessionEnded()
        elif pending.user.pk in waiting:
            outcomes[index] = sending.waiting_refusal(
                pending.kwargs.get("language"), pending.kwargs.get("conversation_id")
            )
        else:
            try:
                admitted[index] = sending.admit(pending.user, balances[pending.user.pk])
            except sending.SendRefused as exc:
                outcomes[index] = exc
    return admitted


@dataclass
class _Plan:
    index: int
    pending: Pending
    conversation: Conversation
    model: str
    price: pricing.Price
    own_prompt: str
    question: Message | None = None
    answer: Message | None = None
    request: object = None
    prompt_tokens: int = 0
    reserved_prompt: int = 0
    cost: Decimal = Decimal(0)


def _store_together(entries: list[tuple[int, Pending, Decimal]]) -> dict[int, sending.Accepted]:
    """Accept what can be accepted of one send per user, in one transaction; the rest is left to go alone."""
    user_ids = {pending.user.pk for _, pending, _ in entries}
    resent = set(
        Message.objects.filter(
            client_msg_id__in=[pending.kwargs["client_msg_id"] for _, pending, _ in entries]
        ).values_list("client_msg_id", flat=True)
    )
    uncapped = budgets.without_caps(user_ids)
    allowed = model_access.allowed_models_of(user_ids)
    stored_preferences = preferences.stored_for(user_ids)
    prices: dict[str, pricing.Price] = {}

    def is_allowed(user, model: str) -> bool:
        return allowed[user.pk] is None or model in allowed[user.pk]

    plans = []
    for index, pending, balance in entries:
        user, kwargs = pending.user, pending.kwargs
        if kwargs["client_msg_id"] in resent or user.pk not in uncapped:
            continue
        content, model = kwargs["content"], kwargs.get("model")
        conversation = sending.conversation_row(user, content, model, kwargs.get("new_conversation") or {})
        chosen = model or conversation.model or settings.KIMI_DEFAULT_MODEL
        try:
            sending._check_model(user, chosen, kwargs["known_models"], None, allowed=is_allowed)
            check_fits(
                content, model=chosen, system_prompt=conversation.system_prompt, max_tokens=conversation.max_tokens
            )
            if chosen not in prices:
                prices[chosen] = pricing.price_for(chosen)
            sending._check_affordable(user, conversation, chosen, content, balance, price=prices[chosen])
        except (sending.SendRefused, ContextTooLong):
            continue  # refused: alone, it is refused with its exact message
        own_prompt = preferences.system_prompt_with(conversation, stored_preferences.get(user.pk))
        plans.append(_Plan(index, pending, conversation, chosen, prices[chosen], own_prompt))
    if not plans:
        return {}
    with transaction.atomic():
        return _write(plans)


def _write(plans: list[_Plan]) -> dict[int, sending.Accepted]:
    accounts = credits.locked_accounts(plan.pending.user.pk for plan in plans)
    plans = [plan for plan in plans if plan.pending.user.pk in accounts]  # no account yet: alone opens it
    if not plans:
        return {}
    running = dict(
        Message.objects.filter(conversation__owner_id__in=[plan.pending.user.pk for plan in plans])
        .in_progress()
        .values("conversation__owner_id")
        .annotate(count=Count("id"))
        .values_list("conversation__owner_id", "count")
    )
    Conversation.objects.bulk_create([plan.conversation for plan in plans])
    for plan in plans:
        kwargs = plan.pending.kwargs
        plan.question = sending.question_row(plan.conversation, kwargs["content"], kwargs["client_msg_id"], None)
    Message.objects.bulk_create([plan.question for plan in plans])
    kept, dropped = [], []
    for plan in plans:
        attached.attach(plan.question, [])  # known to have no files
        user = plan.pending.user
        try:
            plan.request, plan.prompt_tokens = sending._chat_request(
                plan.conversation, plan.model, [plan.question], own_prompt=plan.own_prompt
            )
        except sending.SendRefused:
            dropped.append(plan)
            continue
        plan.reserved_prompt, fees = sending._reservation_terms(plan.request, plan.prompt_tokens, plan.model)
        plan.cost = (
            credits.estimate_cost(plan.model, plan.reserved_prompt, plan.request.max_tokens, price=plan.price) + fees
        )
        too_many = running.get(user.pk, 0) + 1 > settings.KIMICHAT_MAX_CONCURRENT_ANSWERS
        (dropped if too_many or accounts[user.pk].balance < plan.cost else kept).append(plan)
    if dropped:  # rows of this transaction nobody else has seen: as if never written; each goes alone
        Conversation.objects.filter(pk__in=[plan.conversation.pk for plan in dropped]).delete()
    if not kept:
        return {}
    for plan in kept:
        plan.answer = sending.answer_row(plan.conversation, plan.model, plan.question)
    Message.objects.bulk_create([plan.answer for plan in kept])
    holds = [
        credits.Hold(
            account=accounts[plan.pending.user.pk],
            cost=plan.cost,
            model=plan.model,
            prompt_tokens=plan.reserved_prompt,
            message_id=plan.answer.pk,
        )
        for plan in kept
    ]
    reservations = credits.reserve_many(holds)
    accepted = {}
    for plan, reservation in zip(kept, reservations, strict=True):
        plan.answer.prompt_tokens = plan.prompt_tokens
        accepted[plan.index] = sending.Accepted(
            conversation=plan.conversation,
            assistant=plan.answer,
            user_message=plan.question,
            created_conversation=True,
            request=plan.request,
            reservation=reservation,
        )
    return accepted
