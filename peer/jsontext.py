"""JSON text from the network (request bodies, pipelines) decoded so that every malformed
input is a BanzaiError naming what it is and where: never a UnicodeDecodeError, a
RecursionError (nesting deeper than the stack) or a ValueError (an integer over Python's
digit limit); and the bounds every JSON value that enters a peer keeps (MAX_DEPTH levels of
nesting, no lone surrogate), checked by iterative walks. Pure functions, any thread."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from typing import Any

from peer.errors import ArgError, BanzaiError

# The deepest nesting of a JSON value a peer takes in (an HTTP body, a pipeline, an event's
# payload: each part of a TURN), counted as `nesting` does. Part of the protocol: a payload
# deeper than this is refused by every peer of this release. The deepest a peer writes is 7
# (a TURN's part); what it takes in is encoded again later (a reply, a snapshot, a hash) at
# a deeper stack, where a value near Python's recursion limit (1000) would raise.
MAX_DEPTH = 64
# What a peer reads back of its own derived texts (the job index's records wrap a payload in
# a job's view): read with twice the bound, so that every record of a valid job reads back.
MAX_STORED_DEPTH = 2 * MAX_DEPTH

_LEAF = frozenset({str, int, float, bool, type(None)})
_CONTAINERS = (dict, list, tuple)  # as json.dumps encodes them (subclasses too)
_SURROGATE = re.compile("[\ud800-\udfff]")
# A JSON escape of a surrogate (\ud800-\udfff): a lone one decodes to a lone surrogate
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
JsonPath = list[str | int]  # keys and indexes from the root to a place in a value


# The compact JSON text a peer stores (an event's payload in the log, the job index's texts):
# json.dumps(v, separators=(",", ":")) byte for byte, without making an encoder per call (dumps
# does, given options: most of what a short value's encoding costs).
_COMPACT = json.JSONEncoder(separators=(",", ":"))


def compact(value: Any) -> str:
    """`json.dumps(value, separators=(",", ":"))`, the same text and the same errors."""
    return _COMPACT.encode(value)


def nesting(value: Any, limit: int = MAX_DEPTH) -> int:
    """How deeply `value` nests as JSON: a scalar 0, a list or object 1 + its deepest
    element's; counted up to `limit` + 1 (any value deeper than `limit` gives `limit` + 1).
    Level by level, without recursion: any depth, and each container is visited once."""
    level = [value] if type(value) not in _LEAF and isinstance(value, _CONTAINERS) else []
    depth = 0
    while level:
        if depth == limit:
            return limit + 1
        depth += 1
        nxt: list[Any] = []
        for x in level:
            for c in x.values() if isinstance(x, dict) else x:
                if type(c) not in _LEAF and isinstance(c, _CONTAINERS):
                    nxt.append(c)
        level = nxt
    return depth


def nesting_and_ascii(value: Any, limit: int = MAX_DEPTH) -> tuple[int, bool]:
    """`nesting(value, limit)` and whether every string of `value` (an object's keys too)
    is ASCII (then none holds a lone surrogate: `lone_surrogate` need not look), in the
    one walk."""
    level = [value] if type(value) not in _LEAF and isinstance(value, _CONTAINERS) else []
    plain = type(value) is not str or value.isascii()
    depth = 0
    while level:
        if depth == limit:
            return limit + 1, plain
        depth += 1
        nxt: list[Any] = []
        for x in level:
            elements: Any = x
            if isinstance(x, dict):
                if plain:
                    try:
                        plain = "".join(x).isascii()
                    except TypeError:  # a key that is not a string (a local value)
                        plain = False
                elements = x.values()
            for c in elements:
                t = type(c)
                if t is str:
                    if plain and not c.isascii():
                        plain = False
                elif t not in _LEAF and isinstance(c, _CONTAINERS):
                    nxt.append(c)
        level = nxt
    return depth, plain


def _items(x: Any) -> Iterator[tuple[str | int, Any]]:
    return iter(x.items()) if isinstance(x, dict) else enumerate(x)


def _walk(value: Any) -> Iterator[tuple[JsonPath, str | int, Any]]:
    """(path to its container, key or index, element) of every element below the container
    `value`, depth first, a container entered just after it is yielded. Iterative: any depth.
    The path is one list, changed as the walk goes on: copy it to keep it."""
    path: JsonPath = []
    stack = [_items(value)]
    while stack:
        for k, c in stack[-1]:
            yield path, k, c
            if type(c) not in _LEAF and isinstance(c, _CONTAINERS):
                path.append(k)
                stack.append(_items(c))
                break
        else:
            stack.pop()
            if path:
                path.pop()


def deep_path(value: Any, limit: int = MAX_DEPTH) -> JsonPath | None:
    """The path to a container at level `limit` + 1 of `value` (None if it nests at most
    `limit` levels): the first one depth first."""
    if type(value) in _LEAF or not isinstance(value, _CONTAINERS):
        return None
    if limit <= 0:
        return []
    for path, k, c in _walk(value):
        if len(path) + 1 == limit and type(c) not in _LEAF and isinstance(c, _CONTAINERS):
            return [*path, k]
    return None


def is_text(s: str) -> bool:
    """Whether `s` holds no lone surrogate (a `\\ud800` escape alone decodes to one): such a
    string is valid JSON but not text, and fails where it is encoded as UTF-8 (an SQLite
    TEXT column, a hash of a key, a file name)."""
    return s.isascii() or _SURROGATE.search(s) is None


def lone_surrogate(value: Any) -> JsonPath | None:
    """The path to a string (or an object's key) of `value` that holds a lone surrogate
    (U+D800 to U+DFFF: what a JSON escape such as \\ud800 decodes to alone; not text, UTF-8
    cannot encode it); None if there is none. Iterative, any depth."""
    if isinstance(value, str):
        return [] if _SURROGATE.search(value) else None
    if type(value) in _LEAF or not isinstance(value, _CONTAINERS):
        return None
    for path, k, c in _walk(value):
        if any(type(x) is str and not x.isascii() and _SURROGATE.search(x) for x in (k, c)):
            return [*path, k]
    return None


def wide_int(value: Any, bits: int) -> tuple[JsonPath, int, bool] | None:
    """The first integer of `value` (depth first; an object's keys too: YAML's may be
    integers) wider than `bits` bits (its magnitude at 2**bits or more): (the path to it, or
    to the object whose key it is; its width; whether it is a key), None if there is none.
    Iterative, any depth. Python's digit limit bounds integers read from decimal text only
    (YAML reads 0x..., 0b... and 1:2:3 of any size), and str() of a wider one raises."""
    if type(value) is int:
        return ([], value.bit_length(), False) if value.bit_length() > bits else None
    if type(value) in _LEAF or not isinstance(value, _CONTAINERS):
        return None
    for path, k, c in _walk(value):
        if type(k) is int and k.bit_length() > bits:  # a key (a list's index is far smaller)
            return list(path), k.bit_length(), True
        if type(c) is int and c.bit_length() > bits:
            return [*path, k], c.bit_length(), False
    return None


def show_path(path: Sequence[str | int], prefix: str = "", most: int = 6) -> str:
    """`path` as a field name (`tasks[0].params.x`), after `prefix`; cut after `most` steps."""
    out = prefix
    for k in path[:most]:
        out += f"[{k}]" if isinstance(k, int) else (f".{k}" if out else str(k))
    if len(path) > most:
        out += "..."
    return out or "the top level"


def check(value: Any, what: str, *, error: type[BanzaiError] = ArgError,
          field: str | None = None, text: str | None = None, limit: int = MAX_DEPTH) -> None:
    """`error` if `value` (decoded from `what`) nests deeper than `limit` or holds a lone
    surrogate, naming the place (as `field` when given, else the place itself). `text`:
    the JSON text it was decoded from, which lets short texts and texts without a
    surrogate escape skip the walks."""
    plain: bool | None = None
    if text is None:
        depth, plain = nesting_and_ascii(value, limit)
    elif len(text) > 2 * limit:  # n characters nest at most n/2 levels
        depth = nesting(value, limit)
    else:
        depth = 0
    if depth > limit:
        path = deep_path(value, limit)
        if path is not None:
            raise error(f"{what} is nested too deeply: deeper than {limit} levels (at "
                        f"{show_path(path)})", field=field or show_path(path[:6]))
    if plain is False or (text is not None and (_SURROGATE_ESCAPE.search(text) or (
            not text.isascii() and _SURROGATE.search(text)))):
        path = lone_surrogate(value)
        if path is not None:
            raise error(f"{what}: {show_path(path)} holds a lone surrogate (such as \\ud800), "
                        "which is not text", field=field or show_path(path[:6]))


def text(data: bytes | str, what: str, *, error: type[BanzaiError] = ArgError,
         field: str | None = None) -> str:
    """`data` as text: UTF-8, a byte order mark dropped; `error` if it is not UTF-8."""
    if isinstance(data, str):
        return data.removeprefix("\ufeff")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise error(f"{what} is not UTF-8 text (bad byte at offset {exc.start})",
                    field=field) from None


def parse(text: str, *, error: type[BanzaiError] = ArgError, field: str | None = None,
          sharing: bool = False) -> Any:
    """json.loads(text), a syntax error or an integer over the digit limit as `error`.
    RecursionError is left to the caller (a pipeline's sniffing does not retry as YAML what
    is too deep as JSON); `loads` turns it into `error`. The bounds are `check`'s.
    `sharing`: as `loads_within`'s (a big text, in a worker thread)."""
    try:
        return json.loads(text, object_pairs_hook=_object if sharing else None)
    except json.JSONDecodeError as exc:
        raise error(f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}",
                    field=field) from None
    except ValueError as exc:  # e.g. an integer over the digit limit
        raise error(f"invalid JSON: {exc}", field=field) from None


def loads(data: bytes | str, what: str, *, error: type[BanzaiError] = ArgError,
          field: str | None = None, limit: int = MAX_DEPTH, sharing: bool = False) -> Any:
    """`data` (e.g. a request's body, `what`) as JSON within the bounds (`check`, `limit`
    levels); every malformed input is `error` with `field`. `sharing`: as `loads_within`'s
    (a big text, in a worker thread)."""
    s = text(data, what, error=error, field=field)
    try:
        value = parse(s, error=error, field=field, sharing=sharing)
    except error as e:  # (named: the same error for any input)
        raise error(f"{what}: {e.message}", field=field) from None
    except RecursionError:
        raise error(f"{what} is nested too deeply: deeper than {limit} levels",
                    field=field) from None
    check(value, what, error=error, field=field, text=s, limit=limit)
    return value


def pieces(value: Any, depth: int, *, sort_keys: bool = False) -> Iterator[bytes]:
    """`json.dumps(value, separators=(",", ":"), sort_keys=sort_keys).encode()` in pieces:
    its lists and objects `depth` levels deep one member at a time, and an iterator there as
    a list of its items, read as they are encoded (never all in memory). json's C encoder
    holds the GIL for a whole call (a big snapshot's job records: half a second, the event
    loop's thread waiting); between two pieces another thread runs."""
    if depth and (type(value) is list or isinstance(value, Iterator)):
        yield b"["
        for i, x in enumerate(value):
            if i:
                yield b","
            yield from pieces(x, depth - 1, sort_keys=sort_keys)
        yield b"]"
    elif depth and type(value) is dict and all(type(k) is str for k in value):
        yield b"{"
        for i, k in enumerate(sorted(value) if sort_keys else value):
            yield (b"," if i else b"") + json.dumps(k).encode() + b":"
            yield from pieces(value[k], depth - 1, sort_keys=sort_keys)
        yield b"}"
    else:
        yield json.dumps(value, separators=(",", ":"), sort_keys=sort_keys).encode()


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    return dict(pairs)  # (Python code: another thread may take the GIL here)


def loads_within(data: bytes | bytearray | str, limit: int = MAX_STORED_DEPTH, *,
                 sharing: bool = False) -> Any:
    """json.loads of a text read back (a data dir's row, a peer's snapshot row, content a
    member names); ValueError if it is not JSON or nests deeper than `limit` (an earlier
    release wrote what it took) or is not a text at all (e.g. a number in a column of no
    type: a hand-made or edited file). `sharing` (a big text, in a worker thread): json's C
    decoder holds the GIL for a whole call, so the event loop waits for it in a thread as
    on the loop; a hook of Python code at each object lets the GIL pass between them."""
    if not isinstance(data, str | bytes | bytearray):
        raise ValueError(f"{type(data).__name__} {data!r:.40} is not a JSON text")
    try:
        value = json.loads(data, object_pairs_hook=_object if sharing else None)
    except RecursionError:
        raise ValueError(f"nested deeper than {limit} levels") from None
    if len(data) > 2 * limit and nesting(value, limit) > limit:
        raise ValueError(f"nested deeper than {limit} levels")
    return value


__all__ = ["MAX_DEPTH", "MAX_STORED_DEPTH", "check", "deep_path", "is_text", "loads",
           "loads_within", "lone_surrogate", "nesting", "nesting_and_ascii", "parse", "show_path",
           "text", "wide_int"]
