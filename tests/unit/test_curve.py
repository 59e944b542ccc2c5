"""Gossip over ZeroMQ with CURVE keys from mesh secrets, on 127.0.0.1: admission, refusal
counting, key hints and a rotation A -> A+B -> B+A -> B with peers restarted one by one."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable, Sequence

import zmq
import zmq.asyncio

from peer.mesh.gossip import Gossip, GossipConfig, Kind, encode_frame, zmq_transport
from peer.mesh.keyring import Keyring, derive
from peer.mesh.sim import MemorySink, RecordingMembers

A = b"mesh-secret-A-" + b"a" * 30
B = b"mesh-secret-B-" + b"b" * 30
C = b"mesh-secret-C-" + b"c" * 30


async def wait_for(cond: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def make(peer_id: str, secrets: Sequence[bytes], bind: str = "127.0.0.1:0",
         sink: MemorySink | None = None) -> tuple[Gossip, MemorySink]:
    cfg = GossipConfig.local(bind=bind)
    ring = Keyring(secrets)
    sink = sink or MemorySink(peer_id)
    g = Gossip(cfg, zmq_transport(cfg, ring), sink, RecordingMembers(), peer_id,
               rng=random.Random(1),
               local_info=lambda: {"http": "http://127.0.0.1:1", "kid": ring.serving.key_id})
    return g, sink


async def test_holders_of_the_secret_gossip_others_are_refused_and_counted() -> None:
    a, sa = make("a", [A])
    b, sb = make("b", [A])
    rogue, sr = make("rogue", [C])
    async with a, b, rogue:
        a.add_peer(b.address)
        b.add_peer(a.address)
        rogue.add_peer(a.address)
        sa.emit()
        sb.emit()
        sr.emit()
        await wait_for(lambda: sa.ids() == sb.ids() and len(sa.ids()) == 2)
        await wait_for(lambda: "b" in a.live_peers() and "a" in b.live_peers())
        await wait_for(lambda: a.stats.refused_handshakes >= 2)  # it keeps trying, in vain
        assert "rogue" not in a.live_peers() and ("rogue", 1) not in sa.ids()
        assert a.stats.dropped_bad_mac == a.stats.dropped_bad_frame == 0  # refused below
        assert b.stats.refused_handshakes == 0


async def raw_dealer(ctx: zmq.asyncio.Context, addr: str, frame: bytes,
                     **opts: bytes | int) -> zmq.asyncio.Socket:
    """A DEALER that sends `frame` to `addr` with socket options `opts` (CURVE keys...).
    The frame is queued without blocking: a handshake the server refuses may end the
    socket's only pipe before the send (the io thread races this one; seen under load, a
    CI run hung 180 s here), and the refusal is what the caller awaits, not the frame."""
    d = ctx.socket(zmq.DEALER)
    d.setsockopt(zmq.LINGER, 0)
    for name, value in opts.items():
        d.setsockopt(getattr(zmq, name), value)
    d.connect("tcp://" + addr)
    with contextlib.suppress(zmq.Again):
        await d.send(frame, zmq.NOBLOCK)
    return d


async def test_plain_and_foreign_client_keys_are_refused_before_any_frame() -> None:
    a, _ = make("a", [A])
    async with a:
        hb = encode_frame(Kind.HEARTBEAT, "banzai", "intruder", "127.0.0.1:9",
                          b'{"info":{}}', None)
        ka, kc = derive(A), derive(C)
        # no CURVE at all; the right server key with a client key of another secret (the ZAP
        # handler refuses it); the server key of another secret
        attempts = [{}, {"CURVE_SERVERKEY": ka.server_public, "CURVE_PUBLICKEY": kc.client_public,
                         "CURVE_SECRETKEY": kc.client_secret},
                    {"CURVE_SERVERKEY": kc.server_public, "CURVE_PUBLICKEY": ka.client_public,
                     "CURVE_SECRETKEY": ka.client_secret}]
        ctx = zmq.asyncio.Context()
        socks = [await raw_dealer(ctx, a.address, hb, **opts) for opts in attempts]
        try:
            await wait_for(lambda: a.stats.refused_handshakes >= 3)
            assert a.stats.frames_in == 0 and a.live_peers() == {}
            # the right keys get through (the frame is then the gossip layer's to judge)
            socks.append(await raw_dealer(ctx, a.address, hb, CURVE_SERVERKEY=ka.server_public,
                                          CURVE_PUBLICKEY=ka.client_public,
                                          CURVE_SECRETKEY=ka.client_secret))
            await wait_for(lambda: a.stats.frames_in >= 1)
        finally:
            for sock in socks:
                sock.close(linger=0)
            ctx.term()


async def converge(gs: Sequence[tuple[Gossip, MemorySink]]) -> None:
    """Each emits an event; wait until every one holds every event and sees every peer."""
    for _, s in gs:
        s.emit()
    ids = frozenset().union(*(s.ids() for _, s in gs))
    await wait_for(lambda: all(s.ids() >= ids for _, s in gs), 15)
    names = {g.peer_id for g, _ in gs}
    await wait_for(lambda: all(set(g.live_peers()) >= names - {g.peer_id} for g, _ in gs), 15)


async def test_rotation_from_a_to_b_restarting_one_peer_at_a_time() -> None:
    """Install B everywhere (serve A), switch to serving B everywhere, remove A: at every step
    the peers that run (some old, some restarted) form one mesh."""
    gs = [make(f"p{i}", [A]) for i in range(3)]
    for g, _ in gs:
        await g.start()
    addrs = [g.address for g, _ in gs]
    try:
        for g, _ in gs:
            for addr in addrs:
                g.add_peer(addr)
        await converge(gs)
        for step in ([A, B], [B, A], [B]):
            for i in range(len(gs)):
                await gs[i][0].close()
                g, s = make(f"p{i}", step, bind=addrs[i], sink=gs[i][1])  # its log survives
                await g.start()
                for addr in addrs:
                    g.add_peer(addr)
                gs[i] = (g, s)
                await converge(gs)
        kb = derive(B).key_id
        assert all(g.live_peers()[p]["kid"] == kb for g, _ in gs for p in g.live_peers())
        # a peer that holds only A is out now: refused, never heard
        late, sl = make("late", [A])
        async with late:
            mark = gs[0][0].stats.refused_handshakes
            late.add_peer(addrs[0])
            sl.emit()
            await wait_for(lambda: gs[0][0].stats.refused_handshakes > mark)
            assert "late" not in gs[0][0].live_peers()
    finally:
        for g, _ in gs:
            await g.close()


async def test_a_connection_that_never_handshakes_is_closed() -> None:
    """A LAN host opens TCP connections to the gossip port and sends nothing: each is closed
    after the handshake interval (libzmq's default held it 30 s), so idle connections cannot
    pile up and use the peer's file descriptors."""
    from peer.mesh.transport import ZmqTransport

    t = ZmqTransport(keyring=Keyring([A]), handshake_ivl_ms=200)
    addr = t.open(lambda frame: None)
    host, port = addr.rsplit(":", 1)
    try:
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            async with asyncio.timeout(10):
                with contextlib.suppress(ConnectionResetError):
                    while await reader.read(4096):  # libzmq's greeting, then EOF
                        pass
        finally:
            writer.close()
    finally:
        await t.close()
