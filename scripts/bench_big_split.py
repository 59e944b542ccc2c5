"""What a member's split of 300,000 empty chunks and 6,000 claims of them costs a peer's
scheduler and fold, in process (tests/unit/test_big_splits.py's job; the scheduler of
peer.jobs.sim, a fake clock, CPU time by `time.process_time`):

- idle: the member is silent and no peer here runs its call; the CPU of 120 ticks of
  0.25 s (30 s of a peer's idle loop), as a share of those 30 s;
- eval: a peer that runs the call (2 slots, both busy with chunks of it): one evaluation
  of the task (the look an event about it, or a lapsed lease, makes);
- delete: a JOB_DELETED of a small finished job while the split's claims are in memory.

    .venv/bin/python scripts/bench_big_split.py --ab /tmp/old_tree   # both, side by side
    PYTHONPATH=TREE .venv/bin/python scripts/bench_big_split.py --json  # one tree
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

N, CLAIMS = 300_000, 6_000


def _story(call: str) -> tuple[list[Any], list[Any]]:
    from peer.log import Event, EventType

    events: list[Any] = []
    seqs: dict[str, int] = {}

    def add(typ: Any, origin: str = "fz", **payload: Any) -> Any:
        seq = seqs[origin] = seqs.get(origin, 0) + 1
        ev = Event(origin, seq, (1_700_000_000_000 + len(events)) << 16, typ, payload)
        events.append(ev)
        return ev

    add(EventType.MEMBER, name="fz", http="", calls=[call], slots=1, cores=1, mem_mb=1,
        gpu=False)
    for job in ("j", "small"):
        add(EventType.JOB_SUBMITTED, job=job, workflow={"name": "w", "tasks": [
            {"name": "t", "call": call, "params": {}, "depends": []}]})
    split = add(EventType.TASK_SPLIT, job="j", task="t", input=None, chunks=[[]] * N)
    small = add(EventType.TASK_SPLIT, job="small", task="t", input=None, chunks=[[]] * 3)
    for c in range(3):
        add(EventType.CLAIM, job="small", task="t", split=list(small.id), chunk=c, attempt=0)
    for c in range(CLAIMS):
        add(EventType.CLAIM, job="j", task="t", split=list(split.id), chunk=c, attempt=0)
    return events, add


def _mesh(call: str) -> tuple[Any, Any, Any]:
    from peer.ipfs.store import StoreConfig
    from peer.jobs.ports import SchedulerConfig
    from peer.jobs.sim import JobMesh
    from tasks import registry

    cfg = SchedulerConfig(store=StoreConfig("/nonexistent"), tick_s=0.25, lease_s=10.0)
    mesh = JobMesh(1, registry.load(("tests.fixture_tasks",)), cfg, slots=2)
    p = mesh["p0"]
    events, add = _story(call)
    for ev in events:
        p.state.apply(ev)
        p.sched.poke(ev)
    p.sched.step()
    return mesh, p, add


async def measure() -> dict[str, float]:
    from peer.log import EventType

    out: dict[str, float] = {}
    mesh, p, add = _mesh("FZ_NOPE")  # idle: a call nobody here runs
    mesh.clock.advance(20.0)  # the claims' leases lapsed
    p.sched.step()
    t0 = time.process_time()
    for _ in range(120):
        mesh.clock.advance(0.25)
        p.sched.step()
    out["idle_cpu_pct"] = 100 * (time.process_time() - t0) / 30.0
    t0 = time.process_time()
    p.state.apply(add(EventType.JOB_DELETED, job="small", reason="bench"))
    out["delete_ms"] = 1000 * (time.process_time() - t0)

    mesh, p, _ = _mesh("T_WRITE")  # a peer that runs the call: its 2 slots busy with it
    times = []
    for _ in range(5):
        t0 = time.process_time()
        p.sched._evaluate("j", "t")
        times.append(time.process_time() - t0)
    out["eval_ms"] = 1000 * statistics.median(times)
    out["claims_made"] = sum(1 for e in p.emitted if e.type == EventType.CLAIM)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ab", help="a tree (a `git archive` of the base) to measure first")
    ap.add_argument("--json", action="store_true", help="measure this tree, print JSON")
    a = ap.parse_args()
    if a.json or not a.ab:
        print(json.dumps(asyncio.run(measure())))
        return
    here = str(Path(__file__).resolve().parent.parent)
    rows = {}
    for name, tree in (("base", a.ab), ("this tree", here)):
        env = {**os.environ, "PYTHONPATH": tree}
        got = subprocess.run([sys.executable,
                              str(Path(__file__).resolve()), "--json"], cwd=tree, env=env,
                             capture_output=True, text=True, check=True)
        rows[name] = json.loads(got.stdout.strip().splitlines()[-1])
    print("| | " + " | ".join(rows) + " |\n| --- | --- | --- |")
    for k in rows["base"]:
        print(f"| {k} | " + " | ".join(f"{r[k]:.3f}" for r in rows.values()) + " |")


if __name__ == "__main__":
    main()
