"""DAG traversal over a block getter: depth-first walks, the blocks a trustless CAR request
selects (dag-scope, entity-bytes, dups) and CAR streams of them. No state; reads may block."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable, Iterator

from peer.cids import DAG_PB, IDENTITY, Cid, cid_from_bytes
from peer.errors import BadCID, BadDag, IntegrityError, NotFound, StoreError, TooLarge
from peer.ipfs import car, dagpb, hamt, ipld
from peer.ipfs.dagpb import DataType, PBNode, UnixFSData
from peer.ipfs.store import CarOptions
from peer.ipfs.unixfs import MAX_DEPTH

GetBlock = Callable[[Cid], bytes]  # NotFound if absent
Blocks = Iterator[tuple[Cid, bytes]]
HasBlock = Callable[[Cid], bool]

log = logging.getLogger(__name__)


def links(c: Cid, data: bytes) -> list[Cid]:
    """Child CIDs of a block (dag-pb, DAG-CBOR and DAG-JSON links; other codecs are leaves)."""
    if c.codec in ipld.CODECS:
        try:
            return ipld.links(c, data)
        except BadDag:  # its bytes still hash to its CID: a leaf for walks, CARs, pins and gc
            return []
    if c.codec != DAG_PB:
        return []
    out: list[Cid] = []
    for link in dagpb.decode_node(data).links:
        try:
            out.append(cid_from_bytes(link.hash))
        except BadCID as exc:
            raise IntegrityError(f"block {c} links to an invalid CID") from exc
    return out


def link_keys(c: Cid, data: bytes) -> list[Cid]:
    """gc's links of a block (`links`, each link on its own): a link as an earlier release
    read it (`lenient`: a digest shorter than its hash function's, refused since c3c9d56,
    too), one that names no CID even so skipped, not its siblings (ipld.link_keys for DAG-
    CBOR and DAG-JSON). What a pin reaches is kept by them; never read a block by them. A
    dag-pb block that does not decode (an earlier release stored it under a truncated
    digest, whose blocks it did not decode; or a running job's root) is a leaf here, kept by
    gc, as ipld.link_keys takes a malformed IPLD block: gc must not halt on it for good."""
    if c.codec in ipld.CODECS:
        return ipld.link_keys(c, data)
    if c.codec != DAG_PB:
        return []
    try:
        node = dagpb.decode_node(data)
    except StoreError as exc:
        log.warning("gc: block %s is not valid dag-pb (%s): kept, its links not followed",
                    c, exc)
        return []
    out: list[Cid] = []
    for link in node.links:
        with contextlib.suppress(BadCID):
            out.append(cid_from_bytes(link.hash, lenient=True))
    return out


def may_link(c: Cid) -> bool:
    """Whether a block of `c`'s codec can link to others (dag-pb, the IPLD codecs); a raw
    leaf cannot, so a walk for links need not read it."""
    return c.codec == DAG_PB or c.codec in ipld.CODECS


def check_complete(get: GetBlock, has: HasBlock, root: Cid) -> None:
    """NotFound at the first block of the DAG under `root` that is not stored. Only the
    blocks that can link (dag-pb, the IPLD codecs) are read (verified, for their links); a
    leaf of another codec (raw: a file's data) is only looked up, not read nor hashed: its
    bytes are verified where they are read."""
    seen: set[str] = set()
    stack = [root]
    while stack:
        c = stack.pop()
        if c.key in seen:
            continue
        seen.add(c.key)
        if may_link(c):
            stack.extend(links(c, get(c)))
        elif not has(c):
            raise NotFound(f"block {c} is not in the store", field="cid")


def walk(get: GetBlock, root: Cid, seen: set[str] | None = None, dups: bool = False) -> Blocks:
    """(cid, block) of the DAG under `root`, depth first in link order; each block once
    (`seen` may be shared between walks) unless `dups`."""
    seen = set() if seen is None else seen
    stack = [root]
    while stack:
        c = stack.pop()
        if not dups and c.key in seen:
            continue
        seen.add(c.key)
        data = get(c)
        yield c, data
        stack.extend(reversed(links(c, data)))


def unixfs(c: Cid, data: bytes) -> tuple[PBNode, UnixFSData] | None:
    """The dag-pb node and its UnixFS data, or None for raw blocks and other codecs."""
    if c.codec != DAG_PB:
        return None
    node = dagpb.decode_node(data)
    return (node, dagpb.decode_unixfs(node.data)) if node.data is not None else None


def entity_range(spec: tuple[int, int | None], size: int) -> tuple[int, int]:
    """[start, end) of an entity-bytes (from, to-inclusive or None) over a file of `size`."""
    first, last = spec
    start = first if first >= 0 else max(0, size + first)
    end = size if last is None else (last + 1 if last >= 0 else size + last + 1)
    return min(start, size), max(min(end, size), 0)


def select(get: GetBlock, c: Cid, opts: CarOptions) -> Blocks:
    """The blocks of the entity `c` that `opts` asks for, depth first; its own block first."""
    data = get(c)
    if opts.scope == "block":
        return iter([(c, data)])
    node = unixfs(c, data)
    if opts.scope != "entity":
        return walk(get, c, dups=opts.dups)
    if node is None:  # raw, DAG-CBOR, DAG-JSON: the block alone, not what its links point to
        return iter([(c, data)])
    fs = node[1]
    if hamt.is_shard(fs):
        return hamt.shard_blocks(get, c, data)  # every shard: what listing it needs
    if fs.type == DataType.DIRECTORY:
        return iter([(c, data)])
    if opts.entity_bytes is not None:
        size = fs.filesize if fs.filesize is not None else len(fs.data or b"") + sum(
            fs.blocksizes)
        start, end = entity_range(opts.entity_bytes, size)
        return file_blocks(get, c, data, start, end)
    return walk(get, c, dups=opts.dups)


def file_blocks(get: GetBlock, c: Cid, data: bytes, start: int, end: int,
                depth: int = 1) -> Blocks:
    """The blocks of a UnixFS file needed for its bytes [start, end), depth first; TooLarge
    past unixfs.MAX_DEPTH levels (no recursion without bound)."""
    if depth > MAX_DEPTH:
        raise TooLarge(f"the file DAG is more than {MAX_DEPTH} levels deep (at {c})",
                       field="cid")
    yield c, data
    node = unixfs(c, data)
    if node is None or node[1].type == DataType.DIRECTORY:
        return
    pb, fs = node
    pos = len(fs.data or b"")
    for link, size in zip(pb.links, fs.blocksizes, strict=False):
        if pos >= end:
            return
        if pos + size > start:
            child = cid_from_bytes(link.hash)
            yield from file_blocks(get, child, get(child), max(0, start - pos),
                                   min(size, end - pos), depth + 1)
        pos += size


# What an export may write again of content it has already written (a TAR's entry whose CID
# it wrote under another name, a dups=y CAR's block met again), beyond as much as it wrote
# once: a DAG of a few blocks whose directories all name one child (W entries, L levels: W**L
# paths) is otherwise an export without end (session 48, review r1 F2).
REPEAT_ALLOWANCE = 64 << 20
MIN_REPEAT_COST = 512  # what one thing written again counts at least (a TAR header's size)


class Expansion:
    """The bound of one export on what it writes again: `once(n)` counts n bytes of content
    written for the first time, `again(n, what)` n bytes written again (at least
    MIN_REPEAT_COST), TooLarge (naming `what`, nothing written of it) once those would pass
    `allowance` plus the bytes written once. Honest content repeats little (empty files);
    content that repeats more is whole, once, in a CAR without duplicates."""

    def __init__(self, export: str, allowance: int | None = None) -> None:
        self.export = export  # what the message calls it: "a TAR", "a CAR with dups=y"
        self.allowance = REPEAT_ALLOWANCE if allowance is None else allowance
        self.written_once = 0
        self.written_again = 0

    def once(self, n: int) -> None:
        self.written_once += n

    def again(self, n: int, what: str) -> None:
        n = max(n, MIN_REPEAT_COST)
        if self.written_again + n > self.allowance + self.written_once:
            raise TooLarge(
                f"{self.export} would write more than {self.allowance} bytes beyond its "
                f"{self.written_once} bytes of distinct content again (the same blocks under "
                f"other names, at {what}): cut there; ?format=car (no duplicates) holds every "
                "block once", field="format")
        self.written_again += n


def car_pieces(roots: list[Cid], blocks: Iterable[tuple[Cid, bytes]], *, dups: bool = False,
               piece_bytes: int = 1 << 18,
               repeat_allowance: int | None = None) -> Iterator[bytes]:
    """A CARv1 of `roots` and `blocks` (each once unless `dups`), in pieces of about
    `piece_bytes`. With `dups`, what is written again is bounded (Expansion, by
    `repeat_allowance` or REPEAT_ALLOWANCE: TooLarge ends the stream)."""
    piece = [car.frame(car.encode_header(roots))]
    size = len(piece[0])
    seen: set[str] = set()
    expansion = Expansion("a CAR with dups=y", repeat_allowance)
    for c, data in blocks:
        if c.multihash[0] == IDENTITY:  # virtual: the data is the CID; never a CAR block
            continue
        repeat = c.key in seen
        if repeat and not dups:
            continue
        section = car.block_section(c, data)
        if repeat:
            expansion.again(len(section), f"block {c}")
        else:
            expansion.once(len(section))
            seen.add(c.key)
        piece.append(section)
        size += len(section)
        if size >= piece_bytes:
            yield b"".join(piece)
            piece, size = [], 0
    if piece:
        yield b"".join(piece)
