"""What a file is, read from its bytes (never from its name or the browser's type), and the bounds on zip-based
documents (docx, xlsx, pptx and epub are zip archives: a few kilobytes can claim gigabytes)."""

from __future__ import annotations

import codecs
import io
import zipfile
from dataclasses import dataclass

from django.utils.translation import gettext as _

from conversations.services.attachments import limits
from conversations.services.attachments.limits import AttachmentRefused

DOCUMENT = "document"
IMAGE = "image"


@dataclass(frozen=True)
class Sniffed:
    kind: str  # DOCUMENT or IMAGE
    label: str  # pdf, docx, xlsx, pptx, epub, html, text; png, jpeg, gif, webp
    content_type: str


_TEXT_TYPES = {
    "md": "text/markdown",
    "markdown": "text/markdown",
    "csv": "text/csv",
    "json": "application/json",
    "html": "text/html",
    "htm": "text/html",
}
_ZIP_KINDS = {
    "word/document.xml": ("docx", "application/vnd.openxmlformats-officedocument.wordprocessingml.document"),
    "xl/workbook.xml": ("xlsx", "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"),
    "ppt/presentation.xml": ("pptx", "application/vnd.openxmlformats-officedocument.presentationml.presentation"),
}


def _unsupported() -> AttachmentRefused:
    return AttachmentRefused(
        "unsupported_type",
        _(
            "This kind of file is not supported. Attach a PDF, Word, Excel, PowerPoint, EPUB, text, Markdown, CSV, "
            "JSON, HTML or source code file, or a PNG, JPEG, WebP or GIF image."
        ),
        status=415,
    )


def sniff(data: bytes, name: str) -> Sniffed:
    if not data:
        raise AttachmentRefused("empty_file", _("The file is empty (0 bytes)."))
    if data.startswith(b"%PDF-"):
        return Sniffed(DOCUMENT, "pdf", "application/pdf")
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return Sniffed(IMAGE, "png", "image/png")
    if data.startswith(b"\xff\xd8\xff"):
        return Sniffed(IMAGE, "jpeg", "image/jpeg")
    if data.startswith((b"GIF87a", b"GIF89a")):
        return Sniffed(IMAGE, "gif", "image/gif")
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return Sniffed(IMAGE, "webp", "image/webp")
    if data.startswith(b"PK\x03\x04"):
        return _sniff_zip(data)
    text = decode_text(data)
    if text is None:
        raise _unsupported()
    extension = name.rsplit(".", 1)[-1].lower() if "." in name else ""
    head = text.lstrip()[:100].lower()
    if head.startswith(("<!doctype html", "<html")):
        return Sniffed(DOCUMENT, "html", "text/html")
    content_type = _TEXT_TYPES.get(extension, "text/plain")
    return Sniffed(DOCUMENT, "html" if content_type == "text/html" else "text", content_type)


def decode_text(data: bytes) -> str | None:
    """The bytes as text (UTF-8, or UTF-16 with a byte-order mark), or None when they are not text."""
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        try:
            text = data.decode("utf-16")
        except UnicodeDecodeError:
            return None
    else:
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError:
            return None
    # Binary formats that happen to be valid UTF-8 (and NUL-padded files) carry control characters text never has.
    controls = sum(1 for ch in text[:65536] if ord(ch) < 32 and ch not in "\t\n\r\f")
    if "\x00" in text or controls > len(text[:65536]) // 100:
        return None
    return text


def _sniff_zip(data: bytes) -> Sniffed:
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        check_zip(archive)
        names = set(archive.namelist())
        for marker, (label, content_type) in _ZIP_KINDS.items():
            if marker in names:
                return Sniffed(DOCUMENT, label, content_type)
        if "mimetype" in names and archive.read("mimetype").strip() == b"application/epub+zip":
            return Sniffed(DOCUMENT, "epub", "application/epub+zip")
    except (zipfile.BadZipFile, EOFError, ValueError, NotImplementedError):
        raise AttachmentRefused("corrupt_file", _("The file is damaged and could not be read.")) from None
    raise _unsupported()


def check_zip(archive: zipfile.ZipFile) -> None:
    """Refuse a zip whose entries expand past the bounds. Reading an entry stops at its declared size (and fails on
    a CRC mismatch), so the declared sizes checked here bound what extraction can ever read."""
    entries = archive.infolist()
    if len(entries) > limits.MAX_ZIP_ENTRIES:
        raise _bomb()
    total = 0
    for entry in entries:
        if entry.flag_bits & 0x1:
            raise AttachmentRefused("encrypted_file", _("The file is password-protected; remove the password first."))
        total += entry.file_size
        if entry.file_size > limits.ZIP_RATIO_FLOOR and (
            entry.compress_size == 0 or entry.file_size / entry.compress_size > limits.max_zip_ratio()
        ):
            raise _bomb()
    if total > limits.max_unzipped():
        raise _bomb()


def _bomb() -> AttachmentRefused:
    return AttachmentRefused(
        "archive_too_large",
        _("The document expands to more than %(limit)s when unpacked; it was refused as a possible zip bomb.")
        % {"limit": limits.megabytes(limits.max_unzipped())},
    )
