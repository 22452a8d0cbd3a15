"""Documents and images attached to messages (docs/attachments.md): plain functions, each module one concern.

limits (the refusal and the settings), sniffing (the type from the bytes, zip bounds), extraction (local text),
images (Pillow checks and re-encoding), storage (blobs), provider (the provider's files API), uploads (check → do:
an upload becomes an Attachment or nothing), cleanup (blobs and provider files go with the last row), prompt (what a
message with attachments sends upstream, its tokens and the estimate).
"""
