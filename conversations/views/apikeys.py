"""The keys page (/keys/): make a personal API key (its secret shown once), list and revoke one's own keys."""

from django.contrib import messages
from django.shortcuts import redirect, render
from django.utils.translation import gettext
from django.views.decorators.http import require_http_methods

from conversations.services.apikeys import keys


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
        try:
            secret = keys.create(request.user, name=request.POST.get("name", "")).secret
        except ValueError as exc:
            messages.error(request, str(exc))
            return redirect("api-keys")
    response = render(request, "conversations/api_keys.html", {"keys": keys.keys_of(request.user), "secret": secret})
    if secret is not None:
        # The secret is on this page only: never cached, never a page the back button brings back.
        response["Cache-Control"] = "no-store"
    return response
