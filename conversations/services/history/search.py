"""Searching a user's conversation titles and message contents, with safe highlighted snippets.

How the text is indexed (created by migration 0002_search; see docs/api.md, "Search"):

- PostgreSQL: ``to_tsvector('simple', content)`` stored in a generated column with a GIN index, matched with
  ``websearch_to_tsquery``. The 'simple' configuration lowercases but never stems, so it treats every language alike.
  Chinese and Japanese text has no spaces, so the parser sees a whole sentence as one "word" and full-text search
  cannot find a part of it: a query with CJK characters falls back to ``LIKE``. That scan reads only the user's own
  messages (owner index, then msg_conversation_id), so it costs as much as the user's own history, not the table's.
- SQLite: an FTS5 table with the trigram tokenizer (substring matching, CJK included). Trigrams need at least three
  characters, so a query with a shorter word falls back to ``LIKE`` over the user's own messages.

Both indexes cover every user's messages, so a search that walks them newest first pays for other users' newer rows
before it reaches an old user's hits. Each message search therefore starts from the user's own conversations
(``_postgres_ids``, ``_sqlite_ids``): its cost follows the user's history, not the table's.

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
from django.utils.translation import gettext as _

from conversations.models import Conversation, Message
from conversations.services.history import render
from conversations.services.text import NulCharacter, refuse_nul

MAX_QUERY_CHARS = 500
MAX_TERMS = 20
MAX_LIMIT = 50
SNIPPET_CHARS = 160
SNIPPET_LEAD = 50  # characters of context shown before the first match
MARKDOWN_WINDOW = 400  # characters of Markdown converted to text on each side of the first match
MESSAGES_PER_RESULT = 3  # matching messages read per result asked for, as several may fall in one chat
TRIGRAM_MIN_CHARS = 3
# A query with fewer matches than this in the whole table picks the user's hits from all of them (SQLite: the FTS
# table; PostgreSQL: the GIN index, when the user's newest messages did not answer). See _sqlite_ids, _postgres_ids.
FTS_RARE_MATCHES = 2000
# PostgreSQL: how many of the user's newest messages are checked first, one by one (see _postgres_ids).
RECENT_WINDOW = 2000

# Han, kana and Hangul: scripts written without spaces between words.
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af\uff66-\uff9f]")
_TOKEN = re.compile(r'-?"[^"]*"?|\S+')


class SearchQueryError(ValueError):
    """A query with nothing to look for or too much of it; the message is a translated sentence for the person."""


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
    try:
        query = refuse_nul(raw or "", "q").strip()
    except NulCharacter as exc:
        raise SearchQueryError(str(exc)) from None
    if not query:
        raise SearchQueryError(_("Type a word to search for."))
    if len(query) > MAX_QUERY_CHARS:
        raise SearchQueryError(
            _("A search can be at most %(maximum)d characters long; this one has %(count)d.")
            % {"maximum": MAX_QUERY_CHARS, "count": len(query)}
        )
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
        raise SearchQueryError(
            _(
                "There is no word to look for. Add a word: “or” only joins words, and a word after a minus sign is "
                "left out of the results."
            )
        )
    if sum(len(group) for group in groups) + len(excluded) > MAX_TERMS:
        raise SearchQueryError(
            _("A search can have at most %(maximum)d words; this one has %(count)d.")
            % {"maximum": MAX_TERMS, "count": sum(len(group) for group in groups) + len(excluded)}
        )
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


def _like_is_exact(term: str) -> bool:
    """Whether SQLite's ``LIKE`` finds exactly what the trigram index finds for ``term``.

    Both match substrings; the index folds the case of every letter, ``LIKE`` only of ASCII ones. So the two agree
    when every letter of the term is ASCII or has no case (CJK, digits, punctuation).
    """
    return all(ch.isascii() or ch.lower() == ch.upper() for ch in term)


def _sqlite_like(query: ParsedQuery) -> tuple[str, list]:
    """``_like`` as SQL over ``m.content``: every term of some group, none of the excluded ones."""
    pattern = "m.content LIKE %s ESCAPE '\\'"
    groups = ["(" + " AND ".join([pattern] * len(group)) + ")" for group in query.groups]
    params = [f"%{_escape_like(term)}%" for group in query.groups for term in group]
    sql = "(" + " OR ".join(groups) + ")"
    for term in query.excluded:
        sql += " AND m.content NOT LIKE %s ESCAPE '\\'"
        params.append(f"%{_escape_like(term)}%")
    return sql, params


def _sqlite_owned_walk(user, query: ParsedQuery, limit_sql: str, limit_params: list) -> tuple[str, list]:
    """The user's newest matching messages by ``LIKE``, reading only the user's messages.

    For each of the user's conversations SQLite walks msg_conversation_id newest first and, once it holds ``limit``
    hits, leaves a conversation at its first row too old to make the cut (its ORDER BY ... LIMIT over an IN list).
    So a word the user writes often costs a few rows per conversation; a rare one reads all of the user's messages
    (about 1 ms per thousand), never another user's.
    """
    like_sql, like_params = _sqlite_like(query)
    sql = [
        "SELECT m.id FROM conversations_message m",
        "WHERE m.conversation_id IN (SELECT id FROM conversations_conversation WHERE owner_id = %s AND NOT temporary)",
        "AND m.superseded_by_id IS NULL AND m.content <> '' AND",
        like_sql,
        "ORDER BY m.id DESC LIMIT",
        limit_sql,
    ]
    return " ".join(sql), [user.pk, *like_params, *limit_params]


def _sqlite_fts_walk(
    user, query: ParsedQuery, source: str, match: list, limit_sql: str, limit_params: list
) -> tuple[str, list]:
    """The user's newest matching messages among the rowids of ``source`` (the FTS table or ``fts_hits``), newest
    rowid first, with the owner checked per row. ``match``: the FTS5 expression when ``source`` is the FTS table.

    Everything that filters (owner, current thread, exclusions) is inside, or the LIMIT would cut before it.
    """
    sql = [
        "SELECT f.rowid AS id FROM",
        source,
        "f",
        "JOIN conversations_message m ON m.id = f.rowid",
        "JOIN conversations_conversation c ON c.id = m.conversation_id",
        "WHERE c.owner_id = %s AND NOT c.temporary AND m.superseded_by_id IS NULL AND m.content <> ''",
    ]
    params: list = [user.pk]
    if match:
        sql.append("AND conversations_message_fts MATCH %s")
        params += match
    for term in query.excluded:
        sql.append("AND m.content NOT LIKE %s ESCAPE '\\'")
        params.append(f"%{_escape_like(term)}%")
    sql += ["ORDER BY f.rowid DESC LIMIT", limit_sql]
    return " ".join(sql), [*params, *limit_params]


def _sqlite_ids(user, query: ParsedQuery, limit: int) -> RawSQL:
    """The ids of the user's newest ``limit`` matching messages on SQLite, in one statement.

    The FTS5 table indexes every user's messages, so walking its matches costs as many rows as the *table* has
    matches newer than the user's hits: for a user whose messages are old, every other user's newer use of a common
    word. And it cannot be asked about a single row cheaply (a MATCH with ``rowid = ?`` costs about 0.5 ms, because
    each trigram's doclist is spread over many segments). So:

    - A query shorter than a trigram: ``LIKE`` over the user's own messages (``_sqlite_owned_walk``).
    - Otherwise the statement first takes the table's newest ``FTS_RARE_MATCHES`` matches (FTS5 reads them lazily,
      so this costs at most that many rows). Fewer than that means it holds *all* matches, and the user's hits are
      picked from them: a rare word costs as little as before. Otherwise the word is common and ``LIKE`` over the
      user's own messages answers (the branch not taken has ``LIMIT 0`` and never runs). Its cost follows the
      user's data, not the table's.
    - ``LIKE`` folds only ASCII case, so a term with other cased letters (``Straße``, ``Привет``) keeps the FTS walk
      over all matches: correct for any case, but its cost follows the table's matches.
    """
    if not all(len(term) >= TRIGRAM_MIN_CHARS for term in query.terms):
        sql, params = _sqlite_owned_walk(user, query, "%s", [limit])
        return RawSQL(sql, params)  # noqa: S611 - constant SQL, the user's text only travels as bound parameters
    expression = _fts5_expression(query)
    if not all(_like_is_exact(term) for term in query.terms):
        sql, params = _sqlite_fts_walk(user, query, "conversations_message_fts", [expression], "%s", [limit])
        return RawSQL(sql, params)  # noqa: S611 - as above
    counted = "(SELECT count(*) FROM fts_hits)"
    rare_sql, rare_params = _sqlite_fts_walk(
        user, query, "fts_hits", [], f"CASE WHEN {counted} < %s THEN %s ELSE 0 END", [FTS_RARE_MATCHES, limit]
    )
    common_sql, common_params = _sqlite_owned_walk(
        user, query, f"CASE WHEN {counted} < %s THEN 0 ELSE %s END", [FTS_RARE_MATCHES, limit]
    )
    sql = [
        "WITH fts_hits AS (SELECT rowid FROM conversations_message_fts WHERE conversations_message_fts MATCH %s",
        "ORDER BY rowid DESC LIMIT %s)",
        "SELECT id FROM (",
        rare_sql,
        ") UNION ALL SELECT id FROM (",
        common_sql,
        ")",
    ]
    params = [expression, FTS_RARE_MATCHES, *rare_params, *common_params]
    return RawSQL(" ".join(sql), params)  # noqa: S611 - as above


def _escape_like(term: str) -> str:
    return term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _owned_by(user) -> RawSQL:
    """``conversation_id = ANY(ARRAY(the user's conversation ids))``, for PostgreSQL's LIKE fallback.

    Written this way, not as a join, so the planner reads only the user's messages through msg_conversation_id: with
    a join it guesses that ``LIKE '%…%'`` is selective and scans every user's messages instead.
    """
    return RawSQL(  # noqa: S611 - constant SQL, the user id is a bound parameter
        '"conversations_message"."conversation_id" = ANY(ARRAY('
        'SELECT "id" FROM "conversations_conversation" WHERE "owner_id" = %s AND NOT "temporary"))',
        [user.pk],
        output_field=BooleanField(),
    )


def _postgres_ids(user, query: ParsedQuery, limit: int) -> RawSQL:
    """The ids of the user's newest ``limit`` matching messages on PostgreSQL, in one statement.

    Asked plainly ("the user's current messages matching the tsquery, newest first"), the planner walks the primary
    key backwards and tests every row: as many rows as the *table* has newer than the user's hits, a second for an
    old user in a million-row table. Both parts here start from the user's conversation ids instead
    (``= ANY(ARRAY(...))``, as in ``_owned_by``), so they read only the user's own messages:

    - ``recent``: the user's newest ``RECENT_WINDOW`` message ids (msg_conversation_id, index only, a bounded sort),
      each tested by primary key, newest first, stopping at ``limit`` hits. A word the user writes often is
      answered here after a few dozen rows. ``OFFSET 0`` keeps that a loop over ids: flattened, the planner may
      instead read every match in the whole table from the GIN index.
    - Fewer hits than ``limit`` there means the answer may be older. ``table``: the whole table's newest
      ``FTS_RARE_MATCHES`` matches (the planner reads a rare word's few rows from the GIN index, or walks the newest
      rows for a common one). Fewer than that means they are all the matches: the user's hits are picked from them
      (a word rare everywhere: a few hundred rows, not the user's 100,000 through the conversation index).
    - Otherwise (a word common in the table but not in the user's recent messages) the last part searches all of
      the user's messages: the planner ANDs the GIN index msg_content_fts with the user's rows of the conversation
      index, or reads the user's rows. Each later part runs only when the earlier ones did not answer (one-time
      filters).
    """
    owned = (
        "conversation_id = ANY(ARRAY(SELECT id FROM conversations_conversation WHERE owner_id = %s AND NOT temporary))"
    )
    matches = (
        "m.superseded_by_id IS NULL AND m.content <> '' "
        "AND m.content_search @@ websearch_to_tsquery('simple'::regconfig, %s)"
    )
    sql = [
        "WITH recent AS (SELECT w.id FROM (SELECT id FROM conversations_message WHERE",
        owned,
        "ORDER BY id DESC LIMIT %s) w",
        "CROSS JOIN LATERAL (SELECT 1 FROM conversations_message m WHERE m.id = w.id AND",
        matches,
        "OFFSET 0) hit ORDER BY w.id DESC LIMIT %s),",
        "tab AS (SELECT m.id, m.conversation_id FROM conversations_message m WHERE",
        matches,
        "AND (SELECT count(*) FROM recent) < %s ORDER BY m.id DESC LIMIT %s)",
        "SELECT id FROM recent WHERE (SELECT count(*) FROM recent) >= %s",
        "UNION ALL (SELECT t.id FROM tab t JOIN conversations_conversation c ON c.id = t.conversation_id",
        "WHERE c.owner_id = %s AND NOT c.temporary AND (SELECT count(*) FROM tab) < %s ORDER BY t.id DESC LIMIT %s)",
        "UNION ALL (SELECT m.id FROM conversations_message m WHERE",
        owned,
        "AND",
        matches,
        "AND (SELECT count(*) FROM recent) < %s AND (SELECT count(*) FROM tab) >= %s ORDER BY m.id DESC LIMIT %s)",
    ]
    params = [
        *(user.pk, RECENT_WINDOW, query.raw, limit),  # recent
        *(query.raw, limit, FTS_RARE_MATCHES),  # tab
        limit,
        *(user.pk, FTS_RARE_MATCHES, limit),
        *(user.pk, query.raw, limit, FTS_RARE_MATCHES, limit),
    ]
    return RawSQL(" ".join(sql), params)  # noqa: S611 - constant SQL, the user's text only travels as bound parameters


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


def message_hits(user, query: ParsedQuery, vendor: str, limit: int) -> list[Message]:
    """The user's newest ``limit`` current messages that match, newest (highest id) first, in one query."""
    messages = (
        Message.objects.for_user(user)
        .current()
        .filter(conversation__temporary=False)  # the raw SQL below excludes temporary chats too, before its LIMIT
        .exclude(content="")
        .select_related("conversation")
    )
    if vendor == "postgresql" and not query.has_cjk:
        # content_search is the stored to_tsvector('simple', content) with the GIN index msg_content_fts.
        messages = messages.filter(id__in=_postgres_ids(user, query, limit))
    elif vendor == "postgresql":
        messages = messages.filter(_owned_by(user)).filter(_cjk_aware_like("content", query))
    elif vendor == "sqlite":
        messages = messages.filter(id__in=_sqlite_ids(user, query, limit))
    else:
        messages = messages.filter(_like("content", query))
    # By id, not created_at: it is the FTS table's order on SQLite and the primary key everywhere. The two differ
    # only for imported messages, which keep their original times but get new ids.
    return list(messages.order_by("-id")[:limit])


def _pattern(terms: tuple[str, ...]) -> re.Pattern | None:
    # Longest first, so "kimi chat" wins over "kimi"; a phrase matches across any run of white space.
    parts = [r"\s+".join(re.escape(word) for word in term.split()) for term in sorted(terms, key=len, reverse=True)]
    return re.compile("|".join(parts), re.IGNORECASE) if parts else None


def plain_text_around(markdown: str, terms: tuple[str, ...]) -> str:
    """The text a reader sees (Markdown syntax dropped: ``**``, ``#``, fences, link targets) of the part of a message
    around its first match, for a snippet. Only a window is converted: a message may be 100,000 characters long."""
    pattern = _pattern(terms)
    first = pattern.search(markdown) if pattern else None
    start = max(0, first.start() - MARKDOWN_WINDOW) if first else 0
    # From the start of a line, so that a heading's "#" or a list's "-" is still read as syntax.
    start = markdown.rfind("\n", 0, start) + 1 if start else 0
    end = min(len(markdown), (first.end() if first else 0) + MARKDOWN_WINDOW)
    text = render.markdown_to_text(markdown[start:end])
    return ("… " if start else "") + text if text.strip() else markdown[start:end]


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


def project_message_hits(user, project_id: int, query: ParsedQuery, limit: int) -> list[Message]:
    """``message_hits`` within one project's chats: LIKE over those chats' messages only (msg_conversation_id), so
    its cost follows the project's size, never the table's or the rest of the user's."""
    messages = (
        Message.objects.for_user(user)
        .filter(conversation__project_id=project_id)
        .current()
        .exclude(content="")
        .select_related("conversation")
    )
    return list(messages.filter(_cjk_aware_like("content", query)).order_by("-id")[:limit])


def search(user, raw_query: str, *, limit: int = 20, project_id: int | None = None) -> list[dict]:
    """The user's title and message hits for ``raw_query``, newest first. Two queries whatever the data size.

    A message hit's time is when the message was written; a title hit's is the conversation's last activity.
    Only the current thread is searched: earlier versions of regenerated answers are not what the user sees.
    Raises ``SearchQueryError`` for a query with nothing to look for. ``project_id``: only that project's chats (the
    caller checked that it is the user's).
    """
    query = parse_query(raw_query)
    limit = max(1, min(limit, MAX_LIMIT))
    conversations = Conversation.objects.for_user(user).in_history()
    vendor = connections[Message.objects.db].vendor

    if project_id is not None:
        conversations = conversations.filter(project_id=project_id)
    title_hits = conversations.filter(_like("title", query)).order_by("-updated_at", "-id")[:limit]
    # Several hits in one chat make one result: more messages are read so that `limit` chats can still be filled.
    wanted = min(limit * MESSAGES_PER_RESULT, MAX_LIMIT * MESSAGES_PER_RESULT)
    if project_id is not None:
        messages = project_message_hits(user, project_id, query, wanted)
    else:
        messages = message_hits(user, query, vendor, wanted)

    hits = [(c.updated_at, 0, c.pk, c, None) for c in title_hits] + [
        (m.created_at, 1, m.pk, m.conversation, m) for m in messages
    ]
    hits.sort(key=lambda hit: hit[:3], reverse=True)
    # One result per chat, at the place of its newest hit; its newest matching message shows, if any matched,
    # since a snippet of the title would only repeat the title.
    first: dict[int, tuple] = {}
    message_of: dict[int, Message] = {}
    for _when, _kind, _pk, conversation, message in hits:
        first.setdefault(conversation.pk, conversation)
        if message is not None:
            message_of.setdefault(conversation.pk, message)
    return [_result(conversation, message_of.get(pk), query.terms) for pk, conversation in list(first.items())[:limit]]


def _result(conversation: Conversation, message: Message | None, terms: tuple[str, ...]) -> dict:
    """One chat: its title with the matches marked, and its newest matching message (``None``: only the title
    matched, and the snippet is the title)."""
    title_html = snippet_html(conversation.title, terms, width=len(conversation.title) or 1)
    return {
        "conversation_id": conversation.pk,
        "conversation_title": conversation.title,
        "title_html": title_html,
        "message_id": message.pk if message else None,
        "role": message.role if message else None,
        "snippet_html": snippet_html(plain_text_around(message.content, terms), terms) if message else title_html,
        "updated_at": _iso(conversation.updated_at),
        "created_at": _iso(message.created_at) if message else None,
        "archived": conversation.archived,
        "project": conversation.project_id,
    }
