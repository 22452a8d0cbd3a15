"""Announcements: the banner staff show to logged-in users on the app's pages (templates/_announcement.html)."""

from __future__ import annotations

from django.contrib import admin
from django.db.models import Count
from django.utils import timezone
from django.utils.translation import gettext_lazy

from conversations.models import Announcement


@admin.register(Announcement)
class AnnouncementAdmin(admin.ModelAdmin):
    list_display = ("message", "level", "active", "starts_at", "expires_at", "showing", "dismissed")
    list_filter = ("active", "level")
    search_fields = ("message",)
    ordering = ("-starts_at", "-id")
    fields = ("message", "level", "active", "starts_at", "expires_at")

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(dismissal_count=Count("dismissals"))

    @admin.display(description=gettext_lazy("shown now"), boolean=True)
    def showing(self, announcement):
        now = timezone.now()
        return (
            announcement.active
            and announcement.starts_at <= now
            and (announcement.expires_at is None or announcement.expires_at > now)
        )

    @admin.display(description=gettext_lazy("dismissed by"), ordering="dismissal_count")
    def dismissed(self, announcement):
        return announcement.dismissal_count
