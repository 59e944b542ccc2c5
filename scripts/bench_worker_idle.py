"""Wake-ups of idle executor workers: the voluntary context switches of every thread of each
worker of a started 2-slot executor, over SECONDS with no run, from 1 s after the start.

    PYTHONPATH=TREE python scripts/bench_worker_idle.py [SECONDS]
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from peer.jobs.executor import Executor, ExecutorConfig


def switches(pid: int) -> int:
    """Voluntary context switches of every thread of process `pid` so far."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        status = Path(f"/proc/{pid}/task/{tid}/status").read_text()
        total += int(status.split("voluntary_ctxt_switches:")[1].split()[0])
    return total


async def main(secs: float) -> None:
    async with Executor(ExecutorConfig(slots=2, tmpfs_check_s=None)) as ex:
        pids = [w.proc.pid for w in ex._workers if w.proc.pid is not None]
        await asyncio.sleep(1.0)
        before = {p: switches(p) for p in pids}
        await asyncio.sleep(secs)
        after = {p: switches(p) for p in pids}
    per = [(after[p] - before[p]) / secs for p in pids]
    print(f"{sys.modules['peer'].__file__}: idle wake-ups/s per worker "
          + ", ".join(f"{x:.2f}" for x in per))


if __name__ == "__main__":
    asyncio.run(main(float(sys.argv[1]) if len(sys.argv) > 1 else 20.0))
