"""Changing and deleting past conversations: rename, pin, archive, per-conversation settings."""

from __future__ import annotations

import math

from django.conf import settings as django_settings
from django.db import transaction
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from conversations.kimi.configured import get_client
from conversations.kimi.errors import InvalidParameter
from conversations.kimi.params import REASONING_EFFORTS, ChatRequest, resolve_params
from conversations.models import Conversation, Message
from conversations.services.accounts import model_access
from conversations.services.chat.tools import web_search_refusal
from conversations.services.projects.membership import owned_project_id
from conversations.services.text import NulCharacter, refuse_nul

TITLE_MAX_CHARS = 200
MODEL_MAX_CHARS = 100
SYSTEM_PROMPT_MAX_CHARS = 20_000
MAX_TOKENS_LIMIT = 1_000_000

TOP_LEVEL_FIELDS = frozenset(
    {"title", "pinned", "archived", "model", "system_prompt", "settings", "custom_instructions", "project"}
)
SETTINGS_FIELDS = frozenset(
    {"temperature", "top_p", "max_tokens", "json_mode", "thinking", "reasoning_effort", "web_search"}
)
# What the chat page calls each field, for messages a person reads (the settings dialog's labels).
FIELD_LABELS = {
    "pinned": gettext_lazy("Pinned"),
    "archived": gettext_lazy("Archived"),
    "custom_instructions": gettext_lazy("Custom instructions"),
    "settings.temperature": gettext_lazy("Temperature"),
    "settings.top_p": gettext_lazy("Top P"),
    "settings.max_tokens": gettext_lazy("Max tokens"),
    "settings.json_mode": gettext_lazy("JSON mode"),
    "settings.thinking": gettext_lazy("Thinking"),
    "settings.reasoning_effort": gettext_lazy("Reasoning effort"),
    "settings.web_search": gettext_lazy("Web search"),
}


class InvalidChange(ValueError):
    """A PATCH body that cannot be applied; ``field`` names the offending field (dotted for settings), for programs;
    the message is a translated sentence for the person who typed the value, naming the setting and what it accepts.
    """

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


class SettingsDoNotFit(InvalidChange):
    """The chat's settings are not ones its (new) model takes: every send would be refused. ``settings`` names the
    settings to reset to the model's defaults for the change to go through."""

    def __init__(self, field: str, message: str, settings: list[str]):
        super().__init__(field, message)
        self.settings = settings


class ConversationBusy(Exception):
    """An answer is still being written in the conversation."""


def _bool(field: str, value) -> bool:
    if not isinstance(value, bool):
        raise InvalidChange(field, _("%(setting)s must be true or false.") % {"setting": FIELD_LABELS[field]})
    return value


def _storable(field: str, value: str) -> str:
    try:
        return refuse_nul(value, field)
    except NulCharacter as exc:
        raise InvalidChange(field, str(exc)) from None


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
    for name in ("json_mode", "web_search"):
        if name in settings:
            changes[name] = _bool(f"settings.{name}", settings[name])
    if "thinking" in settings:
        value = settings["thinking"]
        changes["thinking"] = None if value is None else _bool("settings.thinking", value)
    if "reasoning_effort" in settings:
        value = settings["reasoning_effort"]
        if value is not None and value not in REASONING_EFFORTS:
            raise InvalidChange(
                "settings.reasoning_effort",
                _("%(setting)s must be one of %(choices)s, or empty for the model's default.")
                % {"setting": FIELD_LABELS["settings.reasoning_effort"], "choices": ", ".join(REASONING_EFFORTS)},
            )
        changes["reasoning_effort"] = value
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
        changes["title"] = _storable("title", title.strip())
    for name in ("pinned", "archived", "custom_instructions"):
        if name in body:
            changes[name] = _bool(name, body[name])
    if "model" in body:
        model = body["model"]
        if not isinstance(model, str) or not 1 <= len(model.strip()) <= MODEL_MAX_CHARS:
            raise InvalidChange(
                "model", _("The model name must have 1 to %(maximum)d characters.") % {"maximum": MODEL_MAX_CHARS}
            )
        changes["model"] = _storable("model", model.strip())
    if "system_prompt" in body:
        prompt = body["system_prompt"]
        if not isinstance(prompt, str) or len(prompt) > SYSTEM_PROMPT_MAX_CHARS:
            raise InvalidChange(
                "system_prompt",
                _("The system prompt must be text of at most %(maximum)s characters.")
                % {"maximum": f"{SYSTEM_PROMPT_MAX_CHARS:,}"},
            )
        changes["system_prompt"] = _storable("system_prompt", prompt)
    if "settings" in body:
        changes.update(_settings_changes(body["settings"]))
    if "project" in body:  # filed under a project (its id) or out of any (null); whose it is: update_conversation
        project = body["project"]
        if project is not None and (isinstance(project, bool) or not isinstance(project, int) or project < 1):
            raise InvalidChange("project", _("The project must be a project's id, or null for none."))
        changes["project_id"] = project
    return changes


# A setting at its default: what the settings panel's "Default" sends, and what resetting a setting means.
SETTING_DEFAULTS = {"temperature": None, "top_p": None, "max_tokens": None, "thinking": None, "json_mode": False}


def _model_refusal(model: str, values: dict) -> str | None:
    """Why ``model`` would refuse a send with these settings (the send path's own check), or None."""
    request = ChatRequest(model=model, messages=[{"role": "user", "content": "-"}], **values)
    try:
        resolve_params(request, get_client().provider)
    except InvalidParameter as exc:
        return exc.message
    return None


def check_settings_fit(conversation: Conversation, changes: dict) -> None:
    """Refuse a model or settings change after which every send would be refused, naming why and which settings
    to reset. Checked on the values the conversation would have after ``changes``."""
    if not {"model", *SETTING_DEFAULTS} & set(changes):
        return
    model = changes.get("model", conversation.model) or django_settings.KIMI_DEFAULT_MODEL
    values = {name: changes.get(name, getattr(conversation, name)) for name in SETTING_DEFAULTS}
    reason = _model_refusal(model, values)
    if reason is None:
        return
    set_names = [name for name, default in SETTING_DEFAULTS.items() if values[name] != default]
    # A setting the model refuses even on its own must go; if the rest still clash together, all of them must.
    conflicts = [name for name in set_names if _model_refusal(model, {**SETTING_DEFAULTS, name: values[name]})]
    kept = {**values, **{name: SETTING_DEFAULTS[name] for name in conflicts}}
    if not conflicts or _model_refusal(model, kept):
        conflicts = set_names
    field = "model" if "model" in changes else f"settings.{conflicts[0]}"
    raise SettingsDoNotFit(field, reason, conflicts)


def update_conversation(conversation: Conversation, body) -> Conversation:
    """Apply a validated PATCH. Only the named fields are written: renaming or pinning never reorders by recency."""
    changes = check_changes(body)
    if "model" in changes and not model_access.is_allowed(conversation.owner_id, changes["model"]):
        raise InvalidChange("model", model_access.refusal(changes["model"]))
    if "project_id" in changes:  # ProjectNotFound (404) for another user's project
        owned_project_id(conversation.owner_id, changes["project_id"])
    check_settings_fit(conversation, changes)
    if changes.get("web_search"):
        refusal = web_search_refusal(changes.get("model", conversation.model))
        if refusal:
            raise InvalidChange("settings.web_search", refusal)
    if "title" in changes:
        changes["title_source"] = "user"  # a generated title never replaces the user's own
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
