from django.conf import settings

from conversations.models import Announcement


def kimichat(request):
    user = getattr(request, "user", None)
    # A callable: the template calls it (one query) only where the banner is drawn (templates/_announcement.html).
    return {
        "signup_enabled": settings.KIMICHAT_SIGNUP_ENABLED,
        "announcement": lambda: Announcement.objects.for_user(user).first(),
    }
