"""What a member's split of 300,000 empty chunks and 6,000 claims of them costs a peer's
scheduler and fold, in process (tests/unit/test_big_splits.py's job; the scheduler of
peer.jobs.sim, a fake clock, CPU time by `time.process_time`):

- idle: the member is silent and no peer here runs its call; the CPU of 120 ticks of
  0.25 s (30 s of a peer's idle loop), as a share of those 30 s;
- eval: a peer that runs the call (2 slots, both busy with chunks of it): one evaluation
  of the task (the look an event about it, or a lapsed lease, makes);
- delete: a JOB_DELETED of a small finished job while the split's claims are in memory;
- the looks at a per-item task's split of 300,000 chunks, the first 150,000 done and the
  next 6,000 claimed by the member (`_ahead`'s): may a group running here end the last one
  (`_may_end_last`), the splitter's prefetch of a reduce's input (`_prefetch_reduce`) and its
  PARTIAL (`_partial`), each when nothing changed since the last look, then after one more
  chunk was done (`*_changed_ms`); a heartbeat of a live peer with 3 claims (`heard`) and its
  leaving (`gone`) while the member's 6,000 are watched;
- in that split, whether the member (a live holder of the input) ran its last chunk short
  (`_short_at_holders`, read once per round by a claim), when nothing changed and after one
  more chunk was done;
- a per-item task's split of FINISHED chunks, all done: a look at its assembly while its
  results come (`_gathered`: the chunks' outputs, the item assembly), when nothing changed
  and after a chunk was reopened and done again.

    .venv/bin/python scripts/bench_big_split.py --ab /tmp/old_tree   # both, side by side
    PYTHONPATH=TREE .venv/bin/python scripts/bench_big_split.py --json  # one tree
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

N, CLAIMS = 300_000, 6_000


def _story(call: str) -> tuple[list[Any], list[Any]]:
    from peer.log import Event, EventType

    events: list[Any] = []
    seqs: dict[str, int] = {}

    def add(typ: Any, origin: str = "fz", **payload: Any) -> Any:
        seq = seqs[origin] = seqs.get(origin, 0) + 1
        ev = Event(origin, seq, (1_700_000_000_000 + len(events)) << 16, typ, payload)
        events.append(ev)
        return ev

    add(EventType.MEMBER, name="fz", http="", calls=[call], slots=1, cores=1, mem_mb=1,
        gpu=False)
    for job in ("j", "small"):
        add(EventType.JOB_SUBMITTED, job=job, workflow={"name": "w", "tasks": [
            {"name": "t", "call": call, "params": {}, "depends": []}]})
    split = add(EventType.TASK_SPLIT, job="j", task="t", input=None, chunks=[[]] * N)
    small = add(EventType.TASK_SPLIT, job="small", task="t", input=None, chunks=[[]] * 3)
    for c in range(3):
        add(EventType.CLAIM, job="small", task="t", split=list(small.id), chunk=c, attempt=0)
    for c in range(CLAIMS):
        add(EventType.CLAIM, job="j", task="t", split=list(split.id), chunk=c, attempt=0)
    return events, add


DONE = 150_000


def _done_story() -> tuple[Any, Any, Any, Any]:
    """A peer holding a member's per-item task (T_UPPER) split into N chunks, the first DONE
    done and the next CLAIMS claimed by the member, 3 more claimed by live peer p1."""
    from peer.ipfs.store import StoreConfig
    from peer.jobs.ports import SchedulerConfig
    from peer.jobs.sim import JobMesh
    from peer.log import Event, EventType
    from tasks import registry

    cfg = SchedulerConfig(store=StoreConfig("/nonexistent"), tick_s=0.25, lease_s=10.0)
    mesh = JobMesh(1, registry.load(("tests.fixture_tasks",)), cfg, slots=2)
    p = mesh["p0"]
    inp = p.store.make_dir({})
    seqs: dict[str, int] = {}
    order = [0]

    def add(typ: Any, origin: str = "fz", **payload: Any) -> Any:
        seq = seqs[origin] = seqs.get(origin, 0) + 1
        order[0] += 1
        ev = Event(origin, seq, (1_700_000_000_000 + order[0]) << 16, typ, payload)
        p.state.apply(ev)
        p.sched.poke(ev)
        return ev

    add(EventType.MEMBER, name="fz", http="", calls=["T_UPPER"], slots=1, cores=1, mem_mb=1,
        gpu=False)
    add(EventType.JOB_SUBMITTED, job="j", workflow={"name": "w", "tasks": [
        {"name": "t", "call": "T_UPPER", "params": {}, "depends": []}]})
    split = add(EventType.TASK_SPLIT, job="j", task="t", input=inp, chunks=[[]] * N)
    base = {"job": "j", "task": "t", "split": list(split.id), "attempt": 0}
    for c in range(DONE):
        add(EventType.CHUNK_DONE, **base, chunk=c, output=None, log=None, s=1.0)
    for c in range(DONE, DONE + CLAIMS):
        add(EventType.CLAIM, **base, chunk=c)
    for c in range(N - 3, N):
        add(EventType.CLAIM, "p1", **base, chunk=c)
    return mesh, p, split, lambda c: add(EventType.CHUNK_DONE, **base, chunk=c, output=None,
                                         log=None, s=1.0)


def _looks(out: dict[str, float]) -> None:
    """The `_ahead` looks and the heartbeats of the module docstring, into `out` (ms)."""
    from peer.jobs.claims import AttemptKey

    mesh, p, split, done = _done_story()
    s = p.sched
    chunks = [[]] * N
    spec, tdef = s.workflow("j").task("t"), s.catalog["T_UPPER"]
    s._runs.active[AttemptKey("j", "t", N - 1, 0)] = None  # (a group of it runs here)
    looks = {
        "may_end_last": lambda: s._may_end_last("j", "t", split, N),
        "prefetch_reduce": lambda: s._prefetch_reduce("j", "t", split, chunks),
        "partial": lambda: s._partial("j", "t", tdef, spec, split, chunks),
    }
    for look in looks.values():
        look()  # (what it remembers of the split: as of now)
    for name, look in looks.items():
        times = []
        for _ in range(5):
            t0 = time.process_time()
            look()
            times.append(time.process_time() - t0)
        out[f"{name}_ms"] = 1000 * statistics.median(times)
    for i, (name, look) in enumerate(looks.items()):
        done(DONE + i)  # one more chunk done: the looks that follow it
        t0 = time.process_time()
        look()
        out[f"{name}_changed_ms"] = 1000 * (time.process_time() - t0)
    s._peers = lambda: {"fz": {}, "p1": {}}  # (the member, live, holds the input)
    short = {"short_at_holders": lambda: s._short_at_holders("j", "t", split, {"fz"})}
    _timed(out, short, lambda: done(DONE + 3))
    del s._peers
    mesh.clock.advance(1.0)
    times = []
    for _ in range(5):
        t0 = time.process_time()
        s.heard("p1", None)
        times.append(time.process_time() - t0)
    out["heard_ms"] = 1000 * statistics.median(times)
    out["heard_renewed"] = sum(1 for v in s._claim_seen.values() if v == mesh.clock())
    t0 = time.process_time()
    s.gone("p1")
    out["gone_ms"] = 1000 * (time.process_time() - t0)


def _timed(out: dict[str, float], looks: dict[str, Any], change: Any) -> None:
    """Each look once (what it remembers: as of now), then its median of 5 into
    `out[name_ms]`, then `change()` and the look once more (`name_changed_ms`)."""
    for look in looks.values():
        look()
    for name, look in looks.items():
        times = []
        for _ in range(5):
            t0 = time.process_time()
            look()
            times.append(time.process_time() - t0)
        out[f"{name}_ms"] = 1000 * statistics.median(times)
        change()
        t0 = time.process_time()
        look()
        out[f"{name}_changed_ms"] = 1000 * (time.process_time() - t0)


FINISHED = 100_000


def _finished(out: dict[str, float]) -> None:
    """The look at a finished split's assembly of the module docstring, into `out` (ms)."""
    from peer.ipfs.store import StoreConfig
    from peer.jobs.ports import SchedulerConfig
    from peer.jobs.sim import JobMesh
    from peer.log import Event, EventType
    from tasks import registry

    cfg = SchedulerConfig(store=StoreConfig("/nonexistent"), tick_s=0.25, lease_s=10.0)
    mesh = JobMesh(1, registry.load(("tests.fixture_tasks",)), cfg, slots=2)
    p = mesh["p0"]
    inp = p.store.make_dir({})
    seqs: dict[str, int] = {}

    def add(typ: Any, origin: str = "fz", **payload: Any) -> Any:
        seq = seqs[origin] = seqs.get(origin, 0) + 1
        ev = Event(origin, seq, (1_700_000_000_000 + sum(seqs.values())) << 16, typ, payload)
        p.state.apply(ev)
        return ev

    add(EventType.JOB_SUBMITTED, job="j", workflow={"name": "w", "tasks": [
        {"name": "t", "call": "T_UPPER", "params": {}, "depends": []}]})
    split = add(EventType.TASK_SPLIT, job="j", task="t", input=inp, chunks=[[]] * FINISHED)
    base = {"job": "j", "task": "t", "split": list(split.id)}
    for c in range(FINISHED):
        add(EventType.CHUNK_DONE, **base, chunk=c, attempt=0, output=None, log=None, s=1.0)
    s, chunks = p.sched, [[]] * FINISHED
    spec, tdef = s.workflow("j").task("t"), s.catalog["T_UPPER"]
    attempt = [0]

    def redo() -> None:
        add(EventType.CHUNK_FAILED, **base, chunk=7, attempt=attempt[0], kind="crash",
            error="x", reopen=True)
        attempt[0] += 1
        add(EventType.CHUNK_DONE, **base, chunk=7, attempt=attempt[0], output=None, log=None,
            s=1.0)

    _timed(out, {"gathered": lambda: s._gathered("j", "t", tdef, spec, split, chunks, "fz",
                                                 False)}, redo)


def _mesh(call: str) -> tuple[Any, Any, Any]:
    from peer.ipfs.store import StoreConfig
    from peer.jobs.ports import SchedulerConfig
    from peer.jobs.sim import JobMesh
    from tasks import registry

    cfg = SchedulerConfig(store=StoreConfig("/nonexistent"), tick_s=0.25, lease_s=10.0)
    mesh = JobMesh(1, registry.load(("tests.fixture_tasks",)), cfg, slots=2)
    p = mesh["p0"]
    events, add = _story(call)
    for ev in events:
        p.state.apply(ev)
        p.sched.poke(ev)
    p.sched.step()
    return mesh, p, add


async def measure() -> dict[str, float]:
    from peer.log import EventType

    out: dict[str, float] = {}
    mesh, p, add = _mesh("FZ_NOPE")  # idle: a call nobody here runs
    mesh.clock.advance(20.0)  # the claims' leases lapsed
    p.sched.step()
    t0 = time.process_time()
    for _ in range(120):
        mesh.clock.advance(0.25)
        p.sched.step()
    out["idle_cpu_pct"] = 100 * (time.process_time() - t0) / 30.0
    t0 = time.process_time()
    p.state.apply(add(EventType.JOB_DELETED, job="small", reason="bench"))
    out["delete_ms"] = 1000 * (time.process_time() - t0)

    mesh, p, _ = _mesh("T_WRITE")  # a peer that runs the call: its 2 slots busy with it
    times = []
    for _ in range(5):
        t0 = time.process_time()
        p.sched._evaluate("j", "t")
        times.append(time.process_time() - t0)
    out["eval_ms"] = 1000 * statistics.median(times)
    out["claims_made"] = sum(1 for e in p.emitted if e.type == EventType.CLAIM)
    await mesh.close()
    _looks(out)
    _finished(out)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ab", help="a tree (a `git archive` of the base) to measure first")
    ap.add_argument("--json", action="store_true", help="measure this tree, print JSON")
    a = ap.parse_args()
    if a.json or not a.ab:
        print(json.dumps(asyncio.run(measure())))
        return
    here = str(Path(__file__).resolve().parent.parent)
    rows = {}
    for name, tree in (("base", a.ab), ("this tree", here)):
        env = {**os.environ, "PYTHONPATH": tree}
        got = subprocess.run([sys.executable,
                              str(Path(__file__).resolve()), "--json"], cwd=tree, env=env,
                             capture_output=True, text=True, check=True)
        rows[name] = json.loads(got.stdout.strip().splitlines()[-1])
    print("| | " + " | ".join(rows) + " |\n| --- | --- | --- |")
    for k in rows["base"]:
        print(f"| {k} | " + " | ".join(f"{r[k]:.3f}" for r in rows.values()) + " |")


if __name__ == "__main__":
    main()
