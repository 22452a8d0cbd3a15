"""Authentication under attack: one throttle behind every way to log in (login page, admin, password change), keyed
on the normalised account and the client address a trusted proxy saw; lock-outs by strangers are costly; staff
unlock; the first superuser is the operator's; sign-up does not enumerate cheaply."""

from __future__ import annotations

import re

import httpx
import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import make_password
from django.core.management import call_command
from django.test import Client

from conversations.services.accounts import login_throttle
from tests.conftest import PASSWORD
from tests.daphne import start_daphne

pytestmark = pytest.mark.django_db

STRANGER = "203.0.113.66"
VICTIM_HOME = "198.51.100.20"


@pytest.fixture(autouse=True)
def _fast_hashing(settings):
    """Argon2 takes ~0.3 s a password: these tests log in dozens of times."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def victim(make_user):
    return make_user("victim")


def _login(username: str, password: str, ip: str = STRANGER, url: str = "/accounts/login/"):
    client = Client(REMOTE_ADDR=ip)
    return client.post(url, {"username": username, "password": password, "next": "/admin/"})


def _logged_in(response) -> bool:
    return "_auth_user_id" in response.client.session


# --- item 1: every way to authenticate goes through the throttle ------------------------------------------------


def test_admin_login_is_refused_once_the_login_page_locked_the_account(make_user):
    make_user("root", is_staff=True, is_superuser=True)
    for n in range(5):
        assert _login("root", f"wrong {n}").status_code == 200
    response = _login("root", PASSWORD, url="/admin/login/")
    assert not _logged_in(response)
    assert "Too many failed log-in attempts" in response.content.decode()


def test_wrong_guesses_at_the_admin_login_lock_it_like_the_login_page(make_user):
    make_user("root", is_staff=True, is_superuser=True)
    for n in range(40):
        response = _login("root", f"wrong {n}", url="/admin/login/")
        assert not _logged_in(response)
    response = _login("root", PASSWORD, url="/admin/login/")
    assert not _logged_in(response)
    assert _login("root", PASSWORD).status_code == 429  # and the login page agrees


def test_password_change_old_password_is_throttled(victim):
    client = Client(REMOTE_ADDR=STRANGER)
    client.force_login(victim)
    new = {"new_password1": "a much better passphrase", "new_password2": "a much better passphrase"}
    for n in range(5):
        response = client.post("/accounts/password/", {"old_password": f"guess {n}", **new})
        assert response.status_code == 200
    response = client.post("/accounts/password/", {"old_password": PASSWORD, **new})
    assert response.status_code == 200
    assert "Too many failed log-in attempts" in response.content.decode()
    victim.refresh_from_db()
    assert victim.check_password(PASSWORD)


def test_admin_password_change_old_password_is_throttled(make_user):
    root = make_user("root", is_staff=True, is_superuser=True)
    client = Client(REMOTE_ADDR=STRANGER)
    client.force_login(root)
    new = {"new_password1": "a much better passphrase", "new_password2": "a much better passphrase"}
    for n in range(5):
        client.post("/admin/password_change/", {"old_password": f"guess {n}", **new})
    response = client.post("/admin/password_change/", {"old_password": PASSWORD, **new})
    assert "Too many failed log-in attempts" in response.content.decode()
    root.refresh_from_db()
    assert root.check_password(PASSWORD)


# --- item 2: no bypass by Unicode variants or a forged X-Forwarded-For ------------------------------------------


def test_a_compatibility_variant_of_the_username_shares_the_lock(victim):
    for n in range(5):
        _login("victim", f"wrong {n}")
    response = _login("\uff56ictim", PASSWORD)  # FULLWIDTH v: Django logs it in as "victim" (NFKC)
    assert response.status_code == 429 and not _logged_in(response)
    for n in range(5):
        _login("\uff36ICTIM", f"wrong {n}", ip="192.0.2.77")  # and the other way round, case folded too
    assert _login("victim", PASSWORD, ip="192.0.2.77").status_code == 429


@pytest.mark.parametrize(
    "hops,header,expected",
    [
        (0, "1.1.1.1, 2.2.2.2", "10.0.0.1"),  # no proxy trusted: the peer itself
        (1, "1.1.1.1, 2.2.2.2", "2.2.2.2"),  # nginx appended the client it saw; the client wrote 1.1.1.1
        (2, "1.1.1.1, 2.2.2.2, 3.3.3.3", "2.2.2.2"),  # a CDN then nginx
        (1, "", "10.0.0.1"),  # no header: the peer
        (2, "9.9.9.9", "9.9.9.9"),  # fewer entries than hops: the oldest one a proxy wrote
        (1, "1.1.1.1, not-an-address", "10.0.0.1"),  # garbage from a proxy is not an address: the peer
    ],
)
def test_client_address_is_the_one_the_last_trusted_proxy_saw(hops, header, expected):
    from conversations.services.accounts.client_address import forwarded_client

    assert forwarded_client("10.0.0.1", header, hops) == expected


def _csrf_login(client: httpx.Client, username: str, password: str, forwarded_for: str) -> httpx.Response:
    page = client.get("/accounts/login/")
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
    return client.post(
        "/accounts/login/",
        data={"username": username, "password": password, "csrfmiddlewaretoken": token},
        headers={"X-Forwarded-For": forwarded_for},
    )


@pytest.mark.django_db(transaction=True)
def test_forged_forwarded_for_entries_do_not_escape_the_address_lock(offline_kimi, tmp_path, owner, settings):
    """daphne as it was documented (``--proxy-headers``) behind nginx (``$proxy_add_x_forwarded_for``): the client
    writes the first entry, nginx appends the address it saw. The address lock must follow nginx's entry."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.PBKDF2PasswordHasher"]  # one daphne knows (MD5 is not)
    owner.password = make_password(PASSWORD)
    owner.save()
    server = start_daphne(offline_kimi, tmp_path, TRUSTED_PROXY_HOPS="1", extra_args=["--proxy-headers"])
    try:
        with httpx.Client(base_url=server.url, timeout=20) as client:
            statuses = [
                _csrf_login(client, f"guess-{n}", "nope", f"10.66.{n}.1, 203.0.113.9").status_code for n in range(21)
            ]
            assert statuses[:20] == [200] * 20
            assert statuses[20] == 429
            # Another client behind the same nginx is not locked by this one.
            other = _csrf_login(client, "owner", PASSWORD, "10.66.0.1, 203.0.113.10")
            assert other.status_code == 302
    finally:
        server.stop()


def test_a_stranger_cannot_lock_the_victim_out_of_their_own_address(victim):
    for n in range(5):
        _login("victim", f"wrong {n}", ip=STRANGER)
    assert _login("victim", PASSWORD, ip=STRANGER).status_code == 429  # the stranger's address is locked
    response = _login("victim", PASSWORD, ip=VICTIM_HOME)
    assert response.status_code == 302 and _logged_in(response)


def test_the_account_wide_lock_comes_only_far_later(victim, settings):
    settings.LOGIN_FAILURES_PER_ACCOUNT = 12  # default 100; the shape is the same
    for ip in ("192.0.2.1", "192.0.2.2", "192.0.2.3"):
        for n in range(4):
            assert _login("victim", f"wrong {n}", ip=ip).status_code == 200
    assert _login("victim", PASSWORD, ip=VICTIM_HOME).status_code == 429


def test_staff_see_the_lock_on_the_users_page_and_can_lift_it(victim, make_user):
    for n in range(5):
        _login("victim", f"wrong {n}", ip=STRANGER)
    assert login_throttle.lock_status("victim").locked
    staff = Client()
    staff.force_login(make_user("root", is_staff=True, is_superuser=True))
    page = staff.get(f"/admin/auth/user/{victim.pk}/change/").content.decode()
    assert "Log-in locked" in page and STRANGER in page
    response = staff.post(
        "/admin/auth/user/", {"action": "unlock_logins", "_selected_action": [victim.pk]}, follow=True
    )
    assert "Unlocked the log-in of 1 account." in response.content.decode()
    assert not login_throttle.lock_status("victim").locked
    assert "Log-in locked" not in staff.get(f"/admin/auth/user/{victim.pk}/change/").content.decode()
    assert _login("victim", PASSWORD, ip=STRANGER).status_code == 302


# --- item 8: the first superuser is the operator's ---------------------------------------------------------------


def _signup(client, username, password=PASSWORD):
    return client.post(
        "/accounts/signup/",
        {"username": username, "email": "", "password1": password, "password2": password},
        follow=True,
    )


def test_first_sign_up_in_production_is_an_ordinary_user_and_nothing_is_announced(client, settings):
    settings.DEBUG = False
    assert "administrator" not in client.get("/accounts/signup/").content.decode()
    response = _signup(client, "mallory")
    mallory = get_user_model().objects.get(username="mallory")
    assert not mallory.is_superuser and not mallory.is_staff
    assert "administrator" not in response.content.decode()


def test_in_debug_the_first_user_is_admin_but_anonymous_visitors_are_not_told(client, settings):
    settings.DEBUG = True
    assert "administrator" not in client.get("/accounts/signup/").content.decode()
    _signup(client, "dev")
    assert get_user_model().objects.get(username="dev").is_superuser


def test_ensureadmin_creates_the_operators_superuser_once(tmp_path, monkeypatch):
    secret = tmp_path / "admin_password"
    secret.write_text("a long operator passphrase\n")
    monkeypatch.setenv("ADMIN_USERNAME", "operator")
    monkeypatch.setenv("ADMIN_PASSWORD_FILE", str(secret))
    monkeypatch.setenv("ADMIN_EMAIL", "ops@example.com")
    call_command("ensureadmin")
    operator = get_user_model().objects.get(username="operator")
    assert operator.is_superuser and operator.is_staff and operator.check_password("a long operator passphrase")
    secret.write_text("another passphrase")
    call_command("ensureadmin")  # every start: a superuser exists, nothing changes
    operator.refresh_from_db()
    assert operator.check_password("a long operator passphrase")
    assert get_user_model().objects.filter(is_superuser=True).count() == 1


def test_ensureadmin_without_settings_does_nothing_and_says_why(monkeypatch, capsys):
    monkeypatch.delenv("ADMIN_USERNAME", raising=False)
    call_command("ensureadmin")
    assert not get_user_model().objects.exists()


# --- item 17: sign-up does not enumerate cheaply -----------------------------------------------------------------


def test_sign_up_attempts_are_throttled_per_address(victim, settings):
    settings.SIGNUP_ATTEMPTS_PER_IP = 10
    client = Client(REMOTE_ADDR=STRANGER)
    for n in range(10):
        response = _signup(client, f"victim{n}" if n % 2 else "victim", password="short")
        assert response.status_code == 200
    response = _signup(client, "victim")
    assert response.status_code == 429
    assert "Too many sign-up attempts" in response.content.decode()
    assert _signup(Client(REMOTE_ADDR=VICTIM_HOME), "newcomer").redirect_chain  # another address signs up


def test_a_taken_username_gets_the_generic_answer(victim):
    text = _signup(Client(), "VICTIM").content.decode()
    assert "This username is not available" in text
    assert "already exists" not in text
