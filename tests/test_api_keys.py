"""Personal API keys: made with a secret shown once, stored as a hash, checked through the log-in throttle,
revoked by their owner or by staff."""

from __future__ import annotations

import datetime
import hashlib
from io import StringIO

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.core.management import CommandError, call_command
from django.utils import timezone

from conversations.models import ApiKey
from conversations.services.accounts import login_throttle
from conversations.services.apikeys import keys

pytestmark = pytest.mark.django_db
IP = "203.0.113.9"


def test_a_new_key_is_stored_as_its_hash_and_authenticates(owner):
    new = keys.create(owner, name="laptop")
    stored = ApiKey.objects.get()
    assert new.secret.startswith("kc-") and len(new.secret) > 40
    assert stored.secret_hash == hashlib.sha256(new.secret.encode()).hexdigest()
    assert new.secret not in str(list(ApiKey.objects.values()))
    assert new.secret.startswith(stored.prefix) and len(stored.prefix) < 16
    assert keys.authenticate(new.secret, IP) == stored


def test_wrong_keys_count_in_the_log_in_throttle_and_then_even_a_right_key_is_refused(owner, settings):
    secret = keys.create(owner).secret
    for _ in range(settings.LOGIN_FAILURES_PER_IP):
        with pytest.raises(keys.KeyRefused) as exc:
            keys.authenticate("kc-wrong", IP)
        assert exc.value.code == "invalid_api_key"
    assert login_throttle.check("", IP) is not None
    with pytest.raises(keys.KeyRefused) as exc:
        keys.authenticate(secret, IP)
    assert exc.value.code == "throttled" and exc.value.retry_after > 0
    assert keys.authenticate(secret, "198.51.100.1")  # another address is not locked out


def test_revoked_and_expired_keys_are_refused_without_counting_as_guesses(owner):
    revoked = keys.create(owner)
    keys.revoke(revoked.key)
    expired = keys.create(owner, expires_at=timezone.now() - datetime.timedelta(minutes=1))
    for secret, code in ((revoked.secret, "key_revoked"), (expired.secret, "key_expired")):
        with pytest.raises(keys.KeyRefused) as exc:
            keys.authenticate(secret, IP)
        assert exc.value.code == code
    assert login_throttle.check("", IP) is None


def test_an_oversized_or_empty_secret_is_refused(owner):
    for secret in ("", "kc-" + "x" * 10_000):
        with pytest.raises(keys.KeyRefused):
            keys.authenticate(secret, IP)


def test_createapikey_prints_a_working_key(owner):
    out = StringIO()
    call_command("createapikey", "owner", "--name", "cron", stdout=out)
    secret = out.getvalue().strip()
    assert keys.authenticate(secret, IP).name == "cron"
    with pytest.raises(CommandError):
        call_command("createapikey", "nobody", stdout=StringIO())


def test_keys_page_shows_the_secret_once_lists_and_revokes(owner_client, owner, outsider):
    response = owner_client.post("/keys/", {"name": "script"})
    secret = response.context["secret"]
    assert secret in response.content.decode() and response["Cache-Control"] == "no-store"
    listing = owner_client.get("/keys/").content.decode()
    key = ApiKey.objects.get(owner=owner)
    assert secret not in listing and key.prefix in listing and "script" in listing
    theirs = keys.create(outsider).key
    owner_client.post("/keys/", {"revoke": str(theirs.pk)})
    theirs.refresh_from_db()
    assert theirs.revoked_at is None  # not the owner's key: nothing happens
    owner_client.post("/keys/", {"revoke": str(key.pk)})
    key.refresh_from_db()
    assert key.revoked_at is not None


def test_staff_see_every_key_and_revoke_any(admin_client, owner):
    key = keys.create(owner, name="owner's").key
    page = admin_client.get("/admin/conversations/apikey/")
    assert page.status_code == 200 and key.prefix in page.content.decode()
    assert admin_client.get("/admin/conversations/apikey/add/").status_code == 403
    admin_client.post("/admin/conversations/apikey/", {"action": "revoke_keys", ACTION_CHECKBOX_NAME: [str(key.pk)]})
    key.refresh_from_db()
    assert key.revoked_at is not None


def test_an_api_answer_is_reserved_settled_once_and_shown_with_its_key_on_the_usage_page(owner_client, owner):
    from decimal import Decimal

    from conversations.kimi.events import Usage
    from conversations.models import CreditTransaction
    from conversations.services.apikeys import metering
    from conversations.services.billing import credits

    key = keys.create(owner, name="cron").key
    reservation = metering.admit(
        key.pk, owner, model="kimi-k2-turbo-preview", prompt_tokens=10, max_completion_tokens=50
    )
    assert reservation.api_key_id == key.pk
    usage = Usage(prompt_tokens=10, completion_tokens=20, total_tokens=30)
    cost = metering.finish(reservation, usage=usage, estimated=False, generated=True)
    assert metering.finish(reservation, usage=usage, estimated=False, generated=True) is None  # once only
    key.refresh_from_db()
    assert key.requests == 1 and key.credits_spent == cost == Decimal(1)
    assert set(CreditTransaction.objects.filter(kind__in=["charge", "refund"]).values_list("api_key", flat=True)) <= {
        key.pk
    }
    assert credits.verify_ledger() == []
    page = owner_client.get("/usage/").content.decode()
    assert f"API key {key.prefix}" in page


def test_a_keys_spending_cap_counts_its_running_answers(owner):
    from decimal import Decimal

    from conversations.services.apikeys import metering

    key = keys.create(owner, spending_cap=Decimal("1.5")).key
    metering.admit(key.pk, owner, model="kimi-k2-turbo-preview", prompt_tokens=10, max_completion_tokens=50)
    with pytest.raises(metering.KeyOverCap):  # the first answer still runs: its reservation counts
        metering.admit(key.pk, owner, model="kimi-k2-turbo-preview", prompt_tokens=10, max_completion_tokens=50)


def test_keys_page_sets_a_cap_and_an_expiry_and_refuses_a_past_date(owner_client, owner):
    tomorrow = timezone.localdate() + datetime.timedelta(days=1)
    owner_client.post("/keys/", {"name": "capped", "spending_cap": "5", "expires_on": tomorrow.isoformat()})
    key = ApiKey.objects.get(owner=owner)
    assert key.spending_cap == 5 and timezone.localdate(key.expires_at) == tomorrow + datetime.timedelta(days=1)
    yesterday = timezone.localdate() - datetime.timedelta(days=1)
    response = owner_client.post("/keys/", {"name": "old", "expires_on": yesterday.isoformat()})
    assert "The expiry date is in the past." in response.content.decode()
    assert response.context["secret"] is None and ApiKey.objects.count() == 1
