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
    "api-models": ({}, "/api/models/"),
    "api-search": ({}, "/api/search/"),
    "api-branch": ({"conversation_id": 7}, "/api/conversations/7/branch/"),
    "api-share-create": ({"conversation_id": 7}, "/api/conversations/7/share/"),
    "api-share-revoke": ({"token": "tok"}, "/api/shares/tok/"),
    "api-shares": ({"conversation_id": 7}, "/api/conversations/7/shares/"),
    "api-usage": ({}, "/api/usage/"),
    "api-keys": ({}, "/keys/"),
    "chat": ({}, "/"),
    "conversation": ({"conversation_id": 7}, "/c/7/"),
    "healthz": ({}, "/healthz"),
    "javascript-catalog": ({}, "/jsi18n/"),
    "login": ({}, "/accounts/login/"),
    "logout": ({}, "/accounts/logout/"),
    "password_change": ({}, "/accounts/password/"),
    "password_change_done": ({}, "/accounts/password/done/"),
    "readyz": ({}, "/readyz"),
    "set_language": ({}, "/i18n/setlang/"),
    "shared-conversation": ({"token": "tok"}, "/s/tok/"),
    "signup": ({}, "/accounts/signup/"),
    "usage": ({}, "/usage/"),
    "v1-chat-completions": ({}, "/v1/chat/completions"),
    "v1-messages": ({}, "/v1/messages"),
    "v1-models": ({}, "/v1/models"),
    "v1-user-credits": ({}, "/v1/user/credits"),
    "admin:kimichat_dashboard": ({}, "/admin/dashboard/"),
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
