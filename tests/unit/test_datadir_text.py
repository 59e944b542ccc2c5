"""Texts that are not UTF-8 in events.sqlite's tables (a flipped bit, a hand edit): the
sqlite3 module's default fails a whole read at one such value, and a cursor cannot step past
it. Every connection to the log's file reads them as their bytes (peer.log.sqlite.connect),
so each reader leaves that row out (logged once) and serves the rest. The bad value is
written into a real file with the sqlite3 module; then the file is read the way the peer
does. And a snapshot stream that fails once its status was sent ends its connection at once
(its receiver sees it truncated) instead of leaving the client waiting."""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from peer.cids import sha256_cid
from peer.errors import DataError
from peer.jobs.retention import archived_facts
from peer.log import EventLog
from peer.log.jobindex import (
    ITEM,
    OUTPUT,
    JobIndex,
    JobRecord,
    raw_rows,
    read_outputs,
    read_provided,
    spool_name,
    thin_rows,
)
from peer.log.snapstream import job_digest
from peer.log.sqlite import connect, text_or_bytes
from peer.node import Node

A = "text0000000000000000"
BAD = b"\xff\xfeA\x80"  # not UTF-8
CIDS = [str(sha256_cid(f"cid{i}".encode(), "raw", 1)) for i in range(3)]  # (provided)
Client = TestClient[Any, Any]


def _record(job: str, i: int) -> JobRecord:
    return JobRecord(job, (1000 + i, A, i + 1), 2000 + i, "done", {"job": job, "tasks": []},
                     {"job": job, "tasks": []}, ((A, i + 1),),
                     {"finished_s": 1.0, "outputs": [], "logs": []})


def _fill(index: JobIndex) -> None:
    """Three jobs, three output and item cache entries, three provider rows, two owed
    snapshots, two pending ones, two deleted jobs' ids."""
    index.put([_record(f"job{i}", i) for i in range(3)], (), ())
    index.put_batches([
        ("c", [(kind, f"k{i}", json.dumps(f"cid{i}"), 1, A, i + 1)
               for kind in (OUTPUT, ITEM) for i in range(3)]),
        ("p", [(CIDS[i], A) for i in range(3)])])
    db = index._db
    db.executemany("INSERT INTO snapshot_owed VALUES (?)", [("s0",), ("s1",)])
    db.executemany("INSERT INTO snapshot_pending VALUES (?, 0, ?)",
                   [(spool_name(bytes([i]) * 16), f"s{i}") for i in range(2)])
    db.executemany("INSERT INTO deleted_ids VALUES (?, ?, ?, ?)",
                   [(f"gone{i}", A, 50 + i, 5000 + i) for i in range(2)])


def _damage(path: Path, sql: str) -> None:
    """Write a text of BAD's bytes behind the peer's back (`sql` takes it as its one
    parameter)."""
    db = sqlite3.connect(str(path))
    try:
        db.execute(sql, (BAD,))
        db.commit()
    finally:
        db.close()


def _stream_rows(path: Path, index: JobIndex, read: Callable[..., Iterator[Any]],
                 ) -> dict[str, list[Any]]:
    """tag -> rows a snapshot stream's reader (`raw_rows`, `thin_rows`) serves, on a
    connection of the log's (as peer.catchup's)."""
    db = connect(str(path))
    try:
        out: dict[str, list[Any]] = {}
        for tag, batch in read(db, left_out=index.left_out):
            out.setdefault(tag, []).extend(batch)
        return out
    finally:
        db.close()


T = "CAST(? AS TEXT)"
# (what is damaged, how, what each reader still gives: every other row)
CASES: list[tuple[str, str, Callable[[Path, JobIndex], None]]] = []


def _case(name: str, sql: str) -> Callable[[Callable[[Path, JobIndex], None]], Any]:
    def add(check: Callable[[Path, JobIndex], None]) -> Any:
        CASES.append((name, sql, check))
        return check
    return add


def _jobs_served(path: Path, index: JobIndex) -> None:
    assert [o[2] for o, _ in index.page(None, None)] == [3, 1]  # job2, job0
    assert {r.job for r in index.rows()} == {"job0", "job2"}
    for read, tag in ((raw_rows, "j"), (thin_rows, "t")):
        assert {r[0] for r in _stream_rows(path, index, read)[tag]} == {"job0", "job2"}


for _col in ("job", "origin", "state"):
    _case(f"job_index.{_col}", f"UPDATE job_index SET {_col} = {T} WHERE job = 'job1'")(
        _jobs_served)


@_case("job_index.record", f"UPDATE job_index SET record = {T} WHERE job = 'job1'")
def _record_left_out(path: Path, index: JobIndex) -> None:
    with pytest.raises(DataError, match=r"row of 'job1' does not read back \(its record"):
        index.record("job1")  # (fuzz F8: the list lists it; its view is not known)
    assert index.record("job0") is not None
    assert {r.job for r in index.rows()} == {"job0", "job2"}
    assert {r[0] for r in _stream_rows(path, index, raw_rows)["j"]} == {"job0", "job2"}
    index._db.execute("DELETE FROM job_thin")
    index._thin_owed()  # (as a restart on such a file finds it: not scanned yet)
    index.backfill(10)  # (thin rows made of the others' texts; job1's left out)
    assert index._db.execute("SELECT count(*) FROM job_thin").fetchone()[0] == 2


@_case("job_index.ids", f"UPDATE job_index SET ids = {T} WHERE job = 'job1'")
def _ids_held(path: Path, index: JobIndex) -> None:
    # its events in the log are not known: its deletion and their drop wait, naming it
    assert index.ids(["job0", "job2"]) == [(A, 1), (A, 3)]
    for read in (index.ids, index.delete):
        with pytest.raises(DataError, match=f"{path}: the job index's row of 'job1' holds"):
            read(["job0", "job1"])
    assert "job0" in index and "job1" in index  # (nothing deleted)


@_case("job_index.facts", f"UPDATE job_index SET facts = {T} WHERE job = 'job1'")
def _facts_left_out(path: Path, index: JobIndex) -> None:
    # its run logs are not known: gc and retention hold back, naming it
    with pytest.raises(DataError, match="collects no garbage") as got:
        index.facts(archived_facts)
    assert "'job1'" in str(got.value)
    assert [j for j, *_ in index.pending()] == ["job0", "job1", "job2"]
    assert set(index.job_digests(job_digest)) == {"job0", "job2"}  # (a second member's)


@_case("job_thin.summary", f"UPDATE job_thin SET summary = {T} WHERE job = 'job1'")
def _thin_left_out(path: Path, index: JobIndex) -> None:
    assert {r[0] for r in _stream_rows(path, index, thin_rows)["t"]} == {"job0", "job2"}


@_case("cache_index.k",  # (k1 + BAD: between k1 and k2 in SQLite's order, bytes first)
       f"UPDATE cache_index SET k = k || {T} WHERE kind = {OUTPUT} AND k = 'k1'")
def _entry_left_out(path: Path, index: JobIndex) -> None:
    assert len(list(index.entries())) == 5
    for read in (raw_rows, thin_rows):
        assert len(_stream_rows(path, index, read)["c"]) == 5
    # the page after the bad key is still read (its value is a text: read)
    assert list(read_outputs(path, batch=1)) == ["cid0", "cid1", "cid2"]


@_case("cache_index.v", f"UPDATE cache_index SET v = {T} WHERE kind = {ITEM} AND k = 'k1'")
def _value_left_out(path: Path, index: JobIndex) -> None:
    assert index.entry(ITEM, "k1") is None and index.entry(ITEM, "k0") is not None
    assert len(list(index.entries())) == 5
    assert len(_stream_rows(path, index, thin_rows)["c"]) == 5


@_case("provider_index.cid",
       f"UPDATE provider_index SET cid = cid || {T} WHERE cid = '{CIDS[0]}'")
def _provider_left_out(path: Path, index: JobIndex) -> None:
    assert len(list(index.providers())) == 2
    assert index.providers_of(CIDS[1]) == {A}
    assert not index.providers_sound()  # (a damaged row may be a CID's only provider)
    assert len(_stream_rows(path, index, raw_rows)["p"]) == 2
    assert list(read_provided(path, A, batch=1)) == sorted(CIDS[1:])


@_case("snapshot_owed.signer", f"UPDATE snapshot_owed SET signer = {T} WHERE signer = 's0'")
def _owed_left_out(path: Path, index: JobIndex) -> None:
    assert index.snapshots_owed() == ["s1"]


@_case("snapshot_pending.signer",
       f"UPDATE snapshot_pending SET signer = {T} WHERE signer = 's0'")
def _pending_left_out(path: Path, index: JobIndex) -> None:
    assert [s for _, _, s in index.snapshots_pending()] == ["s1"]


@_case("snapshot_pending.path", f"UPDATE snapshot_pending SET path = {T} WHERE signer = 's0'")
def _pending_path_left_out(path: Path, index: JobIndex) -> None:
    assert [s for _, _, s in index.snapshots_pending()] == ["s1"]


@_case("deleted_ids.job", f"UPDATE deleted_ids SET job = {T} WHERE job = 'gone0'")
def _deleted_left_out(path: Path, index: JobIndex) -> None:
    assert index.old_deleted(1 << 62, (0, ""), 10) == [(5001, "gone1")]


@pytest.mark.parametrize(("name", "sql", "check"), CASES, ids=[c[0] for c in CASES])
def test_a_text_that_is_not_utf8_leaves_its_row_out_and_the_rest_is_read(
        tmp_path: Path, name: str, sql: str, check: Callable[[Path, JobIndex], None],
        caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "events.sqlite"
    log = EventLog(path)
    _fill(JobIndex(log.db))
    log.close()
    _damage(path, sql)
    log = EventLog(path)  # (opens: the index's open reads some of these tables)
    index = JobIndex(log.db)
    with caplog.at_level(logging.WARNING):
        check(path, index)
        check(path, index)  # (asked twice: logged once)
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == len(set(warned))
    log.close()


def test_text_or_bytes_keeps_utf8_texts_and_the_bytes_of_others() -> None:
    assert text_or_bytes("é€".encode()) == "é€"
    assert text_or_bytes(BAD) == BAD
    assert text_or_bytes(b"\xed\xa0\x80") == b"\xed\xa0\x80"  # (a lone surrogate's bytes)


# -- the API over such rows, and a snapshot stream that fails midway ------------------------


@pytest.fixture
def client(served_node: tuple[Client, Node]) -> tuple[Client, Node]:
    return served_node


async def test_api_health_jobs_and_snapshots_answer_over_texts_that_are_not_utf8(
        client: tuple[Client, Node]) -> None:
    c, node = client
    _fill(node.index)
    db = node.log.db
    for sql in ("UPDATE snapshot_owed SET signer = CAST(? AS TEXT) WHERE signer = 's0'",
                "UPDATE job_index SET record = CAST(? AS TEXT) WHERE job = 'job1'",
                "UPDATE cache_index SET k = CAST(? AS TEXT) WHERE k = 'k1'"):
        db.execute(sql, (BAD,))
    r = await c.get("/api/health")
    assert r.status == 200, await r.text()
    r = await c.get("/api/jobs/job1")  # (fuzz F8: listed, so not a 404)
    assert r.status == 503 and (await r.json())["error"] == "DataError", await r.text()
    assert (await r.json())["message"].startswith(
        f"{node.log.path}: the job index's row of 'job1' does not read back (its record")
    r = await c.get("/api/jobs/job0")
    assert r.status == 200, await r.text()
    for v in ("2", "3"):
        r = await asyncio.wait_for(c.get(f"/api/snapshot?v={v}"), 30)
        assert r.status == 200, await r.text()
        body = await asyncio.wait_for(r.read(), 30)
        assert b'"signer"' in body  # (its trailer: the stream is whole)


@pytest.mark.parametrize("v", ["2", "3"])
async def test_a_snapshot_stream_failing_midway_ends_its_connection(
        client: tuple[Client, Node], v: str, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """The status was sent: the client's read ends (truncated) at once, not after its own
    timeout; the failure is logged once, naming the file."""
    c, node = client
    _fill(node.index)

    def failing(db: sqlite3.Connection, **_: Any) -> Iterator[tuple[str, list[Any]]]:
        yield "c", [(OUTPUT, "k", '"cid"', 1, A, 1)]
        raise sqlite3.DatabaseError("database disk image is malformed")

    monkeypatch.setattr("peer.catchup.raw_rows", failing)
    monkeypatch.setattr("peer.catchup.thin_rows", failing)
    with caplog.at_level(logging.WARNING):
        r = await asyncio.wait_for(c.get(f"/api/snapshot?v={v}"), 30)
        assert r.status == 200
        with pytest.raises(aiohttp.ClientPayloadError):
            await asyncio.wait_for(r.read(), 30)  # (a bound: the old code never answered)
    ended = [m for m in (x.getMessage() for x in caplog.records) if "ends early" in m]
    assert len(ended) == 1 and str(node.log.path) in ended[0]
    assert not [x for x in caplog.records if x.exc_info]  # (no traceback)
    r = await c.get("/api/health")  # (the peer still answers)
    assert r.status == 200
