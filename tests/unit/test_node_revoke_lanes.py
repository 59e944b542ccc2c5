"""A revoked peer's lanes (docs/design/partial-replication.md, section 6 and step 3's review
items; LANES_FEATURE): with lanes on, the REVOKE a Node emits bounds each lane of the revoked
peer it holds by its head of that lane (`lanes_after`), the keyring refuses that lane's
events above it, and `servable_upto` serves none of them. Real data dirs in tmp_path, no
gossip, no live peers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from peer.config import PeerConfig
from peer.log import Event, EventType
from peer.log.lanes import lane
from peer.log.signing import Identity, admit_tag, peer_id_for, sign_events
from peer.mesh.wire import pack_frames
from peer.node import Node

J1 = "j0000000000a1"
WORKFLOW = {"name": "w", "tasks": [{"name": "t", "call": "c", "params": {}, "depends": []}]}
Q = Identity.generate()  # the member revoked
QID = peer_id_for(Q.key)
R = Identity.generate()  # another revoker
RID = peer_id_for(R.key)


def _node(d: Path) -> Node:
    """A lanes node on `d` holding Q's mesh stream up to 10 (a MEMBER and PROVIDEs) and Q's
    lane of J1 (a lanes job of it and Q) up to 3: Q's lane seqs run far below its mesh's."""
    node = Node(PeerConfig(data_dir=d, slots=1, mdns=False), lanes=True)
    node.listeners.clear()
    node.live_peers = dict  # type: ignore[method-assign,assignment]
    node.emit(EventType.JOB_SUBMITTED, {"job": J1, "workflow": WORKFLOW,
                                        "members": [node.peer_id, QID]})
    member = {"name": "q", "http": "", "calls": [], "slots": 1, "cores": 1, "mem_mb": 1,
              "key": Q.key.hex()}
    _take(node, Q, [(QID, EventType.MEMBER, member)]
          + [(QID, EventType.PROVIDE, {"cids": [f"c{s}"]}) for s in range(2, 11)]
          + [_claim(s) for s in range(1, 4)])
    assert node.state.heads[QID] == 10 and node.state.heads[lane(QID, J1)] == 3
    return node


def _claim(seq: int) -> tuple[str, EventType, dict[str, Any]]:
    return (lane(QID, J1), EventType.CLAIM,
            {"job": J1, "task": "t", "split": ["x", 1], "chunk": 0, "attempt": seq})


def _take(node: Node, who: Identity, evs: list[tuple[str, EventType, dict[str, Any]]],
          ) -> list[tuple[str, int]]:
    """`who`'s events (each origin's seqs going on from what `node` holds) signed and
    received as gossip receives a frame (the keyring's check, then the merge): the ids
    taken."""
    made: list[Event] = []
    for origin, typ, payload in evs:
        seq = node.state.heads.get(origin, 0) + 1 + sum(e.origin == origin for e in made)
        made.append(Event(origin, seq, node.hlc.now(), typ, payload))
    by_origin: dict[str, list[Event]] = {}
    for e in made:
        by_origin.setdefault(e.origin, []).append(e)
    pid, secrets = peer_id_for(who.key), node.keyring.secrets
    for run in by_origin.values():  # (admitted by the node's mesh secret)
        sign_events(who, pid, run, admit_tag(secrets[0], pid, who.key) if secrets else None)
    frames, _ = pack_frames(made, 1 << 20, 512)
    got = [e for f in frames for e in node.keyring.accept(
        [json.loads(x) for x in f.events], [json.loads(x) for x in f.batches])]
    node.merge(got)
    return [e.id for e in got]


def test_a_lanes_revoke_bounds_each_held_lane_of_the_peer_by_its_head(
        tmp_path: Path) -> None:
    node = _node(tmp_path / "n")
    ev = node.revoke(QID, "key lost")
    assert ev.payload == {"peer": QID, "after": 10, "reason": "key lost",
                          "lanes_after": {J1: 3}}
    # the holder of Q's key adds no lane event past the lane's head, though below `after`
    assert _take(node, Q, [_claim(s) for s in range(4, 7)]) == []
    assert node.keyring.refused.by_origin[lane(QID, J1)] == {"revoked": 3}
    assert node.keyring.accepted_upto(lane(QID, J1)) == 3
    assert node.keyring.accepted_upto(QID) == 10
    # a peer none of whose lanes we hold: the REVOKE is as before
    _take(node, R, [(RID, EventType.MEMBER, {"name": "r", "http": "", "calls": [],
                                              "slots": 1, "cores": 1, "mem_mb": 1,
                                              "key": R.key.hex()})])
    assert node.revoke(RID, "left").payload == {"peer": RID, "after": 1, "reason": "left"}
    node.log.close()


@pytest.mark.parametrize(("lanes_after", "bound"), [({J1: 2}, 2), (None, 2), ({}, 2),
                                                    ({"j0000000000a2": 9}, 2)])
def test_servable_upto_bounds_a_revoked_peers_lanes(
        tmp_path: Path, lanes_after: dict[str, int] | None, bound: int) -> None:
    """What every peer that folded the REVOKE refuses is not served: of the revoked peer's
    lane, what the REVOKE's `lanes_after` names (else its `after`: here 2, a revoker that
    held Q's stream up to 2 only) and below."""
    node = _node(tmp_path / "n")
    origin = lane(QID, J1)
    payload: dict[str, Any] = {"peer": QID, "after": 2, "reason": "stolen"}
    if lanes_after is not None:
        payload["lanes_after"] = lanes_after
    assert _take(node, R, [(RID, EventType.REVOKE, payload)]) == [(RID, 1)]
    upto = node.servable_upto()
    assert (upto[QID], upto[origin]) == (2, bound)
    assert [e.seq for e in node.lane_events_after({}, 100, [J1]) if e.origin == origin
            ] == list(range(1, bound + 1))
    assert node.state.heads[origin] == 3  # held, not served
    node.log.close()


def test_servable_upto_bounds_a_lane_by_its_revokes_own_bound(tmp_path: Path) -> None:
    """The lane's own bound, not the stream's: above `after` here."""
    node = _node(tmp_path / "n")
    origin = lane(QID, J1)
    _take(node, R, [(RID, EventType.REVOKE,
                     {"peer": QID, "after": 1, "reason": "x", "lanes_after": {J1: 2}})])
    assert node.servable_upto()[origin] == 2 and node.servable_upto()[QID] == 1
    assert _take(node, Q, [_claim(4)]) == []
    node.log.close()


class _NotWalked(dict[str, set[str]]):
    """A `MeshState.lanes` that fails if walked whole (its values or items)."""

    def values(self) -> Any:
        raise AssertionError("every held lane walked")

    def items(self) -> Any:
        raise AssertionError("every held lane walked")


def test_servable_upto_walks_only_the_revoked_peers_lanes(tmp_path: Path) -> None:
    """With a peer revoked, `servable_upto` reads that peer's lanes (`MeshState.peer_lanes`),
    not every lane held (on 30bc9d5 it walked `lanes` whole at every call: each served
    frame, with 1,000 lanes held ~0.1 ms; docs/benchmarks.md, session 39, helper e)."""
    node = _node(tmp_path / "n")
    _take(node, R, [(RID, EventType.REVOKE, {"peer": QID, "after": 2, "reason": "x"})])
    node.state.lanes = _NotWalked(node.state.lanes)
    assert node.servable_upto()[lane(QID, J1)] == 2
    node.log.close()
