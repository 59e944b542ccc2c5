"""Timestamps along one job's path through a peer, for scripts/trace_latency.py.

Run a peer as `python -m latency_hooks ARGS` (scripts/ on PYTHONPATH) with BANZAI_TRACE_DIR
set: the peer's methods on the path of a job (the HTTP submit, emit, flush, the WAL fsync,
frames in, merges, the scheduler's rounds, claims and stagger waits, the executor, the
worker's run and its block writes, the SSE stream) are wrapped to append one line per
passage to DIR/trace.PID: `perf_counter_ns pid tag job detail`. perf_counter is
CLOCK_MONOTONIC, one clock for every process of the machine. Nothing here changes
behaviour; without BANZAI_TRACE_DIR importing this module does nothing.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any

_DIR = os.environ.get("BANZAI_TRACE_DIR", "")
_out: tuple[int, Any] | None = None  # (pid, file) of this process


def mark(tag: str, job: str = "-", detail: str = "-", t: int | None = None) -> None:
    global _out
    pid = os.getpid()
    if _out is None or _out[0] != pid:  # first line of this process (a fork starts anew)
        _out = (pid, open(os.path.join(_DIR, f"trace.{pid}"), "a", buffering=1))  # noqa: SIM115
    _out[1].write(f"{t or time.perf_counter_ns()} {pid} {tag} {job or '-'} {detail or '-'}\n")


def _jobs(events: Any) -> list[tuple[str, str]]:
    """(type, job) of each event as the fold sees it: the parts of TURN events included, and
    the TASK_DONE a CHUNK_DONE implies (`peer.log.facts`; a release without it: the parts)."""
    try:
        from peer.log import facts
    except ImportError:  # an older release (an A/B's base)
        def facts(e: Any) -> Any:
            return getattr(e, "parts", None) or (e,)
    return [(p.type.name, str(p.payload.get("job", "-"))) for e in events for p in facts(e)]


def _wrap(owner: Any, name: str, make: Callable[[Callable[..., Any]], Callable[..., Any]]) -> None:
    fn = getattr(owner, name, None)
    if fn is None or getattr(fn, "_traced", False):  # another version of the code, or
        return  # wrapped already (a worker that imports this module a second time)
    new = make(fn)
    new._traced = True  # type: ignore[attr-defined]
    functools.update_wrapper(new, fn)
    setattr(owner, name, new)


def emit(fn: Callable[..., Any]) -> Callable[..., Any]:
    def w(self: Any, typ: Any, payload: dict[str, Any]) -> Any:
        mark("emit", str(payload.get("job", "-")), f"{typ.name}:{self.peer_id[:6]}")
        return fn(self, typ, payload)
    return w


def flush(fn: Callable[..., Any]) -> Callable[..., Any]:
    def w(self: Any) -> Any:
        pending = list(self._unflushed)
        tb = getattr(self, "turn", None)  # a version with TURN events
        turn = tb.close() if tb is not None and tb.open else None  # as flush itself would
        if turn is not None:
            self._unflushed.append(turn)
            pending.append(turn)
        if not pending:
            return fn(self)
        kinds = _jobs(pending)
        jobs = sorted({j for _, j in kinds if j != "-"})
        detail = ",".join(sorted({k for k, _ in kinds}))
        for j in jobs or ["-"]:
            mark("flush_in", j, detail)
        r = fn(self)
        for j in jobs or ["-"]:
            mark("flush_out", j, detail)
        return r
    return w


def durable(fn: Callable[..., Any]) -> Callable[..., Any]:
    async def w(self: Any, ev: Any) -> Any:
        job = str(ev.payload.get("job", "-"))
        mark("durable_in", job, ev.type.name)
        r = await fn(self, ev)
        mark("durable_out", job, ev.type.name)
        return r
    return w


def submitted(fn: Callable[..., Any]) -> Callable[..., Any]:
    async def w(self: Any, ev: Any) -> Any:
        r = await fn(self, ev)
        mark("acked", str(ev.payload.get("job", "-")), str(r))
        return r
    return w


def merge(fn: Callable[..., Any]) -> Callable[..., Any]:
    def w(self: Any, events: Any) -> Any:
        t = time.perf_counter_ns()
        new = fn(self, events)
        kinds = _jobs(new)
        for j in sorted({j for _, j in kinds if j != "-"}):
            detail = ",".join(sorted({k for k, jj in kinds if jj == j}))
            mark("merged", j, f"{detail}:{(time.perf_counter_ns() - t) // 1000}us")
        return new
    return w


def on_frame(fn: Callable[..., Any]) -> Callable[..., Any]:
    def w(self: Any, data: bytes) -> Any:
        mark("frame_in", "-", str(data[4]) if len(data) > 4 else "?")
        return fn(self, data)
    return w


def receive(fn: Callable[..., Any]) -> Callable[..., Any]:
    def w(self: Any, body: Any) -> Any:
        mark("events_in", "-", str(len(body.get("events", ()))))
        return fn(self, body)
    return w


def acknowledge(fn: Callable[..., Any]) -> Callable[..., Any]:
    def w(self: Any, peer_ids: Any) -> Any:
        peer_ids = set(peer_ids)
        if peer_ids:
            mark("ack_sent", "-", ",".join(p[:6] for p in peer_ids))
        return fn(self, peer_ids)
    return w


def step(fn: Callable[..., Any]) -> Callable[..., Any]:
    def w(self: Any) -> Any:
        jobs = sorted({k[0] for k in self._dirty})
        for j in jobs:
            mark("step_in", j, str(len(self._dirty)))
        r = fn(self)
        for j in jobs:
            mark("step_out", j, "-")
        return r
    return w


def my_turn(fn: Callable[..., Any]) -> Callable[..., Any]:
    def w(self: Any, ak: Any, ranked: list[str], *a: Any, **kw: Any) -> Any:
        r = fn(self, ak, ranked, *a, **kw)
        rank = ranked.index(self.peer_id) if self.peer_id in ranked else -1
        mark("turn" if r else "stagger", ak.job,
             f"{'split' if ak.chunk < 0 else 'claim'}:rank{rank}/{len(ranked)}")
        return r
    return w


def consider(fn: Callable[..., Any]) -> Callable[..., Any]:
    def w(self: Any, job: str, task: str, i: int, split: Any, *a: Any, **kw: Any) -> Any:
        c = self.state.chunk(job, task, i)
        held = c.winner(c.attempt, split.id)
        mark("consider", job, f"free{self.free_slots}:held-{held.origin[:6] if held else None}"
             f":runs{len(self.runs)}")
        return fn(self, job, task, i, split, *a, **kw)
    return w


def execute(fn: Callable[..., Any]) -> Callable[..., Any]:
    async def w(self: Any, ak: Any, run: Any, payload: Any) -> Any:
        mark("exec_in", ak.job, "-")
        r = await fn(self, ak, run, payload)
        mark("exec_out", ak.job, "-")
        return r
    return w


def finish(fn: Callable[..., Any]) -> Callable[..., Any]:
    async def w(self: Any, base: Any, run: Any, res: Any) -> Any:
        r = await fn(self, base, run, res)
        mark("recorded", base["job"], "-")
        return r
    return w


def assign(fn: Callable[..., Any]) -> Callable[..., Any]:
    def w(self: Any, wk: Any, job: Any) -> Any:
        r = fn(self, wk, job)
        mark("to_worker", job.key.split("/")[0], str(self._workdir(job)))
        return r
    return w


def on_done(fn: Callable[..., Any]) -> Callable[..., Any]:
    def w(self: Any, wk: Any, msg: Any) -> Any:
        job = wk.job
        mark("from_worker", job.key.split("/")[0] if job is not None else "-", "-")
        return fn(self, wk, msg)
    return w


def append(fn: Callable[..., Any]) -> Callable[..., Any]:
    def w(self: Any, events: Any, *a: Any, **kw: Any) -> Any:
        t = time.perf_counter_ns()
        r = fn(self, events, *a, **kw)
        mark("sqlite", "-", f"{len(events)}:{(time.perf_counter_ns() - t) // 1000}us")
        return r
    return w


def sign(fn: Callable[..., Any]) -> Callable[..., Any]:
    def w(*a: Any, **kw: Any) -> Any:
        t = time.perf_counter_ns()
        r = fn(*a, **kw)
        mark("sign", "-", f"{(time.perf_counter_ns() - t) // 1000}us")
        return r
    return w


def submit(fn: Callable[..., Any]) -> Callable[..., Any]:
    async def w(request: Any) -> Any:
        t = time.perf_counter_ns()
        r = await fn(request)
        job = json.loads(r.body)["job"]
        mark("http_in", job, "-", t)
        mark("http_out", job, "-")
        return r
    return w


def timed(tag: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A duration mark `tag` (detail `Nus`) around each call, for the per-peer medians."""
    def make(fn: Callable[..., Any]) -> Callable[..., Any]:
        def w(*a: Any, **kw: Any) -> Any:
            t = time.perf_counter_ns()
            try:
                return fn(*a, **kw)
            finally:
                mark(tag, "-", f"{(time.perf_counter_ns() - t) // 1000}us")
        return w
    return make


Hook = tuple[Any, str, Callable[[Callable[..., Any]], Callable[..., Any]]]


def peer_hooks() -> list[Hook]:
    """(owner, attribute, wrapper maker) of every hook in a peer's process."""
    from peer import node as node_mod
    from peer.http import app as app_mod
    from peer.jobs import executor as ex_mod
    from peer.jobs import runs as runs_mod
    from peer.jobs import scheduler as sch_mod
    from peer.log import sqlite as sql_mod
    from peer.mesh import gossip as gossip_mod

    hooks: list[Hook] = [
        (node_mod.Node, "emit", emit), (node_mod.Node, "flush", flush),
        (node_mod.Node, "durable", durable), (node_mod.Node, "submitted", submitted),
        (node_mod.Node, "merge", merge), (node_mod, "sign_events", sign),
        (sql_mod.EventLog, "append", append), (gossip_mod.Gossip, "_on_frame", on_frame),
        (gossip_mod.Gossip, "receive_events", receive),
        (gossip_mod.Gossip, "acknowledge", acknowledge), (sch_mod.Scheduler, "step", step),
        (sch_mod.Scheduler, "_my_turn", my_turn),
        (sch_mod.Scheduler, "_consider_chunk", consider), (runs_mod.Runs, "_execute", execute),
        (runs_mod.Runs, "_finish", finish), (ex_mod.Executor, "_assign", assign),
        (ex_mod.Executor, "_on_done", on_done), (app_mod, "submit", submit),
        (gossip_mod.Gossip, "broadcast", timed("d_broadcast")),
        (gossip_mod.Gossip, "_event_frames", timed("d_frames")),
        (gossip_mod.Gossip, "_send_frame", timed("d_send")),
        (gossip_mod, "decode_frame", timed("d_decode")),
        (node_mod.Node, "_close_turn", timed("d_close_turn")),
        (node_mod.Node, "_tell", timed("d_tell"))]
    door = getattr(node_mod, "Door", None)
    if door is not None:
        hooks += [(door, "admit", timed("d_admit")), (door, "fold", timed("d_fold"))]
    return hooks


def _install_peer() -> None:
    from peer.http import app as app_mod

    for owner, name, make in peer_hooks():
        _wrap(owner, name, make)
    summary = app_mod._event_summary

    def event_summary(ev: Any) -> Any:
        if ev.type.name == "TASK_DONE":
            mark("sse", str(ev.payload.get("job", "-")), "-")
        return summary(ev)

    app_mod._event_summary = event_summary


def _run(fn: Callable[..., Any]) -> Callable[..., Any]:
    def w(payload: Any, ctx: Any) -> Any:
        mark("w_run_in", "-", str(ctx.workdir))
        r = fn(payload, ctx)
        mark("w_run_out", "-", str(ctx.workdir))
        return r
    return w


def _add_path(fn: Callable[..., Any]) -> Callable[..., Any]:
    def w(self: Any, *a: Any, **kw: Any) -> Any:
        t = time.perf_counter_ns()
        r = fn(self, *a, **kw)
        mark("w_add_path", "-", f"{(time.perf_counter_ns() - t) // 1000}us")
        return r
    return w


def worker_hooks() -> list[Hook]:
    """(owner, attribute, wrapper maker) of every hook in a worker's process."""
    from peer.ipfs import blocks, embedded
    from peer.jobs import runner

    return [(runner, "run", _run), (blocks.BlockStore, "sync", timed("w_blocks_sync")),
            (blocks, "_fsync_file", timed("w_fsync_file")),
            (blocks, "fsync_dir", timed("w_fsync_dir")),
            (embedded.EmbeddedStore, "add_path", _add_path)]


def _install_worker() -> None:
    for owner, name, make in worker_hooks():
        _wrap(owner, name, make)


if os.environ.get("BANZAI_TRACE_SWITCH_S"):  # an experiment: the GIL's switch interval
    sys.setswitchinterval(float(os.environ["BANZAI_TRACE_SWITCH_S"]))

if _DIR:
    _install_peer()
    _install_worker()

if __name__ == "__main__":
    from peer.main import main

    sys.exit(main())
