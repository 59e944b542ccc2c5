"""What a forgotten member leaves below gossip (review rr of session 48, S3): when SWIM
forgets a member, the transport's connection to its address and key-id hint, and catch-up's
failures of it, go too (before: they stayed until their own bounds evicted them, and a
member back under its id waited out its old failures' backoff). In-memory transport, fake
clock (peer/mesh/sim.py); every loop bounded."""

from __future__ import annotations

import asyncio
import random

import pytest

from peer.mesh.gossip import Gossip, GossipConfig, zmq_transport
from peer.mesh.keyring import Keyring
from peer.mesh.sim import Cluster, MemorySink, RecordingMembers
from peer.mesh.swim import SwimConfig
from peer.mesh.transport import MemoryTransport, ZmqTransport
from peer.node import Node
from tests.unit.test_catchup_hostile import attempts  # noqa: F401 (a fixture)
from tests.unit.test_compaction import _floor_known_to
from tests.unit.test_transport_pools import wait_for

STEP_S = 0.05
CFG = GossipConfig.local(swim=SwimConfig.local(forget_s=2.0))


def settle(c: Cluster, seconds: float) -> None:
    for _ in range(round(seconds / STEP_S)):
        c.step(STEP_S)


@pytest.fixture
def disconnects(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """(the transport's own address, the address it was told to forget the path to) of
    every MemoryTransport.disconnect (a no-op there: the ZMQ one closes the DEALER and
    drops the key-id hint, tests/unit/test_transport_pools.py)."""
    calls: list[tuple[str, str]] = []
    monkeypatch.setattr(MemoryTransport, "disconnect",
                        lambda self, addr: calls.append((self.address, addr)))
    return calls


def test_a_forgotten_members_path_is_dropped(disconnects: list[tuple[str, str]]) -> None:
    """A member killed is probed dead, then forgotten after forget_s: every other peer's
    transport drops its path to that address then, not before."""
    c = Cluster(3, CFG, seed=1, signed=True)
    settle(c, 1.0)
    gone = c.peers[2]
    c.net._nodes[gone.addr].close_now()
    c.peers.remove(gone)
    settle(c, 1.0)
    assert (c.peers[0].addr, gone.addr) not in disconnects  # (dead, not yet forgotten)
    settle(c, 4.0)
    assert gone.gossip.peer_id not in c.peers[0].gossip.view._infos  # (forgotten)
    assert {(p.addr, gone.addr) for p in c.peers} <= set(disconnects)


def test_an_address_a_live_member_took_keeps_its_path(
        disconnects: list[tuple[str, str]]) -> None:
    """A forgotten member's address that a new identity holds now (a re-imaged machine at
    the same port) keeps its path: the live member's frames go on it."""
    c = Cluster(3, CFG, seed=2, signed=True)
    settle(c, 1.0)
    gone = c.peers[2]
    addr = gone.addr
    c.net._nodes[addr].close_now()
    c.peers.remove(gone)
    settle(c, 1.0)
    new = c.add("new", addr=addr)
    for p in c.peers[:2]:
        new.gossip.add_peer(p.addr)
    settle(c, 5.0)
    assert gone.gossip.peer_id not in c.peers[0].gossip.view._infos  # (forgotten)
    assert new.gossip.peer_id in c.peers[0].gossip.view._infos
    assert not [d for d in disconnects if d[1] == addr and d[0] != addr]


async def test_node_forgot_drops_catch_ups_failures_of_it(
        attempts: tuple[Node, list[float], list[str], dict[str, str | None]],  # noqa: F811
) -> None:
    """A member whose snapshot failed waits (backoff); once gossip forgets it, it is asked
    at once when it comes back and announces a floor above us (before: it waited out the
    failures it had before it was forgotten)."""
    b, _, asked, _ = attempts
    b.catchup._loop = asyncio.get_running_loop()
    info = _floor_known_to(b)
    b.catchup.behind("x", info)
    for _ in range(5):
        await asyncio.sleep(0)
    assert asked == ["x"] and "x" in b.catchup._backoff
    b.forgot("x")
    assert "x" not in b.catchup._backoff
    b.catchup._snapshot_next = 0.0  # (retry_s passed)
    b.catchup.behind("x", info)
    for _ in range(5):
        await asyncio.sleep(0)
    assert asked == ["x", "x"]


async def test_a_forgotten_members_dealer_and_key_hint_go_real_sockets() -> None:
    """The same on the ZeroMQ transport (CURVE with the mesh's keys), on 127.0.0.1: once
    SWIM forgets a member closed without a word, the survivor holds no proven DEALER to its
    address and no key-id hint for it (before: until 128 others were proven, and 4,096
    other hints were announced; an address learned from a digest's sample, not a join
    address, was dropped by `Membership` once stale, which the view now does not wait for)."""
    peers: list[Gossip] = []
    secret = b"mesh-secret-A-" + b"a" * 30
    kid = Keyring([secret]).serving.key_id
    try:
        for i in range(2):
            cfg = GossipConfig.local(bind="127.0.0.1:0", secret=secret,
                                     swim=SwimConfig.local(forget_s=0.5))
            g = Gossip(cfg, zmq_transport(cfg, Keyring([secret])), MemorySink(f"p{i}"),
                       RecordingMembers(), f"p{i}", rng=random.Random(i),
                       local_info=lambda: {"http": "http://127.0.0.1:1", "kid": kid})
            await g.start()
            peers.append(g)
        a, b = peers
        b.add_peer(a.address)
        a.add_peer(b.address)  # (a join address: `Membership` never drops its path itself)
        t = a._t
        assert isinstance(t, ZmqTransport)
        await wait_for(lambda: len(a.live_peers()) == 1 and b.address in t._hints
                       and b.address in t._dealers and b.address not in t._unproven)
        gone = b.address
        await b.close()
        peers.remove(b)
        await wait_for(lambda: a.swim is not None and b.peer_id not in a.swim.members,
                       timeout_s=15.0)
        assert gone not in t._hints
        # (its DEALER closed; the join address's sync may have made a new one: unproven)
        assert gone not in t._dealers or gone in t._unproven
    finally:
        for g in peers:
            await g.close()
