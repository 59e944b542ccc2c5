#!/usr/bin/env python3
"""Who ran bench_mesh's per-file map and how (issue 12, session 42: the map with --lanes on 3
peers ran slower than without): a mesh of `--peers` real peers (bench_mesh's, `--slots 1`,
`--lanes` optional), warmed up as bench_mesh warms it, then `--repeat` map batches (one
per-item CHECKSUM over `-n` files uploaded to peer 0, the files' holder), each after a
`--prelude` of bench_mesh's batches (default `jobs`: 1,000 one-task jobs round robin, the
batch bench_mesh runs before its map). Per map job, from peer 0's job view: its rate
(items/s, bench_mesh's measure), its members (p0 ...) as a non-member's job list names
them, the member that the rendezvous hash of the task puts first (what 8facbac ranked first
for a lanes job's chunks), the chunks per peer and how many of peer 0's chunks ran queued
two at a time (the same start: one claimed behind its busy slot, `queue_ahead`).

    .venv/bin/python scripts/trace_lanes_map.py [--peers 3] [-n 1000] [--repeat 8]
        [--lanes] [--prelude jobs] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_mesh as bm
import profile_mesh as pm

from peer.rendezvous import rendezvous


def newest_map(mesh: bm.Mesh) -> dict[str, Any]:
    """Peer 0's view of its newest job of two tasks (the map's: its directory, CHECKSUM)."""
    jobs = bm._get(mesh.peers[0].url + "/api/jobs")["jobs"]
    job = max((j for j in jobs if len(j.get("tasks", ())) == 2),
              key=lambda j: j["submitted_ms"])
    view: dict[str, Any] = bm._get(f"{mesh.peers[0].url}/api/jobs/{job['id']}")
    return view


def queued(chunks: Sequence[dict[str, Any]], peer: str) -> int:
    """How many of `peer`'s chunks started with another of its chunks (HLC ms alike: a
    chunk claimed behind the busy slot starts as the one before it is recorded)."""
    starts = Counter(c["started_ms"] for c in chunks if c["peer"] == peer and c["started_ms"])
    return sum(n for n in starts.values() if n > 1)


def trace(mesh: bm.Mesh, n: int, prelude: Sequence[str]) -> dict[str, Any]:
    """One map batch after `prelude`: bench_mesh's figures and the job's ranking."""
    for kind in prelude:
        bm.banzai_batches(mesh, [kind], n, 0)
    got = bm.banzai_batches(mesh, ["map"], n, 0)["map"]
    view, names = newest_map(mesh), mesh.names()
    members = pm.members(mesh)
    ids = {v: k for k, v in names.items()}
    ranked = [ids[m] for m in members] if members else list(names)
    [checksum] = [t for t in view["tasks"] if t["call"] == "CHECKSUM"]
    return {"items_per_s": round(got["tasks_per_s"]), "members": members,
            "hash_first": names[rendezvous(f"{view['id']}/{checksum['name']}", ranked)[0]],
            "per_peer": got["per_peer"],
            "p0_queued": queued(checksum["chunks"], mesh.peers[0].id),
            "load1": got["load1"]}


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--peers", type=int, default=3)
    ap.add_argument("-n", type=int, default=1000, help="files per map, tasks per prelude batch")
    ap.add_argument("--repeat", type=int, default=8)
    ap.add_argument("--lanes", action="store_true")
    ap.add_argument("--prelude", default="jobs",
                    help="bench_mesh batches before each map, comma-separated ('': none)")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args(argv)
    prelude = [k for k in a.prelude.split(",") if k]
    if unknown := [k for k in prelude if k not in bm.ROWS or k == "latency"]:
        ap.error(f"--prelude: unknown batch(es) {', '.join(unknown)}; of dag, jobs, map")
    out: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="trace-lanes-map-") as tmp:
        mesh = bm.start_mesh(a.peers, Path(tmp), extra=bm.lanes_flags(a.lanes))
        try:
            bm.banzai_batches(mesh, ["warm"], a.n, 0)
            bm.banzai_batches(mesh, ["jobs", "map"], a.n, 0)  # as bench_mesh's warm-up
            for _ in range(a.repeat):
                out.append(trace(mesh, a.n, prelude))
                print(json.dumps(out[-1]), flush=True)
        finally:
            bm.stop_mesh(mesh)
    if a.json:
        a.json.write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
