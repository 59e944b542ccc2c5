"""Peer start-up cost as the tests pay it: start banzai-peer with tests.conftest.start_peer
(loopback, warm workers off) N times one after another; per start the wall time to the
`web UI:` line and the CPU time (user+sys) of the peer's process tree at that moment, then
SIGTERM (timed to the exit). Also the CPU of `python -c "import peer.main"` and of `banzai --help`.
Run from a worktree with PYTHONPATH set to it:
`python scripts/bench_peer_start.py --repeat 5`."""

from __future__ import annotations

import argparse
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.conftest import BIN, start_peer


def _tree_cpu_s(pid: int) -> float:
    """User+sys CPU of a process and its descendants (live ones, and reaped children)."""
    root = psutil.Process(pid)
    total = 0.0
    for p in [root, *root.children(recursive=True)]:
        try:
            t = p.cpu_times()
        except psutil.Error:
            continue
        total += t.user + t.system + t.children_user + t.children_system
    return total


def _child_cpu_s(argv: list[str]) -> float:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   env={**os.environ})
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    print("load", os.getloadavg())
    walls: list[float] = []
    cpus: list[float] = []
    stops: list[float] = []
    with tempfile.TemporaryDirectory(prefix="bench-start-") as d:
        for i in range(args.repeat):
            t0 = time.monotonic()
            p = start_peer(Path(d) / f"p{i}")
            wall = time.monotonic() - t0
            cpu = _tree_cpu_s(p.proc.pid)
            t1 = time.monotonic()
            p.kill(signal.SIGTERM)
            stop = time.monotonic() - t1
            walls.append(wall)
            cpus.append(cpu)
            stops.append(stop)
            print(f"start {i}: {wall:.2f} s wall, {cpu:.2f} s CPU (tree at ready); "
                  f"SIGTERM to exit {stop:.2f} s", flush=True)
    imports = [_child_cpu_s([sys.executable, "-c", "import peer.main"])
               for _ in range(args.repeat)]
    clis = [_child_cpu_s([str(BIN / "banzai"), "--help"]) for _ in range(args.repeat)]
    print(f"median start {statistics.median(walls):.2f} s wall, "
          f"{statistics.median(cpus):.2f} s CPU, stop {statistics.median(stops):.2f} s; "
          f"import peer.main "
          f"{statistics.median(imports):.2f} s CPU; banzai --help "
          f"{statistics.median(clis):.2f} s CPU")
    print("load", os.getloadavg())


if __name__ == "__main__":
    main()
