#!/usr/bin/env python3
"""Memory growth audit: which in-memory containers of a peer grow with the jobs it ran, even
after compaction?

A real `peer.node.Node` runs in this process (its own data dir, mDNS off, gossip on loopback,
no HTTP), with compact_recent_tasks 0 so that every finished job may be compacted at once.
Each round submits `--jobs` jobs of `--tasks` ECHO tasks (distinct texts: every task runs),
waits for them, forces compaction passes, waits for a scheduler tick (it sweeps what it
memoised of compacted jobs), then walks the objects reachable from the node, the globals of
the peer.* and tasks.* modules and the locals of the running asyncio tasks (through
attributes, container items, bound methods and closures; bounded in depth, objects and time)
and records the size of every dict, set, list and deque by its path
(`node.scheduler._ready_since`; `[*]` stands for any key or index: the sizes of the
containers found there add up), and of every functools cache. Paths whose size after the last round
exceeds their size after the middle one by more than `--margin` are listed with their growth
per job. Worker processes are not walked.

    .venv/bin/python scripts/growth_audit.py [--rounds 5] [--jobs 50] [--tasks 5]
        [--mix]      # one job in five a rerun (cached), one cancelled at once
        [--restart]  # restart the node (same data dir) before each walk
        [--delete finished|compacted]  # then delete each round's jobs (`banzai jobs rm`,
                                       # --keep-jobs-days) before or after their compaction
        [--uploads N]  # also N files uploaded per round (`banzai add`: stored, pinned, one
                       # PROVIDE each, an event of no job, as a replicated output's)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import sqlite3
import sys
import tempfile
import time
import types
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scriptlib import machine  # noqa: E402

from peer.config import PeerConfig  # noqa: E402
from peer.http.views import job_view  # noqa: E402
from peer.jobs.scheduler import IDLE_TICK_S  # noqa: E402
from peer.jobs.spec import parse  # noqa: E402
from peer.log import EventType  # noqa: E402
from peer.node import Node  # noqa: E402

FINAL = ("done", "failed", "cancelled")
CONTAINERS = (dict, set, frozenset, list, deque)
LEAVES = (str, bytes, bytearray, int, float, complex, bool, type(None), memoryview, range)
SKIP = (types.ModuleType, type, types.BuiltinFunctionType, types.CodeType, types.FrameType,
        types.CoroutineType, types.GeneratorType, types.AsyncGeneratorType,
        types.TracebackType, asyncio.AbstractEventLoop)


def _frames(coro: Any) -> Iterator[tuple[str, Any]]:
    """The frames of a coroutine and of those it awaits (bounded), with their names."""
    for _ in range(32):
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is None:
            return
        yield coro.__qualname__, frame
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)


def _special(obj: Any, path: str) -> Iterator[tuple[str, Any]]:
    """A bound method's object, a closure's cells, a task's coroutine frames' locals."""
    if isinstance(obj, types.MethodType):
        yield f"{path}.__self__", obj.__self__
    elif isinstance(obj, types.FunctionType):
        for name, cell in zip(obj.__code__.co_freevars, obj.__closure__ or (), strict=False):
            with contextlib.suppress(ValueError):  # an empty cell
                yield f"{path}<{obj.__qualname__}>.{name}", cell.cell_contents
    else:
        for name, frame in _frames(obj.get_coro()):
            for k, v in list(frame.f_locals.items()):
                if k != "self":
                    yield f"{path}<{name}>.{k}", v


def _attributes(obj: Any, path: str) -> Iterator[tuple[str, Any]]:
    """An object's attributes (its __dict__ and slots) by name; a C object's containers."""
    d = getattr(obj, "__dict__", None)
    if isinstance(d, dict):
        for k, v in list(d.items()):
            yield f"{path}.{k}", v
    slots = [n for cls in type(obj).__mro__ for n in getattr(cls, "__slots__", ())
             if n not in ("__dict__", "__weakref__")]
    for name in slots:
        with contextlib.suppress(AttributeError):
            yield f"{path}.{name}", getattr(obj, name)
    if d is None and not slots and not isinstance(obj, (*CONTAINERS, tuple)):
        # a C object (a TimerHandle, a socket, ...): its referents, unnamed
        for v in gc.get_referents(obj):
            if isinstance(v, CONTAINERS):
                yield f"{path}.<ref>", v


def _children(obj: Any, path: str) -> Iterator[tuple[str, Any]]:
    """(path, child) for what `obj` holds: attributes by name, container items as `[*]`."""
    if isinstance(obj, (types.MethodType, types.FunctionType, asyncio.Task)):
        yield from _special(obj, path)
        return
    if isinstance(obj, dict):
        for k, v in list(obj.items()):
            yield f"{path}[*]", k
            yield f"{path}[*]", v
    elif isinstance(obj, (list, tuple, set, frozenset, deque)):
        for v in list(obj):
            yield f"{path}[*]", v
    yield from _attributes(obj, path)


def walk(roots: list[tuple[str, Any]], max_depth: int = 12, max_objects: int = 400_000,
         max_s: float = 60.0) -> tuple[dict[str, int], bool]:
    """Breadth first from `roots`: path -> total len of the containers first reached there
    (and "(objects walked)"), and whether a bound (objects, time) cut the walk short."""
    sizes: dict[str, int] = {}
    seen: set[int] = set()
    queue: deque[tuple[str, Any, int]] = deque((p, o, 0) for p, o in roots)
    deadline = time.monotonic() + max_s
    n = 0
    while queue:
        path, obj, depth = queue.popleft()
        if id(obj) in seen or isinstance(obj, (*LEAVES, *SKIP)):
            continue
        seen.add(id(obj))
        n += 1
        if n > max_objects or (n % 4096 == 0 and time.monotonic() > deadline):
            sizes["(objects walked)"] = n
            return sizes, True
        if isinstance(obj, CONTAINERS):
            sizes[path] = sizes.get(path, 0) + len(obj)
        if depth >= max_depth:
            continue
        for child_path, child in _children(obj, path):
            if not isinstance(child, LEAVES) and id(child) not in seen:
                queue.append((child_path, child, depth + 1))
    sizes["(objects walked)"] = n
    return sizes, False


def module_roots() -> list[tuple[str, Any]]:
    """The containers among the globals of the loaded peer.* and tasks.* modules."""
    out = []
    for name, mod in sorted(sys.modules.items()):
        if not (name == "peer" or name.startswith(("peer.", "tasks."))):
            continue
        for k, v in sorted(vars(mod).items()):
            if isinstance(v, CONTAINERS) and not k.startswith("__"):
                out.append((f"{name}.{k}", v))
    return out


def lru_sizes() -> dict[str, int]:
    """The current size of every functools cache among the peer.* and tasks.* globals, by
    the module that defines it, with its bound (`max None`: unbounded)."""
    out = {}
    for name, mod in sorted(sys.modules.items()):
        if name == "peer" or name.startswith(("peer.", "tasks.")):
            for v in vars(mod).values():
                if callable(getattr(v, "cache_info", None)):
                    info = v.cache_info()
                    out[f"{v.__module__}.{v.__qualname__}() max {info.maxsize}"] = info.currsize
    return out


async def wait_jobs(node: Node, jobs: list[str], timeout_s: float) -> dict[str, int]:
    """Wait until every job is final (compacted jobs are); their final states counted."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        states = {}
        for j in jobs:
            s = ("compacted" if j in node.state.compacted
                 else job_view(node.state, j, node.cfg.max_attempts)["state"])
            states[s] = states.get(s, 0) + 1
        if all(s in (*FINAL, "compacted") for s in states):
            return states
        await asyncio.sleep(0.05)
    raise TimeoutError(f"jobs not final within {timeout_s} s: {states}")


def log_rows(node: Node) -> int:
    """The events in the node's SQLite log (those that left memory among them)."""
    return int(node.log.db.execute("SELECT count(*) FROM events").fetchone()[0])


def index_rows(node: Node, table: str) -> int:
    """The rows of one of the job index's tables (0 if this release has no such table)."""
    try:
        return int(node.log.db.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
    except sqlite3.OperationalError:
        return 0


def forget(node: Node, days: float) -> None:
    """One compaction pass with the compactor's clock (a fake) `days` ahead of the node's:
    the round's tombstones are that old (peer.log.tombs.TOMB_GRACE_S, a protocol constant,
    is not lowered); then the clock is the node's again."""
    clock = node.compactor.now_hlc
    step = int(days * 86_400_000) << 16
    node.compactor.now_hlc = lambda: clock() + step
    try:
        node.catchup.compact()
    finally:
        node.compactor.now_hlc = clock


def upload(node: Node, text: str) -> str:
    cid = node.store.add_bytes(text.encode())
    node.store.pin(cid)
    return cid


def delete(node: Node, jobs: list[str], states: dict[str, int]) -> None:
    """Delete the records of `jobs` (`banzai jobs rm`, or retention's --keep-jobs-days)."""
    for j in jobs:
        node.janitor.delete_job(j, "growth audit")
    states["deleted"] = len(jobs)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    rounds: list[dict[str, int]] = []
    cut = False
    with tempfile.TemporaryDirectory(prefix="banzai-growth-") as tmp:
        cfg = PeerConfig(data_dir=Path(tmp) / "peer", slots=args.slots, mdns=False,
                         warm_workers=False, gossip="127.0.0.1:0",
                         compact_recent_tasks=args.recent_tasks,
                         compact_horizon_days=args.horizon_days)
        node = Node(cfg)
        await node.start()
        try:
            serial = 0
            for r in range(args.rounds):
                t0 = time.monotonic()
                jobs = []
                for _ in range(args.jobs):
                    serial += 1
                    kind = serial % 5 if args.mix else 0  # 1: a rerun (cached), 2: cancelled
                    text = "rerun" if kind == 1 else f"round {r} job {serial}"
                    pipe = [{"call": "ECHO", "args": [f"{text} task {i}"]}
                            for i in range(args.tasks)]
                    wf = parse(json.dumps(pipe), node.catalog)
                    job = f"g{serial:06d}"
                    node.emit(EventType.JOB_SUBMITTED, {"job": job, "workflow": wf.to_json()})
                    if kind == 2:
                        node.emit(EventType.JOB_CANCELLED, {"job": job, "reason": "audit"})
                    jobs.append(job)
                states = await wait_jobs(node, jobs, args.timeout_s)
                for i in range(args.uploads):  # as the upload endpoint does (peer.http.app)
                    cid = await asyncio.to_thread(upload, node, f"round {r} upload {i}")
                    node.emit(EventType.PROVIDE, {"cids": [cid]})
                if args.delete == "finished":  # deleted once finished, before compaction
                    delete(node, jobs, states)
                passes = 0
                while passes < 5:  # until a pass compacts nothing more
                    await asyncio.sleep(0.2)  # let the last turns' listeners run
                    passes += 1
                    if not node.catchup.compact().compacted:
                        break
                if args.delete == "compacted":  # deleted once compacted (as retention does)
                    delete(node, jobs, states)
                    await asyncio.sleep(0.2)
                    node.catchup.compact()
                # the scheduler drops what it memoised of compacted jobs at its next tick
                await asyncio.sleep(IDLE_TICK_S + 0.5)
                if args.tomb_clock_days:  # (once the scheduler swept the deleted jobs)
                    forget(node, args.tomb_clock_days)
                if args.restart:  # what a restart replays from the log and the index
                    await node.close()
                    node = Node(cfg)
                    await node.start()
                gc.collect()
                tasks = [(f"task<{t.get_name()}>", t) for t in asyncio.all_tasks()
                         if t is not asyncio.current_task()]
                sizes, c = walk([("node", node), *module_roots(), *tasks],
                                max_objects=args.max_objects)
                sizes.update(lru_sizes())
                cut = cut or c
                rounds.append(sizes)
                print(f"round {r + 1}: {args.jobs} jobs {states} in "
                      f"{time.monotonic() - t0:.1f} s, {passes} compaction passes, "
                      f"{sizes['(objects walked)']} objects, {len(sizes)} container paths, "
                      f"compacted {len(node.state.compacted)} in memory "
                      f"({len(node.index)} in the job index), "
                      f"deleted {len(node.state.deleted)} in memory, "
                      f"{log_rows(node)} events in the log, "
                      f"{index_rows(node, 'job_deleted')} tombstones in the job index"
                      f"{' (walk cut short)' if c else ''}", flush=True)
        finally:
            await node.close()
    return {"rounds": rounds, "cut": cut}


def growing(rounds: list[dict[str, int]], jobs_per_round: int,
            margin: int) -> list[tuple[str, list[int], float]]:
    """Paths whose size after the last round exceeds the size after the middle one by more
    than `margin` (and never shrank to the start): (path, sizes by round, growth per job)."""
    out = []
    last = len(rounds) - 1
    mid = last // 2
    for path in sorted(set().union(*rounds)):
        sz = [r.get(path, 0) for r in rounds]
        if sz[last] > sz[mid] + margin and sz[last] > sz[0]:
            per_job = (sz[last] - sz[0]) / (jobs_per_round * last)
            out.append((path, sz, per_job))
    return sorted(out, key=lambda x: -x[2])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--jobs", type=int, default=50, help="jobs per round")
    ap.add_argument("--tasks", type=int, default=5, help="ECHO tasks per job")
    ap.add_argument("--slots", type=int, default=2)
    ap.add_argument("--recent-tasks", type=int, default=0, help="compact_recent_tasks")
    ap.add_argument("--horizon-days", type=float, default=1e-6, help="compact_horizon_days")
    ap.add_argument("--delete", choices=("none", "finished", "compacted"), default="none",
                    help="delete each round's jobs once finished (before compaction) or once "
                    "compacted, as `banzai jobs rm` or --keep-jobs-days do")
    ap.add_argument("--uploads", type=int, default=0, help="files uploaded per round")
    ap.add_argument("--mix", action="store_true",
                    help="one job in five a rerun of the same tasks (cached), one cancelled")
    ap.add_argument("--tomb-clock-days", type=float, default=0.0,
                    help="at the end of each round, one compaction pass with the compactor's "
                    "clock this many days ahead (a fake clock for the tombstone bound: 31 "
                    "puts the round's tombstones past their 30-day grace)")
    ap.add_argument("--restart", action="store_true",
                    help="restart the node (same data dir) before each walk")
    ap.add_argument("--margin", type=int, default=10,
                    help="growth (entries) between the middle and last round that counts")
    ap.add_argument("--max-objects", type=int, default=400_000, help="per walk")
    ap.add_argument("--timeout-s", type=float, default=300.0, help="per round")
    args = ap.parse_args()
    if args.rounds < 3:
        ap.error("--rounds must be at least 3")
    print(machine())
    res = asyncio.run(run(args))
    grow = growing(res["rounds"], args.jobs, args.margin)
    print(f"\n{len(grow)} growing paths (size after each round; entries per job):")
    for path, sz, per_job in grow:
        print(f"  {path:70s} {' '.join(map(str, sz)):>32s}  {per_job:6.2f}/job")


if __name__ == "__main__":
    main()
