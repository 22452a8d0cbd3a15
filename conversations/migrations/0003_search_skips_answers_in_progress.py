"""The search index leaves out answers in progress (``pending``, ``streaming``); an answer enters it when it ends.

Every few seconds a streaming answer's text is checkpointed into its row. With 0002's index that rewrote the answer's
index entry each time (SQLite: delete and re-insert every trigram of the text so far; PostgreSQL: a new tsvector and
GIN entries), so the index work of one answer grew with the square of its length, on the database thread that every
worker's sends share. Search is over past conversations: an answer is found once it is stored, not while it streams.

SQLite: the triggers keep "a row is in the FTS index exactly when its status is final":
- insert: a row created final (user messages, imports) is indexed; a placeholder (streaming) is not;
- finish: status moves from in progress to final: its text so far is indexed (the same UPDATE that stores the final
  text, or the reaper's);
- update: the text of a final row changes: re-indexed (FTS5 external content needs the old text to delete it);
- delete: a final row is removed from the index.
The index is rebuilt from the final rows (``rebuild`` would index all rows, including the ones in progress).

PostgreSQL: the generated column is NULL while the answer is in progress (NULLs are not indexed); it is recomputed
on every UPDATE of the row, so the final store fills it.
"""

import importlib

from django.db import migrations

# Spelled out rather than formatted from input: fixed statements.
SQLITE_FORWARD = [
    "DROP TRIGGER IF EXISTS conversations_message_fts_insert",
    "DROP TRIGGER IF EXISTS conversations_message_fts_delete",
    "DROP TRIGGER IF EXISTS conversations_message_fts_update",
    "DROP TRIGGER IF EXISTS conversations_message_fts_finish",
    "CREATE TRIGGER conversations_message_fts_insert AFTER INSERT ON conversations_message "
    "WHEN new.status NOT IN ('pending', 'streaming') BEGIN "
    "INSERT INTO conversations_message_fts(rowid, content) VALUES (new.id, new.content); END",
    "CREATE TRIGGER conversations_message_fts_delete AFTER DELETE ON conversations_message "
    "WHEN old.status NOT IN ('pending', 'streaming') BEGIN "
    "INSERT INTO conversations_message_fts(conversations_message_fts, rowid, content) "
    "VALUES ('delete', old.id, old.content); END",
    "CREATE TRIGGER conversations_message_fts_update AFTER UPDATE OF content ON conversations_message "
    "WHEN old.status NOT IN ('pending', 'streaming') AND new.status NOT IN ('pending', 'streaming') BEGIN "
    "INSERT INTO conversations_message_fts(conversations_message_fts, rowid, content) "
    "VALUES ('delete', old.id, old.content); "
    "INSERT INTO conversations_message_fts(rowid, content) VALUES (new.id, new.content); END",
    "CREATE TRIGGER conversations_message_fts_finish AFTER UPDATE OF status ON conversations_message "
    "WHEN old.status IN ('pending', 'streaming') AND new.status NOT IN ('pending', 'streaming') BEGIN "
    "INSERT INTO conversations_message_fts(rowid, content) VALUES (new.id, new.content); END",
    "INSERT INTO conversations_message_fts(conversations_message_fts) VALUES ('delete-all')",
    "INSERT INTO conversations_message_fts(rowid, content) "
    "SELECT id, content FROM conversations_message WHERE status NOT IN ('pending', 'streaming')",
]
# Back to 0002's triggers (which index every row), and an index of every row.
SQLITE_BACKWARD = [
    "DROP TRIGGER IF EXISTS conversations_message_fts_insert",
    "DROP TRIGGER IF EXISTS conversations_message_fts_delete",
    "DROP TRIGGER IF EXISTS conversations_message_fts_update",
    "DROP TRIGGER IF EXISTS conversations_message_fts_finish",
]

POSTGRES_FORWARD = [
    "ALTER TABLE conversations_message DROP COLUMN IF EXISTS content_search",  # drops msg_content_fts with it
    "ALTER TABLE conversations_message ADD COLUMN content_search tsvector GENERATED ALWAYS AS ("
    "CASE WHEN status IN ('pending', 'streaming') THEN NULL ELSE to_tsvector('simple'::regconfig, content) END) STORED",
    "CREATE INDEX msg_content_fts ON conversations_message USING GIN (content_search)",
]
POSTGRES_BACKWARD = [
    "ALTER TABLE conversations_message DROP COLUMN IF EXISTS content_search",
]


def _search_0002():
    return importlib.import_module("conversations.migrations.0002_search")  # its name starts with a digit: no import statement can name it


def forward(apps, schema_editor):
    run = _search_0002()._run
    vendor = schema_editor.connection.vendor
    if vendor == "sqlite":
        run(schema_editor, SQLITE_FORWARD)
    elif vendor == "postgresql":
        run(schema_editor, POSTGRES_FORWARD)


def backward(apps, schema_editor):
    search_0002 = _search_0002()
    run = search_0002._run
    vendor = schema_editor.connection.vendor
    if vendor == "sqlite":
        run(schema_editor, SQLITE_BACKWARD)
        run(schema_editor, [s for s in search_0002.SQLITE_CREATE if "VIRTUAL TABLE" not in s])
        run(schema_editor, ["INSERT INTO conversations_message_fts(conversations_message_fts) VALUES ('delete-all')"])
        run(schema_editor, ["INSERT INTO conversations_message_fts(conversations_message_fts) VALUES ('rebuild')"])
    elif vendor == "postgresql":
        run(schema_editor, POSTGRES_BACKWARD)
        run(schema_editor, search_0002.POSTGRES_CREATE)


class Migration(migrations.Migration):
    dependencies = [
        ("conversations", "0002_search"),
    ]

    operations = [
        migrations.RunPython(forward, backward, elidable=False),
    ]
