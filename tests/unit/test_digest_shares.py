"""Whose share of full DIGEST answers a frame takes (session 48 helper g's left): the bound of
MAX_DIGEST_ANSWERS a window was per address, so a member proving many ports of its own got
each port's share. A DIGEST from the address membership holds for its sender takes that
member's share; one from an address no member holds takes its host's, which every such
address of that host shares. In-memory transport (every address on 127.0.0.1), fake clock;
every loop bounded."""

from __future__ import annotations

from peer.mesh.antientropy import MAX_ASKED_EACH, MAX_DIGEST_ANSWERS
from peer.mesh.sim import Cluster
from peer.mesh.wire import Kind

from .mesh_helpers import Probe, introduce
from .test_digest_answers import answers, quiet, victim

PORTS = 4


def test_a_member_proving_many_ports_gets_one_share() -> None:
    """DIGESTs from 4 proven ports that no member holds, 20 each in one window: 8 answered
    in all (before: 8 per port, 32), the rest counted."""
    c, first, keys = victim(quiet(anti_entropy_s=0.5))
    v = c.peers[0]
    probes = [(first, keys)]
    for _ in range(PORTS - 1):
        p = Probe(c.net, mesh_id=c.cfg.mesh_id)
        probes.append((p, p.prove(v.addr)))
    marks = [len(p.raw) for p, _ in probes]
    for p, k in probes:
        for _ in range(20):
            p.send(v.addr, Kind.DIGEST, {"vv": {}, "n": Probe.COOKIE, **k})
    c.net.pump()
    got = sum(len(answers(p, m)) for (p, _), m in zip(probes, marks, strict=True))
    assert got == MAX_DIGEST_ANSWERS
    assert v.gossip.stats.ae_throttled == PORTS * 20 - MAX_DIGEST_ANSWERS


def test_members_on_one_host_each_get_their_share() -> None:
    """Two members at two ports of one host (their SWIM addresses), 20 full DIGESTs each in
    one window: each gets its own MAX_DIGEST_ANSWERS answers (peers of a lab machine, or a
    test's on loopback, are not one host's share)."""
    c = Cluster(3, quiet(anti_entropy_s=0.5), seed=4)
    for _ in range(20):  # (SWIM: each peer is a member of the others' views)
        c.step(0.05)
    introduce(c)
    v, b, d = c.peers
    for i in range(200):
        v.sink.emit({"cache": {f"k{i}": i}})
    before = v.gossip.stats.ae_throttled
    v.gossip._ae._asked.clear()  # (v's sums of the steps above: their DIGESTs go beyond it)
    for p in (b, d):
        for _ in range(20):
            p.gossip._ae.send_digest(v.addr)
    c.net.pump()
    assert v.gossip.stats.ae_throttled - before == 2 * (20 - MAX_DIGEST_ANSWERS)


def test_idle_rounds_leave_no_credit_past_the_bound() -> None:
    """A DIGEST_SUM of ours lets its DIGEST past the bound (session 48 review rr's S1 mend),
    but a sum whose heads were equal gets no DIGEST, and its mark was kept for good: a
    minute of idle rounds let the member at that address send ~120 full DIGESTs past the
    bound. Marks now count at most MAX_ASKED_EACH per address and scope, and lapse
    ASKED_WAIT_S after the last sum: 40 DIGESTs after the idle minute get the window's 8
    and those 4, no more."""
    c = Cluster(2, quiet(anti_entropy_s=0.5), seed=6)
    for _ in range(20):
        c.step(0.05)
    introduce(c)
    v, b = c.peers
    for i in range(200):
        v.sink.emit({"cache": {f"k{i}": i}})
    for _ in range(10):  # (b holds them: the rounds below are idle, heads equal)
        b.gossip.anti_entropy(v.addr)
        c.net.pump()
    assert len(b.sink.ids()) == len(v.sink.ids())
    for _ in range(120):
        c.step(0.5)
    before = v.gossip.stats.ae_throttled
    for _ in range(40):
        b.gossip._ae.send_digest(v.addr)
    c.net.pump()
    assert v.gossip.stats.ae_throttled - before == 40 - MAX_DIGEST_ANSWERS - MAX_ASKED_EACH
