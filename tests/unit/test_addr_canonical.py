"""One spelling per address (session 27's review, F3): libzmq delivers `127.0.0.1:07002`,
`127.1:7002`, `2130706433:7002` and `127.0.0.1:7002` to one socket, and a host name in any
case to one host, so every per-address bound (join syncs answered, cookies, fixes awaited,
connections) was multiplied by the spellings a frame's reply-to could take."""

from __future__ import annotations

import pytest

from peer.mesh.addr import canonical_addr, parse_addr
from peer.mesh.gossip import GossipConfig
from peer.mesh.sim import Cluster, swim_cluster
from peer.mesh.swim import MAX_SYNC_ANSWERS
from peer.mesh.wire import FrameWriter, Kind, decode_frame, encode_frame
from tests.unit.mesh_helpers import Tap, frame_to, inject


@pytest.mark.parametrize(("addr", "want"), [
    ("127.0.0.1:7002", "127.0.0.1:7002"), ("LOCALHOST:7002", "localhost:7002"),
    ("Peer-A.Example.:7000", "peer-a.example:7000"), ("[::1]:7000", "[::1]:7000"),
    ("[0:0:0:0:0:0:0:1]:7000", "[::1]:7000"), ("[FE80::A%eth0]:9", "[fe80::a%eth0]:9"),
    ("::1:7000", "[::1]:7000"), ("host-2:0", "host-2:0"), ("peer.lan:65535", "peer.lan:65535"),
])
def test_an_address_has_one_spelling(addr: str, want: str) -> None:
    assert canonical_addr(addr) == want
    assert canonical_addr(want) == want


@pytest.mark.parametrize(("addr", "why"), [
    ("127.0.0.1:07002", "leading zeros"), ("127.0.0.1:000007002", "leading zeros"),
    ("127.1:7002", "bad host"), ("2130706433:7002", "bad host"), ("0x7f000001:7002", "bad host"),
    ("127.000.000.001:7002", "bad host"), ("peer.0x1:7002", "bad host"), ("10.1.2:7", "bad host"),
])
def test_numeric_spellings_that_are_no_canonical_ip_are_refused(addr: str, why: str) -> None:
    with pytest.raises(ValueError, match=why) as e:
        parse_addr(addr)
    assert repr(addr) in str(e.value)  # the error names what is wrong


def test_a_frames_reply_to_is_read_in_its_one_spelling() -> None:
    raw = encode_frame(Kind.DIGEST, "m", "s", "LOCALHOST:7002", b"{}", None)
    assert decode_frame(raw, None, "m", 1 << 20).reply_to == "localhost:7002"


def test_a_join_address_is_held_in_its_one_spelling() -> None:
    g = swim_cluster(1, GossipConfig.local()).peers[0].gossip
    g.add_peer("LocalHost:7001")  # as --join gives it
    m = g.membership
    m.learn_addrs(["[0::1]:7002"])
    assert m.static_addrs == frozenset({"localhost:7001"})
    assert m.learned_addrs == frozenset({"[::1]:7002"})


def test_join_syncs_aimed_at_one_socket_through_many_spellings() -> None:
    """The review's case: 256 forged SYNCs, each asking an answer ("r"), with reply-to
    spellings of one listening socket: at most MAX_SYNC_ANSWERS are answered there."""
    c = swim_cluster(20, GossipConfig.local(), signed=True)
    a, victim = c.peers[0], c.peers[1]
    host, port = victim.addr.rsplit(":", 1)
    spellings = ([f"{host}:{'0' * k}{port}" for k in range(32)]
                 + [f"127.1:{port}", f"2130706433:{port}", f"0x7f000001:{port}",
                    f"127.0.1:{port}", victim.addr])
    tap = Tap(c.net)
    for s in spellings:
        for _ in range(MAX_SYNC_ANSWERS + 1):
            inject(c, 0, frame_to(c, Kind.SYNC, {"m": [], "r": True}, reply_to=s))
    n = sum(1 for src, dst, f in tap.sent if src == a.addr and dst in spellings)
    assert n <= MAX_SYNC_ANSWERS


def test_a_heartbeat_signed_over_another_spelling_of_its_reply_to_still_verifies() -> None:
    """A peer of the previous release advertising `Peer-B.lan:7002` signs its heartbeats over
    that spelling; the receiver holds it as `peer-b.lan:7002` and checks the signature over
    the spelling sent."""
    c = Cluster(2, GossipConfig.local(), signed=True)
    a, b = c.peers
    g = b.gossip
    g._address = "Peer-B.lan:7002"  # as the previous release spells it (not canonicalized)
    g._writer = FrameWriter(g.cfg.mesh_id, g.peer_id, g._address, None)
    frame = g._frame(Kind.HEARTBEAT, g._heartbeat_body({"free_slots": 1}))
    assert frame is not None
    inject(c, 0, frame)
    p = a.gossip.membership.peer_at("peer-b.lan:7002")
    assert p is not None and p.peer_id == g.peer_id
