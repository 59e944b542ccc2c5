"""Pool of long-lived worker processes that run `module:function` targets for the daemon.

Each worker leads its own process group, so a kill (cancel, timeout, close, the watch over
the tmpfs and the disk: peer.jobs.watch) ends every process a task started. Concurrency rule:
use it from one event loop; nothing there blocks on a worker (pipes are read with add_reader
and written with add_writer, processes are started and joined on one private helper thread,
the watch walks a run's directory on a thread of its own).
"""

from __future__ import annotations

import ast
import asyncio
import collections
import contextlib
import enum
import fcntl
import importlib
import itertools
import json
import logging
import multiprocessing
import multiprocessing.util
import os
import pickle
import queue
import reprlib
import resource
import select
import signal
import struct
import sys
import tempfile
import termios
import threading
import time
import traceback
import weakref
from collections.abc import Callable, Coroutine, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from multiprocessing.connection import Connection
from multiprocessing.connection import wait as ready
from multiprocessing.process import BaseProcess
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any, NamedTuple, Protocol

from peer.dataentry import DIR_NOFOLLOW, ensure_dir, remove_tree
from peer.errors import BanzaiError, ConfigError, disk_full
from peer.jobs import scratch
from peer.jobs.heap import HeapConfig, libc_mallopt, tune
from peer.jobs.scratch import Space, alive, free
from peer.jobs.watch import Watch, Watched, disk_used

__all__ = ["Executor", "ExecutorConfig", "ExitKind", "Handle", "OnMessage", "RunResult", "Timer",
           "sweep_bases"]

log = logging.getLogger(__name__)

OnMessage = Callable[[str, tuple[Any, ...]], None]
"""Receives ("progress", (f,)), ("log", (msg,)), ("metric", (name, step, value)); must not block."""

# forkserver, not fork: the parent runs an event loop and threads.
_MP = multiprocessing.get_context("forkserver")
# multiprocessing makes the forkserver's socket at <temp dir>/pymp-XXXXXXXX/listener-XXXXXXXX,
# and a socket's path holds at most 107 bytes: a temp dir longer than this (a peer's TMPDIR
# is under its data dir) made every worker start fail ("AF_UNIX path too long"; session 50,
# helper a). CPython 3.12 falls back to a short directory itself; 3.11 does not.
SOCKET_TEMP_DIR_MAX_BYTES = 107 - len("/pymp-12345678/listener-12345678")
SHORT_TEMP_DIRS = ("/tmp", "/dev/shm", "/var/tmp")
_FRAME = struct.Struct("!Q")  # frames both ways: 8-byte length, then a pickle
# The most a worker's frame may announce. Frames carry metadata (a run's JSON result: CIDs,
# per-item cache entries, inline outputs of at most 16 KiB; a log line; a traceback), never
# outputs (files); one announcing more ends the worker, which would otherwise grow the
# daemon's read buffer until one of the two runs out of memory.
_MAX_FRAME_BYTES = 64 << 20
_PICKLE = pickle.HIGHEST_PROTOCOL
_WRITE_PARTS = 64  # parts of unwritten requests one writev hands a worker's pipe (IOV_MAX: 1024)
# One read per turn of a worker's pipe (`_on_readable`): up to ~400 frames of a log flood,
# about 1 ms of the loop's time to handle.
_READ_BYTES = 1 << 14
_PROGRESS_INTERVAL_S = 0.05  # at most 20 progress messages a second per run
_TRACE_FRAMES = 8
_RESPAWN_BACKOFF_S = 1.0  # before replacing a worker that died before it was ready
# A worker start that fails (the forkserver cannot fork: a machine at its process or memory
# limit, where it dies too and the next start launches another; a worker that dies before it
# is ready) is tried again after _RESPAWN_BACKOFF_S, doubled per failure in a row up to this:
# a lab machine loaded for hours is tried twice a minute, not every second (each a fresh
# forkserver's imports and a logged traceback), and recovers within that once it can fork.
_RESPAWN_BACKOFF_MAX_S = 30.0
# Failed starts in a row, no worker ready meanwhile, from which the executor offers no slot:
# its queued runs fail at once as `no_slot` (not counted against their tasks) and so does
# each new one, so the peer holds no work it cannot start and the mesh places it elsewhere
# (as while given-up workers hold every slot); the first worker ready ends it (session 50).
_FAILED_STARTS_NO_SLOT = 3
# Times a run whose worker died before reading it goes back to the queue; then it fails as
# a crash (a worker that dies each time before it reads, say at its start, would else
# fork and requeue for ever: review r, session 40)
_MAX_REQUEUES = 2
_BASE_PREFIX = "banzai-exec-"  # + PID + "-" + random: one executor's run directories
_UNNAMED_STALE_S = 86400.0  # a run directory of the earlier form (no PID) untouched this long


class Handle(Protocol):
    """A pending delayed call."""

    def cancel(self) -> None: ...


class Timer(Protocol):
    """Time and delayed calls for run timeouts, kill grace and durations: the event loop,
    or a fake clock in tests. Callbacks run on the event loop's thread and must not block."""

    def time(self) -> float: ...
    def call_later(self, delay: float, callback: Callable[[], object]) -> Handle: ...


class ExitKind(enum.StrEnum):
    """How a run ended."""

    OK = "ok"
    ERROR = "error"
    CRASH = "crash"
    TIMEOUT = "timeout"
    CANCELLED = "cancelled"
    MEMORY = "memory"
    STORAGE = "storage"  # the target raised because the disk is full (ENOSPC, EDQUOT)


@dataclass(frozen=True)
class ExecutorConfig:
    """Settings of one executor; invalid values raise ConfigError at construction."""

    slots: int
    default_timeout_s: float = 3600.0
    memory_limit_mb: int | None = None  # RLIMIT_AS per worker; None = no limit
    kill_grace_s: float = 0.2  # SIGTERM, then SIGKILL after this
    # A killed worker not gone this long after its SIGKILL (in the kernel's uninterruptible
    # sleep: a hung file system or device) is given up: its run fails saying so, a new worker
    # takes its slot, and it is joined whenever it exits.
    stuck_after_s: float = 30.0
    preload: tuple[str, ...] = ()  # modules the forkserver imports in order, then each worker
    env: Mapping[str, str] = field(default_factory=dict, hash=False)  # extra worker env
    # Where the runs' work directories go (a peer: <data dir>/work, swept at its start);
    # None: the system temp directory. Either way under banzai-exec-PID-* (`sweep_bases`).
    work_dir: str | None = None
    # Each worker's C heap thresholds (glibc; see peer.jobs.heap); None: the C library's own.
    heap: HeapConfig | None = field(default_factory=HeapConfig)
    # Threads of each worker's math libraries (OpenMP, OpenBLAS, MKL, numba: MATH_THREAD_VARS),
    # unless the process's environment sizes them; None: theirs (one per core). A worker is
    # one slot: on 2 unpinned cores, OpenBLAS's 2 threads per worker tripled EXTRACT_MFCC's
    # CPU per file and changed its output's bytes (a threaded sgemm's sums).
    math_threads: int | None = 1
    # The watch (peer.jobs.watch) over what runs write that the memory limit does not bound.
    # While a run is on a worker, every tmpfs_check_s: the free space of the tmpfs that python
    # tasks' scratch may use (peer.jobs.scratch.TMPFS) and the host's MemAvailable; when
    # either is below tmpfs_kill_min_bytes, every worker with a directory there is killed,
    # its run fails as STORAGE and that directory is removed at once (a task wrote 12 GB of
    # RAM there at 130 MB/s). And a run whose work directory on disk holds more than
    # task_scratch_max_bytes (None: no bound) is killed, failing as ERROR (another wrote
    # 40 GB). tmpfs_check_s None: no watch at all.
    tmpfs_check_s: float | None = 0.5
    tmpfs_kill_min_bytes: int = 128 << 20
    task_scratch_max_bytes: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "preload", tuple(self.preload))
        object.__setattr__(self, "env", dict(self.env))
        checks = [
            (_is_int(self.slots) and self.slots >= 1, "slots", "must be an integer >= 1"),
            (self.default_timeout_s > 0, "default_timeout_s", "must be positive"),
            (
                self.memory_limit_mb is None
                or (_is_int(self.memory_limit_mb) and self.memory_limit_mb > 0),
                "memory_limit_mb",
                "must be a positive integer or None",
            ),
            (self.kill_grace_s >= 0, "kill_grace_s", "must not be negative"),
            (self.stuck_after_s > 0, "stuck_after_s", "must be positive"),
            (all(isinstance(m, str) and m for m in self.preload), "preload", "must be names"),
            (all(_is_str_pair(k, v) for k, v in self.env.items()), "env", "must map str to str"),
            (self.math_threads is None or (_is_int(self.math_threads) and self.math_threads >= 1),
             "math_threads", "must be an integer >= 1 or None"),
            (self.tmpfs_check_s is None or self.tmpfs_check_s > 0, "tmpfs_check_s",
             "must be positive or None"),
            (_is_int(self.tmpfs_kill_min_bytes) and self.tmpfs_kill_min_bytes >= 0,
             "tmpfs_kill_min_bytes", "must be an integer >= 0"),
            (self.task_scratch_max_bytes is None or (_is_int(self.task_scratch_max_bytes)
                                                     and self.task_scratch_max_bytes > 0),
             "task_scratch_max_bytes", "must be a positive integer or None"),
        ]
        for ok, name, why in checks:
            if not ok:
                raise ConfigError(f"executor {name} {why}", field=name)

    @classmethod
    def local(cls, slots: int = 2) -> ExecutorConfig:
        """Preset for tests: short timeout and kill grace."""
        return cls(slots=slots, default_timeout_s=30.0, kill_grace_s=0.05)


@dataclass(frozen=True)
class RunResult:
    """Outcome of one run; failures are data, never exceptions."""

    ok: bool
    value: Any  # the target's return value after a JSON round trip, when ok
    error: str | None  # e.g. "ValueError: bad thing", "killed by signal 9", "cancelled"
    trace: str | None  # short traceback of an exception raised by the target
    duration_s: float  # time on a worker (0 if it never started)
    exit_kind: ExitKind
    # It failed at once, never started, because no worker slot can run (`_no_slot_left`):
    # the peer's circumstances, not the work's (its failure is not counted: Runs)
    no_slot: bool = False


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_str_pair(key: object, value: object) -> bool:
    return isinstance(key, str) and isinstance(value, str)


def _cancelled(duration_s: float) -> RunResult:
    return RunResult(False, None, "cancelled", None, duration_s, ExitKind.CANCELLED)


@dataclass(eq=False)
class _Job:
    key: str
    target: str
    payload: bytes
    timeout_s: float
    on_message: OnMessage | None
    fut: asyncio.Future[RunResult]
    run_id: int = 0
    worker: _Worker | None = None  # None while queued
    started: float = 0.0
    timer: Handle | None = None
    kill_kind: ExitKind | None = None  # set when we kill the worker on purpose
    kill_error: str | None = None  # why, if not the kind's usual words
    watched: Watched | None = None  # while on a worker
    requeues: int = 0  # times it went back to the queue unread (`_requeue`)


@dataclass(eq=False)
class _Worker:
    proc: BaseProcess
    tx: Connection  # parent -> worker requests (non-blocking writes: `_send`)
    rx: Connection  # worker -> parent frames (non-blocking reads)
    ready_fut: asyncio.Future[bool]  # True once ready, False if it died first
    gone: asyncio.Future[None]  # set once the process is joined, or given up (`_give_up`)
    buf: bytearray = field(default_factory=bytearray)
    ready: bool = False
    alive: bool = True
    killing: bool = False
    kill_timer: Handle | None = None
    job: _Job | None = None
    removing_bytes: int = 0  # what its thread reported it is removing of its run directories
    bad_frame: bool = False  # it sent a frame it never sends: being killed, the rest unread
    stuck: bool = False  # it outlived its SIGKILL by stuck_after_s: replaced already
    out: collections.deque[memoryview] = field(default_factory=collections.deque)  # unwritten
    # A descriptor of the process itself (pidfd_open at its start; -1: none), readable once
    # it exits: its sentinel is a pipe from the forkserver, which reads as an exit when the
    # forkserver dies (`_on_exit`: the worker runs on, watched through this)
    pidfd: int = -1
    orphaned: bool = False  # its forkserver died: its exit is watched on `pidfd`


class Executor:
    """Runs targets on `cfg.slots` long-lived worker processes; extra runs queue FIFO.

    `timer` (default: the running event loop) times runs out, escalates kills to SIGKILL,
    measures durations and paces the watch (peer.jobs.watch), which reads `space` (the
    tmpfs's and the memory's free bytes) and `used` (a file system's used bytes); both run
    on the event loop and must be quick.
    """

    def __init__(self, cfg: ExecutorConfig, *, timer: Timer | None = None,
                 space: Callable[[], Space | None] = scratch.space,
                 used: Callable[[Path], int | None] = disk_used) -> None:
        self.cfg = cfg
        self._given_timer = timer
        self._space = space
        self._used = used
        self._watch: Watch | None = None  # set by start() unless cfg.tmpfs_check_s is None
        self._timer: Timer | None = None  # set by start()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._helper: ThreadPoolExecutor | None = None
        self._stop = asyncio.Event()
        self._closed = False
        self._base = Path()
        self._remove_base: weakref.finalize[Any, Any] | None = None
        self._workers: set[_Worker] = set()
        self._unreplaced = 0  # workers given up and not replaced (`_give_up`)
        self._failed_starts = 0  # worker starts failed in a row (`_start_failed`)
        self._start_error = ""  # the last one's cause
        self._idle: list[_Worker] = []
        self._queue: collections.deque[_Job] = collections.deque()
        self._jobs: dict[str, _Job] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._ids = itertools.count(1)
        self._env: dict[str, str] = dict(cfg.env)  # the workers' env (start() adds to it)

    @property
    def slots(self) -> int:
        """Slots that can run: cfg.slots, less those left empty while workers given up
        (`_give_up`) live past cfg.slots of them; 0 while worker starts keep failing with
        none ready (`_starts_failing`). At 0, no run can start (each fails at once:
        `_no_slot_left`) until one of those exits or a worker starts."""
        return 0 if self._starts_failing else self.cfg.slots - self._unreplaced

    @property
    def failed_starts(self) -> int:
        """Worker starts that failed in a row (0 once one is ready)."""
        return self._failed_starts

    @property
    def _starts_failing(self) -> bool:
        return self._failed_starts >= _FAILED_STARTS_NO_SLOT and not self.ready_workers

    @property
    def ready_workers(self) -> int:
        """Workers ready to run (fewer than `slots` while they start or warm up, or while
        workers given up are not replaced)."""
        return sum(1 for w in self._workers if w.ready and not w.stuck)

    @property
    def given_up_workers(self) -> int:
        """Workers given up (`_give_up`) that have not exited yet."""
        return sum(1 for w in self._workers if w.stuck)

    @property
    def queued(self) -> int:
        """Runs waiting for a free worker."""
        return len(self._queue)

    @property
    def free_slots(self) -> int:
        """How many more runs would start without queueing."""
        busy = sum(1 for w in self._workers if w.job is not None)
        return max(0, self.slots - len(self._queue) - busy)

    async def __aenter__(self) -> Executor:
        await self.start()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def start(self, *, wait: bool = True) -> None:
        """Start the workers. With `wait`, return once each is ready (RuntimeError if one cannot
        start); without, return at once: runs queue until a worker is ready, and a worker that
        cannot start is logged and retried, as one that died would be. DataError if the work
        dir is not a directory of its own (a symlink: its stale run directories are swept)."""
        if self._loop is not None:
            raise RuntimeError("executor already started")
        if self.cfg.work_dir is not None:  # swept below: a directory of its own, not a link
            ensure_dir(Path(self.cfg.work_dir), "the run directories' dir", real=True)
        self._loop = asyncio.get_running_loop()
        self._timer = self._given_timer or self._loop
        if self.cfg.tmpfs_check_s is not None:
            self._watch = Watch(self.cfg.tmpfs_check_s, self.cfg.tmpfs_kill_min_bytes,
                                self.cfg.task_scratch_max_bytes, self, self._timer.call_later,
                                self._space, self._used)
        self._helper = ThreadPoolExecutor(1, thread_name_prefix="banzai-executor")
        where = Path(self.cfg.work_dir or tempfile.gettempdir())
        swept = await self._loop.run_in_executor(self._helper, sweep_bases, where)
        if swept:
            log.info("removed %d run directories of executors killed before they closed "
                     "(in %s)", swept, where)
        self._base, held = scratch.made_and_held(where, f"{_BASE_PREFIX}{os.getpid()}-")
        # Removed by close(), else when this executor is collected or the process exits;
        # a killed process's is swept by the next executor started in the same directory.
        self._remove_base = weakref.finalize(self, _remove_base, self._base, os.getpid(), held)
        own_safe_path = {SAFE_PATH: v} if (v := os.environ.get(SAFE_PATH)) else {}
        self._env = {**_math_env(self.cfg.math_threads), **own_safe_path, **self.cfg.env}
        _socket_dir_that_fits()  # (before the forkserver's socket is made)
        # Workers fork from the forkserver with these already imported (if it is not running yet).
        _MP.set_forkserver_preload(["__main__", *_main_imports(), __name__, *self.cfg.preload])
        if not wait:
            for _ in range(self.cfg.slots):
                self._track(self._respawn(0.0))
            return
        spawns = [self._track(self._spawn()) for _ in range(self.cfg.slots)]
        await asyncio.wait(spawns)
        failed = [t for t in spawns if t.exception() is not None or not t.result()]
        if failed:
            await self.close()
            cause = failed[0].exception()
            raise RuntimeError("executor workers failed to start (see the log)") from cause

    async def close(self) -> None:
        """Cancel queued and running work, stop every worker and join it (but one given up,
        `_give_up`: left running, logged)."""
        if self._loop is None or self._closed:
            return
        self._stop.set()
        if self._watch is not None:
            self._watch.close()
        while self._queue:
            self._finish(self._queue.popleft(), _cancelled(0.0))
        for w in list(self._workers):
            if w.job is not None and w.job.kill_kind is None:
                w.job.kill_kind = ExitKind.CANCELLED
            self._kill(w)
        await self._all_gone()
        loop = self._running_loop()
        for w in self._workers:  # given up, alive: not watched nor joined any more (its exit,
            loop.remove_reader(w.proc.sentinel)  # if it comes, would start a join after the
            loop.remove_reader(w.rx.fileno())  # helper thread's end)
            loop.remove_writer(w.tx.fileno())
            if w.orphaned:
                loop.remove_reader(w.pidfd)
            w.tx.close()
            w.rx.close()
            _close_pidfd(w)
            # nor at this process's exit, where multiprocessing joins every child it still
            # lists, with no timeout (util._exit_function). Private, as is since Python 3.4,
            # but nothing public drops a running child from that list: Process.close()
            # (which discards it so) refuses one still running, join(timeout) keeps it
            multiprocessing.process._children.discard(w.proc)  # type: ignore[attr-defined]
            log.error("executor worker %s, given up, is left running", w.proc.pid)
        if self._helper is not None:
            self._helper.shutdown(wait=True)
            self._helper = None
        if self._remove_base is not None:
            self._remove_base()
        self._closed = True

    async def _all_gone(self) -> None:
        """For `close`: return once every worker is joined, or given up, and the tasks done."""
        while True:
            # (a worker given up, before or during this wait, is `gone` though it may never
            # exit)
            while waits := [*self._tasks,
                            *(w.gone for w in self._workers if not w.gone.done())]:
                await asyncio.wait(waits)
            # One given up that has exited, its exit not heard yet (the loop has not turned
            # since: so when every worker was given up, nothing above waits) is reaped as
            # any other, not left "running" with its pipes open (session 46)
            exited = [w for w in self._workers if w.alive and _exited(w)]
            if not exited:
                return
            for w in exited:
                self._on_exit(w)

    async def run(
        self,
        key: str,
        target: str,
        payload: Any,
        *,
        timeout_s: float | None = None,
        on_message: OnMessage | None = None,
    ) -> RunResult:
        """Run `target(payload, ctx)` on a free worker; raises only for misuse."""
        loop = self._running_loop()
        if self._stop.is_set():
            raise RuntimeError("executor is closed")
        if key in self._jobs:
            raise ValueError(f"a run with key {key!r} is already queued or running")
        module, _, name = target.partition(":")
        if not module or not name:
            raise ValueError(f"target {target!r} is not 'module:function'")
        timeout = self.cfg.default_timeout_s if timeout_s is None else timeout_s
        if not timeout > 0:
            raise ValueError("timeout_s must be positive")
        if not self.slots:  # (first: no pickle made for a run that fails at once)
            return self._unrunnable()
        job = _Job(key, target, pickle.dumps(payload, _PICKLE), timeout, on_message,
                   loop.create_future())
        self._jobs[key] = job
        self._queue.append(job)
        self._dispatch()
        try:
            return await asyncio.shield(job.fut)
        except asyncio.CancelledError:
            if self._jobs.get(key) is job:
                self.cancel(key)
                self._jobs.pop(key, None)  # the key is free again; a kill goes on
            raise

    def cancel(self, key: str) -> bool:
        """Drop a queued run or kill the worker of a running one; False if neither."""
        job = self._jobs.get(key)
        if job is None:
            return False
        if job.worker is None:
            self._queue.remove(job)
            self._finish(job, _cancelled(0.0))
            return True
        if job.kill_kind is None:
            job.kill_kind = ExitKind.CANCELLED
        self._kill(job.worker)
        return True

    # -- workers ---------------------------------------------------------------------------

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            raise RuntimeError("executor not started")
        return self._loop

    def _track(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = self._running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("executor housekeeping failed", exc_info=task.exception())

    async def _spawn(self) -> bool:
        """Start one worker; True once it is ready, False if it died before."""
        loop = self._running_loop()
        proc, tx, rx = await loop.run_in_executor(self._helper, self._start_process)
        w = _Worker(proc, tx, rx, loop.create_future(), loop.create_future(), pidfd=_pidfd(proc))
        self._workers.add(w)
        os.set_blocking(rx.fileno(), False)
        os.set_blocking(tx.fileno(), False)
        loop.add_reader(rx.fileno(), self._on_readable, w)
        loop.add_reader(proc.sentinel, self._on_exit, w)
        if self._stop.is_set():
            self._kill(w)
        return await w.ready_fut

    def _start_process(self) -> tuple[BaseProcess, Connection, Connection]:
        """Runs on the helper thread: the forkserver round trip may take a while."""
        child_rx, tx = _MP.Pipe(duplex=False)
        rx, child_tx = _MP.Pipe(duplex=False)
        cfg = self.cfg
        spec = _Spec(dict(self._env), cfg.preload, cfg.memory_limit_mb, cfg.heap,
                     self._counts_removals())
        proc = _MP.Process(
            target=_worker_main, args=(child_rx, child_tx, spec), name="banzai-worker", daemon=True
        )
        try:
            with _safe_path():
                proc.start()
        except BaseException:
            tx.close()
            rx.close()
            raise
        finally:
            child_rx.close()
            child_tx.close()
        return proc, tx, rx

    async def _respawn(self, delay_s: float) -> None:
        """Replace a dead worker, after `delay_s` (on the executor's timer) if it died before
        it was ready; a start that fails is tried again (`_start_failed`'s backoff)."""
        while True:
            if delay_s > 0:
                await self._pause(delay_s)
            if self._stop.is_set():
                return
            try:
                await self._spawn()
                return
            except Exception as e:
                delay_s = self._start_failed(f"{type(e).__name__}: {e}", exc=e)

    async def _pause(self, delay_s: float) -> None:
        """Wait `delay_s` on the executor's timer, or until it closes."""
        woken = self._running_loop().create_future()
        handle = self._clock().call_later(
            delay_s, lambda: None if woken.done() else woken.set_result(None))
        stop = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait([woken, stop], return_when=asyncio.FIRST_COMPLETED)
        finally:
            handle.cancel()
            stop.cancel()
            woken.cancel()

    def _start_failed(self, why: str, exc: BaseException | None = None) -> float:
        """A worker did not start (`why`): counted, logged (a traceback the first time in a
        row), and the delay before the next try returned. From _FAILED_STARTS_NO_SLOT in a
        row with no worker ready, the executor offers no slot (`slots`)."""
        self._failed_starts += 1
        self._start_error = why
        n = self._failed_starts
        delay_s = min(_RESPAWN_BACKOFF_S * 2.0 ** min(n - 1, 16), _RESPAWN_BACKOFF_MAX_S)
        log.error("cannot start an executor worker (%d failed in a row): %s; trying again in "
                  "%g s", n, why, delay_s, exc_info=exc if n == 1 else None)
        if self._starts_failing and (n == _FAILED_STARTS_NO_SLOT or self._queue):
            self._no_slot_left()
        return delay_s

    def _clock(self) -> Timer:
        if self._timer is None:
            raise RuntimeError("executor not started")
        return self._timer

    def _kill(self, w: _Worker) -> None:
        """SIGTERM now, SIGKILL after the grace period, to the worker's process group (the
        worker and every process its task started); _on_exit does the rest."""
        if w.killing or not w.alive:
            return
        w.killing = True
        if w in self._idle:
            self._idle.remove(w)
        _signal(w, signal.SIGTERM)
        w.kill_timer = self._clock().call_later(self.cfg.kill_grace_s, lambda: self._sigkill(w))

    def _sigkill(self, w: _Worker) -> None:
        """The kill's grace is over: SIGKILL, and give `w` up if it outlives that too."""
        _signal(w, signal.SIGKILL)
        w.kill_timer = self._clock().call_later(self.cfg.stuck_after_s, lambda: self._give_up(w))

    def _give_up(self, w: _Worker) -> None:
        """`w` is not gone stuck_after_s after its SIGKILL: its run fails saying so and a new
        worker takes its slot (a run waiting on it ended only once it exited, maybe never);
        `w` is joined whenever it exits, then not replaced again. Past `slots` of them alive
        (a hung file system: each run touching it would leave one more process behind), the
        slot stays empty until one of them exits (`_reap`); with none left, see
        `_no_slot_left`."""
        if not w.alive or w.stuck:
            return
        w.stuck = True
        w.gone.set_result(None)  # (a `close` waiting for it returns)
        job, w.job = w.job, None
        pid, after_s = w.proc.pid, self.cfg.stuck_after_s
        stuck = f"its worker {pid} did not exit {after_s:g} s after SIGKILL"
        replaced = self.given_up_workers <= self.cfg.slots
        log.error("executor worker %s did not exit %g s after SIGKILL%s: %s", pid, after_s,
                  "" if job is None else f" (run {job.key!r})",
                  "a new worker takes its slot" if replaced else
                  f"its slot stays empty while {self.given_up_workers} workers given up live")
        if job is not None:
            ended = self._exit_result(job, None)
            self._finish(job, replace(ended, error=f"{ended.error}; {stuck}"))
        if self._stop.is_set():
            return
        if replaced:
            self._track(self._respawn(0.0))
        else:
            self._unreplaced += 1
            if not self.slots:
                self._no_slot_left()

    def _no_slot_left(self) -> None:
        """Workers given up hold every slot, or no worker can start (`_starts_failing`): the
        queued runs fail now, and `run` fails each new one at once (none would start before
        one of those exits, or a worker starts, maybe never); `slots` is 0, so the peer
        offers none and the mesh places its work elsewhere."""
        if self._starts_failing:
            log.error("executor: %d worker starts in a row failed, none is ready: runs fail "
                      "at once, and this peer offers no slot until a worker starts",
                      self._failed_starts)
        else:
            log.error("executor: the %d workers given up hold every slot: runs fail at once, "
                      "and this peer offers no slot until one of them exits",
                      self.given_up_workers)
        while self._queue:
            self._finish(self._queue.popleft(), self._unrunnable())

    def _unrunnable(self) -> RunResult:
        """The result of a run that no worker can take (`_no_slot_left`)."""
        if self._starts_failing:
            error = (f"no worker can run it: {self._failed_starts} worker starts in a row "
                     f"failed (the last: {self._start_error}); tried again until one starts")
        else:
            error = (f"no worker can run it: the {self.given_up_workers} workers given up "
                     f"(they outlived their SIGKILL by {self.cfg.stuck_after_s:g} s) hold "
                     "every slot")
        return RunResult(False, None, error, None, 0.0, ExitKind.CRASH, no_slot=True)

    def _on_exit(self, w: _Worker) -> None:
        """The process sentinel fired (or, once its forkserver died, its pidfd): read what is
        left, then join it on the helper thread. A sentinel that fired while the process
        runs on says that the forkserver died (its fork failed: a machine at its process or
        memory limit), not the worker: it keeps its run, its exit watched on its pidfd
        (session 50: each worker was killed and its run failed as "exited with code 255")."""
        loop = self._running_loop()
        loop.remove_reader(w.proc.sentinel)
        if w.pidfd >= 0 and not w.orphaned and not ready([w.pidfd], 0):
            w.orphaned = True
            log.warning("executor worker %s: its forkserver is gone; it runs on, watched on "
                        "its own (the next worker start launches a forkserver)", w.proc.pid)
            loop.add_reader(w.pidfd, self._on_exit, w)
            return
        if w.orphaned:
            loop.remove_reader(w.pidfd)
        if w.kill_timer is not None:
            w.kill_timer.cancel()
        # Dead before its last frames are handled: a 'done' among them frees no worker (the
        # next run would be handed to it and failed as its crash).
        w.alive = False
        if w in self._idle:
            self._idle.remove(w)
        # What its task started and left behind (e.g. ignoring SIGTERM), before the rest is
        # read: none of them writes on into the pipe meanwhile.
        _signal(w, signal.SIGKILL)
        self._read(w, drain=True)  # frames written before death still arrive, in order
        self._take(w)
        loop.remove_reader(w.rx.fileno())
        loop.remove_writer(w.tx.fileno())
        self._track(self._reap(w))

    async def _reap(self, w: _Worker) -> None:
        job, w.job = w.job, None
        pid = w.proc.pid  # (closed by `_join`)
        unsent = bool(w.out)  # (its request's rest, or the whole of it after an EPIPE)
        w.out.clear()
        if (job is not None and job.kill_kind is None and job.requeues < _MAX_REQUEUES
                and (unsent or _unread(w.tx))):
            self._requeue(job)  # it died before it read the whole run: the run never started
            self._dispatch()
            job = None
        workdir = None if job is None else self._workdir(job)
        loop = self._running_loop()
        report = ((lambda n: loop.call_soon_threadsafe(self._removing, None, n))
                  if self._counts_removals() else None)
        code: int | None = None
        try:
            code = await loop.run_in_executor(
                self._helper, _join, w.proc, self._base, workdir, Path(scratch.TMPFS), report)
        finally:
            if w.removing_bytes:  # died removing: what it left is counted as gone (errs high)
                self._removing(w, -w.removing_bytes)
            w.tx.close()
            w.rx.close()
            _close_pidfd(w)
            self._workers.discard(w)
            if not w.ready_fut.done():
                w.ready_fut.set_result(False)
            if not w.gone.done():  # (given up, then exited after all)
                w.gone.set_result(None)
            if job is not None:
                self._finish(job, self._exit_result(job, code, w.orphaned))
            if not self._stop.is_set() and not w.stuck:
                self._track(self._respawn(0.0 if w.ready else self._start_failed(
                    f"worker {pid} ended before it was ready: "
                    f"{_describe_exit(code, self.cfg.memory_limit_mb, w.orphaned)}")))
            elif not self._stop.is_set() and self._unreplaced:  # a slot `_give_up` left empty
                self._unreplaced -= 1
                log.warning("executor: a worker given up exited: its slot takes runs again "
                            "(%d of %d)", self.slots, self.cfg.slots)
                self._track(self._respawn(0.0))

    # -- messages --------------------------------------------------------------------------

    def _on_readable(self, w: _Worker) -> None:
        """One turn of the worker's pipe: one read of at most _READ_BYTES, then the complete
        frames read are handled. A worker writing without end is held back by its pipe while
        the loop's other work runs between turns (reading on while reads came full held the
        loop for as long as the flood lasted); the rest is read on the next turns, in order."""
        self._read(w, drain=False)
        self._take(w)

    def _read(self, w: _Worker, *, drain: bool) -> None:
        """Read what the worker wrote into `w.buf` without blocking: one read, or with `drain`
        (it died: nothing else is coming) until the pipe is empty."""
        fd = w.rx.fileno()
        while True:
            try:
                chunk = os.read(fd, _READ_BYTES)
            except BlockingIOError:
                return
            if not chunk:  # EOF: the worker is gone; the sentinel will tell
                self._running_loop().remove_reader(fd)
                return
            if not w.bad_frame:  # (else drained unread: the reader would fire again)
                w.buf += chunk
            if not drain or len(chunk) < _READ_BYTES:
                return

    def _take(self, w: _Worker) -> None:
        """Handle the complete frames in `w.buf`, then hand out queued runs."""
        try:
            self._handle_frames(w)
        finally:  # once the frames read are handled: a 'done' then a bad frame in one read
            self._dispatch()  # must not hand the next run to the worker about to be killed

    def _handle_frames(self, w: _Worker) -> None:
        """Handle the complete frames in `w.buf` in order; the first bad one kills `w`."""
        frames, oversized = _split_frames(w.buf)
        for frame in frames:
            try:
                msg = _decode(frame, w.removing_bytes)
            except _BadFrame as e:  # (its task can write anything to the pipe)
                self._kill_for(w, f"the worker sent {e}")
                return
            try:
                self._on_frame(w, msg)
            except Exception as e:  # a bug of ours: its run fails rather than hangs
                log.exception("executor: handling a %r frame of worker %s failed",
                              msg[0], w.proc.pid)
                self._kill_for(w, f"the executor failed handling the worker's {msg[0]!r} "
                                  f"frame ({_one_line(e)})")
                return
        if oversized is not None:
            self._kill_for(w, f"the worker sent {oversized}")

    def _kill_for(self, w: _Worker, error: str) -> None:
        """Worker `w` sent a frame it never sends, or one we failed to handle: nothing it
        sends after it can be trusted, so it is killed, the rest unread, and its run (if
        any, and not being killed already) fails as a crash with `error`."""
        if w.bad_frame:
            return
        w.bad_frame = True
        w.buf.clear()
        job = w.job
        if job is not None and job.kill_kind is None:
            job.kill_kind, job.kill_error = ExitKind.CRASH, error
        log.warning("executor worker %s killed%s: %s", w.proc.pid,
                    "" if job is None else f" (run {job.key!r})", error)
        self._kill(w)

    def _on_frame(self, w: _Worker, msg: tuple[Any, ...]) -> None:
        tag = msg[0]
        if tag == "m":
            _, run_id, kind, args = msg
            job = w.job
            if job is not None and job.run_id == run_id and job.on_message is not None:
                try:
                    job.on_message(kind, args)
                except Exception:
                    log.exception("on_message of run %r failed", job.key)
        elif tag == "done":
            self._on_done(w, msg)
        elif tag == "ready":
            if w.ready:  # sent once, before its first run: a second one would free it busy
                self._kill_for(w, "the worker sent a second 'ready' frame")
            else:
                self._on_ready(w, msg[2])
        elif tag == "removing":
            self._removing(w, msg[1])

    def _counts_removals(self) -> bool:
        """Whether run directories are measured before they are removed (for the watch's
        disk bound: peer.jobs.watch.Watch.removing)."""
        return self.cfg.tmpfs_check_s is not None and self.cfg.task_scratch_max_bytes is not None

    def _removing(self, w: _Worker | None, nbytes: int) -> None:
        """Worker `w`'s thread (None: the helper thread) starts removing run directories
        holding `nbytes` on disk (> 0), or is done removing `-nbytes` (< 0)."""
        if w is not None:
            w.removing_bytes += nbytes
        if self._watch is not None:
            if nbytes > 0:
                self._watch.removing(nbytes)
            else:
                self._watch.removed(-nbytes)

    def _on_ready(self, w: _Worker, preload_errors: list[str]) -> None:
        for err in preload_errors:
            log.warning("executor worker could not preload %s", err)
        if self._failed_starts:
            log.warning("executor: a worker started after %d failed starts in a row%s",
                        self._failed_starts, ": its slots take runs again"
                        if self._starts_failing else "")
            self._failed_starts = 0
        w.ready = True
        if not w.ready_fut.done():
            w.ready_fut.set_result(True)
        self._free(w)

    def _on_done(self, w: _Worker, msg: tuple[Any, ...]) -> None:
        _, run_id, ok, value, error, trace, kind = msg  # (`_decode`d: the JSON parsed)
        job = w.job
        if job is None or job.run_id != run_id or job.kill_kind is not None:
            return  # a kill is under way: its reason wins
        w.job = None
        self._finish(job, RunResult(ok, value, error, trace, self._elapsed(job), kind))
        if kind == ExitKind.MEMORY:
            self._kill(w)  # its heap may be fragmented or near the limit: replace it
        else:
            self._free(w)

    def _free(self, w: _Worker) -> None:
        """`w` may take the next run, unless it is dead or being killed (`_take` dispatches)."""
        if w.alive and not w.killing:
            self._idle.append(w)

    def _requeue(self, job: _Job) -> None:
        """Put a run its worker never started back at the head of the queue."""
        if job.timer is not None:
            job.timer.cancel()
        job.worker, job.timer, job.watched = None, None, None
        job.requeues += 1
        self._queue.appendleft(job)

    def _dispatch(self) -> None:
        while self._queue and self._idle:
            self._assign(self._idle.pop(), self._queue.popleft())

    def _assign(self, w: _Worker, job: _Job) -> None:
        clock = self._clock()
        job.run_id = next(self._ids)
        job.worker, w.job = w, job
        job.started = clock.time()
        workdir = self._workdir(job)
        if self._watch is not None and w.proc.pid is not None:
            # Before the request: once sent, the worker may write megabytes before this loop
            # runs again (a loaded host), and a mark counting them lets the run past its bound.
            job.watched = Watched(job.key, w.proc.pid, workdir)
            self._watch.started(job.watched)
        # Two frames: the run's fields, then its payload as pickled by `run` (not pickled
        # again inside the first: a copy of megabytes each side, 1.1 ms/MiB in all).
        fields = pickle.dumps(("run", job.run_id, job.target, str(workdir)), _PICKLE)
        job.timer = clock.call_later(job.timeout_s, lambda: self._on_timeout(job))
        self._send(w, _FRAME.pack(len(fields)), fields, _FRAME.pack(len(job.payload)),
                   job.payload)

    def _send(self, w: _Worker, *parts: bytes) -> None:
        """Write a request to `w` without blocking, after what is still unwritten before it:
        what its pipe takes now, the rest as the worker reads (a request may hold megabytes
        of a task's params or items; written whole, it held the loop until the worker had
        read all but the pipe's 64 KiB)."""
        idle = not w.out
        w.out.extend(map(memoryview, parts))
        if idle and self._write(w):
            self._running_loop().add_writer(w.tx.fileno(), self._on_writable, w)

    def _on_writable(self, w: _Worker) -> None:
        if not self._write(w):
            self._running_loop().remove_writer(w.tx.fileno())

    def _write(self, w: _Worker) -> bool:
        """Write what `w`'s pipe takes of `w.out`; True while some waits for it to drain. A
        worker whose end is closed (dead, its sentinel not seen yet) is killed, the rest kept
        unwritten: `_reap` gives its run back to the queue."""
        fd = w.tx.fileno()
        out = w.out
        try:
            while out:  # (the parts in one writev, not a write each: a request's four parts
                # woke the worker up to four times, each a syscall; issue 12, session 50 e)
                n = os.writev(fd, list(itertools.islice(out, _WRITE_PARTS)))
                while out and n >= len(out[0]):
                    n -= len(out.popleft())
                if n:
                    out[0] = out[0][n:]
        except BlockingIOError:
            return True
        except OSError:
            self._kill(w)
        return False

    # -- what the watch sees of the runs (peer.jobs.watch.Runs) --------------------------------

    def watched(self) -> list[Watched]:
        """The runs on workers, none being killed."""
        return [w.job.watched for w in self._workers if w.job is not None
                and w.job.kill_kind is None and w.job.watched is not None]

    def stop(self, run: Watched, kind: str, error: str) -> None:
        """Kill the worker of `run`; the run fails as `kind` with `error`."""
        job = self._jobs.get(run.key)
        if (job is None or job.watched is not run or job.worker is None
                or job.kill_kind is not None):
            return
        job.kill_kind, job.kill_error = ExitKind(kind), error
        log.warning("run %r: %s", job.key, error)
        self._kill(job.worker)

    def _on_timeout(self, job: _Job) -> None:
        if job.worker is not None and job.kill_kind is None:
            job.kill_kind = ExitKind.TIMEOUT
            self._kill(job.worker)

    def _finish(self, job: _Job, result: RunResult) -> None:
        if job.timer is not None:
            job.timer.cancel()
        if self._jobs.get(job.key) is job:
            del self._jobs[job.key]
        if not job.fut.done():
            job.fut.set_result(result)

    def _elapsed(self, job: _Job) -> float:
        return self._clock().time() - job.started

    def _workdir(self, job: _Job) -> Path:
        return self._base / str(job.run_id)

    def _exit_result(self, job: _Job, code: int | None, orphaned: bool = False) -> RunResult:
        """The result of a run whose worker died (`orphaned`: its forkserver had died first,
        so `code` is no exit status: `_describe_exit`)."""
        if job.kill_kind is ExitKind.TIMEOUT:
            error = f"timed out after {job.timeout_s} s"
        elif job.kill_kind is ExitKind.CANCELLED:
            error = "cancelled"
        elif job.kill_error is not None:
            error = job.kill_error
        else:
            error = _describe_exit(code, self.cfg.memory_limit_mb, orphaned)
        kind = job.kill_kind or ExitKind.CRASH
        return RunResult(False, None, error, None, self._elapsed(job), kind)



def _socket_dir_that_fits(shorter: Sequence[str] = SHORT_TEMP_DIRS) -> None:
    """If multiprocessing's directory of this process is not made yet and the temp dir is too
    long for its forkserver's socket (SOCKET_TEMP_DIR_MAX_BYTES), make it (private, 0700,
    removed at exit by multiprocessing) in the first of `shorter` that is writable; the
    temp dir itself (the tasks' TMPDIR) stays. A warning if none is: worker starts will fail,
    and the log then says why."""
    if len(os.fsencode(tempfile.gettempdir())) <= SOCKET_TEMP_DIR_MAX_BYTES:
        return
    for base in shorter:
        if os.path.isdir(base) and os.access(base, os.W_OK | os.X_OK):
            before = tempfile.tempdir
            tempfile.tempdir = base  # (get_temp_dir makes its directory once, in the temp dir)
            try:
                made = multiprocessing.util.get_temp_dir()
            finally:
                tempfile.tempdir = before
            if len(os.fsencode(made)) > SOCKET_TEMP_DIR_MAX_BYTES + len("/pymp-12345678"):
                log.warning("executor: the workers' socket directory %s is too long for a "
                            "socket (%d bytes at most): worker starts will fail; give the "
                            "peer a shorter TMPDIR or data dir", made,
                            SOCKET_TEMP_DIR_MAX_BYTES)
            return
    log.warning("executor: the temp dir %s is too long for the workers' socket (%d bytes at "
                "most) and none of %s is writable: worker starts will fail; give the peer a "
                "shorter TMPDIR or data dir", tempfile.gettempdir(), SOCKET_TEMP_DIR_MAX_BYTES,
                ", ".join(shorter))

def _main_imports() -> list[str]:
    """The modules this process's `__main__` script imports at its top level (`banzai-peer`:
    peer.main). Each forkserver child runs that script again (as `__mp_main__`) before its
    first run, since the forkserver of CPython 3.11 never imports `__main__` itself (it looks
    for a `main_path` that `spawn.get_preparation_data` does not set): preloaded, those
    imports are found done, where each new worker would otherwise import them again (for a
    peer, aiohttp and the whole daemon: about a second of CPU per worker replaced)."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None:  # `python -m NAME`: the child runs NAME again (not a package main)
        return [] if spec.name.endswith("__main__") else [spec.name]
    path = getattr(main, "__file__", None)
    try:
        tree = ast.parse(Path(path).read_bytes()) if isinstance(path, str) else None
    except (OSError, SyntaxError, ValueError):
        return []
    names: list[str] = []
    for node in tree.body if tree is not None else ():
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.append(node.module)
    # Only what this process imported already (the forkserver survives only ImportError).
    return [n for n in dict.fromkeys(names) if n != "__future__" and n in sys.modules]


def _signal(w: _Worker, sig: signal.Signals) -> None:
    """Signal the worker's process group once it is ready (it made the group first thing), the
    worker alone before that. The group outlives a dead worker while a member lives, so its id
    cannot be reused meanwhile."""
    pid = w.proc.pid
    if pid is None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if w.ready:
            if w.orphaned and not _group_may_be_its(pid, w.pidfd):
                return
            os.killpg(pid, sig)
        elif w.alive:
            os.kill(pid, sig)


def _group_may_be_its(pid: int, pidfd: int) -> bool:
    """Whether the process group `pid` can only be an orphaned worker's (`pidfd` its own
    descriptor). A worker whose forkserver died is reaped by init the moment it exits, not
    held as a zombie until we join it, so its PID may be another process's by the time its
    group is signalled (review RR-4 of session 50): true while the worker still exists (a
    zombie too), or while no process has its PID (its group, if it has members, holds the
    number: it cannot be reused meanwhile); false once another process has it (then the
    worker's group was empty, and that process may lead a group of that id)."""
    try:
        signal.pidfd_send_signal(pidfd, 0)
        return True
    except ProcessLookupError:
        pass
    except OSError:  # (a closed descriptor: nothing says whose the PID is)
        return False
    return not scratch.alive(pid)


def _exited(w: _Worker) -> bool:
    """Whether `w` has exited (its sentinel is readable, or its pidfd once its forkserver
    died: `_on_exit`), without waiting."""
    return bool(ready([w.pidfd if w.orphaned else w.proc.sentinel], 0))


def _pidfd(proc: BaseProcess) -> int:
    """A descriptor of the started `proc` (close-on-exec), readable once it exits; -1 if
    there is none (gone already, or a kernel before 5.3)."""
    try:
        return os.pidfd_open(proc.pid) if proc.pid is not None else -1
    except (OSError, AttributeError):
        return -1


def _close_pidfd(w: _Worker) -> None:
    if w.pidfd >= 0:
        os.close(w.pidfd)
        w.pidfd = -1


def _unread(conn: Connection) -> bool:
    """True if what was written into the pipe whose write end is `conn` is not all read."""
    with contextlib.suppress(OSError):
        n: int = struct.unpack("i", fcntl.ioctl(conn.fileno(), termios.FIONREAD, bytes(4)))[0]
        return n > 0
    return False


def _describe_exit(code: int | None, memory_limit_mb: int | None, orphaned: bool = False,
                   ) -> str:
    """Why a worker ended, as its run's error. `orphaned`: its forkserver died before it (a
    fork failed: a machine at its process or memory limit), whose pipe is where its exit
    status is read, so `code` (255) is made up and the status is not recoverable (its pidfd
    tells that it exited, and only its parent, the dead forkserver, could wait for it:
    review RR-4 of session 50)."""
    if orphaned:
        text = ("worker died after its forkserver had died (a machine at its process or "
                "memory limit?); its exit status is unknown")
    elif code is not None and code < 0:
        text = f"killed by signal {-code}"
    else:
        text = f"worker exited with code {code}"
    if memory_limit_mb is not None:
        text += f" (memory_limit_mb={memory_limit_mb} may be too low)"
    return text


def _split_frames(buf: bytearray) -> tuple[list[bytes], str | None]:
    """Remove and return the complete frames at the start of `buf`, and what is wrong with
    the frame after them if its header announces more than _MAX_FRAME_BYTES (else None)."""
    frames: list[bytes] = []
    pos, head = 0, _FRAME.size
    oversized = None
    while len(buf) - pos >= head:
        (size,) = _FRAME.unpack_from(buf, pos)
        if size > _MAX_FRAME_BYTES:
            oversized = (f"a frame header announcing {size} bytes (at most "
                         f"{_MAX_FRAME_BYTES} are read)")
            break
        end = pos + head + size
        if end > len(buf):
            break
        frames.append(bytes(buf[pos + head : end]))
        pos = end
    del buf[:pos]
    return frames, oversized


class _BadFrame(BanzaiError):
    """A worker's frame is not one a worker sends (its task wrote to the executor's pipe)."""


def _decode(frame: bytes, removing_bytes: int) -> tuple[Any, ...]:
    """A worker's frame as the message `_on_frame` handles, every field checked first (a
    "done" frame's JSON parsed, its kind an ExitKind); _BadFrame naming what is wrong.
    `removing_bytes`: what the worker said it is removing (a "removing" frame of a negative
    count, done removing, never reports more)."""
    try:
        msg = pickle.loads(frame)
    except Exception as e:
        raise _BadFrame(f"a frame that does not unpickle ({_one_line(e)})") from None
    if type(msg) is not tuple or not msg:
        raise _BadFrame(f"a frame of no known form: {_BRIEF.repr(msg)}")
    m: tuple[Any, ...] = msg
    tag, n = m[0], len(m)
    if tag == "m" and n == 4 and _is_int(m[1]) and type(m[2]) is str and type(m[3]) is tuple:
        return m
    if (tag == "ready" and n == 3 and _is_int(m[1]) and type(m[2]) is list
            and all(type(e) is str for e in m[2])):
        return m
    if tag == "removing" and n == 2 and _is_int(m[1]):
        if m[1] < -removing_bytes:
            raise _BadFrame(f"a 'removing' frame of {m[1]} bytes, more done than the "
                            f"{removing_bytes} it reported being removed")
        return m
    if tag == "done" and n == 7:
        return _decode_done(m)
    raise _BadFrame(f"a frame of no known form: {_BRIEF.repr(msg)}")


def _decode_done(msg: tuple[Any, ...]) -> tuple[Any, ...]:
    """A "done" frame (as `_run_one` and `_failure` make it) with its result's JSON parsed
    and its kind an ExitKind; _BadFrame naming the field that is wrong."""
    _, run_id, ok, text, error, trace, kind = msg
    checks = [
        (_is_int(run_id), "run id"),
        (type(ok) is bool, "ok"),
        (type(kind) is str and kind in _WORKER_KINDS and (kind == ExitKind.OK) == ok, "kind"),
        (type(text) is str if ok else text is None, "result"),
        (error is None if ok else type(error) is str, "error"),
        (trace is None or type(trace) is str, "trace"),
    ]
    for good, name in checks:
        if not good:
            raise _BadFrame(f"a 'done' frame whose {name} is wrong: {_BRIEF.repr(msg)}")
    try:
        value = json.loads(text) if ok else None
    except Exception as e:  # (ValueError; RecursionError nested too deep)
        raise _BadFrame(f"a 'done' frame whose result is not JSON ({_one_line(e)}): "
                        f"{_BRIEF.repr(msg)}") from None
    return ("done", run_id, ok, value, error, trace, _WORKER_KINDS[kind])


# A bad frame as its error shows it: every field of a "done" frame, each cut short.
_BRIEF = reprlib.Repr()
_BRIEF.maxtuple, _BRIEF.maxstring = 7, 60

# How a worker says its run ended (the other kinds are the executor's: kills, a crash).
_WORKER_KINDS = {k.value: k for k in (ExitKind.OK, ExitKind.ERROR, ExitKind.MEMORY,
                                      ExitKind.STORAGE)}


def sweep_bases(directory: Path) -> int:
    """Remove what executors killed before they closed left in `directory`: the directories
    `banzai-exec-PID-*` of a process that is gone and that no executor holds (`hold`: a
    live one whose PID is another PID namespace's, sharing the directory), and those of the
    earlier form (no PID) that are empty (an executor of that version still running makes
    it again at its next run) or untouched for a day. Only a directory of this user's own is
    looked at (owned by its uid, not a symlink: the system temp directory is shared, and a
    peer run as root would remove every user's). Returns how many were removed. Blocking."""
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return 0
    removed = 0
    uid = os.geteuid()
    for entry in entries:
        if not entry.name.startswith(_BASE_PREFIX):
            continue
        pid, dash, _ = entry.name[len(_BASE_PREFIX):].partition("-")
        try:  # (a symlink, a file, one gone or not ours to read: passed over)
            fd = os.open(entry.path, DIR_NOFOLLOW)
        except OSError:
            continue
        try:
            st = os.fstat(fd)
            if st.st_uid != uid:
                continue
            if not dash and time.time() - st.st_mtime > _UNNAMED_STALE_S:
                remove_tree(entry.path)
            elif not dash:
                os.rmdir(entry.path)  # only if empty
            elif pid.isdigit() and not alive(int(pid)) and free(fd):
                remove_tree(entry.path)
            else:
                continue
        except OSError:  # not empty, gone meanwhile
            continue
        finally:
            os.close(fd)
        removed += 1
    return removed


def _remove_base(base: Path, pid: int, held: int) -> None:
    """An executor's run directories, removed by the process that made them (not by a child
    forked from it that exits through the interpreter), and their lock released."""
    if os.getpid() == pid:
        remove_tree(base, ignore_errors=True)
        os.close(held)


def _join(proc: BaseProcess, base: Path, workdir: Path | None, tmpfs: Path,
          report: Callable[[int], object] | None) -> int | None:
    """Helper thread: remove a dead worker's directories on `tmpfs` (before it is joined: its
    PID is no other process's until then), join it, release it and remove its run's
    workdir, under its name or the one its worker moved it to (SIGTERM ends a run through its
    `finally`, which moves the workdir away for a thread of the worker that dies with it),
    and the moved-away directories of its earlier runs that its thread had not removed yet
    (in `base`: every one there, those of the live workers' threads too, which skip what is
    gone; they stayed until the executor closed), measured first for `report` if not None
    (`_remove_runs`)."""
    if proc.pid is not None:
        scratch.remove_dirs(tmpfs, proc.pid)
    proc.join()
    code = proc.exitcode
    proc.close()
    runs = [] if workdir is None else [workdir]
    with contextlib.suppress(OSError):
        runs += base.glob(".*.gone")
    _remove_runs(runs, report)
    return code


def _remove_runs(runs: list[Path], report: Callable[[int], object] | None) -> None:
    """Remove these run directories. With `report` (the watch bounds runs on disk), first
    measure what they hold on disk and report it, then report its negative once removed:
    the watch counts it as still there meanwhile, and a run's growth on the same disk does
    not hide behind the removal (peer.jobs.watch.Watch.removing). The directories are
    removed whatever measuring or reporting raises."""
    nbytes = 0 if report is None else sum(_disk_bytes(p) for p in runs)
    try:
        if report is not None and nbytes:
            report(nbytes)
    finally:
        for path in runs:
            remove_tree(path, ignore_errors=True)
    if report is not None and nbytes:
        report(-nbytes)


def _disk_bytes(run: Path) -> int:
    """What the run directory `run` holds on disk; 0 if it cannot be measured. 0 errs on
    the safe side: the watch then takes its removal for anyone's (as before removals were
    counted), so a run's growth may show only once it passes what was removed, but no run is
    ever stopped by this count (only by a walk of its own directory), and the bytes reported
    removing and removed always match."""
    with contextlib.suppress(OSError):
        return scratch.tree_bytes(run, sys.maxsize, on_disk=True)
    return 0


# CPython 3.11's forkserver runs `python -c`, which puts the working directory first on
# sys.path, and ignores the `sys_path` it is handed: started from a directory holding a
# `peer/`, `tasks/` or `numpy.py`, it would preload those into every worker. So the forkserver
# (started, or started again, by a worker's start) is launched with PYTHONSAFEPATH, and each
# worker drops it again (unless this process had it) before its tasks start any process.
# A process another thread of ours starts meanwhile inherits it too: 3.11 offers no launch
# of the forkserver with `-P` that leaves this process's environment alone. Its
# ForkServer.ensure_running runs spawn.get_executable() with util._args_from_interpreter_flags()
# (`-P` only if this interpreter has sys.flags.safe_path) through util.spawnv_passfds (this
# process's environment), all looked up in the modules; every context, ours too, reaches
# that one ForkServer (popen_forkserver calls the module's connect_to_new_process). So -P
# means patching those module functions (the same process-wide window), copying the
# private ensure_running and Popen._launch (changed since: later 3.12s hand the forkserver
# sys_path, 3.14 adds an authentication key), or multiprocessing.set_executable (set for
# the whole process, spawn and the resource tracker too) naming a wrapper script written
# somewhere executable, which a data dir or /tmp mounted noexec is not (no worker would
# start). Each is riskier than this window (session 39, helper f).
SAFE_PATH = "PYTHONSAFEPATH"


@contextlib.contextmanager
def _safe_path() -> Iterator[None]:
    """PYTHONSAFEPATH=1 in this process's environment while a worker starts (the forkserver,
    if one is launched now, takes it); as it was after."""
    had = os.environ.get(SAFE_PATH)
    os.environ[SAFE_PATH] = "1"
    try:
        yield
    finally:
        if had is None:
            os.environ.pop(SAFE_PATH, None)
        else:
            os.environ[SAFE_PATH] = had


MATH_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                    "NUMEXPR_NUM_THREADS", "VECLIB_MAXIMUM_THREADS", "NUMBA_NUM_THREADS")


def _math_env(threads: int | None) -> dict[str, str]:
    """The math libraries' thread variables for the workers: `threads` where this process's
    environment does not set them. Also set in this process's environment, where the
    forkserver (started by the first executor's first worker) takes them from: a library
    sizes its pool when the forkserver's preload imports it, before any worker's env."""
    if threads is None:
        return {}
    env = {v: os.environ.get(v) or str(threads) for v in MATH_THREAD_VARS}
    for v, value in env.items():
        os.environ.setdefault(v, value)
    return env


# -- inside the worker process -----------------------------------------------------------------


class _Spec(NamedTuple):
    env: dict[str, str]
    preload: tuple[str, ...]
    memory_limit_mb: int | None
    heap: HeapConfig | None
    counts_removals: bool  # measure a run directory before removing it (Executor._removing)


class _Channel:
    """Worker -> parent frames on a blocking pipe; safe to use from several threads."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn  # keeps the fd open
        self._fd = conn.fileno()
        self._lock = threading.Lock()

    def send(self, msg: tuple[Any, ...]) -> None:
        data = pickle.dumps(msg, _PICKLE)
        view = memoryview(_FRAME.pack(len(data)) + data)
        with self._lock:
            while view:
                view = view[os.write(self._fd, view) :]

    def removing(self, nbytes: int) -> None:
        """Tell the executor its _Trash thread removes run directories holding `nbytes` on
        disk (< 0: removed them); nothing if it is gone (this worker ends too)."""
        with contextlib.suppress(OSError):
            self.send(("removing", nbytes))


class _Context:
    """The `ctx` a target receives: progress, log, metric and a fresh `workdir`."""

    def __init__(self, chan: _Channel, run_id: int, workdir: Path,
                 report: Callable[[int], object] | None) -> None:
        self._chan = chan
        self._run_id = run_id
        self._dir = workdir
        self._report = report  # of the workdir's removal (_remove_runs)
        self._made = False
        self._lock = threading.Lock()
        self._pending: float | None = None
        self._timer: threading.Timer | None = None
        self._next_s = 0.0  # progress is held back until this monotonic time
        self._open = True

    @property
    def workdir(self) -> Path:
        """A directory for this run only (created on first use, gone once the run ends)."""
        if not self._made:
            self._dir.mkdir(parents=True, exist_ok=True)
            self._made = True
        return self._dir

    @workdir.setter
    def workdir(self, path: Path) -> None:
        self._dir, self._made = Path(path), True

    def progress(self, fraction: float) -> None:
        """Report progress; sent at most every 50 ms, the latest value always arrives."""
        with self._lock:
            self._pending = float(fraction)
            if self._timer is not None:
                return
            delay = self._next_s - time.monotonic()
            if delay > 0:
                self._timer = threading.Timer(delay, self._flush)
                self._timer.daemon = True
                self._timer.start()
                return
        self._flush()

    def log(self, message: str) -> None:
        """Send one log line."""
        self._chan.send(("m", self._run_id, "log", (str(message),)))

    def metric(self, name: str, step: int, value: float) -> None:
        """Send one metric point."""
        self._chan.send(("m", self._run_id, "metric", (str(name), int(step), float(value))))

    def send(self, kind: str, *args: Any) -> None:
        """Send any other message (JSON-able args) to the run's `on_message`, in order."""
        self._chan.send(("m", self._run_id, str(kind), args))

    def close(self) -> None:
        """Send held-back progress, then remove the workdir."""
        with self._lock:
            timer = self._timer
        if timer is not None:
            timer.cancel()
        self._flush()
        with self._lock:
            self._open = False
        if self._made:
            _TRASH.remove(self._dir, self._report)

    def _flush(self) -> None:
        with self._lock:
            self._timer = None
            value, self._pending = self._pending, None
            if value is None or not self._open:
                return
            self._next_s = time.monotonic() + _PROGRESS_INTERVAL_S
            self._chan.send(("m", self._run_id, "progress", (value,)))


class _Removal(NamedTuple):
    """A run directory a worker's _Trash removes, and whom it reports the removal to."""

    path: Path
    report: Callable[[int], object] | None


class _Trash:
    """Removes run directories on a thread of this process, off the path of a run's result:
    removing a directory costs milliseconds on some file systems (on ext4 mounted with
    `discard`, 1 to 4 ms per rmdir), moving it out of the way microseconds."""

    def __init__(self) -> None:
        self._pid = 0
        self._queue: queue.SimpleQueue[_Removal] = queue.SimpleQueue()

    def remove(self, path: Path, report: Callable[[int], object] | None) -> None:
        """Move `path` out of the way now (it is gone when this returns), remove it soon
        (`_remove_runs` with `report`)."""
        gone = _moved(path)
        try:
            os.rename(path, gone)
            if self._pid != os.getpid():  # the first use in this process (a forked worker)
                self._queue = queue.SimpleQueue()
                threading.Thread(target=self._run, args=(self._queue,), name="banzai-trash",
                                 daemon=True).start()
                self._pid = os.getpid()
        except (OSError, RuntimeError, MemoryError):  # cannot rename or start a thread
            _remove_runs([path if path.exists() else gone], report)
            return
        self._queue.put(_Removal(gone, report))

    @staticmethod
    def _run(todo: queue.SimpleQueue[_Removal]) -> None:
        while True:
            removal = todo.get()
            try:
                _remove_runs([removal.path], removal.report)
            except Exception:  # (this thread also removes every later run directory)
                log.exception("cannot remove the run directory %s", removal.path)


def _moved(path: Path) -> Path:
    """Where _Trash moves a run directory to before removing it."""
    return path.with_name(f".{path.name}.gone")


_TRASH = _Trash()  # what a worker left of its runs goes with its executor's directory


def _worker_main(rx: Connection, tx: Connection, spec: _Spec) -> None:
    """Worker process entry point: set up, then serve one request at a time until EOF, or
    until a task closed the request pipe or the signal wake-up fd (either number may name a
    file of the task's now, or of a later run's)."""
    requests = _Fd(rx.fileno())
    wakeup = _setup_worker(spec, requests)
    chan = _Channel(tx)
    report = chan.removing if spec.counts_removals else None
    chan.send(("ready", os.getpid(), _preload(spec.preload)))
    targets: dict[str, Callable[..., Any]] = {}
    while requests.ours() and wakeup.intact() and (request := _receive(requests.fd)) is not None:
        (_, run_id, target, workdir), payload = request
        wakeup.rearm()
        chan.send(_run_one(chan, targets, run_id, target, payload, Path(workdir), report))


def _receive(fd: int) -> tuple[tuple[Any, ...], bytearray] | None:
    """The daemon's next request, whole (`Executor._assign`): its fields and its payload's
    pickle (unpickled by the run); None once the daemon's end is closed."""
    fields = _read_frame(fd)
    payload = None if fields is None else _read_frame(fd)
    return None if fields is None or payload is None else (pickle.loads(fields), payload)


def _read_frame(fd: int) -> bytearray | None:
    """The next frame's body (after its _FRAME header), read from `fd`; None at its end."""
    head = _read_exactly(fd, _FRAME.size)
    return None if head is None else _read_exactly(fd, _FRAME.unpack(head)[0])


def _read_exactly(fd: int, size: int) -> bytearray | None:
    """`size` bytes read from `fd` (blocking); None at its end."""
    buf, got = bytearray(size), 0
    with memoryview(buf) as view:
        while got < size:
            n = os.readv(fd, [view[got:]])
            if not n:
                return None
            got += n
    return buf


class _Fd:
    """A descriptor of the worker's, by number: a task's code may close it and open another
    file that takes the number (closerange, daemonising code). `ours` tells them apart by
    the file's (st_dev, st_ino), recorded at the start (pipes: one inode per pipe)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.file = _file_of(fd)

    def ours(self) -> bool:
        """True while the number still names the file it named at the start."""
        return self.file is not None and _file_of(self.fd) == self.file


def _file_of(fd: int) -> tuple[int, int] | None:
    """The (st_dev, st_ino) of the file `fd` names; None if it names none."""
    try:
        st = os.fstat(fd)
    except OSError:
        return None
    return st.st_dev, st.st_ino


class _Wakeup:
    """The worker's signal wake-up fd, the write end of the pipe `_watch` reads."""

    def __init__(self, fd: int) -> None:
        self._fd = _Fd(fd)
        signal.set_wakeup_fd(fd, warn_on_full_buffer=False)

    def intact(self) -> bool:
        """True while our fd's number still names our pipe's write end. A task that closed it
        left the interpreter writing a byte per signal to that number, which a later run's
        file could take (one byte of it per signal: review r1, session 43, M1): the wake-up
        fd is cleared at once, and the worker ends after this run."""
        if self._fd.ours():
            return True
        with contextlib.suppress(OSError, ValueError):
            signal.set_wakeup_fd(-1)
        return False

    def rearm(self) -> None:
        """The wake-up fd ours again, before each run (`intact` said it is): a task's code may
        have replaced it (asyncio's add_signal_handler takes it, and closing that loop leaves
        none), which turned `_watch`'s re-sending of SIGTERM off for every later run of this
        worker."""
        with contextlib.suppress(OSError, ValueError):
            signal.set_wakeup_fd(self._fd.fd, warn_on_full_buffer=False)


def _setup_worker(spec: _Spec, requests: _Fd) -> _Wakeup:
    """Set this worker up; its signal wake-up fd (`_watch`)."""
    if spec.heap is not None:  # first: before the worker's runs allocate their arrays
        tune(spec.heap, libc_mallopt())
    os.setsid()  # our own process group: a kill reaches every process a task starts
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C
    # Each signal this process receives writes its number here, for `_watch` (not a forked
    # child's: each forgets it, so that its SIGTERM is not taken for ours).
    wakeups, wakeup_w = os.pipe()
    os.set_blocking(wakeup_w, False)
    wakeup = _Wakeup(wakeup_w)
    os.register_at_fork(after_in_child=lambda: signal.set_wakeup_fd(-1))
    signal.signal(signal.SIGTERM, _exit_on_sigterm)  # lets `finally` blocks run
    threading.Thread(target=_watch, args=(_Fd(_private_dup(requests.fd)), _Fd(wakeups),
                                          wakeup_w), daemon=True).start()
    os.environ.pop(SAFE_PATH, None)  # the forkserver's (`_safe_path`); spec.env has ours
    os.environ.update(spec.env)
    # Started as a daemon so the parent's atexit kills it; let targets start processes.
    multiprocessing.current_process().daemon = False
    if spec.memory_limit_mb is not None:
        limit = spec.memory_limit_mb << 20
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    return wakeup


def _private_dup(fd: int) -> int:
    """A close-on-exec copy of `fd` at a number a task's files are unlikely to take (they
    take the lowest free ones), for the watcher: a task that closes the worker's request
    pipe (and opens another file on its number) leaves the watcher's copy watching."""
    try:
        return fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, _WATCH_FD_MIN)
    except OSError:  # (an open-files limit below it)
        return fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 0)


_WATCH_FD_MIN = 200


def _read_end_again(wakeups: _Fd, wakeup_w: int) -> _Fd | None:
    """A new read end of the wake-up pipe, whose read end (`wakeups`) its task closed: opened
    through the write end's /proc/self/fd link, at a `_private_dup` number; None if the
    write end's number names another file now (its task closed that too) or cannot be
    opened. With no read end left, each signal's write into the pipe failed (EPIPE) and
    the interpreter printed "Exception ignored when trying to write to the signal wakeup
    fd" on the worker's stderr (session 42, helper b)."""
    if _file_of(wakeup_w) != wakeups.file:
        return None
    try:  # (not blocking: a FIFO of the task's that took the number since waits for none)
        fd = os.open(f"/proc/self/fd/{wakeup_w}",
                     os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        if _file_of(fd) != wakeups.file:  # (the number was taken between the two looks)
            return None
        os.set_blocking(fd, True)
        return _Fd(_private_dup(fd))
    except OSError:
        return None
    finally:
        os.close(fd)


def _watch(requests: _Fd, wakeups: _Fd, wakeup_w: int) -> None:
    """The worker's watcher thread; it sleeps until one of its two pipes wakes it. Exits the
    worker as soon as the daemon's end of the request pipe closes (the daemon died; not
    PR_SET_PDEATHSIG: our parent is the forkserver, which outlives the daemon while any
    worker lives), seen on `requests`, its own copy of the pipe's read end (`_private_dup`).
    If its task closed even that copy (closerange), the daemon is watched no more, and the
    run goes on (review h, H2: killing the run would fail its task on every attempt); that is
    seen at the watcher's next wake-up, before it takes a hang-up or an invalid descriptor on
    that number for the daemon's death (a poll started before the close goes on waiting on
    the pipe, and sees the daemon's death there all the same); the main loop ends the worker
    after the run if the task closed its own end of the pipe (`_worker_main`). And sends each
    SIGTERM the worker receives (read from `wakeups`, the signal wake-up fd's pipe) again to
    its main thread, every _SIGTERM_AGAIN_S until its handler ran: a SIGTERM that arrives
    after the interpreter's last check for signals and before a blocking call (a sleep, a
    wait) leaves its handler waiting for that call's end, which a signal sent during it
    interrupts. Not during a run whose code set a wake-up fd of its own (an asyncio loop's
    signal handler): the numbers go there, and nothing else tells this thread that a signal
    arrived before its handler ran (only the main thread may set the fd; a flag set by the
    handler says only that it ran). Ours is set again before the next run (`_Wakeup.rearm`).
    A wake-up pipe whose read end its task closed is read on through a new read end of our
    own (`_read_end_again`), never on the old number (what it names now is the task's to
    read: review e, session 41, E10); once its task closed the write end too, that pipe is
    watched no more."""
    poller = select.poll()
    poller.register(requests.fd, 0)  # POLLHUP only: never competes with the main thread's reads
    poller.register(wakeups.fd, select.POLLIN)
    main = threading.main_thread().ident
    watching = True
    while True:
        ready = dict(poller.poll())
        if watching and not requests.ours():  # (its number may name a file of the task's)
            poller.unregister(requests.fd)
            watching = False
        elif watching and requests.fd in ready:  # (once not, the number may be a new read
            break  # end's of the wake-up pipe: `_read_end_again`)
        if wakeups.fd not in ready:
            continue
        if not wakeups.ours():  # its task closed our read end (its number may name its file)
            poller.unregister(wakeups.fd)
            if (again := _read_end_again(wakeups, wakeup_w)) is not None:
                wakeups = again
                poller.register(wakeups.fd, select.POLLIN)
            continue
        try:
            signals = os.read(wakeups.fd, 256)
        except OSError:
            signals = b""
        if not signals:  # every write end closed: the daemon is still watched
            poller.unregister(wakeups.fd)
            continue
        if (signal.SIGTERM in signals and main is not None and not _terminating
                and signal.getsignal(signal.SIGTERM) is _exit_on_sigterm):
            signal.pthread_kill(main, signal.SIGTERM)  # (its number comes back here)
            time.sleep(_SIGTERM_AGAIN_S)
    with contextlib.suppress(OSError):
        if os.getpgrp() == os.getpid():
            os.killpg(0, signal.SIGKILL)  # this worker and every process its task started
    os._exit(1)


_SIGTERM_AGAIN_S = 0.01
_terminating = False  # the worker's SIGTERM handler ran: the worker is exiting


def _exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    """Exit the worker through SystemExit, once (`_watch` may send SIGTERM again)."""
    global _terminating
    if not _terminating:
        _terminating = True
        raise SystemExit(128 + signum)


def _preload(modules: tuple[str, ...]) -> list[str]:
    errors = []
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception as exc:
            errors.append(f"{name}: {_one_line(exc)}")
    return errors


def _run_one(
    chan: _Channel,
    targets: dict[str, Callable[..., Any]],
    run_id: int,
    target: str,
    payload: bytearray,
    workdir: Path,
    report: Callable[[int], object] | None,
) -> tuple[Any, ...]:
    ctx = _Context(chan, run_id, workdir, report)
    try:
        fn = targets.get(target) or _import_target(targets, target)
        text = json.dumps(fn(pickle.loads(payload), ctx))
    except MemoryError as exc:
        return _failure(run_id, exc, ExitKind.MEMORY)
    except Exception as exc:
        return _failure(run_id, exc, ExitKind.STORAGE if disk_full(exc) else ExitKind.ERROR)
    finally:
        ctx.close()
    return ("done", run_id, True, text, None, None, ExitKind.OK.value)


def _import_target(targets: dict[str, Callable[..., Any]], target: str) -> Callable[..., Any]:
    module, _, name = target.partition(":")
    obj: Any = importlib.import_module(module)
    for part in name.split("."):
        obj = getattr(obj, part)
    if not callable(obj):
        raise TypeError(f"target {target} is not callable")
    targets[target] = obj
    return obj  # type: ignore[no-any-return]


def _failure(run_id: int, exc: BaseException, kind: ExitKind) -> tuple[Any, ...]:
    if exc.__traceback__ is not None:
        traceback.clear_frames(exc.__traceback__)  # frees the target's locals first
    try:
        trace: str | None = "".join(traceback.format_exception(exc, limit=-_TRACE_FRAMES))
    except MemoryError:
        trace = None
    return ("done", run_id, False, None, _one_line(exc), trace, kind.value)


def _one_line(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
