"""A revoked identity keeps no member entry alive: its entry is dead at its turn in the probe
round whoever answers for it, and an ACK counts only from the member probed (the frame's sender
id, refused at the door for a revoked member) or from a helper that was asked."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from peer.mesh.gossip import GossipConfig
from peer.mesh.sim import Cluster
from peer.mesh.swim import Msg, NoSigner, State, Swim, SwimConfig, suspicion_bounds_s
from peer.mesh.wire import FrameWriter

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
