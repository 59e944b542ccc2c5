"""Review r3 of session 48, F1: what of a gone lanes job waits for a vouched member's
JOB_MEMBERS (`GoneWait`: the adds of peers not vouched for, the lane events of peers that
are no member) is kept in the job index (`gone_wait_adds`, `gone_wait_events`) as it changes,
so that a restart whose log no longer holds the job's rows waits as a peer that did not
restart. A real `Node` (no network), its real log and job index, restarted in process."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from peer.cids import sha256_cid
from peer.log import Event, EventType
from peer.log.lanes import lane
from peer.log.owner import LOG_FILE
from peer.node import Node
from tests.unit.test_lanes_compact import J1, _node
from tests.unit.test_lanes_gone_frozen import _restarted

X, Y, Z = "c3" * 8, "d4" * 8, "e5" * 8
FAR = (8 * 86400 * 1000) << 16  # (past the tombstones' horizon: a deleted job's rows leave)
Y_OUT = str(sha256_cid(b"y's output", "raw", 1))
# Session 49's table of held events (keyed by the whole text; moved at an open since
# session 50, helper i)
OLD_HELD = ("CREATE TABLE gone_wait_held (job TEXT NOT NULL, kind INTEGER NOT NULL, "
            "peer TEXT NOT NULL, event TEXT NOT NULL, PRIMARY KEY (job, kind, event))")


def _delete_and_drop(node: Node) -> None:
    """J1 deleted, then compaction passes with the clock past the horizon: the tombstone is
    written and the job's rows leave the log."""
    node.janitor.delete_job(J1)
    node.flush()
    far = node.hlc.now() + FAR
    node.compactor.now_hlc = lambda: far  # type: ignore[method-assign]
    node.catchup.compact()
    node.catchup.compact()


def _rows_left(node: Node, *origins: str) -> list[tuple[str, int]]:
    marks = ", ".join("?" * len(origins))
    return node.log.db.execute(f"SELECT origin, seq FROM events WHERE origin IN ({marks})",
                               origins).fetchall()


@pytest.mark.parametrize("restart", [False, True])
def test_the_waiting_adds_of_a_gone_job_survive_a_restart(tmp_path: Path,
                                                          restart: bool) -> None:
    """The review's reproduction: X adds itself and Y while J1 is live (X not vouched: both
    adds wait), J1 is deleted and its rows leave the log, (a restart,) then the home adds X
    and Y adds Z. Every peer, restarted or not: members and vouched {home, X, Y, Z}, and the
    job index says so (on 6c66b4c1 the restarted one had {home, X, Y}, vouched {home, X})."""
    node = _node(tmp_path)
    me = node.peer_id
    t = node.hlc.now()
    xx = Event(X, 1, t + (1 << 16), EventType.JOB_MEMBERS, {"job": J1, "add": [X]})
    xy = Event(X, 2, t + (2 << 16), EventType.JOB_MEMBERS, {"job": J1, "add": [Y]})
    assert node.merge([xx]) == [xx] and node.merge([xy]) == [xy]
    _delete_and_drop(node)
    assert _rows_left(node, X) == []  # (what waited is no longer in the log)
    if restart:
        node.log.close()
        node = _restarted(tmp_path)
    try:
        node.emit(EventType.JOB_MEMBERS, {"job": J1, "add": [X]})
        t = node.hlc.now()
        yz = Event(Y, 1, t + (1 << 16), EventType.JOB_MEMBERS, {"job": J1, "add": [Z]})
        assert node.merge([yz]) == [yz]
        node.flush()
        node.catchup.compact()
        f = node.state.gone_lanes(J1)
        assert f is not None
        want = sorted({me, X, Y, Z})
        assert (sorted(f.members), sorted(f.vouched)) == (want, want)
        assert node.index.vouched_of(J1) == (want, want)
        # what waited was walked: its rows went with it
        assert node.index.gone_waits() == ([], [])
    finally:
        node.log.close()


@pytest.mark.parametrize("restart", [False, True])
def test_a_waiting_lane_event_of_a_gone_job_survives_a_restart(tmp_path: Path,
                                                               restart: bool) -> None:
    """Y (no member) sends its lane TASK_DONE of J1 while J1 is live (held); J1 is deleted
    (the event waits for a vouched add) and its rows leave the log, (a restart,) then the
    home adds Y: Y's output enters the cache on both (on 6c66b4c1 the restarted peer had
    lost the event with the log's rows, and no output)."""
    node = _node(tmp_path)
    t = node.hlc.now()
    done = Event(lane(Y, J1), 1, t + (1 << 16), EventType.TASK_DONE,
                 {"job": J1, "task": "t0", "output": Y_OUT, "cached": False, "key": "ky"})
    assert node.merge([done]) == [done]
    assert node.state.outputs.get("ky") is None
    _delete_and_drop(node)
    assert _rows_left(node, lane(Y, J1)) == []
    if restart:
        node.log.close()
        node = _restarted(tmp_path)
    try:
        assert node.state.outputs.get("ky") is None
        node.emit(EventType.JOB_MEMBERS, {"job": J1, "add": [Y]})
        node.flush()
        assert node.state.outputs.get("ky") == Y_OUT
        node.catchup.compact()
        assert node.index.gone_waits() == ([], [])  # (folded: no longer waiting)
    finally:
        node.log.close()


def test_a_data_dir_without_the_wait_tables_opens_and_decides_as_before(
        tmp_path: Path) -> None:
    """A data dir of session 48 (no `gone_wait_*` tables): it opens, they are made empty."""
    node = _node(tmp_path)
    node.log.close()
    db = sqlite3.connect(tmp_path / LOG_FILE)
    tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table' "
                                       "AND name LIKE 'gone_wait%'")]
    assert sorted(tables) == ["gone_wait_adds", "gone_wait_events"]
    for table in tables:
        db.execute(f"DROP TABLE {table}")
    db.commit()
    db.close()
    back = _restarted(tmp_path)
    try:
        assert back.index.gone_waits() == ([], [])
    finally:
        back.log.close()


def test_rows_that_do_not_read_back_are_left_out(tmp_path: Path) -> None:
    """Hostile or damaged rows (not texts, not an event) are left out, logged: no
    traceback, the peer opens, the good rows are read (of a gone J1: the rows of a job
    not gone here are let go, A2 below)."""
    node = _node(tmp_path)
    _delete_and_drop(node)
    node.log.close()
    db = sqlite3.connect(tmp_path / LOG_FILE)
    db.executemany("INSERT INTO gone_wait_adds VALUES (?, ?, ?)",
                   [(J1, X, Y), (J1, b"x", Y), (J1, X, b"\x00")])
    db.execute(OLD_HELD)  # (session 49's table: its rows move at the open)
    db.executemany("INSERT INTO gone_wait_held VALUES (?, ?, ?, ?)",
                   [(J1, 0, Y, "{not json"), (J1, 0, Y, '{"origin": 1}'),
                    (J1, "zero", Y, "{}"), (J1, 0, Y, "[1, 2]")])
    db.commit()
    db.close()
    back = _restarted(tmp_path)
    try:
        assert back.index.gone_waits() == ([(J1, X, Y)], [])
    finally:
        back.log.close()


@pytest.mark.parametrize("restart", [False, True])
def test_an_output_set_aside_survives_the_job_and_a_restart(tmp_path: Path,
                                                            restart: bool) -> None:
    """Review rr of session 48, S2, with F1's rows: X adds itself (not vouched) and sends its
    lane TASK_DONE while J1 is live (set aside: no cache entry); J1 is deleted and its rows
    leave the log, (a restart,) then the home adds X: X's output enters the cache on both
    (on 6c66b4c1 what waited aside left with the job: no entry, restarted or not)."""
    node = _node(tmp_path)
    t = node.hlc.now()
    xx = Event(X, 1, t + (1 << 16), EventType.JOB_MEMBERS, {"job": J1, "add": [X]})
    done = Event(lane(X, J1), 1, t + (2 << 16), EventType.TASK_DONE,
                 {"job": J1, "task": "t0", "output": Y_OUT, "cached": False, "key": "kx"})
    assert node.merge([xx]) == [xx] and node.merge([done]) == [done]
    assert node.state.outputs.get("kx") is None
    _delete_and_drop(node)
    assert _rows_left(node, X, lane(X, J1)) == []
    if restart:
        node.log.close()
        node = _restarted(tmp_path)
    try:
        assert node.state.outputs.get("kx") is None
        node.emit(EventType.JOB_MEMBERS, {"job": J1, "add": [X]})
        node.flush()
        assert node.state.outputs.get("kx") == Y_OUT
        node.catchup.compact()
        assert node.index.gone_waits() == ([], [])
    finally:
        node.log.close()


def test_rows_of_a_job_no_longer_known_are_let_go_and_deleted(tmp_path: Path) -> None:
    """Review r3 of session 49, A2: the previous release drops tombstones and leaves their
    wait rows; at a start the rows of a job that is neither compacted nor a tombstone here
    are not taken as waits (at b54996d8 they were: room taken until 256 newer jobs pushed
    them out), and the next pass deletes them. A gone job's rows are read as before."""
    node = _node(tmp_path)
    t = node.hlc.now()
    xx = Event(X, 1, t + (1 << 16), EventType.JOB_MEMBERS, {"job": J1, "add": [X]})
    assert node.merge([xx]) == [xx]
    _delete_and_drop(node)
    assert node.index.gone_waits()[0] == [(J1, X, X)]
    node.log.close()
    ghost = "j0000000000c9"
    db = sqlite3.connect(tmp_path / LOG_FILE)
    db.execute("INSERT INTO gone_wait_adds VALUES (?, ?, ?)", (ghost, X, Z))
    db.execute(OLD_HELD)
    db.execute("INSERT INTO gone_wait_held VALUES (?, ?, ?, ?)",
               (ghost, 0, Y, json.dumps(Event(lane(Y, ghost), 1, t, EventType.TASK_DONE,
                                              {"job": ghost, "task": "t0", "output": Y_OUT,
                                               "cached": False, "key": "kg"}).to_json())))
    db.commit()
    db.close()
    back = _restarted(tmp_path)
    try:
        assert list(back.state._gone_waits) == [J1]
        assert back.state._gone_waits[J1].adds == {X: {X}}
        back.catchup.compact()
        assert back.index.gone_waits() == ([(J1, X, X)], [])
    finally:
        back.log.close()
