"""Implicit splits (issue 12): a job whose workflow says `"splits": "implicit"` (set by the
peer it is submitted to while every live member announces SPLITS_FEATURE) has no TASK_SPLIT
for its tasks without input: the fold makes their one-chunk split from the JOB_SUBMITTED, its
id the job's, and the scheduler claims it (or, for a cached output, records the task done)."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from peer.cids import sha256_cid
from peer.config import PeerConfig
from peer.errors import SpecError
from peer.http.views import job_view
from peer.ipfs.store import StoreConfig
from peer.jobs.claims import task_status
from peer.jobs.ports import SchedulerConfig
from peer.jobs.sim import PREVIOUS_TOP_KEYS, JobMesh
from peer.jobs.spec import from_obj, workflow_from_json
from peer.log import (
    CLAIMED_FEATURE,
    DONE_FEATURE,
    LOCAL_FEATURE,
    SPLITS_FEATURE,
    Event,
    EventType,
    JobSubmitted,
    MeshState,
    fold,
)
from peer.node import Node
from peer.rendezvous import rendezvous
from tasks import registry
from tests.unit.record_oracle import compact_view

CATALOG = registry.load(("tests.fixture_tasks",))
CFG = SchedulerConfig(store=StoreConfig("/nonexistent"), lease_s=10.0, stagger_s=0.05,
                      max_attempts=3)
ORIGIN = "origin00000000000000"
WRITE = {"name": "w", "call": "T_WRITE", "params": {"files": 1}, "depends": []}
CID = "bafkreiaheqdfvsfwin2qysg2nd3n4upuu7oyiwtnuvai2oi3lesbeuh42q"


def _workflow(implicit: bool = True) -> dict[str, Any]:
    doc: dict[str, Any] = {"name": "x", "tasks": [
        {"name": "a", "call": "ECHO", "params": {"text": "a"}, "depends": []},
        {"name": "b", "call": "ECHO", "params": {"text": "b"}},  # no depends key at all
        {"name": "src", "cid": CID},
        {"name": "c", "call": "ECHO", "params": {"text": "c"}, "depends": ["a"]}]}
    if implicit:
        doc["splits"] = "implicit"
    return doc


def _job(seq: int = 1, hlc: int = 100, job: str = "j", implicit: bool = True) -> Event:
    return Event(ORIGIN, seq, hlc, EventType.JOB_SUBMITTED,
                 {"job": job, "workflow": _workflow(implicit)})


def _split(origin: str, seq: int, hlc: int, task: str = "a") -> Event:
    return Event(origin, seq, hlc, EventType.TASK_SPLIT,
                 {"job": "j", "task": task, "input": None, "chunks": [[]]})


def _claim(origin: str, seq: int, hlc: int, split: tuple[str, int], task: str = "a") -> Event:
    return Event(origin, seq, hlc, EventType.CLAIM, {"job": "j", "task": task,
                                                       "split": list(split), "chunk": 0,
                                                       "attempt": 0})


# -- the workflow key ------------------------------------------------------------------------
def test_the_splits_key_is_known_and_kept() -> None:
    wf = workflow_from_json(_workflow())
    assert wf.splits == "implicit" and wf.newer == {}
    assert all(t.newer == () for t in wf.tasks)
    assert wf.to_json()["splits"] == "implicit" and workflow_from_json(wf.to_json()) == wf
    assert "splits" not in workflow_from_json(_workflow(implicit=False)).to_json()


def test_a_previous_release_reads_the_splits_key_as_a_newer_peers() -> None:
    wf = workflow_from_json(_workflow(), known=PREVIOUS_TOP_KEYS)
    assert wf.newer == {"splits": "implicit"}
    assert all(t.newer[:1] == ("workflow.splits",) for t in wf.tasks)


def test_an_unknown_splits_value_is_a_newer_peers() -> None:
    wf = workflow_from_json({**_workflow(), "splits": "sharded"})
    assert wf.splits is None and wf.newer == {"splits": "sharded"}


def test_a_user_may_not_set_another_splits_value() -> None:
    doc = {"name": "x", "tasks": [{"name": "w", "call": "T_WRITE", "params": {"files": 1}}]}
    assert from_obj({**doc, "splits": "implicit"}, CATALOG).splits is None  # the peer's to set
    with pytest.raises(SpecError) as e:
        from_obj({**doc, "splits": "sharded"}, CATALOG)
    assert e.value.field == "splits"


# -- the fold --------------------------------------------------------------------------------
def test_a_flagged_job_has_an_implicit_split_per_task_without_input() -> None:
    job = _job()
    s = fold([job])
    assert set(s.splits) == {("j", "a"), ("j", "b")}  # not c (depends), not src (a cid)
    for t in ("a", "b"):
        sp = s.splits[("j", t)]
        assert sp.type == EventType.TASK_SPLIT and sp.id == job.id and sp.order == job.order
        assert sp.payload == {"job": "j", "task": t, "input": None, "chunks": [[]], "kept": {}}
        assert s.implicit(sp)
    # never held: the log, its heads and its digests are as without them
    assert list(s.events) == [job.id] and list(s.by_origin[ORIGIN]) == [1]
    assert s.content_sum() == fold([job]).content_sum()


def test_an_unflagged_job_has_none() -> None:
    assert fold([_job(implicit=False)]).splits == {}


def test_a_real_split_loses_to_the_implicit_one_in_any_order() -> None:
    job, real = _job(), _split("p1", 1, 200)
    for evs in ([job, real], [real, job]):
        s = fold(evs)
        assert s.splits[("j", "a")].id == job.id
        assert not s.implicit(real)


def test_claims_on_the_implicit_split_win_and_others_do_not_count() -> None:
    job = _job()
    s = fold([job, _split("p1", 1, 200), _claim("p1", 2, 210, ("p1", 1)),
              _claim("p2", 1, 220, job.id)])
    w = s.chunk("j", "a", 0).winner(0, s.split_id("j", "a"))
    assert w is not None and w.origin == "p2"  # the earlier claim was on the losing split


def test_deletion_and_compaction_drop_the_implicit_splits() -> None:
    job = _job()
    deleted = Event(ORIGIN, 2, 300, EventType.JOB_DELETED, {"job": "j", "reason": ""})
    assert fold([job, deleted]).splits == {}
    assert fold([deleted, job]).splits == {}  # a JOB_SUBMITTED after its job's deletion
    s = fold([job])
    assert set(s.splits) == {("j", "a"), ("j", "b")}
    s.compact(["j"])
    assert s.splits == {}
    late = fold([], MeshState(compacted=s.compacted))
    late.apply(job)  # a straggler of a compacted job
    assert late.splits == {}


def test_a_refold_makes_them_again() -> None:
    s = fold([_job(), _split("p1", 1, 200, task="c")])
    before = dict(s.splits)
    assert s.implicit(before[("j", "a")]) and not s.implicit(before[("j", "c")])
    assert s.refold() == []
    assert {k: (v.id, v.payload) for k, v in s.splits.items()} == {
        k: (v.id, v.payload) for k, v in before.items()}


# -- a peer on its data dir: restart, views, compaction ----------------------------------------
def _cid(s: str) -> str:
    return str(sha256_cid(s.encode(), "raw", 1))


def _open(d: Path, opened: list[Node]) -> Node:
    n = Node(PeerConfig(data_dir=d, slots=1, mdns=False, compact_recent_tasks=0))
    n.listeners[:] = [n.compactor.note]  # no scheduler running: only the compactor listens
    opened.append(n)
    return n


def _history(jobs: int, live: int, implied: bool = False) -> list[Event]:
    """`jobs` finished flagged jobs of two ECHO tasks (no TASK_SPLIT: their claims name the
    job's id), then `live` flagged jobs, one of whose tasks is claimed. `implied`: each
    finished task's CHUNK_DONE says it is done (DONE_FEATURE), keyed `key/<job>/<task>`,
    and no TASK_DONE follows."""
    out: list[Event] = []
    hlc = (int(time.time() * 1000) - 60_000) << 16

    def add(typ: EventType, payload: dict[str, Any]) -> Event:
        nonlocal hlc
        hlc += 1
        out.append(Event(ORIGIN, len(out) + 1, hlc, typ, payload))
        return out[-1]

    for j in range(jobs + live):
        job = f"job{j}"
        sub = add(EventType.JOB_SUBMITTED, {"job": job, "workflow": {
            "name": job, "splits": "implicit", "tasks": [
                {"name": f"t{i}", "call": "ECHO", "params": {"text": f"{j}/{i}"}}
                for i in range(2)]}})
        for i in range(2 if j < jobs else 1):
            base = {"job": job, "task": f"t{i}", "split": list(sub.id), "chunk": 0,
                    "attempt": 0}
            add(EventType.CLAIM, base)
            if j < jobs:
                out_cid = _cid(f"{job}/t{i}")
                if implied:
                    add(EventType.CHUNK_DONE, {**base, "output": out_cid, "cache": {},
                                               "done": {"key": f"key/{job}/t{i}"}})
                    continue
                add(EventType.CHUNK_DONE, {**base, "output": out_cid, "cache": {}})
                add(EventType.TASK_DONE, {"job": job, "task": f"t{i}", "output": out_cid})
    return out


@pytest.mark.parametrize("implied", [False, True], ids=["task-done", "implied-done"])
def test_a_peer_shows_compacts_and_restarts_with_implicit_splits(
        tmp_path: Path, opened: list[Node], implied: bool) -> None:
    n = _open(tmp_path / "a", opened)
    evs = _history(jobs=1, live=1, implied=implied)
    assert n.merge(evs) == evs  # the door admits the key and claims on the job's id
    done = job_view(n.state, "job0", n.cfg.max_attempts)
    assert done["state"] == "done"
    live = job_view(n.state, "job1", n.cfg.max_attempts)
    states = {t["name"]: t["state"] for t in live["tasks"]}
    assert states == {"t0": "running", "t1": "pending"}
    t0 = next(t for t in live["tasks"] if t["name"] == "t0")
    assert len(t0["chunks"]) == 1 and t0["chunks"][0]["peer"] == ORIGIN
    t1 = next(t for t in live["tasks"] if t["name"] == "t1")  # no peer acted on its split:
    assert t1["chunks"] == [] and t1["started_ms"] is None  # shown as a cached task's, none
    n.catchup.compact()
    assert n.state.compacted and "job0" in n.state.compacted
    assert not [k for k in n.state.splits if k[0] == "job0"]
    assert n.catchup.job_record("job0") == compact_view(done)
    keys = {f"key/job0/t{i}": _cid(f"job0/t{i}") for i in range(2)} if implied else {}
    assert all(n.state.outputs.get(k) == v for k, v in keys.items())  # (from the job index)
    n.flush()
    n.log.close()
    opened.remove(n)
    m = _open(tmp_path / "a", opened)  # a restart: the JOB_SUBMITTED is folded again
    assert sorted(m.state.splits) == [("job1", "t0"), ("job1", "t1")]
    assert all(m.state.implicit(s) for s in m.state.splits.values())
    assert task_status(m.state, "job1", "t0", m.cfg.max_attempts) == "running"
    assert "job0" not in m.state.jobs
    assert all(m.state.outputs.get(k) == v for k, v in keys.items())
    assert m.catchup.job_record("job0") == compact_view(done)
    # An implicit split is one of this release (it carries `kept`): a live flagged job does
    # not hold back the deletion of item cache entries, as an older peer's split would.
    assert not m.compactor._older_splits()


def test_a_live_member_without_the_feature_gets_no_flagged_job(
        tmp_path: Path, opened: list[Node]) -> None:
    n = _open(tmp_path / "a", opened)
    live: dict[str, dict[str, Any]] = {"old": {"calls": [], "features": ["batch-v1"]}}
    n.live_peers = lambda: live  # type: ignore[method-assign]
    assert not n.implicit_splits() and n.batching()
    live["old"]["features"].append(SPLITS_FEATURE)
    assert n.implicit_splits()
    live["quiet"] = {"calls": []}  # no features in its heartbeat, none in a MEMBER event
    assert not n.implicit_splits()


def test_a_job_says_local_only_while_every_live_member_ranks_by_it(
        tmp_path: Path, opened: list[Node]) -> None:
    """Node.local_first: implicit splits, every live member announcing LOCAL_FEATURE, and the
    scheduler's answer (its MEMBER folded, a free slot)."""
    n = _open(tmp_path / "a", opened)
    n.emit(EventType.MEMBER, n.capabilities())
    live: dict[str, dict[str, Any]] = {"old": {"calls": [], "features": [
        "batch-v1", SPLITS_FEATURE, DONE_FEATURE]}}
    n.live_peers = lambda: live  # type: ignore[method-assign]
    wf = from_obj({"name": "x", "tasks": [{"name": "a", "call": "ECHO", "params": {"text": "a"},
                                           "depends": []}]}, n.catalog)
    flagged = dataclasses.replace(wf, splits="implicit")
    assert not n.local_first("j1", flagged)
    live["old"]["features"].append(LOCAL_FEATURE)
    assert not n.local_first("j1", wf)  # no implicit splits
    assert n.local_first("j1", flagged)
    assert not n.claims_first("j1", flagged)  # its claim only if every peer folds that
    live["old"]["features"].append(CLAIMED_FEATURE)
    assert n.claims_first("j1", flagged)
    live["quiet"] = {"calls": []}  # no features in its heartbeat, none in a MEMBER event
    assert not n.claims_first("j1", flagged)


# -- the scheduler ---------------------------------------------------------------------------
@pytest.fixture(params=[False, True], ids=["single", "batched"])
async def batch(request: pytest.FixtureRequest) -> AsyncIterator[bool]:
    yield bool(request.param)


def _runs(mesh: JobMesh, job: str) -> dict[str, list[str]]:
    """Run key -> the peers that were handed it."""
    out: dict[str, list[str]] = {}
    for pid, p in mesh.peers.items():
        for key in p.runner.started:
            if key.startswith(f"{job}/"):
                out.setdefault(key, []).append(pid)
    return out


def nine_and_a_dependent(mesh: JobMesh) -> str:
    """Submit at p0, flagged as Node decides, nine independent tasks e0..e8 and `u`, which
    depends on e0; the job's id."""
    tasks = [{"name": f"e{i}", "call": "T_WRITE", "params": {"files": 1, "tag": str(i)},
              "depends": []} for i in range(9)]
    return mesh.submit("p0", [*tasks, {"name": "u", "call": "T_UPPER", "params": {},
                                       "depends": ["e0"]}], implicit=None)


async def test_three_peers_run_a_flagged_job_without_a_task_split(batch: bool) -> None:
    mesh = JobMesh(3, CATALOG, CFG, auto=True, batch=batch)
    try:
        job = nine_and_a_dependent(mesh)
        assert mesh["p0"].state.jobs[job].payload["workflow"]["splits"] == "implicit"
        for _ in range(10):
            await mesh.advance(CFG.tick_s)
        for pid in mesh.peers:
            assert task_status(mesh[pid].state, job, "u", CFG.max_attempts) == "done"
            for i in range(9):
                assert task_status(mesh[pid].state, job, f"e{i}", CFG.max_attempts) == "done"
        runs = _runs(mesh, job)
        assert sorted(k for k in runs if "/e" in k) == sorted(f"{job}/e{i}/0/0"
                                                              for i in range(9))
        assert all(len(peers) == 1 for peers in runs.values())  # each task ran once
        assert len({p for peers in runs.values() for p in peers}) > 1  # spread over peers
        splits = [e for pid in mesh.peers for e in mesh[pid].emitted for e in e.singles
                  if e.type in (EventType.TASK_SPLIT, EventType.TASK_SPLIT_REF)]
        assert [e.payload["task"] for e in splits] == ["u"]  # the task with an input only
        sub = mesh["p0"].state.jobs[job]
        claims = mesh.events(EventType.CLAIM, "p1", job=job)
        assert all(tuple(c.payload["split"]) == sub.id for c in claims
                   if c.payload["task"] != "u")
    finally:
        await mesh.close()


async def test_a_cached_task_of_a_flagged_job_is_done_without_a_claim(batch: bool) -> None:
    mesh = JobMesh(3, CATALOG, CFG, auto=True, batch=batch)
    try:
        first = mesh.submit("p0", [WRITE], implicit=True)
        await mesh.advance(CFG.tick_s)
        assert task_status(mesh["p2"].state, first, "w", CFG.max_attempts) == "done"
        again = mesh.submit("p1", [WRITE], implicit=True)
        for _ in range(4):
            await mesh.advance(CFG.tick_s)
        done = mesh.events(EventType.TASK_DONE, "p2", job=again)
        assert len(done) == 1 and done[0].payload["cached"] is True
        # (its submitter found it in the cache: the job says `local`, not `claimed`)
        assert "claimed" not in mesh["p1"].state.jobs[again].payload
        for pid in mesh.peers:
            assert mesh.events(EventType.CLAIM, pid, job=again) == []
            assert mesh.events(EventType.TASK_SPLIT, pid, job=again) == []
        assert _runs(mesh, again) == {}
    finally:
        await mesh.close()


async def test_a_member_without_the_feature_gets_a_job_split_as_before() -> None:
    mesh = JobMesh(3, CATALOG, CFG, auto=True, old={"p2"})
    try:
        job = mesh.submit("p0", [WRITE], implicit=None)
        assert "splits" not in mesh["p0"].state.jobs[job].payload["workflow"]
        await mesh.advance(CFG.tick_s)
        assert len(mesh.events(EventType.TASK_SPLIT, "p0", job=job)) >= 1
        assert task_status(mesh["p2"].state, job, "w", CFG.max_attempts) == "done"
    finally:
        await mesh.close()


async def test_a_previous_release_runs_none_of_a_flagged_job(batch: bool) -> None:
    mesh = JobMesh(3, CATALOG, CFG, auto=True, batch=batch, old={"p2"})
    try:
        tasks = [{"name": f"e{i}", "call": "T_WRITE", "params": {"files": 1, "tag": str(i)},
                  "depends": []} for i in range(8)]
        job = mesh.submit("p0", tasks, implicit=True)  # p2 was not live when it was submitted
        for _ in range(10):
            await mesh.advance(CFG.tick_s)
        for pid in ("p0", "p1"):
            for i in range(8):
                assert task_status(mesh[pid].state, job, f"e{i}", CFG.max_attempts) == "done"
        assert mesh["p2"].runner.started == []
        assert [e for e in mesh["p2"].emitted if e.singles[0].payload.get("job") == job] == []
        why = mesh["p2"].sched.waiting()
        assert all(why[(job, f"e{i}")].endswith("does not know workflow.splits")
                   for i in range(8) if (job, f"e{i}") in why)
        assert all(len(peers) == 1 for peers in _runs(mesh, job).values())
    finally:
        await mesh.close()


async def test_no_turn_of_a_dependent_waits_for_a_previous_release() -> None:
    """(Review r, session 40, finding 6.) A peer without SPLITS_FEATURE, live again after a
    flagged job was submitted, runs none of it: it was ranked all the same for the split of
    a task with input (by rendezvous hash, here first) and the others waited a turn for it.
    Ranked for nothing now: the job ends with no time passing."""
    peers = ["p0", "p1", "p2"]
    job = next(j for j in (f"j{i}" for i in range(1000))
               if rendezvous(f"{j}/c", peers)[0] == "p2")
    doc = {**from_obj({"name": "x", "tasks": [
        {"name": "a", "call": "ECHO", "params": {"text": "a"}},
        {"name": "c", "call": "ECHO", "params": {"text": "c"}, "depends": ["a"]}]},
        CATALOG).to_json(), "splits": "implicit"}
    mesh = JobMesh(3, CATALOG, CFG, auto=True, old={"p2"})
    try:
        mesh.emit("p0", EventType.JOB_SUBMITTED, {"job": job, "workflow": doc})
        await mesh.settle()
        assert mesh.events(EventType.TASK_SPLIT, job=job, task="c")
        assert task_status(mesh["p0"].state, job, "c", CFG.max_attempts) == "done"
        assert mesh["p2"].runner.started == []
    finally:
        await mesh.close()


async def test_chunks_are_sized_for_the_slots_of_the_peers_that_run_the_job() -> None:
    """(Session 42.) A per-item task's chunks were sized for the slots of every live peer
    that runs its call, peers that run none of the job (a previous release's, here two of
    three, 2 slots each) among them: 16 items in 4 chunks of 4 for 6 slots, when only the 2
    slots of the one peer that runs the job take them. Sized for those 2 now: 2 chunks."""
    mesh = JobMesh(3, CATALOG, CFG, auto=True, slots=2, old={"p1", "p2"})
    try:
        job = mesh.submit("p0", [{**WRITE, "params": {"files": 16}},
                                 {"name": "u", "call": "T_UPPER", "params": {},
                                  "depends": ["w"]}], implicit=True)
        for _ in range(5):
            await mesh.advance(CFG.tick_s)
        assert [len(e.payload["chunks"]) for e in mesh.events(EventType.TASK_SPLIT, job=job,
                                                              task="u")] == [2]
        assert task_status(mesh["p0"].state, job, "u", CFG.max_attempts) == "done"
        assert mesh["p1"].runner.started == mesh["p2"].runner.started == []
    finally:
        await mesh.close()


async def test_the_first_peer_of_a_task_is_left_its_chunk_a_while() -> None:
    """Busy peers (3 slots each, runs of 6 ms, heartbeats every 0.1 s: stale free-slot counts)
    on a flagged job of 200 tasks: a peer other than a task's first (the one that would have
    split it) looks at its chunk only after the split wait, as it would have split it, so no
    attempt is claimed twice (when every peer looked at every chunk as the job came, 10 were)."""
    cfg = SchedulerConfig(store=StoreConfig("/nonexistent"), queue_ahead=1)
    mesh = JobMesh(3, CATALOG, cfg, batch=True, slots=3)
    try:
        mesh.slow_links(0.002)
        job = mesh.submit("p0", [{"name": f"e{i}", "call": "T_WRITE",
                                  "params": {"files": 1, "tag": str(i)}, "depends": []}
                                 for i in range(200)], implicit=True)
        started: dict[tuple[str, str], float] = {}
        for step in range(2000):
            mesh.clock.advance(0.001)
            if step % 100 == 0:
                mesh.heartbeats()
            await mesh.settle()
            for pid, p in mesh.peers.items():
                for key in list(p.runner.running):
                    if mesh.clock() - started.setdefault((pid, key), mesh.clock()) >= 0.006:
                        p.runner.finish(key)
            if len(mesh.events(EventType.TASK_DONE, "p0", job=job)) == 200:
                break
        assert len(mesh.events(EventType.TASK_DONE, "p0", job=job)) == 200
        claims = [(e.payload["task"], e.payload["attempt"]) for p in mesh.peers.values()
                  for ev in p.emitted for e in ev.singles if e.type == EventType.CLAIM]
        assert len(claims) == len(set(claims)) == 200
        assert mesh.events(EventType.TASK_SPLIT, "p0", job=job) == []
    finally:
        await mesh.close()


async def test_the_tasks_left_to_their_first_peer_are_not_looked_at_every_tick() -> None:
    """They wait for their turn's time (`Scheduler._deferred`), not as staggered claims (which
    every tick evaluates again: hundreds of tasks of a big job, for seconds)."""
    mesh = JobMesh(3, CATALOG, CFG)
    try:
        job = mesh.submit("p0", [{"name": f"e{i}", "call": "T_WRITE",
                                  "params": {"files": 1, "tag": str(i)}, "depends": []}
                                 for i in range(30)], implicit=True)
        await mesh.settle()
        s = mesh["p1"].sched
        assert [k for k in s._ready_since if k.chunk < 0] == []
        waiting = {k for k in s._deferred if k[0] == job}
        assert 10 < len(waiting) < 30 and not waiting & s._waiting()
        assert s.sleep_s() <= CFG.split_wait_s + 30 * CFG.split_wait_per_task_s + 1e-6
    finally:
        await mesh.close()


# -- a small job runs where it was submitted --------------------------------------------------
def _one_task(tag: str, **extra: Any) -> list[dict[str, Any]]:
    return [{"name": "w", "call": "T_WRITE", "params": {"files": 1, "tag": tag}, "depends": [],
             **extra}]


async def test_a_job_that_fits_its_submitters_slots_runs_there_at_once(batch: bool) -> None:
    """Its submitter holds the job first: it claims and starts each such task before the job
    has reached another peer (a run elsewhere costs a gossip hop each way). Every peer ranks
    the submitter first, so nobody else claims. Before, two thirds of one-task jobs went to
    another peer (the task's first by rendezvous hash)."""
    mesh = JobMesh(3, CATALOG, CFG, batch=batch, slots=2)
    mesh.slow_links(0.002)
    try:
        jobs = {}
        for i in range(12):
            pid = f"p{i % 3}"
            jobs[mesh.submit(pid, _one_task(str(i)), implicit=True)] = pid
            await mesh.settle()  # no time passes: the job has not reached the others
            assert mesh[pid].runner.started[-1:] == [f"{list(jobs)[-1]}/w/0/0"]
            for key in list(mesh[pid].runner.running):
                mesh[pid].runner.finish(key)
            await mesh.settle()
        two = mesh.submit("p1", [*_one_task("a"), {**_one_task("b")[0], "name": "v"}],
                          implicit=True)
        jobs[two] = "p1"  # two tasks, two slots: both at once
        await mesh.settle()
        assert sorted(mesh["p1"].runner.running) == [f"{two}/v/0/0", f"{two}/w/0/0"]
        for key in list(mesh["p1"].runner.running):
            mesh["p1"].runner.finish(key)
        for _ in range(4):
            await mesh.advance(CFG.tick_s)
        for job, pid in jobs.items():
            assert {p for ps in _runs(mesh, job).values() for p in ps} == {pid}
            for q in mesh.peers:
                assert all(c.origin == pid for c in mesh.events(EventType.CLAIM, q, job=job))
                assert task_status(mesh[q].state, job, "w", CFG.max_attempts) == "done"
                assert mesh[q].sched._implicit_rank(job, "w", "T_WRITE")[0] == pid
    finally:
        await mesh.close()


async def test_a_job_larger_than_its_submitters_slots_is_spread() -> None:
    """More tasks than the submitter's slots: ranked by rendezvous hash as before, every peer
    takes its share at once."""
    mesh = JobMesh(3, CATALOG, CFG, auto=True, slots=2)
    try:
        job = mesh.submit("p0", [{**_one_task(str(i))[0], "name": f"e{i}"} for i in range(9)],
                          implicit=True)
        for _ in range(6):
            await mesh.advance(CFG.tick_s)
        firsts = {mesh["p0"].sched._implicit_rank(job, f"e{i}", "T_WRITE")[0]
                  for i in range(9)}
        assert len(firsts) > 1
        assert len({p for ps in _runs(mesh, job).values() for p in ps}) > 1
        assert all(task_status(mesh["p2"].state, job, f"e{i}", 3) == "done" for i in range(9))
    finally:
        await mesh.close()


async def test_a_submitter_that_does_not_meet_a_tasks_requires_is_not_ranked_first() -> None:
    """A task that states `requires` its submitter does not meet goes to the first peer by
    rendezvous hash at once, as before (ranked first, the submitter would make it wait)."""
    mesh = JobMesh(3, CATALOG, CFG, auto=True)
    mesh.slow_links(0.002)
    try:
        for pid in ("p1", "p2"):  # p1 and p2 are labelled; p0, the submitter, is not
            mesh.announce(pid, {"rack": "a"})
        await mesh.advance(0.01)
        name = next(n for n in (f"w{i}" for i in range(100))  # p0 is not its first
                    if rendezvous(f"j1/{n}", ["p0", "p1", "p2"])[0] != "p0")
        job = mesh.submit("p0", [{**_one_task("x", requires={"labels": {"rack": "a"}})[0],
                                  "name": name}], implicit=True)
        assert job == "j1"
        first = mesh["p0"].sched._implicit_rank(job, name, "T_WRITE")[0]
        assert first != "p0"
        await mesh.advance(0.01)  # the hop, well within the split wait (0.2 s) of a rank 1
        assert _runs(mesh, job) == {f"{job}/{name}/0/0": [first]}
    finally:
        await mesh.close()


async def test_a_peer_of_the_previous_version_keeps_the_rendezvous_order(batch: bool) -> None:
    """While a live peer does not announce LOCAL_FEATURE (it ranks by rendezvous hash alone),
    no job says `local`, and every peer ranks by rendezvous hash: two rankings would claim
    some tasks twice."""
    mesh = JobMesh(3, CATALOG, CFG, auto=True, batch=batch, slots=2)
    mesh.tamper = lambda pid, info: ({**info, "features": [SPLITS_FEATURE, DONE_FEATURE]}
                                     if pid == "p2" else info)
    mesh.heartbeats()
    try:
        jobs = [mesh.submit("p0", _one_task(str(i)), implicit=True) for i in range(6)]
        for _ in range(4):
            await mesh.advance(CFG.tick_s)
        for job in jobs:
            assert "local" not in mesh["p0"].state.jobs[job].payload
            plain = rendezvous(f"{job}/w", ["p0", "p1", "p2"])
            assert all(mesh[q].sched._implicit_rank(job, "w", "T_WRITE") == plain
                       for q in mesh.peers)
            assert {p for ps in _runs(mesh, job).values() for p in ps} == {plain[0]}
        assert any(rendezvous(f"{job}/w", ["p0", "p1", "p2"])[0] != "p0" for job in jobs)
    finally:
        await mesh.close()


async def test_a_burst_of_small_jobs_goes_to_the_submitters_free_slots_then_spreads() -> None:
    """Jobs that come while the submitter's slots are promised to earlier ones (not claimed
    yet) do not say `local`: the others take them at once instead of waiting for a busy
    submitter. A promise ends with its claim, or its job's cancellation."""
    mesh = JobMesh(3, CATALOG, CFG, slots=2)
    mesh.slow_links(0.002)
    try:
        jobs = [mesh.submit("p0", _one_task(str(i)), implicit=True) for i in range(6)]
        assert [mesh["p0"].state.jobs[j].payload.get("local") for j in jobs] == [
            True, True, None, None, None, None]
        await mesh.advance(0.01)  # the hop, well within a split wait (0.2 s)
        started = {pid: [k.split("/")[0] for k in p.runner.started]
                   for pid, p in mesh.peers.items()}
        assert sorted(started["p0"]) == sorted(jobs[:2])
        elsewhere = {j: rendezvous(f"{j}/w", ["p0", "p1", "p2"])[0] for j in jobs[2:]}
        assert set(elsewhere.values()) - {"p0"}
        for job, first in elsewhere.items():  # taken at once by its first peer, unless
            if first != "p0":  # that is the busy submitter (then after the split wait)
                assert job in started[first]
        for _ in range(50):  # every job of the burst done, nothing left running
            for p in mesh.peers.values():
                for key in list(p.runner.running):
                    p.runner.finish(key)
            await mesh.advance(0.05)
            if all(task_status(mesh["p0"].state, j, "w", 3) == "done" for j in jobs):
                break
        assert all(task_status(mesh["p0"].state, j, "w", 3) == "done" for j in jobs)
        assert mesh["p0"].sched.free_slots == 2
        # promised and cancelled before its claim: the promise ends with the job
        gone = mesh.submit("p0", _one_task("c"), implicit=True)
        assert mesh["p0"].state.jobs[gone].payload.get("local") is True
        mesh.emit("p0", EventType.JOB_CANCELLED, {"job": gone, "reason": "user"})
        two = [mesh.submit("p0", _one_task(f"d{i}"), implicit=True) for i in range(2)]
        assert [mesh["p0"].state.jobs[j].payload.get("local") for j in two] == [True, True]
    finally:
        await mesh.close()


async def test_a_job_says_local_only_at_a_submitter_that_runs_its_tasks() -> None:
    """A call the submitter does not run, or no MEMBER of its own folded yet: no `local`."""
    mesh = JobMesh(2, CATALOG, CFG, slots=2, members=False)
    try:
        first = mesh.submit("p0", _one_task("a"), implicit=True)
        assert "local" not in mesh["p0"].state.jobs[first].payload  # its MEMBER not folded
        mesh.announce("p0")
        second = mesh.submit("p0", _one_task("b"), implicit=True)
        assert mesh["p0"].state.jobs[second].payload.get("local") is True
        wf = from_obj({"name": "x", "tasks": [{"name": "n", "call": "NOT_HERE",
                                               "params": {"files": 1}, "depends": []}]},
                      {**CATALOG, "NOT_HERE": CATALOG["T_WRITE"]})
        assert not mesh["p0"].sched.takes_first("j9", wf)
    finally:
        await mesh.close()


def test_a_job_submitted_event_reads_local_as_a_hint() -> None:
    """`local` is optional (older peers' events have none); anything but true reads as
    false and the event is kept (a later release may widen the key)."""
    wf = {"name": "x", "tasks": [{"name": "a", "call": "ECHO", "params": {}, "depends": []}]}
    assert not Event(ORIGIN, 1, 1, EventType.JOB_SUBMITTED,
                     {"job": "j", "workflow": wf}).body_as(JobSubmitted).local
    assert Event(ORIGIN, 1, 1, EventType.JOB_SUBMITTED, {"job": "j", "workflow": wf,
                                                         "local": True}).body_as(
        JobSubmitted).local
    for odd in (1, "yes", {"peer": "p1"}, None, False):
        assert not Event(ORIGIN, 1, 1, EventType.JOB_SUBMITTED, {
            "job": "j", "workflow": wf, "local": odd}).body_as(JobSubmitted).local


IMAGE = "img@sha256:" + "ab" * 32


async def test_a_submitter_says_local_only_for_tasks_it_can_run_here() -> None:
    """A container task whose image this peer does not hold (`kinds.runnable`, as
    `_evaluate` checks): no `local`, so the others do not wait for a peer that never claims
    it; the next small job at the idle peer says `local` again."""
    catalog = {**CATALOG, "container": dataclasses.replace(CATALOG["T_WRITE"],
                                                           name="container")}
    mesh = JobMesh(2, catalog, CFG, slots=1)
    try:
        stuck = mesh.submit("p0", [{"name": "c", "call": "container", "depends": [],
                                    "params": {"image": IMAGE, "command": ["true"]}}],
                            implicit=True)
        assert "local" not in mesh["p0"].state.jobs[stuck].payload
        later = mesh.submit("p0", _one_task("x"), implicit=True)
        assert mesh["p0"].state.jobs[later].payload.get("local") is True
    finally:
        await mesh.close()


async def test_a_promise_ends_when_its_task_fails_for_good_or_after_a_split_wait() -> None:
    """A task failed for good before any claim, or one this peer has not claimed within a
    split wait (wedged: the others take it by then), no longer holds a slot's promise."""
    mesh = JobMesh(2, CATALOG, CFG, slots=1)
    try:
        job = mesh.submit("p0", _one_task("a"), implicit=True)
        assert mesh["p0"].state.jobs[job].payload.get("local") is True
        mesh["p0"].sched._fail_task((job, "w"), "internal error: boom")  # before its claim
        # (`local` only: a task its JOB_SUBMITTED claimed keeps its promise while the claim
        # stands: test_implied_claims)
        later = mesh.submit("p0", _one_task("b"), implicit=True, claimed=False)
        assert mesh["p0"].state.jobs[later].payload.get("local") is True
        assert not mesh["p0"].state.jobs[mesh.submit("p0", _one_task("c"), implicit=True)
                                         ].payload.get("local")  # `later` holds the slot
        mesh.clock.advance(CFG.split_wait_s + 0.01)  # p0 did not step meanwhile
        again = mesh.submit("p0", _one_task("d"), implicit=True)
        assert mesh["p0"].state.jobs[again].payload.get("local") is True
    finally:
        await mesh.close()
