"""WSGI entry point (admin and pages only: the chat needs ASGI for its websocket)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "kimichat.settings")
application = get_wsgi_application()
