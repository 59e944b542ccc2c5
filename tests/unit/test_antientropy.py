"""Anti-entropy: the push-pull engine against a recording Link, then the exchange between
Gossip peers on the in-memory network with a fake clock (no sockets, no sleeps)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from peer.log import Event
from peer.mesh.antientropy import FIX_EVENTS, AntiEntropy
from peer.mesh.gossip import GossipConfig
from peer.mesh.sim import Cluster, MemorySink
from peer.mesh.wire import Frame, Kind, Reply, parse_events

from .mesh_helpers import Probe

ASKER = "127.0.0.1:9"


@dataclass
class Sent:
    addrs: list[str]
    events: list[Event]
    ttl: int
    reply: Reply | None
    fix: Any = None
    fix_echo: str | None = None


@dataclass
class FakeLink:
    """Records what the engine sends; merges into the sink like the facade does."""

    sink: MemorySink
    frames: list[tuple[str, Kind, dict[str, Any]]] = field(default_factory=list)
    sent: list[Sent] = field(default_factory=list)
    limits: list[int | None] = field(default_factory=list)  # each max_body_bytes, if any

    def send(self, addr: str, kind: Kind, body: bytes, *, max_body_bytes: int | None = None,
             ) -> None:
        self.frames.append((addr, kind, json.loads(body)))
        if max_body_bytes is not None:
            self.limits.append(max_body_bytes)

    def send_events(self, addrs: Sequence[str], events: Sequence[Event], *, ttl: int = 0,
                    reply: Reply | None = None, fix: Any = None,
                    fix_echo: str | None = None, jobs: Sequence[str] | None = None) -> None:
        self.sent.append(Sent(list(addrs), list(events), ttl, reply, fix, fix_echo))

    def merge(self, events: Sequence[Event]) -> list[Event]:
        return self.sink.merge(events)

    def refused(self, origin: Any, reason: str) -> None:
        self.sink.refused(origin, reason)

    def receive_events(self, body: Mapping[str, Any]) -> list[Event]:
        return self.merge(parse_events(body["events"], self.refused))


@dataclass
class FakePeers:
    live: list[str] = field(default_factory=lambda: ["127.0.0.1:5", "127.0.0.1:6"])
    learned: list[Any] = field(default_factory=list)
    excluded: list[str] = field(default_factory=list)

    def sample(self, exclude: str) -> list[str]:
        self.excluded.append(exclude)
        return [a for a in self.live if a != exclude]

    def learn_addrs(self, addrs: Iterable[Any]) -> None:
        self.learned.extend(addrs)

    def peer_at(self, addr: str) -> None:
        return None


def engine(n_events: int = 0, limit: int = 4) -> tuple[AntiEntropy, MemorySink, FakeLink,
                                                        FakePeers]:
    sink = MemorySink("me")
    for _ in range(n_events):
        sink.emit()
    link, peers = FakeLink(sink), FakePeers()
    return AntiEntropy(sink, link, peers, max_events_per_frame=limit), sink, link, peers


def digest(vv: dict[str, int], peers: list[str] | None = None) -> Frame:
    return Frame(Kind.DIGEST, "banzai", "asker", ASKER, {"vv": vv, "peers": peers or []})


def reply(events: list[Event], vv: dict[str, int] | None, more: bool) -> Frame:
    return Frame(Kind.DIGEST_REPLY, "banzai", "replier", ASKER,
                 {"events": [e.to_json() for e in events], "vv": vv, "more": more})


def test_digest_carries_our_vector_and_a_sample_without_the_partner() -> None:
    ae, _, link, peers = engine(n_events=3)
    ae.send_digest("127.0.0.1:5")
    assert link.frames == [("127.0.0.1:5", Kind.DIGEST, {"vv": {"me": 3},
                                                         "peers": ["127.0.0.1:6"]})]
    assert peers.excluded == ["127.0.0.1:5"]


def test_digest_from_a_peer_behind_is_answered_with_what_it_lacks() -> None:
    ae, sink, link, _ = engine(n_events=3)
    ae.on_digest(digest({"me": 1}))
    assert link.sent == [Sent([ASKER], sink.events_after({"me": 1}, 10), 0, Reply(None, False))]
    assert [e.seq for e in link.sent[0].events] == [2, 3]  # oldest first


def test_digest_from_a_peer_ahead_gets_our_vector_even_with_no_events() -> None:
    ae, _, link, _ = engine(n_events=2)
    ae.on_digest(digest({"me": 2, "other": 5}))
    assert link.sent == [Sent([ASKER], [], 0, Reply({"me": 2}, False))]


def test_digest_from_a_peer_both_behind_and_ahead() -> None:
    ae, _, link, _ = engine(n_events=2)
    ae.on_digest(digest({"other": 1}))
    (s,) = link.sent
    assert [e.id for e in s.events] == [("me", 1), ("me", 2)]
    assert s.reply == Reply({"me": 2}, False)


class Contents:
    """A ContentSink that counts how often its digests are computed."""

    def __init__(self) -> None:
        self.computed = 0

    def content_sum(self) -> str | None:
        return "sum"

    def content_digests(self) -> Mapping[str, str]:
        self.computed += 1
        return {"me": "d"}

    def block_digests(self, origin: str) -> Mapping[int, str]:
        return {}

    def block_sizes(self, origin: str) -> Mapping[int, int]:
        return {}

    def events_in(self, origin: str, blocks: Iterable[int]) -> list[Event]:
        return []


def test_an_acknowledgement_carries_the_vector_alone() -> None:
    """An ack (sent once a received submission is fsynced) is a DIGEST of our heads marked
    "ack": no sample of peers and no content digests (neither is computed)."""
    sink = MemorySink("me")
    for _ in range(3):
        sink.emit()
    link, peers, contents = FakeLink(sink), FakePeers(), Contents()
    ae = AntiEntropy(sink, link, peers, max_events_per_frame=4, contents=contents)
    ae.send_ack("127.0.0.1:5")
    assert link.frames == [("127.0.0.1:5", Kind.DIGEST, {"vv": {"me": 3}, "peers": [],
                                                         "ack": True})]
    assert peers.excluded == [] and contents.computed == 0


@pytest.mark.parametrize("vv", [{"me": 1}, {"me": 2, "other": 5}, {"other": 1}])
def test_an_acknowledgement_is_noted_and_not_answered(vv: dict[str, int]) -> None:
    """Behind, ahead or both: the sender's heads are noted (what the submitter counts) and
    nothing is sent back; what differs is in flight or left to the periodic rounds."""
    sink = MemorySink("me")
    for _ in range(2):
        sink.emit()
    link, seen = FakeLink(sink), []
    ae = AntiEntropy(sink, link, FakePeers(), max_events_per_frame=4,
                     heads_seen=lambda p, h: seen.append((p, dict(h))))
    ae.on_digest(Frame(Kind.DIGEST, "banzai", "asker", ASKER,
                       {"vv": vv, "peers": [], "ack": True}))
    assert seen == [("asker", vv)]
    assert link.sent == [] and link.frames == []
    ae.on_digest(digest(vv))  # the same vector in a plain digest is answered
    assert len(link.sent) == 1


def test_equal_vectors_need_no_reply() -> None:
    ae, _, link, _ = engine(n_events=2)
    ae.on_digest(digest({"me": 2}))
    assert link.sent == [] and link.frames == []


@pytest.mark.parametrize(("held", "limit", "more"), [(4, 4, True), (9, 4, True),
                                                     (3, 4, False)])
def test_reply_says_more_when_a_full_frame_was_sent(held: int, limit: int, more: bool) -> None:
    ae, _, link, _ = engine(n_events=held, limit=limit)
    ae.on_digest(digest({}))
    (s,) = link.sent
    assert len(s.events) == min(held, limit) and s.reply == Reply(None, more)


def test_digest_teaches_the_sampled_addresses() -> None:
    ae, _, _, peers = engine()
    ae.on_digest(digest({}, ["127.0.0.1:7"]))
    assert peers.learned == ["127.0.0.1:7"]


@pytest.mark.parametrize("body", [{"vv": {"a": -1}}, {"vv": []}, {"peers": []}])
def test_malformed_digest_raises_before_learning_or_answering(body: dict[str, Any]) -> None:
    ae, _, link, peers = engine(n_events=1)
    with pytest.raises((KeyError, ValueError)):
        ae.on_digest(Frame(Kind.DIGEST, "banzai", "asker", ASKER, {**body, "peers": ["h:1"]}))
    assert link.sent == [] and peers.learned == []


def test_reply_is_merged_and_what_the_replier_lacks_is_pushed() -> None:
    ae, sink, link, _ = engine(n_events=3)
    theirs = MemorySink("them")
    evs = [theirs.emit() for _ in range(2)]
    ae.on_digest_reply(reply(evs, {"me": 1, "them": 2}, more=False))
    assert {e.id for e in evs} <= sink.ids()
    assert link.sent == [Sent([ASKER], sink.events_after({"me": 1, "them": 2}, 4), 0, None)]
    assert [e.id for e in link.sent[0].events] == [("me", 2), ("me", 3)]
    assert link.frames == []  # not `more`: no further pull


def test_more_pulls_again_while_it_makes_progress() -> None:
    ae, _, link, _ = engine()
    theirs = MemorySink("them")
    evs = [theirs.emit() for _ in range(2)]
    ae.on_digest_reply(reply(evs, None, more=True))
    assert [(a, k) for a, k, _ in link.frames] == [(ASKER, Kind.DIGEST)]
    assert link.frames[0][2]["vv"] == {"them": 2}
    ae.on_digest_reply(reply(evs, None, more=True))  # nothing new: the burst stops
    assert len(link.frames) == 1 and link.sent == []


# -- through Gossip on the in-memory network -----------------------------------------


def test_two_peers_converge_both_ways() -> None:
    c = Cluster(2)
    a, b = c.peers
    for _ in range(3):
        a.sink.emit()
        b.sink.emit()
    assert c.run_until_converged(max_steps=10) is not None
    assert len(a.sink.ids()) == 6
    assert a.sink.state.cache == b.sink.state.cache


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
    assert new.gossip.stats.rounds == 1
    assert old.gossip.stats.events_out == 200  # each event sent once: no duplicates


def test_probe_digest_gets_a_reply_frame_on_the_wire() -> None:
    c = Cluster(1, GossipConfig.local(max_events_per_frame=2))
    p = c.peers[0]
    for _ in range(3):
        p.sink.emit()
    probe = Probe(c.net)
    probe.send(p.addr, Kind.DIGEST, {"vv": {"probe": 1}, "peers": ["127.0.0.1:4242"],
                                     **probe.prove(p.addr)})
    c.net.pump()
    (f,) = probe.frames()
    assert (f.kind, f.sender, f.reply_to) == (Kind.DIGEST_REPLY, p.gossip.peer_id, p.addr)
    assert [(e["origin"], e["seq"]) for e in f.body["events"]] == [("p0000", 1), ("p0000", 2)]
    assert f.body["vv"] == {"p0000": 3} and f.body["more"] is True
    assert {probe.address, "127.0.0.1:4242"} <= p.gossip.membership.learned_addrs


def test_probe_reply_with_a_vector_gets_the_events_it_lacks_pushed() -> None:
    c = Cluster(1)
    p = c.peers[0]
    for _ in range(3):
        p.sink.emit()
    probe = Probe(c.net)
    probe.send(p.addr, Kind.DIGEST_REPLY, {"events": [], "vv": {"p0000": 1}, "more": False,
                                           **probe.prove(p.addr)})
    c.net.pump()
    (f,) = probe.frames()
    assert f.kind == Kind.EVENTS and f.body["ttl"] == 0
    assert [e["seq"] for e in f.body["events"]] == [2, 3]


def test_a_fix_is_answered_once_per_block_digests_we_sent_and_bounded() -> None:
    """A "fix" (an EVENTS frame naming blocks whose contents differ) is the answer to our
    block digests ("blk"): unasked, or from another address than we sent them to, or a
    second time, it gets nothing (it was ~1 KB in, up to 16,384 events out, to a reply-to
    of the sender's choosing); asked, it gets our events of its blocks, as many as a fix
    carries at most."""
    from peer.log.contents import BLOCK_SEQS, block_of

    sink = MemorySink("me")
    for _ in range(12 * BLOCK_SEQS):
        sink.emit()
    link = FakeLink(sink)
    ae = AntiEntropy(sink, link, FakePeers(), max_events_per_frame=4, contents=sink)
    every = {"me": [[b, ""] for b in range(block_of(12 * BLOCK_SEQS) + 1)]}

    def fix(addr: str) -> Frame:
        return Frame(Kind.EVENTS, "banzai", "asker", addr, {"events": [], "fix": every})
    ae.on_fix(fix(ASKER))
    assert link.sent == []
    ae.on_digest(Frame(Kind.DIGEST, "banzai", "asker", ASKER,
                       {"vv": dict(sink.heads()), "peers": [], "cs": {"me": "0" * 32}}))
    (offer,) = link.sent
    assert offer.addrs == [ASKER] and offer.reply is not None and offer.reply.blocks
    link.sent.clear()
    ae.on_fix(fix("127.0.0.1:66"))  # not where our block digests went
    assert link.sent == []
    ae.on_fix(fix(ASKER))
    (answer,) = link.sent
    assert answer.addrs == [ASKER]
    assert FIX_EVENTS <= len(answer.events) < FIX_EVENTS + BLOCK_SEQS  # not 12 blocks' worth
    ae.on_fix(fix(ASKER))  # once per sending
    assert len(link.sent) == 1
    # the addresses awaited are bounded (forged reply-tos): the oldest are forgotten (each
    # of its own host: the DIGESTs of one host's addresses no member holds share one budget)
    from peer.mesh.antientropy import FIX_PEERS
    addrs = [f"127.0.1.{1 + i}:1000" for i in range(FIX_PEERS + 1)]
    for a in addrs:
        ae.on_digest(Frame(Kind.DIGEST, "banzai", "asker", a,
                           {"vv": dict(sink.heads()), "peers": [], "cs": {"me": "0" * 32}}))
    link.sent.clear()
    ae.on_fix(fix(addrs[0]))
    assert link.sent == []
    ae.on_fix(fix(addrs[-1]))
    assert len(link.sent) == 1


class PartialContents(Contents):
    """A ContentSink whose digests leave out the origins `absent` (as a node leaves out its
    own while some are unwritten, and those with received events not yet fsynced)."""

    def __init__(self, sink: MemorySink, absent: set[str]) -> None:
        super().__init__()
        self.sink, self.absent = sink, absent

    def content_digests(self) -> Mapping[str, str]:
        return {o: d for o, d in self.sink.content_digests().items() if o not in self.absent}

    def block_digests(self, origin: str) -> Mapping[int, str]:
        return self.sink.block_digests(origin)

    def block_sizes(self, origin: str) -> Mapping[int, int]:
        return self.sink.block_sizes(origin)

    def events_in(self, origin: str, blocks: Iterable[int]) -> list[Event]:
        return self.sink.events_in(origin, blocks)


@pytest.mark.parametrize(("theirs_absent", "ours_absent"), [(True, False), (False, True)])
def test_an_origin_only_one_side_gives_a_digest_of_is_not_exchanged(
        theirs_absent: bool, ours_absent: bool) -> None:
    """At equal heads, an origin whose content digest the asker or the replier leaves out
    (its events not all on disk yet: on a busy peer, nearly always) is not compared: no
    block digests are offered, so no block of events goes either way. Comparable and
    different, the block digests are offered (the conflict rule's exchange)."""
    sink = MemorySink("me")
    for _ in range(5):
        sink.emit()
    link = FakeLink(sink)
    ae = AntiEntropy(sink, link, FakePeers(), max_events_per_frame=4,
                     contents=PartialContents(sink, {"me"} if ours_absent else set()))
    cs = {} if theirs_absent else {"me": "0" * 32}
    ae.on_digest(Frame(Kind.DIGEST, "banzai", "asker", ASKER,
                       {"vv": dict(sink.heads()), "peers": [], "cs": cs}))
    assert link.sent == [] and link.frames == []
    ae = AntiEntropy(sink, link, FakePeers(), max_events_per_frame=4,
                     contents=PartialContents(sink, set()))
    ae.on_digest(Frame(Kind.DIGEST, "banzai", "asker", ASKER,
                       {"vv": dict(sink.heads()), "peers": [], "cs": {"me": "0" * 32}}))
    (offer,) = link.sent
    assert offer.events == [] and offer.reply is not None
    assert offer.reply.blocks == {"me": sorted(sink.block_digests("me").items())}
