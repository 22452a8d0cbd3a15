from conversations.models import Announcement
from conversations.services.accounts import signup_modes


def kimichat(request):
    user = getattr(request, "user", None)
    # Callables: a template calls them only where it draws them: the sign-up link (the log-in page reads the settings
    # row) and the banner (one query, templates/_announcement.html).
    return {
        "signup_enabled": lambda: signup_modes.current_mode() != signup_modes.Mode.CLOSED,
        "announcement": lambda: Announcement.objects.for_user(user).first(),
    }
