from django.urls import path

from conversations.views import announcements, apikeys, budget, chat, invites, shared, usage, webapp

urlpatterns = [
    path("", chat.chat, name="chat"),
    path("c/<int:conversation_id>/", chat.chat, name="conversation"),
    path("s/<str:token>/", shared.shared_conversation, name="shared-conversation"),
    path("usage/", usage.usage, name="usage"),
    path("usage/budget/", budget.own_caps, name="usage-budget"),
    path("keys/", apikeys.api_keys, name="api-keys"),
    path("invites/", invites.invites_page, name="invites"),
    path("announcements/<int:announcement_id>/dismiss/", announcements.dismiss, name="announcement-dismiss"),
    path("manifest.webmanifest", webapp.manifest, name="webmanifest"),
]
