"""SWIM membership with Lifeguard: probes, indirect probes, suspicion, refutation and the
dissemination of membership updates on probe traffic. Pure: no I/O and no clock of its own
(time is passed in); messages leave through a `SwimNet`. Owned by one event loop.

Each protocol period a member probes one other (round-robin over a shuffled list): PING, and
if no ACK comes within the probe timeout, PING_REQ to `indirect_checks` others, which ping
the target for it and answer ACK (or NACK when they got nothing), and one more PING. No ack
by the end of the period makes the target SUSPECT. A suspicion becomes DEAD after a timeout
of `suspicion_mult` x log10(N) periods, up to `suspicion_max_mult` times longer when this
member alone suspects, shortened by each independent confirmation (Lifeguard). Updates
(alive, suspect, left, and each member's own report of its load and runs) ride on every
frame, each sent at most `retransmit_mult` x log10(N+1) times; a gossip timer sends the rest
to `gossip_nodes` members.

Rules that bound what one member can do to another: ALIVE and LEFT of a member are signed by
that member (only it can refute a suspicion, with a higher incarnation, or leave); a SUSPECT
claim is signed by its claimant; DEAD is never sent: every member reaches it by its own
suspicion timer, which the suspected member can stop by refuting. Local-health awareness: a
member that misses acks (its own fault or the network's) widens its probe timeouts.

Push-pull (memberlist's periodic state sync): every `push_pull_s`, scaled up with log2(N)
above 32 members, a member sends one live member a hash of its table (each live member's
incarnation, its own included); on a mismatch the two exchange their tables as
(member, incarnation) rows and then the signed updates each lacks, a bounded number per
frame. It repairs what the bounded retransmits missed (a member whose every alive was lost
on its way to us). On the same cadence the hash also goes to one join address where no member
is alive: after a partition that outlasted `forget_s`, both sides have forgotten each other
and nothing else would bring them together (a join address is matched with the frames'
reply-to address, so it heals only when given as the member advertises itself). The
exchange rides on the probe's wake-ups.

A frame's reply-to address is not checked (it may be forged to aim our answers at someone
else): a table ("d") is answered only from an address we sent a hash to within the last
period, the members it asks for ("w") only from one we sent a table to. What stays answered
unasked is bounded: a hash by our table (it grows with N) MAX_TABLES times per period in all,
a join sync ("r", all our signed updates) MAX_SYNC_ANSWERS times per address per period.
A table holds MAX_TABLE_ROWS rows at most, the first in member order: a truncated one says
so ("t"), and its receiver pushes no member beyond its last row (in a larger mesh the members
beyond are reconciled by gossip alone, not by push-pull).
"""

from __future__ import annotations

import hashlib
import heapq
import logging
import math
import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from typing import Any, Protocol

from peer.log.signing import self_certifying
from peer.mesh.addr import canonical_addr
from peer.mesh.wire import (
    dumps,
    parse_member_id,
    parse_member_ids,
    parse_table,
    parse_table_hash,
)

log = logging.getLogger("banzai.swim")

Body = dict[str, Any]
MAX_UPDATES_PER_FRAME = 24  # piggybacked updates on one frame
# A member's report ("d" of its "r" update) longer than this is refused, counted (review r2 of
# session 48, M3: a report as large as a frame, relayed on honest peers' probes, made them
# unsendable). This release's report is about 0.4 KB, 4.5 KB with 64 runs and 16 jobs worked
# on; its compaction floors ("cfloor") add ~33 bytes per origin compacted
# (`Gossip.heartbeat` leaves them out of a report that would be longer, and says so).
MAX_REPORT_BYTES = 64 << 10
# What a frame's header and JSON around its updates take at most (3 strings of 255 bytes,
# the version bytes, an HMAC tag): piggybacked updates fill the frame bound less this
FRAME_SLACK = 1024
SEQ_BITS = 48  # probe sequence numbers are random: an off-path member cannot forge an ack
# Members we never heard of that probed us, synced with until their alive arrives (at most):
# their alive's bounded retransmits may all have missed us, and nothing else would repair it.
MAX_ASKED = 16
ASK_SYNCS = 10  # join retries per prober (its alive may be refused: revoked, bad signature)
PUSH_PULL_SCALE_ABOVE = 32  # members: the push-pull interval grows with log2(N) above this
MAX_TABLE_ROWS = 8192  # rows of a push-pull table accepted (a larger mesh: the first ones)
MAX_PUSHED = 64  # members whose updates one push-pull frame carries (the rest: next rounds)
MAX_SEEDS = 1024  # join addresses kept for the push-pull after a long partition
MAX_CONTESTED = 1024  # addresses noted as contested (`Swim.contested`; the first ones)
MAX_TABLES = 4  # tables sent per push-pull period (a flood of mismatching hashes: no more)
MAX_PP_PEERS = 16  # addresses we await a push-pull answer from, kept for one period
MAX_SYNC_ANSWERS = 3  # join syncs ("r") answered per reply-to address per push-pull period
MAX_SYNC_PEERS = 64  # addresses whose join syncs are counted (more at once: not answered)
MAX_RELAYS = 64  # PING_REQs relayed at once (more: not answered; a flood walks no more)
MAX_INC = 2**63 - 1  # the largest incarnation (or any integer) a SWIM frame may carry
# Unsigned, a suspicion of ours is outbid below this: far above a clock-made incarnation
# (2^57 now, gossip.py), far below MAX_INC
UNSIGNED_REFUTE_MAX = 2**62
# A start's incarnation is raised to its store's floor (incmark.py) up to this: far above any
# honest run's, far enough below UNSIGNED_REFUTE_MAX and MAX_INC to refute 2^60 times more
MAX_START_INC = 2**61
# Signatures that fail in one frame before the rest of its updates are dropped unchecked (an
# honest member relays only updates it checked: a failed one is forged, or a key conflict)
MAX_BAD_SIGNATURES = 2
BAD_SIGNATURE = "bad_signature"  # the Signer's reason for a signature checked and false
# Updates read from one frame (the rest: dropped unread, counted). An honest probe or gossip
# frame carries MAX_UPDATES_PER_FRAME piggybacked, plus our alive on an ACK that refutes (25);
# an honest SYNC carries no suspicion and, per member of a table, its alive and its report
# (a join sync: the sender's whole table, itself included), each member once.
MAX_FRAME_UPDATES = 2 * MAX_UPDATES_PER_FRAME  # also: suspicions in any frame, SYNC included
MAX_SYNC_UPDATES = 2 * MAX_TABLE_ROWS + 2
# Members held that we never probed ok (learned by gossip, a join sync or a push-pull alone,
# or a stranger's leave); a new one past it is refused (counted). A joiner holds its whole
# mesh so until its first probe round: a mesh of MAX_TABLE_ROWS members never reaches it.
MAX_UNPROBED = MAX_TABLE_ROWS


class State(StrEnum):
    """A member's state as this member sees it; the values appear in the HTTP API."""

    ALIVE = "alive"
    SUSPECT = "suspect"
    DEAD = "dead"
    LEFT = "left"


class Msg(IntEnum):
    """SWIM frame kinds (the numbers are the wire's `Kind` values; see wire.py)."""

    PING = 5
    ACK = 6
    PING_REQ = 7
    NACK = 8
    UPDATES = 9
    SYNC = 10


class Sig(IntEnum):
    """Signature domains of membership updates (the kind byte of membership_message)."""

    ALIVE = 0xA1
    SUSPECT = 0xA2
    LEFT = 0xA3
    REPORT = 0xA4


@dataclass(frozen=True)
class SwimConfig:
    """SWIM timings and bounds; invalid values raise ValueError at construction."""

    probe_interval_s: float = 0.5
    probe_timeout_s: float = 0.25
    indirect_checks: int = 3
    suspicion_mult: float = 4.0  # suspicion timeout = this x log10(N) x probe interval ...
    suspicion_max_mult: float = 6.0  # ... up to this many times longer, unconfirmed
    retransmit_mult: int = 4  # each update is sent at most this x log10(N+1) times
    gossip_interval_s: float = 0.2
    gossip_nodes: int = 3
    awareness_max: int = 8  # timeouts are scaled by (score + 1), score < awareness_max
    reconnect_s: float = 2.0  # a dead member is pinged this often (heals partitions)
    join_retry_s: float = 1.0  # an address with no live member there is synced this often
    forget_s: float = 300.0  # a dead or left member's record is kept this long
    report_min_s: float = 0.5  # our own report is re-announced at most this often
    push_pull_s: float = 30.0  # table hash to one live member (and one silent join address)

    def __post_init__(self) -> None:
        for name in ("probe_interval_s", "probe_timeout_s", "gossip_interval_s",
                     "reconnect_s", "join_retry_s", "forget_s", "suspicion_mult",
                     "push_pull_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0")
        if self.probe_timeout_s >= self.probe_interval_s:
            raise ValueError("probe_timeout_s must be < probe_interval_s")
        if self.suspicion_max_mult < 1 or self.retransmit_mult < 1 or self.awareness_max < 1:
            raise ValueError("suspicion_max_mult, retransmit_mult, awareness_max must be >= 1")
        if self.indirect_checks < 0 or self.gossip_nodes < 0 or self.report_min_s < 0:
            raise ValueError("indirect_checks, gossip_nodes, report_min_s must be >= 0")

    @classmethod
    def lan(cls, **overrides: Any) -> SwimConfig:
        """Defaults for a lab LAN."""
        return cls(**overrides)

    @classmethod
    def local(cls, **overrides: Any) -> SwimConfig:
        """Fast timings for tests on one machine or a fake clock."""
        base: dict[str, Any] = {"probe_interval_s": 0.1, "probe_timeout_s": 0.04,
                                "gossip_interval_s": 0.05, "reconnect_s": 0.5,
                                "join_retry_s": 0.2, "report_min_s": 0.0,
                                "push_pull_s": 1.0}
        return cls(**{**base, **overrides})


def suspicion_bounds_s(cfg: SwimConfig, n: int) -> tuple[float, float]:
    """(min, max) suspicion timeout in a mesh of `n` members (memberlist's rule)."""
    scale = max(1.0, math.log10(max(1.0, float(n))))
    low = cfg.suspicion_mult * scale * cfg.probe_interval_s
    return low, low * cfg.suspicion_max_mult


def remaining_suspicion_s(confirmations: int, k: int, elapsed_s: float, low: float,
                          high: float) -> float:
    """Lifeguard: the timeout falls from `high` to `low` as `k` expected confirmations come."""
    if k < 1:
        return low - elapsed_s
    frac = math.log(confirmations + 1.0) / math.log(k + 1.0)
    return max(low, high - frac * (high - low)) - elapsed_s


def push_pull_interval_s(cfg: SwimConfig, n: int) -> float:
    """The push-pull period in a mesh of `n` members (memberlist's pushPullScale): the base
    up to 32 members, then one more base per doubling. A table grows with N and the period
    only with log2 N, so a member's push-pull traffic still grows as N / log N (bounded:
    MAX_TABLE_ROWS)."""
    if n <= PUSH_PULL_SCALE_ABOVE:
        return cfg.push_pull_s
    return cfg.push_pull_s * (math.ceil(math.log2(n) - math.log2(PUSH_PULL_SCALE_ABOVE)) + 1)


def retransmit_limit(cfg: SwimConfig, n: int) -> int:
    return cfg.retransmit_mult * max(1, math.ceil(math.log10(n + 1)))


class SwimNet(Protocol):
    """How SWIM messages leave. Must not block."""

    def send_swim(self, addr: str, kind: Msg, body: Body) -> None:
        """Send one SWIM frame to `addr` (dropped if it cannot go)."""
        ...


class Signer(Protocol):
    """Signs our updates and checks others'. Must not block."""

    def sign(self, domain: Sig, signer: str, addr: str, inc: int, ctr: int,
             body: bytes) -> Body:
        """The proof fields to add to an update we make."""
        ...

    def check(self, domain: Sig, signer: str, addr: str, inc: int, ctr: int, body: bytes,
              proof: Mapping[str, Any]) -> str | None:
        """None if `proof` is `signer`'s, else why not (BAD_SIGNATURE: verified and false)."""
        ...

    def revoked(self, member: str) -> bool:
        """Whether `member`'s identity is revoked (its entry is then dead, whoever answers
        its probes)."""
        ...

    def signed_by(self, domain: Sig, signer: str, addr: str, inc: int, ctr: int,
                  body: bytes, proof: Mapping[str, Any]) -> bool:
        """Whether `proof` is `signer`'s valid signature, revoked or not (binds nothing)."""
        ...


class IncarnationStore(Protocol):
    """Where our incarnation's high-water mark outlives a restart (incmark.py). Called on the
    loop: `reserve` may write and fsync a file, once per step of incarnations (the start's
    first: in a thread, by `Gossip.start`, before `bind`)."""

    def floor(self) -> int:
        """The lowest incarnation this start may announce (0: none kept)."""
        ...

    def reserve(self, inc: int) -> None:
        """`inc` is about to be announced: a later start will begin above it."""
        ...


class NoSigner:
    """No signatures (tests and simulations without identities)."""

    def sign(self, domain: Sig, signer: str, addr: str, inc: int, ctr: int,
             body: bytes) -> Body:
        return {}

    def check(self, domain: Sig, signer: str, addr: str, inc: int, ctr: int, body: bytes,
              proof: Mapping[str, Any]) -> str | None:
        return None

    def revoked(self, member: str) -> bool:
        return False

    def signed_by(self, domain: Sig, signer: str, addr: str, inc: int, ctr: int,
                  body: bytes, proof: Mapping[str, Any]) -> bool:
        return True


class Listener(Protocol):
    """Told of membership changes. Must not block."""

    def member_changed(self, member: Member, before: State | None) -> None:
        """`member` changed state (or address); `before` is None for a new member."""
        ...

    def member_report(self, member: Member) -> None:
        """`member` announced a new report of its load and runs (`member.report`)."""
        ...

    def member_wall(self, member: Member, wall_ms: int) -> None:
        """`member` answered our probe; its wall clock read `wall_ms` (for clock skews)."""
        ...

    def member_forgotten(self, member: Member) -> None:
        """`member`'s record is gone: dead or left for `forget_s` (what the layers above
        keep of it may go too, or a lab running for months holds every id it ever heard)."""
        ...


@dataclass
class Suspicion:
    """A running suspicion of one member: who confirmed it, since when, its bounds."""

    start: float
    k: int
    low: float
    high: float
    confirmations: set[str] = field(default_factory=set)

    def deadline(self) -> float:
        n = len(self.confirmations) - 1  # the first claimant is not a confirmation
        return self.start + self.elapsed_bound(n)

    def elapsed_bound(self, n: int) -> float:
        return remaining_suspicion_s(n, self.k, 0.0, self.low, self.high)


@dataclass
class Member:
    """What we know of one member."""

    id: str
    addr: str
    inc: int
    state: State
    since: float  # local time of the last state change
    alive: Body | None = None  # its signed ALIVE update (relayed and synced as is)
    report: Body | None = None  # its signed report (the update, relayed as is)
    report_ver: tuple[int, int] = (-1, -1)
    suspicion: Suspicion | None = None
    probed: bool = False  # it answered a probe of ours (else held from gossip alone)


@dataclass
class Probe:
    """An outstanding probe of ours (direct, then indirect)."""

    target: str
    seq: int
    direct_deadline: float
    deadline: float
    expected_nacks: int = 0
    nacks: int = 0
    indirect: bool = False
    helpers: tuple[str, ...] = ()  # the members asked to probe it (their ACKs count too)
    nacked: set[str] = field(default_factory=set)  # the helpers whose NACK was counted


@dataclass
class Relay:
    """A ping we send for another member's PING_REQ: answer it with its own seq."""

    addr: str
    seq: int
    deadline: float
    target: str = ""  # the member pinged: only its own ACK is relayed


@dataclass
class SwimStats:
    probes: int = 0
    acks: int = 0
    indirect: int = 0
    suspicions_raised: int = 0  # by this member's own probes
    refutations: int = 0
    deaths: int = 0
    dropped_updates: int = 0  # refused: bad signature, unknown claimant, malformed
    push_pulls: int = 0  # table hashes sent
    tables_sent: int = 0  # tables sent back: a hash differed from ours
    # tables and join syncs not answered: a per-period cap was reached (a flood, or forged
    # reply-to addresses, may starve honest askers until the next period); and PING_REQs
    # not relayed: MAX_RELAYS were outstanding
    unanswered: int = 0
    # ACKs of our probes (or relays) from neither the member probed nor a helper we asked,
    # and NACKs from no helper asked (or its second): ignored (a revoked member answering
    # under another id must not stay alive; nobody talks our awareness down)
    foreign_acks: int = 0
    # updates dropped unchecked: MAX_BAD_SIGNATURES had failed in their frame (also counted
    # in dropped_updates)
    unverified: int = 0
    # updates dropped unread: past their frame's bound (MAX_FRAME_UPDATES, MAX_SYNC_UPDATES,
    # suspicions), or a SYNC's second of one kind about one member
    over_frame: int = 0
    # new members refused: MAX_UNPROBED held that never answered a probe of ours
    unprobed_refused: int = 0
    # signed alives refused: their address is held by another live member (also counted in
    # dropped_updates)
    addr_taken: int = 0
    # reports refused: longer than MAX_REPORT_BYTES (also counted in dropped_updates); and
    # updates dropped from our queue that no frame can carry (larger than the frame bound)
    large_reports: int = 0
    unsendable: int = 0
    # updates left out of a SYNC (a join sync, a push-pull's): they did not fit its frame
    sync_left_out: int = 0


class Swim:
    """This member's view of the mesh and its side of the protocol. `tick(now)` does what is
    due; `on_<kind>(sender, reply_to, body, now)` handles a received frame (malformed bodies
    raise KeyError/TypeError/ValueError for the receive path to count)."""

    def __init__(self, cfg: SwimConfig, me: str, inc: int, net: SwimNet, listener: Listener,
                 rng: random.Random, signer: Signer | None = None,
                 wall_ms: Callable[[], int] | None = None,
                 store: IncarnationStore | None = None,
                 max_frame_bytes: int = 16 << 20) -> None:
        self.cfg = cfg
        # the bytes of piggybacked updates one frame may carry (`piggyback`)
        self._room = max(1, max_frame_bytes - FRAME_SLACK)
        self._wall = wall_ms
        self.me = me
        self.addr = ""  # set by `bind`
        # above every incarnation an earlier start announced (`store`), as far as MAX_START_INC
        self.inc = inc if store is None else max(inc, min(store.floor(), MAX_START_INC))
        self._store = store
        self._bad_left = MAX_BAD_SIGNATURES  # signatures that may still fail in this frame
        self._suspects_left = MAX_FRAME_UPDATES  # suspicions that may still be read in it
        self._unprobed = 0  # members held that never answered a probe of ours
        self.stats = SwimStats()
        self.awareness = 0
        self.leaving = False
        self._net = net
        self._listener = listener
        self._rng = rng
        self._signer: Signer = signer or NoSigner()
        self._signed = signer is not None  # (without: any member may forge any update)
        self._members: dict[str, Member] = {}
        self._live: list[Member] | None = None  # cache of live(); reset on any state change
        self._suspects: set[str] = set()
        self._next_forget = 0.0
        self._by_addr: dict[str, str] = {}
        # addresses whose live holder another identity's signed alive claimed (refused):
        # they need proof of routability whatever the holder announces (`contested`)
        self._contested: dict[str, None] = {}
        self._queue: dict[str, list[Any]] = {}  # key -> [update, transmits, JSON bytes]
        self._order: list[str] = []  # the probe round's shuffled member ids
        self._pos = 0
        self._probes: dict[int, Probe] = {}
        self._relays: dict[int, Relay] = {}
        self._next_probe = 0.0
        self._next_gossip = 0.0
        self._next_reconnect = 0.0
        self._next_join = 0.0
        self._joins: set[str] = set()  # addresses to sync with until a live member is there
        self._seeds: set[str] = set()  # join addresses: pushed-pulled while nobody lives there
        # address -> the revoked member last there: no join sync nor push-pull goes there
        # until another, not revoked member's alive names it
        self._barred: dict[str, str] = {}
        # the last push-pull, and the part of a period to wait after it (random before the
        # first: the members' rounds are spread over the period, whatever N is by then)
        self._pp_last = 0.0
        self._told_at = -math.inf  # the last refutation of an unsigned claim ("u")
        self._pp_wait = 1.0
        # address -> until when its answer is awaited: those we sent a hash to (their table
        # is answered) and those we sent a table to (the members they want are answered)
        self._hashed_to: dict[str, float] = {}
        self._tabled_to: dict[str, float] = {}
        self._tables_left = MAX_TABLES  # in this push-pull period
        self._sync_answers: dict[str, tuple[float, int]] = {}  # reply-to -> (until, count)
        # of those: address -> (the unknown member that probed from it, when we stop syncing
        # with it, when it may ask again): a prober whose alive is refused costs ASK_SYNCS
        # syncs per forget_s, not one every join_retry_s for ever
        self._asked: dict[str, tuple[str, float, float]] = {}
        self._my_alive: Body | None = None
        self._my_report: Body | None = None
        self._report_ctr = 0
        self._report_info: bytes | None = None
        self._report_due = 0.0
        self._pending_info: bytes | None = None

    # -- setup and queries -----------------------------------------------------------
    def bind(self, addr: str, now: float) -> None:
        """Our address is known: announce ourselves alive and start probing."""
        self.addr = addr
        self._announce_alive()
        self._next_probe = now + self._rng.uniform(0, self.cfg.probe_interval_s)
        self._next_gossip = now
        self._next_reconnect = now + self.cfg.reconnect_s
        self._next_join = now
        self._pp_last, self._pp_wait = now, self._rng.random()

    def join(self, addrs: Iterable[str]) -> None:
        """Sync with these addresses (static peers) until a live member answers there; later,
        whenever nobody is alive there, push-pull with them now and then."""
        for a in addrs:
            if a and a != self.addr:
                if len(self._seeds) < MAX_SEEDS:
                    self._seeds.add(a)
                self._sync_with(a)

    def _sync_with(self, addr: str) -> None:
        self._joins.add(addr)
        self._next_join = 0.0

    def forget_addr(self, addr: str) -> None:
        self._joins.discard(addr)
        self._seeds.discard(addr)

    def revoke(self, mid: str, now: float) -> None:
        """`mid`'s identity was revoked (its REVOKE folded): its entry is dead now, not at its
        probe turn (every peer folds the REVOKE: nothing to disseminate), its updates leave
        our queue, and its address gets no join sync nor push-pull any more."""
        m = self._members.get(mid)
        if m is None:
            return
        for key in (f"m{mid}", f"r{mid}"):
            self._queue.pop(key, None)
        if m.addr:
            self._bar(m.addr, mid)
        if m.state in (State.ALIVE, State.SUSPECT):
            log.info("swim: member %s revoked: dead", m.id[:16])
            self._set_state(m, State.DEAD, now)

    def heard_revoked(self, mid: str, addr: str, updates: Any) -> None:
        """A frame of the revoked `mid` (dropped at the door) from `addr`: if we sync with
        `addr` (a join address) and the frame holds `mid`'s own alive at `addr`, validly
        signed, `addr` is barred as `revoke` bars a held member's address. (A revoked member
        we never held an entry of, its alive refused, was synced every join_retry_s for
        ever.) At most one signature checked per frame, only while `addr` is synced."""
        if addr in self._barred or (addr not in self._joins and addr not in self._seeds) \
                or not isinstance(updates, list):
            return
        for u in updates[:MAX_FRAME_UPDATES]:
            if isinstance(u, dict) and u.get("t") == "a" and u.get("i") == mid:
                a, inc = u.get("a"), u.get("n")
                if not (isinstance(a, str) and type(inc) is int and 0 <= inc <= MAX_INC):
                    return
                try:
                    same = canonical_addr(a) == addr
                    ok = same and self._signer.signed_by(Sig.ALIVE, mid, a, inc, 0, b"", u)
                except (KeyError, TypeError, ValueError):  # (a malformed proof)
                    return
                if ok:
                    log.info("swim: the revoked %s answers at %s: not synced any more",
                             mid[:16], addr)
                    self._bar(addr, mid)
                return

    def _bar(self, addr: str, mid: str) -> None:
        if addr in self._barred or len(self._barred) < MAX_SEEDS:
            self._barred[addr] = mid
        self._joins.discard(addr)

    @property
    def members(self) -> Mapping[str, Member]:
        return self._members

    def member_at(self, addr: str) -> Member | None:
        mid = self._by_addr.get(addr)
        return None if mid is None else self._members.get(mid)

    def contested(self, addr: str) -> bool:
        """Whether another identity's signed alive claimed `addr` while a live member held
        it (refused; until a new holder takes it)."""
        return addr in self._contested

    def _held_by_other(self, addr: str, mid: str) -> bool:
        """Whether a live (alive or suspect) member other than `mid` holds `addr`: an
        address is not taken over until its holder is dead, left or revoked (first come keeps
        it, as memberlist refuses a conflicting address), so that an identity a member mints
        cannot take a live member's address (and what the address's holder announces). A
        refusal is counted and marks `addr` contested."""
        other = self._by_addr.get(addr)
        if other is None or other == mid:
            return False
        h = self._members.get(other)
        if h is None or h.state not in (State.ALIVE, State.SUSPECT):
            return False
        self.stats.addr_taken += 1
        self.stats.dropped_updates += 1
        if addr in self._contested or len(self._contested) < MAX_CONTESTED:
            self._contested[addr] = None
        return True

    def _take_addr(self, addr: str, mid: str) -> None:
        if self._by_addr.get(addr) != mid:
            self._contested.pop(addr, None)
        self._by_addr[addr] = mid

    def live(self) -> list[Member]:
        """Members alive or suspect (a suspect is still worked with). Do not modify."""
        if self._live is None:
            self._live = [m for m in self._members.values()
                          if m.state in (State.ALIVE, State.SUSPECT)]
        return self._live

    def n(self) -> int:
        """The estimated mesh size (ourselves included)."""
        return 1 + len(self.live())

    def scaled(self, t: float) -> float:
        return t * (self.awareness + 1)

    def _aware(self, delta: int) -> None:
        self.awareness = max(0, min(self.cfg.awareness_max - 1, self.awareness + delta))

    # -- our own updates -------------------------------------------------------------
    def _announce_alive(self) -> None:
        if self._store is not None:
            self._store.reserve(self.inc)  # (before it leaves: a restart starts above it)
        body = {"t": "a", "i": self.me, "a": self.addr, "n": self.inc}
        body.update(self._signer.sign(Sig.ALIVE, self.me, self.addr, self.inc, 0, b""))
        self._my_alive = body
        self._enqueue(f"m{self.me}", body)

    def refute(self, inc: int) -> None:
        """Someone holds us suspect (or dead) at `inc`: outbid it and say we are alive. With
        signed frames, no member holds us above our incarnation + 1 (`_suspect`): a claim
        beyond is ignored, so that each refutation raises ours by 2 at most and never past
        MAX_INC (it starts below MAX_START_INC: 2^61 refutations away). A restart starts
        above every incarnation announced before (the store's mark), else a member
        refuted more than 2^15 times in one run would be held above its next start and,
        unable to refute that, dead until forgotten. Without them,
        any member may forge anything, and a claim above is honest after a restart whose
        clock-made incarnation is below the one held of us (the wall clock stepped back):
        it is outbid, as before."""
        top = min(self.inc + 1, MAX_INC - 1) if self._signed else UNSIGNED_REFUTE_MAX
        if not self.inc <= inc <= top or self.leaving:
            return
        self.inc = inc + 1
        self.stats.refutations += 1
        self._aware(1)
        self._announce_alive()

    def _refute_told(self, inc: int, now: float) -> None:
        """An unsigned claim (a frame's "u") that someone holds us suspect at `inc`: refuted
        unless it is more than one above our incarnation, which no one can hold (a forged
        2^63 - 1 would put ours beyond what a frame may carry; one above: a signed suspicion
        we may have missed, see `_suspect`), and at most once per probe interval (each
        refutation is an alive every member hears: a stream of forged claims must not make
        one each)."""
        if inc <= self.inc + 1 and now >= self._told_at + self.cfg.probe_interval_s:
            self._told_at = now
            self.refute(inc)

    def set_report(self, info: bytes, now: float) -> None:
        """Our report (JSON of our load and runs): announced when it changes, at most every
        `report_min_s`."""
        if info == self._report_info or info == self._pending_info:
            return
        self._pending_info = info
        if now >= self._report_due:
            self._flush_report(now)

    def _flush_report(self, now: float) -> None:
        info = self._pending_info
        if info is None:
            return
        self._pending_info = None
        self._report_info = info
        self._report_ctr += 1
        body = {"t": "r", "i": self.me, "n": self.inc, "c": self._report_ctr, "d": info.decode()}
        body.update(self._signer.sign(Sig.REPORT, self.me, "", self.inc, self._report_ctr, info))
        self._my_report = body
        self._report_due = now + self.cfg.report_min_s
        self._enqueue(f"r{self.me}", body)

    def leave(self) -> list[str]:
        """Announce that we leave; returns the addresses the LEFT update was sent to."""
        self.leaving = True
        body = {"t": "l", "i": self.me, "n": self.inc}
        body.update(self._signer.sign(Sig.LEFT, self.me, "", self.inc, 0, b""))
        self._queue.clear()
        self._enqueue(f"m{self.me}", body)
        targets = [m.addr for m in self.live() if m.addr]
        for a in targets:
            self._net.send_swim(a, Msg.UPDATES, {"m": [body]})
        return targets

    # -- the broadcast queue ---------------------------------------------------------
    def _enqueue(self, key: str, update: Body) -> None:
        # (a newer update about the same thing replaces it; its size as the frame holds it,
        # with the comma before it)
        self._queue[key] = [update, 0, len(dumps(update)) + 1]

    def piggyback(self, limit: int = MAX_UPDATES_PER_FRAME, used: int = 0) -> list[Body]:
        """Updates to add to an outgoing frame whose other parts take `used` bytes: the least
        sent first, each counted, at most `limit` and as many as fit the frame bound (as
        memberlist fills by bytes: an update that does not fit is left for a later frame, and
        never makes its frame unsendable, review r2 of session 48, M3). One that no frame can
        carry leaves the queue (counted)."""
        if not self._queue:
            return []
        cap = retransmit_limit(self.cfg, self.n())
        q = self._queue
        room = self._room - used
        keys = (list(q) if len(q) <= 2 * limit
                else heapq.nsmallest(2 * limit, q, key=lambda k: q[k][1]))
        keys.sort(key=lambda k: q[k][1])
        out: list[Body] = []
        for k in keys:
            if len(out) >= limit:
                break
            entry = q[k]
            if entry[2] > self._room:
                del q[k]
                self.stats.unsendable += 1
                log.warning("swim: an update of %d bytes dropped: no frame can carry it",
                            entry[2])
                continue
            if entry[2] > room:
                continue
            room -= entry[2]
            entry[1] += 1
            out.append(entry[0])
            if entry[1] >= cap:
                del q[k]
        return out

    @property
    def queued(self) -> int:
        return len(self._queue)

    def drop_queue(self) -> None:
        """Forget every queued update (simulations seed a finished join this way)."""
        self._queue.clear()

    @property
    def report_update(self) -> Body | None:
        """Our own signed report (None before the first `set_report`)."""
        return self._my_report

    @property
    def alive_update(self) -> Body | None:
        """Our own signed ALIVE update (None before `bind`)."""
        return self._my_alive

    # -- the timer -------------------------------------------------------------------
    def tick(self, now: float) -> None:
        """Do whatever is due at `now`."""
        if self.leaving:
            return
        self._check_probes(now)
        self._check_suspicions(now)
        if now >= self._report_due and self._pending_info is not None:
            self._flush_report(now)
        if now >= self._next_probe:
            self._next_probe = now + self.scaled(self.cfg.probe_interval_s)
            self._probe(now)
        if now >= self._next_gossip:
            self._next_gossip = now + self.cfg.gossip_interval_s
            self._gossip()
        if now >= self._next_reconnect:
            self._next_reconnect = now + self.cfg.reconnect_s
            self._reconnect(now)
        if now >= self._next_join:
            self._next_join = now + self.cfg.join_retry_s
            self._sync_joins(now)
        # not in next_due: it rides on the probe's wake-ups
        if now >= self._pp_last + self._pp_wait * push_pull_interval_s(self.cfg, self.n()):
            self._pp_last, self._pp_wait = now, 1.0
            self._tables_left = MAX_TABLES
            self._push_pull(now)

    def next_due(self) -> float:
        """When `tick` next has something to do (the timer sleeps until then)."""
        due = [self._next_probe, self._next_reconnect]
        if self._queue:
            due.append(self._next_gossip)
        if self._joins:
            due.append(self._next_join)
        if self._pending_info is not None:
            due.append(self._report_due)
        due.extend(p.deadline if p.indirect else p.direct_deadline
                   for p in self._probes.values())
        due.extend(r.deadline for r in self._relays.values())
        due.extend(s.deadline() for mid in self._suspects
                   if (s := self._members[mid].suspicion) is not None)
        return min(due)

    def _next_target(self, now: float) -> Member | None:
        for _ in range(2):
            while self._pos < len(self._order):
                m = self._members.get(self._order[self._pos])
                self._pos += 1
                if m is None or m.state not in (State.ALIVE, State.SUSPECT) or not m.addr:
                    continue
                if self._signer.revoked(m.id):  # dead: nobody may answer for it
                    self.revoke(m.id, now)
                    continue
                return m
            self._order = [m.id for m in self.live()]
            self._rng.shuffle(self._order)
            self._pos = 0
        return None

    def _probe(self, now: float) -> None:
        m = self._next_target(now)
        if m is None:
            return
        seq = self._rng.getrandbits(SEQ_BITS)
        self._probes[seq] = Probe(m.id, seq, now + self.scaled(self.cfg.probe_timeout_s),
                                  now + self.scaled(self.cfg.probe_interval_s))
        self.stats.probes += 1
        self._send(m.addr, Msg.PING, self._ping_body(seq, m))

    def _ping_body(self, seq: int, m: Member) -> Body:
        body: Body = {"s": seq, "t": m.id}
        if m.state != State.ALIVE:
            body["u"] = m.inc  # tell it: it may refute
        return body

    def _send(self, addr: str, kind: Msg, body: Body) -> None:
        updates = self.piggyback(used=len(dumps(body)))
        if updates:
            body["m"] = [*body.get("m", ()), *updates]
        self._net.send_swim(addr, kind, body)

    def _check_probes(self, now: float) -> None:
        for seq, p in list(self._probes.items()):
            if not p.indirect and now >= p.direct_deadline:
                self._go_indirect(p)
            if p.indirect and now >= p.deadline:
                del self._probes[seq]
                self._probe_failed(p, now)
        for seq, r in list(self._relays.items()):
            if now >= r.deadline:
                del self._relays[seq]
                self._send(r.addr, Msg.NACK, {"s": r.seq})

    def _go_indirect(self, p: Probe) -> None:
        p.indirect = True
        target = self._members.get(p.target)
        if target is None:
            return
        live = self.live()
        k = self.cfg.indirect_checks
        pool = self._rng.sample(live, min(len(live), 2 * k + 1))
        helpers = [m for m in pool if m.state == State.ALIVE and m.id != p.target and m.addr][:k]
        p.expected_nacks = len(helpers)
        p.helpers = tuple(h.id for h in helpers)
        self.stats.indirect += 1
        for h in helpers:
            self._send(h.addr, Msg.PING_REQ, {"s": p.seq, "t": target.id, "a": target.addr})
        # and once more directly (memberlist's fallback ping): a lost frame is the usual cause
        self._send(target.addr, Msg.PING, self._ping_body(p.seq, target))

    def _probe_failed(self, p: Probe, now: float) -> None:
        if p.expected_nacks > 0:
            self._aware(max(0, p.expected_nacks - p.nacks))
        else:
            self._aware(1)
        m = self._members.get(p.target)
        if m is None or m.state not in (State.ALIVE, State.SUSPECT):
            return
        self.stats.suspicions_raised += m.state == State.ALIVE
        self._suspect(m, m.inc, self.me, now)

    def _check_suspicions(self, now: float) -> None:
        for mid in list(self._suspects):
            m = self._members[mid]
            s = m.suspicion
            if s is not None and now >= s.deadline():
                self.stats.deaths += 1
                log.info("swim: member %s dead (suspected %.1f s, %d confirmations)",
                         m.id[:16], now - s.start, len(s.confirmations) - 1)
                self._set_state(m, State.DEAD, now)
        if now < self._next_forget:
            return
        self._next_forget = now + self.cfg.reconnect_s
        dead = [m for m in self._members.values()
                if m.state in (State.DEAD, State.LEFT) and now - m.since > self.cfg.forget_s]
        for m in dead:
            del self._members[m.id]
            self._unprobed -= not m.probed
            if self._by_addr.get(m.addr) == m.id:
                del self._by_addr[m.addr]
            self._listener.member_forgotten(m)

    def _gossip(self) -> None:
        if not self._queue:
            return
        live = self.live()
        for m in self._rng.sample(live, min(len(live), self.cfg.gossip_nodes)):
            updates = self.piggyback()
            if not updates:
                return
            self._net.send_swim(m.addr, Msg.UPDATES, {"m": updates})

    def _reconnect(self, now: float) -> None:
        """Ping one dead member (not one that left): after a partition, it refutes."""
        dead = [m for m in self._members.values() if m.state == State.DEAD and m.addr
                and not self._signer.revoked(m.id)]
        if dead:
            m = self._rng.choice(dead)
            self._send(m.addr, Msg.PING, {"s": self._rng.getrandbits(SEQ_BITS), "t": m.id,
                                          "u": m.inc})

    def _sync_joins(self, now: float) -> None:
        for a, (mid, stop, forget) in list(self._asked.items()):
            if mid in self._members or now >= stop:  # its alive came (any address), or never
                self._joins.discard(a)
            if mid in self._members or now >= forget:
                del self._asked[a]
        for a in sorted(self._joins):
            m = self.member_at(a)
            if a in self._barred:  # a revoked member's (a later join: still barred)
                self._joins.discard(a)
            elif m is None or m.state != State.ALIVE:
                self._net.send_swim(a, Msg.SYNC, self.sync_body(reply=True))

    # -- push-pull -------------------------------------------------------------------
    def table(self) -> dict[str, int]:
        """Member -> incarnation of every live member we hold a signed alive of, and us."""
        out = {m.id: m.inc for m in self.live() if m.alive is not None and m.addr}
        if self._my_alive is not None:
            out[self.me] = self.inc
        return out

    def table_hash(self) -> str:
        """A short hash of `table()`: equal on members that see the same live mesh."""
        return hashlib.sha256(dumps(sorted(self.table().items()))).hexdigest()[:32]

    def _pp_period(self) -> float:
        return push_pull_interval_s(self.cfg, self.n())

    def _push_pull(self, now: float) -> None:
        """Our table's hash to one random alive member, and to one join address where no
        member is alive (a long partition: both sides forgot each other)."""
        alive = [m for m in self.live() if m.state == State.ALIVE and m.addr]
        silent = sorted(a for a in self._seeds if a not in self._barred
                        and ((m := self.member_at(a)) is None or m.state != State.ALIVE))
        targets = [self._rng.choice(alive).addr] if alive else []
        if silent:
            targets.append(self._rng.choice(silent))
        if targets:
            body = {"m": [], "h": self.table_hash()}
            for a in targets:
                if _await(self._hashed_to, a, now, now + self._pp_period()):
                    self.stats.push_pulls += 1
                    self._net.send_swim(a, Msg.SYNC, body)

    def _updates_of(self, ids: Iterable[str], used: int = 0) -> list[Body]:
        """The signed alive and report of each of these members we hold live (or us), as many
        as fit one frame besides `used` bytes of its body (`_fitting`)."""
        ups: list[Body] = []
        for mid in ids:
            if mid == self.me:
                alive, report = self._my_alive, self._my_report
            else:
                m = self._members.get(mid)
                if m is None or m.state not in (State.ALIVE, State.SUSPECT):
                    continue
                alive, report = m.alive, m.report
            if alive is not None:
                ups.append(alive)
                if report is not None:
                    ups.append(report)
        return self._fitting(ups, used)

    def _fitting(self, ups: list[Body], used: int = 0) -> list[Body]:
        """Of `ups`, in order, those that fit one frame (SYNC's updates; the room
        `piggyback` fills, less our own alive and report's worth for the rest of the body): a
        mesh whose reports sum past the frame bound got no join sync at all, its frame not
        sent. What is left out (counted) comes by gossip and later push-pulls. `used`: what
        the rest of the frame's body takes."""
        room = self._room - used
        out: list[Body] = []
        for u in ups:
            n = len(dumps(u)) + 1
            if n <= room:
                room -= n
                out.append(u)
            else:
                self.stats.sync_left_out += 1
        return out

    def _on_push_pull(self, sender: str, reply_to: str, body: Mapping[str, Any],
                      now: float) -> None:
        """The push-pull keys of a SYNC (wire.py): a hash ("h") answered by our table when it
        differs; a table ("d") answered by the updates it lacks and the members we lack ("w"),
        which are answered by theirs. Only the answers to what we sent are answered (see the
        module's doc: the reply-to address may be forged). These keys are all checked before
        any of them is acted on (the frame's "m" and "r" were handled before, by on_sync)."""
        u, h, d, w, t = (body.get(k) for k in ("u", "h", "d", "w", "t"))
        inc = None if u is None else _int(u)
        h = None if h is None else parse_table_hash(h)
        theirs = None if d is None else parse_table(d, MAX_TABLE_ROWS)
        wanted = None if w is None else parse_member_ids(w, MAX_PUSHED)
        if h is not None and (d is not None or w is not None):
            raise ValueError("a push-pull hash with a table or members")
        if t is not None and (t is not True or theirs is None):
            raise ValueError("bad truncation flag")
        if inc is not None:  # it holds us suspect or dead: refute (as an ACK's "u")
            self._refute_told(inc, now)
        if not reply_to:
            return
        if h is not None and h != self.table_hash():
            self._send_table(sender, reply_to, now)
        if theirs is not None and _answered(self._hashed_to, reply_to, now):
            self._answer_table(reply_to, theirs, truncated=t is True)
        if wanted and _answered(self._tabled_to, reply_to, now):
            ups = self._updates_of(wanted)
            if ups:
                self._net.send_swim(reply_to, Msg.SYNC, {"m": ups})

    def _send_table(self, sender: str, reply_to: str, now: float) -> None:
        """Our table, for a hash that differs from ours (MAX_TABLES per period)."""
        if self._tables_left <= 0:
            self.stats.unanswered += 1
            return
        if not _await(self._tabled_to, reply_to, now, now + self._pp_period()):
            return
        self._tables_left -= 1
        rows = sorted([k, v] for k, v in self.table().items())
        reply: Body = {"m": [], "d": rows[:MAX_TABLE_ROWS]}
        if len(rows) > MAX_TABLE_ROWS:
            reply["t"] = True
        m = self._members.get(sender)
        if m is not None and m.state not in (State.ALIVE, State.LEFT):
            reply["u"] = m.inc
        self.stats.tables_sent += 1
        self._net.send_swim(reply_to, Msg.SYNC, reply)

    def _answer_table(self, reply_to: str, theirs: dict[str, int], *, truncated: bool) -> None:
        """The updates a table lacks, and the members we lack. A truncated table lists the
        members up to its last one: those beyond may well be there."""
        mine = self.table()
        last = max(theirs) if truncated and theirs else None
        push = [mid for mid, n in sorted(mine.items()) if theirs.get(mid, -1) < n
                and (last is None or mid <= last)]
        want = [mid for mid, n in sorted(theirs.items()) if mid != self.me
                and ((m := self._members.get(mid)) is None or m.inc < n)]
        if push or want:
            want = want[:MAX_PUSHED]
            self._net.send_swim(reply_to, Msg.SYNC, {
                "m": self._updates_of(push[:MAX_PUSHED], used=len(dumps(want))),
                "w": want})

    def _answer_sync(self, reply_to: str, now: float) -> bool:
        """Whether a join sync ("r") from this address is answered: MAX_SYNC_ANSWERS per
        push-pull period (a forged reply-to gets that much of our table, not a stream)."""
        until, count = self._sync_answers.get(reply_to, (0.0, 0))
        if now >= until:
            if not _room(self._sync_answers, reply_to, now, MAX_SYNC_PEERS, lambda v: v[0]):
                self.stats.unanswered += 1
                return False
            until, count = now + self._pp_period(), 0
        if count >= MAX_SYNC_ANSWERS:
            self.stats.unanswered += 1
            return False
        self._sync_answers[reply_to] = (until, count + 1)
        return True

    def sync_body(self, *, reply: bool) -> Body:
        """Everything we know worth telling a newcomer: every member's signed alive (or left)
        and report, ourselves included."""
        ups: list[Body] = []
        if self._my_alive is not None:
            ups.append(self._my_alive)
        if self._my_report is not None:
            ups.append(self._my_report)
        for m in self._members.values():
            if m.state in (State.ALIVE, State.SUSPECT) and m.alive is not None:
                ups.append(m.alive)
                if m.report is not None:
                    ups.append(m.report)
        return {"m": self._fitting(ups), "r": reply}

    # -- receiving -------------------------------------------------------------------
    def on_ping(self, sender: str, reply_to: str, body: Mapping[str, Any], now: float) -> None:
        self.apply_updates(body.get("m", []), now)
        seq, target = _int(body["s"]), body.get("t")
        if target != self.me:
            return  # meant for someone who used to be at this address
        if (sender not in self._members and sender != self.me and reply_to
                and reply_to not in self._asked and reply_to not in self._joins
                and len(self._asked) < MAX_ASKED):
            stop = now + ASK_SYNCS * self.cfg.join_retry_s
            self._asked[reply_to] = (sender, stop, now + self.cfg.forget_s)
            self._sync_with(reply_to)  # it knows us, we never got its alive: sync with it
        ack: Body = {"s": seq}
        u = body.get("u")
        if u is not None:  # the prober holds us suspect or dead: refute, and tell it directly
            self._refute_told(_int(u), now)
            if self._my_alive is not None:
                ack["m"] = [self._my_alive]
        if self._wall is not None:
            ack["w"] = self._wall()
        m = self._members.get(sender)
        if m is not None and m.state not in (State.ALIVE, State.LEFT):
            ack["u"] = m.inc  # we hold the prober suspect or dead: it may refute
        if reply_to:
            self._send(reply_to, Msg.ACK, ack)

    def on_ack(self, sender: str, reply_to: str, body: Mapping[str, Any], now: float) -> None:
        """An ACK counts only from whom it is expected: the member probed (the frame's sender
        id, which the receive path refuses for a revoked member), or a helper we asked to
        probe it. A revoked member answering its probes under another id is then never
        answered for."""
        self.apply_updates(body.get("m", []), now)
        seq = _int(body["s"])
        u = body.get("u")
        if u is not None:
            self._refute_told(_int(u), now)
        r = self._relays.get(seq)
        if r is not None:
            if sender != r.target:
                self.stats.foreign_acks += 1
                return
            del self._relays[seq]
            self._send(r.addr, Msg.ACK, {"s": r.seq})
            return
        p = self._probes.get(seq)
        if p is not None:
            if sender != p.target and not (p.indirect and sender in p.helpers):
                self.stats.foreign_acks += 1
                return
            del self._probes[seq]
            self.stats.acks += 1
            self._aware(-1)
            m = self._members.get(p.target)
            if m is not None and not m.probed:
                m.probed = True
                self._unprobed -= 1
            w = body.get("w")
            if m is not None and m.id == sender and type(w) is int:
                self._listener.member_wall(m, w)

    def on_ping_req(self, sender: str, reply_to: str, body: Mapping[str, Any],
                    now: float) -> None:
        self.apply_updates(body.get("m", []), now)
        seq, target, addr = _int(body["s"]), body["t"], body["a"]
        if not isinstance(target, str) or not isinstance(addr, str) or not reply_to:
            raise ValueError("bad ping-req")
        # A member we know, pinged at the address we know for it ("a" is the prober's view:
        # a frame may name any address, and each one new to the transport takes a
        # connection); at most MAX_RELAYS at once (each is walked by `next_due`).
        m = self._members.get(target)
        known = m is not None and bool(m.addr) and m.state != State.LEFT
        if m is None or not known or len(self._relays) >= MAX_RELAYS:
            # Not relayed: a NACK at once, so that the prober (Lifeguard) does not count a
            # missing one against itself; only to a member we know, at its known address.
            self.stats.unanswered += known
            asker = self._members.get(sender)
            if asker is not None and asker.addr == reply_to and asker.state != State.LEFT:
                self._send(reply_to, Msg.NACK, {"s": seq})
            return
        own = self._rng.getrandbits(SEQ_BITS)
        self._relays[own] = Relay(reply_to, seq, now + self.scaled(self.cfg.probe_timeout_s),
                                  target)
        ping: Body = {"s": own, "t": target}
        if m.state != State.ALIVE:
            ping["u"] = m.inc
        self._send(m.addr, Msg.PING, ping)

    def on_nack(self, sender: str, reply_to: str, body: Mapping[str, Any], now: float) -> None:
        """A NACK counts (Lifeguard: the helper got nothing either, so the miss is not ours)
        only from a helper we asked to probe that target, once per helper; others are
        counted as foreign (a member must not talk our awareness down for its probe)."""
        self.apply_updates(body.get("m", []), now)
        p = self._probes.get(_int(body["s"]))
        if p is None:
            return
        if not p.indirect or sender not in p.helpers or sender in p.nacked:
            self.stats.foreign_acks += 1
            return
        p.nacked.add(sender)
        p.nacks += 1

    def on_updates(self, sender: str, reply_to: str, body: Mapping[str, Any],
                   now: float) -> None:
        self.apply_updates(body.get("m", []), now)

    def on_sync(self, sender: str, reply_to: str, body: Mapping[str, Any], now: float) -> None:
        self.apply_updates(body.get("m", []), now, relay=False, sync=True)
        if body.get("r") and reply_to and self._answer_sync(reply_to, now):
            self._net.send_swim(reply_to, Msg.SYNC, self.sync_body(reply=False))
        self._on_push_pull(sender, reply_to, body, now)

    def apply_updates(self, updates: Any, now: float, *, relay: bool = True,
                      sync: bool = False) -> None:
        """Apply a frame's updates (each checked alone: a bad one is counted, not fatal): the
        first MAX_FRAME_UPDATES (a SYNC's: MAX_SYNC_UPDATES, each member once per kind), the
        rest dropped unread and counted. Validly signed updates cost a verify each: a member
        packing thousands in a frame (its own, repeated, or of identities it minted) must not
        make every peer verify and store them all."""
        if not isinstance(updates, list):
            raise ValueError("updates is not a list")
        cap = MAX_SYNC_UPDATES if sync else MAX_FRAME_UPDATES
        if len(updates) > cap:
            self._over_frame(len(updates) - cap)
            updates = updates[:cap]
        self._bad_left = MAX_BAD_SIGNATURES
        self._suspects_left = MAX_FRAME_UPDATES
        seen: set[tuple[Any, Any]] = set()
        for u in updates:
            try:
                if sync and isinstance(u, dict):
                    key = (u.get("t"), u.get("i"))
                    if key in seen:  # (hashable: a list raises TypeError, counted below)
                        self._over_frame(1)
                        continue
                    seen.add(key)
                self._apply(u, now, relay)
            except (KeyError, TypeError, ValueError):
                self.stats.dropped_updates += 1

    def _over_frame(self, n: int) -> None:
        self.stats.over_frame += n
        self.stats.dropped_updates += n

    def _apply(self, u: Any, now: float, relay: bool) -> None:
        if not isinstance(u, dict):
            raise TypeError("update is not an object")
        t, mid = u["t"], parse_member_id(u["i"])
        inc = _int(u["n"])
        if t == "a":
            self._on_alive(u, mid, inc, now, relay)
        elif t == "s":
            if self._suspects_left <= 0:  # (an honest frame: 25 at most, a SYNC none)
                self._over_frame(1)
                return
            self._suspects_left -= 1
            self._on_suspect(u, mid, inc, now)
        elif t == "l":
            self._on_left(u, mid, inc, now)
        elif t == "r":
            self._on_report(u, mid, inc, now, relay)
        else:
            raise ValueError(f"unknown update {t!r:.10}")

    def _checked(self, domain: Sig, signer: str, addr: str, inc: int, ctr: int, body: bytes,
                 u: Mapping[str, Any]) -> bool:
        """Whether the update's signature holds. Once MAX_BAD_SIGNATURES failed in the frame,
        the rest of its updates are dropped unchecked: a frame of forged signatures costs
        that many verifications, not one per update it packs."""
        if self._bad_left <= 0:
            self.stats.dropped_updates += 1
            self.stats.unverified += 1
            return False
        why = self._signer.check(domain, signer, addr, inc, ctr, body, u)
        if why == BAD_SIGNATURE and self_certifying(signer):  # (a 0.1.0 id's key is the
            self._bad_left -= 1  # first heard: two honest peers may hold different ones)
        if why is not None:
            self.stats.dropped_updates += 1
            log.debug("swim: update %s of %s refused: %s", domain.name, signer[:16], why)
        return why is None

    def _on_alive(self, u: Body, mid: str, inc: int, now: float, relay: bool) -> None:
        addr = u["a"]
        if not isinstance(addr, str) or not addr:
            raise ValueError("bad address")
        if mid == self.me:
            return
        m = self._members.get(mid)
        if m is not None and inc <= m.inc and not (m.alive is None and m.state == State.ALIVE):
            return  # stale (also every replay of an older alive)
        if m is None and not self._room_unprobed():
            return
        if not self._checked(Sig.ALIVE, mid, addr, inc, 0, b"", u):
            return
        addr = canonical_addr(addr)  # (signed as sent; held in its one spelling)
        if self._held_by_other(addr, mid):
            return
        self._joins.discard(addr)
        if self._barred.get(addr, mid) != mid:  # another member there now: synced again
            del self._barred[addr]
        if m is None:
            m = self._members[mid] = Member(mid, addr, inc, State.ALIVE, now, alive=u)
            self._unprobed += 1
            self._take_addr(addr, mid)
            self._live = None
            self._listener.member_changed(m, None)
        else:
            if m.addr != addr:
                if self._by_addr.get(m.addr) == mid:
                    del self._by_addr[m.addr]
                m.addr = addr
            self._take_addr(addr, mid)
            m.inc, m.alive, m.suspicion = inc, u, None
            self._set_state(m, State.ALIVE, now, force=True)
        if relay:
            self._enqueue(f"m{mid}", u)

    def _on_suspect(self, u: Body, mid: str, inc: int, now: float) -> None:
        claimant = u["f"]
        if not isinstance(claimant, str):
            raise ValueError("bad claimant")
        if mid == self.me:
            if self._signed and inc > self.inc + 1:  # nobody can hold us there
                # (`_suspect`): refused (unsigned, see `refute`)
                self.stats.dropped_updates += 1
            elif self._checked(Sig.SUSPECT, claimant, "", inc, 0, mid.encode(), u):
                self.refute(inc)
            return
        m = self._members.get(mid)
        if m is None or m.state in (State.DEAD, State.LEFT) or inc < m.inc:
            return
        if m.state == State.SUSPECT and (m.suspicion is None
                                         or claimant in m.suspicion.confirmations):
            return
        if claimant == self.me or not self._checked(Sig.SUSPECT, claimant, "", inc, 0,
                                                     mid.encode(), u):
            return
        self._suspect(m, inc, claimant, now, update=u)

    def _suspect(self, m: Member, inc: int, claimant: str, now: float,
                 update: Body | None = None) -> None:
        """`claimant` suspects `m` at `inc`: at the incarnation we hold, or one above (as in
        memberlist, the claimant may have heard a refutation we missed). Further above, the
        suspicion is refused (counted): an honest claimant suspects at the incarnation of the
        last alive it heard, and if we lack that alive, its gossip and the push-pull bring it
        while our own probes keep judging `m`. Without this bound a member's signed suspicion
        at MAX_INC would be adopted by all and its victim's refutation (MAX_INC + 1) refused
        by all: dead for good. With it, nobody holds `m` above its own incarnation + 1 (we
        adopt only from an alive `m` signed; a suspect's incarnation is not raised again),
        which `refute` outbids."""
        if inc > m.inc + 1:
            self.stats.dropped_updates += 1
            return
        if m.state == State.SUSPECT and m.suspicion is not None:
            if claimant in m.suspicion.confirmations:
                return
            m.suspicion.confirmations.add(claimant)
        else:
            n = self.n()
            low, high = suspicion_bounds_s(self.cfg, n)
            k = int(self.cfg.suspicion_mult) - 2
            if n - 2 < k:
                k = 0
            m.inc = inc
            m.suspicion = Suspicion(now, k, low, high, {claimant})
            self._set_state(m, State.SUSPECT, now)
        if update is None:
            update = {"t": "s", "i": m.id, "n": inc, "f": self.me}
            update.update(self._signer.sign(Sig.SUSPECT, self.me, "", inc, 0, m.id.encode()))
        self._enqueue(f"s{m.id}/{claimant}", update)

    def _on_left(self, u: Body, mid: str, inc: int, now: float) -> None:
        if mid == self.me:
            return
        m = self._members.get(mid)
        if m is not None and (m.state == State.LEFT or inc < m.inc):
            return
        if m is None and not self._room_unprobed():
            return
        if not self._checked(Sig.LEFT, mid, "", inc, 0, b"", u):
            return
        if m is None:
            m = self._members[mid] = Member(mid, "", inc, State.LEFT, now)
            self._unprobed += 1
            return  # a stranger's leave: remembered, so that its stale alive is refused
        m.inc = inc
        self._set_state(m, State.LEFT, now)
        self._enqueue(f"m{mid}", u)

    def _room_unprobed(self) -> bool:
        """Whether a new member may be held: fewer than MAX_UNPROBED never answered a probe of
        ours (else a member could make every peer hold any number of identities it mints)."""
        if self._unprobed < MAX_UNPROBED:
            return True
        self.stats.unprobed_refused += 1
        self.stats.dropped_updates += 1
        return False

    def _on_report(self, u: Body, mid: str, inc: int, now: float, relay: bool) -> None:
        if mid == self.me:
            return
        ctr, data = _int(u["c"]), u["d"]
        if not isinstance(data, str):
            raise ValueError("bad report")
        m = self._members.get(mid)
        if m is None or (inc, ctr) <= m.report_ver or m.state == State.LEFT:
            return
        # (characters first: a string's bytes are at least as many)
        if len(data) > MAX_REPORT_BYTES or len(raw := data.encode()) > MAX_REPORT_BYTES:
            self.stats.large_reports += 1
            raise ValueError(f"report of more than {MAX_REPORT_BYTES} bytes")
        if not self._checked(Sig.REPORT, mid, "", inc, ctr, raw, u):
            return
        m.report, m.report_ver = u, (inc, ctr)
        self._listener.member_report(m)
        if relay:
            self._enqueue(f"r{mid}", u)

    def _set_state(self, m: Member, state: State, now: float, *, force: bool = False) -> None:
        before = m.state
        if before == state and not force:
            return
        m.state, m.since = state, now
        self._live = None
        if state == State.SUSPECT:
            self._suspects.add(m.id)
        else:
            self._suspects.discard(m.id)
            m.suspicion = None
        if before != state:
            log.info("swim: member %s %s -> %s", m.id[:16], before, state)
            self._listener.member_changed(m, before)


def _room(table: dict[str, Any], addr: str, now: float, cap: int,
          until: Callable[[Any], float]) -> bool:
    """Whether `addr` has, or now gets, a place in `table` (at most `cap` addresses; the
    entries whose `until` has passed make room)."""
    if addr in table or len(table) < cap:
        return True
    for a, v in list(table.items()):
        if now >= until(v):
            del table[a]
    return len(table) < cap


def _await(pending: dict[str, float], addr: str, now: float, until: float) -> bool:
    """Note that an answer from `addr` is awaited until `until` (False: too many awaited)."""
    if not _room(pending, addr, now, MAX_PP_PEERS, float):
        return False
    pending[addr] = until
    return True


def _answered(pending: dict[str, float], addr: str, now: float) -> bool:
    """Whether an answer from `addr` was awaited (once: it is no longer)."""
    until = pending.pop(addr, None)
    return until is not None and now < until


def _int(v: Any) -> int:
    if type(v) is not int or not 0 <= v <= MAX_INC:
        raise ValueError(f"not a non-negative integer: {v!r:.20}")
    return v


__all__ = ["BAD_SIGNATURE", "MAX_BAD_SIGNATURES", "MAX_REPORT_BYTES", "MAX_START_INC",
           "MAX_UPDATES_PER_FRAME",
           "IncarnationStore", "Member", "Msg", "NoSigner", "Sig", "Signer", "State", "Swim",
           "SwimConfig", "SwimNet", "SwimStats", "push_pull_interval_s",
           "remaining_suspicion_s", "retransmit_limit", "suspicion_bounds_s"]
