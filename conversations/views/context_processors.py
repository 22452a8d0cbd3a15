from django.utils.functional import SimpleLazyObject

from conversations.models import Announcement
from conversations.services.accounts import signup_modes


def kimichat(request):
    user = getattr(request, "user", None)
    # Callables: a template calls them only where it draws them: the sign-up link (the log-in page reads the settings
    # row) and the banner (one query, templates/_announcement.html).
    return {
        "signup_enabled": lambda: signup_modes.current_mode() != signup_modes.Mode.CLOSED,
        "announcement": lambda: Announcement.objects.for_user(user).first(),
        # The theme and chat width go on <html> as the page is rendered (no flash of the wrong theme); read lazily,
        # so a page that does not show them (the admin) pays no query.
        "ui": SimpleLazyObject(lambda: _ui(request)),
    }


def _ui(request):
    from conversations.services.personal.preferences import preferences_for

    return preferences_for(getattr(request, "user", None))
