"""Conversation.reasoning_effort: kimi-k3's reasoning effort (low/high/max) as a conversation setting; null is the
model's default."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("conversations", "0003_search_skips_answers_in_progress"),
    ]

    operations = [
        migrations.AddField(
            model_name="conversation",
            name="reasoning_effort",
            field=models.CharField(blank=True, max_length=8, null=True),
        ),
    ]
