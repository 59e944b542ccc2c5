"""Where a worker's run writes its files: a private directory on tmpfs (RAM: no journal, no
ext4 metadata work, nothing for the store's syncfs) when that is safe, else the run's work
directory on the data dir. A worker keeps its directory on tmpfs across its runs, emptied
after each (`release`) and taken again only while it is provably still its own and empty
(`_take_kept`): making, locking and removing one per run cost ~24 µs of a worker's CPU a run
(docs/benchmarks.md, session 36 helper f). Blocking file calls, made in workers, except
`small_output` (the peer's pure rule of which whole tasks may write their output to tmpfs)
and what the executor's watch of the tmpfs reads (`space`, `holders`: quick) or removes
(`remove_dirs`: its helper).
"""

from __future__ import annotations

import atexit
import fcntl
import math
import os
import shutil
import stat
import tempfile
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path

TMPFS = "/dev/shm"
# + PID + "-" + random: one worker's directory on TMPFS (the prefix of the first kind of
# scratch, a per-item chunk's; kept so that one sweep finds the leftovers of every version)
PREFIX = "banzai-items-"
SWEEP_S = 5.0  # a worker sweeps the leftovers of dead workers at most this often
_HELD: dict[Path, int] = {}  # this worker's directories on TMPFS -> the descriptor holding each


@dataclass
class _Kept:
    """The directory on TMPFS a worker keeps across its runs."""

    path: Path
    root: str  # the TMPFS it is on
    pid: int  # the process that keeps it (a child forked from it does not)
    busy: bool = True  # a run has it (`on_tmpfs` until `release`)


_kept: _Kept | None = None
_kept_lock = threading.Lock()


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
    """An empty directory of this worker on TMPFS for one run (`release` it after), if TMPFS
    exists, is writable and, once the leftovers of dead workers are swept, has at least
    `free_min_bytes` free, and the machine has as much memory available (a task may write its
    output into RAM, which neither the tmpfs's size cap nor the worker's memory limit accounts
    for); else None (the caller uses the run's work directory). The one the worker keeps
    (`_take_kept`) if it may, else a fresh one, kept if it keeps none."""
    if not os.path.isdir(TMPFS) or not os.access(TMPFS, os.W_OK):
        return None
    sweeps.maybe(TMPFS)  # first: a dead worker's leftovers must not keep the floor unmet
    try:
        st = os.statvfs(TMPFS)
    except OSError:
        return None
    if st.f_bavail * st.f_frsize < free_min_bytes or mem_available() < free_min_bytes:
        return None
    d = _take_kept()
    if d is not None:
        return d
    try:
        d = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-", dir=TMPFS))
        _HELD[d] = hold(d)  # (not swept while this worker lives: `sweep`; `remove` frees it)
    except OSError:  # (taken by another worker's sweep meanwhile: it removes it)
        return None
    _keep(d)
    return d


def release(d: Path) -> None:
    """A run is done with `d` (`on_tmpfs`'s, or a directory of its on disk): the directory
    this worker keeps is emptied for its next run (through its held descriptor, wherever the
    run moved it; removed instead if it cannot be emptied), any other removed (`remove`)."""
    k = _kept
    if k is not None and k.path == d and k.busy and k.pid == os.getpid():
        try:
            empty(_HELD[d])
        except (OSError, KeyError):
            pass
        else:
            k.busy = False
            return
    remove(d)


def remove(d: Path) -> None:
    """Remove a directory of this worker's scratch (`on_tmpfs`'s, or one on disk) and
    release its hold (`hold`); the worker keeps it no more."""
    global _kept
    if _kept is not None and _kept.path == d:
        _kept = None
    shutil.rmtree(d, ignore_errors=True)
    fd = _HELD.pop(d, None)
    if fd is not None:
        os.close(fd)


def empty(d: Path | int) -> None:
    """Remove what the directory `d` holds (a path, or a descriptor of it: its entries are
    then reached through it): files and symlinks unlinked, subdirectories removed (never
    through a symlink). A directory gone is left absent; any other OSError is raised."""
    try:
        it = os.scandir(d)
    except FileNotFoundError:
        return
    fd = d if isinstance(d, int) else None
    with it:
        for e in it:
            name = e.name if fd is not None else e.path
            if e.is_dir(follow_symlinks=False):
                shutil.rmtree(name, dir_fd=fd)
            else:
                os.unlink(name, dir_fd=fd)


def _keep(d: Path) -> None:
    """Keep `d`, this worker's new directory on TMPFS, a run's now, across its runs unless
    it keeps one already (then `release` removes `d`)."""
    global _kept
    with _kept_lock:
        if _kept is None or _kept.pid != os.getpid():
            _kept = _Kept(d, TMPFS, os.getpid())


def _take_kept() -> Path | None:
    """The directory this worker keeps, now the run's, if no run has it, it is on TMPFS and
    it is provably still its own and empty (`_intact`); one that is not is let go (removed,
    unless a run has it: then its `release` removes it)."""
    global _kept
    with _kept_lock:
        k = _kept
        if k is None or k.pid != os.getpid() or (k.busy and k.root == TMPFS):
            return None
        if k.root == TMPFS and _intact(k.path):
            k.busy = True
            return k.path
        _kept = None
    if not k.busy:
        remove(k.path)
    return None


def _intact(d: Path) -> bool:
    """Whether `d` is still the directory this worker made and holds, and empty: the same
    directory at that path (not replaced, moved or made a symlink by a run), this user's,
    private to it (0700, as made) and with nothing in it (a run's background process may
    write there after its run ended)."""
    fd = _HELD.get(d)
    if fd is None:
        return False
    try:
        held, there = os.fstat(fd), os.lstat(d)
    except OSError:
        return False
    return (os.path.samestat(held, there) and held.st_uid == os.getuid()
            and stat.S_IMODE(held.st_mode) == 0o700 and not _holds_files(fd))


def _holds_files(d: Path | int) -> bool:
    """Whether the directory `d` (a path or a descriptor) has anything in it; True if it
    cannot be read, False if it is gone."""
    try:
        with os.scandir(d) as it:
            return next(it, None) is not None
    except FileNotFoundError:
        return False
    except OSError:
        return True


@atexit.register
def _drop_kept() -> None:
    """At this process's exit, if it runs its exit handlers: remove the directory it keeps
    (an executor's worker does not run them: the executor removes a worker's directories
    once it is dead, `remove_dirs`; a sweep, those of a worker whose executor died too)."""
    k = _kept
    if k is not None and k.pid == os.getpid():
        remove(k.path)


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
        shutil.rmtree(d, ignore_errors=True)
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
    """Which of the processes `pids` have files on `root`: a directory of theirs there with
    anything in it (one scandir, and one of each such directory: the empty directory a
    worker keeps between its runs, or while its run writes to disk, holds nothing)."""
    return {pid for name, pid in _ours(root) if pid in pids and _holds_files(root / name)}


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
