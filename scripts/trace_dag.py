#!/usr/bin/env python3
"""Where a job of n independent ECHO tasks on N peers waits or wastes (issue 12): bench_mesh's
mesh, a warm batch, then `--reps` dag batches; after each, from peer 0's events.sqlite, per
peer: tasks split, claimed and done, events emitted (TURNs) and their parts (single events),
duplicate claims (the same
attempt claimed by several peers: by whom, S = the task's splitter, and how far apart) and
the time from a task's split to its first claim; plus the CPU each peer and its workers used
and how idle the whole machine was during the batch (/proc/stat).

    flock /work/wt/bench.lock .venv/bin/python scripts/trace_dag.py [--peers 3] [-n 1000]
        [--reps 2]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_mesh as bm
import bench_pipeline as bp


def _pct(xs: list[float], p: float) -> float | None:
    xs = sorted(xs)
    return round(xs[min(len(xs) - 1, int(len(xs) * p / 100))], 1) if xs else None


def trace(db: Path, names: dict[str, str], job_name: str = "bench-dag") -> dict[str, Any]:
    """The last job named `job_name` in the log `db`, per peer (see the module doc)."""
    con = sqlite3.connect(db)
    rows = con.execute("select origin, hlc, type, payload from events order by hlc").fetchall()
    con.close()
    evs = []
    job, t0 = None, 0.0
    for origin, hlc, typ, payload in rows:
        p = json.loads(payload)
        parts = [(t, q) for t, q in p["parts"]] if typ == 17 else [(typ, p)]
        ms = (hlc >> 16) + (hlc & 0xFFFF) / 1000
        evs.append((ms, names.get(origin, origin[:6]), parts))
        for t, q in parts:
            if t == 1 and q.get("workflow", {}).get("name") == job_name:
                job, t0 = q["job"], ms
    evs = [e for e in evs if any(q.get("job") == job for _, q in e[2])]
    splits: Counter[str] = Counter()
    claims: Counter[str] = Counter()
    dones: Counter[str] = Counter()
    events: Counter[str] = Counter()
    split_at: dict[str, float] = {}
    splitter: dict[str, str] = {}
    claimed: dict[tuple[str, int], list[tuple[float, str]]] = defaultdict(list)
    wait: list[float] = []
    parts_n: Counter[str] = Counter()
    for ms, o, parts in evs:
        events[o] += 1
        parts_n[o] += len(parts)
        for t, q in parts:
            if t == 3:
                splits[o] += 1
                split_at.setdefault(q["task"], ms)
                splitter.setdefault(q["task"], o)
            elif t == 4:
                claims[o] += 1
                if not claimed[(q["task"], q["attempt"])] and q["task"] in split_at:
                    wait.append(ms - split_at[q["task"]])
                claimed[(q["task"], q["attempt"])].append((ms, o))
            elif t == 7:
                dones[o] += 1
    dups: Counter[str] = Counter()
    apart: list[float] = []
    for (task, _), xs in claimed.items():
        if len(xs) > 1:
            xs.sort()
            apart.append(round(xs[1][0] - xs[0][0], 1))
            dups[" ".join("S" if o == splitter.get(task) else "x" for _, o in xs)] += 1
    return {"wall_ms": round(max(e[0] for e in evs) - t0), "splits": dict(splits),
            "claims": dict(claims), "dones": dict(dones), "events": dict(events),
            "parts": dict(parts_n),
            "duplicate_claims": sum(dups.values()), "duplicates_by": dict(dups),
            "duplicates_apart_ms": sorted(apart),
            "split_to_first_claim_ms": {"p50": _pct(wait, 50), "p90": _pct(wait, 90)}}


def _cpu_s(pid: int) -> float:
    try:
        f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def _machine() -> tuple[int, int]:
    """(all jiffies, idle + iowait jiffies) of /proc/stat."""
    v = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(v), v[3] + v[4]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--peers", type=int, default=3)
    ap.add_argument("-n", type=int, default=1000)
    ap.add_argument("--reps", type=int, default=2)
    a = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="trace-dag-"))
    mesh = bm.start_mesh(a.peers, base)
    try:
        bm.banzai_batches(mesh, ["warm"], a.n, 0)
        names = {p.id: f"p{i}" for i, p in enumerate(mesh.peers)}
        for _ in range(a.reps):
            procs = {f"p{i}": p.proc.pid for i, p in enumerate(mesh.peers)}
            kids = {f"w{i}": list(bp.descendants(p.proc.pid)) for i, p in enumerate(mesh.peers)}
            c0 = {k: _cpu_s(v) for k, v in procs.items()}
            m0, t0 = _machine(), time.monotonic()
            r = bm.banzai_batches(mesh, ["dag"], a.n, 0)["dag"]
            dt, m1 = time.monotonic() - t0, _machine()
            cores = {k: round((_cpu_s(v) - c0[k]) / dt, 2) for k, v in procs.items()}
            time.sleep(1.0)  # the last TURNs reach peer 0
            out = {"tasks_per_s": round(r["tasks_per_s"]), "per_peer": r["per_peer"],
                   "cpu_ms_per_task": round(r["cpu_ms_per_task"], 2),
                   "peer_cores": cores, "workers": {k: len(v) for k, v in kids.items()},
                   "machine_idle": round((m1[1] - m0[1]) / max(1, m1[0] - m0[0]), 2),
                   "load1": r["load1"],
                   **trace(base / "peer0" / "events.sqlite", names)}
            print(json.dumps(out), flush=True)
    finally:
        bm.stop_mesh(mesh)
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
