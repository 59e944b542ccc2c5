"""Index rows read back as hostile input, past their types: a tombstone, a thin row's hash,
a cache entry's key, a record of another JSON type than an object, a record that makes no
thin row. Each is written into a real file with the sqlite3 module behind the peer's back
(a text that is not UTF-8 as CAST(x AS TEXT), a blob, a text of another shape), then read
the way the peer does: the row is left out (or, a tombstone, kept) with one log line, never
turned into a text such as "b'...'", and the others are read. A provider row must hold a
CID the project's parser takes and a peer id, at each read, sender and receiver."""

from __future__ import annotations

import json
import logging
import sqlite3
from itertools import islice
from pathlib import Path
from typing import Any

import pytest

from peer.cids import sha256_cid
from peer.errors import DataError
from peer.log import Event, EventLog, EventType
from peer.log.jobindex import (
    ITEM,
    OUTPUT,
    UNKNOWN_ORDER,
    CacheEntry,
    JobIndex,
    JobRecord,
    raw_rows,
    read_outputs,
    read_provided,
    thin_rows,
)
from peer.log.snapframe import decode_providers, provider_frame
from peer.log.snapstream import StreamError, read_rows, row_lines
from peer.log.sqlite import connect
from tests.unit.test_datadir_rows import write

A = "shape000000000000000"
BAD = b"\xff\xfeA\x80"  # not UTF-8


def _record(job: str, i: int) -> JobRecord:
    return JobRecord(job, (1000 + i, A, i + 1), 2000 + i, "done", {"job": job, "tasks": []},
                     {"job": job, "tasks": []}, ((A, i + 1),),
                     {"finished_s": 1.0, "outputs": [], "logs": []})


def _scan(read: Any, size: int) -> tuple[list[Any], str | bytes]:
    """The keys a slice reader (`output_slice`, `item_slice`) gives from the start, `size` a
    slice, until it says it starts over (at most 10 slices), and where it ended."""
    seen: list[Any] = []
    after: str | bytes = ""
    for _step in range(10):
        rows, after = read(after, size)
        seen += [r.key for r in rows]
        if after == "":
            break
    return seen, after


@pytest.fixture
def opened(tmp_path: Path) -> Any:
    """(path, open): `open()` gives a JobIndex on the log file at `path` (closed after)."""
    path = tmp_path / "events.sqlite"
    logs: list[EventLog] = []

    def open_index() -> JobIndex:
        log = EventLog(path)
        logs.append(log)
        return JobIndex(log.db)

    yield path, open_index
    for log in logs:
        log.close()


def _warned(caplog: pytest.LogCaptureFixture) -> list[str]:
    got = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(got) == len(set(got))  # (each once)
    return got


# -- a tombstone: never left out (the deleted job would come back) ---------------------------


@pytest.mark.parametrize(("column", "value"), [
    ("origin", "CAST(x'ff' AS TEXT)"), ("hlc", "x'0102'"), ("seq", "'soon'"),
    ("hlc", "-1")])
def test_a_tombstone_whose_order_does_not_read_back_keeps_its_job_deleted(
        opened: Any, column: str, value: str, caplog: pytest.LogCaptureFixture) -> None:
    path, open_index = opened
    index = open_index()
    index.put_deleted([("gone", (5000, A, 7)), ("also", (5001, A, 8))])
    write(path, f"UPDATE job_deleted SET {column} = {value} WHERE job = 'gone'")
    index = open_index()
    with caplog.at_level(logging.WARNING):
        for _ in range(2):
            assert index.tombstone("gone") == UNKNOWN_ORDER  # deleted; its order unknown
            assert index.tombstone("also") == (5001, A, 8)
            assert index.tomb_rows("gone") is None  # (kept, never forgotten)
    assert any("the tombstone of 'gone' is kept" in m for m in _warned(caplog))


# -- an events row's key (the inline marker's reads), a thin row's outputs hash -------------


@pytest.mark.parametrize(("column", "value"), [
    ("origin", "CAST(x'ff' AS TEXT)"), ("origin", "x'41'"), ("seq", "'x'"), ("seq", "1.5"),
    ("seq", "x'3132'")])
def test_an_events_row_whose_key_does_not_read_back_is_no_key(
        opened: Any, column: str, value: str) -> None:
    """The inline marker's reads of the log (`key_at`, `keys_after`) made "b'...'" texts of
    a text that is not UTF-8 and raised at a seq that is not an integer (int('x')): such a
    row (damaged while the peer runs; the next start quarantines it) has no key."""
    path, _ = opened
    log = EventLog(path)
    try:
        log.append([Event(A, s, 1000 + s, EventType.PROVIDE, {"cids": [CIDS[0]]})
                    for s in (1, 2, 3)])
        write(path, f"UPDATE events SET {column} = {value} WHERE seq = 2")
        rowid = log.db.execute("SELECT rowid FROM events WHERE hlc = 1002").fetchone()[0]
        assert log.key_at(rowid) is None and log.key_at(rowid - 1) == (A, 1)
        assert log.keys_after(0) == {(A, 1), (A, 3)}
    finally:
        log.close()


@pytest.mark.parametrize("osha", [5, None, [1], "b'\\xff'", "g" * 32])
def test_a_thin_rows_outputs_hash_that_is_no_hash_is_left_out_of_the_digests(
        opened: Any, osha: Any, caplog: pytest.LogCaptureFixture) -> None:
    """The digests of a version 3 snapshot (`thin_digests`) hashed str() of a thin row's
    outputs hash, whatever it was ("5", "None"): such a row is left out, logged once."""
    path, open_index = opened
    index = open_index()
    index.put([_record("job00", 0), _record("job01", 1)], (), ())
    facts = json.dumps({"finished_s": 1.0, "outputs_sha": osha})
    write(path, "UPDATE job_thin SET facts = ? WHERE job = 'job00'", (facts,))
    index = open_index()
    with caplog.at_level(logging.WARNING):
        for _ in range(2):
            assert list(index.thin_digests(lambda *a: repr(a))) == ["job01"]
    assert any("'job00'" in m and "outputs_sha" in m for m in _warned(caplog))


# -- a thin row's hash -------------------------------------------------------------------


@pytest.mark.parametrize("value", ["CAST(x'ff' AS TEXT)", "x'00'", "'b''abc'''", "42"])
def test_a_thin_rows_hash_that_does_not_read_back_is_a_data_error(
        opened: Any, value: str, caplog: pytest.LogCaptureFixture) -> None:
    """Not turned into a text no member's answer matches (the fetch blamed each member),
    nor read as absent (the API answered 404 while the list showed the job): a DataError
    naming the file and the job, as `JobIndex.record`'s (503)."""
    path, open_index = opened
    index = open_index()
    index.put([_record(f"job{i}", i) for i in range(2)], (), ())
    write(path, "UPDATE job_index SET record = ''")  # (thin rows: records not fetched)
    write(path, f"UPDATE job_thin SET sha = {value} WHERE job = 'job0'")
    index = open_index()
    with caplog.at_level(logging.WARNING):
        for _ in range(2):
            with pytest.raises(DataError, match=r"row of 'job0' does not read back \(its thin"):
                index.thin_sha("job0")
            sha = index.thin_sha("job1")
            assert sha is not None and len(sha) == 64
    assert any("job_thin row of 'job0' is not fetched" in m for m in _warned(caplog))


# -- a cache entry's key: left out of the reap's slices, the scan still moves on ---------


@pytest.mark.parametrize("kind", [OUTPUT, ITEM])
def test_a_cache_key_that_is_not_utf8_is_left_out_of_the_slices_and_passed(
        opened: Any, kind: int, caplog: pytest.LogCaptureFixture) -> None:
    path, open_index = opened
    index = open_index()
    value = (lambda i: json.dumps(f"cid{i}")) if kind == OUTPUT else (
        lambda i: json.dumps({"n": "r", "c": f"cid{i}"}))
    index.put_batches([("c", [(kind, f"k{i}", value(i), 1, A, i + 1) for i in range(4)])])
    write(path, "UPDATE cache_index SET k = k || CAST(? AS TEXT) WHERE k = 'k1'", (BAD,))
    index = open_index()
    read = index.output_slice if kind == OUTPUT else index.item_slice
    with caplog.at_level(logging.WARNING):
        for _ in range(2):  # (a whole scan, a row at a time, twice)
            seen, _after = _scan(read, 1)
            assert seen == ["k0", "k2", "k3"]  # (never a text such as "b'k1...'")
    assert len([m for m in _warned(caplog) if "is left out: its k" in m]) == 1


@pytest.mark.parametrize("kind", [OUTPUT, ITEM])
def test_a_scan_ending_on_blob_keys_goes_back_to_the_start(opened: Any, kind: int) -> None:
    """A key stored as a BLOB (not what the index writes) sorts after every text: a full
    slice ending on blobs read them again and again, and the reap never started over. Such
    keys are not read; the pages of read_outputs end too."""
    path, open_index = opened
    index = open_index()
    value = (lambda i: json.dumps(f"cid{i}")) if kind == OUTPUT else (
        lambda i: json.dumps({"n": "r", "c": f"cid{i}"}))
    index.put_batches([("c", [(kind, f"k{i}", value(i), 1, A, i + 1) for i in range(4)])])
    write(path, "UPDATE cache_index SET k = CAST(k AS BLOB) WHERE k IN ('k2', 'k3')")
    index = open_index()
    read = index.output_slice if kind == OUTPUT else index.item_slice
    seen, after = _scan(read, 2)
    assert seen == ["k0", "k1"] and after == ""
    if kind == OUTPUT:
        assert list(islice(read_outputs(path, batch=1), 10)) == ["cid0", "cid1"]


# -- a record that is JSON of another type than an object --------------------------------


def test_a_record_that_is_not_an_object_is_neither_served_nor_taken(
        opened: Any, caplog: pytest.LogCaptureFixture) -> None:
    path, open_index = opened
    index = open_index()
    index.put([_record(f"job{i}", i) for i in range(3)], (), ())
    write(path, "UPDATE job_index SET record = '[1]' WHERE job = 'job1'")
    write(path, "DELETE FROM job_thin")  # (made again from the full texts)
    index = open_index()
    db = connect(str(path))
    with caplog.at_level(logging.WARNING):
        v2 = [r for t, rows in raw_rows(db, left_out=index.left_out) if t == "j"
              for r in rows]
        v3 = [r for t, rows in thin_rows(db, left_out=index.left_out) if t == "t"
              for r in rows]
    db.close()
    assert [r[0] for r in v2] == ["job0", "job2"] and sorted(r[0] for r in v3) == [
        "job0", "job2"]
    assert index.texts("job1") is None and index.texts("job0") is not None
    index.backfill(10)  # (no thin row made of it)
    assert [j for (j,) in index._db.execute("SELECT job FROM job_thin ORDER BY job")] == [
        "job0", "job2"]
    assert any("'job1'" in m for m in _warned(caplog))
    # the receiver refuses a snapshot holding one (an earlier release's sender served it)
    row = ["job1", 1, A, 2, 3, "done", "{}", "[1]", '{"finished_s": 1.0}']
    with pytest.raises(StreamError, match="record is not the JSON text of an object"):
        list(read_rows(row_lines([("j", [tuple(row)])])))


# -- backfill: rows that make no thin row do not hold the others back -------------------


def test_backfill_steps_past_rows_that_make_no_thin_row(
        opened: Any, caplog: pytest.LogCaptureFixture) -> None:
    path, open_index = opened
    index = open_index()
    index.put([_record(f"job{i:02}", i) for i in range(25)], (), ())
    write(path, "DELETE FROM job_thin")  # (as a data dir of an earlier release holds)
    bad = [f"job{i:02}" for i in range(20)]  # the first 20 written (rowid order)
    write(path, "UPDATE job_index SET summary = CAST(? AS TEXT) WHERE job < 'job10'", (BAD,))
    write(path, "UPDATE job_index SET record = '[1]' WHERE job >= 'job10' AND job < 'job20'")
    index = open_index()
    with caplog.at_level(logging.WARNING):
        got = [index.backfill(20) for _ in range(4)]
    made = [j for (j,) in index._db.execute("SELECT job FROM job_thin ORDER BY job")]
    assert made == [f"job{i}" for i in range(20, 25)]
    # (bounded: at most `limit` rows read per call; none once a scan reached the end:
    # a stepped-past row is not read again, review r2 of session 49 H1)
    assert got == [20, 5, 0, 0]
    stepped = [m for m in _warned(caplog) if "is stepped past" in m]
    assert len(stepped) == len(bad) and all(any(repr(j) in m for m in stepped) for j in bad)


# -- a record held whose ids do not read back: set aside, the others written -------------


@pytest.mark.parametrize("value", ["'[[\"hist'", "CAST(x'ff' AS TEXT)", "'{}'", "'[[1, 2]]'"])
def test_a_put_over_a_held_record_whose_ids_do_not_read_back_sets_it_aside(
        opened: Any, value: str, caplog: pytest.LogCaptureFixture) -> None:
    """Compaction writes a job's record again (a restart's replay, a snapshot's record then
    its events): a held row whose ids do not read back made `put` raise, and the whole pass
    failed each time. That row is left as it is (its events stay in the log), the others
    are written, one log line."""
    path, open_index = opened
    index = open_index()
    index.put([_record("job00", 0)], (), ())
    write(path, f"UPDATE job_index SET ids = {value} WHERE job = 'job00'")
    index = open_index()
    before = index._db.execute("SELECT * FROM job_index WHERE job = 'job00'").fetchall()
    with caplog.at_level(logging.WARNING):
        for _ in range(2):
            index.put([_record("job00", 0), _record("job01", 1)], (), [(CIDS[0], A)])
    assert index._db.execute("SELECT * FROM job_index WHERE job = 'job00'").fetchall() == before
    assert index.record("job01") == {"job": "job01", "tasks": []} and len(index) == 2
    assert list(index.providers()) == [(CIDS[0], A)]
    warned = _warned(caplog)
    assert len(warned) == 1 and "'job00' holds its job's deletion" in warned[0]


# -- provider rows: a CID the parser takes, a peer id ------------------------------------

CIDS = [str(sha256_cid(f"p{i}".encode(), "raw", 1)) for i in range(3)]


@pytest.mark.parametrize(("column", "value"), [
    ("cid", "'bafynotacid'"), ("cid", "'Qm' || substr(cid, 3)"), ("cid", "' ' || cid"),
    ("origin", "''"), ("origin", "printf('%.300c', 'o')")])
def test_a_provider_row_that_is_no_cid_or_no_peer_id_is_left_out_and_not_served(
        opened: Any, column: str, value: str, caplog: pytest.LogCaptureFixture) -> None:
    path, open_index = opened
    index = open_index()
    index.put([], [], [(c, A) for c in CIDS])
    write(path, f"UPDATE provider_index SET {column} = {value} WHERE cid = '{CIDS[0]}'")
    index = open_index()
    db = connect(str(path))
    with caplog.at_level(logging.WARNING):
        for _ in range(2):
            assert sorted(c for c, _ in index.providers()) == sorted(CIDS[1:])
            assert index.providers_of(CIDS[1]) == {A}
            assert index.providers_of(CIDS[0]) is None
            assert sorted(read_provided(path, A, batch=1)) == sorted(CIDS[1:])
            for read in (raw_rows, thin_rows):  # (the sender)
                served = [r for t, rows in read(db, left_out=index.left_out) if t == "p"
                          for r in rows]
                assert sorted(c for c, _ in served) == sorted(CIDS[1:])
    db.close()
    # (a text cid holds no reaping back: `test_a_cids_row_whose_origin_does_not_read_back_..`)
    assert index.providers_sound()
    assert any("provider row of " in m and f"its {column}" in m for m in _warned(caplog))


@pytest.mark.parametrize("value", [
    "x'0102'", "printf('%.300c', 'o')", "CAST(x'ff' AS TEXT)", "''"])
def test_a_cids_row_whose_origin_does_not_read_back_keeps_its_entry_and_holds_no_reap_back(
        opened: Any, value: str) -> None:
    """A CID's provider row whose origin does not read back held every reap of cache
    entries back for good. The reap's slices count any row of the CID's text as a
    provider: that CID's entry is kept, and the others are reaped as before."""
    path, open_index = opened
    index = open_index()
    index.put([], [CacheEntry(OUTPUT, f"k{i}", c, (1, A, i + 1)) for i, c in enumerate(CIDS)],
              [(CIDS[0], A), (CIDS[2], A)])
    write(path, f"UPDATE provider_index SET origin = {value} WHERE cid = '{CIDS[0]}'")
    index = open_index()
    assert index.providers_sound()
    rows, _ = index.output_slice("", 10)
    assert [(r.cid, r.held) for r in rows] == [(CIDS[0], True), (CIDS[1], False),
                                               (CIDS[2], True)]
    write(path, "UPDATE provider_index SET cid = x'0102' WHERE cid = ?", (CIDS[2],))
    assert not open_index().providers_sound()  # (a cid that is no text: which one?)


def test_a_provide_of_something_else_than_a_cid_is_not_written(
        opened: Any, caplog: pytest.LogCaptureFixture) -> None:
    """A member's PROVIDE may name any string of 1 to 256 characters (the door takes it):
    compaction does not write a row that every read would leave out (and that would hold
    the reaping of cache entries back for good)."""
    _, open_index = opened
    index = open_index()
    with caplog.at_level(logging.WARNING):
        index.put([], [], [("notacid", A), (CIDS[0], A)])
    assert list(index.providers()) == [(CIDS[0], A)] and index.providers_sound()
    assert any("'notacid' is not written" in m for m in _warned(caplog))


def test_a_data_dir_of_e418a64_with_a_provide_of_no_cid_still_reaps(
        opened: Any, caplog: pytest.LogCaptureFixture) -> None:
    """e418a64 wrote a member's PROVIDE of any text into provider_index: that row is left
    out of reads and does not hold the reaping of cache entries back (it provides no real
    CID); a row that is not two texts still does."""
    path, open_index = opened
    index = open_index()
    index.put([], [], [(CIDS[0], A)])
    write(path, "INSERT INTO provider_index VALUES ('hello', ?)", (A,))  # (as e418a64 did)
    index = open_index()
    with caplog.at_level(logging.WARNING):
        assert index.providers_sound()
        assert list(index.providers()) == [(CIDS[0], A)]
    write(path, "INSERT INTO provider_index VALUES (x'0102', ?)", (A,))
    assert not open_index().providers_sound()


def _old_stream(rows: list[tuple[str, str]]) -> list[tuple[str, list[tuple[Any, ...]]]]:
    """The "p" batches a receiver reads of a version 2 stream whose sender (release e418a64)
    sent `rows` as stored (any text a member's PROVIDE named): the row lines it sent,
    read back by the receiver's own check."""
    return list(read_rows(row_lines([("p", rows)])))


def test_an_older_senders_provider_row_of_no_cid_is_left_out_the_rest_taken(
        opened: Any, caplog: pytest.LogCaptureFixture) -> None:
    """A peer of release e418a64 sends the provider rows it stored, ("hello", origin)
    among them: its receiver takes the stream (v2 rows, a v3 P frame) and leaves that row
    out as it stores the rows (logged once), the good rows stored."""
    _, open_index = opened
    sent = [("hello", A), (CIDS[0], A), (CIDS[1], A)]
    v2 = _old_stream(sent)
    v3 = decode_providers(provider_frame(sent)[5:])  # (the frame e418a64 encodes)
    assert [r for _, rows in v2 for r in rows] == v3 == sent
    index = open_index()
    with caplog.at_level(logging.WARNING):
        index.put_batches(v2)
    assert sorted(index.providers()) == [(CIDS[0], A), (CIDS[1], A)]
    assert index.providers_sound()
    assert any("'hello' is not taken" in m for m in _warned(caplog))
    index.reap([], CIDS[:2])
    index.put_rows([("p", v3)], "pending.spool", None)
    assert sorted(index.providers()) == [(CIDS[0], A), (CIDS[1], A)]
    assert index.providers_sound()


def test_the_receiver_refuses_a_provider_row_of_the_wrong_shape() -> None:
    for row in (["a"], [CIDS[0], 1], [None, A]):
        with pytest.raises(StreamError, match="provider row"):
            _old_stream([row])  # type: ignore[list-item]
    assert decode_providers(provider_frame([(CIDS[0], A)])[5:]) == [(CIDS[0], A)]


def test_rows_that_do_not_read_back_are_logged_one_by_one_up_to_a_bound(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """A member's snapshot may hold any number of rows a read leaves out: the set of rows
    logged is bounded (it grew with each one), the rest named by one line."""
    import peer.log.jobindex as jobindex

    monkeypatch.setattr(jobindex, "MAX_LOGGED_ROWS", 3)
    index = JobIndex(sqlite3.connect(":memory:", isolation_level=None))
    with caplog.at_level(logging.WARNING, "banzai.log"):
        for i in range(50):
            index._skip(f"the row {i}", "cid", "not a CID")
            index._skip(f"the row {i}", "cid", "not a CID")  # (once each)
    lines = [r.getMessage() for r in caplog.records]
    assert [m.split(": ", 1)[1] for m in lines if "not a CID" in m] == [
        f"the row {i} is left out: its cid does not read back (not a CID)" for i in range(3)]
    assert sum("more rows do not read back" in m for m in lines) == 1
    assert len(index._bad) <= 4 and index.skipped == 3
