"""The scheduler's work per task (issue 12): how often tasks are evaluated when many wait for
few slots, on the in-memory mesh with a fake clock (peer/jobs/sim.py); no sleeps."""

from __future__ import annotations

import dataclasses
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


def linked_mesh(npeers: int) -> JobMesh:
    """`npeers` peers with one slot each (a turn's events one TURN), every link 2 ms."""
    mesh = JobMesh(npeers, CATALOG, CFG, slots=1, batch=True)
    mesh.slow_links(0.002)
    return mesh


async def split_per_item(mesh: JobMesh, cfg: SchedulerConfig) -> str:
    """A job whose `w` writes 12 files on one peer, then its per-item `u` split in three
    chunks of 4 items (`cfg.max_chunk_items`) on three peers; the job's id."""
    job = mesh.submit("p0", [
        {"name": "w", "call": "T_WRITE", "params": {"files": 12, "tag": "in"}},
        {"name": "u", "call": "T_UPPER", "params": {}, "depends": ["w"]}])
    await mesh.settle()
    [producer] = [pid for pid, p in mesh.peers.items() if p.runner.running]
    mesh[producer].runner.finish(f"{job}/w/0/0")
    for _ in range(8):
        await mesh.advance(cfg.tick_s)
    return job


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
    mesh = linked_mesh(npeers)
    try:
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


async def test_another_peers_claim_of_a_task_without_input_is_not_looked_at_while_it_holds(
        counted: Counter[str]) -> None:
    """The claim of a task with an implicit split (no input: one whole chunk), made by the
    other peer, changes nothing here until its lease lapses: the task is not evaluated as
    the claim comes nor at the ticks after (before: at both). When the holder falls silent
    its lease lapses here, the claim is failed and the task runs here."""
    mesh = JobMesh(2, CATALOG, CFG, slots=1, batch=True)
    try:
        job = mesh.submit("p0", tasks(1), implicit=True)
        await mesh.settle()
        [holder] = [p for p, peer in mesh.peers.items() if peer.runner.running]
        other = next(p for p in mesh.peers if p != holder)
        assert mesh.events(EventType.CLAIM, other, job=job)  # the claim reached the other
        counted.clear()
        for _ in range(int(CFG.lease_s / CFG.tick_s / 2)):  # heartbeats renew the lease
            await mesh.advance(CFG.tick_s)
        assert counted[other] == 0
        mesh.silent.add(holder)
        for _ in range(int(2 * CFG.lease_s / CFG.tick_s)):
            await mesh.advance(CFG.tick_s)
            if mesh[other].runner.running:
                break
        [failed] = mesh.events(EventType.CHUNK_FAILED, other, job=job)
        assert failed.origin == other and failed.payload["kind"] == "lease"
        assert mesh[other].runner.running and counted[other] >= 1
    finally:
        await mesh.close()


@pytest.mark.parametrize("implicit", [True, False])
async def test_three_peers_look_at_each_task_fewer_times_when_others_claims_hold(
        counted: Counter[str], implicit: bool) -> None:
    """Evaluations per task and peer on three peers with one slot each (a fake run takes
    RUN_S, far less than a lease): 4.7-4.9 with implicit splits and 5.5 with real ones before
    others' claims were watched only for their leases."""
    mesh = linked_mesh(3)
    try:
        n = 60
        job = mesh.submit("p0", tasks(n), implicit=implicit)
        await drive(mesh, job, n)
        bound = 4.3 if implicit else 5.4
        for pid in mesh.peers:
            assert counted[pid] <= bound * n, f"{pid}: {counted[pid] / n:.2f} per task"
    finally:
        await mesh.close()


async def test_a_failed_attempts_claim_is_not_looked_at_every_tick_while_the_retry_runs(
        counted: Counter[str]) -> None:
    """Once an attempt failed (or its chunk is done), its claim's lease no longer matters:
    the peers that watched it do not look at the task at every tick once that lease would
    have lapsed, while the next attempt runs elsewhere (found by review: 88 of 120 ticks)."""
    mesh = JobMesh(3, CATALOG, CFG, slots=1, batch=True)
    try:
        job = mesh.submit("p0", tasks(1), implicit=True)
        await mesh.settle()
        [holder] = [pid for pid, p in mesh.peers.items() if p.runner.running]
        for key in mesh[holder].runner.running:
            mesh[holder].runner.fail(key, kind="crash")
        await mesh.settle()
        for _ in range(8):
            await mesh.advance(CFG.tick_s)
        [retry] = [pid for pid, p in mesh.peers.items() if p.runner.running]
        assert mesh.events(EventType.CHUNK_FAILED, retry, job=job)
        counted.clear()
        for _ in range(int(3 * CFG.lease_s / CFG.tick_s)):  # the retry runs 3 leases long
            await mesh.advance(CFG.tick_s)
        others = {pid: counted[pid] for pid in mesh.peers if pid != retry}
        assert all(n <= 5 for n in others.values()), others
    finally:
        await mesh.close()


async def test_a_running_per_item_task_is_not_looked_at_every_tick_where_its_input_is_not(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A per-item task in three chunks on three peers, its chunks running long (three
    leases): a peer without the task's whole input looked at it at every tick while it ran
    (its wait for the input to split stayed in `locality.waiting`: found by review, 120
    evaluations in 120 ticks), each look walking every chunk. Now only events about the
    task wake it there: a handful of evaluations, not one per tick."""
    seen: Counter[tuple[str, str]] = Counter()
    evaluate = Scheduler._evaluate

    def spy(self: Scheduler, job: str, task: str) -> None:
        seen[(self.peer_id, task)] += 1
        evaluate(self, job, task)

    monkeypatch.setattr(Scheduler, "_evaluate", spy)
    cfg = dataclasses.replace(CFG, max_chunk_items=4)
    mesh = JobMesh(3, CATALOG, cfg, slots=1, batch=True)
    try:
        job = await split_per_item(mesh, cfg)  # and a claim of each chunk (one per peer)
        [split] = mesh.events(EventType.TASK_SPLIT, job=job, task="u")
        assert len(split.payload["chunks"]) == 3
        running = {pid for pid, p in mesh.peers.items()
                   if any(k.startswith(f"{job}/u/") for k in p.runner.running)}
        assert running == set(mesh.peers)
        lacking = [pid for pid in mesh.peers if not mesh[pid].data.is_complete(
            split.payload["input"])]
        assert lacking  # (a chunk's run fetches its items, not the whole input)
        seen.clear()
        ticks = int(3 * cfg.lease_s / cfg.tick_s)
        for _ in range(ticks):  # the chunks run 3 leases long
            await mesh.advance(cfg.tick_s)
        assert all(t == "u" for _, t in seen)
        for pid in lacking:
            assert seen[(pid, "u")] <= 5, f"{pid}: {seen[(pid, 'u')]} in {ticks} ticks"
        for p in mesh.peers.values():  # and the task still ends
            p.runner.auto = True
            for key in p.runner.running:
                p.runner.finish(key)
        await mesh.advance(cfg.tick_s)
        for pid in mesh.peers:
            assert (job, "u") in mesh[pid].state.task_done
    finally:
        await mesh.close()
