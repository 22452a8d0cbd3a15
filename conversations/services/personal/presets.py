"""Presets: a model, its settings and a system prompt a user saved, picked when starting a chat. The settings are
checked as a conversation's are (history/changes.py), so a preset can always start a chat its model accepts."""

from __future__ import annotations

from django.db import IntegrityError, transaction
from django.utils.translation import gettext as _

from conversations.models import Conversation, Preset
from conversations.services.history.changes import (
    SETTING_DEFAULTS,
    InvalidChange,
    check_changes,
    check_settings_fit,
)
from conversations.services.text import NulCharacter, refuse_nul

NAME_MAX_CHARS = 100
MAX_PRESETS = 50  # per user: a menu, not a database
FIELDS = frozenset({"name", "model", "system_prompt", "settings"})


class InvalidPreset(ValueError):
    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


def as_dict(preset: Preset) -> dict:
    return {
        "id": preset.pk,
        "name": preset.name,
        "model": preset.model,
        "system_prompt": preset.system_prompt,
        "settings": preset.settings,
        "created_at": preset.created_at.isoformat(),
    }


def _checked(body, preset: Preset) -> dict:
    """Validated field values for ``preset`` after ``body``; raises InvalidPreset."""
    if not isinstance(body, dict):
        raise InvalidPreset("", _("The request body must be a JSON object."))
    unknown = sorted(set(body) - FIELDS)
    if unknown:
        raise InvalidPreset(unknown[0], _("Unknown fields: %(names)s.") % {"names": ", ".join(unknown)})
    values: dict = {}
    if "name" in body:
        name = body["name"]
        if not isinstance(name, str) or not 1 <= len(name.strip()) <= NAME_MAX_CHARS:
            raise InvalidPreset("name", _("The name must have 1 to %(maximum)d characters.") % {"maximum": 100})
        try:
            values["name"] = refuse_nul(name.strip(), "name")
        except NulCharacter as exc:
            raise InvalidPreset("name", str(exc)) from None
    elif preset.pk is None:
        raise InvalidPreset("name", _("A preset needs a name."))
    conversation_body = {k: body[k] for k in ("system_prompt", "settings") if k in body}
    if body.get("model") not in (None, ""):
        conversation_body["model"] = body["model"]
    try:
        changes = check_changes(conversation_body)
    except InvalidChange as exc:
        raise InvalidPreset(exc.field, str(exc)) from None
    if "model" in body:
        if body["model"] not in (None, "") and "model" not in changes:
            raise InvalidPreset("model", _("The model name must be text."))
        values["model"] = changes.get("model", "")
    if "system_prompt" in changes:
        values["system_prompt"] = changes["system_prompt"]
    if "settings" in body:
        values["settings"] = {
            name: changes[name] for name in (*SETTING_DEFAULTS, "reasoning_effort", "web_search") if name in changes
        }
    # Would its model take these settings? Checked as a chat with them would be, on the values after the change.
    stand_in = Conversation(model=values.get("model", preset.model))
    chosen = values.get("settings", preset.settings)
    try:
        check_settings_fit(stand_in, {**chosen, "model": stand_in.model})
    except InvalidChange as exc:
        raise InvalidPreset(exc.field, str(exc)) from None
    return values


def create_preset(user, body) -> Preset:
    preset = Preset(owner_id=user.pk)
    values = _checked(body, preset)
    with transaction.atomic():
        if Preset.objects.for_user(user).count() >= MAX_PRESETS:
            raise InvalidPreset("", _("You can keep at most %(maximum)d presets.") % {"maximum": MAX_PRESETS})
        for name, value in values.items():
            setattr(preset, name, value)
        return _saved(preset)


def update_preset(preset: Preset, body) -> Preset:
    values = _checked(body, preset)
    for name, value in values.items():
        setattr(preset, name, value)
    with transaction.atomic():
        return _saved(preset)


def _saved(preset: Preset) -> Preset:
    try:
        with transaction.atomic():
            preset.save()
    except IntegrityError:
        raise InvalidPreset("name", _("You already have a preset with this name.")) from None
    return preset
