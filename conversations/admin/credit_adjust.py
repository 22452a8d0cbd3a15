"""Adjusting balances by hand: the user list's "Adjust credits…" action and the same form for one user, linked from
the user's page (mounted at /admin/credits/adjust/<user id>/ by conversations.admin.site).

An adjustment is signed (a correction either way), needs a note, never takes a balance below zero, and is a ledger
row of kind ``adjustment`` naming the admin; for several users, all of them or none.
"""

from __future__ import annotations

from decimal import Decimal

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy, ngettext

from conversations.models import CREDIT_DIGITS
from conversations.services.billing import credits
from conversations.services.billing.credit_format import format_credits, format_signed_credits

PERMISSION = "conversations.change_creditaccount"  # the same as granting: it moves balances
SHOWN = 50


class AdjustCreditsForm(forms.Form):
    amount = forms.DecimalField(
        label=gettext_lazy("Credits to add (positive) or deduct (negative)"),
        max_digits=CREDIT_DIGITS["max_digits"],
        decimal_places=CREDIT_DIGITS["decimal_places"],
        min_value=Decimal("-1000000000"),
        max_value=Decimal("1000000000"),
    )
    note = forms.CharField(
        label=gettext_lazy("Note (kept in the ledger)"),
        max_length=500,
        widget=forms.TextInput(attrs={"size": 60}),
        help_text=gettext_lazy("Why, e.g. “refund of a failed export, ticket 1234”."),
    )

    def clean_amount(self):
        amount = self.cleaned_data["amount"]
        if amount == 0:
            raise forms.ValidationError(gettext_lazy("An adjustment of 0 changes nothing."), code="zero")
        return amount


def apply_adjustment(form: AdjustCreditsForm, users, admin_user) -> bool:
    """Adjust every user's balance, or (one would go below zero) none; the error goes on the form."""
    amount, note = form.cleaned_data["amount"], form.cleaned_data["note"]
    try:
        with transaction.atomic():
            for user in users:
                try:
                    credits.adjust(user, amount, created_by=admin_user, note=note)
                except credits.InsufficientCredits as exc:
                    form.add_error(
                        "amount",
                        _("%(user)s has %(balance)s credits: an adjustment cannot take a balance below zero.")
                        % {"user": user.get_username(), "balance": format_credits(exc.balance)},
                    )
                    raise
    except credits.InsufficientCredits:
        return False
    return True


def _page(request, modeladmin_opts, form, users, *, more=0, selection=None, back_url=""):
    context = {
        **admin.site.each_context(request),
        "title": _("Adjust credits"),
        "opts": modeladmin_opts,
        "form": form,
        "users": [(user, format_credits(credits.get_balance(user))) for user in users],
        "more": more,
        "back_url": back_url,
        "media": form.media,
    }
    if selection is not None:  # the action: carry the selection to the "apply" post
        context.update(selection, action_name="adjust_credits", action_checkbox_name=ACTION_CHECKBOX_NAME)
    return TemplateResponse(request, "admin/kimichat_adjust_credits.html", context)


@admin.action(description=gettext_lazy("Adjust credits of the selected users…"), permissions=["grant"])
def adjust_credits(modeladmin, request, queryset):
    form = AdjustCreditsForm(request.POST if "apply" in request.POST else None)
    if form.is_valid():
        users = list(queryset)
        if apply_adjustment(form, users, request.user):
            modeladmin.message_user(
                request,
                ngettext(
                    "Adjusted the balance of %(count)d user by %(amount)s credits.",
                    "Adjusted the balances of %(count)d users by %(amount)s credits each.",
                    len(users),
                )
                % {"amount": format_signed_credits(form.cleaned_data["amount"]), "count": len(users)},
                messages.SUCCESS,
            )
            return None
    selected = list(queryset[: SHOWN + 1])
    selection = {
        "selected_ids": request.POST.getlist(ACTION_CHECKBOX_NAME),
        "select_across": request.POST.get("select_across", "0"),
    }
    more = queryset.count() - SHOWN if len(selected) > SHOWN else 0
    return _page(request, modeladmin.opts, form, selected[:SHOWN], more=more, selection=selection)


def adjust_user_credits(request, user_id: int):
    """The same form for one user, from their admin page. Wrapped in admin_view (staff login) by admin.site."""
    if not request.user.has_perm(PERMISSION):
        raise PermissionDenied
    User = get_user_model()
    user = get_object_or_404(User, pk=user_id)
    back_url = reverse("admin:auth_user_change", args=[user.pk])
    form = AdjustCreditsForm(request.POST if request.method == "POST" else None)
    if form.is_valid() and apply_adjustment(form, [user], request.user):
        messages.success(
            request,
            _("Adjusted %(user)s's balance by %(amount)s credits; it is now %(balance)s.")
            % {
                "user": user.get_username(),
                "amount": format_signed_credits(form.cleaned_data["amount"]),
                "balance": format_credits(credits.get_balance(user)),
            },
        )
        return redirect("admin:auth_user_change", user.pk)
    return _page(request, User._meta, form, [user], back_url=back_url)
