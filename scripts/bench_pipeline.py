#!/usr/bin/env python3
"""Benchmark the seed pipeline on banzai-peer against a plain Python loop, side by side.

    python scripts/bench_pipeline.py                      # 4 speakers x 100 utterances
    python scripts/bench_pipeline.py --write docs/benchmarks.md

Pipeline: FETCH_FESTVOX (over HTTP from 127.0.0.1) -> FILTER_LONGER 5 -> EXTRACT_MFCC
[32, 24, 1, 8000, 16000] -> LEARN (defaults). The plain loop runs in its own process and
calls the very same task functions (tasks.audio) with the same bound parameters, one
file after another, keeping files in a temporary directory: no store, no events, no
worker pool. Both sides run with OMP/OPENBLAS/MKL/NUMBA threads = 1.

Measured: (a) banzai with --slots 1 / plain, (b) plain / banzai with --slots nproc,
(c) an identical rerun on the same peer (fully cached) / the cold run, (d) peak RSS:
VmHWM of every worker process (children of the peer's forkserver, read from
/proc/<pid>/status after the job, while the long-lived workers are still alive) and
ru_maxrss of the plain process. Every cold banzai run gets a fresh data directory.
"""

from __future__ import annotations

import os

THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
               "NUMBA_NUM_THREADS")
for _v in THREAD_VARS:  # before numpy is imported, here and in every child process
    os.environ[_v] = "1"

import argparse  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import re  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import urllib.request  # noqa: E402
from collections.abc import Iterator, Sequence  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from scriptlib import TaskCtx, load_script, lone_peer  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
SEED_ARGS = {"FILTER_LONGER": [5], "EXTRACT_MFCC": [32, 24, 1, 8000, 16000], "LEARN": []}
SECTION = "## Seed pipeline (issue 3)"
JOB_TIMEOUT_S = 3600.0
LOOPBACK = "127.0.0.1/32"  # --fetch-allow: the corpus server (scripts/serve_dir.py) is there
_script = load_script  # also used by bench_mesh.py


def pipeline(urls: Sequence[str]) -> list[dict[str, Any]]:
    return [{"call": "FETCH_FESTVOX", "args": list(urls)},
            *({"call": c, "args": a} for c, a in SEED_ARGS.items())]


# -- the plain loop (runs in a child process: --plain) -------------------------------------
def plain(urls: Sequence[str], work: Path,
          seed_args: dict[str, list[Any]] | None = None) -> dict[str, Any]:
    """The seed pipeline as a plain loop over the same task functions; timings per stage.

    The clock starts before the task modules are imported: a worker pays that import on
    its first task too (librosa is imported lazily on both sides).
    """
    t = t0 = time.perf_counter()
    from tasks import audio
    from tasks.registry import KEEP, catalog

    cat = catalog()
    p = {c: cat[c].bind(a, None, c) for c, a in (seed_args or SEED_ARGS).items()}
    ctx = TaskCtx(work, fetch_allow=(LOOPBACK,))  # the corpus server is on 127.0.0.1
    stages: dict[str, float] = {}

    def lap(name: str) -> None:
        nonlocal t
        now = time.perf_counter()
        stages[name] = round(now - t, 3)
        t = now

    fetched = work / "fetch"
    fetched.mkdir()
    audio.fetch_festvox(ctx, None, fetched, urls=list(urls))
    lap("fetch")
    kept = []
    for src in sorted(fetched.rglob("*.wav")):
        if audio.filter_longer(ctx, src, work, **p["FILTER_LONGER"]) is KEEP:
            kept.append(src)
    lap("filter")
    feats = work / "mfcc"
    for src in kept:
        out = feats / src.parent.name
        out.mkdir(parents=True, exist_ok=True)
        audio.extract_mfcc(ctx, src, out, **p["EXTRACT_MFCC"])
    lap("mfcc")
    learned = work / "learn"
    learned.mkdir()
    audio.learn(ctx, feats, learned, **p["LEARN"])
    lap("learn")
    metrics = json.loads((learned / "metrics.json").read_text())
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return {"seconds": round(time.perf_counter() - t0, 3), "stages": stages,
            "kept": len(kept), "accuracy": metrics.get("accuracy"),
            "test_utterances": metrics["test_utterances"],
            "cpu_s": round(ru.ru_utime + ru.ru_stime, 2),
            "maxrss_mb": round(ru.ru_maxrss / 1024, 1)}


def run_plain(urls: Sequence[str], seed_args: dict[str, list[Any]] | None = None,
              ) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-plain-") as d:
        extra = ["--args", json.dumps(seed_args)] if seed_args else []
        r = subprocess.run([sys.executable, __file__, *extra, "--plain", d, *urls], check=True,
                           capture_output=True, text=True, cwd=ROOT,
                           env={**os.environ, "PYTHONPATH": str(ROOT)})
    result: dict[str, Any] = json.loads(r.stdout.strip().splitlines()[-1])
    return result


# -- banzai ------------------------------------------------------------------------------
@dataclass
class Peer:
    proc: subprocess.Popen[bytes]
    url: str
    log: Path
    samples: list[dict[int, int]] = field(default_factory=list)


@contextlib.contextmanager
def peer(data_dir: Path, slots: int, extra: Sequence[str] = (), code: Path = ROOT,
         ) -> Iterator[Peer]:
    """A banzai-peer alone on 127.0.0.1 with a fresh data dir, running the source tree
    `code`; SIGTERM at exit."""
    log = data_dir.with_suffix(".log")
    with lone_peer(data_dir, log, slots, mesh_prefix="bench", log_level="WARNING",
                   extra=["--fetch-allow", LOOPBACK, *extra], stop_timeout_s=30,
                   code=code) as (proc, url):
        yield Peer(proc, url, log)


def _http(url: str, body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.load(r)


def run_job(p: Peer, pipe: Any, poll_s: float = 0.02) -> dict[str, Any]:
    """Submit, wait; wall time from POST to the view saying done (polled every `poll_s`:
    each poll costs the peer a job view, about 2-3 ms of CPU)."""
    t0 = time.perf_counter()
    job = _http(p.url + "/api/jobs", pipe)["job"]
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while time.monotonic() < deadline:
        v = _http(f"{p.url}/api/jobs/{job}")
        if v["state"] in ("done", "failed", "cancelled"):
            break
        time.sleep(poll_s)
    else:
        raise RuntimeError(f"job {job} did not finish")
    wall = time.perf_counter() - t0
    if v["state"] != "done":
        errors = [t["error"] for t in v["tasks"] if t["error"]]
        raise RuntimeError(f"job {job} {v['state']}: {errors}")
    return {"seconds": round(wall, 3), "view": v,
            "stages": {t["name"]: t["duration_s"] for t in v["tasks"]},
            "cached": [t["cached"] for t in v["tasks"]]}


def descendants(pid: int) -> dict[int, tuple[int, str]]:
    """{pid: (ppid, cmdline)} of every process below `pid`."""
    procs: dict[int, tuple[int, str]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                stat = (d / "stat").read_text()
                ppid = int(stat.rsplit(")", 1)[1].split()[1])
                cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                procs[int(d.name)] = (ppid, cmd)
    out: dict[int, tuple[int, str]] = {}
    frontier = [pid]
    while frontier:
        parent = frontier.pop()
        for p, (pp, cmd) in procs.items():
            if pp == parent and p not in out:
                out[p] = (pp, cmd)
                frontier.append(p)
    return out


def tree_cpu_s(pid: int) -> float:
    """user+system CPU seconds of `pid` and its live descendants (from /proc/<pid>/stat)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for q in [pid, *descendants(pid)]:
        with contextlib.suppress(OSError):
            f = Path(f"/proc/{q}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(f[11]) + int(f[12])  # utime, stime
    return total / tick


def vm_hwm_mb(pid: int) -> float:
    text = Path(f"/proc/{pid}/status").read_text()
    m = re.search(r"^VmHWM:\s+(\d+) kB", text, re.M)
    return int(m.group(1)) / 1024 if m else float("nan")


def memory(p: Peer) -> dict[str, Any]:
    """Peak RSS (VmHWM) of the peer, its forkserver and each worker process."""
    procs = descendants(p.proc.pid)
    server = [q for q, (pp, cmd) in procs.items()
              if pp == p.proc.pid and "forkserver" in cmd]
    workers = [q for q, (pp, _) in procs.items() if pp in server]
    return {"peer_mb": round(vm_hwm_mb(p.proc.pid), 1),
            "forkserver_mb": round(max((vm_hwm_mb(q) for q in server), default=0), 1),
            "workers_mb": sorted(round(vm_hwm_mb(q), 1) for q in workers)}


def run_banzai(urls: Sequence[str], slots: int, base: Path) -> dict[str, Any]:
    d = Path(tempfile.mkdtemp(prefix=f"bench-s{slots}-", dir=base))
    try:
        with peer(d / "peer", slots) as p:
            time.sleep(1.0)  # let the worker pool finish starting before the clock runs
            cpu0 = tree_cpu_s(p.proc.pid)
            cold = run_job(p, pipeline(urls))
            cold["cpu_s"] = round(tree_cpu_s(p.proc.pid) - cpu0, 2)
            mem = memory(p)
            warm = run_job(p, pipeline(urls))
        return {"slots": slots, "cold": {k: cold[k] for k in ("seconds", "stages", "cpu_s")},
                "rerun": {k: warm[k] for k in ("seconds", "cached")}, "memory": mem}
    finally:
        shutil.rmtree(d, ignore_errors=True)


def accuracy_table(urls: Sequence[str], corpus: str) -> str:
    """Held-out accuracy of LEARN (defaults) for both MFCC settings and two filters."""
    lines = [f"Corpus {corpus} (scripts/make_corpus.py, seed 0); LEARN defaults.", "",
             "| FILTER_LONGER | EXTRACT_MFCC | utterances kept | held out | accuracy | "
             "LEARN s |", "| --- | --- | --- | --- | --- | --- |"]
    for seconds in (5, 3):
        for mfcc in ([32, 24, 1, 8000, 16000], [512, 40, 20, 8000, 16000]):
            r = run_plain(urls, {"FILTER_LONGER": [seconds], "EXTRACT_MFCC": mfcc,
                                 "LEARN": []})
            lines.append(f"| {seconds} | {mfcc} | {r['kept']} | {r['test_utterances']} | "
                         f"{r['accuracy']:.1%} | {r['stages']['learn']:.1f} |")
    return "\n".join(lines)


# -- report ------------------------------------------------------------------------------
def machine() -> dict[str, Any]:
    cpu = platform.processor() or "?"
    with open("/proc/cpuinfo") as f:
        for ln in f:
            if ln.startswith("model name"):
                cpu = ln.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem_kb = next(int(ln.split()[1]) for ln in f if ln.startswith("MemTotal"))
    return {"nproc": os.cpu_count() or 1, "cpu": cpu, "ram_gib": round(mem_kb / 2**20, 1),
            "python": platform.python_version(),
            "os": f"{platform.system()} {platform.release()}"}


def med(xs: Sequence[float]) -> float:
    return float(statistics.median(xs))


def summarize(r: dict[str, Any]) -> dict[str, Any]:
    plain_s = med([x["seconds"] for x in r["plain"]])
    one = med([x["cold"]["seconds"] for x in r["slots1"]])
    many = med([x["cold"]["seconds"] for x in r["slotsN"]])
    rerun = med([x["rerun"]["seconds"] for x in r["slots1"] + r["slotsN"]])
    cores = r["machine"]["nproc"]
    return {"plain_s": plain_s, "slots1_s": one, "slotsN_s": many, "rerun_s": rerun,
            "plain_cpu_s": med([x["cpu_s"] for x in r["plain"]]),
            "slots1_cpu_s": med([x["cold"]["cpu_s"] for x in r["slots1"]]),
            "slotsN_cpu_s": med([x["cold"]["cpu_s"] for x in r["slotsN"]]),
            "serial_s": med([x["stages"]["learn"] + x["stages"]["fetch"] for x in r["plain"]]),
            "a_ratio": one / plain_s, "b_speedup": plain_s / many,
            "b_target": 0.85 * cores,
            "c_share": rerun / min(one, many)}


def markdown(r: dict[str, Any], command: str) -> str:
    m, s, cores = r["machine"], summarize(r), r["machine"]["nproc"]
    ok = {True: "met", False: "**not met**"}
    lines = [
        SECTION, "",
        f"Command: `{command}` ({r['date']}; corpus {r['corpus']}, "
        f"{r['plain'][0]['kept']} utterances kept by FILTER_LONGER 5; "
        f"{len(r['plain'])} run(s) per side, medians).",
        f"Machine: {cores} CPUs ({m['cpu']}), {m['ram_gib']} GiB RAM, Python {m['python']}, "
        f"{m['os']}. Threads: {', '.join(THREAD_VARS)} = 1 for both sides. "
        f"Load average (1 min) at start / end: {r['load'][0]:.1f} / {r['load'][1]:.1f}: "
        "other processes competing for the cores inflate wall times; CPU times are the "
        "steadier comparison.",
        "",
        "| measure | banzai | plain loop | ratio | target | |",
        "| --- | --- | --- | --- | --- | --- |",
        f"| (a) cold, `--slots 1` | {s['slots1_s']:.2f} s | {s['plain_s']:.2f} s | "
        f"{s['a_ratio']:.3f} | ≤ 1.10 | {ok[s['a_ratio'] <= 1.10]} |",
        f"| (b) cold, `--slots {cores}` | {s['slotsN_s']:.2f} s | {s['plain_s']:.2f} s | "
        f"speed-up {s['b_speedup']:.2f} | ≥ {s['b_target']:.2f} | "
        f"{ok[s['b_speedup'] >= s['b_target']]} |",
        f"| (c) identical rerun (all cached) | {s['rerun_s']:.3f} s | | "
        f"{s['c_share']:.2%} of cold | ≤ 2% | {ok[s['c_share'] <= 0.02]} |",
        f"| CPU time, `--slots 1` (peer + forkserver + workers) | {s['slots1_cpu_s']:.2f} s | "
        f"{s['plain_cpu_s']:.2f} s | {s['slots1_cpu_s'] / s['plain_cpu_s']:.3f} | | |",
        f"| CPU time, `--slots {cores}` | {s['slotsN_cpu_s']:.2f} s | "
        f"{s['plain_cpu_s']:.2f} s | {s['slotsN_cpu_s'] / s['plain_cpu_s']:.3f} | | |",
        "",
        f"Bound on (b): FETCH (one task: one zip list) and LEARN (one task) are serial and "
        f"take {s['serial_s']:.2f} s of the plain loop's {s['plain_s']:.2f} s, so even with "
        f"zero overhead {cores} cores give at most "
        f"{s['plain_s'] / (s['serial_s'] + (s['plain_s'] - s['serial_s']) / cores):.2f}x "
        "(Amdahl).",
        "",
        "Stage times (s; banzai: each task's claim-to-done time from the job view):", "",
        "| stage | plain | `--slots 1` | " + f"`--slots {cores}` |",
        "| --- | --- | --- | --- |",
    ]
    p0, b1, bn = r["plain"][0]["stages"], r["slots1"][0]["cold"]["stages"], \
        r["slotsN"][0]["cold"]["stages"]
    for (name, pv), task in zip(p0.items(), ("fetch_festvox", "filter_longer",
                                             "extract_mfcc", "learn"), strict=True):
        lines.append(f"| {name} | {pv:.2f} | {b1.get(task) or 0:.2f} | {bn.get(task) or 0:.2f} |")
    mem1, memn = r["slots1"][0]["memory"], r["slotsN"][0]["memory"]
    lines += [
        "",
        "(d) Peak memory (VmHWM, MiB): "
        f"plain process {r['plain'][0]['maxrss_mb']:.0f} (ru_maxrss); "
        f"`--slots 1`: worker {', '.join(f'{x:.0f}' for x in mem1['workers_mb'])}, "
        f"peer {mem1['peer_mb']:.0f}, forkserver {mem1['forkserver_mb']:.0f}; "
        f"`--slots {cores}`: workers {', '.join(f'{x:.0f}' for x in memn['workers_mb'])}, "
        f"peer {memn['peer_mb']:.0f}.",
        "Method: after the cold job the script walks /proc for the peer's descendants (the "
        "forkserver is the peer's child, the workers are the forkserver's children, "
        "long-lived) and reads `VmHWM` from /proc/<pid>/status; the plain loop runs in its "
        "own process and reports `resource.getrusage(RUSAGE_SELF).ru_maxrss`.",
    ]
    return "\n".join(lines) + "\n"


def write_section(path: Path, section: str, text: str) -> None:
    """Replace `section` (a "## " heading line) in `path`, or append it; others are kept.
    The other benchmark scripts use this one too."""
    old = path.read_text() if path.exists() else ""
    start = old.find(section + "\n")
    if start < 0:
        new = (old.rstrip("\n") + "\n\n" if old.strip() else "") + text
    else:
        nxt = re.search(r"^## ", old[start + len(section):], re.M)
        end = start + len(section) + nxt.start() if nxt else len(old)
        new = old[:start] + text.rstrip("\n") + "\n" + ("\n" + old[end:] if nxt else "")
    path.write_text(new)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--speakers", type=int, default=4, help="the first N corpus speakers")
    ap.add_argument("--utterances", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=1, help="runs per configuration (median)")
    ap.add_argument("--corpus", type=Path, default=ROOT / ".cache" / "bench-corpus")
    ap.add_argument("--slots", type=int, default=os.cpu_count() or 1, help="for (b)")
    ap.add_argument("--write", type=Path, help="update this markdown file's section")
    ap.add_argument("--json", type=Path, help="also save the raw results here")
    ap.add_argument("--accuracy", action="store_true",
                    help="only: LEARN accuracy of both MFCC settings (plain loop)")
    ap.add_argument("--plain", nargs="+", metavar=("WORKDIR", "URL"), help=argparse.SUPPRESS)
    ap.add_argument("--args", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.plain:
        print(json.dumps(plain(a.plain[1:], Path(a.plain[0]),
                               json.loads(a.args) if a.args else None)))
        return 0
    mc = _script("make_corpus")
    speakers = list(mc.VOICES)[: a.speakers]
    zips = mc.build_corpus(a.corpus, speakers, a.utterances)
    r: dict[str, Any] = {"machine": machine(), "date": time.strftime("%Y-%m-%d"),
                         "corpus": f"{a.speakers} speakers x {a.utterances} utterances",
                         "plain": [], "slots1": [], "slotsN": []}
    base = Path(tempfile.mkdtemp(prefix="bench-pipeline-"))
    load0 = os.getloadavg()[0]
    try:
        with _script("serve_dir").serve(a.corpus) as url:
            urls = [url + z.name for z in zips]
            if a.accuracy:
                print(accuracy_table(urls, r["corpus"]))
                return 0
            for i in range(a.repeat):  # interleaved, so drift hits every side alike
                for key, fn in (("plain", lambda: run_plain(urls)),
                                ("slots1", lambda: run_banzai(urls, 1, base)),
                                ("slotsN", lambda: run_banzai(urls, a.slots, base))):
                    res = fn()
                    r[key].append(res)
                    shown = res.get("seconds") or res["cold"]["seconds"]
                    print(f"run {i + 1}/{a.repeat} {key}: {shown:.2f} s", file=sys.stderr)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    r["load"] = [load0, os.getloadavg()[0]]
    r["summary"] = summarize(r)
    cmd = "python scripts/bench_pipeline.py" + "".join(
        f" {x}" for x in (argv if argv is not None else sys.argv[1:]))
    text = markdown(r, cmd)
    print(text)
    if a.json:
        a.json.write_text(json.dumps(r, indent=1, default=str) + "\n")
    if a.write:
        write_section(a.write, SECTION, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
