"""Durable acknowledgements: a failed log write keeps the events queued and answers 507, the
connection survives any exception mid-transaction, blocks are verified when read."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import io
import logging
import random
import resource
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, cast

import pytest

from peer.cids import parse_cid
from peer.config import PeerConfig
from peer.errors import (
    IntegrityError,
    StorageFull,
    StoreError,
    StoreUnwritable,
    disk_failing,
    disk_full,
)
from peer.errors_http import Surface, status_of
from peer.ipfs.blocks import _write_all
from peer.ipfs.embedded import EmbeddedStore
from peer.jobs.claims import chunk_exhausted
from peer.log import Event, EventLog, EventType, FailureKind
from peer.log.flaps import FLAP_WINDOW_S
from peer.log.sqlite import SyncTainted
from peer.mesh.membership import Membership
from peer.mesh.swim import Member, State, Swim, SwimConfig, SwimNet
from peer.mesh.view import MeshView
from peer.node import Node
from tests.helpers import RecordingGossip
from tests.unit.api_client import api_client

ORIGIN = "a" * 16


def _events(first: int, n: int) -> list[Event]:
    return [Event(ORIGIN, s, 1000 + s, EventType.PROVIDE, {"cids": [f"c{s}"]})
            for s in range(first, first + n)]


class _FailingDb:
    """A sqlite3 connection whose next executemany raises `exc` (after BEGIN)."""

    def __init__(self, db: sqlite3.Connection, exc: BaseException) -> None:
        self.db = db
        self.exc: BaseException | None = exc

    def executemany(self, sql: str, rows: Any) -> Any:
        if self.exc is not None:
            exc, self.exc = self.exc, None
            raise exc
        return self.db.executemany(sql, rows)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.db, name)


def _sqlite_full() -> sqlite3.OperationalError:
    e = sqlite3.OperationalError("database or disk is full")
    e.sqlite_errorcode = 13  # type: ignore[attr-defined]  # as SQLite sets it
    return e


@pytest.mark.parametrize("exc, raised", [
    (RuntimeError("a bug between BEGIN and COMMIT"), RuntimeError),
    (KeyboardInterrupt(), KeyboardInterrupt),
    (_sqlite_full(), StorageFull),
    (sqlite3.OperationalError("disk I/O error"), StoreError),
])
def test_a_failed_append_rolls_back_and_leaves_the_connection_usable(
        tmp_path: Path, exc: BaseException, raised: type[BaseException]) -> None:
    log = EventLog(tmp_path / "e.sqlite")
    log.append(_events(1, 2))
    real = log._db
    log._db = _FailingDb(real, exc)  # type: ignore[assignment]
    with pytest.raises(raised):
        log.append(_events(3, 2))
    assert not real.in_transaction
    log.append(_events(3, 2))  # the same events again: written now
    log.close()
    again = EventLog(tmp_path / "e.sqlite")
    assert [e.seq for e in again.load()] == [1, 2, 3, 4]
    again.close()


def _raised_from(cause: OSError) -> BaseException:
    """An error raised from `cause`, as a layer above wraps one."""
    try:
        try:
            raise cause
        except OSError as e:
            raise StoreError("cannot add x") from e
    except StoreError as wrapped:
        return wrapped


def test_disk_full_is_recognised_through_wrapping() -> None:
    assert disk_full(OSError(errno.ENOSPC, "No space left on device"))
    assert disk_full(OSError(errno.EDQUOT, "Disk quota exceeded"))
    assert disk_full(_sqlite_full())
    assert disk_full(_raised_from(OSError(errno.ENOSPC, "full")))
    assert not disk_full(OSError(errno.EACCES, "denied"))
    assert not disk_full(ValueError("no"))
    assert status_of(StorageFull("full"), Surface.API) == 507


def test_a_failing_disk_is_recognised_through_wrapping() -> None:
    """As `disk_full`: an EIO a library wraps (e.g. aiohttp's payload errors) is still told
    as a failing disk, not a 500 (review r2 L2)."""
    for code in (errno.EIO, errno.EROFS, errno.EFBIG):
        assert disk_failing(OSError(code, "failed"))
        assert disk_failing(_raised_from(OSError(code, "failed")))
    assert not disk_failing(OSError(errno.ENOSPC, "full"))
    assert not disk_failing(ValueError("no"))


class _Disk:
    """Wraps EventLog.append: fails with ENOSPC while `full`, counts transactions."""

    def __init__(self, node: Node) -> None:
        self.full = False
        self.writes: list[list[int]] = []
        self._append = node.log.append
        node.log.append = self.append  # type: ignore[method-assign]

    def append(self, events: Sequence[Event], sync: bool | None = None,
               keep_texts: bool = False) -> None:
        if self.full:
            raise StorageFull("cannot write the event log: the disk is full") from OSError(
                errno.ENOSPC, "No space left on device")
        self._append(events, sync, keep_texts)
        self.writes.append([e.seq for e in events])


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    n = Node(PeerConfig(data_dir=tmp_path / "peer", slots=1, mdns=False))
    n.listeners.clear()  # no scheduler reactions: this is about the log
    n.gossip = RecordingGossip()  # type: ignore[assignment]
    yield n
    n.log.close()


def _stored(node: Node) -> list[int]:
    log = EventLog(node.cfg.data_dir / "events.sqlite")
    try:
        return [e.seq for e in log.load() if e.origin == node.peer_id]
    finally:
        log.close()


async def _turn() -> None:
    await asyncio.sleep(0)
    await asyncio.sleep(0)


async def test_disk_full_mid_flush_keeps_events_queued_then_writes_them_in_order(
        node: Node) -> None:
    disk = _Disk(node)
    gossip: Any = node.gossip
    node.emit(EventType.PROVIDE, {"cids": ["a"]})
    await _turn()
    assert disk.writes == [[1]] and len(gossip.frames) == 1
    disk.full = True
    evs = [node.emit(EventType.PROVIDE, {"cids": [f"b{i}"]}) for i in range(3)]
    await _turn()
    assert disk.writes == [[1]] and len(gossip.frames) == 1  # nothing written, nothing sent
    with pytest.raises(StorageFull, match="disk is full"):
        await node.durable(evs[-1])
    assert node.heads()[node.peer_id] == 1  # others never hear of what is not on disk
    assert [e.seq for e in node.events_after({}, 100) if e.origin == node.peer_id] == [1]
    assert node.durability()["unwritten_events"] == 3
    assert node.durability()["write_error"] is not None
    assert node._retry is not None  # a later turn retries without being asked
    later = node.emit(EventType.PROVIDE, {"cids": ["c"]})  # queued behind the others
    disk.full = False  # space is freed
    await node.durable(later)  # no exception: every queued event is on disk now
    assert disk.writes == [[1], [2, 3, 4, 5]]  # one transaction, no gap in the sequence
    assert [[e.seq for e in f] for f in gossip.frames] == [[1], [2, 3, 4, 5]]
    assert _stored(node) == [1, 2, 3, 4, 5]
    assert node.heads()[node.peer_id] == 5
    assert node.durability() == {"log_error": None, "claims_held": False,
                                 "unwritten_events": 0, "write_error": None,
                                 "unsynced_received": 0, "sync_error": None,
                                 "corrupt_blocks": 0}


async def test_the_retry_timer_writes_the_queue_once_space_returns(
        node: Node, monkeypatch: pytest.MonkeyPatch) -> None:
    import peer.node
    monkeypatch.setattr(peer.node, "WRITE_RETRY_S", 0.01)
    disk = _Disk(node)
    disk.full = True
    node.emit(EventType.PROVIDE, {"cids": ["a"]})
    await _turn()
    assert disk.writes == []
    disk.full = False
    async with asyncio.timeout(10):
        while not disk.writes:
            await asyncio.sleep(0.01)
    assert disk.writes == [[1]] and node.durability()["unwritten_events"] == 0


async def test_the_api_answers_507_while_the_disk_is_full(node: Node) -> None:
    disk = _Disk(node)
    async with api_client(node) as client:
        disk.full = True
        r = await client.post("/api/jobs", json=[{"call": "ECHO", "args": ["hi"]}])
        assert r.status == 507
        body = await r.json()
        assert body["error"] == "StorageFull" and "disk is full" in body["message"]
        (job,) = node.state.jobs  # held in memory, queued for the disk
        r = await client.post(f"/api/jobs/{job}/cancel")
        assert r.status == 507
        r = await client.post("/api/add?name=f.txt", data=b"hello")
        assert r.status == 507
        health = await (await client.get("/api/health")).json()
        assert health["durability"]["unwritten_events"] == 3
        disk.full = False
        r = await client.post("/api/add?name=g.txt", data=b"again")
        assert r.status == 201
    assert [t for w in disk.writes for t in w] == [1, 2, 3, 4]
    kinds = {e.type for e in node.state.events.values() if e.origin == node.peer_id}
    assert EventType.JOB_SUBMITTED in kinds and EventType.JOB_CANCELLED in kinds


async def test_a_deletion_is_acknowledged_once_on_disk(node: Node) -> None:
    """DELETE /api/jobs/{job} answers once its JOB_DELETED is on disk (507 while the disk
    is full: held in memory, written once it can be), as a cancel does."""
    from tests.unit.test_compaction import history

    node.gossip.acknowledge = lambda origins: None  # type: ignore[attr-defined]
    node.merge(history(jobs=1, per_job=1))  # job000: finished
    disk = _Disk(node)
    async with api_client(node) as client:
        disk.full = True
        r = await client.delete("/api/jobs/job000")
        assert r.status == 507 and "disk is full" in (await r.json())["message"]
        disk.full = False
        assert "job000" in node.state.deleted  # folded; written at the next flush
    assert node.durability()["unwritten_events"] == 1


def _failure(attempt: int, kind: str) -> Event:
    return Event(ORIGIN, attempt + 10, 2000 + attempt, EventType.CHUNK_FAILED,
                 {"job": "j", "task": "t", "split": [ORIGIN, 1], "chunk": 0,
                  "attempt": attempt, "error": "x", "kind": kind})


def test_disk_full_failures_do_not_count_against_the_attempts() -> None:
    storage = {a: _failure(a, FailureKind.STORAGE.value) for a in range(1, 6)}
    assert not chunk_exhausted(storage, max_attempts=3)
    mixed = {**storage, 6: _failure(6, FailureKind.CRASH.value),
             7: _failure(7, FailureKind.STORAGE.value)}
    assert not chunk_exhausted(mixed, max_attempts=2)
    mixed[8] = _failure(8, FailureKind.CRASH.value)
    assert chunk_exhausted(mixed, max_attempts=2)


def _flip(path: Path, at: int = 0) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0x01
    path.write_bytes(bytes(data))


def test_a_corrupt_block_is_counted_removed_and_never_served(tmp_path: Path) -> None:
    store = EmbeddedStore(tmp_path / "s")
    cid = store.add_bytes(b"some bytes worth keeping")
    path = store.blocks.path(parse_cid(cid).key)
    _flip(path)
    with pytest.raises(IntegrityError, match="corrupt"):
        b"".join(store.cat(cid))
    assert store.corrupt_blocks == 1 and not path.exists()
    with pytest.raises(Exception, match="not in the store"):
        store.get_block(cid)


def test_a_corrupt_block_is_repaired_through_the_hook(tmp_path: Path) -> None:
    good = b"x" * 1000
    store = EmbeddedStore(tmp_path / "s")
    cid = store.add_bytes(good)
    asked: list[str] = []

    def repair(c: Any) -> bytes | None:
        asked.append(str(c))
        return good

    store.blocks.repair = repair
    _flip(store.blocks.path(parse_cid(cid).key), 10)
    assert b"".join(store.cat(cid)) == good
    assert asked == [cid] and store.corrupt_blocks == 1
    assert store.get_block(cid) == good  # stored again: no second repair
    assert asked == [cid]


def test_a_repair_that_returns_other_bytes_is_refused(tmp_path: Path) -> None:
    store = EmbeddedStore(tmp_path / "s")
    cid = store.add_bytes(b"original")
    store.blocks.repair = lambda c: b"forged"
    _flip(store.blocks.path(parse_cid(cid).key))
    with pytest.raises(IntegrityError):
        store.get_block(cid)


def test_disk_full_while_adding_is_storage_full(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    store = EmbeddedStore(tmp_path / "s")
    src = tmp_path / "f.bin"
    src.write_bytes(b"y" * 5000)

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("peer.ipfs.blocks.os.fsync", full)
    with pytest.raises(StorageFull, match="disk is full"):
        store.add_path(src)
    monkeypatch.undo()
    assert not list(store.blocks.keys())  # no temp file or half block left behind
    cid = store.add_path(src)
    assert b"".join(store.cat(cid)) == b"y" * 5000


def test_acknowledged_kinds_of_event_are_committed_with_an_fsync(tmp_path: Path) -> None:
    log = EventLog(tmp_path / "e.sqlite")

    def mode() -> int:
        return int(log._db.execute("PRAGMA synchronous").fetchone()[0])

    progress = Event(ORIGIN, 1, 1001, EventType.PROGRESS,
                     {"job": "j", "task": "t", "split": [ORIGIN, 1], "chunk": 0, "attempt": 1,
                      "progress": 0.5})
    log.append([progress])
    assert mode() == 1  # NORMAL: survives the process, not a power loss
    submitted = Event(ORIGIN, 2, 1002, EventType.JOB_CANCELLED, {"job": "j", "reason": "r"})
    log.append([submitted])
    assert mode() == 2  # FULL: the WAL is fsynced at this commit (and all before it)
    log.append(_events(3, 1))  # PROVIDE announces blocks: FULL too
    assert mode() == 2
    log.close()


async def test_an_acknowledgement_fsyncs_the_log_off_the_loop(node: Node) -> None:
    synced: list[bool] = []
    sync = node.log.sync

    def spy(since: int | None = None) -> None:
        synced.append(threading.current_thread() is threading.main_thread())
        sync(since)

    node.log.sync = spy  # type: ignore[method-assign]
    ev = node.emit(EventType.JOB_CANCELLED, {"job": "j", "reason": "r"})
    await node.durable(ev)
    assert synced == [False]  # one fsync, in a thread: the loop went on meanwhile
    assert _stored(node) == [ev.seq]


class _HeldFsyncs:
    """Wraps EventLog's fsync: the first `held` calls each wait in their thread until
    `release(n)` (10 s at most), and fail (EIO) where `fails` says; records the calls and
    whether two ever ran at once."""

    def __init__(self, node: Node, held: int, fails: Sequence[int] = ()) -> None:
        self.entered = [threading.Event() for _ in range(held)]
        self.left = [threading.Event() for _ in range(held)]
        self._gates = [threading.Event() for _ in range(held)]
        self.fails = set(fails)
        self.calls = 0
        self.overlapped = False
        self._inside = 0
        self._fsync = node.log._fsync
        node.log._fsync = self  # type: ignore[method-assign]

    def __call__(self) -> None:
        n, self.calls = self.calls, self.calls + 1
        self._inside += 1
        self.overlapped |= self._inside > 1
        try:
            if n < len(self.entered):
                self.entered[n].set()
                self._gates[n].wait(10)
            if n in self.fails:
                raise OSError(errno.EIO, "Input/output error")
            self._fsync()
        finally:
            self._inside -= 1
            if n < len(self.left):
                self.left[n].set()

    async def under_way(self, n: int) -> None:
        """Until fsync `n` (from 0) runs in its thread."""
        assert await asyncio.to_thread(self.entered[n].wait, 10)

    def release(self, n: int) -> None:
        self._gates[n].set()

    async def returned(self, n: int) -> None:
        """Until fsync `n` has returned in its thread."""
        assert await asyncio.to_thread(self.left[n].wait, 10)


def _cancel(node: Node, job: str) -> Event:
    return node.emit(EventType.JOB_CANCELLED, {"job": job, "reason": "r"})


async def test_acknowledgements_during_an_fsync_share_the_next_and_none_answers_before_it(
        node: Node) -> None:
    """Group commit (issue 12): `durable` calls made while an fsync runs wait for the next
    one, one more fsync for all of them (not one each), one in flight at a time; none
    answers before the fsync that began after its event was written returns."""
    disk = _HeldFsyncs(node, held=2)
    first = asyncio.create_task(node.durable(_cancel(node, "j0")))
    await disk.under_way(0)
    later = [asyncio.create_task(node.durable(_cancel(node, f"j{i}"))) for i in (1, 2, 3)]
    await _turn()
    assert not first.done() and not any(t.done() for t in later)
    disk.release(0)
    await disk.under_way(1)  # the next fsync, for the three written meanwhile
    await _turn()
    assert first.done() and first.result() is None
    assert not any(t.done() for t in later)  # not proven by the fsync that began before them
    disk.release(1)
    await asyncio.gather(*later)
    assert disk.calls == 2 and not disk.overlapped
    assert len(_stored(node)) == 4
    assert not node._syncing and not node._rewrite


async def test_a_failed_fsync_fails_the_acknowledgements_it_covered_not_later_ones(
        node: Node) -> None:
    """An fsync that fails fails every `durable` waiting on it: the one whose event it was to
    prove, and one written while it ran (Linux may have dropped that one's pages too:
    `EventLog.sync`'s `since`), without a further fsync for it; both events are rewritten
    and proven later. One written after the failure is acknowledged by its own fsync."""
    disk = _HeldFsyncs(node, held=1, fails=[0])
    a = _cancel(node, "ja")
    first = asyncio.create_task(node.durable(a))
    await disk.under_way(0)
    b = _cancel(node, "jb")
    second = asyncio.create_task(node.durable(b))
    await _turn()
    disk.release(0)
    for task in (first, second):
        with pytest.raises(StoreError, match="cannot sync"):
            await task
    assert disk.calls == 1  # nothing more fsynced for the second: the failure covers it
    assert set(node._rewrite) == {a.id, b.id}
    c = _cancel(node, "jc")
    await node.durable(c)  # written after the failure: its fsync proves it
    assert disk.calls == 2 and set(node._rewrite) == {a.id, b.id}
    assert node.heads()[node.peer_id] == a.seq - 1  # (stop below the events rewritten)
    await _retried(node)
    assert disk.calls == 3 and not node._rewrite
    assert node.heads()[node.peer_id] == c.seq


async def test_an_acknowledgement_waiting_when_the_node_closes_fails_not_hangs(
        node: Node) -> None:
    """The fsyncs' task cancelled (the node closing) fails the acknowledgements still
    waiting for it: none is answered as on disk, none waits for ever."""
    disk = _HeldFsyncs(node, held=1)
    waiting = asyncio.create_task(node.durable(_cancel(node, "j")))
    await disk.under_way(0)
    assert node._syncer is not None
    node._syncer.cancel()
    with pytest.raises(StoreError, match="closed before"):
        await waiting
    disk.release(0)
    await disk.returned(0)  # (its thread ends before the log closes)


async def test_received_acknowledged_kinds_are_fsynced_off_the_loop_before_heads_say_so(
        node: Node) -> None:
    """A merged PROVIDE (or submission) is written at once and fsynced in a thread: the loop
    goes on, and until the fsync is done our heads (what acknowledgements count) and content
    digests stop below it."""
    node._loop = asyncio.get_running_loop()
    acked: list[set[str]] = []
    node.gossip.acknowledge = acked.append  # type: ignore[attr-defined]
    gate = threading.Event()
    on_loop: list[bool] = []
    sync = node.log.sync

    def slow_sync(since: int | None = None) -> None:
        on_loop.append(threading.current_thread() is threading.main_thread())
        gate.wait(10)
        sync(since)

    node.log.sync = slow_sync  # type: ignore[method-assign]
    assert node.merge(_events(1, 2))
    assert node.state.heads[ORIGIN] == 2  # folded at once
    assert node.heads().get(ORIGIN, 0) == 0  # not yet fsynced: not announced as held
    assert node.content_sum() is None and ORIGIN not in node.content_digests()
    gate.set()
    await asyncio.gather(*node._bg)
    assert on_loop == [False]
    assert node.heads()[ORIGIN] == 2
    assert node.content_sum() is not None
    assert acked == []  # nothing to acknowledge: no submission


def _gated_sync(node: Node) -> threading.Event:
    """Run `node`'s loop here, its log's fsyncs waiting (10 s at most) until the gate is set."""
    node._loop = asyncio.get_running_loop()
    gate = threading.Event()
    sync = node.log.sync

    def slow_sync(since: int | None = None) -> None:
        gate.wait(10)
        sync(since)

    node.log.sync = slow_sync  # type: ignore[method-assign]
    return gate


async def test_a_received_deletion_is_fsynced_before_heads_count_it(node: Node) -> None:
    """A JOB_DELETED in a received batch (after an event of a kind written without an
    fsync) is an acknowledged kind: our heads, the version vector the others keep for the
    tombstone bound, stop below it until it is on disk (a power loss could lose it)."""
    gate = _gated_sync(node)
    node.gossip.acknowledge = lambda origins: None  # type: ignore[attr-defined]
    cancel = Event(ORIGIN, 1, 1001, EventType.JOB_CANCELLED, {"job": "j", "reason": "r"})
    node.merge([cancel])
    gate.set()
    await asyncio.gather(*node._bg)
    gate.clear()
    progress = Event(ORIGIN, 2, 1002, EventType.PROGRESS,
                     {"job": "j", "task": "t", "split": [ORIGIN, 1], "chunk": 0, "attempt": 1,
                      "progress": 0.5})
    deleted = Event(ORIGIN, 3, 1003, EventType.JOB_DELETED, {"job": "j", "reason": "rm"})
    assert node.merge([progress, deleted])
    assert node.state.heads[ORIGIN] == 3  # folded at once
    assert node.heads()[ORIGIN] == 2  # not yet fsynced: not announced as held
    gate.set()
    await asyncio.gather(*node._bg)
    assert node.heads()[ORIGIN] == 3


async def test_our_deletion_is_fsynced_before_it_is_pushed_or_counted(node: Node) -> None:
    """Our own JOB_DELETED leaves (and our heads cover it) only once the log is fsynced, as
    a turn with inline blocks: a power loss cannot lose a deletion a peer saw us hold."""
    gate = _gated_sync(node)
    ev = node.emit(EventType.JOB_DELETED, {"job": "j", "reason": "rm"})
    node.flush()
    assert _stored(node) == [ev.seq]  # written
    assert node.heads().get(node.peer_id, 0) == ev.seq - 1  # not counted before the fsync
    assert node.gossip.frames == []  # type: ignore[attr-defined]
    gate.set()
    await asyncio.gather(*node._bg)
    assert node.heads()[node.peer_id] == ev.seq
    assert [e.id for f in node.gossip.frames for e in f] == [ev.id]  # type: ignore[attr-defined]


def _submission(origin: str) -> Event:
    return Event(origin, 1, 1001, EventType.JOB_SUBMITTED,
                 {"job": f"j-{origin[0]}", "workflow": {"tasks": []}})


class _FlakySync:
    """Wraps EventLog's fsync and replace: an fsync fails (EIO) while `outcomes` says False;
    records the fsyncs and the rewrites in order."""

    def __init__(self, node: Node, outcomes: list[bool]) -> None:
        self.outcomes = outcomes
        self.calls: list[Any] = []
        self._fsync, self._replace = node.log._fsync, node.log.replace
        node.log._fsync = self.fsync  # type: ignore[method-assign]
        node.log.replace = self.replace  # type: ignore[method-assign]

    def fsync(self) -> None:
        if self.outcomes and not self.outcomes.pop(0):
            self.calls.append("failed fsync")
            raise OSError(errno.EIO, "Input/output error")
        self.calls.append("fsync")
        self._fsync()

    def replace(self, events: Sequence[Event], sync: bool | None = None) -> None:
        self.calls.append(sorted(e.id for e in events))
        self._replace(events, sync)


async def _retried(node: Node) -> None:
    """What the retry timer runs (without waiting WRITE_RETRY_S), and its fsync."""
    assert node._retry is not None and not node._retry.cancelled()
    node._retry.cancel()
    node._retry_flush()
    await asyncio.gather(*node._bg)


async def test_a_failed_fsync_of_received_events_rewrites_them_until_one_succeeds(
        node: Node) -> None:
    """Received events whose fsync failed stay below our heads and their submissions
    unacknowledged, also when a later fsync succeeds (Linux may have dropped their pages):
    every WRITE_RETRY_S they are rewritten, then fsynced; once that succeeds our heads cover
    them and the submissions of every failed generation are acknowledged."""
    node._loop = asyncio.get_running_loop()
    acked: list[set[str]] = []
    node.gossip.acknowledge = acked.append  # type: ignore[attr-defined]
    disk = _FlakySync(node, [False, False, True, False])
    b, c = "b" * 16, "c" * 16
    assert node.merge([_submission(ORIGIN), *_events(2, 1)])
    await asyncio.gather(*node._bg)
    retry = node._retry
    assert retry is not None
    assert node.merge([_submission(c)])  # fails too: the same outage, the same timer
    await asyncio.gather(*node._bg)
    assert node._retry is retry
    assert node.merge([_submission(b)])  # fsynced: proves b's, not the earlier ones
    await asyncio.gather(*node._bg)
    assert disk.calls == ["failed fsync", "failed fsync", "fsync"]
    heads = node.heads()
    assert heads[b] == 1 and heads.get(ORIGIN, 0) == 0 and heads.get(c, 0) == 0
    assert node.content_sum() is None
    assert acked == [{b}]
    rewritten = [(ORIGIN, 1), (ORIGIN, 2), (c, 1)]
    await _retried(node)  # rewritten, the fsync fails again
    assert disk.calls[3:] == [rewritten, "failed fsync"]
    assert node.heads().get(ORIGIN, 0) == 0 and acked == [{b}]
    assert node.durability()["unsynced_received"] == 3  # /api/health shows the outage
    assert node.durability()["sync_error"]
    await _retried(node)
    assert disk.calls[5:] == [rewritten, "fsync"]  # rewritten before the fsync that counts
    heads = node.heads()
    assert (heads[ORIGIN], heads[b], heads[c]) == (2, 1, 1)
    assert node.content_sum() is not None
    assert acked == [{b}, {ORIGIN, c}]
    assert node._retry is None and not node._rewrite and not node._syncing
    assert node.durability()["unsynced_received"] == 0 and not node.durability()["sync_error"]
    assert not node._unacked and not node._unsynced


async def test_submissions_received_during_an_fsync_share_the_next_fsync_and_ack(
        node: Node) -> None:
    """A receiver's batching (issue 12): submissions received while an fsync runs (from
    several frames, several origins) are all proven by the next fsync, one more, not one
    each; each origin is acknowledged once for them, and only once that fsync has
    returned; the fsync that was running acknowledges only what was written before it."""
    node._loop = asyncio.get_running_loop()
    trail: list[Any] = []
    node.gossip.acknowledge = (  # type: ignore[attr-defined]
        lambda origins: trail.append(sorted(origins)))
    entered = [threading.Event(), threading.Event()]
    gates = [threading.Event(), threading.Event()]
    calls: list[int] = []
    sync = node.log.sync

    def gated(since: int | None = None) -> None:
        n = len(calls)
        calls.append(n)
        entered[n].set()
        gates[n].wait(10)
        sync(since)
        trail.append("fsync")

    node.log.sync = gated  # type: ignore[method-assign]
    b = "b" * 16
    assert node.merge([_submission(ORIGIN)])
    assert await asyncio.to_thread(entered[0].wait, 10)  # the first fsync is under way
    second = Event(ORIGIN, 2, 1002, EventType.JOB_SUBMITTED,
                   {"job": "j-a2", "workflow": {"tasks": []}})
    assert node.merge([second])  # two more frames while it runs
    assert node.merge([_submission(b)])
    await _turn()
    assert trail == [] and node.heads().get(b, 0) == 0  # nothing acknowledged yet
    gates[0].set()
    assert await asyncio.to_thread(entered[1].wait, 10)
    assert trail == ["fsync", [ORIGIN]]  # the first covers the first submission alone
    assert node.heads()[ORIGIN] == 1 and node.heads().get(b, 0) == 0
    gates[1].set()
    await asyncio.gather(*node._bg)
    assert trail == ["fsync", [ORIGIN], "fsync", [ORIGIN, b]]  # one fsync, one ack each
    assert calls == [0, 1]
    assert (node.heads()[ORIGIN], node.heads()[b]) == (2, 1)


async def test_a_rewrite_takes_each_event_as_held_now(node: Node) -> None:
    """An event that may have left the log meanwhile (at or below its origin's highest seq
    dropped) is not written back."""
    node._loop = asyncio.get_running_loop()
    disk = _FlakySync(node, [False])
    assert node.merge(_events(1, 2))
    await asyncio.gather(*node._bg)
    del node.state.events[(ORIGIN, 1)]
    node.compactor.floors[ORIGIN] = 1
    await _retried(node)
    assert disk.calls == ["failed fsync", [(ORIGIN, 2)], "fsync"]
    assert not node._unsynced


@pytest.mark.usefixtures("no_jobless_window")
async def test_received_provides_that_left_memory_are_rewritten(node: Node) -> None:
    """A pass lets PROVIDEs (of no job) go from memory while their fsync is being retried
    (every 5 s against 0.5 s): they are written again as they are (before, the rewrite
    skipped what was not in memory, and the heads then said they were held)."""
    node._loop = asyncio.get_running_loop()
    node.listeners[:] = [node.compactor.note]  # as a running node
    disk = _FlakySync(node, [False])
    now = node.hlc.now()  # (within the horizon: not dropped for their age)
    assert node.merge([Event(ORIGIN, e.seq, now + e.seq, e.type, e.payload)
                       for e in _events(1, 2)])  # PROVIDEs of ORIGIN
    await asyncio.gather(*node._bg)
    node.catchup.compact()
    assert (ORIGIN, 1) not in node.state.events
    await _retried(node)
    assert disk.calls == ["failed fsync", [(ORIGIN, 1), (ORIGIN, 2)], "fsync"]
    assert node.heads()[ORIGIN] == 2


async def test_nothing_is_retried_after_close(node: Node) -> None:
    node._loop = asyncio.get_running_loop()
    disk = _FlakySync(node, [False])
    assert node.merge(_events(1, 1))
    await asyncio.gather(*node._bg)
    retry = node._retry
    assert retry is not None
    node.gossip = None  # the stand-in has nothing to close
    await node.close()
    assert retry.cancelled()
    node._retry_flush()  # as if the timer had fired anyway
    node._sync_failed(OSError(errno.EIO, "late"))
    assert node._retry is None
    assert disk.calls == ["failed fsync"]  # no rewrite, no fsync


def test_a_rewrite_writes_fresh_wal_frames(tmp_path: Path) -> None:
    """What a retry after a failed fsync relies on: replacing stored events with the same
    events writes their pages to the WAL again (not skipped as unchanged)."""
    log = EventLog(tmp_path / "e.sqlite")
    log.append(_events(1, 3), sync=False)
    wal = tmp_path / "e.sqlite-wal"
    before = wal.stat().st_size
    log.replace(_events(1, 3), sync=False)
    assert wal.stat().st_size > before
    assert [e.seq for e in log.load()] == [1, 2, 3]
    log.close()


def test_an_fsync_after_a_failed_one_does_not_prove_the_writes_before_it(
        tmp_path: Path) -> None:
    """Linux may drop the pages a failed fsync could not write: a later fsync that succeeds
    proves nothing of a write made before that failure (`since`), only of later ones."""
    log = EventLog(tmp_path / "e.sqlite")
    log.append(_events(1, 1), sync=False)
    before = log.write_epoch
    fsync, outcomes = log._fsync, [False]

    def flaky() -> None:
        if outcomes and not outcomes.pop(0):
            raise OSError(errno.EIO, "Input/output error")
        fsync()

    log._fsync = flaky  # type: ignore[method-assign]
    with pytest.raises(OSError) as failed:
        log.sync()
    assert not isinstance(failed.value, SyncTainted) and log.sync_epoch == before + 1
    with pytest.raises(SyncTainted):
        log.sync(before)  # the fsync itself succeeds: the failure came after the write
    log.append(_events(2, 1), sync=False)
    log.sync(log.write_epoch)  # a write after the failure: proven
    log.sync()
    log.close()


def test_an_fsync_that_fails_while_a_write_is_under_way_taints_that_write(
        tmp_path: Path) -> None:
    """Another thread's fsync that fails while our transaction is being written may have
    dropped its pages: the write's epoch is the one when it began."""
    log = EventLog(tmp_path / "e.sqlite")
    fsync, db = log._fsync, log._db

    def failing() -> None:
        raise OSError(errno.EIO, "Input/output error")

    class _Concurrent:  # an fsync in a thread fails between BEGIN and COMMIT
        def executemany(self, sql: str, rows: Any) -> Any:
            log._fsync = failing  # type: ignore[method-assign]
            with pytest.raises(OSError):
                log.sync()
            log._fsync = fsync  # type: ignore[method-assign]
            return db.executemany(sql, rows)

        def __getattr__(self, name: str) -> Any:
            return getattr(db, name)

    log._db = _Concurrent()  # type: ignore[assignment]
    log.append(_events(1, 1), sync=False)
    log._db = db
    with pytest.raises(SyncTainted):
        log.sync(log.write_epoch)
    log.append(_events(2, 1), sync=False)
    log.sync(log.write_epoch)
    log.close()


def test_fsyncs_of_the_log_never_overlap(tmp_path: Path) -> None:
    """One fsync at a time: with two in flight the kernel may report one's writeback error to
    the other, and the one whose pages were dropped "succeeds"."""
    log = EventLog(tmp_path / "e.sqlite")
    log.append(_events(1, 1), sync=False)
    fsync = log._fsync
    inside: list[int] = []
    entered = threading.Event()
    overlapped: list[bool] = []

    def slow() -> None:
        inside.append(1)
        overlapped.append(len(inside) > 1)
        if entered.is_set():
            second_in.set()
        else:  # the first one stays until the second comes in, or 0.5 s (bounded)
            entered.set()
            second_in.wait(0.5)
        fsync()
        inside.pop()

    second_in = threading.Event()
    log._fsync = slow  # type: ignore[method-assign]
    first = threading.Thread(target=log.sync)
    first.start()
    assert entered.wait(5)
    second = threading.Thread(target=log.sync)
    second.start()
    first.join(5)
    second.join(5)
    assert overlapped == [False, False]
    log.close()


async def test_an_acknowledgement_whose_fsync_failed_is_rewritten_until_one_succeeds(
        node: Node) -> None:
    """The API answers an error, and the event (folded and pushed already) stays below our
    heads until it is rewritten and an fsync proves it."""
    node._loop = asyncio.get_running_loop()
    disk = _FlakySync(node, [False])
    ev = node.emit(EventType.JOB_CANCELLED, {"job": "j", "reason": "r"})
    with pytest.raises(StoreError, match="cannot sync"):
        await node.durable(ev)
    assert node.heads()[node.peer_id] == ev.seq - 1
    assert node.durability()["unsynced_received"] == 1
    assert ev.id not in {e.id for e in node.events_after({}, 100)}  # nor served
    await _retried(node)
    assert ev.id in {e.id for e in node.events_after({}, 100)}
    assert disk.calls == ["failed fsync", [ev.id], "fsync"]
    assert node.heads()[node.peer_id] == ev.seq and not node._rewrite


async def test_a_failed_fsync_answers_a_submission_503_naming_its_job_and_health_503(
        node: Node) -> None:
    """The fsync that was to prove a submission fails (EIO, the disk not full): the API
    answers 503 LogUnwritable naming the job it keeps (it was a 500 StoreError naming none,
    and a client resent it), /api/health 503 with a reason while the event waits for an
    fsync that succeeds (it said 200, `ok` true); 200 once one does."""
    node._loop = asyncio.get_running_loop()
    _FlakySync(node, [False])
    async with api_client(node) as client:
        r = await client.post("/api/jobs", json=[{"call": "ECHO", "args": ["hi"]}])
        body = await r.json()
        assert (r.status, body["error"], body.get("field")) == (503, "LogUnwritable", "job"), body
        (job,) = node.state.jobs
        assert body["message"].startswith(
            f"job {job} is not on disk: the peer cannot sync its event log: Input/output"), body
        r = await client.get("/api/health")
        health = await r.json()
        assert (r.status, health["ok"]) == (503, False), health
        assert health["reason"] == (  # (one sentence: what failed and where, once)
            f"events cannot be stored: cannot fsync the event log {node.log.path}: "
            "Input/output error; 1 event written to it waits for an fsync that succeeds, "
            "and this peer claims no new work until a retry succeeds")
        await _retried(node)
        r = await client.get("/api/health")
        health = await r.json()
        assert (r.status, health["ok"], health["reason"]) == (200, True, None), health


async def test_a_turn_with_inline_blocks_whose_fsync_failed_is_rewritten_not_pushed(
        node: Node) -> None:
    node._loop = asyncio.get_running_loop()
    disk = _FlakySync(node, [False])
    gossip: Any = node.gossip
    done = {"job": "j", "task": "t", "split": ["x", 1], "chunk": 0, "attempt": 1,
            "output": "bafyout", "s": 0.1, "inline": {"bafyout": "AA=="}}
    ev = node.emit(EventType.CHUNK_DONE, done)
    node.flush()  # (fsynced in a thread: the loop goes on)
    await asyncio.gather(*node._bg)
    assert gossip.frames == [] and node.heads()[node.peer_id] == ev.seq - 1
    nxt = node.emit(EventType.CHUNK_DONE, {**done, "attempt": 2})
    node.flush()  # a later turn's fsync succeeds: it proves that turn, not the failed one
    await asyncio.gather(*node._bg)
    assert [e.seq for f in gossip.frames for e in f] == [nxt.seq]
    assert node.heads()[node.peer_id] == ev.seq - 1
    await _retried(node)
    assert disk.calls == ["failed fsync", "fsync", [ev.id], "fsync"]
    assert node.heads()[node.peer_id] == nxt.seq and not node._rewrite


async def test_a_failed_fsync_of_any_caller_taints_the_fsyncs_in_flight(node: Node) -> None:
    """Received events whose fsync is under way when another caller's fsync fails are not
    proven by theirs: they are rewritten, and acknowledged only then."""
    node._loop = asyncio.get_running_loop()
    acked: list[set[str]] = []
    node.gossip.acknowledge = acked.append  # type: ignore[attr-defined]
    disk = _FlakySync(node, [False])
    assert node.merge([_submission(ORIGIN)])  # its fsync waits for the next loop turn
    ev = node.emit(EventType.JOB_CANCELLED, {"job": "j", "reason": "r"})
    with pytest.raises(StoreError):
        node.durable_now(ev)  # fails first
    await asyncio.gather(*node._bg)  # the received event's fsync is not made: nothing waits
    assert disk.calls == ["failed fsync"]
    assert node.heads().get(ORIGIN, 0) == 0 and acked == []
    await _retried(node)
    assert sorted(disk.calls[1]) == sorted([(ORIGIN, 1), ev.id])
    assert node.heads()[ORIGIN] == 1 and acked == [{ORIGIN}]


async def test_an_acknowledgement_of_an_event_written_before_a_failed_fsync_fails(
        node: Node) -> None:
    """`durable` of an event a flush wrote earlier: an fsync that failed since that flush
    began taints it, though the fsync for the acknowledgement itself succeeds."""
    node._loop = asyncio.get_running_loop()
    disk = _FlakySync(node, [False])
    ev = node.emit(EventType.JOB_CANCELLED, {"job": "j", "reason": "r"})
    node.flush()  # written, not fsynced
    other = node.emit(EventType.JOB_CANCELLED, {"job": "k", "reason": "r"})
    with pytest.raises(StoreError):
        node.durable_now(other)  # fails
    with pytest.raises(StoreError):
        await node.durable(ev)  # its fsync succeeds, after the failure: proves nothing
    assert disk.calls == ["failed fsync", "fsync"]
    await _retried(node)
    assert sorted(disk.calls[2]) == sorted([ev.id, other.id]) and disk.calls[3] == "fsync"
    assert node.heads()[node.peer_id] == other.seq


@pytest.mark.usefixtures("no_jobless_window")
def test_an_event_out_of_memory_is_not_written_back_over_a_conflict_winner(
        tmp_path: Path) -> None:
    """Review 2 of session 16: a received event whose fsync failed, then replaced by the
    conflict rule's winner (written to the log) and out of memory: the rewrite wrote the
    loser back over the winner. Now it is written back only if the log holds it or nothing."""
    n = Node(PeerConfig(data_dir=tmp_path, slots=1, mdns=False))
    n.listeners.clear()
    try:
        now = n.hlc.now()
        loser = Event(ORIGIN, 1, now, EventType.PROVIDE, {"cids": ["c-loser"]})
        winner = Event(ORIGIN, 1, now, EventType.PROVIDE, {"cids": ["c-winner"]})
        assert n.merge([loser]) and loser.id not in n.state.events  # out of memory at once
        assert n._as_held(loser) is loser  # the log holds it: written back as it is
        n.log.replace([winner])  # (what the conflict rule writes)
        assert n._as_held(loser) is None
    finally:
        n.log.close()


def _acking(node: Node, monkeypatch: pytest.MonkeyPatch, heads_of: Any,
            live: dict[str, dict[str, str]]) -> None:
    """`node` hears one live peer set (`live`), its vectors by `heads_of`; its own fsync is
    skipped and a submission waits up to 60 s for its ack."""
    node.gossip.heads_of = heads_of  # type: ignore[union-attr]
    monkeypatch.setattr(node, "live_peers", lambda: dict(live))
    node.cfg = dataclasses.replace(node.cfg, ack_timeout_s=60.0)

    async def durable(_ev: object) -> None:
        return None

    monkeypatch.setattr(node, "durable", durable)


async def test_a_submission_waits_for_an_ack_without_polling(
        node: Node, monkeypatch: pytest.MonkeyPatch) -> None:
    """`submitted` looks at the acks when a peer sends its vector (`heads_noted`), not every
    few milliseconds: while nothing comes it asks once, and it returns at the ack."""
    heads: dict[str, dict[str, int]] = {"p1": {}}
    _acking(node, monkeypatch, lambda p: heads.get(p, {}), {"p1": {}})
    asked = 0
    acks = node.acks

    def counted(seq: int, among: Any = None) -> int:
        nonlocal asked
        asked += 1
        return acks(seq, among)

    monkeypatch.setattr(node, "acks", counted)
    ev = node.emit(EventType.PROVIDE, {"cids": ["a"]})
    waiter = asyncio.create_task(node.submitted(ev))
    await asyncio.sleep(0.05)  # (no assertion on time: a poll would have asked ~25 times)
    assert not waiter.done() and asked == 1
    node.heads_noted("p1")  # a vector that does not cover it yet
    for _ in range(10):
        await asyncio.sleep(0)
    assert not waiter.done() and asked == 2
    heads["p1"] = {node.peer_id: ev.seq}
    node.heads_noted("p1")
    assert await asyncio.wait_for(waiter, 5) == 1 and asked == 3


async def test_a_waiter_is_not_put_back_to_sleep_by_another_waiters_clear(
        node: Node, monkeypatch: pytest.MonkeyPatch) -> None:
    """(Review.) POST A checks its acks and clears the event; an ack for A is noted (set);
    then POST B checks its own acks and clears it: A must be waiting on the event already
    (a `wait()` started later, as `asyncio.wait_for` starts it in a Task, slept on until
    the next vector or ack_timeout_s although A's ack was there)."""
    heads: dict[str, dict[str, int]] = {"p1": {}}
    _acking(node, monkeypatch, lambda p: heads.get(p, {}), {"p1": {}})
    ev1 = node.emit(EventType.PROVIDE, {"cids": ["a"]})
    ev2 = node.emit(EventType.PROVIDE, {"cids": ["b"]})

    def ack_of_a() -> None:  # a DIGEST ack from p1 covering ev1 only
        heads["p1"] = {node.peer_id: ev1.seq}
        node.heads_noted("p1")

    loop = asyncio.get_running_loop()
    a = asyncio.create_task(node.submitted(ev1))
    loop.call_soon(ack_of_a)
    b = asyncio.create_task(node.submitted(ev2))
    try:
        done, _ = await asyncio.wait({a}, timeout=2.0)
        assert a in done, "A slept on although its ack was noted (lost wake-up)"
        assert a.result() == 1
    finally:
        a.cancel()
        b.cancel()
        await asyncio.gather(a, b, return_exceptions=True)


async def test_a_peer_turning_alive_again_wakes_a_waiter(
        node: Node, monkeypatch: pytest.MonkeyPatch) -> None:
    """(Review.) `acks` counts live peers only: p1's ack comes while SWIM holds it suspect
    (noted, not counted), then p1 refutes and is alive: no vector comes, so the SWIM
    listener that sees it alive again (MeshView.member_changed) must wake the waiter, or the
    POST waits for the next vector any peer sends, or ack_timeout_s."""
    live: dict[str, dict[str, str]] = {"p1": {}}
    view = MeshView(node, cast(Membership, None))  # Node is the member sink, as in Gossip
    swim = view.swim = Swim(SwimConfig.local(), node.peer_id, 1, cast(SwimNet, None), view,
                            random.Random(1))  # p1 is a member (vectors are kept of members)
    swim.apply_updates([{"t": "a", "i": "p1", "a": "127.0.0.1:9", "n": 1}], 0.0)
    _acking(node, monkeypatch, view.heads_of, live)
    ev = node.emit(EventType.PROVIDE, {"cids": ["a"]})
    waiter = asyncio.create_task(node.submitted(ev))  # want = 1 (p1 alive)
    for _ in range(5):
        await asyncio.sleep(0)
    live.clear()  # p1 suspect
    view.note_heads("p1", {node.peer_id: ev.seq})  # its ack: noted, p1 not counted
    for _ in range(5):
        await asyncio.sleep(0)
    assert not waiter.done()
    live["p1"] = {}  # p1 refuted: alive again
    view.member_changed(Member("p1", "a", 2, State.ALIVE, 0.0), State.SUSPECT)
    try:
        done, _ = await asyncio.wait({waiter}, timeout=2.0)
        assert waiter in done, "p1 holds the event and is alive, but the waiter sleeps on"
    finally:
        waiter.cancel()
        await asyncio.gather(waiter, return_exceptions=True)


async def test_a_deletion_of_a_compacted_job_during_a_failed_fsync_drops_nothing_until_written(
        tmp_path: Path) -> None:
    """A JOB_DELETED of a compacted job folded while our writes have failed: its events stay
    in the log (they were dropped at once, whatever the members held), every event waiting
    for its rewrite is written back (another job's too: a floor raised by the drop hid it
    from `Node._as_held`, review of f4a9dc8), and the first pass once they are written
    drops them."""
    from tests.unit.test_compaction import ORIGIN, _rows, history
    n = Node(PeerConfig(data_dir=tmp_path / "p", slots=1, mdns=False, compact_recent_tasks=0))
    n.listeners[:] = [n.compactor.note]
    n.gossip = RecordingGossip()  # type: ignore[assignment]
    n.compactor.vvs = lambda: [dict(n.heads())]  # every member holds what we hold
    try:
        n._loop = asyncio.get_running_loop()
        disk = _FlakySync(n, [False])  # the first fsync fails, later ones succeed
        evs = history(jobs=2, per_job=1)  # job000: seqs 1..5, job001: seqs 6..10
        assert n.merge(evs)
        await asyncio.gather(*n._bg)
        n.catchup.compact()  # both compacted (nothing dropped: our writes have failed)
        dele = Event(ORIGIN, 11, evs[-1].hlc + 1, EventType.JOB_DELETED,
                     {"job": "job001", "reason": "r"})
        assert n.merge([dele])
        await asyncio.gather(*n._bg)
        n.catchup.compact()
        assert {e.id for e in evs} <= _rows(n) and not n.compactor.floors
        await _retried(n)
        rewritten = [c for c in disk.calls if isinstance(c, list)]
        assert rewritten and rewritten[0] == [(ORIGIN, 1), (ORIGIN, 6)]  # (whose fsync
        assert not n._rewrite  # failed: the two frames' first events)
        n.catchup.compact()  # (job000 is droppable too: every member holds it)
        assert _rows(n) == {dele.id} and n.compactor.floors == {ORIGIN: 10}
    finally:
        n.log.close()


async def test_a_failed_rewrite_leaves_an_acknowledgement_in_flight_to_its_fsync(
        node: Node) -> None:
    """During an outage the retry rewrites what a failed fsync may have lost; a rewrite that
    fails (rolled back: nothing dropped) must not fail an acknowledgement whose own fsync is
    under way and succeeds: its client would be told "not on disk" of a change that is."""
    node._loop = asyncio.get_running_loop()
    _FlakySync(node, [False])
    lost = _cancel(node, "lost")
    with pytest.raises(StoreError):
        node.durable_now(lost)  # the outage: `lost` is to be rewritten
    disk = _HeldFsyncs(node, held=1)
    waiting = asyncio.create_task(node.durable(_cancel(node, "b")))
    await disk.under_way(0)

    def full(events: Sequence[Event], sync: bool | None = None) -> None:
        raise StoreError("cannot write the event log: the disk is full")

    node.log.replace = full  # type: ignore[method-assign]
    node._retry_flush()  # the rewrite fails
    disk.release(0)
    await waiting  # proven by its fsync: answered as on disk
    assert lost.id in node._rewrite and node._retry is not None  # retried later


async def test_an_acknowledgement_whose_fsync_task_is_cancelled_before_it_ran_fails(
        node: Node) -> None:
    """The fsyncs' task cancelled before its first step (the node closing at once): the
    acknowledgement waiting for it fails; it waited for ever."""
    waiting = asyncio.create_task(node.durable(_cancel(node, "j")))
    await asyncio.sleep(0)  # registered; the fsyncs' task has not run yet
    assert node._syncer is not None and not node._syncer.done()
    node._syncer.cancel()
    with pytest.raises(StoreError, match="closed before"):
        await asyncio.wait_for(waiting, 10)


async def test_one_fsync_for_an_event_written_before_a_failed_fsync_and_a_fresh_one_fails_it(
        node: Node) -> None:
    """Acknowledgements sharing one fsync: it proves each only if no fsync failed since the
    earliest of their writes (`EventLog.sync`'s `since`, the most cautious epoch), so an
    event written before a failed fsync is not acknowledged by it."""
    node._loop = asyncio.get_running_loop()
    stale = _cancel(node, "stale")
    node.flush()  # written, not fsynced
    _FlakySync(node, [False])
    with pytest.raises(StoreError):
        node.durable_now(_cancel(node, "other"))  # an fsync fails after `stale` was written
    disk = _HeldFsyncs(node, held=1)
    first = asyncio.create_task(node.durable(_cancel(node, "first")))
    await disk.under_way(0)
    both = [asyncio.create_task(node.durable(ev))
            for ev in (stale, _cancel(node, "fresh"))]  # share the next fsync
    disk.release(0)
    await first
    with pytest.raises(StoreError):
        await both[0]
    await asyncio.gather(both[1], return_exceptions=True)


async def test_closing_waits_for_the_fsync_under_way_and_answers_by_its_outcome(
        node: Node) -> None:
    """(Review 213.) A node closing while an acknowledgement's fsync runs waits for it (at
    most CLOSE_SYNC_S) and answers by its outcome, and one written meanwhile gets its own
    fsync: it told "closed before" of changes an fsync made durable a moment later (their
    clients submitted them again)."""
    disk = _HeldFsyncs(node, held=1)
    first = asyncio.create_task(node.durable(_cancel(node, "j0")))
    await disk.under_way(0)
    second = asyncio.create_task(node.durable(_cancel(node, "j1")))
    closing = asyncio.create_task(node.close())
    await _turn()
    assert not first.done() and not second.done()
    disk.release(0)
    await closing
    assert first.result() is None and second.result() is None  # both on disk
    assert disk.calls == 2 and len(_stored(node)) == 2


async def test_closing_answers_an_fsync_that_fails_by_its_error(node: Node) -> None:
    """The fsync a closing node waits for fails: its acknowledgement gets that error (not
    "closed before")."""
    disk = _HeldFsyncs(node, held=1, fails=[0])
    waiting = asyncio.create_task(node.durable(_cancel(node, "j")))
    await disk.under_way(0)
    closing = asyncio.create_task(node.close())
    await _turn()
    disk.release(0)
    await closing
    with pytest.raises(StoreError, match="cannot sync"):
        await waiting


async def test_closing_waits_for_an_fsync_at_most_close_sync_s(
        node: Node, monkeypatch: pytest.MonkeyPatch) -> None:
    """Past CLOSE_SYNC_S (0 here) the fsync under way is given up: its acknowledgement fails
    (not known to be on disk), it does not wait for the disk."""
    import peer.node
    monkeypatch.setattr(peer.node, "CLOSE_SYNC_S", 0.0)
    disk = _HeldFsyncs(node, held=1)
    waiting = asyncio.create_task(node.durable(_cancel(node, "j")))
    await disk.under_way(0)
    await node.close()
    with pytest.raises(StoreError, match="closed before"):
        await waiting
    disk.release(0)
    await disk.returned(0)


async def test_a_failed_fsync_of_the_loop_leaves_one_an_earlier_fsync_proved(
        node: Node) -> None:
    """(Review 213.) The fsyncs' task's fsync succeeded in its thread, the loop has not heard
    yet, and `durable_now`'s fsync (taking its turn after it) fails: the acknowledgement the
    first proved is answered as on disk (it failed, and was rewritten), the other fails."""
    disk = _HeldFsyncs(node, held=1, fails=[1])
    a = _cancel(node, "ja")
    first = asyncio.create_task(node.durable(a))
    await disk.under_way(0)
    disk.release(0)
    assert disk.left[0].wait(10)  # (blocks the loop: its thread's outcome is not heard yet)
    b = _cancel(node, "jb")
    with pytest.raises(StoreError, match="cannot sync"):
        node.durable_now(b)
    await first  # proven by the fsync that ended before b's failed
    assert set(node._rewrite) == {b.id}
    assert node.heads()[node.peer_id] == a.seq  # (stop below b, rewritten)
    await _retried(node)
    assert not node._rewrite and node.heads()[node.peer_id] == b.seq


async def test_received_events_that_cannot_be_stored_make_health_503_until_a_merge_stores(
        node: Node, caplog: pytest.LogCaptureFixture) -> None:
    """A merge whose write fails (it raised, health said 200 and gossip logged "a bug" with
    a traceback per frame): /api/health 503 naming it while it lasts, one line logged with
    no traceback, nothing kept; the next merge that stores clears it."""
    node._loop = asyncio.get_running_loop()
    disk = _Disk(node)
    disk.full = True
    async with api_client(node) as client:
        for first in (1, 3):  # two frames during the outage
            with pytest.raises(StorageFull):
                node.merge(_events(first, 2))
        assert not node.state.holds((ORIGIN, 1))  # not kept: anti-entropy brings it again
        r = await client.get("/api/health")
        health = await r.json()
        assert (r.status, health["ok"]) == (503, False), health
        assert "received events are not stored" in health["reason"], health
        errors = [rec for rec in caplog.records if rec.levelno >= logging.ERROR]
        assert len(errors) == 1 and not errors[0].exc_info, errors
        disk.full = False
        assert [e.seq for e in node.merge(_events(1, 4))] == [1, 2, 3, 4]
        r = await client.get("/api/health")
        health = await r.json()
        assert (r.status, health["ok"], health["reason"]) == (200, True, None), health


async def test_a_submission_after_a_failed_merge_is_taken_and_ends_the_outage(
        node: Node) -> None:
    """Review r3 N1: a merge whose write failed, the log writable again and no received
    event since: a submission was refused (503) for as long, with nothing of ours queued
    to retry. Now it is made; its write succeeds and ends the outage (health 200)."""
    node._loop = asyncio.get_running_loop()
    disk = _Disk(node)
    disk.full = True
    with pytest.raises(StorageFull):
        node.merge(_events(1, 2))
    disk.full = False
    async with api_client(node) as client:
        assert (await client.get("/api/health")).status == 503
        r = await client.post("/api/jobs", json=[{"call": "ECHO", "args": ["hi"]}])
        assert r.status == 201, await r.text()
        r = await client.get("/api/health")
        health = await r.json()
        assert (r.status, health["reason"]) == (200, None), health


async def test_a_failed_fsync_with_nothing_to_rewrite_is_retried_until_one_succeeds(
        node: Node) -> None:
    """A generation with no events left to rewrite (all dropped meanwhile: only its
    submissions to acknowledge, as `_resync` registers it) whose fsync fails: the retry
    fsyncs again (it looked only at what to rewrite: health stayed 503 on an idle peer and
    the submissions were never acknowledged), then health is 200 and they are."""
    node._loop = asyncio.get_running_loop()
    acked: list[set[str]] = []
    node.gossip.acknowledge = acked.append  # type: ignore[attr-defined]
    disk = _FlakySync(node, [False])
    b = "b" * 16
    node._sync_received([], {b}, node.log.write_epoch)
    await asyncio.gather(*node._bg)
    assert node._sync_error is not None and not node._rewrite and node._unacked == {b}
    async with api_client(node) as client:
        assert (await client.get("/api/health")).status == 503
        await _retried(node)
        r = await client.get("/api/health")
        health = await r.json()
        assert (r.status, health["reason"]) == (200, None), health
    assert disk.calls == ["failed fsync", [], "fsync"] and acked == [{b}]


@contextlib.contextmanager
def _failing_disk() -> Iterator[None]:
    """Every write of this process past a file's first byte fails for real (RLIMIT_FSIZE:
    EFBIG, SQLite's "disk I/O error"; Python ignores SIGXFSZ), as on a failing disk."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


async def test_a_failed_merge_on_an_idle_peer_ends_once_a_probe_write_succeeds(
        node: Node) -> None:
    """Review r3 N1's health side: a merge whose write fails for real, then no event at all
    (an idle peer): nothing retried, so health stayed 503 (and claims held) until a received
    event or a submission was stored. Now the retry probes the log with one small write:
    it fails while the disk does (503, claims held), and ends the outage once one succeeds
    (200, claims again), the received events stored when sent again."""
    node._loop = asyncio.get_running_loop()
    async with api_client(node) as client:
        with _failing_disk():
            with pytest.raises(StoreError, match="disk I/O error"):
                node.merge(_events(1, 2))
            await _retried(node)  # its probe fails too: retried again
        r = await client.get("/api/health")
        health = await r.json()
        assert (r.status, health["durability"]["claims_held"]) == (503, True), health
        assert health["reason"] == (
            f"events cannot be stored: cannot write the event log {node.log.path}: disk I/O "
            "error; received events are not stored (peers send them again), and this peer "
            "claims no new work until a retry succeeds")
        await _retried(node)  # the disk takes writes again: no event needed
        r = await client.get("/api/health")
        health = await r.json()
        assert (r.status, health["reason"], health["durability"]["claims_held"]) == (
            200, None, False), health
    assert node._retry is None  # (nothing left to retry)
    assert [e.seq for e in node.merge(_events(1, 2))] == [1, 2]


def test_adding_on_a_failing_disk_is_store_unwritable_and_leaves_nothing(
        tmp_path: Path) -> None:
    """A block's write that the disk refuses, not for room (EFBIG here; EIO, EROFS): a
    StoreUnwritable naming the file (503; it was a StoreError, 500), no temp file left."""
    store = EmbeddedStore(tmp_path / "s")
    src = tmp_path / "f.bin"
    src.write_bytes(b"y" * 5000)
    with _failing_disk(), pytest.raises(StoreUnwritable, match=r"cannot add f\.bin: the "
                                        "store's disk does not take writes"):
        store.add_path(src)
    assert status_of(StoreUnwritable("x"), Surface.API) == 503
    assert not list(store.blocks.keys())
    assert b"".join(store.cat(store.add_path(src))) == b"y" * 5000


def test_a_block_write_that_writes_nothing_is_an_error_not_a_loop(tmp_path: Path) -> None:
    """An unbuffered write may write less than asked (`_write_all` writes the rest); one that
    writes nothing (a FUSE file system may) is EIO naming the file, not a loop for ever at
    full CPU (review r2 L1)."""
    class Stuck(io.FileIO):
        def write(self, b: object) -> int:
            return 0

    with Stuck(tmp_path / "block", "wb") as f, pytest.raises(OSError) as got:
        _write_all(f, b"data")
    assert got.value.errno == errno.EIO and str(got.value.filename) == str(tmp_path / "block")


def test_the_probe_fails_while_a_write_as_large_as_the_one_that_failed_would(
        tmp_path: Path) -> None:
    """Review r2 of session 45, M2: a nearly full disk (RLIMIT_FSIZE at the files' current
    sizes: writes into the space they have succeed, growing them fails, as on a full ext4).
    The probe rewrote one meta row, which fits, and said the log took writes while every
    merge that grows it failed: health and claims flapped every retry. Now it writes as much
    as the write that failed: it fails while that would, and succeeds once the limit goes."""
    log = EventLog(tmp_path / "e.sqlite")
    pay = {"job": "j0000000000e1", "task": "t", "chunk": 0, "attempt": 0, "x": "y" * 300}

    def claims(first: int, n: int) -> list[Event]:
        return [Event(ORIGIN, s, s << 16, EventType.CLAIM, dict(pay))
                for s in range(first, first + n)]

    log.append(claims(1, 3000), sync=False)
    log._db.execute("PRAGMA wal_checkpoint(PASSIVE)")
    room = max(p.stat().st_size for p in tmp_path.iterdir())
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (room, hard))
    try:
        with pytest.raises(StoreError, match="disk I/O error"):
            log.append(claims(3001, 6000), sync=False)
        with pytest.raises(StoreError, match="disk I/O error"):
            log.probe()
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    log.probe()
    log.append(claims(3001, 6000), sync=False)  # (as the probe said)
    assert len(list(log.load())) == 9000
    log.close()


async def test_a_disk_that_fails_every_other_merge_logs_a_window_s_lines_once(
        node: Node, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """Review r1 M2's second half (session 46): a larger merge fails, a smaller one stores,
    and every such flap logged its four lines again (the failure, claims held, writable
    again, claims resume): a disk failing every other write logged without bound. Now the
    first outage's lines, then nothing within FLAP_WINDOW_S but counts (a fake clock); the
    next start after it names them, and a flap that lasts is said by the retry timer."""
    caplog.set_level(logging.INFO, logger="banzai.node")
    node._loop = asyncio.get_running_loop()
    now = [1000.0]
    node.outage_clock = lambda: now[0]
    node.gossip.acknowledge = lambda origins: None  # type: ignore[attr-defined]
    disk = _Disk(node)
    seq = [1]

    def flap(times: int) -> None:
        for _ in range(times):
            disk.full = True
            with pytest.raises(StorageFull):
                node.merge(_events(seq[0], 2))  # (not kept)
            now[0] += 0.1
            disk.full = False
            node.merge(_events(seq[0], 1))  # stores: the outage ends
            seq[0] += 1
            now[0] += 0.1

    def lines() -> list[str]:
        got = [r.getMessage() for r in caplog.records if r.name == "banzai.node"]
        caplog.clear()
        return got

    flap(100)
    said = lines()
    assert len(said) == 4, said  # (each of the 100 logged these four)
    assert said[0].startswith("cannot write 2 received events") and said[1:] == [
        "no new claims while the event log cannot be written",
        "the event log is writable again: received events stored",
        "claims resume: the event log takes writes again"]
    assert node.scheduler.claims_held is False
    now[0] += FLAP_WINDOW_S
    flap(1)
    said = lines()
    assert len(said) == 4 and said[0].endswith(
        "(99 more outages in the last 80 s, not logged each: it flaps)"), said
    flap(1)  # (a flap again)
    disk.full = True
    with pytest.raises(StorageFull):
        node.merge(_events(seq[0], 2))
    assert lines() == [] and node.scheduler.claims_held is True
    probe = node.log.probe

    def probe_as_the_disk() -> None:  # (`_Disk` fails appends only)
        if disk.full:
            raise StorageFull("cannot write the event log: the disk is full")
        probe()

    monkeypatch.setattr(node.log, "probe", probe_as_the_disk)
    await _retried(node)  # the probe fails too: the log still says "writable again"
    assert lines() == []
    now[0] += FLAP_WINDOW_S
    await _retried(node)
    assert lines() == ["the event log still cannot be written: the peer cannot store received "
                       "events (cannot write the event log: the disk is full): they are stored "
                       "as anti-entropy brings them again, once the log takes writes (2 more "
                       "outages in the last 60 s, not logged each: it flaps)"]
    disk.full = False
    await _retried(node)
    assert lines() == ["the event log is writable again: a probe write succeeded",
                       "claims resume: the event log takes writes again"]
