"""What a peer holds and sends for its API and web UI, before and after session 50, helper c:
a running task's live log (memory held, stored record), a stored record's parse, the job
list's page at 10,000 / 100,000 jobs of the state, and the bytes per /api/events event.

    env PYTHONPATH=$PWD .venv/bin/python scripts/bench_live_bounds.py [--lines N] [--jobs N,N]

No network; everything in this process. "before" re-states db663953's code paths here.
"""

from __future__ import annotations

import argparse
import gc
import json
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

from peer.http.app import _run_record, _sse
from peer.http.views import live_page
from peer.jobs.live import log_line, log_lines, metric_points, run_record
from peer.log import Event, EventType, MeshState
from peer.log.jobtable import JobTable

ORIGIN = "bench000000000000000"


def _held(fill: Callable[[], Any]) -> tuple[int, Any]:
    """Bytes still allocated by what `fill` made (tracemalloc), and it."""
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    made = fill()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return after - before, made


def live_log(n: int) -> None:
    def line(i: int) -> str:
        return f"item {i:08d} done: score {i * 7 % 1000 / 1000:.3f} in 0.{i % 97:02d} s"

    def old() -> tuple[list[str], list[list[Any]]]:
        lines: list[str] = []
        metrics: list[list[Any]] = []
        for i in range(n):
            lines.append(str(line(i)))
            metrics.append(["loss", i, 1.0 / (i + 1)])
        return lines, metrics

    def new() -> tuple[Any, Any]:
        lines, metrics = log_lines(), metric_points()
        for i in range(n):
            lines.append(log_line(str(line(i))))
            metrics.append(["loss", i, 1.0 / (i + 1)])
        return lines, metrics

    t = time.perf_counter()
    held_old, (lines, metrics) = _held(old)
    t_old = time.perf_counter() - t
    stored_old = len(json.dumps({"log": lines, "metrics": metrics}))
    del lines, metrics
    t = time.perf_counter()
    held_new, (klines, kmetrics) = _held(new)
    t_new = time.perf_counter() - t
    data = json.dumps(run_record(klines, kmetrics)).encode()
    ts = []
    for _ in range(3):
        t = time.perf_counter()
        _run_record(data, "bench", "log")
        ts.append(time.perf_counter() - t)
    print(f"live log of {n:,} lines and {n:,} metric points (a line and a point per item):")
    print(f"  held:   before {held_old / 1e6:8.1f} MB   after {held_new / 1e6:8.1f} MB")
    print(f"  stored: before {stored_old / 1e6:8.1f} MB   after {len(data) / 1e6:8.1f} MB "
          f"({len(klines):,} lines kept, {klines.cut:,} cut; {kmetrics.cut:,} points cut)")
    print(f"  appends: before {t_old / n * 1e6:.2f} us/item   after {t_new / n * 1e6:.2f} us/item"
          " (under tracemalloc)")
    print(f"  parse of the stored record (jsontext): {min(ts) * 1e3:.1f} ms "
          "(before: on the loop per chunk per request; after: in a worker thread)")


def _entry_bytes(plain: dict[str, Event]) -> int:
    """Bytes a JobTable of `plain` holds beyond a dict of it."""
    table, _ = _held(lambda: JobTable(plain))
    copy, _ = _held(lambda: dict(plain))
    return table - copy


def pages(counts: list[int]) -> None:
    for n in counts:
        evs = [Event(f"peer{i % 7:016d}", i + 1, 1_000_000 + i, EventType.JOB_SUBMITTED,
                     {"job": f"job{i:07d}", "workflow": {"name": "b", "tasks": [
                         {"name": "t", "call": "ECHO", "params": {}}]}}) for i in range(n)]
        plain = {e.payload["job"]: e for e in evs}
        table = JobTable(plain)
        old_state, new_state = MeshState(jobs=plain), MeshState(jobs=table)
        mid = evs[n // 2].order
        for limit, after, what in ((50, None, "first page of 50"),
                                   (1000, None, "first page of 1000"),
                                   (50, mid, "a page of 50 in the middle")):
            row = []
            for state in (old_state, new_state):
                ts = []
                for _ in range(5):
                    t = time.perf_counter()
                    got = live_page(state, limit, after)
                    ts.append(time.perf_counter() - t)
                row.append((min(ts), got))
            assert row[0][1] == row[1][1]
            print(f"  {n:>7,} jobs, {what:<27}: before {row[0][0] * 1e3:7.2f} ms   "
                  f"after {row[1][0] * 1e3:6.3f} ms")
        print(f"  {n:>7,} jobs: the table's sorted entries hold {_entry_bytes(plain) / n:.0f} "
              "bytes a job")


def events() -> None:
    def old_summary(ev: Event) -> dict[str, Any]:
        p = ev.payload
        keep = ("job", "task", "chunk", "attempt", "progress", "output", "error", "kind",
                "cached", "name")
        return {"type": ev.type.name.lower(), "origin": ev.origin, "hlc": ev.hlc,
                **{k: p[k] for k in keep if k in p}}

    usual = Event(ORIGIN, 1, 1, EventType.CHUNK_DONE,
                  {"job": "job0000001", "task": "t", "chunk": 3, "attempt": 0,
                   "split": [ORIGIN, 1], "output": "bafkqaaa", "log": "bafkqaab", "s": 1.5})
    big = Event(ORIGIN, 2, 2, EventType.CHUNK_FAILED,
                {"job": "job0000001", "task": "t", "chunk": 3, "attempt": 0,
                 "kind": "error", "error": "E" * (1 << 20)})
    unknown = Event(ORIGIN, 3, 3, EventType(99), {"job": "j", "task": ["x" * 100] * 10_000})
    for name, ev in (("a usual CHUNK_DONE", usual), ("a CHUNK_FAILED of 1 MiB error", big),
                     ("an unknown type, a 1 MB list as task", unknown)):
        before = len(f"event: {ev.type.name.lower()}\ndata: {json.dumps(old_summary(ev))}\n\n")
        print(f"  {name:<38}: before {before:>9,} bytes   after {len(_sse(ev)):>6,} bytes")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--jobs", default="10000,100000")
    a = ap.parse_args()
    live_log(a.lines)
    print("job list page (live_page, on the loop):")
    pages([int(x) for x in a.jobs.split(",")])
    print("bytes per /api/events event (per open stream):")
    events()


if __name__ == "__main__":
    main()
