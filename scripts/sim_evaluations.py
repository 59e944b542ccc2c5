#!/usr/bin/env python3
"""How often each peer's scheduler evaluates a task (issue 12: the work every peer repeats),
on the in-memory mesh with a fake clock (peer/jobs/sim.py, as tests/unit/test_scheduler_load.py
drives it): n independent tasks, one slot per peer, runs of 0.05 s, links of 2 ms. Prints
evaluations per task and peer, with implicit splits (tasks without input) and with real ones.
An A/B runs it once per source tree (`PYTHONPATH=TREE`).

    .venv/bin/python scripts/sim_evaluations.py [--peers 3] [-n 60]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from peer.jobs.scheduler import Scheduler
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--peers", type=int, default=3)
    ap.add_argument("-n", type=int, default=60)
    a = ap.parse_args(argv)
    out: dict[str, Any] = {}
    for implicit in (True, False):
        out["implicit splits" if implicit else "real splits"] = asyncio.run(
            per_task(a.peers, a.n, implicit))
    for k, v in out.items():
        print(f"{k}: evaluations per task and peer {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
