"""Model signal handlers. Kept tiny: each calls one service function."""

from django.conf import settings
from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver
from django_otp.plugins.otp_totp.models import TOTPDevice

from conversations.services.accounts import backends, sessions
from conversations.services.billing import credits


@receiver(post_save, sender=settings.AUTH_USER_MODEL, dispatch_uid="conversations.open_credit_account")
def open_credit_account(sender, instance, created, raw=False, **kwargs):
    # raw: loaddata restores accounts and ledgers from the fixture itself; a bonus here would be counted twice.
    if created and not raw:
        # The sign-up page sets signup_credits on the new user: its mode's credits (services/accounts/signup.py).
        credits.open_account(instance, grant=getattr(instance, "signup_credits", None))


@receiver(user_login_failed, dispatch_uid="conversations.count_login_failure")
def count_login_failure(sender, credentials, request=None, **kwargs):
    backends.record_failure(credentials, request)


@receiver(user_logged_in, dispatch_uid="conversations.clear_login_failures")
def clear_login_failures(sender, request, user, **kwargs):
    backends.record_success(user, request)
    if user.is_staff:  # read now, so the admin's pages need no query for it (admin/two_factor.py)
        from conversations.admin import two_factor

        two_factor.has_confirmed_device(user)


@receiver(user_logged_out, dispatch_uid="conversations.close_session_sockets")
def close_session_sockets(sender, request, user, **kwargs):
    # Sent before the session is flushed: its key still names the sockets to close.
    if user is not None and request is not None:
        sessions.close_session_sockets(request.session.session_key)


@receiver(post_save, sender=settings.AUTH_USER_MODEL, dispatch_uid="conversations.revalidate_user_sockets")
def revalidate_user_sockets(sender, instance, created, raw=False, update_fields=None, **kwargs):
    # A log-in's last_login update changes nothing a session depends on; any other save may (password, is_active).
    if created or raw or (update_fields is not None and set(update_fields) <= {"last_login"}):
        return
    sessions.notify_user_changed([instance.pk])


@receiver(post_save, sender=TOTPDevice, dispatch_uid="conversations.forget_totp_device_save")
@receiver(post_delete, sender=TOTPDevice, dispatch_uid="conversations.forget_totp_device_delete")
def forget_totp_device(sender, instance, **kwargs):
    # The admin caches whether a staff user has a confirmed device (admin/two_factor.py): a change drops it.
    from conversations.admin import two_factor

    two_factor.forget_device(instance.user_id)
