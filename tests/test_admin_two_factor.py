"""Two-factor log-in to the admin (conversations/admin/two_factor.py): a staff user enrols a TOTP device; from then
on the admin asks for a code at log-in; ADMIN_REQUIRE_2FA sends staff without a device to enrol first."""

from __future__ import annotations

import re
import time

import pytest
from django.test import Client
from django_otp.oath import TOTP
from django_otp.plugins.otp_totp.models import TOTPDevice

from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db
ADMIN_LOGIN = "/admin/login/"
ENROL = "/admin/two-factor/"


def code_for(device: TOTPDevice, *, steps_ahead: int = 0) -> str:
    totp = TOTP(device.bin_key, device.step, device.t0, device.digits, device.drift)
    totp.time = time.time() + steps_ahead * device.step
    return f"{totp.token():0{device.digits}d}"


@pytest.fixture
def staff(make_user):
    return make_user("root", is_staff=True, is_superuser=True)


@pytest.fixture
def device(staff):
    return TOTPDevice.objects.create(user=staff, name="phone", confirmed=True)


def admin_login(client, token=None, password=PASSWORD):
    data = {"username": "root", "password": password, "next": "/admin/"}
    if token is not None:
        data["otp_token"] = token
    return client.post(ADMIN_LOGIN, data)


def test_staff_without_a_device_use_the_admin_as_before(client, staff):
    assert admin_login(client).status_code == 302
    assert client.get("/admin/").status_code == 200
    page = client.get("/admin/").content.decode()
    assert ENROL in page  # the user links offer the enrolment page


def test_enrolment_shows_the_key_and_turns_on_with_a_code_from_it(client, staff):
    client.force_login(staff)
    page = client.get(ENROL).content.decode()
    pending = TOTPDevice.objects.get(user=staff, confirmed=False)
    assert "otpauth://totp/KimiChat%3Aroot?secret=" in page and "<svg" in page
    secret = re.search(r'data-testid="totp-secret">([A-Z2-7 ]+)<', page).group(1)
    import base64

    assert base64.b32decode(secret.replace(" ", "")) == pending.bin_key
    assert client.get(ENROL) and TOTPDevice.objects.filter(user=staff).count() == 1  # the same pending device
    wrong = client.post(ENROL, {"token": code_for(pending, steps_ahead=9)})
    assert "That code is not right" in wrong.content.decode()
    too_soon = client.post(ENROL, {"token": code_for(pending)})  # django-otp: a wrong code costs a second's wait
    assert "Wait a moment" in too_soon.content.decode()
    pending.refresh_from_db()
    pending.throttle_reset()
    response = client.post(ENROL, {"token": code_for(pending)})
    assert response.status_code == 302 and response["Location"] == "/admin/"
    pending.refresh_from_db()
    assert pending.confirmed
    assert client.get("/admin/").status_code == 200  # this session gave the code: it stays in
    assert "is <strong>on</strong>" in client.get(ENROL).content.decode()


def test_an_enrolled_staff_user_needs_a_valid_code_at_the_admin_login(device):
    no_code = admin_login(Client())
    assert no_code.status_code == 200 and "enter the 6-digit code" in no_code.content.decode()
    assert "_auth_user_id" not in no_code.client.session
    wrong = admin_login(Client(), token=code_for(device, steps_ahead=5))
    assert wrong.status_code == 200 and "That code is not right" in wrong.content.decode()
    device.refresh_from_db()
    device.throttle_reset()
    client = Client()
    good = admin_login(client, token=code_for(device))
    assert good.status_code == 302 and good["Location"] == "/admin/"
    assert client.get("/admin/").status_code == 200
    assert client.get("/admin/auth/user/").status_code == 200


def test_a_code_works_once(device):
    token = code_for(device)
    assert admin_login(Client(), token=token).status_code == 302
    replay = admin_login(Client(), token=token)
    assert replay.status_code == 200 and "That code is not right" in replay.content.decode()


def test_the_password_is_checked_through_the_throttle_before_the_code(device, settings):
    settings.LOGIN_FAILURES_PER_ACCOUNT_AND_ADDRESS = 3
    for n in range(3):
        admin_login(Client(), token=code_for(device), password=f"wrong {n}")
    response = admin_login(Client(), token=code_for(device))
    assert response.status_code == 200 and "Too many failed log-in attempts" in response.content.decode()


def test_a_session_from_the_apps_login_page_must_give_the_code_to_open_the_admin(device):
    client = Client()
    assert client.post("/accounts/login/", {"username": "root", "password": PASSWORD}).status_code == 302
    assert client.get("/").status_code == 200  # the chat needs no second factor
    response = client.get("/admin/")
    assert response.status_code == 302 and response["Location"].startswith(ADMIN_LOGIN)
    page = client.get(response["Location"]).content.decode()
    assert 'name="otp_token"' in page and "authenticator app" in page
    assert client.get("/admin/auth/user/").status_code == 302
    assert client.get(ENROL).status_code == 302  # nor can it enrol another device or turn it off
    assert admin_login(client, token=code_for(device)).status_code == 302
    assert client.get("/admin/").status_code == 200


def test_a_device_added_later_locks_out_sessions_that_gave_no_code(client, staff):
    client.force_login(staff)
    assert client.get("/admin/").status_code == 200
    TOTPDevice.objects.create(user=staff, name="phone", confirmed=True)  # enrolled in another session
    assert client.get("/admin/").status_code == 302


def test_turning_it_off_needs_a_code(device, staff):
    client = Client()
    admin_login(client, token=code_for(device))
    refused = client.post(ENROL, {"token": code_for(device, steps_ahead=7)})
    assert "That code is not right" in refused.content.decode()
    assert TOTPDevice.objects.filter(user=staff).exists()
    device.refresh_from_db()
    device.throttle_reset()
    response = client.post(ENROL, {"token": code_for(device, steps_ahead=1)})
    assert response.status_code == 302
    assert not TOTPDevice.objects.filter(user=staff).exists()


def test_admin_require_2fa_sends_staff_to_enrol_first(client, staff, settings):
    settings.ADMIN_REQUIRE_2FA = True
    client.force_login(staff)
    response = client.get("/admin/", follow=True)
    assert response.redirect_chain[-1][0] == ENROL
    assert "requires two-factor log-in" in response.content.decode()
    assert client.get("/admin/auth/user/").status_code == 302
    pending = TOTPDevice.objects.get(user=staff)
    client.post(ENROL, {"token": code_for(pending)})
    assert client.get("/admin/auth/user/").status_code == 200
    page = client.get(ENROL).content.decode()
    assert "cannot be turned off here" in page


def test_non_staff_cannot_open_the_enrolment_page(owner_client):
    response = owner_client.get(ENROL)
    assert response.status_code == 302 and response["Location"].startswith(ADMIN_LOGIN)
    assert not TOTPDevice.objects.exists()
