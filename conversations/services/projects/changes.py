"""Creating, changing, reordering and deleting projects, and filing a chat under one. Every function takes objects
already read through ``for_user`` (or checks the id against the owner itself): another user's project is a missing
one, and a chat cannot be filed under it."""

from __future__ import annotations

import re

from django.db import transaction
from django.db.models import Case, IntegerField, Value, When
from django.utils import timezone
from django.utils.translation import gettext as _

from conversations.models import Conversation, Message, Project
from conversations.services.history.changes import ConversationBusy, InvalidChange
from conversations.services.projects.membership import ProjectNotFound
from conversations.services.text import NulCharacter, refuse_nul

NAME_MAX_CHARS = 100
EMOJI_MAX_CHARS = 16
INSTRUCTIONS_MAX_CHARS = 20_000  # as a chat's system prompt
MAX_PROJECTS = 500  # per user: the sidebar lists them all
FIELDS = frozenset({"name", "color", "emoji", "instructions", "archived"})
COLOR = re.compile(r"#[0-9a-fA-F]{6}")


class TooManyProjects(Exception):
    pass


def _text(field: str, value: str) -> str:
    try:
        return refuse_nul(value, field)
    except NulCharacter as exc:
        raise InvalidChange(field, str(exc)) from None


def check_fields(body, *, creating: bool) -> dict:
    """Validate a create or PATCH body; returns field → value. Raises ``InvalidChange`` on the first problem."""
    if not isinstance(body, dict):
        raise InvalidChange("", _("The request body must be a JSON object."))
    unknown = sorted(set(body) - FIELDS)
    if unknown:
        raise InvalidChange(unknown[0], _("Unknown fields: %(names)s.") % {"names": ", ".join(unknown)})
    if creating and "name" not in body:
        raise InvalidChange("name", _("A project needs a name."))
    changes = {}
    if "name" in body:
        name = body["name"]
        if not isinstance(name, str) or not 1 <= len(name.strip()) <= NAME_MAX_CHARS:
            raise InvalidChange(
                "name",
                _("The project name must have 1 to %(maximum)d characters.") % {"maximum": NAME_MAX_CHARS},
            )
        changes["name"] = _text("name", " ".join(name.split()))
    if "color" in body:
        color = body["color"]
        if color is None or color == "":
            changes["color"] = ""
        elif not isinstance(color, str) or not COLOR.fullmatch(color):
            raise InvalidChange("color", _("The colour must be written #rrggbb (for example #3b82f6), or empty."))
        else:
            changes["color"] = color.lower()
    if "emoji" in body:
        emoji = body["emoji"]
        if emoji is None:
            emoji = ""
        if (
            not isinstance(emoji, str)
            or len(emoji.strip()) > EMOJI_MAX_CHARS
            or any(ch.isspace() for ch in emoji.strip())
        ):
            raise InvalidChange("emoji", _("The emoji must be one emoji (or empty)."))
        changes["emoji"] = _text("emoji", emoji.strip())
    if "instructions" in body:
        instructions = body["instructions"]
        if not isinstance(instructions, str) or len(instructions) > INSTRUCTIONS_MAX_CHARS:
            raise InvalidChange(
                "instructions",
                _("The instructions must be text of at most %(maximum)s characters.")
                % {"maximum": f"{INSTRUCTIONS_MAX_CHARS:,}"},
            )
        changes["instructions"] = _text("instructions", instructions)
    if "archived" in body:
        if not isinstance(body["archived"], bool):
            raise InvalidChange("archived", _("Archived must be true or false."))
        changes["archived"] = body["archived"]
    return changes


@transaction.atomic
def create_project(user, body) -> Project:
    """A new project, last in the user's order."""
    fields = check_fields(body, creating=True)
    projects = Project.objects.for_user(user)
    if projects.count() >= MAX_PROJECTS:
        raise TooManyProjects(_("You can have at most %(limit)s projects.") % {"limit": MAX_PROJECTS})
    last = projects.order_by("-position").values_list("position", flat=True).first()
    return Project.objects.create(owner=user, position=0 if last is None else last + 1, **fields)


def update_project(project: Project, body) -> Project:
    changes = check_fields(body, creating=False)
    if changes:
        for name, value in changes.items():
            setattr(project, name, value)
        project.updated_at = timezone.now()
        project.save(update_fields=[*sorted(changes), "updated_at"])
    return project


def check_order(user, ids) -> list[int]:
    if not isinstance(ids, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
        raise InvalidChange("ids", _("'ids' must be a list of project ids."))
    if len(set(ids)) != len(ids):
        raise InvalidChange("ids", _("'ids' names a project twice."))
    if len(ids) > MAX_PROJECTS:
        raise InvalidChange("ids", _("'ids' names more projects than anyone can have."))
    owned = set(Project.objects.for_user(user).filter(pk__in=ids).values_list("pk", flat=True))
    if missing := [i for i in ids if i not in owned]:
        raise ProjectNotFound(missing[0])
    return ids


@transaction.atomic
def reorder(user, ids) -> None:
    """The listed projects first, in the order given; the others keep their order after them. One UPDATE."""
    ids = check_order(user, ids)
    rest = list(Project.objects.for_user(user).exclude(pk__in=ids).for_sidebar().values_list("pk", flat=True))
    order = [*ids, *rest]
    whens = [When(pk=pk, then=Value(position)) for position, pk in enumerate(order)]
    if whens:
        Project.objects.for_user(user).filter(pk__in=order).update(position=Case(*whens, output_field=IntegerField()))


@transaction.atomic
def delete_project(project: Project, *, with_chats: bool) -> int:
    """Delete the project and its files; its chats too when ``with_chats`` (refused while an answer is being written
    in one of them), else they stay, out of any project. Returns how many chats were deleted."""
    locked = Project.objects.select_for_update().get(pk=project.pk)
    deleted = 0
    if with_chats:
        chats = Conversation.objects.select_for_update().filter(project=locked)
        if Message.objects.filter(conversation__in=chats, role=Message.Role.ASSISTANT).in_progress().exists():
            raise ConversationBusy
        deleted = chats.count()
        chats.delete()
    locked.delete()  # on_delete=SET_NULL: the chats left are out of any project
    return deleted
