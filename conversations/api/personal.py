"""Personalisation routes (docs/api.md): the user's preferences (custom instructions, theme, chat width), presets,
feedback on an answer, and a chat's title written again by the model.

Thin: the checks are in ``services/personal``; every object is read through a ``for_user`` query, so another user's
id is answered exactly like a missing one.
"""

from __future__ import annotations

from asgiref.sync import sync_to_async
from django.http import HttpResponse, JsonResponse
from django.utils.translation import gettext as _

from conversations.api.responses import error, json_body, method_not_allowed, not_found
from conversations.models import Message, Preset
from conversations.serializers import conversation_to_dict
from conversations.services.chat import sending
from conversations.services.personal import feedback, preferences, presets, titles


def preferences_resource(request):
    """GET and PATCH /api/me/preferences/."""
    if request.method == "GET":
        return JsonResponse(preferences.as_dict(preferences.preferences_for(request.user)))
    if request.method != "PATCH":
        return method_not_allowed(request, "GET, PATCH")
    body, problem = json_body(request)
    if problem is not None:
        return problem
    try:
        stored = preferences.update_preferences(request.user, body)
    except preferences.InvalidPreference as exc:
        return error("bad_parameter", str(exc), 400, field=exc.field or None)
    return JsonResponse(preferences.as_dict(stored))


def preset_list(request):
    """GET (the user's presets, by name) and POST (a new one) on /api/presets/."""
    if request.method == "GET":
        return JsonResponse({"results": [presets.as_dict(p) for p in Preset.objects.for_user(request.user)]})
    if request.method != "POST":
        return method_not_allowed(request, "GET, POST")
    body, problem = json_body(request)
    if problem is not None:
        return problem
    try:
        preset = presets.create_preset(request.user, body)
    except presets.InvalidPreset as exc:
        return error("bad_parameter", str(exc), 400, field=exc.field or None)
    return JsonResponse(presets.as_dict(preset), status=201)


def preset_resource(request, preset_id: int):
    """GET, PATCH and DELETE /api/presets/<id>/."""
    preset = Preset.objects.for_user(request.user).filter(pk=preset_id).first()
    if request.method not in {"GET", "PATCH", "DELETE"}:
        return method_not_allowed(request, "GET, PATCH, DELETE")
    if preset is None:
        return not_found(_("No such preset."))
    if request.method == "GET":
        return JsonResponse(presets.as_dict(preset))
    if request.method == "DELETE":
        preset.delete()
        return HttpResponse(status=204)
    body, problem = json_body(request)
    if problem is not None:
        return problem
    try:
        presets.update_preset(preset, body)
    except presets.InvalidPreset as exc:
        return error("bad_parameter", str(exc), 400, field=exc.field or None)
    return JsonResponse(presets.as_dict(preset))


def message_feedback(request, message_id: int):
    """PUT (rate: ``{"rating": "up"|"down", "note": "..."}``), GET and DELETE /api/messages/<id>/feedback/."""
    if request.method not in {"GET", "PUT", "DELETE"}:
        return method_not_allowed(request, "GET, PUT, DELETE")
    message = Message.objects.for_user(request.user).filter(pk=message_id).select_related("feedback").first()
    if message is None:
        return not_found(_("No such message."))
    if request.method == "GET":
        return JsonResponse({"feedback": feedback.as_dict(getattr(message, "feedback", None))})
    if request.method == "DELETE":
        feedback.withdraw(message)
        return HttpResponse(status=204)
    body, problem = json_body(request)
    if problem is not None:
        return problem
    try:
        stored = feedback.rate(message, body)
    except feedback.InvalidFeedback as exc:
        return error("bad_parameter", str(exc), 400, field=exc.field or None)
    return JsonResponse({"feedback": feedback.as_dict(stored)})


async def conversation_title(request, conversation_id: int):
    """POST /api/conversations/<id>/title/: the model writes the chat's title again (paid like the first one)."""
    if request.method != "POST":
        return method_not_allowed(request, "POST")
    user = await request.auser()
    try:
        await sync_to_async(sending.admit)(user)  # a title request counts against the rate limits like a send
    except sending.SendRefused as exc:
        response = error(exc.code, exc.message, 429, retry_after=exc.extra.get("retry_after"))
        response["Retry-After"] = str(exc.extra.get("retry_after") or 1)
        return response
    try:
        conversation = await titles.generate(conversation_id, user=user, db=sync_to_async)
    except titles.TitleFailed as exc:
        return error(exc.code, str(exc), 402 if exc.code == "insufficient_credits" else 502)
    if conversation is None:
        return not_found()
    return JsonResponse(await sync_to_async(conversation_to_dict)(conversation))
