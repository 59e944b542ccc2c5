"""The gossip facade over the in-memory transport with a fake clock (no sockets, no sleeps):
config, push, convergence under loss, partitions and duplicates, hostile input on the receive
path. The codec, membership and anti-entropy have their own test modules."""

from __future__ import annotations

import itertools
import json
import logging
import random
from collections.abc import Mapping, Sequence
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from peer.errors import StoreError
from peer.log import PROTOCOL_VERSION, Event, EventType, fold
from peer.log.clock import FakeClock
from peer.mesh.gossip import SOFT_SLACK_S, Gossip, GossipConfig, Kind, encode_frame, next_soft
from peer.mesh.sim import Cluster, MemorySink, RecordingMembers, simulate
from peer.mesh.transport import MemoryNetwork

from .mesh_helpers import SECRET, frame_to, inject, run_on_wake_ups

# -- config ------------------------------------------------------------------------


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


# -- convergence ---------------------------------------------------------------------


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


@pytest.mark.parametrize("event", [
    {"origin": "x"},
    {"origin": "x", "seq": 1, "hlc": 1, "type": 999, "payload": {}},
    {"origin": "x", "seq": 0, "hlc": 1, "type": 10, "payload": {}},
    [1, 2],
])
def test_a_malformed_event_is_refused_alone_and_counted(event: Any) -> None:
    """One bad event no longer costs the frame: the good ones of it are merged."""
    c = Cluster(1)
    good = Event("y", 1, 1, EventType.PROVIDE, {"cids": ["c"]})
    inject(c, 0, frame_to(c, Kind.EVENTS, {"events": [event, good.to_json()]}))
    g, sink = c.peers[0].gossip, c.peers[0].sink
    assert (g.stats.dropped_bad_frame, g.stats.events_refused) == (0, 1)
    assert sink.ids() == frozenset({("y", 1)})
    origin = event.get("origin") if isinstance(event, dict) else None
    assert [o for o, _ in sink.refusals] == [origin]
    assert sink.refusals[0][1].startswith("invalid: ")


@pytest.mark.parametrize(("kind", "body"), [
    (Kind.EVENTS, {"events": "nope"}),
    (Kind.EVENTS, {"events": [], "ttl": float("inf")}),  # found by the mesh fuzzer
    (Kind.EVENTS, {"events": [], "ttl": "3"}),
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


class UnwritableSink(MemorySink):
    def merge(self, events: Sequence[Event]) -> list[Event]:
        raise StoreError("cannot write the event log events.sqlite: disk I/O error")


def test_a_sink_that_cannot_store_is_counted_not_logged_as_a_bug(
        caplog: pytest.LogCaptureFixture) -> None:
    """Review r1 M2: the sink says so once per outage (Node.merge); gossip logged "a bug"
    with a traceback per frame."""
    g = Gossip(GossipConfig.local(), MemoryNetwork().transport(), UnwritableSink("e"),
               RecordingMembers(), "e", clock=FakeClock(), rng=random.Random(1))
    for seq in (1, 2):
        assert g.merge([Event("x", seq, 1, EventType.CACHE_PUT, {"cache": {}})]) == []
    assert g.stats.merge_errors == 2
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


def test_event_too_large_for_a_frame_is_skipped_not_fatal() -> None:
    c = Cluster(2, GossipConfig.local(max_frame_bytes=4096))
    a, b = c.peers
    a.sink.emit({"cache": {"big": "x" * 5000}})
    a.sink.emit()
    c.run_until_converged(max_steps=10)
    assert a.gossip.stats.events_unsendable > 0
    assert b.sink.ids() == {(a.gossip.peer_id, 2)}


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
    while not all(len(g.live_peers()) == 2 for g in gs):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.005)
    async with gs[0]:  # `async with` on a started Gossip is harmless
        pass
    for g in gs[1:]:
        await g.close()
    # closing announced LEFT: the others dropped the leaver at once, no timeout waited for
    assert gs[2].live_peers() == {}
    assert gs[1].status(gs[0].peer_id) == "dead"


# -- soft timers: the periodic chores ride on other wake-ups, keeping their cadence ------------
@given(st.lists(st.floats(min_value=0.001, max_value=0.3), min_size=50, max_size=400),
       st.sampled_from([0.1, 0.5, 1.0]))
def test_soft_timer_keeps_its_cadence_and_is_never_late(gaps: list[float], period: float) -> None:
    """Woken at arbitrary times, a soft timer runs at most one slack early, never twice
    within half a period, and not more often than once per period overall."""
    slack = min(SOFT_SLACK_S, period / 2)
    now, due, fired = 0.0, 0.0, []
    for gap in gaps:
        now += gap
        nxt = next_soft(now, due, period)
        if nxt is None:
            assert now + slack < due  # not due yet
            continue
        assert now >= due - slack - 1e-9  # never more than the slack early
        fired.append(now)
        due = nxt
        assert due > now  # never due again at once
    assert all(b - a >= period / 2 - 1e-9 for a, b in itertools.pairwise(fired))
    # The cadence holds: not more often than once per period over the run, give or take one.
    assert len(fired) <= now / period + 2


def test_soft_timer_runs_late_after_a_stall_then_resumes_its_period() -> None:
    assert next_soft(0.0, 0.5, 0.5) is None  # early by more than the slack
    assert next_soft(0.35, 0.5, 0.5) == 1.0  # early within the slack: cadence kept
    assert next_soft(0.7, 0.5, 0.5) == 1.2  # late: a period from now, never two runs at once
    assert next_soft(10.0, 0.5, 0.5) == 10.5  # after a stall: a period from now


def test_idle_gossip_chores_share_the_probe_wake_ups() -> None:
    """Two SWIM members on the in-memory network, each woken only when its timer is due (as
    `_run` sleeps): the chores ride on the probes' wake-ups, and still run at their rates."""
    c = Cluster(2, GossipConfig(secret=SECRET))
    a = c.peers[0].gossip

    rounds0 = a.stats.rounds
    wakes = run_on_wake_ups(c, 60.0, a)
    rounds = a.stats.rounds - rounds0
    assert 50 <= rounds <= 66  # anti-entropy about once a second (1 s +- 10 %)
    assert len(a.live_peers()) == 1  # the probes kept the other member alive
    # Unaligned, the chores (heartbeat 2/s, renewals 2/s, membership update 2/s, anti-entropy
    # 1/s) and the probes (2/s, each with a timeout) would wake the timer up to 11 times a
    # second; aligned, the chores add almost nothing to the probes' wake-ups.
    assert wakes < 5 * 60
