#!/usr/bin/env python3
"""The seed pipeline on peers pinned to their own cores (issue 12 item 6): 1 peer on one core
against 2 peers on a core each, speed-up per stage.

    .venv/bin/python scripts/bench_pinned.py [--repeat 3] [--write docs/benchmarks.md]

Workflow: the seed's list form, FETCH_FESTVOX (the 4 speakers' zips, one task) ->
FILTER_LONGER 5 -> EXTRACT_MFCC [32, 24, 1, 8000, 16000] -> LEARN (defaults), on a synthetic
corpus of 4 speakers x 100 utterances (scripts/make_corpus.py, cached in .cache/bench-corpus)
served by scripts/serve_dir.py on 127.0.0.1, submitted to peer 0. Each configuration starts
fresh peers on fresh data dirs (nothing cached; under the temporary directory, on /dev/shm with
--tmpfs), `--slots 1` each, mDNS on 127.0.0.1; peer i
runs under `taskset -c i` (its forkserver and workers inherit the pinning), which emulates
one-core machines on this host. The client and the corpus server are not pinned. Runs are
interleaved (1 peer, 2 peers, 1 peer, ...) so drift hits both alike; medians.
Stage time = the task's TASK_DONE minus the previous task's (the first: minus the job's
submission), from peer 0's job view; total = the last TASK_DONE minus the submission (the
client polls the view every --poll-s; its POST-to-done wall time is kept as client_s).
Targets (issue 12): total >= 1.6x, EXTRACT_MFCC >= 1.8x.

With --tmpfs the data dirs are on tmpfs: a block store's syncfs then costs nothing, where on
one shared disk the two peers' syncs (and every other process's writes) wait for each other,
which separate machines would not (docs/benchmarks.md, session 44 helper e).
"""

from __future__ import annotations

import os

THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
               "NUMBA_NUM_THREADS")
for _v in THREAD_VARS:  # before numpy is imported, here and in every child process
    os.environ[_v] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from pathlib import Path  # noqa: E402
from types import SimpleNamespace  # noqa: E402
from typing import Any  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import bench_mesh as bm  # noqa: E402  (start_mesh, stop_mesh, load1, code_version)
import bench_pipeline as bp  # noqa: E402  (run_job, machine, write_section)

SECTION = "## Seed pipeline on pinned cores: 1 peer vs 2 (issue 12 item 6)"
SEED_MFCC = [32, 24, 1, 8000, 16000]
STAGES = ("fetch_festvox", "filter_longer", "extract_mfcc", "learn")
TARGETS = {"total": 1.6, "extract_mfcc": 1.8}
# The client polls peer 0's job view until done. Each poll costs that pinned peer 2-3 ms of
# CPU: at 20 ms (bench_pipeline's pace) about an eighth of its core, all of the one peer's
# and half of the two peers' cores. The total is taken from the view's times, not the poll.
POLL_S = 0.25
TMPFS = Path("/dev/shm")  # where --tmpfs puts the data dirs


def seed(urls: Sequence[str]) -> list[dict[str, Any]]:
    return [{"call": "FETCH_FESTVOX", "args": list(urls)},
            {"call": "FILTER_LONGER", "args": [5]},
            {"call": "EXTRACT_MFCC", "args": SEED_MFCC},
            {"call": "LEARN", "args": []}]


def stage_times(view: dict[str, Any]) -> dict[str, float]:
    """Per task: its finish minus the previous task's (the first: minus the submission)."""
    out: dict[str, float] = {}
    prev = view["submitted_ms"]
    for t in view["tasks"]:
        out[t["name"]] = (t["finished_ms"] - prev) / 1000
        prev = t["finished_ms"]
    return out


class CpuSampler:
    """Every `period_s`, the CPU seconds so far of each peer's own process and of the rest
    of its tree (forkserver, workers), the seconds they waited for a core and the minor page
    faults of that rest: [t, [peer s, workers s, waited s, workers' faults] per peer], t from
    start();
    and in `driver`, [t, CPU s] of this process (the client, the corpus server's threads,
    this sampler: unpinned, so with two pinned peers on one of their cores); and in `host`,
    [t, busy s, steal s] of the whole machine (/proc/stat: every core's user, nice, system,
    irq and softirq time; steal: time the hypervisor ran something else on our cores)."""

    def __init__(self, pids: Sequence[int], period_s: float = 0.1) -> None:
        self.pids, self.period_s = list(pids), period_s
        self.samples: list[list[Any]] = []
        self.driver: list[list[float]] = []
        self.host: list[list[float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.t0 = 0.0

    def start(self) -> None:
        self.t0 = time.perf_counter()
        self._thread.start()

    def stop(self) -> list[list[Any]]:
        self._stop.set()
        self._thread.join()
        return self.samples

    def _run(self) -> None:
        tick = os.sysconf("SC_CLK_TCK")
        while not self._stop.is_set():
            row: list[Any] = [round(time.perf_counter() - self.t0, 3)]
            for pid in self.pids:
                kids = proc_tree(pid)
                own = _proc_cpu(pid, tick)
                tree = sum(_proc_cpu(q, tick) for q in kids)
                wait = sum(_run_wait_s(q) for q in [pid, *kids])
                faults = sum(_proc_minflt(q) for q in kids)
                row.append([round(own, 3), round(tree, 3), round(wait, 3), faults])
            self.samples.append(row)
            self.driver.append([row[0], round(time.process_time(), 3)])
            self.host.append([row[0], *_host_cpu(tick)])
            self._stop.wait(self.period_s)


def _host_cpu(tick: int) -> tuple[float, float]:
    """(busy s, steal s) of every core so far, from /proc/stat's first line (user nice
    system idle iowait irq softirq steal ...; guest time is inside user already)."""
    f = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return round((f[0] + f[1] + f[2] + f[5] + f[6]) / tick, 3), round(f[7] / tick, 3)


def proc_tree(pid: int) -> list[int]:
    """The processes below `pid`, from /proc/<pid>/task/<tid>/children: a few reads, where
    `bench_pipeline.descendants` reads every process's stat and cmdline (about 2 ms each
    time here). The sampler runs unpinned: with two pinned peers, on one of their cores."""
    out: list[int] = []
    frontier = [pid]
    while frontier and len(out) < 10_000:
        q = frontier.pop()
        for t in Path(f"/proc/{q}/task").glob("*/children"):
            try:
                kids = [int(x) for x in t.read_text().split()]
            except (OSError, ValueError):
                continue
            out += kids
            frontier += kids
    return out


def _proc_cpu(pid: int, tick: int) -> float:
    """utime + stime of one process, in s; 0 if gone."""
    try:
        f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(f[11]) + int(f[12])) / tick


def _proc_minflt(pid: int) -> int:
    """Minor page faults of one process so far; 0 if gone. A worker that faults its arrays
    in afresh per item (glibc's default heap thresholds, peer/jobs/heap.py) shows here as
    10-20x the faults, and as CPU, where the wall time alone looks like a slower machine."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[7])
    except (OSError, IndexError, ValueError):
        return 0


def _run_wait_s(pid: int) -> float:
    """Seconds the threads of one process have waited, runnable, for a CPU (schedstat)."""
    total = 0
    for t in Path(f"/proc/{pid}/task").glob("*/schedstat"):
        try:
            total += int(t.read_text().split()[1])
        except (OSError, IndexError, ValueError):
            continue
    return total / 1e9


def cpu_by_stage(samples: list[list[Any]], done_s: Sequence[Sequence[Any]],
                 ) -> dict[str, list[list[float]]]:
    """Per stage (between the previous task's TASK_DONE and its own): per peer, the CPU
    seconds of its own process and of its workers, the seconds its processes waited,
    runnable, for their core (other work on it: the other peer's, or anyone's), and its
    workers' minor page faults."""
    out: dict[str, list[list[float]]] = {}
    prev = 0.0
    for name, t in done_s:
        a = next((r for r in samples if r[0] >= prev), samples[-1])
        b = next((r for r in samples if r[0] >= t), samples[-1])
        out[name] = [[round(y - x, 2) for x, y in zip(a[i], b[i], strict=True)]
                     for i in range(1, len(a))]
        prev = t
    return out


def run_once(npeers: int, pipe: list[dict[str, Any]], base: Path, log_level: str = "WARNING",
             logs: Path | None = None, poll_s: float = POLL_S) -> dict[str, Any]:
    d = Path(tempfile.mkdtemp(prefix=f"pinned-{npeers}-", dir=base))
    code = bm.code_version()  # what these peers import (the tree may move between runs)
    mesh = bm.start_mesh(npeers, d, cores=list(range(npeers)), log_level=log_level)
    sampler = CpuSampler([p.proc.pid for p in mesh.peers])
    try:
        l0, c0 = bm.load1(), mesh.cpu_s()
        sampler.start()
        res = bp.run_job(SimpleNamespace(url=mesh.peers[0].url), pipe, poll_s)
        samples = sampler.stop()
        cpu = mesh.cpu_s() - c0
        names = mesh.names()
        sub = res["view"]["submitted_ms"]
        chunks = {t["name"]: [[names.get(c["peer"], "?"), c["items"],
                               round(((c["started_ms"] or sub) - sub) / 1000, 2),
                               round(((c["finished_ms"] or sub) - sub) / 1000, 2)]
                              for c in t["chunks"]]
                  for t in res["view"]["tasks"]}
        chunks["done_s"] = [[t["name"], round((t["finished_ms"] - sub) / 1000, 2)]
                            for t in res["view"]["tasks"]]
        view = res["view"]  # total: submission to the last TASK_DONE, as the stages
        total = (max(t["finished_ms"] for t in view["tasks"]) - view["submitted_ms"]) / 1000
        driver = {k: v[0][0] for k, v in cpu_by_stage(
            [[t, [c]] for t, c in sampler.driver], chunks["done_s"]).items()}
        stage_cpu = cpu_by_stage(samples, chunks["done_s"])
        host = cpu_by_stage([[t, [b, st]] for t, b, st in sampler.host], chunks["done_s"])
        return {"code": code, "seconds": round(total, 3), "client_s": res["seconds"],
                "stages": stage_times(view), "driver_cpu": driver,
                "cpu_s": round(cpu, 2), "chunks": chunks, "load1": [l0, bm.load1()],
                "stage_cpu": stage_cpu, "cpu_samples": samples,
                # per stage: the machine's CPU that was neither the peers' trees' nor the
                # driver's (other processes: other tenants' runs; kernel threads: writeback,
                # softirq), and the hypervisor's steal from our cores
                "others_cpu": {k: round(v[0][0] - driver[k] - sum(c[0] + c[1] for c in
                                                                  stage_cpu[k]), 2)
                               for k, v in host.items()},
                "steal_s": {k: v[0][1] for k, v in host.items()}}
    finally:
        bm.stop_mesh(mesh)
        if logs is not None:  # the peers' logs, kept: <logs>/<run dir>-peer<i>.log
            logs.mkdir(parents=True, exist_ok=True)
            for f in d.glob("peer*.log"):
                shutil.copy(f, logs / f"{d.name}-{f.name}")
        shutil.rmtree(d, ignore_errors=True)


def _chunk(c: list[Any]) -> str:
    """peer:items, and when known @start-end (s after the job's submission)."""
    return f"{c[0]}:{c[1]}" + (f"@{c[2]:.2f}-{c[3]:.2f}" if len(c) > 2 else "")


def _stage_cpu(x: dict[str, Any]) -> str:
    """CPU s per stage as peer/workers per peer, when the run was sampled."""
    sc = x.get("stage_cpu")
    if not sc:
        return ""
    return "; CPU s peer/workers (waited for the core) [workers' minor faults] " + ", ".join(
        f"{s} " + " ".join(f"p{i}:{c[0]:.2f}/{c[1]:.2f}"
                           + (f" ({c[2]:.2f})" if len(c) > 2 else "")
                           + (f" [{c[3] / 1000:.0f}k]" if len(c) > 3 else "")
                           for i, c in enumerate(v))
        for s, v in sc.items())


def _others(x: dict[str, Any]) -> str:
    """The run's CPU of other processes and the hypervisor's steal, when recorded."""
    if "others_cpu" not in x:
        return ""
    return (f"; others' CPU s {sum(x['others_cpu'].values()):.2f}, steal s "
            f"{sum(x['steal_s'].values()):.2f}")


def med(xs: Sequence[float]) -> float:
    return float(statistics.median(xs))


def markdown(r: dict[str, Any], command: str) -> str:
    one, two = r["one"], r["two"]
    loads = [x for run in one + two for x in run["load1"]]
    ok = {True: "met", False: "**not met**"}
    lines = [
        SECTION, "",
        f"Command: `{command}` ({r['date']}, code {r['code']}; corpus {r['corpus']}; "
        f"{len(one)} cold run(s) per side, interleaved, fresh data dirs every run, on "
        f"{r['data_fs']}; medians).",
        f"Machine: {bm.machine_line()}. Threads: {', '.join(THREAD_VARS)} = 1. "
        f"Load average (1 min) before/after the runs: {min(loads):.1f} to {max(loads):.1f} "
        "on the 2 cores, which other sessions' tests and benchmarks shared with these peers: "
        "a pinned peer competes with whatever else the scheduler puts on its core, so the "
        "figures are noisy (each run's load is in the raw list below).",
        "",
        "Workflow: the seed pipeline (list form) FETCH_FESTVOX (4 zips, one task) -> "
        "FILTER_LONGER 5 -> EXTRACT_MFCC [32, 24, 1, 8000, 16000] -> LEARN (defaults); "
        "`--slots 1` per peer; peer i under `taskset -c i`.",
        "",
        "| stage | 1 peer, core 0 (s) | 2 peers, cores 0 and 1 (s) | speed-up | target | |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name in (*STAGES, "total"):
        if name == "total":
            a, b = med([x["seconds"] for x in one]), med([x["seconds"] for x in two])
        else:
            a, b = med([x["stages"][name] for x in one]), med([x["stages"][name] for x in two])
        tgt = TARGETS.get(name)
        verdict = ok[a / b >= tgt] if tgt else ""
        label = f"**{name}**" if name == "total" else name
        lines.append(f"| {label} | {a:.2f} | {b:.2f} | {a / b:.2f}x | "
                     f"{f'≥ {tgt}x' if tgt else ''} | {verdict} |")
    cpu1, cpu2 = med([x["cpu_s"] for x in one]), med([x["cpu_s"] for x in two])
    lines += ["", f"CPU time (all peers' process trees): 1 peer {cpu1:.1f} s, 2 peers "
              f"{cpu2:.1f} s.", "", "Runs (total s, load before -> after; chunks of "
              "EXTRACT_MFCC and LEARN as peer:items@claimed-done, in s after the submission; "
              "LEARN's last chunk is its assembly):", ""]
    for key, runs in (("1 peer", one), ("2 peers", two)):
        for x in runs:
            ch = x["chunks"]
            lines.append(
                f"- {key}: {x['seconds']:.2f} s (load {x['load1'][0]:.1f} -> "
                f"{x['load1'][1]:.1f}); stages "
                + ", ".join(f"{s} {x['stages'][s]:.2f}" for s in STAGES)
                + "; tasks done at " + ", ".join(f"{n} {t:.2f}" for n, t in ch.get("done_s", []))
                + "; extract_mfcc [" + " ".join(_chunk(c) for c in ch["extract_mfcc"])
                + "]; learn [" + " ".join(_chunk(c) for c in ch["learn"]) + "]"
                + _stage_cpu(x) + _others(x))
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--speakers", type=int, default=4, help="the first N corpus speakers")
    ap.add_argument("--utterances", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=3, help="runs per configuration (median)")
    ap.add_argument("--corpus", type=Path, default=ROOT / ".cache" / "bench-corpus")
    ap.add_argument("--write", type=Path, help="update this markdown file's section")
    ap.add_argument("--json", type=Path, help="also save the raw results here")
    ap.add_argument("--log-level", default="WARNING", help="the peers' --log-level")
    ap.add_argument("--logs", type=Path, help="keep the peers' logs in this directory")
    ap.add_argument("--only", choices=("one", "two"), help="run one configuration only")
    ap.add_argument("--tmpfs", action="store_true",
                    help=f"the peers' data dirs under {TMPFS} (tmpfs): no shared disk's syncs")
    ap.add_argument("--poll-s", type=float, default=POLL_S,
                    help="the client's poll period of peer 0's job view (20 ms before 1 Dec)")
    a = ap.parse_args(argv)
    if (os.cpu_count() or 1) < 2:
        print("needs 2 cores", file=sys.stderr)
        return 2
    if a.tmpfs and not TMPFS.is_dir():
        print(f"--tmpfs: {TMPFS} is not a directory on this machine", file=sys.stderr)
        return 2
    mc = bp._script("make_corpus")
    zips = mc.build_corpus(a.corpus, list(mc.VOICES)[: a.speakers], a.utterances)
    r: dict[str, Any] = {"machine": bp.machine(), "date": time.strftime("%Y-%m-%d %H:%M UTC",
                                                                         time.gmtime()),
                         "code": bm.code_version(),
                         "corpus": f"{a.speakers} speakers x {a.utterances} utterances",
                         "data_fs": f"tmpfs ({TMPFS})" if a.tmpfs else "the temporary "
                         f"directory's file system ({tempfile.gettempdir()})",
                         "one": [], "two": []}
    ran = {r["code"]: None}  # the code versions the runs saw, in order
    base = Path(tempfile.mkdtemp(prefix="bench-pinned-", dir=TMPFS if a.tmpfs else None))
    try:
        with bp._script("serve_dir").serve(a.corpus) as url:
            pipe = seed([url + z.name for z in zips])
            for rep in range(a.repeat):
                for key, npeers in (("one", 1), ("two", 2)):
                    if a.only and key != a.only:
                        continue
                    x = run_once(npeers, pipe, base, a.log_level, a.logs, a.poll_s)
                    r[key].append(x)
                    ran[x["code"]] = None
                    print(f"rep {rep + 1}/{a.repeat} {npeers} peer(s): {x['seconds']:.2f} s "
                          f"{json.dumps(x['stages'])} (load {x['load1'][0]:.1f}->"
                          f"{x['load1'][1]:.1f}; code {x['code']})", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    if len(ran) > 1:  # the tree moved during the runs (each run's own is in its entry)
        r["code"] = f"{' then '.join(ran)} (changed during the runs)"
    cmd = "python scripts/bench_pinned.py" + "".join(
        f" {x}" for x in (argv if argv is not None else sys.argv[1:]))
    text = markdown(r, cmd) if r["one"] and r["two"] else json.dumps(r, indent=1)
    print(text)
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(r, indent=1) + "\n")
    if a.write:
        bp.write_section(a.write, SECTION, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
