"""What reading texts that are not UTF-8 as bytes costs (peer.log.sqlite.text_or_bytes, the
text_factory of every connection to the log's file) against the sqlite3 module's default
(str): the same reads of one file, in one run, each way in turn (3 rounds, the median):
EventLog.load of N events, JobIndex.page of N jobs (the job list, all of it), JobIndex.entries
of N cache entries, a version 3 snapshot stream's rows (thin_rows), and N lookups of one
cache entry each (JobIndex.entry: the fold's reads of compacted entries). In process, an
on-disk SQLite file in a temporary directory; about a minute at N = 100,000.

    PYTHONPATH=$PWD .venv/bin/python scripts/bench_text_factory.py [--rows 100000]
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from peer.log import EventLog, EventType
from peer.log.jobindex import OUTPUT, JobIndex, JobRecord, thin_rows
from peer.log.sqlite import connect, text_or_bytes

A = "bench000000000000000"


def _fill(path: Path, n: int) -> None:
    log = EventLog(path)
    db = log.db
    db.execute("BEGIN")
    db.executemany("INSERT INTO events (origin, seq, hlc, type, payload) VALUES (?, ?, ?, ?, ?)",
                   [(A, i + 1, (1 << 40) + i, int(EventType.PROVIDE),
                     json.dumps({"cids": [f"bafkrei{i:052d}"]})) for i in range(n)])
    db.execute("COMMIT")
    index = JobIndex(db)
    for lo in range(0, n, 10_000):
        index.put([JobRecord(f"j{i:012x}", ((1 << 40) + i, A, i + 1), (1 << 40) + i, "done",
                             {"job": f"j{i:012x}", "state": "done", "tasks": 3},
                             {"job": f"j{i:012x}", "tasks": [{"task": t, "out": "x" * 40}
                                                             for t in range(3)]}, (),
                             {"finished_s": 1.0, "outputs": [], "logs": []})
                   for i in range(lo, min(n, lo + 10_000))], (), ())
    index.put_batches([("c", [(OUTPUT, f"{i:064x}", json.dumps(f"bafkrei{i:052d}"), 1, A, i + 1)
                              for i in range(n)])])
    log.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=100_000)
    n = ap.parse_args().rows
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "events.sqlite"
        _fill(path, n)
        log = EventLog(path)
        index = JobIndex(log.db)

        def stream() -> Any:
            db = connect(str(path))
            db.text_factory = log.db.text_factory
            try:
                return sum(len(b) for _, b in thin_rows(db))
            finally:
                db.close()
        reads: dict[str, Callable[[], Any]] = {
            "EventLog.load": lambda: sum(1 for _ in log.load()),
            "JobIndex.page": lambda: len(index.page(None, None)),
            "JobIndex.entries": lambda: sum(1 for _ in index.entries()),
            "thin_rows (v3 stream)": stream,
            "JobIndex.entry x N": lambda: sum(index.entry(OUTPUT, f"{i:064x}") is not None
                                              for i in range(n))}
        times: dict[tuple[str, str], list[float]] = {}
        for _ in range(3):
            for way, factory in (("str", str), ("text_or_bytes", text_or_bytes)):
                log.db.text_factory = factory
                for name, read in reads.items():
                    t0 = time.perf_counter()
                    got = read()
                    times.setdefault((name, way), []).append(time.perf_counter() - t0)
                    assert got, name
        print(f"rows {n}; sqlite {sqlite3.sqlite_version}")
        print(f"{'read':<24}{'str s':>8}{'bytes s':>9}{'cost':>8}")
        for name in reads:
            a, b = (statistics.median(times[(name, w)]) for w in ("str", "text_or_bytes"))
            print(f"{name:<24}{a:>8.3f}{b:>9.3f}{(b - a) / a:>+8.1%}")
        log.close()


if __name__ == "__main__":
    main()
