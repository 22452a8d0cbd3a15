"""/api/projects/: the user's projects (list, create), one project (GET, PATCH, DELETE with or without its chats),
their order, and a project's files (upload, delete).

Thin: the checks and the writing are in ``services/projects``; every id is read through ``for_user``
(``responses.own_project``), so another user's project is answered like a missing one.
"""

from __future__ import annotations

from django.db.models import Count, Prefetch
from django.http import HttpResponse, JsonResponse
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST

from conversations.api.responses import error, json_body, method_not_allowed, own_project
from conversations.models import Attachment, Project
from conversations.serializers import project_to_dict
from conversations.services.attachments import limits
from conversations.services.attachments.limits import AttachmentRefused
from conversations.services.history.changes import ConversationBusy, InvalidChange
from conversations.services.projects import changes, files
from conversations.services.projects.membership import ProjectNotFound


def _not_found() -> JsonResponse:
    return error("not_found", _("No such project."), 404)


def _listed(user):
    """The user's projects in their order, each with its chat count and files: two queries."""
    return (
        Project.objects.for_user(user)
        .for_sidebar()
        .annotate(conversation_count=Count("conversations"))
        .prefetch_related(Prefetch("files", queryset=Attachment.objects.order_by("id")))
    )


def _to_dict(project: Project) -> dict:
    return project_to_dict(project, files=list(project.files.all()), conversation_count=project.conversation_count)


def _fresh(user, project_id: int) -> dict:
    return _to_dict(_listed(user).get(pk=project_id))


def project_list(request):
    if request.method == "GET":
        return JsonResponse({"results": [_to_dict(p) for p in _listed(request.user)]})
    if request.method == "POST":
        body, failed = json_body(request)
        if failed:
            return failed
        try:
            project = changes.create_project(request.user, body)
        except InvalidChange as exc:
            return error("bad_parameter", str(exc), 400, field=exc.field or None)
        except changes.TooManyProjects as exc:
            return error("too_many_projects", str(exc), 409)
        return JsonResponse(_fresh(request.user, project.pk), status=201)
    return method_not_allowed(request, "GET, POST")


def project_resource(request, project_id: int):
    project = own_project(request, project_id)
    if project is None:
        return _not_found()
    if request.method == "GET":
        return JsonResponse(_fresh(request.user, project.pk))
    if request.method == "PATCH":
        body, failed = json_body(request)
        if failed:
            return failed
        try:
            changes.update_project(project, body)
        except InvalidChange as exc:
            return error("bad_parameter", str(exc), 400, field=exc.field or None)
        return JsonResponse(_fresh(request.user, project.pk))
    if request.method == "DELETE":
        chats = request.GET.get("chats", "keep")
        if chats not in {"keep", "delete"}:
            return error("bad_parameter", f"'chats' must be keep or delete, got {chats[:40]!r}", 400, field="chats")
        try:
            deleted = changes.delete_project(project, with_chats=chats == "delete")
        except ConversationBusy:
            return error("busy", _("An answer is still being written in a chat of this project; stop it first."), 409)
        return JsonResponse({"deleted_conversations": deleted})
    return method_not_allowed(request, "GET, PATCH, DELETE")


@require_POST
def reorder(request):
    """``{"ids": [...]}``: those projects first, in that order; the others after them, as they were."""
    body, failed = json_body(request)
    if failed:
        return failed
    try:
        changes.reorder(request.user, body.get("ids") if isinstance(body, dict) else None)
    except InvalidChange as exc:
        return error("bad_parameter", str(exc), 400, field=exc.field or None)
    except ProjectNotFound:
        return _not_found()
    return JsonResponse({"results": [_to_dict(p) for p in _listed(request.user)]})


@require_POST
def file_upload(request, project_id: int):
    """Multipart ``file``: a document for every chat of the project (docs/projects.md)."""
    project = own_project(request, project_id)
    if project is None:
        return _not_found()
    declared = int(request.META.get("CONTENT_LENGTH") or 0)
    uploaded = request.FILES.get("file") if declared <= limits.max_bytes() + 64 * 1024 else None
    if declared > limits.max_bytes() + 64 * 1024 or (uploaded is not None and uploaded.size > limits.max_bytes()):
        return error(
            "too_large",
            _("The file is %(size)s; the limit is %(limit)s per file.")
            % {"size": limits.megabytes(declared), "limit": limits.megabytes(limits.max_bytes())},
            413,
        )
    if uploaded is None:
        return error("bad_parameter", _("Send the file as the multipart field 'file'."), 400, field="file")
    try:
        files.add_file(project, name=uploaded.name, data=uploaded.read())
    except AttachmentRefused as exc:
        return error(exc.code, exc.message, exc.status, **exc.extra)
    return JsonResponse(_fresh(request.user, project.pk), status=201)


def file_resource(request, project_id: int, attachment_id: int):
    project = own_project(request, project_id)
    if project is None:
        return _not_found()
    attachment = project.files.filter(pk=attachment_id).first()
    if attachment is None:
        return error("not_found", _("No such attachment."), 404)
    if request.method != "DELETE":
        return method_not_allowed(request, "DELETE")
    attachment.delete()
    return HttpResponse(status=204)
