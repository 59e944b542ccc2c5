#!/usr/bin/env python3
"""Benchmark EXTRACT_MFCC per file on one peer (warm and cold workers) against a plain loop.

    python scripts/bench_mfcc.py                    # 4 speakers x 100 utterances, --slots 1
    python scripts/bench_mfcc.py --repeat 3 --json /tmp/mfcc.json

For each MFCC setting (the seed's [32, 24, 1, 8000, 16000] and [512, 40, 20, 8000, 16000]),
side by side in one run: (1) a plain loop in its own process calling the very same task
function (tasks.audio.extract_mfcc) file after file; its first file pays librosa's import,
the per-file figure is the mean of the others; (2) a fresh banzai-peer with warm workers
(the default: the warm-up ran in its forkserver before the workers forked) and (3) one with
--no-warm-workers, each running FETCH_FESTVOX (over HTTP from 127.0.0.1) -> EXTRACT_MFCC
once; banzai's per-file figure is the EXTRACT_MFCC task's claim-to-done time (job view) over
the files. Also reported: each peer's start-up (launch to "web UI" line, wall) and the CPU
its process tree used to start, warm-up included (measured once the tree idles).
Threads: OMP/OPENBLAS/MKL/NUMBA = 1 on every side.
Target (issue 12): warm peer <= 1.2x the plain loop per file.
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
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import zipfile  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from scriptlib import TaskCtx, load_script, machine  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SETTINGS = ([32, 24, 1, 8000, 16000], [512, 40, 20, 8000, 16000])
TARGET = 1.2


# -- the plain loop (runs in a child process: --plain) -------------------------------------
def plain(work: Path, mfcc: list[int], zips: Sequence[str]) -> dict[str, Any]:
    """Unpack the zips (untimed), then time extract_mfcc on each WAV, one after another."""
    from tasks import audio
    from tasks.registry import catalog

    ctx = TaskCtx(work)
    wavs_dir, out = work / "wavs", work / "mfcc"
    wavs_dir.mkdir()
    out.mkdir()
    from tasks.audio_fetch import FetchLimits, extract_festvox

    for z in zips:  # local zips: unpacked as FETCH_FESTVOX does (which takes http(s) only)
        extract_festvox(Path(z), wavs_dir, FetchLimits(), str(z), lambda f: None)
    params = catalog()["EXTRACT_MFCC"].bind(mfcc, None, "EXTRACT_MFCC")
    times = []
    cpu0 = time.process_time()
    for src in sorted(wavs_dir.rglob("*.wav")):
        t = time.perf_counter()
        audio.extract_mfcc(ctx, src, out, **params)
        times.append(time.perf_counter() - t)
    return {"files": len(times), "first_s": times[0], "per_file_s": statistics.mean(times[1:]),
            "per_file_all_s": statistics.mean(times),
            "cpu_per_file_s": (time.process_time() - cpu0) / len(times)}


def run_plain(mfcc: list[int], zips: Sequence[Path]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-mfcc-plain-") as d:
        r = subprocess.run([sys.executable, __file__, "--plain", d, json.dumps(mfcc),
                            *map(str, zips)], check=True, capture_output=True, text=True,
                           cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    result: dict[str, Any] = json.loads(r.stdout.strip().splitlines()[-1])
    return result


# -- banzai ------------------------------------------------------------------------------
def run_banzai(urls: Sequence[str], files: int, mfcc: list[int], warm: bool, slots: int,
               base: Path, code: Path = ROOT, poll_s: float = 0.02) -> dict[str, Any]:
    """A fresh peer running the source tree `code`; its start-up, then one FETCH ->
    EXTRACT_MFCC job."""
    bp = load_script("bench_pipeline")
    d = Path(tempfile.mkdtemp(prefix="bench-mfcc-", dir=base))
    extra = () if warm else ("--no-warm-workers",)
    try:
        t0 = time.perf_counter()
        with bp.peer(d / "peer", slots, extra, code=code) as p:
            start_s = time.perf_counter() - t0
            start_cpu_s = settled_cpu_s(bp.tree_cpu_s, p.proc.pid)
            job = bp.run_job(p, [{"call": "FETCH_FESTVOX", "args": list(urls)},
                                 {"call": "EXTRACT_MFCC", "args": mfcc}], poll_s)
        stage_s = float(job["stages"]["extract_mfcc"])
        return {"start_s": start_s, "start_cpu_s": start_cpu_s, "stage_s": stage_s,
                "files": files, "per_file_s": stage_s / files}
    finally:
        shutil.rmtree(d, ignore_errors=True)


def settled_cpu_s(tree_cpu_s: Any, pid: int, idle_s: float = 1.0, limit_s: float = 120.0
                  ) -> float:
    """CPU seconds of the peer's process tree once it idles (< 5% of a core for `idle_s`):
    start-up including what runs after "ready" (a warm-up in the background)."""
    deadline = time.monotonic() + limit_s
    cpu = tree_cpu_s(pid)
    while time.monotonic() < deadline:
        time.sleep(idle_s)
        now = tree_cpu_s(pid)
        if now - cpu < 0.05 * idle_s:
            return float(now)
        cpu = now
    return float(cpu)


def count_wavs(zips: Sequence[Path]) -> int:
    """The WAVs FETCH_FESTVOX unpacks, i.e. the items EXTRACT_MFCC maps over."""
    total = 0
    for z in zips:
        with zipfile.ZipFile(z) as zf:
            total += sum(1 for n in zf.namelist() if n.endswith(".wav"))
    return total


# -- report ------------------------------------------------------------------------------
def med(xs: Sequence[float]) -> float:
    return float(statistics.median(xs))


def markdown(r: dict[str, Any], command: str) -> str:
    lines = [
        f"Command: `{command}` ({r['date']}; corpus {r['corpus']}; --slots {r['slots']}; "
        f"{r['repeat']} run(s) per side, medians).",
        f"Machine: {r['machine']}. Threads: {', '.join(THREAD_VARS)} = 1 on every side. "
        f"Load average (1 min) at start / end: {r['load'][0]:.1f} / {r['load'][1]:.1f}.",
        "",
        "| EXTRACT_MFCC | plain ms/file (first file) | warm peer ms/file | ratio | "
        f"target ≤ {TARGET} | cold peer ms/file | warm start s (CPU s) | cold start s (CPU s) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    if r.get("base"):
        return _markdown_ab(r, lines[:3])
    for key, row in r["settings"].items():
        pl, w, c = row["plain"], row["warm"], row["cold"]
        plain_ms = med([x["per_file_s"] for x in pl]) * 1e3
        warm_ms = med([x["per_file_s"] for x in w]) * 1e3
        cold = (f"{med([x['per_file_s'] for x in c]) * 1e3:.2f}",
                f"{med([x['start_s'] for x in c]):.2f} ({med([x['start_cpu_s'] for x in c]):.2f})"
                ) if c else ("-", "-")
        ratio = warm_ms / plain_ms
        lines.append(
            f"| {key} | {plain_ms:.2f} ({med([x['first_s'] for x in pl]):.2f} s) | "
            f"{warm_ms:.2f} | {ratio:.2f} | {'met' if ratio <= TARGET else '**not met**'} | "
            f"{cold[0]} | {med([x['start_s'] for x in w]):.2f} "
            f"({med([x['start_cpu_s'] for x in w]):.2f}) | {cold[1]} |")
    lines += [
        "",
        "Plain: mean of files 2..n (the first pays librosa's import, shown in brackets). "
        "Peers: the EXTRACT_MFCC task's claim-to-done time over its files, one fresh peer per "
        "cell; start = launch to ready (a warm peer warms its forkserver after that), CPU = the "
        "peer's process tree once it idles after start-up, warm-up included.",
    ]
    return "\n".join(lines) + "\n"


def _markdown_ab(r: dict[str, Any], head: list[str]) -> str:
    """The A/B table: plain loop, warm peer on the base tree, warm peer on this tree."""
    lines = [*head,
             f"Base: the source tree {r['base']} (warm peer), interleaved with this one's.", "",
             "| EXTRACT_MFCC | plain ms/file | base warm ms/file (ratio) | head warm ms/file "
             f"(ratio) | target ≤ {TARGET} | runs (head ms/file, load) |",
             "| --- | --- | --- | --- | --- | --- |"]
    for key, row in r["settings"].items():
        plain_ms = med([x["per_file_s"] for x in row["plain"]]) * 1e3
        base_ms = med([x["per_file_s"] for x in row["base"]]) * 1e3
        head_ms = med([x["per_file_s"] for x in row["warm"]]) * 1e3
        ratio = head_ms / plain_ms
        runs = ", ".join(f"{x['per_file_s'] * 1e3:.1f} ({x.get('load1', 0):.1f})"
                         for x in row["warm"])
        lines.append(f"| {key} | {plain_ms:.2f} | {base_ms:.2f} ({base_ms / plain_ms:.2f}) | "
                     f"{head_ms:.2f} ({ratio:.2f}) | "
                     f"{'met' if ratio <= TARGET else '**not met**'} | {runs} |")
    lines += ["", "Plain: mean of files 2..n in a process of its own (the first pays librosa's "
              "import). Peers: the EXTRACT_MFCC task's claim-to-done time over its files, one "
              "fresh warm peer per cell, --slots 1; medians of the runs."]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--speakers", type=int, default=4, help="the first N corpus speakers")
    ap.add_argument("--utterances", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=1, help="runs per configuration (median)")
    ap.add_argument("--slots", type=int, default=1, help="worker slots of each peer")
    ap.add_argument("--corpus", type=Path, default=ROOT / ".cache" / "bench-corpus")
    ap.add_argument("--json", type=Path, help="also save the raw results here")
    ap.add_argument("--no-cold", action="store_true", help="skip the --no-warm-workers peer")
    ap.add_argument("--base", type=Path,
                    help="also run a warm peer on this source tree (an A/B), interleaved")
    ap.add_argument("--poll-s", type=float, default=0.02,
                    help="how often the job view is polled (the stage's time is the view's "
                         "own; a poll costs the peer ~1 ms of CPU)")
    ap.add_argument("--plain", nargs="+", metavar=("WORKDIR", "MFCC"), help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.plain:
        print(json.dumps(plain(Path(a.plain[0]), json.loads(a.plain[1]), a.plain[2:])))
        return 0
    mc = load_script("make_corpus")
    zips = mc.build_corpus(a.corpus, list(mc.VOICES)[: a.speakers], a.utterances)
    r: dict[str, Any] = {"machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M UTC",
                                                                     time.gmtime()),
                         "base": str(a.base) if a.base else None,
                         "corpus": f"{a.speakers} speakers x {a.utterances} utterances",
                         "slots": a.slots, "repeat": a.repeat, "settings": {}}
    base = Path(tempfile.mkdtemp(prefix="bench-mfcc-"))
    load0 = os.getloadavg()[0]
    try:
        with load_script("serve_dir").serve(a.corpus) as url:
            urls = [url + z.name for z in zips]
            files = count_wavs(zips)
            for i in range(a.repeat):  # interleaved, so drift hits every side alike
                for mfcc in SETTINGS:
                    row = r["settings"].setdefault(
                        str(mfcc), {"plain": [], "warm": [], "cold": [], "base": []})
                    keys = ["plain", "warm"] + ([] if a.no_cold else ["cold"]) + (
                        ["base"] if a.base else [])
                    if i % 2:  # alternate which peer goes first
                        keys = ["plain", *reversed(keys[1:])]
                    for key in keys:
                        res = run_plain(mfcc, zips) if key == "plain" else run_banzai(
                            urls, files, mfcc, key != "cold", a.slots, base,
                            a.base.resolve() if key == "base" else ROOT, a.poll_s)
                        res["load1"] = os.getloadavg()[0]
                        row[key].append(res)
                        print(f"run {i + 1}/{a.repeat} {mfcc} {key}: "
                              f"{res['per_file_s'] * 1e3:.2f} ms/file", file=sys.stderr)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    r["load"] = [load0, os.getloadavg()[0]]
    cmd = "python scripts/bench_mfcc.py" + "".join(
        f" {x}" for x in (argv if argv is not None else sys.argv[1:]))
    print(markdown(r, cmd))
    if a.json:
        a.json.write_text(json.dumps(r, indent=1, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
