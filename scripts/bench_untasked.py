#!/usr/bin/env python3
"""What the task events a lanes job's fold holds (`MeshState._untasked`) cost each JOB_MEMBERS
of the job on the event loop (review r1 of session 46, F5).

    cd TREE && PYTHONPATH=$PWD .venv/bin/python scripts/bench_untasked.py [-n 500 1000 ...]

In this process: a lanes job (members H, R) and N PROGRESS events of R's lane ordered before
its JOB_SUBMITTED (held: a rival ordered earlier may admit them), then N JOB_MEMBERS in
which R adds itself again (the door admits them: `members_add`); the seconds the N
JOB_MEMBERS take to fold. Review r1's /tmp/s46r1/quad.py, standing alone.
"""

from __future__ import annotations

import argparse
import time

from peer.log import Event, EventType, MeshState, fold
from peer.log.lanes import lane

H, R = "a1" * 8, "b2" * 8
J = "j" + "0" * 11 + "1"
WF = {"name": "w", "tasks": [{"name": "t0", "call": "c", "params": {}, "depends": []}]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, nargs="+", default=[500, 1000, 2000, 4000],
                    help="held events and JOB_MEMBERS (each N)")
    args = ap.parse_args()
    sub = Event(H, 1, 10**6, EventType.JOB_SUBMITTED,
                {"job": J, "workflow": WF, "members": [H, R]})
    for n in args.n:
        s = fold([sub], MeshState(lanes_on=True, me=R))
        for i in range(n):
            s.apply(Event(lane(R, J), i + 1, 1 + i, EventType.PROGRESS,
                          {"job": J, "task": "t0", "chunk": 0, "attempt": 0, "progress": 0.5}))
        t = time.perf_counter()
        for i in range(n):
            s.apply(Event(R, i + 1, 2 * 10**6 + i, EventType.JOB_MEMBERS, {"job": J, "add": [R]}))
        dt = time.perf_counter() - t
        held = len(list(s._untasked.get(J, ())))
        print(f"N=M={n}: held {held}, {n} JOB_MEMBERS folded in {dt:.3f} s "
              f"({dt / n * 1e3:.3f} ms each)")


if __name__ == "__main__":
    main()
