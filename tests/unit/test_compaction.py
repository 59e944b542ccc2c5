"""Compaction wired into the node (issue 11 item 3): finished jobs beyond the recent history
become job index records read on demand, their events leave memory (served from disk), then
leave the log once every live member holds them or past the horizon; the cache entries they
made keep working, also after a restart."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import importlib
import json
import logging
import shutil
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from peer.cids import sha256_cid
from peer.config import PeerConfig
from peer.errors import DataError
from peer.http.views import job_view, page_jobs
from peer.log import Event, EventType
from peer.log import compact as compact_mod
from peer.log.jobindex import ITEM
from peer.log.snapframe import FEATURE as SNAPSHOT_FEATURE
from peer.log.snapframe import FrameSpool, check_record, job_digest3
from peer.log.snapstream import Spool, job_digest
from peer.mesh.keyring import SECRET_FILE_NAME
from peer.node import Node
from tests.unit.record_oracle import compact_view

catchup_mod = importlib.import_module("peer.catchup")

ORIGIN = "hist0000000000000000"
FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "datadir-v0.1.0"


def _cid(s: str) -> str:
    return str(sha256_cid(s.encode(), "raw", 1))


def key_of(j: int, i: int) -> str:
    return hashlib.sha256(f"{j}/{i}".encode()).hexdigest()


def history(jobs: int, per_job: int, live: int = 0, hlc_step: int = 1) -> list[Event]:
    """Events of `jobs` finished jobs of `per_job` ECHO tasks (each with its cache key), then
    `live` jobs submitted and not run, all by ORIGIN, with current HLCs `hlc_step` apart."""
    out: list[Event] = []
    hlc = (int(time.time() * 1000) - 60_000) << 16

    def add(typ: EventType, payload: dict[str, object]) -> list[object]:
        nonlocal hlc
        hlc += hlc_step
        out.append(Event(ORIGIN, len(out) + 1, hlc, typ, payload))
        return [ORIGIN, len(out)]

    for j in range(jobs + live):
        job = f"job{j:03d}"
        add(EventType.JOB_SUBMITTED, {"job": job, "workflow": {"name": job, "tasks": [
            {"name": f"t{i}", "call": "ECHO", "params": {"text": f"{j}/{i}"}}
            for i in range(per_job)]}})
        if j >= jobs:
            continue
        for i in range(per_job):
            task = f"t{i}"
            split = add(EventType.TASK_SPLIT, {"job": job, "task": task, "input": None,
                                               "chunks": [[]]})
            base = {"job": job, "task": task, "split": split, "chunk": 0, "attempt": 0}
            add(EventType.CLAIM, base)
            out_cid = _cid(f"{job}/{task}")
            add(EventType.CHUNK_DONE, {**base, "output": out_cid, "cache": {}})
            add(EventType.TASK_DONE, {"job": job, "task": task, "output": out_cid,
                                      "key": key_of(j, i)})
    return out


def _open(d: Path, nodes: list[Node], recent_tasks: int = 2) -> Node:
    n = Node(PeerConfig(data_dir=d, slots=1, mdns=False, compact_recent_tasks=recent_tasks))
    n.listeners[:] = [n.compactor.note]  # no scheduler running: only the compactor listens
    nodes.append(n)
    return n


def _index_jobs(n: Node) -> set[str]:
    """The jobs the node's job index holds a record of."""
    return {str(j) for (j,) in n.log.db.execute("SELECT job FROM job_index")}


def _rows(n: Node) -> set[tuple[str, int]]:
    return {(str(o), int(q)) for o, q in n.log.db.execute("SELECT origin, seq FROM events")}


def _ids(evs: list[Event]) -> list[tuple[str, int]]:
    return [e.id for e in evs]


def _lagging(n: Node) -> None:
    """A live member that holds nothing: nothing may leave the log before the horizon."""
    n.compactor.vvs = lambda: [dict(n.heads()), {}]


def test_finished_jobs_beyond_the_recent_history_become_records_read_on_demand(
        tmp_path: Path, opened: list[Node]) -> None:
    n = _open(tmp_path / "a", opened)
    _lagging(n)
    evs = history(jobs=3, per_job=2, live=1)
    n.merge(evs)
    views = {j: job_view(n.state, j, n.cfg.max_attempts) for j in n.state.jobs}
    before = {vv: _ids(n.events_after(dict(vv), 1000)) for vv in ((), ((ORIGIN, 5),))}
    stats = n.catchup.compact()
    # the two oldest finished jobs leave memory; the newest (2 tasks: the recent history)
    # and the live one stay
    assert sorted(stats.jobs) == ["job000", "job001"] and stats.dropped == 0
    assert sorted(n.state.jobs) == ["job002", "job003"]
    for j in ("job000", "job001"):
        assert n.catchup.job_record(j) == compact_view(views[j])
        assert views[j]["state"] == "done"
    # their events left memory but are still served, oldest first, around the gap
    assert len(n.state.events) == len(evs) - 2 * (1 + 2 * 4)
    for vv, ids in before.items():
        assert _ids(n.events_after(dict(vv), 1000)) == ids
    assert _ids(n.events_after({ORIGIN: 3}, 4)) == [(ORIGIN, q) for q in range(4, 8)]
    # their cache entries keep working
    assert n.state.outputs[key_of(0, 1)] == _cid("job000/t1")
    assert ORIGIN in n.state.providers[_cid("job000/t1")]
    # the job list pages across memory and the index, newest first
    page, cursor = page_jobs(n.state, 3, None, n.catchup.index.page)
    assert [p if isinstance(p, str) else p["id"] for p in page] == ["job003", "job002",
                                                                     "job001"]
    rest, end = page_jobs(n.state, 3, cursor, n.catchup.index.page)
    assert [p["id"] for p in rest if isinstance(p, dict)] == ["job000"] and end is None
    assert rest[0] == {k: v for k, v in views["job000"].items() if k != "workflow"} | {
        "tasks": [{"name": t["name"], "state": t["state"], "progress": t["progress"]}
                  for t in views["job000"]["tasks"]]}


def test_events_leave_the_log_once_every_live_member_holds_them(
        tmp_path: Path, opened: list[Node]) -> None:
    n = _open(tmp_path / "a", opened)
    _lagging(n)
    evs = history(jobs=3, per_job=2)
    n.merge(evs)
    n.catchup.compact()
    assert _rows(n) == {e.id for e in evs}
    held = dict(n.heads())
    n.compactor.vvs = lambda: [dict(n.heads()), {ORIGIN: 11}]  # lacks job001's last events
    assert n.catchup.compact().dropped == 9  # job000: seqs 1..9
    assert _rows(n) == {e.id for e in evs} - {(ORIGIN, q) for q in range(1, 10)}
    n.compactor.vvs = lambda: [dict(n.heads()), held]
    assert n.catchup.compact().dropped == 9
    assert _rows(n) == {e.id for e in evs[18:]}
    assert n.compactor.floors == {ORIGIN: 18}
    # the heads do not move back; an asker below the floor gets what is left, in order
    assert n.heads() == held
    assert _ids(n.events_after({}, 100)) == [e.id for e in evs[18:]]
    assert _ids(n.events_after({ORIGIN: 20}, 100)) == [e.id for e in evs[20:]]
    # a dropped event sent again by a peer is not stored again
    assert n.merge([evs[0]]) == [] and (ORIGIN, 1) not in _rows(n)


def test_past_the_horizon_events_leave_the_log_even_if_a_member_lacks_them(
        tmp_path: Path, opened: list[Node]) -> None:
    n = _open(tmp_path / "a", opened, recent_tasks=0)
    _lagging(n)
    n.merge(history(jobs=1, per_job=2))
    assert n.catchup.compact().dropped == 0
    later = n.hlc.now() + ((7 * 86_400_000 + 1) << 16)
    n.compactor.now_hlc = lambda: later
    assert n.catchup.compact().dropped == 9 and _rows(n) == set()


def test_a_restart_keeps_records_cache_entries_and_heads(tmp_path: Path,
                                                         opened: list[Node]) -> None:
    d = tmp_path / "a"
    n = _open(d, opened)
    evs = history(jobs=3, per_job=2, live=1)
    n.merge(evs)
    record = compact_view(job_view(n.state, "job000", n.cfg.max_attempts))
    n.catchup.compact()  # alone: every live member (we) holds them: they leave the log at once
    assert n.compactor.total.dropped == 18
    heads = dict(n.heads())
    n.log.close()
    opened.remove(n)
    again = _open(d, opened)
    assert dict(again.heads()) == heads
    assert sorted(again.state.jobs) == ["job002", "job003"]
    assert again.catchup.job_record("job000") == record
    assert again.state.outputs[key_of(1, 0)] == _cid("job001/t0")
    assert ORIGIN in again.state.providers[_cid("job001/t0")]
    assert again.merge([evs[3]]) == [] and "job000" not in again.state.jobs
    assert _ids(again.events_after({}, 100)) == [e.id for e in evs[18:]]


@pytest.mark.parametrize("column,text", [
    ("facts", "nope"), ("facts", '{"finished_s": "x"}'), ("facts", '{"outputs": "bafyabc"}'),
    ("summary", "[1]"), ("marks", "nope"), ("ids", '[["o", "x"]]'),
], ids=["facts_not_json", "facts_finished_text", "facts_outputs_text", "summary_not_object",
        "marks_not_json", "ids_bad_seq"])
def test_a_job_index_row_that_does_not_read_back_is_left_out_logged_once_and_counted(
        tmp_path: Path, opened: list[Node], caplog: pytest.LogCaptureFixture, column: str,
        text: str) -> None:
    n = _open(tmp_path / "a", opened)
    _lagging(n)
    evs = history(jobs=3, per_job=2)
    n.merge(evs)
    n.catchup.compact()  # job000 and job001 become records; their events stay in the log
    n.log.db.execute(f"UPDATE job_index SET {column} = ? WHERE job = 'job000'", (text,))
    n.compactor.vvs = lambda: [dict(n.heads())]  # from now on every member holds them
    with caplog.at_level(logging.WARNING):
        for _ in range(2):  # every janitor cycle, compaction pass and listing goes on
            if column == "facts":  # its run logs are not known: the janitor holds back
                with pytest.raises(DataError, match=r"'job000'.*collects no garbage"):
                    n.janitor.archived()
            else:
                assert {f.job for f in n.janitor.archived()} >= {"job000", "job001"}
            n.catchup.compact()
            listed = [s["id"] for _, s in n.catchup.index.page(None, None)]
            digests = n.index.thin_digests(job_digest3)
    assert listed[0] == "job001" and "job001" in digests
    assert ("job000" in listed) == (column != "summary")
    # (its facts: the line says what the janitor does, session 33: it said "left out")
    fate = {"facts": "holds retention and gc back (nothing is freed until it is mended or "
                     "removed)",
            "ids": "holds its job's deletion and its events in the log (until it is mended)",
            }.get(column, "is left out")
    assert caplog.text.count("the job index's row of 'job000'") == 1
    assert f"{n.log.path}: the job index's row of 'job000' {fate}: its {column}" in caplog.text
    assert n.index.skipped == 1 and n.log_health()["compaction"]["index_rows_skipped"] == 1
    kept = {(ORIGIN, q) for q in range(1, 10)} if column in ("marks", "ids") else set()
    assert _rows(n) == kept | {e.id for e in evs[18:]}  # a job's events it cannot mark stay


def _untyped(db: sqlite3.Connection, table: str) -> None:
    """`table` made again with columns of no type, its primary key kept (a hand-made or
    edited file: SQLite then keeps any value as it is given, a number or a NULL too)."""
    info = list(db.execute(f"PRAGMA table_info({table})"))
    cols = [str(r[1]) for r in info]
    key = [str(r[1]) for r in sorted(info, key=lambda r: r[5]) if r[5]]
    db.execute(f"ALTER TABLE {table} RENAME TO old_{table}")
    db.execute(f"CREATE TABLE {table} ({', '.join(cols)}, PRIMARY KEY ({', '.join(key)}))")
    db.execute(f"INSERT INTO {table} SELECT * FROM old_{table}")
    db.execute(f"DROP TABLE old_{table}")


def test_a_cache_entry_that_does_not_read_back_stops_no_compaction_pass(
        tmp_path: Path, opened: list[Node], caplog: pytest.LogCaptureFixture) -> None:
    """A cache_index row whose value is not a JSON text (a number: a file made or edited by
    hand) raised TypeError in every pass (its reap), and one whose kind is no kind raised
    ValueError in every snapshot's records: compaction stopped, the log grew for good. Each
    is left out, logged once, and the pass compacts and drops every other job."""
    n = _open(tmp_path / "a", opened, recent_tasks=6)
    _lagging(n)
    evs = history(jobs=4, per_job=2)
    n.merge(evs)
    assert n.catchup.compact().jobs == ["job000"]  # (its cache entries: in the index)
    db = n.log.db
    _untyped(db, "cache_index")
    db.execute("UPDATE cache_index SET v = 5 WHERE k = ?", (key_of(0, 0),))
    order = (evs[0].hlc, ORIGIN, 1)
    db.executemany("INSERT INTO cache_index VALUES (?, ?, ?, ?, ?, ?)", [
        (ITEM, "an-item", 2.5, *order), ("x", "no-kind", '"bafyx"', *order)])
    n.compactor.cfg = compact_mod.CompactConfig(recent_tasks=2)
    later = n.hlc.now() + ((7 * 86_400_000 + 1) << 16)  # past the horizon: all may go
    n.compactor.now_hlc = lambda: later
    with caplog.at_level(logging.WARNING):
        stats = [n.catchup.compact() for _ in range(2)]
        cache = [json.loads(_v1(n))["snapshot"]["records"]["cache"] for _ in range(2)]
    assert stats[0].jobs == ["job002", "job001"] and stats[0].dropped == 27
    assert stats[1].jobs == [] and _rows(n) == {e.id for e in evs[27:]}
    assert sorted(c[1] for c in cache[0]) == sorted(
        key_of(j, i) for j in range(3) for i in range(2) if (j, i) != (0, 0))
    for key, column in ((key_of(0, 0), "v"), ("an-item", "v"), ("no-kind", "kind")):
        assert caplog.text.count(f"{n.log.path}: the job index's cache entry {key!r} is left "
                                 f"out: its {column} does not read back") == 1
    assert n.state.outputs[key_of(0, 1)] == _cid("job000/t1")  # the others are served
    assert n.state.outputs.get(key_of(0, 0)) is None


def test_a_deleted_compacted_job_loses_its_record(tmp_path: Path, opened: list[Node]) -> None:
    n = _open(tmp_path / "a", opened, recent_tasks=0)
    n.merge(history(jobs=1, per_job=1))
    n.catchup.compact()
    assert n.catchup.job_record("job000") is not None
    n.janitor.delete_job("job000")
    assert n.catchup.job_record("job000") is None and len(n.index) == 0
    assert n.state.outputs[key_of(0, 0)] == _cid("job000/t0")  # the cache stays


def test_a_deleted_compacted_job_s_events_leave_the_log_once_droppable_with_the_floors(
        tmp_path: Path, opened: list[Node]) -> None:
    """Its events leave the log as any deleted job's (`_drop`): not while a live member
    lacks them (a peer behind them catches up by events, not a snapshot), then with the job
    index's compaction floors (`cfloor`: a peer behind them takes a snapshot), also after a
    restart; its tombstone stays while they are in the log (`pinned`)."""
    n = _open(tmp_path / "a", opened, recent_tasks=0)
    _lagging(n)
    evs = history(jobs=1, per_job=1)
    n.merge(evs)
    n.catchup.compact()
    n.janitor.delete_job("job000")
    n.catchup.compact()
    assert set(_ids(evs)) <= _rows(n) and "cfloor" not in n.local_info()
    assert n.compactor.pinned == {"job000": set(_ids(evs))}
    n.compactor.vvs = lambda: [dict(n.heads())]  # every member holds them now
    assert n.catchup.compact().dropped == len(evs)
    top = max(e.seq for e in evs)
    assert {o for o, _ in _rows(n)} == {n.peer_id}  # (its JOB_DELETED)
    assert n.local_info()["cfloor"] == {ORIGIN: top} and not n.compactor.pinned
    assert n._as_held(evs[-1]) is None  # dropped: not written back after a failed fsync
    n.log.close()
    opened.remove(n)
    again = _open(tmp_path / "a", opened)
    assert again.local_info()["cfloor"] == {ORIGIN: top}


def test_a_data_dir_of_0_1_0_opens_with_the_job_index(tmp_path: Path,
                                                      opened: list[Node]) -> None:
    d = tmp_path / "old"
    shutil.copytree(FIXTURE, d)
    n = _open(d, opened)
    jobs = set(n.state.jobs)
    n.catchup.compact()
    c = sqlite3.connect(d / "events.sqlite")
    try:
        tables = {r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    finally:
        c.close()
    assert {"job_index", "cache_index", "provider_index", "compact_floors"} <= tables
    assert jobs == set(n.state.jobs) | {j for j in n.state.compacted}


# -- snapshots: a peer behind the compaction horizon -------------------------------------------


def _run_history(n: Node, jobs: int, per_job: int) -> None:
    """`jobs` finished jobs of `per_job` tasks, emitted by `n` itself (so signed)."""
    n.emit(EventType.MEMBER, n.capabilities())
    for j in range(jobs):
        job = f"job{j:03d}"
        n.emit(EventType.JOB_SUBMITTED, {"job": job, "workflow": {"name": job, "tasks": [
            {"name": f"t{i}", "call": "ECHO", "params": {"text": f"{j}/{i}"}}
            for i in range(per_job)]}})
        for i in range(per_job):
            task = f"t{i}"
            split = n.emit(EventType.TASK_SPLIT, {"job": job, "task": task, "input": None,
                                                  "chunks": [[]]})
            base = {"job": job, "task": task, "split": list(split.id), "chunk": 0, "attempt": 0}
            n.emit(EventType.CLAIM, base)
            out_cid = _cid(f"{job}/{task}")
            n.emit(EventType.CHUNK_DONE, {**base, "output": out_cid, "cache": {}})
            n.emit(EventType.TASK_DONE, {"job": job, "task": task, "output": out_cid,
                                         "key": key_of(j, i)})
    n.flush()


def _pair(tmp_path: Path, opened: list[Node]) -> tuple[Node, Node]:
    a = _open(tmp_path / "a", opened)
    return a, _joiner(tmp_path, "b", opened)


def _v1(n: Node) -> bytes:
    """n's snapshot body for an older peer (GET /api/snapshot with no `v`)."""
    return b"".join(n.catchup.snapshot_stream(1))


def _joiner(tmp_path: Path, name: str, opened: list[Node]) -> Node:
    """A fresh peer in the mesh of the one at tmp_path/a."""
    (tmp_path / name).mkdir(mode=0o700)
    shutil.copy(tmp_path / "a" / SECRET_FILE_NAME, tmp_path / name / SECRET_FILE_NAME)
    return _open(tmp_path / name, opened)


def test_a_fresh_peer_catches_up_from_a_signed_snapshot_plus_the_events_left(
        tmp_path: Path, opened: list[Node]) -> None:
    a, b = _pair(tmp_path, opened)
    _run_history(a, jobs=3, per_job=2)
    a.catchup.compact()  # alone: the two oldest jobs' events leave its log at once
    assert a.compactor.total.dropped > 0 and a.compactor.floors
    assert b.catchup.take_snapshot(json.loads(_v1(a)),
                                   a.catchup.digest_reader()()) is None
    assert dict(b.heads()) == dict(a.heads())
    for j in ("job000", "job001"):
        assert b.catchup.job_record(j) == a.catchup.job_record(j) is not None
    assert sorted(b.state.jobs) == ["job002"]
    assert b.state.outputs[key_of(0, 0)] == _cid("job000/t0")
    assert a.peer_id in b.state.providers[_cid("job000/t0")]
    assert b.compactor.floors == a.compactor.floors  # it serves snapshots in turn
    assert b.local_info()["cfloor"] == a.local_info()["cfloor"]
    assert _ids(b.events_after({}, 1000)) == _ids(a.events_after({}, 1000))


@pytest.mark.parametrize(("tamper", "why"), [
    (lambda s, d: s["snapshot"]["records"]["jobs"].pop(), "bad_signature"),
    (lambda s, d: s["snapshot"]["heads"].update({"x": 1}), "bad_signature"),
    (lambda s, d: d.update(digest="00" * 32), "digest_mismatch"),
    (lambda s, d: s["snapshot"].update(signer="someone-else"), "not_member"),
])
def test_a_snapshot_that_does_not_check_is_refused_and_counted(
        tmp_path: Path, opened: list[Node], tamper: Callable[[Any, Any], object],
        why: str) -> None:
    a, b = _pair(tmp_path, opened)
    _run_history(a, jobs=4, per_job=1)
    a.catchup.compact()
    body, digest = json.loads(_v1(a)), a.catchup.digest_reader()()
    tamper(body, digest)
    heads = dict(b.heads())
    assert b.catchup.take_snapshot(body, digest) == why
    assert len(b.index) == 0 and b.compactor.floors == {}
    assert dict(b.heads()) != dict(a.heads()) and heads != dict(b.heads())  # events merged
    signer = body["snapshot"]["signer"]
    assert b.keyring.refused.by_origin[signer][f"snapshot_{why}"] == 1


def _take_stream(a: Node, b: Node, tmp: Path, second: Any = None,
                 tamper: Callable[[bytes], bytes] = lambda body: body) -> str | None:
    """b takes a's snapshot stream (GET /api/snapshot?v=2), spooled as _catch_up does."""
    body = tamper(b"".join(a.catchup.snapshot_stream()))
    path = tmp / "rows"
    with path.open("wb") as f:
        spool = Spool(f, 1 << 30)
        spool.feed(body)
    return b.catchup.take_stream(spool, path, second)


def test_a_fresh_peer_catches_up_from_a_snapshot_stream(
        tmp_path: Path, opened: list[Node]) -> None:
    a, b = _pair(tmp_path, opened)
    _run_history(a, jobs=3, per_job=2)
    a.catchup.compact()
    b.state.outputs[key_of(0, 0)] = "stale"  # a memory entry the snapshot's index row replaces
    assert _take_stream(a, b, tmp_path, a.catchup.digest_reader(per_job=True)()) is None
    assert dict(b.heads()) == dict(a.heads())
    for j in ("job000", "job001"):
        assert b.catchup.job_record(j) == a.catchup.job_record(j) is not None
    assert sorted(b.state.jobs) == ["job002"]
    assert b.state.outputs[key_of(0, 0)] == _cid("job000/t0")
    assert a.peer_id in b.state.providers[_cid("job000/t0")]
    assert b.compactor.floors == a.compactor.floors
    assert _ids(b.events_after({}, 1000)) == _ids(a.events_after({}, 1000))
    assert b.index.job_digests(job_digest) == a.index.job_digests(job_digest)
    c = _joiner(tmp_path, "c", opened)  # b (a member) serves it on in turn, as a stream too
    b.emit(EventType.MEMBER, b.capabilities())
    b.flush()
    assert _take_stream(b, c, tmp_path) is None
    assert dict(c.heads()) == dict(b.heads())
    assert c.catchup.job_record("job000") == a.catchup.job_record("job000")


def _in_rows(body: bytes, old: bytes, new: bytes) -> bytes:
    i = body.find(b"\n")
    assert old in body[i:]
    return body[:i] + body[i:].replace(old, new, 1)


def _in_trailer(body: bytes, old: bytes, new: bytes) -> bytes:
    i = body.rfind(b"\n")
    return body[:i] + body[i:].replace(old, new, 1)


@pytest.mark.parametrize(("tamper", "second", "why"), [
    (lambda body: _in_rows(body, b'["job00', b'["job09'), None, "bad_signature"),
    (lambda body: _in_trailer(body, b'"heads":{', b'"heads":{"x":1,'), None, "bad_signature"),
    (lambda body: body[:body.rfind(b"\n") + 1], None, "malformed"),  # no trailer
    (lambda body: body, "wrong", "digest_mismatch"),
])
def test_a_snapshot_stream_that_does_not_check_is_refused_and_counted(
        tmp_path: Path, opened: list[Node], tamper: Callable[[bytes], bytes], second: Any,
        why: str) -> None:
    a, b = _pair(tmp_path, opened)
    _run_history(a, jobs=4, per_job=1)
    a.catchup.compact()
    digests = a.catchup.digest_reader(per_job=True)()
    if second == "wrong":
        digests["jobs"]["job000"] = "0" * 32
    assert _take_stream(a, b, tmp_path, digests, tamper) == why
    assert len(b.index) == 0 and b.compactor.floors == {}
    if why != "malformed":
        assert b.keyring.refused.by_origin[a.peer_id][f"snapshot_{why}"] == 1


def test_a_second_member_that_compacted_other_jobs_does_not_refuse(
        tmp_path: Path, opened: list[Node]) -> None:
    """Item 2: two honest peers whose indexes differ (one compacted, or dropped past the
    horizon, what the other holds) agree on every job both hold: the snapshot is taken."""
    a, b = _pair(tmp_path, opened)
    _run_history(a, jobs=4, per_job=1)
    a.catchup.compact()
    digests = a.catchup.digest_reader(per_job=True)()
    assert set(digests["jobs"]) == {"job000", "job001"}
    del digests["jobs"]["job000"]  # the second never compacted job000
    digests["jobs"]["job777"] = "0" * 32  # and holds one the signer dropped from its index
    assert _take_stream(a, b, tmp_path, digests) is None
    assert len(b.index) == 2
    # the previous form of snapshot is checked against per-job digests the same way
    c = _joiner(tmp_path, "c", opened)
    assert c.catchup.take_snapshot(json.loads(_v1(a)), digests) is None
    digests["jobs"]["job001"] = "0" * 32
    d = _joiner(tmp_path, "d", opened)
    assert d.catchup.take_snapshot(json.loads(_v1(a)), digests) == "digest_mismatch"


def test_a_late_event_of_a_compacted_job_does_not_bring_it_back(
        tmp_path: Path, opened: list[Node]) -> None:
    n = _open(tmp_path / "a", opened, recent_tasks=0)
    evs = history(jobs=1, per_job=1)
    n.merge(evs)
    n.catchup.compact()
    record = n.catchup.job_record("job000")
    late = Event(ORIGIN, len(evs) + 1, evs[-1].hlc + 1, EventType.JOB_CANCELLED,
                 {"job": "job000", "reason": "late"})
    assert n.merge([late]) == [late]
    assert "job000" not in n.state.jobs and "job000" not in n.state.cancelled
    assert late.id not in n.state.events and (ORIGIN, len(evs) + 1) in _rows(n)  # disk only
    assert n.catchup.job_record("job000") == record
    assert _ids(n.events_after({ORIGIN: len(evs)}, 10)) == [late.id]


def test_an_unprovide_reaches_a_provider_read_from_the_job_index(
        tmp_path: Path, opened: list[Node]) -> None:
    n = _open(tmp_path / "a", opened, recent_tasks=0)
    evs = history(jobs=1, per_job=1)
    n.merge(evs)
    n.catchup.compact()
    cid = _cid("job000/t0")
    assert dict.get(n.state.providers, cid) is None  # not in memory: read on demand
    assert n.state.providers.get(cid) == {ORIGIN}
    gone = Event(ORIGIN, len(evs) + 1, evs[-1].hlc + 1, EventType.UNPROVIDE, {"cids": [cid]})
    n.merge([gone])
    assert not n.state.providers.get(cid)  # an empty set stays in front of the index's row


def test_a_refold_after_a_conflict_keeps_what_compaction_holds(
        tmp_path: Path, opened: list[Node]) -> None:
    """The conflict rule folds the state again from the events in memory: compacted jobs stay
    compacted, heads stay over the events that left memory, and the cache entries read from
    the job index keep working."""
    n = _open(tmp_path / "a", opened)
    _lagging(n)
    n.merge(history(jobs=3, per_job=2, live=1))
    n.catchup.compact()
    heads, jobs = dict(n.state.heads), sorted(n.state.jobs)
    assert n.state.evicted and n.state.compacted == {"job000", "job001"}
    n.state.refold()
    assert dict(n.state.heads) == heads and sorted(n.state.jobs) == jobs
    assert n.state.compacted == {"job000", "job001"} and n.state.evicted
    assert n.state.outputs[key_of(0, 1)] == _cid("job000/t1")  # read from the job index
    assert ORIGIN in n.state.providers[_cid("job000/t1")]
    assert _ids(n.events_after({ORIGIN: 3}, 4)) == [(ORIGIN, q) for q in range(4, 8)]


# -- snapshots of version 3 (peer.log.snapframe): thin job rows, rows taken after -------------


def _take_v3(a: Node, b: Node, tmp: Path, second: Any = None,
             tamper: Callable[[bytes], bytes] = lambda body: body) -> str | None:
    """b takes a's version 3 stream (GET /api/snapshot?v=3), spooled as _catch_up does."""
    body = tamper(b"".join(a.catchup.snapshot_stream(v=3)))
    path = tmp / "rows3"
    with path.open("wb") as f:
        spool = FrameSpool(f, 1 << 30)
        spool.feed(body)
    return b.catchup.take_stream(spool, path, second)


@pytest.mark.parametrize("v", [2, 3])
def test_a_spool_swapped_for_a_symlink_after_its_download_is_not_read_through(
        tmp_path: Path, opened: list[Node], v: int) -> None:
    """The download's spool was read back by path (`rows.open`): a symlink put there
    between its write and its read (a process of the peer's user) was followed, its
    target's rows taken. Now a DataError names the spool; nothing is taken, the target is
    left alone."""
    a, b = _pair(tmp_path, opened)
    _run_history(a, jobs=3, per_job=2)
    a.catchup.compact()
    body = b"".join(a.catchup.snapshot_stream(v=v))
    path, canary = tmp_path / "rows", tmp_path / "canary"
    with path.open("wb") as f:
        spool = (FrameSpool if v == 3 else Spool)(f, 1 << 30)
        spool.feed(body)
    path.rename(canary)  # (rows that check, outside the data dir)
    path.symlink_to(canary)
    rows = canary.read_bytes()
    with pytest.raises(DataError, match=f"{path} .*is a symlink, not a file"):
        b.catchup.take_stream(spool, path)
    assert len(b.index) == 0 and canary.read_bytes() == rows
    assert not b.index.snapshots_pending() and not (tmp_path / "b" / "snapshots").exists()


def test_a_fresh_peer_catches_up_from_a_v3_stream_and_takes_its_rows_after(
        tmp_path: Path, opened: list[Node]) -> None:
    a, b = _pair(tmp_path, opened)
    _run_history(a, jobs=3, per_job=2)
    a.catchup.compact()
    assert _take_v3(a, b, tmp_path, a.catchup.digest_reader(per_job=True, v=3)()) is None
    assert dict(b.heads()) == dict(a.heads())
    assert sorted(b.state.jobs) == ["job002"] and b.compactor.floors == a.compactor.floors
    assert not b.index.snapshots_pending()  # no loop: the rows were taken at once
    assert not list((tmp_path / "b" / "snapshots").iterdir())
    assert b.state.outputs[key_of(0, 0)] == _cid("job000/t0")
    assert a.peer_id in b.state.providers[_cid("job000/t0")]
    assert b.index.thin_digests(job_digest3) == a.index.thin_digests(job_digest3)
    # the list shows thin entries; the full record is absent until fetched, then checked
    page, _ = page_jobs(b.state, 10, None, b.catchup.index.page)
    thin_entry = next(e for e in page if isinstance(e, dict) and e["id"] == "job000")
    assert thin_entry["partial"] and thin_entry["n_tasks"] == 2 and thin_entry["tasks"] == []
    assert b.catchup.job_record("job000") is None and b.catchup.record_texts("job000") is None
    texts = a.catchup.record_texts("job000")
    assert texts is not None
    sha = b.index.thin_sha("job000")
    assert sha is not None
    b.index.fill("job000", check_record(sha, texts))
    assert b.catchup.job_record("job000") == a.catchup.job_record("job000") is not None
    assert b.index.thin_sha("job000") is None and b.catchup.record_texts("job000") == texts


@pytest.mark.parametrize(("tamper", "second", "why"), [
    (lambda body: body.replace(b'"job000"', b'"job009"', 1), None, "bad_signature"),
    (lambda body: body[:-40], None, "malformed"),  # the trailer cut short
    (lambda body: body, "wrong", "digest_mismatch"),
])
def test_a_v3_stream_that_does_not_check_is_refused_and_counted(
        tmp_path: Path, opened: list[Node], tamper: Callable[[bytes], bytes], second: Any,
        why: str) -> None:
    a, b = _pair(tmp_path, opened)
    _run_history(a, jobs=4, per_job=1)
    a.catchup.compact()
    digests = a.catchup.digest_reader(per_job=True, v=3)()
    if second == "wrong":
        digests["jobs"]["job000"] = "0" * 32
    assert _take_v3(a, b, tmp_path, digests, tamper) == why
    assert len(b.index) == 0 and b.compactor.floors == {} and not b.index.snapshots_pending()
    if why != "malformed":
        assert b.keyring.refused.by_origin[a.peer_id][f"snapshot_{why}"] == 1


def test_a_v3_snapshots_rows_are_taken_in_slices_and_resumed_after_a_restart(
        tmp_path: Path, opened: list[Node], monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = _pair(tmp_path, opened)
    _run_history(a, jobs=6, per_job=3)
    a.catchup.compact()
    monkeypatch.setattr(b.catchup, "_ensure_ingest", lambda: None)  # as if the peer stopped at once
    assert _take_v3(a, b, tmp_path) is None
    assert dict(b.heads()) == dict(a.heads()) and len(b.index.snapshots_pending()) == 1
    assert b.index.entry(1, key_of(0, 0)) is None  # not taken yet: a lookup misses
    assert b.compactor.ingest(rows=1)  # one frame
    b.log.close()
    opened.remove(b)
    b2 = _open(tmp_path / "b", opened)
    (path, at, signer), = b2.index.snapshots_pending()
    assert at > 0 and signer == a.peer_id
    while b2.compactor.ingest(rows=1):
        pass
    assert not b2.index.snapshots_pending() and not Path(path).exists()
    assert {e.key for e in b2.index.entries()} == {e.key for e in a.index.entries()}
    assert sorted(b2.index.providers()) == sorted(a.index.providers())


def test_a_malformed_frame_found_while_taking_rows_ends_them_and_is_counted(
        tmp_path: Path, opened: list[Node], monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = _pair(tmp_path, opened)
    _run_history(a, jobs=3, per_job=2)
    a.catchup.compact()
    monkeypatch.setattr(b.catchup, "_ensure_ingest", lambda: None)
    assert _take_v3(a, b, tmp_path) is None
    (path, at, _), = b.index.snapshots_pending()
    with open(path, "r+b") as f:  # the spool is damaged on disk after it was checked
        f.seek(at + 5)
        f.write(b"\xff\xff\xff\xff")
    assert not b.compactor.ingest()
    assert not b.index.snapshots_pending() and not Path(path).exists()
    assert b.keyring.refused.by_origin[a.peer_id]["snapshot_malformed"] == 1
    assert dict(b.heads()) == dict(a.heads())  # what was taken stays


async def test_a_thin_jobs_record_is_fetched_from_a_member_and_checked(
        tmp_path: Path, opened: list[Node], monkeypatch: pytest.MonkeyPatch) -> None:
    from aiohttp import web
    from aiohttp.test_utils import TestServer

    a, b = _pair(tmp_path, opened)
    _run_history(a, jobs=3, per_job=2)
    a.catchup.compact()
    assert _take_v3(a, b, tmp_path) is None
    served: list[Any] = []

    async def record(request: web.Request) -> web.Response:
        assert request.query["v"] == "3"
        texts = a.catchup.record_texts(request.query["record"])
        if served and texts is not None:  # the second answer: tampered
            texts[1] = texts[1].replace("job", "jab")
        served.append(texts)
        return web.json_response(texts) if texts else web.Response(status=404)

    app = web.Application()
    app.router.add_get("/api/snapshot", record)
    async with TestServer(app, host="127.0.0.1") as server:
        url = str(server.make_url("")).rstrip("/")
        monkeypatch.setattr(b, "live_peers", lambda: {
            a.peer_id: {"http": url, "features": [SNAPSHOT_FEATURE]},
            "old": {"http": "http://127.0.0.1:9", "features": []}})  # not asked
        assert await b.catchup.fetch_record("job001") == a.catchup.job_record("job001") is not None
        assert await b.catchup.fetch_record("job000") is None  # the tampered answer is refused
        assert b.keyring.refused.by_origin[a.peer_id]["record_mismatch"] == 1
        assert b.index.thin_sha("job000") is not None and len(served) == 2
        assert await b.catchup.fetch_record("nope") is None and len(served) == 2


@pytest.mark.parametrize("how", ["long", "gzip"])
async def test_a_record_answer_longer_than_its_bound_is_refused_even_compressed(
        tmp_path: Path, opened: list[Node], monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture, how: str) -> None:
    """Review r2, finding 4: a record's answer was read whole, and decompressed (a 0.2 MB
    gzip answer became a 200 MB body). Now at most `max_record_bytes` are read, as sent: a
    right record padded past the bound is refused, a gzip one is not decompressed (its
    bytes are no JSON)."""
    import gzip

    from aiohttp import web
    from aiohttp.test_utils import TestServer

    a, b = _pair(tmp_path, opened)
    _run_history(a, jobs=3, per_job=2)
    a.catchup.compact()
    assert _take_v3(a, b, tmp_path) is None  # b holds job001 thin: it fetches the record
    bound = 1 << 16
    b.catchup.cfg = dataclasses.replace(b.catchup.cfg, max_record_bytes=bound)

    async def record(request: web.Request) -> web.Response:
        texts = json.dumps(a.catchup.record_texts(request.query["record"])).encode()
        assert len(texts) < bound
        body = texts + b" " * (2 * bound)  # (JSON: white space may follow)
        if how == "gzip":
            return web.Response(body=gzip.compress(body), content_type="application/json",
                                headers={"Content-Encoding": "gzip"})
        return web.Response(body=body, content_type="application/json")

    app = web.Application()
    app.router.add_get("/api/snapshot", record)
    async with TestServer(app, host="127.0.0.1") as server:
        url = str(server.make_url("")).rstrip("/")
        monkeypatch.setattr(b, "live_peers", lambda: {
            a.peer_id: {"http": url, "features": [SNAPSHOT_FEATURE]}})
        with caplog.at_level(logging.WARNING, logger="banzai.catchup"):
            assert await b.catchup.fetch_record("job001") is None
        assert b.index.thin_sha("job001") is not None  # (still thin)
        said = {"long": f"an answer longer than {bound} bytes", "gzip": "no record of job"}
        assert said[how] in caplog.text


class _Answer:
    """An aiohttp answer as `_read_within` reads it: its Content-Length (None: chunked) and
    a body of `size` bytes in 4 KiB pieces, counting the pieces read."""

    def __init__(self, content_length: int | None, size: int) -> None:
        self.content_length, self._size, self.read = content_length, size, 0
        self.content = self

    async def iter_any(self) -> AsyncIterator[bytes]:
        for _ in range(-(-self._size // 4096)):
            self.read += 1
            yield b" " * 4096


@pytest.mark.parametrize("declared", [True, False])
async def test_a_record_answer_over_its_bound_is_refused_as_soon_as_that_shows(
        declared: bool) -> None:
    """(Session 37's list.) An answer whose Content-Length is over the bound is refused
    before a byte of it is read (it was read up to the bound first); one without is read in
    pieces and refused at the first past the bound."""
    bound, size = 1 << 16, 1 << 20
    answer = _Answer(size if declared else None, size)
    with pytest.raises(ValueError, match=f"an answer longer than {bound} bytes"):
        await catchup_mod._read_within(answer, bound)  # type: ignore[arg-type]
    assert answer.read == (0 if declared else bound // 4096 + 1)
    within = _Answer(bound, bound)
    assert await catchup_mod._read_within(within, bound) == b" " * bound  # type: ignore[arg-type]


def test_the_record_bound_is_a_snapshot_line_s_and_must_be_positive(tmp_path: Path) -> None:
    from peer.errors import ConfigError
    from peer.log.snapstream import MAX_LINE_BYTES

    assert catchup_mod.CatchUpConfig(tmp_path).max_record_bytes == MAX_LINE_BYTES
    with pytest.raises(ConfigError, match="max_record_bytes"):
        catchup_mod.CatchUpConfig(tmp_path, max_record_bytes=0)


async def test_answers_nested_past_the_stack_are_refused_not_raised(
        tmp_path: Path, opened: list[Node], monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """A member's HTTP answers (an older peer's one-body snapshot, a second member's
    digests, a job's record) nested deeper than json.loads can go raised RecursionError out
    of the catch-up task; each is now a refused answer, logged, and nothing is taken."""
    from aiohttp import web
    from aiohttp.test_utils import TestServer

    a, b = _pair(tmp_path, opened)
    _run_history(a, jobs=3, per_job=2)
    a.catchup.compact()
    assert _take_v3(a, b, tmp_path) is None  # b holds job001 thin: it fetches the record
    deep = b"[" * 100_000 + b"]" * 100_000
    asked: list[str] = []

    async def snapshot(request: web.Request) -> web.Response:
        asked.append(request.query.get("digest") or request.query.get("record") or "body")
        return web.Response(body=deep, content_type="application/json")

    app = web.Application()
    app.router.add_get("/api/snapshot", snapshot)
    async with TestServer(app, host="127.0.0.1") as server:
        url = str(server.make_url("")).rstrip("/")
        urls = {a.peer_id: url, "other": url}
        monkeypatch.setattr(b, "peer_urls", lambda: urls)
        monkeypatch.setattr(b, "live_peers", lambda: {
            p: {"http": u, "features": [SNAPSHOT_FEATURE]} for p, u in urls.items()})
        heads = dict(b.heads())
        with caplog.at_level(logging.WARNING, logger="banzai.catchup"):
            await b.catchup._catch_up(a.peer_id)  # v3 asked, an older peer's JSON answered
            assert await b.catchup.fetch_record("job001") is None
        assert "no snapshot from" in caplog.text and "nested deeper" in caplog.text
        assert "no record of job job001" in caplog.text
        assert dict(b.heads()) == heads and {"body", "1", "job001"} <= set(asked)


async def test_a_member_at_its_bound_of_snapshot_serves_is_asked_again_later_not_refused(
        tmp_path: Path, opened: list[Node], monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """503 (`http_max_snapshot_serves` reached): the asked peer's is logged, counts no
    refusal, takes nothing (asked again after `retry_s`); a second member's digest is asked
    of the next member instead."""
    from aiohttp import web
    from aiohttp.test_utils import TestServer

    a, b = _pair(tmp_path, opened)
    _run_history(a, jobs=3, per_job=2)
    a.catchup.compact()
    digests = a.catchup.digest_reader(per_job=True, v=3)()

    def route(name: str) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def serve(request: web.Request) -> web.Response:
            asked.append((name, request.query.get("digest", "body")))
            if name != "c":
                return web.json_response({"error": "busy"}, status=503)
            return web.json_response(digests)
        return serve

    asked: list[tuple[str, str]] = []
    app = web.Application()
    for name in ("a", "busy", "c"):
        app.router.add_get(f"/{name}/api/snapshot", route(name))
    async with TestServer(app, host="127.0.0.1") as server:
        base = str(server.make_url("")).rstrip("/")
        urls = {a.peer_id: f"{base}/a", "busy": f"{base}/busy", "c": f"{base}/c"}
        monkeypatch.setattr(b, "peer_urls", lambda: urls)
        monkeypatch.setattr(b, "live_peers", lambda: {
            p: {"http": u, "features": [SNAPSHOT_FEATURE]} for p, u in urls.items()})
        heads = dict(b.heads())
        with caplog.at_level(logging.WARNING, logger="banzai.catchup"):
            await b.catchup._catch_up(a.peer_id)
        assert "no snapshot from" in caplog.text and "503" in caplog.text
        assert dict(b.heads()) == heads and not b.keyring.refused.by_origin
        async with aiohttp.ClientSession() as http:
            assert await b.catchup._second(http, urls, a.peer_id, "3") == digests
    assert ("busy", "1") in asked and asked[-1] == ("c", "1")


async def test_a_member_that_gives_no_digests_is_passed_for_the_next(
        tmp_path: Path, opened: list[Node], monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """The second member's check gave up at the first member that did not answer (a
    connection refused, an answer that is not JSON): the snapshot was then taken unchecked
    though a later member could check it. Each such member is now logged and passed for the
    next."""
    import socket

    from aiohttp import web
    from aiohttp.test_utils import TestServer

    a, b = _pair(tmp_path, opened)
    _run_history(a, jobs=3, per_job=2)
    a.catchup.compact()
    digests = a.catchup.digest_reader(per_job=True, v=3)()
    with socket.socket() as s:  # a port nothing listens on: the connection is refused
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]

    async def garbled(request: web.Request) -> web.Response:
        return web.Response(body=b"not json", content_type="application/json")

    async def good(request: web.Request) -> web.Response:
        return web.json_response(digests)

    app = web.Application()
    app.router.add_get("/garbled/api/snapshot", garbled)
    app.router.add_get("/good/api/snapshot", good)
    async with TestServer(app, host="127.0.0.1") as server:
        base = str(server.make_url("")).rstrip("/")
        urls = {"down": f"http://127.0.0.1:{closed}", "garbled": f"{base}/garbled",
                "good": f"{base}/good"}
        monkeypatch.setattr(b, "live_peers", lambda: {
            p: {"http": u, "features": [SNAPSHOT_FEATURE]} for p, u in urls.items()})
        with caplog.at_level(logging.WARNING, logger="banzai.catchup"):
            async with aiohttp.ClientSession() as http:
                assert await b.catchup._second(http, urls, a.peer_id, "3") == digests
    assert "no snapshot digests from down" in caplog.text
    assert "no snapshot digests from garbled" in caplog.text


async def _take_v1_over_http(a: Node, b: Node, monkeypatch: pytest.MonkeyPatch) -> None:
    """b catches up from a as from an older peer: its one JSON body (GET /api/snapshot with
    no `v`) answered whatever b asks."""
    from aiohttp import web
    from aiohttp.test_utils import TestServer

    body = _v1(a)

    async def snapshot(request: web.Request) -> web.Response:
        if request.query.get("digest"):
            return web.Response(status=404)  # (no second member's check)
        return web.Response(body=body, content_type="application/json")

    app = web.Application()
    app.router.add_get("/api/snapshot", snapshot)
    async with TestServer(app, host="127.0.0.1") as server:
        url = str(server.make_url("")).rstrip("/")
        monkeypatch.setattr(b, "peer_urls", lambda: {a.peer_id: url})
        monkeypatch.setattr(b, "live_peers", lambda: {a.peer_id: {"http": url}})
        await b.catchup._catch_up(a.peer_id)


async def test_an_older_peers_snapshot_body_is_parsed_off_the_loop(
        tmp_path: Path, opened: list[Node], monkeypatch: pytest.MonkeyPatch) -> None:
    """The one body of an older peer (26 MB at 4,750 jobs: 0.3-0.65 s of json.loads) is
    parsed in a worker thread, sharing the GIL: its parse is held here until the loop has
    run, which it can only if the parse is off it. Then it is taken."""
    a, b = _pair(tmp_path, opened)
    _run_history(a, jobs=3, per_job=2)
    a.catchup.compact()
    started, answered = threading.Event(), threading.Event()
    parses: list[tuple[int, bool, bool]] = []
    loads = catchup_mod.loads_within

    def held(data: Any, *args: Any, **kw: Any) -> Any:
        if bytes(data[:12]) == b'{"snapshot":':
            started.set()
            parses.append((threading.get_ident(), answered.wait(5), kw.get("sharing", False)))
        return loads(data, *args, **kw)

    monkeypatch.setattr(catchup_mod, "loads_within", held)
    catching = asyncio.create_task(_take_v1_over_http(a, b, monkeypatch))
    assert await asyncio.to_thread(started.wait, 10)
    answered.set()  # (on the loop)
    await catching
    assert [(ident != threading.get_ident(), on_time, sharing)
            for ident, on_time, sharing in parses] == [(True, True, True)]
    assert dict(b.heads()) == dict(a.heads()) and b.catchup.job_record("job000") is not None


@pytest.mark.parametrize("v", [2, 3])
async def test_a_members_snapshot_stream_is_parsed_and_decoded_off_the_loop(
        tmp_path: Path, opened: list[Node], monkeypatch: pytest.MonkeyPatch, v: int) -> None:
    """A stream's events line (v2's first line, v3's head frame: 1.4 MB at 200,000 tasks)
    was parsed (json.loads) and its events decoded on the loop. Both are now done in a
    worker thread, the parse sharing the GIL: the parse is held here until the loop has
    run another coroutine, which it can only if the parse is off it. Then the snapshot is
    taken as before."""
    from aiohttp import web
    from aiohttp.test_utils import TestServer

    from peer.log.snapframe import CONTENT_TYPE

    a, b = _pair(tmp_path, opened)
    _run_history(a, jobs=3, per_job=2)
    a.catchup.compact()
    started, answered = threading.Event(), threading.Event()
    parses: list[tuple[int, bool, bool]] = []
    decodes: list[int] = []
    loads, decode = catchup_mod.loads_within, getattr(catchup_mod, "decode_events", None)

    def held(data: Any, *args: Any, **kw: Any) -> Any:
        if bytes(data[:11]) == b'{"events":[':
            started.set()
            parses.append((threading.get_ident(), answered.wait(5), kw.get("sharing", False)))
        return loads(data, *args, **kw)

    def decoding(raw: Any) -> Any:
        decodes.append(threading.get_ident())
        return decode(raw)

    monkeypatch.setattr(catchup_mod, "loads_within", held)
    monkeypatch.setattr(catchup_mod, "decode_events", decoding, raising=False)

    async def snapshot(request: web.Request) -> web.Response:
        if request.query.get("digest"):
            return web.Response(status=404)  # (no second member's check)
        body = b"".join(a.catchup.snapshot_stream(v, request.query.get("part")))
        return web.Response(body=body, content_type=CONTENT_TYPE if v == 3
                            else "application/x-ndjson")

    async def ticks() -> None:  # another coroutine on the loop, meanwhile
        await asyncio.to_thread(started.wait, 10)
        answered.set()

    app = web.Application()
    app.router.add_get("/api/snapshot", snapshot)
    async with TestServer(app, host="127.0.0.1") as server:
        url = str(server.make_url("")).rstrip("/")
        features = [SNAPSHOT_FEATURE] if v == 3 else []
        monkeypatch.setattr(b, "peer_urls", lambda: {a.peer_id: url})
        monkeypatch.setattr(b, "live_peers", lambda: {
            a.peer_id: {"http": url, "features": features}})
        ticker = asyncio.create_task(ticks())
        await b.catchup._catch_up(a.peer_id)
        await ticker
        await b.catchup.close()
    loop = threading.get_ident()
    assert [(ident != loop, on_time, sharing) for ident, on_time, sharing in parses] == [
        (True, True, True)]
    assert decodes and all(ident != loop for ident in decodes)
    assert dict(b.heads()) == dict(a.heads()) and _index_jobs(b) == _index_jobs(a)


@pytest.mark.parametrize("bound", ["max_snapshot_bytes", "max_snapshot_v1_bytes"])
async def test_an_older_peers_snapshot_body_over_the_bound_is_refused(
        tmp_path: Path, opened: list[Node], monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture, bound: str) -> None:
    """`max_snapshot_bytes`, and `max_snapshot_v1_bytes` (it is held in memory: 64 GiB was
    the bound of spools on disk), bound the one body of an older peer (read whole, it was
    not bounded): past it, nothing is taken, nothing counted, it is logged."""
    a, b = _pair(tmp_path, opened)
    _run_history(a, jobs=3, per_job=2)
    a.catchup.compact()
    monkeypatch.setattr(b.catchup, "cfg", dataclasses.replace(b.catchup.cfg, **{bound: 1000}))
    heads = dict(b.heads())
    with caplog.at_level(logging.WARNING, logger="banzai.catchup"):
        await _take_v1_over_http(a, b, monkeypatch)
    assert "a snapshot over 1000 bytes" in caplog.text
    assert dict(b.heads()) == heads and not b.keyring.refused.by_origin


def test_records_of_an_earlier_release_are_sent_thin_and_given_thin_rows_later(
        tmp_path: Path, opened: list[Node]) -> None:
    a, b = _pair(tmp_path, opened)
    _run_history(a, jobs=3, per_job=2)
    a.catchup.compact()
    digests = a.index.thin_digests(job_digest3)
    a.log.db.execute("DELETE FROM job_thin")  # as a data dir of the previous release holds
    a.index._thin_owed()  # (as a restart on such a file finds it: not scanned yet)
    assert a.index.thin_digests(job_digest3) == digests  # made of the full records
    assert _take_v3(a, b, tmp_path, a.catchup.digest_reader(per_job=True, v=3)()) is None
    assert b.index.thin_digests(job_digest3) == digests
    assert a.index.backfill(1) == 1 and a.index.backfill(10) == 1 and a.index.backfill(10) == 0
    assert a.index.thin_digests(job_digest3) == digests


def test_a_peer_holding_thin_rows_serves_an_older_peer_the_jobs_it_holds_in_full(
        tmp_path: Path, opened: list[Node]) -> None:
    """A peer of the previous release asks `?v=2`: the thin rows of jobs whose records were
    never fetched are not sent (it could not fetch or check them), nor in the v2 digests."""
    a, b = _pair(tmp_path, opened)
    _run_history(a, jobs=3, per_job=2)
    a.catchup.compact()
    assert _take_v3(a, b, tmp_path) is None
    texts = a.catchup.record_texts("job001")
    assert texts is not None
    b.index.fill("job001", texts)
    b.emit(EventType.MEMBER, b.capabilities())
    b.flush()
    assert set(b.catchup.digest_reader(per_job=True)()["jobs"]) == {"job001"}
    c = _joiner(tmp_path, "c", opened)
    assert _take_stream(b, c, tmp_path, a.catchup.digest_reader(per_job=True)()) is None
    assert dict(c.heads()) == dict(b.heads())
    assert _index_jobs(c) == {"job001"}
    assert c.catchup.job_record("job001") == a.catchup.job_record("job001")


def _spooled(body: bytes, path: Path) -> FrameSpool:
    with path.open("wb") as f:
        spool = FrameSpool(f, 1 << 30)
        spool.feed(body)
    return spool


def test_a_fresh_peer_takes_the_jobs_part_then_fetches_the_rows_part(
        tmp_path: Path, opened: list[Node]) -> None:
    """`?v=3&part=jobs` (what `_catch_up` asks): caught up with the thin jobs and heads; the
    cache and provider rows are owed, then fetched (`?part=rows`, its trailer checked, no
    heads vouched for) and taken."""
    a, b = _pair(tmp_path, opened)
    _run_history(a, jobs=3, per_job=2)
    a.catchup.compact()
    spool = _spooled(b"".join(a.catchup.snapshot_stream(v=3, part="jobs")), tmp_path / "jobs")
    assert b.catchup.take_stream(spool, tmp_path / "jobs") is None
    assert dict(b.heads()) == dict(a.heads()) and b.index.snapshots_owed() == [a.peer_id]
    assert _index_jobs(b) == _index_jobs(a) and b.index.entry(1, key_of(0, 0)) is None
    rows = b"".join(a.catchup.snapshot_stream(v=3, part="rows"))
    bad = _spooled(rows.replace(key_of(0, 0).encode(), key_of(9, 9).encode(), 1),
                   tmp_path / "bad")
    assert not b.catchup.take_rows_part(bad, tmp_path / "bad", a.peer_id)
    assert b.keyring.refused.by_origin[a.peer_id]["snapshot_bad_signature"] == 1
    spool = _spooled(rows, tmp_path / "rows")
    assert spool.trailer().heads == {}  # it cannot pass for a snapshot
    assert b.catchup.take_rows_part(spool, tmp_path / "rows", a.peer_id)
    assert not b.index.snapshots_owed() and not b.index.snapshots_pending()
    assert b.state.outputs[key_of(0, 0)] == _cid("job000/t0")
    assert sorted(b.index.providers()) == sorted(a.index.providers())


@contextlib.asynccontextmanager
async def _v3_server(a: Node, b: Node, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[str]:
    """`a` with a short compacted history, its v3 snapshot (parts jobs and rows, no digests)
    served on loopback as `b`'s only live member; yields its URL."""
    from aiohttp import web
    from aiohttp.test_utils import TestServer

    _run_history(a, jobs=3, per_job=2)
    a.catchup.compact()
    parts = {p: b"".join(a.catchup.snapshot_stream(v=3, part=p)) for p in ("jobs", "rows")}

    async def snapshot(request: web.Request) -> web.Response:
        if request.query.get("digest"):
            return web.Response(status=404)
        return web.Response(body=parts[request.query["part"]],
                            content_type=catchup_mod.SNAPSHOT_TYPE_V3)

    app = web.Application()
    app.router.add_get("/api/snapshot", snapshot)
    async with TestServer(app, host="127.0.0.1") as server:
        url = str(server.make_url("")).rstrip("/")
        monkeypatch.setattr(b, "peer_urls", lambda: {a.peer_id: url})
        monkeypatch.setattr(b, "live_peers", lambda: {
            a.peer_id: {"http": url, "features": [SNAPSHOT_FEATURE]}})
        yield url


async def test_a_download_spool_removed_by_another_process_is_logged_not_raised(
        tmp_path: Path, opened: list[Node], monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """A snapshot's spool in tmp/ removed by another process (a temp cleaner) between its
    download and its take raised FileNotFoundError out of the catch-up task and out of
    the fetch of the rows owed. Each is one warning now (not damage: asked again later),
    and nothing is taken."""
    a, b = _pair(tmp_path, opened)

    def removed_first(take: Callable[..., Any]) -> Callable[..., Any]:
        def take_removed(spool: Any, rows: Path, *args: Any) -> Any:
            rows.unlink()
            return take(spool, rows, *args)
        return take_removed

    monkeypatch.setattr(b.catchup, "take_stream", removed_first(b.catchup.take_stream))
    monkeypatch.setattr(b.catchup, "take_rows_part", removed_first(b.catchup.take_rows_part))
    async with _v3_server(a, b, monkeypatch) as url:
        heads = dict(b.heads())
        with caplog.at_level(logging.WARNING, logger="banzai.catchup"):
            await b.catchup._catch_up(a.peer_id)
            assert not await b.catchup._rows_from(url, a.peer_id)
    assert caplog.text.count("No such file or directory") == 2
    assert "no snapshot from" in caplog.text and f"no snapshot rows from {url}" in caplog.text
    assert len(b.index) == 0 and not b.index.snapshots_pending()
    assert dict(b.heads()) != dict(a.heads()) and dict(b.heads()) != heads  # (events merged)


async def test_a_temp_dir_made_a_symlink_after_a_download_is_spooled_is_not_followed(
        tmp_path: Path, opened: list[Node], monkeypatch: pytest.MonkeyPatch) -> None:
    """A download's spool was made by a descriptor of tmp/, then read back, moved into
    snapshots/ and removed by its path: tmp/ swapped for a symlink after the spool was made
    (a directory elsewhere holding the same names) made each act on the file there (its
    rows read, it moved into snapshots/, it deleted). Each goes by the descriptor now: the
    spools downloaded are taken, what the link points to is left alone."""
    a, b = _pair(tmp_path, opened)
    tmp, moved, canary = tmp_path / "b" / "tmp", tmp_path / "moved", tmp_path / "canary"
    canary.mkdir()
    decoys: dict[str, bytes] = {}

    def swapped(new_spool: Callable[..., Any]) -> Callable[..., Any]:
        def new_spool_swapped(*args: Any) -> Any:
            made = new_spool(*args)
            tmp.rename(moved)  # the race: tmp/ replaced by a symlink once the spool is made
            tmp.symlink_to(canary)
            decoys[made[0].name] = b"another program's file\n"
            (canary / made[0].name).write_bytes(decoys[made[0].name])
            return made
        return new_spool_swapped

    def restored() -> None:
        tmp.unlink()
        moved.rename(tmp)

    monkeypatch.setattr(b.catchup, "_new_spool", swapped(b.catchup._new_spool))
    async with _v3_server(a, b, monkeypatch) as url:
        await b.catchup._catch_up(a.peer_id)
        restored()
        assert b.index.snapshots_owed() == [a.peer_id]
        assert await b.catchup._rows_from(url, a.peer_id)
        restored()
    assert {p.name: p.read_bytes() for p in canary.iterdir()} == decoys and len(decoys) == 2
    assert list(tmp.iterdir()) == []  # (the spools: moved into snapshots/ or removed)
    assert dict(b.heads()) == dict(a.heads()) and _index_jobs(b) == _index_jobs(a)
    while b.compactor.ingest():
        pass
    assert sorted(b.index.providers()) == sorted(a.index.providers())


def _floor_known_to(n: Node) -> dict[str, Any]:
    """A member's heartbeat info announcing a floor above `n`'s head of an origin `n`
    knows (its own MEMBER event: a floor of an origin it knows nothing of starts no
    catch-up, review r2 of session 48, M1)."""
    if n.peer_id not in n.state.members:
        n.emit(EventType.MEMBER, n.capabilities())
        n.flush()
    return {"cfloor": {n.peer_id: n.state.heads[n.peer_id] + 5}}


async def test_a_slow_catch_up_is_not_raced_by_a_second_one(
        tmp_path: Path, opened: list[Node], monkeypatch: pytest.MonkeyPatch) -> None:
    """A download longer than the retry interval (the first 1M-task run: 35 s) must not be
    joined by a second request writing the same spool."""
    import asyncio

    b = _open(tmp_path / "b", opened)
    started: list[str] = []
    gate = asyncio.Event()

    async def slow(peer_id: str) -> None:
        started.append(peer_id)
        await gate.wait()

    monkeypatch.setattr(b.catchup, "_catch_up", slow)
    monkeypatch.setattr(b.catchup, "_loop", asyncio.get_running_loop())
    b.catchup.behind("x", _floor_known_to(b))
    await asyncio.sleep(0)
    b.catchup._snapshot_next = 0.0  # the retry interval has passed
    b.catchup.behind("x", _floor_known_to(b))
    await asyncio.sleep(0)
    assert started == ["x"]
    gate.set()
    for _ in range(3):
        await asyncio.sleep(0)
    b.catchup.behind("x", _floor_known_to(b))
    await asyncio.sleep(0)
    assert started == ["x", "x"]


async def test_closing_ends_a_catch_up_in_progress(
        tmp_path: Path, opened: list[Node], monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    b = _open(tmp_path / "b", opened)
    ended: list[str] = []

    async def slow(peer_id: str) -> None:
        try:
            await asyncio.Event().wait()
        finally:
            ended.append(peer_id)

    monkeypatch.setattr(b.catchup, "_catch_up", slow)
    monkeypatch.setattr(b.catchup, "_loop", asyncio.get_running_loop())
    b.catchup.behind("x", _floor_known_to(b))
    await asyncio.sleep(0)
    await b.catchup.close()
    assert ended == ["x"]


@pytest.mark.parametrize("field", ["retry_s", "timeout_s", "record_timeout_s",
                                   "max_snapshot_bytes"])
def test_catch_up_settings_must_be_positive(tmp_path: Path, field: str) -> None:
    from peer.catchup import CatchUpConfig
    from peer.errors import ConfigError

    with pytest.raises(ConfigError) as e:
        CatchUpConfig(tmp_path, **{field: 0})
    assert e.value.field == field


# -- deleted jobs: their events leave memory and the log as a compacted job's -----------------


def _deleted(evs: list[Event], job: str, k: int = 1) -> Event:
    """ORIGIN's JOB_DELETED of `job`, `k` seqs after `evs`."""
    return Event(ORIGIN, len(evs) + k, evs[-1].hlc + k, EventType.JOB_DELETED,
                 {"job": job, "reason": "rm"})


def test_a_job_deleted_before_compaction_leaves_memory_then_the_log(
        tmp_path: Path, opened: list[Node]) -> None:
    n = _open(tmp_path / "a", opened, recent_tasks=1000)  # nothing is compacted
    _lagging(n)
    evs = history(jobs=2, per_job=2)  # job000: seqs 1..9
    gone = _deleted(evs, "job000")
    n.merge([*evs, gone])
    assert gone.id not in n.state.events  # the JOB_DELETED left memory at once
    assert n.catchup.compact().evicted == 9  # its job's events at the next pass
    assert not n.state.compacted and n.state.deleted.get("job000") == gone.order
    assert n.state.deleted == {} and "job000" in n.state.deleted  # its tombstone: in the index
    assert n.state.events.keys() == {e.id for e in evs[9:]}
    # what its events made is read from the job index, as a compacted job's
    assert not dict.__contains__(n.state.outputs, key_of(0, 1))
    assert n.state.outputs[key_of(0, 1)] == _cid("job000/t1")
    assert ORIGIN in n.state.providers[_cid("job000/t1")]
    # served from disk while a live member lacks them
    assert _rows(n) == {e.id for e in [*evs, gone]}
    assert _ids(n.events_after({}, 100)) == [e.id for e in [*evs, gone]]
    n.compactor.vvs = lambda: [dict(n.heads()), dict(n.heads())]
    assert n.catchup.compact().dropped == 9
    assert _rows(n) == {e.id for e in evs[9:]} | {gone.id}  # the tombstone stays
    assert n.compactor.floors == {ORIGIN: 9} and not n.compactor.leaving
    # a refold keeps the tombstone whose JOB_DELETED left memory
    n.state.refold()
    assert n.state.deleted.get("job000") == gone.order
    assert n.state.events.keys() == {e.id for e in evs[9:]}


def _count_sweeps(n: Node, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The compactor's sweeps of memory (a scan of every event held), counted as made."""
    made: list[int] = []
    sweep = n.compactor._sweep

    def counted(out: compact_mod.PassStats) -> None:
        made.append(1)
        sweep(out)
    monkeypatch.setattr(n.compactor, "_sweep", counted)
    return made


@pytest.mark.parametrize("fill", ["a later batch", "the same batch, last"])
def test_a_deleted_jobs_events_held_past_a_gap_leave_at_the_pass_after_it_fills(
        tmp_path: Path, opened: list[Node], fill: str) -> None:
    n = _open(tmp_path / "a", opened, recent_tasks=1000)
    n.compactor.vvs = lambda: [dict(n.heads())]  # every live member holds what we hold
    evs = history(jobs=1, per_job=1, live=1)  # job000: seqs 1..5; job001 submitted: 6
    gone = _deleted(evs, "job000")
    if fill == "a later batch":
        n.merge([*evs[1:], gone])  # held past the gap of seq 1
        n.catchup.compact()
        assert {e.id for e in evs[1:5]} <= n.state.events.keys()
        n.merge(evs[:1])  # fills it
    else:
        n.merge([gone])  # held past a gap
        n.catchup.compact()
        n.merge([*evs[1:], evs[0]])  # held past it, then filled, in one batch
    assert n.state.heads[ORIGIN] == gone.seq
    n.catchup.compact()
    assert not {e.id for e in evs[:5]} & n.state.events.keys()
    assert _rows(n) == {evs[5].id, gone.id}  # and the log: the job's tombstone stays


def test_contiguous_batches_ask_for_no_sweep_and_the_one_that_fills_a_gap_for_one(
        tmp_path: Path, opened: list[Node], monkeypatch: pytest.MonkeyPatch) -> None:
    n = _open(tmp_path / "a", opened, recent_tasks=1000)
    evs = history(jobs=8, per_job=1)  # 40 events
    gone = _deleted(evs, "job000")
    n.merge([*evs[:3], gone])  # a deleted job (sweeps are asked for), and a gap: 4..40
    sweeps = _count_sweeps(n, monkeypatch)
    n.catchup.compact()
    assert sweeps == [1]  # for the JOB_DELETED, as before
    for i in range(3, 39, 3):  # contiguous batches of three: none reaches the held seq
        n.merge(evs[i:i + 3])
        n.catchup.compact()
    assert sweeps == [1] and n.state.beyond == {ORIGIN: {gone.seq}}
    n.merge(evs[39:])  # fills the gap: the JOB_DELETED is contiguous now
    n.catchup.compact()
    assert sweeps == [1, 1] and not n.state.beyond
    n.catchup.compact()
    assert sweeps == [1, 1]


def test_a_batch_held_past_a_gap_filling_none_asks_for_a_sweep_as_before(
        tmp_path: Path, opened: list[Node], monkeypatch: pytest.MonkeyPatch) -> None:
    n = _open(tmp_path / "a", opened, recent_tasks=1000)
    evs = history(jobs=2, per_job=1)  # 10 events
    gone = _deleted(evs, "job000")
    n.merge([*evs[:4], gone])
    sweeps = _count_sweeps(n, monkeypatch)
    n.catchup.compact()
    assert sweeps == [1]
    n.merge(evs[5:7])  # past the gap of seq 5 (and of the JOB_DELETED's 11): none filled
    assert n.state.beyond == {ORIGIN: {6, 7, gone.seq}}
    n.catchup.compact()
    assert sweeps == [1, 1]  # (`Compactor.note`: an event held past a gap)
    n.catchup.compact()
    assert sweeps == [1, 1]


def test_past_the_horizon_a_deleted_jobs_events_leave_the_log_if_a_member_lacks_them(
        tmp_path: Path, opened: list[Node]) -> None:
    n = _open(tmp_path / "a", opened, recent_tasks=1000)
    _lagging(n)
    evs = history(jobs=1, per_job=1)
    gone = _deleted(evs, "job000")
    n.merge([*evs, gone])
    assert n.catchup.compact().dropped == 0
    later = gone.hlc + ((7 * 86_400_000 + 1) << 16)  # the fake clock: a week after it
    n.compactor.now_hlc = lambda: later
    assert n.catchup.compact().dropped == len(evs) and _rows(n) == {gone.id}


def test_a_late_event_of_a_deleted_job_leaves_memory_at_once(
        tmp_path: Path, opened: list[Node]) -> None:
    n = _open(tmp_path / "a", opened, recent_tasks=1000)
    evs = history(jobs=1, per_job=1)
    gone = _deleted(evs, "job000")
    n.merge([*evs, gone])
    n.catchup.compact()  # alone: we hold them all, they leave the log at once
    assert _rows(n) == {gone.id}
    late = Event(ORIGIN, gone.seq + 1, gone.hlc + 1, EventType.JOB_CANCELLED,
                 {"job": "job000", "reason": "late"})
    assert n.merge([late]) == [late]
    assert late.id not in n.state.events and "job000" not in n.state.cancelled
    assert n.catchup.compact().dropped == 1 and _rows(n) == {gone.id}


def test_a_restart_holds_the_same_events_of_a_deleted_job(
        tmp_path: Path, opened: list[Node]) -> None:
    d = tmp_path / "a"
    n = _open(d, opened, recent_tasks=1000)
    _lagging(n)
    evs = history(jobs=2, per_job=2)
    gone = _deleted(evs, "job000")
    n.merge([*evs, gone])
    n.catchup.compact()
    held, digests = sorted(n.state.events), n.state.content_digests()
    n.log.close()
    opened.remove(n)
    again = _open(d, opened, recent_tasks=1000)
    assert sorted(again.state.events) == held and again.state.content_digests() == digests
    assert again.state.deleted.get("job000") == gone.order
    assert again.state.deleted == {}  # the replayed JOB_DELETED was known: not kept in memory
    assert not dict.__contains__(again.state.outputs, key_of(0, 1))
    # what the replay let leave memory leaves the log once droppable, as before the restart
    assert again.compactor.leaving == {"job000": {e.id for e in evs[:9]}}
    again.compactor.vvs = lambda: [dict(again.heads())]
    assert again.catchup.compact().dropped == 9


def test_a_job_rm_of_a_recent_job_lets_its_events_go(tmp_path: Path,
                                                     opened: list[Node]) -> None:
    n = _open(tmp_path / "a", opened, recent_tasks=1000)
    evs = history(jobs=2, per_job=2)
    n.merge(evs)
    n.janitor.delete_job("job001")  # our own JOB_DELETED, in a turn
    n.catchup.compact()
    assert "job001" in n.state.deleted and not n.state.compacted
    assert n.state.events.keys() == {e.id for e in evs[:9]}
    assert _rows(n) == {e.id for e in evs[:9]} | {(n.peer_id, n.state.heads[n.peer_id])}


def test_a_record_whose_ids_do_not_read_back_holds_its_deletion_and_its_events_back(
        tmp_path: Path, opened: list[Node], caplog: pytest.LogCaptureFixture) -> None:
    """A job's list of its events still in the log, damaged on disk, read as empty: its
    deletion removed the record and pinned none of its events (they stayed in the log, in
    no job's list, for good), and a drop set the list to [] with its events still there.
    Now the deletion waits (the index raises a DataError naming the file and the row, logged
    once), the other job's goes on, and the drop leaves the row and its events alone."""
    n = _open(tmp_path / "a", opened, recent_tasks=0)
    _lagging(n)
    evs = history(jobs=2, per_job=2)  # job000: seqs 1..9, job001: 10..18
    n.merge(evs)
    n.catchup.compact()
    assert _index_jobs(n) == {"job000", "job001"}
    bad = '[["hist0000000000000000", 1], ["hist'  # (a write cut short)
    n.log.db.execute("UPDATE job_index SET ids = ? WHERE job = 'job000'", (bad,))
    with pytest.raises(DataError, match=f"{n.log.path}: the job index's row of 'job000' "
                       "holds its job's deletion"):
        n.index.delete(["job000"])
    gone = [_deleted(evs, "job000"), _deleted(evs, "job001", 2)]
    with caplog.at_level(logging.WARNING):
        n.merge(gone)
        n.catchup.compact()
        n.catchup.compact()
        assert _index_jobs(n) == {"job000"}  # (job001's deletion went on)
        n.compactor.vvs = lambda: [dict(n.heads())]  # every member holds every event
        n.catchup.compact()
    assert _rows(n) >= {e.id for e in evs[:9]} and not _rows(n) & {e.id for e in evs[9:]}
    assert n.log.db.execute("SELECT ids FROM job_index").fetchall() == [(bad,)]
    warned = [r.getMessage() for r in caplog.records if "its ids does not read back" in
              r.getMessage()]
    assert len(warned) == 1 and "'job000' holds its job's deletion" in warned[0]
    assert not [r for r in caplog.records if r.exc_info]  # (no pass failed)


def test_peers_holding_the_same_events_hold_the_same_in_memory_whatever_the_order() -> None:
    from peer.log import fold

    evs = history(jobs=2, per_job=2)
    gone = _deleted(evs, "job000")
    a, b = fold([*evs, gone]), fold([gone, *reversed(evs)])
    a.compact(())  # the events held before the JOB_DELETED leave at the next sweep, as do
    b.compact(())  # those held past a gap when it came (here all but the last to come)
    assert sorted(a.events) == sorted(b.events) == sorted(e.id for e in evs[9:])
    assert a.content_sum() == b.content_sum()


def test_compacted_jobs_are_asked_of_the_job_index_not_all_kept_in_memory(
        tmp_path: Path, opened: list[Node]) -> None:
    d = tmp_path / "a"
    n = _open(d, opened, recent_tasks=0)
    n.state.compacted.members_max = 2
    evs = history(jobs=5, per_job=1)
    n.merge(evs)
    assert n.catchup.compact().compacted == 5
    assert len(n.state.compacted) == 2 and n.state.compacted.added == 5
    assert all(f"job{j:03d}" in n.state.compacted for j in range(5))
    n.log.close()
    opened.remove(n)
    again = _open(d, opened, recent_tasks=0)
    assert len(again.state.compacted) == 0  # nothing read at start: asked on demand
    late = Event(ORIGIN, len(evs) + 1, evs[-1].hlc + 1, EventType.JOB_CANCELLED,
                 {"job": "job001", "reason": "late"})
    assert again.merge([late]) == [late]  # a late event of a compacted job: asked, let go
    assert late.id not in again.state.events and "job001" not in again.state.cancelled
    assert again.state.compacted == {"job001"}
    again.janitor.delete_job("job002")  # a compacted job: found in the index
    assert again.catchup.job_record("job002") is None and "job002" not in again.state.compacted


def test_a_data_dir_of_the_previous_release_with_a_deleted_job_opens_and_lets_it_go(
        tmp_path: Path, opened: list[Node]) -> None:
    """The previous release kept a job deleted before compaction in its log and had no
    tombstone table: the first start folds the JOB_DELETED from the log, lets the job's events
    leave memory, writes the tombstone and drops the events once droppable."""
    d = tmp_path / "a"
    n = _open(d, opened, recent_tasks=1000)
    n.listeners[:] = []  # no compactor: as the previous release, nothing leaves
    evs = history(jobs=2, per_job=2)
    gone = _deleted(evs, "job000")
    n.log.append([*evs, gone])
    n.log.close()
    opened.remove(n)
    c = sqlite3.connect(d / "events.sqlite")
    c.execute("DROP TABLE job_deleted")
    c.commit()
    c.close()
    again = _open(d, opened, recent_tasks=1000)
    assert again.state.events.keys() == {e.id for e in evs[9:]}
    assert again.state.deleted == {} and again.state.deleted.get("job000") == gone.order
    assert again.catchup.compact().dropped == 9  # alone: we hold them all
    assert _rows(again) == {e.id for e in evs[9:]} | {gone.id}


def _late_chunk(job: str, seq: int, hlc: int, key: str) -> Event:
    """Another origin's CHUNK_DONE of `job` with one item cache entry `key`."""
    return Event("othr0000000000000000", seq, hlc, EventType.CHUNK_DONE,
                 {"job": job, "task": "t0", "split": [ORIGIN, 2], "chunk": 0, "attempt": 1,
                  "output": None, "cache": {key: {"c": _cid("item/" + key)}}})


@pytest.mark.parametrize("late_first", [True, False])
def test_a_deleted_jobs_late_event_s_cache_entry_reaches_the_index_in_either_order(
        tmp_path: Path, opened: list[Node], late_first: bool) -> None:
    """An event of a deleted job recorded after its JOB_DELETED leaves memory at once; the
    cache entry it made still goes to the job index at the next pass (as when it came
    before the JOB_DELETED and was swept), not kept in memory for ever, nor lost when its
    event is dropped."""
    d = tmp_path / "a"
    n = _open(d, opened, recent_tasks=1000)
    evs = history(jobs=2, per_job=1)
    gone = _deleted(evs, "job000")
    key = hashlib.sha256(b"item-key").hexdigest()
    late = _late_chunk("job000", 1, evs[-1].hlc, key)
    n.merge([*evs, late, gone] if late_first else [*evs, gone, late])
    n.compactor.vvs = lambda: [dict(n.heads())]
    n.catchup.compact()
    n.catchup.compact()
    assert late.id not in _rows(n)  # dropped from the log
    assert not dict.__contains__(n.state.cache, key)  # memory let it go
    assert n.index.entry(ITEM, key) is not None
    n.log.close()
    opened.remove(n)
    again = _open(d, opened, recent_tasks=1000)
    assert again.state.cache.get(key) == {"c": _cid("item/" + key)}


def test_a_failed_drop_keeps_the_deleted_jobs_events_to_drop_later(
        tmp_path: Path, opened: list[Node], monkeypatch: pytest.MonkeyPatch) -> None:
    n = _open(tmp_path / "a", opened, recent_tasks=1000)
    evs = history(jobs=2, per_job=1)
    n.merge([*evs, _deleted(evs, "job000")])
    n.compactor.vvs = lambda: [{}]  # a live member lacks them: nothing droppable yet
    n.catchup.compact()
    assert n.compactor.leaving

    def fail(ids: object, floors: object = None, also: object = None) -> None:
        raise sqlite3.OperationalError("database is locked")

    with monkeypatch.context() as m:
        m.setattr(n.compactor.store, "delete", fail)
        n.compactor.vvs = lambda: [dict(n.heads())]
        with pytest.raises(sqlite3.OperationalError):
            n.compactor.step()
    assert n.compactor.leaving  # kept: dropped by a later pass
    assert n.catchup.compact().dropped > 0 and not n.compactor.leaving


def test_a_waiting_deleted_job_s_tombstone_and_marks_are_read_once(
        tmp_path: Path, opened: list[Node], monkeypatch: pytest.MonkeyPatch) -> None:
    """Its events wait (up to the horizon) for every live member to hold them: the passes
    meanwhile do not read its tombstone from the job index nor its marks again; a late event
    of it moves its marks, and it leaves once they are covered."""
    n = _open(tmp_path / "a", opened, recent_tasks=1000)
    evs = history(jobs=2, per_job=1)
    gone = _deleted(evs, "job000")
    n.merge([*evs, gone])
    n.compactor.vvs = lambda: [{}]  # a live member lacks them: nothing droppable yet
    tombs: list[str] = []
    lookup = n.state.deleted.lookup  # type: ignore[attr-defined]
    assert lookup is not None
    monkeypatch.setattr(n.state.deleted, "lookup", lambda job: (tombs.append(job),
                                                                lookup(job))[1])
    marked: list[int] = []
    real = compact_mod.marks_of
    monkeypatch.setattr(compact_mod, "marks_of", lambda ids: (marked.append(1), real(ids))[1])
    for _ in range(4):
        assert n.catchup.compact().dropped == 0
    assert tombs == ["job000"] and len(marked) == 1
    assert n.compactor.waiting["job000"][0] == gone.hlc
    late = _late_chunk("job000", 1, evs[-1].hlc, hashlib.sha256(b"late").hexdigest())
    n.merge([late])  # left memory at once: waits with the job's
    assert n.compactor.waiting["job000"][1]["othr0000000000000000"] == 1
    tombs.clear()  # (the fold and `evicted` asked: the late event is of a deleted job)
    n.catchup.compact()
    assert tombs == [] and marked == [1]
    n.compactor.vvs = lambda: [{ORIGIN: gone.seq}]  # not the late one's origin yet
    assert n.catchup.compact().dropped == 0
    n.compactor.vvs = lambda: [dict(n.heads())]
    assert n.catchup.compact().dropped > 0
    assert not n.compactor.leaving and not n.compactor.waiting
    assert late.id not in _rows(n)


def test_a_pass_whose_old_jobs_reopened_still_sweeps_a_deleted_jobs_events(
        tmp_path: Path, opened: list[Node]) -> None:
    n = _open(tmp_path / "a", opened, recent_tasks=1000)
    evs = history(jobs=2, per_job=1)
    n.merge([*evs, _deleted(evs, "job000")])
    n.compactor.dirty.clear()
    n.compactor.ended["job001"] = (0, 10_000)  # "finished" past the recent history...
    n.compactor.finished = lambda job: None  # ...but not after all (a reopened chunk)
    assert n.compactor.step().evicted > 0
    assert not any(getattr(e.body, "job", None) == "job000" for e in n.state.events.values())


def test_a_drop_and_its_floors_are_one_transaction(
        tmp_path: Path, opened: list[Node], monkeypatch: pytest.MonkeyPatch) -> None:
    """A crash (here: the floor's write failing) between dropping events and raising their
    origin's floor must not leave a gap below the head that no floor covers: nothing of the
    drop is kept."""
    n = _open(tmp_path / "a", opened, recent_tasks=1000)
    evs = history(jobs=2, per_job=1)
    n.merge([*evs, _deleted(evs, "job000")])
    n.compactor.vvs = lambda: [{}]
    n.catchup.compact()
    before = _rows(n)

    def crash(origin: str, seq: int) -> None:
        raise sqlite3.OperationalError("disk I/O error")

    n.compactor.vvs = lambda: [dict(n.heads())]
    with monkeypatch.context() as m:
        m.setattr(n.log, "set_floor", crash)
        with pytest.raises(sqlite3.OperationalError):
            n.compactor.step()
    assert _rows(n) == before and n.log.floors() == {}
    assert n.catchup.compact().dropped > 0 and n.log.floors()


def test_a_crash_in_a_drop_leaves_the_job_index_s_floors_with_the_log_s(
        tmp_path: Path, opened: list[Node], monkeypatch: pytest.MonkeyPatch) -> None:
    """The job index's compaction floors (announced: a peer behind them takes a snapshot)
    are written in the drop's transaction: a crash there keeps them with the log's."""
    d = tmp_path / "a"
    n = _open(d, opened, recent_tasks=1000)
    evs = history(jobs=2, per_job=1)
    n.merge([*evs, _deleted(evs, "job000")])
    n.compactor.vvs = lambda: [{}]
    n.catchup.compact()
    n.compactor.vvs = lambda: [dict(n.heads())]

    def crash(jobs: object, floors: object) -> None:  # kill -9 after the log's statements
        raise sqlite3.OperationalError("disk I/O error")

    with monkeypatch.context() as m:
        m.setattr(n.index, "note_dropped", crash)
        with pytest.raises(sqlite3.OperationalError):
            n.compactor.step()
    assert n.log.floors() == {} and n.index.floors() == {}
    assert n.catchup.compact().dropped > 0
    n.log.close()
    opened.remove(n)
    again = _open(d, opened, recent_tasks=1000)
    assert again.compactor.floors == again.log.floors() != {}


def test_a_pass_drops_deleted_jobs_events_up_to_its_cap_and_the_rest_later(
        tmp_path: Path, opened: list[Node], monkeypatch: pytest.MonkeyPatch) -> None:
    import peer.log.compact as compact

    n = _open(tmp_path / "a", opened, recent_tasks=1000)
    evs = history(jobs=3, per_job=1)
    n.merge([*evs, _deleted(evs, "job000"), _deleted(evs, "job001", 2)])
    n.compactor.vvs = lambda: [{}]
    n.catchup.compact()
    assert len(n.compactor.leaving) == 2
    monkeypatch.setattr(compact, "DELETED_DROP_MAX", 1)  # one job's events per pass
    n.compactor.vvs = lambda: [dict(n.heads())]
    first = n.catchup.compact().dropped
    assert first > 0 and len(n.compactor.leaving) == 1
    assert n.catchup.compact().dropped > 0 and not n.compactor.leaving


def test_a_peer_whose_sweep_at_start_fails_starts_and_sweeps_at_its_first_pass(
        tmp_path: Path, opened: list[Node], monkeypatch: pytest.MonkeyPatch) -> None:
    from peer.log.compact import Compactor

    d = tmp_path / "a"
    n = _open(d, opened, recent_tasks=1000)
    evs = history(jobs=2, per_job=1)
    n.merge([*evs, _deleted(evs, "job000")])
    n.log.close()
    opened.remove(n)
    real = Compactor._sweep

    def full(self: Compactor, out: object) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(Compactor, "_sweep", full)
    again = _open(d, opened, recent_tasks=1000)  # starts all the same
    job000 = [e for e in again.state.events.values() if getattr(e.body, "job", None) == "job000"]
    assert job000  # still in memory
    monkeypatch.setattr(Compactor, "_sweep", real)
    assert again.catchup.compact().evicted >= len(job000)
    assert not [e for e in again.state.events.values()
                if getattr(e.body, "job", None) == "job000"]


def test_a_stream_whose_events_are_nested_past_the_stack_is_malformed(
        tmp_path: Path, opened: list[Node]) -> None:
    """The events of a v2 stream's first line (or a v3 stream's head frame) nested deeper
    than json.loads goes raised RecursionError out of the catch-up task; it is a malformed
    snapshot (nothing taken)."""
    import struct

    from peer.log.snapframe import HEADER, MAGIC
    a, b = _pair(tmp_path, opened)
    _run_history(a, jobs=3, per_job=2)
    a.catchup.compact()
    deep = b"[" * 100_000 + b"]" * 100_000

    def v2(body: bytes) -> bytes:
        return deep + body[body.index(b"\n"):]

    def v3(body: bytes) -> bytes:
        at = len(MAGIC)
        tag, n = HEADER.unpack_from(body, at)
        return body[:at] + struct.pack(">cI", tag, len(deep)) + deep + body[at + HEADER.size + n:]

    heads = dict(b.heads())
    assert _take_stream(a, b, tmp_path, tamper=v2) == "malformed"
    assert _take_v3(a, b, tmp_path, tamper=v3) == "malformed"
    assert dict(b.heads()) == heads


def _outputs_not_a_list(a: Node) -> None:
    a.log.db.execute("UPDATE job_index SET facts = ? WHERE job = 'job000'",
                     (json.dumps({"finished_s": 1.0, "outputs": 5}),))
    a.log.db.commit()


def test_a_members_job_row_whose_outputs_are_not_cids_is_refused(
        tmp_path: Path, opened: list[Node]) -> None:
    """A job row's facts are read as lists of CIDs (digests, thin rows, retention): a
    member's row holding anything else made every compaction pass of the peer that took it
    fail (a TypeError), and every v3 snapshot and v2 digest it served. The stream is
    malformed now, and nothing of it is taken. (An honest member's serve leaves such a row
    out: the rest is taken.)"""
    a, b = _pair(tmp_path, opened)
    _run_history(a, jobs=3, per_job=2)
    a.catchup.compact()
    _outputs_not_a_list(a)
    served = a.index.left_out
    a.index.left_out = lambda tag, row: False  # type: ignore[method-assign]  # (a forger's)
    assert _take_stream(a, b, tmp_path) == "malformed"
    assert _index_jobs(b) == set()
    a.index.left_out = served  # type: ignore[method-assign]
    assert _take_stream(a, b, tmp_path) is None
    assert _index_jobs(b) == _index_jobs(a) - {"job000"}


def test_a_stored_job_row_whose_outputs_are_not_cids_is_left_out_not_raised(
        tmp_path: Path, opened: list[Node]) -> None:
    """Such a row already in the index (an earlier release took it): compaction passes,
    the v3 stream and the v2 digests go on without it, and it is counted as skipped."""
    a, b = _pair(tmp_path, opened)
    _run_history(a, jobs=3, per_job=2)
    a.catchup.compact()
    assert _take_stream(a, b, tmp_path) is None
    _outputs_not_a_list(b)
    b.log.db.execute("DELETE FROM job_thin")  # as a data dir of an earlier release holds
    b.catchup.compact()
    b.catchup.compact()
    b.flush()
    assert b"".join(b.catchup.snapshot_stream(v=3))
    jobs = b.catchup.digest_reader(per_job=True)()["jobs"]
    assert "job000" not in jobs and len(jobs) == len(_index_jobs(b)) - 1
    assert b.index.skipped >= 1
