from django.urls import path

from conversations.api_v1 import account, chat_completions, messages

urlpatterns = [
    path("models", account.models, name="v1-models"),
    path("chat/completions", chat_completions.chat_completions, name="v1-chat-completions"),
    path("messages", messages.messages, name="v1-messages"),
    path("user/credits", account.user_credits, name="v1-user-credits"),
]
