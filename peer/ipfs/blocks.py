"""Filesystem blockstore, pin set and store lock; safe for several processes on one root.

Blocks live at blocks/<2 hex>/<multihash hex>, written to a temp file, fsynced (on a few
threads, so that the fsyncs of one add overlap) and renamed, directories fsynced by `sync`
once per add or import, and verified against their CID on every read; a `BlockBatch` (many
adds) makes its temp files durable with one syncfs, renames them, and makes the renames
durable with one more. Pins are one file each under pins/; writers hold a shared flock on
`lock`, gc holds it exclusively. Inline outputs' blocks and pins are rows of the inline pack
(peer.ipfs.pack), read after the files and memory.

Which present blocks are durable. The peer and its worker processes write one store. A
block file without its owner's write bit is *marked*: not known durable (one put in place
by a write whose sync then failed; or an earlier release's inline output, written unsynced:
inline outputs now go to the inline pack, peer.ipfs.pack); the others were fsynced (or
syncfs'd) before their rename, by whichever process wrote them.
A write that finds a block present keeps it only if it is known durable (`BlockStore.
durable`): unmarked, and this process trusts the store (a sync of the whole file system when
it opened the store covers the renames of a process that died before its own sync; a sync
that failed since withdraws that trust: the pages it could not write may be lost while a
later sync succeeds, so until the process restarts only the blocks it wrote itself since
count); otherwise it writes the block again, as if absent, and its sync covers it. Another
process's block renamed in but not yet covered by its own sync (the milliseconds of its
commit, or for ever if it died there while this one was open) is taken as durable: its data
was synced before the rename, and the event log's fsync that carries this process's report
(one journal for the whole file system on ext4 and xfs) commits that rename too.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import hashlib
import io
import logging
import os
import secrets
import shutil
import stat
import threading
import time
from collections.abc import Callable, Container, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import cast

import multihash

from peer.cids import IDENTITY, SHA2_256, Cid, is_key, parse_cid, verify
from peer.dataentry import (
    DIR_NOFOLLOW,
    check_entry,
    ensure_dir,
    open_dir,
    open_real_dir,
    read_file,
    remove,
    remove_tree,
    unlink_in,
)
from peer.errors import DataError, IntegrityError, NotFound, StorageFull, StoreError, disk_full
from peer.ipfs.car import MAX_BLOCK_BYTES
from peer.ipfs.pack import InlinePack

log = logging.getLogger("banzai.store")

_TMP_SUFFIX = ".tmp"
_STALE_TMP_S = 3600.0
_SHARD = "a shard directory of the store's blocks"  # (named in its DataError)
_PINS = "a directory of the store's pins"
# Block files found corrupt (or not files at all, or longer than any block) are moved to
# <store>/corrupt/ as <key>.<ns>, to be inspected or restored, not deleted; the newest
# CORRUPT_MAX_FILES and CORRUPT_MAX_BYTES of them are kept (one larger is removed).
CORRUPT_DIR = "corrupt"
CORRUPT_MAX_FILES = 64
CORRUPT_MAX_BYTES = 64 << 20
_CORRUPT = "the store's directory of corrupt block files, moved aside"


def _tmp_name(final: Path) -> Path:
    return final.with_name(f".{final.name}.{os.getpid()}.{secrets.token_hex(6)}{_TMP_SUFFIX}")


@contextlib.contextmanager
def _or_removed(tmp: Path, what: str) -> Iterator[None]:
    """The body writes the temp file `tmp`: if it raises, `tmp` is removed, and a full disk
    is told as StorageFull ("cannot write `what`")."""
    try:
        yield
    except BaseException as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if disk_full(e):
            raise StorageFull(f"cannot write {what}: the disk is full") from e
        raise


def write_atomic(final: Path, data: bytes, fsync: bool = True) -> None:
    """Write `data` to `final` through a temp file in the same directory, fsynced unless
    `fsync` is False, and a rename (the directory's entry is made durable by `fsync_dir`).
    StorageFull if the disk is full."""
    tmp = _tmp_name(final)
    with _or_removed(tmp, final.name):
        with open(tmp, "wb", buffering=0) as f:
            _write_all(f, data)
            if fsync:
                os.fsync(f.fileno())
        os.replace(tmp, final)


_FSYNC_THREADS = 8  # concurrent fsyncs of one add share the file system's journal commits
_pool: tuple[int, ThreadPoolExecutor] | None = None
_pool_lock = threading.Lock()


def _fsync_pool() -> ThreadPoolExecutor:
    """This process's fsync threads (created on first use, again after a fork)."""
    global _pool
    with _pool_lock:
        if _pool is None or _pool[0] != os.getpid():
            _pool = (os.getpid(), ThreadPoolExecutor(_FSYNC_THREADS, "banzai-fsync"))
        return _pool[1]


def _write_new(tmp: Path, data: bytes, what: str) -> None:
    """Write `data` to the new file `tmp` (removed again if that fails; StorageFull)."""
    with _or_removed(tmp, what), open(tmp, "xb", buffering=0) as f:
        _write_all(f, data)


def _write_all(f: io.FileIO, data: bytes) -> None:
    """Write all of `data` (an unbuffered write may write less and say so: at a file size
    limit, EFBIG comes only at the next one; before, a block cut short was kept). A write
    that writes nothing is an error (EIO), not a loop for ever (review r2 L1)."""
    view = memoryview(data)
    while view:
        if not (n := f.write(view)):
            raise OSError(errno.EIO, "a write wrote nothing", f.name)
        view = view[n:]


# A block file without its owner's write bit is *marked*: not known durable (one put in
# place by a write whose sync then failed; an earlier release's inline blocks, written
# unsynced). Every other block file is created with its owner's write bit, under any sane
# umask.


def _marked(mode: int) -> bool:
    """True if a block file of `mode` is not known durable (see the module's docstring)."""
    return not mode & stat.S_IWUSR


def _mark(path: Path) -> None:
    """Mark the block file `path` not known durable: its write bits off, the others kept
    (best effort: the caller also stops trusting the store)."""
    with contextlib.suppress(OSError):
        os.chmod(path, stat.S_IMODE(os.stat(path).st_mode) & ~0o222)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# glibc's mallopt parameters (malloc.h) and the values tune_allocator sets.
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -2, -3, -8
_ALLOCATOR = ((_M_MMAP_THRESHOLD, 4 << 20), (_M_TRIM_THRESHOLD, 64 << 20), (_M_TOP_PAD, 16 << 20),
              (_M_ARENA_MAX, 1))


def tune_allocator() -> bool:
    """Make glibc's malloc keep the memory of freed blocks for the next ones; the peer calls it
    once at start. Reads allocate a 256 KiB bytes per block, and a streamed file keeps a few
    MiB of them alive at once: by default glibc gives the freed memory back to the kernel
    (its heap is trimmed past 2x the largest block freed) and takes it again with page faults
    for the next ones, which made ~60% of the gateway's time for a 200 MB file kernel time
    (docs/benchmarks.md). Allocations below 4 MiB come from the heap, and up to 64 MiB of
    free heap is kept. One arena for every thread: with those thresholds each thread that
    allocated a few MiB (an executor thread serving a snapshot) kept them in an arena of its
    own, which the trims did not give back (+15 MB per such thread); the gateway is as
    fast with one (docs/benchmarks.md, "Snapshot serves off the loop"). Forked workers start
    from a fresh exec (forkserver), without these. False (nothing changed) without glibc, or
    when MALLOC_* settings in the environment say otherwise."""
    if any(k.startswith("MALLOC_") for k in os.environ):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return all(mallopt(param, value) == 1 for param, value in _ALLOCATOR)


def _load_syncfs() -> Callable[[int], int] | None:
    """libc's syncfs(2) (Linux; it reports write-back errors since 5.8), or None."""
    try:
        fn = ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):
        return None
    fn.argtypes, fn.restype = [ctypes.c_int], ctypes.c_int
    return cast(Callable[[int], int], fn)


_syncfs_fn = _load_syncfs()


# (pid, device) -> a descriptor of a directory on that file system, opened at this
# process's first syncfs there (the store's open) and kept: syncfs reports the write-back
# errors of the file system since *its descriptor* was opened, so one opened per call would
# miss an error of the background write-back of a batch's files before the call.
_fs_fds: dict[tuple[int, int], int] = {}
_fs_fds_lock = threading.Lock()
# The syncfs calls of this process that failed, ever. The kernel reports an error once per
# descriptor, to whichever syncfs comes first: a batch whose own syncfs succeeded while
# this moved since the batch began may have lost pages to an error another caller was told
# of (`syncfs_failures`).
_syncfs_failed = 0


def syncfs_failures() -> int:
    return _syncfs_failed


def _fs_fd(d: Path) -> int:
    key = (os.getpid(), os.stat(d).st_dev)  # (a forked child opens its own)
    with _fs_fds_lock:
        fd = _fs_fds.get(key)
        if fd is None:
            fd = _fs_fds[key] = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    return fd


def syncfs(d: Path) -> None:
    """Make the data and metadata of every file on the file system holding `d` durable:
    one call for a batch of written files instead of one fsync each. It fails (OSError)
    for a write-back error on that file system since this process's first syncfs there,
    once for each error."""
    global _syncfs_failed
    assert _syncfs_fn is not None
    if _syncfs_fn(_fs_fd(d)) != 0:
        err = ctypes.get_errno()
        with _fs_fds_lock:
            _syncfs_failed += 1
        raise OSError(err, os.strerror(err))


# A syncfs writes back every dirty page of the file system, other processes' too: beside a
# neighbour's 200 MB of unwritten data on this machine's disk, a batch of 50 small files
# committed in 107 ms (7.4 ms alone), and in 16-17 ms either way when it fsynced its own
# files (scripts/bench_syncfs.py, docs/benchmarks.md). Above this much dirty or in-flight
# data beyond the batch's own (the machine's, /proc/meminfo: it does not say which file
# system), a batch fsyncs its own files instead.
SYNCFS_DIRTY_MAX_BYTES = 32 << 20
# The blocks a store that no longer trusts its present blocks (a sync failed) remembers as
# made durable since by this process (~100 bytes each): past it they are forgotten, and
# written again when met.
VOUCHED_MAX = 1 << 16
_MEMINFO = Path("/proc/meminfo")


def dirty_bytes() -> int | None:
    """The machine's page cache data not yet on disk (Dirty + Writeback), or None."""
    try:
        text = _MEMINFO.read_text()
    except OSError:
        return None
    total = 0
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        if name in ("Dirty", "Writeback"):
            total += int(rest.split()[0]) * 1024
    return total


def syncfs_pays(own_bytes: int) -> bool:
    """True if one syncfs is the cheaper way to make `own_bytes` just written durable: the
    OS has it, and little else waits to be written back beside them. Read at the commit,
    not before the first block: a task's own files, written just before and removed by
    then (FETCH_FESTVOX's 57 MB of WAVs), would count as a neighbour's. (If the kernel
    wrote part of ours back meanwhile, a neighbour's may hide behind them: a slower commit,
    not a less durable one.)"""
    if _syncfs_fn is None:
        return False
    dirty = dirty_bytes()
    return dirty is None or dirty - own_bytes <= SYNCFS_DIRTY_MAX_BYTES


def sync_fs(d: Path) -> None:
    """Make every write on the file system holding `d` durable, whether or not fsynced
    (syncfs; where the OS lacks it, sync of every file system). OSError if it fails."""
    if _syncfs_fn is not None:
        syncfs(d)
    else:
        os.sync()


def fsync_dir(d: Path) -> None:
    """Make the entries of directory `d` (renames, new files) durable."""
    fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _matches(c: Cid, data: bytes) -> bool:
    """True if `data` hashes to `c` (sha2-256 inline: the common case, read per block)."""
    mh = c.multihash
    if mh[0] == SHA2_256 and len(mh) == 34:
        return hashlib.sha256(data).digest() == mh[2:]
    try:
        verify(c, data)
    except IntegrityError:
        return False
    return True


Repair = Callable[[Cid], bytes | None]  # a corrupt block's verified bytes from elsewhere
_DONE: Future[None] = Future()  # a write already in place (`BlockStore.adopt`)
_DONE.set_result(None)


class BlockStore:
    """Content-addressed blocks keyed by multihash; identity CIDs are never stored. A block
    that no longer matches its CID when read (or whose file is no regular file, or is longer
    than any block: read at most MAX_BLOCK_BYTES + 1, opened without blocking nor following
    a symlink at the file) is counted (`corrupt`), moved aside to `corrupt_dir` and, if a
    `repair` hook is set (the peer: fetch it from a provider), replaced; otherwise the read
    fails with IntegrityError. Never returns bytes that do not match their CID."""

    def __init__(self, root: Path) -> None:
        self.dir = ensure_dir(root / "blocks", "the store's block directory")
        self.corrupt_dir = root / CORRUPT_DIR
        self._prefix = f"{self.dir}{os.sep}"  # reads build paths as strings (pathlib is slow)
        self._shards: set[str] = set()
        self.corrupt = 0  # corrupt blocks met by reads in this process
        self.strays: set[str] = set()  # files in the shards that are no block's (`keys`)
        self.repair: Repair | None = None
        self._unsynced: set[Path] = set()  # directories with entries not yet fsynced
        self._local = threading.local()  # per thread: blocks being fsynced and renamed
        self._pending: dict[Path, Future[None]] = {}  # every thread's, until renamed
        self._lock = threading.Lock()  # guards _unsynced and _pending
        self._sync_lock = threading.Lock()  # held by sync() while it fsyncs directories
        # Verified blocks kept in memory until a background write lands (inline outputs,
        # peer.ipfs.inline): reads fall back to them. Multihash key -> bytes; dict ops only.
        self.unwritten: dict[str, bytes] = {}
        # Every unmarked block present is durable (the module's docstring): the sync below,
        # until a sync fails. Then only the blocks this process made durable since count.
        self.trusted = True
        self._vouched: set[str] = set()  # keys made durable here while not `trusted`
        self.pack = InlinePack(root)  # inline outputs' blocks (peer.ipfs.pack)
        self._open_sync()

    def _open_sync(self) -> None:
        """Make every write on the store's file system so far durable (one syncfs; where
        the OS lacks it, a sync of every file system): the renames of a process that died
        before its own sync. A failure is not fatal: the store is not trusted (`distrust`)."""
        try:
            sync_fs(self.dir)
        except OSError as e:
            log.warning("store %s: the sync at open failed (every block met is written "
                        "again): %s", self.dir, e)
            self.distrust()

    def durable(self, final: Path | str) -> bool | None:
        """Whether the block file `final` is known durable: None if it is not there, False
        if it is there but not known durable (marked, or not trusted: write it again)."""
        try:
            mode = os.stat(final).st_mode
        except OSError:
            return None
        if _marked(mode):
            return False
        return self.trusted or os.path.basename(final) in self._vouched

    def distrust(self, finals: Sequence[Path] = ()) -> None:
        """A sync failed: the block files `finals` put in place by its write are marked,
        and no block found present is taken as durable any more unless this process makes
        it so (`vouch`): the pages the sync could not write may be lost while a later one
        succeeds (Linux marks them clean)."""
        for final in finals:
            _mark(final)
        self.trusted = False

    def vouch(self, keys: Sequence[str]) -> None:
        """Blocks this process just made durable (remembered only while not `trusted`, up
        to VOUCHED_MAX: past it they are forgotten, and written again if met)."""
        if self.trusted:
            return
        if len(self._vouched) + len(keys) > VOUCHED_MAX:
            self._vouched.clear()
        self._vouched.update(keys)

    def path(self, key: str) -> Path:
        """Where the block with multihash hex `key` lives."""
        return self.dir / key[-2:] / key

    def has(self, c: Cid) -> bool:
        """True if the block is stored (always for identity CIDs)."""
        return (c.multihash[0] == IDENTITY or self._settled(self.path(c.key)).exists()
                or c.key in self.unwritten or self.pack.has(c.key))

    def _file(self, key: str) -> str:
        """The file name of block `key` (`_settled`: once a put of this process renamed it
        into place), built as a string: pathlib's joins and hash cost more than the stat
        (an inline output's replica asks `has_durable_file` of each of its blocks)."""
        return (str(self._settled(self.path(key))) if self._pending  # a put not yet renamed
                else f"{self._prefix}{key[-2:]}{os.sep}{key}")

    def _settled(self, path: Path) -> Path:
        """`path`, once a block this process put there is renamed into place (reads see
        the blocks put before `sync`)."""
        fut = self._pending.get(path)
        if fut is not None:
            with contextlib.suppress(OSError):
                fut.result()
        return path

    def get(self, c: Cid) -> bytes:
        """The block's bytes, verified; NotFound if absent, IntegrityError if corrupt and
        not repaired. Looked for as a file, then in memory (`unwritten`), then in the inline
        pack; a copy that does not match its CID is removed and the next place looked in."""
        if c.multihash[0] == IDENTITY:
            return _identity_data(c)
        key = c.key
        name = self._file(key)
        try:
            data, wrong = _read_block(name)
        except FileNotFoundError:
            corrupt = False
        else:
            if data is not None and _matches(c, data):
                return data
            self.corrupt += 1
            corrupt = True
            self._set_aside(c, name, wrong or "does not match its CID")
        kept = self.unwritten.get(key)  # verified when it was kept
        if kept is not None:
            return kept
        packed = self.pack.get(key)
        if packed is not None:
            if _matches(c, packed):
                return packed
            self.corrupt += 1
            corrupt = True
            log.error("block %s is corrupt in the inline pack (%s): removed", c,
                      self.pack.path)
            with contextlib.suppress(StoreError):
                self.pack.delete_key(key)
        if not corrupt:
            raise NotFound(f"block {c} is not in the store", field="cid")
        return self._repaired(c)

    def stored(self, key: str) -> bytes | None:
        """The bytes kept under `key` as they are, unverified (a file, then memory, then the
        inline pack, as `get` looks), None if there are none: for gc to read the links of a
        block whose CID no strict parse takes (an earlier release's; it verifies them as that
        release did), never served. OSError or StoreError if they cannot be read;
        IntegrityError naming the file if it is no block's (`_read_block`)."""
        name = self._file(key)
        with contextlib.suppress(FileNotFoundError):
            data, wrong = _read_block(name)
            if data is None:
                raise IntegrityError(f"block file {name} {wrong}", field="cid")
            return data
        kept = self.unwritten.get(key)
        return kept if kept is not None else self.pack.get(key)

    def _set_aside(self, c: Cid, name: str, wrong: str) -> None:
        """Move the block file `name` that is not `c`'s block (`wrong`: how) to `corrupt_dir`
        (`_move_aside`), logged; never through a shard that is a symlink (`_shard_dirs`:
        what it holds is not the store's), which is named and left as it is."""
        shard, key = os.path.split(name)
        try:
            fd = open_real_dir(shard, _SHARD)
        except DataError as refused:  # (a symlink)
            log.error("block %s is corrupt on disk (%s %s), left there: %s", c, name, wrong,
                      refused)
            return
        except OSError as e:
            log.error("block %s is corrupt on disk (%s %s), not moved: %s", c, name, wrong,
                      e.strerror or e)
            return
        try:
            where = self._move_aside(fd, key)
        except (OSError, DataError) as e:
            log.error("block %s is corrupt on disk (%s %s), not moved: %s", c, name, wrong,
                      getattr(e, "message", None) or getattr(e, "strerror", None) or e)
        else:
            log.error("block %s is corrupt on disk (%s %s): %s", c, name, wrong, where)
        finally:
            os.close(fd)

    def aside_bytes(self) -> int:
        """Bytes of the corrupt block files kept aside in `corrupt_dir` (at most about
        CORRUPT_MAX_BYTES: `_prune_aside`), which a store budget counts (`used_bytes`,
        session 48); 0 if there are none, or it is no directory of the store's own."""
        try:
            fd = os.open(self.corrupt_dir, DIR_NOFOLLOW)
        except OSError:
            return 0
        total = 0
        try:
            with os.scandir(fd) as it:
                for entry in it:
                    with contextlib.suppress(OSError):
                        total += entry.stat(follow_symlinks=False).st_size
        finally:
            os.close(fd)
        return total

    def _move_aside(self, shard_fd: int, key: str) -> str:
        """Move the entry `key` of the shard `shard_fd` to `corrupt_dir` as <key>.<ns> (removed
        instead if it is larger than CORRUPT_MAX_BYTES, or the directory is on another file
        system), then remove the oldest there past CORRUPT_MAX_FILES or CORRUPT_MAX_BYTES;
        what was done, said. DataError if `corrupt_dir` is not a directory of its own,
        OSError if the entry can be neither moved nor removed."""
        st = os.stat(key, dir_fd=shard_fd, follow_symlinks=False)
        if st.st_size > CORRUPT_MAX_BYTES:
            _unlink_entry(shard_fd, key, self.dir / key[-2:] / key)
            return f"removed (over {CORRUPT_MAX_BYTES} bytes: not kept aside)"
        aside = open_dir(self.corrupt_dir, _CORRUPT)
        try:
            moved = f"{key}.{time.time_ns()}"
            try:
                os.rename(key, moved, src_dir_fd=shard_fd, dst_dir_fd=aside)
            except OSError as e:
                if e.errno != errno.EXDEV:
                    raise
                _unlink_entry(shard_fd, key, self.dir / key[-2:] / key)
                return f"removed (not moved aside: {self.corrupt_dir} is on another disk)"
            with contextlib.suppress(OSError):
                os.fsync(aside)
            _prune_aside(aside, self.corrupt_dir)
        finally:
            os.close(aside)
        return (f"moved to {self.corrupt_dir / moved} (to inspect it, or restore a good copy "
                "at its place)")

    def has_durable_file(self, c: Cid) -> bool:
        """True if the block is stored as a file known durable (`durable`)."""
        return bool(self.durable(self._file(c.key)))

    def must_write(self, c: Cid) -> bool:
        """True if a write of block `c` that is to be durable must write it: not an identity
        CID (never stored) nor stored as a file known durable (one in memory or in the
        inline pack is not synced; a file marked by a failed sync may be torn)."""
        return c.multihash[0] != IDENTITY and not self.has_durable_file(c)

    def _repaired(self, c: Cid) -> bytes:
        """A corrupt block (moved aside) fetched again through `repair`, stored and
        returned; IntegrityError if no live peer provides it."""
        fresh = self.repair(c) if self.repair is not None else None
        if fresh is None or not _matches(c, fresh):
            raise IntegrityError(f"block {c} was corrupt on disk (taken out of the store; "
                                 f"kept in {self.corrupt_dir} unless the log says otherwise) "
                                 "and no live peer could provide it again", field="cid")
        log.warning("block %s repaired from another peer", c)
        caller = self._settling()  # the caller's writes (a pin's `_durable`) are its own to
        self._local.settling = {}  # sync: a failed sync here would mark them, unheard
        try:  # best effort: the verified bytes are served even if they cannot be kept
            self.put_trusted(c, fresh)
            self.sync()
        except (OSError, StoreError) as e:
            log.warning("block %s: cannot store the repaired copy: %s", c, e)
        finally:
            self._local.settling = caller
        return fresh

    def size(self, c: Cid) -> int:
        """The block's length in bytes; NotFound if absent."""
        if c.multihash[0] == IDENTITY:
            return len(_identity_data(c))
        try:
            return self._settled(self.path(c.key)).stat().st_size
        except FileNotFoundError:
            if c.key in self.unwritten:
                return len(self.unwritten[c.key])
            n = self.pack.size(c.key)
            if n is not None:
                return n
            raise NotFound(f"block {c} is not in the store", field="cid") from None

    def put_trusted(self, c: Cid, data: bytes) -> None:
        """Store bytes already hashed to `c` by the caller; a present block is kept if known
        durable (`durable`), else written again."""
        if c.multihash[0] == IDENTITY:
            return
        final = self.path(c.key)
        settling = self._settling()
        if final in settling:
            return
        self._shard(final.parent)  # (first: a block found through a linked shard is not ours)
        if self.durable(final):
            touch(final)  # gc's grace period covers this add (it found the block)
            return  # (one not known durable is written again, its rename replacing it)
        tmp = _tmp_name(final)  # written here, fsynced and renamed by a pool thread
        _write_new(tmp, data, f"block {c}")
        fut = _fsync_pool().submit(self._settle, tmp, final)
        settling[final] = fut
        with self._lock:
            self._pending[final] = fut
        fut.add_done_callback(lambda _: self._forget(final, fut))

    def _forget(self, final: Path, fut: Future[None]) -> None:
        with self._lock:
            if self._pending.get(final) is fut:
                del self._pending[final]

    def begin(self) -> None:
        """Start a write on this thread: forget what an earlier one that failed left (its
        blocks still settle in the background)."""
        self._local.settling = {}

    def batch(self) -> BlockBatch:
        """A batch of blocks made durable and put in place together (`BlockBatch.commit`)."""
        return BlockBatch(self)

    def _settling(self) -> dict[Path, Future[None]]:
        """This thread's blocks whose fsync and rename may not be done yet."""
        d: dict[Path, Future[None]] | None = getattr(self._local, "settling", None)
        if d is None:
            d = self._local.settling = {}
        return d

    def _settle(self, tmp: Path, final: Path) -> None:
        """fsync a written temp file, rename it into place, then mark its directory for
        `sync` (after the rename: a sync that starts later covers it). A pool thread."""
        try:
            _fsync_file(tmp)
            os.replace(tmp, final)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        self._dirty(final.parent)

    def _shard(self, shard: Path) -> None:
        """Make shard directory `shard` if needed. The first time this process uses it, the
        root's entry for it is fsynced with the next sync (even if another process made it:
        that one may have died before its own sync). DataError (a StoreError) naming it if
        it is not a directory of its own: a shard that is a symlink is neither listed nor
        collected (`_shard_dirs`), so no block is written through it, where it would stay
        for good (the blocks directory itself may be a symlink: the store on another disk)."""
        if shard.name not in self._shards:
            ensure_dir(shard, _SHARD, real=True)
            self._dirty(self.dir)
            self._shards.add(shard.name)

    def _dirty(self, d: Path) -> None:
        with self._lock:
            self._unsynced.add(d)

    def sync(self) -> None:
        """Make every block this thread put durable: wait for their files' fsync and
        rename, then fsync the directories. Callers announce CIDs only after it."""
        settling = self._settling()
        self._local.settling = {}
        wait(settling.values())
        try:
            try:
                for fut in settling.values():
                    fut.result()
            except OSError:  # an fsync failed (or a rename): mark those that were renamed
                self.distrust([f for f, fut in settling.items() if fut.exception() is None])
                raise
            with self._sync_lock:  # a concurrent sync returns after ours
                with self._lock:
                    dirs, self._unsynced = self._unsynced, set()
                try:
                    if self.dir in dirs:  # new shards' parent first
                        fsync_dir(self.dir)
                    rest = sorted(dirs - {self.dir})
                    if len(rest) == 1:  # one (a small add): here, without a thread hop
                        fsync_dir(rest[0])
                    elif rest:  # at once, on the pool: one journal commit covers them all
                        list(_fsync_pool().map(fsync_dir, rest))
                except OSError:
                    self._dirty_all(dirs)
                    self.distrust(list(settling))
                    raise
            self.vouch([f.name for f in settling])
        except OSError as e:
            if disk_full(e):
                raise StorageFull(f"cannot store blocks in {self.dir}: the disk is full") from e
            raise StoreError(f"cannot store blocks in {self.dir}: {e.strerror or e}") from e

    def _dirty_all(self, dirs: set[Path]) -> None:
        with self._lock:
            self._unsynced |= dirs

    def put(self, c: Cid, data: bytes) -> None:
        """Verify `data` against `c` (IntegrityError) and store it."""
        verify(c, data)
        self.put_trusted(c, data)

    def adopt(self, c: Cid, staged: Path) -> None:
        """Move a verified staged file into place (rename; an existing block known durable
        wins). It is this thread's write, as a `put_trusted`'s: `sync` makes its rename
        durable and then vouches for it (or marks it if that fails)."""
        final = self.path(c.key)
        self._shard(final.parent)
        if self.durable(final):
            touch(final)
            staged.unlink(missing_ok=True)
            return
        os.replace(staged, final)  # staged files are fsynced (Staging.commit)
        self._dirty(final.parent)
        self._settling()[final] = _DONE

    def _shard_dirs(self) -> Iterator[Path]:
        """The shard directories; one that is a symlink is left alone, logged once
        (`strays`): what it holds is not the store's to delete (gc, temp files)."""
        with os.scandir(self.dir) as it:
            entries = list(it)
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                yield Path(entry.path)
            elif entry.is_symlink():
                self._linked_shard(entry.path)

    def _linked_shard(self, path: str) -> None:
        if path not in self.strays:
            self.strays.add(path)
            log.warning("store %s: %s is a symlink, not a shard directory: left alone "
                        "(its blocks are neither listed nor collected)", self.dir, path)

    def _opened_shards(self) -> Iterator[tuple[Path, int, list[os.DirEntry[str]]]]:
        """Each shard directory (`_shard_dirs`) with a descriptor of it, opened once without
        following a symlink (closed when the next is asked for), and its entries listed
        through it: what is looked at and removed there goes through that descriptor, never
        the shard's path again, so a symlink put there after its check is not walked (it is
        left alone, logged once, as one found there at the check)."""
        for shard in self._shard_dirs():
            try:
                fd = os.open(shard, DIR_NOFOLLOW)
            except OSError as e:
                if e.errno not in (errno.ELOOP, errno.ENOTDIR):
                    raise
                self._linked_shard(str(shard))
                continue
            try:
                with os.scandir(fd) as it:
                    entries = list(it)
                yield shard, fd, entries
            finally:
                os.close(fd)

    def sweep_tmp(self, max_age_s: float) -> int:
        """Remove temp files older than `max_age_s` (left by a crash mid-write); returns how
        many."""
        now = time.time()
        return sum(_sweep_tmp(fd, entry, now - max_age_s)
                   for _, fd, entries in self._opened_shards() for entry in entries
                   if entry.name.endswith(_TMP_SUFFIX))

    def _blocks(self) -> Iterator[tuple[Path, int, str]]:
        """Every stored block's shard, the shard's descriptor (`_opened_shards`: open until
        the next shard's first block) and key; stale temp files older than an hour are removed.
        A file whose name is no block's (not a multihash's hex, or in another shard) is
        left alone, logged once (`strays`)."""
        stale = time.time() - _STALE_TMP_S
        for shard, fd, entries in self._opened_shards():
            for entry in entries:
                name = entry.name
                if name.endswith(_TMP_SUFFIX):
                    _sweep_tmp(fd, entry, stale)
                elif is_key(name) and name[-2:] == shard.name:
                    yield shard, fd, name
                elif (path := str(shard / name)) not in self.strays:
                    self.strays.add(path)
                    log.warning("store %s: %s is not a block file: left alone", self.dir, path)

    def keys(self) -> Iterator[tuple[str, Path]]:
        """Every stored (key, path) (`_blocks`: stale temp files removed, strays left)."""
        for shard, _, key in self._blocks():
            yield key, shard / key

    def collect(self, live: Container[str], kept_since: float | None = None
                ) -> Iterator[tuple[str, int]]:
        """Remove every stored block whose key is not in `live` and, given `kept_since`,
        last written (or found by an add, `touch`) before it; yields the key and size in
        bytes of each removed. Each is looked at and removed through its shard's descriptor
        (`_opened_shards`): none through a shard swapped for a symlink meanwhile."""
        for _, fd, key in self._blocks():
            if key in live:
                continue
            try:
                st = os.stat(key, dir_fd=fd, follow_symlinks=False)
                if kept_since is not None and st.st_mtime >= kept_since:
                    continue
                os.unlink(key, dir_fd=fd)
            except OSError:
                continue
            yield key, st.st_size


def _read_block(name: str) -> tuple[bytes | None, str]:
    """The bytes of the block file `name` and "", or None and what is wrong with it: not a
    regular file (a FIFO, a directory, a symlink at the file: opened without blocking nor
    following it), or longer than any block (MAX_BLOCK_BYTES: at most one byte more is read,
    `dataentry.read_file`). FileNotFoundError if absent, OSError if it cannot be read."""
    try:
        data = read_file(Path(name), "a block file", MAX_BLOCK_BYTES)
    except DataError:
        try:
            mode = os.lstat(name).st_mode
        except OSError:
            mode = 0
        kind = ("a directory" if stat.S_ISDIR(mode) else "a symlink" if stat.S_ISLNK(mode)
                else "a FIFO" if stat.S_ISFIFO(mode) else "a special file")
        return None, f"is {kind}, not a file"
    if len(data) > MAX_BLOCK_BYTES:
        try:
            size = f"{os.stat(name, follow_symlinks=False).st_size} bytes"
        except OSError:  # (gone meanwhile)
            size = f"over {MAX_BLOCK_BYTES} bytes"
        return None, f"is longer than any block ({size}; at most {MAX_BLOCK_BYTES})"
    return data, ""


def _unlink_entry(dir_fd: int, name: str, path: Path) -> None:
    """Remove the entry `name` of the directory `dir_fd` (`path`), a directory with what it
    holds (`remove_tree`); OSError if a file cannot be removed."""
    try:
        os.unlink(name, dir_fd=dir_fd)
    except IsADirectoryError:
        remove_tree(path, ignore_errors=True)
    except PermissionError:  # (Linux: unlink of a directory is EISDIR, elsewhere EPERM)
        if not os.path.isdir(path):
            raise
        remove_tree(path, ignore_errors=True)


def _prune_aside(aside: int, path: Path) -> None:
    """Remove the oldest entries of the corrupt blocks' directory `aside` (`path`) past
    CORRUPT_MAX_FILES or CORRUPT_MAX_BYTES (best effort: one that cannot be removed is left)."""
    entries: list[tuple[int, str, int]] = []  # (ns, name, bytes)
    with os.scandir(aside) as it:
        for entry in it:
            with contextlib.suppress(OSError, ValueError):
                entries.append((int(entry.name.rpartition(".")[2]), entry.name,
                                entry.stat(follow_symlinks=False).st_size))
    entries.sort()
    total = sum(size for _, _, size in entries)
    for i, (_, name, size) in enumerate(entries[:-1]):  # (the newest, just moved, stays)
        if len(entries) - i <= CORRUPT_MAX_FILES and total <= CORRUPT_MAX_BYTES:
            break
        with contextlib.suppress(OSError):
            _unlink_entry(aside, name, path / name)
            log.warning("store: %s removed (the oldest corrupt block file kept aside: over "
                        "%d files or %d bytes)", path / name, CORRUPT_MAX_FILES,
                        CORRUPT_MAX_BYTES)
        total -= size


def _sweep_tmp(dir_fd: int, entry: os.DirEntry[str], older_than: float) -> bool:
    """Remove the temp file `entry` of the shard `dir_fd` (`BlockStore._opened_shards`) if
    it was last modified at or before `older_than`; whether it was."""
    with contextlib.suppress(OSError):
        if entry.stat(follow_symlinks=False).st_mtime <= older_than:
            os.unlink(entry.name, dir_fd=dir_fd)
            return True
    return False


class BlockBatch:
    """Blocks written by one thread as temp files beside their final places (invisible to
    reads), then made durable and put in place together by `commit`, on any one thread:
    one syncfs for the data of them all, the renames, and one more syncfs for the renames
    (where the OS lacks syncfs, or other writes wait to be written back: `syncfs_pays`,
    each file fsynced, renamed, its directory fsynced). A block file the batch put in place
    is thus durable and whole; one it found already there is kept only if known durable
    (`BlockStore.durable`: the module's docstring), else written again and put in place by
    the commit like a new one (an inline output's, never fsynced; one whose writer's sync
    failed): a batch that finds every block known durable commits without a sync.
    Announce no CID of the batch before `commit` returns. `discard` drops the temp files of
    a batch not committed."""

    def __init__(self, blocks: BlockStore) -> None:
        self._blocks = blocks
        self._written: dict[Path, Path] = {}  # final place -> temp file, in order
        self._bytes = 0  # written to the temp files
        self._failed = syncfs_failures()  # when the batch began

    def put_trusted(self, c: Cid, data: bytes) -> None:
        """Write bytes already hashed to `c` to a temp file; a present block is kept if known
        durable (`BlockStore.durable`), else written again."""
        if c.multihash[0] == IDENTITY:
            return
        final = self._blocks.path(c.key)
        if final in self._written:
            return
        self._blocks._shard(final.parent)  # (as BlockStore.put_trusted)
        if self._blocks.durable(final):
            touch(final)  # gc's grace period covers this add (it found the block)
            return  # (one not known durable is written again, its rename replacing it)
        tmp = _tmp_name(final)
        _write_new(tmp, data, f"block {c}")
        self._written[final] = tmp
        self._bytes += len(data)

    def commit(self) -> None:
        """Make every block of the batch durable and put it in place (StorageFull or
        StoreError if that fails: then none of the batch's temp files is left)."""
        written, self._written = list(self._written.items()), {}
        nbytes, self._bytes = self._bytes, 0
        if not written:  # every block was there already, known durable
            return
        done = 0
        try:
            whole_fs = syncfs_pays(nbytes)
            if not whole_fs:
                list(_fsync_pool().map(_fsync_file, [tmp for _, tmp in written]))
            else:
                syncfs(self._blocks.dir)
                self._no_failure_since()
            for final, tmp in written:
                os.replace(tmp, final)
                done += 1
            if not whole_fs:
                for final, _ in written:
                    self._blocks._dirty(final.parent)
                self._blocks.sync()
            else:
                syncfs(self._blocks.dir)  # the renames (and new shards' entries)
                self._no_failure_since()
        except StoreError:  # `sync`'s fsync of the directories, after every rename
            self._blocks.distrust([final for final, _ in written])
            raise
        except OSError as e:
            self._blocks.distrust([final for final, _ in written[:done]])
            for _, tmp in written[done:]:
                with contextlib.suppress(OSError):
                    tmp.unlink()
            if disk_full(e):
                raise StorageFull(f"cannot store blocks in {self._blocks.dir}: the disk is "
                                  "full") from e
            raise StoreError(f"cannot store blocks in {self._blocks.dir}: "
                             f"{e.strerror or e}") from e
        self._blocks.vouch([final.name for final, _ in written])

    def _no_failure_since(self) -> None:
        """OSError (EIO) if a syncfs of this process failed since the batch began: the
        kernel may have reported a write-back error of our pages to that call instead."""
        if syncfs_failures() != self._failed:
            raise OSError(errno.EIO, "a write-back error on the store's file system while "
                          "the batch was written (reported to another sync)")

    def discard(self) -> None:
        """Remove the temp files of the blocks not committed."""
        written, self._written, self._bytes = self._written, {}, 0
        for tmp in written.values():
            with contextlib.suppress(OSError):
                tmp.unlink()


def touch(path: Path) -> None:
    """Mark an existing block as just written again: gc's grace period then covers an add in
    progress that found it already there."""
    with contextlib.suppress(OSError):
        os.utime(path)


def _identity_data(c: Cid) -> bytes:
    return bytes(multihash.decode(c.multihash).digest)


class PinSet:
    """Recursive pins as one empty file per CID under pins/ (atomic create and delete); `name`
    names another such set (pins-explicit/: the pins a user made, kept by retention). Its
    directory must be one of its own (`real`: an unpin deletes in it, a pin writes by a
    descriptor of it opened O_NOFOLLOW), refused at the open if it is a symlink."""

    def __init__(self, root: Path, name: str = "pins") -> None:
        self.dir = ensure_dir(root / name, _PINS, real=True)

    def add(self, c: Cid) -> None:
        """Pin `c` (idempotent, durable when it returns; as `add_many`)."""
        self.add_many([c])

    def add_many(self, cids: Sequence[Cid]) -> None:
        """Pin each of `cids` (idempotent, durable when it returns) with one fsync of the
        directory for them all: the empty files are created in place (there is no content
        to tear, so no temp file and rename), the directory is fsynced (its journal commit
        carries the new files), then each new file (finding little left to commit). They
        are made by a descriptor of the pins' directory opened with its check (`open_dir`):
        DataError naming it if it is a symlink, even one put there since (never written
        through). A call that fails removes the files it made (not known durable: a retry
        would take them as pinned) and raises StorageFull, or StoreError naming the file."""
        try:
            pins = open_dir(self.dir, _PINS, mode=0o777)
        except OSError as e:
            raise self._failed(e) from e
        made: list[int] = []
        names: list[str] = []
        try:
            for c in dict.fromkeys(cids):
                try:
                    made.append(os.open(str(c), os.O_WRONLY | os.O_CREAT | os.O_EXCL
                                        | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644, dir_fd=pins))
                except FileExistsError:
                    continue  # pinned already (durably: by the call that made it)
                names.append(str(c))
            if made:
                os.fsync(pins)
                for fd in made:
                    os.fsync(fd)
        except OSError as e:
            for name in names:
                with contextlib.suppress(OSError):
                    os.unlink(name, dir_fd=pins)
            raise self._failed(e) from e
        finally:
            for fd in made:
                os.close(fd)
            os.close(pins)

    def _failed(self, e: OSError) -> StoreError:
        """The error of a pin that could not be made durable: StorageFull if the disk is
        full, else a StoreError naming the file (a pin's, or the pins' directory)."""
        if disk_full(e):
            return StorageFull("cannot pin: the disk is full")
        where = self.dir / e.filename if isinstance(e.filename, str) else self.dir
        return StoreError(f"cannot pin: {where}: {e.strerror or e}; the peer's user must be "
                          f"able to write {self.dir} and the disk under it must work")

    def remove(self, c: Cid) -> None:
        """Unpin `c`; NotFound if it was not pinned, DataError naming the pins' directory if
        it was made a symlink since it was checked (`unlink_in`: never deleted through)."""
        try:
            unlink_in(self.dir, str(c), _PINS)
        except FileNotFoundError:
            raise NotFound(f"{c} is not pinned", field="cid") from None

    def list(self) -> list[Cid]:
        """Every pinned CID, sorted by string, an earlier release's under a digest shorter
        than its hash function's too (`lenient`; peer.cids.digest_flaw tells them); a file
        whose name is no CID is ignored."""
        out: list[Cid] = []
        for name in sorted(os.listdir(self.dir)):
            if name.startswith("."):
                continue
            with contextlib.suppress(Exception):
                out.append(parse_cid(name, lenient=True))
        return out


class StoreLock:
    """A flock on <root>/lock: shared for writers, exclusive for gc (per call, per process)."""

    def __init__(self, root: Path) -> None:
        self.path = root / "lock"
        check_entry(self.path, "file", "the store's lock file")
        self.path.touch(exist_ok=True)

    @contextlib.contextmanager
    def hold(self, exclusive: bool = False) -> Iterator[None]:
        """Hold the lock for the duration of the block."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            yield
        finally:
            os.close(fd)


class Staging:
    """A private directory for blocks that become visible only on commit (CAR import)."""

    def __init__(self, root: Path) -> None:
        self.dir = root / "staging" / f"{os.getpid()}-{secrets.token_hex(8)}"
        self.dir.mkdir(parents=True)
        self.items: list[tuple[Cid, Path]] = []
        self._keys: set[str] = set()

    def put(self, c: Cid, data: bytes) -> None:
        """Stage verified bytes (once per block: a CAR may carry a block twice, and commit
        moves each staged file once)."""
        if c.key in self._keys:
            return
        path = self.dir / c.key
        try:
            path.write_bytes(data)
        except OSError as e:
            if disk_full(e):
                raise StorageFull(f"cannot stage block {c}: the disk is full") from e
            raise
        self.items.append((c, path))
        self._keys.add(c.key)

    def commit(self, blocks: BlockStore) -> None:
        """fsync every staged block (concurrently), then move them into the blockstore
        (their directories are fsynced by `blocks.sync()`)."""
        try:
            list(_fsync_pool().map(_fsync_file, [p for _, p in self.items]))
        except OSError as e:
            if disk_full(e):
                raise StorageFull(f"cannot store blocks in {blocks.dir}: the disk is full") from e
            raise StoreError(f"cannot store blocks in {blocks.dir}: {e.strerror or e}") from e
        for c, path in self.items:
            blocks.adopt(c, path)
        self.discard()

    def discard(self) -> None:
        """Drop everything staged."""
        shutil.rmtree(self.dir, ignore_errors=True)

    @staticmethod
    def sweep(root: Path, max_age_s: float = _STALE_TMP_S) -> int:
        """Remove the entries of staging/ (a crash's directories) last changed over
        `max_age_s` ago; returns how many are gone. An entry that is a symlink goes itself,
        never what it points to (`remove`). DataError if staging/ is not a directory of its
        own (never swept through a symlink)."""
        check_entry(root / "staging", "directory", "the store's staging dir, swept", real=True)
        now = time.time()
        removed = 0
        with contextlib.suppress(FileNotFoundError):
            for entry in os.scandir(root / "staging"):
                with contextlib.suppress(OSError):
                    if now - entry.stat(follow_symlinks=False).st_mtime >= max_age_s:
                        remove(Path(entry.path))
                        removed += not os.path.lexists(entry.path)  # (rmtree may leave some)
        return removed


def check_root(root: Path) -> Path:
    """Create the store root if needed; DataError if it is not a directory (a symlink to
    one is: a store on another disk), StoreError if it cannot be made."""
    try:
        return ensure_dir(root, "the store's directory")
    except OSError as exc:
        raise StoreError(f"cannot create store directory {root}: {exc}") from exc
