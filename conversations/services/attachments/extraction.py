"""A document's text, extracted locally: for providers without a files API (the gateways), and as the fallback when
the provider's extraction fails. pypdf, python-docx, openpyxl and python-pptx (docs/attachments.md says why);
HTML and EPUB through the standard library's HTML parser.

Runs in a child process (isolation.py), never on the event loop nor in a thread of the worker.
"""

from __future__ import annotations

import io
import logging
import zipfile
from html.parser import HTMLParser

from django.utils.translation import gettext as _

from conversations.services.attachments.limits import AttachmentRefused
from conversations.services.attachments.sniffing import Sniffed, check_zip, decode_text

logger = logging.getLogger(__name__)


def corrupt_file() -> AttachmentRefused:
    return AttachmentRefused("corrupt_file", _("The file is damaged and could not be read."))


def _encrypted() -> AttachmentRefused:
    return AttachmentRefused("encrypted_file", _("The file is password-protected; remove the password first."))


def check_pdf(data: bytes):
    """Open a PDF (refusing encrypted and damaged ones) and return its reader. Used before a provider upload too."""
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            # An owner password alone (printing/copying limits) opens with an empty user password.
            try:
                opened = reader.decrypt("")
            except Exception:  # noqa: BLE001 - an unknown or broken encryption is the same answer
                opened = 0
            if not opened:
                raise _encrypted()
        len(reader.pages)  # parses the page tree: a truncated file fails here
    except AttachmentRefused:
        raise
    except (PdfReadError, ValueError, KeyError, TypeError, AttributeError, IndexError, OSError, RecursionError):
        raise corrupt_file() from None
    return reader


def extract_text(data: bytes, sniffed: Sniffed) -> str:
    """The text of a document, or AttachmentRefused (damaged, encrypted). May be empty: the caller refuses that."""
    extractor = {
        "pdf": _pdf,
        "docx": _docx,
        "xlsx": _xlsx,
        "pptx": _pptx,
        "epub": _epub,
        "html": lambda d: html_text(decode_text(d) or ""),
        "text": lambda d: decode_text(d) or "",
    }[sniffed.label]
    try:
        return extractor(data).strip()
    except AttachmentRefused:
        raise
    except Exception:  # noqa: BLE001 - every library has its own errors for a damaged file
        logger.info("extracting a %s failed", sniffed.label, exc_info=True)
        raise corrupt_file() from None


def _pdf(data: bytes) -> str:
    reader = check_pdf(data)
    return "\n\n".join((page.extract_text() or "").strip() for page in reader.pages)


def _docx(data: bytes) -> str:
    import docx

    document = docx.Document(io.BytesIO(data))
    parts = [paragraph.text for paragraph in document.paragraphs]
    for table in document.tables:
        for row in table.rows:
            parts.append("\t".join(cell.text for cell in row.cells))
    return "\n".join(parts)


def _xlsx(data: bytes) -> str:
    import openpyxl

    workbook = openpyxl.load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    parts = []
    try:
        for sheet in workbook.worksheets:
            parts.append(f"## {sheet.title}")
            for row in sheet.iter_rows(values_only=True):
                if any(value is not None for value in row):
                    parts.append("\t".join("" if value is None else str(value) for value in row))
    finally:
        workbook.close()
    return "\n".join(parts)


def _pptx(data: bytes) -> str:
    import pptx

    presentation = pptx.Presentation(io.BytesIO(data))
    parts = []
    for number, slide in enumerate(presentation.slides, start=1):
        parts.append(f"## Slide {number}")
        for shape in slide.shapes:
            if shape.has_text_frame:
                parts.append(shape.text_frame.text)
    return "\n".join(parts)


def _epub(data: bytes) -> str:
    archive = zipfile.ZipFile(io.BytesIO(data))
    check_zip(archive)
    parts = []
    for name in archive.namelist():
        if name.lower().endswith((".xhtml", ".html", ".htm")):
            parts.append(html_text(archive.read(name).decode("utf-8", errors="replace")))
    return "\n\n".join(part for part in parts if part)


class _TextOfHTML(HTMLParser):
    SKIP = {"script", "style", "head", "template", "noscript"}
    BLOCK = {"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "section", "article", "pre"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skipping = 0

    def handle_starttag(self, tag, attrs):
        if tag in self.SKIP:
            self.skipping += 1
        elif tag in self.BLOCK:
            self.parts.append("\n")

    def handle_endtag(self, tag):
        if tag in self.SKIP and self.skipping:
            self.skipping -= 1

    def handle_data(self, data):
        if not self.skipping:
            self.parts.append(data)


def html_text(html: str) -> str:
    parser = _TextOfHTML()
    parser.feed(html)
    parser.close()
    lines = (" ".join(line.split()) for line in "".join(parser.parts).splitlines())
    return "\n".join(line for line in lines if line)
