"""Document extraction in child processes. pypdf, python-docx and the rest are pure Python: in a thread of the
worker, a large PDF held the GIL for seconds and every other user's chat on that worker slowed (p99 8 → 350 ms,
docs/performance.md, "Attachments"). A child process has a GIL of its own, so the worker's event loop keeps its pace.

The children are spawned (not forked: the worker runs threads and a Twisted reactor), set Django up once, and take
the parent's attachment limits and language with each file, so a refusal reads as it would have in the parent.
``ATTACHMENT_EXTRACTION_PROCESSES=0`` extracts in the calling thread instead.
"""

from __future__ import annotations

import atexit
import logging
import threading
from typing import TYPE_CHECKING

from django.conf import settings
from django.utils import translation

from conversations.services.attachments import extraction
from conversations.services.attachments.limits import AttachmentRefused
from conversations.services.attachments.sniffing import Sniffed

if TYPE_CHECKING:
    from concurrent.futures import ProcessPoolExecutor

logger = logging.getLogger(__name__)

_lock = threading.Lock()
_pool: ProcessPoolExecutor | None = None


def _limits() -> dict:
    """The settings extraction reads (zip bounds and the like), as the parent has them (tests override them)."""
    return {name: getattr(settings, name) for name in dir(settings) if name.startswith("KIMICHAT_ATTACHMENT")}


def _start_child() -> None:
    import django

    django.setup()


def _in_child(task: str, data: bytes, sniffed: Sniffed | None, language: str, limits: dict) -> tuple[str, object]:
    for name, value in limits.items():
        setattr(settings, name, value)
    with translation.override(language):
        try:
            if task == "check_pdf":
                extraction.check_pdf(data)
                return "text", ""
            return "text", extraction.extract_text(data, sniffed)
        except AttachmentRefused as exc:
            return "refused", (exc.code, str(exc.message), exc.status, exc.extra)


def _executor() -> ProcessPoolExecutor:
    # multiprocessing is imported by the first file a worker extracts, not at start: 1.7 MB of every worker's RSS.
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    global _pool
    with _lock:
        if _pool is None:
            # Let go of the pool before the interpreter tears its modules down (imported late, multiprocessing goes
            # first, and the pool's own clean-up would then fail noisily at exit).
            atexit.register(_forget_pool)
            _pool = ProcessPoolExecutor(
                max_workers=settings.KIMICHAT_ATTACHMENT_EXTRACTION_PROCESSES,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_start_child,
            )
        return _pool


def _forget_pool() -> None:
    global _pool
    with _lock:
        broken, _pool = _pool, None
    if broken is not None:
        broken.shutdown(wait=False, cancel_futures=True)


def extract_text(data: bytes, sniffed: Sniffed) -> str:
    """``extraction.extract_text`` in a child process: the text, or the same ``AttachmentRefused``."""
    if settings.KIMICHAT_ATTACHMENT_EXTRACTION_PROCESSES == 0:
        return extraction.extract_text(data, sniffed)
    return _run("extract", data, sniffed)


def check_pdf(data: bytes) -> None:
    """``extraction.check_pdf`` (encrypted or damaged: refused) in a child process: parsing a large PDF holds the GIL
    too. For a PDF that goes to the provider's files API; local extraction checks it on its own."""
    if settings.KIMICHAT_ATTACHMENT_EXTRACTION_PROCESSES == 0:
        extraction.check_pdf(data)
        return
    _run("check_pdf", data, None)


def _run(task: str, data: bytes, sniffed: Sniffed | None) -> str:
    from concurrent.futures.process import BrokenProcessPool

    try:
        future = _executor().submit(_in_child, task, data, sniffed, translation.get_language(), _limits())
        kind, value = future.result()
    except BrokenProcessPool:
        # The child died (out of memory on a hostile file, killed): a new pool serves the next upload.
        logger.warning("a document extraction process died; refusing the file and starting afresh")
        _forget_pool()
        raise extraction.corrupt_file() from None
    if kind == "refused":
        code, message, status, extra = value
        raise AttachmentRefused(code, message, status=status, **extra)
    return value
