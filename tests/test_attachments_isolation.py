"""Documents are read in child processes (services/attachments/isolation.py): their libraries hold the GIL, and in a
thread of the worker a large PDF slowed every other chat on it (docs/performance.md). The benchmark measures the
effect; these tests pin the mechanism and that a refusal reads the same from a child."""

import os

import pytest
from django.utils import translation

from conversations.services.attachments import extraction, isolation
from conversations.services.attachments.limits import AttachmentRefused
from conversations.services.attachments.sniffing import sniff
from tests.fixtures import samples

pytestmark = pytest.mark.django_db


def test_a_document_is_read_in_another_process(local_extraction, owner, upload):
    response = upload(owner, samples.pdf("Revenue grew in every region"), "report.pdf")
    assert response.status_code == 201, response.content
    children = list(isolation._executor()._processes)
    assert children and os.getpid() not in children


def test_the_child_gives_the_same_text_as_the_library_in_this_process(local_extraction):
    for name, data in [("a.pdf", samples.pdf()), ("b.docx", samples.docx()), ("c.xlsx", samples.xlsx())]:
        sniffed = sniff(data, name)
        assert isolation.extract_text(data, sniffed) == extraction.extract_text(data, sniffed)


def test_a_refusal_in_the_child_reads_as_in_the_parent_in_its_language(local_extraction, settings):
    damaged = samples.docx()[:-200]  # a zip whose central directory is cut: python-docx cannot open it
    sniffed = sniff(samples.docx(), "notes.docx")
    with translation.override("zh-hans"), pytest.raises(AttachmentRefused) as caught:
        isolation.extract_text(damaged, sniffed)
    assert caught.value.code == "corrupt_file"
    assert caught.value.message == "文件已损坏，无法读取。"


def test_the_parents_limits_apply_in_the_child(local_extraction, settings):
    settings.KIMICHAT_ATTACHMENT_MAX_UNZIPPED_BYTES = 1024  # the sample document expands to more than this
    with pytest.raises(AttachmentRefused) as caught:
        isolation.extract_text(samples.docx(), sniff(samples.docx(), "notes.docx"))
    assert caught.value.code == "archive_too_large"


def test_no_child_processes_reads_in_the_calling_thread(local_extraction, settings, monkeypatch):
    settings.KIMICHAT_ATTACHMENT_EXTRACTION_PROCESSES = 0
    monkeypatch.setattr(isolation, "_executor", lambda: pytest.fail("no child process may be asked"))
    assert "committee" in isolation.extract_text(samples.docx(), sniff(samples.docx(), "notes.docx"))
