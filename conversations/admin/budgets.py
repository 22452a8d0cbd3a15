"""Spending caps on the user page, and on the group page a group's shared budget, cap per member and model list
(services/billing/budgets.py, services/accounts/model_access.py)."""

from __future__ import annotations

from django import forms
from django.contrib import admin
from django.contrib.auth.admin import GroupAdmin
from django.contrib.auth.models import Group
from django.db.models import Count
from django.utils.formats import date_format
from django.utils.html import format_html, format_html_join
from django.utils.translation import gettext_lazy as _

from conversations.models import GroupPolicy, UserBudget
from conversations.services.billing import budgets, pricing
from conversations.services.billing.credit_format import format_credits

LIMIT_LABELS = {
    budgets.DAILY: _("today"),
    budgets.MONTHLY: _("this month"),
    budgets.GROUP: _("group “%(group)s”, this month"),
    budgets.GROUP_MEMBER: _("share in “%(group)s”, this month"),
}
SET_BY = {"staff": _("staff"), "user": _("the user"), "group": _("group")}


def _limits_table(limits: list[budgets.Limit]):
    if not limits:
        return _("No cap applies: answers are limited by the balance only.")
    rows = format_html_join(
        "",
        "<tr><td>{}</td><td class='kc-num'>{}</td><td class='kc-num'>{}</td><td>{}</td><td>{}</td></tr>",
        (
            (
                LIMIT_LABELS[limit.code] % {"group": limit.group},
                format_credits(limit.spent),
                format_credits(limit.cap),
                SET_BY[limit.set_by],
                date_format(limit.resets_at, "DATETIME_FORMAT"),
            )
            for limit in limits
        ),
    )
    return format_html(
        "<table class='kc-ledger'><thead><tr><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th></tr></thead>"
        "<tbody>{}</tbody></table>",
        _("Limit"),
        _("Spent (running answers included)"),
        _("Cap"),
        _("Set by"),
        _("Resets"),
        rows,
    )


class PlainCapsForm(forms.ModelForm):
    """Caps shown as people write them (20, not 20.000000); empty means no cap."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for name, field in self.fields.items():
            value = self.initial.get(name)
            if isinstance(field, forms.DecimalField) and value is not None:
                self.initial[name] = f"{value.normalize():f}"
                field.help_text = field.help_text or _("Credits; empty: no cap.")
            elif isinstance(field, forms.DecimalField):
                field.help_text = field.help_text or _("Credits; empty: no cap.")


class UserBudgetInline(admin.StackedInline):
    """Staff set the caps; the user's own (lower) caps are shown, never edited here: they are the user's."""

    model = UserBudget
    form = PlainCapsForm
    can_delete = False
    extra = 1
    max_num = 1
    fields = ("daily_cap", "monthly_cap", "users_daily_cap", "users_monthly_cap", "spending")
    readonly_fields = ("users_daily_cap", "users_monthly_cap", "spending")
    verbose_name_plural = _("spending caps")

    @admin.display(description=_("daily cap (the user's own)"))
    def users_daily_cap(self, budget: UserBudget):
        return _("none") if budget.own_daily_cap is None else format_credits(budget.own_daily_cap)

    @admin.display(description=_("monthly cap (the user's own)"))
    def users_monthly_cap(self, budget: UserBudget):
        return _("none") if budget.own_monthly_cap is None else format_credits(budget.own_monthly_cap)

    @admin.display(description=_("limits in effect"))
    def spending(self, budget: UserBudget):
        if budget.user_id is None:
            return _("Set a cap and save to apply it.")
        return _limits_table(budgets.budget_status(budget.user).limits)


class GroupPolicyForm(PlainCapsForm):
    allowed_models = forms.MultipleChoiceField(
        label=_("Allowed models"),
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text=_(
            "Members may use only the ticked models (with those of their other groups). None ticked: every model."
        ),
    )

    class Meta:
        model = GroupPolicy
        fields = ("monthly_budget", "member_monthly_cap", "allowed_models")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        current = list(self.instance.allowed_models or []) if self.instance.pk else []
        # The provider's list as last read (never asks it) plus any model still on the list that it no longer has.
        models = list(dict.fromkeys([*pricing.known_models(), *current]))
        self.fields["allowed_models"].choices = [(model, model) for model in models]
        self.initial["allowed_models"] = current


class GroupPolicyInline(admin.StackedInline):
    model = GroupPolicy
    form = GroupPolicyForm
    can_delete = False
    extra = 1
    max_num = 1
    fields = ("monthly_budget", "member_monthly_cap", "allowed_models", "spent_this_month")
    readonly_fields = ("spent_this_month",)
    verbose_name_plural = _("budget and models")

    @admin.display(description=_("spent this month"))
    def spent_this_month(self, policy: GroupPolicy):
        if policy.group_id is None:
            return "—"
        at = budgets.periods()
        spent = budgets.group_spending([policy.group_id], at).get(policy.group_id, budgets.ZERO)
        return _("%(spent)s credits by its members; the month resets %(reset)s.") % {
            "spent": format_credits(spent),
            "reset": date_format(at.month_end, "DATETIME_FORMAT"),
        }


admin.site.unregister(Group)


@admin.register(Group)
class KimiChatGroupAdmin(GroupAdmin):
    inlines = [GroupPolicyInline]
    list_display = ("name", "members", "monthly_budget", "member_monthly_cap", "models")

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("policy").annotate(member_count=Count("user"))

    @admin.display(description=_("members"), ordering="member_count")
    def members(self, group):
        return group.member_count

    @admin.display(description=_("shared monthly budget"), empty_value="—")
    def monthly_budget(self, group):
        policy = getattr(group, "policy", None)
        return None if policy is None or policy.monthly_budget is None else format_credits(policy.monthly_budget)

    @admin.display(description=_("monthly cap per member"), empty_value="—")
    def member_monthly_cap(self, group):
        policy = getattr(group, "policy", None)
        cap = policy.member_monthly_cap if policy is not None else None
        return None if cap is None else format_credits(cap)

    @admin.display(description=_("models"))
    def models(self, group):
        policy = getattr(group, "policy", None)
        return ", ".join(policy.allowed_models) if policy is not None and policy.allowed_models else _("all")
