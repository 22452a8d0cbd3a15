"""``manage.py exportreport REPORT START END [--output FILE]``: the admin's CSV reports from the command line
(services/billing/reports.py), written as they are read."""

from django.core.management.base import BaseCommand, CommandError

from conversations.services.billing import reports


class Command(BaseCommand):
    help = "Write a CSV report (ledger, users, groups, models or days) for a range of days, YYYY-MM-DD, both included."

    def add_arguments(self, parser):
        parser.add_argument("report", help="one of: " + ", ".join(reports.REPORTS))
        parser.add_argument("start", help="the first day, YYYY-MM-DD")
        parser.add_argument("end", help="the last day, YYYY-MM-DD (included)")
        parser.add_argument("--output", "-o", help="a file to write (default: standard output)")

    def handle(self, *args, report, start, end, output, **options):
        try:
            name = reports.parse_report(report)
            period = reports.parse_range(start, end)
        except reports.ReportError as exc:
            raise CommandError(f"{exc.field}: {exc}") from None
        chunks = reports.csv_chunks(reports.report_rows(name, period), bom=False)
        if output:
            with open(output, "w", encoding="utf-8", newline="") as out:
                for chunk in chunks:
                    out.write(chunk)
        else:
            for chunk in chunks:
                self.stdout.write(chunk, ending="")
