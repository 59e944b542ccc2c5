#!/usr/bin/env python3
"""Event.from_json throughput (events/s) on typical payloads: this tree's peer.log.events
against the one of a git revision (default: the commit before typed events), in one run.

    .venv/bin/python scripts/bench_events.py [--base b82ece4] [--n 20000] [--repeat 7]

Both versions run interleaved on the same wire dicts (best of `--repeat` runs each), so the
ratio is meaningful even on a busy machine; absolute figures are not.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from peer.log import events as after  # noqa: E402

H = "bafkreig5xqkx2x4b3v7q3gq2ywkqxh6qzgqkq3b2v7gq3x4b2v7gq3x4b2"
SPLIT = {"split": ["c0ffee00c0ffee00", 12]}
BASE = {"job": "j3f2a9c1d0b7e", "task": "mfcc", "chunk": 3, "attempt": 0, **SPLIT}
ITEM = {"n": "a.npy", "c": H}

PAYLOADS: dict[str, tuple[int, dict[str, Any]]] = {  # name: (type, payload)
    "claim": (4, dict(BASE)),
    "progress": (6, {**BASE, "progress": 0.4375}),
    "chunk_done": (7, {**BASE, "log": H, "s": 1.2345,
                       "cache": {f"{i:064x}": ITEM for i in range(8)}}),
    "chunk_failed": (8, {**BASE, "error": "worker exited with signal 9", "kind": "crash"}),
    "cache_put": (10, {"cache": {f"{i:064x}": ITEM for i in range(4)}}),
    "task_done": (9, {"job": "j3f2a9c1d0b7e", "task": "mfcc", "output": H, "key": "k" * 64,
                      "cached": False}),
    "provide": (11, {"cids": [H]}),
    "task_split": (3, {"job": "j3f2a9c1d0b7e", "task": "mfcc", "input": H,
                       "chunks": [[[f"d/{c}/{i}.wav", H] for i in range(16)]
                                  for c in range(8)]}),
    # a loop turn of 5 short tasks as scripts/bench_receive.py sends it (CLAIM, CHUNK_DONE
    # with `done`), and a job of 20 tasks (its workflow is walked for depth and text)
    "turn": (17, {"parts": [p for i in range(5) for p in (
        [4, {**BASE, "task": f"t{i}", "chunk": 0}],
        [7, {**BASE, "task": f"t{i}", "chunk": 0, "output": H, "cache": {}, "log": H,
             "s": 0.002, "done": {"key": "k" * 64}}])]}),
    "job_submitted": (1, {"job": "j3f2a9c1d0b7e", "workflow": {
        "name": "pipeline", "splits": "implicit",
        "tasks": [{"name": f"t{i}", "call": "extract_mfcc", "depends": [] if i == 0 else
                   [f"t{i - 1}"], "params": {"fft_size": 32, "n_mels": 24, "fmin": 1.0,
                                             "fmax": 8000.0, "urls": ["https://x/y"]}}
                  for i in range(20)]}}),
}


def _module_at(rev: str) -> types.ModuleType:
    src = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:peer/log/events.py"],
                         check=True, capture_output=True, text=True).stdout
    mod = types.ModuleType("events_before")
    sys.modules[mod.__name__] = mod  # dataclasses look their module up
    exec(compile(src, f"{rev}:peer/log/events.py", "exec"), mod.__dict__)
    return mod


def _docs(typ: int, payload: dict[str, Any], n: int) -> list[dict[str, Any]]:
    return [{"origin": "c0ffee00c0ffee00", "seq": i + 1, "hlc": (1_700_000_000_000 << 16) + i,
             "type": typ, "payload": payload} for i in range(n)]


def _rate(from_json: Callable[[Any], Any], docs: list[dict[str, Any]]) -> float:
    t0 = time.process_time()
    for d in docs:
        from_json(d)
    return len(docs) / (time.process_time() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", default="b82ece4")
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--repeat", type=int, default=7)
    a = ap.parse_args()
    before = _module_at(a.base)
    impls = {"before": before.Event.from_json, "after": after.Event.from_json}
    print(f"{'payload':<13}{'before ev/s':>14}{'after ev/s':>14}{'after/before':>14}")
    mix: dict[str, float] = {"before": 0.0, "after": 0.0}
    warm = _docs(4, PAYLOADS["claim"][1], a.n)
    for fn in impls.values():  # warm up: the first timed row is otherwise slower
        _rate(fn, warm)
    for name, (typ, payload) in PAYLOADS.items():
        docs = _docs(typ, payload, a.n)
        best = {k: 0.0 for k in impls}
        for _ in range(a.repeat):
            for k, fn in impls.items():
                best[k] = max(best[k], _rate(fn, docs))
        for k in impls:
            mix[k] += 1 / best[k]
        print(f"{name:<13}{best['before']:>14,.0f}{best['after']:>14,.0f}"
              f"{best['after'] / best['before']:>14.2f}")
    n = len(PAYLOADS)
    print(f"{'mix (1 each)':<13}{n / mix['before']:>14,.0f}{n / mix['after']:>14,.0f}"
          f"{mix['before'] / mix['after']:>14.2f}")


if __name__ == "__main__":
    main()
