"""The public share page costs the same for a 5-message and a 100,000-message conversation: one page of the newest
messages (older ones behind a cursor), a bounded number of queries, rows and bytes, and a cached rendering that a
revoked link never serves."""

from __future__ import annotations

import re

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from conversations.models import Conversation, Message
from conversations.services.history import branches, shares

pytestmark = pytest.mark.django_db

MANY = 5_000
TEXT = "The dough rises best when it is **warm**. " * 25  # about 1 KB


@pytest.fixture
def long_share(owner):
    conversation = Conversation.objects.create(owner=owner, model="kimi-k2.6", title="Bread")
    Message.objects.bulk_create(
        [
            Message(conversation=conversation, role="user" if n % 2 == 0 else "assistant", content=f"n{n}: {TEXT}")
            for n in range(MANY)
        ],
        batch_size=1000,
    )
    branches.link_linear(list(conversation.messages.order_by("id").values_list("id", flat=True)))
    return shares.create_share(conversation)


def _numbers(html: str) -> list[int]:
    return [int(n) for n in re.findall(r"n(\d+): ", html)]


def test_a_huge_shared_conversation_is_one_bounded_page(long_share):
    reader = Client()
    with CaptureQueriesContext(connection) as captured:
        response = reader.get(f"/s/{long_share.token}/")
    assert response.status_code == 200
    html = response.content.decode()
    # The newest page, in order; the whole conversation would be about 5 MB.
    assert _numbers(html) == list(range(MANY - shares.SHARE_PAGE_MESSAGES, MANY))
    assert len(response.content) < 250_000
    # Three queries (the link, one page of messages, the names of that page's attachments), the page's reading at
    # most one row past the page, and the attachments only for the page's messages.
    sqls = [q["sql"] for q in captured.captured_queries]
    assert len(sqls) == 3, sqls
    assert f"LIMIT {shares.SHARE_PAGE_MESSAGES + 1}" in sqls[1]
    assert "conversations_attachment" in sqls[2] and sqls[2].count(",") <= shares.SHARE_PAGE_MESSAGES + 40


def test_older_pages_follow_the_cursor_to_the_first_message(long_share):
    reader = Client()
    url, seen, pages = f"/s/{long_share.token}/", [], 0
    while url:
        html = reader.get(url).content.decode()
        seen = _numbers(html) + seen
        older = re.search(r'href="\?before=(\d+)"', html)
        url = f"/s/{long_share.token}/?before={older.group(1)}" if older else None
        pages += 1
        if pages > 2:  # walking all 50 pages is not the point; jump near the start
            break
    assert seen == list(range(MANY - 3 * shares.SHARE_PAGE_MESSAGES, MANY))
    first = Message.objects.filter(conversation_id=long_share.conversation_id).order_by("id")[2]
    html = reader.get(f"/s/{long_share.token}/?before={first.pk}").content.decode()
    assert _numbers(html) == [0, 1] and "?before=" not in html and "Newest messages" in html


@pytest.mark.parametrize("before", ["abc", "-1", "0", "1e3", "99999999999999999999999", "٣"])
def test_a_bad_cursor_is_a_404(long_share, before):
    assert Client().get(f"/s/{long_share.token}/", {"before": before}).status_code == 404


def test_the_page_is_bounded_in_bytes_however_long_the_messages(owner):
    conversation = Conversation.objects.create(owner=owner, model="kimi-k2.6", title="Huge answers")
    Message.objects.create(conversation=conversation, role="user", content="q" * 3_000_000)  # as an import can store
    for _ in range(20):
        Message.objects.create(conversation=conversation, role="assistant", content="a" * 200_000)
    branches.link_linear(list(conversation.messages.order_by("id").values_list("id", flat=True)))
    link = shares.create_share(conversation)
    response = Client().get(f"/s/{link.token}/")
    assert response.status_code == 200
    bound = shares.SHARE_PAGE_CHARS + 2 * shares.SHARE_MESSAGE_CHARS + 50_000  # text plus one cut message and markup
    assert len(response.content) < bound
    assert "more characters not shown" in response.content.decode()


def test_the_rendered_page_is_cached_and_a_revoked_link_never_serves_it(owner_client, long_share):
    reader = Client()
    first = reader.get(f"/s/{long_share.token}/")
    with CaptureQueriesContext(connection) as captured:
        again = reader.get(f"/s/{long_share.token}/")
    assert again.content == first.content
    assert len(captured.captured_queries) == 1  # the link only: the messages came from the cache
    older = re.search(r'href="\?before=(\d+)"', first.content.decode()).group(1)
    reader.get(f"/s/{long_share.token}/?before={older}")  # an older page, cached too

    assert owner_client.delete(f"/api/shares/{long_share.token}/").status_code == 204
    assert reader.get(f"/s/{long_share.token}/").status_code == 404
    assert reader.get(f"/s/{long_share.token}/?before={older}").status_code == 404
