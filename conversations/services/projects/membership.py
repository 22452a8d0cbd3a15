"""Which project a chat is filed under: the one check that it is the chat owner's own project (PATCH, and a send
that starts a chat in a project)."""

from __future__ import annotations

from conversations.models import Project


class ProjectNotFound(LookupError):
    """No such project of this user (another user's id is answered the same)."""


def owned_project_id(owner_id: int, project_id: int | None, *, lock: bool = False) -> int | None:
    """``project_id`` if it names a project of ``owner_id`` (None stays None: out of any project), else
    ``ProjectNotFound``. ``lock`` (inside a transaction): hold the project's row until commit, so a concurrent
    delete of the project waits, or is seen here as a missing project, never as a broken foreign key."""
    if project_id is None:
        return None
    projects = Project.objects.filter(owner_id=owner_id, pk=project_id)
    if lock:
        projects = projects.select_for_update()
    if not projects.exists():
        raise ProjectNotFound(project_id)
    return project_id
