"""Accounts: sign-up (switchable), in DEBUG the first user becomes the superuser, everything else needs a login."""

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse

from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db


def signup(client, username):
    return client.post(
        reverse("signup"),
        {"username": username, "email": "", "password1": PASSWORD, "password2": PASSWORD},
        follow=True,
    )


def test_in_debug_the_first_user_becomes_superuser_and_is_told_so_once_signed_in(client, settings):
    settings.DEBUG = True  # in production the operator makes the superuser (tests/test_security_auth.py)
    page = client.get(reverse("signup"))
    assert "administrator" not in page.content.decode()  # never announced to anonymous visitors
    response = signup(client, "alice")
    alice = get_user_model().objects.get(username="alice")
    assert alice.is_superuser and alice.is_staff
    assert "your account is the administrator" in response.content.decode()


def test_later_users_are_ordinary(client):
    signup(client, "alice")
    client.logout()
    response = signup(client, "bob")
    bob = get_user_model().objects.get(username="bob")
    assert not bob.is_superuser and not bob.is_staff
    assert "administrator" not in response.content.decode()
    assert response.wsgi_request.user == bob  # logged in straight after sign-up


def test_signup_can_be_switched_off(client, settings):
    settings.KIMICHAT_SIGNUP_ENABLED = False
    assert client.get(reverse("signup")).status_code == 404
    assert client.post(reverse("signup"), {"username": "x"}).status_code == 404
    assert not get_user_model().objects.exists()
    assert "Sign up" not in client.get(reverse("login")).content.decode()


def test_signup_errors_are_shown(client):
    response = client.post(reverse("signup"), {"username": "carol", "password1": PASSWORD, "password2": "different"})
    assert response.status_code == 200
    assert "didn’t match" in response.content.decode()
    assert not get_user_model().objects.filter(username="carol").exists()


@pytest.mark.parametrize("url", ["/", "/c/1/", "/accounts/password/"])
def test_pages_redirect_anonymous_visitors_to_login(client, url):
    response = client.get(url)
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login") + "?next=")


def test_login_and_logout(client, owner):
    response = client.post(reverse("login"), {"username": "owner", "password": PASSWORD})
    assert response.status_code == 302 and response["Location"] == reverse("chat")
    assert client.get("/").status_code == 200
    client.post(reverse("logout"))
    assert client.get("/").status_code == 302


def test_password_change(client, owner):
    client.force_login(owner)
    response = client.post(
        reverse("password_change"),
        {
            "old_password": PASSWORD,
            "new_password1": "a much better passphrase",
            "new_password2": "a much better passphrase",
        },
    )
    assert response.status_code == 302
    owner.refresh_from_db()
    assert owner.check_password("a much better passphrase")


def errors_after(html: str, field: str) -> str:
    """The text between ``field``'s input and the next input: what is shown under that field."""
    start = html.index(f'name="{field}"')
    end = html.find("<input", start + 1)
    return html[start : end if end != -1 else len(html)]


def test_weak_password_errors_show_under_the_password_field_at_sign_up(client):
    weak = "12345678"
    response = client.post(reverse("signup"), {"username": "dave", "password1": weak, "password2": weak})
    assert response.status_code == 200
    form = response.context["form"]
    assert "password1" in form.errors and "password2" not in form.errors
    html = response.content.decode()
    assert "too common" in errors_after(html, "password1")
    assert "too common" not in errors_after(html, "password2")


def test_weak_password_errors_show_under_the_new_password_field_on_change(client, owner):
    client.force_login(owner)
    weak = "12345678"
    response = client.post(
        reverse("password_change"),
        {"old_password": PASSWORD, "new_password1": weak, "new_password2": weak},
    )
    assert response.status_code == 200
    form = response.context["form"]
    assert "new_password1" in form.errors and "new_password2" not in form.errors
    assert "too common" in errors_after(response.content.decode(), "new_password1")
