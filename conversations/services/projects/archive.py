"""Projects in exports and imports (services/history/exports.py).

- Each conversation's JSON document names its project (``"project": {id, name, color, emoji, instructions, archived,
  created_at}``), so one conversation imported alone lands in a project like its own.
- The ZIP of everything also holds ``projects.json`` (``kimichat.projects.v1``): every project with its files inline
  (base64, as a message's attachments are), so empty projects and project files come back too.
- An import finds or creates each project by its key (``kimichat:<id>:<created_at>``), so importing the same export
  twice reuses the projects the first import made; a project's files are stored (through the upload checks) only when
  the project is created.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from datetime import datetime

from django.db import transaction
from django.db.models import Prefetch
from django.utils.dateparse import parse_datetime

from conversations.models import Attachment, Project
from conversations.services.attachments import archive as attachment_archive
from conversations.services.attachments import storage
from conversations.services.attachments.limits import AttachmentRefused
from conversations.services.history.changes import InvalidChange
from conversations.services.projects import changes, files

FORMAT = "kimichat.projects.v1"
FILENAME = "projects.json"
KEY_CHARS = 200  # Project.import_key's max_length


class BadProject(ValueError):
    """A project entry of an import that cannot be used; ``field`` is its path in the file."""

    def __init__(self, message: str, field: str):
        super().__init__(message)
        self.field = field


def entry(project: Project) -> dict:
    return {
        "id": project.pk,
        "name": project.name,
        "color": project.color,
        "emoji": project.emoji,
        "instructions": project.instructions,
        "archived": project.archived,
        "created_at": project.created_at.isoformat(),
    }


def _file_entries(project: Project) -> list[dict]:
    result = []
    for attachment in project.files.all():  # prefetched in id order
        with storage.open_blob(attachment.storage_key) as blob:
            data = base64.b64encode(blob.read()).decode("ascii")
        result.append({"name": attachment.name, "content_type": attachment.content_type, "data": data})
    return result


def projects_document(user) -> dict | None:
    """``projects.json`` of the ZIP export, or None for a user without projects."""
    order = Prefetch("files", queryset=Attachment.objects.order_by("id"))
    projects = list(Project.objects.for_user(user).for_sidebar().prefetch_related(order))
    if not projects:
        return None
    return {"format": FORMAT, "projects": [{**entry(p), "files": _file_entries(p)} for p in projects]}


@dataclass
class ProjectSpec:
    key: str
    fields: dict
    files: list[tuple[str, bytes]] = field(default_factory=list)


def is_projects_document(document) -> bool:
    return isinstance(document, dict) and document.get("format") == FORMAT


def parse(value, where: str, *, with_files: bool = False) -> ProjectSpec | None:
    """One project entry of a file (None: no project); ``BadProject`` naming the field when malformed."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise BadProject(f"'{where}' must be an object", where)
    try:
        fields = changes.check_fields({k: value[k] for k in changes.FIELDS if k in value}, creating=True)
    except InvalidChange as exc:
        raise BadProject(f"'{where}.{exc.field}': {exc}", f"{where}.{exc.field}") from None
    source_id, created = value.get("id"), value.get("created_at")
    created_at = parse_datetime(created) if isinstance(created, str) else None
    known = isinstance(source_id, int) and not isinstance(source_id, bool) and isinstance(created_at, datetime)
    key = f"kimichat:{source_id}:{created_at.isoformat()}"[:KEY_CHARS] if known else ""
    if known:
        fields["created_at"] = created_at
    try:
        found = attachment_archive.parse_entries(value.get("files"), f"{where}.files") if with_files else []
    except ValueError as exc:
        raise BadProject(str(exc), f"{where}.files") from None
    return ProjectSpec(key=key, fields=fields, files=found)


def parse_document(document) -> list[ProjectSpec]:
    projects = document.get("projects")
    if not isinstance(projects, list):
        raise BadProject(f"'{FILENAME}.projects' must be a list", "projects")
    return [parse(value, f"projects[{index}]", with_files=True) for index, value in enumerate(projects)]


def store(user, specs: list[ProjectSpec]) -> list[int]:
    """The project of each spec, in order: the one an earlier import made (same key), else a new one with its files.
    Specs with the same key share one project (the entry with files, from projects.json, is the one created); a
    spec without a key gets a new project."""
    chosen: dict[str, ProjectSpec] = {}
    for spec in specs:
        if spec.key and (spec.key not in chosen or (spec.files and not chosen[spec.key].files)):
            chosen[spec.key] = spec
    found = dict(Project.objects.for_user(user).filter(import_key__in=list(chosen)).values_list("import_key", "id"))
    for key, spec in chosen.items():
        if key not in found:
            found[key] = _create(user, spec, key).pk
    return [found[spec.key] if spec.key else _create(user, spec, "").pk for spec in specs]


def _create(user, spec: ProjectSpec, key: str) -> Project:
    with transaction.atomic():
        last = Project.objects.for_user(user).order_by("-position").values_list("position", flat=True).first()
        project = Project.objects.create(
            owner=user,
            position=0 if last is None else last + 1,
            import_key=key,
            **spec.fields,
        )
    try:
        for name, data in spec.files:
            files.add_file(project, name=name, data=data)
    except AttachmentRefused:
        project.delete()  # its files (and their blobs) go with it
        raise
    return project
