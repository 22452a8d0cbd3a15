"""``manage.py ensureadmin``: the operator's first superuser, from ADMIN_USERNAME and ADMIN_PASSWORD_FILE (or
ADMIN_PASSWORD) and optionally ADMIN_EMAIL; does nothing once any superuser exists (run it at every start)."""

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from conversations.services.accounts.signup import ensure_admin
from kimichat.env import env_secret, env_str


class Command(BaseCommand):
    help = "Create the first superuser from ADMIN_USERNAME + ADMIN_PASSWORD_FILE, unless a superuser exists."

    def handle(self, *args, **options):
        try:
            result = ensure_admin(env_str("ADMIN_USERNAME"), env_secret("ADMIN_PASSWORD"), env_str("ADMIN_EMAIL"))
        except ValidationError as exc:
            raise CommandError("ADMIN_PASSWORD is refused: " + " ".join(exc.messages)) from None
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(result.reason)
