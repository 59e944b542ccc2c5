"""The scheduler's work per task (issue 12): how often tasks are evaluated when many wait for
few slots, on the in-memory mesh with a fake clock (peer/jobs/sim.py); no sleeps."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator

import pytest

from peer.ipfs.store import StoreConfig
from peer.jobs.claims import AttemptKey
from peer.jobs.ports import SchedulerConfig
from peer.jobs.scheduler import Scheduler
from peer.jobs.sim import JobMesh
from peer.log import EventType
from tasks import registry

CATALOG = registry.load(("tests.fixture_tasks",))
CFG = SchedulerConfig(store=StoreConfig("/nonexistent"), stagger_s=0.05, tick_s=0.25)
DT_S = 0.0025  # the fake clock's step while driving a mesh
RUN_S = 0.05  # how long each fake run takes


def tasks(n: int) -> list[dict[str, object]]:
    return [{"name": f"e{i}", "call": "T_WRITE", "params": {"files": 1, "tag": str(i)}}
            for i in range(n)]


@pytest.fixture
async def counted(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Counter[str]]:
    """Evaluations of a task, per peer."""
    seen: Counter[str] = Counter()
    evaluate = Scheduler._evaluate

    def spy(self: Scheduler, job: str, task: str) -> None:
        seen[self.peer_id] += 1
        evaluate(self, job, task)

    monkeypatch.setattr(Scheduler, "_evaluate", spy)
    yield seen


async def drive(mesh: JobMesh, job: str, n: int, max_steps: int = 20_000) -> None:
    """Let time pass in small steps (heartbeats every 20 of them), each run ending RUN_S
    after it started, until every peer holds the n tasks done."""
    started: dict[tuple[str, str], float] = {}
    for i in range(max_steps):
        mesh.clock.advance(DT_S)
        if i % 20 == 0:
            mesh.heartbeats()
        now = mesh.clock()
        for p in mesh.peers.values():
            for key in p.runner.running:
                if now - started.setdefault((p.peer_id, key), now) >= RUN_S:
                    p.runner.finish(key)
        await mesh.settle()
        if all(sum(1 for k in p.state.task_done if k[0] == job) == n
               for p in mesh.peers.values()):
            return
    raise AssertionError("the job did not finish")


@pytest.mark.parametrize("npeers", [1, 3])
async def test_tasks_waiting_for_a_slot_are_not_evaluated_again_and_again(
        counted: Counter[str], npeers: int) -> None:
    """One slot per peer, many independent tasks: a task is looked at when an event about it
    comes and when a slot frees for it, not at every tick while it waits (before: 17 times
    per task on one peer, 22 per task and peer on three)."""
    mesh = JobMesh(npeers, CATALOG, CFG, slots=1, batch=True)
    try:
        for a in mesh.peers:
            for b in mesh.peers:
                if a != b:
                    mesh.delay_s[(a, b)] = 0.002
        n = 60
        job = mesh.submit("p0", tasks(n))
        await drive(mesh, job, n)
        for pid, p in mesh.peers.items():
            assert counted[pid] <= 8 * n, f"{pid}: {counted[pid] / n:.1f} evaluations per task"
            assert len([e for e in p.state.task_done if e[0] == job]) == n
    finally:
        await mesh.close()


async def test_a_split_task_leaves_the_planning_stagger() -> None:
    """A task another peer split is no longer waited on for this peer's turn to split it
    (before, every tick looked at each such task until the job ended)."""
    mesh = JobMesh(3, CATALOG, CFG, slots=1, batch=True)
    try:
        job = mesh.submit("p0", tasks(30))
        await mesh.settle()
        for p in mesh.peers.values():
            assert sum(1 for k in p.state.splits if k[0] == job) == 30
            assert [k for k in p.sched._ready_since if k.chunk < 0] == []
    finally:
        await mesh.close()


async def test_a_full_peer_does_not_look_at_the_tasks_waiting_for_their_claim_turn(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A task this peer may claim after its stagger, while its only slot is busy: a tick
    queues it for the next free slot instead of evaluating it."""
    mesh = JobMesh(2, CATALOG, CFG, slots=1, batch=True)
    try:
        job = mesh.submit("p0", tasks(20))
        await mesh.settle()
        s = mesh["p1"].sched
        assert s.free_slots == 0 and s.starved > 5  # p1 runs one task, the others wait
        # Tasks it looked at while its slot was free, waiting for its turn to claim them:
        watched = {(a.job, a.task) for a in s._claim_seen}  # p0's runs: leases watched
        waiting = [k for k in s._starved if k not in watched][:5]
        for job_, task in waiting:
            del s._starved[(job_, task)]
            s._ready_since[AttemptKey(job_, task, 0, 0)] = mesh.clock()
        looked: list[tuple[str, str]] = []
        evaluate = Scheduler._evaluate

        def spy(self: Scheduler, job: str, task: str) -> None:
            looked.append((job, task))
            evaluate(self, job, task)

        monkeypatch.setattr(Scheduler, "_evaluate", spy)
        mesh.clock.advance(CFG.tick_s)
        s.step()
        assert not set(waiting) & set(looked)
        assert set(waiting) <= set(s._starved)  # looked at once a slot frees
        assert len(mesh.events(EventType.TASK_SPLIT, "p1", job=job)) == 20
    finally:
        await mesh.close()


async def test_a_freed_slot_looks_at_one_starved_task_when_it_can_claim_it(
        counted: Counter[str]) -> None:
    mesh = JobMesh(1, CATALOG, CFG, slots=1, batch=True)
    try:
        job = mesh.submit("p0", tasks(10))
        await mesh.settle()
        p = mesh["p0"]
        [key] = p.runner.running
        assert p.sched.starved == 9
        counted.clear()
        p.runner.finish(key)
        await mesh.settle()
        # the finished task (its outcome, then its end) and the one starved task it claims
        assert counted["p0"] <= 4
        assert p.sched.starved == 8 and len(p.runner.running) == 1
        assert sum(1 for k in p.state.task_done if k[0] == job) == 1
    finally:
        await mesh.close()
