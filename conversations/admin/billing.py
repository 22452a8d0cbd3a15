"""The ledger, model prices and provider snapshots."""

from __future__ import annotations

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from conversations.admin.common import ReadOnlyAdminMixin, export_csv
from conversations.models import (
    CreditTransaction,
    ModelPrice,
    ProviderSnapshot,
)
from conversations.services.billing import pricing
from conversations.services.billing.credit_format import format_credits, format_signed_credits


@admin.register(CreditTransaction)
class CreditTransactionAdmin(admin.ModelAdmin):
    """The append-only ledger: nobody adds, changes or deletes a row here, superusers included."""

    # Thirteen columns did not fit a 1280 px window: whether a charge was estimated (a filter) and its message id are
    # on the row's page and in the CSV, not columns.
    list_display = (
        "id",
        "created_at",
        "user",
        "kind",
        "amount_display",
        "balance_after_display",
        "model",
        "state",
        "api_key",
        "created_by",
        "note",
    )
    list_select_related = ("account__user", "created_by", "api_key")
    # Reservations and their releases are hidden from users (their usage page nets them) but stay auditable here.
    list_filter = ("kind", "state", "estimated", "model", "created_at")
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
        ("model", lambda t: t.model),
        ("state", lambda t: t.state),
        ("prompt_tokens", lambda t: t.prompt_tokens),
        ("completion_tokens", lambda t: t.completion_tokens),
        ("cached_tokens", lambda t: t.cached_tokens),
        ("reservation_id", lambda t: t.reservation_id),
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

    @admin.display(description=_("amount"), ordering="amount")
    def amount_display(self, tx):
        return format_signed_credits(tx.amount)

    @admin.display(description=_("balance after"), ordering="balance_after")
    def balance_after_display(self, tx):
        return format_credits(tx.balance_after)


PRICE_FIELDS = ("per_request", "per_million_prompt", "per_million_completion", "per_million_cached", "per_search")


def _not_negative(value):
    if value is not None and value < 0:
        raise forms.ValidationError(_("A price cannot be negative."), code="min_value")


OTHER_MODEL = "__other__"


class ModelPriceForm(forms.ModelForm):
    """The model is picked from the models this server knows (a typo would be a price that never applies); another
    id can still be typed, and saving it warns. Prices are never negative: the form says so in words before the
    model validators and the database check do."""

    model = forms.ChoiceField(label=_("Model"))
    other_model = forms.CharField(
        label=_("Another model id"),
        max_length=100,
        required=False,
        help_text=_("Only for a model the provider does not list (yet). Its price applies only to that exact id."),
    )

    class Meta:
        model = ModelPrice
        fields = ("model", "other_model", *PRICE_FIELDS)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        known = pricing.known_models()
        current = self.instance.model if self.instance.pk else ""
        self.unknown_model = False
        if current and current not in known:
            known = [current, *known]
        self.fields["model"].choices = [
            ("", "---------"),
            *[(m, m) for m in known],
            (OTHER_MODEL, _("Another model id…")),
        ]
        self.known = known
        for name in PRICE_FIELDS:
            self.fields[name].widget.attrs["min"] = "0"
            self.fields[name].validators.append(_not_negative)

    def clean(self):
        cleaned = super().clean()
        if cleaned.get("model") == OTHER_MODEL:
            other = (cleaned.get("other_model") or "").strip()
            if not other:
                self.add_error("other_model", _("Type the model id, or pick a model from the list."))
                return cleaned
            cleaned["model"] = other
            self.instance.model = other
            self.unknown_model = other not in self.known
            if ModelPrice.objects.filter(model=other).exclude(pk=self.instance.pk).exists():
                self.add_error("other_model", _("This model already has a price."))
        return cleaned


@admin.register(ModelPrice)
class ModelPriceAdmin(admin.ModelAdmin):
    form = ModelPriceForm
    list_display = (
        "model",
        "per_request_display",
        "prompt_display",
        "completion_display",
        "cached_display",
        "updated_at",
    )
    search_fields = ("model",)
    ordering = ("model",)
    readonly_fields = ("updated_at",)
    change_list_template = "admin/conversations/modelprice/change_list.html"

    def save_model(self, request, obj, form, change):
        obj.updated_at = timezone.now()
        super().save_model(request, obj, form, change)
        if form.unknown_model:
            self.message_user(
                request,
                _("“%(model)s” is not a model this server knows: its price applies only if that exact id is used.")
                % {"model": obj.model},
                messages.WARNING,
            )

    @admin.display(description=_("per request"), ordering="per_request")
    def per_request_display(self, price):
        return format_credits(price.per_request)

    @admin.display(description=_("per million prompt"), ordering="per_million_prompt")
    def prompt_display(self, price):
        return format_credits(price.per_million_prompt)

    @admin.display(description=_("per million completion"), ordering="per_million_completion")
    def completion_display(self, price):
        return format_credits(price.per_million_completion)

    @admin.display(description=_("per million cached"), ordering="per_million_cached")
    def cached_display(self, price):
        return format_credits(price.per_million_cached)

    def changelist_view(self, request, extra_context=None):
        # What every offered model costs now, and where that price comes from: a row here, the provider's published
        # price list, or the conservative default of the settings.
        models = pricing.known_models()
        extra = {
            "prices_in_effect": pricing.prices_in_effect(models),
            "credit_value_usd": settings.KIMICHAT_CREDIT_VALUE_USD,
        }
        return super().changelist_view(request, {**(extra_context or {}), **extra})


@admin.register(ProviderSnapshot)
class ProviderSnapshotAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """What the provider reported (balance, rate-limit headers); written by the app, read here."""

    list_display = ("recorded_at", "balance", "credits_remaining", "source")
    list_filter = ("source",)
    date_hierarchy = "recorded_at"
    ordering = ("-recorded_at", "-id")

    def has_delete_permission(self, request, obj=None):
        return False
