"""Real mDNS between Discovery instances in one process, bound to 127.0.0.1 only.

Multicast on loopback works here although `lo` lacks the MULTICAST flag: zeroconf
sets IP_MULTICAST_IF=127.0.0.1 and IP_MULTICAST_LOOP, so packets stay on lo.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping

import pytest

from peer.mesh.discovery import Discovery, DiscoveryConfig, build_txt, mesh_hash

pytestmark = pytest.mark.integration
LOOPBACK = DiscoveryConfig(interfaces=("127.0.0.1",), ttl_s=30)
TIMEOUT_S = 10.0
# a mesh name of this run only: services of another run (or xdist worker) on loopback at the
# same time are of another mesh, and ignored
LAB = f"lab-{uuid.uuid4().hex[:10]}"


class Seen:
    def __init__(self) -> None:
        self.peers: dict[str, dict[str, str]] = {}
        self.removed: list[str] = []
        self.ever: set[str] = set()
        self.most = 0  # peers held at once

    def add(self, addr: str, info: Mapping[str, str]) -> None:
        self.peers[addr] = dict(info)
        self.ever.add(addr)
        self.most = max(self.most, len(self.peers))

    def remove(self, addr: str) -> None:
        self.removed.append(addr)
        self.peers.pop(addr, None)


async def until(cond: Callable[[], bool], what: str, timeout_s: float = TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            pytest.fail(f"mDNS on loopback: {what} not seen within {timeout_s}s")
        await asyncio.sleep(0.05)


@pytest.fixture
async def factory() -> AsyncIterator[Callable[[str, int, str], tuple[Discovery, Seen]]]:
    made: list[Discovery] = []

    def make(peer_id: str, port: int, mesh: str = LAB) -> tuple[Discovery, Seen]:
        seen = Seen()
        txt = build_txt(gossip=f"127.0.0.1:{port}", http_port=port + 1000,
                        calls=["audio.mfcc", "basic.echo"], cores=4, free_slots=2, mem_mb=8000)
        d = Discovery(LOOPBACK, peer_id, txt, seen.add, seen.remove, mesh_hash(mesh))
        made.append(d)
        return d, seen

    yield make
    for d in made:
        await d.close()


async def test_peers_find_each_other_ignore_other_mesh_and_see_goodbye(
        factory: Callable[..., tuple[Discovery, Seen]]) -> None:
    a, seen_a = factory("peera", 17001)
    b, seen_b = factory("peerb", 17002)
    c, seen_c = factory("peerc", 17003, f"other-{LAB}")
    await asyncio.gather(a.start(), b.start(), c.start())
    assert a.running and b.running and c.running, (a.error, b.error, c.error)

    await until(lambda: "127.0.0.1:17002" in seen_a.peers, "b from a")
    await until(lambda: "127.0.0.1:17001" in seen_b.peers, "a from b")
    info = seen_a.peers["127.0.0.1:17002"]
    assert info["id"] == "peerb" and info["mesh"] == mesh_hash(LAB)
    assert (info["http"], info["calls"], info["slots"]) == ("18002", "audio.mfcc,basic.echo", "2")
    assert info["addresses"] == "127.0.0.1"

    await b.update(build_txt(gossip="127.0.0.1:17002", http_port=18002, free_slots=0))
    await until(lambda: seen_a.peers.get("127.0.0.1:17002", {}).get("slots") == "0", "update")

    await b.close()
    await until(lambda: "127.0.0.1:17002" in seen_a.removed, "goodbye of b")

    # c announced and browsed the whole time, on the same service type and port 5353
    assert "127.0.0.1:17003" not in seen_a.peers and "127.0.0.1:17003" not in seen_b.peers
    assert seen_c.peers == {}


async def test_a_flood_of_announcements_is_bounded_and_a_real_peer_still_found(
        factory: Callable[..., tuple[Discovery, Seen]]) -> None:
    """A LAN host without the secret copies our mesh id (and key id: both announced in the
    clear) into many services of its own. The peer holds and dials at most `max_sightings`
    of them at once. A real peer announced while they are young is left out, then taken
    once they have been silent past the grace (zeroconf reports a name once: the peer
    looks at left-out names again by itself)."""
    from zeroconf import ServiceInfo
    from zeroconf.asyncio import AsyncZeroconf

    cfg = DiscoveryConfig(interfaces=("127.0.0.1",), ttl_s=30, max_sightings=4,
                          sighting_grace_s=4.0, retry_s=0.5)
    seen = Seen()
    victim = Discovery(cfg, "victim", build_txt(gossip="127.0.0.1:17101", http_port=1),
                       seen.add, seen.remove, mesh_hash(LAB))
    flooders = [AsyncZeroconf(interfaces=["127.0.0.1"]) for _ in range(8)]  # (one each:
    try:  # zeroconf registers one name at a time, about a second each)
        await victim.start()
        assert victim.running, victim.error
        fakes = [ServiceInfo(
            "_banzai._tcp.local.", f"fake{i}._banzai._tcp.local.", port=17200 + i,
            properties={"gossip": f"127.0.0.1:{17200 + i}", "mesh": mesh_hash(LAB),
                        "id": f"fake{i}", "v": "1"},
            server=f"fake{i}.local.", parsed_addresses=["127.0.0.1"]) for i in range(8)]
        announced = await asyncio.gather(*[z.async_register_service(f)
                                           for z, f in zip(flooders, fakes, strict=True)])
        await asyncio.gather(*announced)
        await until(lambda: victim.health()["ignored"] >= 1, "a fake left out")
        real, _ = factory("realpeer", 17102)
        await real.start()
        await until(lambda: victim.health()["ignored"] >= 2 and "127.0.0.1:17102" not in
                    seen.peers, "the real peer left out while the fakes are young")
        # then taken, with no new announcement of it: the fakes age past the grace
        await until(lambda: "127.0.0.1:17102" in seen.peers, "the real peer", 20.0)
        assert len(victim.peers()) == 4 and seen.most == 4, (victim.peers(), seen.most)
        assert set(seen.peers) == set(victim.peers().values())  # dialled: the ones held
    finally:
        for z in flooders:
            await z.async_close()
        await victim.close()
