"""A user's preferences: custom instructions that go with every chat's system prompt (switched per chat), and how
the page looks (theme, chat width), applied by the server when it renders the page, so there is no flash."""

from __future__ import annotations

from django.utils import timezone
from django.utils.translation import gettext as _

from conversations.models import Conversation, UserPreferences
from conversations.services.text import NulCharacter, refuse_nul

INSTRUCTIONS_MAX_CHARS = 3000  # each of the two fields: about a page of text, a few hundred tokens per send
FIELDS = frozenset({"about", "answer_style", "theme", "chat_width"})


class InvalidPreference(ValueError):
    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


def preferences_for(user) -> UserPreferences:
    """The user's preferences; the defaults (unsaved) for a user who never set any."""
    if user is None or not user.is_authenticated:
        return UserPreferences()
    return UserPreferences.objects.filter(user_id=user.pk).first() or UserPreferences(user_id=user.pk)


def as_dict(preferences: UserPreferences) -> dict:
    return {
        "about": preferences.about,
        "answer_style": preferences.answer_style,
        "theme": preferences.theme,
        "chat_width": preferences.chat_width,
    }


def _text(field: str, value) -> str:
    if not isinstance(value, str) or len(value) > INSTRUCTIONS_MAX_CHARS:
        raise InvalidPreference(
            field, _("Custom instructions must be text of at most %(maximum)s characters.") % {"maximum": "3,000"}
        )
    try:
        return refuse_nul(value, field).strip()
    except NulCharacter as exc:
        raise InvalidPreference(field, str(exc)) from None


def _choice(field: str, value, choices) -> str:
    if value not in choices.values:
        raise InvalidPreference(
            field, _("'%(field)s' must be one of %(choices)s.") % {"field": field, "choices": ", ".join(choices.values)}
        )
    return value


def update_preferences(user, body) -> UserPreferences:
    """Apply a PATCH body (any of ``FIELDS``); raises ``InvalidPreference`` on the first bad field, storing nothing."""
    if not isinstance(body, dict):
        raise InvalidPreference("", _("The request body must be a JSON object."))
    unknown = sorted(set(body) - FIELDS)
    if unknown:
        raise InvalidPreference(unknown[0], _("Unknown fields: %(names)s.") % {"names": ", ".join(unknown)})
    changes = {}
    for name in ("about", "answer_style"):
        if name in body:
            changes[name] = _text(name, body[name])
    if "theme" in body:
        changes["theme"] = _choice("theme", body["theme"], UserPreferences.Theme)
    if "chat_width" in body:
        changes["chat_width"] = _choice("chat_width", body["chat_width"], UserPreferences.Width)
    preferences, _created = UserPreferences.objects.update_or_create(
        user_id=user.pk, defaults={**changes, "updated_at": timezone.now()}
    )
    return preferences


def instructions_text(preferences: UserPreferences) -> str:
    """The custom instructions as the model reads them ("" when the user wrote none)."""
    parts = []
    if preferences.about.strip():
        parts.append("About the user:\n" + preferences.about.strip())
    if preferences.answer_style.strip():
        parts.append("How to answer:\n" + preferences.answer_style.strip())
    return "\n\n".join(parts)


def system_prompt_for(conversation: Conversation) -> str:
    """The chat's system prompt with the owner's custom instructions after it, when the chat has them switched on.
    After, not before: the chat's own prompt leads, and both stay the same from send to send (Kimi's prefix
    cache)."""
    if not conversation.custom_instructions:
        return conversation.system_prompt
    return system_prompt_with(conversation, UserPreferences.objects.filter(user_id=conversation.owner_id).first())


def stored_for(user_ids) -> dict[int, UserPreferences]:
    """The stored preferences of many users, by user id, in one query (a user who saved none is missing)."""
    return {p.user_id: p for p in UserPreferences.objects.filter(user_id__in=list(user_ids))}


def system_prompt_with(conversation: Conversation, stored: UserPreferences | None) -> str:
    """``system_prompt_for`` with the owner's preferences already read (``stored``; None: they saved none)."""
    prompt = conversation.system_prompt
    if not conversation.custom_instructions:
        return prompt
    instructions = instructions_text(stored) if stored is not None else ""
    if not instructions:
        return prompt
    return f"{prompt.strip()}\n\n{instructions}" if prompt.strip() else instructions
