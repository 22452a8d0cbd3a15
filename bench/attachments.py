"""Whether reading a large attached file holds up the chats streaming on the same daphne process.

    .venv/bin/python bench/attachments.py --pdf-mb 10 --docx-pages 50 --streams 20

Generates a PDF of many pages of text (pypdf's writer, uncompressed content streams, ``--pdf-mb``) and a DOCX of
``--docx-pages`` pages (python-docx) in a scratch folder. One real daphne process runs on a scratch SQLite database
against the stamping offline server (a thread of this process), as in bench/relay.py. ``--streams`` websocket chats
(client processes, bench/wsclient.py) stream answers at ``--rate`` tokens/s for ``--seconds``; a further socket sends
a ``ping`` frame every 50 ms (its round trip is the event loop's lag as a client sees it). After a baseline window
this process uploads the PDF, then the DOCX, through ``POST /api/attachments/`` (session cookie + CSRF), as another
user. Meanwhile the worker's RSS (``VmRSS``) is sampled every 50 ms.

Printed: each upload's time to ready (the 201 answer: extraction is done within the request) and the worker's RSS
before, at its peak during the upload and after it; the chats' added latency per piece (p50/p99/max) and the ping
round trips in each window (baseline, during each upload, after). Exits 1 if an upload failed, a stream failed, or a
piece was lost.

``--extraction local`` (the default) names a gateway provider (``KIMI_PROVIDER=acedata``: no files API), so the
worker extracts the text itself (pypdf, python-docx) in daphne's thread pool: the case this benchmark is for.
``--extraction provider`` keeps Moonshot's files API (the offline server extracts, in this process).
"""

from __future__ import annotations

import argparse
import io
import secrets
import string
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402
import orjson  # noqa: E402

PING_INTERVAL = 0.05
RSS_INTERVAL = 0.05
WORDS = (
    "the relay reads each piece from the upstream and hands it to the socket while a worker thread extracts the "
    "text of a long document attached to a message for question answering over its whole context window"
).split()


def _line(n: int, i: int, words: int = 14) -> str:
    return " ".join(WORDS[(n * 7 + i * 3 + j) % len(WORDS)] for j in range(words)) + f" ({n}.{i})"


def make_pdf(target_bytes: int) -> tuple[bytes, int]:
    """Pages of plain text (60 lines each, Helvetica), until the content streams reach ``target_bytes``."""
    from pypdf import PdfWriter
    from pypdf.generic import DecodedStreamObject, DictionaryObject, NameObject

    writer = PdfWriter()
    font = DictionaryObject(
        {
            NameObject("/Type"): NameObject("/Font"),
            NameObject("/Subtype"): NameObject("/Type1"),
            NameObject("/BaseFont"): NameObject("/Helvetica"),
        }
    )
    resources = writer._add_object(DictionaryObject({NameObject("/Font"): DictionaryObject({NameObject("/F1"): font})}))
    size = pages = 0
    while size < target_bytes or pages == 0:
        ops = ["BT /F1 9 Tf 11 TL 40 800 Td"] + [f"({_line(pages, i)}) '" for i in range(60)] + ["ET"]
        stream = DecodedStreamObject()
        stream.set_data("\n".join(ops).encode())
        page = writer.add_blank_page(595, 842)
        page[NameObject("/Contents")] = writer._add_object(stream)
        page[NameObject("/Resources")] = resources
        size += len(stream.get_data()) + 150  # the page's and stream's own objects
        pages += 1
    buffer = io.BytesIO()
    writer.write(buffer)
    return buffer.getvalue(), pages


def make_docx(pages: int) -> bytes:
    """``pages`` pages, each a heading and 12 paragraphs of about 50 words, ended by a page break."""
    import docx

    document = docx.Document()
    for n in range(pages):
        document.add_heading(f"Section {n + 1}", level=2)
        for i in range(12):
            document.add_paragraph(" ".join(_line(n, i * 4 + k) for k in range(4)))
        document.add_page_break()
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


@dataclass
class Upload:
    name: str
    size: int
    start_ns: int = 0
    end_ns: int = 0
    status: int = 0
    body: dict = field(default_factory=dict)
    rss_before: float = 0.0
    rss_peak: float = 0.0
    rss_after: float = 0.0
    cpu_seconds: float = 0.0


class RssSampler(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.samples: list[tuple[int, float]] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            self.samples.append((time.monotonic_ns(), harness.rss_mb(self.pid)))
            time.sleep(RSS_INTERVAL)

    def peak(self, start: int, end: int) -> float:
        return max((mb for t, mb in self.samples if start <= t <= end), default=0.0)


def upload(client, url: str, name: str, data: bytes, content_type: str, pid: int, sampler: RssSampler) -> Upload:
    result = Upload(name, len(data))
    result.rss_before = harness.rss_mb(pid)
    cpu_before = harness.cpu_seconds(pid)
    result.start_ns = time.monotonic_ns()
    response = client.post(url + "/api/attachments/", files={"file": (name, data, content_type)})
    result.end_ns = time.monotonic_ns()
    result.cpu_seconds = harness.cpu_seconds(pid) - cpu_before
    result.status = response.status_code
    try:
        result.body = response.json()
    except ValueError:
        result.body = {"raw": response.text[:300]}
    time.sleep(1.0)  # "after": once the request's buffers are let go
    result.rss_peak = max(sampler.peak(result.start_ns, result.end_ns), result.rss_before)
    result.rss_after = harness.rss_mb(pid)
    return result


def spawn_client(job: dict) -> subprocess.Popen:
    proc = subprocess.Popen(  # noqa: S603
        [sys.executable, str(harness.CLIENT)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=harness.ROOT,
    )
    proc.stdin.write(orjson.dumps(job).decode() + "\n")
    proc.stdin.flush()
    if (line := proc.stdout.readline().strip()) != "ready":
        raise RuntimeError(f"a benchmark client failed to start (said {line!r})")
    return proc


def window_row(name: str, start: int, end: int, pieces, pings, load: str) -> dict:
    lat = [ms for t, ms in pieces if start <= t < end]
    rtt = [ms for t, ms in pings if start <= t < end]
    p = harness.percentile
    return {
        "window": name,
        "seconds": f"{(end - start) / 1e9:.1f}",
        "pieces": len(lat),
        "p50 ms": f"{p(lat, 50):.1f}",
        "p99 ms": f"{p(lat, 99):.1f}",
        "max ms": f"{max(lat, default=float('nan')):.1f}",
        "pings": len(rtt),
        "ping p50 ms": f"{p(rtt, 50):.1f}",
        "ping p99 ms": f"{p(rtt, 99):.1f}",
        "ping max ms": f"{max(rtt, default=float('nan')):.1f}",
        "load": load,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pdf-mb", type=float, default=10.0, help="size of the generated PDF, MB")
    parser.add_argument("--docx-pages", type=int, default=50, help="pages of the generated DOCX")
    parser.add_argument("--streams", type=int, default=20, help="chats streaming during the uploads")
    parser.add_argument("--rate", type=float, default=20.0, help="tokens per second of each chat")
    parser.add_argument("--seconds", type=float, default=70.0, help="how long each chat streams (covers the uploads)")
    parser.add_argument("--baseline", type=float, default=8.0, help="seconds of streaming before the first upload")
    parser.add_argument("--gap", type=float, default=3.0, help="seconds between the two uploads")
    parser.add_argument("--clients", type=int, default=2, help="client processes for the chats")
    parser.add_argument("--extraction", choices=("local", "provider"), default="local")
    args = parser.parse_args(argv)

    import httpx

    info = harness.machine()
    print(f"machine: {info['cpus']} CPUs ({info['cpu_model']}), {info['memory_gb']} GB; load {harness.load()}")
    with tempfile.TemporaryDirectory(prefix="kimichat-bench-files-") as folder:
        started = time.monotonic()
        pdf, pdf_pages = make_pdf(int(args.pdf_mb * 1024 * 1024))
        docx_bytes = make_docx(args.docx_pages)
        (Path(folder) / "bench.pdf").write_bytes(pdf)
        (Path(folder) / "bench.docx").write_bytes(docx_bytes)
        print(
            f"files: PDF {len(pdf) / 1e6:.2f} MB ({pdf_pages} pages), DOCX {len(docx_bytes) / 1e3:.0f} KB "
            f"({args.docx_pages} pages), generated in {time.monotonic() - started:.1f} s in {folder}"
        )
        env = {"KIMI_PROVIDER": "acedata"} if args.extraction == "local" else {}
        with harness.Bench(extra_env=env) as bench:
            return _run(bench, args, pdf, docx_bytes, httpx)


def _run(bench: harness.Bench, args, pdf: bytes, docx_bytes: bytes, httpx) -> int:
    streams = args.streams
    bench.ensure_users(streams + 2)  # the chats, the ping socket, the uploader
    bench.start_workers(1)
    worker = bench.workers[0]
    bench.run_level(1, rate=0, tokens=20, ramp=0, clients=1)  # warm-up, not reported
    idle = harness.rss_mb(worker.pid)
    print(f"daphne pid {worker.pid}: RSS after warm-up {idle:.1f} MB; extraction {args.extraction}", flush=True)

    tokens = max(1, int(args.rate * args.seconds))
    ramp = min(1.0, args.baseline / 2)
    base = {
        "model": harness.MODEL,
        "content": f"Benchmark stream {{marker}} says hello. [[tokens:{tokens}]] [[rate:{args.rate:g}]]",
        "timeout": args.seconds + 120,
        "url": worker.ws_url,
        "receive_times": True,
    }
    specs = [
        {"marker": f"A-{i}", "start": ramp * i / max(1, streams), "key": bench.sessions[i]} for i in range(streams)
    ]
    clients = max(1, min(args.clients, streams))
    procs = (
        [spawn_client({**base, "mode": "relay", "streams": specs[i::clients]}) for i in range(clients)]
        if streams
        else []
    )
    pinger = spawn_client(
        {
            **base,
            "mode": "ping",
            "interval": PING_INTERVAL,
            "duration": args.seconds,
            "streams": [{"marker": "ping", "start": 0, "key": bench.sessions[streams]}],
        }
    )
    csrf = "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(32))
    http = httpx.Client(
        cookies={"sessionid": bench.sessions[streams + 1], "csrftoken": csrf},
        headers={"X-CSRFToken": csrf, "Referer": worker.url + "/"},
        timeout=600,
    )
    sampler = RssSampler(worker.pid)
    sampler.start()
    outputs: list[str | None] = [None] * (len(procs) + 1)
    loads = {}
    try:
        t0 = time.monotonic_ns() + 200_000_000
        for proc in [*procs, pinger]:
            proc.stdin.write(f"go {t0}\n")
            proc.stdin.flush()
        readers = [
            threading.Thread(target=harness._read_rest, args=(proc, outputs, i), daemon=True)
            for i, proc in enumerate([*procs, pinger])
        ]
        for reader in readers:
            reader.start()
        time.sleep(max(0.0, (t0 - time.monotonic_ns()) / 1e9) + args.baseline)
        loads["baseline"] = harness.load()
        pdf_upload = upload(http, worker.url, "bench.pdf", pdf, "application/pdf", worker.pid, sampler)
        loads["pdf"] = harness.load()
        time.sleep(args.gap)
        docx_type = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
        docx_upload = upload(http, worker.url, "bench.docx", docx_bytes, docx_type, worker.pid, sampler)
        loads["docx"] = harness.load()
        covered = time.monotonic_ns() < t0 + int(args.seconds * 1e9)
        for reader in readers:
            reader.join()
        loads["after"] = harness.load()
        end_ns = time.monotonic_ns()
    finally:
        sampler.stopping.set()
        http.close()
        for proc in [*procs, pinger]:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)
    errors = bench.log_errors()

    pieces, failed, lost, last_piece = [], 0, 0, t0
    for output in outputs[:-1]:
        for stream in orjson.loads(output)["results"] if output else []:
            if stream.get("status") != "complete":
                failed += 1
            lost += max(0, tokens - stream.get("pieces", 0))
            pieces += [(t, ns / 1e6) for t, ns in zip(stream["received_ns"], stream["latencies_ns"], strict=True)]
            last_piece = max(last_piece, stream.get("last_ns") or 0)
    failed += sum(1 for output in outputs[:-1] if not output)
    pings = [(t, ns / 1e6) for t, ns in (orjson.loads(outputs[-1])["results"][0]["rounds"] if outputs[-1] else [])]

    print()
    rows = []
    for item in (pdf_upload, docx_upload):
        rows.append(
            {
                "file": item.name,
                "bytes": f"{item.size:,}",
                "HTTP": item.status,
                "status": item.body.get("status", item.body.get("code", "?")),
                "tokens": f"{item.body.get('tokens', 0):,}",
                "time to ready s": f"{(item.end_ns - item.start_ns) / 1e9:.2f}",
                "worker CPU s": f"{item.cpu_seconds:.1f}",
                "RSS before MB": f"{item.rss_before:.1f}",
                "RSS peak MB": f"{item.rss_peak:.1f}",
                "RSS after (1 s) MB": f"{item.rss_after:.1f}",
                "load": loads["pdf" if item is pdf_upload else "docx"],
            }
        )
    harness.print_table(rows)
    print()
    steady = t0 + int((ramp + min(0.5, args.baseline / 4)) * 1e9)  # past the ramp and the chats' first pieces
    windows = [
        window_row("baseline (no upload)", steady, pdf_upload.start_ns, pieces, pings, loads["baseline"]),
        window_row("during PDF upload", pdf_upload.start_ns, pdf_upload.end_ns, pieces, pings, loads["pdf"]),
        window_row("during DOCX upload", docx_upload.start_ns, docx_upload.end_ns, pieces, pings, loads["docx"]),
        window_row("after the uploads", docx_upload.end_ns, min(end_ns, last_piece + 1), pieces, pings, loads["after"]),
    ]
    harness.print_table(windows)
    # Where in the upload the loop was held up: the body arriving, the extraction, or the storing at the end.
    print()
    seconds = int((pdf_upload.end_ns - pdf_upload.start_ns) // 1_000_000_000) + 1
    for label, series in (("ping", pings), ("chat piece latency", pieces)):
        per_second = [
            max((ms for t, ms in series if 0 <= t - pdf_upload.start_ns - k * 1_000_000_000 < 1e9), default=0)
            for k in range(seconds)
        ]
        print(f"longest {label} in each second of the PDF upload, ms: " + " ".join(f"{ms:.0f}" for ms in per_second))
    print(
        f"\n{streams} chats × {args.rate:g} tokens/s for {args.seconds:g} s; latency = client receive − upstream send "
        f"per piece; ping = round trip of a `ping` frame every {PING_INTERVAL * 1000:.0f} ms on another socket"
    )
    print(f"worker RSS: after warm-up {idle:.1f} MB, at the end {harness.rss_mb(worker.pid):.1f} MB")
    if not covered:
        print("NOTE: the chats ended before the uploads did; raise --seconds to cover them")
    if errors:
        print("\nlast errors in daphne's log:\n  " + "\n  ".join(errors))
    bad = [u.name for u in (pdf_upload, docx_upload) if u.status != 201 or u.body.get("status") != "ready"]
    if bad or failed or lost:
        print(
            f"FAILED: uploads not ready {bad} {[u.body for u in (pdf_upload, docx_upload)]}; "
            f"{failed} streams failed; {lost} pieces lost"
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
