"""Sign-up as a person does it in Chromium: invite-only (the code from the link, a wrong code's words), approval
(the notice, a refused send), and the admin's pages for all of it. Screenshots land in tests/artifacts/signup-*.png
for a person to look at (light and dark, desktop and phone)."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model

from conversations.models import AccountSignup, CreditTransaction, InviteCode, SignupSettings
from conversations.services.accounts import invites
from tests.conftest import PASSWORD
from tests.fixtures.browser import screenshot, session_cookie_for

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
User = get_user_model()
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}


def page_for(chromium, server, path, *, user=None, viewport=DESKTOP, scheme="light"):
    context = chromium.new_context(viewport=viewport, locale="en-US", color_scheme=scheme)
    if user is not None:
        context.add_cookies([session_cookie_for(user, server.url)])
    page = context.new_page()
    page.set_default_timeout(15000)
    page.js_errors = []
    page.on("pageerror", lambda exc: page.js_errors.append(str(exc)))
    page.goto(server.url + path)
    return page


def fill_signup(page, username):
    page.fill("input[name=username]", username)
    page.fill("input[name=password1]", PASSWORD)
    page.fill("input[name=password2]", PASSWORD)
    page.click("button[type=submit]")


def test_invite_only_signup_in_the_browser(chromium, live_daphne, make_user):
    SignupSettings.objects.create(pk=1, mode="invite")
    inviter = make_user("inviter")
    invite = invites.create_for_user(inviter, max_uses=1)
    for viewport, scheme in [(DESKTOP, "light"), (PHONE, "dark")]:
        page = page_for(chromium, live_daphne, "/accounts/signup/?invite=WRONGCODE99", viewport=viewport, scheme=scheme)
        assert page.input_value("input[name=invite_code]") == "WRONGCODE99"
        fill_signup(page, "hopeful")
        page.wait_for_selector("text=This invite code is not valid")
        screenshot(page, f"signup-invite-wrong-{viewport['width']}-{scheme}")
        assert not page.js_errors
        page.context.close()
    page = page_for(chromium, live_daphne, f"/accounts/signup/?invite={invite.code}")
    assert page.is_visible("text=Sign-up on this server is by invitation")
    screenshot(page, "signup-invite-1280-light")
    fill_signup(page, "friend")
    page.wait_for_selector("html[data-ready]")  # the chat page, logged in
    assert not page.is_visible("#approval-notice")
    assert CreditTransaction.objects.filter(account__user=inviter, kind="invite_reward").count() == 1
    assert InviteCode.objects.get(pk=invite.pk).uses == 1
    page.context.close()


def test_approval_notice_and_a_refused_send_in_the_browser(chromium, live_daphne, make_user):
    make_user("operator")  # in DEBUG (the test server) the very first account would become the superuser
    SignupSettings.objects.create(pk=1, mode="approval")
    page = page_for(chromium, live_daphne, "/accounts/signup/")
    assert page.is_visible("text=reviewed by an administrator")
    fill_signup(page, "waiter")
    page.wait_for_selector("html[data-ready]")
    notice = page.locator("#approval-notice")
    assert notice.is_visible() and "waiting for approval" in notice.inner_text()
    page.fill("#prompt", "hello?")
    page.keyboard.press("Enter")
    page.wait_for_selector(".toasts >> text=waiting for approval")
    screenshot(page, "signup-approval-1280-light")
    waiter = User.objects.get(username="waiter")
    assert AccountSignup.objects.get(user=waiter).awaiting_approval
    assert not waiter.conversations.exists()
    assert not page.js_errors
    page.context.close()
    for viewport, scheme in [(PHONE, "light"), (DESKTOP, "dark"), (PHONE, "dark")]:
        page = page_for(chromium, live_daphne, "/", user=waiter, viewport=viewport, scheme=scheme)
        page.wait_for_selector("#approval-notice")
        screenshot(page, f"signup-approval-{viewport['width']}-{scheme}")
        page.context.close()


def test_admin_pages_of_signup_and_two_factor(chromium, live_daphne, make_user):
    from django_otp.plugins.otp_totp.models import TOTPDevice

    admin = User.objects.create_superuser(username="boss", password=PASSWORD)
    inviter = make_user("inviter")
    invites.create_for_user(inviter, max_uses=3, note="for my team")
    invites.create(created_by=admin, max_uses=50, note="conference booth")
    waiting = make_user("newcomer")
    AccountSignup.objects.create(user=waiting, mode="approval", awaiting_approval=True)
    pages = {
        "settings": "/admin/conversations/signupsettings/1/change/",
        "invites": "/admin/conversations/invitecode/",
        "invite-add": "/admin/conversations/invitecode/add/",
        "waiting": "/admin/auth/user/?approval=waiting",
        "two-factor": "/admin/two-factor/",
    }
    for scheme in ("light", "dark"):
        for name, path in pages.items():
            page = page_for(chromium, live_daphne, path, user=admin, scheme=scheme)
            page.wait_for_selector("#content")
            screenshot(page, f"signup-admin-{name}-{scheme}")
            assert not page.js_errors, name
            page.context.close()
    assert TOTPDevice.objects.filter(user=admin, confirmed=False).exists()
    # The admin's log-in with its code field, and the password reset pages, as an anonymous visitor sees them.
    for name, path in {"admin-login": "/admin/login/", "reset": "/accounts/password/reset/"}.items():
        for viewport, scheme in [(DESKTOP, "light"), (PHONE, "dark")]:
            page = page_for(chromium, live_daphne, path, viewport=viewport, scheme=scheme)
            screenshot(page, f"signup-{name}-{viewport['width']}-{scheme}")
            page.context.close()
