"""The ledger, model prices and provider snapshots."""

from __future__ import annotations

from django import forms
from django.contrib import admin
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from conversations.admin.common import ReadOnlyAdminMixin, export_csv
from conversations.models import (
    CreditTransaction,
    ModelPrice,
    ProviderSnapshot,
)


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


PRICE_FIELDS = ("per_request", "per_million_prompt", "per_million_completion", "per_million_cached", "per_search")


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
