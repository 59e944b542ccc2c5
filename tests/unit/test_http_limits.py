"""peer/http/limits.py over real sockets on loopback: the peer's app (make_app over an
unstarted Node) served as banzai-peer serves it, with the limits set small. Slow clients
(a header or a body that stops arriving, an idle kept-alive connection) are cut; prompt ones,
uploads that keep progressing and event streams are not; connections over a cap are closed
at once, event streams over theirs answered 503."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import socket
import ssl
import struct
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from peer.config import PeerConfig, from_args
from peer.errors import ConfigError
from peer.http.app import GATE, SSE_BATCH_CHARS, make_app
from peer.http.limits import FD_RESERVE, Gate, HttpLimits, connection_cap, serve
from peer.http.tokens import load_or_create_token
from peer.log.events import Event, EventType
from peer.node import Node
from tests.helpers import self_signed

SMALL = {"http_header_timeout_s": 0.3, "http_idle_timeout_s": 1.0, "http_body_idle_s": 0.3}
PATIENCE_S = 10.0  # bound on any wait for an answer or a close (never reached when it works)
Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]


@dataclass
class Served:
    port: int
    gate: Gate
    node: Node
    token: str
    opened: list[asyncio.StreamWriter] = field(default_factory=list)

    async def connect(self, source: str = "127.0.0.1", first: bytes = b"") -> Conn:
        """A connection from `source` (closed at the end of `served`) that has sent `first`.
        Connected and sent before the loop turns again, so the server reads `first` in the
        turn that first polls its socket: written after a turn of the test's own (another
        task on the same loop), it was counted against the header deadline (SMALL: 0.3 s)
        along with any stall of the loop between the server's accept and that turn (a GC
        pause of a loaded test process), and cut (session 50: a loaded suite's flake)."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.bind((source, 0))
            sock.connect(("127.0.0.1", self.port))  # (loopback: the kernel completes it)
            sock.sendall(first)
            reader, writer = await asyncio.open_connection(sock=sock)
        except BaseException:
            sock.close()
            raise
        self.opened.append(writer)
        return reader, writer

    def get(self, path: str) -> bytes:
        return f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()

    def post_head(self, path: str, length: int,
                  ctype: str = "application/octet-stream") -> bytes:
        return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer "
                f"{self.token}\r\nContent-Type: {ctype}\r\n"
                f"Content-Length: {length}\r\n\r\n").encode()


@asynccontextmanager
async def served(tmp_path: Path, **settings: Any) -> AsyncIterator[Served]:
    """A loopback peer's app served through its gate, as peer.main serves it."""
    node = Node(PeerConfig(data_dir=tmp_path / "peer", slots=1, mdns=False,
                           **(SMALL | settings)))
    try:
        app = make_app(node)
        runner, site = await serve(app, app[GATE], "127.0.0.1", 0, access_log=None,
                                   shutdown_timeout=1.0)
        s = Served(site.port, app[GATE], node, load_or_create_token(node.cfg.data_dir))
        try:
            yield s
        finally:
            for w in s.opened:
                w.close()
                with contextlib.suppress(ConnectionError):
                    await w.wait_closed()
            await runner.cleanup()
    finally:
        node.log.close()


async def response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response with a Content-Length: status, headers, body."""
    async with asyncio.timeout(PATIENCE_S):
        head = await reader.readuntil(b"\r\n\r\n")
        status_line, *lines = head.decode().split("\r\n")
        headers = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines if ln)}
        body = await reader.readexactly(int(headers.get("content-length", "0")))
    return int(status_line.split()[1]), headers, body


async def closed(reader: asyncio.StreamReader) -> bytes:
    """What arrives until the server closes the connection (b"": closed without a word)."""
    async with asyncio.timeout(PATIENCE_S):
        try:
            return await reader.read()
        except ConnectionResetError:
            return b""


async def still_open(reader: asyncio.StreamReader, wait_s: float) -> bool:
    """True if nothing (not even a close) arrives within wait_s."""
    try:
        async with asyncio.timeout(wait_s):
            await reader.read(1)
    except TimeoutError:
        return True
    return False


# -- headers -------------------------------------------------------------------------------
async def test_a_header_block_that_stops_arriving_closes_the_connection(tmp_path: Path) -> None:
    async with served(tmp_path) as s:
        reader, writer = await s.connect()
        writer.write(b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # no empty line
        assert await closed(reader) == b""  # closed, never answered
        assert s.gate.stats()["header_timeouts"] == 1


async def test_a_connection_that_sends_nothing_is_closed(tmp_path: Path) -> None:
    async with served(tmp_path) as s:
        reader, _ = await s.connect()
        assert await closed(reader) == b""
        assert s.gate.stats()["header_timeouts"] == 1


async def test_a_header_sent_a_byte_at_a_time_is_cut_before_it_ends(tmp_path: Path) -> None:
    """Slowloris: each byte well within any per-read timeout, the whole block not within
    the deadline. The drip would take 6 s; the connection is closed before it ends."""
    async with served(tmp_path) as s:
        reader, writer = await s.connect()
        head = s.get("/api/health")
        cut = False
        for i in range(len(head) - 1):
            writer.write(head[i:i + 1])
            try:
                await writer.drain()
            except ConnectionError:
                cut = True
                break
            if not await still_open(reader, 0.2):
                cut = True
                break
        assert cut and await closed(reader) == b""


async def test_prompt_requests_are_served_also_over_keep_alive(tmp_path: Path) -> None:
    """The deadline of a later request on a kept-alive connection counts from its first
    byte: a pause between requests longer than the header deadline (and shorter than the
    idle timeout) costs nothing. Pipelined requests are served too."""
    async with served(tmp_path) as s:
        reader, writer = await s.connect()
        for _ in range(2):
            writer.write(s.get("/api/health"))
            status, _, body = await response(reader)
            assert status == 200 and json.loads(body)["http"]["connections"] == 1
            assert await still_open(reader, 0.45)  # > header_timeout_s, < idle_timeout_s
        writer.write(s.get("/api/health") * 3)
        for _ in range(3):
            assert (await response(reader))[0] == 200
        assert s.gate.stats()["header_timeouts"] == 0


async def test_an_idle_kept_alive_connection_is_closed(tmp_path: Path) -> None:
    async with served(tmp_path) as s:
        reader, _ = await s.connect(first=s.get("/api/health"))
        assert (await response(reader))[0] == 200
        assert await closed(reader) == b""  # after idle_timeout_s: aiohttp's keep-alive timer
        assert s.gate.stats()["connections"] == 0


# -- bodies --------------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["/api/add", "/api/jobs"])
async def test_a_body_that_stops_arriving_is_answered_408(tmp_path: Path, path: str) -> None:
    async with served(tmp_path) as s:
        head = s.post_head(path, 1000) + b"x" * 10  # 990 bytes never come
        reader, _ = await s.connect(first=head)
        status, headers, body = await response(reader)
        err = json.loads(body)
        assert status == 408, err
        assert err["error"] == "RequestTimeout" and err["field"] == "body"
        assert "no byte for 0.3 s (http_body_idle_s)" in err["message"]
        assert headers.get("connection") == "close"
        assert await closed(reader) == b""
        assert s.gate.stats()["body_timeouts"] == 1


async def test_a_stalled_upload_over_the_kubo_rpc_is_answered_408_in_its_shape(
        tmp_path: Path) -> None:
    async with served(tmp_path) as s:
        reader, writer = await s.connect()
        writer.write(s.post_head("/api/v0/add", 1000, "multipart/form-data; boundary=B") +
                     b'--B\r\nContent-Disposition: form-data; name="file"; filename="a"\r\n'
                     b"\r\nxy")  # the part's data stops
        status, _, body = await response(reader)
        assert status == 408 and json.loads(body)["Type"] == "error", body
        assert "http_body_idle_s" in json.loads(body)["Message"]


async def test_an_upload_that_keeps_progressing_is_not_cut(tmp_path: Path) -> None:
    """12 pieces 0.1 s apart: the upload lasts beyond every deadline (the body's, the header
    block's, the idle timeout), no pause reaches the body's."""
    pieces = [bytes([i]) * 1000 for i in range(12)]
    async with served(tmp_path) as s:
        reader, writer = await s.connect()
        writer.write(s.post_head("/api/add?name=slow.bin", 12_000))
        for piece in pieces:
            await asyncio.sleep(0.1)
            writer.write(piece)
        status, _, body = await response(reader)
        assert status == 201, body
        cid = json.loads(body)["cid"]
        assert b"".join(s.node.store.cat(cid)) == b"".join(pieces)
        assert s.gate.stats()["body_timeouts"] == 0
        writer.write(s.get("/api/health"))  # and the connection serves on
        assert (await response(reader))[0] == 200


# -- POST /login: open without the token, its body bounded in time and size ---------------
def _login_head(length: int | None) -> bytes:
    size = f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked"
    return (f"POST /login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"{size}\r\n\r\n").encode()


async def test_a_login_body_trickled_in_is_answered_408_at_the_header_deadline(
        tmp_path: Path) -> None:
    """A byte every 0.1 s never trips the body's idle deadline (30 s here); the whole login
    body must arrive within the header deadline (1 s): 408, and the connection closed."""
    async with served(tmp_path, http_header_timeout_s=1.0, http_body_idle_s=30.0) as s:
        reader, writer = await s.connect()
        body = b'{"token": "' + b"x" * 200 + b'"}'
        writer.write(_login_head(len(body)))

        async def trickle() -> None:
            with contextlib.suppress(ConnectionError):
                for i in range(len(body)):
                    writer.write(body[i:i + 1])
                    await writer.drain()
                    await asyncio.sleep(0.1)

        dripping = asyncio.create_task(trickle())
        try:
            await _refused_and_closed(reader, 408, "RequestTimeout", "http_header_timeout_s")
        finally:
            dripping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await dripping
        assert s.gate.stats()["body_timeouts"] == 0  # not the idle deadline: the login's


async def _refused_and_closed(reader: asyncio.StreamReader, status: int, error: str,
                              said: str) -> None:
    """The answer is `status` with error `error` about the body, saying `said`, and the
    connection is closed."""
    got, headers, answer = await response(reader)
    err = json.loads(answer)
    assert got == status and err["error"] == error, err
    assert err["field"] == "body" and said in err["message"]
    assert headers.get("connection") == "close"
    assert await closed(reader) == b""


@pytest.mark.parametrize("chunked", [False, True])
async def test_a_login_body_over_4_kib_is_answered_413(tmp_path: Path, chunked: bool) -> None:
    """Not --max-body-bytes: a token is short. By its Content-Length, or by what arrives."""
    async with served(tmp_path, http_header_timeout_s=30.0, http_body_idle_s=30.0) as s:
        reader, writer = await s.connect()
        body = b'{"token": "' + b"x" * 5000 + b'"}'
        if chunked:
            writer.write(_login_head(None) + f"{len(body):x}\r\n".encode() + body + b"\r\n")
        else:
            writer.write(_login_head(len(body)) + body[:100])  # the rest need not come
        await _refused_and_closed(reader, 413, "TooLarge", "4096 bytes")


async def test_a_prompt_login_is_served(tmp_path: Path) -> None:
    async with served(tmp_path) as s:
        body = json.dumps({"token": s.token}).encode()
        reader, _ = await s.connect(first=_login_head(len(body)) + body)
        status, _, answer = await response(reader)
        assert status == 200 and json.loads(answer)["authenticated"]


# -- responses: a client that stops reading --------------------------------------------------
async def _until(check: Callable[[], bool]) -> None:
    """Waits (on the loop, at most PATIENCE_S) until `check()` holds."""
    async with asyncio.timeout(PATIENCE_S):
        while not check():
            await asyncio.sleep(0.02)


async def _small_window(s: Served) -> Conn:
    """A connection whose receive buffer is small: a client that does not read stops the
    peer's writes soon."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", s.port))
    reader, writer = await asyncio.open_connection(sock=sock)
    s.opened.append(writer)
    return reader, writer


async def test_a_client_that_stops_reading_a_response_is_cut(tmp_path: Path) -> None:
    """A 16 MiB download never read: the peer's send buffer stays full for
    http_write_timeout_s and the connection is closed (before, it was held for good)."""
    async with served(tmp_path, http_write_timeout_s=0.5, http_idle_timeout_s=60.0) as s:
        cid = s.node.store.add_bytes(os.urandom(1 << 24))
        reader, writer = await _small_window(s)
        writer.write(s.get(f"/ipfs/{cid}"))
        await _until(lambda: s.gate.stats()["write_timeouts"] == 1)
        # (the count drops when the transport's connection_lost runs, a loop turn after)
        await _until(lambda: s.gate.stats()["connections"] == 0)
        received = 0
        with contextlib.suppress(ConnectionResetError):
            async with asyncio.timeout(PATIENCE_S):
                while chunk := await reader.read(1 << 16):
                    received += len(chunk)
        assert received < 1 << 24  # cut, not finished


async def test_a_client_that_resets_a_stalled_download_is_no_error(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A client that resets its connection while the peer waits to write (aiohttp's
    ConnectionError "Connection lost") went away: logged at debug, not as an unhandled error
    with a traceback."""
    async with served(tmp_path, http_idle_timeout_s=60.0) as s:
        cid = s.node.store.add_bytes(os.urandom(1 << 24))
        _, writer = await _small_window(s)
        writer.write(s.get(f"/ipfs/{cid}"))
        await _until(lambda: any(t.get_write_buffer_size() >= 1 << 16  # writes paused
                                 for t in s.gate._open if isinstance(t, asyncio.Transport)))
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()  # a reset, unsent data dropped
        await _until(lambda: s.gate.stats()["connections"] == 0)
        for _ in range(10):  # the handler sees the loss on a later turn of the loop
            await asyncio.sleep(0.01)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]


async def test_a_download_read_slowly_is_not_cut(tmp_path: Path) -> None:
    """Read 64 KiB at a time, 0.02 s apart: the download outlasts http_write_timeout_s, but
    no pause of the peer's writes does."""
    async with served(tmp_path, http_write_timeout_s=0.5, http_idle_timeout_s=60.0) as s:
        data = os.urandom(1 << 22)
        cid = s.node.store.add_bytes(data)
        reader, writer = await _small_window(s)
        writer.write(s.get(f"/ipfs/{cid}"))
        async with asyncio.timeout(PATIENCE_S):
            head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), head
        body = bytearray()
        async with asyncio.timeout(PATIENCE_S * 3):
            while len(body) < len(data):
                chunk = await reader.read(1 << 16)
                assert chunk, "closed in the body"
                body += chunk
                await asyncio.sleep(0.02)
        assert bytes(body) == data and s.gate.stats()["write_timeouts"] == 0


# -- caps ----------------------------------------------------------------------------------
async def test_connections_over_the_per_address_cap_are_closed_at_once(tmp_path: Path) -> None:
    """Two per address: a third from 127.0.0.1 is closed unanswered while the two are served;
    127.0.0.2 (another address) is admitted; once one closes, 127.0.0.1 may open one."""
    async with served(tmp_path, http_header_timeout_s=30.0,
                      http_max_connections_per_address=2) as s:
        admitted = [await s.connect() for _ in range(2)]
        reader, writer = await s.connect()
        writer.write(s.get("/api/health"))
        assert await closed(reader) == b""
        other = await s.connect("127.0.0.2")
        for r, w in [*admitted, other]:
            w.write(s.get("/api/health"))
            assert (await response(r))[0] == 200
        assert s.gate.stats()["connections"] == 3 and s.gate.stats()["refused_connections"] == 1
        r0, w0 = admitted.pop()
        w0.close()
        assert await closed(r0) == b""
        await w0.wait_closed()
        again = await s.connect()
        again[1].write(s.get("/api/health"))
        assert (await response(again[0]))[0] == 200


async def test_connections_over_the_total_cap_are_closed_at_once(tmp_path: Path) -> None:
    async with served(tmp_path, http_header_timeout_s=30.0, http_max_connections=2) as s:
        admitted = [await s.connect(), await s.connect("127.0.0.2")]
        reader, _ = await s.connect("127.0.0.3")
        assert await closed(reader) == b""
        for r, w in admitted:
            w.write(s.get("/api/health"))
            assert (await response(r))[0] == 200


# -- event streams -------------------------------------------------------------------------
async def _subscribe(s: Served, source: str = "127.0.0.1") -> Conn:
    reader, writer = await s.connect(source, first=s.get("/api/events"))
    async with asyncio.timeout(PATIENCE_S):
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), head
        assert (await reader.readuntil(b"\n\n")).endswith(b": connected\n\n")  # (chunked)
    return reader, writer


async def next_event(reader: asyncio.StreamReader) -> bytes:
    """A stream's next event, its keep-alive comments skipped: one comes every 15 s, and
    subscribing 64 streams on a loaded machine took longer (session 50)."""
    async with asyncio.timeout(PATIENCE_S):
        while True:
            frame = await reader.readuntil(b"\n\n")
            if not re.match(rb"(\r\n)?[0-9a-f]+\r\n:", frame):  # (a chunk of a comment)
                return frame


async def test_the_65th_event_stream_is_503_while_64_keep_streaming(tmp_path: Path) -> None:
    """64 streams (the default cap; half from another loopback address, under the per-address
    cap) outlive every deadline and all receive the next event; the 65th is a 503 naming the
    cap; once one closes, a new one is admitted."""
    async with served(tmp_path) as s:
        streams = [await _subscribe(s, f"127.0.0.{1 + i % 2}") for i in range(64)]
        reader, _ = await s.connect(first=s.get("/api/events"))
        status, _, body = await response(reader)
        err = json.loads(body)
        assert status == 503 and err["error"] == "Unavailable", err
        assert "at most 64 event streams" in err["message"]
        assert "http_max_event_streams" in err["message"]
        assert s.gate.stats()["event_streams"] == 64
        await asyncio.sleep(1.1)  # past the header, body and idle deadlines (0.3, 0.3, 1.0 s)
        adder, _ = await s.connect(first=s.post_head("/api/add?name=a.txt", 3) + b"abc")
        assert (await response(adder))[0] == 201  # a PROVIDE event for every stream
        for r, _ in streams:
            assert b"event: provide\n" in await next_event(r)
        streams[0][1].close()
        await streams[0][1].wait_closed()
        async with asyncio.timeout(PATIENCE_S):  # the handler ends once the loop sees the close
            for _ in range(int(PATIENCE_S / 0.01)):
                if s.gate.stats()["event_streams"] < 64:
                    break
                await asyncio.sleep(0.01)
        await _subscribe(s)



async def test_events_told_in_one_turn_reach_a_stream_in_one_chunk_in_order(
        tmp_path: Path) -> None:
    """The events one loop turn tells the listeners (a TURN's parts) go to an event stream
    in order, in one HTTP chunk: one write and one send for them all, not one each."""
    async with served(tmp_path) as s:
        reader, _ = await _subscribe(s)
        stream = s.node.listeners[-1]  # the stream's (told alone: these are not folded)
        for i in range(3):
            stream(Event("a", i + 1, 7 + i, EventType.PROGRESS,
                         {"job": "j", "task": f"t{i}", "chunk": 0, "attempt": 0,
                          "progress": 0.5}))
        async with asyncio.timeout(PATIENCE_S):
            await reader.readuntil(b"\r\n")  # the end of the ": connected" chunk
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            chunk = (await reader.readexactly(size)).decode()
        got = [json.loads(line.removeprefix("data: ")) for line in chunk.split("\n")
               if line.startswith("data: ")]
        assert [(e["type"], e["task"]) for e in got] == [
            ("progress", "t0"), ("progress", "t1"), ("progress", "t2")], chunk


async def test_a_burst_of_big_events_reaches_a_stream_in_bounded_chunks_all_in_order(
        tmp_path: Path) -> None:
    """Events told in one turn go out in chunks of about SSE_BATCH_CHARS, not all in one:
    a write past it waits for the client to drain, so a stream whose client reads slowly
    holds one bounded batch, not every queued event serialised (review c, C2)."""
    n, error = 40, "x" * 10_000
    async with served(tmp_path) as s:
        reader, _ = await _subscribe(s)
        stream = s.node.listeners[-1]
        for i in range(n):
            stream(Event("a", i + 1, 7 + i, EventType.CHUNK_FAILED,
                         {"job": "j", "task": f"t{i}", "chunk": 0, "attempt": 0,
                          "kind": "error", "error": error}))
        got: list[str] = []
        sizes: list[int] = []
        async with asyncio.timeout(PATIENCE_S):
            await reader.readuntil(b"\r\n")  # the end of the ": connected" chunk
            while len(got) < n:
                sizes.append(int((await reader.readuntil(b"\r\n")).strip(), 16))
                chunk = (await reader.readexactly(sizes[-1] + 2)).decode()
                got += [json.loads(line.removeprefix("data: "))["task"]
                        for line in chunk.split("\n") if line.startswith("data: ")]
        assert got == [f"t{i}" for i in range(n)]
        assert len(sizes) > 1 and max(sizes) < SSE_BATCH_CHARS + 2 * len(error), sizes


# -- TLS -----------------------------------------------------------------------------------
def _tls(tmp: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A server context with a fresh self-signed certificate for 127.0.0.1, and a client's
    that trusts it."""
    cert, key = self_signed(tmp)
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert, key)
    return server, ssl.create_default_context(cafile=str(cert))


async def test_a_tls_handshake_that_never_comes_is_cut_and_tls_clients_are_served(
        tmp_path: Path) -> None:
    server_ctx, client_ctx = _tls(tmp_path)
    node = Node(PeerConfig(data_dir=tmp_path / "peer", slots=1, mdns=False, **SMALL))
    app = make_app(node)
    runner, site = await serve(app, app[GATE], "127.0.0.1", 0, ssl_context=server_ctx,
                               shutdown_timeout=1.0)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", site.port)
        assert await closed(reader) == b""  # no ClientHello within header_timeout_s
        writer.close()
        reader, writer = await asyncio.open_connection("127.0.0.1", site.port, ssl=client_ctx)
        writer.write(b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert (await response(reader))[0] == 200
        writer.close()
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            await writer.wait_closed()
    finally:
        await runner.cleanup()
        node.log.close()


async def test_tls_handshakes_in_progress_count_in_the_caps(tmp_path: Path) -> None:
    """Four TCP connections to a TLS site that never send a ClientHello hold the four places
    of the total cap: a fifth is refused at once (not cut by the deadline later); the four
    are cut at the header deadline and free their places; a TLS client is then served."""
    server_ctx, client_ctx = _tls(tmp_path)
    node = Node(PeerConfig(data_dir=tmp_path / "peer", slots=1, mdns=False,
                           **(SMALL | {"http_header_timeout_s": 2.0,
                                       "http_max_connections": 4})))
    app = make_app(node)
    gate = app[GATE]
    runner, site = await serve(app, gate, "127.0.0.1", 0, ssl_context=server_ctx,
                               shutdown_timeout=1.0)
    opened: list[asyncio.StreamWriter] = []
    try:
        silent = []
        for i in range(4):
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", site.port, local_addr=(f"127.0.0.{1 + i}", 0))
            opened.append(writer)
            silent.append(reader)
        reader, writer = await asyncio.open_connection("127.0.0.1", site.port,
                                                       local_addr=("127.0.0.5", 0))
        opened.append(writer)
        assert await closed(reader) == b""
        assert gate.stats()["refused_connections"] == 1  # by the cap, not by a deadline
        assert gate.stats()["header_timeouts"] == 0 and gate.stats()["connections"] == 4
        for r in silent:
            assert await closed(r) == b""  # no ClientHello within header_timeout_s
        assert gate.stats()["header_timeouts"] == 4 and gate.stats()["connections"] == 0
        for _ in range(2):  # a TLS client, twice: the places came back
            reader, writer = await asyncio.open_connection("127.0.0.1", site.port,
                                                           ssl=client_ctx)
            opened.append(writer)
            writer.write(b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            status, _, body = await response(reader)
            assert status == 200 and json.loads(body)["http"]["connections"] == 1
            writer.close()
            with contextlib.suppress(ConnectionError, ssl.SSLError):
                await writer.wait_closed()
        async with aiohttp.ClientSession() as http, http.get(
                f"https://127.0.0.1:{site.port}/api/health", ssl=client_ctx) as resp:
            assert resp.status == 200 and (await resp.json())["http"]["refused_connections"] == 1
    finally:
        for w in opened:
            w.close()
            with contextlib.suppress(ConnectionError, ssl.SSLError):
                await w.wait_closed()
        await runner.cleanup()
        node.log.close()


async def test_a_tls_handshake_in_progress_ends_with_the_site(tmp_path: Path) -> None:
    """Stopping the site closes a connection still in its handshake and frees its place."""
    server_ctx, _ = _tls(tmp_path)
    node = Node(PeerConfig(data_dir=tmp_path / "peer", slots=1, mdns=False,
                           **(SMALL | {"http_header_timeout_s": 30.0})))
    app = make_app(node)
    runner, site = await serve(app, app[GATE], "127.0.0.1", 0, ssl_context=server_ctx,
                               shutdown_timeout=1.0)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", site.port)
        for _ in range(100):  # (the server's accept runs on the loop)
            if app[GATE].stats()["connections"]:
                break
            await asyncio.sleep(0.01)
        await runner.cleanup()
        assert await closed(reader) == b""
        assert app[GATE].stats()["connections"] == 0
        writer.close()
    finally:
        await runner.cleanup()
        node.log.close()


# -- settings ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["header_timeout_s", "idle_timeout_s", "body_idle_s",
                                  "max_connections", "max_connections_per_address",
                                  "max_event_streams", "write_timeout_s",
                                  "max_snapshot_serves", "snapshot_wait_s"])
@pytest.mark.parametrize("value", [0, -1, float("nan")])
def test_every_limit_must_be_positive(name: str, value: float) -> None:
    for make in (lambda: HttpLimits(**{name: value}),
                 lambda: PeerConfig(**{f"http_{name}": value})):
        with pytest.raises(ConfigError) as e:
            make()
        assert e.value.field == f"http_{name}"
        assert e.value.message.startswith(f"http_{name}: must be positive")


def test_the_limits_come_from_the_peer_settings() -> None:
    cfg, _ = from_args(["--http-header-timeout-s", "2.5", "--http-idle-timeout-s", "90",
                        "--http-body-idle-s", "5", "--http-max-connections", "10",
                        "--http-max-connections-per-address", "3",
                        "--http-max-event-streams", "4", "--http-write-timeout-s", "7",
                        "--http-max-snapshot-serves", "5", "--http-snapshot-wait-s", "0.5"])
    assert HttpLimits.from_settings(cfg) == HttpLimits(2.5, 90.0, 5.0, 10, 3, 4, 7.0, 5, 0.5)
    assert HttpLimits.from_settings(PeerConfig()) == HttpLimits()


@pytest.mark.parametrize(("configured", "open_files", "cap"), [
    (1024, None, 1024),  # no limit on descriptors
    (1024, 65536, 1024),  # systemd's LimitNOFILE of contrib/banzai-peer.service
    (1024, 1024 + FD_RESERVE, 1024),
    (1024, 1024, 1024 - FD_RESERVE),  # a shell's usual soft limit: the rest of the peer first
    (1024, 100, 1),
])
def test_connections_leave_the_peer_descriptors(configured: int, open_files: int | None,
                                                cap: int) -> None:
    assert connection_cap(configured, open_files) == cap
    assert Gate(HttpLimits(max_connections=configured), open_files).max_connections == cap


# -- where a header block ends (the connection's own scan, before aiohttp's parser) --------
@pytest.mark.parametrize("block", [
    b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET / HTTP/1.1\nHost: x\n\n",  # bare LFs
    b"\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n",  # empty lines first (RFC 9112 2.2)
    b"GET / HTTP/1.1\r\n\r\n",
])
def test_the_end_of_a_header_block_is_found_wherever_the_reads_split_it(block: bytes) -> None:
    from peer.http.limits import _Conn

    for cut in range(len(block) + 1):
        for cut2 in range(cut, len(block) + 1):
            conn = _Conn(Gate(HttpLimits()), asyncio.Protocol)
            found = [conn._head_ends(part) for part in
                     (block[:cut], block[cut:cut2], block[cut2:]) if part]
            assert found[-1] and not any(found[:-1]), (cut, cut2, found)


def test_an_unfinished_header_block_never_ends() -> None:
    from peer.http.limits import _Conn

    conn = _Conn(Gate(HttpLimits()), asyncio.Protocol)
    assert not any(conn._head_ends(b) for b in (b"\r\n", b"\r\n", b"GET / HTTP/1.1\r", b"\n",
                                                b"Host: x\r\n", b"X: \r", b"y"))


async def test_the_runner_lists_the_guarded_sites_address(tmp_path: Path) -> None:
    """aiohttp's runner.addresses reads each site's server: empty before (helper-145)."""
    node = Node(PeerConfig(data_dir=tmp_path / "peer", slots=1, mdns=False, **SMALL))
    try:
        app = make_app(node)
        runner, site = await serve(app, app[GATE], "127.0.0.1", 0, access_log=None)
        try:
            assert [a[1] for a in runner.addresses] == [site.port]
        finally:
            await runner.cleanup()
    finally:
        node.log.close()
