"""SWIM with Lifeguard: the pure state machine on a fake clock (probes, indirect probes,
suspicion, refutation, dissemination, awareness), then clusters on the in-memory network
with loss, a partition, a pause, a graceful leave, forged updates and a peer of the
previous release."""

from __future__ import annotations

import random
from typing import Any

import pytest

from peer.log.clock import FakeClock
from peer.mesh import swim as swim_module
from peer.mesh.antientropy import FIXNONCE_FEATURE
from peer.mesh.gossip import GossipConfig
from peer.mesh.sim import Cluster, SimPeer
from peer.mesh.swim import (
    ASK_SYNCS,
    MAX_ASKED,
    MAX_PUSHED,
    MAX_SYNC_ANSWERS,
    MAX_TABLE_ROWS,
    MAX_TABLES,
    UNSIGNED_REFUTE_MAX,
    Member,
    Msg,
    NoSigner,
    State,
    Swim,
    SwimConfig,
    push_pull_interval_s,
    remaining_suspicion_s,
    retransmit_limit,
    suspicion_bounds_s,
)
from peer.mesh.wire import Kind, decode_frame

from .mesh_helpers import run_on_wake_ups

CFG = SwimConfig.local()  # probe 0.1 s, probe timeout 0.04 s


class Net:
    def __init__(self) -> None:
        self.sent: list[tuple[str, Msg, dict[str, Any]]] = []

    def send_swim(self, addr: str, kind: Msg, body: dict[str, Any]) -> None:
        self.sent.append((addr, kind, body))

    def take(self, kind: Msg) -> list[tuple[str, dict[str, Any]]]:
        out = [(a, b) for a, k, b in self.sent if k == kind]
        self.sent = [s for s in self.sent if s[1] != kind]
        return out


class Listener:
    def __init__(self) -> None:
        self.changes: list[tuple[str, State | None, State]] = []
        self.reports: list[str] = []
        self.walls: list[tuple[str, int]] = []
        self.forgotten: list[str] = []

    def member_changed(self, member: Member, before: State | None) -> None:
        self.changes.append((member.id, before, member.state))

    def member_report(self, member: Member) -> None:
        self.reports.append(member.id)

    def member_wall(self, member: Member, wall_ms: int) -> None:
        self.walls.append((member.id, wall_ms))

    def member_forgotten(self, member: Member) -> None:
        self.forgotten.append(member.id)


def alive(mid: str, port: int, inc: int = 1) -> dict[str, Any]:
    return {"t": "a", "i": mid, "a": f"127.0.0.1:{port}", "n": inc}


def make(others: int = 3, cfg: SwimConfig = CFG, signed: bool = False,
         ) -> tuple[Swim, FakeClock, Net, Listener]:
    """`signed`: with a signer (one that takes every proof): the bounds of a signed mesh."""
    clock, net, listener = FakeClock(), Net(), Listener()
    s = Swim(cfg, "me", 5, net, listener, random.Random(1), NoSigner() if signed else None)
    s.bind("127.0.0.1:1", clock())
    s.apply_updates([alive(f"m{i}", 10 + i) for i in range(others)], clock())
    return s, clock, net, listener


def probe_once(s: Swim, clock: FakeClock, net: Net) -> tuple[str, dict[str, Any]]:
    clock.advance(CFG.probe_interval_s)
    s.tick(clock())
    pings = net.take(Msg.PING)
    assert len(pings) == 1
    return pings[0]


@pytest.mark.parametrize(("n", "low"), [(1, 0.4), (10, 0.4), (100, 0.8), (1000, 1.2)])
def test_suspicion_timeout_scales_with_log_n(n: int, low: float) -> None:
    lo, hi = suspicion_bounds_s(CFG, n)
    assert lo == pytest.approx(low) and hi == pytest.approx(low * CFG.suspicion_max_mult)


def test_confirmations_shorten_the_suspicion_down_to_its_minimum() -> None:
    k, lo, hi = 2, 1.0, 6.0
    times = [remaining_suspicion_s(c, k, 0.0, lo, hi) for c in range(4)]
    assert times[0] == hi and times[0] > times[1] > times[2] and times[2] == times[3] == lo
    assert remaining_suspicion_s(0, 0, 0.5, lo, hi) == pytest.approx(0.5)  # k = 0: the minimum


def test_retransmits_grow_with_log_n() -> None:
    assert [retransmit_limit(CFG, n) for n in (1, 9, 10, 99, 1000)] == [4, 4, 8, 8, 16]


def test_a_probe_round_visits_every_member_once() -> None:
    s, clock, net, listener = make(4)
    seen = []
    for _ in range(4):
        addr, body = probe_once(s, clock, net)
        s.on_ack(body["t"], addr, {"s": body["s"], "w": 5}, clock())
        seen.append(body["t"])
    assert sorted(seen) == ["m0", "m1", "m2", "m3"]
    assert sorted(listener.walls) == [(m, 5) for m in sorted(seen)]  # their clocks: skews


def test_a_missed_ack_goes_to_indirect_probes_then_suspicion_then_death() -> None:
    s, clock, net, listener = make(4)
    addr, ping = probe_once(s, clock, net)
    target = ping["t"]
    clock.advance(CFG.probe_timeout_s)
    s.tick(clock())
    reqs = net.take(Msg.PING_REQ)
    assert len(reqs) == CFG.indirect_checks
    assert all(b["t"] == target and b["a"] == addr and a != addr for a, b in reqs)
    assert s.members[target].state is State.ALIVE
    clock.advance(CFG.probe_interval_s - CFG.probe_timeout_s + 1e-9)
    s.tick(clock())
    assert s.members[target].state is State.SUSPECT
    assert s.awareness == CFG.indirect_checks  # no nack came either: our own health is in doubt
    lo, hi = suspicion_bounds_s(CFG, s.n())
    clock.advance(lo)
    s.tick(clock())
    assert s.members[target].state is State.SUSPECT  # alone, we wait longer than the minimum
    clock.advance(hi - lo)
    s.tick(clock())
    assert s.members[target].state is State.DEAD
    assert (target, State.SUSPECT, State.DEAD) in listener.changes


def test_an_indirect_ack_saves_the_target_and_nacks_are_counted() -> None:
    s, clock, net, _ = make(4)
    _, ping = probe_once(s, clock, net)
    clock.advance(CFG.probe_timeout_s)
    s.tick(clock())
    addr = net.take(Msg.PING_REQ)[0][0]
    helper = s.member_at(addr)
    assert helper is not None
    s.on_nack(helper.id, addr, {"s": ping["s"]}, clock())
    s.on_ack(helper.id, addr, {"s": ping["s"]}, clock())  # forwarded by a helper
    clock.advance(CFG.probe_interval_s)
    s.tick(clock())
    assert s.members[ping["t"]].state is State.ALIVE and s.stats.acks == 1


def test_awareness_widens_timeouts_and_recovers_with_acks() -> None:
    s, clock, net, _ = make(2, SwimConfig.local(indirect_checks=0, suspicion_mult=1000))
    for _ in range(10):  # probes without any ack (the targets stay suspect, not dead)
        if s.awareness == 3:
            break
        clock.advance(s.scaled(CFG.probe_interval_s) + 1e-9)
        s.tick(clock())
    assert s.awareness == 3
    assert s.scaled(CFG.probe_timeout_s) == pytest.approx(CFG.probe_timeout_s * 4)
    net.sent.clear()
    clock.advance(s.scaled(CFG.probe_interval_s) + 1e-9)
    s.tick(clock())
    addr, ping = net.take(Msg.PING)[-1]  # the new probe (after the old one's last try)
    s.on_ack(ping["t"], addr, {"s": ping["s"]}, clock())
    assert s.awareness == 3  # the last probe failed (+1), the new one was acked (-1)


def test_a_relayed_ping_is_answered_with_the_requesters_seq_or_a_nack() -> None:
    s, clock, net, _ = make(2)
    s.on_ping_req("m0", "127.0.0.1:10", {"s": 77, "t": "m1", "a": "127.0.0.1:11"}, clock())
    (addr, ping), = net.take(Msg.PING)
    assert addr == "127.0.0.1:11" and ping["t"] == "m1"
    s.on_ack("m1", addr, {"s": ping["s"]}, clock())
    assert [(a, b["s"]) for a, b in net.take(Msg.ACK)] == [("127.0.0.1:10", 77)]
    s.on_ping_req("m0", "127.0.0.1:10", {"s": 78, "t": "m1", "a": "127.0.0.1:11"}, clock())
    clock.advance(CFG.probe_timeout_s)
    s.tick(clock())
    assert [(a, b["s"]) for a, b in net.take(Msg.NACK)] == [("127.0.0.1:10", 78)]


def test_a_ping_req_pings_only_a_known_member_at_its_known_address_and_relays_are_capped(
) -> None:
    """A PING_REQ's target address is the prober's word: one that is no member's (or a
    member's at a made-up address) would take a transport connection each (the LRU of
    paths: real members' cut) and its relays were unbounded (each walked by next_due)."""
    s, clock, net, _ = make(2)
    s.on_ping_req("m0", "127.0.0.1:10", {"s": 1, "t": "x", "a": "127.0.0.1:77"}, clock())
    assert net.take(Msg.PING) == []
    # not relayed, but NACKed at once (Lifeguard: the prober is not at fault), to a member
    assert [(a, b["s"]) for a, b in net.take(Msg.NACK)] == [("127.0.0.1:10", 1)]
    s.on_ping_req("x", "127.0.0.1:77", {"s": 1, "t": "x", "a": "127.0.0.1:77"}, clock())
    assert net.take(Msg.NACK) == []  # no member: no new connection
    s.on_ping_req("m0", "127.0.0.1:10", {"s": 2, "t": "m1", "a": "127.0.0.1:77"}, clock())
    assert [a for a, _ in net.take(Msg.PING)] == ["127.0.0.1:11"]  # where m1 is
    from peer.mesh.swim import MAX_RELAYS
    for i in range(MAX_RELAYS + 5):
        s.on_ping_req("m0", "127.0.0.1:10", {"s": 10 + i, "t": "m1", "a": "127.0.0.1:11"},
                      clock())
    assert len(net.take(Msg.PING)) == MAX_RELAYS - 1 and s.stats.unanswered == 6
    assert len(net.take(Msg.NACK)) == 6  # beyond the cap: NACKed at once
    clock.advance(CFG.probe_timeout_s)
    s.tick(clock())  # they time out (NACKs): room again
    assert len(net.take(Msg.NACK)) == MAX_RELAYS
    net.take(Msg.PING)  # (our own probe, if one was due)
    s.on_ping_req("m0", "127.0.0.1:10", {"s": 99, "t": "m1", "a": "127.0.0.1:11"}, clock())
    assert len(net.take(Msg.PING)) == 1


def test_a_suspicion_of_ourselves_is_refuted_with_a_higher_incarnation() -> None:
    s, clock, _, _ = make(2)
    s.apply_updates([{"t": "s", "i": "me", "n": 5, "f": "m0"}], clock())
    assert s.inc == 6 and s.stats.refutations == 1
    ups = s.piggyback()
    assert {"t": "a", "i": "me", "a": "127.0.0.1:1", "n": 6} in ups
    s.apply_updates([{"t": "s", "i": "me", "n": 5, "f": "m1"}], clock())  # stale: ignored
    assert s.inc == 6
    # a ping that says "I suspect you" makes us refute too
    s.on_ping("m0", "127.0.0.1:10", {"s": 1, "t": "me", "u": 6}, clock())
    assert s.inc == 7


def test_a_suspicion_more_than_one_above_the_held_incarnation_is_refused_and_counted() -> None:
    s, clock, _, _ = make(1, signed=True)  # m0 held at incarnation 1, ours is 5
    s.apply_updates([{"t": "s", "i": "m0", "n": 2**63 - 1, "f": "x"},
                     {"t": "s", "i": "m0", "n": 3, "f": "x"}], clock())
    assert s.members["m0"].state is State.ALIVE and s.members["m0"].inc == 1
    assert s.stats.dropped_updates == 2
    s.apply_updates([{"t": "s", "i": "m0", "n": 2, "f": "x"}], clock())  # an alive we missed
    assert s.members["m0"].state is State.SUSPECT and s.members["m0"].inc == 2
    # of ourselves: beyond ours + 1 nobody holds us, so no refutation can be pushed past 2^63
    s.apply_updates([{"t": "s", "i": "me", "n": 2**63 - 1, "f": "m0"},
                     {"t": "s", "i": "me", "n": 7, "f": "m0"}], clock())
    assert s.inc == 5 and s.stats.refutations == 0 and s.stats.dropped_updates == 4
    s.apply_updates([{"t": "s", "i": "me", "n": 6, "f": "m0"}], clock())  # held + 1 somewhere
    assert s.inc == 7 and s.stats.refutations == 1


def test_unsigned_a_suspicion_of_an_earlier_run_above_ours_is_outbid() -> None:
    """Without signatures any member may forge anything, and a suspicion far above our
    incarnation is honest after a restart whose clock-made incarnation is below the one
    held of us (the wall clock stepped back): outbid at once, as ever; only a claim past
    what a frame may carry once raised is not."""
    s, clock, _, _ = make(1)
    s.apply_updates([{"t": "s", "i": "me", "n": UNSIGNED_REFUTE_MAX + 1, "f": "m0"}], clock())
    assert s.inc == 5 and s.stats.refutations == 0
    s.apply_updates([{"t": "s", "i": "me", "n": 1000 << 16, "f": "m0"}], clock())
    assert s.inc == (1000 << 16) + 1 and s.stats.refutations == 1


def test_only_a_higher_incarnation_revives_and_only_the_member_itself_refutes() -> None:
    s, clock, _, _ = make(1)
    s.apply_updates([{"t": "s", "i": "m0", "n": 1, "f": "x"}], clock())
    assert s.members["m0"].state is State.SUSPECT
    s.apply_updates([alive("m0", 10, inc=1)], clock())  # a replay of its old alive
    assert s.members["m0"].state is State.SUSPECT
    s.apply_updates([alive("m0", 10, inc=2)], clock())
    assert s.members["m0"].state is State.ALIVE and s.members["m0"].inc == 2
    # there is no "dead" update: a member's death is each member's own conclusion
    s.apply_updates([{"t": "d", "i": "m0", "n": 9}], clock())
    assert s.members["m0"].state is State.ALIVE and s.stats.dropped_updates == 1


def test_independent_confirmations_shorten_the_suspicion() -> None:
    cfg = SwimConfig.local()
    s, clock, _, _ = make(9, cfg)  # n = 10: k = suspicion_mult - 2 = 2 confirmations
    s.apply_updates([{"t": "s", "i": "m0", "n": 1, "f": "m1"}], clock())
    lo, _ = suspicion_bounds_s(cfg, s.n())
    clock.advance(lo + 0.01)
    s.tick(clock())
    assert s.members["m0"].state is State.SUSPECT
    s.apply_updates([{"t": "s", "i": "m0", "n": 1, "f": "m2"},
                     {"t": "s", "i": "m0", "n": 1, "f": "m2"},  # the same claimant again
                     {"t": "s", "i": "m0", "n": 1, "f": "m3"}], clock())
    assert len(s.members["m0"].suspicion.confirmations) == 3  # type: ignore[union-attr]
    s.tick(clock())
    assert s.members["m0"].state is State.DEAD


def test_updates_are_piggybacked_a_bounded_number_of_times() -> None:
    s, _, _, _ = make(3)
    s.piggyback(limit=100)  # drain what joining queued... counted once
    limit = retransmit_limit(CFG, s.n())
    sends = 1
    while s.piggyback():
        sends += 1
    assert sends == limit and s.queued == 0


def test_a_report_is_announced_when_it_changes_and_relayed_newest_first() -> None:
    s, clock, _, listener = make(1)
    s.apply_updates([{"t": "r", "i": "m0", "n": 1, "c": 2, "d": '{"running":[]}'}], clock())
    s.apply_updates([{"t": "r", "i": "m0", "n": 1, "c": 1, "d": '{"old":1}'}], clock())
    assert listener.reports == ["m0"] and s.members["m0"].report_ver == (1, 2)
    s.set_report(b'{"a":1}', clock())
    s.set_report(b'{"a":1}', clock())
    mine = [u for u in s.piggyback(limit=100) if u["t"] == "r" and u["i"] == "me"]
    assert [u["c"] for u in mine] == [1]


def test_a_probe_from_a_member_never_heard_of_is_answered_by_a_sync_until_its_alive_comes(
        ) -> None:
    """Its alive's bounded retransmits all missed us (seen in CI: a 3-peer mesh where one
    peer never learned the third): the probe it sends us is the only trace left."""
    s, clock, net, _ = make(2)
    s.on_ping("x", "127.0.0.1:99", {"s": 7, "t": "me"}, clock())
    assert [a for a, _ in net.take(Msg.ACK)] == ["127.0.0.1:99"]
    clock.advance(CFG.join_retry_s)
    s.tick(clock())
    syncs = net.take(Msg.SYNC)
    assert [(a, b["r"]) for a, b in syncs] == [("127.0.0.1:99", True)]
    s.on_sync("x", "127.0.0.1:99", {"m": [alive("x", 99)], "r": False}, clock())
    assert s.members["x"].state == State.ALIVE
    clock.advance(CFG.join_retry_s)
    s.tick(clock())
    assert net.take(Msg.SYNC) == []  # known now: no more syncs
    s.on_ping("m0", "127.0.0.1:10", {"s": 8, "t": "me"}, clock())  # a known prober: none
    clock.advance(CFG.join_retry_s)
    s.tick(clock())
    assert net.take(Msg.SYNC) == []


def test_probes_from_unknown_members_ask_for_a_bounded_number_of_syncs() -> None:
    s, clock, net, _ = make(1)
    for i in range(3 * MAX_ASKED):
        s.on_ping(f"x{i}", f"127.0.0.1:{100 + i}", {"s": i, "t": "me"}, clock())
    clock.advance(CFG.join_retry_s)
    s.tick(clock())
    assert len(net.take(Msg.SYNC)) == MAX_ASKED


def test_a_prober_whose_alive_never_comes_is_synced_a_bounded_number_of_times() -> None:
    """Its alive may be refused (revoked, badly signed): ASK_SYNCS syncs, then none until
    forget_s has passed, however often it probes."""
    s, clock, net, _ = make(1)
    synced = 0
    for i in range(3 * ASK_SYNCS):
        s.on_ping("x", "127.0.0.1:99", {"s": i, "t": "me"}, clock())
        s.tick(clock())
        synced += len(net.take(Msg.SYNC))
        clock.advance(CFG.join_retry_s)
    assert synced == ASK_SYNCS
    clock.advance(CFG.forget_s)
    s.tick(clock())
    s.on_ping("x", "127.0.0.1:99", {"s": 0, "t": "me"}, clock())
    clock.advance(CFG.join_retry_s)
    s.tick(clock())
    assert len(net.take(Msg.SYNC)) == 1  # asked again after forget_s


def test_a_left_member_is_dropped_at_once_and_its_old_alive_refused() -> None:
    s, clock, _, listener = make(2)
    s.apply_updates([{"t": "l", "i": "m0", "n": 1}], clock())
    assert s.members["m0"].state is State.LEFT
    assert "m0" not in {m.id for m in s.live()}
    s.apply_updates([alive("m0", 10, inc=1)], clock())
    assert s.members["m0"].state is State.LEFT
    assert ("m0", State.ALIVE, State.LEFT) in listener.changes


# -- clusters on the in-memory network -------------------------------------------------


def settle(c: Cluster, seconds: float, dt: float = 0.05, skip: SimPeer | None = None) -> None:
    for _ in range(round(seconds / dt)):
        c.clock.advance(dt)
        for p in c.peers:
            if p is not skip:
                p.gossip.tick()
        c.net.pump()


def states(p: SimPeer) -> dict[str, str]:
    assert p.gossip.swim is not None
    return {m.id: m.state.value for m in p.gossip.swim.members.values()}


def all_alive(c: Cluster, among: list[SimPeer] | None = None) -> bool:
    group = among or c.peers
    ids = {p.gossip.peer_id for p in group}
    return all(set(p.gossip.live_peers()) >= ids - {p.gossip.peer_id} for p in group)


def test_with_loss_every_member_is_found_and_a_dead_one_is_known_to_all() -> None:
    c = Cluster(10, seed=3)
    c.net.loss = 0.05
    settle(c, 1.0)
    assert all_alive(c)
    victim = c.peers[4]
    c.net._nodes[victim.addr].close_now()
    c.peers.remove(victim)
    settle(c, 5.0)
    vid = victim.gossip.peer_id
    assert all(p.gossip.status(vid) == "dead" for p in c.peers)
    assert all_alive(c)  # nobody else died of the loss


def test_a_partition_kills_the_other_side_and_healing_revives_it() -> None:
    c = Cluster(6, seed=4)
    settle(c, 0.5)
    left, right = c.peers[:3], c.peers[3:]
    c.net.partition([p.addr for p in left])
    settle(c, 4.0)
    for p in left:
        assert all(p.gossip.status(q.gossip.peer_id) == "dead" for q in right)
    assert all_alive(c, left) and all_alive(c, right)
    c.net.heal()
    settle(c, 3.0)
    assert all_alive(c)


def test_a_member_that_pauses_shorter_than_the_suspicion_timeout_is_not_declared_dead() -> None:
    swim = SwimConfig.local(suspicion_mult=8)
    c = Cluster(6, GossipConfig.local(swim=swim), seed=5)
    settle(c, 0.5)
    sleeper = c.peers[2]
    t = c.net._nodes[sleeper.addr]
    handler, t.handler = t.handler, None  # a long GC: it neither runs nor hears anything
    low, _ = suspicion_bounds_s(swim, 6)
    settle(c, low * 0.75, skip=sleeper)
    suspected = [p for p in c.peers if p.gossip.status(sleeper.gossip.peer_id) == "suspect"]
    assert suspected  # it was missed...
    t.handler = handler
    settle(c, 2.0)
    sid = sleeper.gossip.peer_id
    assert all(p.gossip.status(sid) == "alive" for p in c.peers if p is not sleeper)
    assert all(p.gossip.swim is not None and p.gossip.swim.stats.deaths == 0 for p in c.peers)
    assert sleeper.gossip.swim is not None and sleeper.gossip.swim.stats.refutations >= 1


async def test_a_member_that_leaves_is_dropped_by_all_at_once() -> None:
    c = Cluster(5, seed=6)
    settle(c, 0.5)
    leaver = c.peers[1]
    assert leaver.gossip.swim is not None
    leaver.gossip.swim.leave()  # what close() does first
    c.net.pump()
    lid = leaver.gossip.peer_id
    others = [p for p in c.peers if p is not leaver]
    assert all(lid not in p.gossip.live_peers() for p in others)
    assert all(states(p)[lid] == "left" for p in others)


def test_reports_reach_every_member_sink_and_are_renewed_while_alive() -> None:
    c = Cluster(4, seed=7)
    settle(c, 0.5)
    a = c.peers[0]
    assert all(p.members.heard_from.get(a.gossip.peer_id)
               == {"free_slots": 1, "features": [FIXNONCE_FEATURE], "gossip": a.addr}
               for p in c.peers[1:])
    count = c.peers[1].members.count
    settle(c, 0.5)
    assert c.peers[1].members.count > count  # renewals: the leases of reported runs hold


def test_signed_updates_cannot_be_forged_and_suspicions_do_not_kill_a_live_member() -> None:
    c = Cluster(4, signed=True, seed=8)
    settle(c, 0.5)
    assert all_alive(c)
    victim, mallory, judge = c.peers[0], c.peers[1], c.peers[2]
    vid = victim.gossip.peer_id
    assert judge.gossip.swim is not None and mallory.gossip.auth is not None
    inc = judge.gossip.swim.members[vid].inc
    before = judge.gossip.swim.stats.dropped_updates
    # an alive of the victim at a new address, a leave in its name: unsigned by it
    judge.gossip.swim.apply_updates([
        {"t": "a", "i": vid, "a": "127.0.0.1:66", "n": inc + 1, "g": "00" * 64},
        {"t": "l", "i": vid, "n": inc + 1, "g": "00" * 64}], c.clock())
    assert judge.gossip.swim.stats.dropped_updates == before + 2
    assert states(judge)[vid] == "alive"
    assert judge.gossip.live_peers()[vid]["gossip"] == victim.addr
    # mallory, a member, keeps suspecting the victim: it refutes, nobody declares it dead
    for _ in range(10):
        assert mallory.gossip.swim is not None
        m = mallory.gossip.swim.members[vid]
        mallory.gossip.swim._suspect(m, m.inc, mallory.gossip.peer_id, c.clock())
        settle(c, 0.2)
    settle(c, 1.0)
    assert all(p.gossip.status(vid) == "alive" for p in c.peers[1:])
    assert all(p.gossip.swim is not None and p.gossip.swim.stats.deaths == 0 for p in c.peers)
    assert victim.gossip.swim is not None and victim.gossip.swim.stats.refutations >= 1


def test_a_signed_suspicion_far_above_the_held_incarnation_does_not_kill_a_live_member(
) -> None:
    """A member signs suspicions of a live one at 2^63 - 1 (adopted, its refutation would be
    2^63: beyond what any frame may carry) and at one above what everyone holds (adopted:
    it may be an alive they missed; the victim outbids it)."""
    c = Cluster(4, signed=True, seed=8)
    settle(c, 0.5)
    assert all_alive(c)
    victim, mallory = c.peers[0], c.peers[1]
    vid, mid = victim.gossip.peer_id, mallory.gossip.peer_id
    ms = mallory.gossip.swim
    assert ms is not None
    ms._suspect(ms.members[vid], 2**63 - 1, mid, c.clock())  # its own table: refused too
    held = ms.members[vid].inc
    for inc, to in ((2**63 - 1, [victim, *c.peers[2:]]), (held + 1, c.peers[2:])):
        u = {"t": "s", "i": vid, "n": inc, "f": mid,
             **ms._signer.sign(swim_module.Sig.SUSPECT, mid, "", inc, 0, vid.encode())}
        for p in to:
            assert p.gossip.swim is not None
            before = p.gossip.swim.stats.dropped_updates
            p.gossip.swim.apply_updates([u], c.clock())
            refused = p.gossip.swim.stats.dropped_updates - before
            assert refused == (inc > held + 1)
        settle(c, 10.0)  # far beyond the suspicion timeout
        assert all(p.gossip.status(vid) == "alive" for p in c.peers[1:])
    assert all(p.gossip.swim is not None and p.gossip.swim.stats.deaths == 0 for p in c.peers)
    assert victim.gossip.swim is not None and victim.gossip.swim.stats.refutations >= 1


def test_a_peer_of_the_previous_release_keeps_working_with_swim_peers() -> None:
    c = Cluster(3, seed=9, connect=False)
    old = c.add("old", GossipConfig.local(swim=None))
    for p in c.peers:
        for q in c.peers:
            p.gossip.add_peer(q.addr)
    for p in c.peers:
        p.sink.emit()
    settle(c, 1.0)
    assert all_alive(c)
    assert c.converged()
    new = c.peers[0]
    assert new.gossip.view.legacy_ids == {"old"}  # it gets heartbeats, and no SWIM frames
    mark = old.gossip.stats.dropped_bad_kind
    settle(c, 1.0)
    assert old.gossip.stats.dropped_bad_kind == mark
    assert old.members.heard_from[new.gossip.peer_id]["gossip"] == new.addr
    # the old peer stops: the new ones judge it by its heartbeats, as before
    c.net._nodes[old.addr].close_now()
    c.peers.remove(old)
    settle(c, 2.0)
    assert all(p.gossip.status("old") == "dead" for p in c.peers)
    assert all_alive(c)


def test_idle_traffic_per_peer_does_not_grow_with_the_mesh() -> None:
    per_peer = []
    for n in (6, 24):
        c = Cluster(n, seed=10)
        for p in c.peers:
            p.sink.emit()
        settle(c, 2.0)  # joined, converged: idle from here
        assert c.converged()
        b0 = c.net.bytes_sent
        settle(c, 2.0)
        per_peer.append((c.net.bytes_sent - b0) / n / 2.0)
    assert per_peer[1] < 1.5 * per_peer[0], per_peer


def test_swim_frames_of_a_malformed_body_are_dropped_and_counted() -> None:
    from .mesh_helpers import frame_to, inject
    c = Cluster(2)
    settle(c, 0.2)
    for body in ({"s": "x", "t": "p0000"}, {"m": "no"}, {"s": 1, "t": 5, "a": None}):
        inject(c, 0, frame_to(c, Kind.PING_REQ if "a" in body else Kind.PING, body))
    assert c.peers[0].gossip.stats.dropped_bad_frame == 3
    inject(c, 0, frame_to(c, Kind.UPDATES, {"m": [{"t": "a"}, 5]}))
    assert c.peers[0].gossip.stats.swim_dropped_updates >= 2


# -- push-pull: what the bounded retransmits and the reconnect pings leave ---------------


def _drop_to(c: Cluster, dst: SimPeer, drop: Any) -> None:
    """Frames to `dst` for which `drop(frame)` holds are lost (the sender cannot tell)."""
    t = c.net._nodes[dst.addr]
    handler = t.handler
    assert handler is not None
    t.handler = lambda data: None if drop(data) else handler(data)


@pytest.mark.parametrize("signed", [False, True])
def test_a_partition_longer_than_the_forget_time_heals_without_an_outside_trigger(
        signed: bool) -> None:
    """Both sides declare the other dead and then forget it (the reconnect pings go to the
    dead they remember, so they stop): the join addresses are synced again at the push-pull
    cadence while nobody is alive there."""
    swim = SwimConfig.local(forget_s=3.0)
    c = Cluster(6, GossipConfig.local(swim=swim), seed=11, signed=signed)
    settle(c, 0.5)
    assert all_alive(c)
    left, right = c.peers[:3], c.peers[3:]
    c.net.partition([p.addr for p in left])
    _, high = suspicion_bounds_s(swim, 6)
    settle(c, high + 2 * swim.forget_s)
    for p in left:
        assert all(q.gossip.peer_id not in states(p) for q in right)  # forgotten
    c.net.heal()
    settle(c, 3 * swim.push_pull_s)
    assert all_alive(c)


def test_a_member_whose_gossip_missed_a_peer_is_learned_by_push_pull() -> None:
    """D joins through A; every update naming D is lost on its way to C while its bounded
    retransmits last, and D's own frames never reach C (so no probe from D makes C ask):
    C learns D from a periodic push-pull with a member that knows it."""
    c = Cluster(4, seed=12)
    settle(c, 0.5)
    a, cc = c.peers[0], c.peers[2]
    d = c.add("pnew")
    d.gossip.add_peer(a.addr)
    lift = c.clock() + 2.0
    mesh = c.cfg.mesh_id

    def drop(data: bytes) -> bool:
        f = decode_frame(data, None, mesh, 1 << 30)
        return f.sender == "pnew" or (c.clock() < lift and b"pnew" in data)

    _drop_to(c, cc, drop)
    settle(c, 2.0)
    assert "pnew" not in states(cc)  # the gossip about D missed C
    assert all("pnew" in states(p) for p in c.peers if p not in (cc, d))
    settle(c, 3 * c.cfg.swim.push_pull_s if c.cfg.swim else 0.0)
    assert "pnew" in cc.gossip.live_peers()


def test_a_member_whose_gossip_missed_a_peer_is_learned_when_it_probes_that_peer() -> None:
    """As above but D reaches C after the loss: D's next probe of C (within one probe round
    of D, N x probe interval) makes C sync with it (728a301). No push-pull within the test
    (its period: 1e6 s), which would learn D too."""
    c = Cluster(4, GossipConfig.local(swim=SwimConfig.local(push_pull_s=1e6)), seed=13)
    settle(c, 0.5)
    a, cc = c.peers[0], c.peers[2]
    d = c.add("pnew")
    d.gossip.add_peer(a.addr)
    lift = c.clock() + 2.0
    _drop_to(c, cc, lambda data: c.clock() < lift and b"pnew" in data)
    settle(c, 2.0)
    assert "pnew" not in states(cc)
    swim = c.cfg.swim
    assert swim is not None
    settle(c, len(c.peers) * swim.probe_interval_s * 2 + swim.join_retry_s)
    assert "pnew" in cc.gossip.live_peers()


@pytest.mark.parametrize(("n", "mult"), [(1, 1), (32, 1), (33, 2), (64, 2), (65, 3), (1000, 6)])
def test_the_push_pull_interval_grows_with_log2_n_above_32_members(n: int, mult: int) -> None:
    assert push_pull_interval_s(SwimConfig.lan(), n) == 30.0 * mult


def test_push_pull_sends_a_hash_to_one_alive_member_and_one_silent_join_address() -> None:
    s, clock, net, _ = make(3)
    s.join(["127.0.0.1:10", "127.0.0.1:50"])  # m0 lives at :10; nobody at :50
    clock.advance(CFG.push_pull_s)
    s.tick(clock())
    opens = [(a, b) for a, b in net.take(Msg.SYNC) if "h" in b]
    assert len(opens) == 2 and all(b == {"m": [], "h": s.table_hash()} for _, b in opens)
    assert s.stats.push_pulls == 2
    assert opens[0][0] in ("127.0.0.1:10", "127.0.0.1:11", "127.0.0.1:12")
    assert opens[1][0] == "127.0.0.1:50"
    clock.advance(CFG.push_pull_s / 2)
    s.tick(clock())
    assert not [b for _, b in net.take(Msg.SYNC) if "h" in b]  # once per period


def hash_sent(s: Swim, clock: FakeClock, net: Net) -> str:
    """Run s's next push-pull: the address it sent its hash to (whose table it answers)."""
    clock.advance(push_pull_interval_s(s.cfg, s.n()))
    s.tick(clock())
    [to] = [a for a, b in net.take(Msg.SYNC) if "h" in b]
    return to


def test_push_pull_exchanges_tables_then_the_updates_each_side_lacks() -> None:
    s, clock, net, _ = make(3)
    peer = "127.0.0.1:99"
    s.on_sync("x", peer, {"m": [], "h": s.table_hash()}, clock())
    assert net.take(Msg.SYNC) == []  # the same table: nothing to do
    s.on_sync("x", peer, {"m": [], "h": "0" * 32}, clock())
    [(to, body)] = net.take(Msg.SYNC)
    assert to == peer and body == {"m": [], "d": [["m0", 1], ["m1", 1], ["m2", 1], ["me", 5]]}
    assert s.stats.tables_sent == 1
    s.on_sync("x", peer, {"m": [], "w": ["m2", "nobody", "me"]}, clock())  # it was sent ours
    [(to, body)] = net.take(Msg.SYNC)
    assert to == peer and [u["i"] for u in body["m"]] == ["m2", "me"]
    # the table of the member we sent our hash to: us and m0 as we hold them, m1 older, m9
    # unknown to us; m2 unknown to it
    asked = hash_sent(s, clock, net)
    s.on_sync("x", asked, {"m": [], "d": [["me", 5], ["m0", 1], ["m1", 0], ["m9", 3]]},
              clock())
    [(to, body)] = net.take(Msg.SYNC)
    assert to == asked
    assert [u["i"] for u in body["m"]] == ["m1", "m2"] and body["w"] == ["m9"]
    # a member we hold suspect is told so with our table (it may refute)...
    m0 = s.members["m0"]
    s._suspect(m0, m0.inc, "me", clock())
    s.on_sync("m0", "127.0.0.1:10", {"m": [], "h": "0" * 32}, clock())
    [(to, body)] = net.take(Msg.SYNC)
    assert body["u"] == 1
    # ...and refutes when it is told
    s.on_sync("m0", "127.0.0.1:10", {"m": [], "d": [], "u": 5}, clock())
    assert s.inc == 6
    assert {"t": "a", "i": "me", "a": "127.0.0.1:1", "n": 6} in s.piggyback()


def test_tables_and_wanted_members_are_answered_only_to_whom_they_were_asked() -> None:
    """A forged reply-to must not turn a small frame into our updates sent to someone else:
    a table is answered once, from the address we sent our hash to, within the period; the
    members it wants, once, from the address we sent our table to."""
    s, clock, net, _ = make(3)
    victim = "127.0.0.1:99"
    s.on_sync("x", victim, {"m": [], "d": []}, clock())
    s.on_sync("x", victim, {"m": [], "w": ["m0", "m1", "m2", "me"]}, clock())
    assert net.take(Msg.SYNC) == []
    asked = hash_sent(s, clock, net)
    s.on_sync("x", asked, {"m": [], "d": []}, clock())
    assert len(net.take(Msg.SYNC)) == 1
    s.on_sync("x", asked, {"m": [], "d": []}, clock())  # once
    s.on_sync("x", asked, {"m": [], "w": ["m0"]}, clock())  # it was sent no table
    assert net.take(Msg.SYNC) == []
    asked = hash_sent(s, clock, net)
    clock.advance(push_pull_interval_s(s.cfg, s.n()))  # too late
    s.on_sync("x", asked, {"m": [], "d": []}, clock())
    assert net.take(Msg.SYNC) == []
    s.on_sync("x", victim, {"m": [], "h": "0" * 32}, clock())
    assert len(net.take(Msg.SYNC)) == 1  # our table
    s.on_sync("x", victim, {"m": [], "w": ["m0"]}, clock())
    assert len(net.take(Msg.SYNC)) == 1
    s.on_sync("x", victim, {"m": [], "w": ["m0"]}, clock())  # once
    assert net.take(Msg.SYNC) == []


def test_the_tables_sent_per_push_pull_period_are_capped() -> None:
    s, clock, net, _ = make(3)
    for i in range(3 * MAX_TABLES):
        s.on_sync("x", f"127.0.0.1:{200 + i}", {"m": [], "h": "0" * 32}, clock())
    assert len(net.take(Msg.SYNC)) == MAX_TABLES == s.stats.tables_sent
    assert s.stats.unanswered == 2 * MAX_TABLES  # counted: an operator sees the flood
    hash_sent(s, clock, net)  # a new period
    for i in range(3 * MAX_TABLES):
        s.on_sync("x", f"127.0.0.1:{300 + i}", {"m": [], "h": "0" * 32}, clock())
    assert len(net.take(Msg.SYNC)) == MAX_TABLES


def test_join_syncs_are_answered_a_bounded_number_of_times_per_address_and_period() -> None:
    s, clock, net, _ = make(3)
    for _ in range(3 * MAX_SYNC_ANSWERS):
        s.on_sync("x", "127.0.0.1:99", {"m": [], "r": True}, clock())
        s.on_sync("y", "127.0.0.1:98", {"m": [], "r": True}, clock())
    sent = net.take(Msg.SYNC)
    assert [a for a, _ in sent].count("127.0.0.1:99") == MAX_SYNC_ANSWERS
    assert [a for a, _ in sent].count("127.0.0.1:98") == MAX_SYNC_ANSWERS
    assert all(b["r"] is False and len(b["m"]) == 4 for _, b in sent)
    assert s.stats.unanswered == 2 * 2 * MAX_SYNC_ANSWERS
    clock.advance(push_pull_interval_s(s.cfg, s.n()))
    s.on_sync("x", "127.0.0.1:99", {"m": [], "r": True}, clock())
    assert len(net.take(Msg.SYNC)) == 1


def test_a_truncated_table_says_so_and_members_beyond_its_last_row_are_not_pushed(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(swim_module, "MAX_TABLE_ROWS", 2)
    s, clock, net, _ = make(3)
    s.on_sync("x", "127.0.0.1:99", {"m": [], "h": "0" * 32}, clock())
    [(_, body)] = net.take(Msg.SYNC)
    assert body == {"m": [], "d": [["m0", 1], ["m1", 1]], "t": True}
    asked = hash_sent(s, clock, net)
    s.on_sync("x", asked, {"m": [], "d": [["m0", 1], ["m1", 0]], "t": True}, clock())
    [(_, body)] = net.take(Msg.SYNC)
    assert [u["i"] for u in body["m"]] == ["m1"]  # not m2, nor us: beyond its last row
    asked = hash_sent(s, clock, net)
    s.on_sync("x", asked, {"m": [], "d": [["m0", 1], ["m1", 0]]}, clock())  # whole: pushed
    [(_, body)] = net.take(Msg.SYNC)
    assert [u["i"] for u in body["m"]] == ["m1", "m2", "me"]


@pytest.mark.parametrize("kind", [Msg.PING, Msg.ACK, Msg.SYNC])
def test_an_unsigned_view_of_our_incarnation_above_ours_is_ignored(kind: Msg) -> None:
    """No member can hold us at an incarnation more than one above ours (one above: a signed
    suspicion it adopted): a frame's "u" that says so is forged (2^63 - 1 would put ours
    beyond what a frame may carry: out of the mesh)."""
    s, clock, _, _ = make(3)
    handle = {Msg.PING: s.on_ping, Msg.ACK: s.on_ack, Msg.SYNC: s.on_sync}[kind]
    body: dict[str, Any] = {"s": 1, "t": "me", "u": 2**63 - 1}
    if kind == Msg.SYNC:
        body = {"m": [], "d": [], "u": 2**63 - 1}
    handle("m0", "127.0.0.1:10", body, clock())
    assert s.inc == 5 and s.stats.refutations == 0
    handle("m0", "127.0.0.1:10", {**body, "u": 7}, clock())
    assert s.inc == 5
    handle("m0", "127.0.0.1:10", {**body, "u": 5}, clock())  # ours: refuted
    assert s.inc == 6 and s.stats.refutations == 1
    handle("m0", "127.0.0.1:10", {**body, "u": 6}, clock())  # again within a probe interval:
    assert s.inc == 6 and s.stats.refutations == 1  # one alive per interval, not per frame
    clock.now += s.cfg.probe_interval_s
    handle("m0", "127.0.0.1:10", {**body, "u": 7}, clock())  # ours + 1: refuted too
    assert s.inc == 8 and s.stats.refutations == 2


@pytest.mark.parametrize("body", [
    {"m": [], "h": 5},
    {"m": [], "h": "zz"},
    {"m": [], "h": "0" * 64},
    {"m": [], "d": "x"},
    {"m": [], "d": [["a", -1]]},
    {"m": [], "d": [[5, 1]]},
    {"m": [], "d": [["", 1]]},
    {"m": [], "d": [["a", 1, 2]]},
    {"m": [], "d": [[f"a{i}", 1] for i in range(MAX_TABLE_ROWS + 1)]},
    {"m": [], "w": [1]},
    {"m": [], "w": "a"},
    {"m": [], "w": [f"a{i}" for i in range(MAX_PUSHED + 1)]},
    {"m": [], "w": ["x" * 256]},
    {"m": [], "u": "1"},
    {"m": [], "h": "0" * 32, "d": []},  # a table's answer to a frame that answers itself
    {"m": [], "h": "0" * 32, "w": ["p0000"]},
    {"m": [], "t": True},
    {"m": [], "d": [], "t": 1},
])
def test_malformed_push_pull_fields_are_dropped_and_counted(body: dict[str, Any]) -> None:
    from .mesh_helpers import frame_to, inject
    c = Cluster(2)
    settle(c, 0.2)
    b0 = c.net.bytes_sent
    inject(c, 0, frame_to(c, Kind.SYNC, body))
    assert c.peers[0].gossip.stats.dropped_bad_frame == 1
    c.net.pump()
    assert c.net.bytes_sent == b0  # nothing answered


def test_push_pull_rides_on_the_probe_wake_ups() -> None:
    """Each member woken only when its timer is due (as `_run` sleeps): the push-pull runs at
    its period and adds no wake-up of its own."""
    swim = SwimConfig.lan(push_pull_s=5.0)
    c = Cluster(3, GossipConfig(swim=swim))
    settle(c, 1.0)
    a = c.peers[0].gossip
    opens: list[bytes] = []

    def note(data: bytes) -> bool:  # records a's push-pull hashes, drops nothing
        if data[3] == Kind.SYNC and b'"h":' in data and a.peer_id.encode() in data[:40]:
            opens.append(data)
        return False

    for p in c.peers[1:]:
        _drop_to(c, p, note)

    wakes = run_on_wake_ups(c, 60.0, a)
    assert 60 / swim.push_pull_s - 1 <= len(opens) <= 60 / swim.push_pull_s + 1
    assert wakes < 5 * 60  # as without push-pull (test_gossip's share of the probe wake-ups)


def test_peers_of_the_previous_release_ignore_the_push_pull_and_keep_working() -> None:
    """A SWIM peer of the previous release answers a SYNC only for its "r" (and sends no
    hashes): the new keys cost it nothing, and the mesh is unchanged around it."""
    c = Cluster(4, seed=14)
    old = c.peers[1]
    s = old.gossip.swim
    assert s is not None
    s._on_push_pull = lambda *_a: None  # type: ignore[method-assign]
    s._push_pull = lambda *_a: None  # type: ignore[method-assign]
    c.net.loss = 0.05
    settle(c, 6 * c.cfg.swim.push_pull_s if c.cfg.swim else 0.0)
    assert all_alive(c)
    assert all(p.gossip.stats.dropped_bad_frame == 0 for p in c.peers)
    assert all(p.gossip.stats.dropped_bad_kind == 0 for p in c.peers)
