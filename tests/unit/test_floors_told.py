"""Compaction floors reach a peer behind them whatever their number (review rr of session 48,
S7; session 48 helper g's left): a report over its byte bound went without any floor, and a
member's floors were the only trigger of a snapshot catch-up, so past ~1,900 compacted
origins a returning peer was never caught up from it. A DIGEST_REPLY now carries the floors
above its asker's vector ("cf"), and a report the floors raised last. In-memory transport,
fake clock (peer/mesh/sim.py); every loop bounded."""

from __future__ import annotations

import asyncio
from pathlib import Path

from peer.log.compact import MAX_ANNOUNCED_FLOORS
from peer.mesh.antientropy import MAX_FLOORS_SENT
from peer.mesh.gossip import GossipConfig
from peer.mesh.sim import Cluster, SimPeer
from peer.mesh.swim import MAX_REPORT_BYTES, SwimConfig
from peer.mesh.view import report_bytes
from peer.node import Node
from tests.unit.test_catchup_hostile import attempts  # noqa: F401 (a fixture)
from tests.unit.test_compaction import _floor_known_to, _open

STEP_S = 0.05
CFG = GossipConfig.local(swim=SwimConfig.local())
ORIGINS = 3000


def settle(c: Cluster, seconds: float) -> None:
    for _ in range(round(seconds / STEP_S)):
        c.step(STEP_S)


def _floor_heard(a: SimPeer, m: SimPeer) -> int:
    """The floor of `m`'s own origin that `a` heard from `m` (its report's "cfloor", or a
    DIGEST_REPLY's "cf" above a's heads), 0 if none."""
    mid = m.gossip.peer_id
    report = a.members.heard_from.get(mid, {}).get("cfloor") or {}
    told = [f.get(mid, 0) for p, f in getattr(a.sink, "behind_on", []) if p == mid]
    return max([report.get(mid, 0), *told])


def _returning(seed: int) -> tuple[Cluster, SimPeer, SimPeer, int]:
    """Member m and peer a hold m's first 5 events; a goes away, m writes 15 more and
    compacts its first 15 and the events of ORIGINS - 1 other origins (identity churn over
    months); a comes back with what it held: (cluster, m, a, m's floor)."""
    c = Cluster(2, CFG, seed=seed, signed=True)
    m, a = c.peers
    for _ in range(5):
        m.sink.emit()
    settle(c, 1.0)
    assert a.sink.state.heads.get(m.gossip.peer_id) == 5
    held = list(a.sink.state.events.values())
    c.net._nodes[a.addr].close_now()  # (no step until it is back: nothing is sent)
    for _ in range(15):
        m.sink.emit()
    floors = {f"{i:020x}": 7 for i in range(ORIGINS - 1)}
    floors[m.gossip.peer_id] = 15
    m.sink.floors = floors  # (the last raised last: m's own)
    serves = m.sink.events_after  # (what a compacted node serves: nothing under its floors)
    m.sink.events_after = lambda vv, limit: [  # type: ignore[method-assign]
        e for e in serves(vv, limit) if e.seq > floors.get(e.origin, 0)]
    info = {"free_slots": 1, "features": ["fixnonce-v1"], "cfloor": dict(floors)}
    m.gossip._local_info = lambda: dict(info)  # (as a node of the base release announced)
    a = c.restart(a)
    a.sink.merge(held)
    return c, m, a, 15


def test_a_returning_peer_behind_a_member_of_3000_compacted_origins_hears_its_floor() -> None:
    """The member's floors (3,000 origins, ~100 KB) do not fit its report; the returning
    peer is told the one it is behind on by the member's answer to its DIGEST, so its
    catch-up asks that member (before: no floor ever reached it, and it held events above
    a gap it could never fill)."""
    c, m, a, floor = _returning(seed=3)
    settle(c, 3.0)
    mid = m.gossip.peer_id
    assert a.sink.state.heads.get(mid) == 5  # (events 6..15 were compacted: a gap)
    assert _floor_heard(a, m) == floor
    told = [f for p, f in a.sink.behind_on if p == mid]
    assert told and all(set(f) == {mid} for f in told)  # (only origins the asker names)


def test_floors_told_are_bounded_and_only_those_the_asker_names() -> None:
    """An asker naming every origin is told at most MAX_FLOORS_SENT floors, the last raised
    first."""
    c = Cluster(2, CFG, seed=5, signed=True)
    m = c.peers[0]
    m.sink.floors = {f"{i:020x}": 7 for i in range(ORIGINS)}
    vv = {f"{i:020x}": 1 for i in range(ORIGINS)}
    told = m.sink.floors_above(vv, MAX_FLOORS_SENT)
    assert len(told) == MAX_FLOORS_SENT
    assert f"{ORIGINS - 1:020x}" in told and "0" * 20 not in told
    assert m.sink.floors_above({"x": 1}, MAX_FLOORS_SENT) == {}


# -- the node's side: what it announces, what it tells, what a told floor starts ------------


def test_a_report_carries_the_floors_raised_last(tmp_path: Path, opened: list[Node]) -> None:
    """A node's heartbeat and report carry the MAX_ANNOUNCED_FLOORS floors raised last, a
    report well under its byte bound (before: every floor ever raised, ~33 bytes each, and a
    report past the bound went without any); all are still told to an asker behind them."""
    n = _open(tmp_path / "n", opened)
    c = n.compactor
    for i in range(ORIGINS):
        c._raise_floors({f"{i:020x}": 7})
    c._raise_floors({"0" * 20: 9})  # (raised again: now the last raised)
    c._raise_floors({f"{1:020x}": 3})  # (not raised: below its floor)
    cfloor = n.local_info(step=False)["cfloor"]
    assert len(cfloor) == MAX_ANNOUNCED_FLOORS
    assert cfloor["0" * 20] == 9 and f"{ORIGINS - 1:020x}" in cfloor
    assert f"{1:020x}" not in cfloor
    assert len(report_bytes(n.local_info(step=False))) < MAX_REPORT_BYTES // 2
    assert len(c.floors) == ORIGINS  # (kept: the snapshot and `floors_above` read them all)
    told = n.floors_above({f"{1:020x}": 2, "0" * 20: 9, "y": 1}, MAX_FLOORS_SENT)
    assert told == {f"{1:020x}": 7}


async def test_a_floor_told_in_a_digest_reply_starts_a_catch_up(
        attempts: tuple[Node, list[float], list[str], dict[str, str | None]],  # noqa: F811
) -> None:
    """A member's floor told by its DIGEST_REPLY is judged as a report's: one of an origin
    we know and are behind on asks that member for a snapshot; one of an origin we do not
    know does not."""
    b, _, asked, _ = attempts
    b.catchup._loop = asyncio.get_running_loop()
    b.floors_heard("liar", {"x": 2**60})
    known = _floor_known_to(b)["cfloor"]
    b.floors_heard("m", known)
    for _ in range(5):
        await asyncio.sleep(0)
    assert asked == ["m"]


def test_a_cf_too_long_or_unreadable_costs_the_round_nothing() -> None:
    """A DIGEST_REPLY whose "cf" names more than MAX_FLOORS_SENT origins (a later release may
    send more) or does not read as a vector is a hint ignored (its first MAX_FLOORS_SENT
    read): the frame is not dropped as bad and the round's push still brings the replier
    what the asker holds (before: a ValueError after the merge, the push and the pull
    skipped, the frame counted bad; review r1 of session 50, R1-4)."""
    for cf in ({f"{i:020x}": 7 for i in range(MAX_FLOORS_SENT + 1)}, {"x": -1}):
        c = Cluster(2, CFG, seed=7, signed=True)
        m, a = c.peers
        for _ in range(3):
            m.sink.emit()
            a.sink.emit()
        m.sink.floors_above = lambda vv, limit, cf=cf: cf  # type: ignore[method-assign]
        a.sink.floors_above = lambda vv, limit, cf=cf: cf  # type: ignore[method-assign]
        settle(c, 3.0)
        for p, q in ((a, m), (m, a)):
            assert p.gossip.stats.dropped_bad_frame == 0
            assert p.gossip.stats.ae_floors_unread >= 1
            assert p.sink.state.heads.get(q.gossip.peer_id) == 3
