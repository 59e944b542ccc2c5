"""Failed runs' records, what a compacted job's record says of them and what gc keeps
(session 52, helper c: review r2 of session 51, M1 and M2; review rr, RR-5).

M2: a self-added (unvouched) member's failure's record is not fetched once its job is
compacted either (the record lists it under `unvouched_logs`). RR-5/M1: a failed run's
record is a gc root on the peer that made it (its CHUNK_FAILED's origin), whoever wrote the
job's record and facts; a copy fetched here by a read of another peer's is a cache: kept
while its job is if no store budget is set (it may be the only copy left once its maker is
gone), the first to go under one (review r1 of session 52, finding 2)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from peer.config import PeerConfig
from peer.errors import NotFound
from peer.http.app import _archived_lists, record_cids
from peer.http.records import RecordCache
from peer.http.views import job_record
from peer.ipfs import EmbeddedStore
from peer.jobs import retention
from peer.jobs.janitor import Janitor, JanitorConfig
from peer.jobs.retention import (
    JobFacts,
    RetentionConfig,
    archived_facts,
    archived_logs,
    failed_by,
    job_facts,
    plan_evictions,
    record_facts,
)
from peer.jobs.sim import JobMesh
from peer.log import Event, EventType, MeshState
from peer.node import Node
from tests.unit.test_compaction import _cid
from tests.unit.test_lanes_unvouched_done import ADD, SUB, H, J, R, X, chunk_done, lanes_fold
from tests.unit.test_lanes_unvouched_split import HSPLIT, failure
from tests.unit.test_scheduler_sim import CATALOG, CFG, WRITE


def _node(d: Path, opened: list[Node]) -> Node:
    n = Node(PeerConfig(data_dir=d, slots=1, mdns=False))
    n.listeners[:] = [n.compactor.note]  # no scheduler running: only the compactor listens
    opened.append(n)
    return n


class _Asked:
    """A fetcher no live peer answers: the CIDs asked for."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    async def ensure(self, cids: Any, hints: Any = (), max_bytes: int | None = None) -> None:
        self.asked.extend(cids)
        await asyncio.sleep(0)
        raise NotFound("no live peer holds it")


def _named(ev: Event, cid: str) -> Event:
    return Event(ev.origin, ev.seq, ev.hlc, ev.type, {**ev.payload, "log": cid})


THEIRS, OURS = _cid("X's record"), _cid("R's record")


def _lanes_record() -> dict[str, Any]:
    """J's record as compacted: t0's chunk failed by X (self-added, attempt 0) and by R
    (vouched, attempt 1), each naming a record held by nobody."""
    s = lanes_fold([SUB, ADD, HSPLIT, _named(failure(X, 1, 1300, 0), THEIRS),
                    _named(failure(R, 1, 1400, 1), OURS)])
    return job_record(s, J, 3)


async def test_a_compacted_jobs_self_added_members_record_is_not_fetched(
        tmp_path: Path, opened: list[Node]) -> None:
    """M2: the record listed both alike and a read of the compacted job's log fetched X's
    record (on a04f558d). Now its `unvouched_logs` names X's: a line, no fetch."""
    n = _node(tmp_path / "a", opened)
    fetches = _Asked()
    n.fetcher.ensure = fetches.ensure  # type: ignore[method-assign]
    record = _lanes_record()
    [t] = record["tasks"]
    assert (t["logs"], t["unvouched_logs"]) == ([THEIRS, OURS], [THEIRS])
    lines = (await _archived_lists(n, record, "t0", "log", RecordCache()))[1]
    assert fetches.asked == [OURS]
    assert lines == [f"[banzai] the run record {THEIRS} is a self-added member's, not held "
                     "here: it is not fetched: its lines are not shown",
                     f"[banzai] the run record {OURS} is held neither here nor by a live "
                     "peer: its lines are not shown"]


async def test_a_record_without_the_key_fetches_each_and_a_malformed_one_none(
        tmp_path: Path, opened: list[Node]) -> None:
    """An earlier release's record (no `unvouched_logs`) is read as it was: each record
    fetched. One whose key is no list of texts (no release writes it) fetches none."""
    n = _node(tmp_path / "a", opened)
    fetches = _Asked()
    n.fetcher.ensure = fetches.ensure  # type: ignore[method-assign]
    record = _lanes_record()
    [t] = record["tasks"]
    del t["unvouched_logs"]
    (await _archived_lists(n, record, "t0", "log", RecordCache()))[1]
    assert sorted(fetches.asked) == sorted([THEIRS, OURS])
    for bad in ("x", [7], {THEIRS: 1}):
        fetches.asked.clear()
        t["unvouched_logs"] = bad
        lines = (await _archived_lists(n, record, "t0", "log", RecordCache()))[1]
        assert fetches.asked == [] and len(lines) == 2, bad


def test_a_record_a_vouched_member_names_too_is_not_left_unfetched() -> None:
    """The same record (the same CID) named by X's failure and R's is fetched: R's counts."""
    s = lanes_fold([SUB, ADD, HSPLIT, _named(failure(X, 1, 1300, 0), OURS),
                    _named(failure(R, 1, 1400, 1), OURS)])
    [t] = job_record(s, J, 3)["tasks"]
    assert t["logs"] == [OURS, OURS] and "unvouched_logs" not in t


# -- RR-5 and M1: a failed run's record is a gc root on the peer that made it ----------------
def _stored_failures(store: EmbeddedStore) -> tuple[str, str, list[Event]]:
    """X's and R's records held in `store` (unpinned: made here, or fetched by a read), and
    J's events: t0's chunk failed by X (attempt 0) and R (attempt 1), each naming its own."""
    x = store.add_bytes(json.dumps({"log": ["X's lines"], "metrics": []}).encode())
    r = store.add_bytes(json.dumps({"log": ["R's lines"], "metrics": []}).encode())
    return x, r, [SUB, ADD, HSPLIT, _named(failure(X, 1, 1300, 0), x),
                  _named(failure(R, 1, 1400, 1), r)]


def _janitor(me: str, state: MeshState, store: EmbeddedStore,
             budget: int | None = None) -> Janitor:
    cfg = JanitorConfig(RetentionConfig(store_max_bytes=budget), gc_interval_s=0,
                        gc_grace_s=0)
    return Janitor(cfg, me, state, store, lambda *a, **k: None)  # type: ignore[arg-type,return-value]


async def test_another_peers_failed_runs_record_fetched_here_is_kept_without_a_budget(
        tmp_path: Path) -> None:
    """Review r1 of session 52, finding 2: RR-5 made a copy of another peer's failed run's
    record fetched here by a read a cache, collected by the next gc (after gc_grace_s) even
    with no store budget set, where keeping it cost nothing: once its maker left, the only
    copy (the one a user debugging the failure read) went within minutes. Without a budget
    each is kept while its job is (as on a04f558d), on R and on X alike."""
    for me in (R, X):
        store = EmbeddedStore(tmp_path / me / "store")
        x, r, evs = _stored_failures(store)
        report = await _janitor(me, lanes_fold(evs, me), store).cycle()
        assert store.has(x) and store.has(r), me
        assert report.gc.blocks == 0


async def test_under_a_budget_another_peers_failed_runs_record_goes_first_its_own_kept(
        tmp_path: Path) -> None:
    """RR-5 under a store budget: the copy counts against it; over it, the copy goes (its
    maker holds the record as a root), this peer's own record never does; within it, both
    are kept."""
    for me in (R, X):
        for budget, kept in ((0, False), (1 << 30, True)):
            store = EmbeddedStore(tmp_path / me / str(budget) / "store")
            x, r, evs = _stored_failures(store)
            report = await _janitor(me, lanes_fold(evs, me), store, budget).cycle()
            own, fetched = (r, x) if me == R else (x, r)
            assert (store.has(own), store.has(fetched)) == (True, kept), (me, budget)
            assert report.gc.blocks == (0 if kept else 1)


def test_copies_go_oldest_job_first_until_within_the_budget_never_an_own_record() -> None:
    """`plan_evictions`: the copies held here, oldest job first (a live job's last), until
    the store is within the budget; none without a budget or within it; one this peer made
    too (another job's `logs`) never; one not held (no size) never."""
    jobs = [JobFacts("new", 20.0, frozenset(), frozenset(), frozenset(), frozenset(["b"])),
            JobFacts("live", None, frozenset(), frozenset(), frozenset(), frozenset(["c"])),
            JobFacts("old", 10.0, frozenset(), frozenset(), frozenset(["own"]),
                     frozenset(["a", "gone"])),
            JobFacts("mine", 30.0, frozenset(), frozenset(), frozenset(["own2"]),
                     frozenset()),
            JobFacts("again", 5.0, frozenset(), frozenset(), frozenset(),
                     frozenset(["own2"]))]
    sizes = {"a": 10, "b": 10, "c": 10, "own2": 10}

    def plan(used: int, budget: int | None) -> list[str]:
        return plan_evictions(jobs, sizes, used, RetentionConfig(store_max_bytes=budget))

    assert plan(100, None) == [] and plan(100, 100) == []
    assert plan(105, 100) == ["a"]
    assert plan(115, 100) == ["a", "b"]
    assert plan(1000, 100) == ["a", "b", "c"]


async def test_a_peers_own_failed_runs_record_is_kept_under_facts_another_peer_wrote(
        tmp_path: Path) -> None:
    """M1: the compacted job's facts come from whichever peer wrote its record (a snapshot
    carries them); session 51's narrowing wrote the writer's records only, so R, taking H's
    snapshot, collected the only copy of its own. Now the facts list each failed run's
    record by the peer that made it (`failed_by`: the same on every peer), and each peer
    keeps its own: R keeps R's and (under a store budget) collects X's copy, whoever wrote
    them. Facts of an earlier release (no `failed_by`) keep every record, as there."""
    store = EmbeddedStore(tmp_path / "store")
    x, r, evs = _stored_failures(store)
    by = {me: failed_by(lanes_fold(evs, me), J) for me in (H, R, X)}
    assert by[H] == by[R] == by[X] == {X: [x], R: [r]}
    written = record_facts(job_record(lanes_fold(evs, H), J, 3), 1.0, by[H])  # (H's)
    assert written["logs"] == sorted([x, r])  # (an earlier release keeps both)
    old = {k: v for k, v in written.items() if k != "failed_by"}
    assert archived_logs(J, old, me=R).logs == frozenset([x, r])
    assert archived_facts(J, written, me=X).logs == frozenset([x])
    assert archived_facts(J, written, me=X).fetched == frozenset([r])
    janitor = _janitor(R, MeshState(), store, 0)  # (J compacted here: not in memory)
    janitor.archived = lambda: [archived_logs(J, written, me=R)]
    await janitor.cycle()
    assert store.has(r) and not store.has(x)


@pytest.mark.parametrize("bad", [[X], {X: "c"}, {X: [7]}, {7: ["c"]}])
def test_facts_whose_failed_by_is_malformed_keep_every_record(bad: Any) -> None:
    """A member's snapshot row may hold anything: read as absent (every record a root)."""
    facts = {"finished_s": 1.0, "outputs": [], "logs": ["a", "c"], "failed_by": bad}
    assert archived_facts(J, facts, me=R).logs == frozenset(["a", "c"])


def test_a_record_that_is_a_done_runs_too_is_kept_everywhere() -> None:
    """The same record (CID) named by X's failure and a done run's: a root on every peer."""
    done = _cid("the same record")
    ran = chunk_done(R, 1, 1400, attempt=1)
    ran = Event(ran.origin, ran.seq, ran.hlc, ran.type,
                {**ran.payload, "split": list(HSPLIT.id), "log": done})
    s = lanes_fold([SUB, ADD, HSPLIT, _named(failure(X, 1, 1300, 0), done), ran])
    assert s.split_chunks(J, "t0")[0].done is not None
    assert failed_by(s, J) == {}
    [facts] = job_facts(s, 3, me=H)
    assert done in facts.logs


# -- a cancelled run's record: kept, as a failure's (d's "Left" of session 51) ---------------
async def test_a_cancelled_runs_record_is_kept_bounded_and_collected_as_a_failures() -> None:
    """A user who cancels a run that hangs wants to see what it printed: its record is
    stored (bounded as any run's: `run_record`), its CHUNK_FAILED (kind cancelled) names it,
    the task log lists it, and gc keeps it on the peer that ran it only (`failed_by`), as
    long as its job is kept. A guard: decided, not changed (failed_by is new)."""
    mesh = JobMesh(2, CATALOG, CFG)
    try:
        job = mesh.submit("p0", [WRITE])
        await mesh.settle()
        [holder] = [p for p in mesh.peers if mesh[p].runner.running]
        [key] = mesh[holder].runner.running
        mesh[holder].runner.messages[key]("log", ("still waiting for the server",))
        other = next(p for p in mesh.peers if p != holder)
        mesh.emit(other, EventType.JOB_CANCELLED, {"job": job, "reason": "test"})
        await mesh.settle()
        [failed] = mesh.events(EventType.CHUNK_FAILED, holder, task="w")
        assert failed.payload["kind"] == "cancelled"
        cid = failed.payload["log"]
        record = json.loads(b"".join(mesh[holder].store.cat(cid)))
        assert record["log"] == ["still waiting for the server",
                                 "[banzai] attempt 0 failed: cancelled"]
        for p in mesh.peers:
            st = mesh[p].state
            assert record_cids(st, job, "w") == [(cid, True)]
            assert failed_by(st, job) == {holder: [cid]}
            assert cid in next(f for f in job_facts(st, 3, me=holder) if f.job == job).logs
            assert cid not in next(f for f in job_facts(st, 3, me=other) if f.job == job).logs
    finally:
        await mesh.close()


def test_job_facts_walk_each_tasks_chunks_once_for_their_run_records(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Review r1 of session 52, finding 6: `job_facts` with `me` walked every chunk of every
    job again for `failed_by` (per janitor cycle, on the loop): four walks of a task's
    chunks, now three (its done runs' outputs and needs, its run records, its end)."""
    x, r = _cid("X's"), _cid("R's")
    s = lanes_fold([SUB, ADD, HSPLIT, _named(failure(X, 1, 1300, 0), x),
                    _named(failure(R, 1, 1400, 1), r)])
    walks: list[str] = []
    chunks = retention._chunks

    def counted(state: MeshState, job: str, task: str) -> Any:
        walks.append(task)
        return chunks(state, job, task)

    monkeypatch.setattr(retention, "_chunks", counted)
    [facts] = job_facts(s, 3, me=R)
    assert (facts.logs, facts.fetched) == (frozenset([r]), frozenset([x]))
    assert walks == ["t0"] * 3
