"""Feedback on answers (thumbs up/down and a note): what users wrote about answers is content, so reading it needs the
permission that guards message contents (``view_message``), as the conversations' admin does."""

from __future__ import annotations

from django.contrib import admin
from django.template.defaultfilters import truncatechars
from django.urls import reverse
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _

from conversations.admin.common import ReadOnlyAdminMixin, export_csv
from conversations.models import Feedback

CONTENT_PERMISSION = "conversations.view_message"


@admin.register(Feedback)
class FeedbackAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("created_at", "rating_display", "model", "note_preview", "answer", "user")
    list_filter = ("model", "rating", "created_at")
    search_fields = ("note", "message__conversation__owner__username")
    list_select_related = ("message__conversation__owner",)
    ordering = ("-created_at", "-id")
    fields = ("rating", "note", "model", "answer", "user", "created_at", "updated_at")
    readonly_fields = fields
    actions = [export_csv]
    csv_columns = [
        ("id", lambda f: f.pk),
        ("created_at", lambda f: f.created_at.isoformat()),
        ("rating", lambda f: "up" if f.rating == Feedback.Rating.UP else "down"),
        ("model", lambda f: f.model),
        ("note", lambda f: f.note),
        ("message_id", lambda f: f.message_id),
    ]

    def has_view_permission(self, request, obj=None):
        return request.user.has_perm(CONTENT_PERMISSION)

    def has_module_permission(self, request):
        return request.user.is_active and request.user.is_staff and request.user.has_perm(CONTENT_PERMISSION)

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description=_("rating"), ordering="rating")
    def rating_display(self, feedback: Feedback):
        return feedback.get_rating_display()

    @admin.display(description=_("note"))
    def note_preview(self, feedback: Feedback):
        return truncatechars(feedback.note, 120) or "—"

    @admin.display(description=_("answer"))
    def answer(self, feedback: Feedback):
        url = reverse("admin:conversations_message_change", args=[feedback.message_id])
        return format_html('<a href="{}">#{}</a>', url, feedback.message_id)

    @admin.display(description=_("user"), ordering="message__conversation__owner__username")
    def user(self, feedback: Feedback):
        return feedback.message.conversation.owner.get_username()
