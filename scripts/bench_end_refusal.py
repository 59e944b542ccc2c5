#!/usr/bin/env python3
"""What `fold.end_refusal` costs on the event loop for a JOB_ENDED of many outputs, all
admitted (the fold of a listing, `MeshState.fold_listing`, and of an inline JOB_ENDED).

    cd TREE && PYTHONPATH=$PWD .venv/bin/python scripts/bench_end_refusal.py [-n 100000]

In this process: one member's lanes job of N tasks, a JOB_ENDED body listing each task's
output made in the member's lane; the best of --repeat calls, in seconds.
"""

from __future__ import annotations

import argparse
import time

from peer.cids import sha256_cid
from peer.log import Event, EventType, MeshState
from peer.log.events import JobEnded
from peer.log.fold import end_refusal
from peer.log.lanes import lane

MEMBER = "0123456789abcdef0123"
JOB = "j0000000000d1"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=100_000, help="tasks (outputs) of the job")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    n = args.n
    s = MeshState()
    s.lanes_on = True
    tasks = [{"name": f"t{i}", "call": "c", "params": {}, "depends": []} for i in range(n)]
    s.apply(Event(MEMBER, 1, 5 << 16, EventType.JOB_SUBMITTED,
                  {"job": JOB, "workflow": {"name": "w", "tasks": tasks}, "members": [MEMBER]}))
    cid = str(sha256_cid(b"x", "raw", 1))
    outputs = {f"t{i}": [f"k{i}", cid, (5 << 16) + i + 1, lane(MEMBER, JOB), i + 1]
               for i in range(n)}
    payload = {"job": JOB, "state": "done", "n_tasks": n, "end": 9 << 30, "outputs": outputs,
               "producers": {cid: [MEMBER]}, "failed": {}, "digest": "0" * 32}
    ev = Event(MEMBER, 2, 9 << 30, EventType.JOB_ENDED, payload)
    body = JobEnded.from_payload(payload)
    assert end_refusal(s, ev, body) is None
    best = float("inf")
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        end_refusal(s, ev, body)
        best = min(best, time.perf_counter() - t0)
    print(f"end_refusal, {n} outputs: {best:.4f} s (best of {args.repeat})")


if __name__ == "__main__":
    main()
