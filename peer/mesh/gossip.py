"""Gossip: replicate the event log between peers over a Transport (ZeroMQ or in-memory).

Algorithm. Every peer holds a set of immutable events, summarised by its version
vector `heads()` (origin -> highest contiguous seq held). Three flows keep replicas
equal:

1. Push. `broadcast(events)` sends new local events at once to every live peer
   when there are at most `fanout` of them, else to `fanout` random live peers
   with a hop budget (`push_hops`); a receiver forwards only the events that were
   new to it, so a rumour dies once everybody has it.
2. Anti-entropy (Scuttlebutt push-pull). Every `anti_entropy_s` (jittered) a
   peer sends its version vector (DIGEST) to one random live peer. The receiver
   answers (DIGEST_REPLY) with the events the sender lacks, oldest first and at
   most `max_events_per_frame`, plus its own vector when the sender holds
   something it lacks; the sender then pushes those (EVENTS). A reply flagged
   `more` makes the sender pull again at once, so a restarted peer catches up in
   a burst of round trips rather than one frame per second. Lost frames are
   repaired by later rounds: the merge is idempotent and commutative, so
   duplicates and reordering are harmless.
3. Membership. Every `heartbeat_s` a peer sends HEARTBEAT (its load and http
   url) to every known address (static/discovered, or learned from frames and
   from the peer samples carried by digests). Liveness is judged only on the
   local monotonic clock: alive until `suspect_after_s` without a frame,
   suspect until `dead_after_s`, then dead.

Wire format (all integers big-endian), see `encode_frame`:
    b"BZ" | version u8 | kind u8 | flags u8 | mesh id, sender id, reply-to address
    (each u8 length + UTF-8) | JSON body | HMAC-SHA256 tag (32 bytes, when flags & 1)
A frame that is oversized, malformed, of another version, kind or mesh, or whose
tag fails is dropped, counted in `stats` and logged (rate-limited); nothing raised
while handling a frame escapes the receive path.

Concurrency: a Gossip and its sinks are owned by one event loop; every method is
non-blocking (sends are queued or dropped by the transport, never awaited).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import random
import struct
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from enum import IntEnum
from typing import Any, Protocol

from peer.log import PROTOCOL_VERSION, Event
from peer.mesh.transport import Transport, ZmqTransport, parse_addr

log = logging.getLogger("banzai.gossip")

Clock = Callable[[], float]
MAGIC = b"BZ"
FLAG_MAC = 0x01
TAG_LEN = 32
_HEAD = struct.Struct("!2sBBB")  # magic, version, kind, flags
_MAX_PEER_SAMPLE = 32  # addresses carried per digest
_MAX_LEARNED = 4096  # bound on addresses learned from the wire


class Kind(IntEnum):
    """Message kinds. Append-only: the numeric values are part of the protocol."""

    HEARTBEAT = 1  # {"info": {...}}
    EVENTS = 2  # {"events": [...], "ttl": int}
    DIGEST = 3  # {"vv": {origin: seq}, "peers": [addr, ...]}
    DIGEST_REPLY = 4  # {"events": [...], "vv": {origin: seq} | null, "more": bool}


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


class MemberSink(Protocol):
    """Where gossip reports heartbeats. Must not block."""

    def heard(self, peer_id: str, info: Mapping[str, Any]) -> None:
        """A heartbeat from `peer_id`: liveness plus its load (`info` includes "gossip")."""
        ...


@dataclass(frozen=True)
class GossipConfig:
    """Gossip settings; invalid values raise ValueError at construction."""

    bind: str = "127.0.0.1:0"  # HOST:PORT of the receiving socket; port 0 = any free port
    advertise_host: str | None = None  # host others reach us at (needed for a wildcard bind)
    mesh_id: str = "banzai"
    secret: bytes | None = None  # HMAC key; None = frames unauthenticated
    anti_entropy_s: float = 1.0
    heartbeat_s: float = 0.5
    fanout: int = 8  # push to all live peers up to this many, else to this many at random
    push_hops: int = 3  # hop budget of a partial push
    max_frame_bytes: int = 16 << 20
    max_events_per_frame: int = 512
    suspect_after_s: float = 2.0
    dead_after_s: float = 10.0
    jitter: float = 0.1  # fraction of anti_entropy_s randomised per round

    def __post_init__(self) -> None:
        host, _ = parse_addr(self.bind)
        if host in ("0.0.0.0", "*", "::") and not self.advertise_host:
            raise ValueError("a wildcard bind needs advertise_host")
        for name in ("anti_entropy_s", "heartbeat_s", "suspect_after_s", "dead_after_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0")
        if self.suspect_after_s < self.heartbeat_s:
            raise ValueError("suspect_after_s must be >= heartbeat_s")
        if self.dead_after_s <= self.suspect_after_s:
            raise ValueError("dead_after_s must be > suspect_after_s")
        if self.fanout < 1 or self.push_hops < 0 or self.max_events_per_frame < 1:
            raise ValueError("fanout and max_events_per_frame must be >= 1, push_hops >= 0")
        if not 4096 <= self.max_frame_bytes <= 1 << 30:
            raise ValueError("max_frame_bytes must be in [4096, 1 GiB]")
        if not 0 <= self.jitter <= 0.5:
            raise ValueError("jitter must be in [0, 0.5]")
        if not 0 < len(self.mesh_id.encode()) <= 255:
            raise ValueError("mesh_id must be 1..255 bytes")
        if self.secret is not None and len(self.secret) < 16:
            raise ValueError("secret must be at least 16 bytes")

    @classmethod
    def lan(cls, **overrides: Any) -> GossipConfig:
        """Defaults for a lab LAN (tens of peers)."""
        return cls(**overrides)

    @classmethod
    def local(cls, **overrides: Any) -> GossipConfig:
        """Fast timings for tests on one machine."""
        base: dict[str, Any] = {"anti_entropy_s": 0.1, "heartbeat_s": 0.05,
                                "suspect_after_s": 0.3, "dead_after_s": 1.0,
                                "max_events_per_frame": 64}
        return cls(**{**base, **overrides})


def zmq_transport(cfg: GossipConfig) -> ZmqTransport:
    """The production transport for `cfg`."""
    return ZmqTransport(cfg.bind, max_frame_bytes=cfg.max_frame_bytes)


# -- frames --------------------------------------------------------------------------


class FrameError(Exception):
    """A received frame is rejected; `reason` names the stats counter."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Frame:
    kind: Kind
    mesh_id: str
    sender: str
    reply_to: str
    body: dict[str, Any]


def _short(s: str) -> bytes:
    b = s.encode()
    if len(b) > 255:
        raise ValueError(f"header string too long: {s[:40]!r}")
    return bytes([len(b)]) + b


def frame_header(kind: int, mesh_id: str, sender: str, reply_to: str,
                 authenticated: bool) -> bytes:
    """Everything before the body: fixed header, mesh id, sender id, reply-to address."""
    flags = FLAG_MAC if authenticated else 0
    return b"".join((_HEAD.pack(MAGIC, PROTOCOL_VERSION, int(kind), flags), _short(mesh_id),
                     _short(sender), _short(reply_to)))


def _seal(data: bytes, secret: bytes | None) -> bytes:
    return data if secret is None else data + hmac.new(secret, data, hashlib.sha256).digest()


def encode_frame(kind: int, mesh_id: str, sender: str, reply_to: str, body: bytes,
                 secret: bytes | None) -> bytes:
    """Build a frame around an already JSON-encoded `body` (tagged when `secret` is set)."""
    return _seal(frame_header(kind, mesh_id, sender, reply_to, secret is not None) + body,
                 secret)


def _read_short(data: bytes, pos: int) -> tuple[str, int]:
    n = data[pos]
    end = pos + 1 + n
    if end > len(data):
        raise FrameError("bad_frame", "truncated header")
    return data[pos + 1:end].decode(), end


def _check_mac(data: bytes, flags: int, secret: bytes | None) -> bytes:
    """The frame without its tag, if the tag is right (or no secret is used)."""
    if secret is None:
        if flags & FLAG_MAC:
            raise FrameError("bad_mac", "authenticated frame but no secret configured")
        return data
    if not flags & FLAG_MAC or len(data) < _HEAD.size + 3 + TAG_LEN:
        raise FrameError("bad_mac", "unauthenticated frame")
    want = hmac.new(secret, data[:-TAG_LEN], hashlib.sha256).digest()
    if not hmac.compare_digest(want, data[-TAG_LEN:]):
        raise FrameError("bad_mac", "tag mismatch")
    return data[:-TAG_LEN]


def decode_frame(data: bytes, secret: bytes | None, mesh_id: str, max_bytes: int) -> Frame:
    """Parse and check a frame; raises FrameError(reason) for anything to drop."""
    if len(data) > max_bytes:
        raise FrameError("too_large", f"{len(data)} bytes")
    if len(data) < _HEAD.size + 3 or data[:2] != MAGIC:
        raise FrameError("bad_frame", "no magic")
    _, version, kind, flags = _HEAD.unpack_from(data)
    if version != PROTOCOL_VERSION:
        raise FrameError("bad_version", f"version {version}")
    data = _check_mac(data, flags, secret)
    try:
        mesh, pos = _read_short(data, _HEAD.size)
        sender, pos = _read_short(data, pos)
        reply_to, pos = _read_short(data, pos)
        if reply_to:
            parse_addr(reply_to)
        body = json.loads(data[pos:])
    except (UnicodeDecodeError, ValueError, IndexError) as e:
        raise FrameError("bad_frame", str(e)[:80]) from None
    if mesh != mesh_id:
        raise FrameError("other_mesh", f"mesh {mesh[:40]!r}")
    if kind not in Kind._value2member_map_:
        raise FrameError("bad_kind", f"kind {kind}")
    if not isinstance(body, dict) or not sender:
        raise FrameError("bad_frame", "body is not an object")
    return Frame(Kind(kind), mesh, sender, reply_to, body)


def _parse_vv(obj: Any) -> dict[str, int]:
    if not isinstance(obj, dict):
        raise ValueError("version vector is not an object")
    out: dict[str, int] = {}
    for k, v in obj.items():
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise ValueError("bad seq in version vector")
        out[str(k)] = v
    return out


def _parse_events(obj: Any) -> list[Event]:
    if not isinstance(obj, list):
        raise ValueError("events is not a list")
    evs = [Event.from_json(d) for d in obj]
    for e in evs:
        if e.seq < 1 or not e.origin:
            raise ValueError("bad event id")
    return evs


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


# -- bookkeeping ---------------------------------------------------------------------


@dataclass
class GossipStats:
    """Counters; `dropped_*` are frames refused, by reason."""

    frames_in: int = 0
    frames_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    send_failed: int = 0
    dropped_bad_mac: int = 0
    dropped_bad_version: int = 0
    dropped_bad_kind: int = 0
    dropped_too_large: int = 0
    dropped_bad_frame: int = 0
    dropped_other_mesh: int = 0
    events_in: int = 0
    events_new: int = 0
    events_out: int = 0
    events_unsendable: int = 0
    merge_errors: int = 0
    rounds: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass
class _Peer:
    peer_id: str
    addr: str
    info: dict[str, Any]
    last_heard: float
    status: str = "alive"


class _RateLimitedLog:
    """At most one warning per key per `every_s`, reporting how many were suppressed."""

    def __init__(self, clock: Clock, every_s: float = 10.0) -> None:
        self._clock = clock
        self._every = every_s
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def warn(self, key: str, msg: str, *args: object) -> None:
        now = self._clock()
        last = self._last.get(key)
        if last is not None and now - last < self._every:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return
        n = self._suppressed.pop(key, 0)
        self._last[key] = now
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
                 local_info: Callable[[], Mapping[str, Any]] | None = None) -> None:
        if not 0 < len(peer_id.encode()) <= 255:
            raise ValueError("peer_id must be 1..255 bytes")
        self.cfg = cfg
        self.peer_id = peer_id
        self.stats = GossipStats()
        self._t = transport
        self._sink = sink
        self._members = members
        self._clock = clock
        self._rng = rng if rng is not None else random.Random()
        self._local_info = local_info or dict
        self._secret = cfg.secret
        self._static: set[str] = set()  # add_peer addresses: kept until remove_peer
        self._learned: dict[str, float] = {}  # from the wire -> when last vouched for
        self._peers: dict[str, _Peer] = {}
        self._address = ""
        self._next_hb = 0.0
        self._next_ae = 0.0
        self._task: asyncio.Task[None] | None = None
        self._warn = _RateLimitedLog(clock)
        self._head_cache: dict[Kind, bytes] = {}
        self._live_cache: frozenset[str] | None = None  # reset when a status or address changes
        self._handlers: dict[Kind, Callable[[Frame], None]] = {
            Kind.HEARTBEAT: self._on_heartbeat, Kind.EVENTS: self._on_events,
            Kind.DIGEST: self._on_digest, Kind.DIGEST_REPLY: self._on_digest_reply}

    # -- lifecycle ---------------------------------------------------------------------
    @property
    def address(self) -> str:
        """The address peers reach us at ("" before bind)."""
        return self._address

    def bind(self) -> str:
        """Open the transport; returns our advertised address. Idempotent."""
        if not self._address:
            bound = self._t.open(self._on_frame)
            host, port = parse_addr(bound)
            adv = self.cfg.advertise_host or host
            self._address = f"[{adv}]:{port}" if ":" in adv else f"{adv}:{port}"
            now = self._clock()
            self._next_hb = now
            self._next_ae = now + self._rng.uniform(0, self.cfg.anti_entropy_s)
        return self._address

    async def start(self) -> None:
        """Bind and run the heartbeat / anti-entropy timer."""
        self.bind()
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        """Stop the timer and close the transport."""
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

    async def _run(self) -> None:
        while True:
            try:
                self.tick()
            except Exception:  # a bug in one round must not stop gossip
                log.exception("gossip tick failed")
            delay = min(self._next_hb, self._next_ae) - self._clock()
            await asyncio.sleep(min(max(delay, 0.005), 1.0))

    # -- public operations -------------------------------------------------------------
    def add_peer(self, addr: str) -> None:
        """Gossip with `addr` (from discovery or --join) until `remove_peer`."""
        parse_addr(addr)
        if addr != self._address:
            self._static.add(addr)
            self._t.connect(addr)

    def remove_peer(self, addr: str) -> None:
        """Stop contacting `addr` (unless a live peer is heard there again)."""
        self._static.discard(addr)
        self._learned.pop(addr, None)
        if not any(p.addr == addr and p.status != "dead" for p in self._peers.values()):
            self._t.disconnect(addr)

    def broadcast(self, events: Sequence[Event]) -> None:
        """Push new local events now to live peers (all, or `fanout` random ones)."""
        if events:
            self._push(list(events), self.cfg.push_hops, exclude=None)

    def live_peers(self) -> dict[str, dict[str, Any]]:
        """peer_id -> last heartbeat info plus "gossip" address and "status" (alive/suspect)."""
        self._update_liveness(self._clock())
        return {p.peer_id: {**p.info, "gossip": p.addr, "status": p.status}
                for p in self._peers.values() if p.status != "dead"}

    def status(self, peer_id: str) -> str | None:
        """alive, suspect, dead, or None if never heard."""
        self._update_liveness(self._clock())
        p = self._peers.get(peer_id)
        return p.status if p else None

    def tick(self) -> None:
        """Do whatever is due at the clock's current time."""
        now = self._clock()
        if now >= self._next_hb:
            self._next_hb = now + self.cfg.heartbeat_s
            self.heartbeat()
        if now >= self._next_ae:
            j = self.cfg.jitter * self.cfg.anti_entropy_s
            self._next_ae = now + self.cfg.anti_entropy_s + self._rng.uniform(-j, j)
            self.anti_entropy()
        self._update_liveness(now)

    def heartbeat(self) -> None:
        """Send one heartbeat to every known address now."""
        frame = self._frame(Kind.HEARTBEAT, _dumps({"info": dict(self._local_info())}))
        if frame is not None:
            for addr in sorted(self._static | self._learned.keys() | self._live_addrs()):
                self._send_frame(addr, frame)

    def anti_entropy(self, addr: str | None = None) -> None:
        """Start one anti-entropy exchange now, with `addr` or a random peer."""
        addr = addr or self._pick_partner()
        if addr is None:
            return
        self.stats.rounds += 1
        self._send_digest(addr)

    # -- sending -----------------------------------------------------------------------
    def _frame(self, kind: Kind, body: bytes) -> bytes | None:
        head = self._head_cache.get(kind)
        if head is None:
            head = self._head_cache[kind] = frame_header(
                kind, self.cfg.mesh_id, self.peer_id, self._address, self._secret is not None)
        frame = _seal(head + body, self._secret)
        if len(frame) > self.cfg.max_frame_bytes:
            self._warn.warn("send_large", "gossip: frame of %d bytes not sent", len(frame))
            return None
        return frame

    def _send(self, addr: str, kind: Kind, body: bytes) -> None:
        frame = self._frame(kind, body)
        if frame is not None:
            self._send_frame(addr, frame)

    def _send_frame(self, addr: str, frame: bytes) -> None:
        if not self._address or addr == self._address:
            return
        if self._t.send(addr, frame):
            self.stats.frames_out += 1
            self.stats.bytes_out += len(frame)
        else:
            self.stats.send_failed += 1

    def _send_digest(self, addr: str) -> None:
        live = sorted(self._live_addrs() - {addr})
        sample = self._rng.sample(live, min(len(live), _MAX_PEER_SAMPLE))
        self._send(addr, Kind.DIGEST, _dumps({"vv": dict(self._sink.heads()), "peers": sample}))

    def _batches(self, events: Sequence[Event]) -> list[list[bytes]]:
        """Encoded events in groups that fit one frame each."""
        budget = self.cfg.max_frame_bytes - 2048  # header, tag and the rest of the body
        out: list[list[bytes]] = []
        cur: list[bytes] = []
        size = 0
        for e in events:
            enc = _dumps(e.to_json())
            if len(enc) > budget:
                self.stats.events_unsendable += 1
                self._warn.warn("event_large", "gossip: event %s of %d bytes cannot be sent",
                                e.id, len(enc))
                continue
            if cur and (size + len(enc) > budget or len(cur) >= self.cfg.max_events_per_frame):
                out.append(cur)
                cur, size = [], 0
            cur.append(enc)
            size += len(enc) + 1
        if cur:
            out.append(cur)
        return out

    def _event_frames(self, events: Sequence[Event], *, ttl: int = 0,
                      reply: dict[str, Any] | None = None) -> list[tuple[bytes, int]]:
        """(frame, event count) for EVENTS frames; with `reply`, the last frame is a
        DIGEST_REPLY carrying it."""
        batches = self._batches(events)
        if reply is not None and not batches:
            batches = [[]]
        out: list[tuple[bytes, int]] = []
        for i, batch in enumerate(batches):
            evs = b"[" + b",".join(batch) + b"]"
            if reply is not None and i == len(batches) - 1:
                tail = b"".join(b',"%s":%s' % (k.encode(), _dumps(v)) for k, v in reply.items())
                frame = self._frame(Kind.DIGEST_REPLY, b'{"events":' + evs + tail + b"}")
            else:
                frame = self._frame(Kind.EVENTS, b'{"events":' + evs + b',"ttl":%d}' % ttl)
            if frame is not None:
                out.append((frame, len(batch)))
        return out

    def _send_events(self, addrs: Sequence[str], events: Sequence[Event], *, ttl: int = 0,
                     reply: dict[str, Any] | None = None) -> None:
        frames = self._event_frames(events, ttl=ttl, reply=reply)
        for addr in addrs:
            for frame, n in frames:
                self.stats.events_out += n
                self._send_frame(addr, frame)

    def _push(self, events: list[Event], hops: int, exclude: str | None) -> None:
        targets = sorted(self._live_addrs() - {exclude} if exclude else self._live_addrs())
        if len(targets) > self.cfg.fanout:
            targets = self._rng.sample(targets, self.cfg.fanout)
            ttl = hops
        else:
            ttl = 0  # everybody gets it directly: nobody needs to forward
        self._send_events(targets, events, ttl=ttl)

    # -- receiving ---------------------------------------------------------------------
    def _on_frame(self, data: bytes) -> None:
        """Transport callback: never raises."""
        self.stats.frames_in += 1
        self.stats.bytes_in += len(data)
        try:
            f = decode_frame(data, self._secret, self.cfg.mesh_id, self.cfg.max_frame_bytes)
        except FrameError as e:
            self._drop(e.reason, e.detail)
            return
        if f.sender == self.peer_id:
            return
        try:
            self._learn(f)
            self._handlers[f.kind](f)
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            self._drop("bad_frame", f"{f.kind.name} from {f.sender[:16]}: {e!s:.80}")
        except Exception:
            self.stats.merge_errors += 1
            log.exception("gossip: handling %s from %s failed", f.kind.name, f.sender[:16])

    def _drop(self, reason: str, detail: str) -> None:
        name = f"dropped_{reason}"
        setattr(self.stats, name, getattr(self.stats, name) + 1)
        self._warn.warn(reason, "gossip: dropped frame (%s): %s", reason, detail)

    def _learn(self, f: Frame) -> None:
        p = self._peers.get(f.sender)
        if p is not None and p.status != "dead":
            p.last_heard = self._clock()
        if f.reply_to and f.reply_to not in self._static:
            self._note_addr(f.reply_to)

    def _learn_addrs(self, addrs: Any) -> None:
        for addr in list(addrs)[:_MAX_PEER_SAMPLE]:
            if isinstance(addr, str) and addr != self._address:
                parse_addr(addr)
                if addr not in self._static:
                    self._note_addr(addr)

    def _merge(self, events: list[Event]) -> list[Event]:
        self.stats.events_in += len(events)
        try:
            new = self._sink.merge(events)
        except Exception:
            self.stats.merge_errors += 1
            self._warn.warn("merge", "gossip: sink refused %d events", len(events))
            log.debug("merge failure", exc_info=True)
            return []
        self.stats.events_new += len(new)
        return new

    def _on_heartbeat(self, f: Frame) -> None:
        info = f.body["info"]
        if not isinstance(info, dict):
            raise ValueError("info is not an object")
        self._on_heartbeat_from(f.sender, f.reply_to, info, self._clock())

    def _on_heartbeat_from(self, peer_id: str, addr: str, info: dict[str, Any],
                           now: float) -> None:
        p = self._peers.get(peer_id)
        if p is None or p.status == "dead":
            log.info("gossip: peer %s up at %s", peer_id[:16], addr)
        if p is None:
            p = self._peers[peer_id] = _Peer(peer_id, addr, info, now, "new")
        if p.status != "alive" or p.addr != addr:
            self._live_cache = None
        p.addr, p.info, p.last_heard, p.status = addr, info, now, "alive"
        self._members.heard(peer_id, {**info, "gossip": addr})

    def _on_events(self, f: Frame) -> None:
        new = self._merge(_parse_events(f.body["events"]))
        ttl = int(f.body.get("ttl", 0))
        if new and ttl > 0:
            self._push(new, ttl - 1, exclude=f.reply_to)

    def _on_digest(self, f: Frame) -> None:
        theirs = _parse_vv(f.body["vv"])
        self._learn_addrs(f.body.get("peers", []))
        mine = self._sink.heads()
        limit = self.cfg.max_events_per_frame
        missing = self._sink.events_after(theirs, limit)
        ahead = any(seq > mine.get(o, 0) for o, seq in theirs.items())
        if missing or ahead:
            self._send_events([f.reply_to], missing, reply={
                "vv": dict(mine) if ahead else None, "more": len(missing) >= limit})

    def _on_digest_reply(self, f: Frame) -> None:
        new = self._merge(_parse_events(f.body["events"]))
        vv = f.body.get("vv")
        if vv is not None:
            self._send_events([f.reply_to], self._sink.events_after(
                _parse_vv(vv), self.cfg.max_events_per_frame))
        if f.body.get("more") and new:
            self._send_digest(f.reply_to)  # keep pulling while it makes progress

    # -- membership --------------------------------------------------------------------
    def _live_addrs(self) -> frozenset[str]:
        if self._live_cache is None:
            self._live_cache = frozenset(p.addr for p in self._peers.values()
                                         if p.status != "dead" and p.addr)
        return self._live_cache

    def _pick_partner(self) -> str | None:
        live = sorted(self._live_addrs())
        if live:
            return self._rng.choice(live)
        known = sorted(self._static | self._learned.keys())
        return self._rng.choice(known) if known else None

    def _update_liveness(self, now: float) -> None:
        forget_after = 10 * self.cfg.dead_after_s  # then a dead peer's record is dropped
        for pid in [p.peer_id for p in self._peers.values() if now - p.last_heard > forget_after]:
            del self._peers[pid]
        for p in self._peers.values():
            quiet = now - p.last_heard
            st = ("alive" if quiet <= self.cfg.suspect_after_s else
                  "suspect" if quiet <= self.cfg.dead_after_s else "dead")
            if st != p.status:
                log.info("gossip: peer %s %s -> %s (quiet %.1fs)", p.peer_id[:16], p.status,
                         st, quiet)
                p.status = st
                self._live_cache = None
        self._forget_stale(now)

    def _note_addr(self, addr: str) -> None:
        if addr in self._learned or len(self._learned) < _MAX_LEARNED:
            self._learned[addr] = self._clock()

    def _forget_stale(self, now: float) -> None:
        """Drop learned addresses that no live peer holds and nobody vouched for lately."""
        live = self._live_addrs()
        stale = [a for a, t in self._learned.items()
                 if a not in live and now - t > self.cfg.dead_after_s]
        for a in stale:
            del self._learned[a]
            if a not in self._static:
                self._t.disconnect(a)


__all__ = ["MAGIC", "EventSink", "Frame", "FrameError", "Gossip", "GossipConfig",
           "GossipStats", "Kind", "MemberSink", "decode_frame", "encode_frame",
           "zmq_transport"]
