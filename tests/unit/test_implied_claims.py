"""A small job's JOB_SUBMITTED is its submitter's claim (issue 12, fewer events per task):
while every member announces CLAIMED_FEATURE and none of its tasks is cached, a job that says
`local` says `claimed` too, and no CLAIM follows for its tasks with an implicit split. The
fold makes the claims it implies (attempt 0 of each such task's one chunk, with the job's
origin, seq and hlc: never held), the listeners are told of them after it (`facts`), and the
submitter runs each task as after a CLAIM of its own. Its lease, a restart and a cache hit
work as for any claim; a claim that finds no free slot is released at once."""

from __future__ import annotations

from typing import Any

import pytest

from peer.ipfs.store import StoreConfig
from peer.jobs.claims import task_status
from peer.jobs.ports import SchedulerConfig
from peer.jobs.retention import finished_at
from peer.jobs.sim import JobMesh
from peer.log import (
    ChunkKey,
    Claim,
    Event,
    EventType,
    JobSubmitted,
    MeshState,
    facts,
    fold,
    implied_claims,
)
from peer.rendezvous import rendezvous
from tests.unit.test_implicit_splits import CATALOG, CFG, _one_task, _workflow

A, B = "peera000000000000000", "peerb000000000000000"
WORKFLOW = _workflow()  # tasks a and b without input, src a CID, c after a


def _job(seq: int = 1, hlc: int = 100, **hints: Any) -> Event:
    return Event(A, seq, hlc, EventType.JOB_SUBMITTED,
                 {"job": "j", "workflow": WORKFLOW, **hints})


def _claims(s: MeshState, task: str, job_ev: Event) -> list[Event]:
    return s.chunks[ChunkKey("j", task, job_ev.origin, job_ev.seq, 0)].claims[0]


@pytest.fixture(params=[False, True], ids=["single", "batched"])
def batch(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


# -- the event and the fold ------------------------------------------------------------------
def test_claimed_is_a_hint_read_only_with_local() -> None:
    """Anything but true reads as false, and `claimed` without `local` implies nothing (the
    event is kept either way: a later release may widen the key)."""
    assert _job(local=True, claimed=True).body_as(JobSubmitted).claimed
    for hints in ({}, {"local": True}, {"claimed": True}, {"local": False, "claimed": True},
                  {"local": True, "claimed": 1}, {"local": True, "claimed": "yes"},
                  {"local": True, "claimed": None}):
        ev = _job(**hints)
        assert not ev.body_as(JobSubmitted).claimed, hints
        assert implied_claims(ev) == [] and list(facts(ev)) == [ev]


def test_the_claims_are_of_the_implicit_splits_with_the_jobs_id_and_order() -> None:
    """One claim per task without input (not `src`, a CID, nor `c`, which depends), attempt
    0 of chunk 0 of the split whose id is the job's; told after the event, never held."""
    ev = _job(seq=3, hlc=500, local=True, claimed=True)
    got = implied_claims(ev)
    assert [(c.type, c.id, c.hlc, c.payload) for c in got] == [
        (EventType.CLAIM, (A, 3), 500, {"job": "j", "task": t, "split": [A, 3], "chunk": 0,
                                        "attempt": 0}) for t in ("a", "b")]
    assert [c.body_as(Claim).key for c in got] == [ChunkKey("j", t, A, 3, 0) for t in "ab"]
    assert list(facts(ev)) == [ev, *got]
    s = fold([ev])
    assert set(s.events) == {(A, 3)}  # the JOB_SUBMITTED alone is held
    for t in ("a", "b"):
        (w,) = _claims(s, t, ev)
        assert s.chunk("j", t, 0).winner(0, (A, 3)) is w and w.origin == A
    assert not s.chunk("j", "c", 0).claims
    no_splits = {**WORKFLOW, "splits": None}
    assert implied_claims(Event(A, 1, 1, EventType.JOB_SUBMITTED, {
        "job": "j", "workflow": no_splits, "local": True, "claimed": True})) == []


def test_a_later_claim_loses_to_the_implied_one_in_any_order() -> None:
    """Another peer's CLAIM of attempt 0 (made after it folded the job) loses, whichever of
    the two a peer folds first: the state is the same."""
    ev = _job(local=True, claimed=True)
    other = Event(B, 1, 200, EventType.CLAIM, {"job": "j", "task": "a", "split": [A, 1],
                                                "chunk": 0, "attempt": 0})
    for order in ([ev, other], [other, ev]):
        s = fold(order)
        c = s.chunk("j", "a", 0)
        assert len(c.claims[0]) == 2 and c.winner(0, (A, 1)).origin == A


def test_a_deleted_jobs_straggling_submission_leaves_no_claim() -> None:
    """A JOB_SUBMITTED folded after its job's JOB_DELETED: its implicit splits and the claims
    it implies leave the per-job tables (`_forget`)."""
    ev = _job(seq=2, hlc=300, local=True, claimed=True)
    s = fold([Event(B, 1, 400, EventType.JOB_DELETED, {"job": "j", "reason": "user"}), ev])
    assert "j" not in s.jobs and not s.splits
    assert not [k for k in s.chunks if k.job == "j"]


# -- the scheduler ---------------------------------------------------------------------------
async def test_a_claimed_job_runs_at_its_submitter_without_a_claim_event(batch: bool) -> None:
    mesh = JobMesh(3, CATALOG, CFG, auto=True, batch=batch)
    try:
        job = mesh.submit("p1", _one_task("x"), implicit=True)
        sub = mesh["p1"].state.jobs[job]
        assert sub.payload.get("local") is True and sub.payload.get("claimed") is True
        await mesh.advance(CFG.tick_s)
        assert mesh.sent(EventType.CLAIM, job=job) == []
        assert [k for k in mesh["p1"].runner.started if k.startswith(job)] == [f"{job}/w/0/0"]
        for pid, p in mesh.peers.items():
            assert task_status(p.state, job, "w", 3) == "done", pid
            if pid != "p1":
                assert not [k for k in p.runner.started if k.startswith(job)], pid
            assert [e.id for e in mesh.events(EventType.CLAIM, pid, job=job)] == [sub.id]
        (done,) = mesh.sent(EventType.CHUNK_DONE, job=job)
        assert done.origin == "p1" and done.payload["attempt"] == 0
    finally:
        await mesh.close()


async def test_a_member_without_the_feature_gets_a_claim_event_as_before() -> None:
    """One live peer that does not announce CLAIMED_FEATURE: the job says `local` only, and
    its submitter sends a CLAIM before its run."""
    mesh = JobMesh(3, CATALOG, CFG, auto=True, unclaiming={"p2"})
    try:
        job = mesh.submit("p0", _one_task("y"), implicit=True)
        payload = mesh["p0"].state.jobs[job].payload
        assert payload.get("local") is True and "claimed" not in payload
        await mesh.advance(CFG.tick_s)
        (claim,) = mesh.sent(EventType.CLAIM, job=job)
        assert claim.origin == "p0"
        assert all(task_status(p.state, job, "w", 3) == "done" for p in mesh.peers.values())
    finally:
        await mesh.close()


async def test_a_submitter_gone_before_its_run_loses_its_claim_to_the_lease() -> None:
    """The submitter falls silent before it runs the task: nobody waits for it longer than
    the claim's lease; another peer fails attempt 0 and runs attempt 1."""
    mesh = JobMesh(3, CATALOG, CFG, auto=True)
    try:
        job = mesh.submit("p0", _one_task("z"), implicit=True)
        assert mesh["p0"].state.jobs[job].payload.get("claimed") is True
        mesh.deliver()  # the job reaches the others, then its submitter falls silent
        mesh.silent.add("p0")
        for _ in range(int(CFG.lease_s / CFG.tick_s) + 10):
            await mesh.advance(CFG.tick_s)
            if task_status(mesh["p1"].state, job, "w", 3) == "done":
                break
        assert task_status(mesh["p1"].state, job, "w", 3) == "done"
        failed = mesh.sent(EventType.CHUNK_FAILED, job=job)  # (each watcher may fail it)
        assert failed and {(e.origin, e.payload["attempt"], e.payload["kind"])
                           for e in failed} <= {("p1", 0, "lease"), ("p2", 0, "lease")}
        (done,) = mesh.sent(EventType.CHUNK_DONE, job=job)
        assert done.payload["attempt"] == 1 and done.origin in ("p1", "p2")
        assert not [k for k in mesh["p0"].runner.started if k.startswith(job)]
    finally:
        await mesh.close()


async def test_a_restart_before_the_run_fails_the_implied_claim_and_retries() -> None:
    """A claim our JOB_SUBMITTED implied is failed at a restart as any claim of ours is
    (`recover`: the run it stood for died), and the task runs again as attempt 1."""
    mesh = JobMesh(2, CATALOG, CFG, auto=True)
    try:
        job = mesh.submit("p0", _one_task("r"), implicit=True)
        assert mesh["p0"].state.jobs[job].payload.get("claimed") is True
        await mesh.restart("p0")  # before p0's scheduler ever stepped
        await mesh.advance(CFG.tick_s)
        for _ in range(20):
            if task_status(mesh["p1"].state, job, "w", 3) == "done":
                break
            await mesh.advance(CFG.tick_s)
        (failed,) = mesh.sent(EventType.CHUNK_FAILED, job=job)
        assert failed.origin == "p0" and failed.payload["attempt"] == 0
        assert failed.payload["kind"] == "lost" and failed.payload["counts"] is False
        (done,) = mesh.sent(EventType.CHUNK_DONE, job=job)
        assert done.payload["attempt"] == 1
        assert all(task_status(p.state, job, "w", 3) == "done" for p in mesh.peers.values())
    finally:
        await mesh.close()


async def test_the_slot_stays_promised_until_the_claimed_run_starts() -> None:
    """One slot: a second small job submitted before the first's run started does not say
    `local` (its slot is promised to the first, whose claim is already folded); once the
    first ran, a third does again."""
    mesh = JobMesh(2, CATALOG, CFG, slots=1, auto=True)
    try:
        first = mesh.submit("p0", _one_task("p1"), implicit=True)
        second = mesh.submit("p0", _one_task("p2"), implicit=True)
        assert mesh["p0"].state.jobs[first].payload.get("claimed") is True
        assert "local" not in mesh["p0"].state.jobs[second].payload
        await mesh.advance(CFG.tick_s)
        for _ in range(20):
            if all(task_status(mesh["p0"].state, j, "w", 3) == "done" for j in (first, second)):
                break
            await mesh.advance(CFG.tick_s)
        third = mesh.submit("p0", _one_task("p3"), implicit=True)
        assert mesh["p0"].state.jobs[third].payload.get("claimed") is True
    finally:
        await mesh.close()


async def test_a_standing_claim_keeps_its_slot_promised_past_a_split_wait() -> None:
    """The submitter's loop is held up longer than a split wait before it starts the run:
    the slot stays promised (the others wait for the claim's lease, not a split wait), so
    a small job submitted then does not say `local`, and the first is not released."""
    mesh = JobMesh(2, CATALOG, CFG, slots=1)
    try:
        first = mesh.submit("p0", _one_task("A"), implicit=True)
        assert mesh["p0"].state.jobs[first].payload.get("claimed") is True
        mesh.clock.advance(CFG.split_wait_s + 0.05)  # p0 did not step meanwhile
        second = mesh.submit("p0", _one_task("B"), implicit=True)
        assert "local" not in mesh["p0"].state.jobs[second].payload
        await mesh.advance(CFG.tick_s)
        assert mesh["p0"].runner.started == [f"{first}/w/0/0"]
        assert mesh.sent(EventType.CHUNK_FAILED) == []
    finally:
        await mesh.close()


async def test_a_claimed_task_takes_its_promised_slot_before_another_jobs_turn() -> None:
    """One slot at the submitter, and a task of another job that it ranks first waits in the
    same round: the small job's task goes first (`_promised` first), so its claim is never
    left without a run for the others to fail by lease (with max_attempts 1 that failed the
    job for good)."""
    cfg = SchedulerConfig(store=StoreConfig("/nonexistent"), lease_s=10.0, stagger_s=0.05,
                          max_attempts=1)
    mesh = JobMesh(2, CATALOG, cfg, slots=1)
    try:
        # a task of a job submitted at p1 that p0 comes first for, sorted before the other
        name = next(f"t{i}" for i in range(100)
                    if rendezvous(f"j1/t{i}", ["p0", "p1"])[0] == "p0")
        mesh.submit("p1", _one_task("other", name=name), implicit=True, local=False)
        mesh.deliver()  # p0 holds it, not stepped yet
        mine = mesh.submit("p0", _one_task("mine"), implicit=True)
        assert mesh["p0"].state.jobs[mine].payload.get("claimed") is True
        assert mine > "j1"  # (without the order, the other job's task took the slot first)
        for _ in range(int(cfg.lease_s / cfg.tick_s) + 10):
            await mesh.advance(cfg.tick_s)
        assert mesh["p0"].runner.started[0] == f"{mine}/w/0/0"
        assert mesh.sent(EventType.CHUNK_FAILED, job=mine) == []
        assert task_status(mesh["p1"].state, mine, "w", 1) == "running"
    finally:
        await mesh.close()


async def test_a_submitter_without_a_free_slot_releases_the_claim_at_once() -> None:
    """The slot a claimed task was promised is busy after all (here: the job says `claimed`
    though the only slot runs another task): the submitter ends the claim with an uncounted
    failure, and the other peer runs attempt 1 without waiting for a lease."""
    mesh = JobMesh(2, CATALOG, CFG, slots=1)
    try:
        busy = mesh.submit("p0", _one_task("busy"), implicit=True)
        await mesh.advance(CFG.tick_s)
        assert mesh["p0"].runner.running == [f"{busy}/w/0/0"]
        job = mesh.submit("p0", _one_task("late"), implicit=True, local=True, claimed=True)
        t0 = mesh.clock()
        await mesh.advance(CFG.tick_s)
        (failed,) = mesh.sent(EventType.CHUNK_FAILED, job=job)
        assert failed.origin == "p0" and failed.payload["attempt"] == 0
        assert failed.payload["counts"] is False and failed.payload["kind"] == "lost"
        for _ in range(10):
            await mesh.advance(CFG.tick_s)
        assert mesh["p1"].runner.running == [f"{job}/w/0/1"]
        assert mesh.clock() - t0 < CFG.lease_s  # (not after a lease)
    finally:
        await mesh.close()


async def test_a_member_of_the_previous_release_away_holds_claimed_back() -> None:
    """A member that does not announce the feature, not live as the job comes (restarting,
    cut off): the job says `local` only, since that member, back mid-task, would run the
    task again and hold its own claim as the winner."""
    mesh = JobMesh(3, CATALOG, CFG, auto=True, unclaiming={"p2"})
    try:
        mesh.silent.add("p2")
        job = mesh.submit("p0", _one_task("away"), implicit=True)
        payload = mesh["p0"].state.jobs[job].payload
        assert payload.get("local") is True and "claimed" not in payload
    finally:
        await mesh.close()


async def test_a_task_is_looked_up_in_the_cache_once_and_a_cached_one_is_not_claimed() -> None:
    """The submission looks each task up in the cache (`claims_first`), and its turn does not
    again; a job whose task is in the cache says `local` only, and the task ends from the
    cache with no run."""
    mesh = JobMesh(2, CATALOG, CFG, auto=True)
    try:
        planner = mesh["p0"].sched.planner
        looked: list[str] = []
        lookup = planner.cached_output
        planner.cached_output = lambda key: looked.append(key) or lookup(key)  # type: ignore[method-assign]
        first = mesh.submit("p0", _one_task("c"), implicit=True)
        assert mesh["p0"].state.jobs[first].payload.get("claimed") is True
        await mesh.advance(CFG.tick_s)
        assert task_status(mesh["p0"].state, first, "w", 3) == "done"
        assert len(looked) == 1
        again = mesh.submit("p0", _one_task("c"), implicit=True)
        payload = mesh["p0"].state.jobs[again].payload
        assert payload.get("local") is True and "claimed" not in payload
        await mesh.advance(CFG.tick_s)
        (done,) = mesh.events(EventType.TASK_DONE, "p0", job=again)
        assert done.payload["cached"] is True
        assert [k for k in mesh["p0"].runner.started if k.startswith(again)] == []
    finally:
        await mesh.close()


async def test_a_restart_fails_no_claim_of_a_task_done_without_its_run() -> None:
    """A claimed task that a TASK_DONE ended before its run (here another peer's, from the
    cache) is not failed by the submitter's restart, so its job's end does not move."""
    mesh = JobMesh(2, CATALOG, CFG, auto=True)
    try:
        first = mesh.submit("p0", _one_task("d"), implicit=True)
        await mesh.advance(CFG.tick_s)
        ran = mesh["p0"].state.task_done[(first, "w")].payload
        job = mesh.submit("p0", _one_task("d"), implicit=True, local=True, claimed=True)
        mesh.emit("p1", EventType.TASK_DONE, {"job": job, "task": "w", "output": ran["output"],
                                             "key": ran["key"], "cached": True})
        await mesh.advance(CFG.tick_s)
        st = mesh["p0"].state
        assert task_status(st, job, "w", 3) == "done"
        assert [k for k in mesh["p0"].runner.started if k.startswith(job)] == []
        tasks = st.jobs[job].payload["workflow"]["tasks"]
        end = finished_at(st, job, tasks, 3)
        await mesh.advance(5.0)
        await mesh.restart("p0")
        await mesh.advance(CFG.tick_s)
        assert mesh.sent(EventType.CHUNK_FAILED, job=job) == []
        assert finished_at(st, job, tasks, 3) == end
    finally:
        await mesh.close()
