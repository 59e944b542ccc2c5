"""DAG-CBOR and DAG-JSON blocks, read only: decoding to Python values with links as Cid, the
links of a block (CAR traversal) and following a path inside a block (gateway pathing). Pure.
"""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import Iterator

from peer.errors import BadCID, BadDag, NotFound
from peer.ipfs.cids import Cid, cid_from_bytes, parse_cid

DAG_CBOR = "dag-cbor"
DAG_JSON = "dag-json"
CODECS = (DAG_CBOR, DAG_JSON)
MAX_DEPTH = 64  # nesting inside one block
_CID_TAG = 42
_SIMPLE: dict[int, object] = {20: False, 21: True, 22: None}


class _Cbor:
    def __init__(self, c: Cid, buf: bytes) -> None:
        self.c, self.buf, self.pos = c, buf, 0

    def bad(self, why: str) -> BadDag:
        return BadDag(f"malformed DAG-CBOR block {self.c}: {why}", field="cid")

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.buf):
            raise self.bad("truncated")
        self.pos += n
        return self.buf[self.pos - n : self.pos]

    def head(self) -> tuple[int, int, int]:
        b = self.take(1)[0]
        major, info = b >> 5, b & 31
        if info < 24:
            return major, info, info
        width = {24: 1, 25: 2, 26: 4, 27: 8}.get(info)
        if width is None:
            raise self.bad("indefinite lengths are not DAG-CBOR")
        return major, int.from_bytes(self.take(width), "big"), info

    def value(self, depth: int = 0) -> object:
        if depth > MAX_DEPTH:
            raise self.bad(f"nested more than {MAX_DEPTH} deep")
        major, n, info = self.head()
        if major == 0:
            return n
        if major == 1:
            return -1 - n
        if major in (2, 3):
            raw = self.take(n)
            return raw if major == 2 else raw.decode("utf-8", "strict")
        if major == 4:
            return [self.value(depth + 1) for _ in range(n)]
        if major == 5:
            out: dict[str, object] = {}
            for _ in range(n):
                key = self.value(depth + 1)
                if not isinstance(key, str):
                    raise self.bad("map keys must be strings")
                out[key] = self.value(depth + 1)
            return out
        if major == 6:
            return self._tag(n, depth)
        return self._simple(n, info)

    def _tag(self, tag: int, depth: int) -> Cid:
        raw = self.value(depth + 1)
        if tag != _CID_TAG or not isinstance(raw, bytes) or raw[:1] != b"\x00":
            raise self.bad(f"tag {tag} is not a CID link (tag 42)")
        try:
            return cid_from_bytes(raw[1:])
        except BadCID as exc:
            raise self.bad("a link is not a valid CID") from exc

    def _simple(self, n: int, info: int) -> object:
        if info == 27:
            return struct.unpack(">d", n.to_bytes(8, "big"))[0]
        if info < 24 and n in _SIMPLE:
            return _SIMPLE[n]
        raise self.bad(f"simple value {n} (info {info}) is not DAG-CBOR")


def _from_json(c: Cid, v: object, depth: int = 0) -> object:
    if depth > MAX_DEPTH:
        raise BadDag(f"malformed DAG-JSON block {c}: nested more than {MAX_DEPTH} deep")
    if isinstance(v, dict):
        if set(v) == {"/"} and isinstance(v["/"], str):
            try:
                return parse_cid(v["/"])
            except BadCID as exc:
                raise BadDag(f"malformed DAG-JSON block {c}: a link is not a CID") from exc
        if set(v) == {"/"} and isinstance(v["/"], dict) and set(v["/"]) == {"bytes"}:
            text = str(v["/"]["bytes"])
            return base64.b64decode(text + "=" * (-len(text) % 4))
        return {k: _from_json(c, x, depth + 1) for k, x in v.items()}
    if isinstance(v, list):
        return [_from_json(c, x, depth + 1) for x in v]
    return v


def decode(c: Cid, data: bytes) -> object:
    """The value of a DAG-CBOR or DAG-JSON block, links as Cid; BadDag if malformed."""
    if c.codec == DAG_CBOR:
        reader = _Cbor(c, data)
        try:
            value = reader.value()
        except UnicodeDecodeError as exc:
            raise reader.bad("a string is not UTF-8") from exc
        if reader.pos != len(data):
            raise reader.bad("bytes after the value")
        return value
    try:
        return _from_json(c, json.loads(data))
    except (ValueError, RecursionError) as exc:
        raise BadDag(f"malformed DAG-JSON block {c}: {exc}", field="cid") from exc


def _links(v: object) -> Iterator[Cid]:
    stack = [v]
    while stack:
        x = stack.pop()
        if isinstance(x, Cid):
            yield x
        elif isinstance(x, dict):
            stack.extend(reversed(list(x.values())))
        elif isinstance(x, list):
            stack.extend(reversed(x))


def links(c: Cid, data: bytes) -> list[Cid]:
    """The links of a DAG-CBOR or DAG-JSON block in document order (map keys as stored)."""
    return list(_links(decode(c, data)))


def follow(c: Cid, data: bytes, segments: list[str]) -> tuple[Cid | None, int]:
    """Follow `segments` inside block `c`: (the link reached, segments used), or (None,
    len(segments)) when the path ends inside the block; NotFound for a missing field."""
    node = decode(c, data)
    for i, seg in enumerate(segments):
        if isinstance(node, dict) and seg in node:
            node = node[seg]
        elif isinstance(node, list) and seg.isdigit() and int(seg) < len(node):
            node = node[int(seg)]
        else:
            raise NotFound(f"no field {seg!r} in {c}", field="path")
        if isinstance(node, Cid):
            return node, i + 1
    return None, len(segments)
