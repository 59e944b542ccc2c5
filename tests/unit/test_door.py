"""The door of the log (peer/log/door.py) and the node's use of it: events from peers and from
disk are checked before they are stored or folded; refusals are counted per origin (bounded);
unknown types are kept, forwarded and not folded (within a cap); `apply` is all-or-nothing;
replay quarantines what fails."""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from peer.config import PeerConfig
from peer.errors import InvalidEvent
from peer.log import HLC, Door, DoorConfig, Event, EventLog, EventType, MeshState, Provide, fold
from peer.log.clock import MAX_HLC
from peer.log.door import OTHER, Refusals, UnknownCap
from peer.log.events import MAX_CLOCK
from peer.log.fold import _APPLY
from peer.log.sqlite import NOT_QUARANTINED
from peer.mesh.gossip import GossipConfig, Kind
from peer.mesh.sim import Cluster
from peer.mesh.wire import parse_events
from peer.node import Node
from tests.unit.mesh_helpers import frame_to, inject
from tests.unit.test_events import INVALID, JSON, VALID

NEWER = 200  # an event type number this version does not know


def now_hlc(ahead_ms: int = 0) -> int:
    return (int(time.time() * 1000) + ahead_ms) << 16


def provide(origin: str, seq: int, hlc: int | None = None) -> Event:
    return Event(origin, seq, now_hlc() if hlc is None else hlc, EventType.PROVIDE,
                 {"cids": [f"c{seq}"]})


def newer(origin: str, seq: int, **payload: Any) -> Event:
    return Event(origin, seq, now_hlc(), NEWER, {"x": seq, **payload})  # type: ignore[arg-type]


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    n = Node(PeerConfig(data_dir=tmp_path, slots=1, mdns=False))
    n.listeners.clear()  # no scheduler reactions: this is about the log
    yield n
    n.log.close()


def rows(n: Node) -> set[tuple[str, int]]:
    db = sqlite3.connect(str(n.cfg.data_dir / "events.sqlite"))
    try:
        return {(o, s) for o, s in db.execute("SELECT origin, seq FROM events")}
    finally:
        db.close()


def reopen(n: Node) -> Node:
    n.log.close()
    again = Node(n.cfg)
    again.listeners.clear()
    return again


# -- the clock -------------------------------------------------------------------------


def test_a_remote_hlc_never_pushes_the_clock_past_the_drift_bound() -> None:
    wall = [1_000_000]
    c = HLC(lambda: wall[0], max_drift_ms=5_000)
    assert not c.accepts(MAX_CLOCK) and c.accepts((wall[0] + 5_000) << 16)
    assert not c.accepts((wall[0] + 5_001) << 16)
    c.observe(MAX_CLOCK)  # 2^63 - 1: the value that made SQLite overflow
    t = c.now()
    assert t >> 16 == wall[0] + 5_001 and t < MAX_HLC
    c.observe((wall[0] + 2_000) << 16)  # within the bound: followed
    assert c.now() > t
    for _ in range(1000):
        assert c.now() < MAX_HLC


def test_event_stamped_2_63_minus_1_is_refused_and_local_events_still_persist(
        node: Node) -> None:
    bad = Event("evil", 1, MAX_CLOCK, EventType.PROVIDE, {"cids": ["c"]})
    ok = provide("ok", 1)
    assert node.merge([bad, ok]) == [ok]
    assert ("evil", 1) not in node.state.events and ("evil", 1) not in rows(node)
    assert ("ok", 1) in rows(node)
    ev = node.emit(EventType.PROVIDE, {"cids": ["mine"]})  # written through (no loop)
    assert ev.hlc < MAX_HLC and (node.peer_id, ev.seq) in rows(node)
    refused = node.log_health()["refused"]
    assert refused["by_origin"] == {"evil": 1} and refused["by_reason"] == {"clock": 1}


@pytest.mark.parametrize(("drift_s", "ahead_ms", "kept"), [
    (300.0, 0, True), (300.0, 290_000, True), (300.0, 310_000, False),
    (0.0, 0, True), (0.0, 5_000, False), (60.0, 120_000, False)])
def test_drift_bound_is_configurable(tmp_path: Path, drift_s: float, ahead_ms: int,
                                     kept: bool) -> None:
    n = Node(PeerConfig(data_dir=tmp_path, slots=1, mdns=False, max_clock_drift_s=drift_s))
    n.listeners.clear()
    try:
        n.merge([provide("o", 1, now_hlc(ahead_ms))])
        assert (("o", 1) in n.state.events) is kept
        assert (("o", 1) in rows(n)) is kept
    finally:
        n.log.close()


# -- refused events: counted per origin, bounded, never stored ---------------------------


@pytest.mark.parametrize(("typ", "payload"), [(t, p) for t, p, _, _ in INVALID],
                         ids=[f"{t.name}-{i}" for i, (t, _, _, _) in enumerate(INVALID)])
def test_a_bad_body_of_each_type_is_refused_counted_and_never_stored(
        node: Node, typ: EventType, payload: dict[str, Any]) -> None:
    wire = [{"origin": "bad", "seq": 1, "hlc": now_hlc(), "type": int(typ), "payload": payload},
            provide("good", 1).to_json()]
    node.merge(parse_events(wire, node.refused))
    assert rows(node) == {("good", 1)}
    assert node.door.refused.by_origin == {"bad": 1}
    assert node.door.refused.by_reason == {"invalid": 1}


def test_a_workflow_the_planner_cannot_read_is_refused_at_the_door(node: Node) -> None:
    wf = {"tasks": [{"name": "t", "call": "C", "params": {}, "depends": ["nowhere"]}]}
    ev = Event("o", 1, now_hlc(), EventType.JOB_SUBMITTED, {"job": "j", "workflow": wf})
    assert node.merge([ev]) == []
    assert "j" not in node.state.jobs and rows(node) == set()
    assert node.door.refused.by_reason == {"body": 1}


def test_refusal_counters_stay_bounded_whatever_origins_an_attacker_picks() -> None:
    r = Refusals(max_origins=8)
    for i in range(1000):
        r.add(f"o{i}", "invalid")
    r.add(12345, "invalid")  # not even a string
    assert len(r.by_origin) == 9 and r.by_origin[OTHER] == 993 and r.total == 1001
    assert r.by_origin["o0"] == 1


def test_a_lane_event_is_dropped_and_counted_not_stored_while_lanes_are_off(
        tmp_path: Path) -> None:
    """With lanes off (--no-lanes: no LANES_FEATURE announced) a lane's event from a peer
    ("<peer>/<job>", peer.log.lanes) is refused at the door (`lanes_off`), stored nowhere,
    folded into nothing; the frame's other events are merged."""
    node = Node(PeerConfig(data_dir=tmp_path, slots=1, mdns=False, lanes=False))
    node.listeners.clear()
    try:
        lane = "0123456789abcdef0123/j0123456789ab"
        claim = Event(lane, 1, now_hlc(), EventType.CLAIM, {
            "job": "j0123456789ab", "task": "t", "split": [lane, 1], "chunk": 0, "attempt": 0})
        good = provide("good", 1)
        assert node.merge([claim, good]) == [good]
        assert rows(node) == {("good", 1)} and lane not in node.state.heads
        assert not node.state.chunks
        assert node.door.refused.by_origin == {lane: 1}
        assert node.door.refused.by_reason == {"lanes_off": 1}
    finally:
        node.log.close()


# -- unknown types ---------------------------------------------------------------------


def test_unknown_type_is_stored_and_served_but_not_folded(node: Node) -> None:
    told: list[Event] = []
    node.listeners.append(told.append)
    evs = [newer("n", 1), provide("n", 2), newer("n", 3)]
    assert node.merge(evs) == evs  # all new: the sink reports them so gossip forwards them
    assert told == [evs[1]]  # only the known one is folded and announced
    assert node.state.heads["n"] == 3 and rows(node) == {("n", 1), ("n", 2), ("n", 3)}
    assert node.events_after({}, 10) == evs
    assert evs[0].type.name == f"UNKNOWN_{NEWER}" and not evs[0].known
    again = reopen(node)
    try:
        assert again.state.heads["n"] == 3 and again.events_after({}, 10) == evs
        assert again.log.quarantined() == 0
    finally:
        again.log.close()


def test_an_older_peer_catches_up_behind_a_newer_peers_events() -> None:
    """The bug: the unknown event sorted first in every reply and dropped the whole frame."""
    c = Cluster(3, GossipConfig.local(max_events_per_frame=16))
    a = c.peers[0]
    evs = [newer("n", 1), *[provide("n", q) for q in range(2, 100)]]
    inject(c, 0, frame_to(c, Kind.EVENTS, {"events": [e.to_json() for e in evs], "ttl": 0}))
    assert a.sink.heads()["n"] == 99
    c.run_until_converged(max_steps=200)
    for p in c.peers:
        assert p.sink.heads().get("n") == 99 and ("n", 1) in p.sink.ids()
        assert p.gossip.stats.dropped_bad_frame == 0


def test_unknown_events_are_capped_per_origin_and_their_seqs_stay_counted(
        tmp_path: Path) -> None:
    cfg = PeerConfig(data_dir=tmp_path, slots=1, mdns=False)
    n = Node(cfg)
    n.listeners.clear()
    n.door.unknown = UnknownCap(max_events=3, max_bytes=1 << 20)
    n.merge([newer("n", q) for q in range(1, 6)] + [provide("n", 6)])
    assert n.state.heads["n"] == 6  # the two let go still count as held
    assert rows(n) == {("n", q) for q in (3, 4, 5, 6)}
    assert [e.seq for e in n.events_after({}, 10)] == [3, 4, 5, 6]
    assert n.log_health()["unknown"] == {"events": 3, "bytes": n.door.unknown.held()[1],
                                         "dropped": 2}
    again = reopen(n)
    try:
        assert again.state.heads["n"] == 6  # the floor is on disk
    finally:
        again.log.close()


def test_unknown_cap_by_bytes() -> None:
    cap = UnknownCap(max_events=100, max_bytes=200)
    let_go = [cap.add(newer("n", q, pad="x" * 60)) for q in range(1, 6)]
    assert sum(map(len, let_go)) == cap.dropped > 0 and cap.held()[1] <= 200
    assert let_go[-1] and let_go[-1][0][1] < 5  # the oldest go first


# -- apply is all-or-nothing -----------------------------------------------------------


def test_a_raising_applier_leaves_the_state_unchanged(monkeypatch: pytest.MonkeyPatch) -> None:
    s = fold([provide("a", 1)])
    before = (dict(s.events), dict(s.heads), {o: dict(v) for o, v in s.by_origin.items()},
              {k: set(v) for k, v in s.providers.items()})

    def boom(st: MeshState, ev: Event, b: Provide) -> None:
        raise RuntimeError("a bug in an applier")

    monkeypatch.setitem(_APPLY, Provide, boom)
    with pytest.raises(RuntimeError):
        s.apply(provide("a", 2))
    after = (dict(s.events), dict(s.heads), {o: dict(v) for o, v in s.by_origin.items()},
             {k: set(v) for k, v in s.providers.items()})
    assert after == before  # not recorded as known: a later, fixed apply folds it
    monkeypatch.undo()
    assert s.apply(provide("a", 2)) and s.heads["a"] == 2 and "c2" in s.providers


def test_merge_quarantines_an_event_whose_fold_raises(node: Node,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(st: MeshState, ev: Event, b: Provide) -> None:
        if ev.origin == "x":
            raise KeyError("cids")
        st.providers[b.cids[0]].add(ev.origin)

    monkeypatch.setitem(_APPLY, Provide, boom)
    new = node.merge([provide("x", 1), provide("y", 1)])
    assert [e.id for e in new] == [("y", 1)]
    assert rows(node) == {("y", 1)} and node.log.quarantined() == 1
    assert node.door.refused.by_reason == {"fold": 1}


def test_an_event_whose_fold_raises_is_quarantined_once_and_folded_once_it_can_be(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Anti-entropy brings an event whose fold raised again (it is not held): the quarantine
    keeps one row of it, not one per round. It is not counted held, so a fold that works
    later (a transient error, a fixed bug) folds it, and so is an equivocating origin's
    other content."""
    fail = [True]

    def boom(st: MeshState, ev: Event, b: Provide) -> None:
        if b.cids[0] == "boom" and fail[0]:
            raise OSError("a transient error")
        st.providers[b.cids[0]].add(ev.origin)

    monkeypatch.setitem(_APPLY, Provide, boom)
    h = now_hlc()
    e1 = Event("x", 1, h, EventType.PROVIDE, {"cids": ["boom"]})
    e2 = Event("x", 1, h, EventType.PROVIDE, {"cids": ["fine"]})
    a = Node(PeerConfig(data_dir=tmp_path / "a", slots=1, mdns=False))
    b = Node(PeerConfig(data_dir=tmp_path / "b", slots=1, mdns=False))
    try:
        for _ in range(3):
            a.merge([e1])
            b.merge([e1])
        assert a.log.quarantined() == 1 and ("x", 1) not in a.state.events
        a.merge([e2])  # an equivocating origin's other content
        assert a.state.events[("x", 1)] == e2 and "fine" in a.state.providers
        fail[0] = False  # the fold works now (a transient error, a fixed bug)
        b.merge([e1])
        assert b.state.events[("x", 1)] == e1 and "boom" in b.state.providers
    finally:
        a.log.close()
        b.log.close()


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(sorted(VALID)), st.data())
def test_a_valid_event_never_makes_the_fold_raise(typ: EventType, data: st.DataObject) -> None:
    """What the door lets in, the fold takes: any payload that validates folds."""
    payload = dict(VALID[typ])
    for _ in range(data.draw(st.integers(1, 3))):
        payload[data.draw(st.sampled_from(sorted(payload)))] = data.draw(JSON)
    try:
        ev = Event("a", 1, 1, typ, payload)
    except InvalidEvent:
        return
    s = MeshState()
    assert s.apply(ev) and s.heads == {"a": 1}


# -- replay at start -------------------------------------------------------------------


def _insert(path: Path, *rows_: tuple[Any, ...]) -> None:
    db = sqlite3.connect(str(path))
    db.executemany("INSERT INTO events (origin, seq, hlc, type, payload) "
                   "VALUES (?, ?, ?, ?, ?)", rows_)
    db.commit()
    db.close()


def test_replay_quarantines_what_fails_and_the_peer_starts(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    cfg = PeerConfig(data_dir=tmp_path, slots=1, mdns=False)
    n = Node(cfg)
    me = n.peer_id
    n.emit(EventType.PROVIDE, {"cids": ["a"]})  # seq 1, written through
    n.log.close()
    db = tmp_path / "events.sqlite"
    _insert(db, (me, 2, 5, int(EventType.CLAIM), '{"job": ""}'),  # our own, invalid
            ("o", 1, 5, int(EventType.JOB_SUBMITTED),
             '{"job": "j", "workflow": {"tasks": [{"name": "t"}]}}'),  # no call, no cid
            ("o", 2, 6, int(EventType.PROVIDE), '{"cids": ["boom"]}'),  # its fold raises
            ("o", 3, 7, int(EventType.PROVIDE), '{"cids": ["fine"]}'))
    real = _APPLY[Provide]

    def boom(st: MeshState, ev: Event, b: Provide) -> None:
        if b.cids == ("boom",):
            raise ValueError("a fold bug")
        real(st, ev, b)

    monkeypatch.setitem(_APPLY, Provide, boom)
    with caplog.at_level(logging.WARNING):
        again = Node(cfg)
    try:
        assert again.log.quarantined() == 3
        assert ("o", 3) in again.state.events and "fine" in again.state.providers
        assert "j" not in again.state.jobs and ("o", 2) not in again.state.events
        for where in (f"{me[:16]}/2", "o/1", "o/2"):
            assert f"quarantined the event {where}" in caplog.text
        assert "a fold bug" in caplog.text
        # our own quarantined seq 2 is never reused (peers may hold the original)
        assert again.emit(EventType.PROVIDE, {"cids": ["b"]}).seq == 3
        assert again.log_health()["quarantined"] == 3
    finally:
        again.log.close()
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        third = Node(cfg)  # logged once: the rows are out of the log now
    try:
        assert "quarantined" not in caplog.text and third.state.heads[me] == 3
    finally:
        third.log.close()


def test_a_data_dir_with_lane_rows_starts_with_lanes_off_keeping_them_unfolded(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Lane rows in the log file opened with lanes off (a data dir run with lanes on, started
    with --no-lanes): the sound ones stay on disk unfolded (they fold again with lanes on),
    one that breaks the lane rules is quarantined naming its lane and why, the rest folds,
    the peer starts and its own seqs go on."""
    cfg = PeerConfig(data_dir=tmp_path, slots=1, mdns=False, lanes=False)
    n = Node(cfg)
    me = n.peer_id
    n.emit(EventType.PROVIDE, {"cids": ["a"]})
    n.log.close()
    mine, other = f"{me}/j0123456789ab", "fedcba9876543210/j0123456789ab"
    claim = ('{"job": "j0123456789ab", "task": "t", "split": ["%s", 1], "chunk": 0, '
             '"attempt": 0}')
    _insert(tmp_path / "events.sqlite", (mine, 1, 5, int(EventType.CLAIM), claim % mine),
            (other, 1, 5, int(EventType.CLAIM), claim % other),
            (other, 2, 6, int(EventType.MEMBER), '{"name": "n", "http": "", "calls": [], '
             '"slots": 1, "cores": 1, "mem_mb": 1, "gpu": false}'))
    with caplog.at_level(logging.WARNING):
        again = Node(cfg)
    try:
        assert again.log.quarantined() == 1 and again.heads() == {me: 1}
        assert again.state.heads == {me: 1}  # (the lane rows are not folded)
        assert f"quarantined the event {other}/2: lane_type" in caplog.text
        assert "2 events of lanes jobs' lanes are kept on disk, not folded" in caplog.text
        assert again.emit(EventType.PROVIDE, {"cids": ["b"]}).seq == 2
        db = sqlite3.connect(str(tmp_path / "events.sqlite"))
        try:
            kept = set(db.execute("SELECT origin, seq FROM events WHERE origin LIKE '%/%'"))
        finally:
            db.close()
        assert kept == {(mine, 1), (other, 1)}
    finally:
        again.log.close()


@pytest.mark.parametrize("where", ["events", "quarantine", "floors", "compact_floors"])
def test_an_own_seq_with_no_room_to_go_on_is_set_aside_and_the_peer_starts(
        tmp_path: Path, where: str, caplog: pytest.LogCaptureFixture) -> None:
    """An own seq of 2^63-1 read back (a data-dir fuzz review, session 32): the next seq
    overflowed at the first emit (a traceback); the row is set aside, named. A floor's
    (session 33) raised no mark of ours either: the events served from disk, the
    compaction floor snapshots announce (our later events held as dropped by their takers)
    and an event rewritten after a failed fsync (not, as dropped) all went by it."""
    cfg = PeerConfig(data_dir=tmp_path, slots=1, mdns=False)
    n = Node(cfg)
    me = n.peer_id
    n.emit(EventType.PROVIDE, {"cids": ["a"]})  # seq 1
    n.log.close()
    db = sqlite3.connect(str(tmp_path / "events.sqlite"))
    if where == "events":
        db.execute("INSERT INTO events (origin, seq, hlc, type, payload) VALUES (?, ?, 5, ?, ?)",
                   (me, MAX_CLOCK, int(EventType.PROVIDE), '{"cids": ["z"]}'))
    elif where == "quarantine":
        db.execute("INSERT INTO quarantine VALUES (?, ?, 5, 1, '{}', 'x', 0)", (me, MAX_CLOCK))
    else:
        db.execute(f"INSERT INTO {where} VALUES (?, ?)", (me, MAX_CLOCK))
    db.commit()
    db.close()
    with caplog.at_level(logging.WARNING):
        again = Node(cfg)
    try:
        assert again.emit(EventType.PROVIDE, {"cids": ["b"]}).seq == 2
        assert str(tmp_path / "events.sqlite") in caplog.text and str(MAX_CLOCK) in caplog.text
        if where.endswith("floors"):
            assert f"the {where} row of this peer ({me[:16]}) holds {MAX_CLOCK}" in caplog.text
        assert again.state.evicted.get(me, 0) <= 2 and me not in again.compactor.floors
    finally:
        again.log.close()


def test_door_config_is_checked() -> None:
    with pytest.raises(ValueError):
        DoorConfig(max_clock_drift_s=-1)
    with pytest.raises(ValueError):
        DoorConfig(max_origins_counted=0)
    with pytest.raises(ValueError):
        HLC(max_drift_ms=-1)


def test_the_quarantine_check_looks_rows_up_by_origin_and_seq(tmp_path: Path) -> None:
    """Whether a row is quarantined already is one index lookup on (origin, seq), not a
    scan of that origin's rows (an event whose fold raises comes back every round)."""
    log = EventLog(tmp_path / "e.sqlite")
    plan = " ".join(str(r[-1]) for r in log.db.execute(
        "EXPLAIN QUERY PLAN SELECT 1 FROM events e WHERE origin = ? AND seq = ? AND "
        f"{NOT_QUARANTINED}", ("a", 1)))
    assert "quarantine_id (origin=? AND seq=?)" in plan, plan
    log.close()


def test_event_log_quarantine_keeps_the_row(tmp_path: Path) -> None:
    log = EventLog(tmp_path / "e.sqlite")
    log.append([provide("a", 1)])
    door = Door(DoorConfig(), HLC(), log)
    log.quarantine([(("a", 1), "a reason")])
    assert list(log.load()) == [] and log.quarantined() == 1
    db = sqlite3.connect(str(tmp_path / "e.sqlite"))
    (origin, seq, reason), = db.execute("SELECT origin, seq, reason FROM quarantine")
    db.close()
    assert (origin, seq, reason) == ("a", 1, "a reason")
    assert door.health()["quarantined"] == 1
    log.close()


def test_unknown_cap_bounds_all_origins_together() -> None:
    """Review r2 of session 48, L2: the cap was per origin, and origins are not bounded (a
    member may mint identities): 16 MiB of unknown events held per origin, for any number
    of origins, and an origin's table stayed after its last event was let go."""
    cap = UnknownCap(max_events=100, max_bytes=1 << 20, max_total_events=20,
                     max_total_bytes=1 << 20)
    let_go: list[tuple[str, int]] = []
    for q in range(1, 11):  # one origin holds 10
        let_go += cap.add(newer("big", q))
    for i in range(200):  # then many origins, 1 each
        let_go += cap.add(newer(f"o{i:03}", 1))
    events, _ = cap.held()
    assert events <= 20 and cap.dropped == len(let_go) == 210 - events
    assert len(cap._held) <= 20  # an origin whose last event went is forgotten
    assert [q for o, q in let_go if o == "big"] == list(range(1, 11))  # the largest first
    # by bytes: the origin holding the most bytes loses its lowest seqs first
    cap = UnknownCap(max_events=100, max_bytes=1 << 20, max_total_events=1000,
                     max_total_bytes=1000)
    assert cap.add(newer("fat", 1, pad="x" * 400)) == []
    assert cap.add(newer("fat", 2, pad="x" * 400)) == []
    assert cap.add(newer("thin", 1, pad="x" * 10)) == []
    assert cap.add(newer("thin", 2, pad="x" * 300)) == [("fat", 1)]
    assert cap.held()[1] <= 1000
    cap.release(newer("thin", 1, pad="x" * 10))
    cap.release(newer("thin", 2, pad="x" * 300))
    assert "thin" not in cap._held and cap.held()[0] == 1
