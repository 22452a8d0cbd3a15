"""Who may sign up (services/accounts/signup_modes.py): open, invite-only (codes, the inviter's reward on the ledger),
approval (the account waits: no chat over the socket nor /v1/ until staff approve it) and closed; the environment's
default and the admin's override."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import openai
import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model
from django.core.exceptions import ImproperlyConfigured
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from conversations.models import AccountSignup, CreditTransaction, InviteCode, SignupSettings
from conversations.services.accounts import approval, invites, signup_modes
from conversations.services.billing import credits
from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db
User = get_user_model()


def signup(client, username, **extra):
    data = {"username": username, "email": "", "password1": PASSWORD, "password2": PASSWORD, **extra}
    return client.post(reverse("signup"), data)


def set_mode(mode: str, **fields) -> SignupSettings:
    row, _ = SignupSettings.objects.update_or_create(pk=1, defaults={"mode": mode, **fields})
    return row


def ledger(user) -> list[tuple[str, Decimal]]:
    return list(CreditTransaction.objects.filter(account__user=user).order_by("id").values_list("kind", "amount"))


# --- the mode: environment default, SIGNUP_ENABLED, the admin's override -----------------------------------------


def test_default_is_open_and_a_newcomer_gets_signup_credits(client, settings):
    assert settings.KIMICHAT_SIGNUP_MODE == "open"
    assert signup_modes.current_mode() == "open"
    response = signup(client, "newcomer")
    assert response.status_code == 302 and response["Location"] == reverse("chat")
    user = User.objects.get(username="newcomer")
    assert ledger(user) == [("signup_bonus", Decimal(100))]
    assert AccountSignup.objects.get(user=user).mode == "open"
    assert not approval.is_waiting(user.pk)


def test_signup_enabled_false_means_closed(client, settings):
    settings.KIMICHAT_SIGNUP_ENABLED = False
    assert signup_modes.current_mode() == "closed"
    assert client.get(reverse("signup")).status_code == 404
    assert signup(client, "nobody").status_code == 404
    assert not User.objects.exists()
    assert "Sign up" not in client.get(reverse("login")).content.decode()


def test_closed_mode_from_the_environment(client, settings):
    settings.KIMICHAT_SIGNUP_MODE = "closed"
    assert signup(client, "nobody").status_code == 404
    assert not User.objects.exists()


def test_the_admin_override_beats_the_environment_both_ways(client, settings):
    settings.KIMICHAT_SIGNUP_ENABLED = False  # the environment says closed
    set_mode("open")
    assert signup(client, "opened").status_code == 302
    settings.KIMICHAT_SIGNUP_ENABLED = True  # the environment says open
    set_mode("closed")
    client.logout()
    assert signup(client, "shut").status_code == 404
    set_mode("")  # empty: back to the environment
    assert signup_modes.current_mode() == "open"


@pytest.mark.parametrize(
    ("env", "error"),
    [
        ({"SIGNUP_MODE": "sometimes"}, "SIGNUP_MODE must be open, invite, approval or closed"),
        ({"SIGNUP_ENABLED": "false", "SIGNUP_MODE": "open"}, "SIGNUP_ENABLED=false contradicts SIGNUP_MODE=open"),
    ],
)
def test_a_wrong_signup_mode_in_the_environment_fails_loudly(monkeypatch, env, error):
    import importlib

    import kimichat.settings

    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ImproperlyConfigured, match=error):
        importlib.reload(kimichat.settings)
    monkeypatch.undo()
    importlib.reload(kimichat.settings)


def test_environment_signup_mode_is_read(monkeypatch):
    import importlib

    import kimichat.settings

    monkeypatch.setenv("SIGNUP_MODE", "Invite")
    assert importlib.reload(kimichat.settings).KIMICHAT_SIGNUP_MODE == "invite"
    monkeypatch.setenv("SIGNUP_MODE", "")
    monkeypatch.setenv("SIGNUP_ENABLED", "false")
    assert importlib.reload(kimichat.settings).KIMICHAT_SIGNUP_MODE == "closed"
    monkeypatch.undo()
    importlib.reload(kimichat.settings)


def test_signup_credits_are_configured_per_mode(client):
    set_mode("open", credits_open=Decimal(7))
    signup(client, "seven")
    assert ledger(User.objects.get(username="seven")) == [("signup_bonus", Decimal(7))]
    client.logout()
    set_mode("open", credits_open=Decimal(0))
    signup(client, "zero")
    assert ledger(User.objects.get(username="zero")) == []


# --- invite-only ---------------------------------------------------------------------------------------------------


@pytest.fixture
def inviter(make_user):
    return make_user("inviter")


@pytest.fixture
def invite_mode():
    return set_mode("invite")


def test_invite_mode_signup_page_asks_for_a_code_and_prefills_it_from_the_link(client, invite_mode):
    page = client.get(reverse("signup") + "?invite=ABC123").content.decode()
    assert 'name="invite_code"' in page and 'value="ABC123"' in page
    assert "by invitation" in page
    response = signup(client, "nocode")
    assert response.status_code == 200
    assert "needs an invite code" in response.content.decode()
    assert not User.objects.filter(username="nocode").exists()


def test_a_valid_code_signs_up_and_rewards_the_inviter_once_on_the_ledger(client, invite_mode, inviter):
    invite = invites.create_for_user(inviter, max_uses=2)
    before = credits.get_balance(inviter)
    response = signup(client, "friend", invite_code=invite.code.lower()[:4] + "-" + invite.code.lower()[4:])
    assert response.status_code == 302
    friend = User.objects.get(username="friend")
    assert AccountSignup.objects.get(user=friend).invite == invite
    assert ledger(friend) == [("signup_bonus", Decimal(100))]
    rewards = CreditTransaction.objects.filter(account__user=inviter, kind="invite_reward")
    assert [row.amount for row in rewards] == [Decimal(50)]  # seed 003: 50 credits per sign-up
    assert invite.code in rewards[0].note
    assert credits.get_balance(inviter) == before + 50
    invite.refresh_from_db()
    assert invite.uses == 1
    assert credits.verify_ledger() == []


@pytest.mark.parametrize(
    ("state", "message"),
    [
        ("unknown", "This invite code is not valid"),
        ("revoked", "This invite code is not valid"),
        ("expired", "This invite code has expired"),
        ("used_up", "This invite code has been used up"),
    ],
)
def test_an_unusable_code_is_refused_and_nothing_is_written(client, invite_mode, inviter, state, message):
    invite = invites.create_for_user(inviter, max_uses=1)
    code = invite.code
    if state == "unknown":
        code = "NOSUCHCODE22"
    elif state == "revoked":
        invites.revoke(inviter, invite.pk)
    elif state == "expired":
        InviteCode.objects.filter(pk=invite.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    elif state == "used_up":
        InviteCode.objects.filter(pk=invite.pk).update(uses=1)
    response = signup(client, "hopeful", invite_code=code)
    assert response.status_code == 200
    assert message in response.content.decode()
    assert not User.objects.filter(username="hopeful").exists()
    assert not CreditTransaction.objects.filter(kind="invite_reward").exists()
    invite.refresh_from_db()
    assert invite.uses == (1 if state == "used_up" else 0)


def test_a_code_of_a_deactivated_inviter_is_not_valid(client, invite_mode, inviter):
    invite = invites.create_for_user(inviter, max_uses=1)
    User.objects.filter(pk=inviter.pk).update(is_active=False)
    assert "This invite code is not valid" in signup(client, "x1", invite_code=invite.code).content.decode()


def test_a_code_is_used_at_most_max_uses_times(invite_mode, inviter):
    invite = invites.create_for_user(inviter, max_uses=2)
    statuses = [signup(Client(), f"guest{n}", invite_code=invite.code).status_code for n in range(3)]
    assert statuses == [302, 302, 200]
    assert CreditTransaction.objects.filter(account__user=inviter, kind="invite_reward").count() == 2


def test_a_staff_code_without_inviter_rewards_nobody(client, invite_mode, admin_user):
    invite = invites.create(created_by=admin_user, max_uses=1)
    assert signup(client, "staffguest", invite_code=invite.code).status_code == 302
    assert not CreditTransaction.objects.filter(kind="invite_reward").exists()


def test_reward_and_invite_credits_follow_the_settings(client, inviter):
    set_mode("invite", credits_invite=Decimal(20), invite_reward=Decimal(0))
    invite = invites.create_for_user(inviter, max_uses=1)
    signup(client, "cheap", invite_code=invite.code)
    assert ledger(User.objects.get(username="cheap")) == [("signup_bonus", Decimal(20))]
    assert not CreditTransaction.objects.filter(kind="invite_reward").exists()  # 0: no reward, no row


def test_invites_page_makes_lists_and_revokes_own_codes_within_the_limit(
    client, invite_mode, inviter, outsider, settings
):
    settings.KIMICHAT_INVITES_PER_USER = 3
    client.force_login(inviter)
    page = client.get(reverse("invites")).content.decode()
    assert "You can invite 3 more people" in page
    response = client.post(reverse("invites"), {"max_uses": 2, "note": "for Sam"}, follow=True)
    invite = InviteCode.objects.get(inviter=inviter)
    assert invite.max_uses == 2 and invite.created_by == inviter and invite.expires_at > timezone.now()
    page = response.content.decode()
    assert invite.code in page and f"?invite={invite.code}" in page and "for Sam" in page
    response = client.post(reverse("invites"), {"max_uses": 2})
    assert "You can invite 1 more person" in response.content.decode()
    assert InviteCode.objects.filter(inviter=inviter).count() == 1
    # Another user's code cannot be revoked from here; one's own can, and a revoked code gives back its unused uses.
    other = invites.create_for_user(outsider, max_uses=1)
    client.post(reverse("invites"), {"revoke": other.pk})
    other.refresh_from_db()
    assert other.revoked_at is None
    client.post(reverse("invites"), {"revoke": invite.pk})
    invite.refresh_from_db()
    assert invite.revoked_at is not None
    assert invites.invites_left(inviter) == 3
    assert client.post(reverse("invites"), {"revoke": "x"}).status_code == 302  # malformed: nothing, no error


def test_invites_page_refuses_codes_when_signup_is_not_by_invitation(client, inviter):
    client.force_login(inviter)
    assert "no invite code is needed" in client.get(reverse("invites")).content.decode()
    client.post(reverse("invites"), {"max_uses": 1})
    assert not InviteCode.objects.exists()


def test_the_chat_menu_links_the_invites_page_only_in_invite_mode(client, inviter):
    client.force_login(inviter)
    assert reverse("invites") not in client.get("/").content.decode()
    set_mode("invite")
    assert reverse("invites") in client.get("/").content.decode()


# --- approval ------------------------------------------------------------------------------------------------------


@pytest.fixture
def waiting(client):
    set_mode("approval", credits_approval=Decimal(30))
    response = signup(client, "waiter")
    assert response.status_code == 302  # logged in at once
    return User.objects.get(username="waiter")


def test_an_approval_mode_account_waits_logs_in_and_sees_why_it_cannot_chat(client, waiting):
    assert approval.is_waiting(waiting.pk)
    assert ledger(waiting) == []  # its credits come with the approval
    page = client.get("/").content.decode()
    assert 'id="approval-notice"' in page and "waiting for approval" in page
    client.logout()
    assert client.login(username="waiter", password=PASSWORD)


def test_the_signup_page_in_approval_mode_says_accounts_are_reviewed(client):
    set_mode("approval")
    assert "reviewed by an administrator" in client.get(reverse("signup")).content.decode()


def test_approving_grants_the_approval_credits_once(waiting, admin_user):
    assert approval.approve([waiting.pk], by=admin_user) == 1
    assert approval.approve([waiting.pk], by=admin_user) == 0  # twice: nothing more
    assert not approval.is_waiting(waiting.pk)
    assert ledger(waiting) == [("signup_bonus", Decimal(30))]
    signup_row = AccountSignup.objects.get(user=waiting)
    assert signup_row.approved_by == admin_user and signup_row.approved_at is not None


def test_admin_filters_waiting_accounts_and_approves_them(admin_client, waiting, owner):
    changelist = reverse("admin:auth_user_changelist")
    page = admin_client.get(changelist + "?approval=waiting").content.decode()
    assert "waiter" in page and ">owner<" not in page
    response = admin_client.post(
        changelist, {"action": "approve_accounts", "_selected_action": [waiting.pk, owner.pk]}, follow=True
    )
    assert "Approved 1 account." in response.content.decode()
    assert not approval.is_waiting(waiting.pk)
    assert "waiter" not in admin_client.get(changelist + "?approval=waiting").content.decode()


@pytest.mark.django_db(transaction=True)
async def test_a_waiting_account_cannot_chat_over_the_socket_until_approved(connect, chat_settings):
    await sync_to_async(set_mode)("approval")
    user = await sync_to_async(User.objects.create_user)(username="w", password=PASSWORD)
    await AccountSignup.objects.acreate(user=user, mode="approval", awaiting_approval=True)
    tab = await connect(user)
    await tab.say("hello")
    frame, _ = await tab.until_type("error")
    assert frame["code"] == "awaiting_approval" and "waiting for approval" in frame["message"]
    assert await sync_to_async(lambda: not user.conversations.exists())()
    admin = await sync_to_async(User.objects.create_superuser)(username="boss", password=PASSWORD)
    await sync_to_async(approval.approve)([user.pk], by=admin)
    await tab.say("hello again")  # the same socket: the next send is checked again
    done, _ = await tab.answer()
    assert done["type"] == "done"


@pytest.mark.django_db(transaction=True)
def test_a_waiting_account_is_refused_by_the_v1_api_until_approved(offline_kimi, tmp_path):
    from conversations.services.apikeys import keys
    from tests.daphne import start_daphne

    user = User.objects.create_user(username="scripter", password=PASSWORD)
    AccountSignup.objects.create(user=user, mode="approval", awaiting_approval=True)
    secret = keys.create(user).secret
    server = start_daphne(offline_kimi, tmp_path, name="api", KIMI_MAX_RETRIES="0")
    try:
        client = openai.OpenAI(api_key=secret, base_url=server.url + "/v1", max_retries=0)
        with pytest.raises(openai.PermissionDeniedError) as refused:
            client.chat.completions.create(model="kimi-k2-turbo-preview", messages=[{"role": "user", "content": "hi"}])
        assert refused.value.body["code"] == "awaiting_approval"
        assert "waiting for approval" in refused.value.body["message"]
        with pytest.raises(openai.PermissionDeniedError):
            client.models.list()
        assert not CreditTransaction.objects.filter(account__user=user, kind="charge").exists()
        admin = User.objects.create_superuser(username="boss", password=PASSWORD)
        approval.approve([user.pk], by=admin)
        answer = client.chat.completions.create(
            model="kimi-k2-turbo-preview", messages=[{"role": "user", "content": "hi"}]
        )
        assert answer.choices[0].message.content
    finally:
        server.stop()


# --- the admin pages -----------------------------------------------------------------------------------------------


def test_signup_settings_admin_is_one_row_that_overrides_the_mode(admin_client):
    changelist = reverse("admin:conversations_signupsettings_changelist")
    response = admin_client.get(changelist)
    assert response.status_code == 302
    page = admin_client.get(response["Location"]).content.decode()
    assert "from the environment" in page and "Open: anyone can sign up" in page
    form = {"mode": "invite", "credits_open": "", "credits_invite": "25", "credits_approval": "", "invite_reward": ""}
    admin_client.post(response["Location"], form)
    assert signup_modes.current_mode() == "invite"
    assert signup_modes.signup_credits("invite") == Decimal(25)
    assert SignupSettings.objects.count() == 1
    assert admin_client.get(reverse("admin:conversations_signupsettings_add")).status_code == 403
    assert admin_client.get(reverse("admin:conversations_signupsettings_change", args=[2])).status_code == 302


def test_invite_codes_admin_makes_a_code_and_revokes_it(admin_client, admin_user, inviter):
    response = admin_client.post(
        reverse("admin:conversations_invitecode_add"),
        {"note": "conference", "max_uses": "10", "expires_at_0": "", "expires_at_1": "", "inviter": inviter.pk},
    )
    assert response.status_code == 302
    invite = InviteCode.objects.get()
    assert len(invite.code) == 12 and invite.created_by == admin_user and invite.inviter == inviter
    page = admin_client.get(reverse("admin:conversations_invitecode_change", args=[invite.pk])).content.decode()
    assert f"/accounts/signup/?invite={invite.code}" in page
    listing = admin_client.get(reverse("admin:conversations_invitecode_changelist") + "?state=open").content.decode()
    assert invite.code in listing and "0 / 10" in listing
    admin_client.post(
        reverse("admin:conversations_invitecode_changelist"), {"action": "revoke", "_selected_action": [invite.pk]}
    )
    invite.refresh_from_db()
    assert invite.revoked_at is not None
    listing = admin_client.get(reverse("admin:conversations_invitecode_changelist") + "?state=open").content.decode()
    assert invite.code not in listing


def test_invite_code_admin_refuses_fewer_uses_than_already_made(admin_client, inviter):
    invite = invites.create_for_user(inviter, max_uses=3)
    InviteCode.objects.filter(pk=invite.pk).update(uses=2)
    url = reverse("admin:conversations_invitecode_change", args=[invite.pk])
    form = {"note": "", "max_uses": "1", "expires_at_0": "", "expires_at_1": "", "inviter": inviter.pk}
    response = admin_client.post(url, form)
    assert response.status_code == 200 and "cannot allow fewer" in response.content.decode()
    invite.refresh_from_db()
    assert invite.max_uses == 3
