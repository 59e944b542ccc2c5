"""CID parsing, formatting and block hashing (py-cid and py-multihash underneath); pure."""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache

import cid as pycid
import multibase
import multihash

from peer.errors import BadCID, IntegrityError, Unsupported

RAW = "raw"
DAG_PB = "dag-pb"
SHA2_256 = 0x12
IDENTITY = 0x00
_MAX_CID_STRING = 512
_MAX_DIGEST_BYTES = 128
_MIN_DIGEST_BYTES = 20  # of a hash we do not verify with (Kubo's floor: boxo/verifcid)
_KEY = re.compile(r"(?:[0-9a-f]{2}){2,}")  # Cid.key: a multihash's bytes in hex

# Hashes a block may be verified with, by multihash code.
_HASHERS: dict[int, Callable[[bytes], bytes]] = {
    0x12: lambda b: hashlib.sha256(b).digest(),
    0x13: lambda b: hashlib.sha512(b).digest(),
    0x14: lambda b: hashlib.sha3_512(b).digest(),
    0x15: lambda b: hashlib.sha3_384(b).digest(),
    0x16: lambda b: hashlib.sha3_256(b).digest(),
    0xB220: lambda b: hashlib.blake2b(b, digest_size=32).digest(),
    0xB240: lambda b: hashlib.blake2b(b, digest_size=64).digest(),
}
# A verified hash's digest is its full output: a truncated one names many blocks.
_FULL_BYTES = {code: len(hasher(b"")) for code, hasher in _HASHERS.items()}
_V1_PREFIX = {RAW: b"\x01\x55", DAG_PB: b"\x01\x70"}
_FAST_CODECS = {prefix: codec for codec, prefix in _V1_PREFIX.items()}


@dataclass(frozen=True, slots=True)
class Cid:
    """A parsed CID: version 0 or 1, codec name (e.g. "raw", "dag-pb") and multihash bytes.
    `text`: its canonical text when known at construction (`parse_cid` of a canonical text
    keeps it: formatting it again is most of what `str` costs), else None (formatted once
    asked, from a bounded cache). Not part of its identity (equality, hash). A Cid with
    other fields is made anew, never by `dataclasses.replace` (which would keep the text)."""

    version: int
    codec: str
    multihash: bytes
    text: str | None = field(default=None, compare=False, repr=False)

    def __str__(self) -> str:
        return _encode(self) if self.text is None else self.text

    @property
    def binary(self) -> bytes:
        """The binary CID as written in dag-pb links and CAR files."""
        if self.version == 0:
            return self.multihash
        prefix = _V1_PREFIX.get(self.codec)
        if prefix is not None:
            return prefix + self.multihash
        return bytes(pycid.make_cid(1, self.codec, self.multihash).buffer)

    @property
    def key(self) -> str:
        """Storage key: hex of the multihash (one block for v0 and v1 of the same bytes)."""
        return self.multihash.hex()


def is_key(text: str) -> bool:
    """Is `text` a storage key as `Cid.key` makes them (a multihash's bytes, two at least, in
    lower-case hex)? The name of a block file, the key of an inline pack's block row."""
    return _KEY.fullmatch(text) is not None


# Both caches are bounded so that a peer's memory does not grow with the CIDs it has seen
# (issue 11); a miss costs a few microseconds on the fast paths below, not py-cid's ~170.
CID_CACHE_ENTRIES = 4096


@lru_cache(maxsize=CID_CACHE_ENTRIES)
def _encode(c: Cid) -> str:
    if c.version == 1:  # multibase base32: "b", RFC 4648 lower case without padding
        return "b" + base64.b32encode(c.binary).decode("ascii").lower().rstrip("=")
    made = pycid.make_cid(c.version, c.codec, c.multihash)
    return str(made.encode().decode("ascii"))


def sha256_cid(data: bytes, codec: str, version: int) -> Cid:
    """The CID of `data` hashed with sha2-256."""
    mh = b"\x12\x20" + hashlib.sha256(data).digest()
    return Cid(version, codec, mh)


def _from_py(made: pycid.CIDv0 | pycid.CIDv1, source: str, lenient: bool = False) -> Cid:
    mh = bytes(made.multihash)
    try:
        decoded = multihash.decode(mh)
    except Exception as exc:  # py-multihash raises several unrelated types
        raise BadCID(f"invalid CID {source!r}: bad multihash ({exc})", field="cid") from exc
    if decoded.length > _MAX_DIGEST_BYTES:
        raise BadCID(f"invalid CID {source!r}: digest too long", field="cid")
    why = "" if lenient else _digest_flaw(decoded.code, decoded.length)
    if why:
        raise BadCID(f"invalid CID {source!r}: {why}", field="cid")
    return Cid(int(made.version), str(made.codec), mh)


def _digest_flaw(code: int, length: int) -> str:
    """Why a multihash of hash `code` may not have a digest of `length` bytes ("" if it may):
    a hash we verify with only its full digest (a truncated one matches more than one block:
    two of 2 bytes collide after some thousand tries), another hash (not identity: inline
    data) 20 bytes at least, as Kubo's CID validation (boxo/verifcid MinDigestSize)."""
    full = _FULL_BYTES.get(code)
    if full is not None and length != full:
        return f"its digest is {length} bytes, not the {full} of its hash function"
    if full is None and code != IDENTITY and length < _MIN_DIGEST_BYTES:
        return f"its digest is {length} bytes, under the {_MIN_DIGEST_BYTES} required"
    return ""


def digest_flaw(c: Cid) -> str:
    """Why `parse_cid` refuses `c`'s digest ("" if it does not): a Cid taken `lenient`ly
    (what an earlier release stored: it took a truncated digest) or made from a stored key."""
    mh = c.multihash
    if len(mh) == 34 and mh[:2] == _SHA2_256_PREFIX:
        return ""
    decoded = multihash.decode(mh)
    return _digest_flaw(decoded.code, decoded.length)


_B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_B58_VALUE = {ch: i for i, ch in enumerate(_B58)}
_B32_LOWER = frozenset("abcdefghijklmnopqrstuvwxyz234567")
_B32_TO_INT = str.maketrans("abcdefghijklmnopqrstuvwxyz234567", "0123456789abcdefghijklmnopqrstuv")


def _fast_parse(s: str) -> Cid | None:
    """The common forms without py-cid: a sha2-256 CIDv0 ("Qm", 46 characters) and a raw or
    dag-pb sha2-256 CIDv1 in base32 ("b", 59 characters). Only a string that is exactly the
    canonical text of what it decodes to is taken; anything else (None) goes the slow way."""
    if len(s) == 46 and s.startswith("Qm"):
        n = 0
        for ch in s:
            v = _B58_VALUE.get(ch)
            if v is None:
                return None
            n = n * 58 + v
        if n >= 1 << 272:
            return None
        mh = n.to_bytes(34, "big")
        return Cid(0, DAG_PB, mh, s) if mh[:2] == b"\x12\x20" else None
    if len(s) == 59 and s[0] == "b" and _B32_LOWER.issuperset(s[1:]):
        n = int(s[1:].translate(_B32_TO_INT), 32)  # 58 characters: 290 bits for 36 bytes
        if n & 0b11:  # stray bits in the last character: not the canonical text
            return None
        raw = (n >> 2).to_bytes(36, "big")
        codec = _FAST_CODECS.get(raw[:2])
        return Cid(1, codec, raw[2:], s) if codec and raw[2:4] == b"\x12\x20" else None
    return None


@lru_cache(maxsize=CID_CACHE_ENTRIES)
def parse_cid(s: str, *, lenient: bool = False) -> Cid:
    """Parse a CID string (CIDv0 base58 "Qm..." or a multibase CIDv1); BadCID if malformed.
    `lenient`: a digest `_digest_flaw` refuses is taken, as releases before c3c9d56 took it:
    only to read back what they stored (a pin's name, a link gc follows), never to verify
    or serve a block by."""
    if not isinstance(s, str) or not s or len(s) > _MAX_CID_STRING or not s.isascii():
        raise BadCID(f"invalid CID {str(s)[:80]!r}: not a CID string", field="cid")
    if s.startswith("/") or s.strip() != s:
        raise BadCID(f"invalid CID {s[:80]!r}: unexpected characters", field="cid")
    fast = _fast_parse(s)
    if fast is not None:
        return fast
    try:
        made = pycid.make_cid(s)
    except Exception as exc:  # py-cid raises ValueError, KeyError, TypeError, ...
        raise BadCID(f"invalid CID {s[:80]!r}: {exc}", field="cid") from exc
    return _from_py(made, s, lenient)


def reads_as_cid(v: object) -> bool:
    """Is `v` a string that parses as a CID as the store reads CIDs it was given (`lenient`):
    what the door asks of an outcome's CIDs and a served view of its outputs."""
    if not isinstance(v, str):  # (parse_cid is cached: its argument must hash)
        return False
    try:
        parse_cid(v, lenient=True)
    except BadCID:
        return False
    return True


def cid_from_bytes(buf: bytes, *, lenient: bool = False) -> Cid:
    """Parse a complete binary CID; BadCID if malformed (`lenient` as `parse_cid`'s)."""
    if len(buf) == 34 and buf[0] == 0x12 and buf[1] == 0x20:
        return Cid(0, DAG_PB, bytes(buf))
    if buf[:2] in _FAST_CODECS and len(buf) == 36 and buf[2:4] == b"\x12\x20":
        return Cid(1, _FAST_CODECS[buf[:2]], bytes(buf[2:]))
    try:
        made = pycid.from_bytes(buf)
    except Exception as exc:  # py-cid raises several unrelated types
        raise BadCID(f"invalid binary CID {buf[:40].hex()}: {exc}", field="cid") from exc
    return _from_py(made, buf[:40].hex(), lenient)


def never_cid(s: str) -> str:
    """Why text `s` names no CID whatever codecs and hash functions a parser knows ("" if it
    may name one: a CID of a codec or hash function py-cid does not know is one). Its
    structure: a CIDv0 (46 characters "Qm..." in base58btc: a sha2-256 multihash) or a
    multibase text (py-multibase's bases) of a binary CID, version 1 (or a bare sha2-256
    multihash), codec and multihash code and digest length as varints, then that many
    bytes, nothing after; and what `parse_cid` refuses of any CID (`_MAX_CID_STRING`,
    `_MAX_DIGEST_BYTES`, `_digest_flaw`: a truncated digest, which no release after c3c9d56
    takes). Pure."""
    if not s or len(s) > _MAX_CID_STRING:
        return f"{len(s)} characters, not 1 to {_MAX_CID_STRING}"
    if _fast_parse(s) is not None:  # the common forms (a sha2-256 digest of 32 bytes): a CID,
        return ""  # without py-multibase's decode (~90 µs a text, per provider row at a start)
    try:
        buf = bytes(multibase.decode("z" + s if len(s) == 46 and s.startswith("Qm") else s))
    except Exception as exc:  # (py-multibase raises several unrelated types)
        return f"not base58btc nor a multibase text ({str(exc)[:80]})"
    try:
        if len(buf) == 34 and buf[:2] == _SHA2_256_PREFIX:
            return ""  # (a CIDv0's binary form)
        version, pos = _varint_value(buf, 0)
        _codec, pos = _varint_value(buf, pos)
        code, pos = _varint_value(buf, pos)
        length, pos = _varint_value(buf, pos)
    except BadCID:
        return "a varint cut short"
    if version != 1:
        return f"version {version}"
    if length != len(buf) - pos:
        return f"a digest of {len(buf) - pos} bytes where its multihash says {length}"
    if length > _MAX_DIGEST_BYTES:
        return f"a digest of {length} bytes, more than {_MAX_DIGEST_BYTES}"
    return _digest_flaw(code, length)


def _varint_at(buf: bytes, pos: int) -> int:
    """Position after the varint at `pos`; BadCID when truncated or overlong."""
    for i in range(pos, min(len(buf), pos + 10)):
        if buf[i] < 0x80:
            return i + 1
    raise BadCID("invalid binary CID: truncated varint", field="cid")


def _varint_value(buf: bytes, pos: int) -> tuple[int, int]:
    end = _varint_at(buf, pos)
    value = 0
    for shift, b in enumerate(buf[pos:end]):
        value |= (b & 0x7F) << (7 * shift)
    return value, end


def split_cid(buf: bytes) -> tuple[Cid, int]:
    """Parse the binary CID at the start of `buf`; returns (cid, its length in bytes)."""
    if len(buf) >= 34 and buf[0] == 0x12 and buf[1] == 0x20:
        return cid_from_bytes(buf[:34]), 34
    pos = _varint_at(buf, 0)  # version
    pos = _varint_at(buf, pos)  # codec
    pos = _varint_at(buf, pos)  # multihash code
    length, pos = _varint_value(buf, pos)
    if length > _MAX_DIGEST_BYTES or pos + length > len(buf):
        raise BadCID("invalid binary CID: digest length out of bounds", field="cid")
    return cid_from_bytes(buf[: pos + length]), pos + length


_SHA2_256_PREFIX = bytes((SHA2_256, 32))  # a sha2-256 multihash's code and length


def verify(c: Cid, data: bytes, *, lenient: bool = False) -> None:
    """Raise IntegrityError unless `data` hashes to `c`'s multihash; Unsupported hash -> error;
    BadCID for a digest `_digest_flaw` refuses (a Cid made from a stored key, not parsed)
    unless `lenient` (as `parse_cid`'s: gc's reading of an earlier release's block), which
    compares a truncated digest with as much of the hash, as that release did."""
    mh = c.multihash
    if len(mh) == 34 and mh[:2] == _SHA2_256_PREFIX:  # nearly every block: no py-multihash
        # decode (2/3 of a small block's check; each inline block a receiver keeps pays it)
        if hashlib.sha256(data).digest() != mh[2:]:
            raise IntegrityError(f"block {c} does not match its hash")
        return
    decoded = multihash.decode(mh)
    if decoded.code == IDENTITY:
        ok = bytes(decoded.digest) == data
    else:
        hasher = _HASHERS.get(decoded.code)
        if hasher is None:
            raise Unsupported(f"hash function {decoded.name} of {c} is not supported")
        why = "" if lenient else _digest_flaw(decoded.code, decoded.length)
        if why:
            raise BadCID(f"invalid CID {c}: {why}", field="cid")
        ok = hasher(data)[: decoded.length] == bytes(decoded.digest)
    if not ok:
        raise IntegrityError(f"block {c} does not match its hash")
