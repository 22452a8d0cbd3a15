"""The provider balance alert (PROVIDER_BALANCE_ALERT_BELOW): a WARNING once per crossing, on the read that
crossed (never on a dashboard view), and an alert on the dashboard while the last balance read is below it."""

from __future__ import annotations

import logging
from decimal import Decimal

import pytest
from asgiref.sync import async_to_sync
from django.urls import reverse

from conversations.models import ProviderSnapshot
from conversations.services.billing import provider_balance

pytestmark = pytest.mark.django_db(transaction=True)
DASHBOARD = reverse("admin:kimichat_dashboard")
LOGGER = "conversations.billing"


def read_balance():  # the offline server's account holds 49.58
    return async_to_sync(provider_balance.refresh_provider_balance)()


def warnings_in(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno == logging.WARNING]


def test_a_warning_once_per_crossing_and_the_dashboard_alert(kimi_settings, settings, caplog, admin_client):
    settings.KIMICHAT_PROVIDER_BALANCE_ALERT_BELOW = Decimal(50)
    ProviderSnapshot.objects.create(balance=Decimal(120), source="balance_endpoint")
    page = admin_client.get(DASHBOARD).content.decode()
    assert 'id="kc-provider-alert"' not in page
    caplog.set_level(logging.INFO, logger=LOGGER)

    read_balance()  # 120 → 49.58: crosses
    assert warnings_in(caplog) == [
        "the provider balance 49.58 is below the alert level 50: top up the provider account"
    ]
    read_balance()  # still below: no second warning
    for _ in range(3):
        page = admin_client.get(DASHBOARD).content.decode()  # reading the dashboard logs nothing
    assert len(warnings_in(caplog)) == 1
    assert 'id="kc-provider-alert"' in page
    assert "The provider balance (49.58) is below the alert level (50)" in page
    assert 'kc-card kc-card-alert"><span class="kc-card-label">Provider balance' in page

    ProviderSnapshot.objects.create(balance=Decimal(80), source="balance_endpoint")  # topped up, read
    assert 'id="kc-provider-alert"' not in admin_client.get(DASHBOARD).content.decode()
    read_balance()  # a new crossing: a new warning
    assert len(warnings_in(caplog)) == 2


def test_no_alert_without_a_level_or_above_it(kimi_settings, settings, caplog, admin_client):
    caplog.set_level(logging.INFO, logger=LOGGER)
    settings.KIMICHAT_PROVIDER_BALANCE_ALERT_BELOW = None
    read_balance()
    settings.KIMICHAT_PROVIDER_BALANCE_ALERT_BELOW = Decimal(40)
    read_balance()
    assert warnings_in(caplog) == []
    assert 'id="kc-provider-alert"' not in admin_client.get(DASHBOARD).content.decode()


def test_the_first_read_below_the_level_warns(kimi_settings, settings, caplog):
    settings.KIMICHAT_PROVIDER_BALANCE_ALERT_BELOW = Decimal("49.59")
    read_balance()
    assert len(warnings_in(caplog)) == 1


def test_a_malformed_level_fails_at_startup():
    import subprocess
    import sys

    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import django, os; os.environ['DJANGO_SETTINGS_MODULE']='kimichat.settings'; django.setup()",
        ],  # fmt: skip
        env={**__import__("os").environ, "PROVIDER_BALANCE_ALERT_BELOW": "lots"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "PROVIDER_BALANCE_ALERT_BELOW must be a number, got 'lots'" in result.stderr
