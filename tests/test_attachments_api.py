"""POST/GET/DELETE /api/attachments/: every limit and bad input answered with its reason and nothing stored;
downloads only for the owner; the same file stored once."""

import pytest
from django.core.files.storage import storages

from conversations.models import Attachment, Conversation, Message
from tests.fixtures import samples

pytestmark = pytest.mark.django_db


def blobs() -> list[str]:
    store = storages["attachments"]
    found = []

    def walk(path):
        dirs, files = store.listdir(path)
        found.extend(f"{path}/{f}" if path else f for f in files)
        for d in dirs:
            walk(f"{path}/{d}" if path else d)

    if store.exists(""):
        walk("")
    return found


def test_a_text_file_is_stored_with_its_text_and_tokens(local_extraction, owner, upload):
    response = upload(owner, b"Meeting notes: ship on Friday.", "notes.txt")
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["name"] == "notes.txt" and body["kind"] == "document" and body["status"] == "ready"
    assert body["bytes"] == 30 and body["tokens"] > 0
    attachment = Attachment.objects.get(pk=body["id"])
    assert attachment.text == "Meeting notes: ship on Friday." and attachment.message is None
    assert "text" not in body  # the text is never echoed back
    assert len(blobs()) == 1


@pytest.mark.parametrize(
    ("make", "name", "expected"),
    [
        (samples.pdf, "report.pdf", "Quarterly revenue"),
        (samples.docx, "minutes.docx", "committee approved"),
        (samples.xlsx, "sales.xlsx", "north"),
        (samples.pptx, "deck.pptx", "Launch plan"),
        (samples.epub, "book.epub", "Chapter one"),
    ],
)
def test_documents_are_extracted_locally_where_the_provider_has_no_files_api(
    local_extraction, owner, upload, make, name, expected
):
    response = upload(owner, make(), name)
    assert response.status_code == 201, response.content
    assert expected in Attachment.objects.get(pk=response.json()["id"]).text
    assert not any("/files" in r.path for r in local_extraction.log.records)


def refusal(response, status: int, code: str) -> str:
    assert response.status_code == status, response.content
    error = response.json()["error"]
    assert error["code"] == code, error
    return error["message"]


def assert_nothing_stored():
    assert Attachment.objects.count() == 0
    assert blobs() == []


def test_an_empty_file_is_refused(local_extraction, owner, upload):
    assert "empty" in refusal(upload(owner, b"", "empty.txt"), 400, "empty_file")
    assert_nothing_stored()


def test_a_file_over_the_size_limit_is_refused_naming_both_sizes(local_extraction, settings, owner, upload):
    settings.KIMICHAT_ATTACHMENT_MAX_BYTES = 1024 * 1024
    message = refusal(upload(owner, b"x" * (1024 * 1024 + 200_000), "big.txt"), 413, "too_large")
    assert "1.2 MB" in message and "1.0 MB" in message
    assert_nothing_stored()


def test_an_unsupported_type_is_refused_whatever_its_name(local_extraction, owner, upload):
    refusal(upload(owner, b"\x7fELF\x02\x01\x01" + bytes(range(200)), "paper.pdf"), 415, "unsupported_type")
    assert_nothing_stored()


def test_a_zip_bomb_is_refused(local_extraction, settings, owner, upload):
    settings.KIMICHAT_ATTACHMENT_MAX_UNZIPPED_BYTES = 4 * 1024 * 1024
    refusal(upload(owner, samples.zip_bomb(size=8 * 1024 * 1024), "big.docx"), 400, "archive_too_large")
    assert_nothing_stored()


def test_an_encrypted_pdf_is_refused(local_extraction, owner, upload):
    refusal(upload(owner, samples.encrypted_pdf(), "locked.pdf"), 400, "encrypted_file")
    assert_nothing_stored()


def test_a_corrupt_pdf_is_refused(local_extraction, owner, upload):
    refusal(upload(owner, samples.pdf()[:150], "broken.pdf"), 400, "corrupt_file")
    assert_nothing_stored()


def test_a_document_without_text_is_refused(local_extraction, owner, upload):
    assert "No text" in refusal(upload(owner, samples.blank_pdf(), "scan.pdf"), 400, "no_text")
    assert_nothing_stored()


def test_the_per_user_total_is_enforced(local_extraction, settings, owner, outsider, upload):
    settings.KIMICHAT_ATTACHMENT_USER_QUOTA_BYTES = 100
    assert upload(owner, b"a" * 60, "one.txt").status_code == 201
    assert upload(owner, b"a" * 60, "again.txt").status_code == 201  # the same file costs nothing twice
    refusal(upload(owner, b"b" * 60, "two.txt"), 413, "quota_exceeded")
    assert upload(outsider, b"b" * 60, "theirs.txt").status_code == 201  # per user
    assert Attachment.objects.filter(owner=owner).count() == 2


def test_the_same_file_twice_is_stored_once(local_extraction, owner, upload):
    data = samples.docx()  # one file: two builds differ when a second ticks between them (the zip's times)
    first = upload(owner, data, "a.docx").json()
    second = upload(owner, data, "b.docx").json()
    assert first["id"] != second["id"] and second["name"] == "b.docx"
    rows = Attachment.objects.order_by("id")
    assert rows[0].storage_key == rows[1].storage_key and rows[0].text == rows[1].text
    assert len(blobs()) == 1


def test_no_file_field_is_a_clear_400(local_extraction, owner, csrf_client):
    response = csrf_client(owner).post("/api/attachments/", {"other": "x"})
    assert refusal(response, 400, "bad_parameter")


def test_upload_needs_the_csrf_token(local_extraction, owner, client):
    from django.test import Client

    plain = Client(enforce_csrf_checks=True)
    plain.force_login(owner)
    import io

    handle = io.BytesIO(b"hello")
    handle.name = "a.txt"
    assert plain.post("/api/attachments/", {"file": handle}).status_code == 403
    assert Attachment.objects.count() == 0


def test_an_image_for_a_model_without_vision_is_refused_before_storing(local_extraction, owner, upload):
    message = refusal(
        upload(owner, samples.image(), "cat.png", model="kimi-k2-turbo-preview"), 400, "images_not_supported"
    )
    assert "kimi-k2-turbo-preview" in message
    assert_nothing_stored()


def test_an_image_for_a_vision_model_is_stored_reencoded(local_extraction, owner, upload):
    response = upload(owner, samples.image("JPEG", exif=True), "cat.jpg", model="kimi-k2.6")
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["kind"] == "image" and body["content_type"] == "image/jpeg" and body["width"] == 64


def test_the_owner_downloads_the_file_and_nobody_else_can(local_extraction, owner, outsider, upload, csrf_client):
    attachment_id = upload(owner, b"<html><script>alert(1)</script>hi</html>", "page.html").json()["id"]
    mine = csrf_client(owner).get(f"/api/attachments/{attachment_id}/file")
    assert mine.status_code == 200
    assert b"".join(mine.streaming_content).startswith(b"<html>")
    assert mine["Content-Disposition"].startswith("attachment;")
    assert mine["X-Content-Type-Options"] == "nosniff"
    for url in (f"/api/attachments/{attachment_id}/file", f"/api/attachments/{attachment_id}/"):
        theirs = csrf_client(outsider).get(url)
        assert theirs.status_code == 404 and theirs.json()["error"]["code"] == "not_found"
    assert csrf_client(outsider).delete(f"/api/attachments/{attachment_id}/").status_code == 404
    assert Attachment.objects.filter(pk=attachment_id).exists()


def test_deleting_an_unsent_attachment_removes_its_blob_with_the_last_row(
    local_extraction, owner, upload, csrf_client, django_capture_on_commit_callbacks
):
    first = upload(owner, b"same bytes", "a.txt").json()["id"]
    second = upload(owner, b"same bytes", "b.txt").json()["id"]
    with django_capture_on_commit_callbacks(execute=True):
        assert csrf_client(owner).delete(f"/api/attachments/{first}/").status_code == 204
    assert len(blobs()) == 1  # still used by the second row
    with django_capture_on_commit_callbacks(execute=True):
        assert csrf_client(owner).delete(f"/api/attachments/{second}/").status_code == 204
    assert_nothing_stored()


def test_an_attachment_of_a_sent_message_is_not_deleted_alone(local_extraction, owner, upload, csrf_client):
    attachment_id = upload(owner, b"kept with its message", "a.txt").json()["id"]
    conversation = Conversation.objects.create(owner=owner, model="kimi-k2.6")
    message = Message.objects.create(conversation=conversation, role="user", content="see file")
    Attachment.objects.filter(pk=attachment_id).update(message=message)
    refusal(csrf_client(owner).delete(f"/api/attachments/{attachment_id}/"), 409, "attached")


def test_deleting_the_conversation_removes_the_files(
    local_extraction, owner, upload, csrf_client, django_capture_on_commit_callbacks
):
    attachment_id = upload(owner, b"goes with the conversation", "a.txt").json()["id"]
    conversation = Conversation.objects.create(owner=owner, model="kimi-k2.6")
    message = Message.objects.create(conversation=conversation, role="user", content="see file")
    Attachment.objects.filter(pk=attachment_id).update(message=message)
    with django_capture_on_commit_callbacks(execute=True):
        assert csrf_client(owner).delete(f"/api/conversations/{conversation.pk}/").status_code == 204
    assert_nothing_stored()


def test_the_list_shows_only_the_users_unsent_attachments(local_extraction, owner, outsider, upload, csrf_client):
    upload(owner, b"mine", "mine.txt")
    upload(outsider, b"theirs", "theirs.txt")
    names = [a["name"] for a in csrf_client(owner).get("/api/attachments/").json()["results"]]
    assert names == ["mine.txt"]


def test_file_names_lose_directories_and_control_characters(local_extraction, owner, upload):
    body = upload(owner, b"x", "../../etc/pass\x07wd.txt").json()
    assert body["name"] == "passwd.txt"


def test_the_quota_holds_when_another_upload_lands_during_extraction(local_extraction, settings, owner, monkeypatch):
    """Two uploads at once both pass the early quota check; the one that stores second must be refused. The other
    upload is made to land while this one extracts (the slow part), which is where real uploads overlap."""
    from conversations.services.attachments import uploads
    from conversations.services.attachments.limits import AttachmentRefused

    settings.KIMICHAT_ATTACHMENT_USER_QUOTA_BYTES = 100
    extract = uploads._document_text
    landed = []

    def extract_while_another_lands(name, data, sniffed):
        if name == "mine.txt" and not landed:
            landed.append(uploads.create_attachment(owner, name="other.txt", data=b"o" * 60))
        return extract(name, data, sniffed)

    monkeypatch.setattr(uploads, "_document_text", extract_while_another_lands)
    with pytest.raises(AttachmentRefused) as caught:
        uploads.create_attachment(owner, name="mine.txt", data=b"m" * 60)
    assert caught.value.code == "quota_exceeded"
    assert [a.name for a in Attachment.objects.all()] == ["other.txt"]
    assert len(blobs()) == 1
