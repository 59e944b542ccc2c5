"""What HTTP clients that are slow or many may hold of a peer: each request's header block
within a deadline, idle keep-alive closed, a body that stops arriving answered 408, a
response the client stops reading cut, caps on open connections (in total and per remote
address) and on event streams. Event loop only.

aiohttp has the idle keep-alive timeout (web.AppRunner's `keepalive_timeout`, which
main.py sets to idle_timeout_s) and none of the others: `GuardedSite` listens (in plain TCP,
also for TLS) with a protocol (`_Conn`) that sits between asyncio and aiohttp's own, admits or
refuses each connection, then upgrades it to TLS (`loop.start_tls`) if the site serves TLS,
sees every byte arrive and closes the connections past a deadline;
`Gate.middleware` (first in the app's list) tells it where each request's handling starts
and ends. Only public aiohttp API is used."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import ssl
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, fields
from typing import Any, Protocol, cast

from aiohttp import StreamReader, web
from yarl import URL

from peer.errors import ConfigError, RequestTimeout, Unavailable

log = logging.getLogger("banzai.http")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
WARN_EVERY_S = 60.0  # refused connections: at most one warning this often
FD_RESERVE = 256  # descriptors left to the rest of the peer (log, store, gossip, workers,
# its own fetches) below the process's limit when that limit bounds the connections


class LimitSettings(Protocol):
    """The PeerConfig fields HttpLimits is built from."""

    @property
    def http_header_timeout_s(self) -> float: ...
    @property
    def http_idle_timeout_s(self) -> float: ...
    @property
    def http_body_idle_s(self) -> float: ...
    @property
    def http_max_connections(self) -> int: ...
    @property
    def http_max_connections_per_address(self) -> int: ...
    @property
    def http_max_event_streams(self) -> int: ...
    @property
    def http_write_timeout_s(self) -> float: ...
    @property
    def http_max_snapshot_serves(self) -> int: ...
    @property
    def http_snapshot_wait_s(self) -> float: ...


@dataclass(frozen=True)
class HttpLimits:
    """What one client, and all of them, may hold (docs/security.md, "Slow and many HTTP
    clients"). Each is the PeerConfig setting `http_` + its name."""

    header_timeout_s: float = 10.0  # a header block, from the connection's opening or,
    # on a kept-alive connection, from its first byte (Go's ReadHeaderTimeout); and a TLS
    # handshake
    idle_timeout_s: float = 60.0  # a kept-alive connection waiting for a request (aiohttp's
    # keepalive_timeout; its default is 3,630)
    body_idle_s: float = 30.0  # a request body from which no byte arrives: 408
    max_connections: int = 1024
    max_connections_per_address: int = 128
    max_event_streams: int = 64
    write_timeout_s: float = 60.0  # a response the client does not read: its transport's
    # buffer above the high-water mark (asyncio's pause_writing) for this long, not resumed
    max_snapshot_serves: int = 2  # GET /api/snapshot (and ?digest=1) at once: each holds a
    # thread of the default pool, which store calls wait for, for seconds on a big log
    snapshot_wait_s: float = 10.0  # one more waits this long for a turn, then gets 503

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not value > 0:  # (NaN too)
                raise ConfigError(f"http_{f.name}: must be positive, got {value}",
                                  field=f"http_{f.name}")

    @classmethod
    def from_settings(cls, cfg: LimitSettings) -> HttpLimits:
        return cls(cfg.http_header_timeout_s, cfg.http_idle_timeout_s, cfg.http_body_idle_s,
                   cfg.http_max_connections, cfg.http_max_connections_per_address,
                   cfg.http_max_event_streams, cfg.http_write_timeout_s,
                   cfg.http_max_snapshot_serves, cfg.http_snapshot_wait_s)


class Gate:
    """A peer's HTTP connections (admitted under the caps, timed while they read) and its
    event streams. Its `middleware` must come first in the app's middlewares."""

    def __init__(self, limits: HttpLimits, open_files: int | None = None) -> None:
        self.limits = limits
        self.open_files = open_files  # the process's limit on descriptors (None: none)
        self.max_connections = connection_cap(limits.max_connections, open_files)
        self._open: dict[asyncio.BaseTransport, _Conn] = {}
        self._per_address: dict[str, int] = {}
        self._streams = 0
        self.refused = 0  # connections closed at once: a cap was reached
        self.header_timeouts = 0  # connections closed: a header block came too slowly
        self.body_timeouts = 0  # requests answered 408: their body stopped arriving
        self.write_timeouts = 0  # connections closed: their client stopped reading
        self._warned_at = -WARN_EVERY_S

    def protocol(self, make: Callable[[], asyncio.Protocol],
                 tls: ssl.SSLContext | None = None) -> Callable[[], asyncio.Protocol]:
        """The protocol factory of a plain TCP listening socket whose connections `make`
        serves; with `tls`, each admitted connection is upgraded to TLS first."""
        return lambda: _Conn(self, make, tls)

    def stats(self) -> dict[str, int]:
        """For /api/health."""
        return {"connections": len(self._open), "event_streams": self._streams,
                "refused_connections": self.refused, "header_timeouts": self.header_timeouts,
                "body_timeouts": self.body_timeouts, "write_timeouts": self.write_timeouts}

    def _enter(self, transport: asyncio.BaseTransport, conn: _Conn, addr: str) -> bool:
        lim, n = self.limits, self._per_address.get(addr, 0)
        if len(self._open) >= self.max_connections:
            return self._refuse(addr, f"{self.max_connections} connections open "
                                      "(http_max_connections)")
        if n >= lim.max_connections_per_address:
            return self._refuse(addr, f"{n} connections open from that address "
                                      "(http_max_connections_per_address)")
        self._per_address[addr] = n + 1
        self._open[transport] = conn
        return True

    def _refuse(self, addr: str, why: str) -> bool:
        self.refused += 1
        now = time.monotonic()
        if now - self._warned_at >= WARN_EVERY_S:
            self._warned_at = now
            log.warning("HTTP: refused a connection from %s: %s; %d refused since start",
                        addr, why, self.refused)
        return False

    def _rekey(self, old: asyncio.BaseTransport, new: asyncio.BaseTransport) -> None:
        """A connection upgraded to TLS: aiohttp sees the TLS transport, not the TCP one."""
        self._open[new] = self._open.pop(old)

    def _abort_handshakes(self) -> None:
        """Closes the connections whose TLS handshake is still in progress (the site stops:
        aiohttp knows nothing of them)."""
        for conn in list(self._open.values()):
            conn.abort_handshake()

    def _leave(self, transport: asyncio.BaseTransport, addr: str) -> None:
        del self._open[transport]
        n = self._per_address.pop(addr) - 1
        if n:
            self._per_address[addr] = n

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Marks where the handling of a request starts and ends on its connection."""
        conn = self._open.get(request.transport) if request.transport is not None else None
        if conn is None:  # not served through a GuardedSite (aiohttp's test server)
            return await handler(request)
        conn.begin(request.content)
        try:
            resp = await handler(request)
        finally:
            stalled = conn.end()
        if stalled:  # the rest of its body will not be read: nothing more on this connection
            resp.force_close()
        return resp

    def abandon_body(self, request: web.Request) -> None:
        """The handler reads no more of `request`'s body (it broke a bound): the bytes still
        to come are dropped and the response closes the connection (no lingering read)."""
        conn = self._open.get(request.transport) if request.transport is not None else None
        if conn is not None:
            conn.abandon()

    @contextlib.contextmanager
    def event_stream(self, request: web.Request, on_lost: Callable[[], None]) -> Iterator[None]:
        """Holds one of the `max_event_streams` places while the block runs (else
        Unavailable); `on_lost()` is called, on the loop, if the request's connection is
        lost meanwhile (a stream waiting for events would only see it at its next write)."""
        cap = self.limits.max_event_streams
        if self._streams >= cap:
            raise Unavailable(f"this peer serves at most {cap} event streams at once "
                              "(http_max_event_streams); close one or retry later")
        conn = self._open.get(request.transport) if request.transport is not None else None
        self._streams += 1
        if conn is not None:
            conn.on_lost = on_lost
        try:
            yield
        finally:
            self._streams -= 1
            if conn is not None:
                conn.on_lost = None


def connection_cap(configured: int, open_files: int | None) -> int:
    """`configured`, or less where the process may open only `open_files` descriptors (its
    soft RLIMIT_NOFILE; None: no limit): connections must not take the peer's last ones."""
    if open_files is None or open_files - FD_RESERVE >= configured:
        return configured
    return max(1, open_files - FD_RESERVE)


def open_files_limit() -> int | None:
    """This process's soft RLIMIT_NOFILE (None: unlimited)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return None if soft == resource.RLIM_INFINITY else soft


_HEAD, _BUSY, _IDLE = 0, 1, 2  # a connection's phases (_Conn._phase)


class _Conn(asyncio.Protocol):
    """One connection: the aiohttp protocol it feeds, and its deadline. Phases: _HEAD, a
    header block is arriving (a deadline); _BUSY, from its end (or its handler's start) to
    the handler's end (a body's bytes are timed while it is incomplete); _IDLE, until the next
    byte (aiohttp closes it after its keep-alive timeout). A response being written, an
    event stream included, is timed only while the client reads none of it: from asyncio's
    pause_writing (its send buffer is full) to resume_writing, at most write_timeout_s.
    With `tls`, the connection is admitted, then its handshake runs under the first header
    block's deadline (one deadline for both), and aiohttp sees it only once the handshake is
    done."""

    __slots__ = ("_addr", "_early", "_early_eof", "_gate", "_handshake", "_inner",
                 "_last_byte", "_make", "_payload", "_phase", "_stalled", "_started", "_tail",
                 "_timer", "_tls", "_transport", "_write_timer", "on_lost")

    def __init__(self, gate: Gate, make: Callable[[], asyncio.Protocol],
                 tls: ssl.SSLContext | None = None) -> None:
        self._gate, self._make, self._tls = gate, make, tls
        self._handshake: asyncio.Task[None] | None = None  # the TLS upgrade in progress
        self._early: list[bytes] = []  # bytes decrypted before the upgrade's task resumed
        self._early_eof = False
        self._inner: asyncio.Protocol | None = None
        self._transport: asyncio.Transport | None = None
        self._addr = ""
        self._phase = _HEAD
        self._started = False  # a byte other than CR/LF of this header block arrived
        self._tail = b""  # the header block's last 3 bytes (an end may span two reads)
        self._timer: asyncio.TimerHandle | None = None
        self._write_timer: asyncio.TimerHandle | None = None  # armed while writing is paused
        self._payload: StreamReader | None = None  # the body being received
        self._last_byte = 0.0
        self._stalled = False
        self.on_lost: Callable[[], None] | None = None  # Gate.event_stream's

    def connection_made(self, base: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, base)  # (a stream server's)
        peer = transport.get_extra_info("peername")
        addr = str(peer[0]) if isinstance(peer, tuple) and peer else ""
        if not self._gate._enter(transport, self, addr):
            transport.abort()  # before aiohttp sees it: no parser, no task
            return
        self._transport, self._addr = transport, addr
        self._arm(self._gate.limits.header_timeout_s, self._head_expired)
        if self._tls is None:
            self._inner = self._make()
            self._inner.connection_made(transport)
        else:  # (a reference held: the task is the connection's until it ends)
            self._handshake = asyncio.get_running_loop().create_task(
                self._upgrade(transport, self._tls))

    async def _upgrade(self, tcp: asyncio.Transport, tls: ssl.SSLContext) -> None:
        """The TLS handshake of an admitted connection, then aiohttp's protocol over it. A
        handshake that fails or outlasts the header deadline closes the connection."""
        tls_transport: asyncio.Transport | None = None
        try:
            tls_transport = await asyncio.get_running_loop().start_tls(
                tcp, self, tls, server_side=True,
                ssl_handshake_timeout=self._gate.limits.header_timeout_s)
        except Exception as e:  # (ssl.SSLError, a reset, asyncio's own handshake timeout)
            log.debug("HTTP: TLS handshake with %s failed: %r", self._addr, e)
        finally:
            self._handshake = None
            if tls_transport is None or self._transport is not tcp:
                tcp.abort()  # failed, cut by the header deadline, cancelled, or lost
                self.connection_lost(None)  # (nothing if asyncio already called it)
        if tls_transport is None or self._transport is not tcp:
            return
        self._gate._rekey(tcp, tls_transport)
        self._transport = tls_transport
        self._inner = self._make()
        self._inner.connection_made(tls_transport)
        early, self._early = self._early, []
        for data in early:
            self.data_received(data)
        if self._early_eof:
            self._inner.eof_received()

    def abort_handshake(self) -> None:
        """Closes the connection if its TLS handshake is in progress."""
        if self._handshake is not None and self._transport is not None:
            self._transport.abort()

    def data_received(self, data: bytes) -> None:
        inner = self._inner
        if inner is None or self._stalled:
            if self._handshake is not None and not self._stalled:
                self._early.append(data)  # decrypted before _upgrade resumed: kept for it
            return  # refused; or its body stalled: nothing more is read
        phase = self._phase
        if phase == _BUSY:
            if self._payload is not None:
                self._last_byte = asyncio.get_running_loop().time()
        elif phase == _IDLE:  # a next request's first bytes
            self._phase, self._started, self._tail = _HEAD, False, b""
            if not self._head_ends(data):
                self._arm(self._gate.limits.header_timeout_s, self._head_expired)
        elif self._head_ends(data):
            self._cancel()
        inner.data_received(data)

    def eof_received(self) -> bool | None:
        if self._inner is None:
            self._early_eof = self._handshake is not None
            return None
        return self._inner.eof_received()

    def pause_writing(self) -> None:
        if self._transport is not None and self._write_timer is None:
            self._write_timer = asyncio.get_running_loop().call_later(
                self._gate.limits.write_timeout_s, self._write_expired)
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._cancel_write()
        if self._inner is not None:
            self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel()
        self._cancel_write()
        transport, self._transport = self._transport, None
        if transport is None:
            return  # refused at the door
        self._gate._leave(transport, self._addr)
        if self.on_lost is not None:
            self.on_lost()
        if self._inner is not None:
            self._inner.connection_lost(exc)

    # -- the handling of a request (Gate.middleware) ---------------------------------------
    def begin(self, payload: StreamReader) -> None:
        self._phase = _BUSY
        self._cancel()
        if not payload.is_eof():  # (feed_eof not called yet: bytes of the body to come)
            self._payload = payload
            self._last_byte = asyncio.get_running_loop().time()
            self._arm(self._gate.limits.body_idle_s, self._body_check)

    def end(self) -> bool:
        """The handler returned; whether the request's body stalled."""
        self._phase, self._payload = _IDLE, None
        self._cancel()
        return self._stalled

    # -- deadlines -------------------------------------------------------------------------
    def _head_ends(self, data: bytes) -> bool:
        """Whether `data` ends the header block (an empty line; leading ones are skipped, as
        servers may: RFC 9112 2.2). Bare LFs count as CRLFs: never later than aiohttp."""
        if not self._started:
            if data[:1] in (b"\r", b"\n"):
                data = data.lstrip(b"\r\n")
                if not data:
                    return False
            self._started = True
        tail = self._tail
        if (b"\n\r\n" in data or b"\n\n" in data
                or (tail and (b"\n\r\n" in (edge := tail + data[:3]) or b"\n\n" in edge))):
            self._phase = _BUSY
            return True
        self._tail = (tail + data[-3:])[-3:]
        return False

    def _arm(self, delay_s: float, callback: Callable[[], None]) -> None:
        self._cancel()
        self._timer = asyncio.get_running_loop().call_later(delay_s, callback)

    def _cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _cancel_write(self) -> None:
        if self._write_timer is not None:
            self._write_timer.cancel()
            self._write_timer = None

    def _write_expired(self) -> None:
        self._write_timer = None
        if self._transport is not None:
            self._gate.write_timeouts += 1
            log.info("HTTP: closed a connection from %s: it read nothing of its response for "
                     "%g s (http_write_timeout_s)", self._addr,
                     self._gate.limits.write_timeout_s)
            self._transport.abort()

    def _head_expired(self) -> None:
        self._timer = None
        if self._phase == _HEAD and self._transport is not None:
            self._gate.header_timeouts += 1
            log.debug("HTTP: closed a connection from %s: no complete TLS handshake and request "
                      "headers within %g s (http_header_timeout_s)", self._addr,
                      self._gate.limits.header_timeout_s)
            self._transport.abort()

    def _body_check(self) -> None:
        self._timer = None
        payload, transport = self._payload, self._transport
        if payload is None or transport is None or payload.is_eof():
            return
        limit = self._gate.limits.body_idle_s
        now = asyncio.get_running_loop().time()
        if not transport.is_reading():  # aiohttp paused reading: its handler is behind, not
            self._last_byte = now  # the client
        elif now - self._last_byte >= limit:
            self._stall(payload, limit)
            return
        self._timer = asyncio.get_running_loop().call_at(self._last_byte + limit,
                                                         self._body_check)

    def abandon(self) -> None:
        """Gate.abandon_body's."""
        payload = self._payload
        if payload is not None and not payload.is_eof() and not self._stalled:
            self._stalled = True
            self._cancel()
            payload.feed_eof()

    def _stall(self, payload: StreamReader, limit: float) -> None:
        self._stalled = True
        self._gate.body_timeouts += 1
        log.info("HTTP: a request body from %s stopped arriving (no byte for %g s)",
                 self._addr, limit)
        payload.set_exception(RequestTimeout(
            f"the request body stopped arriving: no byte for {limit:g} s (http_body_idle_s)",
            field="body"))  # the handler's read raises it: a 408 through peer/errors_http.py
        payload.feed_eof()  # so that aiohttp does not wait for the rest before closing


class GuardedSite(web.BaseSite):
    """web.TCPSite's equivalent whose connections pass `gate`: refused over a cap at once,
    then timed; with `ssl_context`, a TLS handshake starts once the connection is admitted
    (it counts in the caps) and must end within header_timeout_s."""

    __slots__ = ("_factory", "_gate", "_host", "_listener", "_port", "_queue", "_tls")

    def __init__(self, runner: web.BaseRunner, gate: Gate, host: str, port: int, *,
                 ssl_context: ssl.SSLContext | None = None, backlog: int = 128) -> None:
        super().__init__(runner, ssl_context=ssl_context, backlog=backlog)
        server = runner.server
        assert server is not None  # (BaseSite refuses a runner not set up)
        self._factory = gate.protocol(server, ssl_context)
        self._gate, self._host, self._port = gate, host, port
        self._tls, self._queue = ssl_context, backlog
        self._listener: asyncio.Server | None = None

    @property
    def name(self) -> str:
        scheme = "https" if self._tls else "http"
        return str(URL.build(scheme=scheme, host=self._host or "0.0.0.0", port=self.port))

    @property
    def port(self) -> int:
        """The bound port (the one asked for until started)."""
        if self._listener is not None and self._listener.sockets:
            return int(self._listener.sockets[0].getsockname()[1])
        return self._port

    async def start(self) -> None:
        await super().start()
        self._listener = await asyncio.get_running_loop().create_server(
            self._factory, self._host or None, self._port, backlog=self._queue)
        self._server = self._listener  # what aiohttp's runner.addresses reads

    async def stop(self) -> None:
        if self._listener is not None:
            self._listener.close()
        self._gate._abort_handshakes()
        await super().stop()


async def serve(app: web.Application, gate: Gate, host: str, port: int, *,
                ssl_context: ssl.SSLContext | None = None, **runner_kwargs: Any,
                ) -> tuple[web.AppRunner, GuardedSite]:
    """`app` served on HOST:PORT through `gate`, with aiohttp's keep-alive timeout set to
    idle_timeout_s (its default is 3,630 s); `runner.cleanup()` stops it."""
    if gate.max_connections < gate.limits.max_connections:
        log.warning("HTTP: at most %d open connections, not %d (http_max_connections): this "
                    "process may open only %s files; raise its limit (ulimit -n, systemd's "
                    "LimitNOFILE) or lower the setting", gate.max_connections,
                    gate.limits.max_connections, gate.open_files)
    runner = web.AppRunner(app, keepalive_timeout=gate.limits.idle_timeout_s, **runner_kwargs)
    await runner.setup()
    site = GuardedSite(runner, gate, host, port, ssl_context=ssl_context)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner, site


__all__ = ["FD_RESERVE", "Gate", "GuardedSite", "HttpLimits", "LimitSettings",
           "connection_cap", "open_files_limit", "serve"]
