"""dag-pb and UnixFS protobuf codecs, byte-identical to go-merkledag/boxo; pure functions.

Hand-written on purpose: boxo writes PBNode links (field 2) before data (field 1), an order
the protobuf library cannot produce, and the messages are tiny.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

from peer.errors import StoreError

_WIRE_VARINT = 0
_WIRE_LEN = 2
_MAX_VARINT_BYTES = 10


class DataType(IntEnum):
    """UnixFS node types; the numeric values are part of the format."""

    RAW = 0
    DIRECTORY = 1
    FILE = 2
    METADATA = 3
    SYMLINK = 4
    HAMT_SHARD = 5


@dataclass(frozen=True, slots=True)
class PBLink:
    """One dag-pb link: binary CID, name (None when absent) and cumulative DAG size."""

    hash: bytes
    name: str | None
    tsize: int | None


@dataclass(frozen=True, slots=True)
class PBNode:
    """A dag-pb node: links in their stored order and the opaque data (None when absent)."""

    links: tuple[PBLink, ...]
    data: bytes | None


@dataclass(frozen=True, slots=True)
class UnixFSData:
    """The UnixFS message carried in a dag-pb node's data."""

    type: DataType
    data: bytes | None = None
    filesize: int | None = None
    blocksizes: tuple[int, ...] = field(default_factory=tuple)
    hash_type: int | None = None  # HAMT shards only: the multihash code of the name hash
    fanout: int | None = None  # HAMT shards only: buckets per shard node


def varint(n: int) -> bytes:
    """Unsigned LEB128 encoding of `n` >= 0."""
    if n < 0:
        raise ValueError("varint of a negative number")
    if n < 0x80:
        return bytes((n,))
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def read_varint(buf: bytes | memoryview, pos: int, end: int | None = None) -> tuple[int, int]:
    """Decode a varint at `pos` (ending before `end`: the enclosing message's, default the
    buffer's); returns (value, next position); StoreError when malformed."""
    result = 0
    shift = 0
    stop = min(len(buf) if end is None else end, pos + _MAX_VARINT_BYTES)
    while pos < stop:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7
    raise StoreError("malformed protobuf: truncated or overlong varint")


def _key(field_no: int, wire: int) -> bytes:
    return varint((field_no << 3) | wire)


def _len_field(field_no: int, value: bytes) -> list[bytes]:
    return [_key(field_no, _WIRE_LEN), varint(len(value)), value]


def _int_field(field_no: int, value: int) -> list[bytes]:
    return [_key(field_no, _WIRE_VARINT), varint(value)]


def _fields(buf: bytes | memoryview) -> list[tuple[int, int | memoryview]]:
    """Split a protobuf message into (field number, int or bytes) pairs in wire order."""
    view = memoryview(buf)
    out: list[tuple[int, int | memoryview]] = []
    pos = 0
    while pos < len(view):
        key, pos = read_varint(view, pos)
        field_no, wire = key >> 3, key & 7
        if wire == _WIRE_VARINT:
            value, pos = read_varint(view, pos)
            out.append((field_no, value))
        elif wire == _WIRE_LEN:
            size, pos = read_varint(view, pos)
            if pos + size > len(view):
                raise StoreError("malformed protobuf: length past the end of the message")
            out.append((field_no, view[pos : pos + size]))
            pos += size
        else:
            raise StoreError(f"malformed protobuf: unsupported wire type {wire}")
    return out


def encode_link(link: PBLink) -> bytes:
    """PBLink bytes: Hash=1, Name=2, Tsize=3 (present fields only, in that order)."""
    out = _len_field(1, link.hash)
    if link.name is not None:
        out += _len_field(2, link.name.encode("utf-8"))
    if link.tsize is not None:
        out += _int_field(3, link.tsize)
    return b"".join(out)


def encode_node(node: PBNode) -> bytes:
    """PBNode bytes: every link (field 2) first, then data (field 1), as boxo writes them."""
    parts: list[bytes] = []
    for link in node.links:
        parts += _len_field(2, encode_link(link))
    if node.data is not None:
        parts += _len_field(1, node.data)
    return b"".join(parts)


def _decode_link(buf: memoryview) -> PBLink:
    hash_: bytes | None = None
    name: str | None = None
    tsize: int | None = None
    for field_no, value in _fields(buf):
        if field_no == 1 and isinstance(value, memoryview):
            hash_ = bytes(value)
        elif field_no == 2 and isinstance(value, memoryview):
            try:
                name = bytes(value).decode("utf-8")
            except UnicodeDecodeError as exc:
                raise StoreError("malformed dag-pb: link name is not UTF-8") from exc
        elif field_no == 3 and isinstance(value, int):
            tsize = value
        else:
            raise StoreError(f"malformed dag-pb: unexpected link field {field_no}")
    if hash_ is None:
        raise StoreError("malformed dag-pb: link without a hash")
    return PBLink(hash_, name, tsize)


def _decode_node_slow(buf: bytes | memoryview) -> PBNode:
    links: list[PBLink] = []
    data: bytes | None = None
    for field_no, value in _fields(buf):
        if field_no == 2 and isinstance(value, memoryview):
            links.append(_decode_link(value))
        elif field_no == 1 and isinstance(value, memoryview):
            data = bytes(value)
        else:
            raise StoreError(f"malformed dag-pb: unexpected node field {field_no}")
    return PBNode(tuple(links), data)


# Field keys of the messages as every writer puts them (one byte each): PBNode Links (2) and
# Data (1), both length-delimited; PBLink Hash (1) and Name (2), length-delimited, Tsize (3),
# a varint.
_NODE_LINK, _NODE_DATA, _LINK_HASH, _LINK_NAME, _LINK_TSIZE = 0x12, 0x0A, 0x0A, 0x12, 0x18


class _Slow(Exception):
    """Not the common shape: decode with the general (and strict) parser instead."""


def _fast_link(buf: bytes, pos: int, end: int) -> PBLink:
    hash_: bytes | None = None
    name: str | None = None
    tsize: int | None = None
    while pos < end:
        key = buf[pos]
        if key == _LINK_TSIZE:
            tsize, pos = read_varint(buf, pos + 1, end)
            continue
        if key not in (_LINK_HASH, _LINK_NAME):
            raise _Slow
        size, pos = read_varint(buf, pos + 1, end)
        if pos + size > end:
            raise _Slow
        if key == _LINK_HASH:
            hash_ = buf[pos:pos + size]
        else:
            try:
                name = buf[pos:pos + size].decode("utf-8")
            except UnicodeDecodeError:
                raise _Slow from None
        pos += size
    if hash_ is None:
        raise _Slow
    return PBLink(hash_, name, tsize)


def decode_node(buf: bytes | memoryview) -> PBNode:
    """Parse dag-pb bytes (any field order); StoreError when malformed. The common shape
    (one-byte keys) is parsed inline; anything else goes through the general parser, which
    accepts and refuses exactly the same blocks."""
    data = bytes(buf)
    try:
        links: list[PBLink] = []
        node_data: bytes | None = None
        pos, end = 0, len(data)
        while pos < end:
            key = data[pos]
            if key not in (_NODE_LINK, _NODE_DATA):
                raise _Slow
            size, pos = read_varint(data, pos + 1, end)
            if pos + size > end:
                raise _Slow
            if key == _NODE_LINK:
                links.append(_fast_link(data, pos, pos + size))
            else:
                node_data = data[pos:pos + size]
            pos += size
        return PBNode(tuple(links), node_data)
    except (_Slow, StoreError):
        return _decode_node_slow(data)


def encode_unixfs(fs: UnixFSData) -> bytes:
    """UnixFS Data bytes: Type=1, Data=2, filesize=3, blocksizes=4 (unpacked), hashType=5,
    fanout=6, in field order as Go's proto2 writes them."""
    out = _int_field(1, int(fs.type))
    if fs.data is not None:
        out += _len_field(2, fs.data)
    if fs.filesize is not None:
        out += _int_field(3, fs.filesize)
    for size in fs.blocksizes:
        out += _int_field(4, size)
    if fs.hash_type is not None:
        out += _int_field(5, fs.hash_type)
    if fs.fanout is not None:
        out += _int_field(6, fs.fanout)
    return b"".join(out)


def _packed(value: memoryview) -> list[int]:
    out: list[int] = []
    pos = 0
    while pos < len(value):
        n, pos = read_varint(value, pos)
        out.append(n)
    return out


def decode_unixfs(buf: bytes | memoryview) -> UnixFSData:
    """Parse a UnixFS Data message; other fields (mode, mtime) are ignored."""
    data: bytes | None = None
    blocksizes: list[int] = []
    ints: dict[int, int] = {}
    for field_no, value in _fields(buf):
        if field_no == 2 and isinstance(value, memoryview):
            data = bytes(value)
        elif field_no == 4:
            blocksizes.extend([value] if isinstance(value, int) else _packed(value))
        elif field_no in (1, 3, 5, 6) and isinstance(value, int):
            ints[field_no] = value
    type_, filesize = ints.get(1), ints.get(3)
    if type_ is None:
        raise StoreError("malformed UnixFS data: no Type")
    try:
        kind = DataType(type_)
    except ValueError as exc:
        raise StoreError(f"malformed UnixFS data: unknown Type {type_}") from exc
    return UnixFSData(kind, data, filesize, tuple(blocksizes), ints.get(5), ints.get(6))


def leaf_v0(chunk: bytes) -> bytes:
    """The dag-pb block of a CIDv0 file leaf: UnixFS File with Data and filesize, no links."""
    if not chunk:
        return encode_node(PBNode((), encode_unixfs(UnixFSData(DataType.FILE, None, 0))))
    n = varint(len(chunk))
    # Same bytes as encode_node(PBNode((), encode_unixfs(...))) with a single copy of `chunk`.
    fs_len = 3 + len(n) + len(chunk) + 1 + len(n)
    return b"".join((b"\x0a", varint(fs_len), b"\x08\x02\x12", n, chunk, b"\x18", n))


def file_node(children: list[tuple[bytes, int, int]]) -> bytes:
    """Internal file node over (binary CID, Tsize, file bytes) children; links named ""."""
    sizes = tuple(size for _, _, size in children)
    fs = encode_unixfs(UnixFSData(DataType.FILE, None, sum(sizes), sizes))
    links = tuple(PBLink(c, "", tsize) for c, tsize, _ in children)
    return encode_node(PBNode(links, fs))


DIRECTORY_DATA = encode_unixfs(UnixFSData(DataType.DIRECTORY))


def dir_node(children: list[tuple[str, bytes, int]]) -> bytes:
    """A basic UnixFS directory over (name, binary CID, Tsize), links sorted by name bytes."""
    ordered = sorted(children, key=lambda c: c[0].encode("utf-8"))
    links = tuple(PBLink(c, name, tsize) for name, c, tsize in ordered)
    return encode_node(PBNode(links, DIRECTORY_DATA))
