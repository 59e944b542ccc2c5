"""How long taking a member's snapshot holds a fresh peer's event loop: the first peer of a
bench_log `--reuse` directory (its data dir copied, opened by a Node of the code on
PYTHONPATH, not started) builds its stream once (`?v=3&part=jobs`, or `--v 2`: the previous
release's one stream with every row); a bare aiohttp app in the same process serves it
whole; a fresh Node (its listeners only the compactor's) catches up from it
(`CatchUp._catch_up`, the cache and provider rows of v3 not fetched: 404) while a ticker
on its loop wakes every 5 ms: the longest it woke late is how long the loop was held.
Prints per run: caught up or not, the three longest holds, the stages (`catch_up_s`).

    PYTHONPATH=TREE .venv/bin/python scripts/bench_take_hold.py --reuse DIR [--v 2] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import shutil
import tempfile
import time
from pathlib import Path

from aiohttp import web
from aiohttp.test_utils import TestServer

from peer.config import PeerConfig
from peer.log.snapframe import CONTENT_TYPE, FEATURE
from peer.node import Node

TICK_S = 0.005


async def take(a: Node, body: bytes, v: int, cfg: PeerConfig) -> None:
    """One fresh peer's catch-up from `body`, with the ticker; one line printed."""
    b = Node(cfg)
    b.listeners[:] = [b.compactor.note]

    async def snapshot(request: web.Request) -> web.Response:
        if request.query.get("digest") or request.query.get("part") == "rows":
            return web.Response(status=404)
        return web.Response(body=body, content_type=CONTENT_TYPE if v == 3
                            else "application/x-ndjson")

    late: list[float] = []
    done = asyncio.Event()

    async def tick() -> None:
        last = time.perf_counter()
        while not done.is_set():
            await asyncio.sleep(TICK_S)
            now = time.perf_counter()
            late.append(now - last - TICK_S)
            last = now

    app = web.Application()
    app.router.add_get("/api/snapshot", snapshot)
    try:
        async with TestServer(app, host="127.0.0.1") as server:
            url = str(server.make_url("")).rstrip("/")
            features = [FEATURE] if v == 3 else []
            b.peer_urls = lambda: {a.peer_id: url}  # type: ignore[method-assign]
            b.live_peers = lambda: {  # type: ignore[method-assign]
                a.peer_id: {"http": url, "features": features}}
            ticker = asyncio.create_task(tick())
            await asyncio.sleep(10 * TICK_S)
            await b.catchup._catch_up(a.peer_id)
            done.set()
            await ticker
            await b.catchup.close()
        holds = sorted(late, reverse=True)[:3]
        print(f"v{v}: caught up {dict(b.heads()) == dict(a.heads())}; longest holds "
              + " ".join(f"{h:.3f}" for h in holds) + " s; stages "
              + str({k: round(x, 3) for k, x in b.catchup.catch_up_s.items()}), flush=True)
    finally:
        b.log.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reuse", type=Path, required=True, help="a bench_log --reuse directory")
    ap.add_argument("--v", type=int, choices=(2, 3), default=3)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    logging.disable(logging.WARNING)  # (bench_log's made-up CIDs: one line per provider row)
    mesh = (args.reuse / "mesh.name").read_text()
    secret = args.reuse / "mesh.secret"
    with tempfile.TemporaryDirectory(prefix="take-hold-") as tmp:
        shutil.copytree(args.reuse / "a", Path(tmp) / "a")
        a = Node(PeerConfig(data_dir=Path(tmp) / "a", slots=1, mdns=False,
                            secret_file=secret, mesh_name=mesh))
        try:
            body = b"".join(a.catchup.snapshot_stream(args.v, "jobs" if args.v == 3 else None))
            for i in range(args.runs):
                data = Path(tmp) / f"b{i}"
                data.mkdir(mode=0o700)
                asyncio.run(take(a, body, args.v, PeerConfig(
                    data_dir=data, slots=1, mdns=False, secret_file=secret, mesh_name=mesh)))
                shutil.rmtree(data)
        finally:
            a.log.close()


if __name__ == "__main__":
    main()
