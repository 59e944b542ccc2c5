"""Helpers for the mesh unit tests: raw frames injected into a Cluster, and a probe that
records the frames a peer sends to it (in-memory transport, no sockets)."""

from __future__ import annotations

import json
from typing import Any

from peer.mesh.gossip import Gossip
from peer.mesh.sim import Cluster
from peer.mesh.transport import MemoryNetwork
from peer.mesh.wire import Frame, Kind, decode_frame, encode_frame

SECRET = b"s" * 32


def frame_to(c: Cluster, kind: int, body: Any, *, sender: str = "intruder",
             secret: bytes | None = None, mesh: str | None = None,
             reply_to: str = "127.0.0.1:9") -> bytes:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return encode_frame(kind, mesh or c.cfg.mesh_id, sender, reply_to, raw, secret)


def inject(c: Cluster, i: int, frame: bytes) -> None:
    """Deliver a raw frame to peer i as if it came off the wire."""
    t = c.net._nodes[c.peers[i].addr]
    assert t.handler is not None
    t.handler(frame)


class Probe:
    """A bare endpoint on the network: sends hand-made frames, records and decodes replies;
    `prove` gets a peer's cookie for its address (anti-entropy's handshake)."""

    COOKIE = "c0ffee0123456789"  # the probe's cookie: what a peer's handshake echoes

    def __init__(self, net: MemoryNetwork, mesh_id: str = "banzai", peer_id: str = "probe",
                 secret: bytes | None = None) -> None:
        self.net = net
        self.t = net.transport()
        self.raw: list[bytes] = []
        self.address = self.t.open(self.raw.append)
        self.mesh_id = mesh_id
        self.peer_id = peer_id
        self.secret = secret
        self.echoes: dict[str, str] = {}  # address -> the cookie its peer gave the probe

    def prove(self, addr: str) -> dict[str, str]:
        """The keys that prove the probe's address to the peer at `addr` ({"e": its cookie}),
        got by a handshake (a padded sum it answers with one), then forgotten from `raw`."""
        if addr not in self.echoes:
            mark = len(self.raw)
            self.send(addr, Kind.DIGEST_SUM, {"h": "0" * 32, "n": self.COOKIE, "p": "." * 64})
            self.net.pump()
            for f in self.frames()[mark:]:
                if f.kind == Kind.DIGEST_SUM and f.body.get("e") == self.COOKIE:
                    self.echoes[addr] = f.body["n"]
            del self.raw[mark:]
        return {"e": self.echoes[addr]}

    def send(self, addr: str, kind: Kind, body: dict[str, Any]) -> None:
        self.t.send(addr, encode_frame(kind, self.mesh_id, self.peer_id, self.address,
                                       json.dumps(body).encode(), self.secret))

    def frames(self, kind: Kind | None = None) -> list[Frame]:
        """Every frame received so far (of `kind`), decoded."""
        out = [decode_frame(d, self.secret, self.mesh_id, 1 << 30) for d in self.raw]
        return [f for f in out if kind is None or f.kind == kind]


def introduce(c: Cluster) -> None:
    """One anti-entropy round from every peer of `c` to every other: each holds the others'
    cookies afterwards (as after a mesh's first rounds), so later rounds need no handshake."""
    for p in c.peers:
        for q in c.peers:
            if p is not q:
                p.gossip.anti_entropy(q.addr)
                c.net.pump()


class Tap:
    """Records every frame sent on a MemoryNetwork as (source, destination, decoded frame)."""

    def __init__(self, net: MemoryNetwork, mesh_id: str = "banzai",
                 secret: bytes | None = None) -> None:
        self.sent: list[tuple[str, str, Frame]] = []
        send = net._send

        def tapped(src: str, dst: str, frame: bytes) -> bool:
            self.sent.append((src, dst, decode_frame(frame, secret, mesh_id, 1 << 30)))
            return send(src, dst, frame)
        net._send = tapped  # type: ignore[method-assign]

    def to(self, dst: str, src: str | None = None) -> list[Frame]:
        """The frames sent to `dst` (from `src`)."""
        return [f for s, d, f in self.sent if d == dst and (src is None or s == src)]

    def bytes_to(self, dst: str) -> int:
        return sum(f.size for _, d, f in self.sent if d == dst)


def _due(g: Gossip, now: float) -> float:
    """When `g`'s loop next wakes, as `Gossip._run` sleeps (at most 1 s)."""
    return now + min(max(g.next_due() - now, 0.005), 1.0)


def run_on_wake_ups(c: Cluster, seconds: float, watched: Gossip) -> int:
    """Run the members of `c` for `seconds` of its fake clock, each ticked only when its
    timer is due (at most 2,000 wake-ups of `watched`); returns `watched`'s wake-ups."""
    wakes, start = 0, c.clock()
    wake_at = {p.gossip: _due(p.gossip, start) for p in c.peers}
    while c.clock() < start + seconds and wakes < 2000:
        c.clock.now = max(min(wake_at.values()), c.clock() + 0.001)
        for g, at in wake_at.items():
            if c.clock() >= at:
                g.tick()
                wakes += g is watched
                wake_at[g] = _due(g, c.clock())
        c.net.pump()
    return wakes
