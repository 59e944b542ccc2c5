"""What a member holding the mesh secret can make a peer do with validly signed SWIM updates:
at most MAX_FRAME_UPDATES read from a probe or gossip frame (a SYNC: a table's worth, each
member once per kind, no more suspicions than a probe frame), at most MAX_UNPROBED members
held that never answered a probe of ours; and NACKs count only from the helpers asked."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from peer.mesh import swim as swim_module
from peer.mesh.gossip import GossipConfig
from peer.mesh.sim import Cluster
from peer.mesh.swim import (
    MAX_BAD_SIGNATURES,
    MAX_FRAME_UPDATES,
    MAX_SYNC_UPDATES,
    MAX_UPDATES_PER_FRAME,
    Msg,
    NoSigner,
    Sig,
    State,
    Swim,
)
from peer.mesh.transport import MemoryNetwork

from .test_swim import CFG, alive, make, probe_once, settle, states


class CountingSigner(NoSigner):
    """Takes every proof (validly signed, as a member's own updates are), counting checks."""

    def __init__(self) -> None:
        self.checks = 0

    def check(self, domain: Sig, signer: str, addr: str, inc: int, ctr: int, body: bytes,
              proof: Mapping[str, Any]) -> str | None:
        self.checks += 1
        return None


def strangers(n: int, first: int = 0) -> list[dict[str, Any]]:
    return [alive(f"x{i}", 20_000 + i % 40_000) for i in range(first, first + n)]


@pytest.mark.parametrize("kind", [Msg.UPDATES, Msg.PING, Msg.ACK, Msg.NACK])
def test_a_probe_or_gossip_frame_is_read_up_to_its_bound(kind: Msg) -> None:
    """An honest frame carries MAX_UPDATES_PER_FRAME piggybacked (+1: an ACK's refutation);
    one of 1,000 validly signed alives of minted ids made 1,000 members (and 1,000 verifies)."""
    s, clock, _, _ = make(3, signed=True)
    before = len(s.members)
    handler = {Msg.UPDATES: s.on_updates, Msg.PING: s.on_ping, Msg.ACK: s.on_ack,
               Msg.NACK: s.on_nack}[kind]
    handler("m0", "127.0.0.1:10", {"s": 1, "t": "me", "m": strangers(1000)}, clock())
    assert len(s.members) - before == MAX_FRAME_UPDATES
    assert s.stats.over_frame == 1000 - MAX_FRAME_UPDATES
    assert MAX_FRAME_UPDATES > MAX_UPDATES_PER_FRAME + 1  # an honest frame is never cut


def test_a_sync_reads_each_member_once_per_kind() -> None:
    """A member's own alive (or report) repeated with rising incarnations, each validly
    signed, was checked and applied once per copy; an honest SYNC holds one of each."""
    s, clock, _, _ = make(3, signed=True)
    signer = s._signer = CountingSigner()
    copies = [alive("m0", 10, inc=2 + k) for k in range(500)]
    reports = [{"t": "r", "i": "m0", "n": 2, "c": 1 + k, "d": "{}"} for k in range(500)]
    s.on_sync("m0", "127.0.0.1:10", {"m": copies + reports}, clock())
    assert signer.checks == 2
    assert s.members["m0"].inc == 2 and s.members["m0"].report_ver == (2, 1)
    assert s.stats.over_frame == 998


def test_a_sync_carries_at_most_a_table_and_a_probe_frames_suspicions() -> None:
    s, clock, _, _ = make(3, signed=True)
    signer = s._signer = CountingSigner()
    sus = [{"t": "s", "i": "m0", "n": 1, "f": f"c{k}"} for k in range(200)]
    s.on_sync("m1", "127.0.0.1:11", {"m": sus}, clock())
    assert signer.checks == 1  # (an honest SYNC has none; a probe frame: 48 at most)
    sup = s.members["m0"].suspicion
    assert sup is not None and len(sup.confirmations) == 1
    big = strangers(MAX_SYNC_UPDATES + 10)
    s.on_sync("m1", "127.0.0.1:11", {"m": big}, clock())
    assert s.stats.over_frame == 199 + 10


def test_members_held_from_gossip_alone_are_bounded_and_a_probed_one_makes_room(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Frame after frame, validly signed alives (or leaves) of minted ids were all held: the
    members map grew without bound, each entry probed in turn."""
    monkeypatch.setattr(swim_module, "MAX_UNPROBED", 40, raising=False)
    s, clock, net, _ = make(3, signed=True)  # 3 members, none probed yet
    for k in range(10):
        s.on_updates("m0", "127.0.0.1:10", {"m": strangers(20, 20 * k)}, clock())
    s.on_updates("m0", "127.0.0.1:10",
                 {"m": [{"t": "l", "i": f"gone{k}", "n": 1} for k in range(5)]}, clock())
    assert len(s.members) == 40 and s.stats.unprobed_refused == 200 + 5 - 37
    refused = alive("late", 30_000)
    s.on_updates("m0", "127.0.0.1:10", {"m": [refused]}, clock())
    assert "late" not in s.members
    addr, ping = probe_once(s, clock, net)  # a member answers a probe: held for that
    s.on_ack(ping["t"], addr, {"s": ping["s"]}, clock())
    assert s.members[ping["t"]].probed
    s.on_updates("m0", "127.0.0.1:10", {"m": [refused]}, clock())
    assert s.members["late"].state is State.ALIVE


def test_a_dead_member_forgotten_makes_room(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(swim_module, "MAX_UNPROBED", 4, raising=False)
    s, clock, _, _ = make(3, signed=True)
    s.on_updates("m0", "127.0.0.1:10", {"m": [{"t": "l", "i": "m1", "n": 1,},
                                              alive("x", 40)]}, clock())
    assert "x" in s.members and "y" not in s.members
    s.on_updates("m0", "127.0.0.1:10", {"m": [alive("y", 41)]}, clock())
    assert "y" not in s.members
    clock.advance(CFG.forget_s + CFG.reconnect_s + 1)
    s.tick(clock())  # m1 left long ago: forgotten
    assert "m1" not in s.members
    s.on_updates("m0", "127.0.0.1:10", {"m": [alive("y", 41)]}, clock())
    assert "y" in s.members


def test_honest_frames_never_reach_the_bounds() -> None:
    c = Cluster(8, GossipConfig.local(), net=MemoryNetwork(loss=0.1, seed=5), signed=True,
                seed=5)
    settle(c, 10.0)
    for p in c.peers:
        st = p.gossip.stats
        assert st.swim_over_frame == 0 and st.swim_unprobed_refused == 0
        assert p.gossip.swim is not None and p.gossip.swim.stats.foreign_acks == 0


# -- NACKs ---------------------------------------------------------------------------------


def _indirect(others: int) -> tuple[Any, Any, Any, dict[str, Any], list[str]]:
    s, clock, net, _ = make(others)
    _, ping = probe_once(s, clock, net)
    clock.advance(CFG.probe_timeout_s)
    s.tick(clock())
    helpers = [m.id for a, _ in net.take(Msg.PING_REQ) if (m := s.member_at(a)) is not None]
    assert len(helpers) == CFG.indirect_checks
    return s, clock, net, ping, helpers


def test_a_nack_counts_only_from_a_helper_asked_and_once() -> None:
    """Lifeguard: a missed probe raises our awareness by the NACKs missing. A NACK from a
    member not asked (or a helper's second) lowered it: a member could keep our timeouts
    short (our own lost frames read as the target's) with NACKs of the seqs it saw."""
    s, clock, _, ping, helpers = _indirect(7)
    strangers_ = [m for m in s.members if m not in helpers and m != ping["t"]]
    assert strangers_
    for mid in strangers_:
        s.on_nack(mid, s.members[mid].addr, {"s": ping["s"]}, clock())
    for _ in range(3):
        s.on_nack(helpers[0], s.members[helpers[0]].addr, {"s": ping["s"]}, clock())
    clock.advance(CFG.probe_interval_s)
    s.tick(clock())  # no ACK: the probe failed, one NACK of the three helpers counted
    assert s.awareness == CFG.indirect_checks - 1
    assert s.stats.foreign_acks == len(strangers_) + 2


def test_nacks_of_every_helper_asked_keep_the_awareness() -> None:
    s, clock, _, ping, helpers = _indirect(5)
    for h in helpers:
        s.on_nack(h, s.members[h].addr, {"s": ping["s"]}, clock())
    clock.advance(CFG.probe_interval_s)
    s.tick(clock())
    assert s.awareness == 0 and s.stats.foreign_acks == 0


# -- peers of the previous release (f151f27) ---------------------------------------------------


def _previous(s: Swim) -> None:
    """f151f27's reading of frames: every update applied, a NACK counted from anyone."""

    def apply_updates(updates: Any, now: float, *, relay: bool = True,
                      sync: bool = False) -> None:
        s._bad_left, s._suspects_left = MAX_BAD_SIGNATURES, len(updates)
        for u in updates:
            try:
                s._apply(u, now, relay)
            except (KeyError, TypeError, ValueError):
                s.stats.dropped_updates += 1

    def on_nack(sender: str, reply_to: str, body: Mapping[str, Any], now: float) -> None:
        apply_updates(body.get("m", []), now)
        p = s._probes.get(body["s"])
        if p is not None:
            p.nacks += 1

    s.apply_updates = apply_updates  # type: ignore[method-assign]
    s.on_nack = on_nack  # type: ignore[method-assign]


def test_peers_of_the_previous_release_see_no_false_suspicion_with_new_ones() -> None:
    """No wire change: two of five peers read frames as f151f27 did; with loss, the indirect
    probes (and their NACKs) go through helpers of both releases, and nobody is held dead."""
    c = Cluster(5, net=MemoryNetwork(loss=0.0, seed=34), signed=True, seed=34)
    for p in c.peers[:2]:
        assert p.gossip.swim is not None
        _previous(p.gossip.swim)
    settle(c, 0.5)
    c.net.loss = 0.1
    settle(c, 20.0)
    c.net.loss = 0.0
    settle(c, 2.0)
    assert all(all(v == "alive" for v in states(p).values()) for p in c.peers)
    swims = [p.gossip.swim for p in c.peers]
    assert all(s is not None and s.stats.deaths == 0 for s in swims)
    assert all(s is not None and s.stats.indirect > 0 for s in swims)
    assert all(s is not None and s.stats.over_frame == 0 and s.stats.foreign_acks == 0
               and s.stats.unprobed_refused == 0 for s in swims)
