"""How long serving a snapshot holds a peer's event loop: a data dir of a long history
(bench_log's: `--tasks` finished tasks compacted into job records, then `--kept` more whose
events stay in the log) opened by a Node of the code on PYTHONPATH (not started: no pass
changes the log meanwhile; the collector's pace of a peer), its app served on 127.0.0.1.
Each form (the one body an older peer asks for with no `v`, `?v=3&part=jobs`, a second
member's `?digest=1` of either version; then `/api/health`, the harness's own cost) is fetched
`--serves` times by a client process while a ticker on the loop wakes every 5 ms: the
longest it woke late is how long the loop was held.
Prints one line per form: the body's sha256 and bytes, the serve's seconds and the loop's
longest hold (min-max over the serves). The data dir is built once (`--data`, kept): run
the script with each release's tree on PYTHONPATH on the same one.

    PYTHONPATH=TREE .venv/bin/python scripts/bench_snapshot_serve.py --data DIR
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from aiohttp import web
from bench_log import history
from scriptlib import machine, mesh_secret_file

from peer import gcpace
from peer.config import PeerConfig
from peer.http.app import make_app
from peer.http.tokens import load_or_create_token
from peer.node import Node

FORMS = {"v1 (no v)": "/api/snapshot", "v3 part=jobs": "/api/snapshot?v=3&part=jobs",
         "digest=1": "/api/snapshot?digest=1", "digest=1&v=3": "/api/snapshot?digest=1&v=3",
         "/api/health": "/api/health"}  # (the last: what the harness alone holds it)
TICK_S = 0.005


def build(data: Path, tasks: int, kept: int, per_job: int) -> None:
    """`tasks + kept` finished tasks merged into a node on `data`, the first `tasks` of
    them compacted (job records), the others' events left in the log."""
    node = Node(_config(data))
    node.listeners[:] = [node.compactor.note]  # nothing runs: only the compactor listens
    start_hlc = (int(time.time() * 1000) - 86_400_000) << 16
    done = 0
    for evs in history(tasks + kept, per_job, start_hlc):
        node.merge(evs)
        done += per_job
        if done <= tasks and done % 2000 == 0:
            node.catchup.compact()
    node.log.close()


def _config(data: Path) -> PeerConfig:
    return PeerConfig(data_dir=data, slots=1, mdns=False, mesh_name="bench-snapshot-serve",
                      secret_file=data.parent / "mesh.secret")


# The client: a process of its own (a thread of this one would share the loop's GIL)
FETCH = """import hashlib, sys, time, urllib.request
t0 = time.perf_counter()
req = urllib.request.Request(sys.argv[1], headers={"Authorization": "Bearer " + sys.argv[2]})
with urllib.request.urlopen(req, timeout=600) as r:
    body = r.read()
print(hashlib.sha256(body).hexdigest(), len(body), time.perf_counter() - t0)
"""


async def fetch(url: str, token: str) -> tuple[str, int, float]:
    """The body's sha256, its bytes and the seconds the serve took."""
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", FETCH, url, token,
                                                stdout=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate()
    sha, size, took = out.split()
    return sha.decode(), int(size), float(took)


async def serve(data: Path, serves: int) -> None:
    node = Node(cfg := _config(data))
    gcpace.apply(gcpace.GcPace(cfg.gc_young_allocs))  # as the peer's main
    runner = web.AppRunner(make_app(node))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    token = load_or_create_token(data)
    loop = asyncio.get_running_loop()
    try:
        for name, path in FORMS.items():
            rows = []
            for _ in range(serves):
                held = 0.0
                job = asyncio.ensure_future(
                    fetch(f"http://127.0.0.1:{port}{path}", token))
                while not job.done():
                    t = loop.time()
                    await asyncio.sleep(TICK_S)
                    held = max(held, loop.time() - t - TICK_S)
                rows.append((*job.result(), held))
            shas = {r[0] for r in rows}
            print(f"{name:14} sha256 {','.join(s[:16] for s in shas)}  {rows[0][1]:,} bytes  "
                  f"serve {min(r[2] for r in rows):.3f}-{max(r[2] for r in rows):.3f} s  "
                  f"loop held at most {min(r[3] for r in rows):.3f}-"
                  f"{max(r[3] for r in rows):.3f} s", flush=True)
    finally:
        await runner.cleanup()
        node.log.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True, help="the data dir (built if absent)")
    ap.add_argument("--tasks", type=int, default=20_000, help="compacted into job records")
    ap.add_argument("--kept", type=int, default=5_000, help="their events left in the log")
    ap.add_argument("--per-job", type=int, default=4)
    ap.add_argument("--serves", type=int, default=5)
    a = ap.parse_args()
    print(machine())
    if not a.data.exists():
        a.data.parent.mkdir(parents=True, exist_ok=True)
        mesh_secret_file(a.data.parent)
        t0 = time.perf_counter()
        build(a.data, a.tasks, a.kept, a.per_job)
        print(f"built {a.data} in {time.perf_counter() - t0:.1f} s")
    asyncio.run(serve(a.data, a.serves))


if __name__ == "__main__":
    main()
