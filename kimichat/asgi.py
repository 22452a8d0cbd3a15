"""ASGI entry point: HTTP through Django (the user API's requests sharing one thread for their synchronous steps:
kimichat/request_threads.py), websockets through Channels (session auth; scheme, host and port of the origin
checked: kimichat/websocket_origin.py)."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "kimichat.settings")

from kimichat.request_threads import get_asgi_application  # noqa: E402

# Django must be set up before anything imports models (the consumers do).
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from conversations.routing import websocket_urlpatterns  # noqa: E402
from conversations.services.chat.startup import WithBackgroundTasks  # noqa: E402
from kimichat.websocket_origin import SameOriginValidator  # noqa: E402

# WithBackgroundTasks: heartbeats, the reaper and checkpoints run from the worker's start, not its first socket.
application = WithBackgroundTasks(
    ProtocolTypeRouter(
        {
            "http": django_asgi_app,
            "websocket": SameOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
        }
    )
)
