"""What a start costs with compacted jobs' events still in the log (a live member lacks
them: they wait for the horizon): `Node(cfg)`, the replay and `Compactor.settle` (since
session 28 it also notes each such event under its job's record, `JobIndex.add_ids`, which
adds none that the record lists). The data dir: `--jobs` finished jobs of `--tasks` ECHO tasks
(5 events a task), all compacted. The minimum of `--repeat` starts of the same data dir.

    PYTHONPATH=$PWD .venv/bin/python scripts/bench_restart_compacted.py --jobs 200 --tasks 50

Run it with PYTHONPATH on a `git archive` copy of db471b6 for the figures before.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scriptlib import machine

from peer.config import PeerConfig
from peer.log import Event, EventType
from peer.node import Node

ORIGIN = "bench0000000000000000"


def history(jobs: int, tasks: int) -> list[Event]:
    out: list[Event] = []
    hlc = (int(time.time() * 1000) - 60_000) << 16

    def add(typ: EventType, payload: dict[str, Any]) -> list[Any]:
        nonlocal hlc
        hlc += 1
        out.append(Event(ORIGIN, len(out) + 1, hlc, typ, payload))
        return [ORIGIN, len(out)]

    for j in range(jobs):
        job = f"job{j:05d}"
        add(EventType.JOB_SUBMITTED, {"job": job, "workflow": {"name": job, "tasks": [
            {"name": f"t{i}", "call": "ECHO", "params": {"text": f"{j}/{i}"}}
            for i in range(tasks)]}})
        for i in range(tasks):
            split = add(EventType.TASK_SPLIT, {"job": job, "task": f"t{i}", "input": None,
                                               "chunks": [[]]})
            base = {"job": job, "task": f"t{i}", "split": split, "chunk": 0, "attempt": 0}
            add(EventType.CLAIM, base)
            add(EventType.CHUNK_DONE, {**base, "output": f"bafkreiout{j}x{i}", "cache": {}})
            add(EventType.TASK_DONE, {"job": job, "task": f"t{i}",
                                      "output": f"bafkreiout{j}x{i}", "key": None})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=200)
    ap.add_argument("--tasks", type=int, default=50)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="banzai-restart-") as tmp:
        cfg = PeerConfig(data_dir=Path(tmp) / "peer", slots=1, mdns=False,
                         compact_recent_tasks=0)
        n = Node(cfg)
        n.listeners[:] = [n.compactor.note]
        n.compactor.vvs = lambda: [dict(n.heads()), {}]  # a member lacks them: kept
        evs = history(args.jobs, args.tasks)
        n.merge(evs)
        n.catchup.compact()
        assert len(n.index) == args.jobs
        n.log.close()
        best = float("inf")
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            n = Node(cfg)
            best = min(best, time.perf_counter() - t0)
            n.log.close()
    print({"machine": machine(), "jobs": args.jobs, "events": len(evs),
           "start_s": round(best, 3)})


if __name__ == "__main__":
    main()
