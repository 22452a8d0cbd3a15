"""GET /api/search/: full-text search over the user's own conversations."""

from __future__ import annotations

from django.http import JsonResponse
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET

from conversations.api.responses import error, int_param, own_project, project_param
from conversations.services.history import search


@require_GET
def search_view(request):
    try:
        limit = int_param(request, "limit", 20, minimum=1, maximum=search.MAX_LIMIT)
    except ValueError as exc:
        return error("bad_parameter", str(exc), 400, field="limit")
    try:
        project = project_param(request)
    except ValueError as exc:
        return error("bad_parameter", str(exc), 400, field="project")
    if project == "none":
        return error("bad_parameter", "'project' must be a project id here", 400, field="project")
    if project is not None and own_project(request, project) is None:
        return error("not_found", _("No such project."), 404, field="project")
    try:
        results = search.search(request.user, request.GET.get("q", ""), limit=limit, project_id=project)
    except search.SearchQueryError as exc:
        return error("bad_parameter", str(exc), 400, field="q")
    return JsonResponse({"results": results})
