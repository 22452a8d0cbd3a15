"""GET /api/search/: the user's own titles and messages, newest first, with escaped highlighted snippets."""

import html
import re

import pytest
from django.db import connection
from django.utils import timezone
from hypothesis import given
from hypothesis import strategies as st

from conversations.models import Conversation, Message
from conversations.services.history import search as search_service
from conversations.services.history.search import SearchQueryError, parse_query, snippet_html

pytestmark = pytest.mark.django_db


def make_conversation(owner, title="Untitled", **fields):
    return Conversation.objects.create(owner=owner, title=title, model="kimi-k2.6", **fields)


def say(conversation, content, role="user", minutes_ago=0, **fields):
    created = timezone.now() - timezone.timedelta(minutes=minutes_ago)
    return Message.objects.create(conversation=conversation, role=role, content=content, created_at=created, **fields)


def search(client, q, **params):
    return client.get("/api/search/", {"q": q, **params})


def message_ids(user, q, limit=20):
    """The matching messages, several per chat possible: what the search paths find, before grouping by chat."""
    query = search_service.parse_query(q)
    vendor = connection.vendor
    return [m.pk for m in search_service.message_hits(user, query, vendor, limit)]


def results(client, q, **params):
    response = search(client, q, **params)
    assert response.status_code == 200, response.content
    return response.json()["results"]


def test_finds_messages_with_marked_snippets(owner_client, owner):
    conversation = make_conversation(owner, "Garden")
    message = say(conversation, "Tomatoes need six hours of sunlight and regular watering.", role="assistant")
    [hit] = results(owner_client, "sunlight")
    assert hit["conversation_id"] == conversation.pk and hit["conversation_title"] == "Garden"
    assert hit["message_id"] == message.pk and hit["role"] == "assistant"
    assert "<mark>sunlight</mark>" in hit["snippet_html"]
    assert hit["updated_at"] == conversation.updated_at.isoformat()


def test_title_hits_have_no_message(owner_client, owner):
    conversation = make_conversation(owner, "Quarterly budget review")
    [hit] = results(owner_client, "budget")
    assert hit["message_id"] is None and hit["role"] is None and hit["conversation_id"] == conversation.pk
    assert hit["snippet_html"] == "Quarterly <mark>budget</mark> review"


def test_snippets_escape_stored_html(owner_client, owner):
    make_conversation(owner, '<img src=x onerror="alert(1)"> needle title')
    say(make_conversation(owner, "Plain"), '<script>alert("needle")</script> and <b onmouseover=x>needle</b> & more')
    hits = results(owner_client, "needle")
    assert len(hits) == 2
    for hit in hits:
        for markup in (hit["snippet_html"], hit["title_html"]):
            without_marks = re.sub(r"</?mark>", "", markup)
            assert "<" not in without_marks and ">" not in without_marks, markup
        assert "<mark>needle</mark>" in hit["snippet_html"]
    message_hit = next(h for h in hits if h["message_id"])
    assert "&lt;script&gt;alert(&quot;<mark>needle</mark>&quot;)&lt;/script&gt;" in message_hit["snippet_html"]
    assert "&amp; more" in message_hit["snippet_html"]


def test_only_the_users_own_rows(owner_client, owner, outsider):
    mine = make_conversation(owner, "Mine")
    say(mine, "the secret word is pineapple")
    theirs = make_conversation(outsider, "pineapple plans")
    say(theirs, "outsider's pineapple notes")
    hits = results(owner_client, "pineapple")
    assert {h["conversation_id"] for h in hits} == {mine.pk}


def test_archived_conversations_are_searched_and_flagged(owner_client, owner):
    conversation = make_conversation(owner, "Old", archived=True)
    say(conversation, "archived walrus facts")
    [hit] = results(owner_client, "walrus")
    assert hit["archived"] is True


def test_earlier_versions_and_empty_placeholders_are_not_searched(owner_client, owner):
    conversation = make_conversation(owner)
    new = say(conversation, "second answer about zeppelins", role="assistant")
    say(conversation, "first answer about zeppelins", role="assistant", superseded_by=new)
    say(conversation, "", role="assistant", status="pending")
    assert [h["message_id"] for h in results(owner_client, "zeppelins")] == [new.pk]


def test_newest_first_and_limit(owner_client, owner):
    conversation = make_conversation(owner, "Lists")
    old = say(conversation, "marmalade recipe", minutes_ago=30)
    newest = say(make_conversation(owner, "B"), "marmalade again", minutes_ago=1)
    middle = say(make_conversation(owner, "C"), "more marmalade", minutes_ago=10)
    assert [h["message_id"] for h in results(owner_client, "marmalade")] == [newest.pk, middle.pk, old.pk]
    assert [h["message_id"] for h in results(owner_client, "marmalade", limit=2)] == [newest.pk, middle.pk]
    # Several hits in one chat: one result, at the place of the newest, showing it.
    latest = say(conversation, "marmalade once more", minutes_ago=5)
    hits = results(owner_client, "marmalade")
    assert [h["message_id"] for h in hits] == [newest.pk, latest.pk, middle.pk]
    assert message_ids(owner, "marmalade") == [latest.pk, middle.pk, newest.pk, old.pk]  # newest stored first


def test_case_insensitive_phrases_or_and_exclusion(owner_client, owner):
    conversation = make_conversation(owner)
    both = say(conversation, "Alpha and Beta together", minutes_ago=3)
    alpha = say(conversation, "only alpha here", minutes_ago=2)
    gamma = say(conversation, "gamma rays", minutes_ago=1)
    assert message_ids(owner, "ALPHA beta") == [both.pk]
    assert message_ids(owner, '"alpha and beta"') == [both.pk]
    assert message_ids(owner, "alpha or gamma") == [gamma.pk, alpha.pk, both.pk]
    assert message_ids(owner, "alpha -beta") == [alpha.pk]


def test_chinese_text(owner_client, owner):
    conversation = make_conversation(owner, "学习笔记")
    message = say(conversation, "我们今天讨论了量子计算的基本原理，以及它和经典计算的区别。", role="assistant")
    say(make_conversation(owner, "Other"), "今天天气很好")
    # Four characters (trigram index on SQLite; LIKE on PostgreSQL, where Chinese has no word boundaries).
    [hit] = results(owner_client, "量子计算")
    assert hit["message_id"] == message.pk and "<mark>量子计算</mark>" in hit["snippet_html"]
    # Two characters: shorter than a trigram, so the LIKE fallback answers on SQLite too.
    [hit] = results(owner_client, "原理")
    assert hit["message_id"] == message.pk and "<mark>原理</mark>" in hit["snippet_html"]
    # A title hit in Chinese.
    [hit] = results(owner_client, "笔记")
    assert hit["message_id"] is None and hit["snippet_html"] == "学习<mark>笔记</mark>"
    assert results(owner_client, "相对论") == []


def test_exclusions_with_like_wildcards_are_literal(owner_client, owner):
    conversation = make_conversation(owner)
    plain = say(conversation, "discount offer today", minutes_ago=2)
    say(conversation, "discount of 50% today", minutes_ago=1)
    assert message_ids(owner, "discount -50%") == [plain.pk]
    assert len(message_ids(owner, "discount -5_%")) == 2


def test_common_words_in_other_users_rows_do_not_crowd_out_mine(owner_client, owner, outsider):
    theirs = make_conversation(outsider)
    Message.objects.bulk_create(Message(conversation=theirs, role="user", content="common words") for _ in range(60))
    mine = say(make_conversation(owner), "common words", minutes_ago=5)
    assert [h["message_id"] for h in results(owner_client, "common words", limit=5)] == [mine.pk]


def test_short_latin_words_fall_back_to_like(owner_client, owner):
    conversation = make_conversation(owner)
    message = say(conversation, "use the Go toolchain")
    assert [h["message_id"] for h in results(owner_client, "go")] == [message.pk]


def test_fts_syntax_in_the_query_is_just_text(owner_client, owner):
    conversation = make_conversation(owner)
    say(conversation, "plain words only")
    for q in ['"unbalanced', "NEAR(a b)", "col:value", "a* OR", "'); DROP TABLE x; --", "^start"]:
        assert search(owner_client, q).status_code == 200, q


def test_the_index_follows_edits_and_deletes(owner_client, owner):
    conversation = make_conversation(owner)
    message = say(conversation, "original platypus text")
    message.content = "rewritten echidna text"
    message.save(update_fields=["content"])
    assert results(owner_client, "platypus") == []
    assert [h["message_id"] for h in results(owner_client, "echidna")] == [message.pk]
    message.delete()
    assert results(owner_client, "echidna") == []


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"q": ""}, "q"),
        ({"q": "   "}, "q"),
        ({"q": "-only -excluded"}, "q"),
        ({"q": "x" * 501}, "q"),
        ({"q": "ok", "limit": "0"}, "limit"),
        ({"q": "ok", "limit": "abc"}, "limit"),
        ({"q": "ok", "limit": "51"}, "limit"),
    ],
)
def test_bad_parameters(owner_client, params, field):
    response = owner_client.get("/api/search/", params)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "bad_parameter" and error["field"] == field


def test_missing_q_is_400(owner_client):
    assert owner_client.get("/api/search/").status_code == 400


def test_anonymous_gets_401(client):
    response = client.get("/api/search/?q=x")
    assert response.status_code == 401 and response.json()["error"]["code"] == "not_authenticated"


@pytest.fixture(params=["default", "small", "small-window"])
def thresholds(request, monkeypatch):
    """Run a test with the search's own thresholds, and with thresholds so small that every query takes the other
    way (SQLite: LIKE over the user's messages instead of the FTS matches; PostgreSQL: the search of all the user's
    messages instead of the newest few). "small-window" (PostgreSQL): the user's newest few do not answer, and the
    table's matches are few enough to pick from."""
    if request.param == "small":
        monkeypatch.setattr(search_service, "FTS_RARE_MATCHES", 3)
        monkeypatch.setattr(search_service, "RECENT_WINDOW", 4)
    elif request.param == "small-window":
        monkeypatch.setattr(search_service, "RECENT_WINDOW", 4)
    return request.param


def test_same_hits_whichever_way_the_search_goes(owner_client, owner, outsider, thresholds):
    mine, other = make_conversation(owner, "Mine"), make_conversation(owner, "Other")
    oldest = say(mine, "Latency budget for the socket", minutes_ago=60)
    relay = say(other, "latency of the relay", minutes_ago=59)
    say(mine, "nothing to see", minutes_ago=58)
    shouting = say(other, "SOCKET LATENCY spikes", minutes_ago=57)
    current = say(mine, "latency new version", minutes_ago=55)
    say(mine, "latency old version", minutes_ago=56, superseded_by=current)
    say(other, "", role="assistant", status="pending", minutes_ago=54)
    rare = say(mine, "zephyrine once", minutes_ago=53)
    # Other users' newer rows with the same words, then my newest messages without them.
    theirs = make_conversation(outsider, "latency")
    Message.objects.bulk_create(
        Message(conversation=theirs, role="user", content="socket latency and more latency") for _ in range(10)
    )
    say(theirs, "zephyrine too")
    for n in range(6):
        say(other, f"filler message {n}", minutes_ago=10 - n)

    def hits(q, limit=20):
        return message_ids(owner, q, limit)

    assert hits("latency") == [current.pk, shouting.pk, relay.pk, oldest.pk]
    assert hits("latency", limit=2) == [current.pk, shouting.pk]
    assert hits("LATENCY socket") == [shouting.pk, oldest.pk]
    assert hits('"socket latency"') == [shouting.pk]
    assert hits("latency -socket") == [current.pk, relay.pk]
    assert hits("zephyrine or relay") == [rare.pk, relay.pk]
    assert hits("zephyrine") == [rare.pk]
    assert hits("filler message 5 or nowhere") == [Message.objects.get(content="filler message 5").pk]


@pytest.mark.skipif(connection.vendor != "sqlite", reason="SQLite's LIKE and FTS5 trigram index")
def test_words_with_non_ascii_letters_stay_case_insensitive(owner_client, owner, outsider, thresholds):
    # LIKE folds only ASCII case, so these words must keep the trigram index even when they are common.
    mine = say(make_conversation(owner), "ПРИВЕТ, Straße", minutes_ago=30)
    theirs = make_conversation(outsider)
    Message.objects.bulk_create(Message(conversation=theirs, role="user", content="привет strasse") for _ in range(5))
    assert [h["message_id"] for h in results(owner_client, "привет")] == [mine.pk]
    assert [h["message_id"] for h in results(owner_client, "STRAßE")] == [mine.pk]


def test_query_count_is_constant(owner_client, owner, django_assert_num_queries, thresholds):
    conversations = Conversation.objects.bulk_create(
        Conversation(owner=owner, title=f"report {i}", model="m") for i in range(30)
    )
    Message.objects.bulk_create(
        Message(conversation=conversations[i % 30], role="user", content=f"quarterly report number {i}")
        for i in range(150)
    )
    # 1) the session, 2) the user, 3) matching titles, 4) matching messages with their conversations.
    with django_assert_num_queries(4):
        hits = results(owner_client, "report", limit=50)
    assert len(hits) == 30  # one per chat


@pytest.mark.skipif(connection.vendor != "sqlite", reason="SQLite's FTS5 table")
def test_sqlite_fts_table_and_triggers_exist():
    # A later migration that rebuilds conversations_message on SQLite drops the triggers; this catches it.
    with connection.cursor() as cursor:
        cursor.execute("SELECT name FROM sqlite_master WHERE name LIKE 'conversations_message_fts%'")
        names = {row[0] for row in cursor.fetchall()}
    assert {
        "conversations_message_fts",
        "conversations_message_fts_insert",
        "conversations_message_fts_delete",
        "conversations_message_fts_update",
        "conversations_message_fts_unfinish",  # 0005: a Continue takes its answer out of the index
    } <= names


@pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL's GIN index")
def test_postgres_search_column_is_generated_and_indexed(owner):
    message = say(make_conversation(owner), "Indexed Words")
    with connection.cursor() as cursor:
        cursor.execute("SELECT content_search::text FROM conversations_message WHERE id = %s", [message.pk])
        assert cursor.fetchone()[0] == "'indexed':1 'words':2"
        cursor.execute("SET LOCAL enable_seqscan = off")  # a tiny table would otherwise be scanned
        cursor.execute(
            "EXPLAIN SELECT id FROM conversations_message "
            "WHERE content_search @@ websearch_to_tsquery('simple'::regconfig, 'indexed')"
        )
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "msg_content_fts" in plan, plan


# --- the pure parts ---------------------------------------------------------------------------------------------


def test_parse_query():
    parsed = parse_query(' kimi  "rate limit"  or  retry -stream ')
    assert parsed.groups == (("kimi", "rate limit"), ("retry",)) and parsed.excluded == ("stream",)
    assert parse_query("你好").has_cjk and not parse_query("hello").has_cjk
    for bad in ["", "  ", "-x", "or", '""']:
        with pytest.raises(SearchQueryError):
            parse_query(bad)


def test_snippet_window_and_ellipses():
    text = "a" * 300 + " needle " + "b" * 300
    snippet = snippet_html(text, ("needle",))
    assert snippet.startswith("…") and snippet.endswith("…") and "<mark>needle</mark>" in snippet
    assert len(snippet) < 220
    assert snippet_html("no match here", ("zzz",)) == "no match here"
    assert snippet_html("Line one\n\nline   two", ("line two",)) == "Line one <mark>line two</mark>"


@given(text=st.text(max_size=400), term=st.text(min_size=1, max_size=8).filter(str.strip))
def test_snippet_never_contains_markup_but_marks(text, term):
    snippet = snippet_html(text, (" ".join(term.split()),))
    bare = re.sub(r"</?mark>", "", snippet)
    assert "<" not in bare and ">" not in bare
    # What is shown is the text itself (white space collapsed), nothing invented.
    shown = html.unescape(bare).strip("…")
    assert shown in " ".join(text.split()) or not shown


def test_a_chat_matching_in_its_title_and_a_message_is_listed_once(owner_client, owner):
    conversation = make_conversation(owner, "Kyoto trip")
    message = say(conversation, "Book the ryokan in Kyoto early.", role="assistant")
    [hit] = results(owner_client, "kyoto")
    assert hit["conversation_id"] == conversation.pk and hit["message_id"] == message.pk
    assert hit["title_html"] == "<mark>Kyoto</mark> trip"
    assert "<mark>Kyoto</mark>" in hit["snippet_html"]


def test_several_matching_messages_in_a_chat_are_one_result_showing_the_newest(owner_client, owner):
    conversation = make_conversation(owner, "Notes")
    say(conversation, "first walrus", minutes_ago=3)
    newest = say(conversation, "second walrus", minutes_ago=1)
    [hit] = results(owner_client, "walrus")
    assert hit["message_id"] == newest.pk


def test_snippets_are_the_text_a_reader_sees_not_markdown(owner_client, owner):
    conversation = make_conversation(owner, "Formatting")
    say(
        conversation,
        "## Steps\n\n1. Run **`make needle`** first\n2. See [the needle guide](https://example.com/guide)\n\n"
        "```sh\necho needle\n```",
        role="assistant",
    )
    [hit] = results(owner_client, "needle")
    snippet = hit["snippet_html"]
    assert snippet == (
        "Steps Run make <mark>needle</mark> first See the <mark>needle</mark> guide echo <mark>needle</mark>"
    ), snippet


def test_snippet_of_a_match_deep_in_a_long_message_is_plain_text_around_it(owner_client, owner):
    conversation = make_conversation(owner, "Long")
    say(conversation, ("filler words here. " * 400) + "\n\n- the **hidden needle** is *here*")
    [hit] = results(owner_client, "hidden needle")
    snippet = hit["snippet_html"]
    assert (
        "<mark>hidden</mark> <mark>needle</mark> is here" in snippet and "*" not in snippet and snippet.startswith("…")
    )
