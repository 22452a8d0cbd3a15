"""Password reset by e-mail (Django's flow, our pages): the link works once, an unknown address gets the same
answer, requests are throttled, and a reset ends the user's other sessions and sockets and lifts log-in locks."""

from __future__ import annotations

import re

import pytest
from asgiref.sync import sync_to_async
from django.core import mail
from django.test import Client
from django.urls import reverse

from conversations.services.accounts import login_throttle
from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db
NEW_PASSWORD = "a brand new passphrase 42"


@pytest.fixture
def alice(make_user):
    return make_user("alice", email="alice@example.com")


def request_reset(client, email):
    return client.post(reverse("password_reset"), {"email": email})


def link_in(message) -> str:
    return re.search(r"https?://[^/\s]+(/accounts/reset/\S+/)", message.body).group(1)


def test_login_page_links_the_reset_page_styled_like_it(client):
    login = client.get(reverse("login")).content.decode()
    assert reverse("password_reset") in login
    page = client.get(reverse("password_reset")).content.decode()
    assert "auth-card" in page and "Reset your password" in page


def test_reset_end_to_end_the_link_works_once(client, alice):
    response = request_reset(client, "ALICE@example.com")
    assert response.status_code == 302 and response["Location"] == reverse("password_reset_done")
    assert len(mail.outbox) == 1
    message = mail.outbox[0]
    assert message.to == ["alice@example.com"] and "Reset your KimiChat password" in message.subject
    assert "alice" in message.body
    link = link_in(message)
    form_page = client.get(link, follow=True)  # Django moves the token into the session, then shows the form
    assert "Choose a new password" in form_page.content.decode()
    set_url = form_page.redirect_chain[-1][0]
    response = client.post(set_url, {"new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD})
    assert response.status_code == 302 and response["Location"] == reverse("password_reset_complete")
    alice.refresh_from_db()
    assert alice.check_password(NEW_PASSWORD)
    # Single use: the token was bound to the old password.
    again = Client().get(link, follow=True).content.decode()
    assert "This link does not work" in again
    assert Client().login(username="alice", password=NEW_PASSWORD)


def test_an_unknown_address_gets_the_same_answer_and_no_mail(client, alice):
    known = request_reset(client, "alice@example.com")
    unknown = request_reset(Client(), "nobody@example.com")
    assert (unknown.status_code, unknown["Location"]) == (known.status_code, known["Location"])
    assert [m.to for m in mail.outbox] == [["alice@example.com"]]
    done = client.get(reverse("password_reset_done")).content.decode()
    assert "If an account has this address" in done


def test_a_weak_new_password_is_refused_under_its_field(client, alice):
    request_reset(client, "alice@example.com")
    page = client.get(link_in(mail.outbox[0]), follow=True)
    response = client.post(page.redirect_chain[-1][0], {"new_password1": "12345678", "new_password2": "12345678"})
    assert response.status_code == 200
    assert "new_password1" in response.context["form"].errors
    alice.refresh_from_db()
    assert alice.check_password(PASSWORD)


def test_requests_are_throttled_per_address_and_mails_per_inbox(alice, settings):
    settings.PASSWORD_RESETS_PER_IP = 4
    settings.PASSWORD_RESETS_PER_EMAIL = 2
    stranger = Client(REMOTE_ADDR="203.0.113.9")
    statuses = [request_reset(stranger, "alice@example.com").status_code for _ in range(4)]
    assert statuses == [302, 302, 302, 302]
    assert len(mail.outbox) == 2  # the inbox limit: the same answer, no third mail
    refused = request_reset(stranger, "alice@example.com")
    assert refused.status_code == 429 and int(refused["Retry-After"]) > 0
    assert "Too many password reset requests" in refused.content.decode()
    # Another address may still ask, but the inbox got its share for this window.
    assert request_reset(Client(REMOTE_ADDR="198.51.100.7"), "alice@example.com").status_code == 302
    assert len(mail.outbox) == 2


def test_a_reset_lifts_the_accounts_log_in_locks(client, alice, settings):
    settings.LOGIN_FAILURES_PER_ACCOUNT_AND_ADDRESS = 2
    for _ in range(2):
        Client(REMOTE_ADDR="127.0.0.1").post(reverse("login"), {"username": "alice", "password": "wrong"})
    assert login_throttle.lock_status("alice").locked
    request_reset(client, "alice@example.com")
    page = client.get(link_in(mail.outbox[0]), follow=True)
    client.post(page.redirect_chain[-1][0], {"new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD})
    assert not login_throttle.lock_status("alice").locked
    response = Client(REMOTE_ADDR="127.0.0.1").post(reverse("login"), {"username": "alice", "password": NEW_PASSWORD})
    assert response.status_code == 302


def test_a_reset_logs_out_the_other_sessions(alice):
    elsewhere = Client()
    elsewhere.force_login(alice)
    assert elsewhere.get("/").status_code == 200
    client = Client()
    request_reset(client, "alice@example.com")
    page = client.get(link_in(mail.outbox[0]), follow=True)
    client.post(page.redirect_chain[-1][0], {"new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD})
    assert elsewhere.get("/").status_code == 302  # to the log-in page


@pytest.mark.django_db(transaction=True)
async def test_a_reset_closes_the_users_open_sockets(connect, alice):
    tab = await connect(alice)
    await tab.send(type="ping")
    assert (await tab.recv())["type"] == "pong"

    def reset():
        client = Client()
        request_reset(client, "alice@example.com")
        page = client.get(link_in(mail.outbox[0]), follow=True)
        client.post(page.redirect_chain[-1][0], {"new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD})

    await sync_to_async(reset)()
    output = await tab.communicator.receive_output(timeout=5)
    assert output == {"type": "websocket.close", "code": 4401}
