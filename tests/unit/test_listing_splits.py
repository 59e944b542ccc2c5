"""A per-item task split and assembled from its input's listing alone, and its chunks
claimed first by the peers holding their items (peer/jobs/scheduler.py), on the in-memory
mesh with a fake clock (peer/jobs/sim.py)."""

from __future__ import annotations

from peer.errors import BadCID
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


async def split_unseen(mesh: JobMesh) -> tuple[str, list[list[list[str]]]]:
    """p0 writes `w` and splits `u` in three chunks, claiming chunk 0 (its one slot); the
    others have not seen the split yet (held back: no time passes). The job and the
    chunks."""
    specialised(mesh, {p: "T_WRITE" for p in mesh.peers if p != "p0"})
    mesh.hold = lambda ev, to: to != "p0" and ev.type in (EventType.TASK_SPLIT,
                                                         EventType.TASK_SPLIT_REF)
    job = mesh.submit("p0", [WRITE, UPPER])
    await mesh.settle()
    mesh["p0"].runner.finish(f"{job}/w/0/0")
    await mesh.settle()
    [split] = mesh.events(EventType.TASK_SPLIT, job=job, task="u")
    assert mesh["p0"].runner.running == [f"{job}/u/0/0"]
    return job, split.payload["chunks"]


def claimed(mesh: JobMesh, pid: str, job: str) -> list[str]:
    return [k for k in mesh[pid].runner.started if k.startswith(f"{job}/u/")]


async def test_a_peer_holding_a_chunk_s_items_claims_it_at_once() -> None:
    """p1 holds the items of chunk 2 (it made them, say), not the input: it claims chunk 2
    as soon as it sees the split, not after its rank's stagger behind the input's holder
    (before: chunk 1 first, a stagger later)."""
    mesh = JobMesh(2, CATALOG, CFG, slots=1, batch=True)
    try:
        job, chunks = await split_unseen(mesh)
        mesh["p1"].store.local.update(c for _, c in chunks[2])
        mesh.hold = None
        await mesh.settle()
        assert claimed(mesh, "p1", job) == [f"{job}/u/2/0"]
    finally:
        await mesh.close()


async def test_a_peer_holding_none_claims_a_stagger_later_or_alone_at_once() -> None:
    """p1 holds none of the items: it claims the open chunk 1 a stagger after its rank's
    turn (so that a holder freeing meanwhile takes it; before: at its rank's turn); with
    the holder gone, the peers holding none still claim the open chunks after it."""
    mesh = JobMesh(2, CATALOG, CFG, slots=1, batch=True)
    try:
        job, _ = await split_unseen(mesh)
        mesh.hold = None
        await mesh.settle()
        await mesh.advance(CFG.stagger_s * 1.5)  # its rank's turn (1 x stagger_s) is over
        assert claimed(mesh, "p1", job) == []
        await mesh.advance(CFG.stagger_s)
        assert claimed(mesh, "p1", job) == [f"{job}/u/1/0"]
    finally:
        await mesh.close()
    mesh = JobMesh(3, CATALOG, CFG, slots=1, batch=True)
    try:
        job, _ = await split_unseen(mesh)
        mesh.hold = None
        await mesh.settle()
        mesh.silent.add("p0")  # gone: p1 and p2 hold none of the items
        await mesh.advance(CFG.tick_s)
        assert {k for p in ("p1", "p2") for k in claimed(mesh, p, job)} == {
            f"{job}/u/1/0", f"{job}/u/2/0"}  # (one may start a duplicate: the claim it lost)
    finally:
        await mesh.close()


async def test_an_item_that_is_no_cid_leaves_the_claim_order_as_it_was() -> None:
    """A store that cannot read an item's CID (a member's split names any string) ranks
    the chunk as before: the look does not fail the task (its run's fetch would say what
    is wrong)."""
    mesh = JobMesh(2, CATALOG, CFG, slots=1, batch=True)
    try:
        job, _ = await split_unseen(mesh)

        def has(cid: str) -> bool:
            raise BadCID(f"not a CID: {cid!r}")

        mesh["p1"].store.has = has  # type: ignore[method-assign]
        mesh.hold = None
        await mesh.settle()
        await mesh.advance(CFG.stagger_s * 1.5)
        assert claimed(mesh, "p1", job) == [f"{job}/u/1/0"]
        assert not mesh.events(EventType.CHUNK_FAILED, job=job)
    finally:
        await mesh.close()
