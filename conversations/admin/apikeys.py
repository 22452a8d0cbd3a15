"""Personal API keys (/v1/): staff see every key (never its secret: only its hash is stored) and revoke any."""

from __future__ import annotations

from django.contrib import admin, messages
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from conversations.models import ApiKey
from conversations.services.apikeys import keys


@admin.action(description=_("Revoke the selected keys"), permissions=["change"])
def revoke_keys(modeladmin, request, queryset):
    revoked = 0
    for key in queryset.filter(revoked_at__isnull=True):
        keys.revoke(key)
        revoked += 1
    modeladmin.message_user(
        request, ngettext("%(n)d key revoked.", "%(n)d keys revoked.", revoked) % {"n": revoked}, messages.SUCCESS
    )


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = (
        "prefix",
        "name",
        "owner",
        "created_at",
        "last_used_at",
        "requests",
        "credits_spent",
        "spending_cap",
        "expires_at",
        "revoked_at",
    )
    list_select_related = ("owner",)
    list_filter = ("revoked_at", "created_at")
    search_fields = ("owner__username", "name", "prefix")
    ordering = ("-created_at", "-id")
    actions = [revoke_keys]
    fields = (
        "owner",
        "name",
        "prefix",
        "created_at",
        "last_used_at",
        "requests",
        "credits_spent",
        "spending_cap",
        "expires_at",
        "revoked_at",
    )
    readonly_fields = ("owner", "prefix", "created_at", "last_used_at", "requests", "credits_spent", "revoked_at")

    def has_add_permission(self, request):
        return False  # a key's secret is shown once to its owner: made on /keys/ or with manage.py createapikey
