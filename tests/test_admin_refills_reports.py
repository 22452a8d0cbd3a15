"""The operators' admin pages of issue 21 (refills, announcements, reports, the balance alert): their forms'
validation, and how they look in headless Chromium (1280 px light and dark, 390 px)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.contrib.auth.models import Group
from django.urls import reverse

from conversations.models import Announcement, ProviderSnapshot, RefillSchedule
from conversations.services.billing import credits, refills
from tests.fixtures.browser import screenshot, session_cookie_for
from tests.test_browser_admin_layout import CLIPPED

pytestmark = pytest.mark.django_db
ADD = reverse("admin:conversations_refillschedule_add")


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def form(**fields):
    return {"name": "monthly", "period": "monthly", "mode": "up_to", "amount": "500", "active": "on", **fields}


def test_a_schedule_needs_a_user_or_a_group_and_a_positive_amount(admin_client, owner):
    team = Group.objects.create(name="team")
    page = admin_client.post(ADD, form()).content.decode()
    assert "Choose either a user or a group." in page
    page = admin_client.post(ADD, form(user=owner.pk, group=team.pk)).content.decode()
    assert "Choose either a user or a group." in page
    for bad in ("-5", "0", "abc", "1.0000001"):
        response = admin_client.post(ADD, form(user=owner.pk, amount=bad))
        assert response.status_code == 200 and "errorlist" in response.content.decode(), bad
    assert not RefillSchedule.objects.exists()
    response = admin_client.post(ADD, form(group=team.pk, amount="250.5"))
    assert response.status_code == 302
    schedule = RefillSchedule.objects.get()
    assert schedule.amount == Decimal("250.5") and schedule.created_by.username == "admin"


def test_the_run_now_action_grants_what_is_due(admin_client, owner):
    schedule = RefillSchedule.objects.create(name="daily", user=owner, period="daily", mode="by_amount", amount=3)
    url = reverse("admin:conversations_refillschedule_changelist")
    response = admin_client.post(url, {"action": "run_now", "_selected_action": [schedule.pk]}, follow=True)
    assert "Refilled 1 users with 3.00 credits" in response.content.decode()
    assert credits.get_balance(owner) == 103
    grants = admin_client.get(reverse("admin:conversations_refillgrant_changelist")).content.decode()
    assert refills.period_key("daily") in grants
    grant_page = reverse("admin:conversations_refillgrant_change", args=[schedule.grants.get().pk])
    assert admin_client.post(grant_page, {}).status_code == 403  # read-only


@pytest.fixture
def alert_level(monkeypatch):
    """Set before the daphne process starts (it reads its own settings from the environment)."""
    monkeypatch.setenv("PROVIDER_BALANCE_ALERT_BELOW", "10")


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_the_pages_in_the_browser(alert_level, chromium, live_daphne, make_user):
    operator = make_user("operator", is_staff=True, is_superuser=True)
    team = Group.objects.create(name="support team")
    members = [make_user(f"member{i}") for i in range(3)]
    team.user_set.add(*members)
    RefillSchedule.objects.create(name="Team allowance", group=team, mode="up_to", amount=Decimal(500))
    RefillSchedule.objects.create(name="Weekly bonus", user=members[0], period="weekly", mode="by_amount", amount=20)
    refills.run_refills()
    Announcement.objects.create(message="Maintenance tonight from 22:00 UTC", level="warning")
    ProviderSnapshot.objects.create(balance=Decimal(120), source="balance_endpoint")
    ProviderSnapshot.objects.create(balance=Decimal("3.5"), source="balance_endpoint")
    pages = {
        "refillschedule": "/admin/conversations/refillschedule/",
        "refillschedule-add": "/admin/conversations/refillschedule/add/",
        "refillgrant": "/admin/conversations/refillgrant/",
        "announcement": "/admin/conversations/announcement/",
        "announcement-add": "/admin/conversations/announcement/add/",
        "reports": "/admin/reports/",
        "reports-error": "/admin/reports/?report=users&start=2026-03-05&end=2026-03-01",
        "dashboard": "/admin/dashboard/",
    }
    for scheme, width in (("light", 1280), ("dark", 1280), ("light", 390)):
        context = chromium.new_context(viewport={"width": width, "height": 900}, color_scheme=scheme, locale="en-US")
        context.add_cookies([session_cookie_for(operator, live_daphne.url)])
        page = context.new_page()
        for name, path in pages.items():
            page.goto(live_daphne.url + path)
            screenshot(page, f"admin-issue21-{name}-{width}-{scheme}")
            if name == "dashboard":
                assert page.locator("#kc-provider-alert").is_visible()
            if width == 1280 and "add" not in name and "reports" not in name and name != "dashboard":
                result = page.evaluate(CLIPPED)
                assert result["clipped"] == [] and result["pageOverflow"] <= 0, (name, result)
        context.close()
