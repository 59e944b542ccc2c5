"""HAMT-sharded UnixFS directories as Kubo (boxo) writes them: build the shard nodes of a set of
entries, list them and look a name up through a block getter. Pure functions; no state.

A shard node is a dag-pb node whose UnixFS data is of type HAMTShard, with Data = the bitfield of
occupied buckets (big-endian, leading zero bytes dropped), hashType = murmur3-x64-64 (0x22) and
fanout = 256. At depth d an entry falls in the bucket given by the d-th group of log2(fanout)
bits of its name's 64-bit hash, most significant first. A bucket holding one entry is a link
named <bucket in upper-case hex, 2 digits><name> to it; a bucket holding several is a link named
<bucket> to a sub-shard of them. Links follow bucket order, so the shape depends only on the set
of entries, never on the order they were added in.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import mmh3

from peer.cids import DAG_PB, Cid, cid_from_bytes, sha256_cid
from peer.errors import BadCID, BadDag, StoreError
from peer.ipfs import dagpb
from peer.ipfs.dagpb import DataType, PBLink, PBNode, UnixFSData

FANOUT = 256  # Kubo's Import.UnixFSHAMTDirectoryMaxFanout default
MURMUR3_X64_64 = 0x22  # the multihash code of the name hash
MAX_FANOUT = 1024  # boxo refuses wider shards
HASH_BITS = 64

GetBlock = Callable[[Cid], bytes]  # NotFound if absent


@dataclass(frozen=True, slots=True)
class Link:
    """A named directory entry as stored: name, CID and cumulative DAG bytes (Tsize)."""

    name: str
    cid: Cid
    tsize: int


@dataclass(frozen=True, slots=True)
class Built:
    """A built HAMT: its root CID, the root's Tsize and every shard block (the root last)."""

    root: Cid
    tsize: int
    blocks: list[tuple[Cid, bytes]]


@dataclass(frozen=True, slots=True)
class Slot:
    """One occupied bucket of a shard node: an entry (`name` set) or a sub-shard (`name` None)."""

    bucket: int
    name: str | None
    cid: Cid
    tsize: int


@dataclass(frozen=True, slots=True)
class _Shape:
    fanout: int
    bits: int  # hash bits consumed per level
    width: int  # hex digits of a bucket in a link name


def name_hash(name: str) -> int:
    """The 64-bit murmur3-x64-64 hash of `name`'s UTF-8 bytes: h1 of murmur3 x64_128, seed 0."""
    return int.from_bytes(mmh3.hash_bytes(name.encode("utf-8"))[:8], "little")


def _shape(fanout: int | None, where: Cid | None = None) -> _Shape:
    if fanout is None or not 8 <= fanout <= MAX_FANOUT or fanout & (fanout - 1):
        what = f"HAMT shard {where}" if where is not None else "a HAMT"
        raise BadDag(f"{what} has fanout {fanout}; a power of two from 8 to {MAX_FANOUT} is "
                     "required")
    return _Shape(fanout, fanout.bit_length() - 1, len(f"{fanout - 1:X}"))


def _bucket(h: int, depth: int, bits: int) -> int | None:
    """The bucket of hash `h` at `depth`, or None when the hash has no bits left."""
    shift = HASH_BITS - (depth + 1) * bits
    if shift < 0:
        return None
    return (h >> shift) & ((1 << bits) - 1)


def _shard_data(occupied: int, shape: _Shape) -> bytes:
    bitfield = occupied.to_bytes(shape.fanout // 8, "big").lstrip(b"\x00")
    return dagpb.encode_unixfs(UnixFSData(
        DataType.HAMT_SHARD, bitfield or None, hash_type=MURMUR3_X64_64, fanout=shape.fanout))


# --- building -----------------------------------------------------------------------------------


def build(entries: Iterable[Link], cid_version: int, fanout: int = FANOUT) -> Built:
    """The shard nodes of a directory of `entries` (names unique), CIDv0 or v1 dag-pb."""
    shape = _shape(fanout)
    items: list[tuple[int, Link]] = []
    seen: set[str] = set()
    for entry in entries:
        if entry.name in seen:
            raise StoreError(f"a directory cannot hold two entries named {entry.name!r}")
        seen.add(entry.name)
        items.append((name_hash(entry.name), entry))
    blocks: list[tuple[Cid, bytes]] = []
    root, tsize = _build(items, 0, shape, cid_version, blocks)
    return Built(root, tsize, blocks)


def _build(items: list[tuple[int, Link]], depth: int, shape: _Shape, version: int,
           blocks: list[tuple[Cid, bytes]]) -> tuple[Cid, int]:
    buckets: dict[int, list[tuple[int, Link]]] = {}
    for h, entry in items:
        b = _bucket(h, depth, shape.bits)
        if b is None:
            names = ", ".join(repr(e.name) for _, e in items)
            raise StoreError(f"cannot shard a directory: names {names} share all 64 hash bits")
        buckets.setdefault(b, []).append((h, entry))
    links: list[PBLink] = []
    occupied = 0
    for b in sorted(buckets):
        group = buckets[b]
        occupied |= 1 << b
        prefix = f"{b:0{shape.width}X}"
        if len(group) == 1:
            entry = group[0][1]
            links.append(PBLink(entry.cid.binary, prefix + entry.name, entry.tsize))
        else:
            sub, sub_tsize = _build(group, depth + 1, shape, version, blocks)
            links.append(PBLink(sub.binary, prefix, sub_tsize))
    block = dagpb.encode_node(PBNode(tuple(links), _shard_data(occupied, shape)))
    c = sha256_cid(block, DAG_PB, version)
    blocks.append((c, block))
    return c, len(block) + sum(link.tsize or 0 for link in links)


# --- reading ------------------------------------------------------------------------------------


def is_shard(fs: UnixFSData) -> bool:
    """True if this UnixFS data is a HAMT shard node's."""
    return fs.type == DataType.HAMT_SHARD


def slots(c: Cid, node: PBNode, fs: UnixFSData, fanout: int | None = None) -> list[Slot]:
    """The occupied buckets of shard node `c`, checked; BadDag naming `c` when the node breaks
    the layout (hash, fanout, or `fanout` of its parent, bitfield, link names)."""
    return _checked(c, node, fs, fanout)[1]


def _checked(c: Cid, node: PBNode, fs: UnixFSData,
             fanout: int | None = None) -> tuple[_Shape, list[Slot]]:
    if not is_shard(fs):
        raise BadDag(f"{c} is a UnixFS {fs.type.name.lower()} inside a HAMT, not a shard")
    if fs.hash_type != MURMUR3_X64_64:
        raise BadDag(f"HAMT shard {c} uses hash type {fs.hash_type}; only murmur3-x64-64 (0x22) "
                     "is supported")
    shape = _shape(fs.fanout, c)
    if fanout is not None and shape.fanout != fanout:
        raise BadDag(f"HAMT shard {c} has fanout {shape.fanout} under a shard of fanout {fanout}")
    bitfield = fs.data or b""
    if len(bitfield) > shape.fanout // 8:
        raise BadDag(f"HAMT shard {c}: its bitfield of {len(bitfield)} bytes has buckets past "
                     f"its fanout {shape.fanout}")
    occupied = int.from_bytes(bitfield, "big")
    buckets = []  # the set bits, lowest first (a sub-shard has a few of 256)
    while occupied:
        low = occupied & -occupied
        buckets.append(low.bit_length() - 1)
        occupied ^= low
    if len(buckets) != len(node.links):
        raise BadDag(f"HAMT shard {c}: its bitfield marks {len(buckets)} buckets but it has "
                     f"{len(node.links)} links")
    return shape, [_slot(c, shape, b, link) for b, link in zip(buckets, node.links, strict=True)]


_HEX_DIGITS = frozenset("0123456789ABCDEFabcdef")


def _slot(c: Cid, shape: _Shape, bucket: int, link: PBLink) -> Slot:
    name = link.name or ""
    prefix = name[: shape.width]
    if len(prefix) < shape.width or not _HEX_DIGITS.issuperset(prefix):
        raise BadDag(f"HAMT shard {c}: link name {name!r} does not start with a bucket number")
    if int(prefix, 16) != bucket:
        raise BadDag(f"HAMT shard {c}: link {name!r} points to bucket {int(prefix, 16)} but the "
                     f"bitfield puts it in bucket {bucket}")
    try:
        target = cid_from_bytes(link.hash)
    except BadCID as exc:
        raise BadDag(f"HAMT shard {c}: link {name!r} has an invalid CID") from exc
    rest = name[shape.width:]
    return Slot(bucket, rest or None, target, link.tsize or 0)


def _sub(c: Cid, data: bytes, shape: _Shape, depth: int, root: Cid) -> list[Slot]:
    """The slots of sub-shard `c` at `depth` below HAMT `root`, checked against its parent."""
    if depth >= HASH_BITS // shape.bits:
        raise BadDag(f"HAMT {root} is deeper than its 64-bit hash allows (at {c})")
    if c.codec != DAG_PB:
        raise BadDag(f"HAMT {root} links to {c} as a sub-shard, which is not a dag-pb node")
    node = dagpb.decode_node(data)
    if node.data is None:
        raise BadDag(f"{c} inside HAMT {root} has no UnixFS data")
    return slots(c, node, dagpb.decode_unixfs(node.data), shape.fanout)


def _walk(get: GetBlock, c: Cid, shape: _Shape, root: list[Slot],
          ) -> Iterator[tuple[Slot, bytes | None]]:
    """Every slot of the HAMT rooted at `c`, depth first in bucket order: an entry with None,
    a sub-shard with its block (checked) before the slots below it."""
    return _walk_from(get, c, shape, [(iter(root), 0)])


def _walk_from(get: GetBlock, c: Cid, shape: _Shape, stack: list[tuple[Iterator[Slot], int]],
               trail: list[int] | None = None) -> Iterator[tuple[Slot, bytes | None]]:
    """`_walk` from a position: `stack` holds, per level from the root, the slots still to
    come there and the level's depth (the deepest last); `trail`, if given, the buckets of
    the sub-shards above the deepest level, kept so as the walk goes (a slot's place)."""
    while stack:
        it, depth = stack[-1]
        s = next(it, None)
        if s is None:
            stack.pop()
            if trail and len(trail) >= len(stack):
                trail.pop()
        elif s.name is not None:
            yield s, None
        else:
            block = get(s.cid)
            sub = _sub(s.cid, block, shape, depth + 1, c)
            yield s, block
            stack.append((iter(sub), depth + 1))
            if trail is not None:
                trail.append(s.bucket)


class Entries:
    """The entries of a HAMT as `entries` gives them, one at a time (an iterator of Link);
    `placed()` says whether the entry last given is where its name's hash puts it (a hostile
    DAG may hold an entry in another bucket: resuming after its name, which hashes down the
    shards, would resume elsewhere). Names pass through `check` as they are given."""

    def __init__(self, walk: Iterator[tuple[Slot, bytes | None]], trail: list[int],
                 shape: _Shape) -> None:
        self._walk = walk
        self._trail = trail  # the buckets of the sub-shards above the slot last given
        self._shape = shape
        self._last: Slot | None = None
        self.check: Callable[[str], str] | None = None

    def __iter__(self) -> Entries:
        return self

    def __next__(self) -> Link:
        for s, block in self._walk:
            if block is None and s.name is not None:
                self._last = s
                name = s.name if self.check is None else self.check(s.name)
                return Link(name, s.cid, s.tsize)
        self._last = None
        raise StopIteration

    def placed(self) -> bool:
        """Is the entry last given in the bucket its name's hash gives at every level from
        the root (one hash: a page's cursor is checked so, not every entry)? True if none
        was given (or the walk ended)."""
        s = self._last
        if s is None or s.name is None:
            return True
        h = name_hash(s.name)
        return all(_bucket(h, depth, self._shape.bits) == b
                   for depth, b in enumerate((*self._trail, s.bucket)))


def entries(get: GetBlock, c: Cid, node: PBNode, fs: UnixFSData) -> Entries:
    """Every entry of the HAMT rooted at `c`, depth first in bucket order (boxo's listing
    order), one at a time: a sub-shard is read when the iteration reaches it, so memory holds
    one shard per level, never the entries. The root shard is checked (BadDag) before this
    returns."""
    shape, root = _checked(c, node, fs)
    trail: list[int] = []
    return Entries(_walk_from(get, c, shape, [(iter(root), 0)], trail), trail, shape)


def entries_after(get: GetBlock, c: Cid, node: PBNode, fs: UnixFSData,
                  name: str) -> Entries | None:
    """The entries of the HAMT rooted at `c` that follow entry `name` in `entries`' order, as
    `entries` gives them (None if `name` is no entry of it). A page's cursor: the name's hash
    says where it is, so only the shards on its way are read to resume there (one per level),
    never the entries before it."""
    h = name_hash(name)
    shape, current = _checked(c, node, fs)
    stack: list[tuple[Iterator[Slot], int]] = []
    trail: list[int] = []  # the sub-shards' buckets on the way
    depth = 0
    while True:
        b = _bucket(h, depth, shape.bits)
        at = next((i for i, s in enumerate(current) if s.bucket == b), None)
        if at is None:
            return None
        hit = current[at]
        stack.append((iter(current[at + 1:]), depth))  # what follows it at this level
        if hit.name is not None:
            if hit.name != name:
                return None
            break
        depth += 1
        trail.append(hit.bucket)
        current = _sub(hit.cid, get(hit.cid), shape, depth, c)
    return Entries(_walk_from(get, c, shape, stack, trail), trail, shape)


def lookup(get: GetBlock, c: Cid, node: PBNode, fs: UnixFSData,
           name: str) -> tuple[Cid | None, list[Cid]]:
    """The CID of entry `name` in the HAMT rooted at `c` (None if absent) and the sub-shards
    read on the way, in order (what a CAR of a path through this directory must hold)."""
    h = name_hash(name)
    shape, current = _checked(c, node, fs)
    trail: list[Cid] = []
    depth = 0
    while True:
        b = _bucket(h, depth, shape.bits)
        hit = next((s for s in current if s.bucket == b), None)
        if hit is None:
            return None, trail
        if hit.name is not None:
            return (hit.cid if hit.name == name else None), trail
        trail.append(hit.cid)
        depth += 1
        current = _sub(hit.cid, get(hit.cid), shape, depth, c)


def shard_blocks(get: GetBlock, c: Cid, data: bytes) -> Iterator[tuple[Cid, bytes]]:
    """(cid, block) of every shard node of the HAMT rooted at `c` (its own block first), depth
    first in bucket order: the blocks needed to list the directory, not its entries."""
    node = dagpb.decode_node(data)
    if node.data is None:
        raise BadDag(f"{c} has no UnixFS data")
    shape, root = _checked(c, node, dagpb.decode_unixfs(node.data))
    yield c, data
    for s, block in _walk(get, c, shape, root):
        if block is not None:
            yield s.cid, block


def check_block(c: Cid, data: bytes) -> None:
    """BadDag if `data` is a HAMT shard node that breaks the layout; any other block passes
    (malformed dag-pb included: that is for its readers to refuse)."""
    if c.codec != DAG_PB:
        return
    try:
        node = dagpb.decode_node(data)
        fs = dagpb.decode_unixfs(node.data) if node.data is not None else None
    except StoreError:
        return
    if fs is not None and is_shard(fs):
        slots(c, node, fs)
