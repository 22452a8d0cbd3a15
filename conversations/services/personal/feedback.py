"""Thumbs up or down on an answer, with an optional note: one rating per answer, the latest wins. Staff read them in
the admin (behind the permission that guards message contents) and as counts per model on the dashboard."""

from __future__ import annotations

from django.utils import timezone
from django.utils.translation import gettext as _

from conversations.models import Feedback, Message
from conversations.services.text import NulCharacter, refuse_nul

NOTE_MAX_CHARS = 2000
RATINGS = {"up": Feedback.Rating.UP, "down": Feedback.Rating.DOWN}


class InvalidFeedback(ValueError):
    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


def as_dict(feedback: Feedback | None) -> dict | None:
    if feedback is None:
        return None
    return {
        "message_id": feedback.message_id,
        "rating": "up" if feedback.rating == Feedback.Rating.UP else "down",
        "note": feedback.note,
        "updated_at": feedback.updated_at.isoformat(),
    }


def rate(message: Message, body) -> Feedback:
    """Store the user's rating of ``message`` (an answer of theirs, checked by the caller's ``for_user`` query)."""
    if not isinstance(body, dict):
        raise InvalidFeedback("", _("The request body must be a JSON object."))
    unknown = sorted(set(body) - {"rating", "note"})
    if unknown:
        raise InvalidFeedback(unknown[0], _("Unknown fields: %(names)s.") % {"names": ", ".join(unknown)})
    rating = RATINGS.get(body.get("rating"))
    if rating is None:
        raise InvalidFeedback("rating", _('\'rating\' must be "up" or "down".'))
    note = body.get("note", "")
    if note is None:
        note = ""
    if not isinstance(note, str) or len(note) > NOTE_MAX_CHARS:
        raise InvalidFeedback(
            "note", _("The note must be text of at most %(maximum)s characters.") % {"maximum": "2,000"}
        )
    try:
        note = refuse_nul(note.strip(), "note")
    except NulCharacter as exc:
        raise InvalidFeedback("note", str(exc)) from None
    if message.role != Message.Role.ASSISTANT or not message.is_final:
        raise InvalidFeedback("message_id", _("Only a finished answer can be rated."))
    now = timezone.now()
    feedback, _created = Feedback.objects.update_or_create(
        message=message, defaults={"rating": rating, "note": note, "model": message.model, "updated_at": now}
    )
    return feedback


def withdraw(message: Message) -> None:
    Feedback.objects.filter(message=message).delete()
