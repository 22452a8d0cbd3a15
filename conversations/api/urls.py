from django.urls import path

from conversations.api import attachments, branches, conversations, exports, kimi_models, me, search, shares, usage

urlpatterns = [
    path("me/", me.me, name="api-me"),
    path("usage/", usage.usage, name="api-usage"),
    path("models/", kimi_models.models, name="api-models"),
    path("conversations/", conversations.conversation_list, name="api-conversations"),
    path("conversations/<int:conversation_id>/", conversations.conversation_resource, name="api-conversation"),
    path("conversations/<int:conversation_id>/branch/", branches.branch_switch, name="api-branch"),
    # Past conversations: search, export/import, share links (docs/api.md).
    path("conversations/<int:conversation_id>/export.md", exports.export_markdown, name="api-export-md"),
    path("conversations/<int:conversation_id>/export.json", exports.export_json, name="api-export-json"),
    path("conversations/<int:conversation_id>/share/", shares.share_create, name="api-share-create"),
    path("conversations/<int:conversation_id>/shares/", shares.share_list, name="api-shares"),
    path("shares/<str:token>/", shares.share_revoke, name="api-share-revoke"),
    path("search/", search.search_view, name="api-search"),
    path("export/all.zip", exports.export_all, name="api-export-all"),
    path("import/", exports.import_view, name="api-import"),
    # Documents and images for messages (docs/attachments.md).
    path("attachments/", attachments.attachment_list, name="api-attachments"),
    path("attachments/estimate/", attachments.estimate, name="api-attachments-estimate"),
    path("attachments/<int:attachment_id>/", attachments.attachment_resource, name="api-attachment"),
    path("attachments/<int:attachment_id>/file", attachments.attachment_file, name="api-attachment-file"),
]
