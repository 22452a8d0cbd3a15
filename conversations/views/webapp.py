"""The web app manifest: KimiChat installs as an app (Chrome, Edge, Android, iOS "Add to Home Screen").

A view, not a static file: the icons' URLs come from ``static()`` (hashed names once collectstatic has run) and the
name is translated. Public: browsers fetch a manifest without cookies. No service worker: Chromium has not needed
one to install an app since version 108 on phones and 112 on desktops, and an answer cannot work offline anyway.
"""

from __future__ import annotations

import json

from django.contrib.auth.decorators import login_not_required
from django.http import HttpResponse
from django.templatetags.static import static
from django.utils.translation import gettext as _
from django.views.decorators.cache import cache_control
from django.views.decorators.http import require_GET
from django.views.decorators.vary import vary_on_headers

THEME_LIGHT = "#ffffff"  # the page background (static/css/app.css --bg); the dark one is in the page's meta tags


def _icon(path: str, sizes: str, kind: str, *, purpose: str = "any") -> dict:
    return {"src": static(path), "sizes": sizes, "type": kind, "purpose": purpose}


@login_not_required
@require_GET
@cache_control(public=True, max_age=86400)
@vary_on_headers("Accept-Language", "Cookie")
def manifest(request):
    body = {
        "name": "KimiChat",
        "short_name": "KimiChat",
        "description": _("Chat with Kimi models"),
        "id": "/",
        "start_url": "/",
        "scope": "/",
        "display": "standalone",
        "background_color": THEME_LIGHT,
        "theme_color": THEME_LIGHT,
        "lang": request.LANGUAGE_CODE,
        "icons": [
            _icon("img/icon-192.png", "192x192", "image/png"),
            _icon("img/icon-512.png", "512x512", "image/png"),
            # Full-bleed, the K inside the safe zone (the middle 80%) that every mask shape keeps.
            _icon("img/icon-maskable-512.png", "512x512", "image/png", purpose="maskable"),
            _icon("img/favicon.svg", "any", "image/svg+xml"),
        ],
    }
    return HttpResponse(json.dumps(body, ensure_ascii=False), content_type="application/manifest+json")
