"""Membership on a fake clock: liveness judged on the local clock only, static and learned
addresses, partner choice; then heartbeats between Gossip peers on the in-memory network."""

from __future__ import annotations

import json
import random
from typing import cast

import pytest

from peer.log.clock import FakeClock
from peer.mesh.antientropy import FIXNONCE_FEATURE, heads_sum
from peer.mesh.gossip import GossipConfig
from peer.mesh.membership import (
    MAX_LEARNED,
    MAX_PEER_SAMPLE,
    Liveness,
    Membership,
    liveness,
)
from peer.mesh.sim import Cluster, RecordingMembers
from peer.mesh.swim import Member, State
from peer.mesh.view import MeshView
from peer.mesh.wire import Kind

from .mesh_helpers import frame_to, inject
from .test_swim import settle

SUSPECT, DEAD = 2.0, 10.0


@pytest.mark.parametrize(("quiet_s", "want"), [
    (0.0, Liveness.ALIVE), (1.0, Liveness.ALIVE), (2.0, Liveness.ALIVE),
    (2.001, Liveness.SUSPECT), (10.0, Liveness.SUSPECT), (10.001, Liveness.DEAD),
    (1e9, Liveness.DEAD),
])
def test_liveness_table(quiet_s: float, want: Liveness) -> None:
    assert liveness(quiet_s, SUSPECT, DEAD) is want


class Paths:
    """Records what membership asks of the transport."""

    def __init__(self) -> None:
        self.connected: list[str] = []
        self.disconnected: list[str] = []

    def connect(self, addr: str) -> None:
        self.connected.append(addr)

    def disconnect(self, addr: str) -> None:
        self.disconnected.append(addr)


def make() -> tuple[Membership, FakeClock, RecordingMembers, Paths]:
    clock, members, paths = FakeClock(), RecordingMembers(), Paths()
    m = Membership(members, paths, clock, random.Random(1), suspect_after_s=SUSPECT,
                   dead_after_s=DEAD)
    m.self_addr = "127.0.0.1:1"
    return m, clock, members, paths


def test_heard_peer_is_alive_and_reported_with_its_address() -> None:
    m, clock, members, _ = make()
    m.heard("p", "127.0.0.1:2", {"load": 1}, clock())
    assert members.heard_from == {"p": {"load": 1, "gossip": "127.0.0.1:2"}}
    assert m.live_peers() == {"p": {"load": 1, "gossip": "127.0.0.1:2", "status": "alive"}}
    assert m.live_addrs() == {"127.0.0.1:2"}
    assert m.status("p") is Liveness.ALIVE and m.status("never") is None


def test_states_follow_the_local_clock_and_come_back() -> None:
    m, clock, _, _ = make()
    m.heard("p", "127.0.0.1:2", {}, clock())
    clock.advance(SUSPECT)
    assert m.status("p") is Liveness.ALIVE
    clock.advance(0.01)
    assert m.status("p") is Liveness.SUSPECT
    assert m.live_peers()["p"]["status"] == "suspect"
    assert m.live_addrs() == {"127.0.0.1:2"}  # a suspect is still gossiped with
    clock.advance(DEAD - SUSPECT)
    assert m.status("p") is Liveness.DEAD
    assert m.live_peers() == {} and m.live_addrs() == frozenset()
    m.heard("p", "127.0.0.1:2", {}, clock())
    assert m.status("p") is Liveness.ALIVE and m.live_addrs() == {"127.0.0.1:2"}


def test_any_frame_keeps_a_peer_alive_but_does_not_raise_the_dead() -> None:
    m, clock, _, _ = make()
    m.heard("p", "127.0.0.1:2", {}, clock())
    m.heard("q", "127.0.0.1:3", {}, clock())
    clock.advance(1.5)
    m.touch("p", "127.0.0.1:2")
    clock.advance(1.5)  # q quiet for 3 s, p for 1.5 s
    assert (m.status("p"), m.status("q")) == (Liveness.ALIVE, Liveness.SUSPECT)
    clock.advance(DEAD)
    assert m.status("p") is Liveness.DEAD
    m.touch("p", "127.0.0.1:2")
    assert m.status("p") is Liveness.DEAD  # only a heartbeat brings it back


def test_long_dead_record_is_forgotten() -> None:
    m, clock, _, _ = make()
    m.heard("p", "127.0.0.1:2", {}, clock())
    clock.advance(10 * DEAD)
    assert m.status("p") is Liveness.DEAD
    clock.advance(0.01)
    assert m.status("p") is None


def test_new_address_of_a_peer_replaces_the_old() -> None:
    m, clock, _, _ = make()
    m.heard("p", "127.0.0.1:2", {}, clock())
    m.heard("p", "127.0.0.1:5", {}, clock())
    assert m.live_addrs() == {"127.0.0.1:5"}


def test_static_addresses_are_kept_until_removed() -> None:
    m, clock, _, paths = make()
    m.add_static("127.0.0.1:2")
    m.add_static("127.0.0.1:1")  # ourselves: ignored
    with pytest.raises(ValueError):
        m.add_static("no-port")
    assert paths.connected == ["127.0.0.1:2"] and m.static_addrs == {"127.0.0.1:2"}
    clock.advance(100 * DEAD)
    m.update(clock())
    assert m.heartbeat_targets() == ["127.0.0.1:2"] and paths.disconnected == []
    m.remove("127.0.0.1:2")
    assert m.heartbeat_targets() == [] and paths.disconnected == ["127.0.0.1:2"]


def test_remove_keeps_the_path_to_a_live_peer() -> None:
    m, clock, _, paths = make()
    m.add_static("127.0.0.1:2")
    m.heard("p", "127.0.0.1:2", {}, clock())
    m.remove("127.0.0.1:2")
    assert paths.disconnected == []
    assert m.heartbeat_targets() == ["127.0.0.1:2"]  # still live there


def test_learned_addresses_expire_unless_static_or_live() -> None:
    m, clock, _, paths = make()
    m.add_static("127.0.0.1:2")
    m.touch("x", "127.0.0.1:2")  # static: not learned
    m.touch("y", "127.0.0.1:3")  # learned from a frame's reply-to
    m.learn_addrs(["127.0.0.1:4"])  # learned from a digest's sample
    m.heard("z", "127.0.0.1:5", {}, clock())
    m.touch("z", "127.0.0.1:5")
    assert m.learned_addrs == {"127.0.0.1:3", "127.0.0.1:4", "127.0.0.1:5"}
    assert m.heartbeat_targets() == [f"127.0.0.1:{i}" for i in (2, 3, 4, 5)]
    for _ in range(12):  # z keeps heartbeating; nobody vouches for 3 and 4 again
        clock.advance(1.0)
        m.heard("z", "127.0.0.1:5", {}, clock())
        m.update(clock())
    assert m.learned_addrs == {"127.0.0.1:5"}
    assert sorted(paths.disconnected) == ["127.0.0.1:3", "127.0.0.1:4"]


def test_learn_addrs_checks_and_bounds_the_sample() -> None:
    m, _, _, _ = make()
    many = [f"10.0.0.{i}:7000" for i in range(MAX_PEER_SAMPLE + 8)]
    m.learn_addrs(["127.0.0.1:1", 7, None, *many])  # ourselves and non-strings skipped
    assert m.learned_addrs == set(many[:MAX_PEER_SAMPLE - 3])
    with pytest.raises(ValueError):
        m.learn_addrs(["bad address"])
    with pytest.raises(TypeError):
        m.learn_addrs(3)  # type: ignore[arg-type]


def test_learned_addresses_are_bounded() -> None:
    m, clock, _, _ = make()
    for i in range(MAX_LEARNED):
        m.touch("x", f"10.{i // 250}.{i % 250}.1:7000")
    m.touch("x", "10.200.0.1:7000")
    assert len(m.learned_addrs) == MAX_LEARNED and "10.200.0.1:7000" not in m.learned_addrs
    clock.advance(DEAD / 2)
    m.touch("x", "10.0.0.1:7000")  # a known one is still refreshed
    clock.advance(DEAD / 2 + 0.1)
    m.update(clock())
    assert m.learned_addrs == {"10.0.0.1:7000"}


def test_partner_is_a_live_peer_else_any_known_address() -> None:
    m, clock, _, _ = make()
    assert m.pick_partner() is None
    m.add_static("127.0.0.1:2")
    assert m.pick_partner() == "127.0.0.1:2"
    for i in range(3, 6):
        m.heard(f"p{i}", f"127.0.0.1:{i}", {}, clock())
    picks = {m.pick_partner() for _ in range(50)}
    assert picks == {"127.0.0.1:3", "127.0.0.1:4", "127.0.0.1:5"}


def test_sample_is_bounded_random_live_and_excludes_the_partner() -> None:
    m, clock, _, _ = make()
    addrs = [f"10.0.0.{i}:7000" for i in range(MAX_PEER_SAMPLE + 10)]
    for i, a in enumerate(addrs):
        m.heard(f"p{i}", a, {}, clock())
    s = m.sample(exclude=addrs[0])
    assert len(s) == len(set(s)) == MAX_PEER_SAMPLE
    assert addrs[0] not in s and set(s) <= set(addrs)
    assert m.sample(exclude=addrs[0]) != s  # random, not the first 32
    m2, clock2, _, _ = make()
    m2.heard("p", "10.0.0.1:7000", {}, clock2())
    assert m2.sample(exclude="10.0.0.1:7000") == []


# -- through Gossip on the in-memory network -----------------------------------------


def test_membership_is_learned_transitively() -> None:
    c = Cluster(3, connect=False)
    a, hub, b = c.peers
    a.gossip.add_peer(hub.addr)
    b.gossip.add_peer(hub.addr)
    for _ in range(20):
        c.step()
    assert b.gossip.peer_id in a.gossip.live_peers()
    assert a.gossip.peer_id in b.gossip.live_peers()
    assert a.members.heard_from[b.gossip.peer_id]["gossip"] == b.addr
    assert a.members.heard_from[b.gossip.peer_id]["free_slots"] == 1


def test_liveness_alive_suspect_dead_and_back() -> None:
    # the previous release's rule (peers heard by heartbeat): heartbeat 0.05, suspect 0.3,
    # dead 1.0; SWIM's own states are tested in test_swim.py
    c = Cluster(2, GossipConfig.local(swim=None))
    a, b = c.peers
    c.step()
    bid = b.gossip.peer_id
    assert a.gossip.status(bid) == "alive"
    c.net.partition([a.addr])
    c.step(0.25)
    assert a.gossip.status(bid) == "alive"
    c.step(0.1)
    assert a.gossip.status(bid) == "suspect"
    assert a.gossip.live_peers()[bid]["status"] == "suspect"
    c.step(0.7)
    assert a.gossip.status(bid) == "dead"
    assert bid not in a.gossip.live_peers()
    c.net.heal()
    c.step()
    assert a.gossip.status(bid) == "alive"
    assert a.gossip.status("never-heard") is None


def test_liveness_ignores_remote_clocks() -> None:
    c = Cluster(2)
    a, b = c.peers
    c.step()
    inject(c, 0, frame_to(c, Kind.HEARTBEAT, {"info": {"now": 10**15}}, sender="future"))
    c.step(0.2)
    assert a.gossip.status("future") == "alive"
    c.step(2.0)
    assert a.gossip.status("future") == "dead"
    assert a.gossip.status(b.gossip.peer_id) == "alive"


def test_heartbeats_reach_member_sink_with_info() -> None:
    c = Cluster(3)
    c.step()
    m = c.peers[0].members
    assert set(m.heard_from) == {"p0001", "p0002"}
    assert m.heard_from["p0001"] == {"free_slots": 1, "features": [FIXNONCE_FEATURE],
                                     "gossip": c.peers[1].addr}


def test_remove_peer_stops_heartbeats() -> None:
    c = Cluster(2, connect=False)
    a, b = c.peers
    a.gossip.add_peer(b.addr)
    a.gossip.remove_peer(b.addr)
    c.step()
    assert b.members.count == 0


def test_stale_learned_addresses_are_forgotten_static_ones_kept() -> None:
    c = Cluster(3, GossipConfig.local(swim=None), connect=False)  # heartbeat-judged peers
    a, hub, b = c.peers
    a.gossip.add_peer(hub.addr)
    b.gossip.add_peer(hub.addr)
    for _ in range(10):
        c.step()
    assert b.addr in a.gossip.membership.learned_addrs
    c.net._nodes[b.addr].close_now()  # b vanishes
    # hub vouches for b's address until hub judges b dead (dead_after_s), then a forgets it
    # a dead_after_s after the last vouch: two windows plus a random anti-entropy round.
    for _ in range(80):
        c.step()
    assert a.gossip.status(b.gossip.peer_id) == "dead"
    assert b.addr not in a.gossip.membership.learned_addrs
    assert hub.addr in a.gossip.membership.static_addrs
    c.step(100.0)  # long dead: the record goes too
    assert a.gossip.status(b.gossip.peer_id) is None


def test_a_swim_report_with_a_known_key_of_another_type_is_not_taken() -> None:
    """A member's signed report reaches the scheduler as its heartbeat info does: one whose
    `calls` is not a list of strings is kept out, and the last good one is no longer handed
    on again (`renew`: it would renew the leases of the runs it lists)."""
    members = RecordingMembers()
    view = MeshView(members, cast(Membership, None))
    m = Member("m1", "127.0.0.1:9", 1, State.ALIVE, 0.0)
    m.report = {"d": json.dumps({"calls": ["T_ECHO"], "free_slots": 1})}
    view.member_report(m)
    assert members.heard_from["m1"]["calls"] == ["T_ECHO"]
    m.report = {"d": json.dumps({"calls": 5, "free_slots": 1})}
    view.member_report(m)
    assert members.heard_from["m1"]["calls"] == ["T_ECHO"] and members.count == 1
    assert "m1" not in view._infos
    m.report = {"d": "[" * 100_000}  # nested too deep for json.loads: RecursionError
    view.member_report(m)
    assert members.count == 1 and "m1" not in view._infos


def test_a_version_vector_is_noted_and_told_to_a_sink_that_waits_for_acks() -> None:
    """`note_heads` keeps a live member's vector and tells the sink (Node.heads_noted: a
    submission waits for acks on it); a sink without the method is told nothing."""
    told: list[str] = []

    class Waiting(RecordingMembers):
        def heads_noted(self, peer_id: str) -> None:
            told.append(peer_id)

    legacy, clock, _, _ = make()
    legacy.heard("m1", "127.0.0.1:9", {}, clock())
    view = MeshView(Waiting(), legacy)
    view.note_heads("m1", {"o": 3, "bad": "x"})
    assert view.heads_of("m1") == {"o": 3} and told == ["m1"]
    plain = MeshView(RecordingMembers(), legacy)
    plain.note_heads("m1", {"o": 4})
    assert plain.heads_of("m1") == {"o": 4}


def test_version_vectors_are_kept_for_live_members_only() -> None:
    """A digest's sender id is not authenticated: vectors sent ("ack", DIGEST, DIGEST_SUM)
    under ids that are no member are not kept (each was, for up to 4,096 ids, never
    freed); a member's is."""
    c = Cluster(2)
    settle(c, 0.3)
    a, b = c.peers
    vv = {f"o{i}": 1 for i in range(100)}
    for k in range(10):
        inject(c, 0, frame_to(c, Kind.DIGEST, {"vv": vv, "peers": [], "ack": True},
                              sender=f"forged-{k}"))
        inject(c, 0, frame_to(c, Kind.DIGEST, {"vv": vv, "peers": []},
                              sender=f"forged-d{k}"))
        inject(c, 0, frame_to(c, Kind.DIGEST_SUM, {"h": heads_sum({})},
                              sender=f"forged-s{k}"))
    assert a.gossip.stats.dropped_bad_frame == 0
    for k in range(10):
        for pid in (f"forged-{k}", f"forged-d{k}", f"forged-s{k}"):
            assert a.gossip.heads_of(pid) == {}
    bid = b.gossip.peer_id
    inject(c, 0, frame_to(c, Kind.DIGEST, {"vv": {"o": 7}, "peers": [], "ack": True},
                          sender=bid))
    assert a.gossip.heads_of(bid) == {"o": 7}
