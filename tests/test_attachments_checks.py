"""The attachment checks as plain functions: the type read from the bytes, zip bounds, local extraction, images."""

import io

import pytest
from PIL import Image

from conversations.services.attachments import extraction, images
from conversations.services.attachments.limits import AttachmentRefused
from conversations.services.attachments.sniffing import sniff
from tests.fixtures import samples


def refused(call) -> AttachmentRefused:
    with pytest.raises(AttachmentRefused) as caught:
        call()
    return caught.value


@pytest.mark.parametrize(
    ("make", "kind", "label"),
    [
        (samples.pdf, "document", "pdf"),
        (samples.docx, "document", "docx"),
        (samples.xlsx, "document", "xlsx"),
        (samples.pptx, "document", "pptx"),
        (samples.epub, "document", "epub"),
        (lambda: samples.image("PNG"), "image", "png"),
        (lambda: samples.image("JPEG"), "image", "jpeg"),
        (lambda: samples.image("GIF"), "image", "gif"),
        (lambda: samples.image("WEBP"), "image", "webp"),
    ],
)
def test_the_type_comes_from_the_bytes_not_the_name(make, kind, label):
    sniffed = sniff(make(), "misleading-name.txt")
    assert (sniffed.kind, sniffed.label) == (kind, label)


def test_text_files_are_typed_by_their_extension_once_known_to_be_text():
    assert sniff(b"a,b\n1,2\n", "t.csv").content_type == "text/csv"
    assert sniff(b"# Title\n", "t.md").content_type == "text/markdown"
    assert sniff(b"def f():\n    return 1\n", "f.py").content_type == "text/plain"
    assert sniff(b"<!DOCTYPE html><p>x</p>", "page.txt").label == "html"


def test_a_binary_file_named_like_a_document_is_refused_as_unsupported():
    error = refused(lambda: sniff(b"MZ\x90\x00\x03\x00\x00\x00" + bytes(range(256)), "report.pdf"))
    assert error.code == "unsupported_type" and error.status == 415


def test_a_zip_that_is_no_office_document_or_epub_is_refused():
    out = io.BytesIO()
    import zipfile

    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("notes.txt", "hello")
    assert refused(lambda: sniff(out.getvalue(), "notes.docx")).code == "unsupported_type"


def test_a_zero_byte_file_is_refused():
    assert refused(lambda: sniff(b"", "empty.txt")).code == "empty_file"


def test_a_zip_bomb_is_refused_before_anything_is_unpacked(settings):
    settings.KIMICHAT_ATTACHMENT_MAX_UNZIPPED_BYTES = 10 * 1024 * 1024
    error = refused(lambda: sniff(samples.zip_bomb(size=20 * 1024 * 1024), "big.docx"))
    assert error.code == "archive_too_large"
    assert "10.0 MB" in error.message


def test_a_high_ratio_entry_is_refused_even_under_the_total_bound(settings):
    settings.KIMICHAT_ATTACHMENT_MAX_ZIP_RATIO = 100  # zeros pack about 1000:1
    assert refused(lambda: sniff(samples.zip_bomb(size=8 * 1024 * 1024), "big.docx")).code == "archive_too_large"


@pytest.mark.parametrize(
    ("make", "label", "expected"),
    [
        (samples.pdf, "pdf", "Quarterly revenue grew"),
        (samples.docx, "docx", "The committee approved the budget"),
        (samples.xlsx, "xlsx", "north\t42"),
        (samples.pptx, "pptx", "Launch plan for the spring"),
        (samples.epub, "epub", "Chapter one begins at dawn"),
    ],
)
def test_local_extraction_reads_each_format(make, label, expected):
    data = make()
    sniffed = sniff(data, "file")
    assert sniffed.label == label
    assert expected in extraction.extract_text(data, sniffed)


def test_html_text_leaves_out_scripts_and_styles():
    data = b"<html><head><style>p{}</style></head><body><p>Visible</p><script>alert(1)</script></body></html>"
    assert extraction.extract_text(data, sniff(data, "x.html")) == "Visible"


def test_an_encrypted_pdf_is_refused_with_its_reason():
    data = samples.encrypted_pdf()
    assert refused(lambda: extraction.extract_text(data, sniff(data, "x.pdf"))).code == "encrypted_file"


def test_a_truncated_pdf_is_refused_as_damaged():
    data = samples.pdf()[:120]
    assert refused(lambda: extraction.extract_text(data, sniff(data, "x.pdf"))).code == "corrupt_file"


def test_a_damaged_docx_is_refused_as_damaged():
    data = samples.docx().replace(b"word/document.xml", b"word/documenX.xml", 1)
    data = data[: len(data) // 2]
    assert refused(lambda: extraction.extract_text(data, sniff(samples.docx(), "x.docx"))).code == "corrupt_file"


def test_images_are_reencoded_without_exif_and_scaled_down(settings):
    settings.KIMICHAT_ATTACHMENT_IMAGE_MAX_SIDE = 32
    data = samples.image("JPEG", (128, 64), exif=True)
    assert b"SecretCam" in data
    encoded = images.reencode(data, sniff(data, "photo.jpg"))
    assert b"SecretCam" not in encoded.data
    assert (encoded.width, encoded.height) == (32, 16)
    assert Image.open(io.BytesIO(encoded.data)).format == "JPEG"


def test_an_image_over_the_pixel_limit_is_refused_before_decoding(settings):
    settings.KIMICHAT_ATTACHMENT_MAX_PIXELS = 1000
    data = samples.image("PNG", (100, 100))
    error = refused(lambda: images.reencode(data, sniff(data, "big.png")))
    assert error.code == "image_too_large" and "100×100" in error.message


def test_a_truncated_image_is_refused_as_damaged():
    data = samples.image("PNG", (300, 300))[:200]
    assert refused(lambda: images.reencode(data, sniff(data, "x.png"))).code == "corrupt_file"


def test_a_gif_becomes_its_first_frame_as_png():
    data = samples.image("GIF")
    encoded = images.reencode(data, sniff(data, "a.gif"))
    assert encoded.content_type == "image/png"
