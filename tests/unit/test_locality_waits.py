"""When a task waiting for data is looked at again (peer/jobs/locality.py, as the scheduler
drives it), on the in-memory mesh with a fake clock (peer/jobs/sim.py): not at every tick, but
as soon as its wait can end: its grace period or backoff over, the preferred peer gone, the
data come. No sleeps; the times are the fake clock's."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

import pytest

from peer.errors import NotFound
from peer.ipfs.store import StoreConfig
from peer.jobs.ports import SchedulerConfig
from peer.jobs.sim import JobMesh
from peer.log import Event, EventType
from tasks import registry
from tests.unit.test_scheduler_load import split_per_item

CATALOG = registry.load(("tests.fixture_tasks",))
CFG = SchedulerConfig(store=StoreConfig("/nonexistent"), lease_s=10.0, stagger_s=0.05)
WRITE = {"name": "w", "call": "T_WRITE", "params": {"files": 8}}
UPPER = {"name": "u", "call": "T_UPPER", "params": {}, "depends": ["w"]}
SRC = "bafkreiaheqdfvsfwin2qysg2nd3n4upuu7oyiwtnuvai2oi3lesbeuh42q"
SRC2 = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
EPS_S = 1e-6


@pytest.fixture
async def mesh() -> AsyncIterator[JobMesh]:
    m = JobMesh(2, CATALOG, CFG, batch=True)
    yield m
    await m.close()


def u_split(ev: Event) -> bool:
    return ev.type in (EventType.TASK_SPLIT, EventType.TASK_SPLIT_REF) and \
        ev.payload["task"] == "u"


async def waiting_for_input(mesh: JobMesh) -> tuple[str, str, str, float]:
    """`w` ends on one peer (the producer), whose split of `u` never reaches the other: that
    one waits for `u`'s input, leaving it a grace period to the producer. The job, the
    producer, the other peer and when it began to wait."""
    mesh.hold = lambda ev, to: u_split(ev)
    job = mesh.submit("p0", [WRITE, UPPER])
    await mesh.settle()
    [producer] = [pid for pid, p in mesh.peers.items() if p.runner.running]
    mesh[producer].runner.finish(f"{job}/w/0/0")
    await mesh.settle()
    [other] = set(mesh.peers) - {producer}
    assert (job, "w") in mesh[other].state.task_done
    assert (job, "u") in mesh[other].sched.locality.waiting
    return job, producer, other, mesh.clock()


def output(mesh: JobMesh, job: str) -> str:
    [done] = mesh.events(EventType.TASK_DONE, job=job, task="w")
    return str(done.payload["output"])


async def test_the_grace_period_ends_at_the_first_tick_after_it(mesh: JobMesh) -> None:
    job, _, other, t0 = await waiting_for_input(mesh)
    out = output(mesh, job)
    while out not in mesh[other].data.fetched:
        assert mesh.clock() - t0 <= CFG.lease_s, "fetched before the grace period ended"
        await mesh.advance(CFG.tick_s)
    assert mesh.clock() - t0 <= CFG.lease_s + CFG.tick_s + EPS_S


async def test_a_preferred_peer_that_leaves_ends_the_grace_period_at_the_next_tick(
        mesh: JobMesh) -> None:
    job, producer, other, t0 = await waiting_for_input(mesh)
    await mesh.advance(1.0)
    assert output(mesh, job) not in mesh[other].data.fetched
    mesh.silent.add(producer)
    await mesh.advance(CFG.tick_s)
    assert output(mesh, job) in mesh[other].data.fetched
    assert mesh.clock() - t0 < CFG.lease_s / 2


async def test_data_that_comes_during_the_grace_period_ends_it_at_once(
        mesh: JobMesh) -> None:
    """The input is replicated to the waiting peer (its PROVIDE says so): it takes its turn
    to split the task (the producer's split never came) after split_wait_s, not after the
    grace period it would otherwise have left the producer."""
    job, _, other, t0 = await waiting_for_input(mesh)
    await mesh.advance(1.0)
    out = output(mesh, job)
    mesh[other].data.mark(out)
    mesh.emit(other, EventType.PROVIDE, {"cids": [out]})
    await mesh.settle()
    for _ in range(4):
        await mesh.advance(CFG.tick_s)
    mesh.close_turns()
    assert any(u_split(s) for e in mesh[other].emitted for s in e.singles)
    assert out not in mesh[other].data.fetched
    assert mesh.clock() - t0 < CFG.lease_s / 2


async def test_a_failed_fetch_is_retried_when_each_backoff_ends() -> None:
    """No provider for a task's input: the peer retries its fetch after 1, 2, 4, 8... s
    (fetch_backoff_s doubled), at the first tick after each backoff, with no event between
    (one peer: the preferred one, which leaves no grace period to another)."""
    mesh = JobMesh(1, CATALOG, CFG, batch=True)
    calls: dict[str, list[float]] = {pid: [] for pid in mesh.peers}

    def nowhere(pid: str) -> Callable[..., Awaitable[None]]:
        async def ensure(cids: Sequence[str], hints: Sequence[str] = ()) -> None:
            calls[pid].append(mesh.clock())
            raise NotFound(f"no live peer could provide {cids[0]}")
        return ensure

    for pid, p in mesh.peers.items():
        p.data.ensure = nowhere(pid)  # type: ignore[method-assign]
    mesh.submit("p0", [{"name": "a", "cid": SRC}, {"name": "b", "cid": SRC2},
                       {"name": "w", "call": "T_CONCAT", "params": {}, "depends": ["a", "b"]}])
    try:
        await mesh.settle()
        for _ in range(int(70 / CFG.tick_s)):
            await mesh.advance(CFG.tick_s)
    finally:
        await mesh.close()
    gaps = [b - a for a, b in zip(calls["p0"], calls["p0"][1:], strict=False)]
    assert len(gaps) == 6, calls  # 1, 2, 4, 8, 16, 30 (fetch_max_backoff_s) s
    for i, gap in enumerate(gaps):
        backoff = min(CFG.fetch_backoff_s * 2 ** i, CFG.fetch_max_backoff_s)
        assert backoff - EPS_S <= gap <= backoff + CFG.tick_s + EPS_S, (i, gaps)


# -- found by the review of this change ------------------------------------------------------
async def test_a_lonely_wait_made_during_a_short_flap_is_woken_when_the_peers_are_back(
        ) -> None:
    """A lonely wait (no live peer when the chunk was looked at) begun between two ticks,
    with the live peers back as they were by the next tick: the task is still looked at
    once peers are there (the wait resets what the last tick saw)."""
    cfg = dataclasses.replace(CFG, max_chunk_items=4)
    mesh = JobMesh(2, CATALOG, cfg, slots=1, batch=True)
    try:
        job = mesh.submit("p0", [
            {"name": "w1", "call": "T_WRITE", "params": {"files": 12, "tag": "in"}},
            {"name": "w2", "call": "T_WRITE", "params": {"files": 1, "tag": "x"}},
            {"name": "u", "call": "T_UPPER", "params": {}, "depends": ["w1"]}])
        for _ in range(4):
            await mesh.advance(cfg.tick_s)
        runs = {pid: list(p.runner.running) for pid, p in mesh.peers.items()}
        [p] = [pid for pid, r in runs.items() if f"{job}/w1/0/0" in r]
        [q] = [pid for pid, r in runs.items() if f"{job}/w2/0/0" in r]
        mesh[p].runner.finish(f"{job}/w1/0/0")
        for _ in range(8):  # p splits u and runs its chunk 0 (it hangs); q runs w2
            await mesh.advance(cfg.tick_s)
        [split] = mesh.events(EventType.TASK_SPLIT, job=job, task="u")
        assert len(split.payload["chunks"]) == 3
        assert not mesh[q].data.is_complete(split.payload["input"])
        mesh.partition({p}, {q})  # q loses p; its run ends meanwhile: u is lonely there
        mesh[q].runner.finish(f"{job}/w2/0/0")
        await mesh.settle()
        assert (job, "u") in mesh[q].sched._lonely
        mesh.heal()  # p is back before q's next tick
        for _ in range(20):
            await mesh.advance(cfg.tick_s)
        assert [k for k in mesh[q].runner.started if k.startswith(f"{job}/u/")]
    finally:
        await mesh.close()


async def test_a_wait_of_its_planning_ends_with_the_split() -> None:
    """The wait a peer begins while planning a task (for its input, with a grace period
    for its producer) ends when the task's split comes: else it stayed (a task failed for
    good kept the peer ticking every tick_s instead of idling)."""
    cfg = dataclasses.replace(CFG, max_chunk_items=4, max_attempts=1)
    mesh = JobMesh(3, CATALOG, cfg, slots=1, batch=True)
    try:
        job = await split_per_item(mesh, cfg)
        assert mesh.events(EventType.TASK_SPLIT, job=job, task="u")
        for p in mesh.peers.values():
            for key in list(p.runner.running):
                p.runner.fail(key, kind="error", error="boom")
        for _ in range(48):
            await mesh.advance(cfg.tick_s)
        assert mesh.events(EventType.CHUNK_FAILED, job=job, task="u")
        assert (job, "u") not in mesh["p0"].state.task_done
        assert {pid: dict(p.sched.locality.waiting) for pid, p in mesh.peers.items()} == {
            pid: {} for pid in mesh.peers}
        assert not any(p.sched.timed() for p in mesh.peers.values())
    finally:
        await mesh.close()
