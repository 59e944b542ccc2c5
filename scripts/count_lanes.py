#!/usr/bin/env python3
"""What a lanes job costs each peer, counted rather than timed (issue 12, design 9's
falsifier 3): one dag0 job of n tasks (profile_mesh's: every task runs on p0), or with
`--job-tasks K` n/K jobs of K independent ECHO tasks posted round robin (K 1: bench_mesh's
jobs row; several K: one batch each, smallest first, on the same mesh), on 3 real peers,
lanes off then on (or `--lanes on|off`), each peer's counts grown over the batch, per task:
frames built by kind, sent and received; events sent (push / reply / fix), received and new,
by origin kind (mesh / lane) and type; events emitted; signature batches made, signatures
made and verified; log appends, appends with sync, syncs; anti-entropy rounds, pair rounds,
DIGEST_SUMs and handlers; the scheduler's steps and evaluations; and the CPU ms per task of
each peer process and of the mesh (peers, forkservers, workers), raw (over the batch and the
wait after it). The peers count with scripts/count_hook/sitecustomize.py (wrapped calls,
nothing changed).

    .venv/bin/python scripts/count_lanes.py [-n 1000] [--job-tasks 1,4,16] [--lanes off,on]
        [--dag dag0|dag] [--peers 3] [--wait 3] [--json F]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import bench_engine as be  # noqa: E402
import bench_mesh as bm  # noqa: E402
import profile_mesh as pm  # noqa: E402
from scriptlib import peer_auth  # noqa: E402

HOOK = ROOT / "scripts" / "count_hook"


def start(d: Path, lanes: bool, counts: Path, peers: int = 3) -> bm.Mesh:
    """profile_mesh's dag0 mesh of `peers` peers, each counting into `counts`."""
    real = subprocess.Popen

    def popen(args: Any, **kw: Any) -> Any:
        env = dict(kw.get("env") or {})
        env["PYTHONPATH"] = f"{HOOK}:{env.get('PYTHONPATH', ROOT)}"
        env["BANZAI_COUNTS_DIR"] = str(counts)
        return real(args, **{**kw, "env": env})

    bm.subprocess.Popen = popen  # type: ignore[misc]
    try:
        return bm.start_mesh(peers, d, extra=bm.lanes_flags(lanes),
                             first_extra=pm.LABEL_FLAG)
    finally:
        bm.subprocess.Popen = real  # type: ignore[misc]


def read(mesh: bm.Mesh, counts: Path) -> list[dict[str, float]]:
    """Each peer's counts now (p0 first), after two dumps."""
    time.sleep(0.5)
    return [json.loads((counts / f"{p.proc.pid}.json").read_text()) for p in mesh.peers]


async def _jobs(mesh: bm.Mesh, n: int, k: int) -> dict[str, Any]:
    """n/k jobs of k independent ECHO tasks, posted round robin one after the other, each
    awaited (bench_mesh's Watcher on p0: a task_done, or a lanes job's end)."""
    import aiohttp

    urls, tag = [p.url for p in mesh.peers], secrets.token_hex(6)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0),
                                     middlewares=(peer_auth,),
                                     timeout=aiohttp.ClientTimeout(total=900)) as s, \
            bm.Watcher(s, urls[0]) as w:
        t0 = time.perf_counter()
        jobs = [await be.post_job(s, urls[i % len(urls)], {"name": f"k{k}", "tasks": [
            {"name": f"e{t}", **bm.echo(f"{tag}-{i}-{t}")} for t in range(k)]})
            for i in range(n // k)]
        ends = [await w.wait(j, k) for j in jobs]
    mesh.finished += [k] * len(jobs)
    return {"tasks_per_s": n // k * k / (max(ends) - t0)}


def batch(mesh: bm.Mesh, n: int, k: int, dag: str = "dag0") -> dict[str, Any]:
    """The `dag` job of n tasks (k 0: profile_mesh's dag0 or dag), else n/k jobs of k tasks
    (`_jobs`)."""
    return pm.batch(mesh, n, dag) if k == 0 else asyncio.run(_jobs(mesh, n, k))


def measure(mesh: bm.Mesh, counts: Path, n: int, k: int, wait_s: float,
            dag: str = "dag0") -> dict[str, Any]:
    """One batch's counts, per task, after an unmeasured one like it."""
    batch(mesh, min(n, 200), k, dag)  # (dag0: the labelled tasks' first claims and TURNs)
    time.sleep(wait_s)
    before, load0 = read(mesh, counts), bm.load1()
    cpu0 = [pm._cpu_s(p.proc.pid) for p in mesh.peers]
    tree0 = mesh.cpu_s()
    got = batch(mesh, n, k, dag)
    time.sleep(wait_s)  # pair rounds and anti-entropy after the job's end
    after = read(mesh, counts)
    done = n // k * k if k else n
    out = {"job_tasks": k or n, "n": done, "load1": [load0, bm.load1()],
           "tasks_per_s": got["tasks_per_s"], "per_peer_tasks": got.get("per_peer"),
           "peer_cpu_ms_per_task": [round((pm._cpu_s(p.proc.pid) - c) * 1000 / done, 3)
                                    for p, c in zip(mesh.peers, cpu0, strict=True)],
           "mesh_cpu_ms_per_task": round((mesh.cpu_s() - tree0) * 1000 / done, 3),
           "members": pm.members(mesh) if k == 0 else None, "per_task": []}
    out["differ"] = [a.pop("DIFFER", []) for a in after]
    for b in before:
        b.pop("DIFFER", None)
    for b, a in zip(before, after, strict=True):
        out["per_task"].append({k: round((v - b.get(k, 0)) / done, 3) for k, v in
                                sorted(a.items()) if v - b.get(k, 0)})
    return out


def run(lanes: bool, n: int, sizes: Sequence[int], wait_s: float,
        tmp: Path, dag: str = "dag0", peers: int = 3) -> dict[str, Any]:
    counts = tmp / f"counts-{int(lanes)}"
    counts.mkdir()
    mesh = start(tmp / f"mesh-{int(lanes)}", lanes, counts, peers)
    try:
        bm.banzai_batches(mesh, ["warm"], n, 0)
        return {"lanes": lanes, "peers": peers, "wait_s": wait_s,
                "batches": [measure(mesh, counts, n, k, wait_s, dag) for k in sizes]}
    finally:
        bm.stop_mesh(mesh)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=1000)
    ap.add_argument("--job-tasks", default="",
                    help="comma-separated tasks per job (one-task jobs: 1); none: one dag0 job")
    ap.add_argument("--lanes", default="off,on")
    ap.add_argument("--dag", choices=("dag0", "dag"), default="dag0",
                    help="without --job-tasks: dag0 (every task on p0) or dag (spread over "
                    "the peers, bench_mesh's dag row)")
    ap.add_argument("--peers", type=int, default=3, help="mesh size (dag0 needs p0 only)")
    ap.add_argument("--wait", type=float, default=3.0)
    ap.add_argument("--json", type=Path)
    a = ap.parse_args(argv)
    sizes = sorted(int(k) for k in a.job_tasks.split(",")) if a.job_tasks else [0]
    res = []
    with tempfile.TemporaryDirectory(prefix="count-lanes-") as tmp:
        for which in a.lanes.split(","):
            res.append(run(which == "on", a.n, sizes, a.wait, Path(tmp), a.dag, a.peers))
            print(json.dumps(res[-1]), file=sys.stderr, flush=True)
    text = json.dumps(res, indent=1)
    print(text)
    if a.json:
        a.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
