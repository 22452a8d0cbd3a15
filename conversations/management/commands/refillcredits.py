"""``manage.py refillcredits``: grant the scheduled refills that are due (services/billing/refills.py).

Safe to run as often as wanted and from several places at once (cron and the workers): each schedule's period is
granted to each user once. A run after missed periods grants the current one only."""

from django.core.management.base import BaseCommand, CommandError

from conversations.services.billing import refills
from conversations.services.billing.credit_format import format_credits


class Command(BaseCommand):
    help = "Grant the refills of the current day, week or month that have not been granted yet (idempotent)."

    def handle(self, *args, **options):
        report = refills.run_refills()
        self.stdout.write(
            f"Refilled {report.granted} users with {format_credits(report.credits)} credits; "
            f"{report.already_full} already at their level, {report.already_done} already refilled this period."
        )
        if report.errors:
            raise CommandError("; ".join(report.errors))
