"""What a member holding the mesh secret can make a peer do with validly signed SWIM updates:
at most MAX_FRAME_UPDATES read from a probe or gossip frame (a SYNC: a table's worth, each
member once per kind, no more suspicions than a probe frame), at most MAX_UNPROBED members
held that never answered a probe of ours."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from peer.mesh import swim as swim_module
from peer.mesh.gossip import GossipConfig
from peer.mesh.sim import Cluster
from peer.mesh.swim import (
    MAX_FRAME_UPDATES,
    MAX_SYNC_UPDATES,
    MAX_UPDATES_PER_FRAME,
    Msg,
    NoSigner,
    Sig,
    State,
)
from peer.mesh.transport import MemoryNetwork

from .test_swim import CFG, alive, make, probe_once, settle


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

