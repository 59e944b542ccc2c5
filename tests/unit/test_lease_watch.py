"""Another peer's claim is watched for its lease until its attempt ends (peer.jobs.scheduler:
`_note`, `_settled`), whatever order the claim and its outcome arrive in, and only the
winning split's outcome ends it. On the in-memory mesh with a fake clock (peer/jobs/sim.py);
found by the review of this session's lease watch."""

from __future__ import annotations

from collections import Counter

from peer.jobs.claims import AttemptKey
from peer.jobs.ports import SchedulerConfig
from peer.jobs.sim import JobMesh
from peer.log import EventType
from tests.unit.test_scheduler_load import CATALOG, CFG, counted, tasks  # noqa: F401
from tests.unit.test_scheduler_sim import CFG as SIM_CFG
from tests.unit.test_scheduler_sim import UPPER, WRITE, chunk_events, started_job


async def test_a_claim_that_arrives_after_its_attempts_failure_is_not_watched(
        counted: Counter[str]) -> None:  # noqa: F811
    """The holder's CLAIM of attempt 0 reaches the others only after its CHUNK_FAILED (the
    log folds an origin's events past a gap): the dead attempt is not watched, so the task
    is not looked at every tick once its lease would have lapsed while the retry runs (88 of
    120 ticks before), and it is failed once."""
    mesh = JobMesh(3, CATALOG, CFG, slots=1, batch=True)
    try:
        held = True
        mesh.hold = lambda ev, to: (held and ev.type == EventType.CLAIM
                                    and ev.payload["attempt"] == 0)
        job = mesh.submit("p0", tasks(1), implicit=True)
        await mesh.settle()
        [holder] = [pid for pid, p in mesh.peers.items() if p.runner.running]
        for key in mesh[holder].runner.running:
            mesh[holder].runner.fail(key, kind="crash")
        await mesh.settle()  # the failure arrives; the claim it fails does not, yet
        held = False
        await mesh.settle()  # now it does
        for _ in range(8):
            await mesh.advance(CFG.tick_s)
        [retry] = [pid for pid, p in mesh.peers.items() if p.runner.running]
        counted.clear()
        for _ in range(int(3 * CFG.lease_s / CFG.tick_s)):  # the retry runs 3 leases long
            await mesh.advance(CFG.tick_s)
        assert len([e for e in mesh.events(EventType.CHUNK_FAILED, retry, job=job)
                    if e.payload["attempt"] == 0]) == 1
        assert all(counted[pid] <= 5 for pid in mesh.peers if pid != retry), counted
        assert not any(AttemptKey(job, "e0", 0, 0) in p.sched._claim_seen
                       for p in mesh.peers.values())
    finally:
        await mesh.close()


async def test_a_losing_claim_that_arrives_after_the_chunk_is_done_is_not_watched() -> None:
    """A per-item task in three chunks on three peers: a duplicate CLAIM of a chunk's attempt
    by another peer (it raced, and lost) reaches the third only after that chunk's
    CHUNK_DONE: the done attempt is not watched while the task's other chunks run on."""
    cfg = SchedulerConfig(store=CFG.store, lease_s=CFG.lease_s, stagger_s=0.05,
                          tick_s=CFG.tick_s, max_chunk_items=4)
    mesh = JobMesh(3, CATALOG, cfg, batch=True)
    try:
        job = mesh.submit("p0", [{**WRITE, "params": {"files": 12}}, UPPER])
        await mesh.settle()
        [w] = [pid for pid, p in mesh.peers.items() if f"{job}/w/0/0" in p.runner.running]
        mesh[w].runner.finish(f"{job}/w/0/0")
        for _ in range(4):
            await mesh.advance(cfg.tick_s)
        runs = {pid: [k for k in p.runner.running if k.startswith(f"{job}/u/")]
                for pid, p in mesh.peers.items()}
        assert all(len(r) == 1 for r in runs.values()), runs
        done_by, racer, observer = sorted(mesh.peers)
        key = runs[done_by][0]
        chunk, attempt = map(int, key.split("/")[2:])
        mesh.hold = lambda ev, to: ev.type == EventType.CLAIM and ev.origin == racer
        [claim] = [e for e in mesh.events(EventType.CLAIM, done_by, job=job, task="u")
                   if e.payload["chunk"] == chunk and e.origin == done_by]
        mesh.emit(racer, EventType.CLAIM, dict(claim.payload))  # the racer's, later: it loses
        mesh[done_by].runner.finish(key)
        await mesh.settle()  # the chunk is done everywhere; the racer's claim not yet seen
        mesh.hold = None
        await mesh.settle()  # now it is
        assert AttemptKey(job, "u", chunk, attempt) not in mesh[observer].sched._claim_seen
    finally:
        await mesh.close()


async def test_an_outcome_of_another_splits_chunk_does_not_restart_the_holders_lease() -> None:
    """The holder of chunk 0 attempt 0 hangs; 0.9 lease later an outcome of chunk 0 attempt 0
    of another split of the task comes (a losing split's run that ended before its peer saw
    the winning split, or a misbehaving member's): the fold keeps it apart, and the winning
    split's lease still lapses at lease_s (not 0.9 lease later)."""
    mesh = JobMesh(3, CATALOG, SIM_CFG)
    try:
        job, holder = await started_job(mesh, [WRITE])
        other, third = sorted(set(mesh.peers) - {holder})
        mesh.silent.add(holder)
        await mesh.advance(SIM_CFG.lease_s * 0.9)
        assert chunk_events(mesh, EventType.CHUNK_FAILED, other) == []
        mesh.emit(third, EventType.CHUNK_FAILED, {
            "job": job, "task": "w", "chunk": 0, "attempt": 0, "split": [third, 999_999],
            "error": "a losing split's run", "kind": "crash"})
        await mesh.settle()
        await mesh.advance(SIM_CFG.lease_s * 0.2)
        assert [e for e in chunk_events(mesh, EventType.CHUNK_FAILED, other)
                if e.payload["kind"] == "lease"], "the hung holder's lease did not lapse"
    finally:
        await mesh.close()
