from django.urls import path

from conversations.views import apikeys, chat, shared, usage, webapp

urlpatterns = [
    path("", chat.chat, name="chat"),
    path("c/<int:conversation_id>/", chat.chat, name="conversation"),
    path("s/<str:token>/", shared.shared_conversation, name="shared-conversation"),
    path("usage/", usage.usage, name="usage"),
    path("keys/", apikeys.api_keys, name="api-keys"),
    path("manifest.webmanifest", webapp.manifest, name="webmanifest"),
]
