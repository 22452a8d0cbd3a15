from django.apps import AppConfig


class ConversationsConfig(AppConfig):
    name = "conversations"
    verbose_name = "Conversations"

    def ready(self) -> None:
        from conversations import signals  # noqa: F401
        from conversations.services.attachments import cleanup  # noqa: F401
