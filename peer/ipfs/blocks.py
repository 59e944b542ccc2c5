"""Filesystem blockstore, pin set and store lock; safe for several processes on one root.

Blocks live at blocks/<2 hex>/<multihash hex>, written to a temp file then renamed; pins are one
file each under pins/; writers hold a shared flock on `lock`, gc holds it exclusively.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import multihash

from peer.errors import NotFound, StoreError
from peer.ipfs.cids import IDENTITY, Cid, parse_cid, verify

_TMP_SUFFIX = ".tmp"
_STALE_TMP_S = 3600.0


def _tmp_name(final: Path) -> Path:
    return final.with_name(f".{final.name}.{os.getpid()}.{secrets.token_hex(6)}{_TMP_SUFFIX}")


def write_atomic(final: Path, data: bytes) -> None:
    """Write `data` to `final` through a temp file in the same directory and a rename."""
    tmp = _tmp_name(final)
    try:
        with open(tmp, "wb", buffering=0) as f:
            f.write(data)
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


class BlockStore:
    """Content-addressed blocks keyed by multihash; identity CIDs are never stored."""

    def __init__(self, root: Path) -> None:
        self.dir = root / "blocks"
        self.dir.mkdir(parents=True, exist_ok=True)
        self._shards: set[str] = set()

    def path(self, key: str) -> Path:
        """Where the block with multihash hex `key` lives."""
        return self.dir / key[-2:] / key

    def has(self, c: Cid) -> bool:
        """True if the block is stored (always for identity CIDs)."""
        return c.multihash[0] == IDENTITY or self.path(c.key).exists()

    def get(self, c: Cid) -> bytes:
        """The block's bytes; NotFound if absent."""
        if c.multihash[0] == IDENTITY:
            return _identity_data(c)
        try:
            return self.path(c.key).read_bytes()
        except FileNotFoundError:
            raise NotFound(f"block {c} is not in the store", field="cid") from None

    def size(self, c: Cid) -> int:
        """The block's length in bytes; NotFound if absent."""
        if c.multihash[0] == IDENTITY:
            return len(_identity_data(c))
        try:
            return self.path(c.key).stat().st_size
        except FileNotFoundError:
            raise NotFound(f"block {c} is not in the store", field="cid") from None

    def put_trusted(self, c: Cid, data: bytes) -> None:
        """Store bytes already hashed to `c` by the caller; a present block is kept."""
        if c.multihash[0] == IDENTITY:
            return
        final = self.path(c.key)
        if final.exists():
            touch(final)
            return
        self._shard(final.parent)
        write_atomic(final, data)

    def _shard(self, shard: Path) -> None:
        if shard.name not in self._shards:
            shard.mkdir(exist_ok=True)
            self._shards.add(shard.name)

    def put(self, c: Cid, data: bytes) -> None:
        """Verify `data` against `c` (IntegrityError) and store it."""
        verify(c, data)
        self.put_trusted(c, data)

    def adopt(self, c: Cid, staged: Path) -> None:
        """Move a verified staged file into place (rename; an existing block wins)."""
        final = self.path(c.key)
        if final.exists():
            touch(final)
            staged.unlink(missing_ok=True)
            return
        self._shard(final.parent)
        os.replace(staged, final)

    def sweep_tmp(self, max_age_s: float) -> int:
        """Remove temp files older than `max_age_s` (left by a crash mid-write); returns how
        many."""
        removed = 0
        now = time.time()
        for shard in self.dir.iterdir():
            if not shard.is_dir():
                continue
            for entry in os.scandir(shard):
                if entry.name.endswith(_TMP_SUFFIX):
                    with contextlib.suppress(OSError):
                        if now - entry.stat().st_mtime >= max_age_s:
                            os.unlink(entry.path)
                            removed += 1
        return removed

    def keys(self) -> Iterator[tuple[str, Path]]:
        """Every stored (key, path); stale temp files older than an hour are removed."""
        now = time.time()
        for shard in self.dir.iterdir():
            if not shard.is_dir():
                continue
            for entry in os.scandir(shard):
                if not entry.name.endswith(_TMP_SUFFIX):
                    yield entry.name, Path(entry.path)
                    continue
                with contextlib.suppress(OSError):
                    if now - entry.stat().st_mtime > _STALE_TMP_S:
                        os.unlink(entry.path)


def touch(path: Path) -> None:
    """Mark an existing block as just written again: gc's grace period then covers an add in
    progress that found it already there."""
    with contextlib.suppress(OSError):
        os.utime(path)


def _identity_data(c: Cid) -> bytes:
    return bytes(multihash.decode(c.multihash).digest)


class PinSet:
    """Recursive pins as one empty file per CID under pins/ (atomic create and delete); `name`
    names another such set (pins-explicit/: the pins a user made, kept by retention)."""

    def __init__(self, root: Path, name: str = "pins") -> None:
        self.dir = root / name
        self.dir.mkdir(parents=True, exist_ok=True)

    def add(self, c: Cid) -> None:
        """Pin `c` (idempotent)."""
        final = self.dir / str(c)
        if not final.exists():
            write_atomic(final, b"")

    def remove(self, c: Cid) -> None:
        """Unpin `c`; NotFound if it was not pinned."""
        try:
            (self.dir / str(c)).unlink()
        except FileNotFoundError:
            raise NotFound(f"{c} is not pinned", field="cid") from None

    def list(self) -> list[Cid]:
        """Every pinned CID, sorted by string; unparsable files are ignored."""
        out: list[Cid] = []
        for name in sorted(os.listdir(self.dir)):
            if name.startswith("."):
                continue
            with contextlib.suppress(Exception):
                out.append(parse_cid(name))
        return out


class StoreLock:
    """A flock on <root>/lock: shared for writers, exclusive for gc (per call, per process)."""

    def __init__(self, root: Path) -> None:
        self.path = root / "lock"
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

    def put(self, c: Cid, data: bytes) -> None:
        """Stage verified bytes."""
        path = self.dir / c.key
        path.write_bytes(data)
        self.items.append((c, path))

    def commit(self, blocks: BlockStore) -> None:
        """Move every staged block into the blockstore."""
        for c, path in self.items:
            blocks.adopt(c, path)
        self.discard()

    def discard(self) -> None:
        """Drop everything staged."""
        shutil.rmtree(self.dir, ignore_errors=True)

    @staticmethod
    def sweep(root: Path, max_age_s: float = _STALE_TMP_S) -> int:
        """Remove staging directories abandoned (by a crash) over `max_age_s` ago; returns
        how many."""
        now = time.time()
        removed = 0
        with contextlib.suppress(FileNotFoundError):
            for entry in os.scandir(root / "staging"):
                with contextlib.suppress(OSError):
                    if now - entry.stat().st_mtime >= max_age_s:
                        shutil.rmtree(entry.path, ignore_errors=True)
                        removed += 1
        return removed


def check_root(root: Path) -> Path:
    """Create the store root if needed; StoreError if it is not a usable directory."""
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot create store directory {root}: {exc}") from exc
    if not root.is_dir():
        raise StoreError(f"store root {root} is not a directory")
    return root
