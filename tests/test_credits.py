"""The credit ledger: accounts, grants, reserve/settle/release, prices, the commands, and concurrent spending."""

from __future__ import annotations

import pickle
import threading
from decimal import Decimal

import pytest
from asgiref.sync import async_to_sync
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from django.db import IntegrityError, connection, connections, transaction
from hypothesis import HealthCheck, example, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from conversations.kimi.configured import get_client
from conversations.kimi.events import Usage
from conversations.models import Conversation, CreditAccount, CreditTransaction, Message, ModelPrice
from conversations.services.billing import credits, pricing
from conversations.services.billing.credits import InsufficientCredits, InvalidAmount, ReservationClosed
from conversations.services.billing.published_prices import PublishedPrice, published_price

D = Decimal
MILLION = D(1_000_000)
Kind = CreditTransaction.Kind


def ledger(user) -> list[tuple[str, Decimal, Decimal]]:
    rows = CreditTransaction.objects.filter(account__user=user).order_by("pk")
    return [(r.kind, r.amount, r.balance_after) for r in rows]


def ledger_sum(user) -> Decimal:
    return sum((amount for _, amount, _ in ledger(user)), D(0))


@pytest.fixture
def token_prices(db):
    """kimi-k2 priced per request and per token, so every part of the formula shows in a cost."""
    return pricing.set_price(
        "kimi-k2",
        per_request="1",
        per_million_prompt="2",
        per_million_completion="8",
        per_million_cached="0.5",
    )


# --- accounts -------------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_signup_opens_an_account_with_the_bonus(owner):
    assert credits.get_balance(owner) == D(100)
    assert ledger(owner) == [(Kind.SIGNUP_BONUS, D(100), D(100))]


@pytest.mark.django_db
def test_open_account_is_idempotent(owner):
    account = credits.open_account(owner)
    assert credits.open_account(owner).pk == account.pk
    assert ledger(owner) == [(Kind.SIGNUP_BONUS, D(100), D(100))]


@pytest.mark.django_db
def test_signup_grant_is_configurable(settings, make_user):
    settings.KIMICHAT_SIGNUP_CREDITS = 0
    user = make_user("nobonus")
    assert credits.get_balance(user) == 0
    assert ledger(user) == []


@pytest.mark.django_db
def test_a_user_from_before_the_ledger_gets_an_account_when_first_charged(owner):
    CreditAccount.objects.filter(user=owner).delete()
    assert credits.get_balance(owner) == 0
    credits.grant(owner, 5)
    assert credits.get_balance(owner) == D(105)
    assert [kind for kind, _, _ in ledger(owner)] == [Kind.SIGNUP_BONUS, Kind.GRANT]


@pytest.mark.django_db
def test_me_api_returns_the_balance(owner_client):
    assert owner_client.get("/api/me/").json()["balance"] == "100.000000"


# --- grants and adjustments -----------------------------------------------------------------------------------


@pytest.mark.django_db
def test_grant_and_adjust_write_ledger_rows(owner, make_user):
    admin = make_user("admin", is_staff=True)
    row = credits.grant(owner, "5.5", created_by=admin, note="thanks")
    assert (row.kind, row.amount, row.balance_after, row.created_by, row.note) == (
        Kind.GRANT,
        D("5.5"),
        D("105.5"),
        admin,
        "thanks",
    )
    credits.adjust(owner, D("-105.5"), created_by=admin, note="reset")
    assert credits.get_balance(owner) == 0
    assert ledger_sum(owner) == 0


@pytest.mark.django_db
def test_adjust_cannot_take_the_balance_below_zero(owner):
    with pytest.raises(InsufficientCredits) as info:
        credits.adjust(owner, "-100.000001", created_by=None, note="too much")
    assert (info.value.balance, info.value.estimated_cost) == (D(100), D("100.000001"))
    assert credits.get_balance(owner) == D(100)
    assert len(ledger(owner)) == 1


@pytest.mark.django_db
@pytest.mark.parametrize("amount", [0.5, "0", "-1", "0.0000001", "NaN", "Infinity", "abc", True, "1e12"])
def test_grant_refuses_bad_amounts(owner, amount):
    with pytest.raises(InvalidAmount):
        credits.grant(owner, amount)
    assert len(ledger(owner)) == 1


# --- pricing --------------------------------------------------------------------------------------------------


def test_cost_bills_cached_tokens_at_the_cached_price():
    price = pricing.Price(
        per_request=D(1), per_million_prompt=D(2), per_million_completion=D(8), per_million_cached=D("0.5")
    )
    usage = Usage(prompt_tokens=1000, completion_tokens=500, total_tokens=1500, cached_tokens=400)
    # 1 + 600 fresh * 2/1M + 400 cached * 0.5/1M + 500 * 8/1M
    assert pricing.cost_of(price, usage) == D("1.005400")


def test_cost_rounds_to_six_places_and_ignores_negative_token_counts():
    price = pricing.Price(per_million_prompt=D(1))
    assert pricing.cost_of(price, Usage(prompt_tokens=1)) == D("0.000001")
    assert pricing.cost_of(price, Usage(prompt_tokens=2, completion_tokens=-(10**9), cached_tokens=-5)) == D("0.000002")
    assert pricing.cost_of(price, Usage(prompt_tokens=-(10**9))) == 0


@pytest.mark.django_db
def test_a_model_without_a_price_row_uses_the_settings_default(settings):
    settings.KIMICHAT_DEFAULT_PRICE_PER_REQUEST = D("0.25")
    settings.KIMICHAT_DEFAULT_PRICE_PER_MILLION_COMPLETION = D("10")
    assert pricing.usage_cost("unpriced", Usage(completion_tokens=100_000)) == D("1.25")


@pytest.mark.django_db
@pytest.mark.parametrize("model", ["kimi-k3", "kimi-k2.9", "gateway-model", *settings.KIMI_FALLBACK_MODELS])
def test_every_shipped_default_price_covers_what_the_provider_charges(shipped_prices, model):
    price = pricing.price_for(model)
    value = shipped_prices.KIMICHAT_CREDIT_VALUE_USD  # US$ per credit
    published = published_price(model)
    # The dearest published Kimi price is US$1.15 / 8.00 per million; an unknown model costs more than that.
    floor = published or PublishedPrice(D("1.15"), D("1.15"), D("8.00"), "")
    assert price.per_million_prompt * value >= floor.prompt
    assert price.per_million_cached * value >= floor.cached
    assert price.per_million_completion * value >= floor.completion
    # So a credit never buys more tokens than it pays the provider for: kimi-k3 once gave ~983k prompt tokens.
    assert MILLION / price.per_million_prompt * floor.prompt / MILLION <= value


@pytest.mark.django_db
def test_published_prices_become_credits_at_the_configured_credit_value(shipped_prices):
    assert pricing.price_for("kimi-k2.5") == pricing.Price(
        per_request=D(1), per_million_prompt=D(60), per_million_completion=D(300), per_million_cached=D(10)
    )
    shipped_prices.KIMICHAT_CREDIT_VALUE_USD = D("0.001")  # a tenth of a cent: ten times the credits
    assert pricing.price_for("kimi-k2.5").per_million_completion == D(3000)
    pricing.set_price("kimi-k2.5", per_million_completion="5")  # the admin's row wins
    assert pricing.price_for("kimi-k2.5").per_million_completion == D(5)
    [admin, published, default] = pricing.prices_in_effect(["kimi-k2.5", "kimi-k2.6", "kimi-k3"])
    assert (admin.origin, published.origin, default.origin) == ("admin", "published", "default")
    assert "moonshot" in published.source.lower() or "puter" in published.source
    assert MILLION / default.price.per_million_prompt < 3_334  # a credit buys ~3,333 kimi-k3 prompt tokens


@pytest.mark.django_db
@pytest.mark.parametrize("field", ["per_request", "per_million_prompt", "per_million_completion", "per_million_cached"])
def test_negative_prices_are_rejected_everywhere(field):
    with pytest.raises(pricing.InvalidPrice):
        pricing.set_price("kimi-k2", **{field: "-0.000001"})
    with pytest.raises(pricing.InvalidPrice):
        pricing.Price(**{field: D(-1)})
    with pytest.raises(ValidationError):
        ModelPrice(model="kimi-k2", **{field: D(-1)}).full_clean()
    with pytest.raises(IntegrityError), transaction.atomic():
        ModelPrice.objects.create(model="kimi-k2", **{field: D(-1)})
    assert not ModelPrice.objects.exists()


@pytest.mark.django_db
def test_set_price_refuses_floats_and_updates_in_place(token_prices):
    with pytest.raises(pricing.InvalidPrice):
        pricing.set_price("kimi-k2", per_request=0.1)
    pricing.set_price("kimi-k2", per_request="3")
    row = ModelPrice.objects.get(model="kimi-k2")
    assert (row.per_request, row.per_million_completion) == (D(3), D(8))


# --- reserve, settle, release ---------------------------------------------------------------------------------


@pytest.mark.django_db
def test_settle_charges_the_real_usage_and_refunds_the_rest(owner, placeholder, token_prices):
    assert credits.estimate_cost("kimi-k2", 1000, 4000) == D("1.034")
    reservation = credits.reserve(
        owner, model="kimi-k2", prompt_tokens=1000, max_completion_tokens=4000, message=placeholder
    )
    assert credits.get_balance(owner) == D("98.966")
    # Both places the client finds usage in (the final chunk's `usage`, Kimi's `choices[0].usage`) arrive merged.
    usage = Usage(prompt_tokens=1000, completion_tokens=500, total_tokens=1500, cached_tokens=400)
    result = credits.settle(reservation, message=placeholder, usage=usage, estimated=False)

    assert result == credits.SettleResult(cost=D("1.0054"), balance=D("98.9946"))
    assert ledger(owner)[1:] == [(Kind.CHARGE, D("-1.034"), D("98.966")), (Kind.REFUND, D("0.0286"), D("98.9946"))]
    stored = Message.objects.get(pk=placeholder.pk)
    assert (stored.cost, stored.usage_estimated, stored.prompt_tokens, stored.cached_tokens) == (
        D("1.0054"),
        False,
        1000,
        400,
    )
    assert placeholder.cost == D("1.0054")  # the caller's instance too, so its own save() keeps the cost
    assert set(
        CreditTransaction.objects.filter(kind__in=[Kind.CHARGE, Kind.REFUND]).values_list("message", flat=True)
    ) == {placeholder.pk}
    assert credits.verify_ledger() == []


@pytest.mark.django_db
def test_default_price_is_one_credit_per_answer(owner, placeholder):
    reservation = credits.reserve(owner, model="kimi-k2", prompt_tokens=50_000, max_completion_tokens=8192)
    result = credits.settle(reservation, message=placeholder, usage=Usage(50_000, 900, 50_900), estimated=False)
    assert result.cost == D(1)
    assert credits.get_balance(owner) == D(99)
    assert ledger(owner)[1:] == [(Kind.CHARGE, D(-1), D(99))]  # estimate was exact: no refund row


@pytest.mark.django_db
def test_release_refunds_everything(owner, placeholder, token_prices):
    reservation = credits.reserve(owner, model="kimi-k2", prompt_tokens=1000, max_completion_tokens=4000)
    balance = credits.release(reservation, message=placeholder, note="upstream 503")
    assert balance == D(100) == credits.get_balance(owner)
    assert ledger(owner)[-1] == (Kind.REFUND, D("1.034"), D(100))
    assert Message.objects.get(pk=placeholder.pk).cost == 0
    assert "upstream 503" in CreditTransaction.objects.get(kind=Kind.REFUND).note


@pytest.mark.django_db
def test_a_stopped_answer_is_charged_for_what_was_generated_with_the_estimated_flag(owner, placeholder, token_prices):
    reservation = credits.reserve(owner, model="kimi-k2", prompt_tokens=1000, max_completion_tokens=4000)
    partial = Usage(prompt_tokens=1000, completion_tokens=120, total_tokens=1120)  # counted locally after "stop"
    result = credits.settle(reservation, message=placeholder, usage=partial, estimated=True)
    assert result.cost == D("1.00296")  # 1 + 1000*2/1M + 120*8/1M
    placeholder.refresh_from_db()
    assert (placeholder.cost, placeholder.usage_estimated, placeholder.completion_tokens) == (D("1.00296"), True, 120)
    charge = CreditTransaction.objects.get(pk=reservation.transaction_id)
    assert charge.estimated and "(estimated)" in charge.note
    assert CreditTransaction.objects.get(kind=Kind.REFUND).estimated


@pytest.mark.django_db
def test_settle_without_usage_charges_the_prompt_that_was_sent(owner, placeholder, token_prices):
    reservation = credits.reserve(owner, model="kimi-k2", prompt_tokens=1000, max_completion_tokens=4000)
    result = credits.settle(reservation, message=placeholder, usage=None, estimated=False)
    assert result.cost == D("1.002")
    placeholder.refresh_from_db()
    assert placeholder.usage_estimated and placeholder.prompt_tokens == 1000


@pytest.mark.django_db
def test_insufficient_credits_writes_nothing(owner, placeholder):
    pricing.set_price("kimi-k2", per_request="100.000001")
    with pytest.raises(InsufficientCredits) as info:
        credits.reserve(owner, model="kimi-k2", prompt_tokens=10, max_completion_tokens=10, message=placeholder)
    assert (info.value.balance, info.value.estimated_cost) == (D(100), D("100.000001"))
    assert credits.get_balance(owner) == D(100)
    assert len(ledger(owner)) == 1


@pytest.mark.django_db
def test_a_reservation_closes_once(owner, placeholder):
    reservation = credits.reserve(owner, model="kimi-k2", prompt_tokens=1, max_completion_tokens=1)
    credits.settle(reservation, message=placeholder, usage=Usage(1, 1, 2), estimated=False)
    rows = ledger(owner)
    with pytest.raises(ReservationClosed):
        credits.settle(reservation, message=placeholder, usage=Usage(1, 1, 2), estimated=False)
    with pytest.raises(ReservationClosed):
        credits.release(reservation)  # e.g. a `finally` after a settle: it must not hand the credit back
    assert ledger(owner) == rows
    assert credits.get_balance(owner) == D(99)


@pytest.mark.django_db
def test_an_answer_never_costs_more_than_was_reserved(settings, make_user, make_answer):
    settings.KIMICHAT_SIGNUP_CREDITS = 10
    user = make_user("poor")
    answer = make_answer(user, status=Message.Status.STREAMING, cost=D(0))
    pricing.set_price("kimi-k2", per_million_completion="1000000")  # one credit per completion token
    reservation = credits.reserve(user, model="kimi-k2", prompt_tokens=0, max_completion_tokens=1)
    assert credits.get_balance(user) == D(9)
    # The provider ignored max_tokens and wrote 5 tokens: the user was told "up to 1 credit", and pays 1.
    result = credits.settle(reservation, message=answer, usage=Usage(0, 5, 5), estimated=False)
    assert result == credits.SettleResult(cost=D(1), balance=D(9))
    rows = CreditTransaction.objects.filter(account__user=user).order_by("pk")
    assert [(r.kind, r.amount) for r in rows] == [(Kind.SIGNUP_BONUS, D(10)), (Kind.CHARGE, D(-1))]
    assert "4.000000 beyond the reservation not charged" in rows.last().note  # on record for staff
    assert credits.verify_ledger(user) == []


@pytest.mark.django_db
def test_a_price_raised_during_an_answer_does_not_raise_its_cost(owner, placeholder, token_prices):
    reservation = credits.reserve(owner, model="kimi-k2", prompt_tokens=1000, max_completion_tokens=1000)
    pricing.set_price("kimi-k2", per_request="50")
    result = credits.settle(reservation, message=placeholder, usage=Usage(1000, 1000, 2000), estimated=False)
    assert result.cost == reservation.amount == D("1.01")


@pytest.mark.django_db
def test_the_reservation_covers_a_cached_price_above_the_prompt_price(owner, placeholder):
    pricing.set_price("kimi-k2", per_million_prompt="1", per_million_cached="3")
    reservation = credits.reserve(owner, model="kimi-k2", prompt_tokens=1_000_000, max_completion_tokens=0)
    assert reservation.amount == D(3)
    usage = Usage(1_000_000, 0, 1_000_000, cached_tokens=1_000_000)
    assert credits.settle(reservation, message=placeholder, usage=usage, estimated=False).cost == D(3)


@pytest.mark.django_db
def test_a_free_answer_is_still_one_request_on_the_ledger(owner, placeholder):
    pricing.set_price("free-model")
    reservation = credits.reserve(owner, model="free-model", prompt_tokens=10, max_completion_tokens=10)
    assert reservation.amount == 0
    assert credits.settle(reservation, message=placeholder, usage=Usage(10, 10, 20), estimated=False).cost == 0
    row = CreditTransaction.objects.get(pk=reservation.transaction_id)
    assert (row.amount, row.state, row.model, row.prompt_tokens, row.completion_tokens) == (
        0,
        "settled",
        "free-model",
        10,
        10,
    )
    assert credits.get_balance(owner) == D(100)


@pytest.mark.django_db
def test_reservations_pickle_and_can_be_found_again_from_their_message(owner, placeholder):
    reservation = credits.reserve(owner, model="kimi-k2", prompt_tokens=5, max_completion_tokens=5, message=placeholder)
    assert pickle.loads(pickle.dumps(reservation)) == reservation
    found = credits.open_reservation_for(placeholder)
    assert (found.transaction_id, found.amount, found.model, found.user_id) == (
        reservation.transaction_id,
        D(1),
        "kimi-k2",
        owner.pk,
    )
    credits.release(found, message=placeholder)
    assert credits.open_reservation_for(placeholder) is None


# --- the ledger always adds up --------------------------------------------------------------------------------

operations = st.lists(
    st.one_of(
        st.tuples(st.just("grant"), st.decimals(min_value=D("0.000001"), max_value=D(500), places=6)),
        st.tuples(st.just("adjust"), st.decimals(min_value=D(-300), max_value=D(300), places=6)),
        st.tuples(
            st.just("answer"),
            st.integers(0, 200_000),  # prompt tokens
            st.integers(0, 10_000),  # completion budget
            st.integers(0, 12_000),  # completion tokens really written (may exceed the budget)
            st.sampled_from(["settle", "estimate", "release", "no-usage"]),
        ),
    ),
    max_size=12,
)


@pytest.mark.django_db
@hypothesis_settings(deadline=None, max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=operations)
# Sums that SQLite's float SUM gets wrong in the 15th digit: checked on every run, not when hypothesis finds them.
@example(ops=[("grant", 172), ("grant", 195), ("grant", D("0.004140")), ("adjust", D(-467))])
@example(ops=[("grant", 172), ("grant", 195), ("grant", D("0.004140")), ("answer", 0, 747, 0, "settle")])
def test_the_ledger_always_sums_to_the_balance(django_user_model, ops):
    with transaction.atomic():  # each example rolls back, so examples never see each other's rows
        pricing.set_price(
            "kimi-k2", per_request="0.5", per_million_prompt="20", per_million_completion="300", per_million_cached="5"
        )
        user = django_user_model.objects.create(username="hypo")  # no password: hashing would dominate the run
        conversation = Conversation.objects.create(owner=user, model="kimi-k2")
        answer = Message.objects.create(conversation=conversation, role=Message.Role.ASSISTANT)
        expected = D(100)  # the signup bonus; then what each operation should have done, computed independently
        for op in ops:
            try:
                if op[0] == "grant":
                    credits.grant(user, op[1])
                    expected += op[1]
                elif op[0] == "adjust" and op[1] != 0:
                    credits.adjust(user, op[1], created_by=None, note="test")
                    expected += op[1]
                elif op[0] == "answer":
                    _, prompt, budget, written, outcome = op
                    r = credits.reserve(user, model="kimi-k2", prompt_tokens=prompt, max_completion_tokens=budget)
                    assert r.amount == D("0.5") + (prompt * 20 + budget * 300) / D(10**6)
                    usage = Usage(prompt, written, prompt + written, cached_tokens=prompt // 3)
                    if outcome == "release":
                        credits.release(r)
                    else:
                        if outcome == "no-usage":
                            usage = Usage(prompt_tokens=prompt)
                        fresh, cached = usage.prompt_tokens - usage.cached_tokens, usage.cached_tokens
                        full = D("0.5") + (fresh * 20 + cached * 5 + usage.completion_tokens * 300) / D(10**6)
                        full = full.quantize(D("0.000001"))
                        result = credits.settle(
                            r,
                            message=answer,
                            usage=None if outcome == "no-usage" else usage,
                            estimated=outcome == "estimate",
                        )
                        assert result.cost == min(full, r.amount)  # never more than was reserved
                        expected -= result.cost
            except InsufficientCredits:
                pass
            balance = credits.get_balance(user)
            assert balance == expected
            assert balance >= 0
            assert balance == ledger_sum(user)
            assert credits.verify_ledger(user) == []
        transaction.set_rollback(True)


# --- commands -------------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_checkcredits_passes_on_a_consistent_ledger_and_catches_a_tampered_balance(owner, outsider, capsys):
    call_command("checkcredits")
    assert "matches" in capsys.readouterr().out
    CreditAccount.objects.filter(user=outsider).update(balance=D("1000"))  # written around the service
    with pytest.raises(CommandError, match="1 account"):
        call_command("checkcredits")
    err = capsys.readouterr().err
    assert "outsider" in err and "1000" in err and "owner" not in err
    call_command("checkcredits", "--user", "owner")  # the untouched account alone is fine


@pytest.mark.django_db
def test_the_ledger_check_is_exact_where_the_database_sums_decimals_as_floats(owner, capsys):
    # 100 + 172 + 195 + 0.00414 - 467 summed as floats is 0.004140000000006694.
    for amount in ("172", "195", "0.004140"):
        credits.grant(owner, amount)
    credits.adjust(owner, D(-467), created_by=None, note="test")
    assert credits.get_balance(owner) == D("0.004140")
    assert credits.verify_ledger(owner) == []
    call_command("checkcredits")
    assert "matches" in capsys.readouterr().out


@pytest.mark.django_db
def test_grantcredits_command(owner, capsys):
    call_command("grantcredits", "owner", "25.5", "--note", "conference")
    assert "Granted 25.50 credits to owner; balance is now 125.50." in capsys.readouterr().out
    assert CreditTransaction.objects.filter(kind=Kind.GRANT, amount=D("25.5"), note="conference").count() == 1
    with pytest.raises(CommandError, match="no user"):
        call_command("grantcredits", "nobody", "1")
    with pytest.raises(CommandError, match="positive"):
        call_command("grantcredits", "owner", "-5")
    assert credits.get_balance(owner) == D("125.5")


# --- concurrency (PostgreSQL: SQLite serializes writers and cannot show a race) ----------------------------------


@pytest.mark.django_db(transaction=True)
def test_concurrent_reservations_never_overspend(settings, make_user):
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL: row locks under real concurrency (set DATABASE_URL=postgres://...)")
    settings.KIMICHAT_SIGNUP_CREDITS = 10
    user = make_user("racer")
    threads_count = 50
    barrier = threading.Barrier(threads_count)
    outcomes: list[str] = []
    lock = threading.Lock()

    def spend():
        try:
            barrier.wait(timeout=30)
            credits.reserve(user, model="kimi-k2", prompt_tokens=10, max_completion_tokens=10)
            result = "ok"
        except InsufficientCredits:
            result = "refused"
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            result = repr(exc)
        finally:
            connections.close_all()
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=spend) for _ in range(threads_count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)

    assert sorted(set(outcomes)) == ["ok", "refused"], outcomes
    assert outcomes.count("ok") == 10
    assert credits.get_balance(user) == 0
    assert ledger_sum(user) == 0
    assert CreditTransaction.objects.filter(account__user=user, kind=Kind.CHARGE).count() == 10
    assert credits.verify_ledger(user) == []


@pytest.mark.django_db
def test_known_models_are_the_providers_list_as_last_read_then_the_fallback(kimi_settings, settings):
    settings.KIMI_FALLBACK_MODELS = ["fallback-only"]
    assert pricing.known_models() == ["fallback-only"]  # nothing read yet, and the provider is not asked
    assert not [r for r in kimi_settings.log.records if r.path.endswith("/models")]
    listed = async_to_sync(get_client().list_models)()
    assert pricing.known_models() == [*listed, "fallback-only"]
