"""A member that announces it leaves (SWIM's LEFT): nothing waits for the leases of its
claims (the scheduler on the in-memory job mesh, fake clock)."""

from __future__ import annotations

from peer.ipfs.store import StoreConfig
from peer.jobs.claims import task_status
from peer.jobs.ports import SchedulerConfig
from peer.jobs.sim import JobMesh
from peer.log import EventType
from tasks import registry

CATALOG = registry.load(("tests.fixture_tasks",))
CFG = SchedulerConfig(store=StoreConfig("/nonexistent"), lease_s=10.0, stagger_s=0.05,
                      max_attempts=3)
WRITE = {"name": "w", "call": "T_WRITE", "params": {"files": 2}}


async def test_the_claims_of_a_departed_holder_lapse_at_once_and_do_not_count() -> None:
    mesh = JobMesh(2, CATALOG, CFG)
    try:
        job = mesh.submit("p0", [WRITE])
        await mesh.settle()
        key = f"{job}/w/0/0"
        [holder] = [pid for pid, p in mesh.peers.items() if key in p.runner.running]
        other = next(pid for pid in mesh.peers if pid != holder)
        mesh.silent.add(holder)  # it stopped: nothing more comes from it
        await mesh.advance(CFG.tick_s)
        assert mesh.events(EventType.CHUNK_FAILED, other, job=job) == []  # its lease holds
        mesh[other].sched.gone(holder)  # its LEFT arrived
        await mesh.advance(CFG.tick_s)  # one tick: far less than lease_s
        [ev] = mesh.events(EventType.CHUNK_FAILED, other, job=job)
        assert (ev.origin, ev.payload["kind"], ev.payload.get("counts")) == (other, "lease",
                                                                              False)
        assert "left the mesh" in ev.payload["error"]
        mesh[other].runner.finish(f"{job}/w/0/1")
        await mesh.settle()
        assert task_status(mesh[other].state, job, "w", CFG.max_attempts) == "done"
    finally:
        await mesh.close()
