from django.conf import settings


def kimichat(request):
    return {"signup_enabled": settings.KIMICHAT_SIGNUP_ENABLED}
