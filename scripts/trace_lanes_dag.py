#!/usr/bin/env python3
"""Who ran bench_mesh's dag when (issue 12, design docs/design/partial-replication.md 5.3):
a mesh of `--peers` real peers (bench_mesh's, `--slots 1`, `--lanes` optional), warmed up,
then `--repeat` jobs of `-n` independent ECHO tasks posted to peer 0, one after the other.
Per job, from peer 0's job view (HLC times, ms after its JOB_SUBMITTED) and /proc: its
members, and per peer the tasks it ran, its first chunk's start, its last chunk's end, its
longest idle gap between chunks inside the job and its process tree's CPU over the job.

    .venv/bin/python scripts/trace_lanes_dag.py [--peers 3] [-n 1000] [--repeat 4] [--lanes]
        [--json PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_engine as be
import bench_mesh as bm
import bench_pipeline as bp
from scriptlib import peer_auth


def timeline(view: dict[str, Any], names: dict[str, str]) -> dict[str, Any]:
    """Per peer (p0, p1 ...) of a finished dag's job view: tasks run, first start and last
    end (ms after the submission), the longest gap between one chunk's end and its next
    start (ms)."""
    t0 = view["submitted_ms"]
    runs: dict[str, list[tuple[int, int]]] = {}
    for t in view["tasks"]:
        for c in t["chunks"]:
            if c["peer"] and c["started_ms"] and c["finished_ms"]:
                runs.setdefault(names.get(c["peer"], "?"), []).append(
                    (c["started_ms"] - t0, c["finished_ms"] - t0))
    out: dict[str, Any] = {}
    for p, rs in sorted(runs.items()):
        rs.sort()
        gaps = [b[0] - a[1] for a, b in itertools.pairwise(rs)]
        out[p] = {"tasks": len(rs), "first_ms": rs[0][0], "last_ms": max(e for _, e in rs),
                  "max_gap_ms": max(gaps, default=0)}
    return out


async def run(mesh: bm.Mesh, n: int, repeat: int) -> list[dict[str, Any]]:
    import aiohttp

    urls, names = [p.url for p in mesh.peers], mesh.names()
    out = []
    async with aiohttp.ClientSession(middlewares=(peer_auth,)) as s, \
            bm.Watcher(s, urls[0]) as w:
        for _ in range(repeat):
            tag = bm.secrets.token_hex(6)
            cpu0 = {names[p.id]: bp.tree_cpu_s(p.proc.pid) for p in mesh.peers}
            t0 = time.perf_counter()
            job = await be.post_job(s, urls[0], {"name": "bench-dag", "tasks": [
                {"name": f"e{i}", **bm.echo(f"{tag}-{i}")} for i in range(n)]})
            wall = await w.wait(job, n) - t0
            cpu = {names[p.id]: round((bp.tree_cpu_s(p.proc.pid) - cpu0[names[p.id]]) * 1000 / n,
                                      3) for p in mesh.peers}
            view = bm._get(f"{urls[0]}/api/jobs/{job}")
            members = sorted(names.values())  # (every peer, unless a non-member's entry
            for u in urls[1:]:  # names them: `views.elsewhere_entry`)
                entry = [j for j in bm._get(f"{u}/api/jobs")["jobs"] if j["id"] == job]
                if entry and entry[0].get("members"):
                    members = [names.get(m, "?") for m in entry[0]["members"]]
            row = {"tasks_per_s": round(n / wall, 1), "wall_ms": round(wall * 1000),
                   "members": members, "cpu_ms_per_task": cpu,
                   "peers": timeline(view, names), "load1": bm.load1()}
            print(json.dumps(row), flush=True)
            out.append(row)
            await asyncio.sleep(6)  # one compaction pass (every 5 s) between jobs
    return out


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--peers", type=int, default=3)
    ap.add_argument("-n", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=4)
    ap.add_argument("--lanes", action="store_true")
    ap.add_argument("--log-level", default="WARNING", help="the peers' (INFO: scale-out's "
                    "adds, in peerN.log, kept with --keep)")
    ap.add_argument("--keep", help="copy the peers' logs here")
    ap.add_argument("--json")
    a = ap.parse_args(argv)
    base = Path(tempfile.mkdtemp(prefix="trace-lanes-"))
    mesh = bm.start_mesh(a.peers, base, log_level=a.log_level,
                         extra=bm.lanes_flags(a.lanes))
    try:
        bm.banzai_batches(mesh, ["warm"], a.n, 0)
        rows = asyncio.run(run(mesh, a.n, a.repeat))
    finally:
        bm.stop_mesh(mesh)
        if a.keep:
            Path(a.keep).mkdir(parents=True, exist_ok=True)
            for p in mesh.peers:
                bm.shutil.copy(p.log, Path(a.keep) / p.log.name)
        bm.shutil.rmtree(base, ignore_errors=True)
    if a.json:
        Path(a.json).write_text(json.dumps({"lanes": a.lanes, "n": a.n, "rows": rows}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
