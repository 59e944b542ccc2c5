"""Node's own origins (docs/design/partial-replication.md, section 4 "Emitting", step 4): with
lanes on (`Node(cfg, lanes=True)`, the default; LANES_FEATURE announced), a task
event of a lanes job we are a member of goes to our lane of that job, one open turn per
lane; what Node keeps of "our own origin" (durable seqs, flushes, heads, what it serves, the
seqs it never reuses) holds per origin. Real data dirs in tmp_path, no gossip (a fake that
keeps the pushed frames), no live peers; no sleeps but the loop's own turns."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from peer.config import PeerConfig
from peer.errors import StoreError
from peer.log import HLC, Door, DoorConfig, Event, EventLog, EventType, MeshState
from peer.log import sqlite as sqlite_log
from peer.log.events import LANES_FEATURE, MAX_OWN_SEQ
from peer.log.lanes import lane
from peer.log.sqlite import QuarantineConfig
from peer.node import Node

J1, J2, J3 = "j0000000000a1", "j0000000000a2", "j0000000000a3"  # J3: no members
WORKFLOW = {"name": "w", "tasks": [{"name": f"t{i}", "call": "c", "params": {}, "depends": []}
                                   for i in range(4)]}


class _Gossip:
    def __init__(self) -> None:
        self.frames: list[list[Event]] = []

    def broadcast(self, events: Sequence[Event]) -> None:
        self.frames.append(list(events))


def _node(d: Path, lanes: bool = True) -> Node:
    """A node on data dir `d`, alone (turns on: no live peer says otherwise), with jobs J1 and
    J2 submitted with it as their only member and J3 without members (once per data dir)."""
    node = Node(PeerConfig(data_dir=d, slots=1, mdns=False), lanes=lanes)
    node.listeners.clear()  # no scheduler reactions: this is about seqs, the log, the push
    node.live_peers = dict  # type: ignore[method-assign,assignment]
    node.gossip = _Gossip()  # type: ignore[assignment]
    if not node.state.jobs:
        for job in (J1, J2, J3):
            members = {} if job == J3 else {"members": [node.peer_id]}
            node.emit(EventType.JOB_SUBMITTED, {"job": job, "workflow": WORKFLOW, **members})
        node.flush()
    return node


def _claim(job: str, task: str) -> tuple[EventType, dict[str, Any]]:
    return EventType.CLAIM, {"job": job, "task": task, "split": ["x", 1], "chunk": 0,
                             "attempt": 0}


async def _turn(node: Node, *emits: tuple[EventType, dict[str, Any]]) -> list[Event]:
    """Emit these in one loop turn; the events of it pushed at its end."""
    gossip: Any = node.gossip
    pushed = len(gossip.frames)
    for typ, p in emits:
        node.emit(typ, p)
    await asyncio.sleep(0)
    return [e for f in gossip.frames[pushed:] for e in f]


def _held(node: Node, origin: str) -> list[tuple[EventType, int]]:
    return [(e.type, q) for q, e in sorted(node.state.by_origin.get(origin, {}).items())]


async def test_a_turn_touching_two_lanes_jobs_makes_two_lane_turns_and_no_mesh_seq(
        tmp_path: Path) -> None:
    node = _node(tmp_path)
    me = node.peer_id
    mesh = node.state.heads[me]  # the three JOB_SUBMITTEDs
    got = await _turn(node, _claim(J1, "t0"), _claim(J2, "t0"), _claim(J1, "t1"),
                      _claim(J2, "t1"))
    assert sorted((e.origin, e.seq, e.type, len(e.singles)) for e in got) == sorted([
        (lane(me, J1), 1, EventType.TURN, 2), (lane(me, J2), 1, EventType.TURN, 2)])
    assert node.state.heads[me] == mesh  # no seq of our own stream
    assert [p.payload["task"] for e in got for p in e.singles if e.origin == lane(me, J1)
            ] == ["t0", "t1"]
    assert all(e.att is not None and e.att.signer == me for e in got)  # one batch per lane
    assert got[0].att is not got[1].att
    # the next turn of each lane takes its next seq
    got = await _turn(node, _claim(J2, "t2"))
    assert [(e.origin, e.seq) for e in got] == [(lane(me, J2), 2)]
    # lanes are not mesh origins: the mesh heads stay as they were, the scope shows them
    assert node.heads() == {me: mesh}
    assert node.heads([J1, J2]) == {lane(me, J1): 1, lane(me, J2): 2}
    node.log.close()


async def test_a_turn_touching_a_lanes_job_and_an_ordinary_one_makes_one_turn_of_each(
        tmp_path: Path) -> None:
    node = _node(tmp_path)
    me = node.peer_id
    mesh = node.state.heads[me]
    got = await _turn(node, _claim(J1, "t0"), _claim(J3, "t0"), _claim(J3, "t1"),
                      (EventType.TASK_DONE, {"job": J1, "task": "t0", "output": "c"}))
    assert sorted((e.origin, e.seq, e.type, [p.payload["job"] for p in e.singles])
                  for e in got) == sorted([
        (lane(me, J1), 1, EventType.TURN, [J1, J1]), (me, mesh + 1, EventType.TURN, [J3, J3])])
    # an event a turn does not hold ends every open turn: seqs stay in emission order
    got = await _turn(node, _claim(J1, "t2"), (EventType.PROVIDE, {"cids": ["a"]}),
                      _claim(J1, "t3"), _claim(J3, "t2"))
    assert [(e.origin, e.seq, e.type) for e in got] == [
        (lane(me, J1), 2, EventType.CLAIM), (me, mesh + 2, EventType.PROVIDE),
        (lane(me, J1), 3, EventType.CLAIM), (me, mesh + 3, EventType.CLAIM)]
    node.log.close()


async def test_lanes_off_every_event_of_ours_is_of_our_own_stream(
        tmp_path: Path) -> None:
    node = _node(tmp_path, lanes=False)
    assert node.door.member_of is None
    me = node.peer_id
    got = await _turn(node, _claim(J1, "t0"), _claim(J2, "t0"))
    assert [(e.origin, e.type) for e in got] == [(me, EventType.TURN)]
    assert node.state.lanes == {}
    node.log.close()


async def test_a_restart_continues_each_lanes_seqs(tmp_path: Path) -> None:
    node = _node(tmp_path)
    me = node.peer_id
    await _turn(node, _claim(J1, "t0"), _claim(J2, "t0"))
    await _turn(node, _claim(J2, "t1"))
    mesh = node.state.heads[me]
    node.log.close()
    node = _node(tmp_path)
    assert node.state.heads[lane(me, J1)] == 1 and node.state.heads[lane(me, J2)] == 2
    assert node.state.heads[me] == mesh
    got = await _turn(node, _claim(J1, "t1"), _claim(J2, "t2"), _claim(J3, "t0"))
    assert sorted((e.origin, e.seq) for e in got) == sorted([
        (lane(me, J1), 2), (lane(me, J2), 3), (me, mesh + 1)])
    node.log.close()


async def test_own_lane_rows_kept_through_a_start_with_lanes_off_fold_again_and_go_on(
        tmp_path: Path) -> None:
    """A start with lanes off leaves our lane rows on disk unfolded (`lanes_off`: they were
    quarantined before, for good); a later start with lanes on folds them again and our
    lane's seqs go on above them (peers may hold those seqs)."""
    node = _node(tmp_path)
    me = node.peer_id
    await _turn(node, _claim(J1, "t0"))
    await _turn(node, _claim(J1, "t1"))
    node.log.close()
    node = _node(tmp_path, lanes=False)
    assert node.door.quarantined == 0 and lane(me, J1) not in node.state.heads
    assert lane(me, J1) not in node.heads()  # (not a mesh origin)
    node.log.close()
    node = _node(tmp_path)
    assert node.state.heads[lane(me, J1)] == 2 and len(_held(node, lane(me, J1))) == 2
    got = await _turn(node, _claim(J1, "t2"))
    assert [(e.origin, e.seq) for e in got] == [(lane(me, J1), 3)]
    node.log.close()


def _lane_rows(node: Node) -> set[tuple[str, int]]:
    return {(str(o), int(q)) for o, q in node.log.db.execute(
        "SELECT origin, seq FROM events WHERE origin LIKE '%/%'")}


@pytest.mark.parametrize("off_again", [False, True])
@pytest.mark.parametrize("left", ["compacted", "deleted"])
async def test_lane_rows_of_a_job_that_left_the_log_while_lanes_were_off_leave_it_at_a_start(
        tmp_path: Path, left: str, off_again: bool) -> None:
    """Review r2 F2: a job's lane rows kept through a start with lanes off (never folded
    there) stay on disk when the job is compacted (or deleted) there and its events drop,
    JOB_SUBMITTED included. Nothing can use them any more (a lane row is stored only while its
    job's JOB_SUBMITTED is held; with lanes on, a job's lanes leave the log with it): the next
    start, lanes on or off, deletes them instead of folding an orphan lane that stayed until
    the job's end plus the horizon."""
    cfg = PeerConfig(data_dir=tmp_path, slots=1, mdns=False, compact_recent_tasks=0)
    node = Node(cfg, lanes=True)
    node.listeners.clear()
    me = node.peer_id
    one = {"name": "w", "tasks": [{"name": "t0", "call": "c", "params": {}, "depends": []}]}
    node.emit(EventType.JOB_SUBMITTED, {"job": J1, "workflow": one, "members": [me]})
    node.emit(EventType.JOB_SUBMITTED, {"job": J2, "workflow": one, "members": [me]})
    for job in (J1, J2):
        node.emit(*_claim(job, "t0"))
    node.flush()
    assert _lane_rows(node) == {(lane(me, J1), 1), (lane(me, J2), 1)}
    node.log.close()
    # lanes off: J1 is an ordinary job here (run again in our stream and compacted, or
    # deleted), its events leave the log
    node = Node(cfg, lanes=False)
    node.listeners[:] = [node.compactor.note]
    if left == "compacted":
        node.emit(EventType.TASK_DONE, {"job": J1, "task": "t0", "output": "c"})
    else:
        node.emit(EventType.JOB_DELETED, {"job": J1, "reason": "x"})
    node.flush()
    node.catchup.compact()
    assert J1 in getattr(node.state, left) and J2 in node.state.jobs
    submitted = node.log.db.execute("SELECT count(*) FROM events WHERE type = ?",
                                    (int(EventType.JOB_SUBMITTED),)).fetchone()[0]
    assert submitted == 1  # J1's left the log, J2's is there
    assert _lane_rows(node) == {(lane(me, J1), 1), (lane(me, J2), 1)}
    node.log.close()
    node = Node(cfg, lanes=not off_again)
    try:
        assert _lane_rows(node) == {(lane(me, J2), 1)}  # J2's kept: its job is live
        assert J1 not in node.state.lanes and lane(me, J1) not in node.state.heads
        if not off_again:
            assert node.state.lanes[J2] == {lane(me, J2)}
    finally:
        node.log.close()


def test_a_lanes_rows_leave_the_log_in_bounded_batches(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Review r1 L3: `EventLog.delete_origins` drops every row of each origin it is given,
    ORIGIN_ROWS_PER_DELETE rows per statement (a transaction each, the ids of one batch
    held at a time), and no row of another origin; it counts what left."""
    monkeypatch.setattr(sqlite_log, "ORIGIN_ROWS_PER_DELETE", 2)
    log = EventLog(tmp_path / "events.sqlite")
    me = "0123456789abcdef"
    gone, kept = lane(me, J1), lane(me, J2)
    log.append([Event(o, q, q, *_claim(j, "t0")) for o, j, n in ((gone, J1, 5), (kept, J2, 2))
                for q in range(1, n + 1)])
    deletes: list[str] = []
    log.db.set_trace_callback(lambda sql: deletes.append(sql) if "DELETE" in sql else None)
    assert log.delete_origins([gone, lane(me, J3)]) == 5  # (J3's: no row)
    log.db.set_trace_callback(None)
    assert len(deletes) == 3 + 1 + 1  # 2 + 2 + 1 rows, then none; J3's none
    assert {(o, q) for o, q in log.db.execute("SELECT origin, seq FROM events")} == {
        (kept, 1), (kept, 2)}
    log.close()


class _FullDisk:
    """The node's log write fails with ENOSPC while `full` (then writes again)."""

    def __init__(self, node: Node) -> None:
        self.full = True
        append = node.log.append

        def flaky(events: Sequence[Event], sync: bool | None = None,
                  keep_texts: bool = False) -> None:
            if self.full:
                raise OSError(28, "No space left on device")
            append(events, sync, keep_texts)

        node.log.append = flaky  # type: ignore[method-assign]


async def test_a_failed_write_keeps_each_lanes_queue(tmp_path: Path) -> None:
    node = _node(tmp_path)
    me = node.peer_id
    gossip: Any = node.gossip
    disk = _FullDisk(node)
    mesh = node.state.heads[me]
    done = node.emit(EventType.TASK_DONE, {"job": J2, "task": "t9", "output": "c"})
    got = await _turn(node, _claim(J1, "t0"), _claim(J2, "t0"), _claim(J3, "t0"))
    assert got == [] and node.write_error is not None
    got = await _turn(node, _claim(J1, "t1"))  # each lane's seqs go on meanwhile
    assert got == []
    queued = sorted([(lane(me, J2), 1), (lane(me, J1), 1), (lane(me, J1), 2), (me, mesh + 1)])
    assert sorted((e.origin, e.seq) for e in node._unflushed) == queued
    with pytest.raises(StoreError):
        node.written(done)
    # nothing unwritten is acknowledged, served or summed, per origin
    assert node.heads() == {me: mesh}
    assert node.heads([J1, J2]) == {lane(me, J1): 0, lane(me, J2): 0}
    assert node.events_after({}, 100, [J1, J2]) == []
    assert node.content_sum([J1]) is None and node.content_digests([J1, J2]) == {}
    assert node._retry is not None
    node._retry.cancel()
    disk.full = False
    node.flush()  # (the retry's)
    assert node.write_error is None and node._unflushed == []
    node.written(done)
    assert node.heads() == {me: mesh + 1}
    assert node.heads([J1, J2]) == {lane(me, J1): 2, lane(me, J2): 1}
    assert sorted((e.origin, e.seq) for e in gossip.frames[-1]) == queued
    assert sorted((e.origin, e.seq) for e in node.events_after({}, 100, [J1, J2])) == [
        q for q in queued if q[0] != me]
    got = await _turn(node, _claim(J1, "t2"), _claim(J2, "t1"))
    assert sorted((e.origin, e.seq) for e in got) == [(lane(me, J1), 3), (lane(me, J2), 2)]
    node.log.close()


def test_the_log_keeps_our_lanes_quarantined_seqs_from_reuse(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """`quarantined_max_seqs` gives our stream's and our lanes' highest seqs set aside (not
    another peer's lane, not a text that is no lane, nothing past MAX_OWN_SEQ: warned), and
    the quarantine's rows let go past its bound leave those seqs as floors."""
    me, other = "0123456789abcdef0123", "fedcba9876543210"
    path = tmp_path / "e.sqlite"
    log = EventLog(path)
    log.set_meta("peer_id", me)
    rows = [(me, 1), (lane(me, J1), 3), (lane(me, J1), MAX_OWN_SEQ + 1), (lane(me, J2), 2),
            (lane(other, J1), 7), (me + "/x", 9)]
    for origin, seq in rows:
        log.append([Event(origin, seq, 1 << 16, EventType.PROVIDE, {"cids": ["c"]})])
    log.quarantine([((o, s), "why") for o, s in rows])
    assert log.quarantined_max_seqs(me, MAX_OWN_SEQ) == {me: 1, lane(me, J1): 3,
                                                        lane(me, J2): 2}
    assert f"seq {MAX_OWN_SEQ + 1} of {lane(me, J1)}" in caplog.text
    log.quarantine_cfg = QuarantineConfig(max_rows=1)  # every row but the newest goes
    log.append([Event(other, 1, 1 << 16, EventType.PROVIDE, {"cids": ["c"]})])
    log.quarantine([((other, 1), "why")])
    assert log.quarantined_max_seqs(me, MAX_OWN_SEQ) == {}
    assert log.floors(me) == {me: 1, lane(me, J1): 3, lane(me, J2): 2}
    log.set_floor(lane(me, J2), MAX_OWN_SEQ + 1)  # (damaged or edited: left out, warned)
    assert log.floors(me) == {me: 1, lane(me, J1): 3}
    log.close()


def test_a_replayed_seq_of_our_lane_past_max_own_seq_is_quarantined(tmp_path: Path) -> None:
    """As one of our stream's: no room to go on (another peer's lane is its own to bound)."""
    me, other = "0123456789abcdef0123", "fedcba9876543210"
    log = EventLog(tmp_path / "e.sqlite")
    _, claim = _claim(J1, "t0")
    far = [Event(lane(p, J1), MAX_OWN_SEQ + 1, 1 << 16, EventType.CLAIM, claim)
           for p in (me, other)]
    log.append(far)
    door = Door(DoorConfig(), HLC(), log, member_of=lambda job: True)
    state = MeshState()
    assert door.replay(state, me) == 1
    assert door.quarantined == 1 and state.heads == {lane(other, J1): 0}
    assert log.quarantined_max_seqs(me, MAX_OWN_SEQ) == {}  # (past it: left out)
    log.close()


def test_the_doors_adders_are_a_lanes_jobs_members_and_anyone_once_it_left(
        tmp_path: Path) -> None:
    """JOB_MEMBERS at the door (design section 3): of a lanes job, its members may add
    anyone and another peer only itself; of a job without members, or unknown, none is
    taken; of a job that left memory (deleted), any is (its members matter no more)."""
    node = _node(tmp_path)
    other = "fedcba9876543210"
    try:
        def add(job: str, adds: list[str], origin: str = other) -> Event:
            return Event(origin, 1, node.hlc.now(), EventType.JOB_MEMBERS,
                         {"job": job, "add": adds})

        assert node.door.problem(add(J1, [other])) is None  # (itself)
        assert (node.door.problem(add(J1, [other, node.peer_id])) or "").startswith(
            "members_add")
        assert node.door.problem(add(J1, [other], origin=node.peer_id)) is None
        for job in (J3, "j0000000000ff"):
            assert (node.door.problem(add(job, [other])) or "").startswith("members_job")
        node.state.deleted[J1] = (1, node.peer_id, 1)
        assert node.door.problem(add(J1, [other, node.peer_id])) is None
    finally:
        node.log.close()


async def test_during_a_write_outage_each_queued_event_is_read_once_for_the_unwritten_origins(
        tmp_path: Path) -> None:
    """`heads`, `servable` and the content digests ask which of our origins have events not
    yet written at every call: the queue, which grows for as long as the outage lasts, is
    read from where the last call stopped, not walked whole at every call."""
    node = _node(tmp_path)
    me = node.peer_id
    disk = _FullDisk(node)
    mesh = node.state.heads[me]
    for i in range(3):
        await _turn(node, _claim(J1, f"t{i}"), _claim(J2, f"t{i}"))
    assert node.write_error is not None and len(node._unflushed) == 6

    class Watched(list[Event]):
        """Counts the queued events read."""

        read = 0

        def __iter__(self) -> Any:
            Watched.read += len(self)
            return super().__iter__()

        def __getitem__(self, key: Any) -> Any:
            got = super().__getitem__(key)
            Watched.read += len(got) if isinstance(key, slice) else 1
            return got

    queue = node._unflushed = Watched(node._unflushed)
    for _ in range(10):
        assert node._unwritten() == {lane(me, J1): 0, lane(me, J2): 0}
        node.servable_upto()
    node.emit(EventType.TASK_DONE, {"job": J3, "task": "t9", "output": "c"})
    node._close_turn()  # (queued now, not flushed: no loop turn ends here)
    for _ in range(10):
        assert node._unwritten() == {lane(me, J1): 0, lane(me, J2): 0, me: mesh}
    assert len(queue) == 7 and Watched.read == 7  # each once
    node._unflushed = list(queue)
    assert node._retry is not None
    node._retry.cancel()
    disk.full = False
    node.flush()
    assert node._unflushed == [] and node._unwritten() == {}
    assert node.heads([J1, J2]) == {lane(me, J1): 3, lane(me, J2): 3}
    assert node.heads()[me] == mesh + 1
    node.log.close()


def test_a_flush_of_our_stream_is_remembered_past_many_flushes_of_our_lanes(
        tmp_path: Path) -> None:
    """The runs remembered for `durable`'s fsync are kept per origin of ours: a peer in many
    lanes jobs flushing its lanes does not forget the run of its own stream that an
    acknowledgement waits for (a run forgotten is proven as of epoch 0: SyncTainted, once
    any fsync failed since the start, as one did here)."""
    node = _node(tmp_path)  # (no loop: each emit is flushed at once)

    def failed() -> None:
        raise OSError(5, "Input/output error")

    node.log._fsync = failed  # type: ignore[method-assign]
    with pytest.raises(OSError):
        node.log.sync()
    done = node.emit(EventType.TASK_DONE, {"job": J3, "task": "t9", "output": "c"})
    epoch = node._write_epoch_of(done)
    assert epoch == 1
    for i in range(300):
        node.emit(*_claim(J1 if i % 2 else J2, f"t{i % 4}"))
    assert node._write_epoch_of(done) == epoch
    assert len(node._flushes[lane(node.peer_id, J1)]) == 150
    node.log.close()


async def test_a_node_with_lanes_gives_its_gossip_its_lanes(tmp_path: Path,
                                                            monkeypatch: Any) -> None:
    """One switch: a node with lanes on gives its gossip its LaneSink (else the gossip would
    push its lane events to every peer, members or not); with lanes off, none, as before."""
    made: list[object] = []

    class FakeGossip:
        def __init__(self, *args: Any, lanes: object = None, **kwargs: Any) -> None:
            made.append(lanes)

        async def start(self) -> None:
            pass

    monkeypatch.setattr("peer.node.Gossip", FakeGossip)
    monkeypatch.setattr("peer.node.zmq_transport", lambda *args: None)
    nodes = []
    for on in (True, False):
        node = Node(PeerConfig(data_dir=tmp_path / str(on), slots=1, mdns=False), lanes=on)
        await node._start_mesh()
        nodes.append(node)
        node.log.close()
    assert made == [nodes[0], None]


def test_the_lanes_setting_switches_lanes_on_and_announces_lanes_v1(tmp_path: Path) -> None:
    """PeerConfig.lanes (on by default, --no-lanes) makes a Node with lanes on (its fold's,
    door's and workflows' switch) that announces LANES_FEATURE in its MEMBER event and
    heartbeats; off, nothing announces it (an explicit `lanes` wins over the setting)."""
    seen = {}
    for name, cfg_on, given in (("on", True, None), ("off", False, None),
                                ("given", False, True)):
        node = Node(PeerConfig(data_dir=tmp_path / name, slots=1, mdns=False, lanes=cfg_on),
                    lanes=given)
        try:
            node.live_peers = dict  # type: ignore[method-assign,assignment]
            feats = (node.capabilities()["features"], node.local_info()["features"])
            seen[name] = (node.state.lanes_on, node.door.member_of is not None,
                          [LANES_FEATURE in f for f in feats])
        finally:
            node.log.close()
    assert seen == {"on": (True, True, [True, True]), "off": (False, False, [False, False]),
                    "given": (True, True, [True, True])}
    assert PeerConfig().lanes is True


def test_a_peer_added_to_a_job_asks_its_adder_for_the_lanes_through_the_gossip(
        tmp_path: Path) -> None:
    """The joiner's ask (design 5.3) wired end to end in a node: a JOB_MEMBERS of another
    peer adding us to a lanes job whose lanes we do not hold makes the scheduler wait
    (`Scheduler._join`) and ask the adder at once, through `Node._catch_up`, of the gossip
    (`Gossip.catch_up`: its exchange is tested in test_lanes_routing.py)."""
    node = _node(tmp_path)
    other, job = "f" * 16, "j0000000000a4"
    asked: list[tuple[str, str, bool]] = []
    node.gossip.catch_up = (  # type: ignore[attr-defined]
        lambda j, peer, fallback: asked.append((j, peer, fallback)))
    node.emit(EventType.JOB_SUBMITTED, {"job": job, "workflow": WORKFLOW, "members": [other]})
    node.flush()
    add = Event(other, 1, node.state.heads[node.peer_id] + 1, EventType.JOB_MEMBERS,
                {"job": job, "add": [node.peer_id], "heads": {lane(other, job): 2}})
    assert node.state.apply(add)
    node.scheduler.poke(add)
    assert asked == [(job, other, True)] and job in node.scheduler._joining
    node.live_peers = dict  # type: ignore[method-assign,assignment]
    assert node.local_info()["working"] == [job]  # (its heartbeats: it works on the job,
    node.log.close()  # review r2 of session 46, L3)
