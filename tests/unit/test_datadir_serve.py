"""Rows of the data dir's events.sqlite damaged or edited while the peer runs, met by what it
serves from the file (snapshot streams, events read back from disk for catch-up and
anti-entropy): read by the same checks as at start, a bad row is left out (logged) or the
serve fails with an error naming the file, never a traceback; nothing stored is deleted."""

from __future__ import annotations

import json
import logging
import re
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from peer.config import PeerConfig
from peer.errors import StoreError
from peer.log import Event, EventLog, EventType
from peer.log.events import MAX_CLOCK
from peer.log.signing import Identity, peer_id_for, sign_events
from peer.log.sqlite import LOGGED_SKIPS
from peer.node import Node

OTHER = "othr0000000000000000"


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    n = Node(PeerConfig(data_dir=tmp_path / "a", slots=1, mdns=False))
    try:
        yield n
    finally:
        n.log.close()


def _edit(n: Node, *stmts: str) -> None:
    """Write into the peer's file behind its back, on a connection of our own."""
    db = sqlite3.connect(n.log.path)
    try:
        for sql in stmts:
            db.execute(sql)
        db.commit()
    finally:
        db.close()


def _served_floors(n: Node) -> dict[str, int]:
    """The floors a snapshot stream (v2) announces in its signed trailer."""
    body = b"".join(n.catchup.snapshot_stream())
    floors: dict[str, int] = json.loads(body.rsplit(b"\n", 1)[-1])["floors"]
    return floors


def test_a_snapshot_serve_leaves_out_an_own_compaction_floor_past_max_own_seq(
        node: Node, caplog: pytest.LogCaptureFixture) -> None:
    """As the start does (peer.log.sqlite.seq_rows): served, it told every taker that our
    seqs up to 2^63-1 were dropped, and our later events were held as dropped there."""
    _edit(node, f"INSERT INTO compact_floors VALUES ('{node.peer_id}', {MAX_CLOCK})",
          f"INSERT INTO compact_floors VALUES ('{OTHER}', 5)")
    with caplog.at_level(logging.WARNING):
        assert _served_floors(node) == {OTHER: 5}
    assert (f"{node.log.path}: the compact_floors row of this peer ({node.peer_id[:16]}) "
            f"holds {MAX_CLOCK}") in caplog.text


def test_a_compaction_floors_table_of_other_columns_fails_a_serve_naming_the_file(
        node: Node) -> None:
    """The serve's read raised sqlite3.OperationalError (the start's read named the file)."""
    _edit(node, "DROP TABLE compact_floors", "CREATE TABLE compact_floors (a, b)")
    with pytest.raises(StoreError, match=re.escape(
            f"cannot use the event log {node.log.path} (its table compact_floors): no such "
            "column")):
        _served_floors(node)


def test_events_served_from_disk_leave_out_rows_damaged_since_the_start(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """EventLog.range (catch-up and anti-entropy serve events that left memory from it)
    raised at a row damaged or edited while the peer ran, and its serve failed: such a row
    (a payload that is no JSON, or not UTF-8; a malformed signed batch) is left out with
    one line each, the rest served; nothing is deleted nor quarantined (the next start's
    replay sets them aside)."""
    log = EventLog(tmp_path / "events.sqlite")
    me = Identity.generate()
    pid = peer_id_for(me.key)
    hlc = (int(time.time() * 1000) - 60_000) << 16
    evs = [Event(pid, s, hlc + s, EventType.PROVIDE, {"cids": [f"c{s}"]}) for s in range(1, 7)]
    sign_events(me, pid, evs, None, max_batch=2)  # batches of seqs 1-2, 3-4, 5-6
    log.append(evs)
    db = sqlite3.connect(log.path)
    db.execute("UPDATE events SET payload = 'nope' WHERE seq = 1")
    db.execute("UPDATE events SET payload = CAST(x'7b22ff' AS TEXT) WHERE seq = 6")
    db.execute("UPDATE batches SET hashes = x'00' WHERE first = 3")
    db.commit()
    db.close()
    try:
        with caplog.at_level(logging.WARNING):
            served = log.range(pid, 0, 6, 10)
            assert [e.seq for e in log.range(pid, 0, 6, 10)] == [2, 5]  # (logged once)
        assert [e.seq for e in served] == [2, 5] and all(e.att is not None for e in served)
        lines = [r.getMessage() for r in caplog.records if "not served" in r.getMessage()]
        assert len(lines) == 4 and all(str(log.path) in line for line in lines)
        assert f"{pid[:16]}/3" in " ".join(lines) and "batch" in lines[1]
        assert log.db.execute("SELECT count(*) FROM events").fetchone()[0] == 6
        assert log.quarantined() == 0
    finally:
        log.close()


def test_events_not_served_are_logged_once_each_and_at_most_logged_skips(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Anti-entropy asks the same range again and again: a damaged row is logged once while
    the peer runs, and at most LOGGED_SKIPS rows one by one (then one line)."""
    log = EventLog(tmp_path / "events.sqlite")
    n = LOGGED_SKIPS + 5
    log.append([Event(OTHER, s, s, EventType.PROVIDE, {"cids": [f"c{s}"]})
                for s in range(1, n + 1)])
    _edit_log(log, "UPDATE events SET payload = 'nope'")
    try:
        with caplog.at_level(logging.WARNING):
            for _ in range(3):
                assert log.range(OTHER, 0, n, n) == []
        lines = [r.getMessage() for r in caplog.records if "not served" in r.getMessage()]
        assert len(lines) == LOGGED_SKIPS + 1 and "not logged one by one" in lines[-1]
    finally:
        log.close()


def _edit_log(log: EventLog, sql: str) -> None:
    db = sqlite3.connect(log.path)
    try:
        db.execute(sql)
        db.commit()
    finally:
        db.close()
