"""Who may sign up: the sign-up settings (one row), invite codes, and approving accounts that wait (the users
admin's filter and action, defined here)."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.db.models import F
from django.http import HttpResponseRedirect
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from conversations.models import InviteCode, SignupSettings
from conversations.services.accounts import approval, invites, signup_modes
from conversations.services.billing.credit_format import format_credits


@admin.register(SignupSettings)
class SignupSettingsAdmin(admin.ModelAdmin):
    """One row (pk 1): the list page opens it; it cannot be added twice nor deleted."""

    fields = ("mode", "effective", "credits_open", "credits_invite", "credits_approval", "invite_reward")
    readonly_fields = ("effective",)

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def changelist_view(self, request, extra_context=None):
        return HttpResponseRedirect(reverse("admin:conversations_signupsettings_change", args=[1]))

    def get_object(self, request, object_id, from_field=None):
        if str(object_id) != "1":
            return None
        return SignupSettings.objects.get_or_create(pk=1)[0]

    @admin.display(description=_("in effect now"))
    def effective(self, row):
        mode = signup_modes.current_mode(row)
        source = _("set here") if row.mode else _("from the environment (SIGNUP_MODE / SIGNUP_ENABLED)")
        lines = [
            format_html("<strong>{}</strong> — {}", signup_modes.Mode(mode).label, source),
            _("A new account starts with %(credits)s credits.")
            % {"credits": format_credits(signup_modes.signup_credits(mode, row))}
            if mode != signup_modes.Mode.CLOSED
            else "",
            _("The inviter gets %(credits)s credits per sign-up with their code.")
            % {"credits": format_credits(signup_modes.invite_reward(row))}
            if mode == signup_modes.Mode.INVITE
            else "",
        ]
        return format_html("{}<br>{}<br>{}", *lines)


class InviteStateFilter(admin.SimpleListFilter):
    title = _("state")
    parameter_name = "state"

    def lookups(self, request, model_admin):
        return [("open", _("Can be used")), ("closed", _("Expired, used up or revoked"))]

    def queryset(self, request, queryset):
        usable = invites.open_codes(queryset).filter(uses__lt=F("max_uses"))
        if self.value() == "open":
            return usable
        if self.value() == "closed":
            return queryset.exclude(pk__in=usable.values("pk"))
        return queryset


class InviteCodeForm(forms.ModelForm):
    class Meta:
        model = InviteCode
        fields = ("note", "max_uses", "expires_at", "inviter")
        help_texts = {
            "inviter": _("Rewarded (INVITE_REWARD_CREDITS) for each sign-up with this code. Empty: nobody."),
            "expires_at": _("Empty: never expires."),
            "max_uses": _("How many accounts this code can make."),
        }

    def clean_max_uses(self):
        max_uses = self.cleaned_data["max_uses"]
        if self.instance.pk and max_uses < self.instance.uses:
            raise forms.ValidationError(
                _("This code has already made %(uses)d accounts: it cannot allow fewer.") % {"uses": self.instance.uses}
            )
        return max_uses


@admin.register(InviteCode)
class InviteCodeAdmin(admin.ModelAdmin):
    form = InviteCodeForm
    list_display = ("code", "note", "inviter", "uses_of_max", "expires_at", "state", "created_by", "created_at")
    list_select_related = ("inviter", "created_by")
    list_filter = (InviteStateFilter,)
    search_fields = ("code", "note", "inviter__username")
    readonly_fields = ("code", "uses", "created_by", "created_at", "revoked_at", "signup_link")
    raw_id_fields = ("inviter",)
    actions = ["revoke"]
    ordering = ("-created_at",)

    def get_fields(self, request, obj=None):
        if obj is None:
            return ("note", "max_uses", "expires_at", "inviter")
        return (
            "code",
            "signup_link",
            "note",
            "max_uses",
            "uses",
            "expires_at",
            "inviter",
            "created_by",
            "created_at",
            "revoked_at",
        )

    def save_model(self, request, obj, form, change):
        if change:
            super().save_model(request, obj, form, change)
            return
        fields = {name: form.cleaned_data[name] for name in ("note", "max_uses", "expires_at", "inviter")}
        created = invites.create(created_by=request.user, **fields)
        obj.pk, obj.code = created.pk, created.code  # the admin's "added" message and redirect name this row

    def has_delete_permission(self, request, obj=None):
        return False  # a code that made accounts is their history: revoke it instead

    @admin.display(description=_("uses"))
    def uses_of_max(self, invite):
        return f"{invite.uses} / {invite.max_uses}"

    @admin.display(description=_("state"))
    def state(self, invite):
        if invite.revoked_at:
            return _("revoked")
        if invite.expired:
            return _("expired")
        if invite.uses >= invite.max_uses:
            return _("used up")
        return _("can be used")

    @admin.display(description=_("sign-up link"))
    def signup_link(self, invite):
        url = self._request.build_absolute_uri(reverse("signup")) + f"?invite={invite.code}"
        return format_html("<code>{}</code>", url)

    def get_form(self, request, obj=None, **kwargs):
        self._request = request  # the sign-up link is absolute: made from this request's host
        return super().get_form(request, obj, **kwargs)

    @admin.action(description=_("Revoke the selected invite codes"), permissions=["change"])
    def revoke(self, request, queryset):
        count = queryset.filter(revoked_at__isnull=True).update(revoked_at=timezone.now())
        self.message_user(request, ngettext("Revoked %d code.", "Revoked %d codes.", count) % count)


# --- Approval (used by the users admin, conversations/admin/users.py) --------------------------------------------


class AwaitingApprovalFilter(admin.SimpleListFilter):
    title = _("approval")
    parameter_name = "approval"

    def lookups(self, request, model_admin):
        return [("waiting", _("Waiting for approval")), ("approved", _("Approved or never needed"))]

    def queryset(self, request, queryset):
        if self.value() == "waiting":
            return queryset.filter(signup__awaiting_approval=True)
        if self.value() == "approved":
            return queryset.exclude(signup__awaiting_approval=True)
        return queryset


@admin.action(description=_("Approve the selected accounts (waiting for approval)"), permissions=["change"])
def approve_accounts(modeladmin, request, queryset):
    count = approval.approve(list(queryset.values_list("pk", flat=True)), by=request.user)
    if count:
        modeladmin.message_user(request, ngettext("Approved %d account.", "Approved %d accounts.", count) % count)
    else:
        modeladmin.message_user(request, _("None of the selected accounts was waiting for approval."), messages.WARNING)
