"""``{{ snapshot|rate_limit_rows }}``: a provider snapshot's X-RateLimit-* headers as (name, value, reset moment)
rows, sorted by name; the reset header's moment is a datetime (shown as a time, never as a raw epoch)."""

from django import template

from conversations.kimi.error_mapping import reset_moment

register = template.Library()


@register.filter
def rate_limit_rows(snapshot) -> list[tuple[str, str, object]]:
    headers = getattr(snapshot, "rate_limit", None)
    if not isinstance(headers, dict):
        return []
    return [
        (name, value, reset_moment(str(value), snapshot.recorded_at) if name.lower() == "x-ratelimit-reset" else None)
        for name, value in sorted(headers.items())
    ]
