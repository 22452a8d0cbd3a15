"""Scheduled refills (services/billing/refills.py): their schedules, editable, and the grants they made, read-only."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.db.models import Count, Max
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from conversations.models import RefillGrant, RefillSchedule
from conversations.services.billing import refills
from conversations.services.billing.credit_format import format_credits


class RefillScheduleForm(forms.ModelForm):
    class Meta:
        model = RefillSchedule
        fields = ("name", "user", "group", "period", "mode", "amount", "active")
        help_texts = {
            "amount": gettext_lazy(
                "Top up: the level a balance is raised to (a higher balance is left as it is). Add: the credits added "
                "each period. More than 0."
            ),
            "user": gettext_lazy("One user, or leave empty and pick a group."),
            "group": gettext_lazy("Every active member of the group, each refilled on their own."),
        }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["amount"].widget.attrs["min"] = "0.000001"

    def clean(self):
        cleaned = super().clean()
        if bool(cleaned.get("user")) == bool(cleaned.get("group")):
            raise forms.ValidationError(_("Choose either a user or a group."), code="target")
        return cleaned


@admin.register(RefillSchedule)
class RefillScheduleAdmin(admin.ModelAdmin):
    form = RefillScheduleForm
    list_display = ("name", "target", "period", "mode", "amount_display", "active", "last_period", "grants")
    list_filter = ("active", "period", "mode")
    list_select_related = ("user", "group")
    search_fields = ("name", "user__username", "group__name")
    autocomplete_fields = ("user",)
    actions = ["run_now"]

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(grant_count=Count("grants"), last=Max("grants__period"))

    def save_model(self, request, obj, form, change):
        if not change:
            obj.created_by = request.user
        super().save_model(request, obj, form, change)

    @admin.display(description=gettext_lazy("for"))
    def target(self, schedule):
        if schedule.user_id:
            return schedule.user
        return _("group “%(name)s”") % {"name": schedule.group}

    @admin.display(description=gettext_lazy("credits"), ordering="amount")
    def amount_display(self, schedule):
        return format_credits(schedule.amount)

    @admin.display(description=gettext_lazy("last period granted"), ordering="last")
    def last_period(self, schedule):
        return schedule.last or "—"

    @admin.display(description=gettext_lazy("grants"), ordering="grant_count")
    def grants(self, schedule):
        return schedule.grant_count

    @admin.action(
        description=gettext_lazy("Grant the refills that are due now (all schedules)"), permissions=["change"]
    )
    def run_now(self, request, queryset):
        report = refills.run_refills()
        self.message_user(
            request,
            _(
                "Refilled %(granted)d users with %(credits)s credits; %(full)d already at their level, %(done)d "
                "already refilled this period."
            )
            % {
                "granted": report.granted,
                "credits": format_credits(report.credits),
                "full": report.already_full,
                "done": report.already_done,
            },
            messages.SUCCESS,
        )


@admin.register(RefillGrant)
class RefillGrantAdmin(admin.ModelAdmin):
    """What the schedules granted: one row per schedule, user and period (0: the balance was at the level)."""

    list_display = ("created_at", "schedule", "user", "period", "amount_display", "transaction")
    list_filter = ("schedule", "period")
    list_select_related = ("schedule", "user", "transaction")
    search_fields = ("user__username", "schedule__name", "period")
    ordering = ("-created_at", "-id")

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False  # deleting one would let the period be granted again

    @admin.display(description=gettext_lazy("credits"), ordering="amount")
    def amount_display(self, grant):
        return format_credits(grant.amount)
