"""Partial replication, step 11: lazy pushes to non-members (docs/design/partial-replication.md,
section 8). On the in-memory transport with a fake clock, lanes on explicitly: a lanes peer
that is no member of a lanes job gets the job's JOB_MEMBERS and JOB_ENDED in one push every
`GossipConfig.lazy_push_s`; its members get them at once, as does a peer that does not
announce lanes-v1; every peer gets its JOB_SUBMITTED at once (the job is visible on every
peer as soon as a replica acknowledged it); any push to a peer sends what waits for it
first, so that our stream reaches it without a gap."""

from __future__ import annotations

from collections import Counter

import pytest

from peer.log import Event, EventType
from peer.log.events import JOB_DIGEST_HEX
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


def ended(p: SimPeer, i: int) -> Event:
    """The JOB_ENDED of job `i` (no outputs), not pushed yet."""
    return p.sink.emit({"job": job(i), "state": "cancelled", "n_tasks": 1, "end": 1,
                        "digest": "0" * JOB_DIGEST_HEX}, EventType.JOB_ENDED)


def end(p: SimPeer, i: int) -> Event:
    ev = ended(p, i)
    p.gossip.broadcast([ev])
    return ev


def heads_of(p: SimPeer, origin: SimPeer) -> int:
    return p.sink.state.mesh_heads.get(origin.gossip.peer_id, 0)


def test_a_submission_reaches_every_peer_at_once() -> None:
    """A lanes job's JOB_SUBMITTED goes to its non-members at once too, one frame each, as
    to its members: it makes the job visible there (a GET right after the POST to another
    peer finds it; session 38 to 43 it waited for the lazy push: 404 meanwhile)."""
    c, tap = cluster()
    a, b, n, old = c.peers
    for i in range(20):
        submit(a, i, [ids(c)[0], ids(c)[1]])
        c.net.pump()
        assert [heads_of(p, a) for p in (b, n, old)] == [i + 1] * 3
        assert job(i) in n.sink.state.jobs and not n.sink.state.member_of(job(i), ids(c)[2])
        c.clock.advance(DT_S)
    for p in (b, n, old):
        assert tap.of(p, EventType.JOB_SUBMITTED) == [1] * 20
    c.clock.advance(0.05)
    a.gossip.tick()
    c.net.pump()
    assert tap.of(n, EventType.JOB_SUBMITTED) == [1] * 20  # nothing waited for a lazy push


def test_twenty_ends_reach_a_non_member_in_one_frame_and_a_member_in_twenty() -> None:
    c, tap = cluster()
    a, b, n, old = c.peers
    for i in range(20):
        submit(a, i, [ids(c)[0], ids(c)[1]])
    c.net.pump()
    for i in range(20):
        end(a, i)
        c.net.pump()
        assert heads_of(b, a) == 20 + i + 1  # the member holds it at once
        c.clock.advance(DT_S)
    assert tap.of(b, EventType.JOB_ENDED) == [1] * 20
    assert tap.of(old, EventType.JOB_ENDED) == [1] * 20  # no lanes-v1: as before
    assert tap.of(n, EventType.JOB_ENDED) == [] and heads_of(n, a) == 20
    c.clock.advance(0.049 - 20 * DT_S)  # the lazy push is due 50 ms after the first
    a.gossip.tick()
    c.net.pump()
    assert tap.of(n, EventType.JOB_ENDED) == []
    c.clock.advance(0.002)
    a.gossip.tick()
    c.net.pump()
    assert tap.of(n, EventType.JOB_ENDED) == [20]
    assert heads_of(n, a) == 40
    c.clock.advance(0.05)
    a.gossip.tick()
    c.net.pump()
    assert tap.of(n, EventType.JOB_ENDED) == [20]  # nothing was left to push lazily


def test_a_push_to_a_peer_sends_what_waits_for_it_first() -> None:
    """A non-member of the first job is a member of the second: it gets both ends at once,
    in order (its heads cover the second at once: no gap); a CACHE_PUT goes at once to
    everyone, with what waited for each."""
    c, tap = cluster()
    a, b, n, _ = c.peers
    submit(a, 1, [ids(c)[0], ids(c)[1]])
    submit(a, 2, [ids(c)[0], ids(c)[2]])
    c.net.pump()
    end(a, 1)
    c.net.pump()
    assert heads_of(n, a) == 2
    end(a, 2)
    c.net.pump()
    assert heads_of(n, a) == 4 and tap.of(n, EventType.JOB_ENDED) == [2]
    assert heads_of(b, a) == 3  # the second waits for b's lazy push
    a.gossip.broadcast([a.sink.emit()])
    c.net.pump()
    assert heads_of(b, a) == 5 and tap.of(b, EventType.JOB_ENDED) == [1, 1]
    assert heads_of(n, a) == 5
    c.clock.advance(0.05)
    a.gossip.tick()
    c.net.pump()
    assert tap.of(b, EventType.JOB_ENDED) == [1, 1]  # nothing was left to push lazily


def test_of_one_flush_a_peer_gets_now_up_to_the_last_event_it_may_not_wait_for() -> None:
    """Two ends in one flush, b a member of the first job only, n of the second only: b
    gets the first now and the second lazily; n gets both now (the first before the second:
    in order). In the other order, b gets what waited and both now, n the first now and the
    second lazily."""
    c, tap = cluster()
    a, b, n, _ = c.peers
    mine, mb, mn = ids(c)[0], ids(c)[1], ids(c)[2]
    for i, m in ((1, mb), (2, mn), (3, mn), (4, mb)):
        submit(a, i, [mine, m])
    c.net.pump()
    a.gossip.broadcast([ended(a, 1), ended(a, 2)])
    c.net.pump()
    assert (heads_of(b, a), heads_of(n, a)) == (5, 6)
    assert tap.of(b, EventType.JOB_ENDED) == [1] and tap.of(n, EventType.JOB_ENDED) == [2]
    a.gossip.broadcast([ended(a, 3), ended(a, 4)])
    c.net.pump()
    assert (heads_of(b, a), heads_of(n, a)) == (8, 7)  # b: what waited, then both
    assert tap.of(b, EventType.JOB_ENDED) == [1, 3]
    c.clock.advance(0.05)
    a.gossip.tick()
    c.net.pump()
    assert (heads_of(b, a), heads_of(n, a)) == (8, 8)
    assert tap.of(n, EventType.JOB_ENDED) == [2, 1, 1]


def test_a_peer_added_to_a_job_gets_the_add_at_once() -> None:
    """JOB_MEMBERS adding the non-member: it is a member now, and gets the JOB_MEMBERS at
    once, with the end of another job that waited for it (in order)."""
    c, tap = cluster()
    a, _, n, _ = c.peers
    submit(a, 1, [ids(c)[0], ids(c)[1]])
    submit(a, 2, [ids(c)[0], ids(c)[1]])
    c.net.pump()
    end(a, 2)
    c.net.pump()
    assert heads_of(n, a) == 2
    add = a.sink.emit({"job": job(1), "add": [ids(c)[2]]}, EventType.JOB_MEMBERS)
    a.gossip.broadcast([add])
    c.net.pump()
    assert heads_of(n, a) == 4 and n.sink.state.member_of(job(1), ids(c)[2])
    assert tap.frames[ids(c)[2]][-1] == Counter({EventType.JOB_ENDED: 1,
                                                 EventType.JOB_MEMBERS: 1})


def test_lazy_push_s_zero_pushes_at_once() -> None:
    c, tap = cluster(lazy_push_s=0.0)
    a, _, n, _ = c.peers
    for i in range(3):
        submit(a, i, [ids(c)[0], ids(c)[1]])
        end(a, i)
        c.net.pump()
    assert tap.of(n, EventType.JOB_ENDED) == [1, 1, 1]


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
