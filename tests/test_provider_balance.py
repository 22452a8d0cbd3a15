"""The provider balance: read on a schedule by one worker (a cache lock), on demand from the dashboard, kept as
ProviderSnapshot rows and shown with the time it was read."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest
from asgiref.sync import async_to_sync
from django.urls import reverse

from conversations.admin import dashboard as admin_dashboard
from conversations.models import ProviderSnapshot
from conversations.services.billing import provider_balance

pytestmark = pytest.mark.django_db(transaction=True)
DASHBOARD = reverse("admin:kimichat_dashboard")
REFRESH = reverse("admin:kimichat_refresh_provider_balance")


def balance_reads(offline) -> int:
    return sum(1 for r in offline.log.records if r.path.endswith("/users/me/balance"))


def test_one_read_per_interval_however_many_workers_try(kimi_settings, settings):
    settings.KIMICHAT_PROVIDER_BALANCE_INTERVAL = 300
    first = async_to_sync(provider_balance.refresh_if_due)()
    assert first.balance == Decimal("49.58") and first.source == "balance_endpoint"
    # Another worker (or this one's next round) within the interval: the lock in the shared cache says no.
    assert async_to_sync(provider_balance.refresh_if_due)() is None
    assert balance_reads(kimi_settings) == 1
    assert list(ProviderSnapshot.objects.values_list("balance", flat=True)) == [Decimal("49.58")]


def test_no_scheduled_read_when_the_interval_is_zero(kimi_settings, settings):
    settings.KIMICHAT_PROVIDER_BALANCE_INTERVAL = 0
    assert async_to_sync(provider_balance.refresh_if_due)() is None
    assert balance_reads(kimi_settings) == 0


def test_the_balance_outlives_later_header_snapshots(kimi_settings):
    async_to_sync(provider_balance.refresh_provider_balance)()
    ProviderSnapshot.objects.create(credits_remaining="12", source="headers")  # every minute while answers stream
    data = admin_dashboard.dashboard_data()
    assert data.provider.source == "headers"
    assert data.provider_balance.balance == Decimal("49.58")


def test_the_dashboard_refresh_button_reads_the_balance_and_shows_when(kimi_settings, admin_client):
    page = admin_client.get(DASHBOARD).content.decode()
    assert 'id="kc-provider-balance">—<' in page and "never read" in page
    assert f'action="{REFRESH}"' in page
    assert admin_client.get(REFRESH).status_code == 405  # a read that writes a row is a POST
    response = admin_client.post(REFRESH, follow=True)
    assert response.redirect_chain[-1][0] == DASHBOARD
    page = response.content.decode()
    assert 'id="kc-provider-balance">49.58<' in page
    assert "Provider balance read: 49.58." in page
    snapshot = ProviderSnapshot.objects.get()
    assert snapshot.recorded_at.strftime("%Y-%m-%d %H:%M:%S") in page  # the time it was read
    assert balance_reads(kimi_settings) == 1


def test_refreshing_needs_the_dashboard_permission(kimi_settings, client, make_user):
    staff = make_user("staff", is_staff=True)
    client.force_login(staff)
    assert client.post(REFRESH).status_code == 403
    assert balance_reads(kimi_settings) == 0


async def test_a_worker_reads_the_balance_in_the_background(connect, owner, chat_settings, settings):
    settings.KIMICHAT_PROVIDER_BALANCE_INTERVAL = 300
    await connect(owner)  # the first socket starts the worker's background tasks, the balance read among them
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while balance_reads(chat_settings) == 0 and loop.time() < deadline:
        await asyncio.sleep(0.05)
    assert balance_reads(chat_settings) == 1
    snapshot = await ProviderSnapshot.objects.filter(balance__isnull=False).afirst()
    assert snapshot is not None and snapshot.balance == Decimal("49.58")
