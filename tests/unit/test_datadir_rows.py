"""Rows read back from the data dir's SQLite file are hostile input (events.sqlite: the log's
`events`, the job index's `job_index`, `cache_index`, `provider_index`): a bad value is written
into a real file with the sqlite3 module, then the file is opened and read the way the peer
does. One bad row is set aside (quarantined, left out, logged once); the rest is served, and
nothing else stored is lost; a damaged page is a clear error naming the file."""

from __future__ import annotations

import io
import json
import logging
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from hypothesis import given
from hypothesis import strategies as st

from peer.cids import sha256_cid
from peer.errors import DataError
from peer.errors_http import Surface, http_error
from peer.http.views import page_jobs
from peer.jobs.retention import archived_facts
from peer.log import HLC, Door, DoorConfig, Event, EventLog, EventType, MeshState
from peer.log.compact import CompactConfig, Compactor
from peer.log.jobindex import OUTPUT, JobIndex, JobRecord, raw_rows, thin_rows
from peer.log.snapframe import check_thin, read_frames, row_frames
from peer.log.snapstream import (
    CACHE_KINDS,
    JOB_KEYS,
    PROVIDER_KINDS,
    check_cache,
    check_provider,
    read_rows,
    row_fault,
    row_lines,
)
from peer.log.sqlite import stored_events
from peer.node import Node
from tests.unit.test_cache_reap import _Log

A = "rows0000000000000000"
Client = TestClient[Any, Any]


def _raw(path: Path, sql: str, args: tuple[Any, ...] = ()) -> None:
    """Write into the file behind the peer's back (as damage or a hand edit would: its
    NOT NULL constraints dropped first, as a byte of damage bypasses them)."""
    db = sqlite3.connect(str(path))
    try:
        db.execute("PRAGMA writable_schema = ON")
        db.execute("UPDATE sqlite_master SET sql = replace(sql, 'NOT NULL', '') WHERE "
                   "type = 'table'")
        db.commit()
    finally:
        db.close()
    write(path, sql, args)


def write(path: Path, sql: str, args: tuple[Any, ...] = ()) -> None:
    """Write behind the peer's back (the sqlite3 module's own connection)."""
    db = sqlite3.connect(str(path))
    try:
        db.execute(sql, args)
        db.commit()
    finally:
        db.close()


# -- 1. an events row whose payload is not UTF-8 -------------------------------------------


def test_a_flipped_payload_bit_quarantines_that_row_and_the_rest_replay(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "events.sqlite"
    log = EventLog(path)
    hlc = (int(time.time() * 1000) - 60_000) << 16
    log.append([Event(A, s, hlc + s, EventType.PROVIDE, {"cids": [f"c{s}"]})
                for s in (1, 2, 3)])
    log.close()
    db = sqlite3.connect(str(path))
    (payload,) = db.execute("SELECT CAST(payload AS BLOB) FROM events WHERE seq = 2").fetchone()
    db.close()
    flipped = bytearray(payload)
    flipped[3] ^= 0x80  # one bit: the bytes are no longer UTF-8
    _raw(path, "UPDATE events SET payload = CAST(? AS TEXT) WHERE seq = 2", (bytes(flipped),))

    log = EventLog(path)
    # a snapshot's serve meeting it (before the replay set it aside) skips it, not the file
    served = sqlite3.connect(str(path))
    assert [e.seq for e in stored_events(served, path, 1 << 20)] == [1, 3]
    served.close()
    door, state = Door(DoorConfig(), HLC(), log), MeshState()
    with caplog.at_level(logging.WARNING):
        assert door.replay(state, "me") == 2
    assert set(state.providers) == {"c1", "c3"}
    assert door.health()["quarantined"] == 1 and log.skipped == 1
    lines = [r.getMessage() for r in caplog.records if "quarantined the event" in r.getMessage()]
    assert len(lines) == 1 and f"{A[:16]}/2" in lines[0] and "utf-8" in lines[0]
    log.close()
    log = EventLog(path)  # set aside for good: the next start reads the rest only
    assert [e.seq for e in log.load()] == [1, 3] and log.quarantined() == 1
    log.close()


# -- 2. job_index rows of the wrong types --------------------------------------------------


def _record(job: str, i: int) -> JobRecord:
    return JobRecord(job, (1000 + i, A, i + 1), 2000 + i, "done", {"id": job, "tasks": []},
                     {"id": job, "tasks": []}, (),
                     {"finished_s": 1.0, "outputs": [], "logs": []})


# (column, value, kept): `kept` "rows", the row still read whole by `rows` (the facts' CIDs
# are not read there); no such row is served in snapshots (a record of another JSON type
# than an object neither: its receiver would refuse it)
BAD_JOB_COLUMNS = [("job", None, ""), ("job", b"job1", ""), ("hlc", None, ""),
                   ("hlc", "soon", ""), ("hlc", 1.5, ""), ("hlc", -1, ""), ("origin", None, ""),
                   ("origin", b"o", ""), ("seq", None, ""), ("seq", "x", ""),
                   ("ended", None, ""), ("ended", b"\x01", ""), ("state", None, ""),
                   ("state", b"done", ""), ("summary", None, ""), ("summary", "[1]", ""),
                   ("record", None, ""), ("record", 4, ""), ("facts", None, ""),
                   ("facts", '{"outputs": 5}', "rows"),
                   # retention's time: a member's row of it held back every storage cycle
                   ("facts", '{"finished_s": "x"}', "rows"),
                   ("facts", '{"finished_s": true}', "rows"),
                   ("facts", '{"finished_s": 1e300}', "rows")]


def _index_with_a_bad_job(path: Path, column: str, value: Any) -> tuple[EventLog, JobIndex]:
    log = EventLog(path)
    JobIndex(log.db).put([_record(f"job{i}", i) for i in range(3)], (), ())
    log.db.execute("DELETE FROM job_thin")  # (v3 serves make them from the full texts)
    log.close()
    _raw(path, f"UPDATE job_index SET {column} = ? WHERE job = 'job1'", (value,))
    log = EventLog(path)
    return log, JobIndex(log.db)


@pytest.mark.parametrize(("column", "value", "kept"), BAD_JOB_COLUMNS)
def test_a_job_row_of_a_wrong_type_is_left_out_of_the_list_and_of_snapshots(
        tmp_path: Path, column: str, value: Any, kept: str,
        caplog: pytest.LogCaptureFixture) -> None:
    """Each reader leaves the row out (the list: unless only its record or facts do not read
    back; the list entry is its summary), logged once; but the job's own view is a
    DataError naming the row (the list may list it), and retention's facts one too."""
    path = tmp_path / "events.sqlite"
    log, index = _index_with_a_bad_job(path, column, value)
    with caplog.at_level(logging.WARNING):
        for _ in range(2):  # (the list asked twice: logged once)
            jobs, _ = page_jobs(MeshState(), None, None, index.page)
            names = [j["id"] for j in jobs if isinstance(j, dict)]
            assert "job0" in names and "job2" in names
            assert ("job1" in names) == (column in ("record", "facts"))
            if column == "job":  # (no row of job1 any more)
                assert index.record("job1") is None
            elif column in ("summary", "facts"):
                assert index.record("job1") is not None
            else:  # fuzz F8: the list lists it, so its view is said damaged, not absent
                with pytest.raises(DataError, match=f"{path}: the job index's row of 'job1' "
                                   "does not read back"):
                    index.record("job1")
            every, some = ["job0", "job1", "job2"], ["job0", "job2"]
            if column in ("summary", "record"):
                assert [j.job for j in index.facts(archived_facts)] == every
            else:  # its run logs are not known: gc and retention hold back (nothing freed)
                with pytest.raises(DataError, match="collects no garbage"):
                    index.facts(archived_facts)
        assert [r.job for r in index.rows()] == (every if kept == "rows" else some)
        db = sqlite3.connect(str(path))
        v2 = list(raw_rows(db, left_out=index.left_out))
        v3 = list(thin_rows(db, left_out=index.left_out))
        db.close()
    warned = [r.getMessage() for r in caplog.records if "is left out" in r.getMessage()]
    assert warned and all("'job1'" in m or "b'job1'" in m or "None" in m for m in warned)
    assert len(warned) == len(set(warned))  # once per row and column, not per request
    # what is served carries no such row, and its receiver takes every row
    served = {"job0", "job2"}
    taken = list(read_rows(row_lines(v2)))
    assert {r[0] for t, rows in taken if t == "j" for r in rows} == served
    frames = io.BytesIO(b"".join(row_frames(v3)))
    assert {r[0] for t, rows in read_frames(frames) if t == "t" for r in rows} == served
    for r in (r for t, rows in v3 if t == "t" for r in rows):
        check_thin(list(r))
    log.close()


@pytest.fixture
def client(served_node: tuple[Client, Node]) -> tuple[Client, Node]:
    return served_node


@pytest.mark.parametrize(("column", "value"), [("hlc", "soon"), ("seq", "x"), ("origin", b"o")])
async def test_api_jobs_answers_200_without_a_job_row_of_a_wrong_type(
        client: tuple[Client, Node], column: str, value: Any) -> None:
    c, node = client
    node.index.put([_record(f"job{i}", i) for i in range(3)], (), ())
    node.log.db.execute(f"UPDATE job_index SET {column} = ? WHERE job = 'job1'", (value,))
    for query in ("", "?limit=10"):
        r = await c.get(f"/api/jobs{query}")
        assert r.status == 200, await r.text()
        assert [j["id"] for j in (await r.json())["jobs"]] == ["job2", "job0"]


async def test_a_job_row_whose_job_column_names_another_job_is_neither_listed_nor_served(
        client: tuple[Client, Node]) -> None:
    """One byte of a row's job column changed (fuzz: a bit flip): its summary and record name
    the job they were written for. The list showed that name and its view answered 404 (no
    row of that name); now the row reads back as no job's, under either name."""
    c, node = client
    node.index.put([_record(f"job{i}", i) for i in range(3)], (), ())
    node.log.db.execute("UPDATE job_index SET job = 'jobX' WHERE job = 'job1'")
    r = await c.get("/api/jobs")
    assert r.status == 200, await r.text()
    assert [j["id"] for j in (await r.json())["jobs"]] == ["job2", "job0"]
    assert (await c.get("/api/jobs/job1")).status == 404  # (no row of that name)
    r = await c.get("/api/jobs/jobX")  # (a row, whose record is another job's)
    body = await r.json()
    assert r.status == 503 and "'jobX' does not read back" in body["message"], body


async def test_a_listed_job_whose_record_is_not_held_and_no_member_gave_is_503_not_404(
        client: tuple[Client, Node]) -> None:
    """A job row whose record is '' (a thin row's: fetched from a member when asked; the
    fuzzer's `record:empty`) with no member to fetch it from: the list shows the job, so its
    view is unavailable (503 saying why), not "no job" (404)."""
    c, node = client
    node.index.put([_record(f"job{i}", i) for i in range(3)], (), ())
    node.log.db.execute("UPDATE job_index SET record = '' WHERE job = 'job1'")
    r = await c.get("/api/jobs")
    assert "job1" in [j["id"] for j in (await r.json())["jobs"]]
    r = await c.get("/api/jobs/job1")
    body = await r.json()
    assert r.status == 503 and "record is not held here" in body["message"], body
    assert (await c.get("/api/jobs/job9")).status == 404


# -- 3. a damaged page mid-file ------------------------------------------------------------


def _damage_job_index(path: Path) -> None:
    """Overwrite the head of job_index's root page (a bad sector)."""
    db = sqlite3.connect(str(path))
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    (root,) = db.execute("SELECT rootpage FROM sqlite_master WHERE name = 'job_index'"
                         ).fetchone()
    (size,) = db.execute("PRAGMA page_size").fetchone()
    db.close()
    with path.open("r+b") as f:
        f.seek((root - 1) * size)
        f.write(b"\xff" * 64)


def test_a_damaged_page_of_the_job_index_is_a_data_error_naming_the_file(
        tmp_path: Path) -> None:
    path = tmp_path / "events.sqlite"
    log = EventLog(path)
    JobIndex(log.db).put([_record(f"job{i:03d}", i) for i in range(200)], (), ())
    log.close()
    _damage_job_index(path)
    log = EventLog(path)
    index = JobIndex(log.db)
    for read in (lambda: index.page(None, None), lambda: index.record("job007"),
                 lambda: index.facts(lambda j, f: j), lambda: list(index.rows())):
        with pytest.raises(DataError) as got:
            read()
        err = http_error(got.value, Surface.API)
        assert err.status == 503 and err.kind == "DataError"
        assert str(path) in err.message and "damaged" in err.message
    log.close()


async def test_api_jobs_over_a_damaged_page_is_a_json_error_naming_the_file(
        client: tuple[Client, Node]) -> None:
    c, node = client
    node.index.put([_record(f"job{i:03d}", i) for i in range(200)], (), ())
    _damage_job_index(node.log.path)
    node.log.db.execute("PRAGMA cache_size = 0")  # (its cached pages: read the disk again)
    node.log.db.execute("PRAGMA cache_size = -2000")
    r = await c.get("/api/jobs")
    body = await r.json()
    assert r.status == 503 and body["error"] == "DataError", body
    assert str(node.log.path) in body["message"] and "damaged" in body["message"]


# -- 4. damaged provider rows never make the reaper delete an entry ------------------------


def _cid(s: str) -> str:
    return str(sha256_cid(s.encode(), "raw", 1))


@pytest.mark.parametrize("damage", [
    "UPDATE provider_index SET cid = CAST(cid AS BLOB)",  # a text's type lost
    "UPDATE provider_index SET cid = CAST(cid AS BLOB) WHERE origin = 'p1'",  # one row
    "UPDATE provider_index SET cid = CAST(X'ff62616679' AS TEXT) WHERE origin = 'p1'",
])
def test_damaged_provider_rows_make_the_reaper_delete_no_cache_entry(
        tmp_path: Path, damage: str) -> None:
    path = tmp_path / "events.sqlite"
    log = EventLog(path)
    index = JobIndex(log.db)
    cids = [_cid(f"out{i}") for i in range(4)]
    entries = [(OUTPUT, f"k{i}", json.dumps(c), 1, A, i + 1) for i, c in enumerate(cids)]
    entries.append((OUTPUT, "kbad", json.dumps(cids[0]), "x", A, 9))  # a row that is damaged
    index.put_batches([("c", entries), ("p", [(c, f"p{i}") for i, c in enumerate(cids)])])
    log.close()
    _raw(path, damage)
    log = EventLog(path)
    index = JobIndex(log.db)
    state = MeshState()
    state.tier(**index.lookups())
    c = Compactor(CompactConfig(), state, _Log(), index, lambda job: None, lambda: [],
                  lambda: 1 << 60)
    for _ in range(3):
        c.step()
    assert c.total.reaped == 0
    db = sqlite3.connect(str(path))
    assert db.execute("SELECT count(*) FROM cache_index").fetchone()[0] == 5
    db.close()
    assert not index.providers_sound()
    log.close()


# -- the row validator ---------------------------------------------------------------------

_VALUES = {"s": st.text(max_size=8), "u": st.integers(0, (1 << 63) - 1),
           "k": st.sampled_from([0, 1]), "c": st.text(max_size=8).map(_cid),
           "o": st.text(st.characters(codec="ascii"), min_size=1, max_size=20)}
_OTHERS = st.one_of(st.none(), st.binary(max_size=4), st.floats(allow_nan=False),
                    st.integers(max_value=-1), st.lists(st.integers(), max_size=2))


@given(st.sampled_from([JOB_KEYS, CACHE_KINDS, PROVIDER_KINDS]).flatmap(
    lambda cols: st.tuples(st.just(cols), st.tuples(*(_VALUES[k] for _, k in cols)),
                           st.integers(0, len(cols) - 1), _OTHERS)))
def test_row_fault_names_the_first_column_of_a_wrong_kind(
        case: tuple[Any, tuple[Any, ...], int, Any]) -> None:
    """A row of the kinds the index writes has no fault; one column of another kind is
    named; for cache and provider rows the receiver's check agrees (what a snapshot may
    carry is what its receiver takes)."""
    cols, row, at, other = case
    assert row_fault(row, cols) is None
    bad = (*row[:at], other, *row[at + 1:])
    assert row_fault(bad, cols) == cols[at][0]
    check = {CACHE_KINDS: check_cache, PROVIDER_KINDS: check_provider}.get(cols)
    if check is not None:
        assert check(list(row)) == row
        with pytest.raises(ValueError, match=cols[at][0]):
            check(list(bad))
