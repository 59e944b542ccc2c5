"""The nesting bound of JSON that enters a peer (64 levels: peer.jsontext.MAX_DEPTH) and lone
surrogates: at every entry point (an HTTP body, a submitted pipeline, a received event, a
row read back from the data dir, a snapshot's row) a value one level over the bound is
refused naming its place, and a value at the bound is taken and round-trips through the
log, the content hash and the wire at a stack with little room left, where an earlier
release's deeper value raised RecursionError (a poisoned log: every reply carrying it failed).

Only names the previous release has are imported: each test fails there for what it checks.
"""

from __future__ import annotations

import copy
import json
import logging
import shutil
import sqlite3
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from peer.config import PeerConfig
from peer.errors import DataError, InvalidEvent, SpecError
from peer.jobs import kinds
from peer.jobs.spec import parse
from peer.log import Event, EventLog, EventType, Provide, turn_event
from peer.log.events import part_event
from peer.log.jobindex import ITEM, JobIndex
from peer.log.signing import event_hash, sign_events
from peer.log.snapframe import check_record, record_sha
from peer.log.snapstream import StreamError, read_rows
from peer.mesh.gossip import Gossip, GossipConfig, Kind
from peer.mesh.keyring import SECRET_FILE_NAME
from peer.mesh.transport import MemoryNetwork
from peer.mesh.wire import encode_event, pack_frames, parse_events
from peer.node import Node
from tasks.registry import load
from tests.unit.mesh_helpers import Probe
from tests.unit.test_events import CHUNK, CID, VALID, WORKFLOW

MAX = 64  # the bound (peer.jsontext.MAX_DEPTH), written out: the previous release has none
ROOM = 100  # frames left below the recursion limit where a value within the bound encodes
_T = TypeVar("_T")


def nested(levels: int, leaf: Any = 0) -> Any:
    """`levels` lists around `leaf`: a value that nests `levels` levels."""
    v = leaf
    for _ in range(levels):
        v = [v]
    return v


def depth(v: Any) -> int:
    """The reference: how deeply `v` nests as JSON, recursively (short values only)."""
    if isinstance(v, dict):
        return 1 + max((depth(x) for x in v.values()), default=0)
    if isinstance(v, list | tuple):
        return 1 + max((depth(x) for x in v), default=0)
    return 0


def with_room(room: int, fn: Callable[[], _T]) -> _T:
    """`fn()` called with only about `room` frames left below the recursion limit: as a
    reply, a snapshot or a hash encodes what a peer holds, deep in some call stack."""
    used, f = 0, sys._getframe()
    while f is not None:
        used, f = used + 1, f.f_back

    def down(n: int) -> _T:
        return fn() if n <= 0 else down(n - 1)

    return down(sys.getrecursionlimit() - used - room)


def test_with_room_leaves_about_that_room() -> None:
    """The helper itself: an encode of a value within the room works, one far deeper not."""
    with_room(ROOM, lambda: json.dumps(nested(MAX + 3)))
    with pytest.raises(RecursionError):
        with_room(ROOM, lambda: json.dumps(nested(3 * ROOM)))


# -- HTTP bodies -------------------------------------------------------------------------

@pytest.fixture
def served(served_node: tuple[Any, Node]) -> tuple[Any, Node]:
    """A loopback peer's app (not started) and the peer, every request with its token."""
    return served_node


@pytest.mark.parametrize(("extra", "status", "message"), [
    (nested(MAX - 1), 404, "none of these CIDs"),  # taken: none is held here
    (nested(MAX), 400, "the body is nested too deeply: deeper than 64 levels (at x[0]"),
    ("\ud800", 400, "the body: x holds a lone surrogate"),
    ("\U0001f600", 404, "none of these CIDs"),  # a pair (escaped) is text
])
async def test_an_http_body_is_taken_up_to_the_bound_and_without_lone_surrogates(
        served: tuple[Any, Node], extra: Any, status: int, message: str) -> None:
    client, _ = served
    body = json.dumps({"cids": ["QmbWqxBEKC3P8tqsKc98xmWNzrzDtRLMiMPL8wBuTGsMnR"],
                       "x": extra})
    r = await client.post("/api/car", data=body, headers={"Content-Type": "application/json"})
    err = await r.json()
    assert r.status == status and message in err["message"], err
    if status == 400:
        assert err["error"] == "ArgError" and err["field"] == "body"


# -- events: one per shape that carries free JSON, at the bound and one level over ----------

def _workflow(levels: int) -> dict[str, Any]:
    wf = copy.deepcopy(WORKFLOW)
    wf["tasks"][0]["params"] = {"body": nested(levels)}
    return wf


# (type, payload of `levels` levels, the field an over-bound one is refused at)
SHAPES: dict[str, tuple[EventType, Callable[[int], dict[str, Any]], str]] = {
    "cache result": (EventType.CACHE_PUT, lambda n: {"cache": {"k": nested(n - 2)}},
                     "payload.cache"),
    "a split's kept result": (EventType.TASK_SPLIT, lambda n: {
        "job": "j1", "task": "t", "input": None, "chunks": [[]], "kept": {"k": nested(n - 2)}},
        "payload.kept"),
    "implied done": (EventType.CHUNK_DONE, lambda n: {
        **CHUNK, "output": CID, "cache": {}, "done": {"key": None, "x": nested(n - 2)}},
        "payload.done"),
    "a job's args": (EventType.JOB_SUBMITTED, lambda n: {"job": "j1", "workflow": _workflow(
        n - 5)}, "payload.workflow"),
    "a hint": (EventType.JOB_SUBMITTED, lambda n: {"job": "j1", "workflow": WORKFLOW,
                                                  "local": nested(n - 1)}, "payload.local"),
    "an extra key": (EventType.CLAIM, lambda n: {**CHUNK, "x": nested(n - 1)}, "payload.x"),
    "a member's images": (EventType.MEMBER, lambda n: {**VALID[EventType.MEMBER],
                                                       "images": {"a": nested(n - 2)}},
                          "payload.images"),
    "a newer peer's type": (EventType(99), lambda n: {"x": nested(n - 1)}, "payload.x"),
}


def _part(levels: int) -> Event:
    return Event("a", 4, 4, EventType.CACHE_PUT, {"cache": {"k": nested(levels - 2)}})


def _round_trips(e: Event, tmp_path: Path) -> None:
    """`e` is stored and read back (the log), hashed and sent (the wire), and what comes
    back off the wire is `e` with its hash, with little room left on the stack."""
    log = EventLog(tmp_path / "events.sqlite")
    log.append([e])
    log.close()
    again = EventLog(tmp_path / "events.sqlite")
    try:
        assert list(again.load()) == [e] and again.skipped == 0
    finally:
        again.close()

    def send() -> tuple[Event, bytes, bytes]:
        back = parse_events([json.loads(encode_event(e))])[0]
        return back, event_hash(e), event_hash(back)

    back, sent, got = with_room(ROOM, send)
    assert back == e and sent == got


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_an_event_at_the_bound_round_trips_through_the_log_the_hash_and_the_wire(
        shape: str, tmp_path: Path) -> None:
    typ, payload, _ = SHAPES[shape]
    e = Event("a", 1, 1, typ, payload(MAX))
    assert depth(e.payload) == MAX
    _round_trips(e, tmp_path)


@pytest.mark.parametrize("shape", sorted(SHAPES))
@pytest.mark.parametrize("over", [1, 900])  # one level over; just under Python's limit
def test_an_event_over_the_bound_is_invalid_naming_its_field(shape: str, over: int) -> None:
    typ, payload, field = SHAPES[shape]
    with pytest.raises(InvalidEvent, match="nested too deeply") as err:
        Event("a", 1, 1, typ, payload(MAX + over))
    assert err.value.field == field
    assert str(err.value).startswith(f"{typ.name} {field}")


def test_a_turn_holds_parts_at_the_bound_and_refuses_one_over(tmp_path: Path) -> None:
    """A TURN's parts are each a payload of their own: a turn of parts at the bound (its
    own payload nests three levels more) is taken by every peer, a part over it is not."""
    turn = turn_event([_part(MAX), part_event("a", 4, 4, EventType.CLAIM, dict(CHUNK),
                                              Event("a", 4, 4, EventType.CLAIM, CHUNK).body)])
    assert depth(turn.payload) == MAX + 3
    _round_trips(Event.from_json(turn.to_json()), tmp_path)
    for part, key, value, field in ((0, "cache", {"k": nested(MAX - 1)},
                                     "payload.parts[0].cache"),
                                    (1, "x", nested(MAX), "payload.parts[1].x")):
        wire = copy.deepcopy(turn.to_json())
        wire["payload"]["parts"][part][1][key] = value
        with pytest.raises(InvalidEvent, match="nested too deeply") as err:
            Event.from_json(wire)
        assert err.value.field == field


def _deepen(v: Any, levels: int, key: Any) -> Any:
    """`v` with a value of `levels` levels added inside it (or in its place)."""
    if isinstance(v, dict):
        return {**v, str(key): nested(levels)}
    if isinstance(v, list):
        return [*v, nested(levels)]
    return nested(levels)


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(sorted(VALID)), st.data())
def test_no_field_of_any_type_lets_a_payload_past_the_bound(typ: EventType,
                                                            data: st.DataObject) -> None:
    """Whatever field (known or not) of whatever type a sender deepens, the event is
    invalid or each payload it stands for nests at most MAX levels: the fields the
    readers check flat (skipped by the depth walk) cannot smuggle depth in."""
    payload = copy.deepcopy(VALID[typ])
    target = payload
    if typ is EventType.TURN and data.draw(st.booleans()):
        target = data.draw(st.sampled_from(payload["parts"]))[1]
    key = data.draw(st.sampled_from(sorted(target)) | st.text(max_size=3))
    levels = data.draw(st.sampled_from([MAX - 3, MAX - 2, MAX - 1, MAX, MAX + 1, 500]))
    target[key] = _deepen(target.get(key), levels, data.draw(st.text(max_size=2)))
    try:
        e = Event("a", 1, 1, typ, payload)
    except InvalidEvent:
        return
    for single in e.singles:
        assert depth(single.payload) <= MAX


def test_a_job_with_a_lone_surrogate_in_its_args_is_an_invalid_event() -> None:
    """Its task's cache key (canonical JSON, UTF-8) cannot be made: every peer's scheduler
    failed it with an internal error and a traceback."""
    wf = copy.deepcopy(WORKFLOW)
    wf["tasks"][0]["params"] = {"text": "a\ud800b"}
    with pytest.raises(InvalidEvent, match="lone surrogate") as err:
        Event("a", 1, 1, EventType.JOB_SUBMITTED, {"job": "j1", "workflow": wf})
    assert err.value.field == "payload.workflow.tasks[0].params.text"
    wf["tasks"][0]["params"] = {"text": "a\U0001f600b"}  # a pair, escaped or not, is text
    Event("a", 1, 1, EventType.JOB_SUBMITTED, {"job": "j1", "workflow": wf})


S = "j\ud800"  # the JSON text "j\\ud800" (from a member) decodes to this
SPLIT = ["o", 1]


@pytest.mark.parametrize(("typ", "payload", "field"), [
    (EventType.JOB_SUBMITTED, {"job": S, "workflow": WORKFLOW}, "job"),
    (EventType.JOB_DELETED, {"job": S}, "job"),
    (EventType.CLAIM, {"job": S, "task": "t", "split": SPLIT, "chunk": 0, "attempt": 0}, "job"),
    (EventType.CLAIM, {"job": "j", "task": S, "split": SPLIT, "chunk": 0, "attempt": 0},
     "task"),
    (EventType.CLAIM, {"job": "j", "task": "t", "split": [S, 1], "chunk": 0, "attempt": 0},
     "split"),
    (EventType.TASK_DONE, {"job": "j", "task": "t", "output": CID, "key": S}, "key"),
    (EventType.CACHE_PUT, {"cache": {S: 1}}, "cache (a key)"),
    (EventType.PROVIDE, {"cids": [S]}, "cids[0]"),
])
def test_an_id_or_key_with_a_lone_surrogate_is_an_invalid_event(
        typ: EventType, payload: dict[str, Any], field: str) -> None:
    """Ids, keys and names are stored (an SQLite TEXT column: UTF-8), hashed (rendezvous,
    cache keys) and used as file names: a lone surrogate in a job id passed the door and
    then failed every compaction pass (the job index's insert) and the scheduler's
    rendezvous of the job's tasks (an internal error per task), on every peer."""
    with pytest.raises(InvalidEvent, match=r"lone surrogate|of a TASK_SPLIT event") as err:
        Event("a", 1, 1, typ, payload)
    assert err.value.field is not None and err.value.field.endswith(field)
    with pytest.raises(InvalidEvent, match="origin"):
        Event("a\ud800", 1, 1, EventType.PROVIDE, {"cids": [CID]})
    Event("\u00e9t\U0001f600", 1, 1, EventType.JOB_DELETED, {"job": "t\u00e9\U0001f600",
                                                            "reason": ""})  # text


# -- the receive path: a member's deep event among good ones -------------------------------

def _node(d: Path, opened: list[Node]) -> Node:
    n = Node(PeerConfig(data_dir=d, slots=1, mdns=False))
    n.listeners.clear()  # no scheduler: this is about the log and gossip
    opened.append(n)
    return n


def _forged(src: Node, seq: int, hlc: int, payload: dict[str, Any]) -> Event:
    """A PROVIDE of `src` that no check has seen (as a peer of the previous release, or a
    hostile member, sends it)."""
    return part_event(src.peer_id, seq, hlc, EventType.PROVIDE, payload,
                      Provide.from_payload(payload))


@pytest.mark.parametrize("levels", [MAX + 1, 300])
def test_a_members_deep_event_is_refused_and_counted_and_the_rest_is_served(
        tmp_path: Path, opened: list[Node], levels: int) -> None:
    a = _node(tmp_path / "a", opened)
    (tmp_path / "b").mkdir(mode=0o700)
    shutil.copy(tmp_path / "a" / SECRET_FILE_NAME, tmp_path / "b" / SECRET_FILE_NAME)
    b = _node(tmp_path / "b", opened)
    net = MemoryNetwork()
    ga, gb = (Gossip(GossipConfig.local(swim=None), net.transport(), n, n, n.peer_id,
                     auth=n.auth) for n in (a, b))
    ga.bind()
    gb.bind()
    ok = a.emit(EventType.PROVIDE, {"cids": [CID]})
    a.flush()
    deep = _forged(a, ok.seq + 1, ok.hlc + 1, {"cids": [CID], "x": nested(levels - 1)})
    after = _forged(a, ok.seq + 2, ok.hlc + 2, {"cids": ["after"]})
    sign_events(a.identity, a.peer_id, [deep, after], a.admit)
    ga.send_events([gb.address], [ok, deep, after])
    net.pump()
    assert gb.stats.merge_errors == 0 and gb.stats.dropped_bad_frame == 0
    assert b.state.events.get(ok.id) == ok and b.state.events.get(after.id) == after
    assert deep.id not in b.state.events
    assert b.door.health()["refused"]["by_origin"][a.peer_id] == 1
    assert gb.stats.events_refused == 1
    probe = Probe(net)  # a third peer asks b for everything: b serves what it holds
    probe.send(gb.address, Kind.DIGEST, {"vv": {}, "peers": [], **probe.prove(gb.address)})
    net.pump()
    served = [e for f in probe.frames(Kind.DIGEST_REPLY) for e in parse_events(
        f.body["events"])]
    assert ok in served and deep not in served
    frames, too_large = with_room(ROOM, lambda: pack_frames(b.events_after({}, 1000),
                                                            16 << 20, 512))
    assert frames and not too_large


# -- the data dir: rows an earlier release took -------------------------------------------

def _insert(db: Path, sql: str, *rows: tuple[Any, ...]) -> None:
    c = sqlite3.connect(db)
    c.executemany(sql, rows)
    c.commit()
    c.close()


def test_a_data_dir_holding_a_deep_event_of_an_earlier_release_opens_and_serves(
        tmp_path: Path, opened: list[Node], caplog: pytest.LogCaptureFixture) -> None:
    """The previous release took a payload of any depth its json.loads read; such a row
    is quarantined at start (an invalid row), so the peer serves every other event."""
    d = tmp_path / "peer"
    first = _node(d, opened)
    ok = first.emit(EventType.PROVIDE, {"cids": [CID]})
    first.flush()
    first.log.close()
    opened.clear()
    wf = _workflow(500)
    _insert(d / "events.sqlite", "INSERT INTO events (origin, seq, hlc, type, payload) VALUES "
            "(?, ?, ?, ?, ?)",
            ("o", 1, ok.hlc, int(EventType.JOB_SUBMITTED), json.dumps({"job": "j",
                                                                      "workflow": wf})),
            ("o", 2, ok.hlc, int(EventType.PROVIDE), json.dumps({"cids": ["b"]})))
    with caplog.at_level(logging.WARNING):
        again = _node(d, opened)
    assert again.log.quarantined() == 1 and "o/1: JOB_SUBMITTED payload.workflow" in caplog.text
    assert "nested too deeply" in caplog.text
    assert ("o", 1) not in again.state.events and again.state.events[("o", 2)]
    frames, too_large = with_room(ROOM, lambda: pack_frames(again.events_after({}, 1000),
                                                            16 << 20, 512))
    assert sum(len(f.events) for f in frames) == 2 and not too_large


# -- submissions -----------------------------------------------------------------------

CATALOG = {**load(()), **kinds.allowed(False, False)}


def _api_task(levels: int) -> dict[str, Any]:
    """An api task whose body (its params) makes its job's event nest `levels` levels."""
    return {"name": "post", "kind": "api", "url": "http://127.0.0.1:9",
            "params": {"x": nested(levels - 6)}}  # under payload, workflow, tasks, task,
    #                                               params, body


def test_a_pipeline_whose_job_is_over_the_bound_is_refused_naming_the_task() -> None:
    assert depth({"job": "j", "workflow": parse(json.dumps([_api_task(MAX)]),
                                                CATALOG).to_json()}) == MAX
    with pytest.raises(SpecError, match="nested too deeply") as err:
        parse(json.dumps([_api_task(MAX + 1)]), CATALOG)
    assert (err.value.field or "").startswith("tasks[0].params.body")


@pytest.mark.parametrize(("body", "ctype", "field"), [
    (json.dumps({"tasks": [{"name": "a", "call": "ECHO", "params": {"text": "\ud800"}}]}),
     "application/json", "tasks[0].params.text"),
    ('- call: ECHO\n  params: {text: "\\udc80"}\n', "application/yaml", "[0].params.text"),
])
def test_a_pipeline_with_a_lone_surrogate_is_refused_naming_it(body: str, ctype: str,
                                                               field: str) -> None:
    with pytest.raises(SpecError, match="lone surrogate") as err:
        parse(body, CATALOG, content_type=ctype)
    assert err.value.field == field


async def test_a_job_at_the_bound_is_taken_and_one_level_over_is_a_400(
        served: tuple[Any, Node]) -> None:
    client, node = served
    r = await client.post("/api/jobs", json=[_api_task(MAX + 1)])
    err = await r.json()
    assert r.status == 400 and err["error"] == "SpecError", err
    assert err["field"].startswith("tasks[0].params.body"), err
    assert "nested too deeply" in err["message"]
    r = await client.post("/api/jobs", json=[_api_task(MAX)])
    assert r.status == 201, await r.text()
    job = (await r.json())["job"]
    ev = next(e for e in node.state.events.values() if e.type is EventType.JOB_SUBMITTED
              and e.payload["job"] == job)
    assert depth(ev.payload) == MAX

    def send() -> tuple[list[Event], int]:
        frames, too_large = pack_frames([ev], 16 << 20, 512)
        return parse_events([json.loads(x) for x in frames[0].events]), len(too_large)

    assert with_room(ROOM, send) == ([ev], 0)


# -- the job index and snapshots: texts an earlier release (or its snapshot) left --------

def test_job_index_rows_deeper_than_this_release_writes_are_left_out(
        tmp_path: Path, opened: list[Node]) -> None:
    """A compacted job's record, list entry or cache value an earlier release wrote (or
    took from its snapshot) nested past any valid job's: read back as absent (the job's own
    view: a DataError naming the row) and counted, never served nor encoded again."""
    d = tmp_path / "peer"
    n = _node(d, opened)
    deep = json.dumps({"x": nested(500)})
    rows = [(f"j{i}", 1, "o", i, 1, "done", deep if i == 1 else "{}",
             deep if i == 2 else "{}", "{}", "[]") for i in (1, 2)]
    _insert(d / "events.sqlite", "INSERT INTO job_index (job, hlc, origin, seq, ended, state, "
            "summary, record, facts, ids) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", *rows)
    _insert(d / "events.sqlite", "INSERT INTO cache_index VALUES (?, ?, ?, ?, ?, ?)",
            (ITEM, "k", deep, 1, "o", 1))
    index = JobIndex(n.log.db)
    with pytest.raises(DataError, match=r"row of 'j2' does not read back \(its record"):
        with_room(ROOM, lambda: json.dumps(index.record("j2")))
    assert index.page(None, None) == [((1, "o", 2), {})]  # j1's list entry is left out
    assert [r.job for r in index.rows()] == []  # neither is served in a snapshot
    assert index.entry(ITEM, "k") is None and list(index.entries()) == []
    assert index.skipped >= 2


def test_a_snapshot_row_nested_past_the_stack_is_a_malformed_stream() -> None:
    """Rows taken from a peer's snapshot are checked as they are read: too deep is a
    StreamError (the catch-up refuses the stream), never a RecursionError out of it."""
    deep = "[" * 5000 + "]" * 5000
    row = ["j", 1, "o", 1, 1, "done", deep, "", "{}"]
    with pytest.raises(StreamError):
        list(read_rows([json.dumps(["j", [row]]).encode()]))
    with pytest.raises(StreamError):
        check_record(record_sha("{}", deep, "{}"), ["{}", deep, "{}"])
