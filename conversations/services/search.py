"""Searching a user's conversation titles and message contents, with safe highlighted snippets.

How the text is indexed (created by migration 0002_search; see docs/api.md, "Search"):

- PostgreSQL: ``to_tsvector('simple', content)`` stored in a generated column with a GIN index, matched with
  ``websearch_to_tsquery``. The 'simple' configuration lowercases but never stems, so it treats every language alike.
  Chinese and Japanese text has no spaces, so the parser sees a whole sentence as one "word" and full-text search
  cannot find a part of it: a query with CJK characters falls back to ``LIKE``. That scan reads only the user's own
  messages (owner index, then msg_conversation_id), so it costs as much as the user's own history, not the table's.
- SQLite: an FTS5 table with the trigram tokenizer (substring matching, CJK included). Trigrams need at least three
  characters, so a query with a shorter word falls back to ``LIKE`` over the user's own messages.

Titles are short and few per user: they are always matched with ``LIKE`` over the user's own conversations.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from datetime import datetime

from django.db import connections
from django.db.models import BooleanField, Q
from django.db.models.expressions import RawSQL

from conversations.models import Conversation, Message

MAX_QUERY_CHARS = 500
MAX_TERMS = 20
MAX_LIMIT = 50
SNIPPET_CHARS = 160
SNIPPET_LEAD = 50  # characters of context shown before the first match
TRIGRAM_MIN_CHARS = 3

# Han, kana and Hangul: scripts written without spaces between words.
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af\uff66-\uff9f]")
_TOKEN = re.compile(r'-?"[^"]*"?|\S+')


class SearchQueryError(ValueError):
    pass


@dataclass(frozen=True)
class ParsedQuery:
    """A web-search style query: OR-separated groups of words or "quoted phrases" that must all occur."""

    raw: str
    groups: tuple[tuple[str, ...], ...]
    excluded: tuple[str, ...]  # -word: rows containing it are left out

    @property
    def terms(self) -> tuple[str, ...]:
        return tuple(term for group in self.groups for term in group)

    @property
    def has_cjk(self) -> bool:
        return bool(_CJK.search(self.raw))


def parse_query(raw: str) -> ParsedQuery:
    """The same grammar as PostgreSQL's ``websearch_to_tsquery``: words, "phrases", ``or``, ``-excluded``."""
    query = (raw or "").strip()
    if not query:
        raise SearchQueryError("'q' must not be empty")
    if len(query) > MAX_QUERY_CHARS:
        raise SearchQueryError(f"'q' must be at most {MAX_QUERY_CHARS} characters")
    groups: list[list[str]] = [[]]
    excluded: list[str] = []
    for token in _TOKEN.findall(query):
        negated = token.startswith("-") and len(token) > 1
        if negated:
            token = token[1:]
        if token.lower() == "or" and not negated:
            if groups[-1]:
                groups.append([])
            continue
        term = " ".join(token.strip('"').split())
        if not term:
            continue
        (excluded if negated else groups[-1]).append(term)
    groups = [group for group in groups if group]
    if not groups:
        raise SearchQueryError("'q' has no word to look for")
    if sum(len(group) for group in groups) + len(excluded) > MAX_TERMS:
        raise SearchQueryError(f"'q' may have at most {MAX_TERMS} words")
    return ParsedQuery(raw=query, groups=tuple(tuple(g) for g in groups), excluded=tuple(excluded))


def _like(field: str, query: ParsedQuery) -> Q:
    """``LIKE '%term%'`` for every term of some group, and none of the excluded ones."""
    matches = Q()
    for group in query.groups:
        both = Q()
        for term in group:
            both &= Q(**{f"{field}__icontains": term})
        matches |= both
    for term in query.excluded:
        matches &= ~Q(**{f"{field}__icontains": term})
    return matches


def _fts5_expression(query: ParsedQuery) -> str:
    # Every term becomes a quoted FTS5 string (quotes doubled), so no user input is read as FTS5 syntax.
    def quote(term: str) -> str:
        return '"' + term.replace('"', '""') + '"'

    return " OR ".join("(" + " AND ".join(quote(t) for t in group) + ")" for group in query.groups)


def _sqlite_fts_ids(user, query: ParsedQuery, limit: int) -> RawSQL:
    """The ids of the user's newest ``limit`` matching messages, driven by the FTS5 table in rowid order.

    The FTS table is the outer loop, newest rowid first, and the owner is checked per row, so the walk stops after
    ``limit`` hits: a common word costs about as much as a rare one. Everything that filters (owner, current thread,
    exclusions) is inside, or the LIMIT would cut before it.
    """
    sql = [
        "SELECT f.rowid FROM conversations_message_fts f",
        "JOIN conversations_message m ON m.id = f.rowid",
        "JOIN conversations_conversation c ON c.id = m.conversation_id",
        "WHERE conversations_message_fts MATCH %s AND c.owner_id = %s",
        "AND m.superseded_by_id IS NULL AND m.content <> ''",
    ]
    params: list = [_fts5_expression(query), user.pk]
    for term in query.excluded:
        sql.append("AND m.content NOT LIKE %s ESCAPE '\\'")
        params.append(f"%{_escape_like(term)}%")
    sql.append("ORDER BY f.rowid DESC LIMIT %s")
    params.append(limit)
    # Table and column names are constants; the user's text only ever travels as bound parameters.
    return RawSQL(" ".join(sql), params)  # noqa: S611


def _escape_like(term: str) -> str:
    return term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _owned_by(user) -> RawSQL:
    """``conversation_id = ANY(ARRAY(the user's conversation ids))``, for PostgreSQL's LIKE fallback.

    Written this way, not as a join, so the planner reads only the user's messages through msg_conversation_id: with
    a join it guesses that ``LIKE '%…%'`` is selective and scans every user's messages instead.
    """
    return RawSQL(  # noqa: S611 - constant SQL, the user id is a bound parameter
        '"conversations_message"."conversation_id" = ANY(ARRAY('
        'SELECT "id" FROM "conversations_conversation" WHERE "owner_id" = %s))',
        [user.pk],
        output_field=BooleanField(),
    )


def _cjk_aware_like(field: str, query: ParsedQuery) -> Q:
    """Like ``_like``, but terms with CJK characters use a case-sensitive LIKE: CJK has no case, and PostgreSQL's
    case-insensitive form (``UPPER(x) LIKE UPPER(y)``) upper-cases every row it reads, which is several times slower.
    """

    def lookup(term: str) -> Q:
        return Q(**{f"{field}__{'contains' if _CJK.search(term) else 'icontains'}": term})

    matches = Q()
    for group in query.groups:
        both = Q()
        for term in group:
            both &= lookup(term)
        matches |= both
    for term in query.excluded:
        matches &= ~lookup(term)
    return matches


def _message_hits(user, query: ParsedQuery, vendor: str, limit: int) -> list[Message]:
    """The user's newest ``limit`` current messages that match, newest (highest id) first, in one query."""
    messages = Message.objects.for_user(user).current().exclude(content="").select_related("conversation")
    if vendor == "postgresql" and not query.has_cjk:
        # content_search is the stored to_tsvector('simple', content) with the GIN index msg_content_fts.
        fts = RawSQL(  # noqa: S611 - constant SQL, the query is a bound parameter
            '"conversations_message"."content_search" @@ websearch_to_tsquery(\'simple\'::regconfig, %s)',
            [query.raw],
            output_field=BooleanField(),
        )
        messages = messages.filter(fts)
    elif vendor == "postgresql":
        messages = messages.filter(_owned_by(user)).filter(_cjk_aware_like("content", query))
    elif vendor == "sqlite" and all(len(term) >= TRIGRAM_MIN_CHARS for term in query.terms):
        messages = messages.filter(id__in=_sqlite_fts_ids(user, query, limit))
    else:
        messages = messages.filter(_like("content", query))
    # By id, not created_at: it is the FTS table's order on SQLite and the primary key everywhere. The two differ
    # only for imported messages, which keep their original times but get new ids.
    return list(messages.order_by("-id")[:limit])


def _pattern(terms: tuple[str, ...]) -> re.Pattern | None:
    # Longest first, so "kimi chat" wins over "kimi"; a phrase matches across any run of white space.
    parts = [r"\s+".join(re.escape(word) for word in term.split()) for term in sorted(terms, key=len, reverse=True)]
    return re.compile("|".join(parts), re.IGNORECASE) if parts else None


def snippet_html(text: str, terms: tuple[str, ...], *, width: int = SNIPPET_CHARS) -> str:
    """A window of ``text`` around the first match, HTML-escaped, with each match wrapped in ``<mark>``.

    Built only from escaped pieces of the stored text and literal ``<mark>`` tags, so nothing in the text can become
    markup, whatever it contains.
    """
    pattern = _pattern(terms)
    first = pattern.search(text) if pattern else None
    start = max(0, first.start() - SNIPPET_LEAD) if first else 0
    end = min(len(text), start + width)
    if first and first.end() > end:  # a long phrase: show all of it
        end = first.end()
    window = " ".join(text[start:end].split())
    pieces = ["…"] if start > 0 else []
    position = 0
    for match in pattern.finditer(window) if pattern else ():
        pieces.append(html.escape(window[position : match.start()]))
        pieces.append(f"<mark>{html.escape(match.group())}</mark>")
        position = match.end()
    pieces.append(html.escape(window[position:]))
    if end < len(text):
        pieces.append("…")
    return "".join(pieces)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def search(user, raw_query: str, *, limit: int = 20) -> list[dict]:
    """The user's title and message hits for ``raw_query``, newest first. Two queries whatever the data size.

    A message hit's time is when the message was written; a title hit's is the conversation's last activity.
    Only the current thread is searched: earlier versions of regenerated answers are not what the user sees.
    Raises ``SearchQueryError`` for a query with nothing to look for.
    """
    query = parse_query(raw_query)
    limit = max(1, min(limit, MAX_LIMIT))
    conversations = Conversation.objects.for_user(user)
    vendor = connections[Message.objects.db].vendor

    title_hits = conversations.filter(_like("title", query)).order_by("-updated_at", "-id")[:limit]
    message_hits = _message_hits(user, query, vendor, limit)

    hits = [(c.updated_at, 0, c.pk, _title_result(c, query.terms)) for c in title_hits] + [
        (m.created_at, 1, m.pk, _message_result(m, query.terms)) for m in message_hits
    ]
    hits.sort(key=lambda hit: hit[:3], reverse=True)
    return [hit[3] for hit in hits[:limit]]


def _title_result(conversation: Conversation, terms: tuple[str, ...]) -> dict:
    return {
        "conversation_id": conversation.pk,
        "conversation_title": conversation.title,
        "message_id": None,
        "role": None,
        "snippet_html": snippet_html(conversation.title, terms),
        "updated_at": _iso(conversation.updated_at),
        "created_at": None,
        "archived": conversation.archived,
    }


def _message_result(message: Message, terms: tuple[str, ...]) -> dict:
    conversation = message.conversation
    return {
        "conversation_id": conversation.pk,
        "conversation_title": conversation.title,
        "message_id": message.pk,
        "role": message.role,
        "snippet_html": snippet_html(message.content, terms),
        "updated_at": _iso(conversation.updated_at),
        "created_at": _iso(message.created_at),
        "archived": conversation.archived,
    }
