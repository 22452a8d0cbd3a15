"""``manage.py grantcredits <username> <amount> [--note ...]``: add credits to a user's balance."""

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from conversations.services.billing import credits
from conversations.services.billing.credit_format import format_credits


class Command(BaseCommand):
    help = "Grant credits to a user (a ledger row of kind 'grant')."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("amount", help="a positive number of credits, up to 6 decimal places")
        parser.add_argument("--note", default="", help="why, shown in the user's transactions")

    def handle(self, *args, username, amount, note, **options):
        User = get_user_model()
        try:
            user = User.objects.get(**{User.USERNAME_FIELD: username})
        except User.DoesNotExist:
            raise CommandError(f"no user named {username!r}")
        try:
            row = credits.grant(user, amount, note=note or "granted with manage.py grantcredits")
        except credits.CreditError as exc:
            raise CommandError(str(exc))
        amount, balance = format_credits(row.amount), format_credits(row.balance_after)
        self.stdout.write(f"Granted {amount} credits to {username}; balance is now {balance}.")
