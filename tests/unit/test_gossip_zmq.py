"""Gossip over real ZeroMQ sockets on 127.0.0.1 (bounded waits, no other addresses)."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable

import pytest
import zmq

from peer.mesh.gossip import Gossip, GossipConfig, Kind, encode_frame, zmq_transport
from peer.mesh.sim import MemorySink, RecordingMembers
from peer.mesh.transport import ZmqTransport

SECRET = b"k" * 32


async def wait_for(cond: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def make(peer_id: str, bind: str = "127.0.0.1:0", secret: bytes | None = SECRET,
         ) -> tuple[Gossip, MemorySink]:
    cfg = GossipConfig.local(bind=bind, secret=secret)
    sink = MemorySink(peer_id)
    g = Gossip(cfg, zmq_transport(cfg), sink, RecordingMembers(), peer_id,
               rng=random.Random(1), local_info=lambda: {"http": "http://127.0.0.1:1"})
    return g, sink


async def test_two_zmq_peers_exchange_events_and_survive_restart() -> None:
    a, sa = make("a")
    b, sb = make("b")
    async with a:
        await b.start()
        assert a.address.startswith("127.0.0.1:") and not a.address.endswith(":0")
        a.add_peer(b.address)
        b.add_peer(a.address)
        for _ in range(3):
            sa.emit()
            sb.emit()
        await wait_for(lambda: sa.ids() == sb.ids() and len(sa.ids()) == 6)
        await wait_for(lambda: "b" in a.live_peers() and "a" in b.live_peers())
        assert a.live_peers()["b"]["http"] == "http://127.0.0.1:1"
        a.broadcast([sa.emit()])
        await wait_for(lambda: ("a", 4) in sb.ids())
        assert a.stats.frames_out > 0 and b.stats.frames_in > 0
        assert a.stats.dropped_bad_mac == b.stats.dropped_bad_mac == 0

        # b restarts on the same port with an empty state: a's DEALER reconnects.
        addr = b.address
        await b.close()
        b2, sb2 = make("b", bind=addr)
        async with b2:
            b2.add_peer(a.address)
            await wait_for(lambda: len(sb2.ids()) == 7)
    await b.close()  # idempotent


async def test_zmq_wrong_secret_and_garbage_are_dropped() -> None:
    a, sa = make("a")
    rogue, sr = make("rogue", secret=b"x" * 32)
    async with a, rogue:
        rogue.add_peer(a.address)
        sr.emit()
        await wait_for(lambda: a.stats.dropped_bad_mac >= 2)
        assert a.live_peers() == {} and sa.ids() == frozenset()
        # raw garbage through the same socket type never breaks the receive loop
        rogue._t.send(a.address, b"not a frame")
        rogue._t.send(a.address, encode_frame(Kind.HEARTBEAT, "banzai", "z", "", b"{", None))
        await wait_for(lambda: a.stats.dropped_bad_frame >= 1)
        good, _ = make("good")
        async with good:
            good.add_peer(a.address)
            await wait_for(lambda: "good" in a.live_peers())


async def test_zmq_send_to_an_address_libzmq_refuses_drops_it() -> None:
    """A reply-to address libzmq does not take (a fuzzed frame's flipped byte, heard from a
    member) is dropped, not raised through heartbeats and merges."""
    t = ZmqTransport()
    t.open(lambda _f: None)
    try:
        assert t.send("127.0(0.1:9", b"x") is False
        assert t.send("127.0(0.1:9", b"x") is False  # and stays so
    finally:
        await t.close()


async def test_the_receive_queue_is_bounded_in_bytes_and_counts_what_it_drops() -> None:
    """Frames waiting to be handled are bounded in bytes as well as in frames: ten frames of
    10 kB waiting at once, with room for 50 kB, are five handled and five dropped, counted
    (the previous release held all: up to 10,000 frames per connection, of up to
    `max_frame_bytes` each, 16 MiB by default)."""
    cfg = GossipConfig.local(max_frame_bytes=16_384, max_queue_bytes=50_000)
    g = Gossip(cfg, zmq_transport(cfg), MemorySink("a"), RecordingMembers(), "a")
    g.bind()
    t = g._t
    assert isinstance(t, ZmqTransport) and t._router is not None and t._ctx is not None
    t._router.bind("inproc://queue")  # a frame sent there is in the ROUTER's queue at once
    d: zmq.Socket[bytes] = zmq.Socket(t._ctx, zmq.DEALER)
    try:
        d.connect("inproc://queue")
        for _ in range(10):
            d.send(b"x" * 10_000)  # (not frames: each is handled as a bad one)
        await wait_for(lambda: g.stats.frames_in + g.stats.dropped_queue_full == 10)
        assert (g.stats.frames_in, g.stats.dropped_queue_full) == (5, 5)
        assert g.stats.dropped_bad_frame == 5
        d.send(b"x" * 10_000)  # room again once handled
        await wait_for(lambda: g.stats.frames_in == 6)
    finally:
        d.close(linger=0)
        await g.close()


def test_a_queue_bound_below_the_frame_bound_is_refused() -> None:
    with pytest.raises(ValueError, match="max_queue_bytes"):
        GossipConfig.local(max_frame_bytes=1 << 20, max_queue_bytes=1 << 19)
    with pytest.raises(ValueError, match="max_queue_bytes"):
        ZmqTransport(max_frame_bytes=1 << 20, max_queue_bytes=1 << 19)
