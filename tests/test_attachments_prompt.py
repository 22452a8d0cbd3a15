"""What a message with attachments sends upstream, as plain functions: documents before their question, images as
parts, a turn's files trimmed with it, the newest turn never cut."""

import pytest

from conversations.models import Attachment, Conversation, Message
from conversations.services.attachments import prompt, uploads
from conversations.services.chat.context import ContextTooLong, build_messages
from tests.fixtures import samples

pytestmark = pytest.mark.django_db


@pytest.fixture
def conversation(local_extraction, owner):
    return Conversation.objects.create(owner=owner, model="moonshot-v1-8k")


def user_message(conversation, content: str, files: list[tuple[str, bytes]]) -> Message:
    message = Message.objects.create(conversation=conversation, role="user", content=content)
    for name, data in files:
        attachment = uploads.create_attachment(conversation.owner, name=name, data=data)
        Attachment.objects.filter(pk=attachment.pk).update(message=message)
    return message


def test_documents_go_before_their_question_and_images_as_parts(conversation):
    message = user_message(conversation, "Compare", [("a.txt", b"alpha text"), ("p.png", samples.image())])
    sent, tokens = build_messages(
        [message], model="kimi-k2.6", system_prompt="Be brief.", max_tokens=None, thinks=False
    )
    assert [m["role"] for m in sent] == ["system", "system", "user"]
    assert sent[1]["content"] == "Document: a.txt\n\nalpha text"
    assert sent[2]["content"][0] == {"type": "text", "text": "Compare"}
    assert sent[2]["content"][1]["image_url"]["url"].startswith("data:image/png;base64,")
    assert "_before" not in sent[2]
    assert tokens >= 1024  # the image's flat estimate counts


def test_an_old_turns_documents_are_trimmed_with_it_and_the_newest_turn_kept(conversation):
    old = user_message(conversation, "old question", [("big.txt", b"lorem " * 5000)])  # ~7,500 tokens
    answer = Message.objects.create(conversation=conversation, role="assistant", content="old answer")
    new = user_message(conversation, "new question", [("small.txt", b"the small file")])
    sent, _ = build_messages(
        [old, answer, new], model="moonshot-v1-8k", system_prompt="", max_tokens=None, thinks=False
    )
    assert [m["content"][:20] for m in sent] == ["Document: small.txt\n", "new question"]


def test_a_newest_turn_whose_documents_cannot_fit_is_refused_not_cut(conversation):
    new = user_message(conversation, "summarise", [("huge.txt", b"lorem " * 8000)])
    with pytest.raises(ContextTooLong):
        build_messages([new], model="moonshot-v1-8k", system_prompt="", max_tokens=None, thinks=False)


def test_too_long_names_each_file_and_the_window(conversation):
    message = user_message(conversation, "x", [("one.txt", b"word " * 4000), ("two.txt", b"more " * 4000)])
    files = list(message.attachments.all())
    refusal = prompt.too_long("x", files, system_tokens=0, window=8192, reserve=2048)
    assert refusal.code == "context_too_long"
    assert "one.txt ≈ 5,016" in refusal.message and "two.txt ≈ 5,016" in refusal.message
    assert "8,192" in refusal.message
    assert prompt.too_long("x", files[:1], system_tokens=0, window=8192, reserve=2048) is None
