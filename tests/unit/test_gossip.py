"""Gossip over the in-memory transport with a fake clock: no sockets, no sleeps."""

from __future__ import annotations

import json
import random
from collections.abc import Mapping, Sequence
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from peer.log import PROTOCOL_VERSION, Event, EventType, fold
from peer.mesh.gossip import (
    MAGIC,
    Frame,
    FrameError,
    Gossip,
    GossipConfig,
    Kind,
    decode_frame,
    encode_frame,
)
from peer.mesh.sim import Cluster, FakeClock, MemorySink, RecordingMembers, simulate
from peer.mesh.transport import MemoryNetwork

SECRET = b"s" * 32


def frame_to(c: Cluster, kind: int, body: Any, *, sender: str = "intruder",
             secret: bytes | None = None, mesh: str | None = None) -> bytes:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return encode_frame(kind, mesh or c.cfg.mesh_id, sender, "127.0.0.1:9", raw, secret)


def inject(c: Cluster, i: int, frame: bytes) -> None:
    """Deliver a raw frame to peer i as if it came off the wire."""
    t = c.net._nodes[c.peers[i].addr]
    assert t.handler is not None
    t.handler(frame)


# -- config and frames ---------------------------------------------------------------


@pytest.mark.parametrize("kw", [
    {"anti_entropy_s": 0}, {"heartbeat_s": -1}, {"suspect_after_s": 0.01},
    {"dead_after_s": 0.2}, {"fanout": 0}, {"max_events_per_frame": 0}, {"push_hops": -1},
    {"max_frame_bytes": 100}, {"jitter": 0.9}, {"mesh_id": ""}, {"secret": b"short"},
    {"bind": "nohost"}, {"bind": "127.0.0.1:99999"}, {"bind": "0.0.0.0:0"},
])
def test_invalid_config_raises(kw: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        GossipConfig.local(**kw)


def test_presets() -> None:
    lan, local = GossipConfig.lan(), GossipConfig.local()
    assert lan.anti_entropy_s == 1.0 and lan.heartbeat_s == 0.5
    assert lan.max_frame_bytes == 16 << 20
    assert local.anti_entropy_s < lan.anti_entropy_s
    assert GossipConfig.lan(bind="0.0.0.0:7946", advertise_host="10.0.0.5").fanout == 8


@pytest.mark.parametrize("secret", [None, SECRET])
def test_frame_roundtrip(secret: bytes | None) -> None:
    data = encode_frame(Kind.DIGEST, "m", "peer-a", "127.0.0.1:5", b'{"vv":{"a":3}}', secret)
    assert data[:2] == MAGIC and data[2] == PROTOCOL_VERSION and data[3] == Kind.DIGEST
    f = decode_frame(data, secret, "m", 1 << 20)
    assert f == Frame(Kind.DIGEST, "m", "peer-a", "127.0.0.1:5", {"vv": {"a": 3}})


def _mutate(data: bytes, i: int, b: int) -> bytes:
    return data[:i] + bytes([b]) + data[i + 1:]


GOOD = encode_frame(Kind.HEARTBEAT, "m", "a", "127.0.0.1:5", b'{"info":{}}', SECRET)
PLAIN = encode_frame(Kind.HEARTBEAT, "m", "a", "127.0.0.1:5", b'{"info":{}}', None)


@pytest.mark.parametrize(("data", "secret", "reason"), [
    (GOOD[:-1] + bytes([GOOD[-1] ^ 1]), SECRET, "bad_mac"),  # tag flipped
    (_mutate(GOOD, 12, GOOD[12] ^ 1), SECRET, "bad_mac"),  # content flipped
    (GOOD, b"t" * 32, "bad_mac"),  # other secret
    (PLAIN, SECRET, "bad_mac"),  # no tag where one is required
    (GOOD, None, "bad_mac"),  # a tag where we use none
    (_mutate(PLAIN, 2, PROTOCOL_VERSION + 1), None, "bad_version"),
    (_mutate(PLAIN, 3, 200), None, "bad_kind"),
    (encode_frame(Kind.HEARTBEAT, "other", "a", "", b"{}", None), None, "other_mesh"),
    (b"", None, "bad_frame"),
    (b"XX" + PLAIN[2:], None, "bad_frame"),
    (PLAIN[:9], None, "bad_frame"),
    (encode_frame(Kind.HEARTBEAT, "m", "a", "", b"{not json", None), None, "bad_frame"),
    (encode_frame(Kind.HEARTBEAT, "m", "a", "", b"[1]", None), None, "bad_frame"),
    (encode_frame(Kind.HEARTBEAT, "m", "a", "no-port", b"{}", None), None, "bad_frame"),
    (encode_frame(Kind.HEARTBEAT, "m", "a", "", b"\xff\xfe", None), None, "bad_frame"),
    (PLAIN + b" " * 5000, None, "too_large"),
])
def test_decode_rejects(data: bytes, secret: bytes | None, reason: str) -> None:
    with pytest.raises(FrameError) as ei:
        decode_frame(data, secret, "m", 4096)
    assert ei.value.reason == reason


# -- convergence ---------------------------------------------------------------------


def test_two_peers_converge_both_ways() -> None:
    c = Cluster(2)
    a, b = c.peers
    for _ in range(3):
        a.sink.emit()
        b.sink.emit()
    assert c.run_until_converged(max_steps=10) is not None
    assert len(a.sink.ids()) == 6
    assert a.sink.state.cache == b.sink.state.cache


def test_broadcast_pushes_without_waiting_for_anti_entropy() -> None:
    c = Cluster(4)
    c.step()  # heartbeats: everyone is live
    ev = c.peers[0].sink.emit()
    c.peers[0].gossip.broadcast([ev])
    c.net.pump()
    assert all(ev.id in p.sink.ids() for p in c.peers)


def test_many_peers_with_loss_converge_in_bounded_rounds() -> None:
    c = Cluster(24, net=MemoryNetwork(loss=0.3, seed=7), seed=7)
    for i, p in enumerate(c.peers):
        for _ in range(i % 3 + 1):
            p.sink.emit()
    steps = c.run_until_converged(max_steps=30, dt=0.1)  # 30 anti-entropy rounds
    assert steps is not None
    assert len(c.peers[0].sink.ids()) == sum(i % 3 + 1 for i in range(24))


def test_partition_then_heal_loses_nothing() -> None:
    c = Cluster(6, seed=3)
    c.step()
    left = [p.addr for p in c.peers[:3]]
    c.net.partition(left)
    for p in c.peers:
        p.gossip.broadcast([p.sink.emit(), p.sink.emit()])
    for _ in range(30):
        c.step()
    assert c.peers[0].sink.ids() == c.peers[2].sink.ids() != c.peers[3].sink.ids()
    assert c.peers[0].gossip.status(c.peers[4].gossip.peer_id) == "dead"
    c.net.heal()
    assert c.run_until_converged(max_steps=40) is not None
    assert len(c.peers[0].sink.ids()) == 12
    assert c.peers[0].gossip.status(c.peers[4].gossip.peer_id) == "alive"


def test_duplicates_and_reordering_are_harmless() -> None:
    c = Cluster(5, net=MemoryNetwork(duplicate=0.5, reorder=True, seed=11), seed=11)
    for p in c.peers:
        p.gossip.broadcast([p.sink.emit() for _ in range(4)])
    assert c.run_until_converged(max_steps=30) is not None
    ref = fold(c.peers[0].sink.state.events.values())
    for p in c.peers:
        assert p.sink.state.cache == ref.cache
        assert p.sink.heads() == c.peers[0].sink.heads()


def test_restarted_peer_catches_up_in_one_burst() -> None:
    c = Cluster(1, GossipConfig.local(max_events_per_frame=16))
    old = c.peers[0]
    for _ in range(200):
        old.sink.emit()
    new = c.add("fresh")
    new.gossip.add_peer(old.addr)
    new.gossip.anti_entropy(old.addr)  # one round; `more` replies keep it pulling
    c.net.pump()
    assert len(new.sink.ids()) == 200


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


# -- hostile and broken input --------------------------------------------------------


def test_bad_mac_dropped_and_counted() -> None:
    c = Cluster(1, GossipConfig.local(secret=SECRET))
    ev = Event("x", 1, 1, EventType.CACHE_PUT, {"cache": {"k": 1}})
    inject(c, 0, frame_to(c, Kind.EVENTS, {"events": [ev.to_json()], "ttl": 0},
                          secret=b"w" * 32))
    inject(c, 0, frame_to(c, Kind.EVENTS, {"events": [ev.to_json()], "ttl": 0}))
    g = c.peers[0].gossip
    assert g.stats.dropped_bad_mac == 2
    assert c.peers[0].sink.ids() == frozenset()
    inject(c, 0, frame_to(c, Kind.EVENTS, {"events": [ev.to_json()], "ttl": 0}, secret=SECRET))
    assert c.peers[0].sink.ids() == {("x", 1)}


def test_peer_with_other_secret_never_joins() -> None:
    c = Cluster(2, GossipConfig.local(secret=SECRET))
    rogue = c.add("rogue", GossipConfig.local(secret=b"r" * 32))
    for p in c.peers:
        for q in c.peers:
            p.gossip.add_peer(q.addr)
    rogue.sink.emit()
    c.peers[0].sink.emit()
    for _ in range(20):
        c.step()
    for p in c.peers[:2]:
        assert "rogue" not in p.gossip.live_peers()
        assert ("rogue", 1) not in p.sink.ids()
        assert p.gossip.stats.dropped_bad_mac > 0
    assert rogue.gossip.live_peers() == {}
    assert len(rogue.sink.ids()) == 1


def test_frame_of_other_mesh_ignored() -> None:
    c = Cluster(1)
    inject(c, 0, frame_to(c, Kind.HEARTBEAT, {"info": {}}, mesh="elsewhere"))
    assert c.peers[0].gossip.stats.dropped_other_mesh == 1
    assert c.peers[0].gossip.live_peers() == {}


def test_oversized_frame_dropped() -> None:
    c = Cluster(1, GossipConfig.local(max_frame_bytes=4096))
    inject(c, 0, frame_to(c, Kind.HEARTBEAT, {"info": {"pad": "x" * 5000}}))
    assert c.peers[0].gossip.stats.dropped_too_large == 1
    assert c.peers[0].gossip.live_peers() == {}


def test_unknown_kind_and_version_dropped() -> None:
    c = Cluster(1)
    hb = frame_to(c, Kind.HEARTBEAT, {"info": {}})
    inject(c, 0, hb[:3] + bytes([99]) + hb[4:])
    inject(c, 0, hb[:2] + bytes([PROTOCOL_VERSION + 1]) + hb[3:])
    s = c.peers[0].gossip.stats
    assert (s.dropped_bad_kind, s.dropped_bad_version) == (1, 1)
    assert c.peers[0].gossip.live_peers() == {}
    inject(c, 0, hb)
    assert "intruder" in c.peers[0].gossip.live_peers()


@pytest.mark.parametrize(("kind", "body"), [
    (Kind.EVENTS, {"events": "nope"}),
    (Kind.EVENTS, {"events": [{"origin": "x"}]}),
    (Kind.EVENTS, {"events": [{"origin": "x", "seq": 1, "hlc": 1, "type": 999,
                               "payload": {}}]}),
    (Kind.EVENTS, {"events": [{"origin": "x", "seq": 0, "hlc": 1, "type": 10,
                               "payload": {}}]}),
    (Kind.DIGEST, {"vv": {"a": -1}}),
    (Kind.DIGEST, {"vv": {"a": 1}, "peers": ["bad address"]}),
    (Kind.DIGEST, {"vv": []}),
    (Kind.DIGEST_REPLY, {"events": [], "vv": {"a": "1"}}),
    (Kind.HEARTBEAT, {"info": 3}),
    (Kind.HEARTBEAT, {}),
])
def test_malformed_bodies_dropped_as_bad_frame(kind: Kind, body: dict[str, Any]) -> None:
    c = Cluster(1)
    inject(c, 0, frame_to(c, kind, body))
    assert c.peers[0].gossip.stats.dropped_bad_frame == 1
    assert c.peers[0].sink.ids() == frozenset()


class ExplodingSink(MemorySink):
    def merge(self, events: Sequence[Event]) -> list[Event]:
        raise KeyError("payload missing a field")


def test_sink_errors_do_not_escape_receive_path() -> None:
    net, clock = MemoryNetwork(), FakeClock()
    g = Gossip(GossipConfig.local(), net.transport(), ExplodingSink("e"), RecordingMembers(),
               "e", clock=clock, rng=random.Random(1))
    g.bind()
    ev = Event("x", 1, 1, EventType.CACHE_PUT, {"cache": {}})
    t = net._nodes[g.address]
    assert t.handler is not None
    t.handler(encode_frame(Kind.EVENTS, "banzai", "x", "127.0.0.1:9",
                           json.dumps({"events": [ev.to_json()]}).encode(), None))
    assert g.stats.merge_errors == 1


def test_event_too_large_for_a_frame_is_skipped_not_fatal() -> None:
    c = Cluster(2, GossipConfig.local(max_frame_bytes=4096))
    a, b = c.peers
    a.sink.emit({"cache": {"big": "x" * 5000}})
    a.sink.emit()
    c.run_until_converged(max_steps=10)
    assert a.gossip.stats.events_unsendable > 0
    assert b.sink.ids() == {(a.gossip.peer_id, 2)}


# -- liveness ------------------------------------------------------------------------


def test_liveness_alive_suspect_dead_and_back() -> None:
    cfg = GossipConfig.local()  # heartbeat 0.05, suspect 0.3, dead 1.0
    c = Cluster(2, cfg)
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
    assert m.heard_from["p0001"] == {"free_slots": 1, "gossip": c.peers[1].addr}


def test_remove_peer_stops_heartbeats() -> None:
    c = Cluster(2, connect=False)
    a, b = c.peers
    a.gossip.add_peer(b.addr)
    a.gossip.remove_peer(b.addr)
    c.step()
    assert b.members.count == 0


# -- properties and simulation -------------------------------------------------------


class CountingMembers:
    def heard(self, peer_id: str, info: Mapping[str, Any]) -> None:
        pass


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(2, 6), owners=st.lists(st.integers(0, 5), max_size=30),
       pushed=st.lists(st.booleans(), max_size=30), loss=st.floats(0.0, 0.5),
       seed=st.integers(0, 2**16))
def test_property_all_peers_end_with_all_events(n: int, owners: list[int], pushed: list[bool],
                                                loss: float, seed: int) -> None:
    c = Cluster(n, net=MemoryNetwork(loss=loss, seed=seed), seed=seed)
    for k, o in enumerate(owners):
        p = c.peers[o % n]
        ev = p.sink.emit()
        if k < len(pushed) and pushed[k]:
            p.gossip.broadcast([ev])
    assert c.run_until_converged(max_steps=400) is not None
    assert len(c.peers[0].sink.ids()) == len(owners)


@pytest.mark.parametrize("fanout", [2, 8])
def test_simulate_reports_rounds_and_idle_bytes(fanout: int) -> None:
    rounds, idle = simulate(20, loss=0.3, fanout=fanout, seed=5, max_rounds=50)
    assert rounds is not None and rounds <= 50
    assert 0 < idle < 20 * 1000


def test_frame_kinds_are_append_only() -> None:
    assert [(k.name, k.value) for k in Kind] == [
        ("HEARTBEAT", 1), ("EVENTS", 2), ("DIGEST", 3), ("DIGEST_REPLY", 4)]


def test_stale_learned_addresses_are_forgotten_static_ones_kept() -> None:
    c = Cluster(3, connect=False)
    a, hub, b = c.peers
    a.gossip.add_peer(hub.addr)
    b.gossip.add_peer(hub.addr)
    for _ in range(10):
        c.step()
    assert b.addr in a.gossip._learned
    b.gossip._t.close_now()  # type: ignore[attr-defined]  # b vanishes
    for _ in range(40):
        c.step()
    assert a.gossip.status(b.gossip.peer_id) == "dead"
    assert b.addr not in a.gossip._learned
    assert hub.addr in a.gossip._static
    c.step(100.0)  # long dead: the record goes too
    assert a.gossip.status(b.gossip.peer_id) is None


async def test_start_runs_timers_over_loop_delivery() -> None:
    import asyncio
    import time

    net = MemoryNetwork(mode="loop", seed=1)
    sinks = [MemorySink(f"q{i}") for i in range(3)]
    gs = [Gossip(GossipConfig.local(anti_entropy_s=0.02, heartbeat_s=0.01), net.transport(),
                 s, RecordingMembers(), s.peer_id, rng=random.Random(i))
          for i, s in enumerate(sinks)]
    for g in gs:
        await g.start()
    for g in gs:
        for h in gs:
            g.add_peer(h.address)
    for s in sinks:
        s.emit()
    deadline = time.monotonic() + 2.0
    while not all(len(s.ids()) == 3 for s in sinks):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.005)
    async with gs[0]:  # `async with` on a started Gossip is harmless
        pass
    for g in gs[1:]:
        await g.close()
    assert all(len(g.live_peers()) == 2 for g in gs)
