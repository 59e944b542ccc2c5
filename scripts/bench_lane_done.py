"""The fold's cost of a lanes job's lane TASK_DONEs and its JOB_ENDED (session 48, R3-D's
rest: a task's TASK_DONEs rank a vouched lane first, an unvouched lane's output waits aside).
In process, pure `MeshState.apply` (no door, log nor listeners), CPU time, best of `--reps`:

    PYTHONPATH=$PWD .venv/bin/python scripts/bench_lane_done.py --tasks 5000 --reps 7

Run it with PYTHONPATH on a `git archive` copy of another commit for an A/B. Four
batches a rep, each folded into a fresh state: `vouched` (every TASK_DONE in a lane of a
member the JOB_SUBMITTED names: the honest case), `self_added` (every one in the lane of a
peer that added itself: set aside), `end` (a non-member folding the home's JOB_ENDED
naming every task's output) and `plain` (a job without members, its TASK_DONEs in a mesh
stream, lanes off: every job before partial replication). Session 49 added two:
`chunk_vouched` and `chunk_self` (a CHUNK_DONE per task implying its TASK_DONE, in a
named member's lane, or in a self-added one's: the chunk winner's ranking by vouched lane)
and `chunk_rival` (each task's chunk done first by a self-added member, then by a named
one, whose CHUNK_DONE then displaces it: per task, two CHUNK_DONEs).
"""

from __future__ import annotations

import argparse
import time

from peer.log import Event, EventType, MeshState
from peer.log.lanes import lane

H, R, X, N = "a1" * 8, "b2" * 8, "c3" * 8, "d4" * 8
JOB = "j" + "0" * 11 + "7"
CID = "bafkreiaheqdfvsfwin2qysg2nd3n4upuu7oyiwtnuvai2oi3lesbeuh42q"


def events(tasks: int) -> dict[str, list[Event]]:
    wf = {"name": "w", "tasks": [{"name": f"t{i}", "call": "c", "params": {}, "depends": []}
                                 for i in range(tasks)]}
    sub = Event(H, 1, 1000, EventType.JOB_SUBMITTED, {"job": JOB, "workflow": wf,
                                                     "members": [H, R]})
    add = Event(X, 1, 1001, EventType.JOB_MEMBERS, {"job": JOB, "add": [X]})

    def dones(peer: str) -> list[Event]:
        return [Event(lane(peer, JOB), i + 1, 2000 + i, EventType.TASK_DONE,
                      {"job": JOB, "task": f"t{i}", "output": CID, "cached": False,
                       "key": f"{peer}{i:060x}"}) for i in range(tasks)]
    vouched = dones(R)
    end = Event(H, 2, 10 ** 9, EventType.JOB_ENDED, {
        "job": JOB, "state": "done", "n_tasks": tasks, "end": 10 ** 9,
        "outputs": {f"t{i}": [d.payload["key"], CID, d.hlc, d.origin, d.seq]
                    for i, d in enumerate(vouched)},
        "producers": {CID: [R]}, "failed": {}, "digest": "0" * 32})
    plain = Event(H, 1, 1000, EventType.JOB_SUBMITTED, {"job": JOB, "workflow": wf})
    mesh = [Event(R, i + 1, 2000 + i, EventType.TASK_DONE,
                  {"job": JOB, "task": f"t{i}", "output": CID, "cached": False,
                   "key": f"{R}{i:060x}"}) for i in range(tasks)]
    def chunks(peer: str) -> list[Event]:
        return [Event(lane(peer, JOB), i + 1, 2000 + i, EventType.CHUNK_DONE,
                      {"job": JOB, "task": f"t{i}", "chunk": 0, "attempt": 0,
                       "split": [H, 1], "output": CID, "done": {"key": f"{peer}{i:060x}"}})
                for i in range(tasks)]
    return {"vouched": [sub, add, *vouched], "self_added": [sub, add, *dones(X)],
            "end": [sub, add, end], "plain": [plain, *mesh],
            "chunk_vouched": [sub, add, *chunks(R)], "chunk_self": [sub, add, *chunks(X)],
            "chunk_rival": [sub, add, *(e for pair in zip(chunks(X), chunks(R), strict=True)
                                        for e in pair)]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", type=int, default=5000)
    ap.add_argument("--reps", type=int, default=7)
    a = ap.parse_args()
    batches = events(a.tasks)
    best = dict.fromkeys(batches, float("inf"))
    for _ in range(a.reps):
        for name, evs in batches.items():
            s = MeshState(lanes_on=name != "plain", me=N if name == "end" else H)
            t0 = time.process_time()
            for ev in evs:
                s.apply(ev)
            best[name] = min(best[name], time.process_time() - t0)
    for name, t in best.items():
        n = a.tasks
        print(f"{name:>10}: {t * 1e3:8.1f} ms for {n} tasks, {t / n * 1e6:6.2f} us a task")


if __name__ == "__main__":
    main()
