"""Django admin for operators: users and their credits, conversations (behind a privacy permission), the ledger,
prices and the dashboard.

Every changelist runs a fixed number of queries whatever its length: related rows come through
``list_select_related`` and per-row figures are subquery annotations added in ``get_queryset``.

Importing the modules registers their ModelAdmins (Django autodiscovers ``conversations.admin``).
"""

from conversations.admin import (  # noqa: F401
    announcements,
    apikeys,
    billing,
    budgets,
    conversations,
    feedback,
    refills,
    signup,
    site,
    users,
)
