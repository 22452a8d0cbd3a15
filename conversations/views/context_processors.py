from django.conf import settings
from django.utils.functional import SimpleLazyObject


def kimichat(request):
    return {
        "signup_enabled": settings.KIMICHAT_SIGNUP_ENABLED,
        # The theme and chat width go on <html> as the page is rendered (no flash of the wrong theme); read lazily,
        # so a page that does not show them (the admin) pays no query.
        "ui": SimpleLazyObject(lambda: _ui(request)),
    }


def _ui(request):
    from conversations.services.personal.preferences import preferences_for

    return preferences_for(getattr(request, "user", None))
