#!/usr/bin/env python3
"""What a non-member's record of a lanes job keeps of its ends' outputs costs (session 47
helper c, review r3 of session 46, R3-B): the facts' size, and the time a straggler
JOB_ENDED of the compacted job takes in `Compactor._late_end` when it changes nothing (a
replay's, most often) and when it makes the record again with its earlier outputs.

    cd TREE && PYTHONPATH=$PWD .venv/bin/python scripts/bench_record_end.py [-n 100,1000,10000]

In this process, an in-memory job index: per N, a job of N tasks whose record a non-member
made of the home's JOB_ENDED (`Compactor._record_of`, its facts as 9590a1d wrote them:
`end` with rank and homes only; and as now: with the merged outputs), and a member the home
added (vouched for: a self-added one's outputs are not merged, R3-D)'s JOB_ENDED naming each
task's output (all later: no change; all earlier: the
record made again). Medians of --repeat calls.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from scriptlib import machine

from peer.cids import sha256_cid
from peer.log import Event, EventType, MeshState
from peer.log.compact import CompactConfig, Compactor, PassStats, _end_of_facts
from peer.log.jobindex import JobIndex
from peer.log.lanes import lane

HOME, X = "0123456789abcdef0123", "c3" * 8
JOB = "j0000000000e7"
T = 1_700_000_000_000 << 16  # an hlc of today's length (18 digits), as the facts keep them


def _median_ms(fn: Callable[[], Any], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000


def _ended(origin: str, seq: int, hlc: int, n: int, at: int) -> Event:
    return Event(origin, seq, hlc, EventType.JOB_ENDED, {
        "job": JOB, "state": "done", "n_tasks": n, "end": hlc,
        "outputs": {f"t{i}": [f"k{i}", str(sha256_cid(f"{origin} {i}".encode(), "raw", 1)),
                              at + i, lane(origin, JOB), i + 1] for i in range(n)},
        "producers": {}, "failed": {}, "digest": "0" * 32})


def _compactor(n: int) -> tuple[Compactor, JobIndex, list[Event]]:
    """A non-member's compactor that compacted the job (the home's end held), and [a later
    X's end (changes nothing), an earlier one (changes every output)]."""
    state = MeshState(lanes_on=True, me="d4" * 8)
    index = JobIndex(sqlite3.connect(":memory:", isolation_level=None))
    c = Compactor(CompactConfig(recent_tasks=0), state, None, index,  # type: ignore[arg-type]
                  lambda job: None, lambda: [], lambda: T + (1 << 60), me=state.me or "")
    tasks = [{"name": f"t{i}", "call": "c", "params": {}, "depends": []} for i in range(n)]
    for ev in (Event(HOME, 1, T + (1 << 16), EventType.JOB_SUBMITTED,
                     {"job": JOB, "workflow": {"name": "w", "tasks": tasks}, "members": [HOME]}),
               Event(HOME, 2, T + (2 << 16), EventType.JOB_MEMBERS, {"job": JOB, "add": [X]}),
               _ended(HOME, 3, T + (1 << 40), n, T + (4 << 20))):
        state.apply(ev)
        c.note(ev)
    c._scan()  # (a pass's compaction, without its drop: no log here)
    assert c._compact(c._beyond_recent(), PassStats()) and index.full(JOB) is not None
    return c, index, [_ended(X, 1, T + (1 << 40) + 1, n, T + (5 << 20)),
                      _ended(X, 2, T + (1 << 40) + 2, n, T + (3 << 20))]


def _row(n: int, repeat: int) -> str:
    c, index, (later, earlier) = _compactor(n)
    held = index.full(JOB)
    assert held is not None and held.facts is not None
    facts = dict(held.facts)
    old = {**facts, "end": {k: facts["end"][k] for k in ("rank", "homes")}}
    size = {k: len(json.dumps(f, separators=(",", ":"))) for k, f in (("old", old),
                                                                      ("new", facts))}
    row = len(json.dumps([held.summary, held.record], separators=(",", ":")))
    # 9590a1d's look at a straggler end that ranks after: its facts, read and checked
    index0 = JobIndex(sqlite3.connect(":memory:", isolation_level=None))
    index0.put([replace(held, facts=old)], (), ())
    base_ms = _median_ms(lambda: _end_of_facts(index0.facts_of(JOB) or {}), repeat)
    same_ms = _median_ms(lambda: c._late_end(JOB, [later]), repeat)
    assert index.full(JOB) == held  # (nothing changed)
    t0 = time.perf_counter()
    c._late_end(JOB, [earlier])
    remade_ms = (time.perf_counter() - t0) * 1000
    assert index.full(JOB) != held
    return (f"N={n}: facts {size['old']:,} -> {size['new']:,} bytes (summary and record "
            f"{row:,}); a straggler end that changes nothing: {same_ms:.2f} ms (9590a1d's "
            f"facts read and checked: {base_ms:.2f} ms); one that makes the record "
            f"again: {remade_ms:.1f} ms (once)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", default="100,1000,10000", help="tasks of the job, comma-separated")
    ap.add_argument("--repeat", type=int, default=15)
    args = ap.parse_args()
    print(machine())
    for n in (int(v) for v in args.n.split(",")):
        print(_row(n, args.repeat))


if __name__ == "__main__":
    main()
