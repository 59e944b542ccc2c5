#!/usr/bin/env python3
"""What measuring run directories before removing them costs (764d04e, review r1 item 3).

    cd TREE && PYTHONPATH=$PWD .venv/bin/python scripts/bench_removal.py walk [--files 10,1000]
    cd TREE && PYTHONPATH=$PWD .venv/bin/python scripts/bench_removal.py runs [-n 1000]

  walk  in this process, a run directory of N one-byte files removed by executor._remove_runs
        with a report (measured first, as a worker's thread does with the disk bound on) and
        without one (removed only, as before 764d04e), alternated: CPU and wall ms per removal
        (median of --repeat). Needs a tree with _remove_runs (after 764d04e).
  runs  an Executor (2 slots, the disk bound on, as a peer has it by default: half the free
        disk) runs -n runs at once that each write one small file in their work directory:
        wall s until every result is in and every run directory removed, and CPU ms per run of
        this process (the loop, the watch, the helper thread) and of its workers (their
        removing threads too, /proc/PID/stat). The workers import `peer` from the working
        directory (the forkserver's sys.path), so run it in the tree being measured.
The run directories go under --dir (default: a temporary directory under the working
directory, on the disk a peer's data dir would be on).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from peer.jobs import executor
from peer.jobs.executor import Executor, ExecutorConfig

T = "tests.unit.executor_targets:use_workdir"
TICK_S = 1 / os.sysconf("SC_CLK_TCK")


def _make(run: Path, files: int) -> None:
    run.mkdir()
    for i in range(files):
        (run / f"f{i}").write_bytes(b"x")


def walk(where: Path, files: int, repeat: int) -> dict[str, float]:
    """CPU and wall ms per removal of a run directory of `files` files, without and with the
    measure first (medians of `repeat` each, alternated)."""
    took: dict[str, list[tuple[float, float]]] = {"remove": [], "measure+remove": []}
    for r in range(repeat):
        for mode in (("remove", "measure+remove") if r % 2 == 0 else
                     ("measure+remove", "remove")):
            run = where / f"run-{files}-{r}-{len(mode)}"
            _make(run, files)
            said: list[int] = []
            c0, t0 = time.process_time(), time.perf_counter()
            executor._remove_runs([run], said.append if mode != "remove" else None)
            took[mode].append((time.process_time() - c0, time.perf_counter() - t0))
            assert not run.exists() and (mode == "remove") == (said == [])
    return {f"{mode}_{k}_ms": round(statistics.median(x[i] for x in v) * 1e3, 4)
            for mode, v in took.items() for i, k in enumerate(("cpu", "wall"))}


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * TICK_S  # utime, stime


async def runs(where: Path, n: int) -> dict[str, float]:
    free = shutil.disk_usage(where).free
    cfg = ExecutorConfig(slots=2, work_dir=str(where), task_scratch_max_bytes=free // 2)
    async with Executor(cfg) as ex:
        await ex.run("warm", T, "w")
        base = next(where.iterdir())
        pids = [w.proc.pid for w in ex._workers]
        cpu0 = {pid: _cpu_s(pid) for pid in pids if pid is not None}
        c0, t0 = time.process_time(), time.perf_counter()
        results = await asyncio.gather(*(ex.run(f"r{i}", T, "x" * 100) for i in range(n)))
        while any(base.glob(".*.gone")):  # the workers' threads still removing
            await asyncio.sleep(0.005)
        wall = time.perf_counter() - t0
        parent = time.process_time() - c0
        workers = sum(_cpu_s(pid) - c for pid, c in cpu0.items())
        assert all(r.ok for r in results) and len({w.proc.pid for w in ex._workers}) == 2
    return {"wall_s": round(wall, 3), "parent_cpu_ms_per_run": round(parent / n * 1e3, 4),
            "workers_cpu_ms_per_run": round(workers / n * 1e3, 4),
            "cpu_ms_per_run": round((parent + workers) / n * 1e3, 4)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("mode", choices=("walk", "runs"))
    ap.add_argument("--files", default="10,1000,100000", help="walk: files per run directory")
    ap.add_argument("--repeat", type=int, default=10, help="walk: removals of each kind")
    ap.add_argument("-n", type=int, default=1000, help="runs: runs in the job")
    ap.add_argument("--dir", type=Path, default=Path.cwd())
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-removal-", dir=args.dir) as tmp:
        where = Path(tmp)
        out: dict[str, object] = {"mode": args.mode, "load": os.getloadavg()[0]}
        if args.mode == "walk":
            for files in map(int, args.files.split(",")):
                repeat = args.repeat if files <= 10_000 else max(1, args.repeat // 5)
                out[str(files)] = walk(where, files, repeat)
        else:
            out.update(asyncio.run(runs(where, args.n)))
        out["load_after"] = os.getloadavg()[0]
    json.dump(out, sys.stdout)
    print()


if __name__ == "__main__":
    main()
