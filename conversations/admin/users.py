"""Users and their credits: balances, the latest ledger rows, the grant action."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from decimal import Decimal

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin
from django.db import transaction
from django.db.models import F, OuterRef, Q, Subquery, Sum
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.formats import date_format
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from conversations.admin.budgets import UserBudgetInline
from conversations.admin.common import subquery_total
from conversations.admin.credit_adjust import adjust_credits
from conversations.admin.signup import AwaitingApprovalFilter, approve_accounts
from conversations.models import (
    CREDIT_DIGITS,
    Conversation,
    CreditAccount,
    CreditTransaction,
    Message,
)
from conversations.services.accounts import login_throttle, sessions
from conversations.services.billing.credit_format import format_credits

User = get_user_model()


def _clock(epoch_seconds: float) -> str:
    return date_format(timezone.localtime(datetime.fromtimestamp(epoch_seconds, tz=UTC)), "DATETIME_FORMAT")


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
        adjust = format_html(
            "<p><a class='button' href='{}'>{}</a></p>",
            reverse("admin:kimichat_adjust_credits", args=[account.user_id]),
            _("Adjust credits…"),
        )
        if not rows:
            return format_html("{}{}", _("No transactions yet."), adjust)
        body = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td class='kc-num'>{}</td><td class='kc-num'>{}</td><td>{}</td><td>{}</td></tr>",
            (
                (
                    timezone.localtime(tx.created_at).strftime("%Y-%m-%d %H:%M"),
                    tx.get_kind_display(),
                    format_credits(tx.amount),
                    format_credits(tx.balance_after),
                    tx.created_by.username if tx.created_by else "",
                    tx.note,
                )
                for tx in rows
            ),
        )
        return format_html(
            "<table class='kc-ledger'><thead><tr><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th>"
            "</tr></thead><tbody>{}</tbody></table><p><a href='{}'>{}</a></p>{}",
            _("When"),
            _("Kind"),
            _("Amount"),
            _("Balance after"),
            _("By"),
            _("Note"),
            body,
            ledger,
            _("The whole ledger of this account →"),
            adjust,
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
    list_filter = ("is_staff", "is_superuser", "is_active", AwaitingApprovalFilter, BalanceRangeFilter, "groups")
    search_fields = ("username", "email")
    ordering = ("username",)
    actions = ["grant_credits", adjust_credits, approve_accounts, "deactivate_users", "activate_users", "unlock_logins"]
    readonly_fields = ("login_lock",)

    class Media:
        css = {"all": ["css/admin-dashboard.css"]}  # the ledger table of the credit inline

    def get_fieldsets(self, request, obj=None):
        fieldsets = super().get_fieldsets(request, obj)
        if obj is None:
            return fieldsets
        return [*fieldsets, (_("Log-in throttle"), {"fields": ("login_lock",)})]

    @admin.display(description=_("log-in lock"))
    def login_lock(self, user):
        status = login_throttle.lock_status(user.get_username())
        if not status.locked:
            return _("Not locked.")
        now = time.time()
        lines = []
        if status.account_until and status.account_until > now:
            lines.append(_("Log-in locked from every address until %(time)s.") % {"time": _clock(status.account_until)})
        for address, until in sorted(status.addresses.items()):
            if until > now:
                lines.append(
                    _("Log-in locked from %(address)s until %(time)s.") % {"address": address, "time": _clock(until)}
                )
        lines.append(_("The action “Unlock the log-in of the selected accounts” lifts it."))
        return format_html_join(mark_safe("<br>"), "{}", ((line,) for line in lines))

    def get_inlines(self, request, obj):
        return [CreditAccountInline, UserBudgetInline] if obj is not None else []

    def has_delete_permission(self, request, obj=None):
        """A user with credit ledger rows can never be deleted (the ledger is append-only and would go with them):
        no Delete button on such a user and no bulk delete action, which nearly every user would refuse
        (deactivate instead). A user without ledger rows (made by createsuperuser, never credited) still can be."""
        if obj is None or not super().has_delete_permission(request, obj):
            return False
        return not CreditTransaction.objects.filter(account__user=obj).exists()

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
        return None if user.credit_balance is None else format_credits(user.credit_balance)

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
        from conversations.services.billing import credits

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
                % {"amount": format_credits(amount), "count": len(users)},
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
            "users": [(user, format_credits(user.credit_balance or 0)) for user in selected[:shown]],
            "more": queryset.count() - shown if len(selected) > shown else 0,
            "selected_ids": request.POST.getlist(ACTION_CHECKBOX_NAME),
            "select_across": request.POST.get("select_across", "0"),
            "action_checkbox_name": ACTION_CHECKBOX_NAME,
            "action_name": "grant_credits",
            "media": self.media + form.media,
        }
        return TemplateResponse(request, "admin/kimichat_grant_credits.html", context)

    @admin.action(description=_("Deactivate the selected accounts"), permissions=["change"])
    def deactivate_users(self, request, queryset):
        # Never yourself: an admin locking themself out by a stray tick helps nobody.
        targets = queryset.exclude(pk=request.user.pk)
        ids = list(targets.values_list("pk", flat=True))
        count = targets.update(is_active=False)
        sessions.notify_user_changed(ids)  # update() sends no signal: their open sockets close now
        self.message_user(request, ngettext("Deactivated %d account.", "Deactivated %d accounts.", count) % count)
        if queryset.filter(pk=request.user.pk).exists():
            self.message_user(request, _("Your own account was left active."), messages.WARNING)

    @admin.action(description=_("Unlock the log-in of the selected accounts"), permissions=["change"])
    def unlock_logins(self, request, queryset):
        usernames = list(queryset.values_list(User.USERNAME_FIELD, flat=True))
        for username in usernames:
            login_throttle.unlock(username)
        count = len(usernames)
        self.message_user(
            request,
            ngettext("Unlocked the log-in of %d account.", "Unlocked the log-in of %d accounts.", count) % count,
        )

    @admin.action(description=_("Activate the selected accounts"), permissions=["change"])
    def activate_users(self, request, queryset):
        count = queryset.update(is_active=True)
        self.message_user(request, ngettext("Activated %d account.", "Activated %d accounts.", count) % count)


# --- Conversations and messages --------------------------------------------------------------------------------
