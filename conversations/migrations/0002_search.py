"""Full-text search over message contents (see docs/api.md, "Search").

PostgreSQL: a stored generated column ``content_search = to_tsvector('simple', content)`` with a GIN index; the model
state does not know the column (Django never reads or writes it). Changing the type of ``content`` in a later
migration would first need the column dropped (PostgreSQL refuses to retype a column a generated one depends on).
SQLite: an FTS5 external-content table with the trigram tokenizer (substring matching, which also works for Chinese
text), kept in step with conversations_message by three triggers.

Raw SQL chosen by vendor, so the model state does not change and each database only gets its own objects.

SQLite caveat: Django rebuilds a table (create new, copy, drop old, rename) for many ALTERs on SQLite, and dropping
conversations_message drops these triggers. A later migration that alters Message must create them again (0003's
``forward`` holds the current ones); tests/test_search.py checks the triggers exist after all migrations so that
cannot go unseen.
"""

from django.db import migrations

# Spelled out rather than formatted in: these are fixed statements, nothing in them comes from input.
SQLITE_CREATE = [
    # External content: the text lives once, in conversations_message; the FTS table holds only the index.
    "CREATE VIRTUAL TABLE IF NOT EXISTS conversations_message_fts USING fts5("
    "content, content='conversations_message', content_rowid='id', tokenize='trigram')",
    "CREATE TRIGGER IF NOT EXISTS conversations_message_fts_insert AFTER INSERT ON conversations_message BEGIN "
    "INSERT INTO conversations_message_fts(rowid, content) VALUES (new.id, new.content); END",
    "CREATE TRIGGER IF NOT EXISTS conversations_message_fts_delete AFTER DELETE ON conversations_message BEGIN "
    "INSERT INTO conversations_message_fts(conversations_message_fts, rowid, content) "
    "VALUES ('delete', old.id, old.content); END",
    # Only when the text changes: status and usage updates of a finished answer do not touch the index.
    "CREATE TRIGGER IF NOT EXISTS conversations_message_fts_update AFTER UPDATE OF content ON conversations_message "
    "BEGIN "
    "INSERT INTO conversations_message_fts(conversations_message_fts, rowid, content) "
    "VALUES ('delete', old.id, old.content); "
    "INSERT INTO conversations_message_fts(rowid, content) VALUES (new.id, new.content); END",
    # Index the rows that existed before this migration.
    "INSERT INTO conversations_message_fts(conversations_message_fts) VALUES ('rebuild')",
]
SQLITE_DROP = [
    "DROP TRIGGER IF EXISTS conversations_message_fts_insert",
    "DROP TRIGGER IF EXISTS conversations_message_fts_delete",
    "DROP TRIGGER IF EXISTS conversations_message_fts_update",
    "DROP TABLE IF EXISTS conversations_message_fts",
]

# A stored generated column rather than an index on the expression alone: a search that must recheck rows (phrases,
# -exclusions) or that walks the newest messages first then reads the stored vector instead of re-parsing every
# message's text, which measured 20-30x faster on 100,000 messages. Django's models never see the column.
POSTGRES_CREATE = [
    "ALTER TABLE conversations_message ADD COLUMN IF NOT EXISTS content_search tsvector "
    "GENERATED ALWAYS AS (to_tsvector('simple'::regconfig, content)) STORED",
    "CREATE INDEX IF NOT EXISTS msg_content_fts ON conversations_message USING GIN (content_search)",
]
POSTGRES_DROP = [
    "DROP INDEX IF EXISTS msg_content_fts",
    "ALTER TABLE conversations_message DROP COLUMN IF EXISTS content_search",
]


def _run(schema_editor, statements):
    with schema_editor.connection.cursor() as cursor:
        for statement in statements:
            cursor.execute(statement)


def forward(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    if vendor == "sqlite":
        _run(schema_editor, SQLITE_CREATE)
    elif vendor == "postgresql":
        _run(schema_editor, POSTGRES_CREATE)


def backward(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    if vendor == "sqlite":
        _run(schema_editor, SQLITE_DROP)
    elif vendor == "postgresql":
        _run(schema_editor, POSTGRES_DROP)


class Migration(migrations.Migration):
    dependencies = [
        ("conversations", "0001_initial"),
    ]

    operations = [
        migrations.RunPython(forward, backward, elidable=False),
    ]
