#!/usr/bin/env python3
"""Engine overhead: a real banzai-peer (subprocess, --slots 2) runs 1,000 trivial ECHO tasks.

Scenarios (each on a fresh peer and data dir):
  seq    N single-task jobs, submitted one at a time, each waited for: pure submit->done latency
  burst  N single-task jobs submitted back to back (as fast as the API takes them), then waited
  dag    one job with N independent ECHO tasks
Per-task times come from the job views (HLC ms: submitted_ms, started_ms, finished_ms).

    .venv/bin/python scripts/bench_engine.py [-n 1000] [--scenarios seq,burst,dag]
        [--profile DIR]   # run the peer under cProfile; writes DIR/<scenario>.prof + top list
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile  # noqa: F401  (documents the profiler used by --profile)
import json
import os
import pstats
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
from scriptlib import machine, peer_auth, remember_peer, wait_workers_ready

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def start_peer(data: Path, profile: Path | None) -> tuple[subprocess.Popen[str], str]:
    args = ["--data-dir", str(data), "--http", "127.0.0.1:0", "--slots", "2",
            "--log-level", "WARNING", "--mdns-interface", "127.0.0.1",
            "--mesh-name", f"bench-{uuid.uuid4().hex[:12]}"]
    cmd = [sys.executable, "-m", "cProfile", "-o", str(profile), str(BIN / "banzai-peer"),
           *args] if profile else [str(BIN / "banzai-peer"), *args]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env, cwd=ROOT)
    assert proc.stdout is not None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        m = re.match(r"web UI: (http://\S+?)/?$", line.strip())
        if m:
            remember_peer(m.group(1), data)
            wait_workers_ready(m.group(1))
            return proc, m.group(1)
    proc.kill()
    raise RuntimeError("peer did not start")


def stop_peer(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGTERM)  # clean exit: cProfile writes its file
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


async def post_job(s: aiohttp.ClientSession, url: str, pipeline: Any) -> str:
    async with s.post(f"{url}/api/jobs", json=pipeline) as r:
        body = await r.json()
        assert r.status == 201, body
        return str(body["job"])


STALL_S = float(os.environ.get("BENCH_STALL_S", "60"))


async def wait_job(s: aiohttp.ClientSession, url: str, job: str, poll_s: float = 0.002,
                   ) -> dict[str, Any]:
    """Poll until the job ends; TimeoutError if its progress does not move for STALL_S."""
    last, moved = -1.0, time.monotonic()
    while True:
        async with s.get(f"{url}/api/jobs/{job}") as r:
            view = await r.json()
        if view["state"] in ("done", "failed", "cancelled"):
            assert view["state"] == "done", view
            return dict(view)
        if view["progress"] != last:
            last, moved = view["progress"], time.monotonic()
        elif time.monotonic() - moved > STALL_S:
            raise TimeoutError(job)
        await asyncio.sleep(poll_s)


def echo(i: int, tag: str) -> dict[str, Any]:
    return {"call": "ECHO", "args": [f"{tag}-{i}"]}


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))]


def summary(lat_ms: list[float]) -> dict[str, float]:
    return {"median_ms": statistics.median(lat_ms), "p95_ms": pct(lat_ms, 95),
            "max_ms": max(lat_ms), "mean_ms": statistics.fmean(lat_ms)}


async def warm(s: aiohttp.ClientSession, url: str) -> None:
    """The first ECHO in each worker imports the task modules: keep that out of the numbers."""
    for i in range(4):  # one at a time (see the slot-starvation note in docs/benchmarks.md)
        await wait_job(s, url, await post_job(s, url, [echo(i, f"warm{uuid.uuid4().hex}")]),
                       poll_s=0.05)


async def scenario(name: str, url: str, n: int) -> dict[str, Any]:
    tag = uuid.uuid4().hex
    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(timeout=timeout, middlewares=(peer_auth,)) as s:
        await warm(s, url)
        t0 = time.monotonic()
        if name == "seq":
            views = []
            for i in range(n):
                views.append(await wait_job(s, url, await post_job(s, url, [echo(i, tag)])))
            wall = time.monotonic() - t0
            lat = [v["finished_ms"] - v["submitted_ms"] for v in views]
            run = [t["finished_ms"] - t["started_ms"] for v in views for t in v["tasks"]]
        elif name == "burst":
            jobs = [await post_job(s, url, [echo(i, tag)]) for i in range(n)]
            submit_s = time.monotonic() - t0
            views = [await wait_job(s, url, j, poll_s=0.05) for j in jobs]
            wall = time.monotonic() - t0
            lat = [v["finished_ms"] - v["submitted_ms"] for v in views]
            run = [t["finished_ms"] - t["started_ms"] for v in views for t in v["tasks"]]
        else:
            dag = {"name": "bench-dag", "tasks": [{"name": f"e{i}", **echo(i, tag)}
                                                  for i in range(n)]}
            view = await wait_job(s, url, await post_job(s, url, dag), poll_s=0.05)
            wall = time.monotonic() - t0
            lat = [t["finished_ms"] - view["submitted_ms"] for t in view["tasks"]]
            run = [t["finished_ms"] - t["started_ms"] for t in view["tasks"]]
        out: dict[str, Any] = {"scenario": name, "tasks": n, "wall_s": round(wall, 3),
                               "throughput_tasks_per_s": round(n / wall, 1),
                               "submit_to_done": summary(lat), "claim_to_done": summary(run)}
        if name == "burst":
            out["submit_phase_s"] = round(submit_s, 3)
        return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=1000, help="tasks per scenario (default 1000)")
    ap.add_argument("--scenarios", default="seq,burst,dag")
    ap.add_argument("--profile", type=Path, help="directory for cProfile output of the peer")
    ap.add_argument("--json", action="store_true", help="print raw JSON results")
    a = ap.parse_args()
    print(f"machine: {machine()}", flush=True)
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}", flush=True)
    results = []
    for name in a.scenarios.split(","):
        with tempfile.TemporaryDirectory(prefix="bench-engine-") as tmp:
            prof = None
            if a.profile:
                a.profile.mkdir(parents=True, exist_ok=True)
                prof = (a.profile / f"{name}.prof").resolve()
            proc, url = start_peer(Path(tmp) / "peer", prof)
            try:
                r = asyncio.run(scenario(name, url, a.n))
            except TimeoutError as e:
                print(f"{name:5s} STALLED: job {e} made no progress for {STALL_S:.0f} s "
                      "(see docs/benchmarks.md)", flush=True)
                continue
            finally:
                stop_peer(proc)
            results.append(r)
            sd, cd = r["submit_to_done"], r["claim_to_done"]
            print(f"{name:5s} n={r['tasks']} wall={r['wall_s']:.2f}s "
                  f"throughput={r['throughput_tasks_per_s']:.1f} tasks/s | submit->done "
                  f"median={sd['median_ms']:.1f}ms p95={sd['p95_ms']:.1f}ms "
                  f"max={sd['max_ms']:.0f}ms | claim->done median={cd['median_ms']:.1f}ms "
                  f"p95={cd['p95_ms']:.1f}ms", flush=True)
            if prof is not None and prof.exists():
                print(f"-- top of {prof} (cumulative, peer process) --")
                pstats.Stats(str(prof)).sort_stats("cumulative").print_stats(25)
                print(f"-- top of {prof} (tottime) --")
                pstats.Stats(str(prof)).sort_stats("tottime").print_stats(20)
    if a.json:
        print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
