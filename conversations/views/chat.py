"""Pages. Thin: each reads through ``for_user`` and renders."""

from django.shortcuts import get_object_or_404, render

from conversations.models import Conversation
from conversations.services.accounts import approval, signup_modes


def chat(request, conversation_id: int | None = None):
    conversation = None
    if conversation_id is not None:
        conversation = get_object_or_404(Conversation.objects.for_user(request.user), pk=conversation_id)
    context = {
        "conversation": conversation,
        "awaiting_approval": approval.is_waiting(request.user.pk),
        "invite_mode": signup_modes.current_mode() == signup_modes.Mode.INVITE,
    }
    return render(request, "conversations/chat.html", context)
