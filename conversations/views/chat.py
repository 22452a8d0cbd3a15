"""Pages. Thin: each reads through ``for_user`` and renders."""

from django.shortcuts import get_object_or_404, render
from django.utils.translation import gettext_lazy as _

from conversations.models import Conversation
from conversations.services.accounts import approval, signup_modes

# The project dialog's colour choices: (value, name); "" is no colour.
PROJECT_COLORS = [
    ("", _("No colour")),
    ("#ef4444", _("Red")),
    ("#f59e0b", _("Amber")),
    ("#22c55e", _("Green")),
    ("#14b8a6", _("Teal")),
    ("#3b82f6", _("Blue")),
    ("#8b5cf6", _("Violet")),
    ("#ec4899", _("Pink")),
]


def chat(request, conversation_id: int | None = None):
    conversation = None
    if conversation_id is not None:
        conversation = get_object_or_404(Conversation.objects.for_user(request.user), pk=conversation_id)
    context = {
        "conversation": conversation,
        "awaiting_approval": approval.is_waiting(request.user.pk),
        "invite_mode": signup_modes.current_mode() == signup_modes.Mode.INVITE,
        "project_colors": PROJECT_COLORS,
    }
    return render(request, "conversations/chat.html", context)
