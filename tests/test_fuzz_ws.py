"""Thousands of random and malformed websocket frames: each gets an `error` frame with a documented code, or the
socket is closed with a documented code; the server stays up (a `ping` still gets `pong`) and nothing is stored.

The fuzzing user has no credits, so even a frame that happens to be a valid `send` is refused before anything is
stored: any new conversation or message row after a frame is a failure. Error and close codes are read from
docs/websocket-protocol.md, so "documented" means written down there.
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import orjson
import pytest
import websockets
from asgiref.sync import sync_to_async
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conversations.consumers.chat import MAX_FRAME_BYTES
from conversations.models import Conversation, Message
from conversations.services.billing import credits
from conversations.services.chat import frames
from tests.daphne import start_daphne
from tests.fixtures.ws import _session_key

pytestmark = [pytest.mark.django_db(transaction=True)]

PROTOCOL = (Path(__file__).resolve().parents[1] / "docs" / "websocket-protocol.md").read_text()
ERROR_SECTION = PROTOCOL.split("## Error codes", 1)[1]
DOCUMENTED_CODES = set(re.findall(r"^\| `([a-z_]+)`", ERROR_SECTION, flags=re.M))
DOCUMENTED_CODES |= {"upstream_" + c for c in ("rate_limited", "overloaded", "server_error", "timeout")}
DOCUMENTED_CLOSES = {int(c) for c in re.findall(r"\*\*(\d{4})\*\*", ERROR_SECTION)}
ERROR_FIELDS = {"type", "code", "message", "message_id", "conversation_id", "retryable"}

# Ids the fuzzer may name: filled in by the `world` fixture (its own conversation and message, the outsider's).
IDS: dict[str, int] = {}

FRAME_TYPES = ["send", "stop", "subscribe", "unsubscribe", "regenerate", "edit", "ping"]
NUMBERS = st.one_of(
    st.integers(),
    st.sampled_from([0, -1, 1, 2**31, 2**53 + 1, 2**63 - 1, 2**63, 2**64, -(2**63), 10**30]),
    st.floats(allow_nan=True, allow_infinity=True),
)
TEXT = st.one_of(
    st.text(max_size=40),
    st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=200),
    st.sampled_from(["", " ", "\n\t", "\x00", "hi\x00there", "<script>window.__xss=1</script>", "[[fault:garbage]]"]),
    st.builds(lambda n, c: c * n, st.sampled_from([100_001, 300_000, 1_100_000]), st.sampled_from(["a", "字"])),
    st.just("\ud800 lone surrogate"),
)


def _own_ids() -> st.SearchStrategy:
    return st.sampled_from(["own_conversation", "own_message", "their_conversation", "their_message"]).map(
        lambda name: IDS[name]
    )


def _deep(depth: int) -> object:
    value: object = 1
    for _ in range(depth):
        value = {"a": value}
    return value


JSON_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), NUMBERS, TEXT, _own_ids()),
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
FIELD_VALUES = st.one_of(
    JSON_VALUES,
    _own_ids(),
    st.uuids().map(str),
    st.builds(lambda d: _deep(d), st.sampled_from([50, 600])),
)
FIELDS = ["type", "conversation_id", "content", "client_msg_id", "model", "message_id", "after_seq", "conversation"]


@st.composite
def frame_dicts(draw) -> dict:
    """Frames that are close to the protocol: a known type and a random value or a missing key for each field."""
    frame = {"type": draw(st.one_of(st.sampled_from(FRAME_TYPES), TEXT, NUMBERS, st.none()))}
    for name in draw(st.lists(st.sampled_from(FIELDS[1:]), unique=True, max_size=6)):
        frame[name] = draw(FIELD_VALUES)
    return frame


def _valid_frames() -> st.SearchStrategy:
    ids = _own_ids()
    uuids = st.uuids().map(str)
    return st.one_of(
        st.fixed_dictionaries(
            {"type": st.just("send"), "conversation_id": st.one_of(st.none(), ids), "content": st.text(min_size=1),
             "client_msg_id": uuids},
            optional={"model": st.sampled_from(["kimi-k2.6", "kimi-k2-turbo-preview", "gpt-9", ""]),
                      "conversation": st.fixed_dictionaries({}, optional={"system_prompt": st.text(max_size=20),
                                                                         "settings": JSON_VALUES})},
        ),
        st.fixed_dictionaries({"type": st.sampled_from(["stop", "unsubscribe"]), "conversation_id": ids}),
        st.fixed_dictionaries(
            {"type": st.just("subscribe"), "conversation_id": ids}, optional={"after_seq": st.integers(0, 10)}
        ),
        st.fixed_dictionaries({"type": st.just("regenerate"), "conversation_id": ids, "client_msg_id": uuids}),
        st.fixed_dictionaries(
            {"type": st.just("edit"), "conversation_id": ids, "message_id": ids, "content": st.text(min_size=1),
             "client_msg_id": uuids}
        ),
    )  # fmt: skip


@st.composite
def mutated_frames(draw) -> dict:
    """A well-formed frame, then perhaps one field replaced by anything or removed: the validator's edges."""
    frame = dict(draw(_valid_frames()))
    mutation = draw(st.sampled_from(["none", "replace", "remove", "add"]))
    name = draw(st.sampled_from(sorted(frame)))
    if mutation == "replace":
        frame[name] = draw(FIELD_VALUES)
    elif mutation == "remove":
        del frame[name]
    elif mutation == "add":
        frame[draw(st.sampled_from(FIELDS[1:]))] = draw(FIELD_VALUES)
    return frame


def _encode(value: object) -> str:
    # json, not orjson: it writes NaN/Infinity and lone surrogates as escapes, which a real client could send too.
    return json.dumps(value)


RAW_TEXTS = st.one_of(
    st.text(max_size=60),
    st.sampled_from(["", "{", "}", "[]", "null", "true", "1e999999", '{"type": "ping"', '"ping"', "\ud800", "NaN"]),
    st.builds(lambda d: "[" * d + "]" * d, st.sampled_from([100, 2_000, 100_000])),
    st.builds(lambda n: '{"type": "send", "content": "' + "x" * n + '"}', st.sampled_from([MAX_FRAME_BYTES + 10])),
)

# One action: a frame dict (JSON-encoded), a raw text frame, or a binary frame.
ACTIONS = st.one_of(
    frame_dicts().map(lambda f: ("text", _encode(f))),
    mutated_frames().map(lambda f: ("text", _encode(f))),
    JSON_VALUES.map(lambda v: ("text", _encode(v))),
    RAW_TEXTS.map(lambda t: ("text", t)),
    st.binary(max_size=64).map(lambda b: ("bytes", b)),
)


def pongs_due(kind: str, payload) -> int:
    """Pongs before the reply is complete: one for the probe ping, and one more if the frame itself is a ping."""
    if kind == "text" and expected_code(kind, payload) is None:
        return 2 if isinstance(frames.parse_frame(orjson.loads(payload)), frames.Ping) else 1
    return 1


def expected_code(kind: str, payload) -> str | int | None:
    """What the protocol promises for this frame: an error code, a close code, or None (a valid frame)."""
    if kind == "bytes":
        return 4400
    if len(payload) > MAX_FRAME_BYTES:
        return "bad_frame"
    try:
        data = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return "bad_json"
    try:
        frames.parse_frame(data)
    except frames.FrameError as exc:
        return exc.code
    return None


@pytest.fixture
def world(make_user, outsider):
    fuzzer = make_user("fuzzer")
    credits.adjust(fuzzer, -credits.get_balance(fuzzer), created_by=None, note="no credits: nothing can start")
    own = Conversation.objects.create(owner=fuzzer, model="kimi-k2.6", title="fuzzer's own")
    own_message = Message.objects.create(conversation=own, role="user", content="hello")
    theirs = Conversation.objects.create(owner=outsider, model="kimi-k2.6", title="not yours")
    their_message = Message.objects.create(conversation=theirs, role="user", content="private")
    IDS.update(
        own_conversation=own.pk,
        own_message=own_message.pk,
        their_conversation=theirs.pk,
        their_message=their_message.pk,
    )
    return fuzzer


def _totals() -> tuple[int, int, list]:
    return Conversation.objects.count(), Message.objects.count(), credits.verify_ledger()


def check_reply(kind, payload, replies: list[dict], closed: int | None) -> None:
    """The frames (and close) the server sent in answer to one frame, before the `pong` of the ping after it."""
    expected = expected_code(kind, payload)
    label = f"{kind} {str(payload)[:200]!r}"
    if closed is not None:
        assert closed in DOCUMENTED_CLOSES, (label, closed)
        assert expected == closed, (label, closed)
        return
    errors = [r for r in replies if r["type"] == "error"]
    for error in errors:
        assert set(error) >= ERROR_FIELDS, (label, error)
        assert error["code"] in DOCUMENTED_CODES and error["code"] != "server_error", (label, error)
        assert isinstance(error["message"], str) and error["message"], (label, error)
    others = {r["type"] for r in replies} - {"error"}
    assert others <= {"message"}, (label, replies)  # snapshots of the fuzzer's own conversation only
    for reply in replies:
        if reply["type"] == "message":
            assert reply["message"]["conversation_id"] == IDS["own_conversation"], (label, reply)
    if isinstance(expected, str):
        assert [e["code"] for e in errors] == [expected], (label, errors)
        assert errors[0]["retryable"] is False
    elif expected is None:
        # A well-formed frame: answered (refused for credits/limits/ids, a snapshot) or silent (stop, unsubscribe).
        assert len(errors) <= 1, (label, errors)


# --- in process -----------------------------------------------------------------------------------------------------


class InProcess:
    def __init__(self, connect, user):
        self.connect, self.user, self.tab = connect, user, None

    async def fresh(self) -> None:
        """A new tab per example: nothing an earlier (perhaps failed) example left unread can leak into this one."""
        if self.tab is not None:
            await self.tab.close()
        self.tab = None

    async def roundtrip(self, kind, payload) -> tuple[list[dict], int | None]:
        if self.tab is None:
            self.tab = await self.connect(self.user)
        communicator = self.tab.communicator
        # send_input, not send_to: the latter refuses an empty frame, which a client can send.
        key = "bytes" if kind == "bytes" else "text"
        await communicator.send_input({"type": "websocket.receive", key: payload})
        await communicator.send_input({"type": "websocket.receive", "text": '{"type": "ping"}'})
        replies, pongs = [], pongs_due(kind, payload)
        while True:
            output = await communicator.receive_output(timeout=10)
            if output["type"] == "websocket.close":
                self.tab = None  # closed by design: the next frame reconnects
                return replies, output["code"]
            frame = orjson.loads(output["text"])
            if frame["type"] == "pong":
                pongs -= 1
                if pongs == 0:
                    return replies, None
                continue
            replies.append(frame)


@settings(
    max_examples=600,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(actions=st.lists(ACTIONS, min_size=1, max_size=10))  # ~600 × 5: some three thousand frames
async def test_random_frames_in_process(connect, world, actions):
    runner = _runners.setdefault(id(connect), InProcess(connect, world))
    await runner.fresh()
    before = await sync_to_async(_totals)()
    for kind, payload in actions:
        replies, closed = await runner.roundtrip(kind, payload)
        check_reply(kind, payload, replies, closed)
    assert await sync_to_async(_totals)() == before
    assert before[2] == []  # the ledger adds up


_runners: dict[int, InProcess] = {}


# --- a real daphne worker -------------------------------------------------------------------------------------------


class OverTheWire:
    def __init__(self, server, user):
        self.server, self.user, self.socket = server, user, None

    async def fresh(self) -> None:
        if self.socket is not None:
            await self.socket.close()
        self.socket = None

    async def _open(self):
        key = await sync_to_async(_session_key)(self.user)
        return await websockets.connect(
            self.server.ws_url,
            additional_headers={"Cookie": f"sessionid={key}", "Origin": self.server.url},
            open_timeout=10,
            max_size=None,
        )

    async def roundtrip(self, kind, payload) -> tuple[list[dict], int | None]:
        if self.socket is None:
            self.socket = await self._open()
        try:
            if kind == "bytes":
                await self.socket.send(payload)
            else:
                # Encoded here, so a lone surrogate goes out as the invalid UTF-8 a broken client would send.
                await self.socket.send(payload.encode("utf-8", "surrogatepass"), text=True)
            await self.socket.send('{"type": "ping"}')
            replies, pongs = [], pongs_due(kind, payload)
            while True:
                frame = json.loads(await asyncio.wait_for(self.socket.recv(), 10))
                if frame["type"] == "pong":
                    pongs -= 1
                    if pongs == 0:
                        return replies, None
                    continue
                replies.append(frame)
        except websockets.ConnectionClosed as exc:
            self.socket = None
            return [], exc.rcvd.code if exc.rcvd else 1006  # no close frame received: an abnormal closure


DAPHNE_MAX_MESSAGE = 1024 * 1024  # daphne's default websocket_max_message_size, in bytes


def expected_on_the_wire(kind, payload):
    """What a real worker does: daphne itself drops the connection (no close frame: 1006) for a message over its
    size limit or a text frame that is not UTF-8, before the application sees it (docs/websocket-protocol.md)."""
    if kind == "text":
        try:
            size = len(payload.encode("utf-8"))
        except UnicodeEncodeError:
            return 1006
        if size > DAPHNE_MAX_MESSAGE:
            return 1006
    return expected_code(kind, payload)


@pytest.fixture
def live_worker(transactional_db, offline_kimi, tmp_path):
    import os

    server = start_daphne(offline_kimi, tmp_path, name="fuzz", REDIS_URL=os.environ.get("REDIS_URL", ""))
    yield server
    server.stop()


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(actions=st.lists(ACTIONS, min_size=1, max_size=6))
async def test_random_frames_against_a_real_worker(live_worker, world, actions):
    runner = _wire_runners.setdefault(id(live_worker), OverTheWire(live_worker, world))
    await runner.fresh()
    before = await sync_to_async(_totals)()
    for kind, payload in actions:
        replies, closed = await runner.roundtrip(kind, payload)
        expected = expected_on_the_wire(kind, payload)
        if expected == 1006:
            assert closed == 1006, (payload[:80], closed, replies)
            continue
        check_reply(kind, payload, replies, closed)
    assert await sync_to_async(_totals)() == before
    assert live_worker.process.poll() is None, live_worker.log()[-3000:]


_wire_runners: dict[int, OverTheWire] = {}


def test_documented_codes_were_read():
    assert {"bad_json", "bad_frame", "not_found", "insufficient_credits", "server_error"} <= DOCUMENTED_CODES
    assert {4400, 4401, 4408} <= DOCUMENTED_CLOSES
