"""The pages' markup is well formed where a template merge can break it silently: every id once, a plain <title>,
a plain body class. (A dialog once landed inside the title, head and body-class blocks of the chat page: the
browser tests still passed, because the last copy of each id worked.)"""

from collections import Counter
from html.parser import HTMLParser

import pytest


class _Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.ids: Counter[str] = Counter()
        self.title = ""
        self.body_class = None
        self._in_title = False
        self._in_head = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if attrs.get("id"):
            self.ids[attrs["id"]] += 1
        if tag == "head":
            self._in_head = True
        if tag == "title" and self._in_head:  # the page's title, not an SVG chart's tooltips
            self._in_title = True
        if tag == "body":
            self._in_head = False
            self.body_class = attrs.get("class")

    def handle_endtag(self, tag):
        if tag == "title":
            self._in_title = False
        if tag == "head":
            self._in_head = False

    def handle_data(self, data):
        if self._in_title:
            self.title += data


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/", "/usage/", "/keys/", "/invites/"])
def test_a_page_has_each_id_once_and_a_plain_title(owner_client, path):
    response = owner_client.get(path)
    if response.status_code == 404:  # /invites/ outside invite mode
        pytest.skip("page not offered in this mode")
    assert response.status_code == 200
    page = _Page()
    page.feed(response.content.decode())
    assert [name for name, n in page.ids.items() if n > 1] == []
    assert "<" not in page.title and len(page.title.strip()) < 120, page.title
    assert page.body_class is None or "<" not in page.body_class
