#!/usr/bin/env python3
"""A finished job's compact record as every peer makes it when the job is compacted
(`Node._finished`: the record, its list entry and what retention keeps), and the job's full
view (`job_view`, the HTTP API's), on the folded state of one finished job: `--tasks` whole
tasks (split, claim, chunk done with a run log, task done each), or one per-item task of
`--chunks` chunks of one item each.

    .venv/bin/python scripts/bench_record.py [--tasks 1000] [--chunks 1000] [--repeat 30]
        [--rounds 3] [--base DIR] [--json]

Each version runs in a fresh process. `--base DIR`: also the code under DIR (a `git archive`
of an earlier commit, say), alternated with this tree's (base first in odd rounds), and the
two versions' records compared as canonical bytes (`same`). Figures, ms per call: the median
of the processes' medians, and the fastest call of all (`min`: what load adds least to).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scriptlib import ROOT, machine

ORIGIN = "bench000000000000000"
MAX_ATTEMPTS = 3


def _cid(s: str) -> str:
    return "bafkrei" + hashlib.sha256(s.encode()).hexdigest()[:52]


Story = list[tuple[str, str, dict[str, Any]]]


def _histories(tasks: int, chunks: int) -> dict[str, Story]:
    """(type name, origin, payload) of each event of the two jobs, in log order."""
    whole: Story = [("JOB_SUBMITTED", ORIGIN, {"job": "j", "workflow": {
        "name": "j", "tasks": [{"name": f"t{i}", "call": "ECHO", "params": {"text": str(i)}}
                               for i in range(tasks)]}})]
    for i in range(tasks):
        split = [ORIGIN, len(whole) + 1]
        whole.append(("TASK_SPLIT", ORIGIN, {"job": "j", "task": f"t{i}", "input": None,
                                                 "chunks": [[]]}))
        base = {"job": "j", "task": f"t{i}", "split": split, "chunk": 0, "attempt": 0}
        whole.append(("CLAIM", ORIGIN, base))
        whole.append(("CHUNK_DONE", ORIGIN, {**base, "output": _cid(f"o{i}"), "cache": {},
                                                 "log": _cid(f"l{i}")}))
        whole.append(("TASK_DONE", ORIGIN, {"job": "j", "task": f"t{i}",
                                                "output": _cid(f"o{i}"), "key": _cid(f"k{i}")}))
    src = _cid("input")
    items: Story = [("JOB_SUBMITTED", ORIGIN, {"job": "j", "workflow": {
        "name": "j", "tasks": [{"name": "t", "call": "ECHO", "params": {}, "cid": src}]}})]
    items.append(("TASK_SPLIT", ORIGIN, {"job": "j", "task": "t", "input": src, "chunks": [
        [[f"f{i}", _cid(f"f{i}")]] for i in range(chunks)]}))
    for i in range(chunks):
        base = {"job": "j", "task": "t", "split": [ORIGIN, 2], "chunk": i, "attempt": 0}
        items.append(("CLAIM", ORIGIN, base))
        items.append(("CHUNK_DONE", ORIGIN, {**base, "output": None, "log": _cid(f"l{i}"),
                                                 "cache": {_cid(f"k{i}"): {
                                                     "n": f"f{i}", "c": _cid(f"r{i}")}}}))
    items.append(("TASK_DONE", ORIGIN, {"job": "j", "task": "t", "output": _cid("out"),
                                            "key": None}))
    return {"tasks": whole, "chunks": items}


def _measure(code: Path, tasks: int, chunks: int, repeat: int) -> dict[str, Any]:
    """Times of the code under `code`, in this process (ms per call: median, fastest)."""
    sys.path.insert(0, str(code))
    import peer
    from peer.http.views import job_view
    from peer.log import Event, EventType, fold
    from peer.node import Node

    out: dict[str, Any] = {"code": str(Path(peer.__file__).parent.parent)}
    for name, events in _histories(tasks, chunks).items():
        state = fold([Event(o, seq, (1_700_000_000_000 + seq) << 16, EventType[t], p)
                      for seq, (t, o, p) in enumerate(events, 1)])
        node: Any = SimpleNamespace(state=state, cfg=SimpleNamespace(max_attempts=MAX_ATTEMPTS))
        f = Node._finished(node, "j")
        assert f is not None
        canon = json.dumps([f.state, f.ended_hlc, f.n_tasks, f.summary, f.record, f.facts],
                           separators=(",", ":"), sort_keys=True).encode()
        times: dict[str, list[float]] = {"record": [], "view": []}
        for _ in range(repeat):
            t0 = time.perf_counter()
            Node._finished(node, "j")
            t1 = time.perf_counter()
            job_view(state, "j", MAX_ATTEMPTS)
            t2 = time.perf_counter()
            times["record"].append((t1 - t0) * 1000)
            times["view"].append((t2 - t1) * 1000)
        out[name] = {"record_ms": statistics.median(times["record"]),
                     "record_min_ms": min(times["record"]),
                     "view_ms": statistics.median(times["view"]),
                     "view_min_ms": min(times["view"]),
                     "canon_sha256": hashlib.sha256(canon).hexdigest()}
    return out


def _run(code: Path, a: argparse.Namespace) -> dict[str, Any]:
    """`_measure` in a fresh process for the code under `code`."""
    cmd = [sys.executable, __file__, "--code", str(code), "--tasks", str(a.tasks),
           "--chunks", str(a.chunks), "--repeat", str(a.repeat)]
    res = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=600)
    if res.returncode != 0:
        raise SystemExit(f"bench_record: the run of {code} failed:\n{res.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(res.stdout)
    if Path(result.pop("code")) != code:  # (another copy of `peer` came first on the path)
        raise SystemExit(f"bench_record: the run of {code} imported other code")
    return result


def _figures(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Per version and job: the median of the processes' medians, the fastest call of all,
    the record's digest; `same`: the versions' records are the same bytes."""
    figures: dict[str, Any] = {}
    for v, rs in runs.items():
        figures[v] = {job: {"record_ms": statistics.median(x[job]["record_ms"] for x in rs),
                            "record_min_ms": min(x[job]["record_min_ms"] for x in rs),
                            "view_ms": statistics.median(x[job]["view_ms"] for x in rs),
                            "view_min_ms": min(x[job]["view_min_ms"] for x in rs),
                            "canon_sha256": rs[0][job]["canon_sha256"]} for job in rs[0]}
    if "base" in figures:
        figures["same"] = all(figures["base"][j]["canon_sha256"] == figures["this"][j][
            "canon_sha256"] for j in figures["this"])
    return figures


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", type=int, default=1000, help="whole tasks of the first job")
    ap.add_argument("--chunks", type=int, default=1000, help="chunks of the per-item job")
    ap.add_argument("--repeat", type=int, default=30, help="calls timed per process")
    ap.add_argument("--rounds", type=int, default=3, help="processes per version")
    ap.add_argument("--base", type=Path, help="the code of the version to compare with")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    ap.add_argument("--code", type=Path, help=argparse.SUPPRESS)  # (a run's own process)
    a = ap.parse_args(argv)
    if min(a.tasks, a.chunks, a.repeat, a.rounds) < 1:
        ap.error("--tasks, --chunks, --repeat and --rounds must be at least 1")
    if a.code is not None:
        print(json.dumps(_measure(a.code, a.tasks, a.chunks, a.repeat)))
        return 0
    versions = {"this": ROOT} if a.base is None else {"base": a.base.resolve(), "this": ROOT}
    runs: dict[str, list[dict[str, Any]]] = {v: [] for v in versions}
    for r in range(a.rounds):
        order = list(versions) if r % 2 == 0 else list(reversed(versions))
        for v in order:
            runs[v].append(_run(versions[v], a))
    figures = _figures(runs)
    if a.json:
        print(json.dumps(figures, indent=1))
        return 0
    print(f"Command: `scripts/bench_record.py --tasks {a.tasks} --chunks {a.chunks} --repeat "
          f"{a.repeat} --rounds {a.rounds}{' --base DIR' if a.base else ''}`. "
          f"Machine: {machine()}.")
    print("| version | job | Node._finished ms | min | job_view ms | min |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for v in versions:
        for job, f in figures[v].items():
            what = f"{a.tasks:,} tasks" if job == "tasks" else f"1 task, {a.chunks:,} chunks"
            print(f"| {v} | {what} | {f['record_ms']:.2f} | {f['record_min_ms']:.2f} "
                  f"| {f['view_ms']:.2f} | {f['view_min_ms']:.2f} |")
    if "same" in figures:
        print(f"Records, list entries and facts byte-identical (canonical): {figures['same']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
