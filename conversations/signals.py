"""Model signal handlers. Kept tiny: each calls one service function."""

from django.conf import settings
from django.db.models.signals import post_save
from django.dispatch import receiver

from conversations.services.billing import credits


@receiver(post_save, sender=settings.AUTH_USER_MODEL, dispatch_uid="conversations.open_credit_account")
def open_credit_account(sender, instance, created, raw=False, **kwargs):
    # raw: loaddata restores accounts and ledgers from the fixture itself; a bonus here would be counted twice.
    if created and not raw:
        credits.open_account(instance)
