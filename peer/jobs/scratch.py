"""Where a worker's run writes its files: a private directory on tmpfs (RAM: no journal, no
ext4 metadata work, nothing for the store's syncfs) when that is safe, else the run's work
directory on the data dir. Blocking file calls, made in workers, except `small_output` (the
peer's pure rule of which whole tasks may write their output to tmpfs) and what the executor's
watch of the tmpfs reads (`space`, `holders`: quick) or removes (`remove_dirs`: its helper).
Every removal of what a run left (here, the runner's, the executor's, the janitor's) is
peer.dataentry's `remove_tree` or `empty`: a task's files are hostile (a tree deeper than
shutil.rmtree's recursion, a directory made unreadable, a symlink put where one was).
"""

from __future__ import annotations

import contextlib
import fcntl
import math
import os
import stat
import tempfile
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path

from peer.dataentry import remove_tree

TMPFS = "/dev/shm"
# + PID + "-" + random: one worker's directory on TMPFS (the prefix of the first kind of
# scratch, a per-item chunk's; kept so that one sweep finds the leftovers of every version)
PREFIX = "banzai-items-"
SWEEP_S = 5.0  # a worker sweeps the leftovers of dead workers at most this often
_HELD: dict[Path, int] = {}  # this worker's directories on TMPFS -> the descriptor holding each


def small_output(last_bytes: int | None, max_bytes: int) -> bool:
    """The peer's rule: a whole task of a call whose last output here was at most
    `max_bytes` writes its output on tmpfs; a call not run here yet (None), or whose last
    output was larger, writes to disk, and so does every call if `max_bytes` is 0."""
    return last_bytes is not None and 0 <= last_bytes <= max_bytes and max_bytes > 0


class Sweeps:
    """Removes the directories left on tmpfs by workers that died (killed mid-run) at most
    once per `interval_s` per root; the first call in a process always sweeps."""

    def __init__(self, interval_s: float = SWEEP_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.interval_s = interval_s
        self._clock = clock
        self._next: dict[str, float] = {}  # root -> when its next sweep is due

    def maybe(self, root: str) -> int:
        """Sweep `root` if due; returns how many directories were removed."""
        now = self._clock()
        if now < self._next.get(root, -math.inf):
            return 0
        self._next[root] = now + self.interval_s
        return sweep(Path(root))


_SWEEPS = Sweeps()


def on_tmpfs(free_min_bytes: int, sweeps: Sweeps = _SWEEPS) -> Path | None:
    """A fresh directory of this worker on TMPFS, if TMPFS exists, is writable and, once the
    leftovers of dead workers are swept, has at least `free_min_bytes` free, and the machine
    has as much memory available (a task may write its output into RAM, which neither the
    tmpfs's size cap nor the worker's memory limit accounts for); else None (the caller uses
    the run's work directory)."""
    if not os.path.isdir(TMPFS) or not os.access(TMPFS, os.W_OK):
        return None
    sweeps.maybe(TMPFS)  # first: a dead worker's leftovers must not keep the floor unmet
    try:
        st = os.statvfs(TMPFS)
    except OSError:
        return None
    if st.f_bavail * st.f_frsize < free_min_bytes or mem_available() < free_min_bytes:
        return None
    try:  # (held: not swept while this worker lives, `sweep`; `remove`)
        d, _HELD[d] = made_and_held(Path(TMPFS), f"{PREFIX}{os.getpid()}-")
    except OSError:
        return None
    return d


HOLD_TRIES = 5  # a fresh directory's hold tried this often while another process probes it
_pause = time.sleep


def made_and_held(where: Path, prefix: str) -> tuple[Path, int]:
    """A new directory of this process in `where` (named `prefix` and a random tail) and a
    descriptor of it holding its lock (`hold`). Between the two, another process may probe
    it (the tmpfs watch's `_held`, of a live worker's directories too: its lock a moment;
    the hold is tried again, a millisecond on: session 51, helper g, RR-9) or sweep it (a
    peer of another PID namespace sharing `where`, to which this PID looks gone: another
    directory is made). OSError as `mkdtemp` or `hold` once HOLD_TRIES are spent, the
    directory made last removed if still there (empty: not left unheld until a sweep).
    One loop for `on_tmpfs` and the executor's run directories (two near-alike before)."""
    d: Path | None = None
    for attempt in range(HOLD_TRIES):
        if d is None:
            d = Path(tempfile.mkdtemp(prefix=prefix, dir=where))
        try:
            return d, hold(d)
        except FileNotFoundError:  # (swept: another)
            d = None
            if attempt == HOLD_TRIES - 1:
                raise
        except BlockingIOError:  # (probed, or being swept: tried again)
            if attempt == HOLD_TRIES - 1:
                with contextlib.suppress(OSError):
                    os.rmdir(d)
                raise
            _pause(0.001 * (attempt + 1))
    raise AssertionError("unreachable")


def remove(d: Path) -> None:
    """Remove a directory of this worker's scratch (`on_tmpfs`'s, or one on disk) and
    release its hold (`hold`)."""
    remove_tree(d, ignore_errors=True)
    fd = _HELD.pop(d, None)
    if fd is not None:
        os.close(fd)


def mem_available(meminfo: str = "/proc/meminfo") -> int:
    """The kernel's estimate of the memory available without swapping, in bytes
    (MemAvailable); 0 if it cannot be read (then tmpfs is not used)."""
    try:
        with open(meminfo, "rb") as f:
            for line in f:
                if line.startswith(b"MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return 0
    return 0


def _ours(root: Path) -> list[tuple[str, int]]:
    """(name, pid) of the workers' directories on `root`: only this user's real directories
    named PREFIX + a decimal PID (+ "-" + more) (the tmpfs is shared with every user, whose
    entries are names to distrust)."""
    uid = os.getuid()
    try:
        with os.scandir(root) as it:
            names = [e.name for e in it if e.name.startswith(PREFIX)
                     and e.is_dir(follow_symlinks=False)
                     and e.stat(follow_symlinks=False).st_uid == uid]
    except OSError:
        return []
    out = []
    for name in names:
        pid = name[len(PREFIX):].split("-", 1)[0]
        if pid.isdigit():
            out.append((name, int(pid)))
    return out


def sweep(root: Path) -> int:
    """Remove the directories left on `root` by workers that died (killed mid-run: their
    `finally` never ran) and that no worker holds (`hold`: a live one whose PID is another
    PID namespace's, a container sharing the tmpfs, looks dead here); returns how many."""
    return sum(_remove_free(root / name) for name, pid in _ours(root) if not alive(pid))


def _remove_free(d: Path) -> bool:
    """Remove the directory `d` (never through a symlink) unless a worker holds it (`hold`);
    whether it was removed."""
    try:
        fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:  # (gone meanwhile, or made a symlink: passed over)
        return False
    try:
        if not free(fd):
            return False
        remove_tree(d, ignore_errors=True)
        return True
    finally:
        os.close(fd)


def hold(d: Path) -> int:
    """A descriptor of the directory `d` holding its lock (flock) while the process that
    made it uses it (closed once `d` is removed; the process's end releases it): what a
    sweep of another process passes over (`free`), whatever PID namespace either is in.
    OSError if `d` cannot be opened or another process holds it already (BlockingIOError)."""
    fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BaseException:
        os.close(fd)
        raise
    return fd


def free(fd: int) -> bool:
    """Whether no process holds the directory open as `fd` (`hold`); if so, it is locked
    through `fd` until that is closed."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


# -- the executor's watch over the tmpfs -----------------------------------------------------

@dataclass(frozen=True)
class Space:
    """One reading of what is free on the tmpfs (statvfs) and in the host's memory
    (MemAvailable), in bytes: what a run writing on the tmpfs uses up."""

    tmpfs_free_bytes: int
    mem_available_bytes: int

    def short(self, min_bytes: int) -> bool:
        """True if either is below `min_bytes`."""
        return min(self.tmpfs_free_bytes, self.mem_available_bytes) < min_bytes

    def describe(self, root: str, min_bytes: int) -> str:
        """The figures, for a run stopped over them."""
        return (f"tmpfs {root} below its floor of {_mib(min_bytes)} while this run wrote there "
                f"(free on {root}: {_mib(self.tmpfs_free_bytes)}; the host's MemAvailable: "
                f"{_mib(self.mem_available_bytes)}): the run was stopped and its files there "
                "removed; its call's next run here writes to disk")


def _mib(n: int) -> str:
    """`n` bytes in MiB, rounded down (a figure just below a floor never reads as equal)."""
    return f"{math.floor(n * 10 / (1 << 20)) / 10:.1f} MiB"


def space() -> Space | None:
    """What TMPFS and the host's memory have free now; None if TMPFS cannot be read. Quick
    (a statvfs and /proc/meminfo: tens of microseconds)."""
    try:
        st = os.statvfs(TMPFS)
    except OSError:
        return None
    return Space(st.f_bavail * st.f_frsize, mem_available())


def holders(root: Path, pids: Collection[int]) -> set[int]:
    """Which of the processes `pids` have a directory of theirs on `root` (one scandir):
    one that a process holds (`hold`). A directory no process holds is a dead worker's
    (killed mid-run), left until a sweep; its name's PID may be a live worker's now (a
    reused PID: `sweep` passes it over while that one lives), which must not be stopped
    for the tmpfs as if it were on it (session 51)."""
    return {pid for name, pid in _ours(root) if pid in pids and _held(root / name)}


def _held(d: Path) -> bool:
    """Whether a process holds the directory `d` (`hold`); False if it is gone."""
    try:
        fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        return not free(fd)  # (if free, the lock taken is released with the descriptor)
    finally:
        os.close(fd)


def remove_dirs(root: Path, pid: int) -> int:
    """Remove the directories of worker `pid` on `root` (blocking: a run may have left many
    files) but those a live worker holds (`hold`: one of another PID namespace with the same
    PID); returns how many. Call it once the worker is dead and before it is reaped, so that
    its PID cannot be another process's of this namespace meanwhile."""
    return sum(_remove_free(root / name) for name, p in _ours(root) if p == pid)


def alive(pid: int) -> bool:
    """Whether process `pid` exists (a zombie counts; another user's too; a number no
    process can have counts as alive: its directory is not ours to remove)."""
    if pid <= 0:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (OSError, OverflowError):  # someone else's, or no pid_t
        return True
    return True


def tree_bytes(path: Path, stop_above: int, *, on_disk: bool = False,
               quit: threading.Event | None = None) -> int:
    """Bytes of the regular files at or under `path` (symlinks not followed), or with `on_disk`
    the space every entry there uses (st_blocks), counted until the total exceeds
    `stop_above` (then a total above it, not the exact one) or `quit` is set."""
    def size(st: os.stat_result, regular: bool) -> int:
        return st.st_blocks * 512 if on_disk else st.st_size if regular else 0

    try:
        st = path.lstat()
    except OSError:
        return 0
    if not stat.S_ISDIR(st.st_mode):
        return size(st, stat.S_ISREG(st.st_mode))
    total = 0
    todo = [str(path)]
    while todo and total <= stop_above and not (quit is not None and quit.is_set()):
        try:
            it = os.scandir(todo.pop())
        except OSError:
            continue
        with it:
            for e in it:
                try:
                    st = e.stat(follow_symlinks=False)
                except OSError:
                    continue
                total += size(st, stat.S_ISREG(st.st_mode))
                if stat.S_ISDIR(st.st_mode):
                    todo.append(e.path)
                if total > stop_above or (quit is not None and quit.is_set()):
                    break  # a directory may hold millions of files
    return total

