#!/usr/bin/env python3
"""Soak: a mesh of real banzai-peer processes on 127.0.0.1 runs a steady mix of jobs for
`--minutes`, and what a peer holds is sampled as it goes: RSS (peer process, and its whole
tree with the workers), open file descriptors, threads, the data dir's bytes (the event log,
the block store, all; the log's bytes per table and index, `log:<name>`) and the events in
memory (/metrics). The report fits a
line through the samples of the second half (after the warm-up) and gives each figure's
growth per 1,000 jobs: what a lab would see after months is that slope, not the level.

The mix, per submitted job of `--tasks` ECHO tasks, to a random peer: fresh texts; one job
in five a rerun of an earlier job (cached outputs), one in ten cancelled right after its
submit, one in five deleted once it ended (`banzai jobs rm`). Retention is short so that
the periodic storage cycle runs during the soak (`--keep-jobs-s`, `--gc-interval-s`; with
`--keep-outputs-s` outputs are unpinned too, else every output is kept), and
compaction keeps `--recent-tasks` tasks. At most `--in-flight` jobs are open at once;
`--rate` caps the submits per second. Every loop is bounded in time.

    .venv/bin/python scripts/soak.py [--peers 3] [--minutes 20] [--rate 4] [--tasks 5]
        [--sample-s 30] [--kill-every-min 0] [--stored-outputs] [--json PATH]
        [--keep-dir DIR]

`--kill-every-min M`: every M minutes one peer (round robin, never peer 0) is killed
with SIGKILL and restarted on its data dir. `--keep-dir DIR`: the peers' data dirs (and
their logs) go under DIR, a new or empty directory, and stay there after the soak (stopped
cleanly) to be read; without it, a temporary directory removed at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import secrets
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_mesh as bm
import bench_pipeline as bp
from scriptlib import auth_headers, machine, remember_peer

GAUGES = ("banzai_log_events", "banzai_log_bytes", "banzai_log_unwritten_events",
          "banzai_runs_active", "banzai_executor_queued", "banzai_malloc_trims_total",
          "banzai_malloc_trim_freed_bytes_total", "banzai_malloc_trim_rss_after_bytes",
          "banzai_malloc_trim_seconds_total")


def _req(url: str, method: str = "GET", body: Any = None, timeout_s: float = 30) -> Any:
    data = None if body is None else json.dumps(body).encode()
    headers = {**auth_headers(url), **({"Content-Type": "application/json"} if data else {})}
    r = urllib.request.Request(url, data=data, method=method, headers=headers)
    with urllib.request.urlopen(r, timeout=timeout_s) as resp:
        return json.load(resp)


def _kb(pid: int, key: str) -> int:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def _dir_bytes(d: Path) -> int:
    total = 0
    for top, _, files in os.walk(d):
        for f in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(top, f)).st_size
    return total


def _gauges(url: str) -> dict[str, float]:
    from prometheus_client.parser import text_string_to_metric_families

    r = urllib.request.Request(f"{url}/metrics", headers=auth_headers(url))
    with urllib.request.urlopen(r, timeout=30) as resp:
        text = resp.read().decode()
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name in GAUGES:
                out[s.name] = s.value
            elif s.name == "banzai_memory_entries":  # the fold's tables, by table
                out[f"mem_{s.labels['table']}"] = s.value
    return out


def log_tables(path: Path) -> dict[str, float]:
    """MB of each table and index of the SQLite file `path` (its pages, SQLite's dbstat),
    its free pages (`free`) and its WAL (`wal`), read through a read-only connection; {}
    if it cannot be read."""
    out: dict[str, float] = {}
    with contextlib.suppress(sqlite3.Error, OSError):
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
        try:
            for name, size in db.execute("SELECT name, sum(pgsize) FROM dbstat GROUP BY name"):
                out[name] = size / 1e6
            free = db.execute("PRAGMA freelist_count").fetchone()[0]
            out["free"] = free * db.execute("PRAGMA page_size").fetchone()[0] / 1e6
        finally:
            db.close()
        out["wal"] = Path(f"{path}-wal").stat().st_size / 1e6
    return out


def sample(mesh: bm.Mesh, dirs: list[Path], jobs: int, t0: float) -> dict[str, Any]:
    """One row per peer: what it holds now."""
    rows = []
    for p, d in zip(mesh.peers, dirs, strict=True):
        pid = p.proc.pid
        tree = [pid, *bp.descendants(pid)]
        fds = 0
        with contextlib.suppress(OSError):
            fds = len(os.listdir(f"/proc/{pid}/fd"))
        log_b = sum(f.stat().st_size for f in d.glob("events.sqlite*"))
        row = {"rss_mb": _kb(pid, "VmRSS") / 1024,
               "tree_rss_mb": sum(_kb(q, "VmRSS") for q in tree) / 1024,
               "procs": len(tree), "fds": fds, "threads": _kb(pid, "Threads"),
               "log_mb": log_b / 1e6, "store_mb": _dir_bytes(d / "store") / 1e6,
               "pack_mb": sum(f.stat().st_size for f in (d / "store").glob("inline.sqlite*"))
               / 1e6,
               "dir_mb": _dir_bytes(d) / 1e6}
        row |= {f"log:{k}": v for k, v in log_tables(d / "events.sqlite").items()}
        with contextlib.suppress(OSError, ValueError):
            g = _gauges(p.url)
            row |= {"log_events": g.get("banzai_log_events", 0.0),
                    "unwritten": g.get("banzai_log_unwritten_events", 0.0)}
            row |= {k: v for k, v in g.items() if k.startswith("mem_")}
            row |= {"trims": g.get("banzai_malloc_trims_total", 0.0),  # (peers with a trimmer)
                    "trimmed_mb": g.get("banzai_malloc_trim_freed_bytes_total", 0.0) / 1e6,
                    "rss_after_trim_mb": g.get("banzai_malloc_trim_rss_after_bytes", 0.0) / 2**20,
                    "trim_ms": g.get("banzai_malloc_trim_seconds_total", 0.0) * 1e3}
        rows.append(row)
    return {"t_s": time.monotonic() - t0, "jobs": jobs, "peers": rows}


def _slope(xs: list[float], ys: list[float]) -> float:
    if len(xs) < 2 or len(set(xs)) < 2:
        return 0.0
    return statistics.linear_regression(xs, ys).slope


def restart(mesh: bm.Mesh, i: int, base: Path, argv: list[str]) -> None:
    """SIGKILL peer i and start it again on its data dir with the same arguments."""
    p = mesh.peers[i]
    p.proc.send_signal(signal.SIGKILL)
    p.proc.wait(30)
    log = base / f"peer{i}.restart.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=bm.ROOT,
                                env={**os.environ, "PYTHONPATH": str(bm.ROOT)},
                                stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 90
    while (m := re.search(r"^web UI: (http://\S+?)/?$", log.read_text(), re.M)) is None:
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("the restarted peer did not start:\n" + log.read_text())
        time.sleep(0.1)
    remember_peer(m.group(1), base / f"peer{i}")
    mesh.peers[i] = bm.Peer(proc, m.group(1), log, p.id)


class Workload:
    """The jobs: submitted to random peers with their fates, followed until they end."""

    def __init__(self, a: argparse.Namespace, mesh: bm.Mesh) -> None:
        self.a, self.mesh, self.rng = a, mesh, random.Random(a.seed)
        self.open: dict[str, tuple[str, str, float]] = {}  # job -> (peer url, fate, since)
        self.texts: list[str] = []  # of recent jobs, for reruns
        self.counts = dict.fromkeys(("submitted", "done", "failed", "cancelled", "deleted",
                                     "restarts"), 0)
        self.errors: dict[str, int] = {}

    def _refused(self, what: str, e: OSError) -> None:
        """A request that failed, by what it was and its HTTP status (or unreachable)."""
        key = f"{what} {e.code if isinstance(e, urllib.error.HTTPError) else 'unreachable'}"
        self.errors[key] = self.errors.get(key, 0) + 1

    def submit(self, now: float) -> None:
        url = self.rng.choice(self.mesh.peers).url
        fate = self.rng.choices(["keep", "rerun", "cancel", "delete"], [5, 2, 1, 2])[0]
        text = (self.rng.choice(self.texts) if fate == "rerun" and self.texts
                else secrets.token_hex(8))
        tasks = [{"name": f"t{k}", "call": "ECHO", "args": [f"{text}-{k}"]}
                 for k in range(self.a.tasks)]
        try:
            job = _req(f"{url}/api/jobs", "POST", {"name": "soak", "tasks": tasks})["job"]
        except OSError as e:
            self._refused("submit", e)
            return
        self.counts["submitted"] += 1
        self.open[job] = (url, fate, now)
        self.texts.append(text)
        del self.texts[:-1000]
        if fate == "cancel":
            try:
                _req(f"{url}/api/jobs/{job}/cancel", "POST")
            except OSError as e:  # 409: it already ended
                self._refused("cancel", e)

    def poll(self) -> None:
        for job, (url, fate, since) in list(self.open.items()):
            try:
                st = _req(f"{url}/api/jobs/{job}")["state"]
            except OSError as e:  # its peer is restarting: ask another one next time
                self._refused("view", e)
                self.open[job] = (self.rng.choice(self.mesh.peers).url, fate, since)
                continue
            if st not in ("done", "failed", "cancelled"):
                continue
            self.counts[st] += 1
            del self.open[job]
            if fate == "delete":
                try:
                    _req(f"{url}/api/jobs/{job}", "DELETE")
                    self.counts["deleted"] += 1
                except OSError as e:
                    self._refused("delete", e)


@contextlib.contextmanager
def base_dir(keep: Path | None) -> Iterator[Path]:
    """Where the peers' data dirs go: `keep` (made if absent; ValueError unless empty), kept
    after; else a temporary directory, removed after."""
    if keep is None:
        with tempfile.TemporaryDirectory(prefix="banzai-soak-") as tmp:
            yield Path(tmp)
        return
    keep.mkdir(parents=True, exist_ok=True)
    if any(keep.iterdir()):
        raise ValueError(f"--keep-dir {keep}: not empty")
    yield keep.resolve()


def soak(a: argparse.Namespace, base: Path) -> dict[str, Any]:
    extra = ["--keep-jobs-days", f"{a.keep_jobs_s / 86400:.8f}",
             *(["--keep-outputs-days", f"{a.keep_outputs_s / 86400:.8f}"]
               if a.keep_outputs_s is not None else []),
             "--gc-interval-s", str(a.gc_interval_s),
             "--compact-recent-tasks", str(a.recent_tasks)]
    if a.stored_outputs:  # every output in the block store: retention unpins, gc frees,
        extra += ["--inline-output-max-bytes", "0"]  # the peers UNPROVIDE (jobless events)
    mesh = bm.start_mesh(a.peers, base, extra=extra)
    dirs = [base / f"peer{i}" for i in range(a.peers)]
    w = Workload(a, mesh)
    t0 = time.monotonic()
    samples = [sample(mesh, dirs, 0, t0)]
    next_sample, next_kill, victim = t0 + a.sample_s, t0 + a.kill_every_min * 60, 1
    try:
        while (now := time.monotonic()) < t0 + a.minutes * 60:
            if a.kill_every_min and now >= next_kill and a.peers > 1:
                restart(mesh, victim, base, mesh_argv(mesh, victim))
                w.counts["restarts"] += 1
                victim = victim % (a.peers - 1) + 1
                next_kill = now + a.kill_every_min * 60
            if now >= next_sample:
                samples.append(sample(mesh, dirs, w.counts["submitted"], t0))
                next_sample = now + a.sample_s
                print(json.dumps(samples[-1]["peers"][0] | {"jobs": w.counts["submitted"],
                                                            "t_s": round(now - t0)}),
                      flush=True)
            if len(w.open) < a.in_flight:
                w.submit(now)
            w.poll()
            time.sleep(1 / a.rate)
        samples.append(sample(mesh, dirs, w.counts["submitted"], t0))
        alive = [p.proc.poll() is None for p in mesh.peers]
        end = time.monotonic()
    finally:
        bm.stop_mesh(mesh)
    counts = w.counts | {"open_at_end": len(w.open), "oldest_open_s": round(
        max((end - t for _, _, t in w.open.values()), default=0))}
    return {"counts": counts, "errors": w.errors, "samples": samples, "alive": alive,
            "machine": machine(), "args": vars(a) | {"json": str(a.json) if a.json else None,
                                "keep_dir": str(a.keep_dir) if a.keep_dir else None}}


def mesh_argv(mesh: bm.Mesh, i: int) -> list[str]:
    """The command line peer i was started with (from /proc: the same flags again)."""
    raw = Path(f"/proc/{mesh.peers[i].proc.pid}/cmdline").read_bytes()
    return [x.decode() for x in raw.split(b"\0") if x]


FIELDS = ("rss_mb", "tree_rss_mb", "fds", "threads", "procs", "log_events", "log_mb",
          "store_mb", "pack_mb", "dir_mb", "trims", "trimmed_mb", "rss_after_trim_mb", "trim_ms")


def report(r: dict[str, Any]) -> str:
    """A markdown table: per figure, peer 0's level at the start, middle and end, and the
    slope per 1,000 jobs through the second half's samples (each peer; the largest shown)."""
    s = r["samples"]
    half = [x for x in s if x["t_s"] >= s[-1]["t_s"] / 2]
    lines = [f"Machine: {r['machine']}. Jobs: {json.dumps(r['counts'])}; requests refused: "
             f"{json.dumps(r['errors'])}; peers alive at the end: {r['alive']}.", "",
             "| figure (peer 0) | start | middle | end | growth per 1,000 jobs, 2nd half "
             "(largest of the peers) |", "| --- | --- | --- | --- | --- |"]
    mid = s[len(s) // 2]
    tables = sorted({k for x in s for p in x["peers"] for k in p if k.startswith("mem_")})
    files = sorted({k for x in s for p in x["peers"] for k in p if k.startswith("log:")})
    for f in (*FIELDS, *tables, *files):  # then the fold's tables in memory (entries), then
        # the log's tables and indexes on disk (MB)
        slopes = [_slope([x["jobs"] for x in half], [x["peers"][i].get(f, 0.0) for x in half])
                  * 1000 for i in range(len(s[0]["peers"]))]
        lines.append(f"| {f} | {s[0]['peers'][0].get(f, 0):.1f} | "
                     f"{mid['peers'][0].get(f, 0):.1f} | {s[-1]['peers'][0].get(f, 0):.1f} | "
                     f"{max(slopes, key=abs):+.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--peers", type=int, default=3)
    ap.add_argument("--minutes", type=float, default=20)
    ap.add_argument("--rate", type=float, default=4, help="loop passes (submits) per second")
    ap.add_argument("--tasks", type=int, default=5)
    ap.add_argument("--in-flight", type=int, default=8)
    ap.add_argument("--sample-s", type=float, default=30)
    ap.add_argument("--keep-jobs-s", type=float, default=120)
    ap.add_argument("--keep-outputs-s", type=float, default=None,
                    help="unpin finished jobs' outputs this long after (default: keep)")
    ap.add_argument("--gc-interval-s", type=float, default=30)
    ap.add_argument("--recent-tasks", type=int, default=200)
    ap.add_argument("--stored-outputs", action="store_true",
                    help="no inline outputs: gc frees them and the peers UNPROVIDE")
    ap.add_argument("--kill-every-min", type=float, default=0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--keep-dir", type=Path,
                    help="keep the peers' data dirs here (a new or empty directory)")
    a = ap.parse_args(argv)
    with base_dir(a.keep_dir) as base:
        r = soak(a, base)
    if a.json:
        a.json.write_text(json.dumps(r, indent=1))
    print(report(r))
    return 0 if all(r["alive"]) else 1


if __name__ == "__main__":
    sys.exit(main())
