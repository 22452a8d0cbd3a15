"""A conversation's branches: its messages form a tree (``Message.parent``); the active branch is the path from the
root to one leaf, and every message off it carries ``superseded_by`` (so ``Message.objects.current()`` is that path,
and a reload shows the branch last chosen).

An edit of any user message starts a branch beside it (``sending.prepare_edit``), a regenerate adds a version of the
last answer, and ``switch_branch`` makes another version active with the continuation it had when it was last shown.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.db import transaction
from django.db.models import Q
from django.db.models.expressions import RawSQL

from conversations.models import Conversation, Message


class BranchNotFound(Exception):
    """The message is not one of the conversation's."""


class BranchBusy(Exception):
    """An answer is being written in the conversation: the branch shown cannot change under it."""


_PATH_SQL = (
    "WITH RECURSIVE path(id, parent_id) AS ("
    "SELECT id, parent_id FROM conversations_message WHERE id = %s "
    "UNION ALL SELECT m.id, m.parent_id FROM conversations_message m JOIN path ON m.id = path.parent_id"
    ") SELECT id FROM path"
)


def path_to(leaf_id: int) -> RawSQL:
    """The ids of the messages from the root to ``leaf_id``, as a subquery (``filter(id__in=path_to(…))``): one
    recursive query walking ``parent`` by primary key, whatever the size of the rest of the tree."""
    return RawSQL(_PATH_SQL, (leaf_id,))  # noqa: S611 - constant SQL, the id a parameter


def link_parents(rows) -> dict:
    """``rows``: one thread's messages stored without a tree, as ``(id, role, superseded_by id)``, oldest first.
    Returns ``{id: parent id}`` as the send path built the thread: a new message follows the newest one; a
    replacement takes the place of what it replaced (a regenerated answer answers the same question; an edited
    question follows the same turn, and the answer after it answers the new question). Migration 0014 does the same
    for stored threads."""
    replaced: dict = {}  # successor id -> an earlier version it replaced
    for message_id, _role, successor in rows:
        if successor is not None:
            replaced.setdefault(successor, message_id)
    role_of = {message_id: role for message_id, role, _successor in rows}
    parent: dict = {}
    tail = None
    for message_id, role, _successor in rows:
        earlier = replaced.get(message_id)
        if earlier is None or earlier not in parent:
            parent[message_id] = tail
        elif role == "assistant" and tail is not None and role_of[tail] == "user" and tail != parent[earlier]:
            parent[message_id] = tail  # the answer to an edited question
        else:
            parent[message_id] = parent[earlier]
        tail = message_id
    return parent


def link_linear(ids: list[int]) -> None:
    """Make messages stored without a tree (an export of before branches, a list of rows) one thread: each follows
    the one before it. ``ids`` oldest first."""
    rows = [Message(pk=message_id, parent_id=parent_id) for parent_id, message_id in zip(ids, ids[1:], strict=False)]
    Message.objects.bulk_update(rows, ["parent"], batch_size=500)


def versions_of(conversation_id: int, messages: Iterable[Message]) -> dict[int, dict]:
    """``{message id: {"index", "count", "previous", "next"}}`` for each of ``messages`` that has other versions
    (messages with the same parent): where it stands among them, oldest first, and the ids of its neighbours (what
    the ‹ › arrows switch to). One query, for the messages given only."""
    messages = list(messages)
    parents = {m.parent_id for m in messages if m.parent_id is not None}
    roots = any(m.parent_id is None for m in messages)
    if not messages:
        return {}
    siblings = Q(parent_id__in=parents) if parents else Q(pk__in=[])
    if roots:
        siblings |= Q(parent__isnull=True)
    by_parent: dict[int | None, list[int]] = {}
    rows = Message.objects.filter(siblings, conversation_id=conversation_id).order_by("id")
    for message_id, parent_id in rows.values_list("id", "parent_id"):
        by_parent.setdefault(parent_id, []).append(message_id)
    found = {}
    for message in messages:
        ids = by_parent.get(message.parent_id, [])
        if len(ids) > 1 and message.pk in ids:
            index = ids.index(message.pk)
            found[message.pk] = {
                "index": index,
                "count": len(ids),
                "previous": ids[index - 1] if index else None,
                "next": ids[index + 1] if index + 1 < len(ids) else None,
            }
    return found


def switch_branch(conversation: Conversation, message_id: int) -> list[int]:
    """Make the branch through ``message_id`` the active one: the path to it, then, below it, the continuation shown
    when it was last active (the newest one where that is not known). Returns the new path's ids, root first.

    Three queries after the row lock (the tree's ids, then at most two updates), whatever the number of branches.
    """
    with transaction.atomic():
        locked = Conversation.objects.select_for_update().filter(pk=conversation.pk).first()
        if locked is None:
            raise BranchNotFound
        if locked.messages.in_progress().exists():
            raise BranchBusy
        rows = {
            message: (parent, marker)
            for message, parent, marker in locked.messages.values_list("id", "parent_id", "superseded_by_id")
        }
        if message_id not in rows:
            raise BranchNotFound
        path = _path(rows, message_id) + _continuation(rows, message_id)
        on_path = set(path)
        current = {message for message, (_parent, marker) in rows.items() if marker is None}
        coming, leaving = sorted(on_path - current), sorted(current - on_path)
        # ids grow from root to leaf: the first message of the path that was not shown is where the branches part.
        fork = coming[0] if coming else message_id
        if leaving:
            locked.messages.filter(pk__in=leaving).update(superseded_by=fork)
        if coming:
            locked.messages.filter(pk__in=coming).update(superseded_by=None)
    return path


def _path(rows: dict, message_id: int) -> list[int]:
    path, node = [], message_id
    while node is not None and node in rows and len(path) <= len(rows):
        path.append(node)
        node = rows[node][0]
    return path[::-1]


def _continuation(rows: dict, message_id: int) -> list[int]:
    """Below ``message_id``: at each turn the child still shown (on the active branch), else the one that left the
    active branch together with ``message_id`` (a switch or an edit marks a whole branch with one message), else the
    newest."""
    children: dict[int, list[int]] = {}
    for message, (parent, _marker) in rows.items():
        if parent is not None:
            children.setdefault(parent, []).append(message)
    marker = rows[message_id][1]
    found, node = [], message_id
    while children.get(node) and len(found) < len(rows):
        kids = children[node]
        node = next(
            (k for k in kids if rows[k][1] is None),
            next((k for k in kids if marker is not None and rows[k][1] == marker), max(kids)),
        )
        found.append(node)
    return found
