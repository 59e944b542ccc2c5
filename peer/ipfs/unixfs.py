"""UnixFS importer (Kubo-identical balanced DAG) and reader over a block getter; no shared state.

Layout as `ipfs add`: 256 KiB fixed chunks, balanced tree of at most 174 links per node, CIDv0
dag-pb leaves or CIDv1 raw leaves, basic directories, HAMT-sharded ones (peer.ipfs.hamt) from
boxo's size threshold on.
"""

from __future__ import annotations

import os
import stat as stat_mod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Literal, Protocol

from peer.cids import DAG_PB, RAW, Cid, cid_from_bytes, sha256_cid
from peer.errors import (
    ArgError,
    BadDag,
    IntegrityError,
    NotFound,
    StoreError,
    TooLarge,
    Unsupported,
)
from peer.ipfs import dagpb, hamt
from peer.ipfs.hamt import Link

CHUNK_BYTES = 262144
MAX_LINKS = 174
# boxo's HAMTShardingSize: Kubo 0.39 shards a directory whose links' estimated size (sum of name
# bytes + binary CID bytes) reaches this (a directory exactly at it is sharded too).
HAMT_THRESHOLD_BYTES = 262144
# Levels of a file DAG a reader follows: Kubo's balanced layout needs 7 for 10^18 bytes,
# its trickle layout a few dozen; a deeper chain is refused, not recursed into.
MAX_DEPTH = 64

Kind = Literal["file", "dir"]


@dataclass(frozen=True, slots=True)
class Node:
    """An imported node: its CID, cumulative DAG bytes (link Tsize) and file bytes."""

    cid: Cid
    tsize: int
    filesize: int


class BlockSink(Protocol):
    """Where the importer writes blocks it has hashed itself."""

    def put_trusted(self, c: Cid, data: bytes) -> None: ...  # stores; never re-hashes


def _read_chunk(f: BinaryIO) -> bytes:
    buf = f.read(CHUNK_BYTES)
    while 0 < len(buf) < CHUNK_BYTES:
        more = f.read(CHUNK_BYTES - len(buf))
        if not more:
            break
        buf += more
    return buf


class Importer:
    """Builds UnixFS DAGs into a sink; `cid_version` 0 (`ipfs add`) or 1 (`--cid-version=1`)."""

    def __init__(self, sink: BlockSink, cid_version: int) -> None:
        if cid_version not in (0, 1):
            raise StoreError(f"cid_version must be 0 or 1, not {cid_version!r}")
        self.sink = sink
        self.version = cid_version
        self._next = b""

    def _put(self, data: bytes, codec: str) -> Cid:
        c = sha256_cid(data, codec, self.version)
        self.sink.put_trusted(c, data)
        return c

    def _leaf(self) -> Node:
        chunk, self._next = self._next, b""
        if self.version == 1:
            return Node(self._put(chunk, RAW), len(chunk), len(chunk))
        block = dagpb.leaf_v0(chunk)
        return Node(self._put(block, DAG_PB), len(block), len(chunk))

    def _internal(self, children: list[Node]) -> Node:
        block = dagpb.file_node([(c.cid.binary, c.tsize, c.filesize) for c in children])
        tsize = len(block) + sum(c.tsize for c in children)
        return Node(self._put(block, DAG_PB), tsize, sum(c.filesize for c in children))

    def _fill(self, f: BinaryIO, children: list[Node], depth: int) -> Node:
        while len(children) < MAX_LINKS and self._more(f):
            children.append(self._leaf() if depth == 1 else self._fill(f, [], depth - 1))
        return self._internal(children)

    def _more(self, f: BinaryIO) -> bool:
        if not self._next:
            self._next = _read_chunk(f)
        return bool(self._next)

    def file(self, f: BinaryIO) -> Node:
        """Import a byte stream as one file (boxo's balanced layout, step for step)."""
        self._next = b""
        self._more(f)
        root = self._leaf()  # the empty file is a single empty leaf
        depth = 1
        while self._more(f):
            root = self._fill(f, [root], depth)
            depth += 1
        return root

    def directory(self, children: dict[str, Node], where: str = "") -> Node:
        """A UnixFS directory over named children: basic, or a HAMT where Kubo would shard it.

        `where` names the directory in errors (two names sharing all 64 hash bits)."""
        if is_sharded(children):
            try:
                built = hamt.build(
                    [Link(n, c.cid, c.tsize) for n, c in children.items()], self.version)
            except StoreError as exc:
                raise StoreError(f"directory {where or '/'}: {exc.message}") from exc
            for c, block in built.blocks:
                self.sink.put_trusted(c, block)
            return Node(built.root, built.tsize, 0)
        block = dagpb.dir_node([(n, c.cid.binary, c.tsize) for n, c in children.items()])
        tsize = len(block) + sum(c.tsize for c in children.values())
        return Node(self._put(block, DAG_PB), tsize, 0)

    def path(self, path: Path, where: str = "") -> Node:
        """Import a regular file or a directory tree (hidden files included, symlinks refused)."""
        st = os.lstat(path)
        if stat_mod.S_ISREG(st.st_mode):
            with open(path, "rb") as f:
                return self.file(f)
        if not stat_mod.S_ISDIR(st.st_mode):
            raise StoreError(f"cannot add {path}: not a regular file or directory (symlink?)")
        children: dict[str, Node] = {}
        with os.scandir(path) as it:
            entries = sorted(it, key=lambda e: e.name)
        for entry in entries:
            name = _entry_name(entry.name, where)
            children[name] = self.path(Path(entry.path), f"{where}/{name}")
        return self.directory(children, where)


def is_sharded(children: dict[str, Node]) -> bool:
    """True if Kubo makes a HAMT of a directory of `children` (boxo's link-size estimate)."""
    estimate = 0
    for name, c in children.items():
        estimate += len(name.encode("utf-8")) + len(c.cid.binary)
        if estimate >= HAMT_THRESHOLD_BYTES:
            return True
    return False


def _entry_name(name: str, where: str) -> str:
    """`name`, an entry of the directory `where` (relative to what is added: an upload's
    temporary directory is not named), if it is UTF-8; StoreError naming it otherwise."""
    raw = os.fsencode(name)
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        shown = f"{where}/{raw.decode('utf-8', 'backslashreplace')}".lstrip("/")
        raise StoreError(f"cannot add a file name that is not UTF-8: {shown}") from None
    return name


def _stored_name(name: str | None) -> str:
    return name or ""


def check_name(name: str | None) -> str:
    """A directory entry name safe to use as a path segment; StoreError otherwise."""
    if not name or name in (".", "..") or "/" in name or "\x00" in name:
        raise StoreError(f"unsafe or empty directory entry name {name!r}")
    return name


@dataclass(frozen=True, slots=True)
class Info:
    """What a node is: kind, size (file bytes, or total DAG bytes for a dir) and links."""

    kind: Kind
    size: int
    links: tuple[Link, ...]
    symlink: bool = False  # a UnixFS symlink: a "file" whose bytes are the target path
    sharded: bool = False  # a HAMT (its links: `Reader.links`, unless `info` listed them)
    # a HAMT read without its shards: its root shard's node, decoded and checked already, for
    # `Reader.entries` (so that the block is not read again)
    shard: tuple[dagpb.PBNode, dagpb.UnixFSData] | None = field(
        default=None, compare=False, repr=False)


def check_file(c: Cid, node: dagpb.PBNode, fs: dagpb.UnixFSData) -> int:
    """The size of UnixFS file node `c`; IntegrityError if its filesize is not its data plus
    its blocksizes, or its blocksizes do not match its links (a node that lies about its size)."""
    if len(fs.blocksizes) != len(node.links):
        raise IntegrityError(f"corrupt UnixFS file {c}: {len(fs.blocksizes)} blocksizes for "
                             f"{len(node.links)} links")
    held = len(fs.data or b"") + sum(fs.blocksizes)
    if fs.filesize is not None and fs.filesize != held:
        raise IntegrityError(f"corrupt UnixFS file {c}: it declares {fs.filesize} bytes but its "
                             f"data and blocksizes hold {held}")
    return held


def _after(links: Iterator[Link], after: str | None) -> Iterator[Link] | None:
    """A basic directory's `links` that follow the one named `after` (all of them without
    it; None if none is named so). Its links are one block's, held already."""
    if after is None:
        return links
    for link in links:
        if link.name == after:
            return links
    return None


class Reader:
    """Reads UnixFS files and directories through `get(cid) -> block bytes`."""

    def __init__(self, get: Callable[[Cid], bytes]) -> None:
        self.get = get

    def _decode(self, c: Cid) -> tuple[bytes, dagpb.PBNode, dagpb.UnixFSData]:
        block = self.get(c)
        node = dagpb.decode_node(block)
        if node.data is None:
            raise Unsupported(f"{c} is a dag-pb node without UnixFS data")
        fs = dagpb.decode_unixfs(node.data)
        if fs.type == dagpb.DataType.METADATA:
            raise Unsupported(f"{c} is a UnixFS metadata node, which is not supported")
        return block, node, fs

    def info(self, c: Cid, check_names: bool = True, shards: bool = True) -> Info:
        """Kind, size and (for a dir) links of `c`, a HAMT's in name order; Unsupported for
        non-UnixFS nodes, BadDag for a malformed HAMT. Names are checked (StoreError for '..',
        '/', ...: they become paths on disk) unless `check_names` is False. Without `shards`
        a HAMT's entries are not read (no links, `sharded`; its root shard is checked):
        sorting them holds them all, and a HAMT may hold millions."""
        if c.codec == RAW:
            return Info("file", len(self.get(c)), ())
        block, node, fs = self._unixfs(c)
        dag_bytes = len(block) + sum(link.tsize or 0 for link in node.links)
        if hamt.is_shard(fs) and not shards:
            hamt.slots(c, node, fs)
            return Info("dir", dag_bytes, (), sharded=True, shard=(node, fs))
        if hamt.is_shard(fs):
            entries = sorted(hamt.entries(self.get, c, node, fs),
                             key=lambda e: e.name.encode("utf-8"))
            if check_names:
                for e in entries:
                    check_name(e.name)
            return Info("dir", dag_bytes, tuple(entries))
        if fs.type != dagpb.DataType.DIRECTORY:
            return Info("file", check_file(c, node, fs), (),
                        symlink=fs.type == dagpb.DataType.SYMLINK)
        name = check_name if check_names else _stored_name
        links = tuple(Link(name(link.name), cid_from_bytes(link.hash), link.tsize or 0)
                      for link in node.links)
        return Info("dir", dag_bytes, links)

    def links(self, c: Cid, check_names: bool = True, after: str | None = None,
              ) -> Iterator[Link]:
        """The entries of directory `c` one at a time, as stored: a basic directory's in its
        links' order, a HAMT's in bucket order (boxo's listing order; sorting them would hold
        them all: a HAMT may hold millions, named by any caller). Nothing for a file. `c`'s
        own block is read and checked before this returns (Unsupported, BadDag for its root
        shard); a sub-shard when the iteration reaches it. Names are checked as `info`'s.
        `after`: only the entries that follow the one of that name (a page's cursor: a
        HAMT's shards before it are not read); ArgError naming it if `c` has no such entry,
        BadDag if a basic directory has two (dag-pb allows it: a cursor would loop, review rr
        of session 51, RR-7)."""
        found: Iterator[Link] | None
        if c.codec == RAW:
            found = None
        else:
            _, node, fs = self._unixfs(c)
            if hamt.is_shard(fs):
                found = (hamt.entries(self.get, c, node, fs) if after is None
                         else hamt.entries_after(self.get, c, node, fs, after))
            elif fs.type == dagpb.DataType.DIRECTORY:
                if after is not None and sum(_stored_name(lk.name) == after
                                             for lk in node.links) > 1:
                    raise BadDag(f"{c} names {after!r} more than once: no page of it can "
                                 "follow that name (list it whole, without after)",
                                 field="after")
                found = _after((Link(_stored_name(link.name), cid_from_bytes(link.hash),
                                     link.tsize or 0) for link in node.links), after)
            else:
                found = None
        if found is None and after is None:  # a file
            return iter(())
        if found is None:
            raise ArgError(f"after: {after!r} is no entry of {c}", field="after")
        if not check_names:
            return found
        if isinstance(found, hamt.Entries):  # (kept as such: a page's cursor asks `placed`)
            found.check = check_name
            return found
        return (Link(check_name(e.name), e.cid, e.tsize) for e in found)

    def entries(self, c: Cid, info: Info) -> Iterator[Link]:
        """The entries of directory `c` one at a time, given its `info` (`info(c, shards=False)`'s):
        a basic directory's links as `info` holds them, a HAMT's as `links` gives them, from
        the root shard `info` holds (its block is not read again: once per directory of a
        task's input and of each listing for planning, session 51's reread). Names are
        checked (`info`'s are unless it was made without)."""
        if info.shard is None:
            return iter(info.links)
        node, fs = info.shard
        found = hamt.entries(self.get, c, node, fs)
        found.check = check_name
        return found

    def head(self, c: Cid) -> tuple[Kind, int]:
        """Kind and size of `c` as `info` gives them, from its own block: a HAMT's entries are
        not read (only its root shard is checked), nor are names checked."""
        if c.codec == RAW:
            return "file", len(self.get(c))
        block, node, fs = self._unixfs(c)
        if hamt.is_shard(fs):
            hamt.slots(c, node, fs)
        elif fs.type != dagpb.DataType.DIRECTORY:
            return "file", check_file(c, node, fs)
        return "dir", len(block) + sum(link.tsize or 0 for link in node.links)

    def _unixfs(self, c: Cid) -> tuple[bytes, dagpb.PBNode, dagpb.UnixFSData]:
        if c.codec != DAG_PB:
            raise Unsupported(
                f"{c} has codec {c.codec}; only raw and dag-pb (UnixFS) are supported"
            )
        return self._decode(c)

    def child(self, c: Cid, name: str) -> Cid:
        """The CID of entry `name` in directory `c`; NotFound if absent or `c` is a file."""
        return self.child_trail(c, name)[-1]

    def child_trail(self, c: Cid, name: str) -> list[Cid]:
        """The HAMT sub-shards read to find entry `name` of directory `c` (none for a basic
        directory), then the entry's CID; NotFound if absent or `c` is a file."""
        if c.codec == DAG_PB:
            _, node, fs = self._decode(c)
            if hamt.is_shard(fs):
                found, trail = hamt.lookup(self.get, c, node, fs, name)
                if found is not None:
                    return [*trail, found]
                raise NotFound(f"no entry {name!r} in {c}", field="path")
        info = self.info(c, check_names=False)  # `name` is a path segment: never '..' or '/'
        for link in info.links:
            if link.name == name:
                return [link.cid]
        raise NotFound(f"no entry {name!r} in {c}", field="path")

    def read(self, c: Cid, start: int, end: int) -> Iterator[bytes]:
        """File bytes [start, end) of `c` in pieces of at most one block.

        Each node is checked against what its parent declares (IntegrityError: a corrupt
        file); a DAG deeper than MAX_DEPTH is refused (TooLarge) naming its root.
        """
        yield from self._read(c, start, end, None, [c])

    def _read(self, c: Cid, start: int, end: int, size: int | None,
              path: list[Cid]) -> Iterator[bytes]:
        """`size`: what the parent declares for `c`; `path`: the CIDs from the root to `c`."""
        if len(path) > MAX_DEPTH:
            raise TooLarge(f"the file DAG {path[0]} is more than {MAX_DEPTH} levels deep "
                           f"(at {c})", field="cid")
        if c.codec == RAW:
            data = self.get(c)
            _check_child(path, size, len(data))
            if start < len(data) and start < end:
                yield data[start:end]
            return
        if c.codec != DAG_PB:
            raise Unsupported(f"{c} has codec {c.codec}; it is not a UnixFS file")
        _, node, fs = self._decode(c)
        if fs.type == dagpb.DataType.DIRECTORY or hamt.is_shard(fs):
            raise StoreError(f"{c} is a directory, not a file")
        _check_child(path, size, check_file(c, node, fs))
        pos = 0
        if fs.data:
            if start < len(fs.data) and start < end:
                yield fs.data[start:end]
            pos = len(fs.data)
        for link, n in zip(node.links, fs.blocksizes, strict=True):
            if pos >= end:
                return
            if pos + n > start:
                child = cid_from_bytes(link.hash)
                yield from self._read(child, max(0, start - pos), min(n, end - pos), n,
                                      [*path, child])
            pos += n


def _check_child(path: list[Cid], declared: int | None, held: int) -> None:
    if declared is not None and declared != held:
        raise IntegrityError(f"corrupt UnixFS file {path[0]}: {path[-2]} declares {declared} "
                             f"bytes for its link to {path[-1]}, which holds {held}")
