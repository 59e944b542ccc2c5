"""Anti-entropy's return routability (fixnonce-v1): answers go only to an address that proved
it receives our frames (it echoed our cookie), a `fix` must echo the nonce of our block
digests, and a vector is noted under a sender only from a frame proven to come from that
member's address (signed meshes). The engine against a recording Link, then Gossip peers on
the in-memory network with a fake clock, with peers of the previous release both ways."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pytest

from peer.log.contents import BLOCK_SEQS, block_of
from peer.log.signing import held_hash
from peer.mesh.antientropy import FIX_EVENTS, AntiEntropy, PeerAt
from peer.mesh.gossip import GossipConfig
from peer.mesh.sim import Cluster, MemorySink, seed_swim, swim_cluster
from peer.mesh.wire import Frame, Kind, encode_frame

from .mesh_helpers import Tap, frame_to, inject, introduce
from .test_antientropy import ASKER, FakeLink
from .test_contents import provide

THEIRS = "abcdef0123456789"  # the asker's cookie for our address, as it sends it


@dataclass
class Peers:
    """FakePeers with a member table: address -> (id, announces fixnonce-v1)."""

    at: dict[str, PeerAt] = field(default_factory=dict)

    def sample(self, exclude: str) -> list[str]:
        return []

    def learn_addrs(self, addrs: Any) -> None:
        pass

    def peer_at(self, addr: str) -> PeerAt | None:
        return self.at.get(addr)


def engine(n_events: int = 3, *, contents: bool = False, signed: bool = False,
           seen: list[tuple[str, dict[str, int]]] | None = None,
           ) -> tuple[AntiEntropy, MemorySink, FakeLink, Peers]:
    sink = MemorySink("me")
    for _ in range(n_events):
        sink.emit()
    link, peers = FakeLink(sink), Peers({ASKER: PeerAt("asker", True)})
    ae = AntiEntropy(sink, link, peers, max_events_per_frame=4, nonces=True, signed=signed,
                     contents=sink if contents else None,
                     heads_seen=None if seen is None else lambda p, h: seen.append((p, dict(h))))
    return ae, sink, link, peers


def frame(kind: Kind, body: dict[str, Any], *, sender: str = "asker", addr: str = ASKER,
          size: int = 1000) -> Frame:
    return Frame(kind, "banzai", sender, addr, body, size, body_size=size)


def cookie(ae: AntiEntropy, link: FakeLink, addr: str = ASKER) -> str:
    """Our cookie for `addr`, as the handshake that answers an unproven frame gives it."""
    link.frames.clear()
    ae.on_digest_sum(frame(Kind.DIGEST_SUM, {"h": "0" * 32, "n": THEIRS}, addr=addr))
    ((to, kind, body),) = link.frames
    assert (to, kind, body["e"], body["k"]) == (addr, Kind.DIGEST_SUM, THEIRS, "s")
    link.frames.clear()
    return str(body["n"])


class CountingSink(MemorySink):
    """A MemorySink that counts the events it is asked for (the work of a reply)."""

    asked = 0

    def events_after(self, vv: Any, limit: int) -> list[Any]:
        out = super().events_after(vv, limit)
        self.asked += len(out)
        return out


def test_an_unproven_digest_gets_a_handshake_and_no_work() -> None:
    """A digest that does not echo our cookie gets no events read or encoded for it (the
    previous release read up to a frame's worth, encoded them, and threw away what did not
    fit its size: F7), only a handshake ("d": its sender, proven, asks again), no larger
    than itself; in sync, the cookies alone ("c"); without a cookie, nothing."""
    sink = CountingSink("me")
    for _ in range(3):
        sink.emit()
    link = FakeLink(sink)
    ae = AntiEntropy(sink, link, Peers({ASKER: PeerAt("asker", True)}),
                     max_events_per_frame=4, nonces=True, contents=sink)
    asked = {"vv": {}, "peers": [], "cs": {"me": "0" * 32}, "n": THEIRS}
    ae.on_digest(frame(Kind.DIGEST, asked))
    ((to, kind, body),) = link.frames
    assert (to, kind, set(body), body["e"], body["k"]) == (
        ASKER, Kind.DIGEST_SUM, {"n", "e", "k"}, THEIRS, "d")
    assert link.sent == [] and link.limits == [1000] and sink.asked == 0
    link.frames.clear()
    ae.on_digest(frame(Kind.DIGEST, {"vv": {"me": 3, "o": 1}, "peers": [], "n": THEIRS}))
    assert [b["k"] for _, _, b in link.frames] == ["d"]  # it holds more: push it, proven
    link.frames.clear()
    ae.on_digest(frame(Kind.DIGEST, {"vv": dict(sink.heads()), "peers": [], "n": THEIRS}))
    assert [b["k"] for _, _, b in link.frames] == ["c"]  # in sync: the cookies alone
    link.frames.clear()
    ae.on_digest(frame(Kind.DIGEST, {"vv": {}, "peers": []}))  # no cookie: nothing at all
    ae.on_digest(frame(Kind.DIGEST, {**asked, "e": "f" * 16}))  # a wrong echo
    assert link.sent == [] and len(link.frames) == 1 and ae.unverified == 5
    assert sink.asked == 0
    link.frames.clear()
    ae.on_digest(frame(Kind.DIGEST, {**asked, "e": body["n"]}))  # proven: a frame's worth
    (s,) = link.sent
    assert [e.seq for e in s.events] == [1, 2, 3] and sink.asked == 3


def test_a_proven_digest_is_answered_with_our_cookie_and_theirs_echoed() -> None:
    ae, sink, link, _ = engine()
    ours = cookie(ae, link)
    ae.on_digest(frame(Kind.DIGEST, {"vv": {"me": 1}, "peers": [], "n": THEIRS, "e": ours}))
    (s,) = link.sent
    assert [e.seq for e in s.events] == [2, 3]
    assert s.reply is not None and (s.reply.cookie, s.reply.echo) == (ours, THEIRS)
    ae.send_sum(ASKER)  # its cookie is kept: our next frames there prove themselves to it
    assert link.frames[-1][2]["e"] == THEIRS and "p" not in link.frames[-1][2]
    ae.send_sum("127.0.0.1:77")  # none kept: padded, room for the handshake that answers
    assert "e" not in link.frames[-1][2] and len(link.frames[-1][2]["p"]) == 64
    assert ae.unverified == 1 and sink.heads() == {"me": 3}


@pytest.mark.parametrize("what", ["s", "d", "a"])
def test_a_proven_handshake_sends_again_what_it_answers(what: str) -> None:
    ae, _, link, _ = engine()
    ours = cookie(ae, link)
    ae.on_digest_sum(frame(Kind.DIGEST_SUM, {"n": THEIRS, "e": "0" * 16, "k": what}))
    assert link.frames == []  # unproven: a handshake answers nothing
    ae.on_digest_sum(frame(Kind.DIGEST_SUM, {"n": THEIRS, "e": ours, "k": what}))
    ((to, kind, body),) = link.frames
    assert to == ASKER and body["e"] == THEIRS
    assert kind == {"s": Kind.DIGEST_SUM, "d": Kind.DIGEST, "a": Kind.DIGEST}[what]
    assert ("h" in body, body.get("ack") is True) == (what == "s", what == "a")


def test_an_unproven_reply_is_merged_and_answers_nothing() -> None:
    ae, sink, link, _ = engine(contents=True)
    theirs = MemorySink("them")
    evs = [theirs.emit() for _ in range(2)]
    ae.on_digest_reply(frame(Kind.DIGEST_REPLY, {
        "events": [e.to_json() for e in evs], "vv": {}, "more": True,
        "blk": {"me": [[0, ""]]}, "bn": "1" * 16, "n": THEIRS}))
    assert {e.id for e in evs} <= sink.ids()  # merged, as any pushed events
    assert link.sent == [] and link.frames == []  # no push of our 3, no pull, no fix


def test_a_fix_is_answered_only_with_the_nonce_of_our_block_digests() -> None:
    """Our block digests ("blk") carry a fresh nonce ("bn"); a fix is answered once per
    sending and only if it echoes one: a forged fix without it, or with a guess, gets
    nothing even from the address our block digests went to. A member of the previous
    release (it announces features without fixnonce-v1) sends none: its fix is answered under
    the address gate, as that release did."""
    ae, sink, link, peers = engine(12 * BLOCK_SEQS, contents=True)
    every = {"me": [[b, ""] for b in range(block_of(12 * BLOCK_SEQS) + 1)]}
    ours = cookie(ae, link)

    def offer() -> str:
        link.sent.clear()
        ae.on_digest(frame(Kind.DIGEST, {"vv": dict(sink.heads()), "peers": [],
                                         "cs": {"me": "0" * 32}, "n": THEIRS, "e": ours}))
        (s,) = link.sent
        assert s.reply is not None and s.reply.blocks and s.reply.blk_nonce
        link.sent.clear()
        return s.reply.blk_nonce

    def fix(**nonce: str) -> list[Any]:
        ae.on_fix(frame(Kind.EVENTS, {"events": [], "fix": every, **nonce}))
        out, link.sent[:] = list(link.sent), []
        return out

    bn = offer()
    assert fix() == [] and fix(fn="0" * 16) == []  # none, a guess
    (answer,) = fix(fn=bn)
    assert answer.addrs == [ASKER] and FIX_EVENTS <= len(answer.events) < FIX_EVENTS + BLOCK_SEQS
    assert fix(fn=bn) == []  # once per sending
    first, second = offer(), offer()
    assert first != second and len(fix(fn=second)) == 1 and len(fix(fn=first)) == 1
    peers.at[ASKER] = PeerAt("asker", False)  # a member of the previous release
    offer()
    assert len(fix()) == 1 and fix() == []  # answered once per sending, without a nonce


def test_signed_a_vector_is_noted_only_from_its_members_proven_address() -> None:
    seen: list[tuple[str, dict[str, int]]] = []
    ae, _, link, peers = engine(signed=True, seen=seen)
    ours = cookie(ae, link)
    peers.at["127.0.0.1:8"] = PeerAt("other", True)
    peers.at["127.0.0.1:7"] = PeerAt("old", False)
    proven = {"n": THEIRS, "e": ours}
    ae.on_digest(frame(Kind.DIGEST, {"vv": {"x": 9}, "peers": [], "ack": True, **proven},
                       sender="other"))  # proven, but the address is not other's
    ae.on_digest(frame(Kind.DIGEST, {"vv": {"x": 9}, "peers": [], "ack": True},
                       sender="other", addr="127.0.0.1:8"))  # other's, not proven
    ae.on_digest(frame(Kind.DIGEST, {"vv": {"x": 9}, "peers": [], "ack": True, **proven},
                       sender="asker"))
    ae.on_digest(frame(Kind.DIGEST, {"vv": {"x": 8}, "peers": [], "ack": True},
                       sender="old", addr="127.0.0.1:7"))  # previous release, its address
    assert seen == [("asker", {"x": 9}), ("old", {"x": 8})] and ae.unbound == 2


# -- Gossip peers on the in-memory network -----------------------------------------------


def test_a_forged_digest_and_fix_aim_nothing_at_a_victim() -> None:
    """A member forges, with a victim's reply-to address, a DIGEST asking for everything, one
    whose content digests differ (our block digests answer it), then a `fix` of every block
    (with and without a guessed nonce): 668 bytes. The previous release sent the victim 64
    events, then our block digests, then 2,048 events (195 KB). Now each forged digest gets
    one frame no larger than itself (a handshake; no events, no block digests), each fix
    nothing, and the victim answers none of it (a handshake or a reply it did not
    ask for, unproven)."""
    c = swim_cluster(2, GossipConfig.local())
    a, victim = c.peers
    for _ in range(12 * BLOCK_SEQS):
        a.sink.emit()
    aid = a.gossip.peer_id
    every = {aid: [[b, ""] for b in range(block_of(12 * BLOCK_SEQS) + 1)]}
    tap = Tap(c.net)
    forged = [frame_to(c, kind, body, reply_to=victim.addr) for kind, body in [
        (Kind.DIGEST, {"vv": {}, "peers": [], "n": THEIRS, "p": "." * 64}),
        (Kind.DIGEST, {"vv": dict(a.sink.heads()), "peers": [], "cs": {aid: "0" * 32},
                       "n": THEIRS}),
        (Kind.EVENTS, {"events": [], "fix": every}),
        (Kind.EVENTS, {"events": [], "fix": every, "fn": "0" * 16})]]
    for f in forged:
        inject(c, 0, f)
    c.net.pump()
    to_victim = tap.to(victim.addr, a.addr)
    assert len(to_victim) == 2  # one per forged digest, each no larger than it
    assert all(f.size <= len(g) for f, g in zip(to_victim, forged, strict=False))
    assert all(f.kind == Kind.DIGEST_SUM and set(f.body) == {"n", "e", "k"}
               for f in to_victim)
    assert tap.to(a.addr) == []  # the victim answered nothing
    assert victim.gossip.stats.ae_unverified == 2
    assert a.gossip.stats.ae_unverified == 2  # (the fixes: no block digests went there)


def test_a_digest_naming_another_member_does_not_change_its_vector() -> None:
    """Signed: a member sends DIGESTs and a DIGEST_SUM under another live member's id, from
    its own (proven) address or with the other's address as reply-to: the other's vector as
    we hold it is unchanged (the previous release noted each); the other's own ack is."""
    c = swim_cluster(3, GossipConfig.local(), signed=True)
    a, b, m = c.peers
    b.sink.emit()
    introduce(c)
    aid, bid = a.gossip.peer_id, b.gossip.peer_id
    before = dict(a.gossip.heads_of(bid))
    assert before == {bid: 1}
    forged = {f"o{i}": 99 for i in range(3)}
    mine = m.gossip._ae._echoes[a.addr]  # m's proof of its own address
    for body, reply_to in [({"vv": forged, "peers": [], "ack": True, "e": mine}, m.addr),
                           ({"vv": forged, "peers": [], "e": mine}, m.addr),
                           ({"vv": forged, "peers": [], "ack": True}, b.addr),
                           ({"vv": forged, "peers": []}, b.addr)]:
        inject(c, 0, frame_to(c, Kind.DIGEST, body, sender=bid, reply_to=reply_to))
    a.sink.emit()  # our heads now differ from b's: a sum equal to ours would say b holds them
    inject(c, 0, frame_to(c, Kind.DIGEST_SUM, {"h": _sum(a.sink)}, sender=bid,
                          reply_to=b.addr))
    c.net.pump()
    assert a.gossip.heads_of(bid) == before
    assert a.gossip.stats.ae_unbound == 5
    b.sink.merge(list(a.sink.state.events.values()))
    b.gossip.acknowledge([aid])
    c.net.pump()
    assert a.gossip.heads_of(bid) == {bid: 1, aid: 1}


def _sum(sink: MemorySink) -> str:
    from peer.mesh.antientropy import heads_sum
    return heads_sum(sink.heads())


def test_an_acknowledgement_to_a_peer_never_met_is_noted_after_a_handshake() -> None:
    c = swim_cluster(2, GossipConfig.local(), signed=True)
    a, b = c.peers
    a.sink.emit()
    b.sink.merge(list(a.sink.state.events.values()))
    b.gossip.acknowledge([a.gossip.peer_id])  # b holds no cookie of a's yet
    c.net.pump()
    assert a.gossip.heads_of(b.gossip.peer_id) == {a.gossip.peer_id: 1}


def _mixed(new_first: bool, *, signed: bool = False) -> Cluster:
    """A peer of this release and one of the previous (no cookies), SWIM members of each
    other with their reports (the old one announces features without fixnonce-v1)."""
    old_cfg = GossipConfig.local(anti_entropy_nonces=False)
    c = Cluster(0, connect=False, signed=signed)
    for i, cfg in enumerate((None, old_cfg) if new_first else (old_cfg, None)):
        c.add(f"p{i}", cfg)
    seed_swim(c)
    return c


@pytest.mark.parametrize("new_first", [True, False])
def test_a_fix_is_answered_between_this_release_and_the_previous_one(new_first: bool) -> None:
    """The peer that starts the round holds the winning content of (o, 2): its block digests
    go to the other, whose fix it answers with that content. Either may be the old one."""
    c = _mixed(new_first)
    starter, other = c.peers
    lose, win = sorted((provide("o", 2, v) for v in range(2)), key=held_hash)[::-1]
    starter.sink.merge([provide("o", 1), win, provide("o", 3)])
    other.sink.merge([provide("o", 1), lose, provide("o", 3)])
    starter.gossip.anti_entropy(other.addr)
    c.net.pump()
    assert other.sink.state.events[("o", 2)] is not None
    assert held_hash(other.sink.state.events[("o", 2)]) == held_hash(win)
    assert starter.gossip.stats.ae_unverified == other.gossip.stats.ae_unverified == 0


@pytest.mark.parametrize("new_first", [True, False])
def test_acknowledgements_are_noted_between_this_release_and_the_previous_one(
        new_first: bool) -> None:
    c = _mixed(new_first, signed=True)
    x, y = c.peers
    xid, yid = x.gossip.peer_id, y.gossip.peer_id
    x.sink.emit()
    y.sink.emit()
    x.gossip.acknowledge([yid])
    y.gossip.acknowledge([xid])
    c.net.pump()
    assert y.gossip.heads_of(xid) == {xid: 1} and x.gossip.heads_of(yid) == {yid: 1}
    assert x.gossip.stats.ae_unbound == y.gossip.stats.ae_unbound == 0


def test_a_fresh_mesh_converges_and_then_runs_without_handshakes() -> None:
    c = swim_cluster(3, GossipConfig.local())
    for p in c.peers:
        for _ in range(5):
            p.sink.emit()
    introduce(c)
    assert c.converged()
    handshakes = sum(p.gossip.stats.ae_unverified for p in c.peers)
    assert 0 < handshakes <= 6  # one per ordered pair at most
    for p in c.peers:
        p.sink.emit()
    introduce(c)
    assert c.converged()
    assert sum(p.gossip.stats.ae_unverified for p in c.peers) == handshakes


def test_an_unproven_digest_gets_a_handshake_then_proven_the_rest() -> None:
    """A digest from an address that proved nothing yet: a handshake no larger than it, our
    cookie in it; the same digest echoing that cookie gets a frame's worth (the burst then
    goes on as before)."""
    from .mesh_helpers import Probe

    c = Cluster(1, GossipConfig.local(max_events_per_frame=16))
    p = c.peers[0]
    for _ in range(20):
        p.sink.emit()
    probe = Probe(c.net)
    ask = {"vv": {}, "peers": [], "n": Probe.COOKIE, "p": "." * 300}  # room for events
    probe.send(p.addr, Kind.DIGEST, ask)
    c.net.pump()
    (r,) = probe.frames()
    asked = encode_frame(Kind.DIGEST, "banzai", probe.peer_id, probe.address,
                         json.dumps(ask).encode(), None)
    assert r.kind == Kind.DIGEST_SUM and r.size <= len(asked)
    assert r.body["e"] == Probe.COOKIE and r.body["k"] == "d" and "events" not in r.body
    assert p.gossip.stats.events_out == 0
    probe.raw.clear()
    probe.send(p.addr, Kind.DIGEST, {**ask, "e": r.body["n"]})
    c.net.pump()
    (r,) = probe.frames()
    assert len(r.body["events"]) == 16 and r.body["more"] is True


def test_a_forged_first_cookie_costs_one_handshake() -> None:
    """The first cookie heard from an address is kept until a proven one comes: a member
    that forges one for a peer's address costs the next exchange there a handshake, no
    more; afterwards the exchange is proven and needs none."""
    c = swim_cluster(2, GossipConfig.local())
    a, b = c.peers
    inject(c, 0, frame_to(c, Kind.DIGEST_SUM, {"h": "0" * 32, "n": "f" * 16, "p": "." * 64},
                          reply_to=b.addr))
    c.net.pump()  # (a's handshake to b: unproven there, dropped)
    b.sink.emit()
    a.gossip.anti_entropy(b.addr)
    c.net.pump()
    assert a.sink.ids() == b.sink.ids()
    assert b.gossip.stats.ae_unverified == 2  # a's handshake, then a's sum echoing the forgery
    a.gossip.anti_entropy(b.addr)
    b.gossip.anti_entropy(a.addr)
    c.net.pump()
    assert b.gossip.stats.ae_unverified == 2 and a.gossip.stats.ae_unverified == 1


LONG = "b" + "x" * 50 + "." + "y" * 50 + ".lab.example:7002"  # 100 characters longer


@pytest.mark.parametrize("long_first", [True, False])
def test_after_a_restart_the_handshake_fits_whatever_the_addresses(long_first: bool) -> None:
    """After b restarts (a new cookie key), a's frames to b echo a cookie b no longer gives,
    so they are not padded: b's handshake went out only if no larger than a's frame, and
    b's header holds b's address. With b's address about 80 bytes longer than a's, it was
    dropped (F5) and a's exchanges with b moved nothing until b started one. A handshake's
    body is bounded by the frame's body now: the addresses do not matter."""
    c = Cluster(0, GossipConfig.local(), connect=False)
    addrs = (LONG, "127.0.0.1:7001") if long_first else ("127.0.0.1:7001", LONG)
    for i, addr in enumerate(addrs):
        c.add(f"p{i}", addr=addr)
    seed_swim(c)
    introduce(c)
    for b in list(c.peers):  # each restarts in turn, the other starts the next exchange
        a = next(p for p in c.peers if p is not b)
        b = c.restart(b)
        c.net.pump()
        a.sink.emit()
        tap = Tap(c.net)
        a.gossip.anti_entropy(b.addr)
        c.net.pump()
        (src, _, first), (back, _, shake) = tap.sent[:2]
        assert src == a.addr and first.kind in (Kind.DIGEST_SUM, Kind.DIGEST)
        assert back == b.addr and shake.kind == Kind.DIGEST_SUM and "k" in shake.body
        assert a.sink.ids() <= b.sink.ids()


def test_a_member_proving_many_addresses_does_not_evict_a_members_pending_fix() -> None:
    """Our block digests went to a live member (its fix is awaited); then a member has them
    sent to FIX_PEERS addresses it proves (none a member's): the oldest awaited was
    forgotten, the live member's fix was not answered and the repair waited for its own
    round (F4). Addresses no live member holds go first now."""
    from peer.mesh.antientropy import FIX_PEERS

    ae, sink, link, _ = engine(2 * BLOCK_SEQS, contents=True)
    every = {"me": [[b, ""] for b in range(block_of(2 * BLOCK_SEQS) + 1)]}

    def offer(addr: str) -> str:
        ours = cookie(ae, link, addr)
        ae.on_digest(frame(Kind.DIGEST, {"vv": dict(sink.heads()), "peers": [],
                                         "cs": {"me": "0" * 32}, "n": THEIRS, "e": ours},
                           addr=addr))
        (s,) = link.sent
        link.sent.clear()
        assert s.reply is not None and s.reply.blk_nonce
        return s.reply.blk_nonce

    bn = offer(ASKER)  # a live member (`engine`'s Peers)
    for i in range(FIX_PEERS):  # (hosts of its own: one host's addresses no member holds
        offer(f"127.0.1.{1 + i}:1000")  # share one DIGEST budget) proven, no member there
    ae.on_fix(frame(Kind.EVENTS, {"events": [], "fix": every, "fn": bn}))
    (answer,) = link.sent
    assert answer.addrs == [ASKER] and answer.events


def test_a_cookie_proves_its_address_until_the_second_rotation() -> None:
    """F6: a cookie once given proved its address for as long as the peer ran (a member that
    received our frames at an address once, then left it, could prove it for ever). The key
    rotates now: a cookie of the key before still proves, an older one no more (a handshake,
    as after a restart); the frames we send carry the new cookie."""
    ae, _, link, _ = engine()
    first = cookie(ae, link)
    proven = {"vv": {}, "peers": [], "n": THEIRS}
    ae.rotate_cookies()
    second = cookie(ae, link)
    assert second != first
    ae.on_digest(frame(Kind.DIGEST, {**proven, "e": first}))  # the key before: proven
    (s,) = link.sent
    assert s.reply is not None and s.reply.cookie == second and link.frames == []
    link.sent.clear()
    ae.rotate_cookies()
    ae.on_digest(frame(Kind.DIGEST, {**proven, "e": first}))  # two keys ago: unproven
    assert link.sent == [] and [b["k"] for _, _, b in link.frames] == ["d"]
    link.frames.clear()
    ae.on_digest(frame(Kind.DIGEST, {**proven, "e": second}))
    assert len(link.sent) == 1 and link.frames == []


@pytest.mark.parametrize("old_side", [None, 0, 1])
def test_exchanges_go_on_across_rotations_without_handshakes(old_side: int | None) -> None:
    """Peers in contact take each other's new cookie from the next frame: rotations every
    2 s over 20 s of rounds cost no handshake, also with a peer of the previous release
    (it rotates nothing and echoes what it is given) on either side."""
    from tests.unit.test_swim import settle

    cfg = GossipConfig.local(cookie_rotate_s=2.0)
    c = Cluster(0, cfg, connect=False)
    for i in range(2):
        c.add(f"p{i}", GossipConfig.local(cookie_rotate_s=1e9) if i == old_side else cfg)
    seed_swim(c)
    introduce(c)
    before = [p.gossip.stats.ae_unverified for p in c.peers]
    for _ in range(10):
        for p in c.peers:
            p.sink.emit()
        settle(c, 2.0)
        assert c.converged()
    assert [p.gossip.stats.ae_unverified for p in c.peers] == before
