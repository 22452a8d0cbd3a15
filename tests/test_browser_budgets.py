"""Budgets and model access as people meet them, in headless Chromium against a real daphne process: the chat's
notice when a cap refuses a send, the model picker limited to the allowed models, the usage page's limits and the
user's own caps, and the admin pages staff use. Screenshots land in tests/artifacts/."""

from __future__ import annotations

from decimal import Decimal as D

import pytest
from django.contrib.auth.models import Group

from conversations.models import GroupPolicy, UserBudget
from conversations.services.billing import pricing
from tests.fixtures.browser import screenshot, session_cookie_for
from tests.test_browser_chat import no_js_errors, send, wait_status

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PHONE = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True}
ALLOWED = ("kimi-k2.6", "kimi-k2-turbo-preview")


def test_a_send_over_a_cap_shows_which_cap_and_when_it_resets_and_the_picker_shows_only_allowed_models(
    live_daphne, browser_user, open_page
):
    for model in ALLOWED:
        pricing.set_price(model, per_request=D(1))
    budget = UserBudget.objects.create(user=browser_user, daily_cap=D("0.5"))
    group = Group.objects.create(name="students")
    group.user_set.add(browser_user)
    GroupPolicy.objects.create(group=group, allowed_models=list(ALLOWED))

    page = open_page("/")
    page.click("#model-picker")
    options = page.eval_on_selector_all("#model-list [role=option]", "els => els.map(e => e.dataset.value)")
    assert sorted(options) == sorted(ALLOWED)
    page.keyboard.press("Escape")

    send(page, "hello [[tokens:5]]")
    notice = page.locator("#budget-notice")
    notice.wait_for()
    text = notice.inner_text()
    assert "Daily spending cap reached" in text and "0.50" in text and "It resets on" in text
    assert notice.locator("a[href='/usage/#budget']").count() == 1
    assert page.locator(".toast").count() == 0  # said once, and it stays
    screenshot(page, "budget-notice-desktop")
    dark = open_page("/", color_scheme="dark")
    send(dark, "hello [[tokens:5]]")
    dark.locator("#budget-notice").wait_for()
    screenshot(dark, "budget-notice-desktop-dark")
    phone = open_page("/", **PHONE)
    send(phone, "hello [[tokens:5]]")
    phone.locator("#budget-notice").wait_for()
    screenshot(phone, "budget-notice-phone")

    budget.daily_cap = None  # staff lift the cap: the same send goes through and the notice goes
    budget.save()
    page.wait_for_function("() => document.querySelector('#prompt').value === 'hello [[tokens:5]]'")
    page.press("#prompt", "Enter")
    assert wait_status(page) == "complete"
    page.wait_for_selector("#budget-notice", state="hidden")
    no_js_errors(page)


def test_the_usage_page_shows_the_limits_and_the_user_lowers_their_own_cap(live_daphne, browser_user, open_page):
    UserBudget.objects.create(user=browser_user, daily_cap=D(20), monthly_cap=D(300))
    group = Group.objects.create(name="Research team")
    group.user_set.add(browser_user)
    GroupPolicy.objects.create(group=group, monthly_budget=D(5000), member_monthly_cap=D(250))
    context_pages = []
    for name, options in (
        ("desktop", {}),
        ("desktop-dark", {"color_scheme": "dark"}),
        ("phone", PHONE),
        ("phone-dark", {**PHONE, "color_scheme": "dark"}),
    ):
        page = _usage_page(open_page, live_daphne, options)
        page.evaluate("window.scrollTo(0, document.querySelector('#budget').offsetTop - 70)")
        screenshot(page, f"budget-usage-{name}")
        context_pages.append(page)
    page = context_pages[0]
    meters = page.locator("#budget .meter")
    assert meters.count() == 4
    page.fill("#id_daily", "25")
    page.click("#budget button[type=submit]")
    page.wait_for_selector("#budget .field-error")
    assert "cannot exceed the 20 credits" in page.inner_text("#budget .field-error")
    page.evaluate("window.scrollTo(0, document.querySelector('#budget').offsetTop - 70)")
    screenshot(page, "budget-usage-error")
    page.fill("#id_daily", "5")
    page.click("#budget button[type=submit]")
    page.wait_for_selector(".flash")
    assert UserBudget.objects.get(user=browser_user).own_daily_cap == D(5)
    assert "set by you" in page.inner_text("#budget")
    no_js_errors(page)


def _usage_page(open_page, live_daphne, options):
    """The usage page has no chat script (no ``data-ready`` to wait for): open the chat, then go there."""
    page = open_page("/", **options)
    page.goto(live_daphne.url + "/usage/#budget")
    page.wait_for_selector("#budget")
    return page


def test_the_admin_pages_for_caps_budgets_and_models(live_daphne, chromium, make_user, browser_user):
    admin = make_user("root", is_staff=True, is_superuser=True)
    UserBudget.objects.create(user=browser_user, daily_cap=D(20), own_daily_cap=D(5))
    group = Group.objects.create(name="students")
    group.user_set.add(browser_user)
    GroupPolicy.objects.create(
        group=group, monthly_budget=D(1000), member_monthly_cap=D(100), allowed_models=list(ALLOWED)
    )
    for scheme in ("light", "dark"):
        context = chromium.new_context(viewport={"width": 1280, "height": 900}, color_scheme=scheme)
        context.add_cookies([session_cookie_for(admin, live_daphne.url)])
        page = context.new_page()
        page.goto(f"{live_daphne.url}/admin/auth/user/{browser_user.pk}/change/")
        inline = page.locator("#budget-group")
        inline.scroll_into_view_if_needed()
        assert "set by" in inline.inner_text().lower() and "the user" in inline.inner_text()
        screenshot(page, f"budget-admin-user-{scheme}")
        page.goto(f"{live_daphne.url}/admin/auth/group/{group.pk}/change/")
        page.wait_for_selector("#policy-group")
        page.evaluate("window.scrollTo(0, document.querySelector('#policy-group').offsetTop - 10)")
        checked = page.eval_on_selector_all(
            "#policy-group input[type=checkbox]:checked", "els => els.map(e => e.value)"
        )
        assert sorted(checked) == sorted(ALLOWED)
        screenshot(page, f"budget-admin-group-{scheme}")
        page.goto(f"{live_daphne.url}/admin/auth/group/")
        screenshot(page, f"budget-admin-groups-{scheme}")
        context.close()
    phone = chromium.new_context(**PHONE)
    phone.add_cookies([session_cookie_for(admin, live_daphne.url)])
    page = phone.new_page()
    page.goto(f"{live_daphne.url}/admin/auth/group/{group.pk}/change/")
    page.evaluate("window.scrollTo(0, document.querySelector('#policy-group').offsetTop - 10)")
    screenshot(page, "budget-admin-group-phone")
    phone.close()
