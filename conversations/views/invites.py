"""The invites page (/invites/): a user makes invite codes (while sign-up is invite-only), sees how each was used
and revokes their own. Each sign-up with one of them earns the invite reward (services/accounts/invites.py)."""

from django import forms
from django.conf import settings
from django.contrib import messages
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.translation import gettext, gettext_lazy
from django.views.decorators.http import require_http_methods

from conversations.models import InviteCode
from conversations.services.accounts import invites, signup_modes


class InviteForm(forms.Form):
    max_uses = forms.IntegerField(label=gettext_lazy("People this code can sign up"), min_value=1, initial=1)
    note = forms.CharField(label=gettext_lazy("Note (for you, e.g. who it is for)"), max_length=200, required=False)


@require_http_methods(["GET", "POST"])
def invites_page(request):
    mode = signup_modes.current_mode()
    form = InviteForm(request.POST or None)
    if request.method == "POST":
        if "revoke" in request.POST:
            try:
                invite_id = int(request.POST["revoke"])
            except ValueError:
                invite_id = 0
            if invites.revoke(request.user, invite_id):
                messages.success(request, gettext("The invite code was revoked."))
            return redirect("invites")
        if mode != signup_modes.Mode.INVITE:
            messages.error(request, gettext("Sign-up on this server is not by invitation: no code is needed."))
            return redirect("invites")
        if form.is_valid():
            try:
                invite = invites.create_for_user(
                    request.user, max_uses=form.cleaned_data["max_uses"], note=form.cleaned_data["note"]
                )
            except invites.InviteLimit as exc:
                form.add_error("max_uses", str(exc))
            else:
                messages.success(request, gettext("Invite code %(code)s made.") % {"code": invite.code})
                return redirect("invites")
    signup_url = request.build_absolute_uri(reverse("signup"))
    context = {
        "form": form,
        "mode": mode,
        "invite_mode": mode == signup_modes.Mode.INVITE,
        "codes": InviteCode.objects.filter(inviter=request.user).order_by("-created_at")[:100],
        "signup_url": signup_url,
        "left": invites.invites_left(request.user),
        "reward": signup_modes.invite_reward(),
        "days": settings.KIMICHAT_INVITE_DAYS,
    }
    return render(request, "conversations/invites.html", context)
