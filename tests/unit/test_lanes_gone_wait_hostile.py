"""Review r1 of session 50, R1-1, R1-2, R1-3, R1-6: a gone lanes job's held events are
charged by their size (one over HELD_TEXT_MAX is not held), their job index rows are keyed
by a digest (session 49's table keyed by the text moves at an open, every row kept), and
the rows are read back as hostile: a row that is not what this release writes is let go
and deleted, adds are taken one (adder, peer) at a time, ids are bounded as the door's,
and what waits under a peer its job vouched already (a downgrade and back) is taken in. A
real `Node` (no network), its real log and job index, restarted in process."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path

from peer.log import Event, EventType
from peer.log.fold import GONE_WAIT_MAX
from peer.log.gonewait import HELD_DONE, HELD_LANE, HELD_TEXT_MAX, event_text, held_cost
from peer.log.lanes import lane
from peer.log.owner import LOG_FILE
from peer.node import Node
from tests.unit.test_lanes_compact import J1, J2, _node
from tests.unit.test_lanes_gone_frozen import _restarted
from tests.unit.test_lanes_gone_wait_restart import OLD_HELD, Y_OUT, _delete_and_drop

X, Y = "c3" * 8, "d4" * 8


def _chunk_done(t: int, seq: int, keys: int, width: int = 900) -> Event:
    """Y's (no member) lane CHUNK_DONE of J1 of about `keys` x `width` characters."""
    cache = {f"k{seq}-{j}-" + "x" * width: j for j in range(keys)}
    return Event(lane(Y, J1), seq, t + (seq << 16), EventType.CHUNK_DONE,
                 {"job": J1, "task": "t0", "chunk": seq, "attempt": 0, "cache": cache})


def _task_done(t: int, peer: str = Y, key: str = "ky") -> Event:
    return Event(lane(peer, J1), 1, t + (1 << 16), EventType.TASK_DONE,
                 {"job": J1, "task": "t0", "output": Y_OUT, "cached": False, "key": key})


def _held_rows(node: Node) -> list[tuple[str, int, str, str, str]]:
    return node.log.db.execute("SELECT job, kind, peer, id, event FROM gone_wait_events "
                               "ORDER BY rowid").fetchall()


def test_a_held_event_costs_by_its_size_and_one_too_large_is_not_held(tmp_path: Path) -> None:
    """R1-1: a lane event of ~9 KB costs 1 + 9 of its job's bounds (on 54133a24: 1, so 4,096
    CHUNK_DONEs of any size were held per job), one over HELD_TEXT_MAX is not held at all
    (let go, as before session 48: a vouched re-run makes its output again), and the row
    of the one held is keyed by its text's SHA-256, with no second copy in an index."""
    node = _node(tmp_path)
    t = node.hlc.now()
    small, big = _chunk_done(t, 1, 10), _chunk_done(t, 2, 80)
    assert len(event_text(small)) > 9 * 1024 and len(event_text(big)) > HELD_TEXT_MAX
    assert node.merge([small]) == [small] and node.merge([big]) == [big]
    try:
        _delete_and_drop(node)
        wait = node.state._gone_waits[J1]
        assert list(wait.lanes) == [small]
        assert wait.n == held_cost(small) == 1 + len(event_text(small)) // 1024 > 1
        text = event_text(small)
        assert _held_rows(node) == [(J1, HELD_LANE, Y, hashlib.sha256(text.encode()).hexdigest(),
                                     text)]
        indexed = node.log.db.execute(
            "SELECT group_concat(name) FROM pragma_index_info((SELECT name FROM sqlite_master "
            "WHERE type = 'index' AND tbl_name = 'gone_wait_events'))").fetchone()[0]
        assert indexed == "job,kind,id"  # (not the event's text)
    finally:
        node.log.close()
    back = _restarted(tmp_path)
    try:
        assert back.state._gone_waits[J1].n == held_cost(small)
        back.emit(EventType.JOB_MEMBERS, {"job": J1, "add": [Y]})  # (vouched: folded)
        back.flush()
        assert set(small.body.cache) <= set(back.state.cache)
        assert back.state._gone_wait_n == 0
    finally:
        back.log.close()


def test_a_session_49_table_of_held_events_moves_without_losing_a_row(tmp_path: Path) -> None:
    """R1-1's migration: a data dir of session 49 (`gone_wait_held`, keyed by the text) opens;
    every row, read back or not, moves to `gone_wait_events` in its order, the old table goes,
    and the event held in it waits as before (its output enters the cache once Y is added)."""
    node = _node(tmp_path)
    done = _task_done(node.hlc.now())
    _delete_and_drop(node)
    node.log.close()
    db = sqlite3.connect(tmp_path / LOG_FILE)
    db.execute("DROP TABLE gone_wait_events")  # (what session 49 made instead)
    db.execute(OLD_HELD)
    rows = [(J1, HELD_DONE, Y, event_text(done)), (J1, HELD_LANE, Y, "{not json"),
            (J1, "zero", Y, "{}")]
    db.executemany("INSERT INTO gone_wait_held VALUES (?, ?, ?, ?)", rows)
    db.commit()
    db.close()
    back = _restarted(tmp_path)
    try:
        got = back.log.db.execute("SELECT job, kind, peer, event FROM gone_wait_events "
                                  "ORDER BY rowid").fetchall()
        assert got == rows
        assert back.log.db.execute("SELECT count(*) FROM sqlite_master WHERE name = "
                                   "'gone_wait_held'").fetchone() == (0,)
        assert back.state._gone_waits[J1].done == {
            Y: {hashlib.sha256(event_text(done).encode()).hexdigest(): done}}
        back.emit(EventType.JOB_MEMBERS, {"job": J1, "add": [Y]})
        back.flush()
        assert back.state.outputs.get("ky") == Y_OUT
        back.catchup.compact()
        # (taken in: its row goes; the two that do not read back are kept, R1-6)
        assert [r[:2] for r in _held_rows(back)] == [(J1, HELD_LANE), (J1, "zero")]
    finally:
        back.log.close()


def test_a_held_row_not_of_its_lane_is_let_go_and_deleted(tmp_path: Path) -> None:
    """R1-2, the review's reproduction: a row held under Y for gone J1 whose event is a
    JOB_DELETED of live J2 is not held at a start, and not folded when Y is added (on
    54133a24: J2 deleted); so for a lane event of another peer's lane, of another job, and
    a kind no release writes. Each such row is deleted at the next pass (R1-6)."""
    node = _node(tmp_path)
    me = node.peer_id
    t = node.hlc.now()
    _delete_and_drop(node)
    facts = node.state.gone_lanes(J1)
    assert facts is not None and facts.sub is not None
    sub = facts.sub[0]
    node.log.close()
    forged = Event(me, 10**6, sub + (5 << 16), EventType.JOB_DELETED, {"job": J2, "reason": "x"})
    x_lane = _task_done(t, X, "kx")
    other_job = Event(lane(Y, J2), 1, t + (1 << 16), EventType.TASK_DONE,
                      {"job": J2, "task": "t0", "output": Y_OUT, "cached": False, "key": "k2"})
    lane_j2 = Event(lane(Y, J1), 1, t + (1 << 16), EventType.TASK_DONE,
                    {"job": J2, "task": "t0", "output": Y_OUT, "cached": False, "key": "k3"})
    rows = [(J1, HELD_LANE, Y, forged), (J1, HELD_DONE, Y, x_lane), (J1, HELD_LANE, Y, other_job),
            (J1, HELD_DONE, Y, lane_j2), (J1, 7, Y, _task_done(t))]
    db = sqlite3.connect(tmp_path / LOG_FILE)
    db.executemany("INSERT INTO gone_wait_events VALUES (?, ?, ?, ?, ?)",
                   [(j, k, f"id{i}", p, event_text(e)) for i, (j, k, p, e) in enumerate(rows)])
    db.commit()
    db.close()
    back = _restarted(tmp_path)
    try:
        assert J2 in back.state.jobs
        wait = back.state._gone_waits.get(J1)
        assert wait is None or (wait.n, list(wait.lanes), wait.done) == (0, [], {})
        back.emit(EventType.JOB_MEMBERS, {"job": J1, "add": [Y, X]})
        back.flush()
        assert J2 in back.state.jobs and J2 not in back.state.deleted
        assert not {"kx", "k2", "k3", "ky"} & set(back.state.outputs)
        back.catchup.compact()
        assert _held_rows(back) == []
    finally:
        back.log.close()


def test_adds_are_loaded_one_at_a_time_and_let_go_rows_deleted(tmp_path: Path) -> None:
    """R1-6: one adder's adds past GONE_WAIT_MAX (a hand-made file) do not take its good add
    X->X with them (on 54133a24 the group went whole), the adds let go are deleted at the
    next pass (not let go again at every start), and an add whose peer id is longer than
    the door admits is not read (kept on disk: it does not read back)."""
    node = _node(tmp_path)
    _delete_and_drop(node)
    node.log.close()
    db = sqlite3.connect(tmp_path / LOG_FILE)
    many = [(J1, X, f"f{i:015d}") for i in range(GONE_WAIT_MAX)]
    long_id = (J1, X, "e" * 300)
    db.executemany("INSERT INTO gone_wait_adds VALUES (?, ?, ?)", [(J1, X, X), *many, long_id])
    db.commit()
    db.close()
    back = _restarted(tmp_path)
    try:
        wait = back.state._gone_waits[J1]
        assert X in wait.adds[X] and "e" * 300 not in wait.adds[X]
        assert wait.n == len(wait.adds[X]) == GONE_WAIT_MAX
        back.catchup.compact()
        left = back.log.db.execute("SELECT count(*) FROM gone_wait_adds").fetchone()[0]
        assert left == GONE_WAIT_MAX + 1  # (those held, and the unreadable one)
    finally:
        back.log.close()


def test_what_waits_under_a_peer_vouched_already_is_taken_in(tmp_path: Path) -> None:
    """R1-3: X's self-add waits (X not vouched), X's lane TASK_DONE is set aside and Y's (no
    member) is held, all on disk; then a previous release (which knows nothing of the wait
    rows) vouches X and Y: written here as it leaves the job index (`gone_vouched`). At the
    next start both outputs enter the cache and every wait row goes (on 54133a24: held for
    good, no later add walks a vouched peer)."""
    node = _node(tmp_path)
    t = node.hlc.now()
    xx = Event(X, 1, t + (1 << 16), EventType.JOB_MEMBERS, {"job": J1, "add": [X]})
    dx, dy = _task_done(t + (1 << 16), X, "kx"), _task_done(t + (1 << 16), Y, "ky")
    for ev in (xx, dx, dy):
        assert node.merge([ev]) == [ev]
    _delete_and_drop(node)
    assert sorted(r[:3] for r in _held_rows(node)) == [(J1, HELD_LANE, Y), (J1, HELD_DONE, X)]
    got = node.index.vouched_of(J1)
    assert got is not None and X not in got[1]
    node.log.close()
    db = sqlite3.connect(tmp_path / LOG_FILE)
    db.execute("UPDATE gone_vouched SET members = ?, vouched = ? WHERE job = ?",
               (json.dumps(sorted({*got[0], X, Y})), json.dumps(sorted({*got[1], X, Y})), J1))
    db.commit()
    db.close()
    back = _restarted(tmp_path)
    try:
        assert (back.state.outputs.get("kx"), back.state.outputs.get("ky")) == (Y_OUT, Y_OUT)
        assert back.state._gone_wait_n == 0
        back.catchup.compact()
        assert _held_rows(back) == []
        assert back.log.db.execute("SELECT count(*) FROM gone_wait_adds").fetchone() == (0,)
    finally:
        back.log.close()
