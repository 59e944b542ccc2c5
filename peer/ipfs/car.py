"""CARv1 writer and streaming reader with size bounds; pure (no store access).

The header is the dag-cbor map {"roots": [CID...], "version": 1}; a tiny fixed dag-cbor encoder
and a bounded decoder for exactly that shape are enough here.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from peer.cids import Cid, cid_from_bytes, split_cid
from peer.errors import BadCID, StoreError, TooLarge
from peer.ipfs.dagpb import varint

MAX_HEADER_BYTES = 1 << 20
MAX_BLOCK_BYTES = 4 << 20
_CID_TAG = 42


def _cbor_head(major: int, n: int) -> bytes:
    if n < 24:
        return bytes(((major << 5) | n,))
    for info, width in ((24, 1), (25, 2), (26, 4), (27, 8)):
        if n < 1 << (8 * width):
            return bytes(((major << 5) | info,)) + n.to_bytes(width, "big")
    raise ValueError("cbor length too large")


def encode_header(roots: list[Cid]) -> bytes:
    """The dag-cbor CARv1 header (map keys in dag-cbor order: "roots" before "version")."""
    out = bytearray(_cbor_head(5, 2))
    out += _cbor_head(3, 5) + b"roots" + _cbor_head(4, len(roots))
    for c in roots:
        cid_bytes = b"\x00" + c.binary
        out += b"\xd8\x2a" + _cbor_head(2, len(cid_bytes)) + cid_bytes
    out += _cbor_head(3, 7) + b"version" + _cbor_head(0, 1)
    return bytes(out)


def frame(payload: bytes) -> bytes:
    """A CAR section: varint length prefix then payload."""
    return varint(len(payload)) + payload


def block_section(c: Cid, data: bytes) -> bytes:
    """One CAR block section: varint(len) | binary CID | data."""
    return frame(c.binary + data)


class _Cbor:
    """Decoder for the CAR header subset of dag-cbor (maps, arrays, text, bytes, uint, tag 42)."""

    def __init__(self, buf: bytes) -> None:
        self.buf = buf
        self.pos = 0

    def _head(self) -> tuple[int, int]:
        if self.pos >= len(self.buf):
            raise StoreError("malformed CAR header: truncated")
        b = self.buf[self.pos]
        self.pos += 1
        major, info = b >> 5, b & 31
        if info < 24:
            return major, info
        width = {24: 1, 25: 2, 26: 4, 27: 8}.get(info)
        if width is None or self.pos + width > len(self.buf):
            raise StoreError("malformed CAR header: bad length")
        n = int.from_bytes(self.buf[self.pos : self.pos + width], "big")
        self.pos += width
        return major, n

    def _take(self, n: int) -> bytes:
        if self.pos + n > len(self.buf):
            raise StoreError("malformed CAR header: truncated")
        out = self.buf[self.pos : self.pos + n]
        self.pos += n
        return out

    def value(self, depth: int = 0) -> object:
        if depth > 8:
            raise StoreError("malformed CAR header: nested too deeply")
        major, n = self._head()
        if major == 0:
            return n
        if major in (2, 3):
            raw = self._take(n)
            return raw if major == 2 else raw.decode("utf-8", errors="replace")
        if major == 4:
            return [self.value(depth + 1) for _ in range(n)]
        if major == 5:
            return {str(self.value(depth + 1)): self.value(depth + 1) for _ in range(n)}
        if major == 6 and n == _CID_TAG:
            link = self.value(depth + 1)
            if not isinstance(link, bytes) or link[:1] != b"\x00":
                raise StoreError("malformed CAR header: bad CID link")
            return cid_from_bytes(link[1:])
        raise StoreError(f"malformed CAR header: unsupported dag-cbor item (major type {major})")


def decode_header(buf: bytes) -> list[Cid]:
    """Roots of a CARv1 header; StoreError unless it is {roots: [CID...], version: 1}."""
    parsed = _Cbor(buf)
    header = parsed.value()
    if parsed.pos != len(buf) or not isinstance(header, dict):
        raise StoreError("malformed CAR header: not a single map")
    if header.get("version") != 1:
        raise StoreError(f"unsupported CAR version {header.get('version')!r}; only CARv1 is")
    roots = header.get("roots")
    if not isinstance(roots, list) or not all(isinstance(r, Cid) for r in roots):
        raise StoreError("malformed CAR header: roots must be a list of CIDs")
    return [r for r in roots if isinstance(r, Cid)]


class _Stream:
    """Byte reader over an iterable of chunks, counting what it consumed."""

    def __init__(self, chunks: Iterable[bytes], max_total: int | None) -> None:
        self.chunks = iter(chunks)
        self.buf = bytearray()
        self.pos = 0
        self.total = 0
        self.max_total = max_total

    def _fill(self, n: int) -> bool:
        while len(self.buf) - self.pos < n:
            chunk = next(self.chunks, None)
            if chunk is None:
                return False
            if self.pos:
                del self.buf[: self.pos]
                self.pos = 0
            self.buf += chunk
            self.total += len(chunk)
            if self.max_total is not None and self.total > self.max_total:
                raise TooLarge(f"CAR exceeds {self.max_total} bytes")
        return True

    def varint(self) -> int | None:
        """The next varint, or None at a clean end of stream."""
        value = 0
        for i in range(10):
            if not self._fill(1):
                if i == 0:
                    return None
                raise StoreError("truncated CAR: incomplete varint")
            b = self.buf[self.pos]
            self.pos += 1
            value |= (b & 0x7F) << (7 * i)
            if b < 0x80:
                return value
        raise StoreError("malformed CAR: overlong varint")

    def take(self, n: int) -> bytes:
        if not self._fill(n):
            raise StoreError("truncated CAR: section shorter than its length")
        out = bytes(self.buf[self.pos : self.pos + n])
        self.pos += n
        return out


def read_car(
    chunks: Iterable[bytes], max_total: int | None = None
) -> tuple[list[Cid], Iterator[tuple[Cid, bytes]]]:
    """Parse a CARv1 stream: (roots, iterator of (cid, unverified data)); bounded sizes."""
    stream = _Stream(chunks, max_total)
    size = stream.varint()
    if size is None or size == 0:
        raise StoreError("malformed CAR: no header")
    if size > MAX_HEADER_BYTES:
        raise TooLarge(f"CAR header of {size} bytes exceeds {MAX_HEADER_BYTES}")
    roots = decode_header(stream.take(size))
    return roots, _blocks(stream)


def _blocks(stream: _Stream) -> Iterator[tuple[Cid, bytes]]:
    while (size := stream.varint()) is not None:
        if size > MAX_BLOCK_BYTES:
            raise TooLarge(f"CAR block section of {size} bytes exceeds {MAX_BLOCK_BYTES}")
        section = stream.take(size)
        try:
            c, n = split_cid(section)
        except BadCID as exc:
            raise StoreError(f"malformed CAR block: {exc.message}") from exc
        yield c, section[n:]
