"""A run is queued behind a busy slot (`queue_ahead`) only while a run in the slots is of a
call that ran short here: one queued behind a long run (a task held open, a gate) would keep
its claim, leased and reported running, until that run ends, and its job could not end
meanwhile (session 51, helper f: test_lanes_compat's stall beside a peer of 2b5ab6b)."""

from __future__ import annotations

from typing import Any

from peer.ipfs.store import StoreConfig
from peer.jobs.ports import SchedulerConfig
from peer.jobs.sim import JobMesh
from peer.log import EventType
from peer.rendezvous import rendezvous
from tasks import registry

CATALOG = registry.load(("tests.fixture_tasks",))
CFG = SchedulerConfig(store=StoreConfig("/nonexistent"), stagger_s=0.05, tick_s=0.25,
                      split_wait_s=0.2, queue_ahead=1)


def _firsts(job: str, peer: str, n: int, call: str = "T_WRITE") -> list[dict[str, Any]]:
    """n tasks of `call` that `peer` comes first for of p0 and p1 (rendezvous)."""
    names = [f"x{i:03d}" for i in range(200)
             if rendezvous(f"{job}/x{i:03d}", ["p0", "p1"])[0] == peer][:n]
    params: dict[str, Any] = {"seconds": 3600} if call == "T_SLEEP" else {"files": 1}
    return [{"name": x, "call": call, "params": {**params, "tag": x} if call == "T_WRITE"
             else params} for x in names]


async def test_no_short_run_is_queued_behind_a_long_one() -> None:
    """p0 ran T_WRITE short, then runs a long T_SLEEP in its one slot; a job of T_WRITE tasks
    p0 comes first for is all run by p1 (on the base, p0 queued one behind the sleep and
    held it until the sleep ended: the job was not done)."""
    mesh = JobMesh(2, CATALOG, CFG, slots=1)
    try:
        p0, p1 = mesh["p0"], mesh["p1"]
        mesh.submit("p0", _firsts("j1", "p0", 1), implicit=True)
        await mesh.settle()
        [warm] = p0.runner.running
        p0.runner.finish(warm)  # T_WRITE ran short here (10 ms)
        await mesh.settle()
        mesh.submit("p0", _firsts("j2", "p0", 1, "T_SLEEP"), implicit=True)
        await mesh.settle()
        [hold] = p0.runner.running  # the slot is held for as long as the sleep lasts
        job = mesh.submit("p0", _firsts("j3", "p0", 4), implicit=True)
        for _ in range(200):  # (bounded: 50 s of fake time)
            await mesh.advance(0.25)
            for key in p1.runner.running:
                p1.runner.finish(key)
            if len(mesh.events(EventType.TASK_DONE, "p1", job=job)) == 4:
                break
        assert p0.runner.running == [hold]  # nothing queued behind the sleep
        assert len(mesh.events(EventType.TASK_DONE, "p1", job=job)) == 4
    finally:
        await mesh.close()


def test_a_short_run_is_counted_in_the_slots_only_when_it_cannot_be_waiting() -> None:
    """Review r2 of session 51, L2: `frees_soon` read any active run, so a short run still
    fetching (not executing), or one waiting in the executor behind a long one, let more be
    queued behind that long run. A short one is surely in a slot only when more short ones
    execute than can wait behind the slots."""
    from peer.jobs.runs import Run
    from peer.jobs.spec import TaskSpec

    mesh = JobMesh(1, CATALOG, CFG, slots=1)
    runs = mesh["p0"].sched._runs
    runs.last_s.update({"T_SLEEP": 3600.0, "T_WRITE": 0.01})

    def run(key: str, call: str, executing: bool) -> Run:
        r = Run(key, ("j", 0), CATALOG[call], TaskSpec(key, call, {}, ()))
        r.executing = executing
        runs.active[key] = r  # type: ignore[index]
        return r

    run("long", "T_SLEEP", True)
    run("fetching", "T_WRITE", False)
    assert not runs.frees_soon  # (before: True, from the short run still fetching)
    run("waiting", "T_WRITE", True)  # (1 slot, 2 executing: the short one may be the 2nd)
    assert not runs.frees_soon  # (before: True)
    del runs.active["long"]  # type: ignore[arg-type]
    assert runs.frees_soon  # (the short one executes, nothing else: it holds the slot)
