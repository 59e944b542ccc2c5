"""What the layers above SWIM keep of a member goes when SWIM forgets it (review r2 of session
48, M2): a lab left running for months, where every CI runner or re-imaged machine is a new
peer id, holds state of the members alive, not of every id ever heard. In-memory transport,
fake clock (peer/mesh/sim.py); every loop bounded."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

from peer.config import PeerConfig
from peer.log import LANES_FEATURE
from peer.mesh.gossip import GossipConfig
from peer.mesh.membership import FORGET_AFTER_DEAD
from peer.mesh.sim import Cluster, SimPeer
from peer.mesh.swim import SwimConfig
from peer.node import Node

STEP_S = 0.05
CFG = GossipConfig.local(swim=SwimConfig.local(forget_s=2.0))


def settle(c: Cluster, seconds: float) -> None:
    for _ in range(round(seconds / STEP_S)):
        c.step(STEP_S)


def churn(c: Cluster, rounds: int, *, cfg: GossipConfig | None = None,
          dead_s: float = 4.0) -> None:
    """`rounds` times: a peer with a fresh identity joins, lives a second (it announces
    lanes, so that `lane_peers` holds it), is killed, and `dead_s` pass (SWIM: dead, then
    forgotten after forget_s)."""
    for i in range(rounds):
        t = c.add(f"t{i:04d}", cfg)
        for p in c.peers:
            if p is not t:
                t.gossip.add_peer(p.addr)
        t.gossip._local_info = lambda: {"free_slots": 1, "features": [LANES_FEATURE]}
        settle(c, 1.0)
        c.net._nodes[t.addr].close_now()
        c.peers.remove(t)
        settle(c, dead_s)


def held(p: SimPeer) -> dict[str, int]:
    g = p.gossip
    return {"swim": len(g.swim.members) if g.swim else 0, "infos": len(g.view._infos),
            "lane_peers": len(g.view.lane_peers), "legacy_ids": len(g.view.legacy_ids),
            "heads": len(g.view._heads), "sink": len(p.members.heard_from)}


def test_churn_of_identities_leaves_state_of_the_live_members_only() -> None:
    """6 short-lived identities join and die one after the other: every long-lived peer's
    view holds the 2 others it lives with (before: one report, and one sink entry, per id
    ever heard: 8 of each)."""
    c = Cluster(3, CFG, seed=1, signed=True)
    settle(c, 1.0)
    churn(c, 6)
    for p in c.peers:
        h = held(p)
        assert h["swim"] == 2, h
        assert h["infos"] <= 2 and h["sink"] <= 2 and h["lane_peers"] <= 2, h
        assert h["heads"] <= 2, h


def test_a_member_forgotten_comes_back_and_is_held_again() -> None:
    """A member SWIM forgot that starts again (same identity) is held, and reported to the
    sink, again: forgetting is no ban."""
    c = Cluster(3, CFG, seed=2, signed=True)
    settle(c, 1.0)
    gone = c.peers[2]
    auth = gone.gossip.auth
    assert auth is not None
    c.net._nodes[gone.addr].close_now()
    c.peers.remove(gone)
    settle(c, 4.0)
    assert gone.gossip.peer_id not in c.peers[0].members.heard_from
    q = c.add(gone.gossip.peer_id, identity=auth.identity, incarnation=auth.incarnation + 1)
    for o in c.peers:
        if o is not q:
            q.gossip.add_peer(o.addr)
    settle(c, 1.0)
    assert gone.gossip.peer_id in c.peers[0].members.heard_from
    assert gone.gossip.peer_id in c.peers[0].gossip.view._infos


def test_peers_of_the_previous_release_are_forgotten_with_their_legacy_mark() -> None:
    """Peers of the previous release (heartbeats, no SWIM) that die are forgotten by
    `Membership` after FORGET_AFTER_DEAD x dead_after_s; their legacy mark and the sink's
    entry go with them (before: `legacy_ids` and the sink kept every one)."""
    legacy = GossipConfig.local(swim=None, anti_entropy_nonces=False)
    c = Cluster(2, CFG, seed=3, signed=True)
    settle(c, 1.0)
    churn(c, 3, cfg=legacy, dead_s=FORGET_AFTER_DEAD * CFG.dead_after_s + 1.0)
    for p in c.peers:
        h = held(p)
        assert h["legacy_ids"] == 0 and h["sink"] <= 1 and h["heads"] <= 1, h


def test_node_forgot_drops_its_info_and_skew_and_keeps_a_members_last_heard(
        tmp_path: Path) -> None:
    """`Node.forgot`: the info and clock skew of a forgotten peer go (/api/health lists every
    skew held); when it was last heard stays for a registered member (/api/peers shows it)
    and goes for any other id."""
    node = Node(PeerConfig(data_dir=tmp_path / "peer", slots=1, mdns=False))
    try:
        node.state.members["m1"] = cast(Any, None)  # (registered: only the key is read)
        for p in ("m1", "x1"):
            node.heard(p, {"free_slots": 1, "wall_ms": 1})
        assert set(node.skew_ms) == {"m1", "x1"}
        node.forgot("m1")
        node.forgot("x1")
        assert node.skew_ms == {} and "m1" not in node.infos and "x1" not in node.infos
        assert "m1" in node.heard_at and "x1" not in node.heard_at
        assert "x1" not in node.security()["skew_ms"]
    finally:
        node.log.close()
