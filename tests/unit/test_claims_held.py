"""A peer whose event log cannot take its events (`Scheduler.hold_claims`) makes no event the
other peers would need to see: no CLAIM, no TASK_SPLIT (review r2 M3 of session 45: it split
ready tasks, events that waited unseen in memory while the others split them too, and the
loser's runs were killed once the log took writes again); released, the work goes on.
In-memory job mesh, fake clock."""
from __future__ import annotations

from peer.jobs.claims import task_status
from peer.jobs.sim import JobMesh
from peer.log import EventType
from tests.unit.test_implicit_splits import CATALOG, CFG, WRITE


async def test_a_peer_holding_claims_splits_and_claims_nothing_until_released() -> None:
    mesh = JobMesh(2, CATALOG, CFG, auto=True)
    try:
        for pid in mesh.peers:  # (every peer: whoever ranks first to split)
            mesh[pid].sched.hold_claims(True)
        job = mesh.submit("p1", [WRITE], implicit=False, local=False, claimed=False)
        for _ in range(20):
            await mesh.advance(CFG.tick_s)
        for pid in mesh.peers:
            assert mesh.events(EventType.TASK_SPLIT, pid, job=job) == []  # (as it sees them:
            assert mesh.events(EventType.CLAIM, pid, job=job) == []  # none made, or sent)
            assert task_status(mesh[pid].state, job, "w", CFG.max_attempts) == "pending"
        for pid in mesh.peers:
            mesh[pid].sched.hold_claims(False)
        for _ in range(20):
            await mesh.advance(CFG.tick_s)
        for pid in mesh.peers:
            assert task_status(mesh[pid].state, job, "w", CFG.max_attempts) == "done"
    finally:
        await mesh.close()


async def test_the_peer_that_can_write_splits_while_the_other_holds() -> None:
    mesh = JobMesh(2, CATALOG, CFG, auto=True)
    try:
        mesh["p0"].sched.hold_claims(True)  # (p0 ranks first to split it: unheld, it does)
        job = mesh.submit("p1", [WRITE], implicit=False, local=False, claimed=False)
        for _ in range(40):
            await mesh.advance(CFG.tick_s)
        for pid in mesh.peers:  # (one split, p1's, as either sees it)
            assert [e.origin for e in mesh.events(EventType.TASK_SPLIT, pid, job=job)] == [
                "p1"]
            assert task_status(mesh[pid].state, job, "w", CFG.max_attempts) == "done"
    finally:
        await mesh.close()
