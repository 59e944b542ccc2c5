"""A per-item task split and assembled from its input's listing alone, and its chunks
claimed first by the peers holding their items (peer/jobs/scheduler.py), on the in-memory
mesh with a fake clock (peer/jobs/sim.py)."""

from __future__ import annotations

from peer.ipfs.store import StoreConfig
from peer.jobs.ports import SchedulerConfig
from peer.jobs.sim import JobMesh
from peer.log import EventType
from peer.log.lanes import peer_of
from tasks import registry

CATALOG = registry.load(("tests.fixture_tasks",))
CFG = SchedulerConfig(store=StoreConfig("/nonexistent"), lease_s=10.0, stagger_s=0.05,
                      max_chunk_items=4)
WRITE = {"name": "w", "call": "T_WRITE", "params": {"files": 12}}
UPPER = {"name": "u", "call": "T_UPPER", "params": {}, "depends": ["w"]}


def specialised(mesh: JobMesh, lacks: dict[str, str]) -> None:
    """Each peer of `lacks` runs every call of the catalog but the one named (its
    scheduler's catalog and its heartbeats say so)."""
    for pid, call in lacks.items():
        mesh[pid].sched.catalog = {k: v for k, v in CATALOG.items() if k != call}
    mesh.tamper = lambda pid, info: ({**info, "calls": [c for c in info["calls"]
                                                       if c != lacks.get(pid)]})
    mesh.heartbeats()


async def test_a_peer_without_the_input_splits_and_assembles_from_its_listing() -> None:
    """p0 alone writes `w`, p1 alone runs the per-item `u`: p1 splits `u` having fetched
    the input's listing alone, runs each chunk having fetched that chunk's items alone,
    and assembles `u` without ever fetching the input's DAG (before: the whole input
    first, for the split)."""
    mesh = JobMesh(2, CATALOG, CFG, slots=1, auto=True, batch=True)
    try:
        specialised(mesh, {"p0": "T_UPPER", "p1": "T_WRITE"})
        job = mesh.submit("p0", [WRITE, UPPER])
        for _ in range(400):
            await mesh.advance(CFG.tick_s)
            if (job, "u") in mesh["p1"].state.task_done:
                break
        assert (job, "u") in mesh["p1"].state.task_done
        inp = str(mesh["p1"].state.task_done[(job, "w")].payload["output"])
        data = mesh["p1"].data
        assert inp in data.listed and inp not in data.fetched
        items = {c for _, c in mesh["p1"].store.file_cids(inp)}
        assert len(items) == 12 and set(data.fetched) == items
        [split] = mesh.events(EventType.TASK_SPLIT, job=job, task="u")
        assert peer_of(split.origin) == "p1" and len(split.payload["chunks"]) == 3
    finally:
        await mesh.close()
