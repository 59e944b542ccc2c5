"""Seqs set aside: an event its origin signed that this release refuses for good (a body past
the nesting bound, a lone surrogate, a body a stricter check refuses; a peer of an earlier
release with looser checks sends such events) is counted as held without being stored,
folded or served, so that its origin's later events do not wait behind a gap for good (a
head that never moves holds their compaction back on every peer: the log and memory grow).

What must not set a seq aside: a clock that runs ahead (a refusal for now), an event whose
signature does not vouch for it (a forger must not spend an origin's seqs), a fold that
raises (kept for a release that fixes the fold: docs/architecture.md, "Checked events").
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from peer.config import PeerConfig
from peer.errors import InvalidEvent
from peer.log import Event, EventType, MeshState, Provide
from peer.log.events import part_event
from peer.log.signing import sign_events
from peer.mesh.gossip import Gossip, GossipConfig
from peer.mesh.keyring import SECRET_FILE_NAME
from peer.mesh.transport import MemoryNetwork
from peer.node import Node
from tests.unit.test_depth import nested
from tests.unit.test_events import CID


def _node(d: Path, opened: list[Node]) -> Node:
    n = Node(PeerConfig(data_dir=d, slots=1, mdns=False))
    n.listeners.clear()  # no scheduler: this is about the log and gossip
    opened.append(n)
    return n


def _pair(tmp_path: Path, opened: list[Node]) -> tuple[Node, Node, Gossip, Gossip, MemoryNetwork]:
    a = _node(tmp_path / "a", opened)
    (tmp_path / "b").mkdir(mode=0o700)
    shutil.copy(tmp_path / "a" / SECRET_FILE_NAME, tmp_path / "b" / SECRET_FILE_NAME)
    b = _node(tmp_path / "b", opened)
    net = MemoryNetwork()
    ga, gb = (Gossip(GossipConfig.local(swim=None), net.transport(), n, n, n.peer_id,
                     auth=n.auth) for n in (a, b))
    ga.bind()
    gb.bind()
    return a, b, ga, gb, net


def _provide(src: Node, seq: int, hlc: int, payload: dict[str, Any]) -> Event:
    """A PROVIDE of `src` that no check has seen (as a peer of an earlier release sends it:
    its wire form is `payload`)."""
    return part_event(src.peer_id, seq, hlc, EventType.PROVIDE, payload,
                      Provide.from_payload({"cids": [CID]}))


def _three(a: Node, bad: dict[str, Any]) -> tuple[Event, Event, Event]:
    """a's good event, then one with payload `bad`, then a good one, signed by a."""
    ok = a.emit(EventType.PROVIDE, {"cids": [CID]})
    a.flush()
    mid = _provide(a, ok.seq + 1, ok.hlc + 1, bad)
    after = _provide(a, ok.seq + 2, ok.hlc + 2, {"cids": ["after"]})
    sign_events(a.identity, a.peer_id, [mid, after], a.admit)
    return ok, mid, after


DEEP = {"cids": [CID], "x": nested(70)}  # past the nesting bound (64)


@pytest.mark.parametrize("bad", [DEEP, {"cids": ["a\udc80b"]}], ids=["deep", "surrogate"])
def test_a_signed_event_this_release_cannot_read_is_set_aside_and_its_origin_moves_on(
        tmp_path: Path, opened: list[Node], bad: dict[str, Any]) -> None:
    a, b, ga, gb, net = _pair(tmp_path, opened)
    ok, mid, after = _three(a, bad)
    with pytest.raises(InvalidEvent):
        Event.from_json(json.loads(json.dumps(mid.to_json())))
    ga.send_events([gb.address], [ok, mid, after])
    net.pump()
    assert b.state.events.get(after.id) == after and mid.id not in b.state.events
    assert b.state.heads[a.peer_id] == after.seq  # not stuck at ok.seq behind a gap
    assert b.heads()[a.peer_id] == after.seq
    assert b.door.health()["refused"]["by_origin"][a.peer_id] == 1
    served = b.events_after({}, 100)
    assert ok in served and after in served and all(e.id != mid.id for e in served)
    b.log.close()
    opened.remove(b)
    again = _node(tmp_path / "b", opened)  # the seq stays set aside after a restart
    assert again.state.heads[a.peer_id] == after.seq
    assert mid.id not in again.state.events


def test_a_body_a_stricter_check_refuses_is_set_aside(tmp_path: Path,
                                                      opened: list[Node]) -> None:
    """As a later release whose check refuses what an earlier one emitted."""
    a, b, ga, gb, net = _pair(tmp_path, opened)
    ok, mid, after = _three(a, {"cids": ["strict"]})

    def strict(ev: Event) -> None:
        if ev.payload.get("cids") == ["strict"]:
            raise ValueError("cids: 'strict' is refused by this release")

    b.door.checks[EventType.PROVIDE] = strict
    ga.send_events([gb.address], [ok, mid, after])
    net.pump()
    assert mid.id not in b.state.events and b.state.heads[a.peer_id] == after.seq
    assert b.door.health()["refused"]["by_reason"]["body"] == 1
    assert [r.id for r in b.log.aside()] == [mid.id]
    b.log.close()
    opened.remove(b)
    # A release without that check (an upgrade that loosened it): at start the seq is no
    # longer set aside, and the event is taken when a member brings it again.
    again = _node(tmp_path / "b", opened)
    assert again.log.aside() == [] and again.state.heads[a.peer_id] == ok.seq
    assert again.merge([mid]) == [mid] and again.state.heads[a.peer_id] == after.seq


def test_a_clock_ahead_is_refused_for_now_not_set_aside(tmp_path: Path,
                                                         opened: list[Node]) -> None:
    a, b, ga, gb, net = _pair(tmp_path, opened)
    ok = a.emit(EventType.PROVIDE, {"cids": [CID]})
    a.flush()
    ahead = _provide(a, ok.seq + 1, ok.hlc + (3600_000 << 16), {"cids": ["later"]})
    sign_events(a.identity, a.peer_id, [ahead], a.admit)
    ga.send_events([gb.address], [ok, ahead])
    net.pump()
    assert b.state.heads[a.peer_id] == ok.seq  # it may be taken once the clock catches up
    assert b.log.aside() == []


def test_an_invalid_event_no_signature_vouches_for_spends_no_seq(tmp_path: Path,
                                                                 opened: list[Node]) -> None:
    """A forger sends a deep event as a's next seq: a's real event there is still taken."""
    a, b, ga, gb, net = _pair(tmp_path, opened)
    ok = a.emit(EventType.PROVIDE, {"cids": [CID]})
    a.flush()
    real = _provide(a, ok.seq + 1, ok.hlc + 1, {"cids": ["real"]})
    forged = _provide(a, ok.seq + 1, ok.hlc + 1, DEEP)
    sign_events(a.identity, a.peer_id, [real], a.admit)
    object.__setattr__(forged, "att", real.att)  # the real batch, another content
    ga.send_events([gb.address], [ok, forged])
    net.pump()
    assert b.state.heads[a.peer_id] == ok.seq and b.log.aside() == []
    ga.send_events([gb.address], [real])
    net.pump()
    assert b.state.events.get(real.id) == real and b.state.heads[a.peer_id] == real.seq


def test_a_set_aside_seq_past_a_gap_waits_for_the_gap(tmp_path: Path,
                                                      opened: list[Node]) -> None:
    a, b, ga, gb, net = _pair(tmp_path, opened)
    ok, mid, after = _three(a, DEEP)
    ga.send_events([gb.address], [mid, after])
    net.pump()
    assert b.state.heads.get(a.peer_id, 0) == 0  # ok.seq is not held yet
    ga.send_events([gb.address], [ok])
    net.pump()
    assert b.state.heads[a.peer_id] == after.seq


def _insert(db: Path, sql: str, *rows: tuple[Any, ...]) -> None:
    c = sqlite3.connect(db)
    c.executemany(sql, rows)
    c.commit()
    c.close()


def test_a_row_of_an_earlier_release_refused_at_start_is_set_aside(
        tmp_path: Path, opened: list[Node]) -> None:
    """An earlier release took a pipeline past the bound: the upgraded peer quarantines the
    row at start, and that origin's head moves on over it (before, it stopped there, and no
    peer of this release would ever serve the seq)."""
    d = tmp_path / "peer"
    first = _node(d, opened)
    ok = first.emit(EventType.PROVIDE, {"cids": [CID]})
    first.flush()
    first.log.close()
    opened.clear()
    deep = {"job": "j", "workflow": {"tasks": [{"name": "t", "call": "ECHO",
                                                "args": [nested(80)]}]}}
    _insert(d / "events.sqlite", "INSERT INTO events (origin, seq, hlc, type, payload) VALUES "
            "(?, ?, ?, ?, ?)",
            ("o", 1, ok.hlc, int(EventType.JOB_SUBMITTED), json.dumps(deep)),
            ("o", 2, ok.hlc, int(EventType.PROVIDE), json.dumps({"cids": ["b"]})))
    again = _node(d, opened)
    assert again.log.quarantined() == 1 and again.state.heads["o"] == 2
    again.log.close()
    opened.clear()
    third = _node(d, opened)  # and at every start after
    assert third.log.quarantined() == 1 and third.state.heads["o"] == 2


def test_the_fold_keeps_set_aside_seqs_through_a_refold_and_drops_them_under_a_floor() -> None:
    s = MeshState()
    e1 = Event("o", 1, 1 << 16, EventType.PROVIDE, {"cids": [CID]})
    e3 = Event("o", 3, 3 << 16, EventType.PROVIDE, {"cids": ["c"]})
    s.apply(e1)
    s.apply(e3)
    assert s.heads["o"] == 1
    assert s.set_aside("o", 2) and s.heads["o"] == 3
    assert not s.set_aside("o", 2) and not s.set_aside("o", 1)  # held already
    s.refold()
    assert s.heads["o"] == 3
    s.raise_floor("o", 2)
    assert "o" not in s.aside and s.heads["o"] == 3
