"""A split of many chunks that no event is about (a member may sign one of a million empty
chunks, about 3 MiB) costs what events made of it, not what it declares: reading its chunks
makes no state, the scheduler's ticks and the job list read none of them, the job view lists
a bounded page of them (fuzzing found every peer at ~50 % CPU, idle, and 0.5 GB for good)."""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from aiohttp.test_utils import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st

from peer.config import PeerConfig
from peer.http import views
from peer.http.views import job_view, page_jobs
from peer.ipfs.store import StoreConfig
from peer.jobs import kinds
from peer.jobs.claims import (
    AttemptKey,
    chunk_done,
    released_failure,
    task_failed,
    task_status,
)
from peer.jobs.ports import SchedulerConfig
from peer.jobs.retention import job_facts
from peer.jobs.sim import JobMesh
from peer.log import ChunkKey, Event, EventType, MeshState, fold
from peer.log.fold import ChunkState, ChunkTable
from peer.node import Node
from tasks import registry
from tests.unit.api_client import api_client

CATALOG = registry.load(("tests.fixture_tasks",))
CFG = SchedulerConfig(store=StoreConfig("/nonexistent"), tick_s=0.25, lease_s=10.0)
N = 100_000  # chunks of the split (a member's: every one empty)
NOBODY = "FZ_NOPE"  # a call no peer runs
MEMBER = "fz"


class _Story:
    """Events of member `fz` (and others) about job "j", task "t", in order."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.seqs: dict[str, int] = {}

    def add(self, typ: EventType, origin: str = MEMBER, **payload: Any) -> Event:
        seq = self.seqs[origin] = self.seqs.get(origin, 0) + 1
        ev = Event(origin, seq, (1_700_000_000_000 + len(self.events)) << 16, typ, payload)
        self.events.append(ev)
        return ev


def _big_job(call: str = NOBODY, n: int = N) -> tuple[_Story, list[Any]]:
    """A member's job of one task of `call` and its split of `n` empty chunks; the split id."""
    s = _Story()
    s.add(EventType.MEMBER, name="fz", http="", calls=[call], slots=1, cores=1, mem_mb=1,
          gpu=False)
    s.add(EventType.JOB_SUBMITTED, job="j", workflow={"name": "w", "tasks": [
        {"name": "t", "call": call, "params": {}, "depends": []}]})
    split = s.add(EventType.TASK_SPLIT, job="j", task="t", input=None, chunks=[[]] * n)
    return s, list(split.id)


def _claim(s: _Story, split: list[Any], chunk: int, origin: str = MEMBER) -> Event:
    return s.add(EventType.CLAIM, origin, job="j", task="t", split=split, chunk=chunk,
                 attempt=0)


# -- the fold and the claim rules ---------------------------------------------------------
def test_reading_the_chunks_of_a_split_makes_no_state_for_those_no_event_is_about() -> None:
    s, split = _big_job()
    for c in (0, 5, N - 1):
        _claim(s, split, c)
    state = fold(s.events)
    assert len(state.chunks) == 3
    assert task_status(state, "j", "t", 3) == "running"
    assert task_failed(state, "j", "t", 3) is False
    assert state.chunk("j", "t", 7).winner(0, tuple(split)) is None  # (an open chunk)
    job_facts(state, 3)  # (the janitor's look at every job)
    assert len(state.chunks) == 3  # nothing made for the 99,997 others


@pytest.mark.parametrize("kind", ["error", "crash"])
def test_a_task_fails_by_its_failed_chunks_alone(kind: str) -> None:
    s, split = _big_job()
    fail = {"job": "j", "task": "t", "split": split, "chunk": N - 3, "error": "boom",
            "kind": kind}
    for attempt in range(1 if kind == "error" else 3):  # (crash: retried up to 3 attempts)
        _claim(s, split, N - 3)
        s.add(EventType.CHUNK_FAILED, **fail, attempt=attempt)
        if kind == "crash" and attempt < 2:
            assert task_status(fold(s.events), "j", "t", 3) == "pending"  # (retried)
    state = fold(s.events)
    assert task_failed(state, "j", "t", 3) and task_status(state, "j", "t", 3) == "failed"
    assert len(state.chunks) == 1
    # as folded again (a content replaced), and once the job is deleted
    state.refold()
    assert task_failed(state, "j", "t", 3) and len(state.chunks) == 1
    state.apply(s.add(EventType.JOB_DELETED, job="j", reason="test"))
    assert not task_failed(state, "j", "t", 3) and len(state.chunks) == 0


def test_events_about_a_chunk_past_the_splits_last_do_not_count() -> None:
    """A member's claim, progress and failure of chunk 999,999 of a split of 10 (as peers
    of the previous release, which walked the split's own chunks only)."""
    s, split = _big_job(n=10)
    _claim(s, split, 999_999)
    s.add(EventType.PROGRESS, job="j", task="t", split=split, chunk=999_999, attempt=0,
          progress=1.0)
    s.add(EventType.CHUNK_FAILED, job="j", task="t", split=split, chunk=10, attempt=0,
          kind="error", error="x")
    state = fold(s.events)
    assert task_status(state, "j", "t", 3) == "pending" and not task_failed(state, "j", "t", 3)
    assert state.split_chunks("j", "t") == {} and state.failed_chunks("j", "t") == frozenset()
    [t] = job_view(state, "j", 3)["tasks"]
    assert (t["state"], t["progress"], t["peers"], t["chunks_total"]) == ("pending", 0.0, [], 10)
    assert [c["state"] for c in t["chunks"]] == ["pending"] * 10


def test_the_chunk_index_follows_every_write_and_removal() -> None:
    """The per-split index of the chunk table (MeshState.split_chunks, failed_chunks) is what
    the table holds, whatever the order of the events, after deletions and compaction."""
    r = random.Random(7)
    for _ in range(30):
        s, split = _big_job(n=8)
        other = s.add(EventType.TASK_SPLIT, "p9", job="j", task="t", input=None,
                      chunks=[[]] * 8)  # a losing split: its chunks are apart
        for _ in range(r.randrange(1, 25)):
            sp, c, a = r.choice((split, list(other.id))), r.randrange(8), r.randrange(3)
            base = {"job": "j", "task": "t", "split": sp, "chunk": c, "attempt": a}
            typ = r.choice((EventType.CLAIM, EventType.CHUNK_FAILED, EventType.PROGRESS))
            extra = ({"kind": "crash", "error": "x"} if typ == EventType.CHUNK_FAILED
                     else {"progress": 0.5} if typ == EventType.PROGRESS else {})
            s.add(typ, r.choice(("p1", "p2")), **base, **extra)
        events = s.events[:]
        r.shuffle(events)
        state = fold(events)
        _same_index(state, split)
        if r.random() < 0.5:
            state.refold()
            _same_index(state, split)
        if r.random() < 0.5:
            state.compact(["j"])
        else:
            state.apply(s.add(EventType.JOB_DELETED, job="j", reason="r"))
        assert not state.chunks and not state.chunks.of_split(("j", "t", *split))
        assert not state.chunks.failed(("j", "t", *split))


def test_deleting_or_compacting_a_job_reads_its_own_chunks_only(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A JOB_DELETED, or a compaction, of a job read every chunk of every job in memory for
    the job's own (a peer holding a member's split of 300,000 claimed chunks: each time)."""
    s, split = _big_job(n=N)
    for c in range(5):
        _claim(s, split, c)
    for job in ("d", "c"):
        s.add(EventType.JOB_SUBMITTED, job=job, workflow={"name": "w", "tasks": [
            {"name": "t", "call": NOBODY, "params": {}, "depends": []}]})
        other = s.add(EventType.TASK_SPLIT, job=job, task="t", input=None, chunks=[[]] * 4)
        for c in range(4):
            s.add(EventType.CLAIM, job=job, task="t", split=list(other.id), chunk=c, attempt=0)
    state = fold(s.events)
    assert len(state.chunks) == 13
    read = [0]
    real = dict.__iter__

    def counting(self: ChunkTable) -> Iterator[ChunkKey]:
        for k in real(self):
            read[0] += 1
            yield k

    monkeypatch.setattr(ChunkTable, "__iter__", counting)
    state.apply(s.add(EventType.JOB_DELETED, job="d", reason="test"))
    state.compact(["c"])
    assert read[0] == 0  # (13 each)
    assert set(state.chunks.of_split(("j", "t", *split))) == set(range(5))
    assert len(state.chunks) == 5


def test_the_open_and_failed_chunks_are_read_only_views_of_the_index_not_copies() -> None:
    """`ChunkTable.open` and `failed` copied the split's index into a new frozenset at each
    call (the looks at a task read them at every evaluation: O(open + failed) each); now a
    view of it, which follows the table's writes and cannot write to it."""
    s, split = _big_job()
    state = fold([*s.events, _claim(s, split, 3), _claim(s, split, 5)])
    sk = ("j", "t", *split)
    state.apply(s.add(EventType.CHUNK_FAILED, job="j", task="t", split=split, chunk=5,
                      attempt=0, kind="crash", error="x"))
    opened, failed = state.chunks.open(sk), state.chunks.failed(sk)
    assert set(opened) == {3, 5} and set(failed) == {5}
    state.apply(_claim(s, split, 7))
    state.apply(s.add(EventType.CHUNK_FAILED, job="j", task="t", split=split, chunk=7,
                      attempt=0, kind="crash", error="x"))
    assert set(opened) == {3, 5, 7} and set(failed) == {5, 7}  # (the same views: live)
    for view in (opened, failed, state.failed_chunks("j", "t")):
        assert not hasattr(view, "add") and not hasattr(view, "discard")
    assert sorted(state.chunks.open_or_failed(sk)) == [3, 5, 7]  # (each once)


def _same_index(state: MeshState, split: list[Any]) -> None:
    for sk in {(k.job, k.task, k.split_origin, k.split_seq) for k in state.chunks} | {
            ("j", "t", *split)}:
        held = {k.chunk: c for k, c in state.chunks.items()
                if (k.job, k.task, k.split_origin, k.split_seq) == sk}
        assert dict(state.chunks.of_split(sk)) == held
        assert state.chunks.failed(sk) == {i for i, c in held.items() if c.failures}
        assert state.chunks.open(sk) == {i for i, c in held.items() if c.done is None}
        either = list(state.chunks.open_or_failed(sk))
        assert sorted(either) == sorted(state.chunks.open(sk) | state.chunks.failed(sk))
        fresh = state.chunks.first_untouched(sk)
        assert fresh not in held and all(i in held for i in range(fresh))
    assert dict(state.split_chunks("j", "t")) == dict(state.chunks.of_split(("j", "t", *split)))
    assert state.failed_chunks("j", "t") == state.chunks.failed(("j", "t", *split))
    for i in range(9):
        every = [c for k, c in state.chunks.items() if (k.job, k.task, k.chunk) == ("j", "t", i)]
        assert sorted(map(id, state.chunks.of_every_split("j", "t", i))) == sorted(map(id, every))


def test_a_chunks_states_on_every_split_are_found_among_its_tasks_splits_not_the_jobs() -> None:
    """`of_every_split` (what watching a claim reads: `Leases.claimers`) walked every split
    of the job: a job of 1,000 tasks split once each cost 1,000 steps per claim watched."""
    table = ChunkTable()
    for t in range(1000):
        table[ChunkKey("j", f"t{t}", "p1", t, 0)] = ChunkState()
    table[ChunkKey("j", "t7", "p2", 5, 0)] = ChunkState()  # a rival split of t7
    keys = table._tasks["j", "t7"]
    assert keys == {("j", "t7", "p1", 7), ("j", "t7", "p2", 5)}
    assert len(list(table.of_every_split("j", "t7", 0))) == 2
    del table[ChunkKey("j", "t7", "p2", 5, 0)]
    assert table._tasks["j", "t7"] == {("j", "t7", "p1", 7)}
    table.drop_job("j")
    assert not table._tasks and not table._jobs


# -- the scheduler ----------------------------------------------------------------------------
def _feed(mesh: JobMesh, events: list[Event]) -> None:
    p = mesh["p0"]
    for ev in events:
        assert p.state.apply(ev)
        p.sched.poke(ev)


@pytest.fixture
def chunk_reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many times a chunk's state is read (`MeshState.chunk`; one count)."""
    reads = [0]
    real = MeshState.chunk

    def counting(self: MeshState, job: str, task: str, chunk: int) -> Any:
        reads[0] += 1
        return real(self, job, task, chunk)

    monkeypatch.setattr(MeshState, "chunk", counting)
    return reads


async def test_a_peer_that_cannot_run_a_split_task_reads_none_of_its_chunks_at_its_ticks(
        chunk_reads: list[int]) -> None:
    """A task of a call this peer does not run, split by a member into N chunks, three of
    them claimed by that member, which then goes silent: once the claims' leases lapsed,
    every tick looked at the task again (a peer that cannot run it does nothing about the
    leases) and read all N chunks, making a state for each; now the ticks read none, and
    the peer says why the task waits as before and emits nothing about it."""
    mesh = JobMesh(1, CATALOG, CFG)
    p = mesh["p0"]
    s, split = _big_job()
    _feed(mesh, s.events)
    p.sched.step()
    claims = [_claim(s, split, c) for c in (0, 5, N - 1)]
    _feed(mesh, claims)
    p.sched.step()
    chunk_reads[0] = 0
    for _ in range(8):  # past the leases, then ticks
        mesh.clock.advance(CFG.lease_s)
        p.sched.step()
    assert chunk_reads[0] < 10  # (it read every chunk at every tick: 800,000 reads)
    assert len(p.state.chunks) == 3  # (and kept a state of each: 100,000)
    assert p.sched.waiting()[("j", "t")] == kinds.unavailable(NOBODY)
    assert [e.type for e in p.emitted] == [EventType.MEMBER]


async def test_an_idle_peers_ticks_do_not_read_every_claim_it_watches(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A silent member's 3,000 claims of a task no peer here runs, their leases lapsed: the
    peer watches them (they count towards the member's slots), and each tick read all of
    them twice (which lapsed; which are of tasks that ended); now what changed only."""
    from peer.jobs import claims, scheduler

    mesh = JobMesh(1, CATALOG, CFG)
    p = mesh["p0"]
    s, split = _big_job()
    _feed(mesh, [*s.events, *(_claim(s, split, c) for c in range(3000))])
    p.sched.step()
    mesh.clock.advance(CFG.lease_s * 2)
    p.sched.step()
    assert len(p.sched._claim_seen) == 3000
    reads = [0]
    real_lapsed, real_prune = claims.lease_lapsed, scheduler._prune

    def lapsed(*a: Any) -> bool:
        reads[0] += 1
        return real_lapsed(*a)

    def prune(table: dict[Any, Any], stale: Any) -> None:
        reads[0] += len(table)
        real_prune(table, stale)

    monkeypatch.setattr(claims, "lease_lapsed", lapsed)
    monkeypatch.setattr(scheduler, "_prune", prune)
    for _ in range(8):
        mesh.clock.advance(CFG.tick_s)
        p.sched.step()
    assert reads[0] < 100  # (48,000: both, at each of the 8 ticks)
    assert len(p.sched._claim_seen) == 3000 and p.sched.timed()
    assert [e.type for e in p.emitted] == [EventType.MEMBER]


async def test_a_peer_that_runs_a_split_task_looks_at_what_it_may_claim_only(
        chunk_reads: list[int]) -> None:
    """A task of a call this peer runs, split by a member into N chunks, three of them
    claimed by that member, which goes silent: each look at the task read all N chunks
    (at every event about it, at every tick while leases lapsed); now the chunks events are
    about and those no event is about up to the first it cannot claim (no free slot). It
    claims the same chunks, in the same order."""
    mesh = JobMesh(1, CATALOG, CFG, slots=2)
    p = mesh["p0"]
    s, split = _big_job(call="T_WRITE")
    _feed(mesh, [*s.events, *(_claim(s, split, c) for c in (0, 1, 2))])
    p.sched.step()
    mine = [(e.payload["chunk"], e.payload["attempt"]) for e in p.emitted
            if e.type == EventType.CLAIM]
    assert mine == [(3, 0), (4, 0)]  # the first chunks nobody claimed, one per slot
    assert p.sched.starved == 1
    chunk_reads[0] = 0
    for _ in range(4):  # its leases lapse: failed here, the chunks open again, then ticks
        mesh.clock.advance(CFG.lease_s)
        p.sched.step()
    failed = [e.payload["chunk"] for e in p.emitted if e.type == EventType.CHUNK_FAILED]
    assert failed == [0, 1, 2] and len(p.state.chunks) == 5
    assert chunk_reads[0] < 100  # (300,014: every chunk at each of its 3 looks)


# -- the views --------------------------------------------------------------------------------
@pytest.fixture
def chunk_views(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """How many chunk views peer.http.views makes (one count)."""
    made = [0]
    real = views._chunk

    def counting(*a: Any, **k: Any) -> Any:
        made[0] += 1
        return real(*a, **k)

    monkeypatch.setattr(views, "_chunk", counting)
    yield made


def test_the_job_list_makes_a_view_of_the_chunks_events_are_about_only(
        chunk_views: list[int]) -> None:
    s, split = _big_job()
    for c in (3, 1, 900):
        _claim(s, split, c, origin="p1")
    s.add(EventType.PROGRESS, "p1", job="j", task="t", split=split, chunk=900, attempt=0,
          progress=0.5)
    state = fold(s.events)
    page, _ = page_jobs(state, 20, None)
    [entry] = [job_view(state, j, 3, detail=False) for j in page if isinstance(j, str)]
    assert entry["state"] == "running" and entry["tasks"] == [
        {"name": "t", "state": "running", "progress": round(0.5 / N, 4)}]
    assert chunk_views[0] == 3  # (one per chunk: 100,000)
    assert len(state.chunks) == 3


def test_the_job_view_lists_a_bounded_page_of_chunks_and_says_how_many(
        chunk_views: list[int]) -> None:
    s, split = _big_job()
    for c in (3, N - 2):
        _claim(s, split, c, origin="p1")
    state = fold(s.events)
    [t] = job_view(state, "j", 3)["tasks"]
    assert (t["chunks_total"], t["chunks_from"], len(t["chunks"])) == (N, 0, 1000)
    assert [c["state"] for c in t["chunks"][:5]] == ["pending"] * 3 + ["running", "pending"]
    assert t["peers"] == ["p1"] and t["state"] == "running"
    assert chunk_views[0] == 2
    [t] = job_view(state, "j", 3, chunks_from=N - 3)["tasks"]
    assert (t["chunks_from"], [c["state"] for c in t["chunks"]]) == (
        N - 3, ["pending", "running", "pending"])
    [t] = job_view(state, "j", 3, chunks_from=N + 5)["tasks"]
    assert (t["chunks_from"], t["chunks"]) == (N, [])
    assert len(state.chunks) == 2


# -- over HTTP --------------------------------------------------------------------------------
@pytest.fixture
async def big(tmp_path: Path) -> AsyncIterator[tuple[TestClient[Any, Any], Node]]:
    """The app of a (not started) peer whose state holds the member's job and split, one
    chunk of it claimed and done (its run log in the store)."""
    node = Node(PeerConfig(data_dir=tmp_path / "peer", slots=1, mdns=False))
    log = node.store.add_bytes(b'{"log": ["chunk 2 ran"], "metrics": []}')
    s, split = _big_job()
    _claim(s, split, 2, origin="p1")
    s.add(EventType.CHUNK_DONE, "p1", job="j", task="t", split=split, chunk=2, attempt=0,
          log=log, s=1.0)
    for ev in s.events:
        node.state.apply(ev)
    try:
        async with api_client(node) as c:
            yield c, node
    finally:
        node.log.close()


@pytest.mark.parametrize("bad", ["x", "-1", "1.5", "", str(10**7)])
async def test_a_bad_chunks_from_is_a_400_naming_it(
        big: tuple[TestClient[Any, Any], Node], bad: str) -> None:
    client, _ = big
    r = await client.get("/api/jobs/j", params={"chunks_from": bad})
    body = await r.json()
    assert (r.status, body["field"]) == (400, "chunks_from"), body
    assert "chunks_from must be an integer" in body["message"]


async def test_the_api_pages_the_chunks_and_reads_logs_of_done_chunks_only(
        big: tuple[TestClient[Any, Any], Node]) -> None:
    client, node = big
    r = await client.get("/api/jobs/j", params={"chunks_from": "1"})
    [t] = (await r.json())["tasks"]
    assert (r.status, t["chunks_total"], t["chunks_from"], len(t["chunks"])) == (200, N, 1,
                                                                                  1000)
    assert t["chunks"][1]["state"] == "done" and t["chunks"][0]["state"] == "pending"
    r = await client.get("/api/jobs", params={"limit": "20"})
    assert [j["id"] for j in (await r.json())["jobs"]] == ["j"]
    r = await client.get("/api/jobs/j/tasks/t/log")
    assert (r.status, (await r.json())["lines"]) == (200, ["chunk 2 ran"])
    assert len(node.state.chunks) == 1
    assert node.state.chunks.get(ChunkKey("j", "t", MEMBER, 3, 2)) is not None


_STEP = st.tuples(st.sampled_from(["claim", "done", "failed", "reopen", "progress"]),
                  st.booleans(), st.integers(0, 7), st.integers(0, 2),
                  st.sampled_from(["p1", "p2"]))


@settings(max_examples=150, deadline=None)
@given(st.lists(_STEP, min_size=1, max_size=30), st.randoms(use_true_random=False),
       st.sampled_from(["refold", "compact", "delete"]))
def test_the_index_of_done_chunks_is_what_a_walk_of_the_split_finds(
        steps: list[tuple[str, bool, int, int, str]], r: random.Random, end: str) -> None:
    """`ChunkTable.done` (the chunks done and not reopened, `claims.chunk_done`) is what
    reading every chunk of the split finds, after each event of a random story of claims,
    outcomes and reopenings (in any order, of the winning split and a losing one), after a
    refold and once the job leaves; `done_epoch` changes exactly when it does."""
    s, split = _big_job(n=8)
    other = list(s.add(EventType.TASK_SPLIT, "p9", job="j", task="t", input=None,
                       chunks=[[]] * 8).id)
    for typ, winning, c, a, origin in steps:
        base = {"job": "j", "task": "t", "split": split if winning else other, "chunk": c,
                "attempt": a}
        if typ == "claim":
            s.add(EventType.CLAIM, origin, **base)
        elif typ == "done":
            s.add(EventType.CHUNK_DONE, origin, **base, output=None, log=None, s=1.0)
        elif typ == "progress":
            s.add(EventType.PROGRESS, origin, **base, progress=0.5)
        else:
            s.add(EventType.CHUNK_FAILED, origin, **base, kind="crash", error="x",
                  **({"reopen": True} if typ == "reopen" else {}))
    head = s.events[:3]
    rest = s.events[3:]
    r.shuffle(rest)
    state = fold(head)
    sks = [("j", "t", *split), ("j", "t", *other)]
    seen = {sk: (dict(state.chunks.done(sk)), state.chunks.done_epoch(sk)) for sk in sks}
    marks = {sk: ((0, 0), dict[int, Event]()) for sk in sks}  # (a reader of `done_added`)
    for ev in rest:
        state.apply(ev)
        for sk in sks:
            done, epoch = _walk_done(state, sk), state.chunks.done_epoch(sk)
            assert dict(state.chunks.done(sk)) == done
            mark, added = state.chunks.done_added(sk, marks[sk][0])
            got = dict(state.chunks.done(sk)) if added is None else {**marks[sk][1],
                                                                     **dict(added)}
            assert got == done
            marks[sk] = (mark, got)
            assert (epoch != seen[sk][1]) == (done != seen[sk][0])
            seen[sk] = (done, epoch)
    state.refold()
    for sk in sks:
        assert dict(state.chunks.done(sk)) == _walk_done(state, sk)
    if end == "compact":
        state.compact(["j"])
    elif end == "delete":
        state.apply(s.add(EventType.JOB_DELETED, job="j", reason="r"))
    if end != "refold":
        assert all(not state.chunks.done(sk) and state.chunks.top(sk) == -1 for sk in sks)


def _walk_done(state: MeshState, sk: tuple[str, str, str, int]) -> dict[int, Event]:
    """The done chunks of split `sk` as a walk of every chunk of it finds them."""
    out = {}
    for i in range(8):
        c = state.chunks.get(ChunkKey(*sk, i))
        if c is not None and (d := chunk_done(c)) is not None:
            out[i] = d
    return out


_CHUNK_STEP = st.tuples(st.sampled_from(["claim", "done", "crash", "error", "reopen"]),
                        st.sampled_from([0, 1, 2, 3, 4, 5, 6, 7, 8, 11, 5000]),
                        st.integers(0, 3), st.sampled_from(["p1", "p2"]))


@settings(max_examples=200, deadline=None)
@given(st.lists(_CHUNK_STEP, max_size=40))
def test_the_schedulers_reads_of_a_splits_done_chunks_are_a_walks(
        steps: list[tuple[str, int, int, str]]) -> None:
    """What the looks at a task read of its split from the chunk table's index (how many of
    its first chunks are done, which, whether all are; whether a reduce's groups are all
    claimed or done) is what walking every chunk found (the code before the index), on
    random stories of claims, outcomes, failures and reopenings, with a member's events
    about chunks past the split's last."""
    from peer.jobs import claims

    mesh = JobMesh(1, CATALOG, CFG)
    p = mesh["p0"]
    s, split = _big_job(n=8)
    for typ, c, a, origin in steps:
        base = {"job": "j", "task": "t", "split": split, "chunk": c, "attempt": a}
        if typ == "claim":
            s.add(EventType.CLAIM, origin, **base)
        elif typ == "done":
            s.add(EventType.CHUNK_DONE, origin, **base, output=None, log=None, s=1.0)
        else:
            s.add(EventType.CHUNK_FAILED, origin, **base, kind="crash" if typ != "error"
                  else "error", error="x", **({"reopen": True} if typ == "reopen" else {}))
    _feed(mesh, s.events)
    st_, sched, sk = p.state, p.sched, ("j", "t", *split)
    ev = st_.splits[("j", "t")]
    sched._runs.active[AttemptKey("j", "t", 7, 0)] = cast(Any, None)  # (a group runs here)
    for n in range(10):
        walk = [d for i in range(n) if (d := chunk_done(st_.chunk("j", "t", i))) is not None]
        assert sched._n_done(sk, n) == len(walk)
        assert sched._all_done("j", "t", ev, n) == (len(walk) == n)
        assert sched._may_end_last("j", "t", ev, n) == all(
            claims.standing(st_.chunk("j", "t", i), ev.id, CFG.max_attempts)[0]
            is not claims.Standing.OPEN for i in range(n - 1))


async def test_a_look_at_a_big_splits_reduce_or_partials_reads_what_changed_only(
        chunk_reads: list[int]) -> None:
    """A member's split of N chunks, the first 2,000 done: a look of a peer running a group
    of it (may it end the last one?), of its splitter fetching the done groups' outputs
    ahead of the reduce, or publishing a PARTIAL, read every chunk (N per look, per event
    about the task); now a look that finds nothing new reads none, and one after a chunk
    was done reads the done ones only."""
    mesh = JobMesh(1, CATALOG, CFG)
    p = mesh["p0"]
    s, split = _big_job(call="T_UPPER")
    inp = p.store.make_dir({})
    ev = s.events[-1] = s.add(EventType.TASK_SPLIT, job="j", task="t", input=inp,
                              chunks=[[]] * N)
    del s.events[-2]
    split = list(ev.id)
    for c in range(2000):
        s.add(EventType.CHUNK_DONE, job="j", task="t", split=split, chunk=c, attempt=0,
              output=None, log=None, s=1.0)
    _feed(mesh, s.events)
    sched, chunks = p.sched, [[]] * N
    spec, tdef = sched.workflow("j").task("t"), CATALOG["T_UPPER"]
    sched._runs.active[AttemptKey("j", "t", N - 5, 0)] = cast(Any, None)  # (a group here)

    def look() -> None:
        assert sched._may_end_last("j", "t", ev, N) is False  # (chunk 2,000: open)
        sched._prefetch_reduce("j", "t", ev, chunks)
        sched._partial("j", "t", tdef, spec, ev, chunks)

    look()
    assert sched._results_seen[("j", "t")] == 2000
    chunk_reads[0] = 0
    look()
    assert chunk_reads[0] == 0  # (3 N: every chunk, by each)
    _feed(mesh, [s.add(EventType.CHUNK_DONE, job="j", task="t", split=split, chunk=N - 9,
                       attempt=0, output=None, log=None, s=1.0)])
    chunk_reads[0] = 0
    look()
    assert sched._results_seen[("j", "t")] == 2001
    assert chunk_reads[0] == 0


@pytest.mark.parametrize("gone", ["deleted", "compacted"])
async def test_a_look_at_a_splits_reduce_or_partials_leaves_nothing_once_its_job_is_gone(
        gone: str) -> None:
    """What the splitter's look (its results fetched ahead of the reduce or a PARTIAL)
    remembers of a task goes with its job, deleted or compacted while the task was neither
    done nor cancelled (a failed task's job is compacted): before, it stayed for good, one
    entry per such task, for the peer's life."""
    mesh = JobMesh(1, CATALOG, CFG)
    p = mesh["p0"]
    s, _ = _big_job(call="T_UPPER", n=10)
    ev = s.events[-1] = s.add(EventType.TASK_SPLIT, job="j", task="t",
                              input=p.store.make_dir({}), chunks=[[]] * 10)
    del s.events[-2]
    s.add(EventType.CHUNK_DONE, job="j", task="t", split=list(ev.id), chunk=0, attempt=0,
          output=None, log=None, s=1.0)
    _feed(mesh, s.events)
    sched = p.sched
    sched._prefetch_reduce("j", "t", ev, [[]] * 10)
    assert sched._results_seen == {("j", "t"): 1}
    if gone == "deleted":
        _feed(mesh, [s.add(EventType.JOB_DELETED, job="j", reason="test")])
    else:
        p.state.compact(["j"])
    assert ("j", "t") not in p.state.task_done and "j" not in p.state.cancelled
    mesh.clock.advance(CFG.tick_s)
    sched.step()  # (a tick sweeps)
    assert sched._results_seen == {}


def _prefetches(sched: Any) -> list[list[str]]:
    """The CID lists the scheduler's reduce prefetch sends to fetch (none is fetched)."""
    sent: list[list[str]] = []
    sched._fetch_partial = lambda tk, cids: cids
    sched._background = sent.append
    return sent


async def test_a_reduces_prefetch_after_a_chunk_done_reads_that_chunks_results_only() -> None:
    """The splitter of a task with a reduce, 2,000 of its chunks done here (their outputs
    held): after one more is done elsewhere, its prefetch looked at the outputs of all 2,001
    (is it complete here?) to fetch the one missing; now at the new chunk's alone (and the
    input's). At 150,000 done chunks that was ~50 ms per chunk done (docs/benchmarks.md)."""
    mesh = JobMesh(1, CATALOG, CFG)
    p = mesh["p0"]
    s, _ = _big_job(call="T_UPPER", n=N)
    ev = s.events[-1] = s.add(EventType.TASK_SPLIT, job="j", task="t",
                              input=p.store.make_dir({}), chunks=[[]] * N)
    del s.events[-2]
    held = p.store.make_dir({"a": p.store.add_bytes(b"a")})
    for c in range(2000):
        s.add(EventType.CHUNK_DONE, job="j", task="t", split=list(ev.id), chunk=c, attempt=0,
              output=held, log=None, s=1.0)
    _feed(mesh, s.events)
    sched, chunks = p.sched, [[]] * N
    sent = _prefetches(sched)
    sched._prefetch_reduce("j", "t", ev, chunks)
    assert sent == []  # (all held)
    looked: list[str] = []
    real = sched.data.is_complete
    sched.data.is_complete = lambda cid: looked.append(cid) or real(cid)
    _feed(mesh, [s.add(EventType.CHUNK_DONE, "p1", job="j", task="t", split=list(ev.id),
                       chunk=5000, attempt=0, output="bafyelsewhere", log=None, s=1.0)])
    sched._prefetch_reduce("j", "t", ev, chunks)
    assert sent == [["bafyelsewhere"]]
    assert sorted(looked) == sorted([ev.payload["input"], "bafyelsewhere"])  # (2,002)


_PREFETCH_STEP = st.tuples(st.sampled_from(["claim", "done", "crash", "reopen", "got", "look"]),
                           st.sampled_from([0, 1, 2, 3, 6, 7, 11]), st.integers(0, 2),
                           st.sampled_from(["p0", "p1"]), st.integers(0, 5))


@settings(max_examples=200, deadline=None)
@given(st.lists(_PREFETCH_STEP, max_size=40), st.booleans())
def test_a_reduces_prefetch_fetches_what_a_walk_of_the_done_chunks_finds_missing(
        steps: list[tuple[str, int, int, str, int]], with_input: bool) -> None:
    """The prefetch of a reduce's input, looked at after each event of a random story (done
    chunks with outputs and item results among 6 CIDs, reopenings, claims, failed fetches,
    CIDs that came): what it sends to fetch is what the code before it found from a walk of
    every done chunk (the input and their results not held here), its chunks past the
    groups' last (the reduce step's, a member's past the split's) left out."""
    mesh = JobMesh(1, CATALOG, CFG)
    p = mesh["p0"]
    s, _ = _big_job(call="T_UPPER", n=8)
    cids = [f"bafy{i}" for i in range(6)]
    ev = s.events[-1] = s.add(EventType.TASK_SPLIT, job="j", task="t", input="bafyinput",
                              chunks=[[]] * 8)
    del s.events[-2]
    _feed(mesh, s.events)
    sched, sk, tk = p.sched, ("j", "t", *ev.id), ("j", "t")
    sent = _prefetches(sched)
    for typ, c, a, origin, x in steps:
        base = {"job": "j", "task": "t", "split": list(ev.id), "chunk": c, "attempt": a}
        if typ == "got":
            p.data.mark(cids[x])
        elif typ == "look":
            sched._partial_fetching.discard(tk)  # (the fetch ended, failed or not)
        else:
            if typ == "claim":
                new = s.add(EventType.CLAIM, origin, **base)
            elif typ == "done":
                new = s.add(EventType.CHUNK_DONE, origin, **base, output=cids[x], log=None,
                            s=1.0, cache={"i": {"c": cids[(x + 1) % 6]}, "k": None})
            else:
                new = s.add(EventType.CHUNK_FAILED, origin, **base, kind="crash", error="x",
                            **({"reopen": True} if typ == "reopen" else {}))
            p.state.apply(new)
        before, seen = len(sent), sched._results_seen.get(tk)
        fetching = tk in sched._partial_fetching
        sched._prefetch_reduce("j", "t", ev, [[]] * 8, with_input=with_input)
        walk = _walk_done(p.state, sk)
        if seen == len([i for i in walk if i < 7]) or fetching:
            assert len(sent) == before  # (no chunk done since, or a fetch under way)
            continue
        want = {"bafyinput"} if with_input else set()
        for i, d in walk.items():
            if i < 7:
                want |= {d.payload["output"], d.payload["cache"]["i"]["c"]}
        want = {c for c in want if not p.data.is_complete(c)}
        assert set(sent[before] if len(sent) > before else ()) == want


async def test_a_heartbeat_reads_the_claims_of_its_peer_only(chunk_reads: list[int]) -> None:
    """A silent member's 3,000 watched claims, and 3 of a live peer: each heartbeat of the
    live peer (several a second) read all 3,003 (whose winner is it?), and so did its
    leaving; now its own 3 only, and it renews and ends the same claims."""
    mesh = JobMesh(1, CATALOG, CFG)
    p = mesh["p0"]
    s, split = _big_job()
    _feed(mesh, [*s.events, *(_claim(s, split, c) for c in range(3000)),
                 *(_claim(s, split, c, origin="p1") for c in range(5000, 5003))])
    p.sched.step()
    assert len(p.sched._claim_seen) == 3003
    mesh.clock.advance(1.0)
    chunk_reads[0] = 0
    p.sched.heard("p1", None)
    assert chunk_reads[0] == 3  # (3,003)
    renewed = {ak.chunk for ak, seen in p.sched._claim_seen.items() if seen == mesh.clock()}
    assert renewed == {5000, 5001, 5002}
    chunk_reads[0] = 0
    p.sched.gone("p1")
    assert chunk_reads[0] == 3
    assert {ak.chunk for ak, seen in p.sched._claim_seen.items() if seen == -math.inf} == {
        5000, 5001, 5002}


async def test_a_heartbeat_renews_a_claim_on_a_rival_split_that_wins_later() -> None:
    """p2's claim on a rival split, seen before its attempt was watched again (the job was
    cancelled: its watched claims were let go), and p1's on the split: once the rival split
    comes (it is earlier: it wins), p2 holds the attempt, and p2's heartbeat renews it, as
    reading every watched claim does."""
    mesh = JobMesh(1, CATALOG, CFG)
    p = mesh["p0"]
    s, split = _big_job(call="T_WRITE", n=4)
    other = s.add(EventType.TASK_SPLIT, "p9", job="j", task="t", input=None, chunks=[[]] * 4)
    other = Event(other.origin, other.seq, 1 << 16, other.type, other.payload)  # (earlier)
    at = {"job": "j", "task": "t", "chunk": 1, "attempt": 0}
    _feed(mesh, [*s.events[:3], s.add(EventType.CLAIM, "p2", **at, split=list(other.id)),
                 s.add(EventType.JOB_CANCELLED, job="j", reason="x")])
    p.sched.step()
    assert not p.sched._claim_seen  # (let go)
    _feed(mesh, [s.add(EventType.CLAIM, "p1", **at, split=split), other])
    mesh.clock.advance(1.0)
    p.sched.heard("p2")
    assert p.sched._claim_seen == {AttemptKey("j", "t", 1, 0): mesh.clock()}


_PEERS = ["p1", "p2", "p3"]
_CLAIM_STEP = st.tuples(
    st.sampled_from(["claim", "claim", "claim", "claim", "crash", "release", "done", "step",
                     "step", "later", "heard", "heard", "gone"]),
    st.integers(0, 1), st.integers(0, 1), st.sampled_from(_PEERS),
    st.sampled_from([False, False, True]))  # (on the rival split)


@settings(max_examples=500, deadline=None)
@given(st.lists(_CLAIM_STEP, min_size=10, max_size=50), st.randoms(use_true_random=False),
       st.booleans(), st.booleans(), st.sampled_from(["", "", "cancel", "delete"]))
def test_heard_and_gone_act_on_the_claims_a_read_of_every_watched_one_finds(
        steps: list[tuple[str, int, int, str, bool]], r: random.Random, rival: bool,
        split_first: bool, end: str) -> None:
    """Each heartbeat of a peer renews, and its leaving ends, the watched claims whose
    winner is its own, as reading every watched claim finds (the code before the index of
    claims by peer, `Leases.of`), at any point of random stories: claims of several peers
    arriving in any order (a later one may win, this peer's own too), on the split or on a
    rival split that may win (it is earlier) and may come after them, attempts failed,
    released, done, leases lapsing (the clock moves on), peers gone and heard again, the
    job cancelled or deleted; and at the end, for every peer."""
    if end:
        steps = [*steps, (end, 0, 0, "p1", False)]
    asyncio.run(_heard_story(steps, r, rival, split_first))


async def _heard_story(steps: list[tuple[str, int, int, str, bool]], r: random.Random,
                       rival: bool, split_first: bool) -> None:
    mesh = JobMesh(1, CATALOG, CFG, slots=2)
    try:
        await _heard_checked(mesh, steps, r, rival, split_first)
    finally:
        await mesh.close()


async def _heard_checked(mesh: JobMesh, steps: list[tuple[str, int, int, str, bool]],
                         r: random.Random, rival: bool, split_first: bool) -> None:
    p = mesh["p0"]
    s, split = _big_job(call="T_WRITE", n=4)
    other = s.add(EventType.TASK_SPLIT, "p9", job="j", task="t", input=None, chunks=[[]] * 4)
    other = Event(other.origin, other.seq, 1 << 16, other.type, other.payload)  # (earlier)
    story: list[Event | tuple[str, str]] = [*s.events[2:3]] if not split_first else []
    story += [other] if rival else []
    for typ, c, a, origin, on_other in steps:
        base = {"job": "j", "task": "t", "split": list(other.id) if on_other else split,
                "chunk": c, "attempt": a}
        if typ in ("step", "later", "heard", "gone"):
            story.append((typ, origin))
        else:
            story.append(_story_event(s, typ, origin, base))
    _feed(mesh, s.events[:3 if split_first else 2])
    r.shuffle(story)
    for item in story:
        if isinstance(item, Event):
            if p.state.apply(item):
                p.sched.poke(item)
                _check_index(mesh)
        elif item[0] == "step":
            p.sched.step()
        elif item[0] == "later":  # (two lapse a lease of 10 s)
            mesh.clock.advance(6.0)
        elif item[0] == "heard":
            _check_heard(mesh, item[1], r)
        else:
            _check_gone(mesh, item[1])
    for peer in _PEERS:
        _check_heard(mesh, peer, r)
    for peer in _PEERS:
        _check_gone(mesh, peer)


def _story_event(s: _Story, typ: str, origin: str, base: dict[str, Any]) -> Event:
    """An event of `origin` about attempt `base` (a claim, an outcome), or about the job."""
    if typ == "claim":
        return s.add(EventType.CLAIM, origin, **base)
    if typ == "done":
        return s.add(EventType.CHUNK_DONE, origin, **base, output=None, log=None, s=1.0)
    if typ == "crash":
        return s.add(EventType.CHUNK_FAILED, origin, **base, kind="crash", error="x")
    if typ == "release":
        ak = AttemptKey("j", "t", base["chunk"], base["attempt"])
        return s.add(EventType.CHUNK_FAILED, origin, **released_failure(ak, base["split"]))
    return s.add(EventType.JOB_CANCELLED if typ == "cancel" else EventType.JOB_DELETED,
                 job="j", reason="x")


def _held_by(mesh: JobMesh, peer: str) -> set[AttemptKey]:
    """The watched claims whose winner is `peer`'s, read one by one (as before the index)."""
    st_, sched = mesh["p0"].state, mesh["p0"].sched
    held = set()
    for ak in sched._claim_seen:
        w = st_.chunk(ak.job, ak.task, ak.chunk).winner(ak.attempt, st_.split_id("j", "t"))
        if w is not None and w.origin == peer:
            held.add(ak)
    return held


def _check_index(mesh: JobMesh) -> None:
    """What a heartbeat of each peer would renew (the watched claims `Leases.of` lists for
    it whose winner is its own) is what reading every watched claim finds."""
    st_, sched = mesh["p0"].state, mesh["p0"].sched
    for peer in _PEERS:
        found = set()
        for ak in sched._claim_seen.of(peer):
            c = st_.chunk(ak.job, ak.task, ak.chunk)
            w = c.winner(ak.attempt, st_.split_id("j", "t"))
            if w is not None and w.origin == peer:
                found.add(ak)
        assert found == _held_by(mesh, peer), peer


def _check_heard(mesh: JobMesh, peer: str, r: random.Random) -> None:
    """`peer`'s heartbeat (reporting some of the watched claims, or none: every claim)
    renews the watched claims it holds that it reports, and changes nothing else."""
    sched = mesh["p0"].sched
    running = ([list(ak) for ak in sched._claim_seen if r.random() < 0.5]
               if r.random() < 0.5 else None)
    want = {ak for ak in _held_by(mesh, peer) if running is None or list(ak) in running}
    mesh.clock.advance(0.25)
    before = dict(sched._claim_seen)
    sched.heard(peer, running)
    assert dict(sched._claim_seen) == {
        ak: mesh.clock() if ak in want else seen for ak, seen in before.items()}


def _check_gone(mesh: JobMesh, peer: str) -> None:
    """`peer`'s leaving ends the watched claims it holds (and changes nothing else)."""
    sched = mesh["p0"].sched
    want = _held_by(mesh, peer)
    before = dict(sched._claim_seen)
    sched.gone(peer)
    assert dict(sched._claim_seen) == {
        ak: -math.inf if ak in want else seen for ak, seen in before.items()}


def _walk_short(state: MeshState, sched: Any, holders: set[str]) -> bool:
    """`_short_at_holders` as it was: a walk of every chunk of the split with a state."""
    live = sched._peers()
    last: Event | None = None
    for c in state.split_chunks("j", "t").values():
        d = chunk_done(c)
        if (d is not None and d.origin in holders and d.origin in live
                and (last is None or d.order > last.order)):
            last = d
    s = last.payload.get("s") if last is not None else None
    return s is not None and s <= sched.cfg.queue_ahead_max_s


_DONE_STEP = st.tuples(st.sampled_from(["claim", "done", "done", "crash", "reopen", "split",
                                        "look", "refold"]),
                       st.sampled_from([0, 1, 2, 3, 4, 5, 6, 7, 9, 5000]), st.integers(0, 2),
                       st.sampled_from(["p1", "p2", "p3"]), st.sampled_from([0.01, 1.0]))


@settings(max_examples=200, deadline=None)
@given(st.lists(_DONE_STEP, max_size=40), st.randoms(use_true_random=False))
def test_short_at_holders_finds_what_a_walk_of_the_split_finds(
        steps: list[tuple[str, int, int, str, float]], r: random.Random) -> None:
    """Whether a live holder's last chunk ran short (`_short_at_holders`, read per peer from
    what was done since its last look) is what walking every chunk found, after each event
    of a random story: chunks done by several peers (in and out of order: each CHUNK_DONE's
    hlc is drawn), claimed, failed, reopened, events past the split's last, a split of
    another peer that wins the task, a refold; for random holders and live peers."""
    mesh = JobMesh(1, CATALOG, CFG)
    p = mesh["p0"]
    s, split = _big_job(n=8)
    _feed(mesh, s.events)
    sched = p.sched
    live = {"p1": {}, "p2": {}}
    sched._peers = lambda: live  # type: ignore[method-assign]
    for typ, c, a, origin, secs in steps:
        if typ == "look":
            live.pop(origin, None) if origin in live else live.setdefault(origin, {})
        elif typ == "refold":
            p.state.refold()
        elif typ == "split":  # (an earlier split of another peer: it wins)
            ev = s.add(EventType.TASK_SPLIT, "p0a", job="j", task="t", input=None,
                       chunks=[[]] * 6)
            ev = Event(ev.origin, ev.seq, 1 << 16, ev.type, ev.payload)
            p.state.apply(ev)
            split = list(ev.id)
        else:
            base = {"job": "j", "task": "t", "split": split, "chunk": c, "attempt": a}
            if typ == "claim":
                ev = s.add(EventType.CLAIM, origin, **base)
            elif typ == "done":
                ev = s.add(EventType.CHUNK_DONE, origin, **base, output=None, log=None, s=secs)
                ev = Event(ev.origin, ev.seq, r.randrange(1, 1 << 40) << 16, ev.type,
                           ev.payload)
            else:
                ev = s.add(EventType.CHUNK_FAILED, origin, **base, kind="crash", error="x",
                           **({"reopen": True} if typ == "reopen" else {}))
            p.state.apply(ev)
        for holders in ({"p1"}, {"p2", "p3"}, {"p1", "p2", "p3"}):
            assert sched._short_at_holders("j", "t", p.state.splits[("j", "t")], holders,
                                         per_item=False) \
                == _walk_short(p.state, sched, holders)


async def test_short_at_holders_reads_the_chunks_done_since_its_last_look_only(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A member's split of N chunks, the first 20,000 done by a live holder of its input:
    whether that holder ran them short (a peer without the input waits longer before it
    claims one) read every chunk's state at each round (N per round, per task); now what
    was done since the last round (the done ones once, at the first)."""
    from peer.jobs import claims

    mesh = JobMesh(1, CATALOG, CFG)
    p = mesh["p0"]
    s, split = _big_job(call="T_UPPER")
    for c in range(20_000):
        s.add(EventType.CHUNK_DONE, "p1", job="j", task="t", split=split, chunk=c, attempt=0,
              output=None, log=None, s=1.0)
    _feed(mesh, s.events)
    sched, ev = p.sched, p.state.splits[("j", "t")]
    sched._peers = lambda: {"p1": {}}  # type: ignore[method-assign]
    assert sched._short_at_holders("j", "t", ev, {"p1"}, per_item=False) is False
    reads = [0]
    real_done, real_index = claims.chunk_done, ChunkTable.done

    def chunk_done_(c: Any) -> Any:
        reads[0] += 1
        return real_done(c)

    def done_index(self: ChunkTable, sk: Any) -> Any:
        reads[0] += len(real_index(self, sk))
        return real_index(self, sk)

    monkeypatch.setattr(claims, "chunk_done", chunk_done_)
    monkeypatch.setattr(ChunkTable, "done", done_index)
    _feed(mesh, [s.add(EventType.CHUNK_DONE, "p1", job="j", task="t", split=split, chunk=c,
                       attempt=0, output=None, log=None, s=0.01) for c in (20_000, 20_001)])
    reads[0] = 0
    assert sched._short_at_holders("j", "t", ev, {"p1"}, per_item=False) is True
    assert sched._short_at_holders("j", "t", ev, {"p1"}, per_item=False) is True
    assert sched._short_at_holders("j", "t", ev, {"p2"}, per_item=False) is False
    assert reads[0] == 0  # (3 x 20,002: every done chunk's state, at each round)


_ITEM_STEP = st.tuples(st.sampled_from(["done", "done", "reopen", "put", "look"]),
                       st.integers(0, 2), st.integers(0, 6), st.sampled_from(["x", "y", None]))


def _same_assembly(a: Any, b: Any) -> None:
    assert (a.entries, a.made_by, a.warning, a.whole, a.results, a.of, a.lost) == (
        b.entries, b.made_by, b.warning, b.whole, b.results, b.of, b.lost)


@settings(max_examples=150, deadline=None)
@given(st.lists(_ITEM_STEP, max_size=30), st.booleans())
def test_a_finished_splits_outputs_and_item_assembly_are_what_making_them_again_finds(
        steps: list[tuple[str, int, int, str | None]], keeps: bool) -> None:
    """`Planner.chunk_outputs` and `items_assembly` (read at each look at a finished
    per-item task while its results come, and by each PARTIAL) are remembered as of the
    split's done chunks and the cache entries read: what they give is what making them
    again gives, after each event of random stories of chunks done (with results, or
    without one for an item), reopened, and CACHE_PUTs changing the cache entries an
    older peer's split (which keeps no results) or a pending item reads."""
    from peer.jobs.planner import cache_key

    mesh = JobMesh(1, CATALOG, CFG)
    p = mesh["p0"]
    s = _Story()
    s.add(EventType.JOB_SUBMITTED, job="j", workflow={"name": "w", "tasks": [
        {"name": "t", "call": "T_UPPER", "params": {}, "depends": []}]})
    files = {f"a{i}.txt": p.store.add_bytes(f"item {i}".encode()) for i in range(7)}
    inp = p.store.make_dir({**files, "x.bin": p.store.add_bytes(b"other")})
    chunks = [[[f"a{i}.txt", files[f"a{i}.txt"]] for i in (2 * c, 2 * c + 1)] for c in range(3)]
    tdef, planner = CATALOG["T_UPPER"], p.sched.planner
    _feed(mesh, s.events)
    spec = p.sched.workflow("j").task("t")
    keys = [cache_key(tdef, spec.params, files[f"a{i}.txt"]) for i in range(7)]
    split = s.add(EventType.TASK_SPLIT, job="j", task="t", input=inp, chunks=chunks,
                  **({"kept": {keys[6]: {"n": "a6.txt", "c": "kept6"}}} if keeps else {}))
    _feed(mesh, [split])
    for typ, c, item, result in steps:
        base = {"job": "j", "task": "t", "split": list(split.id), "chunk": c}
        if typ == "done":
            cache = {keys[i]: {"n": f"a{i}.txt", "c": f"{result}{i}"} if result else None
                     for i in (2 * c, 2 * c + 1)}
            _feed(mesh, [s.add(EventType.CHUNK_DONE, "p1", **base,
                               attempt=p.state.chunk("j", "t", c).attempt, output=None,
                               log=None, s=1.0, cache=cache)])
        elif typ == "reopen":
            _feed(mesh, [s.add(EventType.CHUNK_FAILED, "p1", **base,
                               attempt=p.state.chunk("j", "t", c).attempt, kind="crash",
                               error="x", reopen=True)])
        elif typ == "put":
            _feed(mesh, [s.add(EventType.CACHE_PUT, "p2", cache={
                keys[item]: {"n": f"a{item}.txt", "c": f"put{result}{item}"}})])
        done = {i for i in range(3) if chunk_done(p.state.chunk("j", "t", i)) is not None}
        for partial in ((True, False) if len(done) == 3 else (True,)):
            _same_assembly(planner.items_assembly("j", "t", tdef, spec, split, chunks, partial),
                           planner._items_assembly("j", "t", tdef, spec, split, chunks,
                                                   partial, {}))
        if len(done) == 3:
            assert dict(planner.chunk_outputs("j", "t", 3)) == _walk_outputs(p.state, 3)


def _walk_outputs(state: MeshState, n: int) -> dict[str, int]:
    """`chunk_outputs` made again: every chunk's state read."""
    out: dict[str, int] = {}
    for i in range(n):
        d = chunk_done(state.chunk("j", "t", i))
        assert d is not None
        if d.payload.get("output"):
            out[d.payload["output"]] = i
        out.update((v["c"], i) for v in (d.payload.get("cache") or {}).values() if v)
    return out


async def test_a_look_at_a_finished_per_item_split_reads_nothing_when_nothing_changed(
        chunk_reads: list[int], monkeypatch: pytest.MonkeyPatch) -> None:
    """A per-item task's split of 20,000 chunks, all done: each look at its assembly (at
    each event about the task while its results are fetched) read every chunk's state
    for their outputs and listed the input again; now a look that finds the split's done
    chunks as they were reads neither, and one after a chunk was reopened and done again
    reads them once."""
    from peer.jobs.planner import Planner

    n = 20_000
    mesh = JobMesh(1, CATALOG, CFG)
    p = mesh["p0"]
    s, _ = _big_job(call="T_UPPER")
    inp = p.store.make_dir({})
    ev = s.events[-1] = s.add(EventType.TASK_SPLIT, job="j", task="t", input=inp,
                              chunks=[[]] * n)
    del s.events[-2]
    base = {"job": "j", "task": "t", "split": list(ev.id)}
    for c in range(n):
        s.add(EventType.CHUNK_DONE, "p1", **base, chunk=c, attempt=0, output=None, log=None,
              s=1.0)
    _feed(mesh, s.events)
    sched, chunks = p.sched, [[]] * n
    spec, tdef = sched.workflow("j").task("t"), CATALOG["T_UPPER"]
    listings = [0]
    real_files = Planner.files

    def files(self: Planner, cid: str, prefix: str, bound: int | None = None) -> Any:
        listings[0] += 1
        return real_files(self, cid, prefix, bound)

    monkeypatch.setattr(Planner, "files", files)

    def look() -> Any:
        return sched._gathered("j", "t", tdef, spec, ev, chunks, "p1", False)

    first = look()
    chunk_reads[0] = listings[0] = 0
    second = look()
    assert (chunk_reads[0], listings[0]) == (0, 0)  # (20,000 and 1, per look)
    assert second is first
    _feed(mesh, [s.add(EventType.CHUNK_FAILED, "p2", **base, chunk=7, attempt=0, kind="crash",
                       error="x", reopen=True),
                 s.add(EventType.CHUNK_DONE, "p2", **base, chunk=7, attempt=1, output=None,
                       log=None, s=1.0)])
    chunk_reads[0] = listings[0] = 0
    again = look()
    assert again is not first and again.of == first.of == 0
    assert (chunk_reads[0], listings[0]) == (n, 1)


def _count_listings(monkeypatch: pytest.MonkeyPatch, store: Any) -> list[str]:
    """The CIDs whose listing `store` is asked for (`stat` or `file_cids`), each time."""
    asked: list[str] = []
    for name in ("stat", "file_cids"):
        real = getattr(store, name)

        def counting(cid: str, *a: Any, _real: Any = real, **kw: Any) -> Any:
            asked.append(cid)
            return _real(cid, *a, **kw)

        monkeypatch.setattr(store, name, counting)
    return asked


def test_a_per_item_tasks_split_and_assemblies_list_its_input_once(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The splitter of a per-item task assembles its output at each PARTIAL and at the end
    (FILTER_LONGER: 9 a stage), and each assembly listed the input again (2-4 ms of its
    loop for 400 files) and made every item's cache key again (4 us each): now the split
    and every assembly after it list it once and make each key once, and each assembly is
    what a planner that never listed it before makes."""
    from peer.jobs import planner as planner_mod
    from peer.jobs.planner import Planner, cache_key

    mesh = JobMesh(1, CATALOG, CFG)
    p = mesh["p0"]
    s = _Story()
    s.add(EventType.JOB_SUBMITTED, job="j", workflow={"name": "w", "tasks": [
        {"name": "t", "call": "T_UPPER", "params": {}, "depends": []}]})
    _feed(mesh, s.events)
    files = {f"d/a{i}.txt": p.store.add_bytes(f"item {i}".encode()) for i in range(6)}
    inp = p.store.make_dir({"d": p.store.make_dir({f[2:]: c for f, c in files.items()}),
                            "notes.md": p.store.add_bytes(b"not an item")})
    tdef, planner = CATALOG["T_UPPER"], p.sched.planner
    spec = p.sched.workflow("j").task("t")
    asked = _count_listings(monkeypatch, p.store)
    keyed: list[str | None] = []

    def counting_key(tdef_: Any, params: Any, cid: str | None) -> str:
        keyed.append(cid)
        return cache_key(tdef_, params, cid)

    monkeypatch.setattr(planner_mod, "cache_key", counting_key)
    payload = planner.split("j", "t", tdef, spec, inp, 3)
    chunks = payload["chunks"]
    assert len(chunks) == 2  # (of min_chunk_items)
    split = s.add(EventType.TASK_SPLIT, **payload)
    _feed(mesh, [split])

    def look(partial: bool) -> Any:
        a = planner.assembly("j", "t", tdef, spec, split, chunks, partial=partial)
        mine = len(asked), len(keyed)
        fresh = Planner(p.state, p.store, p.data, 1, 64)  # (its reads are not counted)
        _same_assembly(a, fresh._items_assembly("j", "t", tdef, spec, split, chunks, partial,
                                                {}))
        del asked[mine[0]:], keyed[mine[1]:]
        return a

    for c, items in enumerate(chunks):
        cache = {cache_key(tdef, spec.params, cid): {"n": path[2:], "c": f"r{cid}"}
                 for path, cid in items}
        _feed(mesh, [s.add(EventType.CHUNK_DONE, "p1", job="j", task="t", split=list(split.id),
                           chunk=c, attempt=0, output=None, log=None, s=1.0, cache=cache)])
        assert len(look(True).results) == (4, 6)[c]
    a = look(False)
    assert len(a.results) == 6 and a.of == 6 and "notes.md" not in a.entries
    assert asked.count(inp) == 2  # (one stat, one file_cids: 2 at each look before)
    assert sorted(keyed) == sorted(files.values())  # (each item's at the split and each look)


def test_the_planner_remembers_the_listings_of_a_few_inputs_of_a_bounded_size(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """`Planner.files` keeps the listings of the last MAX_LISTING_MEMOS inputs, of at most
    MAX_LISTED_FILES files in all (the least recently asked dropped first; a listing larger
    than that is read each time); a file input is itself, named as asked."""
    from peer.jobs import planner as planner_mod

    mesh = JobMesh(1, CATALOG, CFG)
    st = mesh["p0"].store
    plan = planner_mod.Planner(MeshState(), st, mesh["p0"].data, 1, 64)
    monkeypatch.setattr(planner_mod, "MAX_LISTING_MEMOS", 2)
    monkeypatch.setattr(planner_mod, "MAX_LISTED_FILES", 5)
    dirs = [st.make_dir({f"{k}.txt": st.add_bytes(f"{d}/{k}".encode()) for k in range(n)})
            for d, n in enumerate((2, 2, 2, 6))]
    one = st.add_bytes(b"a file")
    asked = _count_listings(monkeypatch, st)
    want = [list(st.file_cids(d)) for d in dirs]
    asked.clear()
    assert list(plan.files(dirs[0], "x")) == want[0] and len(asked) == 2
    assert list(plan.files(dirs[1], "x")) == want[1] and len(asked) == 4
    assert list(plan.files(dirs[0], "x")) == want[0] and len(asked) == 4  # kept
    assert list(plan.files(dirs[2], "x")) == want[2] and len(asked) == 6  # drops dirs[1]
    assert list(plan.files(dirs[0], "x")) == want[0] and len(asked) == 6
    assert list(plan.files(dirs[1], "x")) == want[1] and len(asked) == 8
    for _ in range(2):  # 6 files: larger than the bound, never kept
        assert list(plan.files(dirs[3], "x")) == want[3]
    assert len(asked) == 12
    assert plan.files(one, "x") == [("x", one)] and len(asked) == 13
    assert plan.files(one, "y") == [("y", one)] and len(asked) == 13
