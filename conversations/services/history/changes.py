"""Changing and deleting past conversations: rename, pin, archive, per-conversation settings."""

from __future__ import annotations

import math

from django.db import transaction
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from conversations.models import Conversation, Message

TITLE_MAX_CHARS = 200
MODEL_MAX_CHARS = 100
SYSTEM_PROMPT_MAX_CHARS = 20_000
MAX_TOKENS_LIMIT = 1_000_000

TOP_LEVEL_FIELDS = frozenset({"title", "pinned", "archived", "model", "system_prompt", "settings"})
SETTINGS_FIELDS = frozenset({"temperature", "top_p", "max_tokens", "json_mode", "thinking"})
# What the chat page calls each field, for messages a person reads (the settings dialog's labels).
FIELD_LABELS = {
    "pinned": gettext_lazy("Pinned"),
    "archived": gettext_lazy("Archived"),
    "settings.temperature": gettext_lazy("Temperature"),
    "settings.top_p": gettext_lazy("Top P"),
    "settings.max_tokens": gettext_lazy("Max tokens"),
    "settings.json_mode": gettext_lazy("JSON mode"),
    "settings.thinking": gettext_lazy("Thinking"),
}


class InvalidChange(ValueError):
    """A PATCH body that cannot be applied; ``field`` names the offending field (dotted for settings), for programs;
    the message is a translated sentence for the person who typed the value, naming the setting and what it accepts.
    """

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


class ConversationBusy(Exception):
    """An answer is still being written in the conversation."""


def _bool(field: str, value) -> bool:
    if not isinstance(value, bool):
        raise InvalidChange(field, _("%(setting)s must be true or false.") % {"setting": FIELD_LABELS[field]})
    return value


def _unit_interval(field: str, value) -> float | None:
    if value is None:
        return None
    label = FIELD_LABELS[field]
    # bool is an int in Python; `true` is not a temperature.
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidChange(
            field, _("%(setting)s must be a number from 0 to 1, or empty for the default.") % {"setting": label}
        )
    if not 0 <= value <= 1:
        raise InvalidChange(
            field,
            _("%(setting)s must be from 0 to 1; %(value)s is outside that range.") % {"setting": label, "value": value},
        )
    return float(value)


def _settings_changes(settings) -> dict:
    if not isinstance(settings, dict):
        raise InvalidChange("settings", _("The settings must be a JSON object."))
    unknown = sorted(set(settings) - SETTINGS_FIELDS)
    if unknown:
        raise InvalidChange(f"settings.{unknown[0]}", _("Unknown settings: %(names)s.") % {"names": ", ".join(unknown)})
    changes = {}
    for name in ("temperature", "top_p"):
        if name in settings:
            changes[name] = _unit_interval(f"settings.{name}", settings[name])
    if "max_tokens" in settings:
        value = settings["max_tokens"]
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise InvalidChange(
                "settings.max_tokens",
                _("%(setting)s must be a whole number, or empty for the default.")
                % {"setting": FIELD_LABELS["settings.max_tokens"]},
            )
        if value is not None and not 1 <= value <= MAX_TOKENS_LIMIT:
            raise InvalidChange(
                "settings.max_tokens",
                _("%(setting)s must be from 1 to %(maximum)s; %(value)s is outside that range.")
                % {"setting": FIELD_LABELS["settings.max_tokens"], "maximum": f"{MAX_TOKENS_LIMIT:,}", "value": value},
            )
        changes["max_tokens"] = value
    if "json_mode" in settings:
        changes["json_mode"] = _bool("settings.json_mode", settings["json_mode"])
    if "thinking" in settings:
        value = settings["thinking"]
        changes["thinking"] = None if value is None else _bool("settings.thinking", value)
    return changes


def check_changes(body) -> dict:
    """Validate a PATCH body; returns model field → new value. Raises ``InvalidChange`` on the first problem."""
    if not isinstance(body, dict):
        raise InvalidChange("", _("The request body must be a JSON object."))
    unknown = sorted(set(body) - TOP_LEVEL_FIELDS)
    if unknown:
        raise InvalidChange(unknown[0], _("Unknown fields: %(names)s.") % {"names": ", ".join(unknown)})
    changes = {}
    if "title" in body:
        title = body["title"]
        if not isinstance(title, str) or not 1 <= len(title.strip()) <= TITLE_MAX_CHARS:
            raise InvalidChange(
                "title",
                _("The title must have 1 to %(maximum)d characters (spaces at either end do not count).")
                % {"maximum": TITLE_MAX_CHARS},
            )
        changes["title"] = title.strip()
    for name in ("pinned", "archived"):
        if name in body:
            changes[name] = _bool(name, body[name])
    if "model" in body:
        model = body["model"]
        if not isinstance(model, str) or not 1 <= len(model.strip()) <= MODEL_MAX_CHARS:
            raise InvalidChange(
                "model", _("The model name must have 1 to %(maximum)d characters.") % {"maximum": MODEL_MAX_CHARS}
            )
        changes["model"] = model.strip()
    if "system_prompt" in body:
        prompt = body["system_prompt"]
        if not isinstance(prompt, str) or len(prompt) > SYSTEM_PROMPT_MAX_CHARS:
            raise InvalidChange(
                "system_prompt",
                _("The system prompt must be text of at most %(maximum)s characters.")
                % {"maximum": f"{SYSTEM_PROMPT_MAX_CHARS:,}"},
            )
        changes["system_prompt"] = prompt
    if "settings" in body:
        changes.update(_settings_changes(body["settings"]))
    return changes


def update_conversation(conversation: Conversation, body) -> Conversation:
    """Apply a validated PATCH. Only the named fields are written: renaming or pinning never reorders by recency."""
    changes = check_changes(body)
    for name, value in changes.items():
        setattr(conversation, name, value)
    if changes:
        conversation.save(update_fields=sorted(changes))
    return conversation


@transaction.atomic
def delete_conversation(conversation: Conversation) -> None:
    """Delete it with its messages and share links; refused while an answer is streaming into it.

    The row lock makes the check and the delete one step against anything else that locks the conversation before
    writing to it. Credit ledger rows stay (their message link becomes null): the history of charges is kept.
    """
    locked = Conversation.objects.select_for_update().get(pk=conversation.pk)
    if Message.objects.filter(conversation=locked, role=Message.Role.ASSISTANT).in_progress().exists():
        raise ConversationBusy
    locked.delete()
