"""Gossip: replicate the event log between peers over a Transport (ZeroMQ or in-memory).

Algorithm. Every peer holds a set of immutable events, summarised by its version
vector `heads()` (origin -> highest contiguous seq held). Three flows keep replicas
equal:

1. Push (here). `broadcast(events)` sends new local events at once to every live peer
   when there are at most `fanout` of them, else to `fanout` random live peers
   with a hop budget (`push_hops`); a receiver forwards only the events that were
   new to it, so a rumour dies once everybody has it.
2. Anti-entropy (Scuttlebutt push-pull; antientropy.py). Every `anti_entropy_s` (jittered) a
   peer sends its version vector (DIGEST) to one random live peer. The receiver
   answers (DIGEST_REPLY) with the events the sender lacks, oldest first and at
   most `max_events_per_frame`, plus its own vector when the sender holds
   something it lacks; the sender then pushes those (EVENTS). A reply flagged
   `more` makes the sender pull again at once, so a restarted peer catches up in
   a burst of round trips rather than one frame per second. Lost frames are
   repaired by later rounds: the merge is idempotent and commutative, so
   duplicates and reordering are harmless. Beside the heads, digests of the contents
   held (peer.log.contents) expose two contents of one (origin, seq) on peers with equal
   heads; the blocks that differ are exchanged both ways and the conflict rule keeps the
   smaller content hash everywhere.
3. Membership: SWIM with Lifeguard (swim.py; view.py joins it to the rest). Each protocol
   period a peer probes one member, then asks `indirect_checks` others to probe it, then
   suspects it; suspicions time out into DEAD after a time scaled with log N unless the
   member refutes them; updates (alive, suspect, left, and each member's signed report of
   its load and runs, which renews its leases) ride on the probe traffic, each sent a
   bounded number of times. The version vector travels only in anti-entropy: a SWIM member
   gets a hash of it (DIGEST_SUM), and the full DIGEST only when the hashes differ. So the
   idle traffic per peer does not grow with the mesh. A periodic push-pull of membership
   tables (hash first, then rows, then the updates each side lacks; scaled with log2 N)
   repairs what the bounded retransmits missed and heals a partition both sides forgot.
   `close()` announces LEFT.
   Peers of the previous release (membership.py, `swim=None`): every `heartbeat_s` a
   HEARTBEAT (load, runs, version vector) to every known address; liveness judged on the
   local clock (alive until `suspect_after_s` without one, suspect until `dead_after_s`).
   A SWIM peer heartbeats exactly the peers it heard a HEARTBEAT from (view.py).

Admission. Over ZeroMQ every connection is CURVE with keys derived from the mesh secret
(keyring.py, transport.py): only holders of the secret complete a handshake, and frames are
encrypted and authenticated per connection. The HMAC tag below is then not used (see
docs/security.md); the in-memory transport of tests and simulations may still set one.
Heartbeats carry the key id a peer serves ("kid"), so that peers reach it with the keys of
that secret during a rotation.

Wire format (wire.py; all integers big-endian):
    b"BZ" | version u8 | kind u8 | flags u8 | mesh id, sender id, reply-to address
    (each u8 length + UTF-8) | JSON body | HMAC-SHA256 tag (32 bytes, when flags & 1)
A frame that is oversized, malformed, of another version, kind or mesh, or whose
tag fails is dropped, counted in `stats` and logged (rate-limited); nothing raised
while handling a frame escapes the receive path.

This module is the facade that composes them: lifecycle and timers, pushes, sending
(frames, batches, stats) and the receive path. Addresses are parsed in addr.py.

Concurrency: a Gossip and its sinks are owned by one event loop; every method is
non-blocking (sends are queued or dropped by the transport, never awaited).
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import math
import random
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from peer.errors import BanzaiError, ConfigError, StoreError
from peer.log import Event, JobEnded, JobMembers
from peer.log.flaps import Repeats
from peer.log.lanes import lane_of
from peer.log.signing import MeshAuth, membership_message
from peer.mesh.addr import WILDCARD_HOSTS, canonical_addr, format_addr, parse_addr
from peer.mesh.antientropy import (
    AntiEntropy,
    ContentSink,
    EventSink,
    FloorSink,
    HeadsSeen,
    LaneSink,
    PeerAt,
)
from peer.mesh.keyring import Keyring
from peer.mesh.membership import MAX_PEER_SAMPLE, Clock, Liveness, Membership, MemberSink
from peer.mesh.swim import (
    MAX_REPORT_BYTES,
    MAX_START_INC,
    IncarnationStore,
    Msg,
    Swim,
    SwimConfig,
)
from peer.mesh.transport import Transport, ZmqTransport
from peer.mesh.view import AuthSigner, MeshView, report_bytes
from peer.mesh.wire import (
    MAGIC,
    MAX_PAIR_JOBS,
    Blocks,
    Frame,
    FrameError,
    FrameWriter,
    Kind,
    Packed,
    Reply,
    decode_frame,
    dumps,
    encode_frame,
    events_body,
    pack_frames,
    parse_events,
    parse_info,
    reply_body,
)

log = logging.getLogger("banzai.gossip")
# The largest start counter (MeshAuth.incarnation: one more at each start, kept in the log
# file) that a peer may start with: its SWIM incarnation (the counter << 16, room for 2^16
# refutations a run) stays within MAX_START_INC. No peer starts 2^45 times: a larger one
# was edited (peer.node refuses it).
MAX_START_COUNT = MAX_START_INC >> 16
LEAVE_DRAIN_S = 0.1  # close() gives the transport this long to send our LEFT
SOFT_SLACK_S = 0.2  # a periodic chore runs this early (at most half its period) if woken
# The mesh events of a lanes job that its non-members get in a lazy push (`lazy_push_s`).
# Not its JOB_SUBMITTED: that makes the job visible (list, view, cancel) on every peer, so
# every peer gets it at once, as with lanes off: a GET on a non-member right after the POST
# to another peer finds the job (docs/design/partial-replication.md, section 6)
LAZY_BODIES = (JobMembers, JobEnded)


def next_soft(now: float, due: float, period_s: float) -> float | None:
    """A soft periodic timer due at `due`: None if it does not run at `now` (too early),
    else when it is next due: a period after this one was due, so that the cadence holds
    when it runs early, or a period from now when it runs late (then the next run could
    come within half a period: runs are never closer than that)."""
    slack = min(SOFT_SLACK_S, period_s / 2)
    if now + slack < due:
        return None
    nxt = due + period_s
    return nxt if nxt - slack >= now + period_s / 2 else now + period_s


def _within(name: str, value: float, most: float) -> None:
    """ValueError naming setting `name` unless `value` is in [0, `most`]."""
    if not 0 <= value <= most:
        raise ValueError(f"{name} must be in [0, {most}]")


@dataclass(frozen=True)
class GossipConfig:
    """Gossip settings; invalid values raise ValueError at construction."""

    bind: str = "127.0.0.1:0"  # HOST:PORT of the receiving socket; port 0 = any free port
    advertise_host: str | None = None  # host others reach us at (needed for a wildcard bind)
    mesh_id: str = "banzai"
    secret: bytes | None = None  # HMAC key; None = no tag (CURVE authenticates ZeroMQ frames)
    anti_entropy_s: float = 1.0
    heartbeat_s: float = 0.5
    fanout: int = 8  # push to all live peers up to this many, else to this many at random
    push_hops: int = 3  # hop budget of a partial push
    max_frame_bytes: int = 16 << 20
    max_events_per_frame: int = 512
    suspect_after_s: float = 2.0
    dead_after_s: float = 10.0
    jitter: float = 0.1  # fraction of anti_entropy_s randomised per round
    # SWIM membership; None: heartbeats to every peer, as the previous release
    swim: SwimConfig | None = field(default_factory=SwimConfig.lan)
    renew_s: float = 0.5  # live members' last reports are handed to the sink this often
    max_connections: int = 128  # ZeroMQ paths proven open at once (least recently used go)
    # ZeroMQ paths not yet proven (connecting, or leading nowhere: sightings, dead joins);
    # they never displace a proven one (transport.ZmqTransport)
    max_unproven_connections: int = 32
    # received frames held before they are handled (ZeroMQ; more are dropped, counted)
    max_queue_bytes: int = 64 << 20
    # anti-entropy answers only proven addresses (cookies, fixnonce-v1: antientropy.py);
    # False: as the previous release (mixed-version simulations; no lanes: `Gossip`)
    anti_entropy_nonces: bool = True
    # anti-entropy's cookie key is replaced this often; a cookie of the key before still
    # proves its address until the next replacement (so a cookie is good 1-2 periods)
    cookie_rotate_s: float = 3600.0
    # lanes (LANES_FEATURE): a live lanes peer that is no member of a lanes job gets the job's
    # JOB_MEMBERS and JOB_ENDED in one push this often, not one per flush (its members get
    # them at once, and every peer its JOB_SUBMITTED); 0: at once, as every other event
    lazy_push_s: float = 0.05

    def __post_init__(self) -> None:
        host, _ = parse_addr(self.bind)
        if host in WILDCARD_HOSTS and not self.advertise_host:
            raise ValueError("a wildcard bind needs advertise_host")
        for name in ("anti_entropy_s", "heartbeat_s", "suspect_after_s", "dead_after_s",
                     "renew_s", "cookie_rotate_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0")
        if self.suspect_after_s < self.heartbeat_s:
            raise ValueError("suspect_after_s must be >= heartbeat_s")
        if self.dead_after_s <= self.suspect_after_s:
            raise ValueError("dead_after_s must be > suspect_after_s")
        if self.fanout < 1 or self.push_hops < 0 or self.max_events_per_frame < 1:
            raise ValueError("fanout and max_events_per_frame must be >= 1, push_hops >= 0")
        if not 4096 <= self.max_frame_bytes <= min(1 << 30, self.max_queue_bytes):
            raise ValueError("max_frame_bytes must be in [4096, 1 GiB] and at most "
                             "max_queue_bytes")
        _within("jitter", self.jitter, 0.5)
        _within("lazy_push_s", self.lazy_push_s, 1)
        if not 0 < len(self.mesh_id.encode()) <= 255:
            raise ValueError("mesh_id must be 1..255 bytes")
        if self.secret is not None and len(self.secret) < 16:
            raise ValueError("secret must be at least 16 bytes")
        if self.max_connections < 1 or self.max_unproven_connections < 1:
            raise ValueError("max_connections and max_unproven_connections must be >= 1")

    @classmethod
    def lan(cls, **overrides: Any) -> GossipConfig:
        """Defaults for a lab LAN (tens of peers)."""
        return cls(**overrides)

    @classmethod
    def local(cls, **overrides: Any) -> GossipConfig:
        """Fast timings for tests on one machine."""
        base: dict[str, Any] = {"anti_entropy_s": 0.1, "heartbeat_s": 0.05,
                                "suspect_after_s": 0.3, "dead_after_s": 1.0,
                                "max_events_per_frame": 64, "swim": SwimConfig.local(),
                                "renew_s": 0.05}
        return cls(**{**base, **overrides})


def zmq_transport(cfg: GossipConfig, keyring: Keyring | None = None) -> ZmqTransport:
    """The production transport for `cfg`: CURVE with `keyring`'s keys when given."""
    return ZmqTransport(cfg.bind, max_frame_bytes=cfg.max_frame_bytes, keyring=keyring,
                        max_connections=cfg.max_connections,
                        max_unproven=cfg.max_unproven_connections,
                        max_queue_bytes=cfg.max_queue_bytes)


# -- bookkeeping ---------------------------------------------------------------------


@dataclass
class GossipStats:
    """Counters; `dropped_*` are frames refused, by reason."""

    frames_in: int = 0
    frames_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    send_failed: int = 0
    refused_handshakes: int = 0  # connections refused by CURVE/ZAP (no or another secret)
    dropped_bad_mac: int = 0
    dropped_bad_version: int = 0
    dropped_bad_kind: int = 0
    dropped_too_large: int = 0
    dropped_bad_frame: int = 0
    dropped_other_mesh: int = 0
    dropped_queue_full: int = 0  # received while max_queue_bytes (or frames) were held
    send_waited_dropped: int = 0  # sent frames that waited for a new connection in vain
    # membership messages refused by signature checks (peer.log.signing.MemberKeys)
    dropped_unsigned: int = 0
    dropped_bad_signature: int = 0
    dropped_replayed: int = 0
    dropped_revoked: int = 0
    dropped_not_admitted: int = 0
    dropped_key_conflict: int = 0
    dropped_addr_taken: int = 0  # heartbeats naming an address another live member holds
    events_in: int = 0
    events_new: int = 0
    events_out: int = 0
    events_unsendable: int = 0
    # events left out of frames: malformed (the door counts them by origin) or whose
    # signature did not verify (the keyring counts them by origin)
    events_refused: int = 0
    merge_errors: int = 0
    rounds: int = 0
    swim_dropped_updates: int = 0  # SWIM updates refused (signature, unknown key, malformed)
    swim_unanswered: int = 0  # push-pull tables and join syncs over their per-period caps
    swim_foreign_acks: int = 0  # ACKs from neither the member probed nor a helper asked
    swim_unverified: int = 0  # updates dropped unchecked after failed signatures in a frame
    swim_over_frame: int = 0  # updates dropped unread: past a frame's bound, or repeated
    swim_unprobed_refused: int = 0  # new members refused: too many held from gossip alone
    swim_addr_taken: int = 0  # alives refused: another live member holds their address
    swim_large_reports: int = 0  # reports refused: longer than swim.MAX_REPORT_BYTES
    swim_unsendable: int = 0  # updates no frame could carry (larger than max_frame_bytes)
    # anti-entropy frames that did not prove their reply-to address (a handshake at most),
    # and vectors not noted: not proven to come from their sender's address (signed)
    ae_unverified: int = 0
    ae_unbound: int = 0
    ae_floors_unread: int = 0  # DIGEST_REPLY "cf"s malformed or too long (ignored, in part)
    ae_sizes_unread: int = 0  # DIGEST_REPLY "bc"s malformed (ignored: blocks sent as before)
    # differing blocks not exchanged: the two sides' in-memory counts differ (compaction
    # out of phase, antientropy.AntiEntropy._send_fix)
    ae_out_of_phase: int = 0
    # differing blocks whose counts differ exchanged all the same: skipped with that peer for
    # antientropy.OUT_OF_PHASE_S (in-memory sets that differ for good)
    ae_out_of_phase_due: int = 0
    # full DIGESTs not answered: their address had MAX_DIGEST_ANSWERS answered in its window
    ae_throttled: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class _RateLimitedLog:
    """At most one warning per key per `every_s`, reporting how many were suppressed (the
    window rule of `Repeats`, which `Node._tell` uses too; one kind, no tracebacks)."""

    def __init__(self, clock: Clock, every_s: float = 10.0) -> None:
        self._clock = clock
        self._repeats = Repeats(window_s=every_s)

    def warn(self, key: str, msg: str, *args: object) -> None:
        said = self._repeats.note(key, "", self._clock())
        if said is not None:
            n = said[1]
            log.warning(msg + (f" ({n} similar suppressed)" if n else ""), *args)


# -- gossip --------------------------------------------------------------------------


class Gossip:
    """Replicates `sink` with the peers reachable through `transport`.

    `bind()` opens the transport (sync); `start()` also runs the timer task that
    calls `tick()`. Tests with a fake clock call `bind()` and drive `tick()`.
    """

    def __init__(self, cfg: GossipConfig, transport: Transport, sink: EventSink,
                 members: MemberSink, peer_id: str, clock: Clock = time.monotonic,
                 rng: random.Random | None = None, *,
                 local_info: Callable[[], Mapping[str, Any]] | None = None,
                 auth: MeshAuth | None = None,
                 incarnations: IncarnationStore | None = None,
                 lanes: LaneSink | None = None, pair_seen: HeadsSeen | None = None) -> None:
        if not 0 < len(peer_id.encode()) <= 255:
            raise ValueError("peer_id must be 1..255 bytes")
        if lanes is not None and (cfg.swim is None or not cfg.anti_entropy_nonces):
            raise ConfigError(
                "gossip: lanes (lanes-v1) need SWIM membership and anti-entropy nonces "
                "(fixnonce-v1): a pair round is answered only from the proven address SWIM "
                "holds for its sender; turn lanes off, or both of these on", field="gossip")
        self.cfg = cfg
        self.peer_id = peer_id
        self._stats = GossipStats()
        self._t = transport
        self._sink = sink
        self._clock = clock
        self._rng = rng if rng is not None else random.Random()
        self._local_info = local_info or dict
        self._secret = cfg.secret
        self.auth = auth  # None: events and heartbeats are neither signed nor checked
        # The lanes we hold (LANES_FEATURE): lane events are pushed to their job's members
        # only and pair rounds run beside the mesh round; None: lanes are off
        self._lanes = lanes
        self._pair_after = ""  # the last job a capped pair round named (`pair_round`)
        # address -> our events waiting for the next lazy push to it (`lazy_push`), oldest
        # first; any push to that address sends them first (its streams stay in order)
        self._lazy: dict[str, list[Event]] = {}
        self._next_lazy = math.inf
        self._membership = Membership(members, transport, clock, self._rng,
                                      suspect_after_s=cfg.suspect_after_s,
                                      dead_after_s=cfg.dead_after_s)
        self.view = MeshView(members, self._membership, transport.peer_key,
                             transport.disconnect)
        self._membership.forgotten = self.view.legacy_forgotten
        self._ae = AntiEntropy(sink, self, self,
                               max_events_per_frame=cfg.max_events_per_frame,
                               heads_seen=self.view.note_heads,
                               contents=sink if isinstance(sink, ContentSink) else None,
                               max_frame_bytes=cfg.max_frame_bytes,
                               nonces=cfg.anti_entropy_nonces, signed=auth is not None,
                               lanes=lanes, pair_seen=pair_seen, clock=clock,
                               period_s=cfg.anti_entropy_s,
                               floors=sink if isinstance(sink, FloorSink) else None)
        self.swim: Swim | None = None
        self._incarnations = incarnations
        if cfg.swim is not None:
            # An incarnation above every one of an earlier start (with auth: the persisted
            # start counter; without: the wall clock's milliseconds), room for 2^16
            # refutations each; and above `incarnations`' mark of the incarnations announced
            # (a run refuted more often than that: an insider's signed suspicions).
            start = auth.incarnation if auth is not None else int(time.time() * 1000)
            self.swim = self.view.swim = Swim(
                cfg.swim, peer_id, start << 16, self, self.view, self._rng,
                None if auth is None else AuthSigner(auth, cfg.mesh_id),
                wall_ms=lambda: int(time.time() * 1000), store=incarnations,
                max_frame_bytes=cfg.max_frame_bytes)
        self._writer: FrameWriter | None = None  # made by bind(), once our address is known
        self._address = ""
        self._next_hb = 0.0
        self._next_ae = 0.0
        self._next_renew = 0.0
        self._next_update = 0.0
        self._next_rotate = math.inf  # (from bind)
        self._wake = asyncio.Event()
        self._sleep_until = 0.0
        self._task: asyncio.Task[None] | None = None
        self._warn = _RateLimitedLog(clock)
        self._handlers: dict[Kind, Callable[[Frame], None]] = {
            Kind.HEARTBEAT: self._on_heartbeat, Kind.EVENTS: self._on_events,
            Kind.DIGEST: self._ae.on_digest, Kind.DIGEST_REPLY: self._ae.on_digest_reply,
            Kind.DIGEST_SUM: self._ae.on_digest_sum}
        for k in Msg:
            self._handlers[Kind(k.value)] = self._on_swim

    # -- lifecycle ---------------------------------------------------------------------
    @property
    def stats(self) -> GossipStats:
        """The counters, with the transport's refused handshakes."""
        self._stats.refused_handshakes = self._t.refused
        self._stats.dropped_queue_full = self._t.overflowed
        self._stats.send_waited_dropped = self._t.first_dropped
        self._stats.ae_unverified = self._ae.unverified
        self._stats.ae_unbound = self._ae.unbound
        self._stats.ae_floors_unread = self._ae.floors_unread
        self._stats.ae_sizes_unread = self._ae.sizes_unread
        self._stats.ae_out_of_phase = self._ae.out_of_phase
        self._stats.ae_out_of_phase_due = self._ae.out_of_phase_due
        self._stats.ae_throttled = self._ae.throttled
        if self.swim is not None:
            self._stats.swim_dropped_updates = self.swim.stats.dropped_updates
            self._stats.swim_unanswered = self.swim.stats.unanswered
            self._stats.swim_foreign_acks = self.swim.stats.foreign_acks
            self._stats.swim_unverified = self.swim.stats.unverified
            self._stats.swim_over_frame = self.swim.stats.over_frame
            self._stats.swim_unprobed_refused = self.swim.stats.unprobed_refused
            self._stats.swim_addr_taken = self.swim.stats.addr_taken
            self._stats.swim_large_reports = self.swim.stats.large_reports
            self._stats.swim_unsendable = self.swim.stats.unsendable
        return self._stats

    @property
    def address(self) -> str:
        """The address peers reach us at ("" before bind)."""
        return self._address

    @property
    def membership(self) -> Membership:
        """Who we know and how alive they are (read it; Gossip drives it)."""
        return self._membership

    def bind(self) -> str:
        """Open the transport; returns our advertised address. Idempotent."""
        if not self._address:
            bound = self._t.open(self._on_frame)
            host, port = parse_addr(bound)
            self._address = canonical_addr(format_addr(self.cfg.advertise_host or host, port))
            self._membership.self_addr = self._address
            self._writer = FrameWriter(self.cfg.mesh_id, self.peer_id, self._address,
                                       self._secret)
            now = self._clock()
            self._next_hb = now
            self._next_ae = now + self._rng.uniform(0, self.cfg.anti_entropy_s)
            self._next_rotate = now + self.cfg.cookie_rotate_s
            if self.swim is not None:
                self.swim.bind(self._address, now)
                self.swim.join(self._membership.static_addrs)
        return self._address

    async def start(self) -> None:
        """Bind and run the heartbeat / anti-entropy timer. The incarnation mark's first write
        (an fsync, before our first alive leaves) runs in a thread, not on the loop."""
        if not self._address and self.swim is not None and self._incarnations is not None:
            await asyncio.to_thread(self._incarnations.reserve, self.swim.inc)
        self.bind()
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        """Send what waits for a lazy push, announce that we leave (SWIM), stop the timer and
        close the transport."""
        self.lazy_push()
        if (self.swim is not None and self._address and not self.swim.leaving
                and self.swim.leave()):
            await asyncio.sleep(LEAVE_DRAIN_S)  # let the transport send it
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._t.close()

    async def __aenter__(self) -> Gossip:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def next_due(self) -> float:
        """When the loop's next round is due (the other chores ride on these wake-ups)."""
        due = min(self._next_hb, self._next_ae, self._next_lazy)
        if self.swim is not None:
            due = min(due, self.swim.next_due(), self._next_renew)
        return due

    async def _run(self) -> None:
        while True:
            try:
                self.tick()
            except Exception:  # a bug in one round must not stop gossip
                log.exception("gossip tick failed")
            delay = min(max(self.next_due() - self._clock(), 0.005), 1.0)
            self._sleep_until = self._clock() + delay
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wake.wait()  # set when a frame made something due sooner
            self._wake.clear()

    # -- public operations -------------------------------------------------------------
    def add_peer(self, addr: str) -> None:
        """Gossip with `addr` (from discovery or --join) until `remove_peer`; ValueError if
        it is no HOST:PORT."""
        addr = canonical_addr(addr)
        self._membership.add_static(addr)
        if self.swim is not None and addr != self._address:
            self.swim.join([addr])

    def remove_peer(self, addr: str) -> None:
        """Stop contacting `addr` (unless a live peer is heard there again)."""
        addr = canonical_addr(addr)
        self._membership.remove(addr)
        if self.swim is not None:
            self.swim.forget_addr(addr)

    def member_revoked(self, peer_id: str) -> None:
        """`peer_id` was revoked: its SWIM entry is dead now and its address is synced no
        more (its frames are refused at the door already: `auth.keyring`)."""
        if self.swim is not None:
            self.swim.revoke(peer_id, self._clock())

    def broadcast(self, events: Sequence[Event]) -> None:
        """Push new local events now to live peers (all, or `fanout` random ones); with lanes,
        a lane event only to the live members of its job (`_push_lanes`)."""
        if not events:
            return
        if self._lanes is None:
            self._push(list(events), self.cfg.push_hops, exclude=None)
        else:
            self._push_lanes(list(events))

    def _push_lanes(self, events: list[Event]) -> None:
        """Mesh events to live peers as `_push`, each lane event to the live peers that are
        members of its job (and announce LANES_FEATURE) directly (ttl 0). A member that the
        mesh events go to directly too gets both in one run of frames. A lanes peer gets the
        mesh events after the last one it may not wait for (`_lazy_cuts`) in the next lazy
        push instead (`lazy_push_s`; design, section 8, step 11)."""
        jobs = [_job_of(e) for e in events]
        lane_jobs = {j for j in jobs if j is not None}
        mesh = [e for e, j in zip(events, jobs, strict=True) if j is None]
        # address -> the jobs of these it shares
        members = self._lane_partners(lane_jobs) if lane_jobs else {}
        targets, ttl = self._push_targets(exclude=None)
        if ttl and mesh:
            self._send_now(targets, mesh, ttl=ttl)
        direct = set(targets) if not ttl else set()
        cuts = self._lazy_cuts(mesh) if direct else {}
        sends: dict[tuple[int, frozenset[str]], list[str]] = {}
        for addr in sorted(direct | members.keys()):
            now = cuts.get(addr, len(mesh)) if addr in direct else 0  # mesh events sent now
            sends.setdefault((now, frozenset(members.get(addr, ()))), []).append(addr)
        for (now, shared), addrs in sends.items():
            out, k = [], 0  # (k: the mesh events seen)
            for e, j in zip(events, jobs, strict=True):
                if j is None:
                    k += 1
                    if k <= now:
                        out.append(e)
                elif j in shared:
                    out.append(e)
            if out:
                self._send_now(addrs, out, ttl=0)
        for addr in sorted(direct):  # (after the sends: what waits goes after what went)
            now = cuts.get(addr, len(mesh))
            if now < len(mesh):
                self._defer(addr, mesh[now:])

    def _lazy_cuts(self, mesh: Sequence[Event]) -> dict[str, int]:
        """Address of each live lanes peer -> how many of `mesh` it gets now: up to the last
        one it may not wait for, the rest waiting for the next lazy push. It may wait for a
        lanes job's JOB_MEMBERS or JOB_ENDED (LAZY_BODIES) if no member of the job; an
        earlier event goes with a later one (our stream reaches it in order)."""
        assert self._lanes is not None
        if not mesh or self.cfg.lazy_push_s <= 0:
            return {}
        last = -1  # the last event every peer gets now
        of: list[Collection[str]] = []  # each event's job's members
        for i, e in enumerate(mesh):
            b = e.body
            m = self._lanes.job_members(b.job) if isinstance(b, LAZY_BODIES) else ()
            if not m:  # (none that may wait, or not a lanes job's: everybody, at once)
                last = i
            of.append(m)
        if last == len(mesh) - 1:
            return {}
        return {m.addr: 1 + max((i for i in range(last + 1, len(mesh)) if p in of[i]),
                                default=last)
                for p, m in self.view.lane_peers.items() if m.addr}

    def _defer(self, addr: str, events: list[Event]) -> None:
        """`events` wait for the next lazy push to `addr` (or any push to it before)."""
        self._lazy.setdefault(addr, []).extend(events)
        if self._next_lazy == math.inf:
            self._next_lazy = self._clock() + self.cfg.lazy_push_s
            if self._next_lazy < self._sleep_until:
                self._wake.set()

    def _send_now(self, addrs: Sequence[str], events: Sequence[Event], *, ttl: int) -> None:
        """`events` to each of `addrs` now, after what waits there for a lazy push (so that
        each of our streams reaches a peer in order: no gap held back by a lazy push)."""
        plain = [a for a in addrs if a not in self._lazy]
        if plain:
            self.send_events(plain, events, ttl=ttl)
        for a in addrs:
            if a in self._lazy:
                self.send_events([a], [*self._lazy.pop(a), *events], ttl=ttl)
        if not self._lazy:
            self._next_lazy = math.inf

    def lazy_push(self) -> None:
        """Send now what waits for a lazy push: each peer's in one run of frames (ttl 0)."""
        pending, self._lazy, self._next_lazy = self._lazy, {}, math.inf
        for addr, events in sorted(pending.items()):
            self.send_events([addr], events, ttl=0)

    def _lane_partners(self, jobs: Iterable[str]) -> dict[str, list[str]]:
        """Address -> the jobs of `jobs` we share with the live peer there, of the peers that
        announce LANES_FEATURE (`MeshView.lane_peers`) and share one at least (lanes on)."""
        assert self._lanes is not None
        jobs = list(jobs)
        out: dict[str, list[str]] = {}
        for peer, m in self.view.lane_peers.items():
            if not m.addr:
                continue
            shared = self._lanes.shared(jobs, peer)
            if shared:
                out[m.addr] = shared
        return out

    def live_peers(self) -> dict[str, dict[str, Any]]:
        """peer_id -> last report plus "gossip" address and "status" (alive/suspect)."""
        self._membership.update(self._clock())
        return self.view.live_peers()

    def left_peers(self) -> frozenset[str]:
        """Members that left gracefully (SIGTERM); `status` counts them as dead."""
        return self.view.left_ids()

    def status(self, peer_id: str) -> Liveness | None:
        """alive, suspect, dead (or left), or None if never heard."""
        self._membership.update(self._clock())
        return self.view.status(peer_id)

    def heads_of(self, peer_id: str) -> Mapping[str, int]:
        """The version vector `peer_id` last sent us (acknowledgements read it)."""
        return self.view.heads_of(peer_id)

    def tick(self) -> None:
        """Do whatever is due at the clock's current time. The periodic chores (heartbeat,
        anti-entropy, renewals) are soft timers: each runs on a wake-up up to SOFT_SLACK_S
        before it is due, so that an idle peer wakes for the probes, not for each chore."""
        now = self._clock()
        if (nxt := next_soft(now, self._next_hb, self.cfg.heartbeat_s)) is not None:
            self._next_hb = nxt
            self.heartbeat()
        j = self.cfg.jitter * self.cfg.anti_entropy_s
        if (nxt := next_soft(now, self._next_ae, self.cfg.anti_entropy_s)) is not None:
            self._next_ae = nxt + self._rng.uniform(-j, j)
            self.anti_entropy()
            self.pair_round()
        if self.swim is not None:
            self.swim.tick(now)
            if (nxt := next_soft(now, self._next_renew, self.cfg.renew_s)) is not None:
                self._next_renew = nxt
                self.view.renew()
        if now >= self._next_lazy:
            self.lazy_push()
        if now >= self._next_rotate:  # (F6: cookies expire)
            self._next_rotate = now + self.cfg.cookie_rotate_s
            self._ae.rotate_cookies()
        every = min(self.cfg.heartbeat_s, self.cfg.suspect_after_s / 4)
        if (nxt := next_soft(now, self._next_update, every)) is not None:
            self._next_update = nxt  # heartbeat-judged peers and learned addresses
            self._membership.update(now)

    def heartbeat(self) -> None:
        """Send one heartbeat now (signed, with our next counter) to every known address, or
        with SWIM only to peers of the previous release; with SWIM, also update our report."""
        info = self._local_info()
        if self.swim is not None:
            self._set_report(info)
        targets = self.view.legacy_addrs()
        if not targets:
            return
        frame = self._frame(Kind.HEARTBEAT, self._heartbeat_body(info))
        if frame is not None:
            for addr in targets:
                self._send_frame(addr, frame)

    def _set_report(self, info: Mapping[str, Any]) -> None:
        """Our SWIM report of `info`; over MAX_REPORT_BYTES (which peers refuse), without its
        compaction floors (they grow with the origins ever compacted), else not renewed;
        either way said (rate-limited)."""
        assert self.swim is not None
        report = report_bytes(info)
        if len(report) > MAX_REPORT_BYTES and "cfloor" in info:
            full = len(report)
            report = report_bytes({k: v for k, v in info.items() if k != "cfloor"})
            self._warn.warn("report_large", "gossip: our report of %d bytes is over %d: sent "
                            "without its compaction floors (%d origins)", full,
                            MAX_REPORT_BYTES, len(info["cfloor"]))
        if len(report) > MAX_REPORT_BYTES:
            self._warn.warn("report_large", "gossip: our report of %d bytes is over %d: not "
                            "sent (peers would refuse it)", len(report), MAX_REPORT_BYTES)
            return
        self.swim.set_report(report, self._clock())

    def acknowledge(self, peer_ids: Iterable[str]) -> None:
        """Send our version vector now to these peers (they wait for acknowledgements): an
        acknowledging DIGEST (noted, not answered) to SWIM members, a heartbeat to peers of
        the previous release."""
        peer_ids = set(peer_ids)
        if not peer_ids:
            return
        if self.swim is None:
            self.heartbeat()
            return
        live = self.view.live_peers()
        for p in peer_ids:
            addr = live.get(p, {}).get("gossip")
            if not isinstance(addr, str):
                continue
            if p in self.view.legacy_ids:
                self.heartbeat()
            else:
                self._ae.send_ack(addr)

    def anti_entropy(self, addr: str | None = None) -> None:
        """Start one anti-entropy exchange now, with `addr` or a random peer: a DIGEST_SUM to
        a SWIM member, else a DIGEST."""
        addr = addr or self._pick_partner()
        if addr is None:
            return
        self._stats.rounds += 1
        m = None if self.swim is None else self.swim.member_at(addr)
        if m is not None and m.id not in self.view.legacy_ids:
            self._ae.send_sum(addr)
        else:
            self._ae.send_digest(addr)

    def pair_round(self) -> None:
        """One pair round (LANES_FEATURE) now, with a random live peer sharing lanes jobs with
        us (those our LaneSink's `lane_jobs` names): a DIGEST_SUM of those jobs' lanes
        (nothing with lanes off, or none shared). Of more than MAX_PAIR_JOBS shared (what a
        receiver takes), that many: those after the last job the round before named, wrapping
        around (rotating over all)."""
        if self._lanes is None:
            return
        jobs = self._lanes.lane_jobs()
        partners = self._lane_partners(jobs) if jobs else {}
        if not partners:
            return
        addr = self._rng.choice(sorted(partners))
        shared = partners[addr]  # (sorted)
        if len(shared) > MAX_PAIR_JOBS:
            i = bisect.bisect_right(shared, self._pair_after)
            chunk = (shared[i:] + shared[:i])[:MAX_PAIR_JOBS]
            self._pair_after = chunk[-1]  # (the next round goes on after it)
            shared = sorted(chunk)
        self._ae.send_sum(addr, jobs=shared)

    def catch_up(self, job: str, peer: str, *, fallback: bool) -> None:
        """A pair round of lanes job `job` alone now (design 5.3: a peer just added to it
        asks for its lanes, `Scheduler.catch_up`): with `peer` (its adder, who holds what
        the add said) if it is a live lanes partner sharing the job, else, with `fallback`
        (the joiner's ask), with another one that is; none with lanes off or no such peer
        live (the periodic rounds, or the joiner's bound, then). Without `fallback` (a
        member's round with a peer just added: `Scheduler._members_grew`), only with `peer`:
        an add may name any peer, down, unknown or made up, and a round with someone else
        would bring that peer nothing."""
        m = self.view.lane_peers.get(peer)
        if self._lanes is None or (m is None and not fallback):
            return
        partners = self._lane_partners([job])
        addr = m.addr if m is not None and m.addr in partners else (
            self._rng.choice(sorted(partners)) if partners and fallback else None)
        if addr is not None:
            self._ae.send_sum(addr, jobs=[job])

    def _pick_partner(self) -> str | None:
        """A random live peer's address, else a random known address, else None."""
        if self.swim is None:
            return self._membership.pick_partner()
        live = sorted(self.view.live_addrs())
        if live:
            return self._rng.choice(live)
        return self._membership.pick_partner()

    # -- the PeerSample anti-entropy carries (addresses for peers of the previous release) --
    def sample(self, exclude: str) -> list[str]:
        """Up to MAX_PEER_SAMPLE random live addresses other than `exclude`."""
        live = sorted(self.view.live_addrs() - {exclude})
        return self._rng.sample(live, min(len(live), MAX_PEER_SAMPLE))

    def learn_addrs(self, addrs: Iterable[Any]) -> None:
        self._membership.learn_addrs(addrs)

    def peer_at(self, addr: str) -> PeerAt | None:
        """The live member at `addr` (SWIM or legacy) and whether it announces cookies."""
        return self.view.member_at(addr)

    # -- SWIM (the SwimNet) ------------------------------------------------------------
    def send_swim(self, addr: str, kind: Msg, body: dict[str, Any]) -> None:
        """Send one SWIM frame (never to a peer of the previous release: it drops them)."""
        self.send(addr, Kind(kind.value), dumps(body))

    def _on_swim(self, f: Frame) -> None:
        if self.swim is None:
            raise ValueError(f"{f.kind.name}: SWIM is off")
        self.view.heard_swim(f.sender)
        now = self._clock()
        s = self.swim
        handler = {Kind.PING: s.on_ping, Kind.ACK: s.on_ack, Kind.PING_REQ: s.on_ping_req,
                   Kind.NACK: s.on_nack, Kind.UPDATES: s.on_updates, Kind.SYNC: s.on_sync}
        handler[f.kind](f.sender, f.reply_to, f.body, now)
        if s.next_due() < self._sleep_until:
            self._wake.set()

    # -- sending (the anti-entropy Link) -----------------------------------------------
    def send(self, addr: str, kind: Kind, body: bytes, *, max_body_bytes: int | None = None,
             ) -> None:
        """Send one frame of `kind` around the encoded `body` (dropped if it cannot go, or if
        `body` is larger than `max_body_bytes`)."""
        if max_body_bytes is not None and len(body) > max_body_bytes:
            return
        frame = self._frame(kind, body)
        if frame is not None:
            self._send_frame(addr, frame)

    def send_events(self, addrs: Sequence[str], events: Sequence[Event], *, ttl: int = 0,
                    reply: Reply | None = None, fix: Blocks | None = None,
                    fix_echo: str | None = None, jobs: Sequence[str] | None = None) -> None:
        """`events` in EVENTS frames to each of `addrs`; with `reply`, the last frame is a
        DIGEST_REPLY carrying it; with `fix`, the last EVENTS frame carries it (and
        `fix_echo`, and a pair round's `jobs`)."""
        frames = self._event_frames(events, ttl=ttl, reply=reply, fix=fix, fix_echo=fix_echo,
                                    jobs=jobs)
        for addr in addrs:
            for frame, n in frames:
                self._stats.events_out += n
                self._send_frame(addr, frame)

    def merge(self, events: Sequence[Event]) -> list[Event]:
        """Fold received events into the sink, counted; returns the new ones, never raises."""
        self._stats.events_in += len(events)
        try:
            new = self._sink.merge(events)
        except StoreError:  # the sink cannot store them now (it says so, once): resent later
            self._stats.merge_errors += 1
            return []
        except Exception:
            self._stats.merge_errors += 1
            self._warn.warn("merge", "gossip: sink refused %d events", len(events))
            log.error("gossip: merge failure (a bug: the door should have refused these)",
                      exc_info=True)
            return []
        self._stats.events_new += len(new)
        return new

    def refused(self, origin: Any, reason: str) -> None:
        """A malformed event left out of a frame: counted here and by the sink, per origin."""
        self.stats.events_refused += 1
        self._sink.refused(origin, reason)

    def _heartbeat_body(self, info: Mapping[str, Any]) -> bytes:
        info_bytes = dumps(dict(info))
        a = self.auth
        if a is None:
            return b'{"info":' + info_bytes + b"}"
        ctr = a.next_counter()
        msg = membership_message(Kind.HEARTBEAT, self.cfg.mesh_id, self.peer_id, self._address,
                                 a.incarnation, ctr, info_bytes)
        proof = {"key": a.identity.key.hex(), "inc": a.incarnation, "ctr": ctr,
                 "sig": a.identity.sign(msg).hex()}
        if a.admit is not None:
            proof["admit"] = a.admit.hex()
        return b'{"info":' + info_bytes + b',"auth":' + dumps(proof) + b"}"

    def _frame(self, kind: Kind, body: bytes) -> bytes | None:
        if self._writer is None:  # not bound: there is nobody to send to yet
            return None
        frame = self._writer.frame(kind, body)
        if len(frame) > self.cfg.max_frame_bytes:
            self._warn.warn("send_large", "gossip: frame of %d bytes not sent", len(frame))
            return None
        return frame

    def _send_frame(self, addr: str, frame: bytes) -> None:
        if not self._address or addr == self._address:
            return
        if self._t.send(addr, frame):
            self._stats.frames_out += 1
            self._stats.bytes_out += len(frame)
        else:
            self._stats.send_failed += 1

    def _event_frames(self, events: Sequence[Event], *, ttl: int, reply: Reply | None,
                      fix: Blocks | None = None, fix_echo: str | None = None,
                      jobs: Sequence[str] | None = None) -> list[tuple[bytes, int]]:
        """(frame, event count) for each frame `send_events` sends."""
        batches, too_large = pack_frames(events, self.cfg.max_frame_bytes,
                                         self.cfg.max_events_per_frame)
        for e, size in too_large:
            self._stats.events_unsendable += 1
            self._warn.warn("event_large", "gossip: event %s of %d bytes cannot be sent",
                            e.id, size)
        if (reply is not None or fix is not None) and not batches:
            batches = [Packed([], [])]
        elif (reply is not None and reply.blocks) or fix:  # digests in a frame of their own
            batches.append(Packed([], []))
        out: list[tuple[bytes, int]] = []
        for i, (batch, signed) in enumerate(batches):
            last = i == len(batches) - 1
            if reply is not None and last:
                frame = self._frame(Kind.DIGEST_REPLY, reply_body(batch, reply, signed))
            else:
                frame = self._frame(Kind.EVENTS, events_body(
                    batch, ttl, signed, fix if last else None, fix_echo, jobs))
            if frame is not None:
                out.append((frame, len(batch)))
        return out

    def _push(self, events: list[Event], hops: int, exclude: str | None) -> None:
        targets, ttl = self._push_targets(exclude, hops)
        self.send_events(targets, events, ttl=ttl)

    def _push_targets(self, exclude: str | None, hops: int | None = None,
                      ) -> tuple[list[str], int]:
        """The addresses a push of mesh events goes to and its ttl: every live peer (but
        `exclude`) directly (ttl 0) up to `fanout` of them, else `fanout` random ones with
        `hops` (default push_hops) to forward."""
        live = self.view.live_addrs()
        targets = sorted(live - {exclude} if exclude else live)
        if len(targets) > self.cfg.fanout:
            return (self._rng.sample(targets, self.cfg.fanout),
                    self.cfg.push_hops if hops is None else hops)
        return targets, 0  # everybody gets it directly: nobody needs to forward

    # -- receiving ---------------------------------------------------------------------
    def _on_frame(self, data: bytes) -> None:
        """Transport callback: never raises."""
        self._stats.frames_in += 1
        self._stats.bytes_in += len(data)
        try:
            f = decode_frame(data, self._secret, self.cfg.mesh_id, self.cfg.max_frame_bytes)
        except FrameError as e:
            self._drop(e.reason, e.detail)
            return
        if f.sender == self.peer_id:
            return
        if self.auth is not None and self.auth.keyring.is_revoked(f.sender):
            self._drop("revoked", f"{f.kind.name} from the revoked {f.sender[:16]}")
            if self.swim is not None and f.reply_to:  # (its join address: synced no more)
                self.swim.heard_revoked(f.sender, f.reply_to, f.body.get("m"))
            return
        try:
            # Signed: only a checked heartbeat proves a peer alive (a replayed frame must not).
            # A SWIM member's address is SWIM's to keep (a learned address left unvouched
            # for is disconnected).
            if self.swim is None or f.sender not in self.swim.members \
                    or f.sender in self.view.legacy_ids:
                self._membership.touch(f.sender, f.reply_to, refresh=self.auth is None)
            self._handlers[f.kind](f)
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            self._drop("bad_frame", f"{f.kind.name} from {f.sender[:16]}: {e!s:.80}")
        except Exception:
            self._stats.merge_errors += 1
            log.exception("gossip: handling %s from %s failed", f.kind.name, f.sender[:16])

    def _drop(self, reason: str, detail: str) -> None:
        name = f"dropped_{reason}"
        setattr(self._stats, name, getattr(self._stats, name) + 1)
        self._warn.warn(reason, "gossip: dropped frame (%s): %s", reason, detail)

    def _on_heartbeat(self, f: Frame) -> None:
        info = parse_info(f.body)
        if self.auth is not None:
            why = self._check_heartbeat(f, info)
            if why is not None:
                self._drop(why, f"HEARTBEAT from {f.sender[:16]}")
                return
        if f.reply_to and self.view.addr_held_by_other(f.sender, f.reply_to):
            self._drop("addr_taken", f"HEARTBEAT from {f.sender[:16]}: another live member "
                       f"is at {f.reply_to[:64]}")
            return
        kid = info.get("kid")
        if isinstance(kid, str) and f.reply_to:
            self._t.peer_key(f.reply_to, kid)
        self.view.heard_legacy(f.sender, f.reply_to, info, self._clock())

    def peer_key(self, addr: str, key_id: str) -> None:
        """`addr` serves the key `key_id` (from mDNS): reach it with that secret's keys."""
        self._t.peer_key(addr, key_id)

    def _check_heartbeat(self, f: Frame, info: dict[str, Any]) -> str | None:
        """None if the heartbeat is signed by its sender's key and newer than the last one."""
        assert self.auth is not None
        proof = f.body.get("auth")
        if not isinstance(proof, dict):
            return "unsigned"
        inc, ctr = proof["inc"], proof["ctr"]
        if not all(type(v) is int and 0 <= v < 2**63 for v in (inc, ctr)):
            raise ValueError("bad incarnation or counter")
        admit = proof.get("admit")
        msg = membership_message(f.kind, f.mesh_id, f.sender, f.signed_reply_to or f.reply_to,
                                 inc, ctr, dumps(info))
        return self.auth.keyring.check_message(
            f.sender, bytes.fromhex(proof["key"]), None if admit is None else bytes.fromhex(admit),
            inc, ctr, bytes.fromhex(proof["sig"]), msg)

    def receive_events(self, body: Mapping[str, Any]) -> list[Event]:
        """Check the events of a frame body (signatures, when signing) and merge the good
        ones; returns the new ones. Malformed bodies raise KeyError/TypeError/ValueError."""
        if self.auth is None:
            return self.merge(parse_events(body["events"], self.refused))
        keyring = self.auth.keyring
        before = sum(keyring.refused.total.values())
        dups = keyring.duplicates
        try:  # (copies of events held are left out undecoded: `drops_copy`, session 51)
            events = keyring.accept(body["events"], body.get("batches", []), self.refused,
                                    holds=getattr(self._sink, "drops_copy", None))
        except BanzaiError as err:  # an event's own validation refused it: malformed frame
            raise ValueError(f"bad event: {err!s:.60}") from None
        self._stats.events_in += keyring.duplicates - dups  # (received, none of them new)
        refused = sum(keyring.refused.total.values()) - before
        if refused:
            self.stats.events_refused += refused
            self._warn.warn("refused", "gossip: refused %d events whose signature does not "
                            "verify (see /api/health)", refused)
        return self.merge(events) if events else []

    def _on_events(self, f: Frame) -> None:
        ttl = f.body.get("ttl", 0)
        if type(ttl) is not int:  # checked first: a bad frame is dropped before any merge
            raise ValueError(f"ttl is not an integer: {ttl!r:.20}")
        new = self.receive_events(f.body)
        if "fix" in f.body:  # a content exchange (antientropy.py): send back what differs
            self._ae.on_fix(f)
        ttl = min(ttl, self.cfg.push_hops)  # a sender cannot make the rumour live longer
        if new and ttl > 0:  # (a lane event is never relayed: its members got it directly)
            new = [e for e in new if _job_of(e) is None]
            if new:
                self._push(new, ttl - 1, exclude=f.reply_to)


def _job_of(e: Event) -> str | None:
    """The job of a lane event, None for a mesh event."""
    lane = lane_of(e.origin) if "/" in e.origin else None
    return None if lane is None else lane[1]


__all__ = ["MAGIC", "MAX_START_COUNT", "EventSink", "Frame", "FrameError", "Gossip",
           "GossipConfig", "GossipStats", "Kind", "Liveness", "MemberSink", "decode_frame",
           "encode_frame", "zmq_transport"]
