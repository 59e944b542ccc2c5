"""Measure the replicated log at scale (issue 11, Measure): a history of N finished tasks
(jobs of `--tasks-per-job` whole ECHO tasks: JOB_SUBMITTED, then per task TASK_SPLIT, CLAIM,
CHUNK_DONE, TASK_DONE with its cache key) merged straight into a peer's log in process and
compacted as the peer does (`Node.merge`, then `CatchUp.compact` every few jobs: alone, every
finished job beyond the recent history becomes a job index record and its events leave the
log), then: the peer's RSS, restart to /api/health, a fresh peer's catch-up (its heads digest
equal to the first peer's: it takes a snapshot), an in-sync digest (in process, `events_after`
over the folded log) and RSS growth per 10,000 tasks run on the live peer (after a warm-up of
the recent history).

    PYTHONPATH=$PWD .venv/bin/python scripts/bench_log.py --tasks 100000
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scriptlib import BIN, ROOT, lone_peer, machine, mesh_secret_file, remember_peer

from peer.config import PeerConfig
from peer.jobs.spec import workflow_from_json
from peer.log import Event, EventLog, EventType, MeshState
from peer.node import Node

ORIGIN = "bench0000000000000000"  # the history's author: a peer long gone (attested at start)
LIMIT = 512


def _cid(s: str) -> str:
    return "bafkrei" + hashlib.sha256(s.encode()).hexdigest()[:52]


def history(tasks: int, per_job: int, start_hlc: int) -> Iterator[list[Event]]:
    """The events of `tasks` finished tasks in jobs of `per_job`, one job at a time."""
    seq = 0
    hlc = start_hlc
    for j in range(tasks // per_job):
        out: list[Event] = []

        def add(typ: EventType, payload: dict[str, Any], out: list[Event] = out) -> None:
            nonlocal seq, hlc
            seq += 1
            hlc += 1
            out.append(Event(ORIGIN, seq, hlc, typ, payload))

        job = f"bench-{j:06d}"
        wf = {"name": job, "tasks": [{"name": f"t{i}", "call": "ECHO",
                                      "params": {"text": f"{j}/{i}"}}
                                     for i in range(per_job)]}
        if j == 0:
            workflow_from_json(wf)
        add(EventType.JOB_SUBMITTED, {"job": job, "workflow": wf})
        for i in range(per_job):
            task = f"t{i}"
            add(EventType.TASK_SPLIT, {"job": job, "task": task, "input": None,
                                       "chunks": [[]]})
            base = {"job": job, "task": task, "split": [ORIGIN, seq], "chunk": 0, "attempt": 0}
            add(EventType.CLAIM, base)
            out_cid = _cid(f"{job}/{task}")
            add(EventType.CHUNK_DONE, {**base, "output": out_cid, "cache": {}})
            add(EventType.TASK_DONE, {"job": job, "task": task, "output": out_cid,
                                      "key": hashlib.sha256(f"{j}/{i}".encode()).hexdigest()})
        yield out


def build(data: Path, secret: Path, tasks: int, per_job: int) -> dict[str, Any]:
    """The history merged into a node on `data` and compacted as a peer alone would."""
    node = Node(PeerConfig(data_dir=data, slots=1, mdns=False, secret_file=secret,
                           mesh_name=MESH))
    node.listeners[:] = [node.compactor.note]  # nothing runs: only the compactor listens
    events = 0
    batch: list[Event] = []
    start_hlc = (int(time.time() * 1000) - 86_400_000) << 16
    for evs in history(tasks, per_job, start_hlc):
        batch += evs
        events += len(evs)
        if len(batch) >= 40_000:
            node.merge(batch)
            node.catchup.compact()
            batch = []
    node.merge(batch)
    node.catchup.compact()
    node.catchup.compact()
    out = {"events": events, "compacted_jobs": len(node.index),
           "dropped": node.compactor.total.dropped, "in_memory": len(node.state.events)}
    node.log.close()
    return out


def rss_mb(pid: int) -> float:
    for ln in Path(f"/proc/{pid}/status").read_text().splitlines():
        if ln.startswith("VmRSS:"):
            return int(ln.split()[1]) / 1024
    return 0.0


def health(url: str) -> Any:
    with urllib.request.urlopen(url + "/api/health", timeout=30) as r:
        return json.load(r)


def submit(url: str, n: int) -> str:
    wf = [{"call": "ECHO", "args": [f"live-{time.time_ns()}-{i}"]} for i in range(n)]
    req = urllib.request.Request(url + "/api/jobs", json.dumps(wf).encode(),
                                 {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return str(json.load(r)["job"])


def wait_done(url: str, job: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"{url}/api/jobs/{job}", timeout=30) as r:
            if json.load(r)["state"] in ("done", "failed", "cancelled"):
                return
        time.sleep(0.5)
    raise RuntimeError(f"job {job} not finished after {timeout_s} s")


def digest_ms(path: Path) -> tuple[float, int]:
    """An in-sync digest's events_after over the folded log, in ms (in process)."""
    s = MeshState()
    log = EventLog(path)
    for ev in log.load():
        s.apply(ev)
    for origin, seq in log.floors().items():
        s.raise_floor(origin, seq)
    log.close()
    heads = dict(s.heads)
    t = time.perf_counter()
    for _ in range(100):
        s.events_after(heads, LIMIT)
    return (time.perf_counter() - t) * 10, len(s.events)


MESH = f"bench-log-{os.getpid()}"


def start(data: Path, log: Path, secret: Path, extra: list[str]) -> Any:
    # The last --mesh-name wins: both peers in one mesh.
    return lone_peer(data, log, 1, mesh_prefix="bench-log", log_level="warning",
                     extra=["--secret-file", str(secret), "--mesh-name", MESH,
                            "--replicas", "1", *extra])


def spawn(data: Path, log: Path, secret: Path, extra: Sequence[str] = ()) -> tuple[Any, str]:
    """banzai-peer on `data`; returns (process, URL) once it prints its URL."""
    args = [str(BIN / "banzai-peer"), "--data-dir", str(data), "--http", "127.0.0.1:0",
            "--no-mdns", "--mesh-name", MESH, "--secret-file", str(secret), "--slots", "1",
            "--replicas", "1", "--log-level", "warning", *extra]
    with log.open("wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT,
                                cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    while (m := re.search(r"^web UI: (http://\S+?)/?$", log.read_text(), re.M)) is None:
        if proc.poll() is not None:
            raise RuntimeError("banzai-peer did not start:\n" + log.read_text())
        time.sleep(0.02)
    remember_peer(m.group(1), data)
    return proc, m.group(1)


def restart_s(data: Path, log: Path, secret: Path) -> float:
    """Seconds from starting banzai-peer on `data` to its first /api/health answer."""
    t = time.perf_counter()
    proc, url = spawn(data, log, secret)
    try:
        health(url)
        return time.perf_counter() - t
    finally:
        proc.terminate()
        proc.wait(60)


def caught_up_s(data: Path, log: Path, secret: Path, join: str, first: str,
                figures: dict[str, Any]) -> float:
    """Seconds from starting a fresh peer joining `join` until its heads digest is that of
    the peer at `first` (its /api/health may be slow to answer meanwhile: a timeout is
    retried); the stages of both sides go to `figures`."""
    t = time.perf_counter()
    proc, url = spawn(data, log, secret, ["--join", join])
    figures["fresh_peer_url_s"] = round(time.perf_counter() - t, 2)
    try:
        while time.perf_counter() - t < 1800:
            try:
                if health(url)["log"]["heads_digest"] == health(first)["log"]["heads_digest"]:
                    break
            except (TimeoutError, OSError):
                pass
            time.sleep(0.2)
        took = time.perf_counter() - t
        while health(url)["log"]["compaction"].get("snapshots_pending", 0) and (
                time.perf_counter() - t < 1800):  # v3: cache and provider rows taken after
            time.sleep(0.2)
        figures["start_and_rows_indexed_s"] = round(time.perf_counter() - t, 1)
        fresh, served = health(url)["log"]["compaction"], health(first)["log"]["compaction"]
        figures["catch_up_stages_s"] = {k: round(v, 3) for k, v in
                                        fresh.get("caught_up_s", {}).items()}
        figures["served_stages_s"] = {k: round(v, 3) for k, v in
                                      served.get("served_s", {}).items()}
        return took
    finally:
        proc.terminate()
        proc.wait(60)


def run_tasks(url: str, n: int, pid: int | None = None) -> list[tuple[int, float]]:
    """Run n ECHO tasks in jobs of 500; with `pid`, that process's RSS after each job."""
    done, samples = 0, []
    while done < n:
        k = min(500, n - done)
        wait_done(url, submit(url, k), 600)
        done += k
        if pid is not None:
            samples.append((done, rss_mb(pid)))
    return samples


def slope_mb_per_10k(samples: list[tuple[int, float]]) -> float:
    """Least-squares slope of RSS over tasks, per 10,000 tasks (one reading's noise, a
    page-in here or a freed arena there, weighs less than in a first-to-last difference)."""
    xs, ys = [x for x, _ in samples], [y for _, y in samples]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    var = sum((x - mx) ** 2 for x in xs)
    return 0.0 if var == 0 else sum((x - mx) * (y - my) for x, y in samples) / var * 10_000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tasks", type=int, default=100_000)
    ap.add_argument("--tasks-per-job", type=int, default=1000)
    ap.add_argument("--live-tasks", type=int, default=2000,
                    help="tasks run on the live peer to measure RSS growth")
    ap.add_argument("--warm-tasks", type=int, default=1500,
                    help="tasks run first (the recent history, 1000 tasks by default)")
    ap.add_argument("--reuse", type=Path, default=None,
                    help="a directory to keep the built history in (built there if absent, "
                         "else reused: the same tasks); a fresh peer joins it each time")
    ap.add_argument("--catch-up-only", action="store_true",
                    help="measure only a fresh peer's catch-up (with --reuse)")
    a = ap.parse_args()
    global MESH
    tmp = a.reuse or Path(tempfile.mkdtemp(prefix="bench-log-"))
    data = tmp / "a"
    reused = (data / "events.sqlite").exists()
    if reused:
        secret = tmp / "mesh.secret"
        MESH = (tmp / "mesh.name").read_text()
        shutil.rmtree(tmp / "b", ignore_errors=True)
    else:
        secret = mesh_secret_file(tmp)
        (tmp / "mesh.name").write_text(MESH)
    t0 = time.perf_counter()
    built = {} if reused else build(data, secret, a.tasks, a.tasks_per_job)
    figures: dict[str, Any] = {"tasks": a.tasks, **built,
                               "build_s": round(time.perf_counter() - t0, 1)}
    if not reused:
        with start(data, tmp / "a0.log", secret, []) as (proc, url):  # attests 0.1.0 rows
            figures["first_start_events"] = health(url)["log"]["events"]
    if not a.catch_up_only:
        figures["restart_to_health_s"] = round(restart_s(data, tmp / "r.log", secret), 2)
    with start(data, tmp / "a1.log", secret, []) as (proc, url):
        figures["rss_mb"] = round(rss_mb(proc.pid), 1)
        h = health(url)
        gossip = h.get("gossip_address")
        if gossip:
            figures["start_and_catch_up_s"] = round(caught_up_s(
                tmp / "b", tmp / "b.log", secret, gossip, url, figures), 1)
            shutil.rmtree(tmp / "b", ignore_errors=True)
        if a.catch_up_only:
            figures["load"] = os.getloadavg()
            print(json.dumps(figures, indent=1))
            return
        run_tasks(url, a.warm_tasks)  # the recent history fills up first
        before = rss_mb(proc.pid)
        samples = run_tasks(url, a.live_tasks, proc.pid)
        figures["live_tasks"] = a.live_tasks
        figures["rss_growth_mb_per_10k"] = round(
            (rss_mb(proc.pid) - before) * 10_000 / a.live_tasks, 1)
        figures["rss_slope_mb_per_10k"] = round(slope_mb_per_10k([(0, before), *samples]), 1)
        figures["rss_samples_mb"] = [round(y, 1) for _, y in samples]
        figures["live_compaction"] = health(url)["log"]["compaction"]
    ms, n = digest_ms(data / "events.sqlite")
    figures["in_sync_digest_ms"] = round(ms, 4)
    figures["folded_events"] = n
    figures["machine"] = machine()
    figures["load"] = os.getloadavg()
    print(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
