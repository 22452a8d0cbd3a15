"""Every named URL reverses to the path it had before the layout moved the views into packages (issue 14): a move
of code must never move a URL that bookmarks, scripts and the browser's JavaScript depend on."""

import pytest
from django.urls import get_resolver, reverse
from django.urls.resolvers import URLPattern, URLResolver

# name -> (kwargs, path), read off the URL conf before the move.
PATHS = {
    "api-attachment": ({"attachment_id": 7}, "/api/attachments/7/"),
    "api-attachment-file": ({"attachment_id": 7}, "/api/attachments/7/file"),
    "api-attachments": ({}, "/api/attachments/"),
    "api-attachments-estimate": ({}, "/api/attachments/estimate/"),
    "api-conversation": ({"conversation_id": 7}, "/api/conversations/7/"),
    "api-conversations": ({}, "/api/conversations/"),
    "api-export-all": ({}, "/api/export/all.zip"),
    "api-export-json": ({"conversation_id": 7}, "/api/conversations/7/export.json"),
    "api-export-md": ({"conversation_id": 7}, "/api/conversations/7/export.md"),
    "api-import": ({}, "/api/import/"),
    "api-me": ({}, "/api/me/"),
    "api-me-budget": ({}, "/api/me/budget/"),
    "api-models": ({}, "/api/models/"),
    "api-search": ({}, "/api/search/"),
    "api-branch": ({"conversation_id": 7}, "/api/conversations/7/branch/"),
    "api-share-create": ({"conversation_id": 7}, "/api/conversations/7/share/"),
    "api-share-revoke": ({"token": "tok"}, "/api/shares/tok/"),
    "api-shares": ({"conversation_id": 7}, "/api/conversations/7/shares/"),
    "api-usage": ({}, "/api/usage/"),
    "api-project": ({"project_id": 7}, "/api/projects/7/"),
    "api-project-file": ({"project_id": 7, "attachment_id": 8}, "/api/projects/7/files/8/"),
    "api-project-files": ({"project_id": 7}, "/api/projects/7/files/"),
    "api-projects": ({}, "/api/projects/"),
    "api-projects-reorder": ({}, "/api/projects/reorder/"),
    "api-preferences": ({}, "/api/me/preferences/"),
    "api-presets": ({}, "/api/presets/"),
    "api-preset": ({"preset_id": 7}, "/api/presets/7/"),
    "api-message-feedback": ({"message_id": 7}, "/api/messages/7/feedback/"),
    "api-conversation-title": ({"conversation_id": 7}, "/api/conversations/7/title/"),
    "api-keys": ({}, "/keys/"),
    "webmanifest": ({}, "/manifest.webmanifest"),
    "chat": ({}, "/"),
    "conversation": ({"conversation_id": 7}, "/c/7/"),
    "healthz": ({}, "/healthz"),
    "invites": ({}, "/invites/"),
    "javascript-catalog": ({}, "/jsi18n/"),
    "login": ({}, "/accounts/login/"),
    "logout": ({}, "/accounts/logout/"),
    "password_change": ({}, "/accounts/password/"),
    "password_change_done": ({}, "/accounts/password/done/"),
    "password_reset": ({}, "/accounts/password/reset/"),
    "password_reset_done": ({}, "/accounts/password/reset/sent/"),
    "password_reset_confirm": ({"uidb64": "MQ", "token": "set-password"}, "/accounts/reset/MQ/set-password/"),
    "password_reset_complete": ({}, "/accounts/reset/done/"),
    "readyz": ({}, "/readyz"),
    "set_language": ({}, "/i18n/setlang/"),
    "shared-conversation": ({"token": "tok"}, "/s/tok/"),
    "signup": ({}, "/accounts/signup/"),
    "usage": ({}, "/usage/"),
    "usage-budget": ({}, "/usage/budget/"),
    "v1-chat-completions": ({}, "/v1/chat/completions"),
    "v1-messages": ({}, "/v1/messages"),
    "v1-models": ({}, "/v1/models"),
    "v1-user-credits": ({}, "/v1/user/credits"),
    "admin:kimichat_dashboard": ({}, "/admin/dashboard/"),
    "admin:kimichat_two_factor": ({}, "/admin/two-factor/"),
    "admin:kimichat_reports": ({}, "/admin/reports/"),
    "announcement-dismiss": ({"announcement_id": 7}, "/announcements/7/dismiss/"),
}


@pytest.mark.parametrize("name", sorted(PATHS))
def test_named_url_keeps_its_path(name):
    kwargs, path = PATHS[name]
    assert reverse(name, kwargs=kwargs) == path


def _names(patterns, namespace=None):
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            yield from _names(pattern.url_patterns, pattern.namespace or namespace)
        elif isinstance(pattern, URLPattern) and pattern.name:
            yield f"{namespace}:{pattern.name}" if namespace else pattern.name


def test_every_named_url_of_the_project_is_in_the_table():
    """A new named route is added to the table above, so its path is pinned from then on (Django's own admin
    routes excepted: Django owns them)."""
    ours = {name for name in _names(get_resolver().url_patterns) if not name.startswith("admin:")}
    assert ours - set(PATHS) == set()
