"""What giving the log's free pages back costs (peer.log.vacuum): a log of the events of
`--tasks` finished tasks (scripts/bench_log.py's history: 4 events a task, jobs of
`--tasks-per-job`) in an EventLog on a temp file, then all but the last job's (or, with
`--keep-every K`, all but every K-th job's: the live pages spread over the file) dropped as
compaction drops them (EventLog.delete of at most 10,000 events, floors raised), then:

- new file (auto_vacuum INCREMENTAL): `EventLog.vacuum` until it gives nothing back, as the
  compaction passes call it: the time of each step (incremental_vacuum and checkpoint), for
  each `--step-pages`;
- older file (auto_vacuum NONE, as an earlier release made it): the one-off VACUUM at open.

Reports the file's size ([database, WAL] bytes) full, after the drop and after, in JSON.

    flock /work/wt/bench.lock env PYTHONPATH=$PWD .venv/bin/python scripts/bench_vacuum.py \\
        --tasks 100000
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scriptlib import load_script, machine

from peer.log import EventLog
from peer.log.vacuum import VacuumConfig


def file_bytes(path: Path) -> list[int]:
    """[database, WAL] bytes on disk."""
    wal = path.with_name(path.name + "-wal")
    return [path.stat().st_size, wal.stat().st_size if wal.exists() else 0]

DROP_MAX = 10_000  # events one compaction pass drops at most (peer.log.compact)


def fill(log: EventLog, tasks: int, per_job: int, keep_every: int) -> tuple[int, list[int]]:
    """The history written (one transaction a job, as merged turns); (events, the seqs to
    drop: every job's but the last's, or with `keep_every` K all but every K-th job's)."""
    n = 0
    jobs: list[list[int]] = []
    for evs in load_script("bench_log").history(tasks, per_job, 1 << 40):
        log.append(evs, sync=False)
        n += len(evs)
        jobs.append([e.seq for e in evs])
    log.db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    gone = [s for j, seqs in enumerate(jobs)
            if (j % keep_every if keep_every else j < len(jobs) - 1) for s in seqs]
    return n, gone


def drop(log: EventLog, origin: str, gone: list[int]) -> float:
    """These seqs dropped in passes of DROP_MAX (floors raised); the seconds it took."""
    t0 = time.perf_counter()
    for lo in range(0, len(gone), DROP_MAX):
        part = gone[lo:lo + DROP_MAX]
        log.delete([(origin, s) for s in part], {origin: max(part)})
    return time.perf_counter() - t0


def _ms(xs: list[float]) -> dict[str, float]:
    xs = sorted(xs)
    return {"median": round(statistics.median(xs) * 1e3, 2),
            "p90": round(xs[int(len(xs) * 0.9)] * 1e3, 2), "max": round(xs[-1] * 1e3, 2)}


def incremental(tmp: Path, tasks: int, per_job: int, keep_every: int, step_pages: int,
                full: bool) -> dict[str, Any]:
    path = tmp / f"inc-{step_pages}-{int(full)}.sqlite"
    log = EventLog(path, vacuum=VacuumConfig(step_pages=step_pages))
    origin = load_script("bench_log").ORIGIN
    events, gone = fill(log, tasks, per_job, keep_every)
    full_bytes = file_bytes(path)
    drop_s = drop(log, origin, gone)
    dropped_bytes = file_bytes(path)
    free = log.file_stats().free_bytes
    if full:
        log.db.execute("PRAGMA synchronous=FULL")
    times: list[float] = []
    for _ in range(1_000_000):  # bounded: ends when a step gives nothing back
        t0 = time.perf_counter()
        n = log.vacuum()
        if not n:
            break
        times.append(time.perf_counter() - t0)
    out = {"step_pages": step_pages, "synchronous": "FULL" if full else "NORMAL",
           "events": events, "full_bytes": full_bytes, "drop_s": round(drop_s, 2),
           "after_drop_bytes": dropped_bytes, "free_bytes": free,
           "after_bytes": file_bytes(path), "steps": len(times),
           "steps_s": round(sum(times), 2), "step_ms": _ms(times) if times else {}}
    log.close()
    return out


def older(tmp: Path, tasks: int, per_job: int, keep_every: int) -> dict[str, Any]:
    path = tmp / "older.sqlite"
    db = sqlite3.connect(str(path), isolation_level=None)  # as an earlier release made it
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE meta (k TEXT PRIMARY KEY, v TEXT)")
    db.close()
    log = EventLog(path)
    origin = load_script("bench_log").ORIGIN
    events, gone = fill(log, tasks, per_job, keep_every)
    full_bytes = file_bytes(path)
    drop(log, origin, gone)
    log.close()
    before = file_bytes(path)
    t0 = time.perf_counter()
    log = EventLog(path, vacuum=VacuumConfig(min_free_bytes=0))
    opened = time.perf_counter() - t0
    c = log.converted
    out = {"events": events, "full_bytes": full_bytes, "after_drop_bytes": before,
           "converted": c is not None, "vacuum_s": round(c.seconds, 3) if c else None,
           "open_s": round(opened, 3), "after_bytes": file_bytes(path),
           "incremental": log.file_stats().incremental}
    log.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", type=int, default=100_000)
    ap.add_argument("--tasks-per-job", type=int, default=1000)
    ap.add_argument("--keep-every", type=int, default=0,
                    help="keep every K-th job (default: only the last)")
    ap.add_argument("--step-pages", type=int, nargs="+", default=[512])
    ap.add_argument("--full", action="store_true", help="also with synchronous=FULL")
    ap.add_argument("--dir", type=Path, default=None, help="temp files here (default: TMPDIR)")
    a = ap.parse_args()
    report: dict[str, Any] = {"machine": machine(), "sqlite": sqlite3.sqlite_version,
                              "load": os.getloadavg(), "tasks": a.tasks, "keep_every": a.keep_every,
                              "runs": []}
    with tempfile.TemporaryDirectory(dir=a.dir) as d:
        for pages in a.step_pages:
            for full in ((False, True) if a.full else (False,)):
                report["runs"].append(incremental(Path(d), a.tasks, a.tasks_per_job,
                                                  a.keep_every, pages, full))
                print(json.dumps(report["runs"][-1]), file=sys.stderr)
        report["older"] = older(Path(d), a.tasks, a.tasks_per_job, a.keep_every)
    report["load_after"] = os.getloadavg()
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
