"""Slow and many HTTP clients against a real banzai-peer (peer/http/limits.py, wired by
peer/main.py): with its defaults, the 129th connection from one address is closed at once and
the 65th event stream answered 503 while the others stream on; with the deadlines set small
by flags, a header or a body that stops arriving is cut, and a download never read, and prompt
requests are served.
Raw sockets on loopback."""

from __future__ import annotations

import json
import os
import signal
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.conftest import PeerProc, start_peer

pytestmark = pytest.mark.integration
PATIENCE_S = 15.0  # bound on any wait for an answer or a close (never reached when it works)


def _start(tmp: Path, *flags: str) -> PeerProc:
    return start_peer(tmp, "--slots", "1", "--no-mdns", *flags,
                      mesh=f"limits-{uuid.uuid4().hex[:10]}")


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PeerProc]:
    """A peer with the default limits."""
    p = _start(tmp_path_factory.mktemp("limits") / "plain")
    yield p
    p.kill(signal.SIGTERM)


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PeerProc]:
    """A peer whose deadlines are short (flags)."""
    p = _start(tmp_path_factory.mktemp("limits") / "quick", "--http-header-timeout-s", "0.5",
               "--http-body-idle-s", "0.5", "--http-idle-timeout-s", "3",
               "--http-write-timeout-s", "0.5")
    yield p
    p.kill(signal.SIGTERM)


def connect(p: PeerProc, stack: ExitStack) -> socket.socket:
    url = urlsplit(p.url)
    s = socket.create_connection((url.hostname, url.port), timeout=PATIENCE_S)
    stack.callback(s.close)
    return s


def get(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()


def post_head(p: PeerProc, path: str, length: int) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {p.token}\r\n"
            f"Content-Type: application/octet-stream\r\nContent-Length: {length}\r\n\r\n"
            ).encode()


def read_until(s: socket.socket, marker: bytes) -> bytes:
    data = b""
    while marker not in data:
        chunk = s.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed after {data!r}")
        data += chunk
    return data


def response(s: socket.socket) -> tuple[int, bytes]:
    """One response with a Content-Length: its status and body."""
    data = read_until(s, b"\r\n\r\n")
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    sizes = [int(ln.split(":")[1]) for ln in lines if ln.lower().startswith("content-length")]
    assert sizes, f"not a response with a Content-Length: {head!r}"
    length = sizes[0]
    while len(body) < length:
        chunk = s.recv(65536)
        assert chunk, "closed in the body"
        body += chunk
    return int(lines[0].split()[1]), body


def closed_unanswered(s: socket.socket) -> bool:
    """True if the peer closes the connection without sending a byte."""
    try:
        return s.recv(1) == b""
    except ConnectionResetError:
        return True


# -- the defaults --------------------------------------------------------------------------
def test_the_129th_connection_from_one_address_is_closed_at_once(plain: PeerProc) -> None:
    with ExitStack() as stack:
        admitted = []
        for _ in range(128):
            s = connect(plain, stack)
            s.sendall(get("/api/health"))
            admitted.append(s)
        extra = connect(plain, stack)
        extra.sendall(get("/api/health"))
        assert closed_unanswered(extra)
        for s in admitted:
            assert response(s)[0] == 200
        admitted[0].sendall(get("/api/health"))  # (kept alive)
        assert json.loads(response(admitted[0])[1])["http"]["refused_connections"] >= 1


def test_the_65th_event_stream_is_503_while_64_stream_on(plain: PeerProc) -> None:
    with ExitStack() as stack:
        streams = []
        for _ in range(64):
            s = connect(plain, stack)
            s.sendall(get("/api/events"))
            assert read_until(s, b": connected\n\n").startswith(b"HTTP/1.1 200")
            streams.append(s)
        extra = connect(plain, stack)
        extra.sendall(get("/api/events"))
        status, body = response(extra)
        err = json.loads(body)
        assert status == 503 and err["error"] == "Unavailable", err
        assert "at most 64 event streams" in err["message"]
        assert "http_max_event_streams" in err["message"]
        adder = connect(plain, stack)  # an upload: a PROVIDE event for every stream
        adder.sendall(post_head(plain, "/api/add?name=a.txt", 3) + b"abc")
        assert response(adder)[0] == 201
        for s in streams:
            assert b"event: provide\n" in read_until(s, b"event: provide\n")


# -- the deadlines, set small --------------------------------------------------------------
def test_a_header_block_that_stops_arriving_is_cut(quick: PeerProc) -> None:
    with ExitStack() as stack:
        s = connect(quick, stack)
        s.sendall(b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # no empty line
        assert closed_unanswered(s)
        s = connect(quick, stack)  # prompt requests are served, over keep-alive too
        for _ in range(2):
            s.sendall(get("/api/health"))
            status, body = response(s)
            assert status == 200 and json.loads(body)["http"]["header_timeouts"] >= 1


def test_a_body_that_stops_arriving_is_answered_408(quick: PeerProc) -> None:
    with ExitStack() as stack:
        s = connect(quick, stack)
        s.sendall(post_head(quick, "/api/add?name=b.bin", 1000) + b"x" * 10)
        status, body = response(s)
        err = json.loads(body)
        assert status == 408 and err["error"] == "RequestTimeout" and err["field"] == "body"
        assert "http_body_idle_s" in err["message"]
        assert closed_unanswered(s)


def test_a_client_that_stops_reading_a_download_is_cut(quick: PeerProc) -> None:
    """16 MiB asked for and never read (a small receive buffer): the peer's send buffer
    stays full past --http-write-timeout-s and the connection is closed."""
    with ExitStack() as stack:
        s = connect(quick, stack)
        data = os.urandom(1 << 24)
        s.sendall(post_head(quick, "/api/add?name=big.bin", len(data)) + data)
        status, body = response(s)
        assert status == 201, body
        cid = json.loads(body)["cid"]
        url = urlsplit(quick.url)
        stalled = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        stack.callback(stalled.close)
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled.settimeout(PATIENCE_S)
        stalled.connect((url.hostname, url.port))
        stalled.sendall(get(f"/ipfs/{cid}"))
        deadline = time.monotonic() + PATIENCE_S
        while True:  # (polls /api/health; bounded, never reached when it works)
            s.sendall(get("/api/health"))
            if json.loads(response(s)[1])["http"]["write_timeouts"] >= 1:
                break
            assert time.monotonic() < deadline, "the stalled download was not cut"
            time.sleep(0.1)
        received = 0
        try:
            while chunk := stalled.recv(1 << 16):
                received += len(chunk)
        except ConnectionResetError:
            pass
        assert received < len(data)  # cut, not finished
