"""The credit ledger: the one place a balance changes.

Every change runs in ``transaction.atomic`` under a row lock on the user's CreditAccount (``select_for_update``;
on SQLite the IMMEDIATE transactions in settings serialize writers instead), writes a CreditTransaction with the
balance after it, and never takes a balance below zero (the database's check constraint backs this up). So the
balance always equals the sum of the ledger, which ``verify_ledger`` checks.

An answer is paid for in two steps. ``reserve`` charges the estimated worst case up front (prompt plus the full
completion budget), so two answers started at once cannot both spend the same credits. When the answer ends,
``settle`` charges what the usage really cost, never more than the reservation, by refunding the difference; when
it failed before an answer, ``release`` refunds everything (seed 003: failed requests are not charged). A
reservation is closed once: a second settle or release raises ``ReservationClosed`` instead of refunding twice. The
reservation's charge row keeps its amount; when it closes, its state (open → settled or released), note, tokens
and message link are updated, and the refund that closes it points back to it. The rows of an answer keep its
model and tokens, so figures of consumption read the ledger alone (services/billing/usage.py).

Synchronous ORM code: async callers wrap these in ``sync_to_async`` / ``database_sync_to_async``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from conversations.kimi.events import Usage
from conversations.models import CreditAccount, CreditTransaction, Message
from conversations.services import bulk_sql
from conversations.services.billing import budgets, pricing

ZERO = Decimal(0)
MAX_AMOUNT = Decimal(10) ** 12  # the credit columns hold 12 digits before the point
OPEN_PREFIX = "reserved"  # the note of a reservation's charge row while the answer is running
Kind = CreditTransaction.Kind
State = CreditTransaction.State
RESERVATION_KINDS = (Kind.CHARGE, Kind.TITLE)  # the rows a reservation is made of (and what spending sums)


BudgetExceeded = budgets.BudgetExceeded  # a spending cap would be exceeded (services/billing/budgets.py)


class CreditError(Exception):
    """Base class of the ledger's refusals."""


class InvalidAmount(CreditError, ValueError):
    """An amount that is a float, not finite, has more than 6 decimal places, or has the wrong sign."""


class InsufficientCredits(CreditError):
    """The balance cannot cover a charge. Nothing was written."""

    def __init__(self, balance: Decimal, estimated_cost: Decimal):
        self.balance = balance
        self.estimated_cost = estimated_cost
        super().__init__(f"this needs {estimated_cost} credits; the balance is {balance}")


class ReservationClosed(CreditError):
    """The reservation was already settled or released."""

    def __init__(self, reservation: Reservation):
        self.reservation = reservation
        super().__init__(f"reservation #{reservation.transaction_id} is already settled or released")


@dataclass(frozen=True, slots=True)
class Reservation:
    """Credits held for one answer. Plain ids and Decimals, so it pickles and crosses threads."""

    transaction_id: int | None  # the charge row (None only for a free reservation made before free ones had a row)
    user_id: int
    model: str
    amount: Decimal  # charged up front
    prompt_tokens: int  # the estimate it was made from; settle uses it when the upstream reported no usage
    message_id: int | None = None
    api_key_id: int | None = None  # an answer of the /v1/ API: the key it was paid through, on each of its rows


@dataclass(frozen=True, slots=True)
class SettleResult:
    cost: Decimal  # what the answer was charged in the end
    balance: Decimal  # the balance after settling


@dataclass(frozen=True, slots=True)
class LedgerProblem:
    user_id: int
    username: str
    balance: Decimal
    ledger_sum: Decimal
    detail: str

    def __str__(self) -> str:
        return f"{self.username} (user {self.user_id}): {self.detail}"


def as_credits(amount) -> Decimal:
    """An int, str or Decimal as a credit amount with 6 places. Floats are refused: 0.1 is not a tenth."""
    if isinstance(amount, float | bool):
        raise InvalidAmount(f"credit amounts are Decimals, ints or strings, not {type(amount).__name__}")
    try:
        value = Decimal(amount)
    except (InvalidOperation, TypeError, ValueError):
        raise InvalidAmount(f"not a number: {amount!r}") from None
    if not value.is_finite() or abs(value) >= MAX_AMOUNT:
        raise InvalidAmount(f"out of range: {amount!r}")
    quantized = pricing.quantize(value)
    if quantized != value:
        raise InvalidAmount(f"credits have at most 6 decimal places: {amount!r}")
    return quantized


# --- accounts -------------------------------------------------------------------------------------------------


def open_account(user, grant=None) -> CreditAccount:
    """The user's account, created with the signup grant the first time (``grant``, or SIGNUP_CREDITS). Safe to
    call again or concurrently."""
    return _open_account(user.pk, grant)


def _open_account(user_id: int, grant=None) -> CreditAccount:
    grant_amount = as_credits(settings.KIMICHAT_SIGNUP_CREDITS if grant is None else grant)
    with transaction.atomic():
        account, created = CreditAccount.objects.get_or_create(user_id=user_id, defaults={"balance": grant_amount})
        if created and grant_amount > 0:
            CreditTransaction.objects.create(
                account=account,
                kind=Kind.SIGNUP_BONUS,
                amount=grant_amount,
                balance_after=grant_amount,
                note="Welcome credits",
            )
    return account


def get_balance(user) -> Decimal:
    balance = CreditAccount.objects.filter(user_id=user.pk).values_list("balance", flat=True).first()
    return ZERO if balance is None else balance


def balances_of(user_ids) -> dict[int, Decimal]:
    """``get_balance`` for many users, by user id, in one query."""
    user_ids = list(user_ids)
    found = dict(CreditAccount.objects.filter(user_id__in=user_ids).values_list("user_id", "balance"))
    return {user_id: found.get(user_id, ZERO) for user_id in user_ids}


def locked_accounts(user_ids) -> dict[int, CreditAccount]:
    """Many users' accounts, by user id, locked until the surrounding transaction ends (one query; a user without an
    account is missing from it: ``reserve`` opens one). Must run inside ``atomic``."""
    # In the order of their ids: two batches of overlapping users lock the rows one after the other, never crosswise.
    rows = CreditAccount.objects.select_for_update().filter(user_id__in=list(user_ids)).order_by("pk")
    return {a.user_id: a for a in rows}


def _locked_account(user_id: int) -> CreditAccount:
    """The account row, locked until the surrounding transaction ends. Must run inside ``atomic``."""
    account = CreditAccount.objects.select_for_update().filter(user_id=user_id).first()
    if account is None:  # a user from before the ledger existed: open it now, then lock it
        _open_account(user_id)
        account = CreditAccount.objects.select_for_update().get(user_id=user_id)
    return account


def _post(account: CreditAccount, kind: str, amount: Decimal, **row) -> CreditTransaction:
    """Move ``amount`` (signed) on a locked account and write its ledger row."""
    new_balance = account.balance + amount
    if new_balance < 0:  # callers check first; this is the last line before the database's constraint
        raise InsufficientCredits(account.balance, -amount)
    now = timezone.now()
    account.balance = new_balance
    account.updated_at = now
    account.save(update_fields=["balance", "updated_at"])
    return CreditTransaction.objects.create(
        account=account, kind=kind, amount=amount, balance_after=new_balance, created_at=now, **row
    )


def grant(user, amount, *, created_by=None, note: str = "") -> CreditTransaction:
    """Add credits (amount > 0), e.g. a purchase or a gift from an admin."""
    amount = as_credits(amount)
    if amount <= 0:
        raise InvalidAmount(f"a grant must be positive, got {amount}")
    with transaction.atomic():
        account = _locked_account(user.pk)
        return _post(account, Kind.GRANT, amount, created_by=created_by, note=note[:500])


def welcome(user, amount, *, note: str) -> CreditTransaction:
    """Sign-up credits given later than the account was opened (approval mode: when staff approve it)."""
    amount = as_credits(amount)
    if amount <= 0:
        raise InvalidAmount(f"welcome credits must be positive, got {amount}")
    with transaction.atomic():
        return _post(_locked_account(user.pk), Kind.SIGNUP_BONUS, amount, note=note[:500])


def reward_inviter(inviter, amount, *, note: str) -> CreditTransaction:
    """The invite reward (seed 003) for one sign-up with the inviter's code: called once, in that sign-up's
    transaction (services/accounts/invites.py)."""
    amount = as_credits(amount)
    if amount <= 0:
        raise InvalidAmount(f"an invite reward must be positive, got {amount}")
    with transaction.atomic():
        return _post(_locked_account(inviter.pk), Kind.INVITE_REWARD, amount, note=note[:500])


def adjust(user, amount, *, created_by, note: str) -> CreditTransaction:
    """A signed correction by an admin. Raises InsufficientCredits if it would take the balance below zero."""
    amount = as_credits(amount)
    if amount == 0:
        raise InvalidAmount("an adjustment of 0 changes nothing")
    with transaction.atomic():
        account = _locked_account(user.pk)
        if account.balance + amount < 0:
            raise InsufficientCredits(account.balance, -amount)
        return _post(account, Kind.ADJUSTMENT, amount, created_by=created_by, note=note[:500])


def refill(user, *, amount=None, up_to=None, note: str = "") -> CreditTransaction | None:
    """A scheduled refill (services/billing/refills.py): add ``amount``, or top the balance up to ``up_to``.

    Exactly one of the two, and it must be positive. Topping up never lowers a balance: at or above the level,
    nothing is written and None is returned. The level is compared with the balance under the row lock, so an
    answer settling at the same moment cannot make it overshoot."""
    if (amount is None) == (up_to is None):
        raise InvalidAmount("a refill adds an amount or tops up to a level, not both")
    value = as_credits(amount if amount is not None else up_to)
    if value <= 0:
        raise InvalidAmount(f"a refill must be positive, got {value}")
    with transaction.atomic():
        account = _locked_account(user.pk)
        added = value if amount is not None else value - account.balance
        if added <= 0:
            return None
        return _post(account, Kind.REFILL, added, note=note[:500])


# --- paying for answers ---------------------------------------------------------------------------------------


def estimate_cost(
    model: str, prompt_tokens: int, max_completion_tokens: int, *, price: pricing.Price | None = None
) -> Decimal:
    """The most an answer can cost: every prompt token at the dearer of the cached and uncached prices, and every
    completion token it may write. ``price``: the model's price, if the caller read it already."""
    price = price if price is not None else pricing.price_for(model)
    if price.per_million_cached > price.per_million_prompt:  # an odd price list, but then caching costs more
        price = dataclasses.replace(price, per_million_prompt=price.per_million_cached)
    return pricing.cost_of(price, Usage(prompt_tokens=prompt_tokens, completion_tokens=max_completion_tokens))


def reserve(
    user,
    *,
    model: str,
    prompt_tokens: int,
    max_completion_tokens: int,
    message: Message | None = None,
    fees: Decimal = ZERO,
    api_key_id: int | None = None,
    kind: str = Kind.CHARGE,
    price: pricing.Price | None = None,
) -> Reservation:
    """Charge the estimated cost now (plus ``fees``: web searches, services/billing/search_fees.py). Raises
    InsufficientCredits (writing nothing) if the balance is short, and budgets.BudgetExceeded if a spending cap of
    the user or of one of their groups would be exceeded. ``kind``: ``title`` for a chat title's request
    (services/personal/titles.py), settled and released like an answer's. ``price``: the model's price as the
    caller read it in the same transaction (the send path reads it once, for its early check and this).

    A free answer gets its (zero) row too: every answer is one request on the ledger, whatever it cost."""
    cost = estimate_cost(model, prompt_tokens, max_completion_tokens, price=price) + fees
    message_id = message.pk if message is not None else None
    with transaction.atomic():
        account = _locked_account(user.pk)
        if account.balance < cost:
            raise InsufficientCredits(account.balance, cost)
        budgets.check_budgets(user.pk, cost)  # spending caps, under the same lock (raises BudgetExceeded)
        row = _post(
            account,
            kind,
            -cost,
            message_id=message_id,
            note=f"{OPEN_PREFIX}: {model}",
            model=model[:100],
            state=State.OPEN,
            api_key_id=api_key_id,
        )
    return Reservation(
        transaction_id=row.pk,
        user_id=user.pk,
        model=model,
        amount=cost,
        prompt_tokens=max(prompt_tokens, 0),
        message_id=message_id,
        api_key_id=api_key_id,
    )


@dataclass(frozen=True, slots=True)
class Hold:
    """One answer's reservation for ``reserve_many``: its cost as ``reserve`` computes it (``estimate_cost`` plus
    fees), already checked by the caller against the locked balance and the user's spending caps."""

    account: CreditAccount  # locked (``locked_accounts``)
    cost: Decimal
    model: str
    prompt_tokens: int
    message_id: int | None  # the answer's row (a chat); None for a request of the user API
    api_key_id: int | None = None  # the key of a user API request


def reserve_many(holds: list[Hold]) -> list[Reservation]:
    """``reserve`` for many answers in one UPDATE of the accounts and one INSERT of the ledger rows, each row what
    ``reserve`` writes (``tests/test_bulk_send.py`` and ``tests/test_bulk_admit.py`` compare them). For the send
    path's bulk preparation (services/chat/bulk_send.py) and the user API's (services/apikeys/bulk_admit.py): the
    caller has locked the accounts and checked each user's caps. Must run inside its ``atomic``."""
    now = timezone.now()
    rows = []
    for hold in holds:
        account = hold.account
        new_balance = account.balance - hold.cost
        if new_balance < 0:  # checked by the caller; the last line before the database's constraint
            raise InsufficientCredits(account.balance, hold.cost)
        account.balance, account.updated_at = new_balance, now
        rows.append(
            CreditTransaction(
                account=account,
                kind=Kind.CHARGE,
                amount=-hold.cost,
                balance_after=new_balance,
                created_at=now,
                message_id=hold.message_id,
                note=f"{OPEN_PREFIX}: {hold.model}",
                model=hold.model[:100],
                state=State.OPEN,
                api_key_id=hold.api_key_id,
            )
        )
    _update_balances(list({hold.account.pk: hold.account for hold in holds}.values()), now)
    CreditTransaction.objects.bulk_create(rows)
    return [
        Reservation(
            transaction_id=row.pk,
            user_id=hold.account.user_id,
            model=hold.model,
            amount=hold.cost,
            prompt_tokens=max(hold.prompt_tokens, 0),
            message_id=hold.message_id,
            api_key_id=hold.api_key_id,
        )
        for hold, row in zip(holds, rows, strict=True)
    ]


def _update_balances(accounts: list[CreditAccount], now) -> None:
    """``bulk_update(accounts, ["balance", "updated_at"])`` as one plain statement (services/bulk_sql.py)."""
    bulk_sql.update_rows(
        CreditAccount, {account.pk: {"balance": account.balance} for account in accounts}, common={"updated_at": now}
    )


def _close_reservation(account: CreditAccount, reservation: Reservation, row: dict) -> None:
    """Write the reservation's charge row's closing columns (``Closing.row``); raise ReservationClosed if it was
    closed already."""
    if reservation.transaction_id is None:
        return  # a free reservation made before free answers had a row: nothing moved, nothing to close
    closed = CreditTransaction.objects.filter(
        pk=reservation.transaction_id, account=account, kind__in=RESERVATION_KINDS, state=State.OPEN
    ).update(**row)
    if not closed:
        raise ReservationClosed(reservation)


def _usage_note(model: str, usage: Usage, estimated: bool) -> str:
    cached = f", {usage.cached_tokens} cached" if usage.cached_tokens else ""
    est = " (estimated)" if estimated else ""
    return f"{model}: {usage.prompt_tokens} prompt{cached} + {usage.completion_tokens} completion tokens{est}"


@dataclass(frozen=True, slots=True)
class Closing:
    """What closing one reservation writes, worked out before anything is written (``settling``, ``releasing``):
    ``settle``, ``release`` and ``close_many`` write the same rows from it."""

    cost: Decimal  # what the answer is charged in the end
    row: dict  # the charge row's new columns (note, state, ...)
    refund: Decimal  # what goes back to the balance (0: no refund row)
    refund_row: dict  # the refund row's columns besides its account, kind, amount and balance
    usage: Usage | None = None  # a settlement's usage as charged (the estimate's when there was none)
    estimated: bool = False


def settling(
    reservation: Reservation,
    usage: Usage | None,
    estimated: bool,
    *,
    price: pricing.Price,
    fees: Decimal = ZERO,
    message_id: int | None = None,
) -> Closing:
    """``settle``'s rows: what the usage costs at ``price`` (plus ``fees``), never more than was reserved."""
    if usage is None:
        usage, estimated = Usage(prompt_tokens=reservation.prompt_tokens), True
    priced = pricing.cost_of(price, usage) + fees
    cost = min(priced, reservation.amount)
    note = _usage_note(reservation.model, usage, estimated) + (f" + {fees} for web search" if fees else "")
    if priced > cost:
        note += f"; {priced - cost} beyond the reservation not charged"
    return Closing(
        cost=cost,
        row={
            "note": note[:500],
            "message_id": message_id,
            "estimated": estimated,
            "state": State.SETTLED,
            **_token_columns(usage),
        },
        refund=reservation.amount - cost,
        refund_row={
            "message_id": message_id,
            "estimated": estimated,
            "note": f"unused part of reservation #{reservation.transaction_id}",
            "model": reservation.model[:100],
            "reservation_id": reservation.transaction_id,
            "api_key_id": reservation.api_key_id,
        },
        usage=usage,
        estimated=estimated,
    )


def releasing(reservation: Reservation, note: str = "", *, message_id: int | None = None) -> Closing:
    """``release``'s rows: the whole reservation back, ``note`` saying why."""
    reason = f": {note}" if note else ""
    return Closing(
        cost=ZERO,
        row={"note": f"{reservation.model}: released{reason}"[:500], "message_id": message_id, "state": State.RELEASED},
        refund=reservation.amount,
        refund_row={
            "message_id": message_id,
            "note": f"reservation #{reservation.transaction_id} released{reason}",
            "model": reservation.model[:100],
            "reservation_id": reservation.transaction_id,
            "api_key_id": reservation.api_key_id,
        },
    )


def settle(
    reservation: Reservation,
    *,
    message: Message | None,
    usage: Usage | None,
    estimated: bool,
    adds_to_message: bool = False,
    fees: Decimal = ZERO,
) -> SettleResult:
    """Charge what the answer really cost by refunding the unused part of the reservation.

    Stopped and interrupted answers are settled too, for what they generated (``estimated=True`` when the usage
    was counted locally). With no usage at all the prompt that was sent is charged, from the reservation's
    estimate. An answer never costs more than was reserved: the reservation is the price the user was told and
    was checked against the balance. A usage beyond it (a provider ignoring the output limit, a prompt counted
    higher upstream than here, a price raised meanwhile) is noted on the row for staff, and not charged.
    ``fees``: the answer's web searches (services/billing/search_fees.py), reserved with it.
    ``message``: None for an answer of the /v1/ API that is not stored as a conversation.
    ``adds_to_message``: a continued answer; this part's usage and cost are added to what ``message`` (as read under
    its row lock) already carries, so it shows the sum of its parts, as its ledger rows do.
    """
    message_id = message.pk if message is not None else reservation.message_id
    closing = settling(
        reservation, usage, estimated, price=pricing.price_for(reservation.model), fees=fees, message_id=message_id
    )
    with transaction.atomic():
        account = _locked_account(reservation.user_id)
        _close_reservation(account, reservation, closing.row)
        if closing.refund > 0:
            _post(account, Kind.REFUND, closing.refund, **closing.refund_row)
        if message is not None:
            _record_on_message(message, closing.cost, closing.usage, closing.estimated, adds_to_message)
        return SettleResult(cost=closing.cost, balance=account.balance)


def _token_columns(usage: Usage) -> dict:
    prompt = max(usage.prompt_tokens, 0)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": max(usage.completion_tokens, 0),
        "cached_tokens": min(max(usage.cached_tokens, 0), prompt),
    }


def _record_on_message(message: Message, cost: Decimal, usage: Usage, estimated: bool, adds: bool = False) -> None:
    # An UPDATE of just these columns, so a concurrent save of the content by the generation is not overwritten;
    # the caller's instance is updated too, so its own later save() writes the same values.
    values = {
        "cost": cost,
        "usage_estimated": estimated,
        "prompt_tokens": max(usage.prompt_tokens, 0),
        "completion_tokens": max(usage.completion_tokens, 0),
        "total_tokens": max(usage.total_tokens, usage.prompt_tokens + usage.completion_tokens, 0),
        "cached_tokens": max(usage.cached_tokens, 0),
    }
    if adds:
        values = {name: value + getattr(message, name) for name, value in values.items()}
        values["usage_estimated"] = estimated or message.usage_estimated
    Message.objects.filter(pk=message.pk).update(**values)
    for name, value in values.items():
        setattr(message, name, value)


def release(reservation: Reservation, *, message: Message | None = None, note: str = "") -> Decimal:
    """Refund a reservation in full: the request failed before an answer (any upstream 4xx/5xx costs nothing).

    Returns the balance after the refund. The user's ledger shows neither row (nothing was charged); staff see
    both, with the reason, in the admin.
    """
    closing = releasing(reservation, note, message_id=message.pk if message is not None else reservation.message_id)
    with transaction.atomic():
        account = _locked_account(reservation.user_id)
        _close_reservation(account, reservation, closing.row)
        if closing.refund > 0:
            _post(account, Kind.REFUND, closing.refund, **closing.refund_row)
        if message is not None:
            Message.objects.filter(pk=message.pk).update(cost=ZERO)
            message.cost = ZERO
        return account.balance


def close_many(
    reservations: list[Reservation],
    closings: list[Closing],
    *,
    messages_recorded: bool = False,
    balances: list | None = None,
) -> list[Decimal | None]:
    """Close many reservations (``closings[i]`` for ``reservations[i]``, from ``settling``/``releasing``) as
    ``settle``/``release`` would one after the other, in four statements whatever their number: the accounts
    locked, the open rows read, the rows closed, the refunds inserted; plus one for the balances. Each outcome is
    the cost charged, or None where ``settle``/``release`` would raise ReservationClosed (closed before, or earlier
    in the list). The rows are what one by one writes (tests/test_bulk_finish.py). A reservation of a stored answer
    (``message_id``) only with ``messages_recorded``: ``settle``/``release`` also write the message's cost and usage,
    which its caller then writes itself (services/chat/storing.py ``finish_many``). ``balances``, if given, gets each
    reservation's balance after its closing (None where the outcome is None), as ``settle``/``release`` return it.
    Must run inside ``atomic``."""
    accounts = locked_accounts({reservation.user_id for reservation in reservations})
    ids = [reservation.transaction_id for reservation in reservations if reservation.transaction_id is not None]
    still_open = set(
        CreditTransaction.objects.filter(
            pk__in=ids,
            account__in=[account.pk for account in accounts.values()],
            kind__in=RESERVATION_KINDS,
            state=State.OPEN,
        ).values_list("pk", "account_id")
    )
    now = timezone.now()
    closed_rows: dict[int, dict] = {}
    refunds: list[CreditTransaction] = []
    touched: dict[int, CreditAccount] = {}
    outcomes: list[Decimal | None] = []
    for reservation, closing in zip(reservations, closings, strict=True):
        if reservation.message_id is not None and not messages_recorded:
            raise ValueError("close_many closes reservations without a message; settle or release the others")
        account = accounts.get(reservation.user_id)
        row_id = reservation.transaction_id
        if row_id is not None:
            if account is None or (row_id, account.pk) not in still_open or row_id in closed_rows:
                outcomes.append(None)
                if balances is not None:
                    balances.append(None)
                continue
            closed_rows[row_id] = closing.row
        if closing.refund > 0 and account is not None:
            account.balance += closing.refund
            account.updated_at = now
            touched[account.pk] = account
            refunds.append(
                CreditTransaction(
                    account=account,
                    kind=Kind.REFUND,
                    amount=closing.refund,
                    balance_after=account.balance,
                    created_at=now,
                    **closing.refund_row,
                )
            )
        outcomes.append(closing.cost)
        if balances is not None:
            balances.append(account.balance if account is not None else None)
    bulk_sql.update_rows(CreditTransaction, closed_rows)
    CreditTransaction.objects.bulk_create(refunds)
    _update_balances(list(touched.values()), now)
    return outcomes


def open_reservation_for(message: Message) -> Reservation | None:
    """The reservation still open for a message, if any: lets a reaper settle or release an orphaned answer."""
    row = (
        CreditTransaction.objects.filter(message=message, kind=Kind.CHARGE, state=State.OPEN)
        .select_related("account")
        .order_by("pk")
        .first()
    )
    if row is None:
        return None
    return Reservation(
        transaction_id=row.pk,
        user_id=row.account.user_id,
        model=row.model or row.note.removeprefix(f"{OPEN_PREFIX}: ") or message.model,
        amount=-row.amount,
        prompt_tokens=message.prompt_tokens,
        message_id=message.pk,
    )


# --- checking -------------------------------------------------------------------------------------------------


def verify_ledger(user=None) -> list[LedgerProblem]:
    """Every account whose balance differs from the sum of its ledger, or is negative. Two queries.

    The sum is taken here, over Decimals, not by the database: SQLite's SUM adds decimals as floats
    (8.237131 became 8.23713100000001), which would report a sound ledger as broken now and then.
    """
    accounts = CreditAccount.objects.select_related("user").order_by("pk")
    rows = CreditTransaction.objects.order_by()
    if user is not None:
        accounts = accounts.filter(user_id=user.pk)
        rows = rows.filter(account__user_id=user.pk)
    sums: dict[int, Decimal] = {}
    for account_id, amount in rows.values_list("account_id", "amount").iterator(chunk_size=5000):
        sums[account_id] = sums.get(account_id, ZERO) + amount
    problems = []
    for account in accounts:
        ledger_sum = sums.get(account.pk, ZERO)
        details = []
        if account.balance != ledger_sum:
            details.append(f"balance {account.balance} but the ledger sums to {ledger_sum}")
        if account.balance < 0:
            details.append(f"balance {account.balance} is negative")
        if details:
            problems.append(
                LedgerProblem(
                    user_id=account.user_id,
                    username=account.user.get_username(),
                    balance=account.balance,
                    ledger_sum=ledger_sum,
                    detail="; ".join(details),
                )
            )
    return problems
