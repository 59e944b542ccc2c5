"""GET /api/jobs, the web UI's "recent jobs" refetch, on a peer holding many jobs in its state:
the event loop's CPU time per request (the main thread's `thread_time` across the handler,
called in process on a mocked request: `live_page`, the entries, the merge, the JSON; the
job index's read runs in a worker thread and is not counted), median of `--repeat`. Each
`--query` is measured (`limit=6`: the mesh page's 6 rows since session 49; none: what the
mesh and browse pages asked before, 1,000 entries).

    PYTHONPATH=<tree> python scripts/bench_job_list.py [--jobs 2000] [--tasks 3] [--repeat 15]

(docs/benchmarks.md, session 49 helper c: review rr S6)."""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from aiohttp.test_utils import make_mocked_request

from peer.config import PeerConfig
from peer.http.app import NODE, list_jobs, make_app
from peer.node import Node
from tests.unit.test_compaction import history


async def one(app: Any, query: str) -> tuple[float, int]:
    """Loop CPU ms of one GET /api/jobs?`query`, and the entries it answered."""
    request = make_mocked_request("GET", f"/api/jobs{'?' + query if query else ''}", app=app)
    t0 = time.thread_time()
    resp = await list_jobs(request)
    ms = (time.thread_time() - t0) * 1000
    assert resp.body is not None
    return ms, len(json.loads(bytes(resp.body))["jobs"])  # type: ignore[arg-type]


async def main(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as d:
        # (no compaction: every job stays in the state, as on a peer whose jobs are recent)
        node = Node(PeerConfig(data_dir=Path(d), slots=1, mdns=False,
                               compact_recent_tasks=10 ** 9))
        node.listeners[:] = []
        node.merge(history(jobs=args.jobs, per_job=args.tasks, live=args.jobs // 10))
        app = make_app(node)
        assert app[NODE] is node
        out: dict[str, Any] = {"jobs_in_state": len(node.state.jobs), "tasks": args.tasks}
        for query in args.query:
            await one(app, query)  # (warm)
            runs = [await one(app, query) for _ in range(args.repeat)]
            out[query or "(no limit)"] = {
                "entries": runs[0][1],
                "loop_ms_median": round(statistics.median(ms for ms, _ in runs), 2),
                "loop_ms_max": round(max(ms for ms, _ in runs), 2)}
        node.log.close()
        return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=2000)
    ap.add_argument("--tasks", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--query", nargs="*", default=["", "limit=50", "limit=6"])
    print(json.dumps(asyncio.run(main(ap.parse_args())), indent=1))
