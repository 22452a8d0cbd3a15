"""``manage.py checkcredits [--user NAME]``: every balance must equal the sum of its ledger; exits 1 if not."""

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from conversations.services.billing import credits


class Command(BaseCommand):
    help = "Check that each credit balance equals the sum of its ledger rows."

    def add_arguments(self, parser):
        parser.add_argument("--user", help="check only this username")

    def handle(self, *args, user=None, **options):
        target = None
        if user is not None:
            User = get_user_model()
            target = User.objects.filter(**{User.USERNAME_FIELD: user}).first()
            if target is None:
                raise CommandError(f"no user named {user!r}")
        problems = credits.verify_ledger(target)
        for problem in problems:
            self.stderr.write(str(problem))
        if problems:
            raise CommandError(f"{len(problems)} account(s) do not match their ledger")
        self.stdout.write("Every balance matches its ledger.")
