"""How long a read of a task log's last 1,000 lines takes when one failed run's record is
~21 MB (over the record cache's 8 MiB budget: session 52, helper c): the first read and five
more, through a real Node's app (not started; aiohttp's test client, loopback only).

    env PYTHONPATH=. .venv/bin/python scripts/bench_record_tail.py
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
from pathlib import Path

from peer.config import PeerConfig
from peer.log import Event, EventType
from peer.node import Node
from tests.unit.api_client import api_client
from tests.unit.test_compaction import ORIGIN, history

LINES = 200_000  # of 100 bytes each: within a run record's bounds at the default log bound
READS = 6


async def main() -> None:
    with tempfile.TemporaryDirectory() as d:
        n = Node(PeerConfig(data_dir=Path(d), slots=1, mdns=False))
        n.listeners[:] = [n.compactor.note]  # (no scheduler running)
        evs = history(jobs=0, per_job=1, live=1)
        data = json.dumps({"log": [f"{i:08d} " + "x" * 91 for i in range(LINES)],
                           "metrics": []}).encode()
        cid = n.store.add_bytes(data)
        hlc, seq = evs[-1].hlc, evs[-1].seq
        base = {"job": "job000", "task": "t0", "split": [ORIGIN, seq + 1], "chunk": 0,
                "attempt": 0}
        evs += [Event(ORIGIN, seq + 1, hlc + 1, EventType.TASK_SPLIT,
                      {"job": "job000", "task": "t0", "input": None, "chunks": [[]]}),
                Event(ORIGIN, seq + 2, hlc + 2, EventType.CLAIM, base),
                Event(ORIGIN, seq + 3, hlc + 3, EventType.CHUNK_FAILED,
                      {**base, "kind": "error", "error": "boom", "log": cid})]
        n.merge(evs)
        times = []
        async with api_client(n) as c:
            for _ in range(READS):
                t = time.perf_counter()
                r = await c.get("/api/jobs/job000/tasks/t0/log", params={"tail": "1000"})
                body = await r.json()
                times.append(time.perf_counter() - t)
                assert r.status == 200 and body["total"] == LINES, body
        await n.close()
    print(f"record {len(data):,} bytes; ?tail=1000 reads: first {times[0]:.3f} s, then "
          + ", ".join(f"{x:.3f}" for x in times[1:]) + " s")


if __name__ == "__main__":
    asyncio.run(main())
