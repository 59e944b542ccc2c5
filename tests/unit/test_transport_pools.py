"""The ZeroMQ transport's two pools of DEALERs (review r2 of session 48, H2): addresses that
lead nowhere (mDNS sightings any LAN host may announce, dead joins) never close a member's
DEALER, and a frame to a DEALER still connecting waits for it instead of being dropped.
Real sockets on 127.0.0.1 only; every wait is bounded."""

from __future__ import annotations

import asyncio
import random
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from peer.config import PeerConfig
from peer.mesh.gossip import Gossip, GossipConfig, zmq_transport
from peer.mesh.keyring import Keyring
from peer.mesh.sim import MemorySink, RecordingMembers
from peer.mesh.swim import State
from peer.mesh.transport import MAX_HINTS, ZmqTransport
from peer.node import Node


async def wait_for(cond: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def reach(tx: ZmqTransport, addr: str, cond: Callable[[], bool]) -> None:
    """Send to `addr` until `cond` holds (at most 100 tries, 10 ms apart)."""
    for _ in range(100):
        tx.send(addr, b"hello")
        await asyncio.sleep(0.01)
        if cond():
            return
    raise AssertionError(f"{addr} not reached")


def dead_ends(n: int) -> list[str]:
    """`n` loopback addresses where nothing listens (ports bound, then released)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [f"127.0.0.1:{s.getsockname()[1]}" for s in socks]
    finally:
        for s in socks:
            s.close()


async def test_the_first_frame_to_a_new_dealer_is_delivered() -> None:
    got: list[bytes] = []
    rx = ZmqTransport("127.0.0.1:0")
    rx.open(got.append)
    tx = ZmqTransport("127.0.0.1:0")
    tx.open(lambda f: None)
    try:
        assert tx.send(rx.address, b"first")  # no completed connection yet: it waits
        await wait_for(lambda: got == [b"first"])
    finally:
        await tx.close()
        await rx.close()


async def test_addresses_that_lead_nowhere_never_close_a_members_dealer() -> None:
    got: dict[int, list[bytes]] = {i: [] for i in range(4)}
    rxs = []
    for i in range(4):
        rx = ZmqTransport("127.0.0.1:0")
        rx.open(got[i].append)
        rxs.append(rx)
    tx = ZmqTransport("127.0.0.1:0", max_connections=3, max_unproven=2)
    tx.open(lambda f: None)
    try:
        for i, rx in enumerate(rxs[:3]):  # the members: proven once a send is accepted
            await reach(tx, rx.address, lambda i=i: bool(got[i]))
        members = {rx.address: tx._dealers[rx.address] for rx in rxs[:3]}
        nowhere = dead_ends(8)
        for _ in range(3):  # more sightings than both pools hold, over and over
            for a in nowhere:
                tx.send(a, b"sync")
        # the members' DEALERs are the same sockets: none was closed for a sighting
        assert {a: tx._dealers.get(a) for a in members} == members
        assert len(tx._unproven) == 2 and len(tx._dealers) == 5
        for rx in rxs[:3]:  # and every frame to a member goes out at once, none dropped
            assert tx.send(rx.address, b"ping")
        await wait_for(lambda: all(b"ping" in got[i] for i in range(3)))
        # a fourth member proven closes the least recently used member's DEALER only
        await reach(tx, rxs[3].address, lambda: bool(got[3]))
        assert rxs[0].address not in tx._dealers
        assert all(rx.address in tx._dealers for rx in rxs[1:])
        assert len(tx._dealers) - len(tx._unproven) == 3
        # made again, its first frame still arrives
        assert tx.send(rxs[0].address, b"again")
        await wait_for(lambda: b"again" in got[0])
    finally:
        await tx.close()
        for rx in rxs:
            await rx.close()


async def test_a_frame_to_nowhere_waits_a_bounded_time_and_count() -> None:
    tx = ZmqTransport("127.0.0.1:0", max_frame_bytes=4096, max_queue_bytes=4096)
    tx.open(lambda f: None)
    try:
        [a] = dead_ends(1)
        assert [tx.send(a, b"x") for _ in range(5)] == [True] * 4 + [False]
        assert not tx.send(dead_ends(1)[0], b"y" * 4096)  # over the bytes all may hold
        await wait_for(lambda: not tx._waiting, timeout_s=3.0)
        assert tx.first_dropped == 4 and tx._waiting_bytes == 0
        # past FIRST_WAIT_S, a send to that unreached address drops at once, as before
        assert not tx.send(a, b"x")
    finally:
        await tx.close()


async def test_sightings_beyond_the_connection_bound_make_no_member_suspect() -> None:
    """Review r2's lru_mesh scenario, scaled: 4 honest peers, max_connections 8, each given
    16 join addresses where nothing listens (what sightings become), 6 s of local timings.
    Before the two pools, every (observer, member) pair was suspected."""
    n, extra = 4, 16
    peers: list[Gossip] = []
    try:
        for i in range(n):
            cfg = GossipConfig.local(bind="127.0.0.1:0", secret=b"k" * 32, max_connections=8,
                                     max_unproven_connections=8)
            g = Gossip(cfg, zmq_transport(cfg), MemorySink(f"p{i}"), RecordingMembers(),
                       f"p{i}", rng=random.Random(i),
                       local_info=lambda: {"http": "http://127.0.0.1:1"})
            await g.start()
            peers.append(g)
        for g in peers:
            for h in peers:
                if h is not g:
                    g.add_peer(h.address)
        await wait_for(lambda: all(len(g.live_peers()) == n - 1 for g in peers))
        nowhere = dead_ends(extra)
        for g in peers:
            for a in nowhere:
                g.add_peer(a)
        ids = {g.peer_id for g in peers}
        suspected: set[tuple[str, str]] = set()
        deadline = time.monotonic() + 6.0
        while time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            for g in peers:
                for m in g.swim.members.values():
                    if m.id in ids and m.state != State.ALIVE:
                        suspected.add((g.peer_id, m.id))
        assert suspected == set()
        assert all(len(g.live_peers()) == n - 1 for g in peers)
        # the frames to the dead ends waited in vain, and /api/health's gossip says so
        assert all(g.stats.send_waited_dropped > 0 for g in peers)
    finally:
        for g in peers:
            await g.close()


def test_key_id_hints_are_bounded_and_the_least_recently_announced_goes() -> None:
    """Review r2 of session 48, L3: every member's report names the key id it serves, and
    the transport kept each address's for good (removed only by `disconnect`)."""
    ring = Keyring([b"mesh-secret-A-" + b"a" * 30])
    kid = ring.serving.key_id
    t = ZmqTransport(keyring=ring)
    t.peer_key("10.0.0.1:7000", kid)
    for i in range(MAX_HINTS + 100):  # members come and go
        t.peer_key(f"10.1.{i // 250}.{i % 250}:7000", kid)
        if i % 1000 == 0:
            t.peer_key("10.0.0.1:7000", kid)  # a member still announcing its key
    assert len(t._hints) == MAX_HINTS
    assert t._hints["10.0.0.1:7000"] == kid
    assert "10.1.0.0:7000" not in t._hints


async def test_the_setting_reaches_the_transport(tmp_path: Path, monkeypatch: Any) -> None:
    """--gossip-max-connections (PeerConfig.gossip_max_connections) is the bound of proven
    connections the node's transport is made with (it had no setting: 128 for any mesh)."""
    made: list[ZmqTransport] = []

    class NoGossip:
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            pass

        async def start(self) -> None:
            pass

    def transport(cfg: GossipConfig, keyring: Any = None) -> ZmqTransport:
        made.append(zmq_transport(cfg, keyring))
        return made[-1]

    monkeypatch.setattr("peer.node.Gossip", NoGossip)
    monkeypatch.setattr("peer.node.zmq_transport", transport)
    node = Node(PeerConfig(data_dir=tmp_path, slots=1, mdns=False, gossip_max_connections=512))
    try:
        await node._start_mesh()
    finally:
        node.log.close()
    assert made[0]._max_conn == 512 and made[0]._max_unproven == 32
