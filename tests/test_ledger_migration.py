"""Migration 0004: older ledger rows get their model, state, tokens and reservation link, from the linked message
where it still exists, else from the row's own note, so spending figures cover history too."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

pytestmark = pytest.mark.django_db(transaction=True)
BEFORE = [("conversations", "0003_search_skips_answers_in_progress")]
AFTER = [("conversations", "0004_ledger_keeps_model_and_tokens")]


def migrate(targets):
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)
    return executor.loader.project_state(targets).apps


@pytest.fixture(autouse=True)
def _back_to_the_latest_schema():
    yield
    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())  # later tests need every migration, 0004 or not the last


def test_older_rows_learn_their_model_state_and_tokens():
    apps = migrate(BEFORE)
    User = apps.get_model("auth", "User")
    Conversation = apps.get_model("conversations", "Conversation")
    Message = apps.get_model("conversations", "Message")
    Account = apps.get_model("conversations", "CreditAccount")
    Tx = apps.get_model("conversations", "CreditTransaction")
    user = User.objects.create(username="old")
    account = Account.objects.create(user=user, balance=Decimal("96.5"))
    chat = Conversation.objects.create(owner=user, model="kimi-k2")
    kept = Message.objects.create(
        conversation=chat, role="assistant", model="kimi-k2.6", prompt_tokens=11, completion_tokens=22, cached_tokens=3
    )

    def row(kind, amount, note, message=None):
        return Tx.objects.create(
            account=account, kind=kind, amount=Decimal(amount), balance_after=0, note=note, message=message
        )

    row("signup_bonus", "100", "Welcome credits")
    settled = row("charge", "-3", "kimi-k2.6: 10 prompt + 20 completion tokens", kept)  # the message wins
    unused = row("refund", "1", f"unused part of reservation #{settled.pk}", kept)
    deleted = row("charge", "-2", "kimi-k2: 5 prompt, 2 cached + 7 completion tokens (estimated)")  # message gone
    released = row("charge", "-4", "kimi-k3: released: model_not_found")
    refund = row("refund", "4", f"reservation #{released.pk} released: model_not_found")
    running = row("charge", "-0.5", "reserved: kimi-k2")
    grant = row("grant", "2", "gift")

    apps = migrate(AFTER)
    Tx = apps.get_model("conversations", "CreditTransaction")

    def get(r):
        found = Tx.objects.get(pk=r.pk)
        return found.state, found.model, found.prompt_tokens, found.completion_tokens, found.cached_tokens

    assert get(settled) == ("settled", "kimi-k2.6", 11, 22, 3)
    assert get(deleted) == ("settled", "kimi-k2", 5, 7, 2)
    assert get(released) == ("released", "kimi-k3", 0, 0, 0)
    assert get(running) == ("open", "kimi-k2", 0, 0, 0)
    assert get(grant) == ("", "", 0, 0, 0)
    assert Tx.objects.get(pk=unused.pk).reservation_id == settled.pk
    assert (Tx.objects.get(pk=refund.pk).reservation_id, Tx.objects.get(pk=refund.pk).model) == (released.pk, "kimi-k3")
