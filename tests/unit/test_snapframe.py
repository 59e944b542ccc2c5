"""Snapshot streams of version 3 (peer.log.snapframe): rows survive any chunking, the trailer
signs exactly the row frames, hostile bytes (truncated, wrong lengths, out-of-range values,
a bad signature, a record that does not match its hash) are refused."""

from __future__ import annotations

import hashlib
import io
import json
import struct
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from peer.cids import sha256_cid
from peer.log.signing import Identity, verify
from peer.log.snapframe import (
    MAGIC,
    MAX_FRAME_BYTES,
    FrameSpool,
    against3,
    cache_frame,
    check_record,
    decode_cache,
    decode_providers,
    frame,
    job_digest3,
    provider_frame,
    read_frames,
    record_sha,
    row_frames,
    thin,
    thin_digest,
)
from peer.log.snapstream import Mismatch, StreamError, Trailer
from tests.helpers import spooled

ME = Identity.generate()
EVENTS = b'{"events":[],"batches":[]}'

text = st.text(st.characters(blacklist_characters="\0", blacklist_categories=("Cs",)),
               max_size=12)
nat = st.integers(min_value=0, max_value=2**62)
obj = st.dictionaries(text, st.one_of(text, nat), max_size=3).map(json.dumps)
sha = st.binary(min_size=32, max_size=32).map(lambda b: b.hex())
thin_rows = st.lists(st.tuples(text, nat, text, nat, nat, text, obj, obj, sha), max_size=4)
cache_rows = st.lists(st.tuples(st.sampled_from([0, 1]), text, text, nat, text.filter(bool),
                                nat), max_size=6)
cid = st.binary(max_size=8).map(lambda b: str(sha256_cid(b, "raw", 1)))
provider_rows = st.lists(st.tuples(cid, text.filter(bool)), max_size=6)
C1, C2 = (str(sha256_cid(s, "raw", 1)) for s in (b"c1", b"c2"))  # (provided CIDs)


def _body(batches: list[tuple[str, list[tuple[Any, ...]]]],
          heads: dict[str, int] | None = None) -> bytes:
    frames = list(row_frames(batches))
    digest = hashlib.sha256(b"".join(frames)).digest()
    n = sum(len(r) for _, r in batches)
    return (MAGIC + frame(b"E", EVENTS) + b"".join(frames)
            + frame(b"T", Trailer.make(ME, "signer", None, heads or {"o": 3}, {"o": 2}, n,
                                       digest, v=3)))


def _spool(body: bytes, cuts: list[int] | None = None) -> tuple[FrameSpool, io.BytesIO]:
    return spooled(lambda out: FrameSpool(out, max_bytes=1 << 30), body, cuts)


def _read(out: io.BytesIO) -> list[tuple[str, list[tuple[Any, ...]]]]:
    return list(read_frames(io.BytesIO(out.getvalue())))


@given(thin_rows, cache_rows, provider_rows, st.lists(st.integers(0, 3000), max_size=6))
def test_rows_survive_any_chunking_and_the_trailer_checks(
        jobs: list[tuple[Any, ...]], cache: list[tuple[Any, ...]],
        providers: list[tuple[Any, ...]], cuts: list[int]) -> None:
    rows = [(t, r) for t, r in (("t", jobs), ("c", cache), ("p", providers)) if r]
    spool, out = _spool(_body(rows), cuts)
    assert spool.head == EVENTS
    got = _read(out)
    assert [(t, r) for t, rs in got for r in rs] == [(t, r) for t, rs in rows for r in rs]
    tr = spool.trailer()
    assert tr.v == 3 and tr.heads == {"o": 3} and tr.floors == {"o": 2}
    assert tr.rows == len(jobs) + len(cache) + len(providers)
    assert verify(tr.key, tr.sig, tr.signed_digest())


def _good() -> bytes:
    s, r, f = '{"id":"j1","tasks":[{"name":"t0"}]}', '{"id":"j1"}', '{"outputs":["b1"]}'
    ts, tf, rsha = thin(s, r, f)
    return _body([("t", [("j1", 1, "o", 1, 2, "done", ts, tf, rsha)]),
                  ("c", [(1, "k1", '"bafy"', 5, "o", 6), (0, "k2", '{"n":1}', 7, "o2", 8)]),
                  ("p", [(C1, "o"), (C2, "o2")])])


def test_a_changed_row_breaks_the_signature() -> None:
    body = _good()
    i = body.index(b"k1")
    spool, _ = _spool(body[:i] + b"k9" + body[i + 2:])
    tr = spool.trailer()
    assert not verify(tr.key, tr.sig, tr.signed_digest())
    spool, _ = _spool(body)
    assert verify(spool.trailer().key, spool.trailer().sig, spool.trailer().signed_digest())


def _frames(body: bytes) -> list[tuple[bytes, bytes]]:
    at, out = len(MAGIC), []
    while at < len(body):
        tag, n = struct.unpack_from(">cI", body, at)
        out.append((tag, body[at + 5:at + 5 + n]))
        at += 5 + n
    return out


def _join(frames: list[tuple[bytes, bytes]]) -> bytes:
    return MAGIC + b"".join(frame(t, p) for t, p in frames)


@pytest.mark.parametrize("cut", [1, 5, 17, 100])
def test_a_truncated_stream_has_no_trailer(cut: int) -> None:
    body = _good()
    spool, _ = _spool(body[:-cut])
    with pytest.raises(StreamError):
        spool.trailer()


@pytest.mark.parametrize("tamper", [
    lambda b: b"BANZAI-SNAPSHOT-2\n" + b[len(MAGIC):],  # another version
    lambda b: MAGIC + frame(b"J", b"[]") + b[len(MAGIC):],  # rows before the events frame
    lambda b: b + frame(b"P", b""),  # after the trailer
    lambda b: MAGIC + frame(b"E", EVENTS) + frame(b"X", b"") + b[len(MAGIC):],  # unknown tag
    lambda b: MAGIC + frame(b"E", EVENTS) + struct.pack(">cI", b"C", MAX_FRAME_BYTES + 1),
])
def test_frames_out_of_place_or_over_their_bound_are_refused(tamper: Any) -> None:
    with pytest.raises(StreamError):
        spool, _ = _spool(tamper(_good()))
        spool.trailer()


def _cache_payload() -> bytes:
    return cache_frame([(1, "k1", '"v1"', 5, "o", 6), (0, "k2", '"v2"', 7, "o", 8)])[5:]


def _section_lengths(payload: bytes) -> list[int]:
    at, out = 0, []
    while at < len(payload):
        (n,) = struct.unpack_from(">I", payload, at)
        out.append(n)
        at += 4 + n
    return out


def _with_section(payload: bytes, i: int, new: bytes) -> bytes:
    at, parts = 0, []
    while at < len(payload):
        (n,) = struct.unpack_from(">I", payload, at)
        parts.append(payload[at + 4:at + 4 + n])
        at += 4 + n
    parts[i] = new
    return b"".join(struct.pack(">I", len(p)) + p for p in parts)


@pytest.mark.parametrize("payload", [
    _cache_payload()[:-3],  # truncated section
    _cache_payload() + b"x",  # bytes after the sections
    _with_section(_cache_payload(), 0, b'{"n":3,"origins":["o"]}'),  # a wrong row count
    _with_section(_cache_payload(), 0, b'{"n":2,"origins":[]}'),
    _with_section(_cache_payload(), 1, b"\x01\x02"),  # a kind out of range
    _with_section(_cache_payload(), 2, struct.pack("<qq", -1, 5)),  # a negative hlc
    _with_section(_cache_payload(), 2, b"\0" * 12),  # a column of the wrong length
    _with_section(_cache_payload(), 4, struct.pack("<II", 0, 1)),  # an origin out of range
    _with_section(_cache_payload(), 5, b"k1\0k2\0k3"),  # a text column of the wrong length
    _with_section(_cache_payload(), 6, b"\xff\0v"),  # not UTF-8
])
def test_a_malformed_cache_frame_is_refused(payload: bytes) -> None:
    with pytest.raises((StreamError, ValueError)):
        decode_cache(payload)
    with pytest.raises(StreamError):
        list(read_frames(io.BytesIO(frame(b"C", payload))))


def test_well_formed_frames_decode() -> None:
    assert decode_cache(_cache_payload()) == [(1, "k1", '"v1"', 5, "o", 6),
                                              (0, "k2", '"v2"', 7, "o", 8)]
    assert decode_providers(provider_frame([(C1, "o"), (C2, "p")])[5:]) == [
        (C1, "o"), (C2, "p")]


@pytest.mark.parametrize("row", [
    ["j1", 1, "o", 1, 2, "done", "{}", "{}", "z" * 64],  # the hash is not hex
    ["j1", 1, "o", 1, 2, "done", "{}", "{}", "ab"],  # nor 64 digits
    ["j1", -1, "o", 1, 2, "done", "{}", "{}", "a" * 64],
    ["j1", 1, "o", 1, 2, "done", "[]", "{}", "a" * 64],  # a summary that is not an object
    ["j1", 1, "o", 1, 2, "done", "{}", "{}"],
])
def test_a_malformed_thin_row_is_refused(row: list[Any]) -> None:
    with pytest.raises(StreamError):
        list(read_frames(io.BytesIO(frame(b"J", json.dumps([row]).encode()))))


@pytest.mark.parametrize("tag", [b"J", b"P"])
def test_json_nested_past_the_recursion_limit_in_a_spool_is_refused(tag: bytes) -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    payload = deep if tag == b"J" else b"".join(
        struct.pack(">I", len(p)) + p for p in (deep, b"", b""))
    with pytest.raises(StreamError, match="a malformed frame: maximum recursion depth"):
        list(read_frames(io.BytesIO(frame(tag, payload))))


def test_a_frame_cut_short_in_the_spool_is_refused() -> None:
    f = frame(b"P", provider_frame([(C1, "o")])[5:])
    with pytest.raises(StreamError):
        list(read_frames(io.BytesIO(f[:-1])))
    with pytest.raises(StreamError):
        list(read_frames(io.BytesIO(f[:3])))


def test_a_text_with_a_nul_is_left_out_by_the_sender() -> None:
    rows = decode_cache(cache_frame([(1, "k\0x", '"v"', 1, "o", 1), (1, "k", '"v"', 1, "o", 1)])
                        [5:])
    assert rows == [(1, "k", '"v"', 1, "o", 1)]
    assert cache_frame([(1, "k", '"v\0"', 1, "o", 1)]) == b""
    assert decode_providers(provider_frame([(C1 + "\0", "o"), (C1, "o")])[5:]) == [(C1, "o")]


def test_a_record_is_taken_only_if_it_hashes_to_its_thin_row() -> None:
    s, r, f = '{"id":"j1","tasks":[]}', '{"id":"j1","workflow":{}}', '{"outputs":["b"]}'
    _, _, h = thin(s, r, f)
    assert h == record_sha(s, r, f)
    assert check_record(h, [s, r, f]) == (s, r, f)
    with pytest.raises(StreamError, match="hash"):
        check_record(h, [s, r.replace("j1", "j2"), f])
    with pytest.raises(StreamError, match="hash"):
        check_record(h, [f, r, s])
    with pytest.raises(StreamError):
        check_record(h, [s, r])
    bad = '["not an object"]'
    with pytest.raises(StreamError, match="object"):
        check_record(record_sha(s, bad, f), [s, bad, f])


def test_a_records_texts_are_parsed_letting_the_event_loop_run(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """(Session 37's list.) check_record runs in a worker thread on texts of up to 256 MiB:
    parsed without `sharing`, json's C decoder held the GIL, and the loop, for each whole
    text, where the answer around them was parsed with it."""
    from peer.log import snapframe

    calls: list[bool] = []
    real = snapframe.loads_within

    def spy(data: str, *args: Any, sharing: bool = False, **kw: Any) -> Any:
        calls.append(sharing)
        return real(data, *args, sharing=sharing, **kw)

    monkeypatch.setattr(snapframe, "loads_within", spy)
    s, r, f = '{"id":"j1","tasks":[]}', '{"id":"j1","workflow":{}}', '{"outputs":["b"]}'
    assert check_record(record_sha(s, r, f), [s, r, f]) == (s, r, f)
    assert calls == [True, True, True]


def test_a_thin_row_keeps_the_list_entry_and_the_outputs_digest() -> None:
    s = json.dumps({"id": "j1", "state": "done", "tasks": [{"name": "a"}, {"name": "b"}],
                    "outputs": {"a": "b1"}})
    ts, tf, _ = thin(s, "{}", json.dumps({"finished_s": 3.5, "outputs": ["b2", "b1"]}))
    assert json.loads(ts) == {"id": "j1", "state": "done", "tasks": [], "outputs": {},
                              "partial": True, "n_tasks": 2}
    assert json.loads(tf)["finished_s"] == 3.5
    row = ("j1", 1, "o", 2, 3, "done", ts, tf, "a" * 64)
    _, tf2, _ = thin(s, "{}", json.dumps({"finished_s": 3.5, "outputs": ["b1", "b2"]}))
    assert thin_digest(row) == job_digest3("j1", 1, "o", 2, 3, "done",
                                           json.loads(tf2)["outputs_sha"])
    assert list(against3([("t", [row])], {"j1": thin_digest(row), "other": "x"}))
    with pytest.raises(Mismatch):
        list(against3([("t", [row])], {"j1": "0" * 32}))
