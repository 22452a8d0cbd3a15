"""The staff's announcement banner: shown to logged-in users on the app's pages while current, escaped, dismissed
per user (remembered on the server), in a real browser too."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from conversations.models import Announcement, AnnouncementDismissal
from tests.fixtures.browser import screenshot

pytestmark = pytest.mark.django_db
HOSTILE = '<img src=x onerror="alert(1)"> Maintenance <b>tonight</b> & "soon"'


def dismiss_url(announcement) -> str:
    return reverse("announcement-dismiss", kwargs={"announcement_id": announcement.pk})


@pytest.fixture
def notice():
    return Announcement.objects.create(message=HOSTILE, level=Announcement.Level.WARNING)


@pytest.mark.parametrize("page", ["/", "/usage/", "/keys/"])
def test_shown_escaped_on_the_app_pages(notice, owner_client, page):
    html = owner_client.get(page).content.decode()
    assert 'data-testid="announcement"' in html and "announcement-warning" in html
    assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt; Maintenance &lt;b&gt;tonight&lt;/b&gt; &amp;" in html
    assert "<img src=x" not in html and "<b>tonight" not in html


def test_not_shown_logged_out_expired_withdrawn_or_not_started(notice, client, owner_client):
    assert "announcement" not in client.get(reverse("login")).content.decode()
    for change in (
        {"expires_at": timezone.now() - timedelta(minutes=1)},
        {"active": False},
        {"starts_at": timezone.now() + timedelta(hours=1)},
    ):
        Announcement.objects.filter(pk=notice.pk).update(**change)
        assert 'data-testid="announcement"' not in owner_client.get("/usage/").content.decode()
        Announcement.objects.filter(pk=notice.pk).update(
            expires_at=None, active=True, starts_at=timezone.now() - timedelta(minutes=1)
        )
    assert 'data-testid="announcement"' in owner_client.get("/usage/").content.decode()


def test_dismissed_for_that_user_only(notice, owner_client, owner, outsider, client):
    response = owner_client.post(dismiss_url(notice), HTTP_ACCEPT="application/json")
    assert response.status_code == 204
    assert owner_client.post(dismiss_url(notice), HTTP_ACCEPT="application/json").status_code == 204  # twice: fine
    assert AnnouncementDismissal.objects.filter(user=owner).count() == 1
    assert 'data-testid="announcement"' not in owner_client.get("/").content.decode()
    client.force_login(outsider)
    assert 'data-testid="announcement"' in client.get("/").content.decode()
    # A newer announcement is shown even to those who closed the old one.
    Announcement.objects.create(message="New models are here")
    assert "New models are here" in owner_client.get("/").content.decode()


def test_the_plain_form_post_goes_back_and_refuses_foreign_targets(notice, owner_client):
    response = owner_client.post(dismiss_url(notice), {"next": "/usage/"})
    assert response.status_code == 302 and response["Location"] == "/usage/"
    other = Announcement.objects.create(message="x")
    response = owner_client.post(dismiss_url(other), {"next": "https://evil.example/"})
    assert response["Location"] == "/"


def test_dismissing_needs_a_post_a_login_and_a_current_announcement(notice, owner_client):
    assert owner_client.get(dismiss_url(notice)).status_code == 405
    response = Client().post(dismiss_url(notice))
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]
    Announcement.objects.filter(pk=notice.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert owner_client.post(dismiss_url(notice)).status_code == 404
    assert owner_client.post("/announcements/999999/dismiss/").status_code == 404
    assert not AnnouncementDismissal.objects.exists()


def test_the_expiry_must_follow_the_start():
    from django.core.exceptions import ValidationError

    now = timezone.now()
    with pytest.raises(ValidationError, match="The expiry must come after the start."):
        Announcement(message="x", starts_at=now, expires_at=now - timedelta(hours=1)).full_clean()


@pytest.mark.django_db(transaction=True)
def test_in_the_browser_shown_escaped_dismissed_and_remembered(open_page, browser_user, make_user):
    Announcement.objects.create(message=HOSTILE, level=Announcement.Level.WARNING)
    page = open_page("/")
    banner = page.get_by_test_id("announcement")
    assert banner.is_visible()
    assert banner.locator(".announcement-text").inner_text() == HOSTILE
    assert banner.locator("img, b").count() == 0
    composer = page.locator("textarea").first
    assert composer.is_visible() and composer.bounding_box()["y"] + composer.bounding_box()["height"] <= 800
    screenshot(page, "announcement-chat-desktop-light")
    banner.get_by_role("button", name="Dismiss this announcement").click()
    banner.wait_for(state="detached")
    assert page.dialogs == [] and page.js_errors == []
    assert AnnouncementDismissal.objects.filter(user=browser_user).count() == 1
    page.reload()
    page.wait_for_selector("html[data-ready]")
    assert page.get_by_test_id("announcement").count() == 0

    other = make_user("bob")
    phone = open_page("/", user=other, viewport={"width": 390, "height": 800}, color_scheme="dark")
    assert phone.get_by_test_id("announcement").is_visible()
    box = phone.locator("textarea").first.bounding_box()
    assert box["y"] + box["height"] <= 800  # the chat still fits under the banner
    screenshot(phone, "announcement-chat-phone-dark")
    phone.goto(phone.url.rstrip("/") + "/usage/")
    assert phone.get_by_test_id("announcement").is_visible()
    screenshot(phone, "announcement-usage-phone-dark")
