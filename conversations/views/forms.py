from django import forms
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.admin.forms import AdminPasswordChangeForm as DjangoAdminPasswordChangeForm
from django.contrib.auth import authenticate, get_user_model
from django.contrib.auth.forms import (
    AuthenticationForm,
    PasswordChangeForm,
    PasswordResetForm,
    SetPasswordForm,
    UserCreationForm,
)
from django.core.exceptions import ValidationError
from django.utils.translation import gettext_lazy as _

from conversations.services.accounts.backends import throttled, throttled_message


class WeakPasswordErrorsOnThePasswordField:
    """Django files a weak password's errors under the confirmation field (password2); people look for them under
    the password they chose. A mismatch still shows under the confirmation."""

    def validate_password_for_user(self, user, password_field_name="password2", **kwargs):  # noqa: S107 (a field name)
        if self.cleaned_data.get(password_field_name):  # the two matched: check the chosen password's strength
            super().validate_password_for_user(user, password_field_name.replace("2", "1"), **kwargs)


class SignupForm(WeakPasswordErrorsOnThePasswordField, UserCreationForm):
    email = forms.EmailField(
        label=_("Email (optional)"), required=False, help_text=_("Needed only to reset a forgotten password.")
    )
    error_messages = {
        **UserCreationForm.error_messages,
        # Not "already exists": the words of any name this server will not hand out (docs/reliability.md).
        "username_unavailable": _("This username is not available. Choose another."),
    }

    class Meta(UserCreationForm.Meta):
        model = get_user_model()
        fields = ("username", "email")

    def __init__(self, *args, invite_required: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        if invite_required:  # invite-only sign-up: the code comes first
            self.fields = {
                "invite_code": forms.CharField(
                    label=_("Invite code"),
                    max_length=64,
                    error_messages={"required": _("Sign-up on this server needs an invite code.")},
                    widget=forms.TextInput(attrs={"autocomplete": "off", "autocapitalize": "characters"}),
                ),
                **self.fields,
            }

    def clean_username(self):
        # Django's check (any case variant taken), with the generic words; sign-up attempts are throttled per address.
        username = self.cleaned_data.get("username")
        if username and self._meta.model.objects.filter(username__iexact=username).exists():
            raise ValidationError(self.error_messages["username_unavailable"], code="unique")
        return username


class ThrottledLoginErrorMixin:
    """An authentication form that names the throttle when it is what refused the attempt."""

    def get_invalid_login_error(self):
        refused = throttled(self.request)
        if refused is not None:
            return ValidationError(throttled_message(refused), code="throttled")
        return super().get_invalid_login_error()


class LoginForm(ThrottledLoginErrorMixin, AuthenticationForm):
    pass


class AdminLoginForm(ThrottledLoginErrorMixin, AdminAuthenticationForm):
    """The admin's log-in: the password through the throttle, then the code of a staff user's TOTP device."""

    otp_token = forms.CharField(
        label=_("Two-factor code"),
        required=False,
        max_length=10,
        help_text=_("Only if you turned on two-factor log-in."),
        widget=forms.TextInput(attrs={"autocomplete": "one-time-code", "inputmode": "numeric"}),
    )

    def clean(self):
        from conversations.admin import two_factor

        cleaned = super().clean()
        two_factor.clean_token(self, self.get_user())
        return cleaned


class AuthenticatedOldPasswordMixin:
    """The old password goes through ``authenticate``, like a log-in: the throttle counts and refuses guesses here
    too (Django's form calls ``check_password``, which no throttle sees)."""

    def __init__(self, user, *args, request=None, **kwargs):
        super().__init__(user, *args, **kwargs)
        self.request = request

    def clean_old_password(self):
        old_password = self.cleaned_data["old_password"]
        user = authenticate(self.request, username=self.user.get_username(), password=old_password)
        if user is None or user.pk != self.user.pk:
            refused = throttled(self.request)
            if refused is not None:
                raise ValidationError(throttled_message(refused), code="throttled")
            raise ValidationError(self.error_messages["password_incorrect"], code="password_incorrect")
        return old_password


class ThrottledPasswordChangeForm(
    AuthenticatedOldPasswordMixin, WeakPasswordErrorsOnThePasswordField, PasswordChangeForm
):
    pass


class AdminPasswordChangeForm(AuthenticatedOldPasswordMixin, DjangoAdminPasswordChangeForm):
    pass


class ThrottledPasswordResetForm(PasswordResetForm):
    """Django's form (a mail only to active accounts with that address; the same answer for any address), with a
    limit of mails per address (``login_throttle.allow_reset_mail``)."""

    def save(self, *args, **kwargs):
        from conversations.services.accounts import login_throttle

        if login_throttle.allow_reset_mail(self.cleaned_data["email"]):
            super().save(*args, **kwargs)


class ResetSetPasswordForm(WeakPasswordErrorsOnThePasswordField, SetPasswordForm):
    pass
