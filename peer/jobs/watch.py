"""The executor's watch over what runs write beyond their workers' memory limit: the tmpfs a
python task's scratch may be on (RAM) and each run's work directory on disk. Loop-owned: its
readings (statvfs, /proc/meminfo) take microseconds; the walk that measures a work directory
runs on a thread of its own.
"""

from __future__ import annotations

import asyncio
import math
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from peer.jobs import scratch
from peer.jobs.scratch import Space

STORAGE = "storage"  # the executor's exit kinds the watch stops runs with
ERROR = "error"


@dataclass(eq=False)
class Watched:
    """A run on a worker, as the watch sees it."""

    key: str
    pid: int  # its worker's
    workdir: Path  # its work directory on disk (made on first use)
    # The watch's count of bytes written to the work directory's file system (its used bytes
    # plus what removing our run directories took off them: Watch._written) less what the
    # run held there, when it was sent to its worker (nothing yet) or last measured (see
    # Watch._check_disk); None until then.
    disk_mark: int | None = None


class Cancellable(Protocol):
    def cancel(self) -> None: ...


class Runs(Protocol):
    """What the watch needs of the executor. Called on the event loop; must not block."""

    def watched(self) -> Sequence[Watched]: ...  # the runs on workers, none being killed
    def stop(self, run: Watched, kind: str, error: str) -> None: ...  # kill; fails as `kind`


def disk_used(path: Path) -> int | None:
    """The used bytes of the file system holding `path` (statvfs), None if unreadable."""
    try:
        st = os.statvfs(path)
    except OSError:
        return None
    return (st.f_blocks - st.f_bfree) * st.f_frsize


class Watch:
    """Every `check_s` while runs are on workers (`started` arms it): the tmpfs and the
    host's memory against `tmpfs_kill_min_bytes` (`_check_tmpfs`), and each run's work
    directory against `scratch_max_bytes` if not None (`_check_disk`)."""

    def __init__(self, check_s: float, tmpfs_kill_min_bytes: int,
                 scratch_max_bytes: int | None, runs: Runs,
                 call_later: Callable[[float, Callable[[], object]], Cancellable],
                 space: Callable[[], Space | None] = scratch.space,
                 used: Callable[[Path], int | None] = disk_used) -> None:
        self.check_s = check_s
        self.tmpfs_kill_min_bytes = tmpfs_kill_min_bytes
        self.scratch_max_bytes = scratch_max_bytes
        self._runs = runs
        self._call_later = call_later
        self._space = space
        self._used = used
        self._next: Cancellable | None = None  # the next check
        self._walker: ThreadPoolExecutor | None = None  # made at the first walk
        self._walking = False
        self._quit = threading.Event()  # stops a walk under way (close)
        self._removing = 0  # bytes of run directories on disk being removed (`removing`)
        self._removed = 0  # bytes of run directories on disk removed since the watch began

    def removing(self, nbytes: int) -> None:
        """A run directory on disk holding `nbytes` (measured before its removal starts) is
        being removed: counted as still there until `removed`, so that its removal cannot
        hide what the other runs write meanwhile."""
        self._removing += nbytes

    def removed(self, nbytes: int) -> None:
        """The `nbytes` of a `removing` are gone (or their remover is)."""
        self._removing -= nbytes
        self._removed += nbytes

    def _written(self, used: int, removing: bool) -> int:
        """The bytes written to the work directories' file system as far as the watch can
        tell: `used` (its used bytes now) plus what our run directories' removals took off
        it, which grows as the runs write and shrinks only by what others remove. With
        `removing`, every byte being removed counts as removed already (a count that errs
        high: a run's growth since a mark is never under-counted); without, none (errs low:
        a mark taken from it is never above the run's). With slots > 1 the used bytes alone
        let a run's growth hide behind an earlier run's directory being removed."""
        return used + self._removed + (self._removing if removing else 0)

    def started(self, run: Watched) -> None:
        """A run goes to a worker: note the disk's use and check in `check_s`. Called before
        the worker is sent the run, so that the mark counts nothing the run wrote."""
        if self.scratch_max_bytes is not None:
            used = self._used(run.workdir.parent)
            run.disk_mark = None if used is None else self._written(used, removing=False)
        if self._next is None and not self._quit.is_set():
            self._next = self._call_later(self.check_s, self._check)

    def close(self) -> None:
        """No further check; a walk under way stops at its next directory."""
        self._quit.set()
        if self._next is not None:
            self._next.cancel()
            self._next = None
        if self._walker is not None:
            self._walker.shutdown(wait=True, cancel_futures=True)
            self._walker = None

    def _check(self) -> None:
        self._next = None
        runs = self._runs.watched()
        if not runs or self._quit.is_set():
            return  # armed again by the next run's start
        self._check_tmpfs(runs)
        if self.scratch_max_bytes is not None:
            self._check_disk(runs, self.scratch_max_bytes)
        self._next = self._call_later(self.check_s, self._check)

    def _check_tmpfs(self, runs: Sequence[Watched]) -> None:
        """Stop every run with a directory on the tmpfs if it or the host's memory is below
        the floor. Every one rather than the largest: measuring each directory means walking
        trees of maybe millions of files while the tmpfs fills (a task wrote 130 MB/s), and a
        fill that comes from elsewhere leaves nothing of ours safe there either. They fail
        as storage (retried, not counted), each call's next run here on disk; the executor
        removes their directories as it reaps their workers."""
        floor = self.tmpfs_kill_min_bytes
        space = self._space()
        if space is None or not space.short(floor):
            return
        by_pid = {r.pid: r for r in runs}
        for pid in scratch.holders(Path(scratch.TMPFS), by_pid):
            self._runs.stop(by_pid[pid], STORAGE, space.describe(scratch.TMPFS, floor))

    def _check_disk(self, runs: Sequence[Watched], bound: int) -> None:
        """Measure the work directories of the runs that may hold more than `bound` on disk:
        those since whose mark more than `bound` was written to the file system (`written`: a
        run's files grow no faster, unless others than our runs remove as much meanwhile:
        such a run is measured once the growth shows). Walking a directory costs about 4 us
        per file, so a run is walked only when it could be over; one walk at a time, on the
        watch's thread."""
        if self._walking:
            return
        used = self._used(runs[0].workdir.parent)
        if used is None:
            return
        written = self._written(used, removing=True)
        due = [r for r in runs if r.disk_mark is not None and written - r.disk_mark > bound]
        if not due:
            return
        if self._walker is None:
            self._walker = ThreadPoolExecutor(1, thread_name_prefix="banzai-watch")
        self._walking = True
        loop = asyncio.get_running_loop()
        fut = self._walker.submit(lambda: [
            scratch.tree_bytes(r.workdir, bound, on_disk=True, quit=self._quit) for r in due])
        low = self._written(used, removing=False)
        fut.add_done_callback(lambda f: loop.call_soon_threadsafe(
            self._measured, due, low, bound, f))

    def _measured(self, due: list[Watched], written: int, bound: int,
                  fut: Future[list[int]]) -> None:
        self._walking = False
        if self._quit.is_set() or fut.cancelled() or fut.exception() is not None:
            return
        live = {id(r) for r in self._runs.watched()}
        for run, size in zip(due, fut.result(), strict=True):
            if id(run) not in live:
                continue  # ended or being killed meanwhile
            if size > bound:
                self._runs.stop(run, ERROR, (
                    f"the run's files on disk (in {run.workdir}) exceeded this peer's bound "
                    f"of {_size(bound)} per run (task_scratch_max_bytes): stopped"))
            else:  # the walk ended after `written` was read: the mark errs low (checks sooner)
                run.disk_mark = written - size


def _size(n: int) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift:
            return f"{math.floor(n * 100 / (1 << shift)) / 100:g} {unit}"
    return f"{n} bytes"
