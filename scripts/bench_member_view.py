"""A non-member's GET /api/jobs/{id} of a lanes job whose view a member gives (partial
replication, lanes on explicitly): the asking peer's event-loop stall while it takes a big
view (review r2, finding 3). A fake member on loopback answers a view of --tasks tasks of
--chunks chunks each; the non-member's app (a real Node, not started) is asked --runs times;
a ticker on the loop records the worst gap. Prints one JSON line.

    PYTHONPATH=$PWD .venv/bin/python scripts/bench_member_view.py --tasks 18000 --chunks 30
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from peer.config import PeerConfig
from peer.http.app import make_app
from peer.http.tokens import load_or_create_token
from peer.log import Event, EventType, hlc_ms
from peer.node import Node

HOME = "a1" * 8
JOB = "j0000000000a1"
HLC = 1_700_000_000_000 << 16


def _view(tasks: int, chunks: int) -> dict[str, Any]:
    return {"id": JOB, "name": "w", "state": "running", "submitted_by": HOME,
            "submitted_ms": hlc_ms(HLC), "finished_ms": None, "duration_s": None,
            "progress": 0.5, "outputs": {},
            "tasks": [{"name": f"t{i}", "state": "done", "progress": 1.0,
                       "chunks": [{"i": k, "state": "done", "peer": "x" * 16}
                                  for k in range(chunks)]} for i in range(tasks)]}


async def _worst_gap(done: asyncio.Event) -> float:
    """The longest the loop went without running this ticker (1 ms sleeps), until `done`."""
    worst = 0.0
    last = time.perf_counter()
    while not done.is_set():
        await asyncio.sleep(0.001)
        now = time.perf_counter()
        worst, last = max(worst, now - last), now
    return worst


async def main(args: argparse.Namespace) -> dict[str, Any]:
    view = _view(args.tasks, args.chunks)
    body = json.dumps(view).encode()
    wf = {"name": "w", "tasks": [{"name": t["name"], "call": "c", "params": {}, "depends": []}
                                 for t in view["tasks"]]}
    with tempfile.TemporaryDirectory(dir=args.tmp) as d:
        node = Node(PeerConfig(data_dir=Path(d) / "p", slots=1, mdns=False,
                               max_workflow_bytes=1 << 30, max_tasks_per_job=1 << 20),
                    lanes=True)
        node.state.apply(Event(HOME, 1, HLC, EventType.JOB_SUBMITTED,
                               {"job": JOB, "workflow": wf, "members": [HOME]}))
        node.catchup.cfg = dataclasses.replace(node.catchup.cfg, view_timeout_s=120,
                                               view_total_s=120)

        async def answer(request: web.Request) -> web.Response:
            return web.Response(body=body, content_type="application/json")

        member = web.Application()
        member.router.add_get("/api/snapshot", answer)
        gaps: list[float] = []
        walls: list[float] = []
        try:
            token = load_or_create_token(node.cfg.data_dir)
            async with TestServer(member, host="127.0.0.1") as ms, \
                    TestClient(TestServer(make_app(node), host="127.0.0.1"),
                               headers={"Authorization": f"Bearer {token}"}) as c:
                url = str(ms.make_url("")).rstrip("/")
                node.peer_urls = lambda: {HOME: url}  # type: ignore[method-assign]
                for _ in range(args.runs):
                    done = asyncio.Event()
                    t = asyncio.create_task(_worst_gap(done))
                    t0 = time.perf_counter()
                    r = await c.get(f"/api/jobs/{JOB}")
                    got = await r.read()
                    walls.append(time.perf_counter() - t0)
                    done.set()
                    gaps.append(await t)
                    assert r.status == 200, got[:300]
        finally:
            node.log.close()
    return {"view_bytes": len(body), "runs": args.runs,
            "worst_gap_s": {"median": round(statistics.median(gaps), 3),
                            "max": round(max(gaps), 3)},
            "wall_s": {"median": round(statistics.median(walls), 3)}}


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", type=int, default=18000)
    p.add_argument("--chunks", type=int, default=30)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--tmp", default=None)
    print(json.dumps(asyncio.run(main(p.parse_args()))))
