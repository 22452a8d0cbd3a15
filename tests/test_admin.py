"""The operators' Django admin: users and credits, the privacy permission, the read-only ledger, prices, CSV export,
and the query count of every changelist.

Roles: ``admin_client`` is a superuser; ``staff_client`` is staff with no permission at all unless a test grants one.
"""

import csv
import io
from decimal import Decimal

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.auth.models import Permission
from django.core.exceptions import ValidationError
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from conversations.models import Conversation, CreditAccount, CreditTransaction, Message, ModelPrice, ProviderSnapshot
from conversations.services.billing import credits, pricing

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    """Argon2 makes each test user cost a noticeable fraction of a second; these tests are not about passwords."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


USERS = reverse("admin:auth_user_changelist")
CONVERSATIONS = reverse("admin:conversations_conversation_changelist")
MESSAGES = reverse("admin:conversations_message_changelist")
TRANSACTIONS = reverse("admin:conversations_credittransaction_changelist")
PRICES = reverse("admin:conversations_modelprice_changelist")
SNAPSHOTS = reverse("admin:conversations_providersnapshot_changelist")


# --- helpers ---------------------------------------------------------------------------------------------------
def conversation_with_messages(user, *, title="Chat", model="kimi-k2.6", answers=1, status="complete", **fields):
    """A conversation of ``answers`` question/answer pairs; each answer 10 + 20 = 30 tokens, costing 0.5."""
    conversation = Conversation.objects.create(owner=user, title=title, model=model, **fields)
    for index in range(answers):
        Message.objects.create(conversation=conversation, role="user", content=f"question {index} about {title}")
        Message.objects.create(
            conversation=conversation,
            role="assistant",
            content=f"answer {index}",
            status=status,
            model=model,
            prompt_tokens=10,
            completion_tokens=20,
            total_tokens=30,
            cost=Decimal("0.5"),
        )
    return conversation


def grant(user, codename, app_label="conversations"):
    user.user_permissions.add(Permission.objects.get(codename=codename, content_type__app_label=app_label))


def post_action(client, url, action, objects, **extra):
    data = {"action": action, ACTION_CHECKBOX_NAME: [str(o.pk) for o in objects], **extra}
    return client.post(url, data)


def read_csv(response):
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    return list(csv.reader(io.StringIO(response.content.decode("utf-8-sig"))))


def action_names(response) -> set[str]:
    return {name for name, _label in response.context["action_form"].fields["action"].choices if name}


@pytest.fixture
def staff(make_user):
    return make_user("staff", is_staff=True)


@pytest.fixture
def staff_client(client, staff):
    client.force_login(staff)
    return client


# --- users -----------------------------------------------------------------------------------------------------
def test_user_list_shows_balance_tokens_and_last_activity(admin_client, owner, outsider):
    conversation_with_messages(owner, answers=2)  # 60 tokens
    credits.grant(owner, Decimal("25"), note="gift")
    response = admin_client.get(USERS)
    assert response.status_code == 200
    rows = {u.username: u for u in response.context["cl"].result_list}
    signup = Decimal(100)  # settings.KIMICHAT_SIGNUP_CREDITS, granted by the post_save signal
    assert rows["owner"].credit_balance == signup + 25
    assert rows["owner"].total_tokens == 60
    assert rows["owner"].last_activity == Conversation.objects.get(owner=owner).updated_at
    assert rows["outsider"].total_tokens == 0
    assert rows["outsider"].last_activity is None
    html = response.content.decode()
    assert ">125.00<" in html and ">60<" in html


def test_user_list_sorts_by_an_annotation(admin_client, owner, outsider):
    conversation_with_messages(outsider, answers=3)
    conversation_with_messages(owner, answers=1)
    index = list(admin_client.get(USERS).context["cl"].list_display).index("total_tokens")
    response = admin_client.get(USERS, {"o": f"-{index}"})
    assert [u.username for u in response.context["cl"].result_list][:2] == ["outsider", "owner"]


def test_user_search_by_email(admin_client, make_user):
    make_user("alice", email="alice@example.org")
    make_user("bob", email="bob@example.net")
    response = admin_client.get(USERS, {"q": "example.net"})
    assert [u.username for u in response.context["cl"].result_list] == ["bob"]


@pytest.mark.parametrize(
    ("bucket", "expected"),
    [
        ("0", {"zero"}),
        ("1-100", {"fifty", "hundred"}),
        ("101-1000", {"fivehundred"}),
        ("1001-10000", {"tenthousand"}),
        ("10000+", {"rich"}),
    ],
)
def test_balance_range_filter(admin_client, django_user_model, settings, bucket, expected):
    settings.KIMICHAT_SIGNUP_CREDITS = 0
    for name, amount in [("fifty", "50"), ("hundred", "100"), ("fivehundred", "500.5"), ("tenthousand", "10000")]:
        credits.grant(django_user_model.objects.create(username=name), Decimal(amount))
    credits.grant(django_user_model.objects.create(username="rich"), Decimal("10000.000001"))
    django_user_model.objects.create(username="zero")
    response = admin_client.get(USERS, {"balance": bucket})
    # "admin" (the superuser of admin_client) is left out: whether it has its signup credits depends on fixture order.
    assert {u.username for u in response.context["cl"].result_list} - {"admin"} == expected


def test_user_change_page_shows_the_credit_account_and_latest_transactions_read_only(admin_client, owner):
    credits.grant(owner, Decimal("7"), note="conference gift")
    response = admin_client.get(reverse("admin:auth_user_change", args=[owner.pk]))
    assert response.status_code == 200
    html = response.content.decode()
    assert "conference gift" in html and "Welcome credits" in html
    assert ">107.00<" in html
    assert f"?account__id__exact={owner.credit_account.pk}" in html
    inline = next(f for f in response.context["inline_admin_formsets"] if f.opts.model is CreditAccount)
    assert not inline.has_change_permission and not inline.has_add_permission and not inline.has_delete_permission
    assert 'name="credit_account-0-balance"' not in html  # rendered as text, not as an input


def test_grant_action_shows_an_intermediate_form_and_writes_nothing_yet(admin_client, owner, outsider):
    response = post_action(admin_client, USERS, "grant_credits", [owner, outsider])
    assert response.status_code == 200
    assert response.templates[0].name == "admin/kimichat_grant_credits.html"
    html = response.content.decode()
    assert 'name="amount"' in html and 'name="note"' in html and "owner" in html and "outsider" in html
    assert not CreditTransaction.objects.filter(kind="grant").exists()


def test_grant_action_writes_ledger_rows_attributed_to_the_admin(admin_client, admin_user, owner, outsider):
    response = post_action(
        admin_client, USERS, "grant_credits", [owner, outsider], apply="1", amount="12.5", note="beta testers"
    )
    assert response.status_code == 302
    rows = CreditTransaction.objects.filter(kind="grant").select_related("account__user")
    assert sorted((r.account.user.username, r.amount, r.created_by, r.note) for r in rows) == [
        ("outsider", Decimal("12.5"), admin_user, "beta testers"),
        ("owner", Decimal("12.5"), admin_user, "beta testers"),
    ]
    assert credits.get_balance(owner) == Decimal("112.5")
    assert credits.get_balance(outsider) == Decimal("112.5")
    assert credits.verify_ledger() == []
    messages = [str(m) for m in admin_client.get(USERS).context["messages"]]
    assert any("Granted 12.50 credits to each of 2 users" in m for m in messages)


def test_grant_action_rejects_a_non_positive_amount_and_a_missing_note(admin_client, owner):
    for amount, note, field, error in [
        ("-5", "refund", "amount", "Grant a positive number of credits."),
        ("0", "nothing", "amount", "Grant a positive number of credits."),
        ("5", "", "note", "This field is required."),
    ]:
        response = post_action(admin_client, USERS, "grant_credits", [owner], apply="1", amount=amount, note=note)
        assert response.status_code == 200
        assert response.context["form"].errors == {field: [error]}
        assert error in response.content.decode()
    assert not CreditTransaction.objects.filter(kind="grant").exists()
    assert credits.get_balance(owner) == Decimal(100)


def test_grant_action_needs_the_change_creditaccount_permission(staff_client, staff, owner):
    grant(staff, "view_user", "auth")
    grant(staff, "change_user", "auth")
    response = staff_client.get(USERS)
    assert "grant_credits" not in action_names(response)
    assert {"deactivate_users", "activate_users"} <= action_names(response)
    post_action(staff_client, USERS, "grant_credits", [owner], apply="1", amount="5", note="sneaky")
    assert not CreditTransaction.objects.filter(kind="grant").exists()

    grant(staff, "change_creditaccount")
    staff.refresh_from_db()  # drop the cached permissions
    staff_client.force_login(staff)
    assert "grant_credits" in action_names(staff_client.get(USERS))


def test_adjust_action_deducts_or_adds_with_a_note_and_never_below_zero(admin_client, admin_user, owner, outsider):
    credits.grant(outsider, Decimal(50))  # outsider 150, owner 100
    response = post_action(admin_client, USERS, "adjust_credits", [owner, outsider])
    assert response.templates[0].name == "admin/kimichat_adjust_credits.html"
    for amount, note, field, error in [
        ("0", "nothing", "amount", "An adjustment of 0 changes nothing."),
        ("-5", "", "note", "This field is required."),
    ]:
        response = post_action(admin_client, USERS, "adjust_credits", [owner], apply="1", amount=amount, note=note)
        assert response.context["form"].errors == {field: [error]}
    # 120 more than owner has: nobody is adjusted, and the page says whose balance is short.
    response = post_action(
        admin_client, USERS, "adjust_credits", [owner, outsider], apply="1", amount="-120", note="chargeback"
    )
    assert response.status_code == 200
    assert "owner has 100.00 credits: an adjustment cannot take a balance below zero." in response.content.decode()
    assert not CreditTransaction.objects.filter(kind="adjustment").exists()

    response = post_action(
        admin_client, USERS, "adjust_credits", [owner, outsider], apply="1", amount="-40.5", note="chargeback"
    )
    assert response.status_code == 302
    rows = CreditTransaction.objects.filter(kind="adjustment").select_related("account__user")
    assert sorted((r.account.user.username, r.amount, r.created_by, r.note) for r in rows) == [
        ("outsider", Decimal("-40.5"), admin_user, "chargeback"),
        ("owner", Decimal("-40.5"), admin_user, "chargeback"),
    ]
    assert (credits.get_balance(owner), credits.get_balance(outsider)) == (Decimal("59.5"), Decimal("109.5"))
    assert credits.verify_ledger() == []


def test_adjust_credits_from_the_users_page(admin_client, admin_user, owner):
    page = admin_client.get(reverse("admin:auth_user_change", args=[owner.pk])).content.decode()
    adjust_url = reverse("admin:kimichat_adjust_credits", args=[owner.pk])
    assert f"href='{adjust_url}'" in page
    assert admin_client.get(adjust_url).status_code == 200
    response = admin_client.post(adjust_url, {"amount": "-100.000001", "note": "too much"})
    assert "owner has 100.00 credits" in response.content.decode()
    response = admin_client.post(adjust_url, {"amount": "7.25", "note": "goodwill"}, follow=True)
    assert response.redirect_chain[-1][0] == reverse("admin:auth_user_change", args=[owner.pk])
    shown = [str(m) for m in response.context["messages"]]
    assert shown == ["Adjusted owner's balance by +7.25 credits; it is now 107.25."]
    row = CreditTransaction.objects.get(kind="adjustment")
    assert (row.amount, row.created_by, row.note) == (Decimal("7.25"), admin_user, "goodwill")


def test_adjusting_credits_needs_the_change_creditaccount_permission(staff_client, staff, owner):
    grant(staff, "view_user", "auth")
    grant(staff, "change_user", "auth")
    assert "adjust_credits" not in action_names(staff_client.get(USERS))
    adjust_url = reverse("admin:kimichat_adjust_credits", args=[owner.pk])
    assert staff_client.post(adjust_url, {"amount": "-5", "note": "sneaky"}).status_code == 403
    post_action(staff_client, USERS, "adjust_credits", [owner], apply="1", amount="-5", note="sneaky")
    assert not CreditTransaction.objects.filter(kind="adjustment").exists()


def test_deactivate_and_activate_accounts_but_never_yourself(admin_client, admin_user, owner, outsider):
    post_action(admin_client, USERS, "deactivate_users", [owner, outsider, admin_user])
    assert {u.username: u.is_active for u in type(owner).objects.all()} == {
        "owner": False,
        "outsider": False,
        "admin": True,
    }
    post_action(admin_client, USERS, "activate_users", [owner])
    owner.refresh_from_db()
    outsider.refresh_from_db()
    assert owner.is_active and not outsider.is_active


# --- conversations and messages: the privacy permission --------------------------------------------------------
def test_staff_without_the_view_permission_cannot_read_conversations_or_messages(staff_client, staff, owner):
    conversation = conversation_with_messages(owner, title="private matters")
    message = conversation.messages.first()
    # The change permission is not enough: reading needs view_conversation / view_message themselves.
    grant(staff, "change_conversation")
    grant(staff, "change_message")
    for url in [
        CONVERSATIONS,
        reverse("admin:conversations_conversation_change", args=[conversation.pk]),
        MESSAGES,
        reverse("admin:conversations_message_change", args=[message.pk]),
    ]:
        response = staff_client.get(url)
        assert response.status_code == 403, url
        assert b"private matters" not in response.content
    index = staff_client.get(reverse("admin:index")).content.decode()
    assert CONVERSATIONS not in index and MESSAGES not in index


def test_view_permission_opens_conversations_and_the_messages_inline_needs_its_own(staff_client, staff, owner):
    conversation = conversation_with_messages(owner, title="granted")
    grant(staff, "view_conversation")
    change_url = reverse("admin:conversations_conversation_change", args=[conversation.pk])
    assert staff_client.get(CONVERSATIONS).status_code == 200
    response = staff_client.get(change_url)
    assert response.status_code == 200
    assert b"question 0 about granted" not in response.content  # the messages are behind view_message
    assert staff_client.get(MESSAGES).status_code == 403
    index = staff_client.get(reverse("admin:index")).content.decode()
    assert CONVERSATIONS in index and MESSAGES not in index

    grant(staff, "view_message")
    staff.refresh_from_db()
    staff_client.force_login(staff)
    assert b"question 0 about granted" in staff_client.get(change_url).content
    assert staff_client.get(MESSAGES).status_code == 200


def test_conversation_list_shows_owner_model_message_count_and_tokens(admin_client, owner):
    conversation_with_messages(owner, title="two answers", answers=2, model="kimi-k3")
    response = admin_client.get(CONVERSATIONS)
    [row] = response.context["cl"].result_list
    assert (row.owner.username, row.model, row.message_count, row.tokens) == ("owner", "kimi-k3", 4, 60)
    html = response.content.decode()
    assert "two answers" in html and ">60<" in html and ">4<" in html


def test_conversation_search_by_title_owner_and_message_content(admin_client, owner, outsider):
    conversation_with_messages(owner, title="Pasta recipes")
    other = conversation_with_messages(outsider, title="Trip", answers=3)
    Message.objects.create(conversation=other, role="user", content="where is the zanzibar ferry?")

    def found(query):
        return {c.title for c in admin_client.get(CONVERSATIONS, {"q": query}).context["cl"].result_list}

    assert found("pasta") == {"Pasta recipes"}
    assert found("outsider") == {"Trip"}
    assert found("zanzibar") == {"Trip"}
    # A content match in several messages still lists the conversation once, with its own totals.
    rows = admin_client.get(CONVERSATIONS, {"q": "question"}).context["cl"].result_list
    assert sorted((c.title, c.message_count) for c in rows) == [("Pasta recipes", 2), ("Trip", 7)]


def test_conversation_search_reaches_message_contents_only_for_staff_who_may_read_messages(staff_client, staff, owner):
    conversation = conversation_with_messages(owner, title="Holiday")
    Message.objects.create(conversation=conversation, role="user", content="my password is hunter2")
    grant(staff, "view_conversation")

    def found(query):
        return {c.title for c in staff_client.get(CONVERSATIONS, {"q": query}).context["cl"].result_list}

    assert found("holiday") == {"Holiday"}
    assert found("hunter2") == set()  # one letter at a time, search would spell out the message
    assert found("hunter") == set()
    grant(staff, "view_message")
    staff.refresh_from_db()
    staff_client.force_login(staff)
    assert found("hunter2") == {"Holiday"}


def test_conversation_filters_by_message_status_and_model(admin_client, owner):
    conversation_with_messages(owner, title="fine")
    conversation_with_messages(owner, title="broken", status="error", model="kimi-k3")
    conversation_with_messages(owner, title="live", status="streaming")

    def titles(**params):
        return {c.title for c in admin_client.get(CONVERSATIONS, params).context["cl"].result_list}

    assert titles(has="error") == {"broken"}
    assert titles(has="streaming") == {"live"}
    assert titles(model="kimi-k3") == {"broken"}
    assert titles() == {"fine", "broken", "live"}


def test_conversation_change_page_lists_messages_in_order_read_only(admin_client, owner):
    conversation = conversation_with_messages(owner, title="ordered", answers=3)
    response = admin_client.get(reverse("admin:conversations_conversation_change", args=[conversation.pk]))
    html = response.content.decode()
    positions = [html.index(f"question {i} about ordered") for i in range(3)]
    assert positions == sorted(positions)
    assert "answer 2" in html and "Complete" in html
    assert 'name="messages-0-content"' not in html and 'name="title"' not in html  # nothing editable
    post = admin_client.post(reverse("admin:conversations_conversation_change", args=[conversation.pk]), {})
    assert post.status_code == 403


def test_messages_are_read_only_even_for_a_superuser(admin_client, owner):
    message = conversation_with_messages(owner).messages.last()
    change_url = reverse("admin:conversations_message_change", args=[message.pk])
    assert admin_client.get(change_url).status_code == 200
    assert admin_client.post(change_url, {"content": "rewritten"}).status_code == 403
    assert admin_client.get(reverse("admin:conversations_message_add")).status_code == 403
    assert admin_client.post(reverse("admin:conversations_message_delete", args=[message.pk])).status_code == 403
    message.refresh_from_db()
    assert message.content == "answer 0"


# --- the ledger ------------------------------------------------------------------------------------------------
def test_transactions_cannot_be_added_changed_or_deleted_even_by_a_superuser(admin_client, admin_user, owner):
    row = credits.grant(owner, Decimal("3"), created_by=admin_user, note="original")
    change_url = reverse("admin:conversations_credittransaction_change", args=[row.pk])
    delete_url = reverse("admin:conversations_credittransaction_delete", args=[row.pk])

    listing = admin_client.get(TRANSACTIONS)
    assert listing.status_code == 200
    assert "delete_selected" not in action_names(listing) and "export_csv" in action_names(listing)
    page = admin_client.get(change_url)
    assert page.status_code == 200 and not page.context["has_change_permission"]
    assert 'name="amount"' not in page.content.decode()

    assert admin_client.post(change_url, {"amount": "1000", "note": "edited"}).status_code == 403
    assert admin_client.get(delete_url).status_code == 403
    assert admin_client.post(delete_url, {"post": "yes"}).status_code == 403
    assert admin_client.get(reverse("admin:conversations_credittransaction_add")).status_code == 403
    # Even a hand-made POST of the delete action deletes nothing.
    post_action(admin_client, TRANSACTIONS, "delete_selected", [row], post="yes")
    row.refresh_from_db()
    assert (row.amount, row.note) == (Decimal("3"), "original")
    assert CreditTransaction.objects.filter(account__user=owner).count() == 2  # the signup bonus and the grant


def test_transaction_list_filters_by_account_and_kind(admin_client, owner, outsider):
    credits.grant(owner, Decimal("1"), note="a")
    credits.grant(outsider, Decimal("2"), note="b")
    response = admin_client.get(TRANSACTIONS, {"account__id__exact": owner.credit_account.pk, "kind__exact": "grant"})
    assert [(t.account.user.username, t.note) for t in response.context["cl"].result_list] == [("owner", "a")]


# --- model prices ----------------------------------------------------------------------------------------------
PRICE = {
    "model": "kimi-k3",
    "per_request": "0.01",
    "per_million_prompt": "2",
    "per_million_completion": "8",
    "per_million_cached": "0.5",
}


def test_model_price_admin_rejects_negative_prices_with_a_clear_message(admin_client):
    add_url = reverse("admin:conversations_modelprice_add")
    for field in ["per_request", "per_million_prompt", "per_million_completion", "per_million_cached", "per_search"]:
        response = admin_client.post(add_url, {**PRICE, field: "-1"})
        assert response.status_code == 200
        assert response.context["adminform"].form.errors[field] == ["A price cannot be negative."]
        assert "A price cannot be negative." in response.content.decode()
    assert not ModelPrice.objects.exists()

    assert admin_client.post(add_url, PRICE).status_code == 302
    price = ModelPrice.objects.get(model="kimi-k3")
    assert price.per_million_completion == Decimal(8)
    assert price.per_search is None  # left empty: the default search fee applies (docs/tools.md)
    change_url = reverse("admin:conversations_modelprice_change", args=[price.pk])
    response = admin_client.post(change_url, {**PRICE, "per_million_completion": "-0.000001"})
    assert response.status_code == 200
    price.refresh_from_db()
    assert price.per_million_completion == Decimal(8)
    assert admin_client.post(change_url, {**PRICE, "per_million_completion": "9"}).status_code == 302
    price.refresh_from_db()
    assert price.per_million_completion == Decimal(9)


def test_model_price_admin_offers_the_known_models_and_warns_about_an_unknown_id(admin_client, settings):
    settings.KIMI_FALLBACK_MODELS = ["kimi-k2.6", "kimi-k3"]
    add_url = reverse("admin:conversations_modelprice_add")
    choices = [value for value, _label in admin_client.get(add_url).context["adminform"].form.fields["model"].choices]
    assert choices == ["", "kimi-k2.6", "kimi-k3", "__other__"]

    response = admin_client.post(add_url, {**PRICE, "model": "kimi-k3-typo"})  # not offered: refused
    assert response.status_code == 200 and "model" in response.context["adminform"].form.errors
    response = admin_client.post(add_url, {**PRICE, "model": "__other__"})
    assert response.context["adminform"].form.errors["other_model"] == [
        "Type the model id, or pick a model from the list."
    ]
    response = admin_client.post(add_url, {**PRICE, "model": "__other__", "other_model": "kimi-k9"}, follow=True)
    assert ModelPrice.objects.filter(model="kimi-k9").exists()
    assert "is not a model this server knows" in response.content.decode()
    assert admin_client.post(add_url, {**PRICE, "model": "kimi-k3"}).status_code == 302
    assert set(ModelPrice.objects.values_list("model", flat=True)) == {"kimi-k9", "kimi-k3"}


def test_model_price_admin_shows_the_price_in_effect_of_every_known_model(admin_client, settings, shipped_prices):
    settings.KIMI_FALLBACK_MODELS = ["kimi-k2.5", "kimi-k3", "kimi-k2.6"]
    pricing.set_price("kimi-k2.6", per_request="3")
    response = admin_client.get(PRICES)
    shown = {p.model: (p.origin, p.price.per_million_completion) for p in response.context["prices_in_effect"]}
    assert shown == {
        "kimi-k2.5": ("published", Decimal(300)),  # US$3.00 a million at 1 credit = US$0.01
        "kimi-k3": ("default", Decimal(1500)),  # no published price: the conservative default
        "kimi-k2.6": ("admin", Decimal(0)),
    }
    html = response.content.decode()
    assert 'id="prices-in-effect"' in html and "platform.moonshot.ai" in html


def test_model_price_model_validators_reject_negatives():
    with pytest.raises(ValidationError) as error:
        ModelPrice(model="x", per_request=Decimal("-1")).full_clean()
    assert "per_request" in error.value.message_dict


# --- CSV export ------------------------------------------------------------------------------------------------
def test_export_csv_of_selected_messages(admin_client, owner):
    conversation = conversation_with_messages(owner, title="exported")
    evil = Message.objects.create(conversation=conversation, role="user", content='=HYPERLINK("http://x")')
    answer = conversation.messages.get(role="assistant")
    rows = read_csv(post_action(admin_client, MESSAGES, "export_csv", [answer, evil]))
    header, *body = rows
    assert header[:7] == ["id", "created_at", "owner", "conversation_id", "role", "status", "model"]
    by_id = {int(r[0]): dict(zip(header, r, strict=True)) for r in body}
    assert set(by_id) == {answer.pk, evil.pk}
    assert by_id[answer.pk]["total_tokens"] == "30" and by_id[answer.pk]["cost"] == "0.500000"
    assert by_id[answer.pk]["owner"] == "owner" and by_id[answer.pk]["content"] == "answer 0"
    assert by_id[evil.pk]["content"] == '\'=HYPERLINK("http://x")'  # not a formula in a spreadsheet


def test_export_csv_of_the_whole_filtered_transaction_list(admin_client, admin_user, owner, outsider):
    credits.grant(owner, Decimal("5"), created_by=admin_user, note="five")
    credits.grant(outsider, Decimal("6"), created_by=admin_user, note="six")
    some = CreditTransaction.objects.filter(kind="grant").first()
    # "Select all" across pages with a filter: every row the filter matches, not just the ticked one.
    response = admin_client.post(
        f"{TRANSACTIONS}?kind__exact=grant",
        {"action": "export_csv", ACTION_CHECKBOX_NAME: [some.pk], "select_across": "1"},
    )
    header, *body = read_csv(response)
    assert header == [
        "id",
        "created_at",
        "user",
        "kind",
        "amount",
        "balance_after",
        "message_id",
        "created_by",
        "estimated",
        "note",
        "model",
        "state",
        "prompt_tokens",
        "completion_tokens",
        "cached_tokens",
        "reservation_id",
    ]
    assert sorted((r[2], r[3], r[4], r[5], r[7], r[9]) for r in body) == [
        ("outsider", "grant", "6.000000", "106.000000", "admin", "six"),
        ("owner", "grant", "5.000000", "105.000000", "admin", "five"),
    ]


def test_export_csv_of_conversations_carries_the_annotations(admin_client, owner):
    conversation = conversation_with_messages(owner, title="counted", answers=2)
    header, row = read_csv(post_action(admin_client, CONVERSATIONS, "export_csv", [conversation]))
    assert dict(zip(header, row, strict=True)) | {"created_at": "", "updated_at": ""} == {
        "id": str(conversation.pk),
        "owner": "owner",
        "title": "counted",
        "model": "kimi-k2.6",
        "messages": "4",
        "tokens": "60",
        "archived": "no",
        "created_at": "",
        "updated_at": "",
    }


def test_export_needs_the_view_permission(staff_client, staff, owner):
    message = conversation_with_messages(owner).messages.first()
    response = post_action(staff_client, MESSAGES, "export_csv", [message])
    assert response.status_code == 403


# --- query counts ----------------------------------------------------------------------------------------------
def seed_users(django_user_model, n, start=0):
    for index in range(start, start + n):
        user = django_user_model.objects.create(username=f"user{index:03}", email=f"u{index}@example.org")
        if index % 3 == 0:
            conversation_with_messages(user, title=f"c{index}")


def seed_conversations(owner, n, start=0):
    for index in range(start, start + n):
        conversation_with_messages(owner, title=f"c{index}", answers=1, status="error" if index % 7 else "complete")


def seed_messages(owner, n):
    conversation = Conversation.objects.create(owner=owner, title="many", model="kimi-k2.6")
    Message.objects.bulk_create(
        Message(conversation=conversation, role="assistant", content=f"m{i}", total_tokens=i, error_code=f"e{i % 4}")
        for i in range(n)
    )


def seed_transactions(owner, n, start=0):
    for index in range(start, start + n):
        credits.grant(owner, Decimal(index + 1), note=f"t{index}")


def seed_prices(n, start=0):
    ModelPrice.objects.bulk_create(
        ModelPrice(model=f"m{i:03}", per_request=Decimal(i)) for i in range(start, start + n)
    )


def seed_snapshots(n):
    ProviderSnapshot.objects.bulk_create(
        ProviderSnapshot(balance=Decimal(i), source="headers", rate_limit={"x-ratelimit-remaining": i})
        for i in range(n)
    )


# Each changelist's queries for a superuser, whatever the number of rows:
#   session + user (2), the page's COUNT with its filters + the COUNT of all rows (2), the page's rows with their
#   select_related joins and subquery annotations (1) = 5; then one per list filter that reads its choices from the
#   database, and two for the date hierarchy (its MIN/MAX, then its distinct days).
LIST_PAGES = {
    # 5 + the groups filter's choices
    "users": (USERS, lambda env, n, start: seed_users(env["User"], n, start), 6),
    # 5 + date hierarchy (2) + the model filter's DISTINCT models
    "conversations": (CONVERSATIONS, lambda env, n, start: seed_conversations(env["owner"], n, start), 8),
    # 5 + date hierarchy (2) + DISTINCT model + DISTINCT error_code
    "messages": (MESSAGES, lambda env, n, start: seed_messages(env["owner"], n), 9),
    # 5 + date hierarchy (2) + the model filter's DISTINCT models
    "transactions": (TRANSACTIONS, lambda env, n, start: seed_transactions(env["owner"], n, start), 8),
    # 5 (no filters, no hierarchy) + the prices in effect of the offered models
    "prices": (PRICES, lambda env, n, start: seed_prices(n, start), 6),
    # 5 + date hierarchy (2) + the source filter's DISTINCT
    "snapshots": (SNAPSHOTS, lambda env, n, start: seed_snapshots(n), 8),
}


def count_queries(client, url, params=None) -> int:
    with CaptureQueriesContext(connection) as context:
        response = client.get(url, params or {})
    assert response.status_code == 200
    return len(context.captured_queries)


@pytest.mark.parametrize("page", sorted(LIST_PAGES))
def test_every_list_page_runs_a_constant_number_of_queries(admin_client, django_user_model, owner, page):
    url, seed, expected = LIST_PAGES[page]
    env = {"User": django_user_model, "owner": owner}
    seed(env, 10, 0)
    few = count_queries(admin_client, url)
    seed(env, 110, 10)
    rows = admin_client.get(url).context["cl"]
    assert rows.result_count >= 120 and len(rows.result_list) == 100  # a full page of 100
    many = count_queries(admin_client, url)
    assert few == many == expected


def test_searched_and_filtered_conversation_list_is_constant_too(admin_client, owner):
    seed_conversations(owner, 10)
    params = {"q": "question", "has": "error"}
    few = count_queries(admin_client, CONVERSATIONS, params)
    seed_conversations(owner, 110, 10)
    assert count_queries(admin_client, CONVERSATIONS, params) == few


def test_staff_list_query_count_is_constant(staff_client, staff, owner):
    """A staff user's permissions are read once per request (user and group permissions), not per row."""
    grant(staff, "view_conversation")
    seed_conversations(owner, 10)
    few = count_queries(staff_client, CONVERSATIONS)
    seed_conversations(owner, 110, 10)
    assert count_queries(staff_client, CONVERSATIONS) == few


def test_a_fresh_timestamp_is_used_for_the_price_update(admin_client):
    before = timezone.now()
    admin_client.post(reverse("admin:conversations_modelprice_add"), PRICE)
    assert ModelPrice.objects.get().updated_at >= before


def test_admin_can_still_edit_a_user_with_the_read_only_credit_inline(admin_client, owner):
    account = owner.credit_account
    data = {
        "username": "owner",
        "email": "new@example.org",
        "is_active": "on",
        "date_joined_0": "2025-01-01",
        "date_joined_1": "10:00:00",
        "credit_account-TOTAL_FORMS": "1",
        "credit_account-INITIAL_FORMS": "1",
        "credit_account-MIN_NUM_FORMS": "0",
        "credit_account-MAX_NUM_FORMS": "0",
        "credit_account-0-id": str(account.pk),
        "credit_account-0-user": str(owner.pk),
        "credit_account-0-balance": "999999",  # a forged field: the inline is read-only and ignores it
        "budget-TOTAL_FORMS": "1",  # the spending caps inline, left empty: no row is made
        "budget-INITIAL_FORMS": "0",
        "budget-MIN_NUM_FORMS": "0",
        "budget-MAX_NUM_FORMS": "1",
    }
    response = admin_client.post(reverse("admin:auth_user_change", args=[owner.pk]), data)
    assert response.status_code == 302, response.context["adminform"].form.errors
    owner.refresh_from_db()
    account.refresh_from_db()
    assert owner.email == "new@example.org"
    assert account.balance == Decimal(100)


def test_a_conversation_is_deleted_with_its_messages_but_a_user_with_a_ledger_is_not(admin_client, owner):
    conversation = conversation_with_messages(owner, answers=2)
    delete_url = reverse("admin:conversations_conversation_delete", args=[conversation.pk])
    assert admin_client.post(delete_url, {"post": "yes"}).status_code == 302
    assert not Conversation.objects.exists() and not Message.objects.exists()

    # Deleting a user would delete their ledger, which is append-only: the admin does not offer it; deactivate.
    user_delete = reverse("admin:auth_user_delete", args=[owner.pk])
    assert admin_client.get(user_delete).status_code == 403
    assert admin_client.post(user_delete, {"post": "yes"}).status_code == 403
    assert CreditTransaction.objects.filter(account__user=owner).exists()


def test_the_admin_writes_credits_by_the_one_rule(admin_client, owner):
    credits.grant(owner, Decimal("5"), note="five")
    pricing.set_price("kimi-k3", per_million_completion="1500")
    ledger = admin_client.get(TRANSACTIONS).content.decode()
    assert ">+5.00<" in ledger and ">105.00<" in ledger and "5.000000" not in ledger
    prices = admin_client.get(PRICES).content.decode()
    assert ">1,500.00<" in prices and "1500.000000" not in prices
