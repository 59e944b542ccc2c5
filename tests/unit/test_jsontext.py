"""The walks of peer/jsontext.py against recursive references: `nesting` (the depth bound),
`deep_path` (where it is passed) and `lone_surrogate`, at any depth without recursion; and
`check` / `loads_within`, whose shortcuts (short texts, texts without a surrogate escape)
never change an answer."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from peer import jsontext
from peer.errors import ArgError
from peer.jsontext import (
    MAX_DEPTH,
    MAX_STORED_DEPTH,
    check,
    deep_path,
    loads_within,
    lone_surrogate,
    nesting,
    nesting_and_ascii,
    show_path,
)

SURROGATES = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF, categories=["Cs"])
TEXT = st.text(st.characters() | SURROGATES, max_size=4)
VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | TEXT,
    lambda inner: (st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3)
                   | st.tuples(inner)),
    max_leaves=40)


def ref_depth(v: Any) -> int:
    if isinstance(v, dict):
        return 1 + max((ref_depth(x) for x in v.values()), default=0)
    if isinstance(v, list | tuple):
        return 1 + max((ref_depth(x) for x in v), default=0)
    return 0


def ref_surrogate(v: Any) -> bool:
    def bad(s: str) -> bool:
        try:
            s.encode("utf-8")
        except UnicodeEncodeError:
            return True
        return False
    if isinstance(v, str):
        return bad(v)
    if isinstance(v, dict):
        return any(bad(k) or ref_surrogate(x) for k, x in v.items())
    if isinstance(v, list | tuple):
        return any(ref_surrogate(x) for x in v)
    return False


def ref_ascii(v: Any) -> bool:
    if isinstance(v, str):
        return v.isascii()
    if isinstance(v, dict):
        return all(ref_ascii(k) and ref_ascii(x) for k, x in v.items())
    if isinstance(v, list | tuple):
        return all(ref_ascii(x) for x in v)
    return True


def at(v: Any, path: list[str | int]) -> Any:
    for k in path:
        v = v[k]
    return v


@settings(max_examples=500, deadline=None)
@given(VALUES, st.integers(0, 8))
def test_nesting_and_deep_path_agree_with_the_recursive_reference(v: Any, limit: int) -> None:
    assert nesting(v, limit) == min(ref_depth(v), limit + 1)
    n, plain = nesting_and_ascii(v, limit)
    assert n == nesting(v, limit)
    if n <= limit:  # (a walk cut at the limit may not have seen every string)
        assert plain == ref_ascii(v)
    elif not plain:
        assert not ref_ascii(v)
    path = deep_path(v, limit)
    if ref_depth(v) <= limit:
        assert path is None
    else:  # a container at level limit + 1, reached through `path`
        assert path is not None and len(path) == limit
        assert isinstance(at(v, path), dict | list | tuple)


@settings(max_examples=500, deadline=None)
@given(VALUES)
def test_lone_surrogate_agrees_with_utf8_encoding(v: Any) -> None:
    path = lone_surrogate(v)
    assert (path is not None) == ref_surrogate(v)
    if path:  # a string holding one, or a key holding one (the last step is that key)
        parent, last = at(v, path[:-1]), path[-1]
        bad_key = isinstance(parent, dict) and isinstance(last, str) and ref_surrogate(last)
        assert bad_key or ref_surrogate(parent[last])


@settings(max_examples=300, deadline=None)
@given(VALUES)
def test_check_takes_what_the_bounds_allow_and_names_what_they_do_not(v: Any) -> None:
    text = json.dumps(v)  # (tuples become lists; escapes of surrogates stay escapes)
    value = json.loads(text)
    try:
        check(value, "it", text=text)
        check(value, "it")  # the shortcuts of `text` change no answer
    except ArgError as e:
        assert ref_depth(value) > MAX_DEPTH or ref_surrogate(value)
        assert e.field is not None and e.field in e.message
    else:
        assert ref_depth(value) <= MAX_DEPTH and not ref_surrogate(value)


def test_the_walks_take_any_depth_without_recursion() -> None:
    v: Any = "\ud800"
    for _ in range(200_000):
        v = {"a": [v]}
    assert nesting(v) == MAX_DEPTH + 1 and nesting(v, 10**6) == 400_000
    assert deep_path(v) == ["a", 0] * (MAX_DEPTH // 2)
    path = lone_surrogate(v)
    assert path is not None and len(path) == 400_000
    assert show_path(path) == "a[0].a[0].a[0]..."


@pytest.mark.parametrize(("levels", "ok"), [(MAX_DEPTH, True), (MAX_DEPTH + 1, False)])
def test_loads_reads_a_body_up_to_the_bound(levels: int, ok: bool) -> None:
    body = b"[" * levels + b"]" * levels
    if ok:
        assert nesting(jsontext.loads(body, "the body")) == MAX_DEPTH
    else:
        with pytest.raises(ArgError, match=f"deeper than {MAX_DEPTH} levels"):
            jsontext.loads(body, "the body", field="body")


def test_loads_within_reads_back_up_to_its_limit() -> None:
    assert MAX_STORED_DEPTH >= MAX_DEPTH
    ok = "[" * MAX_STORED_DEPTH + "]" * MAX_STORED_DEPTH
    assert nesting(loads_within(ok), 10**4) == MAX_STORED_DEPTH
    for levels in (MAX_STORED_DEPTH + 1, 100_000):  # over it; over the stack
        with pytest.raises(ValueError, match="nested deeper"):
            loads_within("[" * levels + "]" * levels)
    with pytest.raises(ValueError):
        loads_within("{not json")


@settings(max_examples=300)
@given(VALUES, st.integers(0, 4), st.booleans())
def test_pieces_join_to_json_dumps_at_any_depth(v: Any, depth: int, sort_keys: bool) -> None:
    """`pieces` (a snapshot's records encoded a member at a time, the GIL let go between
    them) joins to the one call's bytes: the wire's and the canonical (sorted) encoding."""
    out = b"".join(getattr(jsontext, "pieces", lambda *a, **k: iter(()))(
        v, depth, sort_keys=sort_keys))
    assert out == json.dumps(v, separators=(",", ":"), sort_keys=sort_keys).encode()


@settings(max_examples=300)
@given(VALUES | st.floats() | st.tuples(TEXT, st.integers()))
def test_compact_is_json_dumps_byte_for_byte(v: Any) -> None:
    """`compact` (the one encoder the log and the job index store with) writes what
    `json.dumps(v, separators=(",", ":"))` wrote before it: the stored texts of an event's
    payload and of a job's record do not change (non-ASCII escaped, NaN as NaN)."""
    compact = getattr(jsontext, "compact", None)
    assert compact is not None, "peer.jsontext.compact: missing"
    assert compact(v) == json.dumps(v, separators=(",", ":"))


def test_compact_raises_as_json_dumps() -> None:
    """The same errors: a value that is no JSON (TypeError), a circular one (ValueError)."""
    loop: list[Any] = []
    loop.append(loop)
    for bad, err in ((object(), TypeError), ({1j: 1}, TypeError), (loop, ValueError)):
        with pytest.raises(err):
            json.dumps(bad, separators=(",", ":"))
        with pytest.raises(err):
            jsontext.compact(bad)
