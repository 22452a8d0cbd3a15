"""The operators' CSV reports page (/admin/reports/): the ledger, and usage per user, group, model or day, for a
date range (services/billing/reports.py), streamed to the browser.

Under ASGI (daphne) the response's content is an async iterator that pulls each chunk from the database in the
request's own thread: Django would read a synchronous iterator into a list first (StreamingHttpResponse must
consume synchronous iterators to serve them asynchronously), which is the whole report in memory."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

from asgiref.sync import sync_to_async
from django import forms
from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.core.handlers.asgi import ASGIRequest
from django.http import StreamingHttpResponse
from django.template.response import TemplateResponse
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from conversations.admin.views import can_view_dashboard
from conversations.services.billing import reports

_END = object()


class ReportForm(forms.Form):
    report = forms.ChoiceField(label=gettext_lazy("Report"), choices=list(reports.REPORTS.items()))
    start = forms.CharField(
        label=gettext_lazy("First day"), widget=forms.DateInput(attrs={"type": "date"}), help_text="YYYY-MM-DD"
    )
    end = forms.CharField(
        label=gettext_lazy("Last day"),
        widget=forms.DateInput(attrs={"type": "date"}),
        help_text=gettext_lazy("Included. Days are those of the server's time zone."),
    )

    def clean(self):
        cleaned = super().clean()
        if self.errors:
            return cleaned
        try:
            cleaned["period"] = reports.parse_range(cleaned.get("start"), cleaned.get("end"))
        except reports.ReportError as exc:
            self.add_error(exc.field, str(exc))
        return cleaned


async def _in_request_thread(chunks: Iterator[str]) -> AsyncIterator[str]:
    """Each chunk computed by sync_to_async in the request's thread (its database connection and cursor)."""
    while True:
        chunk = await sync_to_async(next)(chunks, _END)
        if chunk is _END:
            return
        yield chunk


def streaming_csv(request, name: str, rows: Iterator[list]) -> StreamingHttpResponse:
    chunks = reports.csv_chunks(rows)
    content = _in_request_thread(chunks) if isinstance(request, ASGIRequest) else chunks
    response = StreamingHttpResponse(content, content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    response["Cache-Control"] = "no-store"
    return response


def reports_page(request):
    """Wrapped in ``admin.site.admin_view`` (staff login); needs the dashboard's permission (the ledger's view)."""
    if not can_view_dashboard(request.user):
        raise PermissionDenied
    status = 200
    if "report" in request.GET:
        form = ReportForm(request.GET)
        if form.is_valid():
            name, period = form.cleaned_data["report"], form.cleaned_data["period"]
            return streaming_csv(request, reports.filename(name, period), reports.report_rows(name, period))
        status = 400
    else:
        today = timezone.localdate()
        form = ReportForm(initial={"report": "users", "start": today.replace(day=1), "end": today})
    context = {**admin.site.each_context(request), "title": _("Reports"), "form": form}
    return TemplateResponse(request, "admin/kimichat_reports.html", context, status=status)
