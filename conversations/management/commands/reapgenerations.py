from django.conf import settings
from django.core.management.base import BaseCommand

from conversations.services.chat.reaper import reap_all_sync
from conversations.services.history.temporary import delete_abandoned


class Command(BaseCommand):
    help = (
        "Mark answers left 'streaming' by a server that is no longer running as 'interrupted', keeping their "
        "checkpointed text. Run it before starting the only worker (make run does); with several workers sharing "
        "Redis, the workers' own reaper does this instead."
    )

    def handle(self, *args, **options):
        count = reap_all_sync()
        self.stdout.write(f"{count} interrupted answer(s) marked.")
        deleted = delete_abandoned(settings.KIMICHAT_TEMPORARY_CHAT_GRACE)
        self.stdout.write(f"{deleted} closed temporary chat(s) deleted.")
