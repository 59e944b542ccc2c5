"""Per-tick CPU of a peer's scheduler step with N running lanes jobs held, lanes on
(docs/design/partial-replication.md; review r1 risk 4), on the in-memory job mesh: as a
non-member (p2) and as a member that is not the job's home (p1), with no event and no
change of the live peers between ticks. Run it against a tree with PYTHONPATH=tree:

    PYTHONPATH=$PWD .venv/bin/python scripts/bench_lanes_tick.py 1000 5000
"""

from __future__ import annotations

import asyncio
import sys
import time

from peer.ipfs.store import StoreConfig
from peer.jobs.ports import SchedulerConfig
from peer.jobs.sim import JobMesh
from tasks import registry

CATALOG = registry.load(("tests.fixture_tasks",))
CFG = SchedulerConfig(store=StoreConfig("/nonexistent"), lease_s=10.0, stagger_s=0.05,
                      max_attempts=3)
CHAIN = [{"name": "a", "call": "T_WRITE", "params": {"files": 1}},
         {"name": "b", "call": "T_WRITE", "params": {"files": 1}, "depends": ["a"]}]


async def per_tick_ms(n_jobs: int, ticks: int = 40) -> dict[str, float]:
    """CPU ms per tick of the non-member's and a member's step with `n_jobs` jobs."""
    mesh = JobMesh(3, CATALOG, CFG, lanes=True)
    p0, p1, p2 = mesh.peers
    for _ in range(n_jobs):
        mesh.submit(p0, CHAIN, members=[p0, p1])
    mesh.deliver()
    out = {}
    try:
        for name, pid in (("non-member", p2), ("member", p1)):
            sched = mesh[pid].sched
            for _ in range(3):  # (the first ticks look at the jobs the events brought)
                mesh.clock.advance(CFG.tick_s)
                sched.step()
            start = time.process_time()
            for _ in range(ticks):
                mesh.clock.advance(CFG.tick_s)
                sched.step()
            out[name] = (time.process_time() - start) / ticks * 1000
    finally:
        await mesh.close()
    return out


def main() -> None:
    for n in map(int, sys.argv[1:] or ["1000"]):
        ms = asyncio.run(per_tick_ms(n))
        print(n, " ".join(f"{k} {v:.2f} ms/tick" for k, v in ms.items()))


if __name__ == "__main__":
    main()
