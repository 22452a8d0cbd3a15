"""The keys page (/keys/): make a personal API key (its secret shown once), list and revoke one's own keys."""

import datetime

from django import forms
from django.contrib import messages
from django.shortcuts import redirect, render
from django.utils import timezone
from django.utils.translation import gettext, gettext_lazy
from django.views.decorators.http import require_http_methods

from conversations.services.apikeys import keys


class KeyForm(forms.Form):
    name = forms.CharField(label=gettext_lazy("Name"), max_length=keys.MAX_NAME_LENGTH, required=False)
    spending_cap = forms.DecimalField(
        label=gettext_lazy("Spending cap (credits)"), required=False, min_value=0, max_digits=18, decimal_places=6
    )
    expires_on = forms.DateField(
        label=gettext_lazy("Expires after"), required=False, widget=forms.DateInput(attrs={"type": "date"})
    )

    def clean_expires_on(self):
        day = self.cleaned_data["expires_on"]
        if day is not None and day < timezone.localdate():
            raise forms.ValidationError(gettext("The expiry date is in the past."))
        return day

    def expires_at(self):
        day = self.cleaned_data["expires_on"]
        if day is None:
            return None
        return timezone.make_aware(datetime.datetime.combine(day + datetime.timedelta(days=1), datetime.time()))


@require_http_methods(["GET", "POST"])
def api_keys(request):
    secret = None
    if request.method == "POST":
        if "revoke" in request.POST:
            try:
                key_id = int(request.POST["revoke"])
            except ValueError:
                key_id = 0
            if keys.revoke_for_user(request.user, key_id):
                messages.success(request, gettext("The key was revoked."))
            return redirect("api-keys")
        form = KeyForm(request.POST)
        if form.is_valid():
            secret = keys.create(
                request.user,
                name=form.cleaned_data["name"],
                spending_cap=form.cleaned_data["spending_cap"],
                expires_at=form.expires_at(),
            ).secret
            form = KeyForm()
    else:
        form = KeyForm()
    context = {"keys": keys.keys_of(request.user), "secret": secret, "form": form}
    response = render(request, "conversations/api_keys.html", context)
    if secret is not None:
        # The secret is on this page only: never cached, never a page the back button brings back.
        response["Cache-Control"] = "no-store"
    return response
