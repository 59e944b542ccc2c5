#!/usr/bin/env python3
"""Latencies the tests no longer time: cancel -> every run stopped, and kill -9 -> lease reclaim.

Real banzai-peer processes on loopback (the test tasks of tests/fixture_tasks.py):
  cancel-1   one peer (--slots 2) runs an hour-long T_SLEEP; POST cancel -> its slots are free
  cancel-3   three peers (--slots 1) each run a chunk of hour-long items; POST cancel to one
             -> none runs anything (the design's bound for both: within a second)
  reclaim    two peers (--lease-s 3) ; kill -9 the one running T_SLEEP -> the other claims a
             later attempt (bound: the lease, plus up to one scheduler pass)
Times are measured by polling the APIs every 10 ms (included in the figures).

    .venv/bin/python scripts/bench_latency.py [--repeat 5] [--scenarios cancel-1,cancel-3,reclaim]
        [--json FILE]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from scriptlib import machine, mesh_secret_file, remember_peer

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
POLL_S = 0.01
LEASE_S = 3.0
URL = re.compile(r"^web UI: (http://\S+?)/?$", re.M)


def call(url: str, body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"},
                                 method="GET" if body is None else "POST")
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def until(cond: Callable[[], Any], what: str, timeout_s: float = 60) -> Any:
    deadline = time.monotonic() + timeout_s
    while not (got := cond()):
        if time.monotonic() > deadline:
            raise RuntimeError(what)
        time.sleep(POLL_S)
    return got


@contextlib.contextmanager
def peers(tmp: Path, n: int, *flags: str) -> Iterator[list[tuple[subprocess.Popen[bytes], str]]]:
    """n peers of one new mesh on 127.0.0.1 (mDNS on loopback), each with its URL."""
    mesh = f"bench-latency-{secrets.token_hex(6)}"
    secret = mesh_secret_file(tmp / mesh)  # the peers' shared mesh secret
    started: list[tuple[subprocess.Popen[bytes], str]] = []
    try:
        for i in range(n):
            log = tmp / f"{mesh}-{i}.log"
            args = [str(BIN / "banzai-peer"), "--data-dir", str(tmp / f"{mesh}-{i}"),
                    "--http", "127.0.0.1:0", "--mdns-interface", "127.0.0.1",
                    "--mesh-name", mesh, "--task-module", "tests.fixture_tasks",
                    "--log-level", "WARNING", "--secret-file", str(secret), *flags]
            with log.open("wb") as out:
                proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
                                        env={**os.environ, "PYTHONPATH": str(ROOT)})
            m = until(lambda log=log: URL.search(log.read_text()), "peer did not start")
            remember_peer(m.group(1), tmp / f"{mesh}-{i}")
            started.append((proc, m.group(1)))
        urls = [u for _, u in started]
        until(lambda: all(sum(p["state"] == "alive" for p in call(u + "/api/peers")["peers"])
                          == n for u in urls), "the mesh did not form")
        yield started
    finally:
        for proc, _ in started:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc, _ in started:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(30)


def own(url: str) -> dict[str, Any]:
    return next(p for p in call(url + "/api/peers")["peers"] if p["self"])


def cancel_one(tmp: Path) -> float:
    with peers(tmp, 1, "--slots", "2") as [(_, url)]:
        job = call(url + "/api/jobs", [{"call": "T_SLEEP", "args": [3600]}])["job"]
        until(lambda: own(url)["running"], "the task never started")
        t0 = time.monotonic()
        call(f"{url}/api/jobs/{job}/cancel", {})
        until(lambda: not (me := own(url))["running"] and me["free_slots"] == 2, "never freed")
        return time.monotonic() - t0


def cancel_three(tmp: Path) -> float:
    with peers(tmp, 3, "--slots", "1") as ps, ThreadPoolExecutor(3) as pool:
        urls = [u for _, u in ps]

        def running() -> list[int]:
            return list(pool.map(lambda u: len(own(u)["running"]), urls))

        job = call(urls[0] + "/api/jobs", [{"call": "T_WRITE", "args": [12, "bench"]},
                                           {"call": "T_SLOW_ITEMS", "args": [3600]}])["job"]
        until(lambda: running() == [1, 1, 1], "not every peer runs a chunk")
        t0 = time.monotonic()
        call(f"{urls[2]}/api/jobs/{job}/cancel", {})
        until(lambda: sum(running()) == 0, "still running")
        return time.monotonic() - t0


def reclaim(tmp: Path) -> float:
    with peers(tmp, 2, "--slots", "1", "--lease-s", str(LEASE_S)) as ps:
        job = call(ps[0][1] + "/api/jobs", [{"call": "T_SLEEP", "args": [3600]}])["job"]

        def holder() -> str | None:
            c = call(f"{ps[0][1]}/api/jobs/{job}")["tasks"][0]["chunks"]
            return str(c[0]["peer"]) if c and c[0]["state"] == "running" else None

        victim = until(holder, "the task never started")
        ids = [call(u + "/api/health")["peer"] for _, u in ps]
        (proc, _), (_, survivor) = ps if ids[0] == victim else ps[::-1]
        t0 = time.monotonic()
        proc.send_signal(signal.SIGKILL)

        def reclaimed() -> bool:
            c = call(f"{survivor}/api/jobs/{job}")["tasks"][0]["chunks"][0]
            return bool(c["attempt"] >= 1 and c["peer"] != victim and c["state"] == "running")

        until(reclaimed, "never reclaimed")
        return time.monotonic() - t0


SCENARIOS: dict[str, Callable[[Path], float]] = {
    "cancel-1": cancel_one, "cancel-3": cancel_three, "reclaim": reclaim}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--scenarios", default=",".join(SCENARIOS))
    ap.add_argument("--json", type=Path, help="also save the raw results here")
    a = ap.parse_args()
    results: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-latency-") as tmp:
        for name in a.scenarios.split(","):
            results[name] = [SCENARIOS[name](Path(tmp)) for _ in range(a.repeat)]
    print(f"machine: {machine()}")
    print(f"{'scenario':10} {'median s':>9} {'min s':>7} {'max s':>7}  runs")
    for name, xs in results.items():
        print(f"{name:10} {statistics.median(xs):9.3f} {min(xs):7.3f} {max(xs):7.3f}  {len(xs)}"
              + (f"   (lease {LEASE_S} s)" if name == "reclaim" else ""))
    if a.json:
        a.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
