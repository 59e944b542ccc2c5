#!/usr/bin/env python3
"""How often each peer's scheduler evaluates a task (issue 12: the work every peer repeats),
on the in-memory mesh with a fake clock (peer/jobs/sim.py, as tests/unit/test_scheduler_load.py
drives it): n independent tasks, one slot per peer, runs of 0.05 s, links of 2 ms. Prints
evaluations per task and peer, with implicit splits (tasks without input) and with real ones.
With --per-item K: also one per-item task of K chunks (4 items each) whose chunks run
--run-s long, and how often each peer evaluates it meanwhile (the peers without its whole
input used to at every tick), and the CPU time of those ticks for the whole simulated mesh
(noisy: a figure, not a test). An A/B runs a copy of this script inside each source tree
(it imports the tree it sits in, whatever PYTHONPATH says).

    .venv/bin/python scripts/sim_evaluations.py [--peers 3] [-n 60] [--per-item 30]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from peer.jobs.scheduler import Scheduler
from peer.jobs.sim import JobMesh
from peer.log import EventType
from tests.unit import test_scheduler_load as load


async def per_task(peers: int, n: int, implicit: bool) -> dict[str, float]:
    seen: Counter[str] = Counter()
    evaluate = Scheduler._evaluate

    def spy(self: Scheduler, job: str, task: str) -> None:
        seen[self.peer_id] += 1
        evaluate(self, job, task)

    Scheduler._evaluate = spy  # type: ignore[method-assign]
    mesh = load.linked_mesh(peers)
    try:
        job = mesh.submit("p0", load.tasks(n), implicit=implicit)
        await load.drive(mesh, job, n)
    finally:
        Scheduler._evaluate = evaluate  # type: ignore[method-assign]
        await mesh.close()
    return {p: round(seen[p] / n, 2) for p in sorted(mesh.peers)}


async def per_item(peers: int, chunks: int, run_s: float) -> dict[str, Any]:
    """Evaluations of one running per-item task, per peer, in `run_s` of fake time (ticks of
    tick_s) while its chunks run (one per peer: one slot each), and what the task was."""
    seen: Counter[str] = Counter()
    evaluate = Scheduler._evaluate

    def spy(self: Scheduler, job: str, task: str) -> None:
        if task == "u":
            seen[self.peer_id] += 1
        evaluate(self, job, task)

    Scheduler._evaluate = spy  # type: ignore[method-assign]
    cfg = dataclasses.replace(load.CFG, max_chunk_items=4)
    mesh = JobMesh(peers, load.CATALOG, cfg, slots=1, batch=True)
    try:
        job = mesh.submit("p0", [
            {"name": "w", "call": "T_WRITE", "params": {"files": 4 * chunks, "tag": "in"}},
            {"name": "u", "call": "T_UPPER", "params": {}, "depends": ["w"]}])
        await mesh.settle()
        for p in mesh.peers.values():
            for key in p.runner.running:
                p.runner.finish(key)
        for _ in range(8):  # the split, and a chunk claimed by each peer
            await mesh.advance(cfg.tick_s)
        [split] = mesh.events(EventType.TASK_SPLIT, job=job, task="u")
        inp = split.payload["input"]
        lacking = sorted(pid for pid, p in mesh.peers.items() if not p.data.is_complete(inp))
        seen.clear()
        ticks = round(run_s / cfg.tick_s)
        t0 = time.process_time()
        for _ in range(ticks):
            await mesh.advance(cfg.tick_s)
        cpu_s = time.process_time() - t0
    finally:
        Scheduler._evaluate = evaluate  # type: ignore[method-assign]
        await mesh.close()
    return {"chunks": len(split.payload["chunks"]), "ticks": ticks,
            "without the input": lacking,
            "evaluations": {p: seen[p] for p in sorted(mesh.peers)}, "cpu_s": cpu_s}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--peers", type=int, default=3)
    ap.add_argument("-n", type=int, default=60)
    ap.add_argument("--per-item", type=int, default=0, metavar="K",
                    help="also a per-item task of K chunks (0: not)")
    ap.add_argument("--run-s", type=float, default=30.0,
                    help="how long its chunks run, in fake seconds")
    a = ap.parse_args(argv)
    out: dict[str, Any] = {}
    for implicit in (True, False):
        out["implicit splits" if implicit else "real splits"] = asyncio.run(
            per_task(a.peers, a.n, implicit))
    for k, v in out.items():
        print(f"{k}: evaluations per task and peer {v}")
    if a.per_item > 0:
        r = asyncio.run(per_item(a.peers, a.per_item, a.run_s))
        print(f"per-item task: {r['chunks']} chunks, evaluations per peer in {r['ticks']} "
              f"ticks {r['evaluations']} (without its whole input: "
              f"{', '.join(r['without the input']) or 'none'}); the mesh's CPU time in "
              f"them {r['cpu_s']:.3f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
