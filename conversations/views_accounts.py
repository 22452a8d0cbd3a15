"""Sign up (switchable). Log in, log out and password change are Django's own views with our templates."""

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import get_user_model, login
from django.contrib.auth.decorators import login_not_required
from django.http import Http404
from django.shortcuts import redirect, render
from django.utils.translation import gettext as _

from conversations.forms import SignupForm
from conversations.services.accounts import create_account


@login_not_required
def signup(request):
    if not settings.KIMICHAT_SIGNUP_ENABLED:
        raise Http404("Sign-up is switched off on this server.")
    if request.user.is_authenticated:
        return redirect("chat")
    empty_install = not get_user_model().objects.exists()
    form = SignupForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        user, became_superuser = create_account(
            form.cleaned_data["username"], form.cleaned_data["password1"], form.cleaned_data.get("email", "")
        )
        login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        if became_superuser:
            messages.info(request, _("You are the first user, so your account is the administrator (superuser)."))
        return redirect("chat")
    return render(request, "registration/signup.html", {"form": form, "empty_install": empty_install})
