"""A socket lives only as long as the session it was opened with.

An open websocket was authenticated once, at its handshake. So that logging out, changing the password or being
deactivated ends it too, on every worker:

- every socket joins its session's group and its user's group (``relay.user_group``);
- logout sends ``auth.close`` to the session's group: those sockets close with 4401 at once;
- a change to the user row (password, ``is_active``; ``notify_user_changed``, also called by bulk updates that
  send no signal) sends ``auth.revalidate`` to the user's group once committed: each socket re-checks its session;
- and every frame a socket receives re-checks it (``session_is_valid``), so a change no event announced (a session
  deleted, a row updated behind Django's back, a channel layer that dropped the event) still ends it at the next
  frame.

A password change keeps the session that made it (Django's ``update_session_auth_hash`` moves it to a new key):
``follow_new_session_key`` tells that session's sockets the new key before the revalidation reaches them.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from importlib import import_module

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY, load_backend
from django.db import transaction
from django.utils import timezone
from django.utils.crypto import constant_time_compare

from conversations.services.chat.relay import user_group

logger = logging.getLogger(__name__)


def session_group(session_key: str) -> str:
    # Hashed: a group name is stored in Redis and logged; the session key is a credential.
    return "session." + hashlib.sha256(session_key.encode()).hexdigest()[:40]


def session_is_valid(session_key: str | None, user_id: int) -> bool:
    """Whether the session still logs ``user_id`` in, by the rules Django applies to every request: it exists (and
    has not expired), names this user and a configured backend, the user can still log in (``is_active``), and its
    auth hash still matches the password (or a ``SECRET_KEY_FALLBACKS`` hash)."""
    if not session_key:
        return False
    data = import_module(settings.SESSION_ENGINE).SessionStore(session_key).load()  # {} when gone or expired
    backend_path = data.get(BACKEND_SESSION_KEY)
    if str(data.get(SESSION_KEY)) != str(user_id) or backend_path not in settings.AUTHENTICATION_BACKENDS:
        return False
    user = load_backend(backend_path).get_user(user_id)  # None when deleted or inactive
    session_hash = data.get(HASH_SESSION_KEY)
    if user is None or not session_hash:
        return False
    hashes = [user.get_session_auth_hash(), *user.get_session_auth_fallback_hash()]
    return any(constant_time_compare(session_hash, candidate) for candidate in hashes)


DB_SESSIONS = "django.contrib.sessions.backends.db"


def valid_sessions(pairs: list[tuple[str | None, int]]) -> list[bool]:
    """``session_is_valid`` for many sockets' (session key, user id) at once: two queries (the sessions, then their
    users) where one check costs two, for the database session engine and the backends whose users resolve as
    ``ModelBackend``'s; otherwise one ``session_is_valid`` each. The rules are the same, in the same order
    (``tests/test_bulk_send.py`` compares the two on every way a session can stop logging its user in)."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.backends import ModelBackend

    from conversations.services.accounts.backends import LoginThrottleBackend

    if settings.SESSION_ENGINE != DB_SESSIONS:
        return [session_is_valid(key, user_id) for key, user_id in pairs]
    store = import_module(DB_SESSIONS).SessionStore
    keys = {key for key, _ in pairs if key}
    found = store.get_model_class().objects.filter(session_key__in=keys, expire_date__gt=timezone.now())
    data = {key: store().decode(encoded) for key, encoded in found.values_list("session_key", "session_data")}
    named = {
        user_id
        for key, user_id in pairs
        if key in data
        and str(data[key].get(SESSION_KEY)) == str(user_id)
        and data[key].get(BACKEND_SESSION_KEY) in settings.AUTHENTICATION_BACKENDS
    }
    users = get_user_model()._default_manager.in_bulk(named)
    model_backend = ModelBackend()
    backends = {path: type(load_backend(path)) for path in settings.AUTHENTICATION_BACKENDS}
    results = []
    for key, user_id in pairs:
        session = data.get(key, {}) if key else {}
        backend_path = session.get(BACKEND_SESSION_KEY)
        if str(session.get(SESSION_KEY)) != str(user_id) or backend_path not in settings.AUTHENTICATION_BACKENDS:
            results.append(False)
            continue
        if backends[backend_path] not in (ModelBackend, LoginThrottleBackend):
            results.append(session_is_valid(key, user_id))  # a backend of its own: its get_user decides
            continue
        user = users.get(user_id)
        user = user if user is not None and model_backend.user_can_authenticate(user) else None
        session_hash = session.get(HASH_SESSION_KEY)
        if user is None or not session_hash:
            results.append(False)
            continue
        hashes = [user.get_session_auth_hash(), *user.get_session_auth_fallback_hash()]
        results.append(any(constant_time_compare(session_hash, candidate) for candidate in hashes))
    return results


class SessionEnded(Exception):
    """The socket's session no longer logs its user in: the socket is closed, and nothing its frame asked for done."""


def check_session(session_key: str | None, user_id: int) -> None:
    """``session_is_valid``, raising ``SessionEnded`` when it is not: for a check made inside a larger trip to the
    database thread (a send's), before anything of it is read or written."""
    if not session_is_valid(session_key, user_id):
        raise SessionEnded


def _send(group: str, event: dict) -> None:
    """Best effort: a lost event leaves the per-frame check to end the socket, so an error here must not fail the
    logout or the save that caused it."""
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        try:
            async_to_sync(layer.group_send)(group, event)
        except Exception:  # noqa: BLE001 - see the docstring
            logger.warning("could not send %s to the sockets' group", event["type"], exc_info=True)
    else:  # sync code running inside an event loop's thread cannot block on it: send in the background
        asyncio.ensure_future(layer.group_send(group, event))


def close_session_sockets(session_key: str | None) -> None:
    if session_key:
        _send(session_group(session_key), {"type": "auth.close"})


def notify_user_changed(user_ids) -> None:
    """After the current transaction commits (so the sockets read the new row), the users' sockets re-check."""
    ids = list(user_ids)

    def send():
        for user_id in ids:
            _send(user_group(user_id), {"type": "auth.revalidate"})

    transaction.on_commit(send)


def follow_new_session_key(old_key: str | None, new_key: str | None) -> None:
    if old_key and new_key and old_key != new_key:
        _send(session_group(old_key), {"type": "auth.rekey", "session_key": new_key})
