"""A revoked identity keeps no member entry alive: its entry is dead when its REVOKE is folded
(else at its turn in the probe round) whoever answers for it, its address gets no join sync any
more, and an ACK counts only from the member probed (the frame's sender id, refused at the door
for a revoked member) or from a helper that was asked."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from peer.config import PeerConfig
from peer.log import EventType
from peer.mesh.gossip import GossipConfig
from peer.mesh.sim import Cluster
from peer.mesh.swim import Msg, NoSigner, State, Swim, SwimConfig, suspicion_bounds_s
from peer.mesh.wire import FrameWriter, Kind
from peer.node import Node

from .test_swim import CFG, all_alive, make, probe_once, settle, states

ALIAS = "a1a5a1a5a1a5a1a5a1a5"  # a self-certifying-looking id nobody holds


def test_a_revoked_member_answering_its_probes_under_another_id_is_dead_to_every_peer(
) -> None:
    """Every peer refuses the revoked member's frames by their sender id, and its updates by
    their signer. Sending under another sender id, it still got its probes (at its address)
    and answered them: an ACK was taken from anyone with the probe's seq, so its entry stayed
    alive for good (its reports refused, its leases lapsing: alive and useless)."""
    swim = SwimConfig.local(forget_s=600.0)
    c = Cluster(4, GossipConfig.local(swim=swim), signed=True, seed=31)
    settle(c, 0.5)
    assert all_alive(c)
    r, others = c.peers[3], c.peers[:3]
    rid = r.gossip.peer_id
    for p in others:
        assert p.gossip.auth is not None
        p.gossip.auth.keyring.revoked_after = lambda pid: 0 if pid == rid else None
    r.gossip._writer = FrameWriter(c.cfg.mesh_id, ALIAS, r.addr, c.cfg.secret)
    _, high = suspicion_bounds_s(swim, 4)
    settle(c, 2 * 4 * swim.probe_interval_s + high + 1.0)  # two probe rounds, a suspicion
    for p in others:
        assert states(p)[rid] == "dead" and rid not in p.gossip.live_peers()
    assert r.gossip.stats.frames_out > 0  # it kept answering, under the alias
    assert all_alive(c, others)
    settle(c, 10.0)  # and stays dead: nothing of it revives its entry
    assert all(states(p)[rid] == "dead" for p in others)


class Revoking(NoSigner):
    """Takes every proof; `revoked` members are revoked."""

    def __init__(self) -> None:
        self.gone: set[str] = set()

    def revoked(self, member: str) -> bool:
        return member in self.gone


def test_a_revoked_member_is_dead_at_its_turn_and_never_pinged_again() -> None:
    s, clock, net, listener = make(3)
    signer = Revoking()
    s._signer = signer
    signer.gone.add("m1")
    targets = []
    for _ in range(6):  # two probe rounds, every probe answered
        addr, ping = probe_once(s, clock, net)
        s.on_ack(ping["t"], addr, {"s": ping["s"]}, clock())
        targets.append(ping["t"])
    assert "m1" not in targets and s.members["m1"].state is State.DEAD
    assert ("m1", State.ALIVE, State.DEAD) in listener.changes
    clock.advance(10 * CFG.reconnect_s)  # the dead are pinged now and then: not a revoked one
    s.tick(clock())
    assert all(b["t"] != "m1" for _, b in net.take(Msg.PING))


def test_an_ack_counts_only_from_the_member_probed_or_a_helper_asked() -> None:
    s, clock, net, _ = make(4)
    addr, ping = probe_once(s, clock, net)
    target = ping["t"]
    s.on_ack("someone-else", addr, {"s": ping["s"]}, clock())  # the seq, the wrong sender
    assert s.stats.acks == 0 and s.stats.foreign_acks == 1
    clock.advance(CFG.probe_timeout_s)
    s.tick(clock())
    helpers = [s.member_at(a) for a, _ in net.take(Msg.PING_REQ)]
    assert helpers and all(h is not None for h in helpers)
    others = [m for m in s.members if m != target and m not in {h.id for h in helpers if h}]
    for mid in others:  # a member not asked to probe it
        s.on_ack(mid, "127.0.0.1:99", {"s": ping["s"]}, clock())
    assert s.stats.acks == 0 and s.stats.foreign_acks == 1 + len(others)
    h = helpers[0]
    assert h is not None
    s.on_ack(h.id, h.addr, {"s": ping["s"]}, clock())  # a helper's relay (any release's)
    assert s.stats.acks == 1
    clock.advance(CFG.probe_interval_s)
    s.tick(clock())
    assert s.members[target].state is State.ALIVE


def test_a_relayed_ping_forwards_only_the_ack_of_the_member_pinged() -> None:
    s, clock, net, _ = make(2)
    s.on_ping_req("m0", "127.0.0.1:10", {"s": 77, "t": "m1", "a": "127.0.0.1:11"}, clock())
    (addr, ping), = net.take(Msg.PING)
    s.on_ack(ALIAS, addr, {"s": ping["s"]}, clock())  # whoever sits at m1's address
    assert net.take(Msg.ACK) == [] and s.stats.foreign_acks == 1
    s.on_ack("m1", addr, {"s": ping["s"]}, clock())
    assert [(a, b["s"]) for a, b in net.take(Msg.ACK)] == [("127.0.0.1:10", 77)]


def _previous_on_ack(s: Swim) -> Callable[[str, str, Mapping[str, Any], float], None]:
    """e71ec14's `Swim.on_ack`: an ACK with the seq counts (and is relayed) whoever sent it."""

    def on_ack(sender: str, reply_to: str, body: Mapping[str, Any], now: float) -> None:
        s.apply_updates(body.get("m", []), now)
        seq = body["s"]
        if body.get("u") is not None:
            s._refute_told(body["u"], now)
        r = s._relays.pop(seq, None)
        if r is not None:
            s._send(r.addr, Msg.ACK, {"s": r.seq})
            return
        if s._probes.pop(seq, None) is not None:
            s.stats.acks += 1
            s._aware(-1)

    return on_ack


def test_peers_of_the_previous_release_probe_and_relay_with_new_ones_as_before() -> None:
    """No wire change: two of five peers take and relay ACKs as e71ec14 did; with loss, the
    indirect probes go through helpers of both releases, and nobody is held dead."""
    c = Cluster(5, seed=32)
    for p in c.peers[:2]:
        s = p.gossip.swim
        assert s is not None
        s.on_ack = _previous_on_ack(s)  # type: ignore[method-assign]
    settle(c, 0.5)
    c.net.loss = 0.1
    settle(c, 20.0)
    c.net.loss = 0.0
    settle(c, 2.0)
    assert all_alive(c)
    swims = [p.gossip.swim for p in c.peers]
    assert all(s is not None and s.stats.deaths == 0 for s in swims)
    assert all(s is not None and s.stats.indirect > 0 and s.stats.foreign_acks == 0
               for s in swims[2:])


# -- a revocation folded (session 27) -------------------------------------------------------


def test_a_revoked_member_is_dead_as_soon_as_its_revocation_is_folded() -> None:
    """Its entry stayed alive (gossiped, worked with) until its turn in the probe round: up
    to N probe periods."""
    c = Cluster(4, seed=33)
    settle(c, 0.5)
    assert all_alive(c)
    rid = c.peers[3].gossip.peer_id
    for p in c.peers[:3]:
        p.gossip.member_revoked(rid)  # (Node._on_revoke: each peer folds the REVOKE)
        assert states(p)[rid] == "dead" and rid not in p.gossip.live_peers()
    assert all_alive(c, c.peers[:3])


def test_revoking_an_unknown_or_dead_member_changes_nothing() -> None:
    s, clock, _, listener = make(2)
    s.revoke("stranger", clock())
    s.revoke("m0", clock())
    s.revoke("m0", clock())
    assert [ch for ch in listener.changes if ch[0] == "m0"][-1] == ("m0", State.ALIVE,
                                                                   State.DEAD)
    assert len([ch for ch in listener.changes if ch[2] is State.DEAD]) == 1


def _syncs_to(net: Any, addr: str) -> int:
    return sum(a == addr for a, _ in net.take(Msg.SYNC))


def test_a_revoked_members_join_address_gets_no_join_sync_nor_push_pull() -> None:
    """Its static address (--join) got a join sync (our whole table) every join_retry_s and a
    push-pull hash every period once its entry was dead, for as long as we ran."""
    s, clock, net, _ = make(3)
    signer = Revoking()
    s._signer = signer
    addr = s.members["m1"].addr
    s.join([addr])
    signer.gone.add("m1")
    for _ in range(6):  # two probe rounds: m1 dead at its turn
        a, ping = probe_once(s, clock, net)
        s.on_ack(ping["t"], a, {"s": ping["s"]}, clock())
    assert s.members["m1"].state is State.DEAD
    net.sent.clear()
    for _ in range(int(3 * CFG.push_pull_s / CFG.join_retry_s)):
        clock.advance(CFG.join_retry_s)
        s.tick(clock())
        for a, k, b in list(net.sent):  # the others answer their probes
            if k == Msg.PING and a != addr:
                s.on_ack(b["t"], a, {"s": b["s"]}, clock())
        assert _syncs_to(net, addr) == 0
        net.sent.clear()
    clock.advance(CFG.forget_s + 2 * CFG.reconnect_s)  # its entry forgotten: still barred
    s.tick(clock())
    s.join([addr])  # (mDNS or --join again)
    for _ in range(3):
        clock.advance(CFG.push_pull_s)
        s.tick(clock())
        assert _syncs_to(net, addr) == 0
        net.sent.clear()


def test_a_revoked_members_address_is_synced_again_once_another_member_is_seen_there() -> None:
    s, clock, net, _ = make(3)
    addr = s.members["m1"].addr
    s.join([addr])
    s.revoke("m1", clock())
    s.apply_updates([{"t": "a", "i": "m9", "a": addr, "n": 1}], clock())  # another one there
    assert s.member_at(addr) is s.members["m9"]
    s.apply_updates([{"t": "l", "i": "m9", "n": 1}], clock())  # it leaves: nobody alive there
    hashes = 0
    for _ in range(3):
        clock.advance(CFG.push_pull_s)
        s.tick(clock())
        hashes += sum(a == addr and "h" in b for a, b in net.take(Msg.SYNC))
        net.sent.clear()
    assert hashes > 0


class RevokedGossip:
    """Stands in for the node's gossip: records the members it is told are revoked (its other
    methods do nothing and return nothing)."""

    def __init__(self) -> None:
        self.revoked: list[str] = []

    def member_revoked(self, peer_id: str) -> None:
        self.revoked.append(peer_id)

    def __getattr__(self, name: str) -> Callable[..., dict[str, Any]]:
        return lambda *_a, **_k: {}


def test_a_node_tells_gossip_when_it_folds_a_revoke(tmp_path: Path, opened: list[Node]) -> None:
    n = Node(PeerConfig(data_dir=tmp_path / "data", slots=1, mdns=False))
    opened.append(n)
    g = RevokedGossip()
    n.gossip = g  # type: ignore[assignment]
    n.emit(EventType.REVOKE, {"peer": ALIAS, "after": 0, "reason": "test"})
    n.emit(EventType.CACHE_PUT, {"cache": {"k": 1}})
    assert g.revoked == [ALIAS]


# -- a revoked member never held (session 28) ---------------------------------------------


def _revoked_at_join() -> tuple[Any, Any, int]:
    """A peer that joins (`--join`) the address of a member it knows revoked and never held
    an entry of (a fresh start with the REVOKE folded: the member's alive is refused, its
    frames dropped at the door): the SYNCs it sent there in 10 s."""
    from .mesh_helpers import Tap

    c = Cluster(0, GossipConfig.local(), signed=True, connect=False, seed=34)
    r = c.add("r")
    a = c.add("a")
    rid = r.gossip.peer_id
    assert a.gossip.auth is not None
    a.gossip.auth.keyring.revoked_after = lambda pid: 0 if pid == rid else None
    a.gossip.member_revoked(rid)  # (folded at the replay: no entry to kill)
    a.gossip.add_peer(r.addr)
    r.gossip.add_peer(a.addr)
    tap = Tap(c.net)
    settle(c, 10.0)
    syncs = sum(1 for s, d, f in tap.sent if s == a.addr and d == r.addr
                and f.kind.name == "SYNC")
    return a, r, syncs


def test_a_revoked_member_never_held_gets_no_join_sync_every_second() -> None:
    """Its `--join` address got a join sync (our whole member table) every join_retry_s for
    as long as we ran: `revoke` bars the address of an entry, and there was none. Its own
    alive, validly signed, answering from that address, now bars it as well."""
    a, r, syncs = _revoked_at_join()
    assert syncs <= 2, syncs  # (10 s of join_retry_s 0.2: about 50 before)
    assert r.gossip.peer_id not in a.gossip.live_peers()


def test_a_forged_revoked_frame_does_not_bar_a_join_address() -> None:
    """A frame under a revoked member's id naming a join address, without that member's own
    signature over an alive there, bars nothing: the address is synced as before."""
    from .mesh_helpers import frame_to, inject

    c = Cluster(0, GossipConfig.local(), signed=True, connect=False, seed=35)
    a = c.add("a")
    gone = c.add("gone")
    gid = gone.gossip.peer_id
    c.peers.remove(gone)
    assert a.gossip.auth is not None and a.gossip.swim is not None
    a.gossip.auth.keyring.revoked_after = lambda pid: 0 if pid == gid else None
    join = "127.0.0.1:7999"  # nobody there yet
    a.gossip.add_peer(join)
    forged = {"m": [{"t": "a", "i": gid, "a": join, "n": 1, "g": "0" * 128}], "r": False}
    inject(c, 0, frame_to(c, Kind.SYNC, forged, sender=gid, reply_to=join))
    assert join not in a.gossip.swim._barred
    assert a.gossip.stats.dropped_revoked == 1
