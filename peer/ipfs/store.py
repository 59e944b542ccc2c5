"""The content store interface: the `Store` protocol every component uses, and `open_store`, the
one factory that picks its backend from a `StoreConfig`. Every store call is synchronous and may
block (callers on the event loop use asyncio.to_thread); a store is safe across processes.

Backends. `embedded` is EmbeddedStore (blocks, pins and gc under a directory). `kubo` is
KuboStore: the embedded store stays the working store (the peer and its worker processes read
and write it) and the peer's KuboMirror imports into Kubo, pinned, every DAG this peer computes or
provides, and asks Kubo first for DAGs missing here. We keep this rather than a store that reads
and writes Kubo directly because the store API is synchronous and used from worker processes,
which materialise and add items one file at a time (a local write each here, an HTTP call each to
Kubo), and the gateway and peer CAR fetches read block by block; every block stays verified on
import, and a data dir opens under either kind. The cost: Kubo's repo holds a second copy.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from peer.errors import ConfigError, DataError, TooLarge
from peer.ipfs.unixfs import Kind

STORE_KINDS = ("embedded", "kubo")
# What `materialize` writes for one CID at most in entries (files and directories, at every
# level, below the CID): each is an inode of the scratch directory (tmpfs memory), and a HAMT
# is written as it is read (review rr of session 51, RR-10). Four times the planner's bound
# on a listed input (MAX_INPUT_ENTRIES); a peer's is --max-materialize-entries
MAX_MATERIALIZE_ENTRIES = 1_000_000


@dataclass(frozen=True, slots=True)
class Entry:
    """A file or directory: path relative to the listed root ("" for the root itself).

    `size` is the file's byte length, or for a directory its total DAG bytes (link Tsize).
    """

    path: str
    cid: str
    size: int
    kind: Kind


@dataclass(frozen=True, slots=True)
class DirLink:
    """A directory entry as stored: its name, CID and link Tsize (cumulative DAG bytes, what
    boxo's listing shows). The name is not checked: it may hold '/' or '..', so it is never
    used as a path on disk (materialize and walk check every name)."""

    name: str
    cid: str
    tsize: int


@dataclass(frozen=True, slots=True)
class GcStats:
    """What a gc freed: blocks and their bytes, and the removed blocks as CIDv1 raw (as Kubo's
    `repo gc` names them)."""

    blocks: int = 0
    bytes: int = 0
    removed: tuple[str, ...] = ()


class GcHeldBack(DataError):
    """gc stopped before collecting anything (as Kubo's, ErrCannotFetchAllLinks): a block
    a pin reaches that may link could not be read (missing, or corrupt and not repaired),
    so what is below it is not known. `held` names each: the pin, the block and its file."""

    def __init__(self, message: str, held: tuple[str, ...]) -> None:
        super().__init__(message, field="gc")
        self.held = held


DagScope = Literal["all", "entity", "block"]


@dataclass(frozen=True)
class CarOptions:
    """Which blocks a CAR of a path's target holds (trustless gateway `dag-scope`,
    `entity-bytes` as (from, to-inclusive or None), and `dups`)."""

    scope: DagScope = "all"
    entity_bytes: tuple[int, int | None] | None = None
    dups: bool = False


class Pinner(Protocol):
    """The one call a replicator needs."""

    # recursive, every block made durable first; NotFound if the DAG is incomplete
    def pin(self, cid: str) -> None: ...
    def pin_many(self, cids: Sequence[str]) -> None: ...  # as pin, all or none, one dir fsync


class Listings(Pinner, Protocol):
    """What planning and assembling tasks needs: listings, small writes, pins (a subset of
    Store, so that the scheduler's tests can run on a store in memory)."""

    def walk(self, cid: str) -> Iterator[Entry]: ...
    # (path, cid) of every file under cid, as walk's order, without reading one-block files;
    # TooLarge past `limit` entries (files and directories), read no further
    def file_cids(self, cid: str, limit: int | None = None) -> list[tuple[str, str]]: ...
    def stat(self, cid: str) -> Entry: ...
    def make_dir(self, entries: Mapping[str, str], cid_version: int = 1) -> str: ...
    def add_bytes(self, data: bytes, cid_version: int = 1) -> str: ...
    def has(self, cid: str) -> bool: ...
    def cat(self, cid: str, offset: int = 0, length: int | None = None) -> Iterator[bytes]: ...


class AddBatch(Protocol):
    """Adds made durable together (Store.add_batch)."""

    def add(self, path: Path) -> str: ...  # as add_path; on one thread at a time
    def commit(self) -> None: ...  # on any one thread: durable and in place (StoreError)
    def discard(self) -> None: ...  # drops what was written and not committed


class Store(Listings, Protocol):
    """A content store: UnixFS files and directories, DAG and CAR traversal, blocks and pins.

    CIDs are strings (CIDv1 base32 or CIDv0); a missing block raises NotFound, a bad path
    ArgError, a bad CID BadCID. Every method may block.
    """

    # adding
    def add_path(self, path: Path, cid_version: int = 1, pin: bool = False) -> str: ...
    # a batch of add_paths with one sync: its CIDs are durable once the `with` block ends
    def adding(self, cid_version: int = 1) -> AbstractContextManager[Callable[[Path], str]]: ...
    # the same batch as an object: its adds on one thread, its commit on another
    def add_batch(self, cid_version: int = 1) -> AddBatch: ...
    def add_bytes(self, data: bytes, cid_version: int = 1) -> str: ...
    def make_dir(self, entries: Mapping[str, str], cid_version: int = 1) -> str: ...

    # reading UnixFS
    def stat(self, cid: str) -> Entry: ...
    def ls(self, cid: str) -> list[Entry]: ...
    # streamed; no entry is read; `after`: from the entry after the one so named (ArgError)
    def dir_links(self, cid: str, after: str | None = None) -> Iterator[DirLink]: ...
    # a page of ls in dir_links' order after `after` (None: from the first), its next cursor
    def ls_page(self, cid: str, after: str | None, limit: int,
                ) -> tuple[list[Entry], str | None]: ...
    def walk(self, cid: str) -> Iterator[Entry]: ...
    def resolve(self, cid: str, path: str) -> str: ...
    def resolve_path(self, cid: str, path: str) -> list[str]: ...  # root, then one per segment
    def cat(self, cid: str, offset: int = 0, length: int | None = None) -> Iterator[bytes]: ...
    def materialize(self, cid: str, dest: Path) -> None: ...
    # a one-block raw file's own block file, verified (to read in place), else None
    def block_file(self, cid: str) -> Path | None: ...

    # blocks and DAGs
    def get_block(self, cid: str) -> bytes: ...
    def put_block(self, cid: str, data: bytes, *, checked: bool = False) -> None: ...
    def has(self, cid: str) -> bool: ...
    def dag(self, cid: str) -> Iterator[tuple[str, bytes]]: ...
    def is_complete(self, cid: str) -> bool: ...  # every block under it stored
    def dag_size(self, cid: str) -> int: ...  # cumulative DAG bytes (a link's Tsize)

    # CAR
    def export_car(self, cid: str, path: str = "",
                   options: CarOptions | None = None) -> Iterator[bytes]: ...
    def export_cars(self, cids: Sequence[str], piece_bytes: int = 1 << 18
                    ) -> Iterator[bytes]: ...
    def import_car(self, chunks: Iterable[bytes], *, pin: bool = False,
                   max_bytes: int | None = None) -> list[str]: ...

    # pins and gc. An explicit pin is a user's (add, pin add, dag import): retention keeps
    # it; the others (task outputs and their replicas) retention may unpin.
    def pin(self, cid: str, *, explicit: bool = False) -> None: ...
    def pin_many(self, cids: Sequence[str]) -> None: ...  # non-explicit pins, one dir fsync
    # NotFound if not pinned; drops `explicit` too; `lenient`: one of `earlier_pins`
    def unpin(self, cid: str, *, lenient: bool = False) -> None: ...
    def pins(self) -> list[str]: ...
    # pins an earlier release made under a CID `parse_cid` refuses now (not in `pins`) -> why
    def earlier_pins(self) -> dict[str, str]: ...
    def explicit_pins(self) -> list[str]: ...
    # pins made for task outputs as such (inline) -> when pinned (wall seconds)
    def output_pins(self) -> Mapping[str, float]: ...
    def used_bytes(self) -> int: ...  # bytes of every stored block
    def gc(self, roots: Iterable[str] = (), grace_s: float = 0.0) -> GcStats: ...
    def sweep(self) -> dict[str, int]: ...  # at start: what a crash left, by kind


@dataclass(frozen=True, slots=True)
class StoreConfig:
    """Which store a peer and its workers open: `kind`, the working store's directory and, for
    `kubo`, Kubo's RPC API URL. JSON-able (`to_json`) so a work order can carry it."""

    root_dir: str
    kind: str = "embedded"  # one of STORE_KINDS
    ipfs_api: str | None = None
    # files and directories `materialize` writes for one CID at most (a task's input, an
    # item: in the peer's workers, which open the store a work order names)
    max_materialize_entries: int = MAX_MATERIALIZE_ENTRIES

    def __post_init__(self) -> None:
        if self.kind not in STORE_KINDS:
            raise ConfigError(f"store: expected embedded or kubo, got {self.kind!r}",
                              field="store")
        if self.kind == "kubo" and not self.ipfs_api:
            raise ConfigError("store kubo needs --ipfs-api URL", field="ipfs_api")
        if self.max_materialize_entries < 1:
            raise ConfigError(f"max_materialize_entries: must be at least 1, got "
                              f"{self.max_materialize_entries}", field="max_materialize_entries")

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "root_dir": self.root_dir, "ipfs_api": self.ipfs_api,
                "max_materialize_entries": self.max_materialize_entries}

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> StoreConfig:
        return cls(str(obj["root_dir"]), obj["kind"], obj.get("ipfs_api"),
                   int(obj.get("max_materialize_entries", MAX_MATERIALIZE_ENTRIES)))


def open_store(cfg: StoreConfig) -> Store:
    """The store `cfg` names, opened on its directory (created if missing); ConfigError for a
    bad Kubo API URL. Backends are imported on demand: an embedded peer's workers never load
    aiohttp."""
    if cfg.kind == "kubo":
        from peer.ipfs.kubo import KuboStore

        assert cfg.ipfs_api is not None  # checked by StoreConfig
        return KuboStore(Path(cfg.root_dir), cfg.ipfs_api, cfg.max_materialize_entries)
    from peer.ipfs.embedded import EmbeddedStore

    return EmbeddedStore(Path(cfg.root_dir), max_materialize_entries=cfg.max_materialize_entries)


def too_many_entries(cid: str, limit: int) -> TooLarge:
    """A task's input past the bound on what may be listed (`Listings.file_cids`' `limit`,
    the planner's bounds), naming it."""
    return TooLarge(f"{cid} holds more than {limit} files and directories, the most a task's "
                    "input may hold to be listed (split it into several inputs)", field="cid")
