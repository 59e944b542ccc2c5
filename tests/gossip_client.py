"""The one gossip client for tests and scripts: frames built with peer.mesh.wire's encoder
(untagged, as peers send them) over a ZeroMQ DEALER configured like the peers' own: CURVE with
the keys derived from the mesh secret (peer/mesh/transport.py, peer/mesh/keyring.py). With
an identity it is a member: it signs events and heartbeats like a peer. The one place to adapt
when the gossip wire changes. Synchronous; one thread."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any

import zmq

from peer.errors import BanzaiError
from peer.log import Event
from peer.log.signing import (
    Batch,
    Identity,
    admit_tag,
    membership_message,
    peer_id_for,
    sign_events,
)
from peer.mesh.discovery import mesh_hash
from peer.mesh.keyring import derive
from peer.mesh.wire import Kind, dumps, encode_frame, events_body, pack_frames

SNDHWM = 100_000  # a fuzzer sends bursts: queue rather than drop on our side
MAX_FRAME_BYTES = 1 << 20
MAX_PER_FRAME = 512


class GossipClient:
    """Sends frames to peers' gossip addresses ("host:port", as /api/health shows them)
    as member `sender` of mesh `mesh_name`, reachable (for replies) at `reply_to`.

    `secret` is the mesh secret: the DEALERs are CURVE clients with its derived keys (None:
    plain TCP, which a peer refuses). `curve_secret` overrides the secret the CURVE keys come
    from (another mesh's: a foreign client, refused by the handshake). With `identity` (True:
    a new one) the client signs events and heartbeats; `sender` then defaults to the
    identity's self-certifying id, and each signer gets the mesh secret's admit tag."""

    def __init__(self, mesh_name: str, secret: bytes | None, sender: str | None = None,
                 reply_to: str = "", *, identity: Identity | bool | None = None,
                 curve_secret: bytes | None = None) -> None:
        self.mesh_id = mesh_hash(mesh_name)
        self.secret = secret
        self.identity = Identity.generate() if identity is True else (identity or None)
        default = peer_id_for(self.identity.key) if self.identity else "test-client"
        self.sender = sender or default
        self.reply_to = reply_to
        self.sent = 0
        self._curve = curve_secret if curve_secret is not None else secret
        self._counter = 0
        self._ctx = zmq.Context()
        self._socks: dict[str, zmq.Socket[bytes]] = {}

    # -- frames --------------------------------------------------------------------------
    def frame(self, kind: int, body: bytes, *, sender: str | None = None,
              reply_to: str | None = None, tag: bytes | None = None,
              mesh_id: str | None = None) -> bytes:
        """A frame as a peer builds it; with `tag`, HMAC-tagged under it (the wire before
        CURVE: a peer drops it as bad_mac)."""
        return encode_frame(kind, mesh_id or self.mesh_id, sender or self.sender,
                            self.reply_to if reply_to is None else reply_to, body, tag)

    def me(self) -> Identity:
        if self.identity is None:
            raise ValueError("this GossipClient has no identity: it cannot sign")
        return self.identity

    def admit(self, signer: str, key: Identity | None = None) -> bytes | None:
        """The admit tag of `signer` bound to `key` (ours by default) under the mesh secret."""
        k = key or self.me()
        return None if self.secret is None else admit_tag(self.secret, signer, k.key)

    def sign(self, events: Sequence[Event], signer: str | None = None,
             key: Identity | None = None) -> list[Batch]:
        """Sign `events` in batches as `signer` (our id by default) with `key` (ours by
        default); each event's `att` is set to its batch."""
        k = key or self.me()
        signer = signer or self.sender
        return sign_events(k, signer, events, self.admit(signer, k))

    def events_bodies(self, events: Sequence[Event], ttl: int = 0, *,
                      signer: str | None = None, key: Identity | None = None,
                      sign: bool = True) -> list[bytes]:
        """EVENTS bodies carrying `events` (signed first, unless `sign` is False or they
        already carry batches), as many as they need."""
        if sign and any(e.att is None for e in events):
            self.sign(events, signer, key)
        frames, too_large = pack_frames(events, MAX_FRAME_BYTES, MAX_PER_FRAME)
        if too_large:
            raise ValueError(f"{len(too_large)} events too large for a frame")
        return [events_body(p.events, ttl, p.batches) for p in frames]

    def signed_raw(self, raw: Sequence[Any], signer: str | None = None,
                   ) -> tuple[list[Any], list[bytes]]:
        """Raw (possibly malformed) event objects, each one that parses as an Event signed by
        its own origin with our key (so it reaches the door's checks) and given its batch
        reference; those that do not parse are left as they are. Returns (events, batches)."""
        parsed: list[tuple[int, Event]] = []
        for i, d in enumerate(raw):
            try:
                e = Event.from_json(d)
            except BanzaiError:  # left unsigned: the door refuses it as invalid
                continue
            parsed.append((i, e))
        out = list(raw)
        signed: list[bytes] = []
        by_origin: dict[str, list[Event]] = {}
        for _, e in parsed:
            by_origin.setdefault(e.origin, []).append(e)
        for origin, evs in by_origin.items():
            for b in self.sign(evs, signer or origin):
                signed.append(dumps(b.to_json()))
        for i, e in parsed:
            b = e.att
            assert isinstance(b, Batch)
            out[i] = {**raw[i], "b": b.first, **({"bs": b.signer} if b.signer != b.origin
                                                  else {})}
        return out, signed

    def heartbeat_body(self, info: Mapping[str, Any], *, sender: str | None = None,
                       reply_to: str | None = None, inc: int = 1, ctr: int | None = None,
                       key: Identity | None = None) -> bytes:
        """A HEARTBEAT body signed as a peer signs it (Gossip._heartbeat_body), as `sender`
        at `reply_to` with incarnation `inc` and counter `ctr` (default: one more each)."""
        k = key or self.me()
        sender = sender or self.sender
        reply_to = self.reply_to if reply_to is None else reply_to
        if ctr is None:
            self._counter += 1
            ctr = self._counter
        info_bytes = dumps(dict(info))
        msg = membership_message(Kind.HEARTBEAT, self.mesh_id, sender, reply_to, inc, ctr,
                                 info_bytes)
        proof: dict[str, Any] = {"key": k.key.hex(), "inc": inc, "ctr": ctr,
                                 "sig": k.sign(msg).hex()}
        admit = self.admit(sender, k)
        if admit is not None:
            proof["admit"] = admit.hex()
        return b'{"info":' + info_bytes + b',"auth":' + dumps(proof) + b"}"

    # -- sending ---------------------------------------------------------------------------
    def _socket(self, addr: str) -> zmq.Socket[bytes]:
        s = self._socks.get(addr)
        if s is None:
            s = self._ctx.socket(zmq.DEALER)
            s.setsockopt(zmq.LINGER, 0)
            s.setsockopt(zmq.SNDHWM, SNDHWM)
            s.setsockopt(zmq.IMMEDIATE, 1)  # as the peers: nothing queued before connecting
            if self._curve is not None:
                keys = derive(self._curve)
                s.setsockopt(zmq.CURVE_SERVERKEY, keys.server_public)
                s.setsockopt(zmq.CURVE_PUBLICKEY, keys.client_public)
                s.setsockopt(zmq.CURVE_SECRETKEY, keys.client_secret)
            host, _, port = addr.rpartition(":")
            s.connect(f"tcp://{host}:{port}")
            self._socks[addr] = s
        return s

    def send_raw(self, addr: str, data: bytes, timeout_s: float = 10.0) -> None:
        """Send `data` as one ZeroMQ message to `addr`, waiting (bounded) for the connection
        (the CURVE handshake) and for room in the queue."""
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

    def send(self, addr: str, kind: Kind | int, body: bytes, *, sender: str | None = None,
             reply_to: str | None = None, tag: bytes | None = None,
             mesh_id: str | None = None) -> None:
        self.send_raw(addr, self.frame(int(kind), body, sender=sender, reply_to=reply_to,
                                       tag=tag, mesh_id=mesh_id))

    def send_events(self, addr: str, events: Sequence[Event], ttl: int = 0, *,
                    signer: str | None = None, key: Identity | None = None) -> None:
        """`events`, signed (as `signer` with `key`; ours by default), in EVENTS frames."""
        for body in self.events_bodies(events, ttl, signer=signer, key=key):
            self.send(addr, Kind.EVENTS, body)

    def heartbeat(self, addr: str, info: Mapping[str, Any], *, sender: str | None = None,
                  inc: int = 1, ctr: int | None = None, key: Identity | None = None) -> None:
        """A signed HEARTBEAT (see heartbeat_body) from `sender` (ours by default)."""
        self.send(addr, Kind.HEARTBEAT, self.heartbeat_body(info, sender=sender, inc=inc,
                                                            ctr=ctr, key=key), sender=sender)

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
