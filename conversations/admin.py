"""Django admin for operators: users and their credits, conversations (behind a privacy permission), the ledger,
prices and the dashboard.

Every changelist runs a fixed number of queries whatever its length: related rows come through
``list_select_related`` and per-row figures are subquery annotations added in ``get_queryset``.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from decimal import Decimal

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.auth import get_permission_codename, get_user_model
from django.contrib.auth.admin import UserAdmin
from django.db import transaction
from django.db.models import BigIntegerField, Count, Exists, F, OuterRef, Q, Subquery, Sum, Value
from django.db.models.functions import Coalesce
from django.http import HttpResponse
from django.template.defaultfilters import linebreaksbr, truncatechars
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from conversations import admin_views
from conversations.admin_dashboard import tidy_credits
from conversations.models import (
    CREDIT_DIGITS,
    Conversation,
    CreditAccount,
    CreditTransaction,
    Message,
    ModelPrice,
    ProviderSnapshot,
)

User = get_user_model()

admin.site.site_header = _("KimiChat administration")
admin.site.site_title = _("KimiChat admin")


# --- The dashboard's URL ---------------------------------------------------------------------------------------
# The project uses the default AdminSite; its URLs gain /admin/dashboard/ here rather than through a custom site
# class (which would need an AdminConfig swap in INSTALLED_APPS). admin_view() adds the staff login check.
def _with_dashboard(get_urls: Callable[[], list]) -> Callable[[], list]:
    def get_urls_with_dashboard() -> list:
        dashboard = path("dashboard/", admin.site.admin_view(admin_views.dashboard), name="kimichat_dashboard")
        return [dashboard, *get_urls()]

    return get_urls_with_dashboard


admin.site.get_urls = _with_dashboard(admin.site.get_urls)


# --- Shared pieces ---------------------------------------------------------------------------------------------
def subquery_total(queryset, aggregate, *, group_by: str):
    """A correlated subquery: ``aggregate`` over ``queryset`` (already filtered on an OuterRef), grouped per row.

    Evaluated only for the rows of the page (no GROUP BY over the whole outer table), and 0 rather than NULL when
    there is nothing to aggregate.
    """
    total = queryset.order_by().values(group_by).annotate(total=aggregate).values("total")[:1]
    return Coalesce(Subquery(total), Value(0), output_field=BigIntegerField())


def csv_safe(value) -> str | int | Decimal:
    """A cell value for spreadsheets: text that starts like a formula is prefixed so Excel shows it as text."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | Decimal):
        return value
    if hasattr(value, "isoformat"):
        return value.isoformat()
    text = str(value)
    if text[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + text
    return text


@admin.action(description=_("Export CSV"), permissions=["view"])
def export_csv(modeladmin, request, queryset):
    """The selected rows (or, with "select all", the whole filtered list) as CSV, in the changelist's order.

    Columns come from the admin's ``csv_columns``: (header, function of the row). A UTF-8 BOM lets Excel read
    non-ASCII text.
    """
    opts = modeladmin.model._meta
    stamp = timezone.localtime().strftime("%Y%m%d-%H%M%S")
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{opts.model_name}s-{stamp}.csv"'
    response.write("\ufeff")
    writer = csv.writer(response)
    writer.writerow([header for header, _getter in modeladmin.csv_columns])
    for row in queryset.iterator(chunk_size=2000):
        writer.writerow([csv_safe(getter(row)) for _header, getter in modeladmin.csv_columns])
    return response


class ReadOnlyAdminMixin:
    """Rows nobody edits by hand in the admin: no add, no change; read with the view permission."""

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


class ContentPrivacyMixin(ReadOnlyAdminMixin):
    """Reading what users wrote needs the model's own view permission (``view_conversation`` / ``view_message``).

    Django's default also lets the change permission read; here it does not, so the only way to read is an explicit
    grant of the view permission (superusers hold every permission).
    """

    def has_view_permission(self, request, obj=None):
        codename = get_permission_codename("view", self.opts)
        return request.user.has_perm(f"{self.opts.app_label}.{codename}")


# --- Users -----------------------------------------------------------------------------------------------------
class BalanceRangeFilter(admin.SimpleListFilter):
    title = _("credit balance")
    parameter_name = "balance"
    # Half-open ranges over the decimal balance: 0.5 credits falls in "1–100", 100.5 in "101–1,000".
    RANGES = {
        "0": (_("0"), None, Decimal("0")),
        "1-100": (_("1–100"), Decimal("0"), Decimal("100")),
        "101-1000": (_("101–1,000"), Decimal("100"), Decimal("1000")),
        "1001-10000": (_("1,001–10,000"), Decimal("1000"), Decimal("10000")),
        "10000+": (_("> 10,000"), Decimal("10000"), None),
    }

    def lookups(self, request, model_admin):
        return [(key, label) for key, (label, _low, _high) in self.RANGES.items()]

    def queryset(self, request, queryset):
        if self.value() not in self.RANGES:
            return queryset
        _label, low, high = self.RANGES[self.value()]
        if low is None:  # "0": an empty account, or none at all
            return queryset.filter(Q(credit_account__balance=0) | Q(credit_account__isnull=True))
        queryset = queryset.filter(credit_account__balance__gt=low)
        if high is not None:
            queryset = queryset.filter(credit_account__balance__lte=high)
        return queryset


class CreditAccountInline(admin.StackedInline):
    """The user's balance and latest ledger rows, read-only: balances change only through the credits service."""

    model = CreditAccount
    can_delete = False
    extra = 0
    max_num = 0
    fields = ("balance", "updated_at", "recent_transactions")
    readonly_fields = fields
    verbose_name_plural = _("credits")
    RECENT = 20

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description=_("latest transactions"))
    def recent_transactions(self, account: CreditAccount):
        rows = list(account.transactions.select_related("created_by").order_by("-created_at", "-id")[: self.RECENT])
        ledger = reverse("admin:conversations_credittransaction_changelist") + f"?account__id__exact={account.pk}"
        if not rows:
            return _("No transactions yet.")
        body = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td class='kc-num'>{}</td><td class='kc-num'>{}</td><td>{}</td><td>{}</td></tr>",
            (
                (
                    timezone.localtime(tx.created_at).strftime("%Y-%m-%d %H:%M"),
                    tx.get_kind_display(),
                    tidy_credits(tx.amount),
                    tidy_credits(tx.balance_after),
                    tx.created_by.username if tx.created_by else "",
                    tx.note,
                )
                for tx in rows
            ),
        )
        return format_html(
            "<table class='kc-ledger'><thead><tr><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th>"
            "</tr></thead><tbody>{}</tbody></table><p><a href='{}'>{}</a></p>",
            _("When"),
            _("Kind"),
            _("Amount"),
            _("Balance after"),
            _("By"),
            _("Note"),
            body,
            ledger,
            _("The whole ledger of this account →"),
        )


class GrantCreditsForm(forms.Form):
    amount = forms.DecimalField(
        label=_("Credits to add to each selected user"),
        max_digits=CREDIT_DIGITS["max_digits"],
        decimal_places=CREDIT_DIGITS["decimal_places"],
        min_value=Decimal("0.000001"),
        max_value=Decimal("1000000000"),
        error_messages={"min_value": _("Grant a positive number of credits.")},
    )
    note = forms.CharField(
        label=_("Note (kept in the ledger)"),
        max_length=500,
        widget=forms.TextInput(attrs={"size": 60}),
        help_text=_("Why these credits are granted, e.g. “top-up, invoice 2024-031”."),
    )


admin.site.unregister(User)


@admin.register(User)
class KimiChatUserAdmin(UserAdmin):
    list_display = (
        "username",
        "email",
        "is_staff",
        "is_active",
        "credit_balance",
        "total_tokens",
        "last_activity",
    )
    list_filter = ("is_staff", "is_superuser", "is_active", BalanceRangeFilter, "groups")
    search_fields = ("username", "email")
    ordering = ("username",)
    actions = ["grant_credits", "deactivate_users", "activate_users"]

    class Media:
        css = {"all": ["css/admin-dashboard.css"]}  # the ledger table of the credit inline

    def get_inlines(self, request, obj):
        return [CreditAccountInline] if obj is not None else []

    def get_queryset(self, request):
        tokens = subquery_total(
            Message.objects.filter(conversation__owner=OuterRef("pk")),
            Sum("total_tokens"),
            group_by="conversation__owner",
        )
        # conv_owner_updated serves this: WHERE owner = ? ORDER BY updated_at DESC LIMIT 1.
        last_activity = Conversation.objects.filter(owner=OuterRef("pk")).order_by("-updated_at").values("updated_at")
        return (
            super()
            .get_queryset(request)
            .annotate(
                credit_balance=F("credit_account__balance"),
                total_tokens=tokens,
                last_activity=Subquery(last_activity[:1]),
            )
        )

    @admin.display(description=_("credits"), ordering="credit_balance", empty_value="0")
    def credit_balance(self, user):
        return None if user.credit_balance is None else tidy_credits(user.credit_balance)

    @admin.display(description=_("tokens"), ordering="total_tokens")
    def total_tokens(self, user):
        return user.total_tokens

    @admin.display(description=_("last activity"), ordering="last_activity")
    def last_activity(self, user):
        return user.last_activity

    def has_grant_permission(self, request):
        # Granting moves a balance: it needs the permission to change credit accounts (superusers have it).
        return request.user.has_perm("conversations.change_creditaccount")

    @admin.action(description=_("Grant credits to the selected users…"), permissions=["grant"])
    def grant_credits(self, request, queryset):
        """An intermediate page asks for the amount and a note; its "apply" writes one ledger row per user."""
        from conversations.services import credits

        form = GrantCreditsForm(request.POST if "apply" in request.POST else None)
        if form.is_valid():
            amount, note = form.cleaned_data["amount"], form.cleaned_data["note"]
            users = list(queryset)
            with transaction.atomic():  # all of them or none
                for user in users:
                    credits.grant(user, amount, created_by=request.user, note=note)
            self.message_user(
                request,
                ngettext(
                    "Granted %(amount)s credits to %(count)d user.",
                    "Granted %(amount)s credits to each of %(count)d users.",
                    len(users),
                )
                % {"amount": amount, "count": len(users)},
                messages.SUCCESS,
            )
            return None  # back to the changelist
        shown = 50
        selected = list(queryset[: shown + 1])
        context = {
            **self.admin_site.each_context(request),
            "title": _("Grant credits"),
            "opts": self.opts,
            "form": form,
            "users": [(user, tidy_credits(user.credit_balance or 0)) for user in selected[:shown]],
            "more": queryset.count() - shown if len(selected) > shown else 0,
            "selected_ids": request.POST.getlist(ACTION_CHECKBOX_NAME),
            "select_across": request.POST.get("select_across", "0"),
            "action_checkbox_name": ACTION_CHECKBOX_NAME,
            "media": self.media + form.media,
        }
        return TemplateResponse(request, "admin/kimichat_grant_credits.html", context)

    @admin.action(description=_("Deactivate the selected accounts"), permissions=["change"])
    def deactivate_users(self, request, queryset):
        # Never yourself: an admin locking themself out by a stray tick helps nobody.
        count = queryset.exclude(pk=request.user.pk).update(is_active=False)
        self.message_user(request, ngettext("Deactivated %d account.", "Deactivated %d accounts.", count) % count)
        if queryset.filter(pk=request.user.pk).exists():
            self.message_user(request, _("Your own account was left active."), messages.WARNING)

    @admin.action(description=_("Activate the selected accounts"), permissions=["change"])
    def activate_users(self, request, queryset):
        count = queryset.update(is_active=True)
        self.message_user(request, ngettext("Activated %d account.", "Activated %d accounts.", count) % count)


# --- Conversations and messages --------------------------------------------------------------------------------
class MessageStatusFilter(admin.SimpleListFilter):
    title = _("message status")
    parameter_name = "has"
    STATUSES = {
        "error": (_("has errors"), [Message.Status.ERROR]),
        "streaming": (_("has an answer in progress"), [Message.Status.PENDING, Message.Status.STREAMING]),
        "stopped": (_("has stopped answers"), [Message.Status.STOPPED]),
        "interrupted": (_("has interrupted answers"), [Message.Status.INTERRUPTED]),
    }

    def lookups(self, request, model_admin):
        return [(key, label) for key, (label, _statuses) in self.STATUSES.items()]

    def queryset(self, request, queryset):
        if self.value() not in self.STATUSES:
            return queryset
        statuses = self.STATUSES[self.value()][1]
        # EXISTS rather than a join: one row per conversation, and the annotations stay per-conversation.
        return queryset.filter(Exists(Message.objects.filter(conversation=OuterRef("pk"), status__in=statuses)))


class MessageInline(ContentPrivacyMixin, admin.TabularInline):
    """The conversation's messages in order, read-only; the inline itself needs view_message."""

    model = Message
    fk_name = "conversation"
    extra = 0
    max_num = 0
    can_delete = False
    show_change_link = True
    fields = ("role", "status_display", "content_preview", "model", "usage", "error", "created_at")
    readonly_fields = fields
    ordering = ("id",)

    class Media:
        css = {"all": ["css/admin-dashboard.css"]}  # gives the content column its width

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description=_("status"))
    def status_display(self, message: Message):
        if message.superseded_by_id:
            return _("%(status)s, replaced by #%(id)s") % {
                "status": message.get_status_display(),
                "id": message.superseded_by_id,
            }
        return message.get_status_display()

    @admin.display(description=_("content"))
    def content_preview(self, message: Message):
        return linebreaksbr(truncatechars(message.content, 300), autoescape=True)

    @admin.display(description=_("usage"))
    def usage(self, message: Message):
        if not message.total_tokens and not message.cost:
            return "—"
        estimated = _(" (estimated)") if message.usage_estimated else ""
        return _("%(prompt)s + %(completion)s = %(total)s tokens%(estimated)s; %(cost)s credits") % {
            "prompt": message.prompt_tokens,
            "completion": message.completion_tokens,
            "total": message.total_tokens,
            "estimated": estimated,
            "cost": tidy_credits(message.cost),
        }

    @admin.display(description=_("error"))
    def error(self, message: Message):
        if not message.error_code and not message.error_message:
            return "—"
        return f"{message.error_code}: {message.error_message}".strip(": ")


@admin.register(Conversation)
class ConversationAdmin(ContentPrivacyMixin, admin.ModelAdmin):
    list_display = ("id", "title_display", "owner", "model", "message_count", "tokens", "updated_at")
    list_display_links = ("id", "title_display")
    list_select_related = ("owner",)
    list_filter = ("model", MessageStatusFilter, "archived", "updated_at")
    search_fields = ("title", "owner__username", "messages__content")
    date_hierarchy = "updated_at"
    ordering = ("-updated_at", "-id")
    inlines = [MessageInline]
    actions = [export_csv]
    readonly_fields = ("message_count", "tokens")
    fields = (
        "owner",
        "title",
        "model",
        "system_prompt",
        ("temperature", "top_p", "max_tokens"),
        ("json_mode", "thinking"),
        ("pinned", "archived"),
        ("created_at", "updated_at"),
        ("message_count", "tokens"),
    )
    csv_columns = [
        ("id", lambda c: c.pk),
        ("owner", lambda c: c.owner.username),
        ("title", lambda c: c.title),
        ("model", lambda c: c.model),
        ("messages", lambda c: c.message_count),
        ("tokens", lambda c: c.tokens),
        ("archived", lambda c: c.archived),
        ("created_at", lambda c: c.created_at),
        ("updated_at", lambda c: c.updated_at),
    ]

    def get_queryset(self, request):
        of_row = Message.objects.filter(conversation=OuterRef("pk"))
        return (
            super()
            .get_queryset(request)
            .annotate(
                message_count=subquery_total(of_row, Count("id"), group_by="conversation"),
                tokens=subquery_total(of_row, Sum("total_tokens"), group_by="conversation"),
            )
        )

    def has_delete_permission(self, request, obj=None):
        # Deleting is moderation: it needs the delete permission and the right to read what is deleted.
        return super().has_delete_permission(request, obj) and self.has_view_permission(request, obj)

    def get_deleted_objects(self, objs, request):
        # The messages go with their conversation, although the message admin itself never deletes one.
        deleted, counts, perms_needed, protected = super().get_deleted_objects(objs, request)
        perms_needed.discard(Message._meta.verbose_name)
        return deleted, counts, perms_needed, protected

    @admin.display(description=_("title"), ordering="title")
    def title_display(self, conversation):
        return str(conversation)

    @admin.display(description=_("messages"), ordering="message_count")
    def message_count(self, conversation):
        return conversation.message_count

    @admin.display(description=_("tokens"), ordering="tokens")
    def tokens(self, conversation):
        return conversation.tokens


@admin.register(Message)
class MessageAdmin(ContentPrivacyMixin, admin.ModelAdmin):
    list_display = (
        "id",
        "conversation",
        "owner",
        "role",
        "status",
        "model",
        "total_tokens",
        "cost",
        "error_code",
        "created_at",
    )
    list_select_related = ("conversation__owner",)
    list_filter = ("status", "role", "model", "error_code", "usage_estimated", "created_at")
    search_fields = ("content", "conversation__title", "conversation__owner__username", "upstream_request_id")
    date_hierarchy = "created_at"
    ordering = ("-created_at", "-id")
    actions = [export_csv]
    csv_columns = [
        ("id", lambda m: m.pk),
        ("created_at", lambda m: m.created_at),
        ("owner", lambda m: m.conversation.owner.username),
        ("conversation_id", lambda m: m.conversation_id),
        ("role", lambda m: m.role),
        ("status", lambda m: m.status),
        ("model", lambda m: m.model),
        ("prompt_tokens", lambda m: m.prompt_tokens),
        ("completion_tokens", lambda m: m.completion_tokens),
        ("total_tokens", lambda m: m.total_tokens),
        ("cached_tokens", lambda m: m.cached_tokens),
        ("usage_estimated", lambda m: m.usage_estimated),
        ("cost", lambda m: m.cost),
        ("finish_reason", lambda m: m.finish_reason),
        ("error_code", lambda m: m.error_code),
        ("upstream_request_id", lambda m: m.upstream_request_id),
        ("content", lambda m: m.content),
    ]

    def has_delete_permission(self, request, obj=None):
        return False  # messages go with their conversation

    @admin.display(description=_("owner"), ordering="conversation__owner__username")
    def owner(self, message):
        return message.conversation.owner


# --- The ledger, prices, provider snapshots --------------------------------------------------------------------
@admin.register(CreditTransaction)
class CreditTransactionAdmin(admin.ModelAdmin):
    """The append-only ledger: nobody adds, changes or deletes a row here, superusers included."""

    list_display = (
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
    )
    list_select_related = ("account__user", "created_by")
    list_filter = ("kind", "estimated", "created_at")
    search_fields = ("account__user__username", "account__user__email", "note")
    date_hierarchy = "created_at"
    ordering = ("-created_at", "-id")
    actions = [export_csv]
    csv_columns = [
        ("id", lambda t: t.pk),
        ("created_at", lambda t: t.created_at),
        ("user", lambda t: t.account.user.username),
        ("kind", lambda t: t.kind),
        ("amount", lambda t: t.amount),
        ("balance_after", lambda t: t.balance_after),
        ("message_id", lambda t: t.message_id),
        ("created_by", lambda t: t.created_by.username if t.created_by else ""),
        ("estimated", lambda t: t.estimated),
        ("note", lambda t: t.note),
    ]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def get_actions(self, request):
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)  # already gone with has_delete_permission; never let it back
        return actions

    @admin.display(description=_("user"), ordering="account__user__username")
    def user(self, tx):
        return tx.account.user


PRICE_FIELDS = ("per_request", "per_million_prompt", "per_million_completion", "per_million_cached")


def _not_negative(value):
    if value is not None and value < 0:
        raise forms.ValidationError(_("A price cannot be negative."), code="min_value")


class ModelPriceForm(forms.ModelForm):
    """Prices are never negative: the form says so in words before the model validators and the DB check do."""

    class Meta:
        model = ModelPrice
        fields = ("model", *PRICE_FIELDS)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for name in PRICE_FIELDS:
            self.fields[name].widget.attrs["min"] = "0"
            self.fields[name].validators.append(_not_negative)


@admin.register(ModelPrice)
class ModelPriceAdmin(admin.ModelAdmin):
    form = ModelPriceForm
    list_display = ("model", *PRICE_FIELDS, "updated_at")
    search_fields = ("model",)
    ordering = ("model",)
    readonly_fields = ("updated_at",)

    def save_model(self, request, obj, form, change):
        obj.updated_at = timezone.now()
        super().save_model(request, obj, form, change)


@admin.register(ProviderSnapshot)
class ProviderSnapshotAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """What the provider reported (balance, rate-limit headers); written by the app, read here."""

    list_display = ("recorded_at", "balance", "credits_remaining", "source")
    list_filter = ("source",)
    date_hierarchy = "recorded_at"
    ordering = ("-recorded_at", "-id")

    def has_delete_permission(self, request, obj=None):
        return False
