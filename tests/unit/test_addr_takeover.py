"""An address held by a live member is not taken over by another identity's signed alive
(session 27's review, F1): a member could mint an identity whose alive gave a victim's address
and whose report lacked fixnonce-v1, turning anti-entropy's cookie gate off for the victim's
address and unbinding the victim's own vectors. An honest restart at the same address (a new
identity, or the same one) still converges."""

from __future__ import annotations

import pytest

from peer.log.contents import BLOCK_SEQS, block_of
from peer.mesh.gossip import GossipConfig
from peer.mesh.sim import Cluster, SimPeer, swim_cluster
from peer.mesh.swim import State
from peer.mesh.wire import Kind
from tests.unit.mesh_helpers import Tap, frame_to, inject, introduce


def _takeover(c: Cluster, victim_addr: str) -> SimPeer:
    """A minted identity (a member holds the mesh secret: it can make one) whose signed alive
    gives `victim_addr` and whose signed report announces the previous release's features;
    its updates reach the other peers as any gossip would."""
    v_t = c.net._nodes[victim_addr]
    x = c.add("x", GossipConfig.local(anti_entropy_nonces=False), addr=victim_addr)
    c.net._nodes[victim_addr] = v_t  # (the minted identity never receives anything)
    c.peers.remove(x)
    now = c.clock()
    x.gossip.heartbeat()
    assert x.gossip.swim is not None
    x.gossip.swim.tick(now)
    ups = [x.gossip.swim.alive_update, x.gossip.swim.report_update]
    for p in c.peers:
        assert p.gossip.swim is not None
        p.gossip.swim.apply_updates(ups, now, relay=False)
    return x


def test_a_live_members_address_is_not_taken_by_another_identitys_alive() -> None:
    c = swim_cluster(3, GossipConfig.local(), signed=True)
    a, victim, _ = c.peers
    for _ in range(12 * BLOCK_SEQS):
        a.sink.emit()
    introduce(c)
    _takeover(c, victim.addr)
    at = a.gossip.view.member_at(victim.addr)
    assert at is not None and at.id == victim.gossip.peer_id and at.nonces is True
    assert a.gossip.swim is not None and a.gossip.swim.stats.addr_taken == 1
    aid = a.gossip.peer_id
    every = {aid: [[b, ""] for b in range(block_of(12 * BLOCK_SEQS) + 1)]}
    tap = Tap(c.net)
    forged = [frame_to(c, kind, body, reply_to=victim.addr) for kind, body in [
        (Kind.DIGEST, {"vv": {}, "peers": []}),  # no cookies at all
        (Kind.DIGEST, {"vv": dict(a.sink.heads()), "peers": [], "cs": {aid: "0" * 32}}),
        (Kind.EVENTS, {"events": [], "fix": every})]]
    for f in forged:
        inject(c, 0, f)
    c.net.pump()
    sent = tap.to(victim.addr, a.addr)
    assert sum(f.size for f in sent) <= sum(map(len, forged))  # fixnonce-v1's bound holds
    assert not any(f.body.get("events") for f in sent)


@pytest.mark.parametrize("claimed", [False, True])
def test_a_claimed_address_keeps_the_victims_vectors_bound(claimed: bool) -> None:
    c = swim_cluster(3, GossipConfig.local(), signed=True)
    a, victim, _ = c.peers
    introduce(c)
    if claimed:
        _takeover(c, victim.addr)
    a.sink.emit()
    victim.sink.merge(list(a.sink.state.events.values()))
    victim.gossip.acknowledge([a.gossip.peer_id])  # proven, from the victim's own address
    c.net.pump()
    assert a.gossip.heads_of(victim.gossip.peer_id).get(a.gossip.peer_id) == 1


def test_a_contested_address_of_a_previous_release_member_needs_proof() -> None:
    """The holder announces no fixnonce-v1 (a peer of the previous release) and another
    identity claims its address: frames from there must prove routability (the strictest
    claimant's features), so a minted identity cannot borrow a legacy holder's exemption."""
    c = swim_cluster(3, GossipConfig.local(), signed=True)
    old = c.add("old", GossipConfig.local(anti_entropy_nonces=False))
    c.peers.remove(old)
    a = c.peers[0]
    now = c.clock()
    old.gossip.heartbeat()
    assert old.gossip.swim is not None and a.gossip.swim is not None
    old.gossip.swim.tick(now)
    a.gossip.swim.apply_updates([old.gossip.swim.alive_update, old.gossip.swim.report_update],
                                now, relay=False)
    at = a.gossip.view.member_at(old.addr)
    assert at is not None and at.id == old.gossip.peer_id and at.nonces is False
    _takeover(c, old.addr)
    at = a.gossip.view.member_at(old.addr)
    assert at is not None and at.id == old.gossip.peer_id and at.nonces is None


def _holder(p: SimPeer, addr: str) -> str | None:
    assert p.gossip.swim is not None
    m = p.gossip.swim.member_at(addr)
    return None if m is None or m.state not in (State.ALIVE, State.SUSPECT) else m.id


def test_a_new_identity_restarted_at_the_same_address_converges_once_the_old_one_is_dead(
        ) -> None:
    """A wiped data dir: the peer comes back at its address under a new identity. Its alive is
    refused while the old identity lives; the old one stops answering probes, dies, and the
    new one then holds the address everywhere, and the events converge."""
    c = swim_cluster(4, GossipConfig.local(), signed=True)
    for _ in range(3):
        c.step()
    gone = c.peers[3]
    addr, old_id = gone.addr, gone.gossip.peer_id
    c.net._nodes[addr].close_now()
    c.peers.remove(gone)
    new = c.add("fresh", addr=addr)
    for o in c.peers:
        if o is not new:
            new.gossip.add_peer(o.addr)
    assert new.gossip.peer_id != old_id
    new.sink.emit()
    c.peers[0].sink.emit()
    others = [p for p in c.peers if p is not new]
    for _ in range(400):
        if (all(_holder(p, addr) == new.gossip.peer_id for p in others)
                and c.converged()):
            break
        c.step()
    else:
        pytest.fail("the new identity never held its address")
    for p in others:
        assert p.gossip.swim is not None
        old = p.gossip.swim.members.get(old_id)
        assert old is None or old.state in (State.DEAD, State.LEFT)


def test_a_restart_with_the_same_identity_is_not_refused() -> None:
    c = swim_cluster(3, GossipConfig.local(), signed=True)
    for _ in range(3):
        c.step()
    p = c.restart(c.peers[2])
    for _ in range(3):
        c.step()
    for o in c.peers[:2]:
        assert o.gossip.swim is not None
        assert o.gossip.swim.stats.addr_taken == 0
        assert _holder(o, p.addr) == p.gossip.peer_id
        assert o.gossip.swim.members[p.gossip.peer_id].inc >= 1


# -- the previous release's heartbeat path ------------------------------------------------


def _legacy_pair(signed: bool = True) -> tuple[Cluster, SimPeer, SimPeer]:
    """A peer of this release and a heartbeat-judged peer of the previous release (SWIM off),
    alive to each other."""
    from tests.unit.test_swim import all_alive, settle

    c = Cluster(0, GossipConfig.local(), connect=False, signed=signed)
    a = c.add("a")
    old = c.add("old", GossipConfig.local(swim=None, anti_entropy_nonces=False))
    a.gossip.add_peer(old.addr)
    old.gossip.add_peer(a.addr)
    settle(c, 1.0)
    assert all_alive(c) and a.gossip.view.legacy_ids == {old.gossip.peer_id}
    return c, a, old


def _minted_heartbeat(c: Cluster, addr: str, to: SimPeer) -> SimPeer:
    """A minted identity of the previous release whose signed heartbeats give `addr`."""
    v_t = c.net._nodes.get(addr)
    x = c.add("x", GossipConfig.local(swim=None, anti_entropy_nonces=False), addr=addr)
    if v_t is not None:
        c.net._nodes[addr] = v_t  # (the minted identity never receives anything)
    c.peers.remove(x)
    x.gossip.add_peer(to.addr)
    x.gossip.heartbeat()
    c.net.pump()
    return x


@pytest.mark.parametrize("victim_is_old", [True, False])
def test_a_heartbeat_does_not_take_a_live_members_address(victim_is_old: bool) -> None:
    """A heartbeat (the previous release's path) of another identity naming a live member's
    address is dropped (`gossip.dropped_addr_taken`): the latest heartbeat took the address
    before (session 27 fixed only SWIM's alives), so a minted identity became the member at a
    legacy peer's address (its vectors then went unbound: its frames' sender was not the
    member there), or a live SWIM member's address lost its join and push-pull."""
    c, a, old = _legacy_pair()
    victim = old if victim_is_old else a
    watcher = a if victim_is_old else old
    x = _minted_heartbeat(c, victim.addr, watcher)
    at = watcher.gossip.view.member_at(victim.addr)
    assert at is not None and at.id == victim.gossip.peer_id
    assert x.gossip.peer_id not in watcher.gossip.live_peers()
    assert watcher.gossip.stats.dropped_addr_taken == 1
    if victim_is_old:  # the victim's vectors stay bound to it
        a.sink.emit()
        old.sink.merge(list(a.sink.state.events.values()))
        old.gossip.anti_entropy(a.addr)  # its DIGEST: its vector, noted under it
        c.net.pump()
        assert a.gossip.heads_of(old.gossip.peer_id).get(a.gossip.peer_id) == 1


def test_a_previous_release_peer_restarted_under_a_new_identity_takes_its_address() -> None:
    """An honest restart at the same address with a new data dir (a new identity): its
    heartbeats are dropped while the old identity is alive, then taken once it is dead."""
    from tests.unit.test_swim import settle

    c, a, old = _legacy_pair()
    t = c.net._nodes[old.addr]
    t.close_now()
    c.peers.remove(old)
    new = c.add("new", GossipConfig.local(swim=None, anti_entropy_nonces=False), addr=old.addr)
    new.gossip.add_peer(a.addr)
    settle(c, 0.2)
    assert a.gossip.stats.dropped_addr_taken >= 1
    settle(c, 5.0)
    at = a.gossip.view.member_at(old.addr)
    assert at is not None and at.id == new.gossip.peer_id
    assert a.gossip.status(new.gossip.peer_id) == "alive"
