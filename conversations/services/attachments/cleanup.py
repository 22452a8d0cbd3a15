"""A blob, and the provider's copy of a document, are deleted with the last Attachment row that uses them: when an
unsent attachment is removed, or its message, conversation or account is deleted (the cascade sends post_delete
for each row). The work runs after the commit, so a rolled-back delete keeps the files."""

from __future__ import annotations

import logging

from django.db import transaction
from django.db.models.signals import post_delete
from django.dispatch import receiver

from conversations.models import Attachment
from conversations.services.attachments import provider, storage

logger = logging.getLogger(__name__)


def release(storage_key: str, provider_file_id: str) -> None:
    if not Attachment.objects.filter(storage_key=storage_key).exists():
        try:
            storage.delete_blob(storage_key)
        except OSError:
            logger.exception("could not delete attachment blob %s", storage_key)
    if provider_file_id and not Attachment.objects.filter(provider_file_id=provider_file_id).exists():
        provider.delete_remote([provider_file_id])


@receiver(post_delete, sender=Attachment, dispatch_uid="conversations.attachment_files")
def _on_attachment_deleted(sender, instance: Attachment, **kwargs) -> None:
    key, file_id = instance.storage_key, instance.provider_file_id
    transaction.on_commit(lambda: release(key, file_id))
