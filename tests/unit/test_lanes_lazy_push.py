"""Partial replication, step 11: lazy pushes to non-members (docs/design/partial-replication.md,
section 8). On the in-memory transport with a fake clock, lanes on explicitly: a lanes peer
that is no member of a lanes job gets the job's JOB_SUBMITTED, JOB_MEMBERS and JOB_ENDED in
one push every `GossipConfig.lazy_push_s`; its members get them at once (a replica's
acknowledgement is not delayed), as does a peer that does not announce lanes-v1; any push to a
peer sends what waits for it first, so that our stream reaches it without a gap."""

from __future__ import annotations

from collections import Counter

import pytest

from peer.log import Event, EventType
from peer.mesh.gossip import GossipConfig
from peer.mesh.sim import Cluster, SimPeer, seed_swim
from peer.mesh.transport import MemoryNetwork
from peer.mesh.wire import Kind, decode_frame

WORKFLOW = {"name": "w", "tasks": [{"name": "t0", "call": "c", "params": {}, "depends": []}]}
OLD = f"{9:016x}"  # the peer that does not announce lanes-v1
DT_S = 0.002  # between two submissions: 20 of them within 50 ms


def job(i: int) -> str:
    return f"j{i:012x}"


class Pushes:
    """Per receiver, the events of each EVENTS frame it was delivered, by type."""

    def __init__(self, c: Cluster) -> None:
        self.frames: dict[str, list[Counter[EventType]]] = {}
        for p in c.peers:
            self._tap(c, p)

    def _tap(self, c: Cluster, p: SimPeer) -> None:
        t = c.net._nodes[p.addr]
        handler = t.handler
        assert handler is not None
        me = p.gossip.peer_id

        def seen(frame: bytes) -> None:
            f = decode_frame(frame, None, c.cfg.mesh_id, c.cfg.max_frame_bytes)
            if f.kind is Kind.EVENTS:
                self.frames.setdefault(me, []).append(
                    Counter(EventType(e["type"]) for e in f.body["events"]))
            handler(frame)

        t.handler = seen

    def of(self, peer: SimPeer, typ: EventType) -> list[int]:
        """How many events of `typ` each frame to `peer` that carried one held."""
        return [n for per in self.frames.get(peer.gossip.peer_id, []) if (n := per[typ])]


def cluster(lazy_push_s: float = 0.05) -> tuple[Cluster, Pushes]:
    """Peers a, b, c holding lanes and OLD, which does not announce lanes-v1; all alive to
    each other (anti-entropy far off: only pushes move events here)."""
    cfg = GossipConfig.local(anti_entropy_s=60.0, jitter=0.0, lazy_push_s=lazy_push_s)
    c = Cluster(3, cfg, seed=1, connect=False, lanes=True, net=MemoryNetwork(seed=1))
    c.add(OLD, lanes=False)
    seed_swim(c)
    return c, Pushes(c)


def ids(c: Cluster) -> list[str]:
    return [p.gossip.peer_id for p in c.peers]


def submit(p: SimPeer, i: int, members: list[str]) -> Event:
    ev = p.sink.emit({"job": job(i), "workflow": WORKFLOW, "members": members},
                     EventType.JOB_SUBMITTED)
    p.gossip.broadcast([ev])
    return ev


def heads_of(p: SimPeer, origin: SimPeer) -> int:
    return p.sink.state.mesh_heads.get(origin.gossip.peer_id, 0)


def test_twenty_submissions_reach_a_non_member_in_one_frame_and_a_member_in_twenty() -> None:
    c, tap = cluster()
    a, b, n, old = c.peers
    for i in range(20):
        submit(a, i, [ids(c)[0], ids(c)[1]])
        c.net.pump()
        assert heads_of(b, a) == i + 1  # the replica holds it at once: its ack is not delayed
        c.clock.advance(DT_S)
    assert tap.of(b, EventType.JOB_SUBMITTED) == [1] * 20
    assert tap.of(old, EventType.JOB_SUBMITTED) == [1] * 20  # no lanes-v1: as before
    assert tap.of(n, EventType.JOB_SUBMITTED) == [] and heads_of(n, a) == 0
    c.clock.advance(0.049 - 20 * DT_S)  # the lazy push is due 50 ms after the first
    a.gossip.tick()
    c.net.pump()
    assert tap.of(n, EventType.JOB_SUBMITTED) == []
    c.clock.advance(0.002)
    a.gossip.tick()
    c.net.pump()
    assert tap.of(n, EventType.JOB_SUBMITTED) == [20]
    assert heads_of(n, a) == 20
    c.clock.advance(0.05)
    a.gossip.tick()
    c.net.pump()
    assert tap.of(n, EventType.JOB_SUBMITTED) == [20]  # nothing was left to push lazily


def test_a_push_to_a_peer_sends_what_waits_for_it_first() -> None:
    """A non-member of the first job is the replica of the second: it gets both at once, in
    order (its heads cover the second at once: no acknowledgement waits for the lazy push);
    a CACHE_PUT goes at once to everyone, with what waited for each."""
    c, tap = cluster()
    a, b, n, _ = c.peers
    submit(a, 1, [ids(c)[0], ids(c)[1]])
    c.net.pump()
    assert heads_of(n, a) == 0
    submit(a, 2, [ids(c)[0], ids(c)[2]])
    c.net.pump()
    assert heads_of(n, a) == 2 and tap.of(n, EventType.JOB_SUBMITTED) == [2]
    assert heads_of(b, a) == 1  # the second waits for b's lazy push
    a.gossip.broadcast([a.sink.emit()])
    c.net.pump()
    assert heads_of(b, a) == 3 and tap.of(b, EventType.JOB_SUBMITTED) == [1, 1]
    assert heads_of(n, a) == 3
    c.clock.advance(0.05)
    a.gossip.tick()
    c.net.pump()
    assert tap.of(b, EventType.JOB_SUBMITTED) == [1, 1]  # nothing was left to push lazily


def test_of_one_flush_a_peer_gets_now_up_to_the_last_event_it_may_not_wait_for() -> None:
    """Two submissions in one flush, b a member of the first only, n of the second only: b
    gets the first now and the second lazily; n gets both now (the first before the second:
    in order). In the other order, b gets what waited and both now, n the first now and the
    second lazily."""
    c, tap = cluster()
    a, b, n, _ = c.peers
    mine, mb, mn = ids(c)[0], ids(c)[1], ids(c)[2]
    evs = [a.sink.emit({"job": job(i), "workflow": WORKFLOW, "members": [mine, m]},
                       EventType.JOB_SUBMITTED) for i, m in ((1, mb), (2, mn))]
    a.gossip.broadcast(evs)
    c.net.pump()
    assert (heads_of(b, a), heads_of(n, a)) == (1, 2)
    assert tap.of(b, EventType.JOB_SUBMITTED) == [1] and tap.of(n, EventType.JOB_SUBMITTED) == [2]
    evs = [a.sink.emit({"job": job(i), "workflow": WORKFLOW, "members": [mine, m]},
                       EventType.JOB_SUBMITTED) for i, m in ((3, mn), (4, mb))]
    a.gossip.broadcast(evs)
    c.net.pump()
    assert (heads_of(b, a), heads_of(n, a)) == (4, 3)  # b: what waited, then both
    assert tap.of(b, EventType.JOB_SUBMITTED) == [1, 3]
    c.clock.advance(0.05)
    a.gossip.tick()
    c.net.pump()
    assert (heads_of(b, a), heads_of(n, a)) == (4, 4)
    assert tap.of(n, EventType.JOB_SUBMITTED) == [2, 1, 1]


def test_a_peer_added_to_a_job_gets_it_at_once() -> None:
    """JOB_MEMBERS adding the non-member: it is a member now, and gets the JOB_SUBMITTED that
    waited for it and the JOB_MEMBERS at once."""
    c, tap = cluster()
    a, _, n, _ = c.peers
    submit(a, 1, [ids(c)[0], ids(c)[1]])
    c.net.pump()
    add = a.sink.emit({"job": job(1), "add": [ids(c)[2]]}, EventType.JOB_MEMBERS)
    a.gossip.broadcast([add])
    c.net.pump()
    assert heads_of(n, a) == 2 and n.sink.state.member_of(job(1), ids(c)[2])
    assert tap.frames[ids(c)[2]][-1] == Counter({EventType.JOB_SUBMITTED: 1,
                                                 EventType.JOB_MEMBERS: 1})


def test_lazy_push_s_zero_pushes_at_once() -> None:
    c, tap = cluster(lazy_push_s=0.0)
    a, _, n, _ = c.peers
    for i in range(3):
        submit(a, i, [ids(c)[0], ids(c)[1]])
        c.net.pump()
    assert tap.of(n, EventType.JOB_SUBMITTED) == [1, 1, 1]


@pytest.mark.parametrize("bad", [-0.01, 1.5])
def test_lazy_push_s_is_bounded(bad: float) -> None:
    with pytest.raises(ValueError, match="lazy_push_s"):
        GossipConfig(lazy_push_s=bad)


def test_a_bad_setting_is_named_alone() -> None:
    """(Review r1.) One message named jitter and lazy_push_s whichever was wrong."""
    with pytest.raises(ValueError, match=r"^lazy_push_s must be in \[0, 1\]$"):
        GossipConfig(lazy_push_s=2)
    with pytest.raises(ValueError, match=r"^jitter must be in \[0, 0.5\]$"):
        GossipConfig(jitter=0.6)
