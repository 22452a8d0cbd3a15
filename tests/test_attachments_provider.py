"""The provider's files API: the offline server as strict as Moonshot documents it, the client's calls, uploads that
go through it, and provider-side files deleted with the last row that uses them."""

import httpx
import pytest

from conversations.kimi.errors import BadRequest
from conversations.models import Attachment, Conversation, Message
from tests.fixtures import samples


def post_file(handle, data: bytes, purpose: str = "file-extract", name: str = "a.txt") -> httpx.Response:
    return httpx.post(
        handle.base_url + "/files",
        files={"file": (name, data, "text/plain")},
        data={"purpose": purpose},
        headers={"Authorization": f"Bearer {handle.api_key}"},
    )


def auth(handle) -> dict:
    return {"Authorization": f"Bearer {handle.api_key}"}


def test_offline_files_api_uploads_extracts_lists_and_deletes(offline_kimi):
    uploaded = post_file(offline_kimi, samples.docx("Minutes of the March meeting"), name="m.docx")
    assert uploaded.status_code == 200, uploaded.text
    body = uploaded.json()
    assert body["object"] == "file" and body["purpose"] == "file-extract" and body["filename"] == "m.docx"
    content = httpx.get(f"{offline_kimi.base_url}/files/{body['id']}/content", headers=auth(offline_kimi))
    assert content.headers["content-type"].startswith("text/plain")
    assert "Minutes of the March meeting" in content.text
    listed = httpx.get(f"{offline_kimi.base_url}/files", headers=auth(offline_kimi)).json()
    assert [f["id"] for f in listed["data"]] == [body["id"]]
    deleted = httpx.delete(f"{offline_kimi.base_url}/files/{body['id']}", headers=auth(offline_kimi)).json()
    assert deleted == {"id": body["id"], "object": "file", "deleted": True}
    again = httpx.get(f"{offline_kimi.base_url}/files/{body['id']}", headers=auth(offline_kimi))
    assert again.status_code == 404


@pytest.mark.parametrize(
    ("data", "purpose", "message"),
    [
        (b"", "file-extract", "File size is zero"),
        (b"x", "assistants", "Invalid purpose: assistants"),
        (b"x" * 2048, "file-extract", "File size is too large, max file size is"),
    ],
)
def test_offline_files_api_refuses_what_moonshot_refuses(offline_kimi_profile, data, purpose, message):
    handle = offline_kimi_profile("moonshot", max_file_bytes=1024)
    response = post_file(handle, data, purpose)
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert message in response.json()["error"]["message"]


def test_offline_files_api_enforces_the_file_count(offline_kimi_profile):
    handle = offline_kimi_profile("moonshot", max_files=2)
    assert post_file(handle, b"one").status_code == 200
    assert post_file(handle, b"two").status_code == 200
    refused = post_file(handle, b"three")
    assert refused.status_code == 400 and "exceeded the max file count 2" in refused.json()["error"]["message"]


def test_gateways_have_no_files_api(offline_kimi_profile):
    handle = offline_kimi_profile("acedata")
    assert post_file(handle, b"x").status_code == 404


def test_offline_files_api_needs_the_key(offline_kimi):
    response = httpx.post(
        offline_kimi.base_url + "/files", files={"file": ("a", b"x")}, data={"purpose": "file-extract"}
    )
    assert response.status_code == 401


async def test_client_uploads_reads_and_deletes_files(make_kimi_client, offline_kimi):
    client = make_kimi_client()
    uploaded = await client.upload_file("notes.md", b"# Notes\nship it", "text/markdown")
    assert await client.file_content(uploaded["id"]) == "# Notes\nship it"
    assert await client.delete_file(uploaded["id"]) is True
    assert await client.delete_file(uploaded["id"]) is False  # already gone: not an error
    with pytest.raises(BadRequest) as caught:
        await client.upload_file("empty.txt", b"", "text/plain")
    assert "File size is zero" in caught.value.detail


@pytest.mark.django_db
def test_an_upload_goes_through_the_providers_files_api(attachment_settings, owner, upload):
    response = upload(owner, samples.pdf("Provider extracted this text"), "r.pdf")
    assert response.status_code == 201, response.content
    attachment = Attachment.objects.get(pk=response.json()["id"])
    assert attachment.provider_file_id in attachment_settings.server.files.files
    assert attachment.text == "Provider extracted this text"
    paths = [r.path for r in attachment_settings.log.records]
    assert "/v1/files" in paths and f"/v1/files/{attachment.provider_file_id}/content" in paths


@pytest.mark.django_db
def test_the_same_file_twice_is_uploaded_to_the_provider_once(attachment_settings, owner, upload):
    upload(owner, b"same text", "a.txt")
    upload(owner, b"same text", "b.txt")
    assert len(attachment_settings.server.files.files) == 1
    assert len({a.provider_file_id for a in Attachment.objects.all()}) == 1


@pytest.mark.django_db
def test_the_provider_file_count_limit_falls_back_to_local_extraction(
    settings, attachment_storage, offline_kimi_profile, owner, upload
):
    handle = offline_kimi_profile("moonshot", max_files=0)
    settings.KIMI_BASE_URL, settings.KIMI_API_KEY = handle.base_url, handle.api_key
    response = upload(owner, samples.docx("Still readable here"), "a.docx")
    assert response.status_code == 201, response.content
    attachment = Attachment.objects.get(pk=response.json()["id"])
    assert attachment.provider_file_id == "" and "Still readable here" in attachment.text


@pytest.mark.django_db
def test_deleting_the_message_deletes_the_provider_file(
    attachment_settings, owner, upload, django_capture_on_commit_callbacks
):
    attachment_id = upload(owner, b"to be deleted upstream", "a.txt").json()["id"]
    assert len(attachment_settings.server.files.files) == 1
    conversation = Conversation.objects.create(owner=owner, model="kimi-k2.6")
    message = Message.objects.create(conversation=conversation, role="user", content="see")
    Attachment.objects.filter(pk=attachment_id).update(message=message)
    with django_capture_on_commit_callbacks(execute=True):
        message.delete()
    assert attachment_settings.server.files.files == {}


@pytest.mark.django_db
def test_deleting_the_account_deletes_the_provider_files(
    attachment_settings, owner, upload, django_capture_on_commit_callbacks
):
    upload(owner, b"first", "a.txt")
    upload(owner, b"second", "b.txt")
    assert len(attachment_settings.server.files.files) == 2
    with django_capture_on_commit_callbacks(execute=True):
        owner.delete()
    assert attachment_settings.server.files.files == {}
    assert Attachment.objects.count() == 0


@pytest.mark.django_db
def test_a_provider_file_shared_by_two_rows_stays_until_the_last_goes(
    attachment_settings, owner, upload, csrf_client, django_capture_on_commit_callbacks
):
    first = upload(owner, b"shared", "a.txt").json()["id"]
    second = upload(owner, b"shared", "b.txt").json()["id"]
    with django_capture_on_commit_callbacks(execute=True):
        csrf_client(owner).delete(f"/api/attachments/{first}/")
    assert len(attachment_settings.server.files.files) == 1
    with django_capture_on_commit_callbacks(execute=True):
        csrf_client(owner).delete(f"/api/attachments/{second}/")
    assert attachment_settings.server.files.files == {}


def test_echo_context_reports_system_documents_and_images(offline_kimi):
    pixel = "iVBORw0KGgo="
    body = {
        "model": "kimi-k2.6",
        "thinking": {"type": "disabled"},
        "messages": [
            {"role": "system", "content": "You are helpful."},
            {"role": "system", "content": "Document: a.pdf\n\nAlpha beta gamma delta"},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is it? [[echo:context]]"},
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{pixel}"}},
                ],
            },
        ],
    }
    response = httpx.post(offline_kimi.base_url + "/chat/completions", json=body, headers=auth(offline_kimi))
    text = response.json()["choices"][0]["message"]["content"]
    assert "[system: You are helpful.]" in text
    assert "[system: Document: a.pdf Alpha beta gamma delta]" in text
    assert "[images: 1]" in text


@pytest.mark.parametrize(
    ("model", "url", "message"),
    [
        ("kimi-k2-turbo-preview", "data:image/png;base64,iVBORw0KGgo=", "does not support image input"),
        ("kimi-k2.6", "https://example.com/cat.png", "unsupported image url"),
        ("kimi-k2.6", "data:image/png;base64,not base64!", "unsupported image url"),
    ],
)
def test_offline_server_refuses_images_a_model_cannot_take(offline_kimi, model, url, message):
    body = {
        "model": model,
        "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}]}],
    }
    response = httpx.post(offline_kimi.base_url + "/chat/completions", json=body, headers=auth(offline_kimi))
    assert response.status_code == 400 and message in response.json()["error"]["message"]


@pytest.mark.django_db
def test_an_unreachable_provider_falls_back_to_local_extraction(settings, attachment_storage, owner, upload):
    settings.KIMI_BASE_URL = "http://127.0.0.1:9/v1"  # the discard port: nothing listens
    settings.KIMI_MAX_RETRIES = 0
    response = upload(owner, samples.pdf("Read here instead"), "a.pdf")
    assert response.status_code == 201, response.content
    attachment = Attachment.objects.get(pk=response.json()["id"])
    assert attachment.provider_file_id == "" and attachment.text == "Read here instead"
