from django.urls import path

from conversations import api, api_history, api_models, api_usage

urlpatterns = [
    path("me/", api.me, name="api-me"),
    path("usage/", api_usage.usage, name="api-usage"),
    path("models/", api_models.models, name="api-models"),
    path("conversations/", api.conversation_list, name="api-conversations"),
    # GET is api.conversation_detail; api_history adds PATCH and DELETE on the same URL.
    path("conversations/<int:conversation_id>/", api_history.conversation_resource, name="api-conversation"),
    # Past conversations: search, export/import, share links (docs/api.md).
    path("conversations/<int:conversation_id>/export.md", api_history.export_markdown, name="api-export-md"),
    path("conversations/<int:conversation_id>/export.json", api_history.export_json, name="api-export-json"),
    path("conversations/<int:conversation_id>/share/", api_history.share_create, name="api-share-create"),
    path("conversations/<int:conversation_id>/shares/", api_history.share_list, name="api-shares"),
    path("shares/<str:token>/", api_history.share_revoke, name="api-share-revoke"),
    path("search/", api_history.search_view, name="api-search"),
    path("export/all.zip", api_history.export_all, name="api-export-all"),
    path("import/", api_history.import_view, name="api-import"),
]
