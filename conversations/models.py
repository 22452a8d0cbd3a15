"""KimiChat's data: conversations and their messages, attachments, the credit ledger, prices, share links."""

from __future__ import annotations

import secrets
from decimal import Decimal

from django.conf import settings
from django.core.validators import MinValueValidator
from django.db import models
from django.db.models import F, Q
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

    def in_history(self) -> ConversationQuerySet:
        """What history shows (sidebar, /api/conversations/, search, exports, shares): never a temporary chat."""
        return self.filter(temporary=False)

    def for_sidebar(self, *, archived: bool = False) -> ConversationQuerySet:
        # Served by the index conv_owner_pin_updated: owner, then pinned first, newest first.
        return self.in_history().filter(archived=archived).order_by("-pinned", "-updated_at", "-id")


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
    # The project the chat is filed under (docs/projects.md); deleting a project "without its chats" sets this null.
    project = models.ForeignKey(
        "Project", null=True, blank=True, on_delete=models.SET_NULL, related_name="conversations"
    )
    # A temporary chat is kept out of every history read (``in_history``) and deleted once no tab has shown it for
    # TEMPORARY_CHAT_GRACE seconds (services/history/temporary.py); its charges stay on the ledger, without content.
    temporary = models.BooleanField(default=False)
    # The last time a socket was seen following this temporary chat (refreshed by its worker's heartbeat); null for
    # chats kept in history.
    temporary_seen_at = models.DateTimeField(null=True, blank=True)
    # Where the title came from: "" the first message (a generated title may replace it), "generated" the model
    # (services/personal/titles.py), "user" renamed (never replaced by a generated one).
    title_source = models.CharField(max_length=16, blank=True, default="")
    # The user's custom instructions (UserPreferences) go with this chat's system prompt; switched per chat.
    custom_instructions = models.BooleanField(default=True)

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
    # How long the model thought before it started writing the answer ("Thought for 12 s"); null: it did not think,
    # or the answer was stored before this was measured.
    reasoning_ms = models.PositiveIntegerField(null=True, blank=True)

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
        INVITE_REWARD = "invite_reward", _("Invite reward")  # to an inviter when someone signs up with their code
        REFILL = "refill", _("Refill")  # a scheduled grant (RefillSchedule, services/billing/refills.py)
        TITLE = "title", _("Title")  # the reservation of a chat title's request (services/personal/titles.py)

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
        return self.filter(message__isnull=True, project__isnull=True)


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
    # A project's file (never also a message's): sent with every chat of the project; goes with the project.
    project = models.ForeignKey("Project", null=True, blank=True, on_delete=models.CASCADE, related_name="files")
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


# --- Sign-up: who may join (services/accounts/signup_modes.py, docs/admin.md) -----------------------------------


class SignupMode(models.TextChoices):
    OPEN = "open", _("Open: anyone can sign up")
    INVITE = "invite", _("Invite only: sign-up needs an invite code")
    APPROVAL = "approval", _("Approval: new accounts wait for a staff member")
    CLOSED = "closed", _("Closed: nobody can sign up")


class SignupSettings(models.Model):
    """The one row (pk 1) of the sign-up settings staff change at run time. Every empty field means "the
    environment's value" (SIGNUP_MODE, SIGNUP_CREDITS, INVITE_REWARD_CREDITS)."""

    mode = models.CharField(
        _("sign-up mode"),
        max_length=16,
        choices=SignupMode.choices,
        blank=True,
        help_text=_("Empty: the SIGNUP_MODE environment variable decides."),
    )
    credits_open = models.DecimalField(
        _("credits for a new account (open)"),
        null=True,
        blank=True,
        validators=[MinValueValidator(ZERO)],
        help_text=_("Empty: SIGNUP_CREDITS."),
        **CREDIT_DIGITS,
    )
    credits_invite = models.DecimalField(
        _("credits for a new account (invite only)"),
        null=True,
        blank=True,
        validators=[MinValueValidator(ZERO)],
        help_text=_("Empty: SIGNUP_CREDITS."),
        **CREDIT_DIGITS,
    )
    credits_approval = models.DecimalField(
        _("credits for a new account (approval)"),
        null=True,
        blank=True,
        validators=[MinValueValidator(ZERO)],
        help_text=_("Granted when staff approve the account. Empty: SIGNUP_CREDITS."),
        **CREDIT_DIGITS,
    )
    invite_reward = models.DecimalField(
        _("invite reward (credits to the inviter per sign-up)"),
        null=True,
        blank=True,
        validators=[MinValueValidator(ZERO)],
        help_text=_("Empty: INVITE_REWARD_CREDITS."),
        **CREDIT_DIGITS,
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = _("sign-up settings")
        verbose_name_plural = _("sign-up settings")

    def __str__(self) -> str:
        return str(_("Sign-up settings"))


class InviteCode(models.Model):
    """A code that lets people sign up while sign-up is invite-only; made by staff (admin) or a user (invites
    page). ``uses`` only grows, under a row lock, and never passes ``max_uses`` (the check constraint too)."""

    code = models.CharField(max_length=32, unique=True)  # what people type: random, case-insensitive letters
    inviter = models.ForeignKey(  # who is rewarded for each sign-up; null: a staff code that rewards nobody
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE, related_name="invite_codes"
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    note = models.CharField(max_length=200, blank=True)  # e.g. who it was given to
    max_uses = models.PositiveIntegerField(default=1, validators=[MinValueValidator(1)])
    uses = models.PositiveIntegerField(default=0)
    expires_at = models.DateTimeField(null=True, blank=True)  # null: never
    revoked_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.CheckConstraint(condition=Q(uses__lte=F("max_uses")), name="invite_uses_within_max")]
        indexes = [
            # The invites page: WHERE inviter = ? ORDER BY created_at DESC.
            models.Index(fields=["inviter", "-created_at"], name="invite_inviter_created"),
        ]

    def __str__(self) -> str:
        return self.code

    @staticmethod
    def new_code() -> str:
        # 12 letters and digits without look-alikes (0/O, 1/I/L): about 60 bits, easy to read aloud.
        alphabet = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
        return "".join(secrets.choice(alphabet) for _ in range(12))

    @property
    def expired(self) -> bool:
        return self.expires_at is not None and self.expires_at <= timezone.now()

    @property
    def usable(self) -> bool:
        return self.revoked_at is None and not self.expired and self.uses < self.max_uses


class AccountSignup(models.Model):
    """How an account was made by the sign-up page: its mode, the invite code, and — in approval mode — whether it
    still waits for staff. Accounts without a row (createsuperuser, the admin, before this existed) need no
    approval."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="signup")
    mode = models.CharField(max_length=16, choices=SignupMode.choices)
    invite = models.ForeignKey(InviteCode, null=True, blank=True, on_delete=models.SET_NULL, related_name="signups")
    awaiting_approval = models.BooleanField(default=False)  # true: may log in, may not chat nor use /v1/
    approved_at = models.DateTimeField(null=True, blank=True)
    approved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [
            # The users admin's "waiting for approval" filter.
            models.Index(fields=["awaiting_approval"], name="signup_awaiting", condition=Q(awaiting_approval=True)),
        ]

    def __str__(self) -> str:
        return f"{self.user} ({self.mode})"


# --- budgets and model access (services/billing/budgets.py, services/accounts/model_access.py) ------------------


class UserBudget(models.Model):
    """A user's spending caps in credits, per day and per month of settings.TIME_ZONE. Empty: no cap.

    Staff set the caps; the user may set their own below them (never above: the lower of the two applies)."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="budget")
    daily_cap = models.DecimalField(  # set by staff in the admin
        _("daily cap (staff)"), null=True, blank=True, validators=[MinValueValidator(ZERO)], **CREDIT_DIGITS
    )
    monthly_cap = models.DecimalField(
        _("monthly cap (staff)"), null=True, blank=True, validators=[MinValueValidator(ZERO)], **CREDIT_DIGITS
    )
    own_daily_cap = models.DecimalField(  # set by the user on the usage page or PUT /api/me/budget/
        _("daily cap (the user's own)"), null=True, blank=True, validators=[MinValueValidator(ZERO)], **CREDIT_DIGITS
    )
    own_monthly_cap = models.DecimalField(
        _("monthly cap (the user's own)"), null=True, blank=True, validators=[MinValueValidator(ZERO)], **CREDIT_DIGITS
    )
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name = _("spending caps")
        verbose_name_plural = _("spending caps")
        constraints = [
            models.CheckConstraint(
                condition=(Q(daily_cap__isnull=True) | Q(daily_cap__gte=0))
                & (Q(monthly_cap__isnull=True) | Q(monthly_cap__gte=0))
                & (Q(own_daily_cap__isnull=True) | Q(own_daily_cap__gte=0))
                & (Q(own_monthly_cap__isnull=True) | Q(own_monthly_cap__gte=0)),
                name="user_budget_not_negative",
            ),
        ]

    def __str__(self) -> str:
        return str(self.user)


class GroupPolicy(models.Model):
    """What a Django group's members share: a monthly budget in credits (every member's spending counts), a monthly
    cap per member, and the models they may use (empty: every model). A user in several groups is held to each
    group's budgets and may use the union of their model lists (services/accounts/model_access.py)."""

    group = models.OneToOneField("auth.Group", on_delete=models.CASCADE, related_name="policy")
    monthly_budget = models.DecimalField(
        _("shared monthly budget"), null=True, blank=True, validators=[MinValueValidator(ZERO)], **CREDIT_DIGITS
    )
    member_monthly_cap = models.DecimalField(
        _("monthly cap per member"), null=True, blank=True, validators=[MinValueValidator(ZERO)], **CREDIT_DIGITS
    )
    allowed_models = models.JSONField(_("allowed models"), default=list, blank=True)  # model ids; [] = all

    class Meta:
        verbose_name = _("budget and models")
        verbose_name_plural = _("budget and models")
        constraints = [
            models.CheckConstraint(
                condition=(Q(monthly_budget__isnull=True) | Q(monthly_budget__gte=0))
                & (Q(member_monthly_cap__isnull=True) | Q(member_monthly_cap__gte=0)),
                name="group_policy_not_negative",
            ),
        ]

    def __str__(self) -> str:
        return str(self.group)


# --- refills and announcements (services/billing/refills.py, admin: reports, announcements) ---------------------------


class RefillSchedule(models.Model):
    """A grant that repeats every day, week or month, for one user or for every active member of a group
    (services/billing/refills.py; run by ``manage.py refillcredits`` and by one worker)."""

    class Period(models.TextChoices):
        DAILY = "daily", _("Every day")
        WEEKLY = "weekly", _("Every week (from Monday)")
        MONTHLY = "monthly", _("Every month (from the 1st)")

    class Mode(models.TextChoices):
        UP_TO = "up_to", _("Top up to a level")  # never lowers a balance that is already above it
        BY_AMOUNT = "by_amount", _("Add an amount")

    name = models.CharField(_("name"), max_length=100)
    period = models.CharField(_("period"), max_length=16, choices=Period.choices, default=Period.MONTHLY)
    mode = models.CharField(_("mode"), max_length=16, choices=Mode.choices, default=Mode.UP_TO)
    # The level to top up to, or the amount to add; always more than 0 (a negative refill would be a charge).
    amount = models.DecimalField(_("credits"), validators=[MinValueValidator(Decimal("0.000001"))], **CREDIT_DIGITS)
    user = models.ForeignKey(  # exactly one of user and group
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE, related_name="refill_schedules"
    )
    group = models.ForeignKey(
        "auth.Group", null=True, blank=True, on_delete=models.CASCADE, related_name="refill_schedules"
    )
    active = models.BooleanField(_("active"), default=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(amount__gt=0), name="refill_amount_positive"),
            models.CheckConstraint(
                condition=Q(user__isnull=False, group__isnull=True) | Q(user__isnull=True, group__isnull=False),
                name="refill_user_xor_group",
            ),
        ]

    def __str__(self) -> str:
        return self.name


class RefillGrant(models.Model):
    """One run of a schedule for one user in one period: the unique constraint is what makes a refill happen once
    per period, however many runs (or workers) try at once. ``amount`` 0: the balance was already at the level."""

    schedule = models.ForeignKey(RefillSchedule, on_delete=models.CASCADE, related_name="grants")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="refill_grants")
    period = models.CharField(max_length=16)  # "2026-11" (monthly), "2026-W48" (weekly), "2026-11-30" (daily)
    amount = models.DecimalField(default=ZERO, **CREDIT_DIGITS)  # what was added (0: nothing was missing)
    transaction = models.OneToOneField(  # the ledger row of kind "refill"; null when nothing was added
        CreditTransaction, null=True, blank=True, on_delete=models.SET_NULL, related_name="refill_grant"
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["schedule", "user", "period"], name="refill_grant_once_per_period"),
        ]

    def __str__(self) -> str:
        return f"{self.schedule} {self.period} → {self.user}"


class AnnouncementQuerySet(models.QuerySet):
    def current(self, now=None) -> AnnouncementQuerySet:
        now = now or timezone.now()
        return self.filter(active=True, starts_at__lte=now).filter(Q(expires_at__isnull=True) | Q(expires_at__gt=now))

    def for_user(self, user) -> AnnouncementQuerySet:
        """What ``user`` should see now: current, not dismissed by them, newest first."""
        if user is None or not user.is_authenticated:
            return self.none()
        return self.current().exclude(dismissals__user_id=user.pk).order_by("-starts_at", "-id")


class Announcement(models.Model):
    """A banner staff show to every logged-in user on the app's pages, until it expires or they dismiss it."""

    class Level(models.TextChoices):
        INFO = "info", _("Information")
        WARNING = "warning", _("Warning")
        CRITICAL = "critical", _("Critical")

    message = models.TextField(_("message"), max_length=1000)  # plain text: shown escaped, never as HTML
    level = models.CharField(_("level"), max_length=16, choices=Level.choices, default=Level.INFO)
    active = models.BooleanField(_("active"), default=True)
    starts_at = models.DateTimeField(_("shown from"), default=timezone.now)
    expires_at = models.DateTimeField(_("expires at"), null=True, blank=True)  # empty: until turned off
    created_at = models.DateTimeField(default=timezone.now)

    objects = AnnouncementQuerySet.as_manager()

    def __str__(self) -> str:
        return self.message[:60]

    def clean(self) -> None:
        from django.core.exceptions import ValidationError

        if self.expires_at and self.starts_at and self.expires_at <= self.starts_at:
            raise ValidationError({"expires_at": _("The expiry must come after the start.")})


class AnnouncementDismissal(models.Model):
    """A user closed an announcement: it is not shown to them again, on any device."""

    announcement = models.ForeignKey(Announcement, on_delete=models.CASCADE, related_name="dismissals")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    dismissed_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["announcement", "user"], name="announcement_dismissed_once"),
        ]

    def __str__(self) -> str:
        return f"{self.user} dismissed {self.announcement_id}"


class ProjectQuerySet(models.QuerySet):
    def for_user(self, user) -> ProjectQuerySet:
        """Every route reads projects through this: another user's project is a missing one."""
        if user is None or not user.is_authenticated:
            return self.none()
        return self.filter(owner_id=user.pk)

    def for_sidebar(self) -> ProjectQuerySet:
        return self.order_by("position", "id")


class Project(models.Model):
    """A user's folder of chats, with its own instructions and files sent with each of its chats (docs/projects.md)."""

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="projects")
    name = models.CharField(max_length=100)
    color = models.CharField(max_length=7, blank=True)  # "#rrggbb", or empty for the default
    emoji = models.CharField(max_length=16, blank=True)  # one emoji (a grapheme may take several code points)
    # Added to the system prompt of every chat of the project, before the chat's own (services/projects/context.py).
    instructions = models.TextField(blank=True)
    position = models.PositiveIntegerField(default=0)  # sidebar order, the user's own (reorder)
    archived = models.BooleanField(default=False)  # hidden from the sidebar's list, shown in the Archived view
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)
    # Where an imported project came from ("kimichat:<id>:<created_at>"): importing the same export again reuses it.
    import_key = models.CharField(max_length=200, blank=True, default="")

    objects = ProjectQuerySet.as_manager()

    class Meta:
        # Sidebar: WHERE owner = ? ORDER BY position, id.
        indexes = [models.Index(fields=["owner", "position", "id"], name="project_owner_position")]
        constraints = [
            models.UniqueConstraint(
                fields=["owner", "import_key"], name="project_owner_import_key_unique", condition=~Q(import_key="")
            ),
        ]

    def __str__(self) -> str:
        return self.name


# --- personalisation (services/personal/) -------------------------------------------------------------------------


class UserPreferences(models.Model):
    """What a user sets once for every chat: custom instructions and how the page looks."""

    class Theme(models.TextChoices):
        SYSTEM = "system", _("System")
        LIGHT = "light", _("Light")
        DARK = "dark", _("Dark")

    class Width(models.TextChoices):
        NORMAL = "normal", _("Normal")
        WIDE = "wide", _("Wide")
        FULL = "full", _("Full width")

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="preferences")
    about = models.TextField(blank=True)  # custom instructions: who the user is
    answer_style = models.TextField(blank=True)  # custom instructions: how to answer
    theme = models.CharField(max_length=8, choices=Theme.choices, default=Theme.SYSTEM)  # set on <html> server-side
    chat_width = models.CharField(max_length=8, choices=Width.choices, default=Width.NORMAL)
    updated_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"preferences of {self.user}"


class PresetQuerySet(models.QuerySet):
    def for_user(self, user) -> PresetQuerySet:
        if user is None or not user.is_authenticated:
            return self.none()
        return self.filter(owner_id=user.pk)


class Preset(models.Model):
    """A model, its settings and a system prompt a user saved, to start a chat with."""

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="presets")
    name = models.CharField(max_length=100)
    model = models.CharField(max_length=100, blank=True)  # "" : the default model
    system_prompt = models.TextField(blank=True)
    # The conversation settings (temperature, top_p, max_tokens, json_mode, thinking, reasoning_effort, web_search),
    # validated as PATCH /api/conversations/<id>/ validates them.
    settings = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    objects = PresetQuerySet.as_manager()

    class Meta:
        ordering = ["name", "id"]
        constraints = [models.UniqueConstraint(fields=["owner", "name"], name="preset_owner_name_unique")]

    def __str__(self) -> str:
        return self.name


class FeedbackQuerySet(models.QuerySet):
    def for_user(self, user) -> FeedbackQuerySet:
        if user is None or not user.is_authenticated:
            return self.none()
        return self.filter(message__conversation__owner_id=user.pk)


class Feedback(models.Model):
    """A thumbs up or down on an answer, with an optional note: one per answer (the latest rating wins)."""

    class Rating(models.IntegerChoices):
        DOWN = -1, _("Thumbs down")
        UP = 1, _("Thumbs up")

    message = models.OneToOneField(Message, on_delete=models.CASCADE, related_name="feedback")
    rating = models.SmallIntegerField(choices=Rating.choices)
    note = models.TextField(blank=True, max_length=2000)
    model = models.CharField(max_length=100, blank=True)  # the answer's model, copied: admin filter and dashboard
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    objects = FeedbackQuerySet.as_manager()

    class Meta:
        verbose_name = _("feedback")
        verbose_name_plural = _("feedback")
        indexes = [
            # Admin list and dashboard: newest first, per model and rating.
            models.Index(fields=["model", "rating"], name="feedback_model_rating"),
            models.Index(fields=["-created_at"], name="feedback_created"),
        ]

    def __str__(self) -> str:
        return f"{self.get_rating_display()} on message {self.message_id}"
