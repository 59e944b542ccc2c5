"""Serving a snapshot stream (`CatchUp.snapshot_stream`, GET /api/snapshot?v=2|3, and the
one body an older peer asks for with no `v`): the events line (and version 1's job records)
is read off the loop, on the stream's own read transaction, and sent in pieces; its bytes are
those the previous release made (kept below as the reference), and it is the log as of the
request, whatever is appended or dropped while it streams."""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import json
import random
import shutil
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from peer.cids import sha256_cid
from peer.config import PeerConfig
from peer.http.app import SNAPSHOTS
from peer.log import Event, EventType
from peer.log.compact import SNAPSHOT_DOMAIN, Snapshot
from peer.log.signing import _str_bytes
from peer.log.snapframe import HEADER, MAGIC, frame
from peer.mesh.keyring import SECRET_FILE_NAME
from peer.mesh.wire import dumps, pack_frames
from peer.node import Node
from tests.unit.api_client import api_client

catchup_mod = importlib.import_module("peer.catchup")
sqlite_mod = importlib.import_module("peer.log.sqlite")
FORMS = [(3, "jobs"), (3, "rows"), (3, None), (2, None)]


def _open(d: Path, nodes: list[Node], secret_of: Path | None = None, **cfg: Any) -> Node:
    if secret_of is not None:  # one mesh
        d.mkdir(mode=0o700)
        shutil.copy(secret_of / SECRET_FILE_NAME, d / SECRET_FILE_NAME)
    n = Node(PeerConfig(data_dir=d, slots=1, mdns=False, compact_recent_tasks=1, **cfg))
    n.listeners[:] = [n.compactor.note]  # no scheduler running
    nodes.append(n)
    return n


def _submit(n: Node, job: str) -> None:
    n.emit(EventType.JOB_SUBMITTED, {"job": job, "workflow": {"name": job, "tasks": [
        {"name": "t", "call": "ECHO", "params": {"text": job}}]}})


async def _turns(n: Node, name: str, turns: int, per_turn: int = 4) -> None:
    """`turns` loop turns of `per_turn` submissions each: one signed batch per turn."""
    for t in range(turns):
        for i in range(per_turn):
            _submit(n, f"{name}-{t}-{i}")
        for _ in range(3):
            await asyncio.sleep(0)
    n.flush()


def _unsigned(origin: str, count: int) -> list[Event]:
    """Events of an older release's rows: no signed batch."""
    hlc = (int(time.time() * 1000) - 60_000) << 16
    return [Event(origin, i + 1, hlc + i, EventType.JOB_SUBMITTED,
                  {"job": f"old{i}", "workflow": {"name": "old", "tasks": [
                      {"name": "t", "call": "ECHO", "params": {"text": str(i)}}]}})
            for i in range(count)]


async def _mixed_log(tmp_path: Path, opened: list[Node]) -> tuple[Node, list[Event]]:
    """b's log: its own batches and a's interleaved in hlc order (a batch of 4 events per
    turn), rows with no batch, an invalid row, and a's events past its revocation (in the
    log, not servable). Returns b and those last events."""
    a = _open(tmp_path / "a", opened)
    b = _open(tmp_path / "b", opened, secret_of=tmp_path / "a")
    a.emit(EventType.MEMBER, a.capabilities())
    b.emit(EventType.MEMBER, b.capabilities())
    for t in range(3):
        await _turns(a, f"a{t}", 1)
        await _turns(b, f"b{t}", 1)
    b.merge(list(a.log.load()))
    b.merge(_unsigned("hist0000000000000000", 5))
    b.revoke(a.peer_id, "a test")
    await _turns(a, "late", 2)
    late = [e for e in a.log.load() if e.seq > b.state.heads[a.peer_id]]
    b.log.append(late)  # held by the log, refused by every peer: not served
    b.log.db.execute("INSERT INTO events (origin, seq, hlc, type, payload) VALUES "
                     "('bad0000000000000000', 1, 5, 1, 'not json')")
    return b, late


def _old_servable(n: Node, out: list[Event]) -> list[Event]:
    """c499be7's `Node.servable`, the reference."""
    low = n._unsynced.get(n.peer_id)
    if n._unflushed or low is not None:
        top = n._durable.get(n.peer_id, 0) if n._unflushed else n.state.heads.get(n.peer_id, 0)
        if low is not None:
            top = min(top, low - 1)
        out = [e for e in out if e.origin != n.peer_id or e.seq <= top]
    if n.state.revoked:
        out = [e for e in out if (a := n._revoked_after(e.origin)) is None or e.seq <= a]
    return out


def _old_head(n: Node, part: str | None) -> bytes:
    """c499be7's events line of `snapshot_stream`: the whole log read and packed at once."""
    events = [] if part == "rows" else _old_servable(n, list(n.log.load()))
    packed, _ = pack_frames(events, 1 << 62, 1 << 62)
    return (b'{"events":[' + b",".join(e for p in packed for e in p.events)
            + b'],"batches":[' + b",".join(b for p in packed for b in p.batches) + b"]}\n")


def _old_canon(obj: Any) -> bytes:
    """e418a64's `_canon`: what a snapshot's content digest hashed, in one call."""
    return json.dumps(obj, separators=(",", ":"), sort_keys=True, ensure_ascii=True).encode()


def _old_records(n: Node) -> dict[str, Any]:
    """e418a64's `Compactor.records`: read whole."""
    index = n.compactor.index
    return {
        "jobs": [[r.job, *r.order, r.ended_hlc, r.state, r.summary, r.record, r.facts]
                 for r in index.rows()],
        "cache": [[e.kind, e.key, e.value, *e.order] for e in index.entries()],
        "providers": sorted([c, o] for c, o in index.providers()),
        "floors": dict(sorted(n.compactor.floors.items()))}


def _old_v1(n: Node) -> bytes:
    """e418a64's `CatchUp.snapshot`, the version 1 body: built whole, on the loop, its
    snapshot signed over e418a64's content digest."""
    n.flush()
    heads, records = dict(n.heads()), _old_records(n)
    content = hashlib.sha256(_old_canon([heads, records])).digest()
    sig = n.identity.sign(hashlib.sha256(SNAPSHOT_DOMAIN + _str_bytes(n.peer_id)
                                         + n.identity.key + content).digest())
    snap = {"signer": n.peer_id, "key": n.identity.key.hex(),
            "admit": None if n.admit is None else n.admit.hex(), "heads": heads,
            "records": records, "sig": sig.hex()}
    events = _old_servable(n, list(n.log.load()))
    packed, _ = pack_frames(events, 1 << 62, 1 << 62)
    return (b'{"snapshot":' + dumps(snap) + b',"events":['
            + b",".join(e for p in packed for e in p.events) + b'],"batches":['
            + b",".join(b for p in packed for b in p.batches) + b"]}")


def _events_part(body: bytes, v: int) -> bytes:
    """The events of a stream: version 3's first frame (magic included), version 2's first
    line (newline included)."""
    if v == 2:
        return body[:body.index(b"\n") + 1]
    _, size = HEADER.unpack_from(body, len(MAGIC))
    return body[:len(MAGIC) + HEADER.size + size]


@pytest.mark.parametrize("small", [False, True], ids=["default", "small-pieces"])
@pytest.mark.parametrize(("v", "part"), FORMS)
async def test_the_events_are_sent_byte_for_byte_as_the_previous_release_sent_them(
        tmp_path: Path, opened: list[Node], monkeypatch: pytest.MonkeyPatch, v: int,
        part: str | None, small: bool) -> None:
    if small:  # rows read 3 at a time, one batch kept (read again), pieces of 64 bytes
        monkeypatch.setattr(sqlite_mod, "STORED_ROWS", 3, raising=False)
        monkeypatch.setattr(sqlite_mod, "STORED_BATCHES", 1, raising=False)
        monkeypatch.setattr(catchup_mod, "PIECE_BYTES", 64, raising=False)
    b, late = await _mixed_log(tmp_path, opened)
    body = b"".join(b.catchup.snapshot_stream(v, part))
    head = _old_head(b, part)  # (after: it quarantines the invalid row)
    events = _events_part(body, v)
    assert events == (head if v == 2 else MAGIC + frame(b"E", head[:-1]))
    line = json.loads(head)
    if part != "rows":  # what the reference is made of: batches of several events, events
        # of no batch, none past the revocation nor the invalid row
        sent = [(e["origin"], e["seq"]) for e in line["events"]]
        assert len(sent) == 32 and sum("b" not in e for e in line["events"]) == 5
        assert len(line["batches"]) == 8
        assert not {e.id for e in late} & set(sent) and late
    assert body[len(events):]  # the rows and trailer follow


@pytest.mark.parametrize("small", [False, True], ids=["default", "small-pieces"])
async def test_the_version_1_body_is_sent_byte_for_byte_as_the_previous_release_sent_it(
        tmp_path: Path, opened: list[Node], monkeypatch: pytest.MonkeyPatch,
        small: bool) -> None:
    """The job records (compacted jobs, their cache entries and providers, the floors) and
    the events of the mixed log, as e418a64's `snapshot` sent them (`snapshot_stream(1)`, GET
    /api/snapshot, in pieces)."""
    if small:
        monkeypatch.setattr(sqlite_mod, "STORED_ROWS", 3, raising=False)
        monkeypatch.setattr(sqlite_mod, "STORED_BATCHES", 1, raising=False)
        monkeypatch.setattr(catchup_mod, "PIECE_BYTES", 64, raising=False)
    b, _ = await _mixed_log(tmp_path, opened)
    for j in range(3):
        _finished(b, f"done{j}")
    assert b.catchup.compact().jobs
    stream = getattr(b.catchup, "snapshot_stream", None)
    pieces = list(stream(1)) if stream is not None else []
    old = _old_v1(b)  # (after: it quarantines the invalid row)
    assert b"".join(pieces) == old
    body = json.loads(old)
    records = body["snapshot"]["records"]
    assert records["jobs"] and records["cache"] and records["providers"] and records["floors"]
    assert len(body["events"]) > 20 and body["batches"]
    if small:
        assert len(pieces) > 10


def _value(rnd: random.Random, depth: int) -> Any:
    """A JSON value nested up to `depth` levels: objects of keys in no order (non-ASCII,
    escapes), lists, numbers, texts, null and booleans."""
    pick = rnd.randrange(9 if depth else 6)
    if pick >= 6:
        keys = [rnd.choice(["z", "a", "é", "A", "\u2028", 'q"', "10", "9", "", "\x00k"])
                + str(i) for i in range(rnd.randrange(5))]
        return ({k: _value(rnd, depth - 1) for k in keys} if pick != 8
                else [_value(rnd, depth - 1) for _ in range(rnd.randrange(5))])
    return [None, True, rnd.randrange(-10**20, 10**20), rnd.random() * 10**rnd.randrange(-5, 25),
            "".join(rnd.choice("aé\n\"\\\ud800😀") for _ in range(rnd.randrange(6))),
            -0.0][pick]


@pytest.mark.parametrize("seed", range(20))
def test_the_content_digest_is_the_previous_release_s(seed: int) -> None:
    """`Snapshot.content_digest` encodes a record at a time (`jsontext.pieces`), its lists
    given as lists or as iterators read as they are encoded: its hash is e418a64's, sha256 of
    the canonical JSON of [heads, records] in one call, for records holding lists and nested
    objects (keys in no order, non-ASCII, floats) at every depth."""
    rnd = random.Random(seed)
    rows = [[f"job{i}", _value(rnd, 4), {"b": _value(rnd, 5), "a": [_value(rnd, 3)]}]
            for i in range(rnd.randrange(1, 8))]
    records = {"jobs": rows, "cache": [[_value(rnd, 6)] for _ in range(3)],
               "providers": [["bafy", "o"]], "floors": {"z": 3, "a": 1}, "é": _value(rnd, 5)}
    heads = {"b" * 20: 7, "a" * 20: 2}
    old = hashlib.sha256(_old_canon([heads, records])).digest()
    assert Snapshot("s", b"", None, heads, records).content_digest() == old
    streamed = {**records, "jobs": iter(rows), "cache": (c for c in records["cache"])}
    assert Snapshot("s", b"", None, heads, streamed).content_digest() == old


async def test_a_peer_s_snapshot_has_the_content_digest_of_the_previous_release(
        tmp_path: Path, opened: list[Node]) -> None:
    """The records as the index gives them (`Compactor.record_stream`: iterators), of
    compacted jobs with nested summaries and records: e418a64's digest of them read whole."""
    b, _ = await _mixed_log(tmp_path, opened)
    for j in range(3):
        _finished(b, f"done{j}")
    assert b.catchup.compact().jobs
    heads = dict(b.heads())
    new = Snapshot("s", b"", None, heads, b.compactor.record_stream()).content_digest()
    records = _old_records(b)
    assert any(isinstance(x, dict) for row in records["jobs"] for x in row)
    assert new == hashlib.sha256(_old_canon([heads, records])).digest()


def test_the_events_frame_is_sent_in_pieces_not_whole(
        tmp_path: Path, opened: list[Node], monkeypatch: pytest.MonkeyPatch) -> None:
    """Memory holds a piece of the events frame, never the frame: the first piece carries
    the magic and the frame's header, the last the frame's end."""
    monkeypatch.setattr(catchup_mod, "PIECE_BYTES", 1024, raising=False)
    n = _open(tmp_path / "a", opened)
    for i in range(200):
        _submit(n, f"j{i}")
    pieces = list(n.catchup.snapshot_stream(3, "jobs"))
    body = b"".join(pieces)
    assert len(_events_part(body, 3)) > 40 * 1024
    assert max(len(p) for p in pieces) <= 1024 + len(MAGIC) + HEADER.size + len(b'{"events":[')


def _finished(n: Node, job: str) -> None:
    """A job of one task, run and done (with a cache entry: its key)."""
    _submit(n, job)
    split = n.emit(EventType.TASK_SPLIT, {"job": job, "task": "t", "input": None,
                                          "chunks": [[]]})
    base = {"job": job, "task": "t", "split": list(split.id), "chunk": 0, "attempt": 0}
    n.emit(EventType.CLAIM, base)
    out = str(sha256_cid(job.encode(), "raw", 1))
    n.emit(EventType.CHUNK_DONE, {**base, "output": out, "cache": {}})
    n.emit(EventType.TASK_DONE, {"job": job, "task": "t", "output": out, "key": job})
    n.flush()


async def test_a_stream_sends_the_log_as_of_its_request_whatever_changes_meanwhile(
        tmp_path: Path, opened: list[Node]) -> None:
    """Events appended, and jobs compacted and their events dropped by a pass, after the
    request do not change what it sends: its heads, floors, events and rows are one read
    transaction's (a stream begun before the changes and one not begun alike)."""
    n = _open(tmp_path / "a", opened)
    await _turns(n, "live", 2)
    for j in range(3):
        _finished(n, f"done{j}")
    for i, (v, part) in enumerate(FORMS):
        before = b"".join(n.catchup.snapshot_stream(v, part))
        streams = [n.catchup.snapshot_stream(v, part) for _ in range(2)]
        first = next(streams[1])
        rows = n.log.db.execute("SELECT count(*) FROM events").fetchone()[0]
        await _turns(n, f"more{i}", 2)
        _finished(n, f"more{i}")  # a pass compacts the job before it, and drops its events
        stats = n.catchup.compact()
        assert stats.dropped and stats.jobs
        assert n.log.db.execute("SELECT count(*) FROM events").fetchone()[0] != rows
        assert b"".join(streams[0]) == before == first + b"".join(streams[1])
        assert b"".join(n.catchup.snapshot_stream(v, part)) != before  # (a new one sees them)


@pytest.fixture
async def served(tmp_path: Path, opened: list[Node]) -> Any:
    """A peer's app through aiohttp's test client, its log holding a few turns."""
    n = _open(tmp_path / "a", opened)
    await _turns(n, "j", 3)
    async with api_client(n) as c:
        yield n, c


@pytest.mark.parametrize("params", [{"v": "3", "part": "jobs"}, {}], ids=["v3", "v1"])
async def test_the_loop_answers_other_requests_while_a_snapshot_reads_the_log(
        served: Any, monkeypatch: pytest.MonkeyPatch, params: dict[str, str]) -> None:
    """The serve's read of the log is held until another request on the same app has been
    answered: that can happen only if the read runs off the loop (version 1 too: e418a64
    built its body on the loop)."""
    n, client = served
    started, answered = threading.Event(), threading.Event()
    reads: list[tuple[int, bool]] = []

    def hold(read: Callable[..., Iterator[Event]] | None) -> Callable[..., Iterator[Event]]:
        def held(*args: Any) -> Iterator[Event]:
            started.set()
            reads.append((threading.get_ident(), answered.wait(5)))  # (5: no deadlock)
            assert read is not None
            return read(*args)
        return held

    monkeypatch.setattr(n.log, "load", hold(n.log.load))  # (the previous release's read)
    monkeypatch.setattr(catchup_mod, "stored_events",
                        hold(getattr(catchup_mod, "stored_events", None)), raising=False)
    loop_thread = threading.get_ident()
    snap = asyncio.create_task(client.get("/api/snapshot", params=params))
    assert await asyncio.to_thread(started.wait, 10)
    r = await client.get("/api/health")
    assert r.status == 200 and (await r.json())["peer"] == n.peer_id
    answered.set()
    resp = await snap
    body = await resp.read()
    assert resp.status == 200 and body.startswith(MAGIC if params else b'{"snapshot":')
    assert [(ident != loop_thread, held) for ident, held in reads] == [(True, True)]


@pytest.mark.parametrize("params", [{"digest": "1"}, {"digest": "1", "v": "2"},
                                    {"digest": "1", "v": "3"}], ids=["v1", "v2", "v3"])
async def test_the_loop_answers_other_requests_while_a_digest_reads_the_index(
        served: Any, monkeypatch: pytest.MonkeyPatch, params: dict[str, str]) -> None:
    """`?digest=1` (a second member's check): the job index is read (and version 1's
    records encoded and hashed: 1.1 s on the loop at 4,750 jobs, e418a64) off the loop, as
    the previous test's serves."""
    n, client = served
    started, answered = threading.Event(), threading.Event()
    reads: list[tuple[int, bool]] = []
    read = n.index._read

    def held(*args: Any) -> Iterator[Any]:
        if not started.is_set():  # (the first read: the digest's; /api/health reads too)
            started.set()
            reads.append((threading.get_ident(), answered.wait(5)))  # (5: no deadlock)
        yield from read(*args)

    monkeypatch.setattr(n.index, "_read", held)
    loop_thread = threading.get_ident()
    digest = asyncio.create_task(client.get("/api/snapshot", params=params))
    assert await asyncio.to_thread(started.wait, 10)
    r = await client.get("/api/health")
    assert r.status == 200 and (await r.json())["peer"] == n.peer_id
    answered.set()
    resp = await digest
    body = await resp.json()
    assert resp.status == 200 and body["heads"] == dict(n.heads())
    assert [(ident != loop_thread, held) for ident, held in reads] == [(True, True)]


def _held_reads(monkeypatch: pytest.MonkeyPatch) -> tuple[threading.Semaphore,
                                                             threading.Event]:
    """Every serve's read of the log held until the event returned is set (5 s at most: no
    deadlock); the semaphore counts the reads begun."""
    begun, go = threading.Semaphore(0), threading.Event()
    read = catchup_mod.stored_events

    def held(*args: Any) -> Iterator[Event]:
        begun.release()
        go.wait(5)
        return iter(list(read(*args)))

    monkeypatch.setattr(catchup_mod, "stored_events", held)
    return begun, go


@pytest.mark.parametrize("third", [{"digest": "1", "v": "3"}, {"v": "2"}, {}],
                         ids=["digest", "v2", "v1"])
async def test_snapshot_serves_past_the_bound_wait_for_a_turn_then_get_503(
        tmp_path: Path, opened: list[Node], monkeypatch: pytest.MonkeyPatch,
        third: dict[str, str]) -> None:
    """At most http_max_snapshot_serves (2) serves of any version at once, a digest too:
    each holds a thread of the default pool for seconds. While two hold their turns (their
    reads held here), a third waits http_snapshot_wait_s, then is answered 503 naming the
    bound; once they end, their turns serve again."""
    n = _open(tmp_path / "a", opened, http_snapshot_wait_s=0.01)
    await _turns(n, "j", 3)
    begun, go = _held_reads(monkeypatch)
    async with api_client(n) as client:
        first = asyncio.create_task(client.get("/api/snapshot", params={"v": "3"}))
        second = asyncio.create_task(client.get("/api/snapshot", params={"v": "2"}))
        for _ in range(2):
            assert await asyncio.to_thread(begun.acquire, True, 10)
        try:
            r = await client.get("/api/snapshot", params=third)
            err = await r.json()
        finally:
            go.set()
        assert r.status == 503 and "http_max_snapshot_serves" in err["message"]
        assert "at most 2 snapshots at once" in err["message"]
        for t in (first, second):
            ended = await t
            assert ended.status == 200 and await ended.read()
        turns = client.server.app[SNAPSHOTS]
        async with asyncio.timeout(10):  # (no deadlock) both given back
            for _ in range(2):
                await turns.acquire()
        for _ in range(2):
            turns.release()
        r = await client.get("/api/snapshot", params=third)
        assert r.status == 200 and await r.read()


async def test_a_serve_cancelled_mid_step_holds_its_turn_until_the_step_ends(
        tmp_path: Path, opened: list[Node], monkeypatch: pytest.MonkeyPatch) -> None:
    """The handler cancelled (the app stops) while its first step spools the events in a
    thread: that thread runs on, so the turn is given back (and the stream closed: its read
    transaction ended, its spool removed) when the step ends, not when the handler does."""
    from aiohttp.test_utils import make_mocked_request

    from peer.http.app import make_app, snapshot

    n = _open(tmp_path / "a", opened, http_max_snapshot_serves=1)
    await _turns(n, "j", 2)
    begun, go = _held_reads(monkeypatch)
    app = make_app(n)
    serve = asyncio.create_task(snapshot(make_mocked_request(
        "GET", "/api/snapshot?v=3&part=jobs", app=app)))
    assert await asyncio.to_thread(begun.acquire, True, 10)
    serve.cancel()
    with pytest.raises(asyncio.CancelledError):
        await serve
    turns = app[SNAPSHOTS]
    assert turns.locked()  # the step still runs
    go.set()
    async with asyncio.timeout(10):  # (no deadlock)
        await turns.acquire()  # given back once the step ended
    assert not any((tmp_path / "a" / "tmp").glob("*"))
    busy, _, _ = n.log.db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    assert busy == 0  # its read transaction ended


async def test_a_stream_cut_short_closes_its_files_and_transaction(
        tmp_path: Path, opened: list[Node]) -> None:
    """A client gone mid-stream: closing the generator ends its read transaction (a writer
    can checkpoint the whole WAL again) and leaves no spool in tmp/."""
    n = _open(tmp_path / "a", opened)
    await _turns(n, "j", 2)
    stream = n.catchup.snapshot_stream(3, "jobs")
    next(stream)
    stream.close()
    assert not any((tmp_path / "a" / "tmp").glob("*"))
    await _turns(n, "k", 1)
    busy, _, _ = n.log.db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    assert busy == 0
    with sqlite3.connect(n.log.path) as db:  # (the file is whole)
        assert db.execute("PRAGMA quick_check").fetchone() == ("ok",)
