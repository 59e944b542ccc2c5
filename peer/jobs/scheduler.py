"""Which ready task this peer claims, and running it: readiness, cache, splits, claims, leases.

The pure parts (cache keys, ranking, chunking, task status) are module functions.
`Scheduler` owns this peer's running chunks; it is driven by the event loop and
never blocks it (store walks and directory assembly are cheap and bounded).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import posixpath
import time
from collections import defaultdict
from collections.abc import Callable, Coroutine, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from peer.errors import BanzaiError
from peer.ipfs.store import Store, StoreConfig
from peer.jobs import kinds
from peer.jobs.spec import TaskSpec, Workflow
from peer.log import RETRYABLE, Event, EventType, MeshState, TaskKey
from peer.rendezvous import rendezvous
from tasks.registry import TaskDef, canonical_json

log = logging.getLogger("banzai.scheduler")
_CLOSE_TIMEOUT_S = 10.0  # close() fails loudly rather than wait forever


# -- narrow protocols ------------------------------------------------------------------
class RunResultLike(Protocol):
    ok: bool
    value: Any
    error: str | None
    exit_kind: str
    duration_s: float


class Runner(Protocol):
    """What the scheduler needs of the executor."""

    @property
    def slots(self) -> int: ...
    async def run(self, key: str, target: str, payload: Any, *, timeout_s: float | None = None,
                  on_message: Callable[[str, tuple[Any, ...]], None] | None = None,
                  ) -> Any: ...
    def cancel(self, key: str) -> bool: ...


class Data(Protocol):
    """What the scheduler needs to get data from other peers (peer.ipfs.fetch.Fetcher)."""

    def is_complete(self, cid: str) -> bool: ...
    def mark(self, cid: str) -> None: ...
    async def ensure(self, cids: Sequence[str], hints: Sequence[str] = ()) -> None: ...


PeerInfos = Callable[[], Mapping[str, Mapping[str, Any]]]
Emit = Callable[[EventType, dict[str, Any]], Event]


@dataclass(frozen=True)
class SchedulerConfig:
    store: StoreConfig  # what the work orders carry: workers open the same store
    task_modules: tuple[str, ...] = ()
    fetch_allow: tuple[str, ...] = ()  # CIDRs fetching tasks may reach (--fetch-allow)
    max_attempts: int = 3
    lease_s: float = 10.0
    stagger_s: float = 0.05  # delay per rank before claiming (rendezvous stagger)
    task_timeout_s: float = 3600.0
    max_chunk_items: int = 64
    min_chunk_items: int = 4
    progress_interval_s: float = 0.5
    tick_s: float = 0.25


# -- pure core -------------------------------------------------------------------------
def cache_key(tdef: TaskDef, params: Mapping[str, Any], input_cid: str | None) -> str:
    """hash(call, version, canonical params, input CID): the content-addressed cache key."""
    raw = canonical_json([tdef.name, tdef.version, dict(params), input_cid])
    return hashlib.sha256(raw.encode()).hexdigest()


def chunk_items(items: Sequence[Any], free_slots: int, lo: int, hi: int) -> list[list[Any]]:
    """Split items, order kept, into chunks of equal size within [lo, hi] (the last may be
    shorter): one per slot, or when that makes them larger than `hi`, about a whole number
    of rounds of one chunk per slot (200 items, 2 slots, hi 64: 4 × 50, not 64+64+64+8)."""
    if not items:
        return []
    slots = max(free_slots, 1)
    size = max(lo, min(hi, -(-len(items) // slots)))
    chunks = -(-len(items) // size)
    if chunks > slots:
        rounds = -(-chunks // slots)
        size = max(lo, -(-len(items) // (rounds * slots)))
    return [list(items[i:i + size]) for i in range(0, len(items), size)]


def _item_name(spec: TaskSpec) -> str:
    """The name a per-item task gives an input that is one file, not a directory: that of
    the task it came from (as a merge of several inputs names them)."""
    return spec.depends[0] if spec.depends else "input"


def task_status(state: MeshState, job: str, task: str, max_attempts: int) -> str:
    """pending | running | done | failed | cancelled (derived, never stored)."""
    if (job, task) in state.task_done:
        return "done"
    if job in state.cancelled:
        return "cancelled"
    split = state.splits.get((job, task))
    if split is not None:
        for i in range(len(split.payload["chunks"])):
            c = state.chunk(job, task, i)
            if c.done is None and chunk_exhausted(c.failures, max_attempts):
                return "failed"
    if split is not None and any(
            (c := state.chunk(job, task, i)).done is None
            and c.winner(c.attempt, split.id) is not None
            for i in range(len(split.payload["chunks"]))):
        return "running"
    return "pending"


def chunk_exhausted(failures: Mapping[int, Event], max_attempts: int) -> bool:
    if not failures:
        return False
    last = failures[max(failures)]
    return len(failures) >= max_attempts or last.payload.get("kind") not in RETRYABLE


@dataclass
class _Run:
    key: str
    split: tuple[str, int]
    task: asyncio.Task[None] | None = None
    lost: bool = False  # our claim lost to another: the outcome is not recorded
    log: list[str] = field(default_factory=list)
    metrics: list[list[Any]] = field(default_factory=list)
    last_progress_s: float = 0.0
    last_flush_s: float = 0.0
    partial: dict[str, Any] = field(default_factory=dict)  # item results not yet recorded


class Scheduler:
    """Claims and runs ready chunks on this peer; call `poke` after state changes."""

    def __init__(self, cfg: SchedulerConfig, peer_id: str, state: MeshState, emit: Emit,
                 store: Store, runner: Runner, catalog: Mapping[str, TaskDef], data: Data,
                 peers: PeerInfos = dict, clock: Callable[[], float] = time.monotonic) -> None:
        self.cfg = cfg
        self.peer_id = peer_id
        self.state = state
        self.emit = emit
        self.store = store
        self.runner = runner
        self.catalog = catalog
        self.data = data
        self.peers = peers  # live peers other than this one -> their heartbeat info
        self.clock = clock
        self.runs: dict[tuple[str, str, int, int], _Run] = {}
        self.logs: dict[tuple[str, str], list[str]] = {}  # live logs of local runs
        self.metrics: dict[tuple[str, str], list[list[Any]]] = {}
        self.executions = 0  # chunks handed to the executor (tests count them)
        self._dirty: set[TaskKey] = set()
        self._ready_since: dict[tuple[str, str, int, int], float] = {}
        self._claim_seen: dict[tuple[str, str, int, int], float] = {}
        self._data_wait: dict[TaskKey, float] = {}  # tasks waiting for data: since when
        self._fetching: set[TaskKey] = set()
        self._bg: set[asyncio.Task[Any]] = set()
        self._last_tick = 0.0
        # Tasks with a claimable chunk but no free slot, oldest first; a freed slot wakes a
        # few of them (not all: with thousands queued that would be quadratic).
        self._starved: dict[TaskKey, None] = {}
        self._keys: dict[TaskKey, tuple[str | None, str]] = {}  # memo: input -> cache key
        self._wake = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._workflows: dict[str, Workflow] = {}
        self._users: dict[str, dict[str, list[str]]] = {}  # job -> task -> its dependents

    # -- lifecycle ---------------------------------------------------------------------
    async def start(self) -> None:
        self._recover()
        self._dirty.update(self._active_tasks())
        self._loop_task = asyncio.create_task(self._loop(), name="scheduler")

    async def close(self) -> None:
        if self._loop_task:
            self._loop_task.cancel()
            await asyncio.wait([self._loop_task], timeout=_CLOSE_TIMEOUT_S)
            if not self._loop_task.done():
                raise RuntimeError(f"the scheduler loop did not stop within {_CLOSE_TIMEOUT_S:g} s"
                                   " of being cancelled")
            await asyncio.gather(self._loop_task, return_exceptions=True)  # done: its outcome
        for r in list(self.runs.values()):
            self.runner.cancel(r.key)
            if r.task:
                r.task.cancel()
        await asyncio.gather(*(r.task for r in self.runs.values() if r.task),
                             return_exceptions=True)

    def poke(self, ev: Event | None = None) -> None:
        """Note a state change (a new event) and wake the loop."""
        if ev is not None:
            self._note(ev)
        self._wake.set()

    # -- event reactions ---------------------------------------------------------------
    def _note(self, ev: Event) -> None:
        p = ev.payload
        if ev.type == EventType.JOB_SUBMITTED:
            self._dirty.update((p["job"], t["name"]) for t in p["workflow"]["tasks"])
        elif ev.type == EventType.JOB_CANCELLED:
            self._cancel_job(p["job"])
        elif ev.type == EventType.TASK_DONE:
            self._dirty.update((p["job"], t) for t in self._dependents(p["job"], p["task"]))
        elif "job" in p and "task" in p:
            self._dirty.add((p["job"], p["task"]))
            if ev.type == EventType.CLAIM and ev.origin != self.peer_id:
                self._claim_seen[(p["job"], p["task"], p["chunk"], p["attempt"])] = self.clock()

    def _cancel_job(self, job: str) -> None:
        """Kill this peer's workers of `job` now; runs still fetching input just stop."""
        for k, r in list(self.runs.items()):
            if k[0] == job and not self.runner.cancel(r.key) and r.task is not None:
                r.task.cancel()

    def _recover(self) -> None:
        """Claims this peer made before a restart are lost: fail them so they are retried."""
        for (job, task, so, sq, i), c in list(self.state.chunks.items()):
            split = self.state.split_id(job, task)
            if split != (so, sq):
                continue
            w = c.winner(c.attempt, split)
            if c.done is None and w is not None and w.origin == self.peer_id:
                self.emit(EventType.CHUNK_FAILED, {
                    "job": job, "task": task, "split": list(split), "chunk": i,
                    "attempt": c.attempt, "kind": "lost",
                    "error": "the peer restarted while running this chunk"})

    def _active_tasks(self) -> Iterator[TaskKey]:
        for job, ev in self.state.jobs.items():
            if job in self.state.cancelled:
                continue
            for t in ev.payload["workflow"]["tasks"]:
                if (job, t["name"]) not in self.state.task_done:
                    yield (job, t["name"])

    def _dependents(self, job: str, task: str) -> list[str]:
        """Tasks of `job` that depend on `task` (indexed once per job)."""
        index = self._users.get(job)
        if index is None:
            index = self._users[job] = defaultdict(list)
            for t in self.workflow(job).tasks:
                for d in t.depends:
                    index[d].append(t.name)
        return index.get(task, [])

    def workflow(self, job: str) -> Workflow:
        wf = self._workflows.get(job)
        if wf is None:
            from peer.jobs.spec import workflow_from_json

            wf = workflow_from_json(self.state.jobs[job].payload["workflow"])
            self._workflows[job] = wf
        return wf

    # -- the loop ----------------------------------------------------------------------
    async def _loop(self) -> None:
        while True:
            # Not asyncio.wait_for: on 3.11 it swallows a cancel() that lands just after the
            # event was set, and then close() waits forever for this loop to end.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.cfg.tick_s):
                    await self._wake.wait()
            self._wake.clear()
            now = self.clock()
            if now - self._last_tick >= self.cfg.tick_s / 2:
                self._last_tick = now
                self._dirty.update(self._waiting())
            dirty, self._dirty = self._dirty, set()
            for key in sorted(dirty):
                try:
                    self._evaluate(*key)
                except BanzaiError as e:
                    self._fail_task(key, str(e))
                except Exception as e:  # a bug must not stop the scheduler
                    log.exception("scheduler error on %s", key)
                    self._fail_task(key, f"internal error: {e}")
            if self._starved and self.free_slots > 0:
                # Slots are free (other peers may have taken what woke last time): look
                # at the next starved tasks, a few per round, until the slots fill.
                self._unstarve()
                self._wake.set()

    def _waiting(self) -> set[TaskKey]:
        """Tasks whose progress depends on time: staggered claims, leases of others, data."""
        def stale(k: tuple[Any, ...]) -> bool:
            return (k[0], k[1]) in self.state.task_done or k[0] in self.state.cancelled

        for k4 in [k for k in self._ready_since if stale(k)]:
            del self._ready_since[k4]
        for k4 in [k for k in self._claim_seen if stale(k)]:
            del self._claim_seen[k4]
        for k2 in [k for k in self._data_wait if stale(k)]:
            del self._data_wait[k2]
        keys = {(k[0], k[1]) for k in self._ready_since}
        keys |= {(k[0], k[1]) for k in self._claim_seen}
        return keys | set(self._data_wait)

    def _fail_task(self, key: TaskKey, error: str) -> None:
        """Fail a task for good (a non-retryable error in its first unfinished chunk)."""
        job, task = key
        if (job, task) in self.state.task_done:
            return
        split = self.state.splits.get((job, task))
        if split is None:  # failed while planning: record a one-chunk split to fail
            split = self.emit(EventType.TASK_SPLIT, {"job": job, "task": task, "input": None,
                                                     "chunks": [[]]})
            split = self.state.splits[(job, task)]
        for i in range(len(split.payload["chunks"])):
            c = self.state.chunk(job, task, i)
            if c.done is not None:
                continue
            self.emit(EventType.CHUNK_FAILED, {"job": job, "task": task, "split": list(split.id),
                                               "chunk": i, "attempt": c.attempt,
                                               "error": error, "kind": "error"})
            break
        else:  # every chunk is done: the error came from assembling the output
            log.warning("%s/%s: assembling the output failed: %s", job, task, error)

    # -- evaluation of one task ----------------------------------------------------------
    def _evaluate(self, job: str, task: str) -> None:
        st = self.state
        if job not in st.jobs or job in st.cancelled or (job, task) in st.task_done:
            return
        spec = self.workflow(job).task(task)
        if any((job, d) not in st.task_done for d in spec.depends):
            return
        if task_status(st, job, task, self.cfg.max_attempts) == "failed":
            return
        if spec.cid is not None:
            self._done(job, task, spec.cid, None, cached=True)
            return
        tdef = self.catalog.get(spec.call or "")
        if tdef is None:
            return  # this peer cannot run that call: peers that can will
        split = st.splits.get((job, task))
        if split is None:
            self._plan(job, task, tdef, spec)
            return
        key = self._cache_key(job, task, tdef, spec, split.payload["input"])
        chunks = split.payload["chunks"]
        if all(st.chunk(job, task, i).done is not None for i in range(len(chunks))):
            # Assembling reads the chunks' outputs and, per item, the input's listing: the
            # peer that split the task holds the input, so it goes first; a whole task's one
            # chunk is assembled by the peer that ran it.
            need = self._chunk_outputs(job, task, len(chunks))
            first = split.origin
            if tdef.per_item:
                need.append(split.payload["input"])
            elif (done := st.chunk(job, task, 0).done) is not None:
                first = done.origin
            if self._have((job, task), need, first):
                self._assemble(job, task, tdef, spec, split, key)
            return
        for i in range(len(chunks)):
            self._consider_chunk(job, task, i, split, tdef)

    def _plan(self, job: str, task: str, tdef: TaskDef, spec: TaskSpec) -> None:
        """Input, cache lookup and split of a ready task: done by a peer holding the input
        (others wait for its TASK_SPLIT or TASK_DONE, or take over after a grace period)."""
        outs = [self.state.task_done[(job, d)].payload["output"] for d in spec.depends]
        needs_data = len(outs) > 1 or (tdef.per_item and bool(outs))
        if needs_data and not self._have((job, task), outs, self._producer(job, spec)):
            return
        unit = f"{job}/{task}"
        if not needs_data and not self._my_turn(
                (job, task, -1, -1), unit, rendezvous(unit, [*self.peers(), self.peer_id])):
            return  # every peer could split it: stagger them so that one usually does
        input_cid = self._input(job, spec)
        key = self._cache_key(job, task, tdef, spec, input_cid)
        cached = self.state.cache.get(key)
        if isinstance(cached, str) and (self.store.has(cached)
                                        or self.state.providers.get(cached)):
            self._done(job, task, cached, key, cached=True)
            return
        self._split(job, task, tdef, spec, input_cid)

    # -- data locality -----------------------------------------------------------------
    def _have(self, key: TaskKey, cids: list[str], preferred: str | None) -> bool:
        """True if every DAG is complete here. Otherwise start fetching them: at once if
        this peer is the `preferred` one to act, else after a grace period in which the
        preferred peer (which holds the data) normally acts first."""
        cids = [c for c in cids if c]
        if all(self.data.is_complete(c) for c in cids):
            self._data_wait.pop(key, None)
            return True
        since = self._data_wait.setdefault(key, self.clock())
        alive = preferred is not None and (preferred in self.peers())
        if (preferred == self.peer_id or not alive
                or self.clock() - since > self.cfg.lease_s) and key not in self._fetching:
            self._fetching.add(key)
            log.debug("%s/%s: fetching %d DAGs (preferred peer %s)", key[0], key[1], len(cids),
                      preferred)
            self._background(self._fetch(key, cids))
        return False

    def _background(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.create_task(coro)
        self._bg.add(task)
        task.add_done_callback(self._bg.discard)

    async def _fetch(self, key: TaskKey, cids: list[str]) -> None:
        t0 = self.clock()
        try:
            await self.data.ensure(cids)
            log.debug("%s/%s: %d DAGs complete after %.3f s", key[0], key[1], len(cids),
                      self.clock() - t0)
        except BanzaiError as e:
            log.warning("%s/%s: %s (will retry)", key[0], key[1], e)
        finally:
            self._fetching.discard(key)
            self._dirty.add(key)
            self._wake.set()

    def _producer(self, job: str, spec: TaskSpec) -> str | None:
        """The peer to act first on a task's input: one that holds the first input (the
        producer of a task's output; for a {"cid"} source, a live provider of the CID)."""
        if not spec.depends:
            return None
        done = self.state.task_done[(job, spec.depends[0])]
        live = {*self.peers(), self.peer_id}
        holders = [p for p in self.state.providers.get(done.payload["output"], ()) if p in live]
        if done.origin in holders or not holders:
            return done.origin
        return rendezvous(f"{job}/{spec.name}", holders)[0]

    def _chunk_outputs(self, job: str, task: str, n: int) -> list[str]:
        out: list[str] = []
        for i in range(n):
            done = self.state.chunk(job, task, i).done
            assert done is not None
            if done.payload.get("output"):
                out.append(done.payload["output"])
            out += [v["c"] for v in done.payload.get("cache", {}).values() if v]
        return out

    def _input(self, job: str, spec: TaskSpec) -> str | None:
        """The input CID: none, the one dependency's output, or a merge of several."""
        outs = [(d, self.state.task_done[(job, d)].payload["output"]) for d in spec.depends]
        if not outs:
            return None
        if len(outs) == 1:
            return str(outs[0][1])
        merged: dict[str, str] = {}
        for dep, cid in outs:
            for e in self._files(cid, prefix=dep):
                have = merged.setdefault(e[0], e[1])
                if have != e[1]:
                    raise BanzaiError(
                        f"inputs of {spec.name} conflict at {e[0]!r}: {dep} has other content")
        out = self.store.make_dir(merged)
        self.data.mark(out)
        return out

    def _files(self, cid: str, prefix: str) -> list[tuple[str, str]]:
        """Files under `cid` as (relpath, cid); a file output is named after its task."""
        if self.store.stat(cid).kind != "dir":
            return [(prefix, cid)]
        return [(e.path, e.cid) for e in self.store.walk(cid)]

    def _item_key(self, tdef: TaskDef, params: Mapping[str, Any], item_cid: str) -> str:
        return cache_key(tdef, params, item_cid)

    def _split(self, job: str, task: str, tdef: TaskDef, spec: TaskSpec,
               input_cid: str | None) -> None:
        chunks: list[list[list[str]]]
        if not tdef.per_item:
            chunks = [[]]
        else:
            if input_cid is None:
                raise BanzaiError(f"{task}: a per-item task needs an input")
            misses = [[path, cid] for path, cid in self._files(input_cid, _item_name(spec))
                      if tdef.matches(path)
                      and self._item_key(tdef, spec.params, cid) not in self.state.cache]
            # Slots of every live peer that runs the call, busy or not: heartbeats are up to
            # 0.5 s old, and the previous step's chunks are usually just finishing.
            slots = self.runner.slots + sum(
                int(i.get("slots", 0)) for i in self.peers().values()
                if tdef.name in i.get("calls", ()))
            chunks = chunk_items(misses, max(slots, 1),
                                 self.cfg.min_chunk_items, self.cfg.max_chunk_items)
        self.emit(EventType.TASK_SPLIT, {"job": job, "task": task, "input": input_cid,
                                         "chunks": chunks})

    def _assemble(self, job: str, task: str, tdef: TaskDef, spec: TaskSpec, split: Event,
                  key: str) -> None:
        if not tdef.per_item:
            out = self.state.chunk(job, task, 0).done
            assert out is not None
            self._done(job, task, out.payload["output"], key, cached=False)
            return
        entries: dict[str, str] = {}
        matched = kept = 0
        for path, cid in self._files(split.payload["input"], _item_name(spec)):
            if not tdef.matches(path):
                if tdef.passthrough:
                    entries[path] = cid
                continue
            matched += 1
            r = self.state.cache.get(self._item_key(tdef, spec.params, cid))
            if r:
                kept += 1
                entries[posixpath.join(posixpath.dirname(path), r["n"])] = r["c"]
        warning = None
        if not kept:
            warning = (f"{task}: kept no item of the {matched} input item(s) matching "
                       f"{tdef.items!r}; the output holds no {tdef.items} result")
        output = self.store.make_dir(entries)
        self.data.mark(output)
        self._done(job, task, output, key, cached=False, warning=warning)

    def _done(self, job: str, task: str, output: str, key: str | None, cached: bool,
              warning: str | None = None) -> None:
        if self.data.is_complete(output):
            self._background(asyncio.to_thread(self.store.pin, output))
        self._keys.pop((job, task), None)
        payload = {"job": job, "task": task, "output": output, "key": key, "cached": cached}
        if warning:
            payload["warning"] = warning
        self.emit(EventType.TASK_DONE, payload)

    # -- claims ------------------------------------------------------------------------
    def _consider_chunk(self, job: str, task: str, i: int, split: Event, tdef: TaskDef,
                        ) -> None:
        c = self.state.chunk(job, task, i)
        if c.done is not None or chunk_exhausted(c.failures, self.cfg.max_attempts):
            return
        attempt = c.attempt
        ck = (job, task, i, attempt)
        w = c.winner(attempt, split.id)
        run = self.runs.get(ck)
        if run is not None and not run.lost and (
                run.split != split.id or (w is not None and w.origin != self.peer_id)):
            self._lose(run)  # another split or an earlier claim won: stop the duplicate
        if w is not None:
            self._ready_since.pop(ck, None)
            self._check_claim(ck, w)
            return
        if ck in self.runs:
            return
        if self.free_slots <= 0:
            self._starved[(job, task)] = None  # looked at again when a slot frees
            return
        unit = f"{job}/{task}/{i}/{attempt}"
        if not self._my_turn(ck, unit, self._candidates(unit, tdef.name, split)):
            return
        self.emit(EventType.CLAIM, {"job": job, "task": task, "chunk": i, "attempt": attempt,
                                    "split": list(split.id)})
        mine = c.winner(attempt, split.id)
        if mine is not None and mine.origin == self.peer_id:
            self._start(ck, split)

    def _my_turn(self, key: tuple[str, str, int, int], unit: str, ranked: list[str]) -> bool:
        """True once this peer of rank r in `ranked` has waited r × stagger_s for `key`."""
        now = self.clock()
        since = self._ready_since.setdefault(key, now)
        if now - since < ranked.index(self.peer_id) * self.cfg.stagger_s:
            return False
        self._ready_since.pop(key, None)
        return True

    def _candidates(self, unit: str, call: str, split: Event) -> list[str]:
        """Peers that may claim `unit`, in claim order: live peers that run `call` and have a
        free slot (this one included); those holding the input first, then the peer that
        split the task (it saw the task first: no gossip hop), then the others, each group
        ordered by rendezvous hash so that every peer computes the same order."""
        peers = [p for p, info in self.peers().items()
                 if call in info.get("calls", ()) and int(info.get("free_slots", 0)) > 0]
        peers.append(self.peer_id)
        holders = self.state.providers.get(split.payload["input"] or "", set())
        near = rendezvous(unit, [p for p in peers if p in holders])
        if split.origin in peers and split.origin not in holders:
            near.append(split.origin)
        return near + rendezvous(unit, [p for p in peers if p not in near])

    def _check_claim(self, ck: tuple[str, str, int, int], w: Event) -> None:
        """Watch a claim held by another peer; fail it when its lease lapses."""
        if w.origin == self.peer_id:
            self._claim_seen.pop(ck, None)
            return
        seen = self._claim_seen.setdefault(ck, self.clock())
        if self.clock() - seen > self.cfg.lease_s:
            self._claim_seen.pop(ck, None)
            job, task, i, attempt = ck
            self.emit(EventType.CHUNK_FAILED, {
                "job": job, "task": task, "split": w.payload["split"], "chunk": i,
                "attempt": attempt, "kind": "lease",
                "error": f"lease expired: no renewal heard from {w.origin} for "
                         f"{self.cfg.lease_s:g} s"})

    def _lose(self, run: _Run) -> None:
        """Stop a run whose claim lost; it records nothing (the winner's outcome counts)."""
        run.lost = True
        if not self.runner.cancel(run.key) and run.task is not None:
            run.task.cancel()

    def _unstarve(self) -> None:
        for key in list(self._starved)[:max(self.free_slots, 1) * 4]:
            del self._starved[key]
            self._dirty.add(key)

    def _cache_key(self, job: str, task: str, tdef: TaskDef, spec: TaskSpec,
                   input_cid: str | None) -> str:
        memo = self._keys.get((job, task))
        if memo is None or memo[0] != input_cid:
            memo = self._keys[(job, task)] = (input_cid, cache_key(tdef, spec.params, input_cid))
        return memo[1]

    @property
    def free_slots(self) -> int:
        """Slots not taken by a chunk this peer claimed (running, queued or fetching)."""
        return self.runner.slots - len(self.runs)

    def heard(self, peer: str) -> None:
        """A sign of life from `peer`: renew the leases of its claims."""
        now = self.clock()
        for ck in list(self._claim_seen):
            c = self.state.chunk(ck[0], ck[1], ck[2])
            w = c.winner(ck[3], self.state.split_id(ck[0], ck[1]))
            if w is not None and w.origin == peer:
                self._claim_seen[ck] = now

    # -- running -----------------------------------------------------------------------
    def _start(self, ck: tuple[str, str, int, int], split: Event) -> None:
        job, task, i, attempt = ck
        spec = self.workflow(job).task(task)
        tdef = self.catalog[spec.call or ""]
        items = [it for it in split.payload["chunks"][i]
                 if self._item_key(tdef, spec.params, it[1]) not in self.state.cache]
        payload = {"store": self.cfg.store.to_json(), "modules": list(self.cfg.task_modules),
                   "call": tdef.name, "params": dict(spec.params),
                   "input": split.payload["input"], "items": items if tdef.per_item else None,
                   "fetch_allow": list(self.cfg.fetch_allow)}
        key = f"{job}/{task}/{i}/{attempt}"
        now = self.clock()  # so a run shorter than progress_interval_s emits no PROGRESS or
        # CACHE_PUT event at all: its CHUNK_DONE says it all
        run = _Run(key=key, split=split.id, last_progress_s=now, last_flush_s=now)
        self.logs[(job, task)] = run.log
        self.metrics[(job, task)] = run.metrics
        run.task = asyncio.create_task(self._run(ck, run, tdef, spec, payload), name=key)
        self.runs[ck] = run

    async def _run(self, ck: tuple[str, str, int, int], run: _Run, tdef: TaskDef,
                   spec: TaskSpec, payload: dict[str, Any]) -> None:
        job, task, i, attempt = ck
        base = {"job": job, "task": task, "split": list(run.split), "chunk": i,
                "attempt": attempt}
        try:
            try:
                await self._fetch_input(tdef, payload)
            except BanzaiError as e:
                self.emit(EventType.CHUNK_FAILED, {**base, "error": str(e), "kind": "fetch"})
                return
            self.executions += 1
            res = await self.runner.run(run.key, kinds.target(tdef), payload,
                                        timeout_s=self.cfg.task_timeout_s,
                                        on_message=lambda k, a: self._message(ck, run, k, a))
            self.runs.pop(ck, None)  # the slot is free again while the outcome is recorded
            await asyncio.shield(self._finish(base, run, tdef, spec, res))
        finally:
            self.runs.pop(ck, None)
            self._dirty.add((job, task))
            self._unstarve()
            self._wake.set()

    async def _finish(self, base: dict[str, Any], run: _Run, tdef: TaskDef, spec: TaskSpec,
                      res: RunResultLike) -> None:
        if run.lost or (base["job"], base["task"]) in self.state.task_done:
            return
        if not res.ok:
            kind = "cancelled" if base["job"] in self.state.cancelled else res.exit_kind
            run.log.append(f"[banzai] attempt {base['attempt']} failed: {res.error}")
            self.emit(EventType.CHUNK_FAILED, {**base, "error": res.error, "kind": kind})
            return
        logs = await asyncio.to_thread(self._save_json, {"log": run.log, "metrics": run.metrics})
        out: dict[str, Any] = {**base, "log": logs, "s": round(res.duration_s, 4)}
        if tdef.per_item:
            out["cache"] = {self._item_key(tdef, spec.params, cid): res.value["items"][path]
                            for path, cid in res.value["inputs"]}
            for v in out["cache"].values():
                if v:
                    self.data.mark(v["c"])
        else:
            out["output"] = res.value["output"]
            self.data.mark(out["output"])
        self.emit(EventType.CHUNK_DONE, out)

    async def _fetch_input(self, tdef: TaskDef, payload: dict[str, Any]) -> None:
        """Make the chunk's input local (fetched from providers if another peer made it)."""
        if payload["items"] is not None:
            await self.data.ensure([c for _, c in payload["items"]], hints=[payload["input"]])
        elif payload["input"] is not None:
            await self.data.ensure([payload["input"]])

    def _save_json(self, obj: Any) -> str:
        return self.store.add_bytes(json.dumps(obj).encode())

    def _message(self, ck: tuple[str, str, int, int], run: _Run, kind: str,
                 args: tuple[Any, ...]) -> None:
        if kind == "log":
            run.log.append(str(args[0]))
        elif kind == "metric":
            run.metrics.append([str(args[0]), int(args[1]), float(args[2])])
        elif kind == "item":  # one item finished: record it soon, so a crash keeps it
            _path, cid, result = args
            spec = self.workflow(ck[0]).task(ck[1])
            run.partial[self._item_key(self.catalog[spec.call or ""], spec.params, cid)] = result
            now = self.clock()
            if now - run.last_flush_s >= self.cfg.progress_interval_s:
                run.last_flush_s = now
                self.emit(EventType.CACHE_PUT, {"cache": run.partial})
                run.partial = {}
        elif kind == "progress":
            now = self.clock()
            if now - run.last_progress_s >= self.cfg.progress_interval_s:  # CHUNK_DONE: 100 %
                run.last_progress_s = now
                job, task, i, attempt = ck
                self.emit(EventType.PROGRESS, {"job": job, "task": task, "chunk": i,
                                               "attempt": attempt, "split": list(run.split),
                                               "progress": round(float(args[0]), 4)})

