"""Anti-entropy (Scuttlebutt push-pull): digests of version vectors, replies with what the
asker lacks, pulls, and bursts while a reply says `more`. Owned by the event loop; never
blocks (frames go out through the gossip facade's `Link`)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

from peer.log import Event
from peer.mesh.wire import Frame, Kind, Reply, digest_body, dumps, parse_vv

HeadsSeen = Callable[[str, Mapping[str, int]], None]  # (peer id, its version vector)


def heads_sum(heads: Mapping[str, int]) -> str:
    """A short hash of a version vector: equal on peers that hold the same events."""
    return hashlib.sha256(dumps(sorted(heads.items()))).hexdigest()[:32]


class EventSink(Protocol):
    """Where gossip reads and folds events. Every method must not block."""

    def heads(self) -> Mapping[str, int]:
        """Origin -> highest contiguous seq held (the version vector)."""
        ...

    def events_after(self, vv: Mapping[str, int], limit: int) -> list[Event]:
        """Events with seq > vv.get(origin, 0), oldest first, at most `limit`."""
        ...

    def merge(self, events: Sequence[Event]) -> list[Event]:
        """Fold remote events in; returns the ones that were new."""
        ...

    def refused(self, origin: Any, reason: str) -> None:
        """Count an event of a frame that was left out as malformed (`origin` as sent)."""
        ...


class Link(Protocol):
    """What anti-entropy needs of the gossip facade. Must not block."""

    def send(self, addr: str, kind: Kind, body: bytes) -> None:
        """Send one frame of `kind` around the encoded `body` (dropped if it cannot go)."""
        ...

    def send_events(self, addrs: Sequence[str], events: Sequence[Event], *, ttl: int = 0,
                    reply: Reply | None = None) -> None:
        """Send `events` in as many EVENTS frames as needed; with `reply`, the last frame is
        a DIGEST_REPLY (sent even when there are no events)."""
        ...

    def merge(self, events: Sequence[Event]) -> list[Event]:
        """Fold received events into the sink, counted; returns the new ones, never raises."""
        ...

    def refused(self, origin: Any, reason: str) -> None:
        """Count an event of a frame that was left out as malformed (`origin` as sent)."""
    def receive_events(self, body: Mapping[str, Any]) -> list[Event]:
        """Check (signatures) and merge the events of a frame body; returns the new ones."""
        ...


class PeerSample(Protocol):
    """The part of Membership a digest carries and learns from."""

    def sample(self, exclude: str) -> list[str]:
        """Some live addresses other than `exclude`."""
        ...

    def learn_addrs(self, addrs: Iterable[Any]) -> None:
        """Note addresses another peer vouched for; ValueError on a malformed one."""
        ...


class AntiEntropy:
    """One side of the push-pull exchange: `send_digest` starts a round, `on_digest` and
    `on_digest_reply` answer the frames of one. Malformed bodies raise KeyError, TypeError
    or ValueError for the receive path to count."""

    def __init__(self, sink: EventSink, link: Link, peers: PeerSample, *,
                 max_events_per_frame: int, heads_seen: HeadsSeen | None = None) -> None:
        self._sink = sink
        self._link = link
        self._peers = peers
        self._limit = max_events_per_frame
        self._seen = heads_seen or (lambda _p, _vv: None)

    def send_sum(self, addr: str) -> None:
        """DIGEST_SUM to `addr` (a SWIM member): only a hash of our vector, which costs the
        same whatever the mesh's size; the full DIGEST follows only when they differ."""
        self._link.send(addr, Kind.DIGEST_SUM, dumps({"h": heads_sum(self._sink.heads())}))

    def on_digest_sum(self, f: Frame) -> None:
        """Equal vectors: nothing to do (the sender holds what we hold); else our DIGEST."""
        h = f.body["h"]
        if not isinstance(h, str):
            raise ValueError("bad digest sum")
        mine = self._sink.heads()
        if h == heads_sum(mine):
            self._seen(f.sender, dict(mine))
        elif f.reply_to:
            self.send_digest(f.reply_to)

    def send_digest(self, addr: str) -> None:
        """DIGEST to `addr`: our version vector and a sample of live peers."""
        sample = self._peers.sample(addr)
        self._link.send(addr, Kind.DIGEST, digest_body(self._sink.heads(), sample))

    def on_digest(self, f: Frame) -> None:
        """Reply with the events the sender lacks (oldest first, at most one frame's worth)
        and, if it holds something we lack, our own vector so that it pushes those."""
        theirs = parse_vv(f.body["vv"])
        self._seen(f.sender, theirs)
        self._peers.learn_addrs(f.body.get("peers", []))
        mine = self._sink.heads()
        missing = self._sink.events_after(theirs, self._limit)
        ahead = any(seq > mine.get(o, 0) for o, seq in theirs.items())
        if missing or ahead:
            self._link.send_events([f.reply_to], missing, reply=Reply(
                dict(mine) if ahead else None, len(missing) >= self._limit))

    def on_digest_reply(self, f: Frame) -> None:
        """Merge the events; push what the replier lacks; pull again while it says `more`
        and we keep learning something new."""
        new = self._link.receive_events(f.body)
        vv = f.body.get("vv")
        if vv is not None:
            self._link.send_events([f.reply_to],
                                   self._sink.events_after(parse_vv(vv), self._limit))
        if f.body.get("more") and new:
            self.send_digest(f.reply_to)


__all__ = ["AntiEntropy", "EventSink", "HeadsSeen", "Link", "PeerSample", "heads_sum"]
