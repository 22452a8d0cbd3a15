"""Which models a user may use: the union of the allow-lists of their groups (``GroupPolicy.allowed_models``).

A user in no group with a list may use every model; a group with an empty list restricts nothing. The model picker
(GET /api/models/), the chat's sends, conversation settings and the /v1/ API all ask here. One query.
"""

from __future__ import annotations

from django.utils.translation import gettext

from conversations.models import GroupPolicy

CODE = "model_not_allowed"  # the stable code of a refusal (websocket error frame, API errors)


def allowed_models(user) -> frozenset[str] | None:
    """The models the user (a user or a user's id) may use, or None for every model."""
    user_id = user if isinstance(user, int) else user.pk
    return _union(GroupPolicy.objects.filter(group__user__id=user_id).values_list("allowed_models", flat=True))


def allowed_models_of(user_ids) -> dict[int, frozenset[str] | None]:
    """``allowed_models`` for many users, by user id, in one query."""
    lists: dict[int, list] = {user_id: [] for user_id in user_ids}
    rows = GroupPolicy.objects.filter(group__user__id__in=list(lists)).values_list("group__user__id", "allowed_models")
    for user_id, models in rows:
        lists[user_id].append(models)
    return {user_id: _union(found) for user_id, found in lists.items()}


def _union(lists) -> frozenset[str] | None:
    """The union of a user's groups' allow-lists; None (every model) when none of them restricts."""
    restricted = [models for models in lists if models]
    if not restricted:
        return None
    return frozenset(model for models in restricted for model in models if isinstance(model, str))


def visible(models: list[str], allowed: frozenset[str] | None) -> list[str]:
    """``models`` without those outside ``allowed``, in their order."""
    return list(models) if allowed is None else [model for model in models if model in allowed]


def is_allowed(user, model: str) -> bool:
    allowed = allowed_models(user)
    return allowed is None or model in allowed


def refusal(model: str) -> str:
    return gettext("The model %(model)s is not available to your account. Ask an administrator for access.") % {
        "model": repr(model[:100])
    }
