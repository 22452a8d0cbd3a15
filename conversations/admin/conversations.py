"""Conversations and messages, behind the content-privacy permissions."""

from __future__ import annotations

from django.contrib import admin
from django.db.models import Count, Exists, OuterRef, Sum
from django.template.defaultfilters import linebreaksbr, truncatechars
from django.utils.translation import gettext_lazy as _

from conversations.admin.common import ContentPrivacyMixin, export_csv, subquery_total
from conversations.models import (
    Conversation,
    Message,
)
from conversations.services.billing.credit_format import format_credits


class MessageStatusFilter(admin.SimpleListFilter):
    title = _("message status")
    parameter_name = "has"
    STATUSES = {
        "error": (_("has errors"), [Message.Status.ERROR]),
        "streaming": (_("has an answer in progress"), [Message.Status.PENDING, Message.Status.STREAMING]),
        "stopped": (_("has stopped answers"), [Message.Status.STOPPED]),
        "interrupted": (_("has interrupted answers"), [Message.Status.INTERRUPTED]),
    }

    def lookups(self, request, model_admin):
        return [(key, label) for key, (label, _statuses) in self.STATUSES.items()]

    def queryset(self, request, queryset):
        if self.value() not in self.STATUSES:
            return queryset
        statuses = self.STATUSES[self.value()][1]
        # EXISTS rather than a join: one row per conversation, and the annotations stay per-conversation.
        return queryset.filter(Exists(Message.objects.filter(conversation=OuterRef("pk"), status__in=statuses)))


class MessageInline(ContentPrivacyMixin, admin.TabularInline):
    """The conversation's messages in order, read-only; the inline itself needs view_message."""

    model = Message
    fk_name = "conversation"
    extra = 0
    max_num = 0
    can_delete = False
    show_change_link = True
    fields = ("role", "status_display", "content_preview", "model", "usage", "error", "created_at")
    readonly_fields = fields
    ordering = ("id",)

    class Media:
        css = {"all": ["css/admin-dashboard.css"]}  # gives the content column its width

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description=_("status"))
    def status_display(self, message: Message):
        if message.superseded_by_id:
            return _("%(status)s, replaced by #%(id)s") % {
                "status": message.get_status_display(),
                "id": message.superseded_by_id,
            }
        return message.get_status_display()

    @admin.display(description=_("content"))
    def content_preview(self, message: Message):
        return linebreaksbr(truncatechars(message.content, 300), autoescape=True)

    @admin.display(description=_("usage"))
    def usage(self, message: Message):
        if not message.total_tokens and not message.cost:
            return "—"
        estimated = _(" (estimated)") if message.usage_estimated else ""
        return _("%(prompt)s + %(completion)s = %(total)s tokens%(estimated)s; %(cost)s credits") % {
            "prompt": message.prompt_tokens,
            "completion": message.completion_tokens,
            "total": message.total_tokens,
            "estimated": estimated,
            "cost": format_credits(message.cost),
        }

    @admin.display(description=_("error"))
    def error(self, message: Message):
        if not message.error_code and not message.error_message:
            return "—"
        return f"{message.error_code}: {message.error_message}".strip(": ")


@admin.register(Conversation)
class ConversationAdmin(ContentPrivacyMixin, admin.ModelAdmin):
    list_display = ("id", "title_display", "owner", "model", "message_count", "tokens", "updated_at")
    list_display_links = ("id", "title_display")
    list_select_related = ("owner",)
    list_filter = ("model", MessageStatusFilter, "archived", "updated_at")
    search_fields = ("title", "owner__username", "messages__content")
    date_hierarchy = "updated_at"
    ordering = ("-updated_at", "-id")
    inlines = [MessageInline]
    actions = [export_csv]
    readonly_fields = ("message_count", "tokens")
    fields = (
        "owner",
        "title",
        "model",
        "system_prompt",
        ("temperature", "top_p", "max_tokens"),
        ("json_mode", "thinking"),
        ("pinned", "archived"),
        ("created_at", "updated_at"),
        ("message_count", "tokens"),
    )
    csv_columns = [
        ("id", lambda c: c.pk),
        ("owner", lambda c: c.owner.username),
        ("title", lambda c: c.title),
        ("model", lambda c: c.model),
        ("messages", lambda c: c.message_count),
        ("tokens", lambda c: c.tokens),
        ("archived", lambda c: c.archived),
        ("created_at", lambda c: c.created_at),
        ("updated_at", lambda c: c.updated_at),
    ]

    def get_search_fields(self, request):
        # Searching message contents reveals them (a search per guessed word spells out a password): only for
        # those who may read messages.
        fields = super().get_search_fields(request)
        if request.user.has_perm("conversations.view_message"):
            return fields
        return tuple(f for f in fields if not f.startswith("messages__"))

    def get_queryset(self, request):
        of_row = Message.objects.filter(conversation=OuterRef("pk"))
        return (
            super()
            .get_queryset(request)
            .annotate(
                message_count=subquery_total(of_row, Count("id"), group_by="conversation"),
                tokens=subquery_total(of_row, Sum("total_tokens"), group_by="conversation"),
            )
        )

    def has_delete_permission(self, request, obj=None):
        # Deleting is moderation: it needs the delete permission and the right to read what is deleted.
        return super().has_delete_permission(request, obj) and self.has_view_permission(request, obj)

    def get_deleted_objects(self, objs, request):
        # The messages go with their conversation, although the message admin itself never deletes one.
        deleted, counts, perms_needed, protected = super().get_deleted_objects(objs, request)
        perms_needed.discard(Message._meta.verbose_name)
        return deleted, counts, perms_needed, protected

    @admin.display(description=_("title"), ordering="title")
    def title_display(self, conversation):
        return str(conversation)

    @admin.display(description=_("messages"), ordering="message_count")
    def message_count(self, conversation):
        return conversation.message_count

    @admin.display(description=_("tokens"), ordering="tokens")
    def tokens(self, conversation):
        return conversation.tokens


@admin.register(Message)
class MessageAdmin(ContentPrivacyMixin, admin.ModelAdmin):
    list_display = (
        "id",
        "conversation",
        "owner",
        "role",
        "status",
        "model",
        "total_tokens",
        "cost",
        "error_code",
        "created_at",
    )
    list_select_related = ("conversation__owner",)
    list_filter = ("status", "role", "model", "error_code", "usage_estimated", "created_at")
    search_fields = ("content", "conversation__title", "conversation__owner__username", "upstream_request_id")
    date_hierarchy = "created_at"
    ordering = ("-created_at", "-id")
    actions = [export_csv]
    csv_columns = [
        ("id", lambda m: m.pk),
        ("created_at", lambda m: m.created_at),
        ("owner", lambda m: m.conversation.owner.username),
        ("conversation_id", lambda m: m.conversation_id),
        ("role", lambda m: m.role),
        ("status", lambda m: m.status),
        ("model", lambda m: m.model),
        ("prompt_tokens", lambda m: m.prompt_tokens),
        ("completion_tokens", lambda m: m.completion_tokens),
        ("total_tokens", lambda m: m.total_tokens),
        ("cached_tokens", lambda m: m.cached_tokens),
        ("usage_estimated", lambda m: m.usage_estimated),
        ("cost", lambda m: m.cost),
        ("finish_reason", lambda m: m.finish_reason),
        ("error_code", lambda m: m.error_code),
        ("upstream_request_id", lambda m: m.upstream_request_id),
        ("content", lambda m: m.content),
    ]

    def has_delete_permission(self, request, obj=None):
        return False  # messages go with their conversation

    @admin.display(description=_("owner"), ordering="conversation__owner__username")
    def owner(self, message):
        return message.conversation.owner


# --- The ledger, prices, provider snapshots --------------------------------------------------------------------
