"""The user's own spending caps, set on the usage page (POST /usage/budget/). Thin: services/billing/budgets.py."""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.shortcuts import redirect
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _
from django.views.decorators.http import require_POST

from conversations.models import CREDIT_DIGITS
from conversations.services.billing import budgets
from conversations.views import usage

MAX_CAP = 10**9  # credits: far beyond any balance, well inside the column


def _cap_field(label):
    return forms.DecimalField(
        label=label,
        required=False,
        min_value=0,
        max_value=MAX_CAP,
        max_digits=CREDIT_DIGITS["max_digits"],
        decimal_places=CREDIT_DIGITS["decimal_places"],
        widget=forms.NumberInput(attrs={"step": "any", "min": "0", "inputmode": "decimal"}),
        help_text=_("Empty: no cap of your own."),
    )


class OwnCapsForm(forms.Form):
    daily = _cap_field(_("My daily cap (credits)"))
    monthly = _cap_field(_("My monthly cap (credits)"))

    def __init__(self, *args, user, **kwargs):
        super().__init__(*args, **kwargs)
        self.user = user

    def clean(self):
        cleaned = super().clean()
        if self.errors:
            return cleaned
        try:
            budgets.check_own_caps(self.user, daily=cleaned.get("daily"), monthly=cleaned.get("monthly"))
        except budgets.InvalidOwnCap as exc:
            self.add_error(exc.field, str(exc))
        return cleaned


def own_caps_form(user, data=None, status: budgets.BudgetStatus | None = None) -> OwnCapsForm:
    status = status or budgets.budget_status(user)
    return OwnCapsForm(data, user=user, initial={"daily": status.own_daily, "monthly": status.own_monthly})


@require_POST
def own_caps(request):
    form = own_caps_form(request.user, request.POST)
    if not form.is_valid():
        return usage.usage(request, budget_form=form, status=400)
    try:
        budgets.set_own_caps(request.user, daily=form.cleaned_data["daily"], monthly=form.cleaned_data["monthly"])
    except budgets.InvalidOwnCap as exc:  # staff lowered their cap between the check and the save
        form.add_error(exc.field, str(exc))
        return usage.usage(request, budget_form=form, status=400)
    messages.success(request, gettext("Your spending caps were saved."))
    return redirect("/usage/#budget")
