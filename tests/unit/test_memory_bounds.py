"""What a live peer keeps per finished task stays bounded (issue 11: RSS growth per 10,000
finished tasks <= 1 MB): the scheduler's, planner's and live records' tables let compacted
jobs go, and the fetcher remembers a bounded number of complete DAGs. In-memory mesh with a
fake clock (peer/jobs/sim.py); no sleeps."""

from __future__ import annotations

from typing import Any

from peer.ipfs.fetch import Fetcher, RecentSet
from peer.ipfs.store import StoreConfig
from peer.jobs.ports import SchedulerConfig
from peer.jobs.scheduler import Scheduler
from peer.jobs.sim import JobMesh
from peer.log import EventType
from tasks import registry

CATALOG = registry.load(("tests.fixture_tasks",))
CFG = SchedulerConfig(store=StoreConfig("/nonexistent"), stagger_s=0.05, tick_s=0.25)
RECENT_JOBS = 2  # finished jobs left in memory (the recent history); older ones compacted


def _pipeline(tag: int, n: int) -> list[dict[str, Any]]:
    """n writers, the last one's files upper-cased per item by "u" (the planner indexes
    dependents, splits "u" in chunks)."""
    out: list[dict[str, Any]] = [{"name": f"w{i}", "call": "T_WRITE",
                                  "params": {"files": 2, "tag": f"{tag}/{i}"}}
                                 for i in range(n)]
    out.append({"name": "u", "call": "T_UPPER", "params": {}, "depends": [f"w{n - 1}"]})
    return out


def _sizes(s: Scheduler) -> dict[str, int]:
    """The per-job and per-task tables of a scheduler that finished tasks pass through."""
    p = s.planner
    return {"workflows": len(p._workflows), "users": len(p._users), "keys": len(p._keys),
            "listings": len(p._listings), "live_logs": len(s.live.logs),
            "live_metrics": len(s.live.metrics), "ready_since": len(s._ready_since),
            "claim_seen": len(s._claim_seen), "starved": len(s._starved),
            "waiting": len(s.locality.waiting), "stalled": len(s.locality.stalled),
            "partial_due": len(s._partial_due), "partial_sent": len(s._partial_sent)}


async def test_the_scheduler_keeps_nothing_of_compacted_jobs() -> None:
    """Thirty jobs of five tasks run one after another on two peers; every finished job
    beyond the last RECENT_JOBS is compacted (as the Compactor does: MeshState.compact).
    Every table stays within the jobs still in memory, whatever the number run (before:
    the planner's workflows and the live records grew by one per job and task)."""
    mesh = JobMesh(2, CATALOG, CFG, auto=True, batch=True)
    try:
        finished: list[str] = []
        n = 4
        for j in range(30):
            job = mesh.submit(f"p{j % 2}", _pipeline(j, n))
            for _ in range(200):
                await mesh.advance(0.25)
                if all((job, "u") in p.state.task_done for p in mesh.peers.values()):
                    break
            else:
                raise AssertionError(f"job {j} did not finish")
            finished.append(job)
            old, finished = finished[:-RECENT_JOBS], finished[-RECENT_JOBS:]
            for p in mesh.peers.values():
                p.state.compact(old)
            await mesh.advance(CFG.tick_s)  # a tick sweeps
        in_memory = RECENT_JOBS  # every job is finished: only the recent ones are held
        for pid, p in mesh.peers.items():
            assert len(p.state.compacted) == 30 - RECENT_JOBS
            sizes = _sizes(p.sched)
            assert sizes["workflows"] <= in_memory and sizes["users"] <= in_memory, (pid, sizes)
            for name, size in sizes.items():  # n + 1 tasks per job
                assert size <= in_memory * (n + 1), (pid, name, sizes)
        assert sum(len(p.sched.live.logs) for p in mesh.peers.values()) > 0  # it did record
    finally:
        await mesh.close()


async def test_a_late_task_done_of_a_compacted_job_wakes_nothing() -> None:
    """A TASK_DONE of a job already compacted (its workflow no longer in memory) arrives:
    the scheduler looks for its dependents without bringing the job back nor failing."""
    mesh = JobMesh(1, CATALOG, CFG, auto=True)
    try:
        job = mesh.submit("p0", _pipeline(0, 1))
        for _ in range(200):
            await mesh.advance(0.25)
            if (job, "u") in mesh["p0"].state.task_done:
                break
        p = mesh["p0"]
        p.state.compact([job])
        await mesh.advance(CFG.tick_s)
        assert job not in p.sched.planner._workflows
        mesh.emit("p0", EventType.TASK_DONE, {"job": job, "task": "w0", "output": "x",
                                             "key": None})
        await mesh.advance(CFG.tick_s)
        assert p.sched.planner.dependents(job, "w0") == []
        assert job not in p.sched.planner._workflows and job not in p.state.jobs
    finally:
        await mesh.close()


def test_a_recent_set_keeps_the_dags_used_last() -> None:
    memo = RecentSet(max_entries=3)
    for c in ("a", "b", "c"):
        memo.add(c)
    assert "a" in memo  # used: now the newest
    memo.add("d")  # "b" is the oldest used: it goes
    assert len(memo) == 3
    assert "b" not in memo and all(c in memo for c in ("a", "c", "d"))
    for i in range(10_000):
        memo.add(f"cid{i}")
    assert len(memo) == 3
    memo.clear()
    assert len(memo) == 0


def test_a_fetcher_remembers_a_bounded_number_of_complete_dags() -> None:
    """A peer marks every output it makes complete: after many, the memo holds at most its
    bound (a forgotten one is walked in the store again when asked)."""
    f = Fetcher(store=None, urls=dict, providers=lambda c: (), self_id="p0")  # type: ignore[arg-type]
    for i in range(3 * f.complete.max_entries):
        f.mark(f"bafk{i}")
    assert len(f.complete) == f.complete.max_entries
    assert f.is_complete(f"bafk{3 * f.complete.max_entries - 1}")


async def test_the_replicator_remembers_a_bounded_number_of_outputs() -> None:
    """Every output replicated here is noted (so a repeated TASK_DONE is not fetched
    again); after many, the note holds at most its bound (`_wanted` still refuses an output
    this peer provides)."""
    from tests.unit.test_replicate_repair import Fakes

    f = Fakes()
    f.peers = {"p1": {}}
    r = f.replicator([])
    n = 3 * r.replicated.max_entries
    await r._replicate({f"bafy{i}": ("p1", 1) for i in range(n)})
    assert len(f.pinned) == n
    assert len(r.replicated) == r.replicated.max_entries
    assert not r._wanted("bafy0")  # forgotten by the note, known provided by the log
    await r.close()
