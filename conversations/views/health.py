"""Probes for load balancers and orchestrators: /healthz (the process answers) and /readyz (its backends do)."""

from __future__ import annotations

import time

from django.conf import settings
from django.contrib.auth.decorators import login_not_required
from django.db import connection
from django.http import JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET


@login_not_required
@never_cache
@require_GET
def healthz(request):
    return JsonResponse({"status": "ok"})


def _check(probe) -> dict:
    started = time.monotonic()
    try:
        probe()
    except Exception as exc:  # noqa: BLE001 - any failure means "not ready"; the type says why, no details leak
        return {"ok": False, "error": type(exc).__name__}
    return {"ok": True, "ms": round((time.monotonic() - started) * 1000, 1)}


def _database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()


def _redis() -> None:
    import redis

    client = redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=2, socket_timeout=2)
    try:
        client.ping()
    finally:
        client.close()


@login_not_required
@never_cache
@require_GET
def readyz(request):
    checks = {"database": _check(_database)}
    if settings.REDIS_URL:
        checks["redis"] = _check(_redis)
    ready = all(check["ok"] for check in checks.values())
    return JsonResponse({"status": "ok" if ready else "unavailable", "checks": checks}, status=200 if ready else 503)
