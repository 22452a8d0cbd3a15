"""What the ModelAdmins share: CSV export, read-only and content-privacy mixins, subquery totals."""

from __future__ import annotations

import csv

from django.contrib import admin
from django.contrib.auth import get_permission_codename
from django.db.models import BigIntegerField, Subquery, Value
from django.db.models.functions import Coalesce
from django.http import HttpResponse
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from conversations.services.billing.reports import csv_safe


def subquery_total(queryset, aggregate, *, group_by: str):
    """A correlated subquery: ``aggregate`` over ``queryset`` (already filtered on an OuterRef), grouped per row.

    Evaluated only for the rows of the page (no GROUP BY over the whole outer table), and 0 rather than NULL when
    there is nothing to aggregate.
    """
    total = queryset.order_by().values(group_by).annotate(total=aggregate).values("total")[:1]
    return Coalesce(Subquery(total), Value(0), output_field=BigIntegerField())


@admin.action(description=_("Export CSV"), permissions=["view"])
def export_csv(modeladmin, request, queryset):
    """The selected rows (or, with "select all", the whole filtered list) as CSV, in the changelist's order.

    Columns come from the admin's ``csv_columns``: (header, function of the row). A UTF-8 BOM lets Excel read
    non-ASCII text.
    """
    opts = modeladmin.model._meta
    stamp = timezone.localtime().strftime("%Y%m%d-%H%M%S")
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{opts.model_name}s-{stamp}.csv"'
    response.write("\ufeff")
    writer = csv.writer(response)
    writer.writerow([header for header, _getter in modeladmin.csv_columns])
    for row in queryset.iterator(chunk_size=2000):
        writer.writerow([csv_safe(getter(row)) for _header, getter in modeladmin.csv_columns])
    return response


class ReadOnlyAdminMixin:
    """Rows nobody edits by hand in the admin: no add, no change; read with the view permission."""

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


class ContentPrivacyMixin(ReadOnlyAdminMixin):
    """Reading what users wrote needs the model's own view permission (``view_conversation`` / ``view_message``).

    Django's default also lets the change permission read; here it does not, so the only way to read is an explicit
    grant of the view permission (superusers hold every permission).
    """

    def has_view_permission(self, request, obj=None):
        codename = get_permission_codename("view", self.opts)
        return request.user.has_perm(f"{self.opts.app_label}.{codename}")
