"""Anti-entropy (Scuttlebutt push-pull): digests of version vectors, replies with what the
asker lacks, pulls, and bursts while a reply says `more`; and, beside the heads, digests of the
contents held (peer.log.contents), so that two contents of one (origin, seq) meet and the
conflict rule settles them everywhere. Owned by the event loop; never blocks (frames go out
through the gossip facade's `Link`)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from peer.log import Event
from peer.mesh.wire import (
    Blocks,
    Frame,
    Kind,
    Reply,
    digest_body,
    dumps,
    parse_blocks,
    parse_digests,
    parse_vv,
)

FIX_BLOCKS = 64  # blocks of differing contents exchanged per round at most (256 seqs each)
FIX_EVENTS = 2048  # and events: blocks are added while fewer than this are sent
BLOCK_ROW_BYTES = 48  # about what one [block, digest] costs in JSON
# A "fix" is answered only from an address we sent our block digests to ("blk"), once per
# sending: the addresses awaited (the oldest are forgotten) and the sendings per address
FIX_PEERS = 64
FIX_ASKS = 4

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
        """Events with seq > vv.get(origin, 0), at most `limit`: those up to our heads first,
        oldest first, then those beyond a gap (which the asker may hold already: served first,
        they could crowd out for ever the events that move its heads on)."""
        ...

    def merge(self, events: Sequence[Event]) -> list[Event]:
        """Fold remote events in; returns the ones that were new."""
        ...

    def refused(self, origin: Any, reason: str) -> None:
        """Count an event of a frame that was left out as malformed (`origin` as sent)."""
        ...


@runtime_checkable
class ContentSink(Protocol):
    """Digests of the contents held (peer.log.contents) and the events behind them. Every
    method must not block."""

    def content_sum(self) -> str | None:
        """One digest of every content held; None while it cannot be compared."""
        ...

    def content_digests(self) -> Mapping[str, str]:
        """Origin -> the digest of its held contents."""
        ...

    def block_digests(self, origin: str) -> Mapping[int, str]:
        """Block -> the digest of `origin`'s held contents in it (non-empty blocks)."""
        ...

    def events_in(self, origin: str, blocks: Iterable[int]) -> list[Event]:
        """`origin`'s held events in these blocks that we serve, in seq order."""
        ...


class Link(Protocol):
    """What anti-entropy needs of the gossip facade. Must not block."""

    def send(self, addr: str, kind: Kind, body: bytes) -> None:
        """Send one frame of `kind` around the encoded `body` (dropped if it cannot go)."""
        ...

    def send_events(self, addrs: Sequence[str], events: Sequence[Event], *, ttl: int = 0,
                    reply: Reply | None = None, fix: Blocks | None = None) -> None:
        """Send `events` in as many EVENTS frames as needed; with `reply`, the last frame is
        a DIGEST_REPLY, with `fix` an EVENTS frame carrying it (sent even when there are no
        events)."""
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
                 max_events_per_frame: int, heads_seen: HeadsSeen | None = None,
                 contents: ContentSink | None = None, max_frame_bytes: int = 16 << 20) -> None:
        self._sink = sink
        self._link = link
        self._peers = peers
        self._limit = max_events_per_frame
        self._seen = heads_seen or (lambda _p, _vv: None)
        self._contents = contents  # None: heads only (as the previous release)
        self._max_blocks = max(16, max_frame_bytes // 2 // BLOCK_ROW_BYTES)
        self._fixes_awaited: dict[str, int] = {}  # address -> our "blk" it has not answered

    def send_sum(self, addr: str) -> None:
        """DIGEST_SUM to `addr` (a SWIM member): only a hash of our vector and one of our
        contents, which cost the same whatever the mesh's size; the full DIGEST follows only
        when they differ."""
        body: dict[str, Any] = {"h": heads_sum(self._sink.heads())}
        c = None if self._contents is None else self._contents.content_sum()
        if c is not None:
            body["c"] = c
        self._link.send(addr, Kind.DIGEST_SUM, dumps(body))

    def on_digest_sum(self, f: Frame) -> None:
        """Equal vectors and contents: nothing to do (the sender holds what we hold); else
        our DIGEST. A sum without contents (the previous release) compares the heads only."""
        h, c = f.body["h"], f.body.get("c")
        if not isinstance(h, str) or not isinstance(c, str | None):
            raise ValueError("bad digest sum")
        mine = self._sink.heads()
        if h == heads_sum(mine):
            self._seen(f.sender, dict(mine))
            ours = None if c is None or self._contents is None else self._contents.content_sum()
            if ours is None or ours == c:
                return
        if f.reply_to:
            self.send_digest(f.reply_to)

    def send_digest(self, addr: str) -> None:
        """DIGEST to `addr`: our version vector, a sample of live peers and, when we keep
        them, our content digests per origin."""
        sample = self._peers.sample(addr)
        cs = None if self._contents is None else self._contents.content_digests()
        self._link.send(addr, Kind.DIGEST, digest_body(self._sink.heads(), sample, cs))

    def send_ack(self, addr: str) -> None:
        """An acknowledgement to `addr`: a DIGEST of our vector alone, marked "ack" (no sample,
        no content digests), which the receiver notes and does not answer."""
        self._link.send(addr, Kind.DIGEST, digest_body(self._sink.heads(), [], ack=True))

    def on_digest(self, f: Frame) -> None:
        """Reply with the events the sender lacks (oldest first, at most one frame's worth)
        and, if it holds something we lack, our own vector so that it pushes those; and our
        block digests of the origins whose heads are equal and contents are not. An
        acknowledgement ("ack") is only noted: what differs is in flight, or the periodic
        rounds repair it."""
        theirs = parse_vv(f.body["vv"])
        self._seen(f.sender, theirs)
        if f.body.get("ack") is True:
            return
        self._peers.learn_addrs(f.body.get("peers", []))
        mine = self._sink.heads()
        missing = self._sink.events_after(theirs, self._limit)
        ahead = any(seq > mine.get(o, 0) for o, seq in theirs.items())
        cs = f.body.get("cs")
        blocks = None if cs is None else self._differing(theirs, mine, cs)
        if missing or ahead or blocks:
            self._link.send_events([f.reply_to], missing, reply=Reply(
                dict(mine) if ahead else None, len(missing) >= self._limit, blocks or None))
        if blocks and f.reply_to:
            awaited = self._fixes_awaited
            awaited[f.reply_to] = min(awaited.pop(f.reply_to, 0) + 1, FIX_ASKS)
            if len(awaited) > FIX_PEERS:
                del awaited[next(iter(awaited))]

    def _differing(self, theirs: Mapping[str, int], mine: Mapping[str, int],
                   cs: Any) -> Blocks:
        """Our block digests of each origin at equal heads whose contents differ from the
        sender's `cs` (bounded: the rest waits for a later round)."""
        if self._contents is None:
            return {}
        their_cs = parse_digests(cs)
        ours = self._contents.content_digests()
        out: Blocks = {}
        n = 0
        for o in sorted(set(their_cs) | set(ours)):
            if theirs.get(o, 0) != mine.get(o, 0) or their_cs.get(o) == ours.get(o):
                continue
            rows = sorted(self._contents.block_digests(o).items())
            if n + len(rows) > self._max_blocks:
                break
            out[o] = rows
            n += len(rows)
        return out

    def on_digest_reply(self, f: Frame) -> None:
        """Merge the events; push what the replier lacks; pull again while it says `more`
        and we keep learning something new; exchange the blocks whose contents differ."""
        new = self._link.receive_events(f.body)
        vv = f.body.get("vv")
        if vv is not None:
            self._link.send_events([f.reply_to],
                                   self._sink.events_after(parse_vv(vv), self._limit))
        if f.body.get("more") and new:
            self.send_digest(f.reply_to)
        blk = f.body.get("blk")
        if blk is not None and self._contents is not None and f.reply_to:
            self._send_fix(f.reply_to, parse_blocks(blk, self._max_blocks))

    def _send_fix(self, addr: str, theirs: Blocks) -> None:
        """Our events of the blocks whose digests differ from the replier's (a bounded part:
        the rest in later rounds), and our digests of them ("fix"): it keeps what wins and
        sends back its own events of each block that still differs."""
        assert self._contents is not None
        fix: Blocks = {}
        events: list[Event] = []
        n = 0
        for o, rows in theirs.items():
            their = dict(rows)
            mine = self._contents.block_digests(o)
            for b in sorted(b for b in set(their) | set(mine) if their.get(b) != mine.get(b)):
                if n >= FIX_BLOCKS or len(events) >= FIX_EVENTS:
                    break
                fix.setdefault(o, []).append((b, mine.get(b, "")))
                events += self._contents.events_in(o, [b])
                n += 1
        if fix:
            self._link.send_events([addr], events, fix=fix)

    def on_fix(self, f: Frame) -> None:
        """An EVENTS frame with "fix" (its events are merged already): send back our events
        of each named block whose digest still differs from the sender's, bounded as the
        fix itself (`_send_fix`). Only the answer to our block digests ("blk") sent to its
        reply-to address is answered (once per sending): a fix nobody asked for, aimed by a
        forged reply-to at anyone, gets nothing."""
        fix = parse_blocks(f.body["fix"], FIX_BLOCKS)
        if self._contents is None or not f.reply_to:
            return
        asks = self._fixes_awaited.pop(f.reply_to, 0)
        if asks == 0:
            return
        if asks > 1:
            self._fixes_awaited[f.reply_to] = asks - 1
        back: list[Event] = []
        for o, rows in fix.items():
            mine = self._contents.block_digests(o)
            for b, d in rows:
                if len(back) >= FIX_EVENTS:
                    break
                if mine.get(b, "") != d:
                    back += self._contents.events_in(o, [b])
        if back:
            self._link.send_events([f.reply_to], back)


__all__ = ["AntiEntropy", "ContentSink", "EventSink", "HeadsSeen", "Link", "PeerSample",
           "heads_sum"]
