#!/usr/bin/env python3
"""Mesh benchmarks (issue 4): banzai on 1, 2, 3 real peers against Dask, and the seed DAG
on 2 peers against 1.

    .venv/bin/python scripts/bench_mesh.py [--peers 1,2,3] [-n 1000] [--latency-n 200]
        [--repeat 3] [--no-lanes] [--lanes-min-job-tasks N] [--rows latency,dag,jobs,map]
        [--profile DIR]
        [--write docs/benchmarks.md] [--json PATH]
    .venv/bin/python scripts/bench_mesh.py --pipeline [--repeat 3] [--write ...]

Throughput/latency mode. For each N: N banzai-peer processes on 127.0.0.1 (--slots 1
each, mDNS on 127.0.0.1, one fresh mesh name and data dirs; the script waits until every
peer sees the other N-1 alive) and a Dask LocalCluster(n_workers=N, threads_per_worker=1,
processes=True), both up at once; each repetition interleaves the two systems:
  latency  `--latency-n` tasks one at a time. banzai: POST a one-task ECHO job to peer 0 and
           wait for its task_done on peer 0's /api/events stream (SSE, no polling);
           Dask: client.submit(f, x, pure=False).result(). Client-side submit->done.
  dag      banzai: ONE job of `-n` independent ECHO tasks posted to peer 0, until its n-th
           task_done arrives on peer 0's SSE stream. Dask: client.map(f, xs) + gather.
  jobs     banzai only: `-n` one-task jobs POSTed back to back, round robin over the peers,
           until the last task_done arrives on peer 0.
  jobs0    as jobs, every one POSTed to peer 0 (it runs them: the others only receive;
           scripts/profile_mesh.py --kind jobs0 reads each peer's CPU apart).
  jobs0par as jobs0 with PAR_POSTS POSTs in flight at once (clients posting together: the
           submissions a receiver gets per receive turn and per fsync can be several).
Every ECHO text carries a fresh tag, so nothing is served from the cache. CPU time of
both sides (banzai: peers + forkservers + workers; Dask: this process, which hosts the
scheduler and client, + nannies + workers) is read from /proc around each batch. The
throughput (tasks/s) and latency figures are timed to the batch's last task_done, as before
session 35; banzai's CPU window runs on until every peer has compacted the jobs the batch
pushed out of the recent history (`settle`: /metrics' jobs in memory down to what
CompactConfig.recent_tasks keeps; a pass every 5 s, bounded at 30 s), so it holds the
compaction a batch causes (for n ≥ 1,000, every older job's) on every peer, not whichever
pass happens to fall in it; what the idle mesh spends per second (measured once per mesh
after the warm-up) times that wait is taken off. A window holds the compaction of the jobs
its batch pushes out (a batch's own jobs stay in the recent history until later ones push
them out), so the dag and jobs batches each run twice in a row, the first unmeasured
(`STAND_IN`): the measured one's window compacts a job like its own (the dag: one
1,000-task job; jobs: 1,000 one-task jobs), not the batches' before it; the latency batch
pushes out 200 one-task jobs, the map's a few (an unmeasured jobs and map batch after the
warm-up fill the recent history for the first repetition). The job view the dag and map
batches read (which peer ran what, HLC times) is read after the window.
--rows: only these batches in each repetition, banzai's and Dask's (the warm-up and its
unmeasured jobs and map batches run as ever); with some left out the script prints each
row's per-repetition figures and their medians instead of the section (no --write).
Lanes: every peer runs with --lanes (partial replication: a lanes job's task events go to
its members only), the peers' default since session 44 and so this script's (since session
45); its section is MESH_SECTION + ", lanes on (the peers' default)". --no-lanes: every peer
runs with --no-lanes (full replication, the peers' default before), the rows of MESH_SECTION
itself (the earlier sessions' rows, all lanes off). The script passes either flag to the
peers explicitly, so each section keeps its meaning whatever the peers' default.
--lanes-min-job-tasks N: passed to every peer (0: every job a lanes job, one-task jobs too);
without it the peers' default (32: the one-task jobs of latency and jobs are held in full).
--profile DIR: afterwards, one more banzai mesh of the largest N runs the dag batch with
py-spy recording peer 0 (and its workers); the hottest lines/functions are printed.

Pipeline mode (--pipeline): examples/speakers-dag.json (4 FETCH_FESTVOX -> merge ->
FILTER_LONGER 3 -> EXTRACT_MFCC [512,40,20,8000,16000] -> LEARN) on a cached synthetic
corpus (scripts/make_corpus.py, 4 speakers x 50 utterances, .cache/bench-mesh-corpus)
served by scripts/serve_dir.py on 127.0.0.1; 1 peer vs 2 peers, --slots 1 each, fresh data
dirs every run; parallel efficiency = t1 / (2 x t2); which peer ran which chunks.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import re
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
sys.path.insert(0, str(ROOT / "scripts"))

import bench_engine as be  # noqa: E402  (post_job, pct, summary)
import bench_pipeline as bp  # noqa: E402  (machine, run_job, tree_cpu_s, descendants)
from scriptlib import (  # noqa: E402
    mesh_secret_file,
    peer_auth,
    remember_peer,
    source_digest,
    wait_workers_ready,
)

from peer.log.compact import CompactConfig  # noqa: E402

MESH_SECTION = "## Mesh throughput and latency vs Dask (issue 4)"
PIPE_SECTION = "## Seed pipeline on 2 peers vs 1 (issue 4)"
TARGET_RATIO = 1.5
TARGET_P50_MS = 10.0
RECENT_TASKS = CompactConfig().recent_tasks  # the peers' default


# -- shared helpers (bench_gossip.py uses these too) -------------------------------------
def machine_line() -> str:
    m = bp.machine()
    return (f"nproc {m['nproc']} ({m['cpu']}), {m['ram_gib']} GiB RAM, Python {m['python']}, "
            f"{m['os']}")


def code_version() -> str:
    """The commit under test ("?" outside a git checkout, e.g. a `git archive`), whether
    peer/ or tasks/ differ from it, and the digest of those sources (scriptlib.source_digest):
    others may be editing or moving the tree while a benchmark runs, and an A/B of two trees
    compares what their digests say, not what one believes was checked out."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True,
                              check=False).stdout.strip()
    head = git("rev-parse", "--short", "HEAD") or "?"
    dirty = git("status", "--porcelain", "--", "peer", "tasks")
    return (head + (" + uncommitted changes in peer/ or tasks/" if dirty else "")
            + f", source {source_digest(ROOT)}")


def load1() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def med(xs: Sequence[float]) -> float:
    return float(statistics.median(xs))


# -- a mesh of real peers ------------------------------------------------------------------
@dataclass
class Peer:
    proc: subprocess.Popen[bytes]
    url: str
    log: Path
    id: str = ""


@dataclass
class Mesh:
    peers: list[Peer] = field(default_factory=list)
    finished: list[int] = field(default_factory=list)  # the tasks of each job posted to
    # it, in the order they finished (what `settle` expects the peers to hold)
    idle_s_per_s: float = 0.0  # CPU s per s of the idle mesh (`idle_cpu_s_per_s`; 0: not
    # measured, nothing taken off)

    def names(self) -> dict[str, str]:
        return {p.id: f"p{i}" for i, p in enumerate(self.peers)}

    def cpu_s(self) -> float:
        return sum(bp.tree_cpu_s(p.proc.pid) for p in self.peers)


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=30) as r:
        return json.load(r)


# Counters read from every peer's /metrics (Prometheus text) around each batch, summed over
# the peers: name in the results -> metric sample name.
COUNTERS = {"events": "banzai_events_emitted_total",
            "gossip_bytes": "banzai_gossip_bytes_sent_total",
            "frames": "banzai_frames_sent_total", "log_bytes": "banzai_log_bytes"}


def metrics_texts(mesh: Mesh) -> list[str]:
    """Every peer's /metrics text (Prometheus), p0 first; OSError if one does not answer."""
    out = []
    for p in mesh.peers:
        with urllib.request.urlopen(f"{p.url}/metrics", timeout=30) as r:
            out.append(r.read().decode())
    return out


def samples(text: str) -> Iterator[Any]:
    """The samples of one /metrics text (prometheus_client's: name, labels, value)."""
    from prometheus_client.parser import text_string_to_metric_families

    for fam in text_string_to_metric_families(text):
        yield from fam.samples


def mesh_counters(mesh: Mesh) -> dict[str, float] | None:
    """COUNTERS summed over the peers; None if a peer serves no /metrics (an older version)."""
    try:
        texts = metrics_texts(mesh)
    except OSError:
        return None
    out = dict.fromkeys(COUNTERS, 0.0)
    wanted = {v: k for k, v in COUNTERS.items()}
    for smp in (smp for text in texts for smp in samples(text)):
        if smp.name in wanted:
            out[wanted[smp.name]] += smp.value
    return out


def per_task(before: dict[str, float] | None, after: dict[str, float] | None,
             tasks: int) -> dict[str, float]:
    """The counters' growth per task (events, gossip bytes, frames, log bytes)."""
    if before is None or after is None:
        return {}
    return {f"{k}_per_task": (after[k] - before[k]) / tasks for k in COUNTERS}


def jobs_held(text: str) -> float:
    """The jobs one peer's /metrics text says its fold holds in memory (compacted jobs left)."""
    return next((smp.value for smp in samples(text) if smp.name == "banzai_memory_entries"
                 and smp.labels.get("table") == "jobs"), 0.0)


def held_jobs(mesh: Mesh) -> list[float]:
    """`jobs_held` of every peer, p0 first."""
    return [jobs_held(text) for text in metrics_texts(mesh)]


def recent_jobs(finished: Sequence[int], recent_tasks: int = RECENT_TASKS) -> int:
    """How many of the finished jobs (their tasks, oldest first) a peer keeps in memory once
    its compaction has caught up: the newest, while their tasks add up to `recent_tasks`
    (peer.log.compact's recent history; the older ones are compacted)."""
    tasks = kept = 0
    for n in reversed(finished):
        tasks += n
        if tasks > recent_tasks:
            break
        kept += 1
    return kept


SETTLE_POLL_S = 0.1  # `settle` reads every peer's /metrics this often (a render and its HTTP
# round trip each: ~1 ms of a peer's CPU), so the idle windows taken off its wait poll alike


def settle(mesh: Mesh, timeout_s: float = 30.0, held: Any = held_jobs,
           clock: Any = time.monotonic, sleep: Any = time.sleep) -> float:
    """Wait until every peer's compaction has caught up with the jobs posted to the mesh
    (`mesh.finished`): each holds no more jobs in memory than `recent_jobs` of them, i.e.
    has compacted every job the last batch pushed out of the recent history (a pass every
    5 s); the seconds waited. TimeoutError naming the peers if it does not happen in
    `timeout_s`. `held(mesh)`: the jobs each peer holds (`held_jobs`)."""
    want = recent_jobs(mesh.finished)
    t0 = clock()
    while max(got := held(mesh), default=0) > want:
        if clock() - t0 >= timeout_s:
            late = ", ".join(f"p{i} holds {n:g}" for i, n in enumerate(got) if n > want)
            raise TimeoutError(
                f"compaction did not catch up in {timeout_s:g} s: {late} jobs in memory, the "
                f"recent history ({RECENT_TASKS} tasks) of the {len(mesh.finished)} jobs "
                f"posted holds {want}")
        sleep(SETTLE_POLL_S)
    return clock() - t0


def polled_idle(mesh: Mesh, window_s: float, held: Any = held_jobs,
                clock: Any = time.monotonic, sleep: Any = time.sleep) -> float:
    """Wait `window_s` reading every peer's held jobs every SETTLE_POLL_S, as `settle` does
    (its polls are part of what the idle mesh spends while a window waits); the seconds
    waited."""
    t0 = clock()
    while clock() - t0 < window_s:
        held(mesh)
        sleep(SETTLE_POLL_S)
    return clock() - t0


def idle_cpu_s_per_s(mesh: Mesh, window_s: float = 3.0) -> float:
    """CPU seconds per second of every process of the idle mesh (compaction caught up):
    heartbeats, probes, timers, and `settle`'s polls of every peer's /metrics (since session
    38: before, ~1 ms of each peer's CPU per poll, 10 a second, was left in the windows)."""
    settle(mesh)
    c0 = mesh.cpu_s()
    waited = polled_idle(mesh, window_s)
    return (mesh.cpu_s() - c0) / waited


def net_ms_per_task(cpu_s: float, idle_s_per_s: float, waited_s: float, tasks: int) -> float:
    """CPU ms per task of a batch's window, less what the idle mesh spent (`idle_s_per_s`)
    over the `waited_s` of it that waited for compaction."""
    return (cpu_s - idle_s_per_s * waited_s) * 1000 / tasks


def lanes_flags(on: bool) -> tuple[str, ...]:
    """The peers' flags for lanes on (their default) or off, said explicitly either way."""
    return ("--lanes",) if on else ("--no-lanes",)


def min_job_flags(tasks: int | None) -> tuple[str, ...]:
    """The peers' --lanes-min-job-tasks, if the run sets one (else their default)."""
    return () if tasks is None else ("--lanes-min-job-tasks", str(tasks))


def lanes_text(r: dict[str, Any]) -> str:
    """A run's lanes as its text says them: on or off, and a --lanes-min-job-tasks set."""
    at = r.get("lanes_min_job_tasks")
    return ("on" if r.get("lanes") else "off") + ("" if at is None else
                                                  f", --lanes-min-job-tasks {at}")


def start_mesh(n: int, base: Path, slots: int = 1, timeout_s: float = 90,
               log_level: str = "WARNING", cores: Sequence[int] = (),
               extra: Sequence[str] = (), first_extra: Sequence[str] = ()) -> Mesh:
    """n banzai-peers on 127.0.0.1 (mDNS on 127.0.0.1, a fresh mesh name), formed; with
    `cores`, peer i and its workers are pinned to core cores[i] (taskset); `extra`: more
    banzai-peer flags for every peer, `first_extra` for peer 0 alone."""
    mesh_name = f"bench-mesh-{secrets.token_hex(6)}"
    secret = mesh_secret_file(base)  # the peers' shared mesh secret
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    mesh = Mesh()
    pending = []
    for i in range(n):
        d = base / f"peer{i}"
        log = base / f"peer{i}.log"
        args = [str(BIN / "banzai-peer"), "--data-dir", str(d), "--http", "127.0.0.1:0",
                "--gossip", "127.0.0.1:0", "--mdns-interface", "127.0.0.1",
                "--mesh-name", mesh_name, "--slots", str(slots), "--log-level", log_level,
                "--secret-file", str(secret),
                "--fetch-allow", "127.0.0.1/32",  # the --pipeline corpus server
                *extra, *(first_extra if i == 0 else ())]
        if cores:  # taskset execs the peer: same pid; its forkserver and workers inherit it
            args = ["taskset", "-c", str(cores[i]), *args]
        with log.open("wb") as out:
            proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
                                    env=env, stdin=subprocess.DEVNULL)
        pending.append((proc, log))
    deadline = time.monotonic() + timeout_s
    try:
        for i, (proc, log) in enumerate(pending):
            while (m := re.search(r"^web UI: (http://\S+?)/?$", log.read_text(), re.M)) is None:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("banzai-peer did not start:\n" + log.read_text())
                time.sleep(0.05)
            remember_peer(m.group(1), base / f"peer{i}")
            mesh.peers.append(Peer(proc, m.group(1), log))
        for p in mesh.peers:
            p.id = next(x["id"] for x in _get(p.url + "/api/peers")["peers"] if x["self"])
            wait_workers_ready(p.url)
        while not formed(mesh):  # every peer holds every other alive, with its load
            if time.monotonic() > deadline:
                raise RuntimeError(f"the mesh of {n} peers did not form in {timeout_s:g} s")
            time.sleep(0.1)
        time.sleep(1.0)  # let the worker pools finish starting
        return mesh
    except BaseException:
        for proc, _ in pending:
            proc.kill()
            proc.wait(10)
        raise


def formed(mesh: Mesh) -> bool:
    ids = {p.id for p in mesh.peers}
    for p in mesh.peers:
        seen = {x["id"] for x in _get(p.url + "/api/peers")["peers"]
                if x["state"] == "alive" and x["free_slots"] is not None}
        if not ids <= seen:
            return False
    return True


def stop_mesh(mesh: Mesh) -> None:
    for p in mesh.peers:
        if p.proc.poll() is None:
            p.proc.send_signal(signal.SIGTERM)
    for p in mesh.peers:
        try:
            p.proc.wait(30)
        except subprocess.TimeoutExpired:
            p.proc.kill()
            p.proc.wait(10)


# -- banzai client: SSE watcher ------------------------------------------------------------
class Watcher:
    """Follows a peer's /api/events and timestamps every task_done (perf_counter), and with
    lanes every job_ended: a lanes job the peer is not a member of (one posted to another
    peer) sends it no task_done, only its end (JOB_ENDED, emitted by lanes peers only)."""

    def __init__(self, session: Any, url: str) -> None:
        self.s = session
        self.url = url
        self.done: dict[str, dict[str, float]] = defaultdict(dict)  # job -> task -> t
        self.ended: dict[str, float] = {}  # job -> t its job_ended was seen
        self.want: dict[str, tuple[int, asyncio.Future[float]]] = {}
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Watcher:
        import aiohttp

        ready = asyncio.get_running_loop().create_future()

        async def follow() -> None:
            timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
            async with self.s.get(self.url + "/api/events", timeout=timeout) as r:
                ready.set_result(None)
                kind = ""
                async for raw in r.content:
                    line = raw.decode().rstrip("\n")
                    if line.startswith("event: "):
                        kind = line[7:]
                    elif line.startswith("data: ") and kind == "task_done":
                        self._note(json.loads(line[6:]), time.perf_counter())
                    elif line.startswith("data: ") and kind == "job_ended":
                        self._ended(json.loads(line[6:])["job"], time.perf_counter())

        self._task = asyncio.create_task(follow())
        await asyncio.wait_for(ready, 30)
        return self

    def _note(self, ev: dict[str, Any], t: float) -> None:
        tasks = self.done[ev["job"]]
        tasks.setdefault(ev["task"], t)
        w = self.want.get(ev["job"])
        if w is not None and len(tasks) >= w[0] and not w[1].done():
            w[1].set_result(max(tasks.values()))

    def _ended(self, job: str, t: float) -> None:
        """The job ended at `t`: done, whether or not its task_dones came (a member's come
        first: the wait is over before)."""
        self.ended.setdefault(job, t)
        w = self.want.get(job)
        if w is not None and not w[1].done():
            w[1].set_result(self.ended[job])

    async def wait(self, job: str, ntasks: int, stall_s: float = 120) -> float:
        """perf_counter time at which the job's last task_done was seen."""
        fut: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self.want[job] = (ntasks, fut)
        tasks = self.done[job]
        if len(tasks) >= ntasks:
            return max(tasks.values())
        if job in self.ended:
            return self.ended[job]
        last = -1
        while True:  # bounded: fail if no task of the job finishes for stall_s
            with contextlib.suppress(TimeoutError):
                return await asyncio.wait_for(asyncio.shield(fut), stall_s)
            if len(tasks) == last:
                raise TimeoutError(f"job {job}: no task_done for {stall_s:g} s")
            last = len(tasks)

    async def __aexit__(self, *exc: object) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task


PAR_POSTS = 8  # the jobs0par batch's POSTs in flight at once
# The batches run_mesh runs twice in a row, the first unmeasured: n ≥ recent_tasks tasks push
# every older job out of the recent history, so the second one's settled CPU window holds the
# compaction of a job (or jobs) like its own, not of the batches' before it.
STAND_IN = ("dag", "jobs")
ROWS = ("latency", "dag", "jobs", "map")  # a repetition's batches, in their order
ROW_RATE = {"latency": "p50_ms", "dag": "tasks_per_s", "jobs": "tasks_per_s",
            "map": "tasks_per_s"}  # the figure --rows prints of each


def echo(text: str) -> dict[str, Any]:
    return {"call": "ECHO", "args": [text]}


async def _post_par(s: Any, url: str, texts: list[str]) -> list[str]:
    """One one-task ECHO job per text POSTed to `url`, PAR_POSTS in flight at once; their
    ids, in order."""
    posts = asyncio.Semaphore(PAR_POSTS)

    async def post(text: str) -> str:
        async with posts:
            return await be.post_job(s, url, [echo(text)])

    return list(await asyncio.gather(*(post(t) for t in texts)))


async def _banzai_batches(mesh: Mesh, what: Sequence[str], n: int, lat_n: int,
                          requires: dict[str, Any] | None, settled: bool) -> dict[str, Any]:
    import aiohttp

    urls = [p.url for p in mesh.peers]
    out: dict[str, Any] = {}
    conn = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=conn, middlewares=(peer_auth,),
                                     timeout=aiohttp.ClientTimeout(total=900)) as s, \
            Watcher(s, urls[0]) as w:
        for kind in what:
            tag = secrets.token_hex(6)
            l0, c0, m0 = load1(), mesh.cpu_s(), mesh_counters(mesh)
            viewed = ""  # the job whose view the batch reads, after its CPU window
            if kind == "warm":  # imports in every worker, first claims, HTTP keep-alive
                job = await be.post_job(s, urls[0], {"name": "warm", "tasks": [
                    {"name": f"w{i}", **echo(f"warm-{tag}-{i}")} for i in range(8 * len(urls))]})
                await w.wait(job, 8 * len(urls))
                mesh.finished.append(8 * len(urls))
                for i in range(5):
                    await w.wait(await be.post_job(s, urls[0], [echo(f"warm-{tag}-s{i}")]), 1)
                    mesh.finished.append(1)
                mesh.idle_s_per_s = (await asyncio.to_thread(idle_cpu_s_per_s, mesh)
                                     if settled else 0.0)
                continue
            if kind == "latency":
                lat = []
                t0 = time.perf_counter()
                for i in range(lat_n):
                    t = time.perf_counter()
                    job = await be.post_job(s, urls[0], [echo(f"{tag}-{i}")])
                    lat.append((await w.wait(job, 1) - t) * 1000)
                mesh.finished += [1] * lat_n
                wall = time.perf_counter() - t0
                out[kind] = {"wall_s": wall, "tasks": lat_n, "p50_ms": med(lat),
                             "p95_ms": be.pct(lat, 95), "max_ms": max(lat)}
            elif kind == "dag":
                t0 = time.perf_counter()
                viewed = await be.post_job(s, urls[0], {"name": "bench-dag", "tasks": [
                    {"name": f"e{i}", **echo(f"{tag}-{i}"),
                     **({"requires": requires} if requires else {})} for i in range(n)]})
                t_post = time.perf_counter() - t0
                wall = await w.wait(viewed, n) - t0
                mesh.finished.append(n)
                out[kind] = {"wall_s": wall, "tasks": n, "tasks_per_s": n / wall,
                             "post_s": t_post}
            elif kind == "map":  # one per-item task over n files: chunked, batched claims
                form = aiohttp.FormData()
                for i, data in enumerate(map_inputs(tag, n)):
                    form.add_field("file", data, filename=f"items/x{i:05d}.txt",
                                   content_type="application/octet-stream")
                t0 = time.perf_counter()
                async with s.post(f"{urls[0]}/api/add", data=form) as r:
                    assert r.status == 201, await r.text()
                    cid = (await r.json())["cid"]
                t1 = time.perf_counter()
                viewed = await be.post_job(s, urls[0], [{"cid": cid}, {"call": "CHECKSUM"}])
                end = await w.wait(viewed, 2)
                mesh.finished.append(2)
                out[kind] = {"wall_s": end - t1, "tasks": n, "tasks_per_s": n / (end - t1),
                             "add_s": t1 - t0, "with_add_per_s": n / (end - t0)}
            elif kind in ("jobs", "jobs0", "jobs0par"):
                t0 = time.perf_counter()
                if kind == "jobs0par":
                    jobs = await _post_par(s, urls[0], [f"{tag}-{i}" for i in range(n)])
                else:
                    jobs = [await be.post_job(s, urls[i % len(urls) if kind == "jobs" else 0],
                                              [echo(f"{tag}-{i}")]) for i in range(n)]
                t_post = time.perf_counter() - t0
                ends = [await w.wait(j, 1) for j in jobs]
                mesh.finished += [1] * n
                wall = max(ends) - t0
                out[kind] = {"wall_s": wall, "tasks": n, "tasks_per_s": n / wall,
                             "post_s": t_post}
            x = out[kind]
            x |= await asyncio.to_thread(close_window, mesh, x["tasks"], (l0, c0, m0), settled)
            if viewed:  # not part of the batch's work: after its window
                x |= view_figures(_get(f"{urls[0]}/api/jobs/{viewed}"), mesh.names(), kind)
    return out


def close_window(mesh: Mesh, tasks: int, start: tuple[float, float, dict[str, float] | None],
                 settled: bool) -> dict[str, Any]:
    """The end of a batch's CPU window (`start`: the load, the mesh's CPU s and counters at its
    start): `settled`, it runs on until every peer has compacted what the batch pushed out of
    the recent history (`settle`), the idle mesh's CPU over that wait taken off."""
    l0, c0, m0 = start
    waited = settle(mesh) if settled else 0.0
    cpu = mesh.cpu_s() - c0
    return {"settle_s": round(waited, 2), "cpu_window_ms_per_task": cpu * 1000 / tasks,
            "cpu_ms_per_task": net_ms_per_task(cpu, mesh.idle_s_per_s, waited, tasks),
            **per_task(m0, mesh_counters(mesh), tasks), "load1": [l0, load1()]}


def view_figures(view: dict[str, Any], names: dict[str, str], kind: str) -> dict[str, Any]:
    """What a dag or map batch reads from its job's view: the chunks per peer (`names`: peer
    id -> p0, p1 ...); the dag's per-task submit->done (HLC) p50 and p95, the map's chunks."""
    chunks = [c for t in view["tasks"] for c in t["chunks"]]
    if kind == "map":
        per_peer = Counter(names.get(c["peer"], "?") for c in chunks if c["peer"])
        return {"per_peer": dict(per_peer), "chunks": sum(per_peer.values())}
    hlc = [t["finished_ms"] - view["submitted_ms"] for t in view["tasks"]]
    return {"hlc_p50_ms": med(hlc), "hlc_p95_ms": be.pct(hlc, 95),
            "per_peer": dict(Counter(names.get(c["peer"], "?") for c in chunks))}


def banzai_batches(mesh: Mesh, what: Sequence[str], n: int, lat_n: int,
                   requires: dict[str, Any] | None = None, settled: bool = True,
                   ) -> dict[str, Any]:
    """The batches `what` (see the module's docstring); the dag's tasks state `requires`.
    `settled`: each batch's CPU window (`cpu_ms_per_task`) runs on until every peer has
    compacted the jobs it pushed out of the recent history (`settle`), what the idle mesh
    spent over that wait (measured by the warm batch) taken off; else it ends with the
    batch, counting whichever compaction pass falls in it."""
    return asyncio.run(_banzai_batches(mesh, what, n, lat_n, requires, settled))


# -- Dask ----------------------------------------------------------------------------------
def trivial(text: str) -> str:
    """Dask's task: the cheapest stand-in for ECHO (returns its text; writes no file)."""
    return text


def map_inputs(tag: str, n: int) -> list[bytes]:
    """The map batch's items: n distinct small byte strings (one file each for banzai)."""
    return [f"{tag}-{i}\n".encode() for i in range(n)]


def checksum(data: bytes) -> str:
    """Dask's per-item task: what banzai's CHECKSUM computes for one file."""
    import hashlib

    return hashlib.sha256(data).hexdigest()


def dask_cpu_s(exclude: Mesh | None) -> float:
    """CPU of this process (Dask scheduler + client threads) and its descendants, minus the
    banzai peers' trees."""
    skip: set[int] = set()
    for p in exclude.peers if exclude else ():
        skip |= {p.proc.pid, *bp.descendants(p.proc.pid)}
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for q in [os.getpid(), *bp.descendants(os.getpid())]:
        if q in skip:
            continue
        with contextlib.suppress(OSError):
            f = Path(f"/proc/{q}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(f[11]) + int(f[12])
    return total / tick


@contextlib.contextmanager
def dask_cluster(n: int) -> Any:
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError:
        sys.exit("bench_mesh: the Dask baseline needs the bench extra: "
                 "bash scripts/setup.sh --bench")

    cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                           host="127.0.0.1", dashboard_address=None,
                           silence_logs=logging.ERROR)
    client = Client(cluster)
    try:
        client.wait_for_workers(n, timeout=120)
        client.gather(client.map(trivial, [f"warm-{i}" for i in range(200)], pure=False))
        for i in range(20):
            client.submit(trivial, f"warm-s{i}", pure=False).result()
        yield client
    finally:
        client.close()
        cluster.close()


def dask_batches(client: Any, what: Sequence[str], n: int, lat_n: int, mesh: Mesh | None,
                 ) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kind in what:
        tag = secrets.token_hex(6)
        l0, c0 = load1(), dask_cpu_s(mesh)
        if kind == "latency":
            lat = []
            t0 = time.perf_counter()
            for i in range(lat_n):
                t = time.perf_counter()
                client.submit(trivial, f"{tag}-{i}", pure=False).result()
                lat.append((time.perf_counter() - t) * 1000)
            out[kind] = {"wall_s": time.perf_counter() - t0, "tasks": lat_n, "p50_ms": med(lat),
                         "p95_ms": be.pct(lat, 95), "max_ms": max(lat)}
        elif kind == "dag":
            t0 = time.perf_counter()
            futs = client.map(trivial, [f"{tag}-{i}" for i in range(n)], pure=False)
            client.gather(futs)
            wall = time.perf_counter() - t0
            del futs
            out[kind] = {"wall_s": wall, "tasks": n, "tasks_per_s": n / wall}
        elif kind == "map":
            items = map_inputs(tag, n)
            t0 = time.perf_counter()
            futs = client.map(checksum, items, pure=False)
            client.gather(futs)
            wall = time.perf_counter() - t0
            del futs
            out[kind] = {"wall_s": wall, "tasks": n, "tasks_per_s": n / wall}
        else:
            continue
        out[kind]["cpu_ms_per_task"] = (dask_cpu_s(mesh) - c0) * 1000 / out[kind]["tasks"]
        out[kind]["load1"] = [l0, load1()]
    return out


# -- profile -------------------------------------------------------------------------------
def profile(n_peers: int, n: int, out_dir: Path, base: Path, kind: str = "dag",
            extra: Sequence[str] = ()) -> dict[str, Any]:
    """py-spy (raw collapsed stacks, 100 Hz, GIL-holding + idle excluded) on peer 0 and its
    worker processes while one `kind` batch (dag or map) runs; `extra`: start_mesh's."""
    out_dir.mkdir(parents=True, exist_ok=True)
    d = Path(tempfile.mkdtemp(prefix="prof-", dir=base))
    mesh = start_mesh(n_peers, d, extra=extra)
    raw = out_dir / f"pyspy-peer0-{n_peers}peers-{kind}.txt"
    try:
        banzai_batches(mesh, ["warm"], n, 0)
        spy = subprocess.Popen([str(BIN / "py-spy"), "record", "--pid", str(mesh.peers[0].proc.pid),
                                "--subprocesses", "--rate", "100", "--format", "raw",
                                "--output", str(raw), "--nonblocking"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(2.0)  # py-spy attaches
        try:
            got: Any = banzai_batches(mesh, [kind], n, 0)[kind]
        except TimeoutError as e:  # a stall is a finding too: keep the profile
            got = f"STALLED: {e}"
            print(f"profile run {got}", file=sys.stderr, flush=True)
        spy.send_signal(signal.SIGINT)
        try:
            spy.wait(60)
        except subprocess.TimeoutExpired:
            spy.kill()
            spy.wait()
    finally:
        stop_mesh(mesh)
        shutil.rmtree(d, ignore_errors=True)
    return {"raw": str(raw), kind: got, "hot": hot_spots(raw)}


def hot_spots(raw: Path, top: int = 15) -> dict[str, Any]:
    """Self and inclusive sample shares per line / function, per process kind."""
    procs: dict[str, dict[str, Counter[str]]] = defaultdict(
        lambda: {"self": Counter(), "incl": Counter(), "total": Counter()})
    if not raw.exists():
        return {}
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        frames = stack.split(";")
        kind = "worker" if any("peer/runner.py" in f or ("executor.py" in f and "_worker" in f)
                               for f in frames) else "peer"
        procs_ = [f for f in frames if f.startswith("process ")]  # peer;forkserver;worker
        if procs_:  # --subprocesses: the innermost process line names the process
            kind = ("peer" if len(procs_) == 1 and "banzai-peer" in procs_[0]
                    and "forkserver" not in procs_[0] else "worker")
        frames = [f for f in frames if not f.startswith(("process ", "thread "))]
        if not frames or any(x in frames[-1] for x in _IDLE):
            continue  # waiting (py-spy's idle detection misses some waits)
        c = int(count)
        agg = procs[kind]
        agg["total"]["all"] += c
        if frames:
            agg["self"][_short(frames[-1])] += c
        for f in {_func(f) for f in frames}:
            agg["incl"][f] += c
    out: dict[str, Any] = {}
    for kind, agg in procs.items():
        tot = agg["total"]["all"] or 1
        self_top = agg["self"].most_common(top)
        incl_top = [(k, v) for k, v in agg["incl"].most_common(60)
                    if k.startswith(("peer/", "tasks/"))][:top]
        out[kind] = {"samples": tot,
                     "self": [(k, round(100 * v / tot, 1)) for k, v in self_top],
                     "incl": [(k, round(100 * v / tot, 1)) for k, v in incl_top]}
    return out


_IDLE = ("EpollSelector.select", "thread.py:81)", "Connection._recv ", "forkserver",
         "main(14", "threading.py:", "queue.py:")
_FRAME = re.compile(r"^(?P<fn>.*) \((?P<file>.*):(?P<line>\d+)\)$")


def _rel(file: str) -> str:
    file = file.replace(str(ROOT) + "/", "")
    return re.sub(r".*/site-packages/", "", re.sub(r".*/lib/python3\.\d+/", "", file))


def _short(frame: str) -> str:
    m = _FRAME.match(frame)
    return f"{_rel(m['file'])}:{m['line']} {m['fn']}" if m else frame


def _func(frame: str) -> str:
    m = _FRAME.match(frame)
    return f"{_rel(m['file'])} {m['fn']}" if m else frame


# -- throughput/latency run ----------------------------------------------------------------
def run_mesh(a: argparse.Namespace) -> dict[str, Any]:
    r: dict[str, Any] = {"machine": bp.machine(), "date": time.strftime("%Y-%m-%d"),
                         "n": a.n, "latency_n": a.latency_n, "repeat": a.repeat,
                         "lanes": a.lanes, "lanes_min_job_tasks": a.lanes_min_job_tasks,
                         "rows": a.rows, "by_n": {}}
    extra = lanes_flags(a.lanes) + min_job_flags(a.lanes_min_job_tasks)
    base = Path(tempfile.mkdtemp(prefix="bench-mesh-"))
    try:
        for npeers in a.peers:
            d = base / f"n{npeers}"
            d.mkdir()
            mesh = start_mesh(npeers, d, extra=extra)
            runs: dict[str, list[Any]] = {"banzai": [], "dask": [], "stalls": []}
            try:
                banzai_batches(mesh, ["warm"], a.n, a.latency_n)
                runs["idle_ms_per_s"] = mesh.idle_s_per_s * 1000
                # unmeasured: the peers' recent history then holds what every later
                # repetition's latency batch finds in it (one-task jobs, the map's job)
                banzai_batches(mesh, ["jobs", "map"], a.n, a.latency_n)
                kinds = [k for k in a.rows if k != "latency" or a.latency_n > 0]
                with dask_cluster(npeers) as client:
                    for rep in range(a.repeat):  # interleaved: drift hits both sides alike
                        b: dict[str, Any] = {}
                        dk = dask_batches(client, [k for k in kinds if k != "jobs"], a.n,
                                          a.latency_n, mesh)
                        runs["dask"].append(dk)
                        runs["banzai"].append(b)
                        try:
                            for kind in kinds:
                                if kind in STAND_IN:  # its job(s), compacted in the window
                                    banzai_batches(mesh, [kind], a.n, a.latency_n)
                                b |= banzai_batches(mesh, [kind], a.n, a.latency_n)
                        except TimeoutError as e:  # a stalled mesh: record, skip the rest
                            runs["stalls"].append(f"rep {rep + 1}: {e}")
                            print(f"N={npeers} rep {rep + 1}: STALLED {e}", file=sys.stderr,
                                  flush=True)
                            break
                        print(f"N={npeers} rep {rep + 1}/{a.repeat}: banzai "
                              + ", ".join(f"{k} {_m([b], k, ROW_RATE[k]):.1f}" for k in kinds)
                              + " | dask " + ", ".join(f"{k} {_m([dk], k, ROW_RATE[k]):.1f}"
                                                       for k in kinds if k != "jobs")
                              + f" | load {load1():.1f}", file=sys.stderr, flush=True)
            finally:
                stop_mesh(mesh)
            r["by_n"][npeers] = runs
        r["summary"] = summarize(r)
        if a.json:  # the measurements are kept even if the profile run goes wrong
            a.json.write_text(json.dumps(r, indent=1, default=str) + "\n")
        if a.profile:
            big = max(a.peers)
            r["profile"] = profile(big, a.n, a.profile, base, extra=extra)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return r


def _m(runs: list[dict[str, Any]], kind: str, key: str) -> float:
    """Median over the repetitions that have this batch (a stall leaves some out)."""
    xs = [x[kind][key] for x in runs if kind in x]
    return med(xs) if xs else float("nan")


def _f(v: float, fmt: str = ".0f") -> str:
    return "stalled" if v != v else format(v, fmt)


def summarize(r: dict[str, Any]) -> dict[int, dict[str, float]]:
    out = {}
    for npeers, runs in r["by_n"].items():
        b, d = runs["banzai"], runs["dask"]
        if not d:
            continue
        out[npeers] = {
            "b_dag": _m(b, "dag", "tasks_per_s"), "b_jobs": _m(b, "jobs", "tasks_per_s"),
            "d_map": _m(d, "dag", "tasks_per_s"),
            "b_p50": _m(b, "latency", "p50_ms"), "b_p95": _m(b, "latency", "p95_ms"),
            "d_p50": _m(d, "latency", "p50_ms"), "d_p95": _m(d, "latency", "p95_ms"),
            "b_cpu_dag": _m(b, "dag", "cpu_ms_per_task"),
            "b_cpu_jobs": _m(b, "jobs", "cpu_ms_per_task"),
            "b_cpu_lat": _m(b, "latency", "cpu_ms_per_task"),
            "d_cpu_map": _m(d, "dag", "cpu_ms_per_task"),
            "d_cpu_lat": _m(d, "latency", "cpu_ms_per_task"),
            "b_hlc_p50": _m(b, "dag", "hlc_p50_ms"), "b_hlc_p95": _m(b, "dag", "hlc_p95_ms"),
            "b_map": _m(b, "map", "tasks_per_s"), "b_map_add": _m(b, "map", "with_add_per_s"),
            "d_sha": _m(d, "map", "tasks_per_s"),
            "b_cpu_map": _m(b, "map", "cpu_ms_per_task"),
            "d_cpu_sha": _m(d, "map", "cpu_ms_per_task"),
            "b_events_dag": _m(b, "dag", "events_per_task"),
            "b_settle_dag": _m(b, "dag", "settle_s"), "b_settle_jobs": _m(b, "jobs", "settle_s"),
            "idle_ms_per_s": runs.get("idle_ms_per_s", float("nan")),
            "b_gossip_dag": _m(b, "dag", "gossip_bytes_per_task"),
            "loads": [x for run in b + d for k in run.values() for x in k["load1"]],
        }
    return out


def rows_text(r: dict[str, Any]) -> str:
    """A run of some rows (--rows): each row's figure (ROW_RATE) per repetition and the
    median, banzai's and Dask's, per N; the chunks per peer of every map batch."""
    lines = [f"rows {','.join(r['rows'])}, lanes {lanes_text(r)}, "
             f"code {r.get('code', '?')}"]
    for npeers, runs in sorted(r["by_n"].items()):
        for side in ("banzai", "dask"):
            for kind in r["rows"]:
                xs = [x[kind][ROW_RATE[kind]] for x in runs[side] if kind in x]
                if xs:
                    lines.append(f"N={npeers} {side} {kind} {ROW_RATE[kind]}: median "
                                 f"{med(xs):.1f} ({', '.join(f'{x:.1f}' for x in xs)})")
        chunks = ["/".join(f"{k}:{v}" for k, v in sorted(b["map"]["per_peer"].items()))
                  for b in runs["banzai"] if "map" in b]
        if chunks:
            lines.append(f"N={npeers} map chunks per peer: {'; '.join(chunks)}")
    return "\n".join(lines) + "\n"


def mesh_section(r: dict[str, Any]) -> str:
    """The markdown section a throughput/latency run writes: lanes on (the default) its own;
    --no-lanes the one of the earlier sessions' rows (full replication, their default)."""
    return MESH_SECTION + (", lanes on (the peers' default)" if r.get("lanes") else "")


def mesh_markdown(r: dict[str, Any], command: str) -> str:
    s = r["summary"]
    ok = {True: "met", False: "**not met**"}
    loads = [x for v in s.values() for x in v["loads"]]
    stalls = [f"N={k}: {x}" for k, v in r["by_n"].items() for x in v.get("stalls", [])]
    lines = [
        mesh_section(r), "",
        f"Command: `{command}` ({r['date']}; {r['n']} tasks per throughput batch, "
        f"{r['latency_n']} one-at-a-time tasks per latency batch, {r['repeat']} repetitions "
        "per side and N, interleaved; medians).",
        f"Machine: {machine_line()}. Code: {r.get('code', '?')}.",
        f"Load average (1 min, /proc/loadavg) read before and after every batch: "
        f"{min(loads):.1f} to {max(loads):.1f} on the 2 cores. **The figures are noisy**: "
        "wall-clock rates move by tens of percent between repetitions; the CPU-per-task "
        "rows are the steadier comparison.",
        "Dask is a **benchmark-only** dependency (`pip install -e '.[bench]'`: "
        "dask[distributed] and py-spy; not a runtime dependency).",
        "",
        "Setup: N `banzai-peer` processes on 127.0.0.1, `--slots 1` each"
        + (", **lanes on** (`--lanes`, the peers' default: a lanes job's task events go to "
           "its members only)" if r.get("lanes") else ", **`--no-lanes`** (full replication, "
           "the peers' default before session 44)")
        + ("" if (at := r.get("lanes_min_job_tasks")) is None else
           f", `--lanes-min-job-tasks {at}`") + ", mDNS on 127.0.0.1, "
        "one fresh mesh name, the script waits until every peer sees the others alive; vs "
        "`LocalCluster(n_workers=N, threads_per_worker=1, processes=True)` (both up at "
        "once, run alternately). banzai task: built-in ECHO (writes a file, imports it into "
        "the content store, events gossiped); Dask task: a function returning its argument. "
        "banzai latency: POST a one-task job to peer 0, wait for its `task_done` on peer 0's "
        "SSE stream; Dask: `client.submit(f, x, pure=False).result()`. Throughput: banzai "
        "one job of n independent ECHO tasks (\"dag\") and n one-task jobs POSTed back to "
        "back round robin over the peers (\"jobs\"); Dask `client.map` + `gather`.",
        "",
        "| N | banzai dag tasks/s | banzai jobs tasks/s | Dask map tasks/s | "
        f"dag / Dask (target ≥ {TARGET_RATIO}) | banzai p50 / p95 ms | Dask p50 / p95 ms | "
        f"p50 target ≤ {TARGET_P50_MS:g} ms |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for npeers, v in sorted(s.items()):
        ratio = v["b_dag"] / v["d_map"]
        lines.append(
            f"| {npeers} | {_f(v['b_dag'])} | {_f(v['b_jobs'])} | {_f(v['d_map'])} | "
            f"{_f(ratio, '.2f')} ({ok[ratio >= TARGET_RATIO]}) | {_f(v['b_p50'], '.1f')} / "
            f"{_f(v['b_p95'], '.1f')} | {_f(v['d_p50'], '.1f')} / {_f(v['d_p95'], '.1f')} | "
            f"{ok[v['b_p50'] <= TARGET_P50_MS]} |")
    lines += [
        "",
        "CPU time per task (ms; banzai: all peers + forkservers + workers, from the batch's "
        "first POST until every peer has compacted the jobs the batch pushed out of the "
        "recent history, the idle mesh's CPU over that wait taken off (since session 35; "
        "before, the window ended at the last task_done and held a compaction pass only if "
        "one fell in it); Dask: scheduler + client process + nannies + workers), and banzai's "
        "per-task submit→done inside the dag batch (HLC times from the job view: queueing "
        "included):",
        "",
        "| N | banzai dag | banzai jobs | banzai one-at-a-time | Dask map | "
        "Dask one-at-a-time | banzai dag submit→done p50 / p95 ms |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for npeers, v in sorted(s.items()):
        lines.append(
            f"| {npeers} | {_f(v['b_cpu_dag'], '.1f')} | {_f(v['b_cpu_jobs'], '.1f')} | "
            f"{_f(v['b_cpu_lat'], '.1f')} | {_f(v['d_cpu_map'], '.2f')} | "
            f"{_f(v['d_cpu_lat'], '.2f')} | {_f(v['b_hlc_p50'])} / {_f(v['b_hlc_p95'])} |")
    lines += ["", "The CPU windows' wait for compaction after the last task_done (medians) and "
              "the idle mesh's CPU taken off for it: " + "; ".join(
                  f"N={npeers}: dag {_f(v.get('b_settle_dag', float('nan')), '.1f')} s, jobs "
                  f"{_f(v.get('b_settle_jobs', float('nan')), '.1f')} s, idle "
                  f"{_f(v.get('idle_ms_per_s', float('nan')), '.1f')} ms/s"
                  for npeers, v in sorted(s.items())) + "."]
    lines += ["", "Events and gossip per task of the dag batch (every peer's `/metrics`, "
              "`banzai_events_emitted_total` and `banzai_gossip_bytes_sent_total` summed over "
              "the peers): " + "; ".join(
                  f"N={npeers}: {_f(v.get('b_events_dag', float('nan')), '.2f')} events, "
                  f"{_f(v.get('b_gossip_dag', float('nan')))} bytes"
                  for npeers, v in sorted(s.items())) + "."]
    lines += [
        "",
        "Per-file tasks (\"map\"): banzai runs the built-in per-item CHECKSUM (sha256 of each "
        "file, written as `<file>.sha256`) over a directory of n small files uploaded to peer 0 "
        "first (`POST /api/add`, multipart), timed from the job's POST to its last "
        "`task_done` on peer 0's SSE stream; the items are split into chunks (claimed, run "
        "and recorded as one unit each, item results batched into few events), and peers "
        "fetch the items of a chunk in one CAR (`POST /api/car`). Dask: `client.map` of "
        "`hashlib.sha256(item).hexdigest()` over the same n byte strings + `gather` (the "
        "data travels with the tasks).",
        "",
        f"| N | banzai map items/s | banzai incl. upload | Dask sha256 map items/s | "
        f"map / Dask (target ≥ {TARGET_RATIO}) | CPU ms per item banzai / Dask |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for npeers, v in sorted(s.items()):
        ratio = v["b_map"] / v["d_sha"]
        lines.append(
            f"| {npeers} | {_f(v['b_map'])} | {_f(v['b_map_add'])} | {_f(v['d_sha'])} | "
            f"{_f(ratio, '.2f')} ({ok[ratio >= TARGET_RATIO]}) | "
            f"{_f(v['b_cpu_map'], '.2f')} / {_f(v['d_cpu_sha'], '.2f')} |")
    lines += ["", "Per repetition (tasks/s dag · jobs · Dask map; p50 ms banzai · Dask; "
              "tasks of the dag per peer; map items/s banzai · Dask, chunks per peer):", ""]
    for npeers, runs in sorted(r["by_n"].items()):
        def g(x: dict[str, Any], kind: str, key: str, fmt: str = ".0f") -> str:
            return format(x[kind][key], fmt) if kind in x else "stalled"

        reps = "; ".join(
            f"{g(b, 'dag', 'tasks_per_s')} · {g(b, 'jobs', 'tasks_per_s')} · "
            f"{g(d, 'dag', 'tasks_per_s')}, {g(b, 'latency', 'p50_ms', '.1f')} · "
            f"{g(d, 'latency', 'p50_ms', '.1f')}, "
            + ("/".join(f"{k}:{v}" for k, v in sorted(b["dag"]["per_peer"].items()))
               if "dag" in b else "-")
            + f"; {g(b, 'map', 'tasks_per_s')} · {g(d, 'map', 'tasks_per_s')}, "
            + ("/".join(f"{k}:{v}" for k, v in sorted(b["map"]["per_peer"].items()))
               if "map" in b else "-")
            for b, d in zip(runs["banzai"], runs["dask"], strict=True))
        lines.append(f"- N={npeers}: {reps}")
    if stalls:
        lines += ["", "**Stalls** (a batch in which no task finished for 120 s; the rest of "
                  "that N's repetitions were skipped): " + "; ".join(stalls) + "."]
    return "\n".join(lines) + "\n"


# -- pipeline: 2 peers vs 1 ------------------------------------------------------------------
def pipeline_dag(base_url: str) -> dict[str, Any]:
    wf = json.loads((ROOT / "examples" / "speakers-dag.json").read_text())
    for t in wf["tasks"]:
        if "args" in t:
            t["args"] = [x.replace("http://127.0.0.1:8765/", base_url)
                         if isinstance(x, str) else x for x in t["args"]]
    return dict(wf)


def run_pipeline_once(npeers: int, wf: dict[str, Any], base: Path) -> dict[str, Any]:
    d = Path(tempfile.mkdtemp(prefix=f"pipe-{npeers}-", dir=base))
    mesh = start_mesh(npeers, d)
    try:
        l0, c0 = load1(), mesh.cpu_s()
        res = bp.run_job(SimpleNamespace(url=mesh.peers[0].url), wf)
        cpu = mesh.cpu_s() - c0
        names = mesh.names()
        tasks = {t["name"]: {"duration_s": t["duration_s"],
                             "chunks": [[names.get(c["peer"], "?"), c["items"]]
                                        for c in t["chunks"]]}
                 for t in res["view"]["tasks"]}
        return {"seconds": res["seconds"], "cpu_s": round(cpu, 2), "tasks": tasks,
                "load1": [l0, load1()]}
    finally:
        stop_mesh(mesh)
        shutil.rmtree(d, ignore_errors=True)


def run_pipe(a: argparse.Namespace) -> dict[str, Any]:
    mc = bp._script("make_corpus")
    speakers = list(mc.VOICES)[:4]
    zips = mc.build_corpus(a.corpus, speakers, a.utterances)
    r: dict[str, Any] = {"machine": bp.machine(), "date": time.strftime("%Y-%m-%d"),
                         "corpus": f"{len(zips)} speakers x {a.utterances} utterances",
                         "one": [], "two": []}
    base = Path(tempfile.mkdtemp(prefix="bench-mesh-pipe-"))
    try:
        with bp._script("serve_dir").serve(a.corpus) as url:
            wf = pipeline_dag(url)
            for rep in range(a.repeat):
                for key, npeers in (("one", 1), ("two", 2)):
                    x = run_pipeline_once(npeers, wf, base)
                    r[key].append(x)
                    print(f"rep {rep + 1}/{a.repeat} {npeers} peer(s): {x['seconds']:.2f} s "
                          f"(load {x['load1'][0]:.1f}->{x['load1'][1]:.1f})",
                          file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return r


def pipe_markdown(r: dict[str, Any], command: str) -> str:
    t1 = med([x["seconds"] for x in r["one"]])
    t2 = med([x["seconds"] for x in r["two"]])
    c1 = med([x["cpu_s"] for x in r["one"]])
    c2 = med([x["cpu_s"] for x in r["two"]])
    eff = t1 / (2 * t2)
    runs1 = ", ".join(f"{x['seconds']:.2f}" for x in r["one"])
    runs2 = ", ".join(f"{x['seconds']:.2f}" for x in r["two"])
    loads = [v for k in ("one", "two") for x in r[k] for v in x["load1"]]
    lines = [
        PIPE_SECTION, "",
        f"Command: `{command}` ({r['date']}; corpus {r['corpus']} from scripts/make_corpus.py, "
        "served by scripts/serve_dir.py on 127.0.0.1; "
        f"{len(r['one'])} cold run(s) per side, interleaved, fresh data dirs every run; "
        "medians).",
        f"Machine: {machine_line()}. Code: {r.get('code', '?')}.",
        f"Load average (1 min) before/after each run: {min(loads):.1f} to {max(loads):.1f} on "
        "the 2 cores (a load above 2 means other work shared the cores: wall times are "
        "then inflated and noisy).",
        "",
        "Workflow: examples/speakers-dag.json (4 × FETCH_FESTVOX → merge → FILTER_LONGER 3 → "
        "EXTRACT_MFCC [512, 40, 20, 8000, 16000] → LEARN n_components 8), submitted to p0; "
        "every peer `--slots 1`, mDNS on 127.0.0.1. Wall time = POST to the job view saying "
        "done (polled every 20 ms).",
        "",
        "| peers | wall s (median) | runs | CPU s (all peers' trees) |",
        "| --- | --- | --- | --- |",
        f"| 1 | {t1:.2f} | {runs1} | {c1:.1f} |",
        f"| 2 | {t2:.2f} | {runs2} | {c2:.1f} |",
        "",
        f"Parallel efficiency t1 / (2 × t2) = {t1:.2f} / (2 × {t2:.2f}) = **{eff:.2f}** "
        f"(speed-up {t1 / t2:.2f}).",
        "",
        "Who ran what (chunks as peer:items; one line per run; task durations in s):",
        "",
    ]
    for key, label in (("one", "1 peer"), ("two", "2 peers")):
        for i, x in enumerate(r[key]):
            parts = []
            for name, t in x["tasks"].items():
                ch = " ".join(f"{p}:{n}" if n else p for p, n in t["chunks"])
                parts.append(f"{name} [{ch}] {t['duration_s'] or 0:.2f}")
            lines.append(f"- {label}, run {i + 1} ({x['seconds']:.2f} s): " + "; ".join(parts))
    return "\n".join(lines) + "\n"


# -- main ----------------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--peers", default="1,2,3", help="mesh sizes N")
    ap.add_argument("-n", type=int, default=1000, help="tasks per throughput batch")
    ap.add_argument("--latency-n", type=int, default=200, help="tasks per latency batch")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--profile", type=Path, help="py-spy output directory")
    ap.add_argument("--lanes", action=argparse.BooleanOptionalAction, default=True,
                    help="every peer with --lanes (the default, the peers' own) or, with "
                    "--no-lanes, off (full replication: the earlier sessions' rows)")
    ap.add_argument("--lanes-min-job-tasks", type=int, metavar="N",
                    help="every peer with this --lanes-min-job-tasks (else their default)")
    ap.add_argument("--rows", default=",".join(ROWS),
                    help="comma-separated batches of a repetition, of " + ",".join(ROWS))
    ap.add_argument("--pipeline", action="store_true", help="the 2-peers-vs-1 pipeline run")
    ap.add_argument("--corpus", type=Path, default=ROOT / ".cache" / "bench-mesh-corpus")
    ap.add_argument("--utterances", type=int, default=50)
    ap.add_argument("--write", type=Path, help="update this markdown file's section")
    ap.add_argument("--json", type=Path, help="also save the raw results here")
    ap.add_argument("--render", type=Path,
                    help="no run: rebuild the section from a --json file of an earlier run")
    a = ap.parse_args(argv)
    a.peers = [int(x) for x in str(a.peers).split(",")]
    rows = str(a.rows).split(",")
    if unknown := [x for x in rows if x not in ROWS]:
        ap.error(f"--rows: unknown row(s) {', '.join(unknown)}; rows are {', '.join(ROWS)}")
    a.rows = [x for x in ROWS if x in rows]
    if a.write and a.rows != list(ROWS):
        ap.error("--write needs every row (the section's tables): leave --rows out")
    if a.write and a.lanes_min_job_tasks is not None:
        ap.error("--write writes the rows of the peers' default --lanes-min-job-tasks: leave "
                 "--lanes-min-job-tasks out")
    cmd = ".venv/bin/python scripts/bench_mesh.py" + "".join(
        f" {x}" for x in (argv if argv is not None else sys.argv[1:]))
    if a.render:
        r = json.loads(a.render.read_text())
        cmd = r.get("command", cmd)
        a.json = None
        if "by_n" in r:
            r["by_n"] = {int(k): v for k, v in r["by_n"].items()}
            r["summary"] = summarize(r)
    else:
        code = code_version()
        r = run_pipe(a) if a.pipeline else run_mesh(a)
        r["command"] = cmd
        r["code"] = code if code == code_version() else f"{code}, changed during the run"
    if "by_n" in r and r.get("rows", list(ROWS)) != list(ROWS):
        text, section = rows_text(r), ""
    elif "by_n" in r:
        text = mesh_markdown(r, r["command"])
        section = mesh_section(r)
    else:
        text = pipe_markdown(r, r["command"])
        section = PIPE_SECTION
    print(text)
    if "profile" in r:
        print(json.dumps(r["profile"], indent=1))
    if a.json:
        a.json.write_text(json.dumps(r, indent=1, default=str) + "\n")
    if a.write:
        bp.write_section(a.write, section, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
