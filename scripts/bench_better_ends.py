"""CPU of a member's looks at ended lanes jobs for a better end (`Scheduler._better_ends`,
`ending.better_end`; review r2 of session 46, L2), on one in-memory peer (fake clock): J
jobs of T tasks ended `failed` (one task failed for good, the others done) by this peer,
their events folded here; with --chain, each task depends on the one before and the first
failed for good (the others blocked behind it, never run: the usual failed DAG job; review
r2 of session 47, finding 4). Two figures: the restart's look at every one of them
(`recover`, then one `_better_ends`), and the look after one more lane event of each job
is noted (another member's TASK_DONE of a task done here: a heal's straggler that changes
nothing; with --chain, its rival TASK_SPLIT of t0), the steady cost per event. Run it
against a tree with PYTHONPATH=tree:

    PYTHONPATH=$PWD .venv/bin/python scripts/bench_better_ends.py --jobs 50 --tasks 200
    PYTHONPATH=$PWD .venv/bin/python scripts/bench_better_ends.py --jobs 20 --tasks 1000 --chain
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from peer.ipfs.store import StoreConfig
from peer.jobs.ending import job_ended
from peer.jobs.ports import SchedulerConfig
from peer.jobs.sim import JobMesh
from peer.jobs.spec import from_obj
from peer.log import Event, EventType
from peer.log.ids import bind
from peer.log.lanes import lane
from tasks import registry

CATALOG = registry.load(("tests.fixture_tasks",))
CFG = SchedulerConfig(store=StoreConfig("/nonexistent"), lease_s=10.0, max_attempts=3)
CID = "bafkreiaheqdfvsfwin2qysg2nd3n4upuu7oyiwtnuvai2oi3lesbeuh42q"


def job_events(me: str, other: str, job: str, n: int, seq: int,
               chain: bool = False) -> list[Event]:
    """A job of `n` tasks submitted by `me` (members `me`, `other`) as its mesh stream's
    `seq`, each split and done in `me`'s lane but the last, which failed for good; if
    `chain`, each task depends on the one before and only t0 ran (split, failed for good)."""
    wf = from_obj({"name": "w", "tasks": [
        {"name": f"t{i}", "call": "T_WRITE", "params": {"files": 1},
         **({"depends": [f"t{i - 1}"]} if chain and i else {})} for i in range(n)]},
                  CATALOG).to_json()
    out = [Event(me, seq, 100 << 16, EventType.JOB_SUBMITTED, {
        "job": job, "workflow": wf, "local": False, "claimed": False, "members": [me, other]})]
    ln, seq, hlc = lane(me, job), 0, 101 << 16
    for i in range(1 if chain else n):
        seq, hlc = seq + 1, hlc + 1
        out.append(Event(ln, seq, hlc, EventType.TASK_SPLIT, {
            "job": job, "task": f"t{i}", "input": None, "chunks": [[]], "kept": {}}))
        seq, hlc = seq + 1, hlc + 1
        if i < n - 1 and not chain:
            out.append(Event(ln, seq, hlc, EventType.TASK_DONE, {
                "job": job, "task": f"t{i}", "output": CID, "key": f"k{job}{i}",
                "cached": False}))
        else:
            out.append(Event(ln, seq, hlc, EventType.CHUNK_FAILED, {
                "job": job, "task": f"t{i}", "split": [ln, seq - 1], "chunk": 0,
                "attempt": 0, "kind": "error", "error": "bad input"}))
    return out


async def run(jobs: int, tasks: int, chain: bool = False) -> dict[str, Any]:
    mesh = JobMesh(2, CATALOG, CFG, lanes=True)
    me, other = mesh.peers
    p = mesh[me]
    try:
        names = [bind(f"j{i + 1:012x}", me) for i in range(jobs)]
        seq = 1000  # (past the mesh's own events of `me`)
        for job in names:
            for ev in job_events(me, other, job, tasks, seq, chain):
                p.state.apply(ev)
            payload = job_ended(p.state, job, CFG.max_attempts)
            assert payload is not None and payload["state"] == "failed"
            p.state.apply(Event(me, seq + 1, (200 << 16) + seq, EventType.JOB_ENDED, payload))
            seq += 2
        sched = p.sched
        sched.recover()
        restart = ticks(sched, mesh.clock())
        assert not sched._better
        # One more lane event of each job noted: another member's TASK_DONE of t0 (with
        # --chain: its rival TASK_SPLIT of t0, failed here)
        late = [Event(lane(other, job), 1, 150 << 16, EventType.TASK_SPLIT, {
            "job": job, "task": "t0", "input": None, "chunks": [[]], "kept": {}})
            if chain else Event(lane(other, job), 1, 150 << 16, EventType.TASK_DONE, {
                "job": job, "task": "t0", "output": CID, "key": f"k{job}0", "cached": False})
            for job in names]
        for ev in late:
            p.state.apply(ev)
            sched.poke(ev)
        look = ticks(sched, mesh.clock())
        assert not sched._better
    finally:
        await mesh.close()
    return {"jobs": jobs, "tasks": tasks, "chain": chain, "restart_ms": restart[0],
            "restart_ticks": restart[1], "restart_max_tick_ms": restart[2],
            "look_after_one_event_ms": look[0], "per_job_look_us": look[0] * 1000 / jobs}


def ticks(sched: Any, now: float) -> tuple[float, int, float]:
    """`_better_ends` until no ended job is left to look at (a tick may leave some for the
    next): CPU ms in all, the ticks, the longest tick's ms."""
    total, n, longest = 0.0, 0, 0.0
    while sched._reend and n < 10_000:
        start = time.process_time()
        sched._better_ends(now)
        ms = (time.process_time() - start) * 1000
        total, n, longest = total + ms, n + 1, max(longest, ms)
    return total, n, longest


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--jobs", type=int, default=50)
    ap.add_argument("--tasks", type=int, default=200)
    ap.add_argument("--chain", action="store_true",
                    help="each task depends on the one before; t0 failed, the rest blocked")
    args = ap.parse_args()
    r = asyncio.run(run(args.jobs, args.tasks, args.chain))
    print(f"{r['jobs']} jobs x {r['tasks']} tasks{' (a chain)' if r['chain'] else ''} "
          f"ended failed: restart's looks "
          f"{r['restart_ms']:.1f} ms in {r['restart_ticks']} tick(s), the longest "
          f"{r['restart_max_tick_ms']:.1f} ms; looks after one event of each job "
          f"{r['look_after_one_event_ms']:.2f} ms ({r['per_job_look_us']:.1f} us a job)")


if __name__ == "__main__":
    main()
