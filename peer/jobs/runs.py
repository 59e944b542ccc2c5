"""This peer's running chunks: fetching a chunk's input, the executor call, its messages (log,
metrics, items, progress) and recording the outcome as an event. Loop-owned; an outcome is
recorded under asyncio.shield so that a cancel cannot leave it half-written.
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
from collections.abc import Callable, Container, Mapping
from dataclasses import dataclass, field
from typing import Any

from peer.errors import BanzaiError, StorageFull, disk_full
from peer.ipfs import inline
from peer.ipfs.inline import InlineBlocks
from peer.ipfs.store import Listings
from peer.jobs import kinds, scratch
from peer.jobs.claims import AttemptKey, cancelled_failure
from peer.jobs.live import (
    Kept,
    LiveRecords,
    log_line,
    log_lines,
    metric_point,
    metric_points,
    run_record,
)
from peer.jobs.planner import ANYONE, cache_key, chunk_params, item_cached
from peer.jobs.ports import (
    Clock,
    Data,
    Emit,
    Offload,
    Runner,
    RunResultLike,
    SchedulerConfig,
)
from peer.jobs.spec import TaskSpec
from peer.log import Event, EventType, FailureKind, MeshState
from peer.log.events import cut_text
from tasks.registry import TaskDef

log = logging.getLogger("banzai.scheduler")


@dataclass
class Run:
    key: str
    split: tuple[str, int]
    tdef: TaskDef
    spec: TaskSpec
    task: asyncio.Task[None] | None = None
    lost: bool = False  # our claim lost to another: the outcome is not recorded
    # handed to the runner: only the runner's cancel stops it, whose outcome comes back
    executing: bool = False
    log: Kept[str] = field(default_factory=log_lines)  # (bounded: peer.jobs.live)
    metrics: Kept[list[Any]] = field(default_factory=metric_points)
    last_progress_s: float = 0.0
    last_flush_s: float = 0.0
    partial: dict[str, Any] = field(default_factory=dict)  # item results not yet recorded
    reduce: bool = False  # the assembling step of a task with a reduce: a whole output


@dataclass
class _ExecutorFailure:
    """The outcome of a run whose executor call raised (a bug or a broken executor)."""

    error: str | None
    ok: bool = False
    value: Any = None
    exit_kind: str = FailureKind.CRASH.value
    duration_s: float = 0.0
    no_slot: bool = False


def _key(base: Mapping[str, Any]) -> AttemptKey:
    """The attempt key of a run's base payload."""
    return AttemptKey(base["job"], base["task"], base["chunk"], base["attempt"])


def _base(ak: AttemptKey, run: Run) -> dict[str, Any]:
    """The fields every outcome event of a run carries."""
    return {"job": ak.job, "task": ak.task, "split": list(run.split), "chunk": ak.chunk,
            "attempt": ak.attempt}


class Runs:
    """The chunks this peer claimed and runs; `ended(ak)` is called when one ends (its slot
    is free), whatever the outcome."""

    def __init__(self, cfg: SchedulerConfig, state: MeshState, emit: Emit, store: Listings,
                 runner: Runner, data: Data, live: LiveRecords, clock: Clock, offload: Offload,
                 ended: Callable[[AttemptKey], None],
                 recorded: Callable[[AttemptKey, str | None], None] | None = None,
                 peers: Callable[[], Container[str]] = lambda: ANYONE,
                 implies_done: Callable[[], bool] = lambda: False,
                 done_here: Callable[[str, str], bool] | None = None) -> None:
        self.cfg = cfg
        self.state = state
        self.emit = emit
        self.store = store
        self.runner = runner
        self.data = data
        self.live = live
        self.clock = clock
        self.offload = offload
        self.ended = ended
        # a run's CHUNK_DONE was just emitted (in that loop turn); with its output if it said
        # its task is done (`done`)
        self.recorded = recorded
        self.peers = peers  # the other live peers (whose providing makes an item cached)
        self.implies_done = implies_done  # every member folds a CHUNK_DONE's `done`
        # is a task done as the scheduler judges it (one whose only TASK_DONE is an unvouched
        # lane's that a vouched member runs again is not: session 49); a run's outcome of a
        # done task is not emitted
        self.done_here = done_here or (lambda job, task: (job, task) in state.task_done)
        self.active: dict[AttemptKey, Run] = {}
        self.finishing: set[AttemptKey] = set()  # ended, their outcome being recorded
        # ended, their outcome event not yet emitted (see `outcomes_pending`)
        self.unrecorded: set[AttemptKey] = set()
        self.executions = 0  # chunks handed to the executor (tests count them)
        self.inline: InlineBlocks | None = None  # where inline outputs are kept (the node's)
        self.last_s: dict[str, float] = {}  # call -> duration of its last successful run here
        # per-item call -> that duration per item the run computed (a run of none: unchanged)
        self.last_item_s: dict[str, float] = {}
        # call -> bytes its last successful whole run here wrote (as its worker counted them,
        # up to just above tmpfs_output_max_bytes): where its next output goes (`on_tmpfs`)
        self.out_bytes: dict[str, int] = {}
        # calls whose last run here failed for storage (a full disk, or stopped by the
        # executor's watch over the tmpfs): their per-item chunks' scratch is on disk until
        # one succeeds (a whole run's output is, as its out_bytes are forgotten)
        self.storage_failed: set[str] = set()

    @property
    def inline_max(self) -> int:
        """The bound of an inline output, 0 while nothing keeps them here."""
        return self.cfg.inline_max_bytes if self.inline is not None else 0

    @property
    def free_slots(self) -> int:
        """Slots not taken by a chunk this peer claimed (running, queued or fetching)."""
        return max(0, self.runner.slots - len(self.active))

    @property
    def room(self) -> int:
        """Runs this peer may still claim counting those queued behind its slots
        (`queue_ahead` per slot): more than `free_slots` while a backlog is queued."""
        return self.runner.slots * (1 + self.cfg.queue_ahead) - len(self.active)

    def on_tmpfs(self, tdef: TaskDef) -> bool:
        """True if a whole run of `tdef` is to write its output on tmpfs (its worker checks
        that there is one, with tmpfs_free_min_bytes free): a python task whose last output
        here was small (scratch.small_output)."""
        return (tdef.kind == "python" and not tdef.per_item
                and scratch.small_output(self.out_bytes.get(tdef.name),
                                         self.cfg.tmpfs_output_max_bytes))

    def items_on_tmpfs(self, tdef: TaskDef) -> bool:
        """True if a per-item chunk of `tdef` may keep its scratch on tmpfs (its worker checks
        the floor): unless its call's last run here failed for storage, which a retry on
        tmpfs would meet again."""
        return tdef.name not in self.storage_failed

    def short(self, call: str, items_here: bool = False) -> bool:
        """True if the last successful run of `call` here took at most queue_ahead_max_s,
        or, `items_here` (a chunk of a split whose input is here), at most
        queue_ahead_item_max_s per item of a per-item call (a call not run here yet is not)."""
        last = self.last_s.get(call)
        if last is not None and last <= self.cfg.queue_ahead_max_s:
            return True
        each = self.last_item_s.get(call) if items_here else None
        return each is not None and each <= self.cfg.queue_ahead_item_max_s

    @property
    def frees_soon(self) -> bool:
        """True if a run in the slots is of a call that ran short here (`short`, per item for a
        per-item one): a run queued behind the slots (`queue_ahead`) starts when it ends. Not
        behind runs of long or unknown calls only (a task held open, a sleep): its claim,
        leased and reported running, would hold the task as long as they run, and its job
        could not end meanwhile (session 51: test_lanes_compat's gate). Which executing runs
        hold the slots and which wait behind them is the executor's: a short one is surely in
        a slot only when more of them execute than can wait (runs still fetching, not
        executing, hold none: review r2 of session 51, L2)."""
        executing = [r for r in self.active.values() if r.executing]
        short = sum(self.short(r.tdef.name, items_here=r.tdef.per_item) for r in executing)
        return short > max(0, len(executing) - self.runner.slots)

    @property
    def queued(self) -> bool:
        """True while more runs are active than there are slots and one of them is of a
        short call: some wait in the executor's queue (a backlog of this peer's own short
        tasks, `queue_ahead`), whose outcomes come in quick succession. A lone peer's
        queued long chunk is not counted: its outcomes come far apart. Nor are runs at 0
        slots (workers given up hold every one: Executor.slots): none of them will run,
        and no outcome brings a claim of the next (review h, N3)."""
        return 0 < self.runner.slots < len(self.active) and any(
            self.short(r.tdef.name) for r in self.active.values())

    def running(self, ak: AttemptKey) -> bool:
        """True if a run of ours is behind attempt `ak` (running, fetching or recording)."""
        return ak in self.active or ak in self.finishing

    def start(self, ak: AttemptKey, split: Event, chunk: list[list[str]], tdef: TaskDef,
              spec: TaskSpec, rerun: bool = False, reduce_input: str | None = None) -> None:
        """Run attempt `ak` of chunk `chunk` (its items) of `split` (its claim is ours) in a
        task of its own; `rerun`: the chunk was reopened, every item is computed again;
        `reduce_input`: the chunk is the task's reduce, run on that directory of results."""
        live = self.peers()
        items = [it for it in chunk
                 if rerun or not item_cached(self.state, self.store,
                                             cache_key(tdef, spec.params, it[1]), live)]
        params = (chunk_params(tdef, spec.params, chunk)
                  if spec.split_args and tdef.split_arg is not None else dict(spec.params))
        payload = {"store": self.cfg.store.to_json(), "modules": list(self.cfg.task_modules),
                   "call": tdef.name, "params": params,
                   "input": split.payload["input"], "items": items if tdef.per_item else None,
                   "fetch_allow": list(self.cfg.fetch_allow),
                   "kind": kinds.work_settings(tdef, spec.params, self.cfg.kind_settings,
                                               ak.unit), "inline_max_bytes": self.inline_max,
                   "tmpfs_free_min_bytes": self.cfg.tmpfs_free_min_bytes,
                   "tmpfs_items": self.items_on_tmpfs(tdef)}
        if reduce_input is not None:
            payload.update(input=reduce_input, items=None, reduce=True)
        elif not tdef.per_item:  # the worker counts its output's bytes up to the bound
            payload.update(tmpfs_output=self.on_tmpfs(tdef),
                           tmpfs_output_max_bytes=self.cfg.tmpfs_output_max_bytes)
        now = self.clock()  # so a run shorter than progress_interval_s emits no PROGRESS or
        # CACHE_PUT event at all: its CHUNK_DONE says it all
        run = Run(key=ak.unit, split=split.id, tdef=tdef, spec=spec, last_progress_s=now,
                  last_flush_s=now, reduce=reduce_input is not None)
        run.log, run.metrics = self.live.open((ak.job, ak.task))
        run.task = asyncio.create_task(self._run(ak, run, payload), name=run.key)
        run.task.add_done_callback(lambda _: self._unstarted(ak, run))
        self.active[ak] = run

    def _unstarted(self, ak: AttemptKey, run: Run) -> None:
        """The task of a run ended. One cancelled before its first step (its job cancelled,
        its claim lost or the peer closing in the loop turn of its claim) never ran its body,
        nor so the `finally` that ends a run: it ends here as a run cancelled while fetching
        its input does (a cancel of its job recorded, its slot freed)."""
        if self.active.get(ak) is not run:
            return  # it ran: its `finally` ended it
        del self.active[ak]
        if ak.job in self.state.cancelled and not run.lost:
            self.emit(EventType.CHUNK_FAILED, cancelled_failure(_base(ak, run)))
        self.ended(ak)

    def lose(self, run: Run) -> None:
        """Stop a run whose claim lost; it records nothing (the winner's outcome counts)."""
        run.lost = True
        if not self.runner.cancel(run.key) and run.task is not None:
            run.task.cancel()

    def cancel_job(self, job: str) -> None:
        """Kill this peer's workers of `job` now; runs still fetching input, or not yet
        started (`_unstarted`), stop and record the cancel as a worker's would. A run the
        runner has ended (killed by an earlier cancel, or finished) is left to resume and
        record that outcome: stopping its task in those loop turns would lose it."""
        for ak, r in list(self.active.items()):
            if (ak.job == job and not self.runner.cancel(r.key) and not r.executing
                    and r.task is not None):
                r.task.cancel()

    async def close(self) -> None:
        """Cancel every run and wait for them to end; nothing more is recorded."""
        for r in list(self.active.values()):
            self.runner.cancel(r.key)
            if r.task:
                r.task.cancel()
        await asyncio.gather(*(r.task for r in self.active.values() if r.task),
                             return_exceptions=True)

    # -- one run -------------------------------------------------------------------------
    async def _run(self, ak: AttemptKey, run: Run, payload: dict[str, Any]) -> None:
        base = _base(ak, run)
        try:
            try:
                await self._fetch_input(payload)
            except BanzaiError as e:
                await self._failed(base, str(e), FailureKind.STORAGE.value if disk_full(e)
                                   else FailureKind.FETCH.value)
                return
            except asyncio.CancelledError:
                if ak.job in self.state.cancelled and not run.lost:  # as a cancelled worker
                    self.emit(EventType.CHUNK_FAILED, cancelled_failure(base))
                raise
            except Exception as e:  # OSError (a full disk), a bug: the claim must end too
                log.exception("%s: fetching the input failed", run.key)
                self._crashed(base, run, e, "fetching the input")
                return
            res = await self._execute(ak, run, payload)
            if res.ok:
                self.last_s[run.tdef.name] = res.duration_s
                if payload["items"]:
                    self.last_item_s[run.tdef.name] = res.duration_s / len(payload["items"])
            if res.ok or not (run.lost or res.exit_kind == FailureKind.CANCELLED):
                self._note_output(run, res.value if res.ok else None)
                self._note_storage(run, res)
            if not res.ok and run.tdef.kind != "python":  # a killed run's container
                await self.offload(lambda: kinds.cleanup(run.tdef, ak.unit,
                                                         self.cfg.kind_settings))
            self.active.pop(ak, None)  # the slot is free again while the outcome is recorded
            self.finishing.add(ak)
            self.unrecorded.add(ak)
            try:
                await asyncio.shield(self._finish(base, run, res))
            except Exception as e:  # e.g. the run's log could not be stored (ENOSPC)
                log.exception("%s: recording the outcome failed", run.key)
                self._crashed(base, run, e, "recording the outcome")
        finally:
            self.active.pop(ak, None)
            self.finishing.discard(ak)
            self.unrecorded.discard(ak)
            self.ended(ak)

    def _note_output(self, run: Run, value: Any) -> None:
        """Remember the bytes a whole run wrote (its worker's count), or forget them if it
        failed (it may have filled the tmpfs; a run stopped because its claim lost or its
        job was cancelled says nothing of its size) or did not count: then the call's next
        output goes to disk."""
        if run.tdef.per_item:
            return
        n = value.get("bytes") if isinstance(value, dict) else None
        if isinstance(n, int) and not isinstance(n, bool) and n >= 0:
            self.out_bytes[run.tdef.name] = n
        else:
            self.out_bytes.pop(run.tdef.name, None)

    def _note_storage(self, run: Run, res: RunResultLike) -> None:
        """Remember whether the run of a call failed for storage (see `storage_failed`)."""
        if res.ok:
            self.storage_failed.discard(run.tdef.name)
        elif res.exit_kind == FailureKind.STORAGE:
            self.storage_failed.add(run.tdef.name)

    def _crashed(self, base: dict[str, Any], run: Run, e: Exception, doing: str) -> None:
        """End our claim of a run that raised something unexpected (kind crash, or storage
        for a full disk: retried; the claim must not outlive the run)."""
        if run.lost or self.done_here(base["job"], base["task"]) or self._gone(base):
            return
        kind = (FailureKind.CANCELLED.value if base["job"] in self.state.cancelled
                else FailureKind.STORAGE.value if isinstance(e, OSError)
                and e.errno == errno.ENOSPC else FailureKind.CRASH.value)
        self.emit(EventType.CHUNK_FAILED, {**base, "kind": kind,
                                           "error": cut_text(f"{doing}: {type(e).__name__}: {e}")})

    async def _execute(self, ak: AttemptKey, run: Run, payload: dict[str, Any],
                       ) -> RunResultLike:
        """The executor call; an executor that raises, or has not ended the run by its
        deadline (`run_end_grace_s`: the run is then cancelled), fails the attempt as a crash
        (retried) rather than leaving the chunk claimed forever."""
        self.executions += 1
        run.executing = True  # from here a cancel is the runner's (see cancel_job)
        cfg = self.cfg
        deadline_s = cfg.task_timeout_s * (1 + cfg.queue_ahead) + cfg.run_end_grace_s
        try:
            async with asyncio.timeout(deadline_s):  # (no task of its own: no turn's delay)
                res: RunResultLike = await self.runner.run(
                    run.key, kinds.target(run.tdef), payload, timeout_s=cfg.task_timeout_s,
                    on_message=lambda k, a: self._message(ak, run, k, a))
        except TimeoutError:
            log.error("%s: the executor has not ended the run %g s after it was handed it",
                      run.key, deadline_s)
            return _ExecutorFailure(error=(
                f"run {run.key} did not end {deadline_s:g} s after it was handed to the "
                f"executor (task_timeout_s {cfg.task_timeout_s:g} s): its worker never "
                "answered, or none could start"))
        except Exception as e:
            log.exception("%s: the executor failed", run.key)
            return _ExecutorFailure(error=f"executor error: {type(e).__name__}: {e}")
        return res

    async def _finish(self, base: dict[str, Any], run: Run, res: RunResultLike) -> None:
        ak = _key(base)
        try:
            await self._record(base, run, res)
        finally:  # in the loop turn of the outcome's emit: no await after it
            self.unrecorded.discard(ak)

    @property
    def outcomes_pending(self) -> bool:
        """True while a run has ended and its outcome event is not yet emitted (the run's
        record is being saved, a few ms): what it emits next is its CHUNK_DONE."""
        return bool(self.unrecorded)

    async def _record(self, base: dict[str, Any], run: Run, res: RunResultLike) -> None:
        if run.lost or self.done_here(base["job"], base["task"]) or self._gone(base):
            return
        if not res.ok:
            await self._record_failure(base, run, res)
            return
        record = run_record(run.log, run.metrics)  # (bounded as they came)
        blocks = res.value.get("inline") if isinstance(res.value, dict) else None
        carried: dict[str, str] | None = None
        try:
            if blocks is not None and self.inline is not None:
                logs, carried = await self._inline_record(record, res.value["output"], blocks)
            else:
                logs = await self.offload(lambda: self._save_json(record))
        except StorageFull as e:
            await self._failed(base, str(e), FailureKind.STORAGE.value)
            return
        out: dict[str, Any] = {**base, "log": logs, "s": round(res.duration_s, 4)}
        if carried is not None:
            out["inline"] = carried
        if run.tdef.per_item and not run.reduce:
            out["cache"] = {cache_key(run.tdef, run.spec.params, cid): res.value["items"][path]
                            for path, cid in res.value["inputs"]}
            for v in out["cache"].values():
                if v:
                    self.data.mark(v["c"])
        else:
            out["output"] = res.value["output"]
            self.data.mark(out["output"])
            if self._whole_task(base, run):
                out["done"] = {"key": cache_key(run.tdef, run.spec.params, None)
                               if run.spec.cache else None}
        if self._gone(base):  # deleted or compacted while the record was saved (awaits above)
            return
        self.emit(EventType.CHUNK_DONE, out)
        if self.recorded is not None:
            self.recorded(_key(base), out["output"] if "done" in out else None)

    def _whole_task(self, base: Mapping[str, Any], run: Run) -> bool:
        """Is this run the one chunk of its task's implicit split (a task without input,
        which no peer splits: its output is the task's, as `Scheduler._assemble` would emit
        it), in a job not cancelled, while every member folds an implied TASK_DONE? Its
        CHUNK_DONE then says the task is done (`done`, with the key `_assemble` would give):
        one event fewer per task for every peer to receive, log and fold."""
        st = self.state
        split = st.splits.get((base["job"], base["task"]))
        return (base["chunk"] == 0 and split is not None and split.id == tuple(run.split)
                and st.implicit(split) and base["job"] not in st.cancelled
                and self.implies_done())

    async def _record_failure(self, base: dict[str, Any], run: Run, res: RunResultLike,
                              ) -> None:
        """Record a failed run: its record stored (unless it never ran: no slot), its
        CHUNK_FAILED naming it (`log`)."""
        kind = "cancelled" if base["job"] in self.state.cancelled else res.exit_kind
        run.log.append(log_line(f"[banzai] attempt {base['attempt']} failed: {res.error}",
                                self.live.log_max_bytes))
        logs = None if res.no_slot else await self._failed_record(run)
        if self._gone(base):  # (as `_failed`: nothing is emitted)
            return
        if logs is not None:  # stored: the API reads it there (not twice)
            self.live.close((base["job"], base["task"]), run.log, run.metrics)
        await self._failed(base, res.error, kind, counts=not res.no_slot, logs=logs)

    async def _failed_record(self, run: Run) -> str | None:
        """Store the record of a failed run (what it printed and reported before it failed,
        bounded as a successful run's: `run_record`) and return its CID, which its
        CHUNK_FAILED carries (`log`); None if it could not be stored (a full disk: the
        failure is recorded all the same, with no log)."""
        record = run_record(run.log, run.metrics)
        try:
            return await self.offload(lambda: self._save_json(record))
        except (BanzaiError, OSError) as e:
            log.warning("%s: the failed run's log was not stored: %s", run.key, e)
            return None

    async def _failed(self, base: dict[str, Any], error: str | None, kind: str,
                      counts: bool = True, logs: str | None = None) -> None:
        """Record a failed attempt; one that met a full disk waits storage_retry_s first, so
        that the retries of a peer whose disk stays full do not spin. Not `counts`: a run
        that never started because no worker slot could run it (the executor's workers
        given up hold every one) is not one of the chunk's max_attempts (`claims.counted`;
        MAX_UNCOUNTED bounds them, and a peer at 0 slots claims nothing: no loop)."""
        if kind == FailureKind.STORAGE:
            self.unrecorded.discard(_key(base))  # its outcome is not imminent: hold nothing
            await asyncio.sleep(self.cfg.storage_retry_s)
        if not self._gone(base):  # (the error cut: the whole text is in the run's log)
            error = None if error is None else cut_text(error)
            self.emit(EventType.CHUNK_FAILED, {**base, "error": error, "kind": kind,
                                               **({} if counts else {"counts": False}),
                                               **({} if logs is None else {"log": logs})})

    def _gone(self, base: Mapping[str, Any]) -> bool:
        """The run's job is no longer live (compacted, so finished; or deleted, maybe
        forgotten since): its outcome says nothing anyone needs, and an event of a deleted
        job emitted once every member folded its deletion could reach a peer after it forgot
        the job, to be folded into a job nobody has there (docs/architecture.md,
        Compaction, item 9). Nothing is emitted."""
        return base["job"] not in self.state.jobs

    async def _fetch_input(self, payload: dict[str, Any]) -> None:
        """Make the chunk's input local (fetched from providers if another peer made it)."""
        if payload["items"] is not None:
            await self.data.ensure([c for _, c in payload["items"]], hints=[payload["input"]])
        elif payload["input"] is not None:
            await self.data.ensure([payload["input"]])
        if self.inline is not None:  # the worker reads what it is given from disk: an
            # inline output kept here may still wait for the writer (its write_wait_s)
            await self.inline.landed(
                [c for _, c in payload["items"]] if payload["items"] is not None
                else [payload["input"]] if payload["input"] is not None else [])

    def _save_json(self, obj: Any) -> str:
        return self.store.add_bytes(json.dumps(obj).encode())

    async def _inline_record(self, record: Any, output: str, carried: dict[str, str],
                             ) -> tuple[str, dict[str, str]]:
        """Keep a small output's blocks (`carried`: the worker's, base64; unsynced: the
        CHUNK_DONE carrying them is fsynced before it leaves, Node.flush) and its run
        record with them if the bound allows; returns the record's CID and the event's
        `inline` value. IntegrityError if the worker's blocks do not match their CIDs."""
        assert self.inline is not None
        bound = self.cfg.inline_max_bytes
        blocks = inline.decode(carried, [output], bound)
        data = json.dumps(record).encode()
        if sum(map(len, blocks.values())) + len(data) <= bound:
            logs, more = inline.import_bytes(data)
            carried = {**carried, **inline.encode(more)}
            blocks.update(inline.checked(more, logs))
        else:  # a long log: stored and synced as before, the output alone inline
            logs = await self.offload(lambda: self._save_json(record))
        self.inline.note(output)  # before the write, which un-notes it if it fails
        self.inline.store_blocks(blocks, output)
        return logs, carried

    def _message(self, ak: AttemptKey, run: Run, kind: str, args: tuple[Any, ...]) -> None:
        if kind == "log":
            run.log.append(log_line(str(args[0]), self.live.log_max_bytes))
        elif kind == "metric":
            run.metrics.append(metric_point(*args[:3]))
        elif kind == "items":  # items finished, outputs durable: record them soon, so
            self._items(run, args[0])  # that a crash keeps them
        elif kind == "item":  # one item: [path, input cid, result]
            self._items(run, [list(args)])
        elif kind == "progress" and ak.job in self.state.jobs:
            now = self.clock()
            if now - run.last_progress_s >= self.cfg.progress_interval_s:  # CHUNK_DONE: 100 %
                run.last_progress_s = now
                self.emit(EventType.PROGRESS, {"job": ak.job, "task": ak.task,
                                               "chunk": ak.chunk, "attempt": ak.attempt,
                                               "split": list(run.split),
                                               "progress": round(float(args[0]), 4)})

    def _items(self, run: Run, items: list[list[Any]]) -> None:
        """Finished items ([path, input cid, result] each) of a running chunk: their cache
        entries go out in one CACHE_PUT per progress_interval_s."""
        for _path, cid, result in items:
            run.partial[cache_key(run.tdef, run.spec.params, cid)] = result
        now = self.clock()
        if now - run.last_flush_s >= self.cfg.progress_interval_s:
            run.last_flush_s = now
            self.emit(EventType.CACHE_PUT, {"cache": run.partial})
            run.partial = {}
