"""What runs on the loop per pass does not grow with every job ever compacted (review r2 of
session 49): the compaction pass's `backfill` and `pending` (H1), the janitor's read of the
compacted jobs' facts (H2). Counted in statements and query plans, never timed."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import pytest

from peer.config import PeerConfig
from peer.ipfs import EmbeddedStore
from peer.jobs.janitor import Janitor, JanitorConfig
from peer.jobs.retention import JobFacts, RetentionConfig, archived_facts, archived_logs
from peer.log import Event, EventType
from peer.log.jobindex import JobIndex, JobRecord
from peer.node import Node
from tests.unit.api_client import api_client
from tests.unit.test_datadir_rows import write
from tests.unit.test_index_row_shapes import opened  # noqa: F401 (a fixture)
from tests.unit.test_retention import DAY, NOW, Mesh

A = "peerA"


def _record(job: str, i: int, pending: bool = False) -> JobRecord:
    return JobRecord(job, (1000 + i, A, i + 1), 2000 + i, "done", {"job": job, "tasks": []},
                     {"job": job, "tasks": []}, ((A, i + 1),) if pending else (),
                     {"finished_s": 1.0 + i, "outputs": [], "logs": []})


def _statements(index: JobIndex) -> list[str]:
    """The SQL statements `index`'s connection runs from now on (appended as they run)."""
    ran: list[str] = []
    index._db.set_trace_callback(ran.append)
    return ran


def _thin(index: JobIndex) -> list[str]:
    return [j for (j,) in index._db.execute("SELECT job FROM job_thin ORDER BY job")]


# -- H1: backfill stops once a scan found nothing left -------------------------------------


def test_backfill_reads_nothing_once_every_record_has_its_thin_row(opened: Any) -> None:  # noqa: F811
    """Records this release writes get their thin row as they are written: the first scan
    finds nothing to do, and every later pass runs no statement at all (review r2 of session
    49 H1: it scanned the whole job_index again each pass, 0.5 s at a month of records)."""
    _, open_index = opened
    index = open_index()
    index.put([_record(f"job{i:02}", i) for i in range(30)], (), ())
    assert index.backfill(20) == 0
    ran = _statements(index)
    assert [index.backfill(20) for _ in range(5)] == [0] * 5
    assert ran == []


def test_pending_reads_only_the_pending_rows_by_an_index(opened: Any) -> None:  # noqa: F811
    """`pending` (every compaction pass) reads the jobs whose events are still in the log
    by a partial index, not by a scan of every record; made at open for a data dir of an
    earlier release (which has none)."""
    _, open_index = opened
    index = open_index()
    index.put([_record(f"job{i:02}", i, pending=i % 10 == 0) for i in range(30)], (), ())
    index._db.execute("DROP INDEX job_index_pending")  # (as an earlier release's file)
    index = open_index()
    plan = [r[-1] for r in index._db.execute(
        "EXPLAIN QUERY PLAN SELECT job, ended, marks FROM job_index WHERE ids != '[]'")]
    assert plan == ["SCAN job_index USING INDEX job_index_pending"]
    assert sorted(j for j, _, _ in index.pending()) == ["job00", "job10", "job20"]
    index.dropped(["job10"], {})
    assert sorted(j for j, _, _ in index.pending()) == ["job00", "job20"]


def test_an_earlier_releases_records_still_get_their_thin_rows(opened: Any) -> None:  # noqa: F811
    """A data dir of an earlier release (records without thin rows) gets them, `limit` a
    pass, and then the passes read nothing; a write that may bring a record without one (a
    thin job filled, an older snapshot's rows) makes the next pass look again."""
    path, open_index = opened
    index = open_index()
    index.put([_record(f"job{i:02}", i) for i in range(25)], (), ())
    write(path, "DELETE FROM job_thin")  # (as a data dir of an earlier release holds)
    index = open_index()
    assert [index.backfill(10) for _ in range(4)] == [10, 10, 5, 0]
    assert _thin(index) == [f"job{i:02}" for i in range(25)]
    ran = _statements(index)
    assert index.backfill(10) == 0 and ran == []
    # an older peer's snapshot rows ("j": full records, no thin rows) arm it again
    row = ("job99", 3000, A, 99, 4000, "done", '{"job": "job99", "tasks": []}',
           '{"job": "job99", "tasks": []}', '{"finished_s": 1.0, "outputs": [], "logs": []}')
    index.put_batches([("j", [row])])
    assert index.backfill(10) == 1 and "job99" in _thin(index)
    ran.clear()
    assert index.backfill(10) == 0 and ran == []


def test_the_backfill_scan_reads_no_record_text_of_rows_that_have_thin_rows(
        opened: Any) -> None:  # noqa: F811
    """The scan finds rows without a thin row on the keys alone: its plan reads job_thin's
    key, and a record's texts are read only for a row that has none."""
    _, open_index = opened
    index = open_index()
    index.put([_record(f"job{i:02}", i) for i in range(5)], (), ())
    ran = _statements(index)
    index.backfill(20)
    texts = [s for s in ran if "record" in s]
    assert texts == []  # (none owed: no row's texts read)


# -- H2: the janitor reads the compacted jobs' facts off the loop --------------------------


async def test_the_janitor_reads_the_compacted_jobs_in_a_thread_and_keeps_their_logs(
        tmp_path: Path) -> None:
    """Every cycle (600 s, whatever the bounds) reads every compacted job's facts: in a
    thread, not on the loop (review r2 of session 49 H2: a 2.6 s stall at a month of
    records). Retention decides as before: the job past --keep-jobs-days is deleted, the
    other kept, and the run log of a compacted job is a gc root."""
    s = EmbeddedStore(tmp_path / "store")
    kept_log = s.add_bytes(b"a kept job's run log" * 10)
    old_log = s.add_bytes(b"an old job's run log" * 10)
    loose = s.add_bytes(b"nothing keeps this" * 10)
    m = Mesh()
    emitted: list[Event] = []

    def emit(typ: EventType, payload: dict[str, Any]) -> Event:
        emitted.append(m.emit(typ, payload))
        return emitted[-1]

    janitor = Janitor(JanitorConfig(RetentionConfig(keep_jobs_s=30 * DAY), gc_interval_s=0,
                                    gc_grace_s=0), m.peer, m.state, s, emit,
                      wall=lambda: NOW)
    loop = threading.get_ident()
    read_in: list[int] = []

    def archived() -> list[JobFacts]:
        read_in.append(threading.get_ident())
        return [JobFacts("old", NOW - 40 * DAY, frozenset(), frozenset(),
                         frozenset({old_log})),
                JobFacts("kept", NOW - 2 * DAY, frozenset(), frozenset(),
                         frozenset({kept_log}))]

    janitor.archived = archived
    report = await janitor.cycle()
    assert read_in and loop not in read_in
    assert report.deleted_jobs == ("old",)
    assert s.has(kept_log) and not s.has(loose)  # (gc ran, the compacted job's log a root)
    assert [(e.type, e.payload["job"]) for e in emitted] == [(EventType.JOB_DELETED, "old")]


def test_the_facts_read_on_a_connection_of_its_own_are_the_same(opened: Any) -> None:  # noqa: F811
    """`facts_apart` (what the node gives the janitor, run in a thread) reads what `facts`
    reads, on a connection of its own; `archived_logs` leaves the outputs out (no output
    bound: they are not held in memory) and keeps the end and the run logs."""
    _, open_index = opened
    index = open_index()
    index.put([JobRecord(f"job{i}", (1000 + i, A, i + 1), 2000 + i, "done",
                         {"job": f"job{i}", "tasks": []}, {"job": f"job{i}", "tasks": []}, (),
                         {"finished_s": 1.0 + i, "outputs": [f"out{i}"], "logs": [f"log{i}"]})
               for i in range(3)], (), ())
    got: list[Any] = []
    t = threading.Thread(target=lambda: got.append(index.facts_apart(archived_facts)))
    t.start()
    t.join(30)
    assert got == [index.facts(archived_facts)] and len(got[0]) == 3
    logs = index.facts_apart(archived_logs)
    assert [(f.job, f.finished_s, f.outputs, f.logs) for f in logs] == [
        (f"job{i}", 1.0 + i, frozenset(), frozenset({f"log{i}"})) for i in range(3)]


# -- M1: a peer that keeps everything for ever says so --------------------------------------


@pytest.mark.parametrize(("flags", "unbounded"), [
    ({}, ["job records", "outputs"]),
    ({"keep_jobs_days": 90.0}, ["outputs"]),
    ({"keep_jobs_days": 90.0, "store_max_gb": 50.0}, []),
    ({"keep_jobs_days": 90.0, "keep_outputs_days": 30.0}, []),
])
async def test_health_shows_the_bounds_and_an_unbounded_peer_warns_once_at_start(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, flags: dict[str, float],
        unbounded: list[str]) -> None:
    """Review r2 of session 49 M1: the defaults keep every record, run log and output for
    ever (~3 GB a month for a busy lab); a peer started so warns once, and /api/health's
    `storage.bounds` says which bounds are set and what is kept for ever."""
    node = Node(PeerConfig(data_dir=tmp_path / "peer", slots=1, mdns=False,
                           gc_interval_s=0, **flags))
    try:
        with caplog.at_level(logging.WARNING, logger="banzai.janitor"):
            await node.janitor.start()
        warned = [r.getMessage() for r in caplog.records if "no bound on" in r.getMessage()]
        assert len(warned) == (1 if unbounded else 0)
        if unbounded:
            assert f"no bound on {' and '.join(unbounded)}:" in warned[0]
        async with api_client(node) as c:
            r = await c.get("/api/health")
            bounds = (await r.json())["storage"]["bounds"]
        assert bounds == {"keep_jobs_days": flags.get("keep_jobs_days"),
                          "keep_outputs_days": flags.get("keep_outputs_days"),
                          "store_max_gb": flags.get("store_max_gb"), "unbounded": unbounded}
    finally:
        await node.janitor.close()
        await node.close()
