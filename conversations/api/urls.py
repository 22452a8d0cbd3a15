from django.urls import path

from conversations.api import (
    attachments,
    branches,
    budget,
    conversations,
    exports,
    kimi_models,
    me,
    personal,
    projects,
    search,
    shares,
    usage,
)

urlpatterns = [
    path("me/", me.me, name="api-me"),
    path("me/budget/", budget.budget, name="api-me-budget"),
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
    # Projects: folders of chats with their own instructions and files (docs/projects.md).
    path("projects/", projects.project_list, name="api-projects"),
    path("projects/reorder/", projects.reorder, name="api-projects-reorder"),
    path("projects/<int:project_id>/", projects.project_resource, name="api-project"),
    path("projects/<int:project_id>/files/", projects.file_upload, name="api-project-files"),
    path("projects/<int:project_id>/files/<int:attachment_id>/", projects.file_resource, name="api-project-file"),
    # Personalisation: preferences, presets, feedback, titles (docs/api.md).
    path("me/preferences/", personal.preferences_resource, name="api-preferences"),
    path("presets/", personal.preset_list, name="api-presets"),
    path("presets/<int:preset_id>/", personal.preset_resource, name="api-preset"),
    path("messages/<int:message_id>/feedback/", personal.message_feedback, name="api-message-feedback"),
    path("conversations/<int:conversation_id>/title/", personal.conversation_title, name="api-conversation-title"),
]
