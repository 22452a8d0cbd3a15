"""POST /announcements/<id>/dismiss/: the logged-in user closes the staff's banner; it stays closed for them."""

from __future__ import annotations

from django.db import IntegrityError, transaction
from django.http import Http404, HttpResponse
from django.shortcuts import redirect
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from conversations.models import Announcement, AnnouncementDismissal


@require_POST
def dismiss(request, announcement_id: int):
    # Only an announcement shown now can be dismissed: an unknown, withdrawn or expired id is a 404.
    announcement = Announcement.objects.current().filter(pk=announcement_id).first()
    if announcement is None:
        raise Http404("No such announcement.")
    try:
        with transaction.atomic():
            AnnouncementDismissal.objects.get_or_create(announcement=announcement, user=request.user)
    except IntegrityError:
        pass  # two tabs dismissed it at once: it is dismissed
    if "application/json" in request.headers.get("Accept", ""):
        return HttpResponse(status=204)
    target = request.POST.get("next", "")
    safe = url_has_allowed_host_and_scheme(target, {request.get_host()}, require_https=request.is_secure())
    return redirect(target if safe and target.startswith("/") else "chat")
