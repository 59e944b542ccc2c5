"""What a deletion's durability costs (docs/architecture.md, Compaction, item 9: a JOB_DELETED
is fsynced before our heads count it). In process, one peer with a running loop and no
mesh: `--jobs` finished jobs of another origin are merged, then each job's JOB_DELETED
arrives alone in its frame (the worst case: one fsync each), then as many of ours are made
(`Janitor.delete_job`, then the flush). Reported per deletion, medians: the time the loop
spends in `Node.merge` (or the delete and flush), and the time until `Node.heads` counts it
(what the tombstone bound and acknowledgements read; the fsync runs in a thread).

    PYTHONPATH=$PWD .venv/bin/python scripts/bench_delete_durable.py --jobs 200

Run it with PYTHONPATH on a `git archive` copy of db471b6 for the figures before.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_restart_compacted import ORIGIN, history
from scriptlib import machine

from peer.config import PeerConfig
from peer.log import Event, EventType
from peer.node import Node


class _Gossip:
    address = "127.0.0.1:1"

    def broadcast(self, events: Any) -> None:
        pass

    def acknowledge(self, origins: Any) -> None:
        pass

    def live_peers(self) -> dict[str, Any]:
        return {}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="banzai-deldur-", dir=args.dir) as tmp:
        node = Node(PeerConfig(data_dir=Path(tmp) / "peer", slots=1, mdns=False,
                               compact_recent_tasks=100_000))
        node.listeners[:] = [node.compactor.note]
        node.gossip = _Gossip()  # type: ignore[assignment]
        node._loop = asyncio.get_running_loop()
        try:
            evs = history(2 * args.jobs, 1)
            node.merge(evs)
            await asyncio.gather(*node._bg)
            seq = len(evs)
            theirs_loop, theirs_counted = [], []
            for j in range(args.jobs):
                seq += 1
                ev = Event(ORIGIN, seq, evs[-1].hlc + seq, EventType.JOB_DELETED,
                           {"job": f"job{j:05d}", "reason": "bench"})
                t0 = time.perf_counter()
                node.merge([ev])
                t1 = time.perf_counter()
                while node.heads().get(ORIGIN, 0) < seq:
                    await asyncio.gather(*node._bg)
                    await asyncio.sleep(0)
                theirs_loop.append(t1 - t0)
                theirs_counted.append(time.perf_counter() - t0)
            ours_loop, ours_counted = [], []
            for j in range(args.jobs, 2 * args.jobs):
                t0 = time.perf_counter()
                ev = node.janitor.delete_job(f"job{j:05d}", "bench")
                if ev is None:  # (the previous release returns nothing: our last event)
                    ev = node._unflushed[-1]
                node.flush()
                t1 = time.perf_counter()
                while node.heads().get(node.peer_id, 0) < ev.seq:
                    await asyncio.gather(*node._bg)
                    await asyncio.sleep(0)
                ours_loop.append(t1 - t0)
                ours_counted.append(time.perf_counter() - t0)
        finally:
            node.log.close()

    def ms(v: list[float]) -> float:
        return round(statistics.median(v) * 1000, 3)

    return {"machine": machine(), "jobs": args.jobs,
            "received_loop_ms": ms(theirs_loop), "received_counted_ms": ms(theirs_counted),
            "ours_loop_ms": ms(ours_loop), "ours_counted_ms": ms(ours_counted)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=200, help="deletions of each kind")
    ap.add_argument("--dir", default=None, help="where the log is made (its disk's fsync)")
    print(asyncio.run(run(ap.parse_args())))


if __name__ == "__main__":
    main()
