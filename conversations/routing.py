from django.urls import path

from conversations.consumers.chat import ChatConsumer

websocket_urlpatterns = [path("ws/chat/", ChatConsumer.as_asgi())]
