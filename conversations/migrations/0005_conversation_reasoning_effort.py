"""Conversation.reasoning_effort: kimi-k3's reasoning effort (low/high/max) as a conversation setting; null is the
model's default.

Also (SQLite) an answer that goes back from a final status to ``streaming`` (a Continue) leaves the search index, so
that the index holds final rows only, as 0003 keeps it: without this trigger its old text stayed indexed, and the
``finish`` trigger then indexed the row a second time. (PostgreSQL's generated column already follows the status.)
"""

from django.db import migrations, models

SQLITE_FORWARD = [
    "DROP TRIGGER IF EXISTS conversations_message_fts_unfinish",
    "CREATE TRIGGER conversations_message_fts_unfinish AFTER UPDATE OF status ON conversations_message "
    "WHEN old.status NOT IN ('pending', 'streaming') AND new.status IN ('pending', 'streaming') BEGIN "
    "INSERT INTO conversations_message_fts(conversations_message_fts, rowid, content) "
    "VALUES ('delete', old.id, old.content); END",
]
SQLITE_BACKWARD = ["DROP TRIGGER IF EXISTS conversations_message_fts_unfinish"]


def _run_on_sqlite(statements):
    def run(apps, schema_editor):
        if schema_editor.connection.vendor == "sqlite":
            with schema_editor.connection.cursor() as cursor:
                for statement in statements:
                    cursor.execute(statement)

    return run


class Migration(migrations.Migration):
    dependencies = [
        ("conversations", "0004_ledger_keeps_model_and_tokens"),
    ]

    operations = [
        migrations.AddField(
            model_name="conversation",
            name="reasoning_effort",
            field=models.CharField(blank=True, max_length=8, null=True),
        ),
        migrations.RunPython(_run_on_sqlite(SQLITE_FORWARD), _run_on_sqlite(SQLITE_BACKWARD), elidable=False),
    ]
