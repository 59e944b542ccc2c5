"""DAG-CBOR and DAG-JSON: decoding to Python values (links as Cid), canonical encoding, conversion
between the two, the links of a block (CAR traversal) and paths inside a block (gateway). Pure.

CBOR is read and written by `cbor2` (maintained, a C extension); the DAG-CBOR rules it does not
enforce are checked here (`check_cbor`): a block must be exactly the canonical encoding of the
value it decodes to (map keys sorted length-first then bytewise, shortest integer and length
heads, definite lengths, 64-bit floats), with tag 42 (a CID) as its only tag, no NaN or
Infinity, no simple values but false/true/null, integers within 64 bits and text map keys.
DAG-JSON is written as Kubo 0.39 (go-ipld-prime) writes it: keys sorted bytewise, no spaces,
Go's shortest float form, Go's string escapes.
"""

from __future__ import annotations

import base64
import contextlib
import json
import math
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import cbor2

from peer import jsontext
from peer.cids import Cid, cid_from_bytes, parse_cid
from peer.errors import BadCID, BadDag, NotFound

DAG_CBOR = "dag-cbor"
DAG_JSON = "dag-json"
CODECS = (DAG_CBOR, DAG_JSON)
MAX_DEPTH = 64  # nesting inside one block
_CID_TAG = 42
_INT_MIN, _INT_MAX = -(2**64), 2**64 - 1  # what a CBOR integer head holds
_JSON_INT_MIN, _JSON_INT_MAX = -(2**63), 2**63 - 1  # what go-ipld-prime parses from DAG-JSON
# tags cbor2 would otherwise turn into Python objects (dates, bignums, decimals, sets, ...):
# each becomes a refusal that names it
_SEMANTIC_TAGS = (0, 1, 2, 3, 4, 5, 25, 28, 29, 30, 35, 36, 37, 52, 54, 100, 256, 258, 260, 261,
                  262, 263, 270, 1004, 55799)
_HEAD_WIDTH = {24: 1, 25: 2, 26: 4, 27: 8}
_MAJOR_NAMES = {0: "an integer", 1: "a negative integer", 2: "a byte string length",
                3: "a text string length", 4: "an array length", 5: "a map length"}


class _BadTag:
    """What a tag other than a well-formed tag 42 decodes to: refused by the check."""

    def __init__(self, tag: int, why: str = "") -> None:
        self.tag, self.why = tag, why


def _tag_hook(tag: cbor2.CBORTag, immutable: bool) -> object:
    if tag.tag != _CID_TAG:
        return _BadTag(tag.tag)
    raw = tag.value
    if not isinstance(raw, bytes) or raw[:1] != b"\x00":
        return _BadTag(_CID_TAG, "a link must be a byte string starting with 0x00")
    try:
        return cid_from_bytes(raw[1:])
    except BadCID:
        return _BadTag(_CID_TAG, "a link is not a valid CID")


def _refuse_semantic(n: int) -> Any:
    return lambda value, immutable: _BadTag(n)


_SEMANTIC = {n: _refuse_semantic(n) for n in _SEMANTIC_TAGS}


def _bad(where: str, why: str) -> BadDag:
    return BadDag(f"malformed DAG-CBOR {where}: {why}", field="cid")


# Values of these exact types are of the data model whatever they hold (cbor2 reads no integer
# wider than its 64-bit heads: wider ones are bignum tags, refused): the walks below skip them
# without a call, since a block is mostly scalars (4 Mi zeros in an array: 0.11 s, not 1.7).
_PLAIN = frozenset({str, bytes, bool, int, type(None)})


def _check_value(v: object, where: str, depth: int = 0) -> None:
    """BadDag unless `v` (as cbor2 decoded it) is of the DAG-CBOR data model."""
    if depth > MAX_DEPTH:
        raise _bad(where, f"nested more than {MAX_DEPTH} deep")
    if isinstance(v, list):
        for x in v:
            if type(x) not in _PLAIN:
                _check_value(x, where, depth + 1)
    elif isinstance(v, dict):
        for k, x in v.items():
            if not isinstance(k, str):
                raise _bad(where, "map keys must be text strings")
            if type(x) not in _PLAIN:
                _check_value(x, where, depth + 1)
    else:
        why = _scalar_fault(v)
        if why:
            raise _bad(where, why)


def _scalar_fault(v: object) -> str:
    """Why `v` is not a DAG-CBOR scalar, or ""."""
    if v is None or isinstance(v, (bool, str, bytes, Cid)):
        return ""
    if isinstance(v, int):
        return "" if _INT_MIN <= v <= _INT_MAX else \
            "an integer beyond 64 bits (a bignum tag) is not DAG-CBOR"
    if isinstance(v, float):
        return "" if math.isfinite(v) else "NaN and Infinity are not DAG-CBOR"
    if isinstance(v, _BadTag):
        return v.why or f"tag {v.tag} is not allowed (tag 42, a CID, is the only one)"
    return f"{type(v).__name__} values (a simple value or tag) are not DAG-CBOR"


def _explain(data: bytes, canonical: bytes) -> str:
    """Which DAG-CBOR rule `data` breaks, from the first byte where it differs from the
    canonical encoding of its value."""
    at = next((i for i, (a, b) in enumerate(zip(data, canonical, strict=False)) if a != b),
              min(len(data), len(canonical)))
    if at >= len(canonical):
        return f"{len(data) - at} bytes after the value"
    if at >= len(data):
        return f"not canonical (the canonical encoding is {len(canonical)} bytes)"
    major, info = data[at] >> 5, data[at] & 31
    if major == 7 and info in (25, 26):
        return f"a {16 if info == 25 else 32}-bit float at byte {at} (DAG-CBOR floats are 64-bit)"
    if major in _MAJOR_NAMES and info in _HEAD_WIDTH:
        return (f"{_MAJOR_NAMES[major]} at byte {at} is not in its shortest encoding "
                f"({_HEAD_WIDTH[info]} bytes)")
    if major == 6:
        return f"a tag at byte {at} that DAG-CBOR does not allow"
    return f"map keys out of order at byte {at} (DAG-CBOR sorts them length-first, bytewise)"


def check_cbor(data: bytes, where: str = "block") -> object:
    """The value of DAG-CBOR `data`, links as Cid; BadDag naming the rule it breaks (a value
    that is not the canonical encoding of what it decodes to included)."""
    try:
        value = cbor2.loads(data, tag_hook=_tag_hook, semantic_decoders=_SEMANTIC,
                            max_depth=MAX_DEPTH + 1, allow_indefinite=False,
                            allow_duplicate_keys=False)
    except cbor2.CBORDecodeError as exc:
        raise _bad(where, str(exc)) from exc
    except (ValueError, TypeError, OverflowError) as exc:  # keys of unhashable kinds
        raise _bad(where, str(exc)) from exc
    _check_value(value, where)
    canonical = encode_cbor(value)
    if canonical != data:
        raise _bad(where, _explain(data, canonical))
    return value


def _cbor_key(k: str) -> tuple[int, bytes]:
    b = k.encode("utf-8")
    return len(b), b


# Exact types _prepare passes through as they are (an int too, within _INT_MIN.._INT_MAX):
# its containers keep those without a call (see _PLAIN)
_AS_IS = frozenset({str, bytes, bool, type(None)})


def _prepare(v: object, depth: int = 0) -> object:
    """`v` with maps in DAG-CBOR key order and links as tag 42; BadDag for what DAG-CBOR
    cannot hold."""
    if depth > MAX_DEPTH:
        raise BadDag(f"a value nested more than {MAX_DEPTH} deep", field="body")
    if isinstance(v, Cid):
        return cbor2.CBORTag(_CID_TAG, b"\x00" + v.binary)
    if isinstance(v, dict):
        if not v:
            return v
        if not all(isinstance(k, str) for k in v):
            raise BadDag("map keys must be strings", field="body")
        out = {}
        for k in sorted(v, key=_cbor_key):
            x = v[k]
            out[k] = x if type(x) in _AS_IS or (type(x) is int and _INT_MIN <= x <= _INT_MAX) \
                else _prepare(x, depth + 1)
        return out
    if isinstance(v, list):
        return [x if type(x) in _AS_IS or (type(x) is int and _INT_MIN <= x <= _INT_MAX)
                else _prepare(x, depth + 1) for x in v]
    if isinstance(v, float) and not math.isfinite(v):
        raise BadDag("NaN and Infinity cannot be encoded in DAG-CBOR or DAG-JSON", field="body")
    if isinstance(v, int) and not isinstance(v, bool) and not _INT_MIN <= v <= _INT_MAX:
        raise BadDag(f"{_show_int(v)} does not fit in 64 bits", field="body")
    if v is None or isinstance(v, (bool, int, float, str, bytes)):
        return v
    raise BadDag(f"{type(v).__name__} values cannot be encoded in DAG-CBOR", field="body")


def _show_int(v: int) -> str:
    """`integer N` for a message, or its size where N is long (str() of an integer past
    Python's digit limit raises ValueError)."""
    return f"integer {v}" if v.bit_length() <= 256 else f"an integer of {v.bit_length()} bits"


def _not_text(value: object) -> BadDag:
    """The error for a `value` whose encoding met a lone surrogate (UTF-8 cannot hold one: a
    `\\ud800` escape of JSON alone decodes to it), naming the string that holds it."""
    path = jsontext.lone_surrogate(value) or []
    place = jsontext.show_path([k.encode("utf-8", "backslashreplace").decode("utf-8")
                                if isinstance(k, str) else k for k in path], most=8)
    return BadDag(f"the string at {place} holds a lone surrogate (such as \\ud800), which is "
                  "not text: DAG-CBOR and DAG-JSON strings are UTF-8", field="body")


def encode_cbor(value: object) -> bytes:
    """The canonical DAG-CBOR encoding of `value` (links as Cid); BadDag if not encodable.
    cbor2 writes shortest heads and 64-bit floats unless canonical=True (which shortens
    floats): key order is set here."""
    try:
        return cbor2.dumps(_prepare(value))
    except UnicodeEncodeError:
        raise _not_text(value) from None


# --- DAG-JSON ---------------------------------------------------------------------------


def _refuse_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON (NaN and Infinity are not allowed)")


def _unique(pairs: list[tuple[str, object]]) -> dict[str, object]:
    out = dict(pairs)
    if len(out) != len(pairs):
        dup = next(k for i, (k, _) in enumerate(pairs) if k in dict(pairs[:i]))
        raise ValueError(f"duplicate map key {dup!r}")
    return out


# What _from_json keeps as json.loads made it (an int too, within the DAG-JSON range; a
# float NaN or infinite is refused where it is encoded), without a call inside a container
_JSON_AS_IS = frozenset({str, float, bool, type(None)})


def _from_json(v: object, links: bool, depth: int = 0) -> object:
    if depth > MAX_DEPTH:
        raise ValueError(f"nested more than {MAX_DEPTH} deep")
    if isinstance(v, dict):
        if links and "/" in v and len(v) == 1:
            inner = v["/"]
            if isinstance(inner, str):
                try:
                    return parse_cid(inner)
                except BadCID as exc:
                    raise ValueError(f"a link {{\"/\": {inner[:80]!r}}} is not a CID") from exc
            if isinstance(inner, dict) and set(inner) == {"bytes"} \
                    and isinstance(inner["bytes"], str):
                text = inner["bytes"]
                try:
                    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
                except ValueError as exc:
                    raise ValueError("bytes {\"/\": {\"bytes\": ...}} are not base64") from exc
        return {k: x if type(x) in _JSON_AS_IS or (
                    type(x) is int and _JSON_INT_MIN <= x <= _JSON_INT_MAX)
                else _from_json(x, links, depth + 1) for k, x in v.items()}
    if isinstance(v, list):
        return [x if type(x) in _JSON_AS_IS or (
                    type(x) is int and _JSON_INT_MIN <= x <= _JSON_INT_MAX)
                else _from_json(x, links, depth + 1) for x in v]
    if isinstance(v, int) and not isinstance(v, bool) \
            and not _JSON_INT_MIN <= v <= _JSON_INT_MAX:
        raise ValueError(f"{_show_int(v)} is out of range (64-bit signed in DAG-JSON)")
    return v


def decode_json(data: bytes, where: str = "block", links: bool = True) -> object:
    """The value of a DAG-JSON document ({"/": cid} links and {"/": {"bytes": b64}} bytes;
    plain JSON with links=False); BadDag saying what is wrong."""
    try:
        raw = json.loads(data, object_pairs_hook=_unique, parse_constant=_refuse_constant)
        return _from_json(raw, links)
    except (ValueError, RecursionError) as exc:
        raise BadDag(f"malformed DAG-JSON {where}: {exc}", field="cid") from exc


_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t",
            "\u2028": "\\u2028", "\u2029": "\\u2029"}


def _json_str(s: str) -> str:
    out = ['"']
    for ch in s:
        esc = _ESCAPES.get(ch)
        if esc is not None:
            out.append(esc)
        elif ch < " ":
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _json_float(f: float) -> str:
    """Go's encoding of a float64 in JSON: shortest digits, exponent form only below 1e-6 or
    from 1e21 (e+21, e-7), and no trailing `.0`."""
    if f == 0:
        return "-0" if math.copysign(1.0, f) < 0 else "0"
    if abs(f) < 1e-6 or abs(f) >= 1e21:
        mantissa, _, exp = repr(f).partition("e")
        return f"{mantissa}e{exp[0]}{exp[1:].lstrip('0') or '0'}"
    text = format(Decimal(repr(f)), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def _json_scalar(v: object) -> str | None:
    """The DAG-JSON text of a scalar, bytes or a link; None for a list or map."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            raise BadDag("NaN and Infinity cannot be encoded in DAG-JSON", field="body")
        return _json_float(v)
    if isinstance(v, str):
        return _json_str(v)
    if isinstance(v, bytes):
        b64 = base64.b64encode(v).decode().rstrip("=")
        return f'{{"/":{{"bytes":"{b64}"}}}}'
    if isinstance(v, Cid):
        return f'{{"/":"{v}"}}'
    if isinstance(v, (list, dict)):
        return None
    raise BadDag(f"{type(v).__name__} values cannot be encoded in DAG-JSON", field="body")


def _json_parts(v: object, out: list[str], depth: int = 0) -> None:
    if depth > MAX_DEPTH:
        raise BadDag(f"a value nested more than {MAX_DEPTH} deep", field="body")
    text = _json_scalar(v)
    if text is not None:
        out.append(text)
    elif isinstance(v, list):
        out.append("[")
        for i, x in enumerate(v):
            out.append("," if i else "")
            _json_parts(x, out, depth + 1)
        out.append("]")
    elif isinstance(v, dict):
        out.append("{")
        for i, k in enumerate(sorted(v, key=lambda s: str(s).encode("utf-8"))):
            out.append(("," if i else "") + _json_str(str(k)) + ":")
            _json_parts(v[k], out, depth + 1)
        out.append("}")


def encode_json(value: object) -> bytes:
    """The DAG-JSON encoding of `value` as Kubo 0.39 writes it; BadDag if not encodable."""
    out: list[str] = []
    try:
        _json_parts(value, out)
        return "".join(out).encode("utf-8")
    except UnicodeEncodeError:
        raise _not_text(value) from None


# --- blocks ------------------------------------------------------------------------------


def decode(c: Cid, data: bytes) -> object:
    """The value of a DAG-CBOR (checked strictly) or DAG-JSON block, links as Cid; BadDag if
    malformed."""
    if c.codec == DAG_CBOR:
        return check_cbor(data, f"block {c}")
    return decode_json(data, f"block {c}")


def check_block(c: Cid, data: bytes) -> None:
    """BadDag if `c` is a DAG-CBOR block that breaks the DAG-CBOR rules; other blocks pass."""
    if c.codec == DAG_CBOR:
        check_cbor(data, f"block {c}")


def convert(c: Cid, data: bytes, codec: str) -> bytes:
    """Block `c` re-encoded in `codec` (dag-cbor or dag-json); the bytes as they are if it is
    already of that codec."""
    if c.codec == codec:
        return data
    value = decode(c, data)
    return encode_cbor(value) if codec == DAG_CBOR else encode_json(value)


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


def link_keys(c: Cid, data: bytes) -> list[Cid]:
    """gc's links of a DAG-CBOR or DAG-JSON block (peer.ipfs.dag.link_keys), in document
    order: each link as an earlier release read it (`lenient`: a digest shorter than its hash
    function's, refused since c3c9d56, too); a link that names no CID even so is skipped, not
    the others, and the block need not be canonical. [] if it does not decode at all."""
    try:
        if c.codec == DAG_CBOR:
            value = cbor2.loads(data, tag_hook=_key_hook, semantic_decoders=_SEMANTIC,
                                max_depth=MAX_DEPTH + 1)
        else:
            value = json.loads(data, object_hook=_json_key)
    except (cbor2.CBORDecodeError, ValueError, TypeError, OverflowError, RecursionError):
        return []
    return list(_links(value))


def _key_hook(tag: cbor2.CBORTag, immutable: bool) -> object:
    """`link_keys`' reading of a tag: a tag 42 as its CID, leniently; any other, None."""
    raw = tag.value
    if tag.tag == _CID_TAG and isinstance(raw, bytes) and raw[:1] == b"\x00":
        with contextlib.suppress(BadCID):
            return cid_from_bytes(raw[1:], lenient=True)
    return None


def _json_key(obj: dict[str, object]) -> object:
    """`link_keys`' reading of a JSON object: a link {"/": cid} as its CID, leniently."""
    inner = obj.get("/") if len(obj) == 1 else None
    if isinstance(inner, str):
        with contextlib.suppress(BadCID):
            return parse_cid(inner, lenient=True)
    return obj


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
