"""Anti-entropy (Scuttlebutt push-pull): digests of version vectors, replies with what the
asker lacks, pulls, and bursts while a reply says `more`; and, beside the heads, digests of the
contents held (peer.log.contents), so that two contents of one (origin, seq) meet and the
conflict rule settles them everywhere. Owned by the event loop; never blocks (frames go out
through the gossip facade's `Link`).

Return routability (fixnonce-v1, as QUIC's address validation and memberlist's probe
sequence numbers): a frame's reply-to address is chosen by its sender, so an answer larger
than the question goes only to an address that proved it receives our frames: the frame
echoes ("e") our cookie for that address, a keyed hash of it that only frames we sent there
carried ("n"). Each side keeps the cookie the other gave it (from a proven frame; or the
first one heard, until a proven one comes: a wrong one costs a handshake, no more). A frame
that proves nothing gets no work done for it, at most a handshake back (a DIGEST_SUM of "n",
"e" and "k": its sender, proven, sends its frame again; no event is read or encoded for a
DIGEST); a frame sent before we hold its receiver's cookie is padded so that the handshake
fits; a handshake answers nothing unproven. A block exchange's "fix"
must echo the nonce of our block digests ("bn"). With signed membership, a version vector is
noted under a sender only from a frame proven to come from the address its signed alive (or
heartbeat) gave. Frames without cookies from a member of the previous release (it announces
features without FIXNONCE_FEATURE) are answered as that release did.

Pair rounds (LANES_FEATURE, docs/design/partial-replication.md section 4): beside the mesh
round, which reads the mesh origins only, a round with a partner that shares live lanes jobs
with us: the same kinds with "jobs", whose "h", "c", "vv", "cs", "blk" and "fix" cover those
jobs' lanes only (`LaneSink`). A receiver answers only for the jobs both it and the frame's
sender are members of, and only to the address membership holds for that sender (proven), so
no lane leaves its job's members. Without a LaneSink (lanes off) no pair round is started and
none is answered."""

from __future__ import annotations

import hashlib
import hmac
import itertools
import secrets
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from enum import Enum
from typing import Any, NamedTuple, Protocol, runtime_checkable

from peer.log import Event
from peer.log.contents import block_seqs
from peer.log.lanes import lane_of
from peer.mesh.addr import parse_addr
from peer.mesh.wire import (
    Blocks,
    Frame,
    Kind,
    Reply,
    digest_body,
    dumps,
    parse_blocks,
    parse_digests,
    parse_jobs,
    parse_nonce,
    parse_sizes,
    parse_vv,
)

FIX_BLOCKS = 64  # blocks of differing contents exchanged per round at most (256 seqs each)
FIX_EVENTS = 2048  # and events: blocks are added while fewer than this are sent
BLOCK_ROW_BYTES = 48  # about what one [block, digest] costs in JSON
# A "fix" is answered only from an address we sent our block digests to ("blk"), once per
# sending (and, fixnonce-v1, only if it echoes that sending's nonce): the addresses awaited
# (the oldest are forgotten) and the sendings per address
FIX_PEERS = 64
FIX_ASKS = 4
FIXNONCE_FEATURE = "fixnonce-v1"  # announced in `features`: this peer sends and checks cookies
COOKIE_BYTES = 8  # a cookie or nonce: 64 random or keyed bits, hex on the wire
MAX_ECHOES = 4096  # addresses whose cookie for us we keep (the oldest are forgotten)
# Full DIGESTs (those that read and encode events) answered per member (from the address
# membership holds for it), else per host (addresses no member holds: a member proving many
# ports shares one), per window of the anti-entropy period (at most ANSWER_WINDOW_MAX_S): an
# honest peer sends one per round of ours (its answer to our DIGEST_SUM) and of its own, one
# per pair round, one per lanes job it was just added to; more are not answered, counted
# (review r2 of session 48, M4: each
# answer reads and encodes up to max_events_per_frame events, ~4 ms and ~900x the bytes of a
# 160-byte DIGEST). A DIGEST that goes on a pull our last answer to it said `more` of (its
# vector holds what that answer sent) is answered beyond them: a restarted peer's burst; so
# is one we asked for (a DIGEST_SUM of ours to that address and scope, `_asked`: a
# scale-out's catch-ups send one per job added, all at once).
MAX_DIGEST_ANSWERS = 8
ANSWER_WINDOW_MAX_S = 1.0
MAX_PULLS = 256  # (address, scope) pairs whose `more` answer we keep the marks of
MAX_ASKED = 1024  # (address, scope) pairs whose DIGEST we asked for by a DIGEST_SUM of ours
# How long DIGEST_SUMs of ours let their DIGESTs past the bound (a round trip, with room),
# and how many at most per (address, scope): a sum whose heads were equal is answered by no
# DIGEST, and its mark, kept for good, let the member at that address send as many DIGESTs
# past the bound as our idle rounds to it (one per period: ~3,600 an idle hour; session 49,
# helper d). Each scope is its own (a scale-out's catch-ups: one scope per job)
ASKED_WAIT_S = 5.0
MAX_ASKED_EACH = 4
# A frame to an address whose cookie for us we lack is padded ("p") by this many characters:
# its receiver's handshake must not be larger than it (QUIC pads its first packets likewise)
PAD_CHARS = 64
# Compaction floors a DIGEST_REPLY carries ("cf") at most: those of ours above the asker's
# vector, of origins it names (one is enough to start its catch-up; the rest say how far)
MAX_FLOORS_SENT = 256
# A differing block skipped as out of phase (`_send_fix`: the two sides' in-memory counts
# differ) with one address is exchanged whole once it has been skipped there for this long
# (several 5 s compaction passes): two peers whose in-memory sets of a block differ for good
# (different `compact_recent_tasks`, a job one keeps and the other compacted) still compare
# its rivals, at most once per bound (session 52, helper i). The first skips are remembered
# per address (at most OUT_OF_PHASE_EACH blocks, the least recently skipped forgotten) for at
# most OUT_OF_PHASE_PEERS addresses (one no live member holds forgotten first)
OUT_OF_PHASE_S = 30.0
OUT_OF_PHASE_EACH = 256
OUT_OF_PHASE_PEERS = 64

HeadsSeen = Callable[[str, Mapping[str, int]], None]  # (peer id, its version vector)


class Trust(Enum):
    """What a received frame proves about its reply-to address."""

    VERIFIED = "verified"  # it echoed our cookie for that address: its sender receives there
    LEGACY = "legacy"  # no cookies, from a member of the previous release: as it expects
    NONE = "none"  # nothing: the address may be anyone's


class PeerAt(NamedTuple):
    """The live member at an address as membership holds it (signed: the address of its
    signed alive or heartbeat), and whether it announces FIXNONCE_FEATURE (None: it announced
    no features yet)."""

    id: str
    nonces: bool | None


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
        """Fold remote events in; returns the ones that were new. StoreError if they cannot
        be stored now (none kept)."""
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
        """Origin -> the digest of its held contents; an origin left out is not compared
        (a node leaves out those whose events are not all on disk)."""
        ...

    def block_digests(self, origin: str) -> Mapping[int, str]:
        """Block -> the digest of `origin`'s held contents in it (non-empty blocks)."""
        ...

    def block_sizes(self, origin: str) -> Mapping[int, int]:
        """Block -> how many of its events up to `origin`'s head its digest covers (of
        `block_digests`' blocks; 0 or left out: none)."""
        ...

    def events_in(self, origin: str, blocks: Iterable[int]) -> list[Event]:
        """`origin`'s held events in these blocks that we serve, in seq order."""
        ...


@runtime_checkable
class FloorSink(Protocol):
    """Compaction floors (peer.log.compact): ours told to a peer behind them, a member's told
    to catch-up (review rr of session 48, S7: a SWIM report has a byte bound, and floors
    grow with the origins ever compacted, so the report alone cannot carry them all). Every
    method must not block."""

    def floors_above(self, vv: Mapping[str, int], limit: int) -> Mapping[str, int]:
        """Our floors above `vv` of origins `vv` names (at most `limit`, the last raised
        first): the asker lacks events we dropped."""
        ...

    def floors_heard(self, peer_id: str, floors: Mapping[str, int]) -> None:
        """Member `peer_id` dropped events up to `floors` (a DIGEST_REPLY's "cf"): catch-up
        judges whether we are behind them, as a report's "cfloor"."""
        ...


class LaneSink(Protocol):
    """The lanes (LANES_FEATURE) a peer holds, read per scope: the lanes of the jobs given
    (MeshState's scoped readers). Every method must not block."""

    def lane_jobs(self) -> list[str]:
        """The jobs a pair round names, sorted: the live (not ended) lanes jobs we are a
        member of, the ended ones whose fold here has not finished, and the compacted ones
        whose lanes still wait in our log for the members' pair vectors."""
        ...

    def shared(self, jobs: Iterable[str], peer: str) -> list[str]:
        """The lanes jobs of `jobs` whose members are both we and `peer`, sorted."""
        ...

    def job_members(self, job: str) -> Collection[str]:
        """The members of the lanes job `job` as we fold them (empty: no lanes job we hold)."""
        ...

    def lane_heads(self, jobs: Collection[str]) -> Mapping[str, int]:
        ...

    def lane_events_after(self, vv: Mapping[str, int], limit: int,
                          jobs: Collection[str]) -> list[Event]:
        ...

    def lane_content_sum(self, jobs: Collection[str]) -> str | None:
        ...

    def lane_content_digests(self, jobs: Collection[str]) -> Mapping[str, str]:
        ...

    def lane_block_digests(self, origin: str, jobs: Collection[str]) -> Mapping[int, str]:
        ...

    def lane_block_sizes(self, origin: str, jobs: Collection[str]) -> Mapping[int, int]:
        ...

    def lane_events_in(self, origin: str, blocks: Iterable[int],
                       jobs: Collection[str]) -> list[Event]:
        ...


class _Scoped:
    """A LaneSink read as the EventSink and ContentSink of one pair round: `jobs`' lanes."""

    def __init__(self, lanes: LaneSink, jobs: list[str]) -> None:
        self._l = lanes
        self.jobs = jobs

    def heads(self) -> Mapping[str, int]:
        return self._l.lane_heads(self.jobs)

    def events_after(self, vv: Mapping[str, int], limit: int) -> list[Event]:
        return self._l.lane_events_after(vv, limit, self.jobs)

    def content_sum(self) -> str | None:
        return self._l.lane_content_sum(self.jobs)

    def content_digests(self) -> Mapping[str, str]:
        return self._l.lane_content_digests(self.jobs)

    def block_digests(self, origin: str) -> Mapping[int, str]:
        return self._l.lane_block_digests(origin, self.jobs)

    def block_sizes(self, origin: str) -> Mapping[int, int]:
        return self._l.lane_block_sizes(origin, self.jobs)

    def events_in(self, origin: str, blocks: Iterable[int]) -> list[Event]:
        return self._l.lane_events_in(origin, blocks, self.jobs)


class Link(Protocol):
    """What anti-entropy needs of the gossip facade. Must not block."""

    def send(self, addr: str, kind: Kind, body: bytes, *, max_body_bytes: int | None = None,
             ) -> None:
        """Send one frame of `kind` around the encoded `body` (dropped if it cannot go, or if
        `body` is larger than `max_body_bytes`)."""
        ...

    def send_events(self, addrs: Sequence[str], events: Sequence[Event], *, ttl: int = 0,
                    reply: Reply | None = None, fix: Blocks | None = None,
                    fix_echo: str | None = None, jobs: Sequence[str] | None = None) -> None:
        """Send `events` in as many EVENTS frames as needed; with `reply`, the last frame is
        a DIGEST_REPLY, with `fix` an EVENTS frame carrying it, `fix_echo` and `jobs` (sent
        even when there are no events)."""
        ...

    def merge(self, events: Sequence[Event]) -> list[Event]:
        """Fold received events into the sink, counted; returns the new ones, never raises."""
        ...

    def refused(self, origin: Any, reason: str) -> None:
        """Count an event of a frame that was left out as malformed (`origin` as sent)."""
        ...

    def receive_events(self, body: Mapping[str, Any]) -> list[Event]:
        """Check (signatures) and merge the events of a frame body; returns the new ones."""
        ...


class PeerSample(Protocol):
    """The part of Membership a digest carries, learns from and checks addresses against.
    Must not block."""

    def sample(self, exclude: str) -> list[str]:
        """Some live addresses other than `exclude`."""
        ...

    def learn_addrs(self, addrs: Iterable[Any]) -> None:
        """Note addresses another peer vouched for; ValueError on a malformed one."""
        ...

    def peer_at(self, addr: str) -> PeerAt | None:
        """The live member at `addr`, or None."""
        ...


def _scope(jobs: Sequence[str] | None) -> str:
    """A round's scope: "" the mesh's, else a hash of a pair round's jobs (up to
    MAX_PAIR_JOBS ids: the key of the marks kept per address, `_pulls` and `_asked`)."""
    return "" if jobs is None else hashlib.blake2b(",".join(jobs).encode(),
                                                   digest_size=8).hexdigest()


class AntiEntropy:
    """One side of the push-pull exchange: `send_digest` starts a round, `on_digest` and
    `on_digest_reply` answer the frames of one. Malformed bodies raise KeyError, TypeError
    or ValueError for the receive path to count.

    With `nonces` (fixnonce-v1) answers go only to proven addresses (the module's doc); without,
    as the previous release. With `signed` too, a vector is noted under a frame's sender only
    if the frame is proven to come from the address membership holds for that sender."""

    def __init__(self, sink: EventSink, link: Link, peers: PeerSample, *,
                 max_events_per_frame: int, heads_seen: HeadsSeen | None = None,
                 contents: ContentSink | None = None, max_frame_bytes: int = 16 << 20,
                 nonces: bool = False, signed: bool = False,
                 lanes: LaneSink | None = None, pair_seen: HeadsSeen | None = None,
                 clock: Callable[[], float] = time.monotonic, period_s: float = 1.0,
                 floors: FloorSink | None = None) -> None:
        self._sink = sink
        self._floors = floors  # None: floors are neither told nor heard (the report's only)
        self._clock = clock
        self._window = min(period_s, ANSWER_WINDOW_MAX_S)
        # share (`_share`: a member's, or a host's) -> (until when its window runs, full
        # DIGESTs answered in it)
        self._answers: dict[str, tuple[float, int]] = {}
        # (address, scope) -> the highest seq of each origin our last answer there that said
        # `more` sent (within our heads): a DIGEST whose vector holds them goes on that pull
        self._pulls: dict[tuple[str, str], dict[str, int]] = {}
        # (address, scope) -> DIGEST_SUMs of ours sent there whose DIGEST is not in yet (how
        # many, until when: ASKED_WAIT_S after the last): a DIGEST we asked for is answered
        # beyond the window's bound (a scale-out's catch-ups: one pair round per job, all at
        # once; the seam of session 48's review rr, S1)
        self._asked: dict[tuple[str, str], tuple[int, float]] = {}
        self._lanes = lanes  # None: lanes are off (no pair round started nor answered)
        # Told a member's lanes vector a pair round proved it holds (the shared jobs' lanes
        # only): what a compacted job's lanes wait for (peer.log.compact.Compactor.pair_vvs)
        self._pair_seen = pair_seen or (lambda _p, _vv: None)
        self._link = link
        self._peers = peers
        self._limit = max_events_per_frame
        self._seen = heads_seen or (lambda _p, _vv: None)
        self._contents = contents  # None: heads only (as the previous release)
        self._max_blocks = max(16, max_frame_bytes // 2 // BLOCK_ROW_BYTES)
        # address -> the nonces of our "blk" sent there and not answered (None: no nonce)
        self._fixes_awaited: dict[str, list[str | None]] = {}
        self._nonces = nonces
        self._signed = nonces and signed
        self._key = secrets.token_bytes(32)  # our cookies: HMAC(key, address)
        self._old_key: bytes | None = None  # the key before (`rotate_cookies`)
        self._cookies: dict[str, str] = {}
        self._echoes: dict[str, str] = {}  # address -> the cookie its peer gave us
        self.unverified = 0  # frames that proved nothing and so got at most a handshake
        self.unbound = 0  # vectors not noted: the frame was not proven to be its sender's
        self.floors_unread = 0  # DIGEST_REPLY "cf"s malformed or over MAX_FLOORS_SENT
        self.sizes_unread = 0  # DIGEST_REPLY "bc"s malformed (ignored: blocks sent as before)
        self.out_of_phase = 0  # differing blocks not exchanged: their sizes differ (`_send_fix`)
        # exchanged all the same: skipped with that address for OUT_OF_PHASE_S (`_send_fix`)
        self.out_of_phase_due = 0
        # address -> (origin, block) -> when a round with it first skipped that block as out
        # of phase (our clock), the least recently skipped first (`_phase_due`)
        self._phase: dict[str, dict[tuple[str, int], float]] = {}
        self.throttled = 0  # full DIGESTs not answered: MAX_DIGEST_ANSWERS in their window

    # -- cookies -------------------------------------------------------------------------
    def _cookie(self, addr: str) -> str:
        """Our cookie for `addr`: only frames we send there carry it (computed once per
        address while at most MAX_ECHOES are)."""
        c = self._cookies.get(addr)
        if c is None:
            c = hmac.digest(self._key, addr.encode(), "sha256")[:COOKIE_BYTES].hex()
            if len(self._cookies) >= MAX_ECHOES:
                self._cookies.clear()
            self._cookies[addr] = c
        return c

    def rotate_cookies(self) -> None:
        """A new cookie key (Gossip, every `cookie_rotate_s`): frames we send carry cookies
        of it; a cookie of the key before still proves its address until the next rotation
        (a peer in contact takes our new cookie from our next frame), an older one no more
        (F6: a cookie once given proved its address for as long as we ran, also after its
        holder left it)."""
        self._old_key, self._key = self._key, secrets.token_bytes(32)
        self._cookies.clear()

    def _ours(self, addr: str, echo: str) -> bool:
        """Whether `echo` is our cookie for `addr`, of the current key or the one before."""
        if hmac.compare_digest(echo, self._cookie(addr)):
            return True
        old = self._old_key
        return old is not None and hmac.compare_digest(
            echo, hmac.digest(old, addr.encode(), "sha256")[:COOKIE_BYTES].hex())

    def _keys(self, addr: str, echo: str | None = None) -> dict[str, str]:
        """The cookie keys of a frame to `addr`: ours ("n") and theirs echoed ("e": `echo`,
        an answer's question's, else the one kept)."""
        if not self._nonces:
            return {}
        out = {"n": self._cookie(addr)}
        e = echo or self._echoes.get(addr)
        if e is not None:
            out["e"] = e
        else:  # room for the handshake that answers it
            out["p"] = "." * PAD_CHARS
        return out

    def _trust(self, f: Frame) -> Trust:
        """What `f` proves about its reply-to address; a proven frame's cookie ("n") is kept
        as the one to echo there. ValueError if a cookie is malformed."""
        if not self._nonces:
            return Trust.LEGACY
        n, e = parse_nonce(f.body, "n"), parse_nonce(f.body, "e")
        if not f.reply_to:
            return Trust.NONE
        if e is not None and self._ours(f.reply_to, e):
            if n is not None:
                self._keep_echo(f.reply_to, n)
            return Trust.VERIFIED
        if n is not None and f.reply_to not in self._echoes and len(self._echoes) < MAX_ECHOES:
            # Kept until a proven one replaces it: it only decides what our frames to that
            # address echo (a forged one costs a handshake there), and saves the handshake
            # of our first frame to a peer whose first frame came first. (Never evicting:
            # forged ones cannot push proven ones out.)
            self._keep_echo(f.reply_to, n)
        if n is None and e is None and self._legacy(f.reply_to):
            return Trust.LEGACY
        return Trust.NONE

    def _keep_echo(self, addr: str, cookie: str) -> None:
        echoes = self._echoes
        echoes.pop(addr, None)
        echoes[addr] = cookie
        if len(echoes) > MAX_ECHOES:
            del echoes[next(iter(echoes))]

    def _legacy(self, addr: str) -> bool:
        """A member of the previous release is at `addr` (it announces features, not ours)."""
        at = self._peers.peer_at(addr)
        return at is not None and at.nonces is False

    def _unproven(self, f: Frame, what: str) -> None:
        """`f` proved nothing: a handshake back if it carries a cookie, naming `what` it
        answers ("s" a sum, "d" a digest, "a" an acknowledgement: its sender, proven by echoing
        ours, sends it again; "c": nothing to send again, the cookies alone), its body never
        larger than `f`'s, never to a peer that would drop it (of the previous release). (The
        body, not the frame: each frame's header holds its sender's address, and a whole
        frame's bound dropped the handshake of a peer whose address is longer than its
        asker's, F5; a header is bounded (255-byte strings) and chosen by its sender.)"""
        self.unverified += 1
        n = f.body.get("n")
        if isinstance(n, str) and f.reply_to and not self._legacy(f.reply_to):
            self._link.send(f.reply_to, Kind.DIGEST_SUM,
                            dumps({"n": self._cookie(f.reply_to), "e": n, "k": what}),
                            max_body_bytes=f.body_size)

    def _on_handshake(self, f: Frame) -> None:
        """A handshake: proven, our frame it names goes again, now with its cookie echoed;
        unproven, nothing (a handshake never answers one)."""
        what = f.body.get("k")
        if self._trust(f) is not Trust.VERIFIED or what not in ("s", "d", "a", "c"):
            self.unverified += 1
            return
        resend: dict[str, Callable[[str], None]] = {
            "s": self.send_sum, "d": self.send_digest, "a": self.send_ack}
        again = resend.get(what)
        if again is not None:
            again(f.reply_to)

    def _note(self, f: Frame, vv: Mapping[str, int], trust: Trust) -> None:
        """Note `vv` as `f.sender`'s vector; signed, only if `f` came from the address
        membership holds for that member (proven, or a member of the previous release)."""
        if self._signed:
            at = self._peers.peer_at(f.reply_to) if trust is not Trust.NONE else None
            if at is None or at.id != f.sender:
                self.unbound += 1
                return
        self._seen(f.sender, vv)

    # -- scopes: the mesh round's, a pair round's (LANES_FEATURE) ------------------------
    def _scope(self, f: Frame, trust: Trust) -> list[str] | None:
        """The jobs a pair round's frame covers here: those it names that both we and its
        sender are members of, if it is proven to come from the address membership holds
        for that sender ([]: none, lanes are off here, or unproven); None for a mesh round's
        frame. ValueError if its "jobs" is malformed."""
        jobs = parse_jobs(f.body)
        if jobs is None:
            return None
        if self._lanes is None or trust is not Trust.VERIFIED:
            return []
        at = self._peers.peer_at(f.reply_to)
        if at is None or at.id != f.sender:
            return []
        return self._lanes.shared(jobs, f.sender)

    def _reader(self, jobs: list[str] | None) -> tuple[EventSink | _Scoped, ContentSink | None]:
        """What a round reads: the mesh origins (`jobs` None), else the lanes of `jobs`."""
        if jobs is None:
            return self._sink, self._contents
        assert self._lanes is not None
        scoped = _Scoped(self._lanes, jobs)
        return scoped, scoped

    # -- rounds --------------------------------------------------------------------------
    def send_sum(self, addr: str, jobs: list[str] | None = None) -> None:
        """DIGEST_SUM to `addr` (a SWIM member): only a hash of our vector and one of our
        contents, which cost the same whatever the mesh's size; the full DIGEST follows only
        when they differ. With `jobs` (shared with `addr`, LANES_FEATURE): a pair round's,
        of those jobs' lanes."""
        sink, contents = self._reader(jobs)
        body: dict[str, Any] = {"h": heads_sum(sink.heads())}
        c = None if contents is None else contents.content_sum()
        if c is not None:
            body["c"] = c
        body.update(self._keys(addr))
        if jobs is not None:
            body["jobs"] = jobs
        key = (addr, _scope(jobs))
        now = self._clock()
        n, until = self._asked.pop(key, (0, 0.0))
        n = min(n + 1, MAX_ASKED_EACH) if now < until else 1
        self._asked[key] = (n, now + ASKED_WAIT_S)  # (the most recent last)
        if len(self._asked) > MAX_ASKED:
            del self._asked[next(iter(self._asked))]
        self._link.send(addr, Kind.DIGEST_SUM, dumps(body))

    def on_digest_sum(self, f: Frame) -> None:
        """Equal vectors and contents: nothing to do (the sender holds what we hold); else
        our DIGEST. A sum without contents (the previous release) compares the heads only.
        A DIGEST_SUM without "h" is a handshake (`_on_handshake`). A pair round's is compared
        over the jobs both are members of (all it names, else it differs)."""
        if self._nonces and "h" not in f.body:
            self._on_handshake(f)
            return
        h, c = f.body["h"], f.body.get("c")
        if not isinstance(h, str) or not isinstance(c, str | None):
            raise ValueError("bad digest sum")
        trust = self._trust(f)
        jobs = self._scope(f, trust)
        if jobs is not None and not jobs:
            if trust is Trust.NONE:
                self._unproven(f, "c")
            return
        sink, contents = self._reader(jobs)
        mine = sink.heads()
        differ = h != heads_sum(mine) or jobs != f.body.get("jobs")
        if not differ:
            if jobs is None:
                self._note(f, dict(mine), trust)
            else:  # (`_scope` proved its sender)
                self._pair_seen(f.sender, dict(mine))
            ours = None if c is None or contents is None else contents.content_sum()
            differ = ours is not None and ours != c
        if trust is Trust.NONE:
            self._unproven(f, "s" if differ else "c")
        elif differ and f.reply_to:
            self.send_digest(f.reply_to, echo=f.body.get("n"), jobs=jobs)

    def send_digest(self, addr: str, echo: str | None = None,
                    jobs: list[str] | None = None) -> None:
        """DIGEST to `addr`: our version vector, a sample of live peers and, when we keep
        them, our content digests per origin; with `jobs` (a pair round's), those of the
        jobs' lanes and no sample."""
        sink, contents = self._reader(jobs)
        sample = self._peers.sample(addr) if jobs is None else []
        cs = None if contents is None else contents.content_digests()
        self._link.send(addr, Kind.DIGEST, digest_body(sink.heads(), sample, cs,
                                                       nonces=self._keys(addr, echo),
                                                       jobs=jobs))

    def send_ack(self, addr: str) -> None:
        """An acknowledgement to `addr`: a DIGEST of our vector alone, marked "ack" (no sample,
        no content digests), which the receiver notes and does not answer."""
        self._link.send(addr, Kind.DIGEST, digest_body(self._sink.heads(), [], ack=True,
                                                       nonces=self._keys(addr)))

    def on_digest(self, f: Frame) -> None:
        """Reply with the events the sender lacks (oldest first, at most one frame's worth)
        and, if it holds something we lack, our own vector so that it pushes those; and our
        block digests of the origins whose heads are equal and contents are not. An
        acknowledgement ("ack") is only noted: what differs is in flight, or the periodic
        rounds repair it. An unproven digest gets a handshake at most: no event is read or
        encoded for an address that proved nothing (its sender, proven, asks again). A pair
        round's is answered over the jobs both are members of, and its vector told to `pair_seen`
        (not noted as the sender's mesh vector)."""
        theirs = parse_vv(f.body["vv"])
        trust = self._trust(f)
        jobs = self._scope(f, trust)
        if jobs is None:
            self._note(f, theirs, trust)
            if f.body.get("ack") is True:
                if trust is Trust.NONE:
                    self._unproven(f, "a")
                return
            self._peers.learn_addrs(f.body.get("peers", []))
        elif not jobs:
            if trust is Trust.NONE:
                self._unproven(f, "c")
            return
        else:  # (their vector may name lanes of jobs we do not share: not ours to compare)
            theirs = {o: q for o, q in theirs.items() if _lane_in(o, jobs)}
            self._pair_seen(f.sender, theirs)
        sink, contents = self._reader(jobs)
        mine = sink.heads()
        ahead = any(seq > mine.get(o, 0) for o, seq in theirs.items())
        if trust is Trust.NONE:  # (F7: no events read nor encoded for it)
            behind = any(seq > theirs.get(o, 0) for o, seq in mine.items())
            self._unproven(f, "d" if ahead or behind else "c")
            return
        scope = _scope(jobs)
        if not self._may_answer(f.reply_to, scope, theirs, self._share(f)):
            self.throttled += 1
            return
        missing = sink.events_after(theirs, self._limit)
        keys = self._keys(f.reply_to, f.body.get("n")) if f.reply_to else {}
        vv, more = dict(mine) if ahead else None, len(missing) >= self._limit
        if more:
            self._note_pull(f.reply_to, scope, missing, mine)
        cs = f.body.get("cs")
        blocks, sizes = ({}, {}) if cs is None else self._differing(theirs, mine, cs, contents)
        nonce = secrets.token_hex(COOKIE_BYTES) if blocks and self._nonces else None
        cf = None if jobs is not None or self._floors is None else (
            self._floors.floors_above(theirs, MAX_FLOORS_SENT))
        if missing or ahead or blocks or cf:
            self._link.send_events([f.reply_to], missing, reply=Reply(
                vv, more, blocks or None, keys.get("n"), keys.get("e"), nonce, jobs,
                dict(cf) if cf else None, sizes or None))
        if blocks and f.reply_to:
            awaited = self._fixes_awaited
            asks = awaited.pop(f.reply_to, [])
            awaited[f.reply_to] = [*asks, nonce][-FIX_ASKS:]
            if len(awaited) > FIX_PEERS:
                del awaited[self._fix_to_forget()]

    def _share(self, f: Frame) -> str:
        """Whose share of full DIGEST answers `f` takes: its sender's, when it comes from the
        address membership holds for that member (its signed alive's or heartbeat's, proven
        by the cookie: "m" and its id); else that of its reply-to address's host ("h" and
        the host), which the addresses no member holds on one host share (session 48 helper
        g's left: a member proving many ports of its own took each port's share)."""
        at = self._peers.peer_at(f.reply_to)
        if at is not None and at.id == f.sender:
            return "m " + at.id
        try:
            return "h " + parse_addr(f.reply_to)[0]
        except ValueError:
            return "a " + f.reply_to

    def _may_answer(self, addr: str, scope: str, theirs: Mapping[str, int],
                    share: str) -> bool:
        """Whether a full DIGEST from `addr` (over `scope`: "" the mesh's, else a hash of a
        pair round's jobs) is answered: it goes on a pull our last answer there said `more`
        of (that pull's marks go), or we asked for it (`_asked`), or fewer than
        MAX_DIGEST_ANSWERS were in the window of its `share` (`_share`: a member's, or a
        host's; the windows of at most MAX_ECHOES shares are held: more at once, not
        answered). A DIGEST that does not go on the pull leaves its marks: its DIGEST may
        still come."""
        marks = self._pulls.get((addr, scope))
        if marks is not None and all(theirs.get(o, 0) >= q for o, q in marks.items()):
            del self._pulls[(addr, scope)]
            return True
        now = self._clock()
        asked, until = self._asked.pop((addr, scope), (0, 0.0))
        if asked > 0 and now < until:  # (its answer to our sum)
            if asked > 1:
                self._asked[(addr, scope)] = (asked - 1, until)
            return True
        until, n = self._answers.get(share, (0.0, 0))
        if now >= until:
            if share not in self._answers and len(self._answers) >= MAX_ECHOES:
                for a in [a for a, (u, _) in self._answers.items() if now >= u]:
                    del self._answers[a]
                if len(self._answers) >= MAX_ECHOES:
                    return False
            until, n = now + self._window, 0
        if n >= MAX_DIGEST_ANSWERS:
            return False
        self._answers[share] = (until, n + 1)
        return True

    def _note_pull(self, addr: str, scope: str, sent: Sequence[Event],
                   mine: Mapping[str, int]) -> None:
        """Our answer to `addr` says `more`: the seqs it sent within our heads, which the
        DIGEST that goes on its pull holds (the oldest pull is forgotten past MAX_PULLS)."""
        marks: dict[str, int] = {}
        for e in sent:
            if e.seq <= mine.get(e.origin, 0) and e.seq > marks.get(e.origin, 0):
                marks[e.origin] = e.seq
        self._pulls.pop((addr, scope), None)
        if not marks:  # (only events beyond our gaps: nothing a DIGEST could show it holds)
            return
        self._pulls[(addr, scope)] = marks
        if len(self._pulls) > MAX_PULLS:
            del self._pulls[next(iter(self._pulls))]

    def _fix_to_forget(self) -> str:
        """The awaited fix to forget when FIX_PEERS are: the oldest at an address no live
        member holds, else the oldest (F4: a member proving FIX_PEERS addresses of its own
        pushed a live member's pending fix out)."""
        awaited = self._fixes_awaited
        for addr in awaited:
            if self._peers.peer_at(addr) is None:
                return addr
        return next(iter(awaited))

    def _differing(self, theirs: Mapping[str, int], mine: Mapping[str, int],
                   cs: Any, contents: ContentSink | None,
                   ) -> tuple[Blocks, dict[str, list[int]]]:
        """Our block digests (of `contents`) of each origin at equal heads whose contents
        differ from the sender's `cs` (bounded: the rest waits for a later round), and how
        many events each covers ("bc", one per row: `_send_fix`). An origin
        only one side gives a digest of is not compared: a digest is left out while its
        events are not all on disk (`ContentSink.content_digests`), which on a busy peer is
        most of the time, and its blocks (up to BLOCK_SEQS events each, sent both ways) would
        only repeat what the pushes carry; a later round compares it, as a DIGEST_SUM without
        a content sum does."""
        if contents is None:
            return {}, {}
        their_cs = parse_digests(cs)
        ours = contents.content_digests()
        out: Blocks = {}
        sizes: dict[str, list[int]] = {}
        n = 0
        for o in sorted(set(their_cs) & set(ours)):
            if theirs.get(o, 0) != mine.get(o, 0) or their_cs[o] == ours[o]:
                continue
            rows = sorted(contents.block_digests(o).items())
            if n + len(rows) > self._max_blocks:
                break
            held = contents.block_sizes(o)
            out[o] = rows
            sizes[o] = [held.get(b, 0) for b, _ in rows]
            n += len(rows)
        return out, sizes

    def on_digest_reply(self, f: Frame) -> None:
        """Merge the events; push what the replier lacks; pull again while it says `more`
        and we keep learning something new; exchange the blocks whose contents differ. An
        unproven reply (none of ours asked for it) is merged and not answered. A pair round's
        is answered over the jobs both are members of."""
        new = self._link.receive_events(f.body)
        vv = f.body.get("vv")
        theirs = None if vv is None else parse_vv(vv)
        blk = f.body.get("blk")
        blocks = None if blk is None else parse_blocks(blk, self._max_blocks)
        sizes = None if blocks is None else self._sizes(f.body.get("bc"), blocks)
        bn = parse_nonce(f.body, "bn")
        trust = self._trust(f)
        if trust is Trust.NONE:
            self.unverified += 1
            return
        jobs = self._scope(f, trust)
        if jobs is not None and not jobs:
            return
        if jobs is None and "cf" in f.body:
            self._floors_told(f)
        sink, contents = self._reader(jobs)
        if theirs is not None:
            self._link.send_events([f.reply_to], sink.events_after(theirs, self._limit))
        if f.body.get("more") and new:
            self.send_digest(f.reply_to, echo=f.body.get("n"), jobs=jobs)
        if blocks is not None and contents is not None and f.reply_to:
            self._send_fix(f.reply_to, blocks, bn, contents, jobs, sizes, sink.heads())

    def _sizes(self, bc: Any, blocks: Blocks) -> dict[str, dict[int, int]] | None:
        """A DIGEST_REPLY's block sizes ("bc"), None without them (the previous release) or
        if they do not read (counted, `sizes_unread`: the blocks go as that release sent
        them; the round's push and pull never fail for the hint)."""
        if bc is None:
            return None
        try:
            return parse_sizes(bc, blocks)
        except ValueError:
            self.sizes_unread += 1
            return None

    def _floors_told(self, f: Frame) -> None:
        """A (mesh round's) DIGEST_REPLY's "cf": its sender's floors above our vector, told to
        the floor sink as that member's (signed: only from the address membership holds for
        it, as a vector is noted). A "cf" that does not read as a vector is ignored and
        counted (`floors_unread`), and of a longer one the first MAX_FLOORS_SENT are read (a
        later release may send more): the hint never costs the round its push and pull."""
        try:
            floors = parse_vv(f.body["cf"])
        except ValueError:
            self.floors_unread += 1
            return
        if len(floors) > MAX_FLOORS_SENT:
            self.floors_unread += 1
            floors = dict(itertools.islice(floors.items(), MAX_FLOORS_SENT))
        if self._floors is None or not floors:
            return
        if self._signed:
            at = self._peers.peer_at(f.reply_to)
            if at is None or at.id != f.sender:
                self.unbound += 1
                return
        self._floors.floors_heard(f.sender, floors)

    def _send_fix(self, addr: str, theirs: Blocks, echo: str | None, contents: ContentSink,
                  jobs: list[str] | None, sizes: Mapping[str, Mapping[int, int]] | None,
                  heads: Mapping[str, int]) -> None:
        """Our events of the blocks whose digests differ from the replier's (a bounded part:
        the rest in later rounds), and our digests of them ("fix", echoing the nonce of its
        block digests): it keeps what wins and sends back its own events of each block that
        still differs.

        With the replier's `sizes` ("bc": how many of each block's events up to the head its
        digest covers), a differing block whose count is not ours is not named (counted,
        `out_of_phase`), and of its events only those beyond our head go: at equal heads
        both hold the same seqs up to it, so a count that differs is events one side let
        go of from memory (a job compacted on its own pass, the other's pass not run yet),
        whose copies the other drops on receipt (session 52, helper a: at 3 peers, two
        thirds of a receiver's events were such copies), while an event beyond a gap is
        never let go of and may be one the replier lacks (a pull's frames can be filled by
        those it holds: the exchange is its way in). Each side's next pass makes the counts
        agree; a rival content among the events both keep is then compared and settled.
        A block skipped so with `addr` for OUT_OF_PHASE_S goes whole all the same
        (`_phase_due`, counted `out_of_phase_due`): in-memory sets that differ for good
        (session 52, helper i) would otherwise never compare its rivals. A block seen
        agreeing (same digest, or same count) is forgotten.
        Without `sizes` (the previous release), every differing block, as before."""
        fix: Blocks = {}
        events: list[Event] = []
        n = 0
        for o, rows in theirs.items():
            their = dict(rows)
            mine = contents.block_digests(o)
            counts = None if sizes is None else sizes.get(o)
            held = {} if counts is None else contents.block_sizes(o)
            head = heads.get(o, 0)
            differ = sorted(b for b in set(their) | set(mine) if their.get(b) != mine.get(b))
            skipped, still = self._phase.get(addr, {}), set(differ)
            for k in [k for k in skipped if k[0] == o and k[1] not in still]:
                del skipped[k]  # (it agrees now)
            for b in differ:
                if n >= FIX_BLOCKS or len(events) >= FIX_EVENTS:
                    break
                if counts is None or counts.get(b, 0) == held.get(b, 0):
                    skipped.pop((o, b), None)  # (its counts agree: exchanged as before)
                elif not self._phase_due(addr, o, b):
                    self.out_of_phase += 1
                    if block_seqs(b)[-1] > head:
                        events += [e for e in contents.events_in(o, [b]) if e.seq > head]
                    continue
                fix.setdefault(o, []).append((b, mine.get(b, "")))
                events += contents.events_in(o, [b])
                n += 1
        if not self._phase.get(addr, True):
            del self._phase[addr]
        if fix or events:  # (only beyond-head events: an empty "fix", its answer nothing)
            self._link.send_events([addr], events, fix=fix,
                                   fix_echo=echo if self._nonces else None, jobs=jobs)

    def _phase_due(self, addr: str, origin: str, block: int) -> bool:
        """Whether `origin`'s `block`, whose counts differ from `addr`'s, goes all the same:
        rounds with `addr` skipped it for OUT_OF_PHASE_S (then its timer starts again at
        its next skip; a compaction pass out of phase lasts one pass, 5 s, so a block still
        out of phase after several is one whose in-memory sets differ for good, and only an
        exchange compares its rivals). Else its first skip is noted (bounded: the module's
        constants)."""
        now = self._clock()
        phase = self._phase
        skipped = phase.pop(addr, None)
        if skipped is None:
            skipped = {}
            if len(phase) >= OUT_OF_PHASE_PEERS:
                gone = next((a for a in phase if self._peers.peer_at(a) is None),
                            next(iter(phase)))
                del phase[gone]
        phase[addr] = skipped  # (the most recent address last)
        first = skipped.pop((origin, block), None)
        if first is not None and now - first >= OUT_OF_PHASE_S:
            self.out_of_phase_due += 1
            return True
        skipped[(origin, block)] = now if first is None else first
        if len(skipped) > OUT_OF_PHASE_EACH:
            del skipped[next(iter(skipped))]
        return False

    def on_fix(self, f: Frame) -> None:
        """An EVENTS frame with "fix" (its events are merged already): send back our events
        of each named block whose digest still differs from the sender's, bounded as the
        fix itself (`_send_fix`). Only the answer to our block digests ("blk") sent to its
        reply-to address is answered, once per sending, and (fixnonce-v1) only if it echoes
        that sending's nonce ("fn"; a member of the previous release sends none): a fix
        nobody asked for, aimed by a forged reply-to at anyone, gets nothing. A pair round's
        is answered over the jobs both are members of."""
        fix = parse_blocks(f.body["fix"], FIX_BLOCKS)
        fn = parse_nonce(f.body, "fn") if self._nonces else None
        if self._contents is None or not f.reply_to:
            return
        asks = self._fixes_awaited.get(f.reply_to)
        if not asks:
            return
        if fn is not None and fn in asks:
            asks.remove(fn)
        elif fn is None and (not self._nonces or self._legacy(f.reply_to)):
            asks.pop(0)
        else:
            self.unverified += 1
            return
        if not asks:
            del self._fixes_awaited[f.reply_to]
        jobs = self._scope(f, Trust.VERIFIED if fn is not None else Trust.NONE)
        if jobs is not None and not jobs:
            return
        _, contents = self._reader(jobs)
        assert contents is not None
        back: list[Event] = []
        for o, rows in fix.items():
            mine = contents.block_digests(o)
            for b, d in rows:
                if len(back) >= FIX_EVENTS:
                    break
                if mine.get(b, "") != d:
                    back += contents.events_in(o, [b])
        if back:
            self._link.send_events([f.reply_to], back)


def _lane_in(origin: str, jobs: Collection[str]) -> bool:
    """Is `origin` a lane of one of `jobs`?"""
    lane = lane_of(origin)
    return lane is not None and lane[1] in jobs


__all__ = ["FIXNONCE_FEATURE", "MAX_FLOORS_SENT", "AntiEntropy", "ContentSink", "EventSink",
           "FloorSink", "HeadsSeen", "LaneSink", "Link", "PeerAt", "PeerSample", "Trust",
           "heads_sum"]
