"""Frame transports for gossip: ZeroMQ (ROUTER in, one DEALER per peer out; CURVE with the
mesh's keys) and in-memory.

A transport moves opaque frames to "host:port" addresses and hands received frames
to one callback. It never parses frames and never blocks: `send` drops (returns
False) rather than wait. Owned by the event loop; not thread-safe.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Literal, Protocol

import zmq
import zmq.asyncio

from peer.mesh.addr import parse_addr
from peer.mesh.keyring import CurveKeys, Keyring
from peer.mesh.zap import ZapHandler

log = logging.getLogger("banzai.transport")

FrameHandler = Callable[[bytes], None]


class Transport(Protocol):
    """Moves frames between gossip peers. Every method is non-blocking."""

    @property
    def address(self) -> str:
        """The bound "host:port" (valid after `open`)."""
        ...

    def open(self, on_frame: FrameHandler) -> str:
        """Bind and start delivering received frames to `on_frame`; returns the bound address."""
        ...

    def send(self, addr: str, frame: bytes) -> bool:
        """Queue `frame` to `addr` (connecting if needed); False if it was dropped."""
        ...

    def connect(self, addr: str) -> None:
        """Prepare a path to `addr` (idempotent)."""
        ...

    def disconnect(self, addr: str) -> None:
        """Forget the path to `addr` and drop what is queued for it."""
        ...

    def peer_key(self, addr: str, key_id: str) -> None:
        """`addr` announces that it serves `key_id` (CURVE transports reach it with the keys
        of that secret; others ignore it)."""
        ...

    @property
    def refused(self) -> int:
        """Connections refused below the frame layer (failed CURVE handshakes)."""
        ...

    @property
    def overflowed(self) -> int:
        """Frames received and dropped unread: the receive queue was full."""
        ...

    @property
    def first_dropped(self) -> int:
        """Frames sent that waited for a new connection in vain (dropped)."""
        ...

    async def close(self) -> None:
        """Stop receiving and release sockets (idempotent)."""
        ...


# -- ZeroMQ --------------------------------------------------------------------------


def _endpoint(addr: str) -> str:
    host, port = parse_addr(addr)
    h = f"[{host}]" if ":" in host else host
    return f"tcp://{h}:{port if port else '*'}"


# A receive turn reads at most READ_BUDGET frames off libzmq, then handles at most
# HANDLE_BUDGET and yields to the event loop: a connection sending faster than a frame is read
# and dropped can neither keep the handler from running nor starve the loop's timers.
READ_BUDGET = 64
HANDLE_BUDGET = 8

# A DEALER on which no send was accepted yet is unproven: its connection (and, with CURVE, its
# handshake, which needs the mesh's keys) is not done, or never will be (nothing listens there;
# an mDNS sighting any LAN host may announce). A frame to one waits for it (IMMEDIATE queues
# nothing on a pipe not yet connected, so it would be dropped), at most FIRST_WAIT_S and
# FIRST_FRAMES frames per address, retried every FIRST_RETRY_S.
FIRST_WAIT_S = 1.0
FIRST_FRAMES = 4
FIRST_RETRY_S = 0.005

# Key-id hints (`peer_key`) kept at most: every member's report names one, and members come
# and go; past it the least recently announced goes (its address is then reached with one
# DEALER per secret held, as before its first report).
MAX_HINTS = 4096


class _ConnQueue:
    """One connection's received frames waiting to be handled, and their bytes."""

    __slots__ = ("frames", "ident", "nbytes")

    def __init__(self, ident: bytes) -> None:
        self.ident = ident
        self.frames: deque[bytes] = deque()
        self.nbytes = 0

    def __len__(self) -> int:
        return len(self.frames)

    def push(self, frame: bytes) -> None:
        self.frames.append(frame)
        self.nbytes += len(frame)

    def pop_newest(self) -> bytes:
        frame = self.frames.pop()
        self.nbytes -= len(frame)
        return frame

    def pop_oldest(self) -> bytes:
        frame = self.frames.popleft()
        self.nbytes -= len(frame)
        return frame


_HANDSHAKE_FAILED = (zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                     | zmq.EVENT_HANDSHAKE_FAILED_AUTH)


class ZmqTransport:
    """pyzmq: a ROUTER bound at `bind` receives; one DEALER per peer address sends.

    DEALERs use LINGER 0, IMMEDIATE (nothing is queued to a peer that is not
    connected) and a bounded SNDHWM, so a dead peer costs no memory; ZeroMQ
    reconnects by itself when the peer comes back. The ROUTER refuses frames over
    `max_frame_bytes` at the libzmq level (MAXMSGSIZE drops that connection).

    With a `keyring`, every connection is CURVE: the ROUTER is a CURVE server with the
    keyring's served key and a ZAP handler admits only client keys of the keyring's
    secrets; a DEALER connects with the keys of the secret its peer serves (its announced
    key id, `peer_key`), or, not knowing it yet, with one DEALER per secret held (during a
    rotation), sending on whichever completed its handshake. Failed handshakes on the
    ROUTER are counted (`refused`).

    DEALERs are kept in two pools. A DEALER is unproven until a send on it is accepted (its
    connection, with CURVE its handshake, is done): at most `max_unproven` of those, the
    least recently used closed first, and a new address only ever displaces an unproven one,
    so addresses that lead nowhere (mDNS sightings any LAN host may announce, dead `--join`
    addresses) never close a member's DEALER. A proven DEALER stays until `max_connections`
    proven ones are open and another one is proven: then the least recently used proven one
    is closed (SWIM talks to a few members per period, not to all). A frame to an unproven
    DEALER made less than FIRST_WAIT_S ago waits for its connection (at most FIRST_FRAMES
    per address, and `max_frame_bytes` in all) instead of being dropped, so a DEALER made
    again after an eviction loses nothing while its peer answers.

    A connection whose handshake is not done within `handshake_ivl_ms` is closed, on both
    sides (libzmq's default, 30 s, let a LAN host hold a descriptor per idle connection for
    that long; a handshake between peers takes milliseconds).

    Received frames wait in queues, one per connection, of at most `rcvhwm` frames and
    `max_queue_bytes` bytes in all, handled round robin between connections: each turn takes
    up to READ_BUDGET frames libzmq holds, handles up to HANDLE_BUDGET and yields to the
    loop. Over either bound the connection holding the most loses its newest frames
    (`overflowed`; gossip repairs what was lost): a flood fills its own queue, and an honest
    connection's frames still get their turns. libzmq holds what the turns do not read, at
    most RCVHWM (`rcvhwm`) frames per connection.
    """

    def __init__(self, bind: str = "127.0.0.1:0", *, max_frame_bytes: int = 16 << 20,
                 sndhwm: int = 1000, rcvhwm: int = 10000, reconnect_ivl_max_ms: int = 2000,
                 keyring: Keyring | None = None, max_connections: int = 128,
                 handshake_ivl_ms: int = 10_000, max_queue_bytes: int = 64 << 20,
                 max_unproven: int = 32) -> None:
        parse_addr(bind)
        if max_connections < 1 or max_unproven < 1:
            raise ValueError("max_connections and max_unproven must be >= 1")
        self._handshake_ms = handshake_ivl_ms
        if max_queue_bytes < max_frame_bytes:
            raise ValueError("max_queue_bytes must be >= max_frame_bytes")
        self._max_queue_bytes = max_queue_bytes
        # connection (ROUTER identity) -> its frames waiting, in the order of their turns
        self._queues: dict[bytes, _ConnQueue] = {}
        self._queued = 0
        self._queued_bytes = 0
        self._overflowed = 0
        self._max_conn = max_connections
        self._max_unproven = max_unproven
        # addresses whose DEALERs no send was accepted on yet -> when they were made
        # (least recently used first); the other addresses of `_dealers` are proven
        self._unproven: dict[str, float] = {}
        # frames waiting for an unproven DEALER's connection, oldest first
        self._waiting: dict[str, deque[bytes]] = {}
        self._waiting_bytes = 0
        self._retry: asyncio.TimerHandle | None = None
        self.first_dropped = 0  # frames that waited for a connection in vain
        self._keyring = keyring
        self._zap: ZapHandler | None = None
        self._monitor: zmq.asyncio.Socket | None = None
        self._monitor_task: asyncio.Task[None] | None = None
        self._refused = 0
        self._hints: dict[str, str] = {}  # addr -> the key id it serves
        self._bind = bind
        self._max = max_frame_bytes
        self._sndhwm = sndhwm
        self._rcvhwm = rcvhwm
        self._reconnect_max = reconnect_ivl_max_ms
        self._ctx: zmq.asyncio.Context | None = None
        self._router: zmq.asyncio.Socket | None = None
        self._dealers: dict[str, list[zmq.Socket[bytes]]] = {}
        self._task: asyncio.Task[None] | None = None
        self._address = ""

    @property
    def address(self) -> str:
        return self._address

    @property
    def refused(self) -> int:
        return self._refused

    @property
    def overflowed(self) -> int:
        return self._overflowed

    def open(self, on_frame: FrameHandler) -> str:
        """Bind the ROUTER and start the receive task; call from the event loop."""
        if self._router is not None:
            return self._address
        self._ctx = zmq.asyncio.Context()
        r = self._ctx.socket(zmq.ROUTER)
        r.setsockopt(zmq.LINGER, 0)
        r.setsockopt(zmq.RCVHWM, self._rcvhwm)
        r.setsockopt(zmq.MAXMSGSIZE, self._max)
        r.setsockopt(zmq.HANDSHAKE_IVL, self._handshake_ms)
        if self._keyring is not None:
            self._zap = ZapHandler(self._ctx, self._keyring.admits)
            self._zap.start()  # bound before the ROUTER, so no handshake goes unchecked
            r.setsockopt(zmq.ZAP_DOMAIN, b"banzai")
            r.setsockopt(zmq.CURVE_SERVER, 1)
            r.setsockopt(zmq.CURVE_SECRETKEY, self._keyring.serving.server_secret)
            self._monitor = r.get_monitor_socket(_HANDSHAKE_FAILED)
            self._monitor_task = asyncio.get_running_loop().create_task(self._count_refused())
        r.bind(_endpoint(self._bind))
        self._router = r
        last = r.getsockopt_string(zmq.LAST_ENDPOINT)  # tcp://127.0.0.1:PORT
        self._address = last.removeprefix("tcp://")
        self._task = asyncio.get_running_loop().create_task(self._recv_loop(on_frame))
        return self._address

    async def _recv_loop(self, on_frame: FrameHandler) -> None:
        r = self._router
        assert r is not None
        while True:
            try:
                if not self._queued:
                    self._hold(await r.recv_multipart())
                for _ in range(READ_BUDGET):  # what libzmq holds, up to a turn's budget
                    self._hold(await r.recv_multipart(zmq.NOBLOCK))
            except zmq.Again:
                pass
            except asyncio.CancelledError:
                raise
            except zmq.ZMQError as e:  # socket closed under us
                log.debug("zmq receive stopped: %s", e)
                return
            for _ in range(HANDLE_BUDGET):
                frame = self._next()
                if frame is None:
                    break
                try:
                    on_frame(frame)
                except Exception:  # the handler must not raise; never let it kill the loop
                    log.exception("frame handler failed")
            await asyncio.sleep(0)  # the loop's other tasks and timers, even under a flood

    def _next(self) -> bytes | None:
        """The next frame to handle: the oldest of the next connection in turn (round robin
        over the connections with frames waiting)."""
        queues = self._queues
        if not queues:
            return None
        ident = next(iter(queues))
        q = queues.pop(ident)
        frame = q.pop_oldest()
        if q:
            queues[ident] = q  # its turn again after the others'
        self._queued -= 1
        self._queued_bytes -= len(frame)
        return frame

    def _hold(self, parts: list[bytes]) -> None:
        """Queue a received frame behind its connection's. Over `rcvhwm` frames or
        `max_queue_bytes` bytes in all, the connection holding the most loses its newest
        frames (this one, if it is that connection): a flooding connection fills its own
        queue, not the others' (dropped frames are counted)."""
        if len(parts) != 2:  # [identity, frame]; anything else is not ours
            return
        ident, frame = parts
        queues = self._queues
        own = queues.get(ident)
        while (self._queued >= self._rcvhwm
               or self._queued_bytes + len(frame) > self._max_queue_bytes):
            if not queues:
                self._overflowed += 1
                return
            by_bytes = self._queued < self._rcvhwm
            top = max(queues.values(), key=lambda q: q.nbytes if by_bytes else len(q))
            mine = (0 if own is None else own.nbytes if by_bytes else len(own)) + (
                len(frame) if by_bytes else 1)
            if top is own or mine >= (top.nbytes if by_bytes else len(top)):
                self._overflowed += 1
                return
            old = top.pop_newest()
            self._queued -= 1
            self._queued_bytes -= len(old)
            self._overflowed += 1
            if not top:
                queues.pop(top.ident)
        if own is None:
            own = queues[ident] = _ConnQueue(ident)
        own.push(frame)
        self._queued += 1
        self._queued_bytes += len(frame)

    async def _count_refused(self) -> None:
        assert self._monitor is not None
        while True:
            try:
                await self._monitor.recv_multipart()
            except zmq.ZMQError:
                return
            self._refused += 1

    def _keys_for(self, addr: str) -> list[CurveKeys | None]:
        """The keys to try towards `addr`: its announced key's, else every one we hold."""
        if self._keyring is None:
            return [None]
        hint = self._hints.get(addr)
        if hint is None:
            return list(self._keyring.keys)
        keys = self._keyring.for_key_id(hint)
        if keys is None:
            log.info("gossip peer %s serves key %s, of a secret this peer lacks", addr, hint)
            return []
        return [keys]

    def connect(self, addr: str) -> None:
        if addr in self._dealers or self._ctx is None:
            return
        while len(self._unproven) >= self._max_unproven:
            self._close_dealers(next(iter(self._unproven)))  # the least recently used
        dealers: list[zmq.Socket[bytes]] = []
        for keys in self._keys_for(addr):
            d: zmq.Socket[bytes] = zmq.Socket(self._ctx, zmq.DEALER)
            d.setsockopt(zmq.LINGER, 0)
            d.setsockopt(zmq.SNDHWM, self._sndhwm)
            d.setsockopt(zmq.IMMEDIATE, 1)
            d.setsockopt(zmq.RECONNECT_IVL_MAX, self._reconnect_max)
            d.setsockopt(zmq.HANDSHAKE_IVL, self._handshake_ms)
            if keys is not None:
                d.setsockopt(zmq.CURVE_SERVERKEY, keys.server_public)
                d.setsockopt(zmq.CURVE_PUBLICKEY, keys.client_public)
                d.setsockopt(zmq.CURVE_SECRETKEY, keys.client_secret)
            try:
                d.connect(_endpoint(addr))
            except (ValueError, zmq.ZMQError) as e:  # a bad address: parse_addr or libzmq
                d.close(linger=0)
                log.info("gossip: cannot connect to %r: %s", addr[:60], e)
                continue
            dealers.append(d)
        self._dealers[addr] = dealers  # none: every send to it drops
        self._unproven[addr] = time.monotonic()

    def _close_dealers(self, addr: str) -> None:
        for d in self._dealers.pop(addr, ()):
            d.close(linger=0)
        self._unproven.pop(addr, None)
        q = self._waiting.pop(addr, None)
        if q:
            self._waiting_bytes -= sum(map(len, q))
            self.first_dropped += len(q)

    def _proven(self, addr: str) -> None:
        """A send on `addr`'s DEALER was accepted: it joins the proven pool, and the least
        recently used proven DEALER beyond `max_connections` is closed."""
        if self._unproven.pop(addr, None) is None:
            return
        over = len(self._dealers) - len(self._unproven) - self._max_conn
        if over > 0:
            old = [a for a in self._dealers if a not in self._unproven and a != addr]
            for a in old[:over]:
                self._close_dealers(a)

    def disconnect(self, addr: str) -> None:
        self._close_dealers(addr)
        self._hints.pop(addr, None)

    def peer_key(self, addr: str, key_id: str) -> None:
        if self._keyring is None:
            return
        old = self._hints.pop(addr, None)
        self._hints[addr] = key_id  # the most recently announced last
        if old == key_id:
            return
        while len(self._hints) > MAX_HINTS:  # the oldest goes: its DEALER, if any, stays
            self._hints.pop(next(iter(self._hints)))
        self._close_dealers(addr)  # reconnected with the right keys on the next send

    def send(self, addr: str, frame: bytes) -> bool:
        if self._ctx is None:
            return False
        self.connect(addr)
        dealers = self._dealers.pop(addr)
        self._dealers[addr] = dealers  # the most recently used now
        made = self._unproven.pop(addr, None)
        if made is not None:
            self._unproven[addr] = made
        if addr in self._waiting:  # behind the frames already waiting, in order
            return self._wait(addr, frame)
        if self._try(addr, dealers, frame):
            return True
        if dealers and made is not None and time.monotonic() - made < FIRST_WAIT_S:
            return self._wait(addr, frame)
        return False

    def _try(self, addr: str, dealers: list[zmq.Socket[bytes]], frame: bytes) -> bool:
        for d in dealers:
            try:
                d.send(frame, zmq.NOBLOCK, copy=len(frame) < 65536)
            except zmq.Again:  # not connected (IMMEDIATE) or HWM reached: drop, gossip repairs
                continue
            self._proven(addr)
            return True
        return False

    def _wait(self, addr: str, frame: bytes) -> bool:
        """Hold `frame` until `addr`'s new DEALER is connected (False: over the bounds)."""
        q = self._waiting.get(addr)
        if (q is not None and len(q) >= FIRST_FRAMES) or (
                self._waiting_bytes + len(frame) > self._max):
            return False
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop to retry on
            return False
        if q is None:
            q = self._waiting[addr] = deque()
        q.append(frame)
        self._waiting_bytes += len(frame)
        if self._retry is None:
            self._retry = loop.call_later(FIRST_RETRY_S, self._send_waiting)
        return True

    def _send_waiting(self) -> None:
        """Send what waits for a connection, oldest first; drop what waited FIRST_WAIT_S."""
        self._retry = None
        now = time.monotonic()
        for addr in list(self._waiting):
            q = self._waiting.get(addr)  # gone if a DEALER proven here closed its
            if q is None:
                continue
            while q and self._try(addr, self._dealers.get(addr, []), q[0]):
                self._waiting_bytes -= len(q.popleft())
            if q and now - self._unproven.get(addr, now - FIRST_WAIT_S) >= FIRST_WAIT_S:
                self._waiting_bytes -= sum(map(len, q))  # never connected, or full once it was
                self.first_dropped += len(q)
                q.clear()
            if not q:
                self._waiting.pop(addr, None)
        if self._waiting and self._ctx is not None:
            self._retry = asyncio.get_running_loop().call_later(FIRST_RETRY_S,
                                                                self._send_waiting)

    async def close(self) -> None:
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        for t in (self._task, self._monitor_task):
            if t is not None:
                t.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await t
        self._task = self._monitor_task = None
        self._queues.clear()
        self._queued = self._queued_bytes = 0
        if self._zap is not None:
            await self._zap.close()
            self._zap = None
        if self._router is not None and self._monitor is not None:
            with contextlib.suppress(zmq.ZMQError):
                self._router.disable_monitor()
            self._monitor.close(linger=0)
            self._monitor = None
        for addr in list(self._dealers):
            self.disconnect(addr)
        if self._router is not None:
            self._router.close(linger=0)
            self._router = None
        if self._ctx is not None:
            self._ctx.term()
            self._ctx = None


# -- In memory -----------------------------------------------------------------------


class MemoryNetwork:
    """An in-process network of MemoryTransports with loss, duplication, reordering and
    partitions drawn from a seeded RNG.

    mode "queue": frames wait until `pump()` delivers them (deterministic; no
    re-entrancy into a handler that is still sending). mode "loop": each frame is
    delivered by `loop.call_soon`.
    """

    def __init__(self, *, loss: float = 0.0, duplicate: float = 0.0, reorder: bool = False,
                 seed: int = 0, mode: Literal["queue", "loop"] = "queue") -> None:
        self.loss = loss
        self.duplicate = duplicate
        self.reorder = reorder
        self.mode = mode
        self.rng = random.Random(seed)
        self._nodes: dict[str, MemoryTransport] = {}
        self._group: dict[str, int] = {}
        self._queue: deque[tuple[str, bytes]] = deque()
        self._next_port = 7000
        self.sent = 0
        self.dropped = 0
        self.delivered = 0
        self.bytes_sent = 0

    def transport(self, addr: str | None = None) -> MemoryTransport:
        """A new transport on this network at `addr` (default 127.0.0.1:<next port>)."""
        if addr is None:
            self._next_port += 1
            addr = f"127.0.0.1:{self._next_port}"
        parse_addr(addr)
        return MemoryTransport(self, addr)

    def partition(self, *groups: Iterable[str]) -> None:
        """Split the network: addresses in different groups cannot reach each other;
        addresses in no group form one more group."""
        self._group = {a: i + 1 for i, g in enumerate(groups) for a in g}

    def heal(self) -> None:
        """Remove every partition."""
        self._group = {}

    def _attach(self, t: MemoryTransport) -> None:
        self._nodes[t.address] = t

    def _detach(self, t: MemoryTransport) -> None:
        if self._nodes.get(t.address) is t:
            del self._nodes[t.address]

    def _reachable(self, src: str, dst: str) -> bool:
        return self._group.get(src, 0) == self._group.get(dst, 0) and dst in self._nodes

    def _send(self, src: str, dst: str, frame: bytes) -> bool:
        self.sent += 1
        self.bytes_sent += len(frame)
        if not self._reachable(src, dst) or self.rng.random() < self.loss:
            self.dropped += 1
            return True  # like a real network, the sender cannot tell
        copies = 2 if self.duplicate and self.rng.random() < self.duplicate else 1
        for _ in range(copies):
            if self.mode == "loop":
                asyncio.get_running_loop().call_soon(self._deliver, dst, frame)
            else:
                self._queue.append((dst, frame))
        return True

    def _deliver(self, dst: str, frame: bytes) -> None:
        t = self._nodes.get(dst)
        if t is not None and t.handler is not None:
            self.delivered += 1
            t.handler(frame)

    def pump(self, max_frames: int = 1_000_000) -> int:
        """Deliver queued frames, including those sent while delivering; returns the count."""
        n = 0
        while self._queue and n < max_frames:
            if self.reorder and len(self._queue) > 1:
                i = self.rng.randrange(len(self._queue))
                self._queue.rotate(-i)
            dst, frame = self._queue.popleft()
            self._deliver(dst, frame)
            n += 1
        return n

    @property
    def pending(self) -> int:
        return len(self._queue)


class MemoryTransport:
    """One endpoint of a MemoryNetwork; same contract as ZmqTransport."""

    def __init__(self, net: MemoryNetwork, addr: str) -> None:
        self.net = net
        self._address = addr
        self.handler: FrameHandler | None = None

    @property
    def address(self) -> str:
        return self._address

    def open(self, on_frame: FrameHandler) -> str:
        self.handler = on_frame
        self.net._attach(self)
        return self._address

    def send(self, addr: str, frame: bytes) -> bool:
        if self.handler is None:
            return False
        return self.net._send(self._address, addr, frame)

    def connect(self, addr: str) -> None:
        pass

    def disconnect(self, addr: str) -> None:
        pass

    def peer_key(self, addr: str, key_id: str) -> None:
        pass

    @property
    def refused(self) -> int:
        return 0

    @property
    def overflowed(self) -> int:
        return 0

    @property
    def first_dropped(self) -> int:
        return 0

    def close_now(self) -> None:
        """Synchronous close (the peer vanishes from the network)."""
        self.net._detach(self)
        self.handler = None

    async def close(self) -> None:
        self.close_now()
