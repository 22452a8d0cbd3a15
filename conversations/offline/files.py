"""The offline server's files API, as Moonshot documents it [notes §10]: ``POST /files`` (multipart ``file`` and
``purpose``), ``GET /files``, ``GET /files/{id}``, ``GET /files/{id}/content`` (the extracted text, text/plain) and
``DELETE /files/{id}``. The gateways have none (their profiles leave the endpoint out).

Strict like the rest: an unknown purpose, a zero-byte or too large file and the file-count limit are refused with
Moonshot's 400 ``invalid_request_error`` and its wording; an unknown id is a 404. The extraction here is its own
(text decoded, pypdf for PDFs, the XML text of Office files), written apart from the app's, so the two cannot share
a bug.

``context_report`` is what ``[[echo:context]]`` appends to the echo: the first words of every system message and
the number of images, so a test can prove what reached the prompt.
"""

from __future__ import annotations

import email.parser
import email.policy
import io
import re
import threading
import time
import uuid
import zipfile
from dataclasses import dataclass

from conversations.offline import wire

MAX_FILE_BYTES = 100 * 1024 * 1024  # [doc: files]
MAX_FILES = 1000  # per account [doc: files]
PURPOSES = ("file-extract", "image", "video", "batch")  # [doc: files]; newer lists more [?]
_XML_TEXT = re.compile(rb"<(?:w|a):t(?:\s[^>]*)?>([^<]*)</(?:w|a):t>|<t(?:\s[^>]*)?>([^<]*)</t>")


@dataclass
class StoredFile:
    id: str
    filename: str
    purpose: str
    data: bytes
    text: str
    created_at: int

    def as_object(self) -> dict:
        return {
            "id": self.id,
            "object": "file",
            "bytes": len(self.data),
            "created_at": self.created_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "ready",
            "status_details": "",
        }


def _bad(message: str) -> wire.ErrorReply:
    return wire.openai_error(400, "invalid_request_error", message)


def _not_found(file_id: str) -> wire.ErrorReply:
    return wire.openai_error(404, "resource_not_found_error", f"file {file_id} not found")  # [?] wording


def _parts(content_type: str, body: bytes) -> dict[str, tuple[str | None, bytes]]:
    """Multipart form fields: name -> (filename, bytes)."""
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode("latin-1")
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
    fields = {}
    if not message.is_multipart():
        return fields
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if name:
            fields[str(name)] = (part.get_filename(), part.get_payload(decode=True) or b"")
    return fields


def extract(data: bytes) -> str:
    if data.startswith(b"%PDF-"):
        try:
            from pypdf import PdfReader

            reader = PdfReader(io.BytesIO(data))
            return "\n".join(page.extract_text() or "" for page in reader.pages).strip()
        except Exception:  # noqa: BLE001 - Moonshot returns what it could read: nothing
            return ""
    if data.startswith(b"PK\x03\x04"):
        try:
            archive = zipfile.ZipFile(io.BytesIO(data))
            texts = []
            for name in sorted(archive.namelist()):
                if name.endswith(".xml") and name.startswith(("word/", "ppt/slides/", "xl/sharedStrings")):
                    texts += [(a or b).decode("utf-8", "replace") for a, b in _XML_TEXT.findall(archive.read(name))]
            return " ".join(t for t in texts if t.strip())
        except (zipfile.BadZipFile, KeyError, ValueError):
            return ""
    return data.decode("utf-8", errors="replace").strip()


class FileStore:
    def __init__(self, *, max_file_bytes: int = MAX_FILE_BYTES, max_files: int = MAX_FILES):
        self.max_file_bytes = max_file_bytes
        self.max_files = max_files
        self.files: dict[str, StoredFile] = {}
        self._lock = threading.Lock()

    def upload(self, content_type: str, body: bytes) -> tuple[int, bytes] | wire.ErrorReply:
        if not content_type.lower().startswith("multipart/form-data"):
            return _bad("Invalid request: the body must be multipart/form-data")  # [?]
        fields = _parts(content_type, body)
        purpose = fields.get("purpose", (None, b""))[1].decode("utf-8", "replace")
        if purpose not in PURPOSES:
            return _bad(f"Invalid purpose: {purpose}")
        if "file" not in fields:
            return _bad("Invalid request: file is required")  # [?]
        filename, data = fields["file"]
        if not data:
            return _bad("File size is zero, please confirm and re-upload the file")
        if len(data) > self.max_file_bytes:
            limit = self.max_file_bytes // (1024 * 1024)
            return _bad(f"File size is too large, max file size is {limit}MB, please confirm and re-upload the file")
        with self._lock:
            if len(self.files) >= self.max_files:
                return _bad(f"You have exceeded the max file count {self.max_files}, please delete some files")
            stored = StoredFile(
                id="cn" + uuid.uuid4().hex[:18],
                filename=filename or "upload",
                purpose=purpose,
                data=data,
                text=extract(data) if purpose == "file-extract" else "",
                created_at=int(time.time()),
            )
            self.files[stored.id] = stored
        return 200, wire.dumps(stored.as_object())

    def route(self, method: str, rest: str) -> tuple[int, bytes, str] | wire.ErrorReply:
        """``rest``: the path after ``/files`` ("", "/{id}", "/{id}/content")."""
        if method == "GET" and rest == "":
            with self._lock:
                data = [f.as_object() for f in self.files.values()]
            return 200, wire.dumps({"object": "list", "data": data}), "application/json"
        file_id, _, tail = rest.lstrip("/").partition("/")
        with self._lock:
            stored = self.files.get(file_id)
            if stored is not None and method == "DELETE" and tail == "":
                del self.files[file_id]
        if stored is None:
            return _not_found(file_id)
        if method == "DELETE" and tail == "":
            return 200, wire.dumps({"id": file_id, "object": "file", "deleted": True}), "application/json"
        if method == "GET" and tail == "":
            return 200, wire.dumps(stored.as_object()), "application/json"
        if method == "GET" and tail == "content":
            return 200, stored.text.encode(), "text/plain; charset=utf-8"
        return wire.openai_error(404, "resource_not_found_error", "url.not_found: the requested URL was not found")


def context_report(messages: list[dict]) -> str:
    """``[system: first words…]`` per system message and ``[images: N]``: what reached the prompt."""
    lines = []
    images = 0
    for message in messages:
        content = message.get("content")
        if message.get("role") == "system" and isinstance(content, str):
            lines.append("[system: " + " ".join(content.split()[:8]) + "]")
        if isinstance(content, list):
            images += sum(1 for p in content if isinstance(p, dict) and p.get("type") == "image_url")
    lines.append(f"[images: {images}]")
    return "\n".join(lines)
