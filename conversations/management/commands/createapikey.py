"""``manage.py createapikey USERNAME [--name NAME]``: make a personal API key for /v1/ and print its secret (once)."""

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from conversations.services.apikeys import keys


class Command(BaseCommand):
    help = "Create a personal API key for KimiChat's own API (/v1/) and print it; it is not shown again."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--name", default="", help="a label to tell the key apart on the keys page")

    def handle(self, *args, username, name, **options):
        User = get_user_model()
        try:
            user = User.objects.get(**{User.USERNAME_FIELD: username})
        except User.DoesNotExist:
            raise CommandError(f"no user named {username!r}")
        try:
            new = keys.create(user, name=name)
        except ValueError as exc:
            raise CommandError(str(exc))
        self.stdout.write(new.secret)
