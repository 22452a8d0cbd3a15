from django.urls import path

from conversations import views, views_shared, views_usage

urlpatterns = [
    path("", views.chat, name="chat"),
    path("c/<int:conversation_id>/", views.chat, name="conversation"),
    path("s/<str:token>/", views_shared.shared_conversation, name="shared-conversation"),
    path("usage/", views_usage.usage, name="usage"),
]
