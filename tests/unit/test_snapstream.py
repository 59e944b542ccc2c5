"""Snapshot streams (peer.log.snapstream): rows survive any chunking of the body, the trailer
signs exactly the row lines, and malformed or over-long input is refused."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from peer.cids import sha256_cid
from peer.log.signing import Identity, verify
from peer.log.snapstream import (
    MAX_ROWS_PER_LINE,
    Mismatch,
    Spool,
    StreamError,
    Trailer,
    against,
    job_digest,
    read_rows,
    row_lines,
)
from tests.helpers import spooled

ME = Identity.generate()
HEAD = b'{"events":[],"batches":[]}\n'

text = st.text(max_size=12)
nat = st.integers(min_value=0, max_value=2**62)
obj = st.dictionaries(text, st.one_of(text, nat, st.lists(text, max_size=3)), max_size=4)
facts = obj.filter(lambda d: not d.keys() & {"finished_s", "outputs", "logs"})  # (checked:
# check_facts refuses such keys of other types, e.g. {"logs": ""}, found by hypothesis)
job_rows = st.lists(st.tuples(text, nat, text, nat, nat, text, obj.map(json.dumps),
                              obj.map(json.dumps), facts.map(json.dumps)), max_size=5)
cache_rows = st.lists(st.tuples(st.sampled_from([0, 1]), text, obj.map(json.dumps), nat, text,
                                nat), max_size=5)
cid = st.binary(max_size=8).map(lambda b: str(sha256_cid(b, "raw", 1)))
provider_rows = st.lists(st.tuples(cid, text.filter(bool)), max_size=5)


def _body(rows: list[tuple[str, list[tuple[Any, ...]]]], heads: dict[str, int] | None = None,
          floors: dict[str, int] | None = None) -> bytes:
    import hashlib

    lines = list(row_lines(rows))
    sha = hashlib.sha256(b"".join(lines)).digest()
    n = sum(len(r) for _, r in rows)
    return HEAD + b"".join(lines) + Trailer.make(ME, "signer", None, heads or {"o": 3},
                                                 floors or {"o": 2}, n, sha)


def _spool(body: bytes, cuts: list[int] | None = None) -> tuple[Spool, io.BytesIO]:
    return spooled(lambda out: Spool(out, max_bytes=1 << 30), body, cuts)


def _read(out: io.BytesIO) -> list[tuple[str, list[tuple[Any, ...]]]]:
    return list(read_rows(io.BytesIO(out.getvalue())))


@given(job_rows, cache_rows, provider_rows, st.lists(st.integers(0, 4000), max_size=6))
def test_rows_survive_any_chunking_and_the_trailer_checks(
        jobs: list[tuple[Any, ...]], cache: list[tuple[Any, ...]],
        providers: list[tuple[Any, ...]], cuts: list[int]) -> None:
    rows = [(t, r) for t, r in (("j", jobs), ("c", cache), ("p", providers)) if r]
    spool, out = _spool(_body(rows), cuts)
    assert spool.head == HEAD[:-1]
    got = _read(out)
    assert [(t, r) for t, rs in got for r in rs] == [(t, r) for t, rs in rows for r in rs]
    tr = spool.trailer()
    assert tr.heads == {"o": 3} and tr.floors == {"o": 2}
    assert tr.rows == len(jobs) + len(cache) + len(providers)
    assert verify(tr.key, tr.sig, tr.signed_digest())


def test_a_changed_row_byte_breaks_the_signature() -> None:
    body = _body([("p", [("bafy", "peer1")])])
    spool, _ = _spool(body.replace(b"peer1", b"peer2"))
    tr = spool.trailer()
    assert not verify(tr.key, tr.sig, tr.signed_digest())


def test_lines_are_split_by_rows() -> None:
    rows = [("p", [(f"c{i}", "o") for i in range(MAX_ROWS_PER_LINE + 1)])]
    assert len(list(row_lines(rows))) == 2


@pytest.mark.parametrize("line", [
    b'["j",[["job",1,"o",1,1,"done","not json","{}","{}"]]]',
    b'["j",[["job",1,"o",1,1,"done","{}","{}","[]"]]]',  # facts that are not an object
    b'["j",[["job",1,"o",1,1,"done","{}",{},"{}"]]]',  # a record that is not a text
    b'["j",[["job",-1,"o",1,1,"done","{}","{}","{}"]]]',
    b'["j",[["job",1,"o",1,1,"done","{}","{}"]]]',
    b'["c",[[2,"k","\\"v\\"",1,"o",1]]]',
    b'["c",[[true,"k","\\"v\\"",1,"o",1]]]',
    b'["c",[[0,"k",{},1,"o",1]]]',
    b'["p",[["c"]]]',
    b'["x",[]]',
    b'["p"]',
    b'{"p":[]}',
    b"not json",
])
def test_malformed_rows_are_refused(line: bytes) -> None:
    with pytest.raises(StreamError):
        list(read_rows([line]))


def test_a_body_without_its_trailer_or_too_long_is_refused() -> None:
    body = _body([("p", [("c", "o")])])
    spool, _ = _spool(body[:body.rfind(b"\n") + 1])
    with pytest.raises(StreamError):
        spool.trailer()
    spool = Spool(io.BytesIO(), max_bytes=10)
    with pytest.raises(StreamError):
        spool.feed(body)
    with pytest.raises(StreamError):
        Trailer.parse(b'{"v":2,"signer":"s","key":"00","heads":{"o":-1},"floors":{},'
                      b'"rows":0,"sig":"00"}', b"")


def test_a_second_members_digests_compare_the_jobs_both_hold() -> None:
    row = ("job1", 5, "o", 1, 9, "done", "{}", "{}", json.dumps({"outputs": ["b", "a"]}))
    other = ("job2", 6, "o", 2, 9, "done", "{}", "{}", "{}")
    # the second holds job1 (same outputs in another order) and a job the snapshot lacks
    same = {"job1": job_digest((*row[:8], json.dumps({"outputs": ["a", "b"]}))), "job3": "x"}
    assert list(against([("j", [row, other])], same)) == [("j", [row, other])]
    assert list(against([("j", [row])], None)) == [("j", [row])]
    changed = {"job1": job_digest((*row[:5], "failed", *row[6:]))}
    with pytest.raises(Mismatch):
        list(against([("j", [row])], changed))


def test_a_malformed_record_is_stored_and_its_view_is_a_data_error() -> None:
    import sqlite3

    from peer.errors import DataError
    from peer.log.jobindex import JobIndex

    index = JobIndex(sqlite3.connect(":memory:", isolation_level=None))
    index.put_batches(read_rows([b'["j",[["bad",1,"o",1,1,"done","{}","{not json","{}"]]]']))
    assert "bad" in index  # (listed, from its summary: not said absent)
    with pytest.raises(DataError, match=r"row of 'bad' does not read back \(its record"):
        index.record("bad")
    index.put_batches(read_rows([b'["c",[[0,"k","{bad",1,"o",1]]]']))
    assert index.entry(0, "k") is None and list(index.entries()) == []


def test_a_trailer_nested_past_the_stack_is_a_malformed_trailer() -> None:
    """A member's trailer is read as any input: a RecursionError went out of the catch-up
    task before (the caller catches stream and value errors)."""
    with pytest.raises(StreamError, match="malformed trailer"):
        Trailer.parse(b"[" * 100_000 + b"]" * 100_000, b"")
