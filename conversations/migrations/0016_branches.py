"""Messages form a tree: each one points at the message it follows (``parent``).

Adding a nullable foreign key does not rebuild the table on SQLite, so the search triggers stay. The data step links
the existing threads: each message follows the one before it, and an earlier version (``superseded_by``) becomes a
sibling of the version that replaced it.
"""

import django.db.models.deletion
from django.db import migrations, models

BATCH = 1000


def link_parents(rows):
    """``rows``: one conversation's messages as ``(id, role, superseded_by_id)``, oldest first. Returns
    ``{id: parent_id}`` as the send path of that time built the thread: a new message follows the newest one; a
    replacement takes the place of what it replaced (a regenerated answer answers the same question; an edited
    question follows the same turn, and the answer after it answers the new question)."""
    replaced = {}  # successor id -> an earlier version it replaced
    for message_id, _role, successor in rows:
        if successor is not None:
            replaced.setdefault(successor, message_id)
    role_of = {message_id: role for message_id, role, _successor in rows}
    parent, tail = {}, None
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


def forward(apps, schema_editor):
    Message = apps.get_model("conversations", "Message")
    rows = Message.objects.order_by("conversation_id", "id").values_list(
        "conversation_id", "id", "role", "superseded_by_id"
    )
    pending, current, changed = [], None, []

    def flush_conversation():
        for message_id, parent_id in link_parents(pending).items():
            if parent_id is not None:
                changed.append(Message(pk=message_id, parent_id=parent_id))

    for conversation_id, message_id, role, successor in rows.iterator(chunk_size=BATCH):
        if conversation_id != current:
            flush_conversation()
            pending, current = [], conversation_id
        pending.append((message_id, role, successor))
        if len(changed) >= BATCH:
            Message.objects.bulk_update(changed, ["parent"], batch_size=BATCH)
            changed.clear()
    flush_conversation()
    Message.objects.bulk_update(changed, ["parent"], batch_size=BATCH)


class Migration(migrations.Migration):
    dependencies = [
        ("conversations", "0015_personalisation"),
    ]

    operations = [
        migrations.AddField(
            model_name="message",
            name="parent",
            field=models.ForeignKey(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="children",
                to="conversations.message",
            ),
        ),
        migrations.RunPython(forward, migrations.RunPython.noop, elidable=False),
    ]
