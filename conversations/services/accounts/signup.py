"""Creating accounts. The first account on an empty install becomes the superuser."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.db import transaction


@transaction.atomic
def create_account(username: str, password: str, email: str = ""):
    """Create a user; returns ``(user, became_superuser)``.

    "First" means the lowest id: if two people sign up at the same moment on an empty install, only the one whose
    row came first is promoted, because each checks for any *earlier* user rather than for "no other user".
    """
    User = get_user_model()
    user = User.objects.create_user(username=username, password=password, email=email)
    is_first = not User.objects.filter(pk__lt=user.pk).exists()
    if is_first:
        user.is_staff = True
        user.is_superuser = True
        user.save(update_fields=["is_staff", "is_superuser"])
    return user, is_first
