from django import forms
from django.contrib.auth import get_user_model
from django.contrib.auth.forms import PasswordChangeForm, UserCreationForm
from django.utils.translation import gettext_lazy as _


class WeakPasswordErrorsOnThePasswordField:
    """Django files a weak password's errors under the confirmation field (password2); people look for them under
    the password they chose. A mismatch still shows under the confirmation."""

    def validate_password_for_user(self, user, password_field_name="password2", **kwargs):  # noqa: S107 (a field name)
        if self.cleaned_data.get(password_field_name):  # the two matched: check the chosen password's strength
            super().validate_password_for_user(user, password_field_name.replace("2", "1"), **kwargs)


class SignupForm(WeakPasswordErrorsOnThePasswordField, UserCreationForm):
    email = forms.EmailField(label=_("Email (optional)"), required=False)

    class Meta(UserCreationForm.Meta):
        model = get_user_model()
        fields = ("username", "email")


class ChangePasswordForm(WeakPasswordErrorsOnThePasswordField, PasswordChangeForm):
    pass
