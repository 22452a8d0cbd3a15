"""Projects (docs/projects.md): the API (create, rename, colour, emoji, reorder, archive, delete with or without
their chats), filing chats under them, their instructions and files on the way upstream, search within one, and
export/import. Another user's project is a missing one on every route and frame."""

from __future__ import annotations

import io
import json
import zipfile

import pytest
from asgiref.sync import sync_to_async
from django.test import Client

from conversations.models import Attachment, Conversation, Message, Project
from conversations.services.history import exports
from conversations.services.projects import files as project_files
from tests.fixtures import samples

CSRF = "p" * 32
FAST = "kimi-k2-turbo-preview"


def api(user) -> Client:
    client = Client(enforce_csrf_checks=True, HTTP_X_CSRFTOKEN=CSRF)
    client.force_login(user)
    client.cookies["csrftoken"] = CSRF
    return client


def send(client: Client, method: str, url: str, body=None):
    return getattr(client, method)(url, json.dumps(body if body is not None else {}), content_type="application/json")


def chat(owner, title="a chat", project=None, content="hello") -> Conversation:
    conversation = Conversation.objects.create(owner=owner, model=FAST, title=title, project=project)
    Message.objects.create(conversation=conversation, role="user", content=content)
    return conversation


# --- the API ----------------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_create_rename_colour_emoji_archive_and_list_in_order(owner):
    client = api(owner)
    first = send(client, "post", "/api/projects/", {"name": "  Thesis   work ", "emoji": "📚", "color": "#3B82F6"})
    assert first.status_code == 201, first.content
    data = first.json()
    assert (data["name"], data["emoji"], data["color"], data["position"]) == ("Thesis work", "📚", "#3b82f6", 0)
    assert data["conversation_count"] == 0 and data["files"] == [] and data["archived"] is False
    second = send(client, "post", "/api/projects/", {"name": "Garden", "instructions": "Answer in French."}).json()
    assert second["position"] == 1
    changed = send(client, "patch", f"/api/projects/{second['id']}/", {"name": "Allotment", "archived": True})
    assert changed.status_code == 200
    assert (changed.json()["name"], changed.json()["archived"]) == ("Allotment", True)
    listed = client.get("/api/projects/").json()["results"]
    assert [p["name"] for p in listed] == ["Thesis work", "Allotment"]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "name"),
        ({"name": ""}, "name"),
        ({"name": "x" * 101}, "name"),
        ({"name": "ok", "color": "blue"}, "color"),
        ({"name": "ok", "emoji": "two words"}, "emoji"),
        ({"name": "ok", "instructions": "x" * 20_001}, "instructions"),
        ({"name": "ok", "instructions": "nul \x00"}, "instructions"),
        ({"name": "ok", "archived": "yes"}, "archived"),
        ({"name": "ok", "owner": 2}, "owner"),
    ],
)
def test_bad_project_bodies_name_the_field_and_store_nothing(owner, body, field):
    response = send(api(owner), "post", "/api/projects/", body)
    assert response.status_code == 400
    assert response.json()["error"]["field"] == field
    assert not Project.objects.exists()


@pytest.mark.django_db
def test_reorder_puts_the_named_projects_first(owner, outsider):
    client = api(owner)
    ids = [send(client, "post", "/api/projects/", {"name": n}).json()["id"] for n in "ABC"]
    response = send(client, "post", "/api/projects/reorder/", {"ids": [ids[2], ids[0]]})
    assert response.status_code == 200
    assert [p["name"] for p in response.json()["results"]] == ["C", "A", "B"]
    theirs = Project.objects.create(owner=outsider, name="theirs")
    refused = send(client, "post", "/api/projects/reorder/", {"ids": [ids[1], theirs.pk]})
    assert refused.status_code == 404 and refused.json()["error"]["code"] == "not_found"
    assert send(client, "post", "/api/projects/reorder/", {"ids": [ids[0], ids[0]]}).status_code == 400
    assert send(client, "post", "/api/projects/reorder/", {"ids": "all"}).status_code == 400
    assert list(Project.objects.filter(owner=owner).order_by("position").values_list("name", flat=True)) == list("CAB")


@pytest.mark.django_db
def test_filing_a_chat_under_a_project_and_out_again(owner, outsider):
    client = api(owner)
    project = Project.objects.create(owner=owner, name="Work")
    conversation = chat(owner)
    moved = send(client, "patch", f"/api/conversations/{conversation.pk}/", {"project": project.pk})
    assert moved.status_code == 200 and moved.json()["project"] == project.pk
    assert client.get(f"/api/conversations/?project={project.pk}").json()["results"][0]["id"] == conversation.pk
    assert client.get("/api/conversations/?project=none").json()["results"] == []
    assert client.get("/api/projects/").json()["results"][0]["conversation_count"] == 1
    out = send(client, "patch", f"/api/conversations/{conversation.pk}/", {"project": None})
    assert out.json()["project"] is None
    assert [c["id"] for c in client.get("/api/conversations/?project=none").json()["results"]] == [conversation.pk]
    # Another user's project is a missing one; the chat stays where it was.
    theirs = Project.objects.create(owner=outsider, name="theirs")
    refused = send(client, "patch", f"/api/conversations/{conversation.pk}/", {"project": theirs.pk})
    assert refused.status_code == 404 and refused.json()["error"] == {
        "code": "not_found",
        "message": "No such project.",
        "field": "project",
    }
    assert client.get(f"/api/conversations/?project={theirs.pk}").status_code == 404
    assert send(client, "patch", f"/api/conversations/{conversation.pk}/", {"project": "1"}).status_code == 400
    assert client.get("/api/conversations/?project=abc").status_code == 400
    conversation.refresh_from_db()
    assert conversation.project_id is None


@pytest.mark.django_db
def test_delete_without_chats_keeps_them_out_of_any_project(owner):
    project = Project.objects.create(owner=owner, name="Work")
    kept = chat(owner, project=project)
    response = api(owner).delete(f"/api/projects/{project.pk}/")
    assert response.status_code == 200 and response.json() == {"deleted_conversations": 0}
    kept.refresh_from_db()
    assert kept.project_id is None and not Project.objects.exists()


@pytest.mark.django_db
def test_delete_with_chats_deletes_them_and_the_files(owner, attachment_storage):
    project = Project.objects.create(owner=owner, name="Work")
    project_files.add_file(project, name="brief.txt", data=b"The brief says hello")
    gone = chat(owner, project=project)
    other = chat(owner)
    client = api(owner)
    assert client.delete(f"/api/projects/{project.pk}/?chats=maybe").status_code == 400
    response = client.delete(f"/api/projects/{project.pk}/?chats=delete")
    assert response.json() == {"deleted_conversations": 1}
    assert list(Conversation.objects.values_list("pk", flat=True)) == [other.pk]
    assert not Conversation.objects.filter(pk=gone.pk).exists() and not Attachment.objects.exists()


@pytest.mark.django_db
def test_delete_with_chats_is_refused_while_an_answer_is_written(owner):
    project = Project.objects.create(owner=owner, name="Work")
    busy = chat(owner, project=project)
    Message.objects.create(conversation=busy, role="assistant", status=Message.Status.STREAMING)
    response = api(owner).delete(f"/api/projects/{project.pk}/?chats=delete")
    assert response.status_code == 409 and response.json()["error"]["code"] == "busy"
    assert Project.objects.exists() and Conversation.objects.filter(pk=busy.pk).exists()


# --- project files ------------------------------------------------------------------------------------------------


def upload(client: Client, project_id: int, data: bytes, name: str):
    handle = io.BytesIO(data)
    handle.name = name
    return client.post(f"/api/projects/{project_id}/files/", {"file": handle})


@pytest.mark.django_db
def test_project_files_upload_list_delete_and_refusals(owner, outsider, attachment_settings):
    project = Project.objects.create(owner=owner, name="Work")
    client = api(owner)
    added = upload(client, project.pk, samples.docx("The budget is approved"), "minutes.docx")
    assert added.status_code == 201, added.content
    (file,) = added.json()["files"]
    assert file["name"] == "minutes.docx" and file["tokens"] > 0
    # Not a message's to take, and not in the composer's list of unsent files.
    assert client.get("/api/attachments/").json()["results"] == []
    image = upload(client, project.pk, samples.image("PNG"), "chart.png")
    assert image.status_code == 400 and image.json()["error"]["code"] == "unsupported_type"
    assert Attachment.objects.count() == 1  # the refused image left nothing behind
    assert upload(client, project.pk, b"", "empty.txt").json()["error"]["code"] == "empty_file"
    assert upload(api(outsider), project.pk, b"mine now", "x.txt").status_code == 404
    assert api(outsider).delete(f"/api/projects/{project.pk}/files/{file['id']}/").status_code == 404
    assert client.delete(f"/api/projects/{project.pk}/files/{file['id']}/").status_code == 204
    assert not Attachment.objects.exists()


@pytest.mark.django_db
def test_project_files_stay_within_their_share_of_the_window(owner, attachment_storage, settings, monkeypatch):
    monkeypatch.setattr(project_files, "token_limit", lambda: 100)
    project = Project.objects.create(owner=owner, name="Work")
    project_files.add_file(project, name="a.txt", data=b"word " * 60)
    response = upload(api(owner), project.pk, b"other " * 60, "b.txt")
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "context_too_long" and error["limit"] == 100
    assert list(project.files.values_list("name", flat=True)) == ["a.txt"]


@pytest.mark.django_db
def test_a_project_file_cannot_be_sent_as_a_message_attachment(owner, attachment_storage):
    from conversations.services.attachments import prompt
    from conversations.services.attachments.limits import AttachmentRefused

    project = Project.objects.create(owner=owner, name="Work")
    file = project_files.add_file(project, name="a.txt", data=b"shared text")
    with pytest.raises(AttachmentRefused) as refused:
        prompt.resolve(owner, [file.pk])
    assert refused.value.code == "not_found"


# --- upstream -----------------------------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
async def test_a_chat_started_in_a_project_sends_its_instructions_and_files(connect, owner, attachment_settings):
    project = await sync_to_async(Project.objects.create)(
        owner=owner, name="French", instructions="Always answer in French."
    )
    await sync_to_async(project_files.add_file)(project, name="glossary.txt", data=b"Glossary: chat means cat")
    tab = await connect(owner)
    await tab.say("Hi [[echo:context]]", model=FAST, conversation={"project": project.pk, "system_prompt": "Be brief."})
    done, frames = await tab.answer()
    assert done["status"] == "complete", done
    sent = attachment_settings.log.last_request_body["messages"]
    assert sent[0] == {"role": "system", "content": "Always answer in French.\n\nBe brief."}
    assert sent[1]["role"] == "system" and sent[1]["content"].startswith("Document: glossary.txt\n\nGlossary")
    assert sent[2]["role"] == "user"
    assert "[system: Always answer in French. Be brief.]" in done["message"]["content"]  # the model saw it
    conversation = await sync_to_async(Conversation.objects.get)()
    assert conversation.project_id == project.pk
    created = next(f for f in frames if f["type"] == "conversation")
    assert created["conversation"]["project"] == project.pk


@pytest.mark.django_db(transaction=True)
async def test_a_chat_cannot_be_started_in_another_users_project(connect, owner, outsider, kimi_settings):
    theirs = await sync_to_async(Project.objects.create)(owner=outsider, name="theirs", instructions="secret-44")
    tab = await connect(owner)
    await tab.say("hi", conversation={"project": theirs.pk})
    error = await tab.recv()
    assert (error["type"], error["code"]) == ("error", "not_found"), error
    assert "secret-44" not in json.dumps(error)
    assert await sync_to_async(Conversation.objects.count)() == 0


# --- search -------------------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_search_within_a_project(owner, outsider):
    project = Project.objects.create(owner=owner, name="Work")
    inside = chat(owner, title="inside", project=project, content="the quarterly figures")
    chat(owner, title="outside", content="the quarterly figures again")
    chat(owner, title="quarterly title", project=project, content="nothing here")
    client = api(owner)
    everywhere = client.get("/api/search/?q=quarterly").json()["results"]
    assert len(everywhere) == 3
    within = client.get(f"/api/search/?q=quarterly&project={project.pk}").json()["results"]
    assert sorted(r["conversation_title"] for r in within) == ["inside", "quarterly title"]
    assert {r["project"] for r in within} == {project.pk}
    assert next(r for r in within if r["conversation_id"] == inside.pk)["message_id"] is not None
    theirs = Project.objects.create(owner=outsider, name="theirs")
    assert client.get(f"/api/search/?q=quarterly&project={theirs.pk}").status_code == 404
    assert client.get("/api/search/?q=quarterly&project=none").status_code == 400


# --- export and import ----------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_export_import_round_trip_keeps_projects_and_is_idempotent(owner, make_user, attachment_storage):
    project = Project.objects.create(owner=owner, name="Thesis", emoji="📚", color="#112233", instructions="Cite.")
    project_files.add_file(project, name="outline.txt", data=b"Chapter one: methods")
    Project.objects.create(owner=owner, name="Empty one")
    chat(owner, title="filed", project=project, content="in the thesis")
    chat(owner, title="loose", content="not filed")
    archive = exports.export_all_zip(owner).read()
    assert "projects.json" in zipfile.ZipFile(io.BytesIO(archive)).namelist()

    other = make_user("importer")
    first = exports.import_conversations(other, archive)
    assert len(first.imported) == 2
    imported = {p.name: p for p in Project.objects.filter(owner=other)}
    assert set(imported) == {"Thesis", "Empty one"}
    thesis = imported["Thesis"]
    assert (thesis.emoji, thesis.color, thesis.instructions) == ("📚", "#112233", "Cite.")
    assert [(f.name, f.text) for f in thesis.files.all()] == [("outline.txt", "Chapter one: methods")]
    filed = Conversation.objects.get(owner=other, title="filed")
    assert filed.project_id == thesis.pk
    assert Conversation.objects.get(owner=other, title="loose").project_id is None

    again = exports.import_conversations(other, archive)
    assert again.imported == [] and len(again.skipped) == 2
    assert Project.objects.filter(owner=other).count() == 2
    assert Attachment.objects.filter(owner=other).count() == 1


@pytest.mark.django_db
def test_one_conversation_export_brings_its_project_along(owner, make_user):
    project = Project.objects.create(owner=owner, name="Garden", instructions="Metric units.")
    conversation = chat(owner, title="tomatoes", project=project)
    document = json.loads(exports.export_json(conversation))
    assert document["project"]["name"] == "Garden" and document["conversation"]["project"] == project.pk
    other = make_user("importer")
    exports.import_conversations(other, json.dumps(document).encode())
    exports.import_conversations(other, json.dumps(document).encode())
    (garden,) = Project.objects.filter(owner=other)
    assert garden.instructions == "Metric units."
    assert Conversation.objects.get(owner=other).project_id == garden.pk


@pytest.mark.django_db
def test_an_import_with_a_bad_project_entry_names_it(owner):
    conversation = chat(owner)
    document = json.loads(exports.export_json(conversation))
    document["project"] = {"name": "", "id": 1}
    with pytest.raises(exports.ImportRejected) as refused:
        exports.import_conversations(owner, json.dumps(document).encode())
    assert refused.value.field == "[0].project.name"


@pytest.mark.django_db
def test_the_estimate_counts_the_projects_instructions_and_files(owner, attachment_storage):
    project = Project.objects.create(owner=owner, name="Work")
    conversation = chat(owner)
    client = api(owner)

    def estimate() -> int:
        response = send(
            client, "post", "/api/attachments/estimate/", {"conversation_id": conversation.pk, "content": "hi"}
        )
        return response.json()["prompt_tokens"]

    alone = estimate()
    conversation.project = project
    conversation.save()
    project.instructions = "word " * 200
    project.save()
    project_files.add_file(project, name="a.txt", data=b"other " * 300)
    assert estimate() >= alone + 450


@pytest.mark.django_db
def test_the_project_list_costs_two_queries_however_many_projects(owner, attachment_storage, django_assert_num_queries):
    for index in range(5):
        project = Project.objects.create(owner=owner, name=f"p{index}", position=index)
        chat(owner, project=project)
        project_files.add_file(project, name=f"{index}.txt", data=f"text {index}".encode())
    client = api(owner)
    # 1) session, 2) user, 3) projects with their chat counts, 4) their files.
    with django_assert_num_queries(4):
        results = client.get("/api/projects/").json()["results"]
    assert [(p["name"], p["conversation_count"], len(p["files"])) for p in results] == [
        (f"p{i}", 1, 1) for i in range(5)
    ]
