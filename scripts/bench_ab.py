#!/usr/bin/env python3
"""A/B: run one benchmark script on two versions of the code in one run, interleaved.

The base version is checked out into a temporary git worktree; each round runs the
script on base and on this tree (alternating which goes first), each with its own peers.
Medians of the rounds are printed side by side, and with --write replace the section
"## A/B: <bench> vs <base>" of a markdown file.

    .venv/bin/python scripts/bench_ab.py --base a11d9c4 --rounds 3 engine -- -n 500
    .venv/bin/python scripts/bench_ab.py --base a11d9c4 mesh -- --peers 1,3 -n 500 --repeat 1
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench_pipeline import write_section
from scriptlib import machine

ROOT = Path(__file__).resolve().parent.parent


def _engine(tree: Path, args: Sequence[str]) -> dict[str, float]:
    """bench_engine.py: per scenario, throughput and submit->done median/p95."""
    out = subprocess.run([sys.executable, str(tree / "scripts" / "bench_engine.py"), *args,
                          "--json"], cwd=tree, capture_output=True, text=True, check=True).stdout
    results = json.loads(out[out.index("\n[") + 1:])
    figures: dict[str, float] = {}
    for r in results:
        name = r["scenario"]
        figures[f"{name} tasks/s"] = r["throughput_tasks_per_s"]
        figures[f"{name} submit->done p50 ms"] = r["submit_to_done"]["median_ms"]
        figures[f"{name} submit->done p95 ms"] = r["submit_to_done"]["p95_ms"]
    return figures


_MESH_KEYS = {"b_dag": "independent tasks/s", "b_jobs": "one-task jobs tasks/s",
              "b_map": "per-file items/s", "b_p50": "latency p50 ms",
              "b_p95": "latency p95 ms", "b_cpu_dag": "CPU ms/task (independent)",
              "b_events_dag": "events/task (independent; /metrics)",
              "b_gossip_dag": "gossip bytes sent/task (independent; /metrics)",
              # Dask runs beside each side (its own baseline; the targets are ratios)
              "d_map": "Dask map tasks/s (beside)", "d_p50": "Dask latency p50 ms (beside)",
              "d_cpu_map": "Dask CPU ms/task (beside)"}


def _mesh(tree: Path, args: Sequence[str]) -> dict[str, float]:
    """bench_mesh.py: banzai's figures per mesh size N (Dask's are its own baseline)."""
    with tempfile.TemporaryDirectory(prefix="bench-ab-") as tmp:
        raw = Path(tmp) / "mesh.json"
        subprocess.run([sys.executable, str(tree / "scripts" / "bench_mesh.py"), *args,
                        "--json", str(raw)], cwd=tree, capture_output=True, text=True,
                       check=True)
        r = json.loads(raw.read_text())
    figures: dict[str, float] = {}
    for n, s in r["summary"].items():
        for key, label in _MESH_KEYS.items():
            if s.get(key) is not None:
                figures[f"N={n} {label}"] = s[key]
    return figures


BENCHES = {"engine": _engine, "mesh": _mesh}


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", required=True, help="git revision to compare against")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--write", type=Path, help="update this markdown file's section")
    ap.add_argument("bench", choices=sorted(BENCHES))
    ap.add_argument("args", nargs=argparse.REMAINDER, help="-- then the script's arguments")
    a = ap.parse_args(argv)
    args = a.args[1:] if a.args[:1] == ["--"] else a.args
    run = BENCHES[a.bench]
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True,
                          capture_output=True, check=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                           text=True, capture_output=True, check=True).stdout.strip()
    head_label = head + ("+changes" if dirty else "")
    samples: dict[str, list[dict[str, float]]] = {"base": [], "head": []}
    with tempfile.TemporaryDirectory(prefix="bench-ab-base-") as tmp:
        base_tree = Path(tmp) / "tree"
        subprocess.run(["git", "worktree", "add", "--detach", str(base_tree), a.base],
                       cwd=ROOT, check=True, capture_output=True)
        try:
            for i in range(a.rounds):
                order = [("base", base_tree), ("head", ROOT)]
                for side, tree in order if i % 2 == 0 else order[::-1]:
                    samples[side].append(run(tree, args))
                    print(f"round {i + 1} {side}: {samples[side][-1]}", flush=True)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(base_tree)], cwd=ROOT,
                           check=False, capture_output=True)
    text = _markdown(a, args, head_label, samples)
    print(text)
    if a.write:
        write_section(a.write, _section(a), text)
    return 0


def _section(a: argparse.Namespace) -> str:
    return f"## A/B: bench_{a.bench} vs {a.base}"


def _markdown(a: argparse.Namespace, args: Sequence[str], head: str,
              samples: dict[str, list[dict[str, Any]]]) -> str:
    keys = list(dict.fromkeys(k for s in samples["base"] + samples["head"] for k in s))
    lines = [_section(a), "",
             f"Command: `.venv/bin/python scripts/bench_ab.py --base {a.base} --rounds "
             f"{a.rounds} {a.bench} -- {' '.join(args)}` ({datetime.date.today()}; the two "
             "versions interleaved round by round on the same machine; medians of the rounds).",
             f"Machine: {machine()}. Head: {head}.", "",
             f"| figure | {a.base} (base) | {head} | head/base |", "|---|---|---|---|"]
    for k in keys:
        b = [s[k] for s in samples["base"] if k in s]
        h = [s[k] for s in samples["head"] if k in s]
        if not b or not h:
            continue
        mb, mh = statistics.median(b), statistics.median(h)
        ratio = f"{mh / mb:.2f}" if mb else "n/a"
        lines.append(f"| {k} | {mb:.1f} | {mh:.1f} | {ratio} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
