"""Attachments in the browser: the paperclip and drop add chips that upload with progress, show size and tokens
(or the refusal), thumbnails for images, the estimate before sending, and the document or image reaching the model
(the offline server's [[echo:context]] quotes what it received)."""

from __future__ import annotations

import json
import os

import pytest

from conversations.models import Attachment
from tests.daphne import start_daphne
from tests.fixtures import samples
from tests.fixtures.browser import screenshot

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def live_daphne(transactional_db, offline_kimi, tmp_path):
    """The app's daphne with its attachment storage in tmp_path."""
    storage = {"BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": str(tmp_path / "m")}}
    server = start_daphne(
        offline_kimi, tmp_path, REDIS_URL=os.environ.get("REDIS_URL", ""), ATTACHMENT_STORAGE=json.dumps(storage)
    )
    try:
        yield server
    finally:
        server.stop()


def chip_details(page) -> list[str]:
    return page.eval_on_selector_all(".chip", "els => els.map(e => e.dataset.status + ':' + e.textContent)")


def last_answer(page) -> str:
    page.wait_for_function(
        "() => { const els = document.querySelectorAll('.msg-assistant');"
        " return els.length && els[els.length - 1].dataset.status === 'complete'; }",
        timeout=20000,
    )
    return page.eval_on_selector_all(".msg-assistant .msg-content", "els => els[els.length - 1].textContent")


def test_a_document_attached_with_the_paperclip_reaches_the_model(open_page, tmp_path):
    page = open_page()
    path = tmp_path / "minutes.txt"
    path.write_text("The board approved the new office lease.")
    page.set_input_files("#attach-input", str(path))
    page.wait_for_selector('.chip[data-status="ready"]')
    assert "minutes.txt" in chip_details(page)[0] and "tokens" in chip_details(page)[0]
    page.fill("#prompt", "What was approved? [[echo:context]]")
    page.wait_for_selector("#estimate:not([hidden])")
    assert "may cost up to" in page.text_content("#estimate")
    page.press("#prompt", "Enter")
    text = last_answer(page)
    assert "[system: Document: minutes.txt The board approved the new office]" in text  # first eight words
    assert page.is_hidden("#chips")
    assert page.text_content(".msg-user .msg-files") == "minutes.txt"
    assert not page.js_errors, page.js_errors


def test_a_dropped_image_shows_a_thumbnail_and_reaches_a_vision_model(open_page):
    page = open_page()
    png = list(samples.image("PNG"))
    page.evaluate(
        """bytes => {
            const file = new File([new Uint8Array(bytes)], "chart.png", { type: "image/png" });
            const data = new DataTransfer();
            data.items.add(file);
            const composer = document.getElementById("composer");
            composer.dispatchEvent(new DragEvent("dragover", { dataTransfer: data, bubbles: true, cancelable: true }));
            composer.dispatchEvent(new DragEvent("drop", { dataTransfer: data, bubbles: true, cancelable: true }));
        }""",
        png,
    )
    page.wait_for_selector('.chip[data-status="ready"] img.chip-thumb')
    screenshot(page, "attachments-chip")
    page.fill("#prompt", "What is in it? [[echo:context]]")
    page.press("#prompt", "Enter")
    assert "[images: 1]" in last_answer(page)
    page.wait_for_selector(".msg-user .msg-image img")
    assert Attachment.objects.get().message is not None


def test_a_refused_file_shows_its_reason_and_can_be_removed(open_page, tmp_path):
    page = open_page()
    path = tmp_path / "empty.txt"
    path.write_bytes(b"")
    page.set_input_files("#attach-input", str(path))
    page.wait_for_selector('.chip[data-status="error"]')
    assert "empty" in chip_details(page)[0]
    page.click(".chip-remove")
    assert page.is_hidden("#chips")
    assert Attachment.objects.count() == 0


def test_a_pasted_file_becomes_a_chip_and_is_deleted_when_removed(open_page):
    page = open_page()
    page.evaluate(
        """() => {
            const data = new DataTransfer();
            data.items.add(new File(["pasted notes"], "pasted.txt", { type: "text/plain" }));
            const prompt = document.getElementById("prompt");
            prompt.dispatchEvent(new ClipboardEvent("paste", { clipboardData: data, bubbles: true, cancelable: true }));
        }"""
    )
    page.wait_for_selector('.chip[data-status="ready"]')
    assert "pasted.txt" in chip_details(page)[0]
    assert Attachment.objects.count() == 1
    with page.expect_response(lambda r: r.request.method == "DELETE" and "/api/attachments/" in r.url) as deleted:
        page.click(".chip-remove")
    assert deleted.value.status == 204
    assert page.is_hidden("#chips")
    assert Attachment.objects.count() == 0


def _hand_over(page, kind: str, name: str, mime: str, data: bytes) -> None:
    """A file dropped on the composer ("drop") or pasted into the prompt ("paste"), as the browser delivers them."""
    page.evaluate(
        """([kind, name, mime, bytes]) => {
            const data = new DataTransfer();
            data.items.add(new File([new Uint8Array(bytes)], name, { type: mime }));
            if (kind === "paste") {
                const prompt = document.getElementById("prompt");
                const paste = new ClipboardEvent("paste", { clipboardData: data, bubbles: true, cancelable: true });
                prompt.dispatchEvent(paste);
                return;
            }
            const composer = document.getElementById("composer");
            composer.dispatchEvent(new DragEvent("dragover", { dataTransfer: data, bubbles: true, cancelable: true }));
            composer.dispatchEvent(new DragEvent("drop", { dataTransfer: data, bubbles: true, cancelable: true }));
        }""",
        [kind, name, mime, list(data)],
    )


def test_pdf_and_docx_by_the_button_a_dropped_csv_and_a_pasted_image_reach_the_model_through_a_reload_and_an_export(
    open_page, live_daphne, tmp_path
):
    """The issue's acceptance walk: four files in one message by every way in; the answer (the offline server's
    echo of its prompt) proves each reached the model; a reload mid-answer loses nothing; an export imported again
    brings the files back."""
    page = open_page()
    (tmp_path / "report.pdf").write_bytes(samples.pdf())
    (tmp_path / "notes.docx").write_bytes(samples.docx())
    page.set_input_files("#attach-input", [str(tmp_path / "report.pdf"), str(tmp_path / "notes.docx")])
    _hand_over(page, "drop", "cities.csv", "text/csv", b"city,population\nParis,2100000\nLyon,520000\n")
    _hand_over(page, "paste", "screenshot.png", "image/png", samples.image("PNG"))
    page.wait_for_function("() => document.querySelectorAll('.chip[data-status=\"ready\"]').length === 4")
    page.fill("#prompt", "What do these say? [[echo:context]] [[rate:8]]")
    page.press("#prompt", "Enter")
    page.wait_for_selector('.msg-assistant[data-status="streaming"]')
    page.reload()  # mid-answer: the answer goes on on the server and the page picks it up again
    page.wait_for_selector("html[data-ready]")
    text = last_answer(page)
    assert "[system: Document: report.pdf Quarterly revenue grew by twelve percent]" in text, text
    assert "[system: Document: notes.docx The committee approved the budget" in text, text
    assert "Document: cities.csv" in text and "[images: 1]" in text, text
    files = page.eval_on_selector_all(".msg-user .msg-files > *", "els => els.map(e => e.textContent)")
    assert sorted(files) == ["", "cities.csv", "notes.docx", "report.pdf"], files  # the image: a thumbnail
    assert page.is_visible(".msg-user .msg-image img")
    assert not page.js_errors, page.js_errors

    archive = page.request.get(live_daphne.url + "/api/export/all.zip")
    assert archive.ok
    csrf = page.get_attribute('meta[name="csrf-token"]', "content")
    imported = page.request.post(
        live_daphne.url + "/api/import/",
        multipart={"file": {"name": "export.zip", "mimeType": "application/zip", "buffer": archive.body()}},
        headers={"X-CSRFToken": csrf, "Referer": live_daphne.url + "/"},
    )
    assert imported.status == 201, imported.text()
    copy = json.loads(imported.text())["conversation_ids"][0]
    detail = page.request.get(live_daphne.url + f"/api/conversations/{copy}/").json()
    names = sorted(a["name"] for m in detail["messages"] for a in m["attachments"])
    assert names == ["cities.csv", "notes.docx", "report.pdf", "screenshot.png"]
