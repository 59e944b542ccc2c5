"""A gossip client for tests and scripts: frames sealed with peer.mesh.wire's encoder (the mesh
secret's HMAC) and sent over a ZeroMQ DEALER configured like the peers' own (peer/mesh/
transport.py). The one place to adapt when the gossip transport changes (e.g. CURVE keys).
Synchronous; one thread."""

from __future__ import annotations

import time
from types import TracebackType

import zmq

from peer.mesh.discovery import mesh_hash
from peer.mesh.wire import Kind, encode_frame

SNDHWM = 100_000  # a fuzzer sends bursts: queue rather than drop on our side


class GossipClient:
    """Sends frames to peers' gossip addresses ("host:port", as /api/health shows them)
    as member `sender` of mesh `mesh_name`, reachable (for replies) at `reply_to`."""

    def __init__(self, mesh_name: str, secret: bytes | None, sender: str = "test-client",
                 reply_to: str = "") -> None:
        self.mesh_id = mesh_hash(mesh_name)
        self.secret = secret
        self.sender = sender
        self.reply_to = reply_to
        self.sent = 0
        self._ctx = zmq.Context()
        self._socks: dict[str, zmq.Socket[bytes]] = {}

    def frame(self, kind: int, body: bytes, *, sender: str | None = None,
              reply_to: str | None = None, secret: bytes | bool | None = True,
              mesh_id: str | None = None) -> bytes:
        """A frame as a peer builds it (`secret=True`: the mesh's; None: unauthenticated)."""
        key = self.secret if secret is True else (None if secret is False else secret)
        return encode_frame(kind, mesh_id or self.mesh_id, sender or self.sender,
                            self.reply_to if reply_to is None else reply_to, body, key)

    def _socket(self, addr: str) -> zmq.Socket[bytes]:
        s = self._socks.get(addr)
        if s is None:
            s = self._ctx.socket(zmq.DEALER)
            s.setsockopt(zmq.LINGER, 0)
            s.setsockopt(zmq.SNDHWM, SNDHWM)
            s.setsockopt(zmq.IMMEDIATE, 1)  # as the peers: nothing queued before connecting
            host, _, port = addr.rpartition(":")
            s.connect(f"tcp://{host}:{port}")
            self._socks[addr] = s
        return s

    def send_raw(self, addr: str, data: bytes, timeout_s: float = 10.0) -> None:
        """Send `data` as one ZeroMQ message to `addr`, waiting (bounded) for the connection
        and for room in the queue."""
        s = self._socket(addr)
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                s.send(data, zmq.NOBLOCK)
                self.sent += 1
                return
            except zmq.Again:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"gossip at {addr} takes no frames") from None
                time.sleep(0.002)

    def send(self, addr: str, kind: Kind | int, body: bytes, **frame_kw: object) -> None:
        self.send_raw(addr, self.frame(int(kind), body, **frame_kw))  # type: ignore[arg-type]

    def close(self) -> None:
        for s in self._socks.values():
            s.close(linger=0)
        self._socks.clear()
        self._ctx.term()

    def __enter__(self) -> GossipClient:
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
