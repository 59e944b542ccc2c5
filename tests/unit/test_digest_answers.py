"""Full DIGESTs are answered at a bounded rate per address (review r2 of session 48, M4): a
member that proves its address and sends DIGESTs with an empty vector in a loop made its
victim read and encode max_events_per_frame events per frame, at any rate. An honest pull
that a `more` answer said goes on is still answered at once. In-memory transport, fake
clock; every loop bounded."""

from __future__ import annotations

from typing import Any

from peer.log import Event
from peer.mesh.antientropy import MAX_DIGEST_ANSWERS
from peer.mesh.gossip import GossipConfig
from peer.mesh.sim import Cluster
from peer.mesh.wire import Kind

from .mesh_helpers import Probe
from .test_lanes_routing import _joined, cluster, emit_lane, lane_done, lane_ids, steps, submit

NEVER = 1e6
EVENTS = 600
PER_FRAME = 64


def quiet(**kw: Any) -> GossipConfig:
    """No timer-driven traffic: only the frames a test sends."""
    return GossipConfig.local(max_events_per_frame=PER_FRAME, heartbeat_s=NEVER,
                              suspect_after_s=2 * NEVER, dead_after_s=3 * NEVER, **kw)


def victim(cfg: GossipConfig) -> tuple[Cluster, Probe, dict[str, str]]:
    c = Cluster(1, cfg, seed=1)
    for i in range(EVENTS):
        c.peers[0].sink.emit({"cache": {f"k{i}": i}})
    probe = Probe(c.net, mesh_id=c.cfg.mesh_id)
    return c, probe, probe.prove(c.peers[0].addr)


def answers(probe: Probe, since: int) -> list[Any]:
    return [f for f in probe.frames()[since:] if f.kind == Kind.DIGEST_REPLY]


def test_a_flood_of_digests_gets_a_bounded_number_of_answers_per_window() -> None:
    """60 DIGESTs with an empty vector from one proven address: MAX_DIGEST_ANSWERS answered
    (each `more`: the same events again, no pull goes on), the rest counted; a window later,
    as many again (before: all 60 answered, 64 events read and encoded for each)."""
    c, probe, keys = victim(quiet(anti_entropy_s=0.5))
    v = c.peers[0]
    body = {"vv": {}, "n": Probe.COOKIE, **keys}
    mark = len(probe.raw)
    for _ in range(60):
        probe.send(v.addr, Kind.DIGEST, body)
    c.net.pump()
    assert len(answers(probe, mark)) == MAX_DIGEST_ANSWERS
    assert v.gossip.stats.ae_throttled == 60 - MAX_DIGEST_ANSWERS
    c.clock.advance(0.5)
    mark = len(probe.raw)
    for _ in range(20):
        probe.send(v.addr, Kind.DIGEST, body)
    c.net.pump()
    assert len(answers(probe, mark)) == MAX_DIGEST_ANSWERS


def test_a_pull_that_goes_on_is_answered_beyond_the_bound() -> None:
    """A DIGEST whose vector holds what our `more` answer sent goes on that pull: answered
    whatever the window's count (a restarted peer's burst); one that does not, is not."""
    c, probe, keys = victim(quiet(anti_entropy_s=0.5))
    v = c.peers[0]
    origin = v.gossip.peer_id
    for _ in range(MAX_DIGEST_ANSWERS):  # the window's answers used up
        probe.send(v.addr, Kind.DIGEST, {"vv": {}, "n": Probe.COOKIE, **keys})
    c.net.pump()
    held = PER_FRAME  # (what those answers sent: the pull goes on from there)
    for _ in range(EVENTS // PER_FRAME + 2):
        if held == EVENTS:
            break
        mark = len(probe.raw)
        probe.send(v.addr, Kind.DIGEST, {"vv": {origin: held}, "n": Probe.COOKIE, **keys})
        c.net.pump()
        got = [Event.from_json(e) for f in probe.frames()[mark:]
               for e in f.body.get("events", [])]
        if not got:
            break
        held = max(e.seq for e in got)
    assert held == EVENTS and v.gossip.stats.ae_throttled == 0
    mark = len(probe.raw)
    probe.send(v.addr, Kind.DIGEST, {"vv": {}, "n": Probe.COOKIE, **keys})
    c.net.pump()
    assert answers(probe, mark) == [] and v.gossip.stats.ae_throttled == 1


def test_a_restarted_peer_catches_up_in_one_burst() -> None:
    """Two peers, one holding 600 events, the other none: one anti-entropy round and the
    pull goes on answer after answer (10 frames of 64) until it holds them all, without
    waiting for a window: nothing throttled."""
    c = Cluster(2, quiet(anti_entropy_s=NEVER), seed=2)
    a, b = c.peers
    for i in range(EVENTS):
        a.sink.emit({"cache": {f"k{i}": i}})
    for _ in range(3):  # cookies and the first DIGEST
        b.gossip.anti_entropy(a.addr)
        c.net.pump()
    assert len(b.sink.ids()) == EVENTS
    assert a.gossip.stats.ae_throttled == 0


def test_a_scale_outs_catch_ups_all_at_once_are_answered_beyond_the_bound() -> None:
    """The seam of review rr (session 48, S1): a peer added to 12 lanes jobs at once asks
    for each job's lanes (`Gossip.catch_up`: one DIGEST_SUM each to its adder, whose DIGESTs
    come back from one address); the bound of MAX_DIGEST_ANSWERS a window let only 8 of
    them be answered, so 4 jobs' lanes waited for later periodic rounds. A DIGEST we asked
    for by a DIGEST_SUM of ours is answered beyond the bound: every job's lanes come."""
    jobs = ["j" + f"{i:012d}" for i in range(1, 3 + 2 * MAX_DIGEST_ANSWERS)]
    c = cluster(seed=3, n=3)
    a, b, d = c.peers
    ia, ib = a.gossip.peer_id, b.gossip.peer_id
    for job in jobs:
        submit(a, job, [ia, ib])
    steps(c, 6)
    for job in jobs:
        emit_lane(a, [lane_done(a, job, 1)])
    c.net.pump()
    _joined(c, a, d, jobs)
    for job in jobs:
        d.gossip.catch_up(job, ia, fallback=True)
    c.net.pump()
    assert all(lane_ids(d, job) for job in jobs), {j: len(lane_ids(d, j)) for j in jobs}
    assert d.gossip.stats.ae_throttled == 0
