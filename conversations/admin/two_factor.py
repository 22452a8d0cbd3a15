"""Two-factor log-in to the admin (TOTP through django-otp).

A staff user enrols an authenticator app on the admin's "Two-factor log-in" page. Once they have a confirmed device,
the admin opens only to a session verified by a code: the admin's log-in form asks for it (``AdminLoginForm``), and
a session that logged in elsewhere (the app's log-in page) is sent to the admin's log-in to give it. With
``ADMIN_REQUIRE_2FA`` a staff user without a device is sent to the enrolment page first. The password still goes
through ``authenticate`` (the log-in throttle); wrong codes are slowed by django-otp's own throttle on the device.
"""

from __future__ import annotations

from io import BytesIO

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.auth import REDIRECT_FIELD_NAME
from django.contrib.auth.views import redirect_to_login
from django.core.cache import cache
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.safestring import mark_safe
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_protect
from django_otp import login as otp_login
from django_otp.plugins.otp_totp.models import TOTPDevice


def confirmed_device(user) -> TOTPDevice | None:
    if user is None or not user.is_authenticated:
        return None
    return TOTPDevice.objects.filter(user=user, confirmed=True).first()


THROTTLED = gettext_lazy("Too many wrong codes. Wait a moment, then try again.")
WRONG = gettext_lazy("That code is not right, or has expired. Try the current one.")


def verify(device: TOTPDevice, token: str) -> str | None:
    """None when ``token`` is a current code of ``device`` (used up by this), else what to tell the person. After a
    wrong code django-otp makes the device wait (1 s, doubling with each failure)."""
    allowed, _extra = device.verify_is_allowed()
    if not allowed:
        return str(THROTTLED)
    token = (token or "").replace(" ", "")
    return None if token.isdigit() and device.verify_token(token) else str(WRONG)


def needs_enrolment(user) -> bool:
    return settings.ADMIN_REQUIRE_2FA and not has_confirmed_device(user)


def _has_device_key(user_id: int) -> str:
    return f"admin-2fa:has-device:{user_id}"


def has_confirmed_device(user) -> bool:
    """Cached (a minute, and dropped when a device changes: ``forget_device``), so an admin page costs no query for
    it. Without a shared cache another worker may let an unverified session in for up to that minute after
    enrolment; a removed device only makes the cache stricter."""
    key = _has_device_key(user.pk)
    cached = cache.get(key)
    if cached is None:
        cached = confirmed_device(user) is not None
        cache.set(key, cached, timeout=60)
    return cached


def forget_device(user_id: int) -> None:
    cache.delete(_has_device_key(user_id))


def second_factor_ok(request) -> bool:
    """Whether this session may use the admin as far as the second factor goes."""
    user = request.user
    if user.is_verified():
        return True
    return not settings.ADMIN_REQUIRE_2FA and not has_confirmed_device(user)


def clean_token(form, user) -> None:
    """The log-in form's second step: a user with a confirmed device must give a current code from it."""
    device = confirmed_device(user)
    if device is None:
        return
    token = form.cleaned_data.get("otp_token", "")
    if not token:
        raise forms.ValidationError(
            _("This account uses two-factor log-in: enter the 6-digit code from your authenticator app."),
            code="token_required",
        )
    problem = verify(device, token)
    if problem is not None:
        raise forms.ValidationError(problem, code="token")
    user.otp_device = device  # django-otp's user_logged_in handler marks the session verified


# --- The enrolment page -----------------------------------------------------------------------------------------


class TokenForm(forms.Form):
    token = forms.CharField(
        label=gettext_lazy("Code from the app"),
        max_length=10,
        widget=forms.TextInput(attrs={"autocomplete": "one-time-code", "inputmode": "numeric", "autofocus": True}),
    )


def _qr_svg(uri: str) -> str:
    import qrcode
    import qrcode.image.svg

    buffer = BytesIO()
    qrcode.make(uri, image_factory=qrcode.image.svg.SvgPathImage, box_size=8, border=2).save(buffer)
    svg = buffer.getvalue().decode()
    return svg[svg.index("<svg") :]  # without the XML declaration: inline in the page


def _secret_of(device: TOTPDevice) -> str:
    from base64 import b32encode

    secret = b32encode(device.bin_key).decode()
    return " ".join(secret[i : i + 4] for i in range(0, len(secret), 4))


@never_cache
@csrf_protect
def two_factor(request):
    """Enrol (an unconfirmed device until a code from it is given), or turn two-factor log-in off (with a code)."""
    user = request.user
    if not (user.is_active and user.is_staff):
        return redirect_to_login(request.get_full_path(), reverse("admin:login"), REDIRECT_FIELD_NAME)
    device = confirmed_device(user)
    if device is not None and not user.is_verified():
        return redirect_to_login(request.get_full_path(), reverse("admin:login"), REDIRECT_FIELD_NAME)
    form = TokenForm(request.POST or None)
    if device is not None:  # enrolled: the page turns it off
        if request.method == "POST" and form.is_valid():
            if settings.ADMIN_REQUIRE_2FA:
                form.add_error(None, _("This server requires two-factor log-in for staff (ADMIN_REQUIRE_2FA)."))
            elif (problem := verify(device, form.cleaned_data["token"])) is None:
                TOTPDevice.objects.filter(user=user).delete()
                messages.success(request, _("Two-factor log-in is off for your account."))
                return redirect("admin:kimichat_two_factor")
            else:
                form.add_error("token", problem)
        context = {"enrolled": device}
    else:
        pending = TOTPDevice.objects.filter(user=user, confirmed=False).order_by("-id").first()
        if pending is None:
            pending = TOTPDevice.objects.create(user=user, name="Authenticator app", confirmed=False)
        if request.method == "POST" and form.is_valid():
            problem = verify(pending, form.cleaned_data["token"])
            if problem is None:
                pending.confirmed = True
                pending.save(update_fields=["confirmed"])
                TOTPDevice.objects.filter(user=user, confirmed=False).delete()
                otp_login(request, pending)  # this session gave a code: it stays in the admin
                messages.success(request, _("Two-factor log-in is on: the admin will ask for a code at each log-in."))
                return redirect("admin:index")
            form.add_error("token", problem)
        uri = pending.config_url
        context = {"uri": uri, "secret": _secret_of(pending), "qr": mark_safe(_qr_svg(uri))}  # noqa: S308 - our SVG
    context = {
        **admin.site.each_context(request),
        **context,
        "form": form,
        "title": _("Two-factor log-in"),
        "required": settings.ADMIN_REQUIRE_2FA,
    }
    return TemplateResponse(request, "admin/kimichat_two_factor.html", context)
