"""KimiChat's data: conversations and their messages, attachments, the credit ledger, prices, share links."""

from __future__ import annotations

import secrets
from decimal import Decimal

from django.conf import settings
from django.core.validators import MinValueValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from conversations.services.billing.credit_format import format_credits, format_signed_credits

ZERO = Decimal("0")
CREDIT_DIGITS = {"max_digits": 18, "decimal_places": 6}  # credits: exact decimals, never floats


class ConversationQuerySet(models.QuerySet):
    def for_user(self, user) -> ConversationQuerySet:
        """Every view and consumer reads conversations through this: nobody sees another user's rows."""
        if user is None or not user.is_authenticated:
            return self.none()
        return self.filter(owner_id=user.pk)

    def for_sidebar(self, *, archived: bool = False) -> ConversationQuerySet:
        # Served by the index conv_owner_pin_updated: owner, then pinned first, newest first.
        return self.filter(archived=archived).order_by("-pinned", "-updated_at", "-id")


class Conversation(models.Model):
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="conversations")
    title = models.CharField(max_length=200, blank=True)  # from the first user message, renamable
    model = models.CharField(max_length=100)  # the model new answers use unless a send names another
    system_prompt = models.TextField(blank=True)
    # Generation settings; None means "the model's default" (and is what fixed-parameter models need).
    temperature = models.FloatField(null=True, blank=True)
    top_p = models.FloatField(null=True, blank=True)
    max_tokens = models.PositiveIntegerField(null=True, blank=True)
    json_mode = models.BooleanField(default=False)  # response_format json_object
    thinking = models.BooleanField(null=True, blank=True)  # None: the model's default
    # kimi-k3's "low" | "high" | "max"; None: the model's default, like the settings above (the API's null).
    reasoning_effort = models.CharField(max_length=8, null=True, blank=True)  # noqa: DJ001 - null is "default"
    web_search = models.BooleanField(default=False)  # answers may use the built-in $web_search (docs/tools.md)
    pinned = models.BooleanField(default=False)  # sidebar: pinned first
    archived = models.BooleanField(default=False)  # hidden from the sidebar, shown in the Archived view
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)  # bumped by every send: sidebar order
    # Where an imported conversation came from ("kimichat:<id>:<created_at>", "chatgpt:<id>"), so importing the same
    # export again skips it; empty for conversations started here.
    import_key = models.CharField(max_length=200, blank=True, default="")

    objects = ConversationQuerySet.as_manager()

    class Meta:
        indexes = [
            # Sidebar: WHERE owner = ? AND archived = ? ORDER BY pinned DESC, updated_at DESC.
            models.Index(fields=["owner", "archived", "-pinned", "-updated_at"], name="conv_owner_pin_updated"),
            # /api/conversations/ and the admin: WHERE owner = ? ORDER BY updated_at DESC.
            models.Index(fields=["owner", "-updated_at"], name="conv_owner_updated"),
        ]
        constraints = [
            # One copy of each imported conversation per user; also serves the import's "already here?" lookup.
            models.UniqueConstraint(
                fields=["owner", "import_key"], name="conv_owner_import_key_unique", condition=~Q(import_key="")
            ),
        ]

    def __str__(self) -> str:
        return self.title or f"Conversation {self.pk}"

    def touch(self) -> None:
        self.updated_at = timezone.now()
        self.save(update_fields=["updated_at"])


class MessageQuerySet(models.QuerySet):
    def for_user(self, user) -> MessageQuerySet:
        if user is None or not user.is_authenticated:
            return self.none()
        return self.filter(conversation__owner_id=user.pk)

    def current(self) -> MessageQuerySet:
        """The messages of the active branch (root to leaf): other branches and earlier versions left out."""
        return self.filter(superseded_by__isnull=True)

    def in_progress(self) -> MessageQuerySet:
        # Served by the partial index msg_in_progress.
        return self.filter(status__in=[Message.Status.PENDING, Message.Status.STREAMING])


class Message(models.Model):
    class Role(models.TextChoices):
        SYSTEM = "system", _("System")
        USER = "user", _("User")
        ASSISTANT = "assistant", _("Assistant")

    class Status(models.TextChoices):
        PENDING = "pending", _("Pending")
        STREAMING = "streaming", _("Streaming")
        COMPLETE = "complete", _("Complete")
        STOPPED = "stopped", _("Stopped")
        ERROR = "error", _("Error")
        INTERRUPTED = "interrupted", _("Interrupted")

    FINAL_STATUSES = (Status.COMPLETE, Status.STOPPED, Status.ERROR, Status.INTERRUPTED)

    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="messages")
    role = models.CharField(max_length=16, choices=Role.choices)
    content = models.TextField(blank=True)
    reasoning = models.TextField(blank=True)  # the model's reasoning_content (thinking models)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.COMPLETE)
    model = models.CharField(max_length=100, blank=True)  # the model that wrote this answer
    finish_reason = models.CharField(max_length=32, blank=True)
    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    total_tokens = models.PositiveIntegerField(default=0)
    cached_tokens = models.PositiveIntegerField(default=0)
    usage_estimated = models.BooleanField(default=False)  # usage counted locally: the upstream never reported it
    cost = models.DecimalField(default=ZERO, **CREDIT_DIGITS)  # credits charged for this answer
    error_code = models.CharField(max_length=64, blank=True)  # stable code, see docs/websocket-protocol.md
    error_message = models.TextField(blank=True)  # what the user is shown; never contains the API key
    upstream_request_id = models.CharField(max_length=128, blank=True)  # Msh-Request-Id / x-request-id
    # Set by the browser on a user message so a resend after a reconnect never creates a second one.
    client_msg_id = models.UUIDField(null=True, blank=True)
    seq = models.PositiveIntegerField(default=0)  # last delta seq folded into content (checkpoints)
    # The web searches of a tool-using answer: [{query, status, tokens, sources: [{title, url}]}] (docs/tools.md).
    searches = models.JSONField(default=list, blank=True)
    # Set on every message off the conversation's active branch (null: on it, so ``current()`` is that branch):
    # the message that took its place there (an edit's new question, a regenerate's new answer, the branch switched
    # to). Edit, regenerate and switching move it (services/history/branches.py).
    superseded_by = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="earlier_versions"
    )
    # The message this one follows in the conversation's tree (null: the first turn). Its versions are the messages
    # with the same parent; a branch is the path from the root to a leaf.
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.CASCADE, related_name="children")
    created_at = models.DateTimeField(default=timezone.now)
    # When the status became final; while a Continue runs, when it resumed (the reaper's grace counts from it).
    completed_at = models.DateTimeField(null=True, blank=True)

    objects = MessageQuerySet.as_manager()

    class Meta:
        indexes = [
            # Chat page and history: WHERE conversation = ? ORDER BY id (and keyset pages by id).
            models.Index(fields=["conversation", "id"], name="msg_conversation_id"),
            # Reaper and dashboard: the few answers still streaming.
            models.Index(fields=["status"], name="msg_in_progress", condition=Q(status__in=["pending", "streaming"])),
            # Usage charts: answers by time.
            models.Index(fields=["created_at"], name="msg_created"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["client_msg_id"], name="msg_client_msg_id_unique", condition=Q(client_msg_id__isnull=False)
            ),
        ]

    def __str__(self) -> str:
        return f"{self.role} #{self.pk} ({self.status})"

    @property
    def is_final(self) -> bool:
        return self.status in self.FINAL_STATUSES

    @property
    def cut_off(self) -> str | None:
        """Why a final answer can be continued: ``"length"`` (its output budget ended it) or ``"reasoning_only"`` (it
        thought but wrote no answer, whatever ended it); None if it cannot."""
        if self.role != self.Role.ASSISTANT or not self.is_final:
            return None
        if not self.content and self.reasoning:
            return "reasoning_only"
        return "length" if self.finish_reason == "length" else None


class CreditAccount(models.Model):
    """A user's credit balance. Changed only by ``conversations.services.billing.credits``; equals the ledger's sum."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="credit_account")
    balance = models.DecimalField(default=ZERO, **CREDIT_DIGITS)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.CheckConstraint(condition=Q(balance__gte=0), name="credit_balance_not_negative")]

    def __str__(self) -> str:
        return f"{self.user} — {format_credits(self.balance)}"


class ReservationState(models.TextChoices):
    OPEN = "open", _("Open")
    SETTLED = "settled", _("Settled")
    RELEASED = "released", _("Released")


class CreditTransaction(models.Model):
    """Append-only ledger: one row for every change of a balance."""

    State = ReservationState

    class Kind(models.TextChoices):
        SIGNUP_BONUS = "signup_bonus", _("Signup bonus")
        GRANT = "grant", _("Grant")
        CHARGE = "charge", _("Charge")
        REFUND = "refund", _("Refund")
        ADJUSTMENT = "adjustment", _("Adjustment")

    account = models.ForeignKey(CreditAccount, on_delete=models.CASCADE, related_name="transactions")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    amount = models.DecimalField(**CREDIT_DIGITS)  # signed: charges are negative
    balance_after = models.DecimalField(**CREDIT_DIGITS)
    message = models.ForeignKey(
        Message, null=True, blank=True, on_delete=models.SET_NULL, related_name="credit_transactions"
    )
    created_by = models.ForeignKey(  # the admin who granted or adjusted
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    estimated = models.BooleanField(default=False)  # charged from a token estimate, not upstream usage
    note = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    # The rows of an answer keep what it was for, so spending figures survive the deletion of its conversation.
    model = models.CharField(max_length=100, blank=True)  # the model an answer's rows were for; "" otherwise
    prompt_tokens = models.PositiveIntegerField(default=0)  # the answer's usage, on its settled reservation row
    completion_tokens = models.PositiveIntegerField(default=0)
    cached_tokens = models.PositiveIntegerField(default=0)
    # A reservation's charge row: open while its answer runs, then settled (one request) or released (no charge).
    state = models.CharField(max_length=16, choices=ReservationState.choices, blank=True)
    # On the refund or extra charge that closed a reservation: that reservation's row (the user sees one net row).
    reservation = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="closing_rows"
    )
    # The personal API key an answer of KimiChat's own API (/v1/) was paid through; null for the chat's answers.
    api_key = models.ForeignKey("ApiKey", null=True, blank=True, on_delete=models.SET_NULL, related_name="transactions")

    class Meta:
        indexes = [
            # Usage page and admin inline: WHERE account = ? ORDER BY created_at DESC.
            models.Index(fields=["account", "-created_at"], name="credit_tx_account_created"),
            # Admin dashboard: every account's answers by day.
            models.Index(fields=["created_at"], name="credit_tx_created"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {format_signed_credits(self.amount)}"


class ModelPrice(models.Model):
    """What an answer from one model costs, in credits. Prices are never negative."""

    model = models.CharField(max_length=100, unique=True)
    per_request = models.DecimalField(default=ZERO, validators=[MinValueValidator(ZERO)], **CREDIT_DIGITS)
    per_million_prompt = models.DecimalField(default=ZERO, validators=[MinValueValidator(ZERO)], **CREDIT_DIGITS)
    per_million_completion = models.DecimalField(default=ZERO, validators=[MinValueValidator(ZERO)], **CREDIT_DIGITS)
    per_million_cached = models.DecimalField(default=ZERO, validators=[MinValueValidator(ZERO)], **CREDIT_DIGITS)
    # Credits per web search; empty: the default from settings (WEB_SEARCH_FEE_USD / CREDIT_VALUE_USD).
    per_search = models.DecimalField(null=True, blank=True, validators=[MinValueValidator(ZERO)], **CREDIT_DIGITS)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(per_request__gte=0)
                & Q(per_million_prompt__gte=0)
                & Q(per_million_completion__gte=0)
                & Q(per_million_cached__gte=0),
                name="model_price_not_negative",
            ),
            models.CheckConstraint(
                condition=Q(per_search__isnull=True) | Q(per_search__gte=0), name="model_price_search_not_negative"
            ),
        ]

    def __str__(self) -> str:
        return self.model


class ProviderSnapshot(models.Model):
    """The provider account's balance and rate-limit headers as last seen, for admins."""

    balance = models.DecimalField(null=True, blank=True, **CREDIT_DIGITS)  # /users/me/balance available_balance
    credits_remaining = models.CharField(max_length=64, blank=True)  # X-Credits-Remaining
    rate_limit = models.JSONField(default=dict, blank=True)  # X-RateLimit-* headers
    source = models.CharField(max_length=32, blank=True)  # "balance_endpoint" or "headers"
    recorded_at = models.DateTimeField(default=timezone.now, db_index=True)

    def __str__(self) -> str:
        return f"provider {self.recorded_at:%Y-%m-%d %H:%M}"


def new_share_token() -> str:
    return secrets.token_urlsafe(24)


class SharedLink(models.Model):
    """A read-only link to a conversation as it was when shared; the owner can revoke it."""

    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="shared_links")
    token = models.CharField(max_length=64, unique=True, default=new_share_token)
    up_to_message_id = models.BigIntegerField()  # messages after this one are not shared
    created_at = models.DateTimeField(default=timezone.now)
    revoked_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"share {self.token[:6]}…"


class AttachmentQuerySet(models.QuerySet):
    def for_user(self, user) -> AttachmentQuerySet:
        """Every route and frame reads attachments through this: another user's id is a missing one."""
        if user is None or not user.is_authenticated:
            return self.none()
        return self.filter(owner_id=user.pk)

    def unsent(self) -> AttachmentQuerySet:
        return self.filter(message__isnull=True)


class Attachment(models.Model):
    """A document or image a user attached (or is about to attach) to a message.

    The bytes live in the ``attachments`` storage under ``storage_key``, one blob per (owner, sha256): the same file
    uploaded twice is stored once, and several rows (the same file in several messages, an edited message's copy)
    share it. A blob, and the provider's copy of a document, are deleted with the last row that uses them
    (``services/attachments/cleanup.py``). Rows exist only for files that passed every check: nothing half-stored.
    """

    class Kind(models.TextChoices):
        DOCUMENT = "document", _("Document")
        IMAGE = "image", _("Image")

    class Status(models.TextChoices):
        READY = "ready", _("Ready")

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="attachments")
    # Null until the message that carries it is sent; deleting the message deletes the attachment.
    message = models.ForeignKey(Message, null=True, blank=True, on_delete=models.CASCADE, related_name="attachments")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    name = models.CharField(max_length=255)  # the file name the user gave, for display and downloads only
    content_type = models.CharField(max_length=100)  # sniffed from the bytes, never taken from the browser
    size = models.PositiveBigIntegerField()  # bytes stored (an image after re-encoding)
    sha256 = models.CharField(max_length=64)  # of the bytes stored: the blob's identity
    storage_key = models.CharField(max_length=255)  # path in the attachments storage
    text = models.TextField(blank=True)  # a document's extracted text, as sent upstream
    tokens = models.PositiveIntegerField(default=0)  # estimated prompt tokens it adds
    width = models.PositiveIntegerField(null=True, blank=True)  # images
    height = models.PositiveIntegerField(null=True, blank=True)
    provider_file_id = models.CharField(max_length=128, blank=True)  # the provider's file (files API), if any
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.READY)
    error = models.CharField(max_length=500, blank=True)  # reserved for processing that fails after storing
    created_at = models.DateTimeField(default=timezone.now)

    objects = AttachmentQuerySet.as_manager()

    class Meta:
        ordering = ["id"]  # a message's files in the order they were attached
        indexes = [
            # Upload dedup and the per-user quota: WHERE owner = ? AND sha256 = ?.
            models.Index(fields=["owner", "sha256"], name="attachment_owner_sha"),
        ]

    def __str__(self) -> str:
        return self.name


class ApiKey(models.Model):
    """A personal key for KimiChat's own API (/v1/). Only the SHA-256 of the secret is kept: the secret is shown
    once, when the key is made (services/apikeys)."""

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=100, blank=True)
    prefix = models.CharField(max_length=16)  # the secret's first characters, shown to tell keys apart
    secret_hash = models.CharField(max_length=64, unique=True)  # sha256 hex of the whole secret
    created_at = models.DateTimeField(default=timezone.now)
    last_used_at = models.DateTimeField(null=True, blank=True)
    requests = models.PositiveIntegerField(default=0)
    credits_spent = models.DecimalField(default=ZERO, **CREDIT_DIGITS)
    expires_at = models.DateTimeField(null=True, blank=True)
    spending_cap = models.DecimalField(null=True, blank=True, validators=[MinValueValidator(ZERO)], **CREDIT_DIGITS)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["owner", "-created_at"], name="apikey_owner_created")]

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.name})" if self.name else f"{self.prefix}…"

    @property
    def active(self) -> bool:
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > timezone.now())
