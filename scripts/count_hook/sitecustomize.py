"""Counting hooks for scripts/count_lanes.py (issue 12, falsifier 3): loaded by a peer process
whose PYTHONPATH starts with this directory and whose BANZAI_COUNTS_DIR is set, it wraps the
gossip, signing, log and scheduler calls counted and writes the counts to
BANZAI_COUNTS_DIR/<pid>.json every 0.2 s (a daemon thread). Counting only: nothing is changed.
"""

from __future__ import annotations

import collections
import json
import os
import sys
import threading
import time
from typing import Any

COUNTS: collections.Counter[str] = collections.Counter()
DIFFER: list[Any] = []  # the last origins found differing: [origin, head, seqs held]


def _kind(origin: str) -> str:
    from peer.log.lanes import lane_of

    return "lane" if "/" in origin and lane_of(origin) is not None else "mesh"


def _wrap(owner: Any, name: str, before: Any = None, after: Any = None) -> None:
    fn = getattr(owner, name)

    def wrapped(*a: Any, **kw: Any) -> Any:
        if before is not None:
            before(*a, **kw)
        out = fn(*a, **kw)
        if after is not None:
            after(out, *a, **kw)
        return out

    setattr(owner, name, wrapped)


def _install() -> None:
    from peer import node
    from peer.jobs import scheduler
    from peer.log import signing, sqlite
    from peer.mesh import antientropy, gossip

    c = COUNTS

    def events(prefix: str, evs: Any, times: int = 1) -> None:
        for e in evs:
            c[f"{prefix}.{_kind(e.origin)}.{e.type.name}"] += times

    # frames: built by kind (one per send_events batch, sent to each addr), sent, received
    def recv(f: Any, data: bytes, *a: Any) -> None:
        c[f"frame_recv.{f.kind.name}"] += 1
        c[f"bytes_recv.{f.kind.name}"] += len(data)
    _wrap(gossip.Gossip, "_frame", lambda self, kind, body: c.update([f"frame_built.{kind.name}"]))
    _wrap(gossip.Gossip, "_send_frame", lambda self, addr, frame: c.update(["frames_sent"]))
    _wrap(gossip, "decode_frame", after=recv)

    def sent(self: Any, addrs: Any, evs: Any, *, ttl: int = 0, reply: Any = None,
             fix: Any = None, fix_echo: Any = None, jobs: Any = None) -> None:
        how = "reply" if reply is not None else "fix" if fix is not None else f"push{ttl}"
        events(f"ev_sent_{how}", evs, len(addrs))
    _wrap(gossip.Gossip, "send_events", sent)
    _wrap(gossip.Gossip, "merge", lambda self, evs: events("ev_recv", evs),
          lambda new, self, evs: events("ev_new", new))
    _wrap(node.Node, "emit", after=lambda ev, self, typ, payload: c.update(
        [f"emit.{_kind(ev.origin)}.{typ.name}"]))
    # signatures: batches signed (by origin kind), signatures made (heartbeats too), verified
    _wrap(signing, "sign_run", lambda me, signer, origin, evs, admit: c.update(
        [f"sign_batch.{_kind(origin)}"]))
    _wrap(signing.Identity, "sign", lambda self, msg: c.update(["sign_any"]))
    _wrap(signing, "verify", lambda key, sig, msg: c.update(["verify"]))
    # the log: appends (sync or not) and syncs
    _wrap(sqlite.EventLog, "append", lambda self, evs, sync=None: c.update(
        ["log_append", *(["log_append_sync"] if sync else [])]))
    _wrap(sqlite.EventLog, "sync", lambda self, since=None: c.update(["log_sync"]))
    _wrap(os, "fsync", lambda fd: c.update(["os_fsync"]))
    # anti-entropy
    _wrap(gossip.Gossip, "anti_entropy", lambda self, addr=None: c.update(["ae_round"]))
    _wrap(gossip.Gossip, "pair_round", lambda self: c.update(["pair_round_called"]))
    _wrap(antientropy.AntiEntropy, "send_sum", lambda self, addr, jobs=None: c.update(
        ["sum_sent.pair" if jobs is not None else "sum_sent.mesh"]))
    for name in ("on_digest_sum", "on_digest", "on_digest_reply", "on_fix", "send_digest"):
        _wrap(antientropy.AntiEntropy, name, lambda self, *a, _n=name, **kw: c.update([_n]))
    # which mesh origins' contents differ (`_differing`): what this side holds of each
    def differing(out: Any, self: Any, theirs: Any, mine: Any, cs: Any, contents: Any) -> None:
        for o in out:
            held = sorted(q for q in contents.state.by_origin.get(o, {}))
            c[f"differ.{_kind(o)}"] += 1
            DIFFER.append([o[:8], mine.get(o, 0), held])
            del DIFFER[:-20]
    _wrap(antientropy.AntiEntropy, "_differing", after=differing)
    # the scheduler
    _wrap(scheduler.Scheduler, "step", lambda self: c.update(["sched_step"]))
    _wrap(scheduler.Scheduler, "_evaluate", lambda self, job, task: c.update(["sched_evaluate"]))
    _flushes(node.Node)
    _timings()


def _flushes(node_cls: Any) -> None:
    """What closes our turns (issue 12): per flush that writes events, who called it
    (`flush_by.<caller>`: `_turn_end` unheld, `_run` the hold's timer, `_synced` an fsync
    returned), and for one of `_turn_end`, why it was not held (`unheld.<why>`); the TURNs
    and lone events it wrote, and their parts by type (`turn_part.<type>`)."""
    from peer.log import turns
    from peer.log.events import EventType

    fn = node_cls.flush
    c = COUNTS
    opened: dict[int, float] = {}  # id(TurnBuilder) -> when its first open turn opened
    add = turns.TurnBuilder.add

    def added(self: Any, *a: Any, **kw: Any) -> Any:
        if not self._open:
            opened[id(self)] = time.perf_counter()
        return add(self, *a, **kw)

    turns.TurnBuilder.add = added  # type: ignore[method-assign]

    def flush(self: Any) -> None:
        if self.turn.open or self._unflushed:
            f = sys._getframe(1)
            while f.f_code.co_name == "wrapped" and f.f_back is not None:
                f = f.f_back
            caller = f.f_code.co_name
            c[f"flush_by.{caller}"] += 1
            if caller == "_turn_end":
                s = self.scheduler
                why = ("queued0" if not s._runs.queued else "taken" if s._taken else "?")
                c[f"unheld.{why}"] += 1
            if self.turn.open:
                age_ms = (time.perf_counter() - opened.get(id(self.turn), 0.0)) * 1000
                bound = next(b for b in (1, 5, 10, 15, 19, 25, 1e9) if age_ms < b)
                c[f"turn_age_ms.<{bound:g}"] += 1
            made = [[EventType(t) for t, _ in ev.payload["parts"]] if ev.type is EventType.TURN
                    else [ev.type] for ev in self._unflushed]
            made += [[p.type for p in t.parts] for t in self.turn._open.values()]
            for types in made:
                c["flushed_turn" if len(types) > 1 else f"flushed_lone.{types[0].name}"] += 1
                c[f"turn_shape.{_shape(types)}"] += 1
                for t in types:
                    c[f"turn_part.{t.name}"] += 1
        return fn(self)

    node_cls.flush = flush


def _shape(types: Any) -> str:
    """A turn's parts as claims (c), outcomes (o: CHUNK_DONE, CHUNK_FAILED) and others (x)."""
    names = {t.name for t in types}
    return "".join(k for k, have in (
        ("c", "CLAIM" in names), ("o", bool(names & {"CHUNK_DONE", "CHUNK_FAILED"})),
        ("x", bool(names - {"CLAIM", "CHUNK_DONE", "CHUNK_FAILED"}))) if have)


def _timed(owner: Any, name: str, key: str) -> None:
    """Count the calls of `owner.name` and the CPU (time.thread_time, in whichever thread
    runs it) and wall µs they take: `calls.<key>`, `cpu_us.<key>`, `wall_us.<key>`."""
    fn = getattr(owner, name)
    c = COUNTS

    def wrapped(*a: Any, **kw: Any) -> Any:
        t0, w0 = time.thread_time(), time.perf_counter()
        try:
            return fn(*a, **kw)
        finally:
            c[f"calls.{key}"] += 1
            c[f"cpu_us.{key}"] += int((time.thread_time() - t0) * 1e6)
            c[f"wall_us.{key}"] += int((time.perf_counter() - w0) * 1e6)

    setattr(owner, name, wrapped)


def _timings() -> None:
    """Where a received batch's CPU goes (issue 12): the receive handler, the merge and its
    parts on the loop; the fsync and the inline writer's pass in their threads; the loop's
    wake-ups from other threads and the hand-offs to them."""
    import asyncio
    import concurrent.futures

    from peer import catchup, node
    from peer.ipfs import inline
    from peer.jobs import scheduler
    from peer.log import door, signing, sqlite
    from peer.mesh import gossip

    for owner, name, key in (
            (gossip, "decode_frame", "decode_frame"), (gossip.Gossip, "_on_events", "on_events"),
            (signing.MemberKeys, "accept", "keys_accept"),
            (signing.MemberKeys, "check_batch", "check_batch"),
            (signing.MemberKeys, "check_event", "check_event"),
            (node.Node, "_tell", "tell"), (gossip.Gossip, "send_events", "send_events"),
            (scheduler.Scheduler, "step", "sched_step"), (catchup.CatchUp, "compact", "compact"),
            (node.Node, "merge", "merge"), (node.Node, "flush", "flush"),
            (node.Node, "_synced", "synced"), (sqlite.EventLog, "append", "append"),
            (sqlite.EventLog, "sync", "sync"), (door.Door, "admit", "door_admit"),
            (door.Door, "fold", "door_fold"),
            (inline.InlineBlocks, "_write_queued", "inline_write"),
            (asyncio.BaseEventLoop, "_run_once", "loop_run_once")):
        _timed(owner, name, key)
    c = COUNTS
    _wrap(asyncio.BaseEventLoop, "call_soon_threadsafe",
          lambda self, *a, **kw: c.update(["loop_wakeup_threadsafe"]))
    _wrap(concurrent.futures.ThreadPoolExecutor, "submit", lambda self, fn, *a, **kw: c.update(
        [f"pool_submit.{self._thread_name_prefix.rstrip('_0123456789') or 'default'}"]))


def _thread_cpu() -> dict[str, int]:
    """CPU µs of each live thread so far, summed by name (its trailing _N dropped)."""
    out: collections.Counter[str] = collections.Counter()
    for t in threading.enumerate():
        try:
            cpu = time.clock_gettime(time.pthread_getcpuclockid(t.ident or 0))
        except (OSError, OverflowError):
            continue
        out[f"thread_cpu_us.{t.name.rstrip('_0123456789')}"] += int(cpu * 1e6)
    return dict(out)


def _dump(path: str) -> None:
    while True:
        time.sleep(0.2)
        for _ in range(5):
            try:
                text = json.dumps({**COUNTS, **_thread_cpu(), "DIFFER": list(DIFFER)})
                break
            except RuntimeError:  # changed during the copy: try again
                continue
        else:
            continue
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, path)


if os.environ.get("BANZAI_COUNTS_DIR") and sys.argv and sys.argv[0].endswith("banzai-peer"):
    _install()
    threading.Thread(target=_dump, daemon=True, args=(os.path.join(
        os.environ["BANZAI_COUNTS_DIR"], f"{os.getpid()}.json"),)).start()
