"""The quarantine's bounds (peer/log/sqlite.py QuarantineConfig): a member whose contents the
fold refuses adds a row per content; past the bounds the oldest rows go, counted, and our own
quarantined seqs stay out of reuse (a floor)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from peer.config import PeerConfig
from peer.log import HLC, Door, DoorConfig, Event, EventLog, EventType, MeshState, Provide
from peer.log.fold import _APPLY
from peer.log.sqlite import QuarantineConfig
from peer.node import Node
from tests.unit.test_door import now_hlc


def bad(origin: str, seq: int, cid: str = "boom") -> Event:
    return Event(origin, seq, now_hlc(), EventType.PROVIDE, {"cids": [cid]})


def quarantined(path: Path) -> list[tuple[str, int, str]]:
    db = sqlite3.connect(str(path))
    try:
        return [(o, s, p) for o, s, p in db.execute(
            "SELECT origin, seq, payload FROM quarantine ORDER BY rowid")]
    finally:
        db.close()


@pytest.fixture
def boom(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fold raises on every PROVIDE of "boom…" (a fold bug a member found)."""
    real = _APPLY[Provide]

    def apply(st: MeshState, ev: Event, b: Provide) -> None:
        if b.cids[0].startswith("boom"):
            raise ValueError("a fold bug")
        real(st, ev, b)

    monkeypatch.setitem(_APPLY, Provide, apply)


def test_a_member_cannot_grow_the_quarantine_past_its_rows(tmp_path: Path, boom: None) -> None:
    """Distinct contents the fold refuses, one row each: the oldest go past the bound."""
    log = EventLog(tmp_path / "e.sqlite", quarantine=QuarantineConfig(max_rows=3))
    door, state = Door(DoorConfig(), HLC(), log), MeshState()
    for seq in range(1, 7):
        ev = bad("x", seq, f"boom{seq}")
        log.append([ev])
        assert door.fold(state, [ev]) == []
    assert [s for _, s, _ in quarantined(tmp_path / "e.sqlite")] == [4, 5, 6]
    assert door.health()["quarantine"] == {"rows": 3, "bytes": log.quarantine_health()["bytes"],
                                           "dropped": 3, "max_rows": 3, "max_bytes": 64 << 20}
    assert log.quarantined() == 3 and door.quarantined == 6
    log.close()


def test_the_quarantine_keeps_its_bytes_bound(tmp_path: Path) -> None:
    log = EventLog(tmp_path / "e.sqlite", quarantine=QuarantineConfig(max_bytes=1000))
    big = {"cids": ["b" * 150, "c" * 150]}
    for seq in range(1, 6):
        log.append([Event("x", seq, now_hlc(), EventType.PROVIDE, big)])
        log.quarantine([(("x", seq), "why")])
    h = log.quarantine_health()
    assert h["rows"] == 3 and 900 < h["bytes"] <= 1000 and h["dropped"] == 2
    assert [s for _, s, _ in quarantined(tmp_path / "e.sqlite")] == [3, 4, 5]
    log.close()
    again = EventLog(tmp_path / "e.sqlite", quarantine=QuarantineConfig(max_bytes=1000))
    assert again.quarantine_health()["bytes"] == h["bytes"]  # counted again at open
    again.close()


def test_an_earlier_releases_quarantine_over_the_bound_is_trimmed_at_open(
        tmp_path: Path) -> None:
    log = EventLog(tmp_path / "e.sqlite")
    for seq in range(1, 6):
        log.append([bad("x", seq, f"c{seq}")])
        log.quarantine([(("x", seq), "why")])
    log.close()
    again = EventLog(tmp_path / "e.sqlite", quarantine=QuarantineConfig(max_rows=2))
    assert again.quarantined() == 2 and again.quarantine_dropped == 3
    assert [s for _, s, _ in quarantined(tmp_path / "e.sqlite")] == [4, 5]
    again.close()


def test_our_own_quarantined_seq_is_never_reused_once_its_row_is_gone(
        tmp_path: Path, boom: None) -> None:
    """Our own seq 2, quarantined at replay (peers may hold it), then pushed out of the
    quarantine by a flood: the next start still does not emit seq 2 again."""
    cfg = PeerConfig(data_dir=tmp_path, slots=1, mdns=False)
    n = Node(cfg)
    me = n.peer_id
    n.emit(EventType.PROVIDE, {"cids": ["a"]})  # seq 1
    n.log.close()
    db = sqlite3.connect(str(tmp_path / "events.sqlite"))
    db.execute("INSERT INTO events (origin, seq, hlc, type, payload) VALUES (?, 2, ?, ?, ?)",
               (me, now_hlc(), int(EventType.PROVIDE), '{"cids": ["boom"]}'))
    db.commit()
    db.close()
    again = Node(cfg)  # replays and quarantines our seq 2
    assert again.log.quarantined() == 1
    again.log.quarantine_cfg = QuarantineConfig(max_rows=2)
    for seq in range(1, 4):  # a member's flood pushes our row out
        again.merge([bad("x", seq, f"boom{seq}")])
    assert again.log.quarantined() == 2 and me not in {o for o, _, _ in quarantined(
        tmp_path / "events.sqlite")}
    again.log.close()
    third = Node(cfg)
    try:
        assert third.emit(EventType.PROVIDE, {"cids": ["b"]}).seq == 3
        assert third.log_health()["quarantine"]["dropped"] == 0  # since this open
    finally:
        third.log.close()


def test_the_node_reports_the_quarantine_in_health_and_metrics(tmp_path: Path,
                                                              boom: None) -> None:
    n = Node(PeerConfig(data_dir=tmp_path, slots=1, mdns=False))
    try:
        n.merge([bad("x", 1)])
        q = n.log_health()["quarantine"]
        assert (q["rows"], q["dropped"], q["max_rows"]) == (1, 0, 10_000) and q["bytes"] > 0
    finally:
        n.log.close()


def test_quarantine_config_is_checked() -> None:
    with pytest.raises(ValueError):
        QuarantineConfig(max_rows=0)
    with pytest.raises(ValueError):
        QuarantineConfig(max_bytes=0)


def test_a_quarantine_that_fails_half_way_leaves_the_log_writable_and_counted(
        tmp_path: Path) -> None:
    """A failure inside the quarantine's transaction (here the trim's DELETE, as a full disk
    would) rolls it back whole: the log goes on writing, and the counts are the file's
    (before, the transaction stayed open and every later append failed)."""
    log = EventLog(tmp_path / "events.sqlite", quarantine=QuarantineConfig(max_rows=1))
    evs = [Event("o" * 8, s, now_hlc(), EventType.PROVIDE, {"cids": [f"boom{s}"]})
           for s in (1, 2, 3)]
    log.append(evs)
    log.quarantine([(evs[0].id, "r")])
    log.db.execute("CREATE TRIGGER t BEFORE DELETE ON quarantine BEGIN "
                   "SELECT RAISE(ABORT, 'disk'); END")
    with pytest.raises(sqlite3.Error):
        log.quarantine([(evs[1].id, "r")])
    assert not log.db.in_transaction
    assert log.quarantine_health()["rows"] == 1 == log.quarantined()
    log.db.execute("DROP TRIGGER t")
    log.append([Event("o" * 8, 9, now_hlc(), EventType.PROVIDE, {"cids": ["y"]})])
    assert [e.seq for e in log.load()] == [2, 3, 9]
    log.close()
