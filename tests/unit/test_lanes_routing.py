"""Partial replication, step 5: routing and pair rounds (docs/design/partial-replication.md,
section 4 "Anti-entropy, two scopes" and "Pushes and relays"). On the in-memory transport with
loss, duplicates and reordering, lanes enabled explicitly (MemorySink's door with `member_of`
read from the state; Gossip's `lanes`): a lane event reaches only its job's members, in every
frame (pushes, relays, pair rounds); members converge on their jobs' lanes and every peer on
the mesh streams; two contents of a lane seq settle among the members; a peer that does not
announce `lanes-v1` is never sent a lane event nor a frame with "jobs"."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from peer.errors import ConfigError
from peer.ipfs.store import StoreConfig
from peer.jobs.ports import SchedulerConfig
from peer.jobs.scheduler import Scheduler
from peer.jobs.sim import Content, FakeRunner, MemoryData, MemoryStore
from peer.log import Event, EventType
from peer.log.lanes import lane, lane_of
from peer.log.signing import held_hash, sign_events
from peer.mesh.gossip import GossipConfig
from peer.mesh.sim import Cluster, SimPeer, seed_swim
from peer.mesh.transport import MemoryNetwork
from peer.mesh.wire import MAX_PAIR_JOBS, FrameWriter, Kind, decode_frame

CID = "bafkreiaheqdfvsfwin2qysg2nd3n4upuu7oyiwtnuvai2oi3lesbeuh42q"
J1, J2 = "j" + "0" * 11 + "1", "j" + "0" * 11 + "2"
WORKFLOW = {"name": "w", "tasks": [{"name": f"t{i}", "call": "c", "params": {}, "depends": []}
                                   for i in range(4)]}
OLD = f"{9:016x}"  # the peer that does not announce lanes-v1


class Wiretap:
    """Every frame delivered to each peer, decoded: per peer, the lane events of each frame
    (by job) and whether the frame named "jobs"."""

    def __init__(self, c: Cluster) -> None:
        self.lanes: dict[str, list[Counter[str]]] = {}
        self.jobs_keys: Counter[str] = Counter()
        self.frames: Counter[str] = Counter()
        self.mixed: Counter[str] = Counter()  # frames carrying lane and mesh events both
        self.pair_sums: Counter[str] = Counter()  # pair rounds started, by sender
        for p in c.peers:
            self._tap(c, p)

    def _tap(self, c: Cluster, p: SimPeer) -> None:
        t = c.net._nodes[p.addr]
        handler = t.handler
        assert handler is not None
        me = p.gossip.peer_id

        def seen(frame: bytes) -> None:
            f = decode_frame(frame, None, c.cfg.mesh_id, c.cfg.max_frame_bytes)
            self.frames[me] += 1
            if "jobs" in f.body:
                self.jobs_keys[me] += 1
                if f.kind is Kind.DIGEST_SUM and "h" in f.body:
                    self.pair_sums[f.sender] += 1
            if f.kind in (Kind.EVENTS, Kind.DIGEST_REPLY):
                jobs = Counter(got[1] for e in f.body["events"]
                               if (got := lane_of(e["origin"])) is not None)
                self.lanes.setdefault(me, []).append(jobs)
                if jobs and sum(jobs.values()) < len(f.body["events"]):
                    self.mixed[me] += 1
            handler(frame)

        t.handler = seen

    def lane_events_to(self, peer: str, job: str) -> int:
        return sum(per_frame[job] for per_frame in self.lanes.get(peer, []))


def mesh(c: Cluster, *, loss: float) -> None:
    c.net.loss = loss
    c.net.duplicate = loss / 2
    c.net.reorder = True


def cluster(seed: int, n: int = 4, *, old: bool = False) -> Cluster:
    """`n` peers holding lanes (ids 1..n in 16 hex digits), and with `old` one more (OLD)
    that does not announce lanes-v1; all alive to each other."""
    c = Cluster(n, GossipConfig.local(max_events_per_frame=8), seed=seed, connect=False,
                lanes=True, net=MemoryNetwork(seed=seed))
    if old:
        c.add(OLD, lanes=False)
    seed_swim(c)
    return c


def submit(p: SimPeer, job: str, members: list[str]) -> Event:
    ev = p.sink.emit({"job": job, "workflow": WORKFLOW, "members": members},
                     EventType.JOB_SUBMITTED)
    p.gossip.broadcast([ev])
    return ev


def lane_done(p: SimPeer, job: str, seq: int, output: str = CID) -> Event:
    """A TASK_DONE in `p`'s lane of `job`, made by hand (Node's emit of lanes is step 4)."""
    return Event(lane(p.gossip.peer_id, job), seq, 1000 + seq, EventType.TASK_DONE,
                 {"job": job, "task": f"t{seq % 4}", "output": output, "cached": False,
                  "key": f"k{seq}"})


def emit_lane(p: SimPeer, events: list[Event]) -> None:
    assert p.sink.merge(events) == events  # (the door lets our own lanes in)
    p.gossip.broadcast(events)


def steps(c: Cluster, n: int) -> None:
    for _ in range(n):
        c.step(c.cfg.anti_entropy_s / 2)


def lane_ids(p: SimPeer, job: str) -> set[tuple[str, int]]:
    return {i for i in p.sink.state.events if (got := lane_of(i[0])) and got[1] == job}


def mesh_ids(p: SimPeer) -> set[tuple[str, int]]:
    return {i for i in p.sink.state.events if lane_of(i[0]) is None}


def run(seed: int, loss: float, n_lane: int, *, old: bool = False,
        ) -> tuple[Cluster, Wiretap, list[SimPeer]]:
    """Members of J1: peers 1 and 2 (and OLD, which cannot hold lanes); of J2: 2 and 3;
    peer 4 is a member of neither. Each member emits `n_lane` lane events per job over
    time, and some mesh events, while frames are lost, duplicated and reordered."""
    c = cluster(seed, old=old)
    tap = Wiretap(c)
    a, b, d, e = c.peers[:4]
    ids = [p.gossip.peer_id for p in c.peers]
    submit(a, J1, [ids[0], ids[1]] + ([OLD] if old else []))
    submit(b, J2, [ids[1], ids[2]])
    steps(c, 6)  # (the submissions reach everyone: a lane event comes after its job)
    mesh(c, loss=loss)
    for q in range(1, n_lane + 1):
        emit_lane(a, [lane_done(a, J1, q)])
        emit_lane(b, [lane_done(b, J1, q), lane_done(b, J2, q)])
        emit_lane(d, [lane_done(d, J2, q)])
        for p in (a, e):  # mesh events too, in the same flush as a lane event for a
            p.gossip.broadcast([p.sink.emit()])
        steps(c, 1)
    c.net.loss = c.net.duplicate = 0.0
    steps(c, 60)
    return c, tap, [a, b, d, e]


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 2**16), loss=st.sampled_from([0.0, 0.2, 0.4]),
       n_lane=st.integers(1, 12))
def test_lanes_reach_their_members_only_and_members_converge(seed: int, loss: float,
                                                             n_lane: int) -> None:
    c, tap, (a, b, d, _e) = run(seed, loss, n_lane)
    members = {J1: {a.addr, b.addr}, J2: {b.addr, d.addr}}
    for job, ms in members.items():
        for p in c.peers:
            if p.addr in ms:
                assert len(lane_ids(p, job)) == 2 * n_lane  # every member's lane, whole
            else:
                assert not lane_ids(p, job)
                assert tap.lane_events_to(p.gossip.peer_id, job) == 0  # in no frame
    assert all(p.sink.door is not None and not p.sink.door.refused.total for p in c.peers)
    first = mesh_ids(a)
    assert len(first) == 2 + 2 * n_lane
    assert all(mesh_ids(p) == first for p in c.peers)
    assert all(p.sink.heads() == a.sink.heads() for p in c.peers)  # lanes are no mesh head
    assert all(p.sink.content_sum() == a.sink.content_sum() for p in c.peers)


def test_one_flush_of_lane_and_mesh_events_is_one_frame_to_a_member() -> None:
    """A flush of a mesh event and a lane event (a home's last TURN and its JOB_ENDED): the
    member gets both in one frame, the non-members the mesh event alone."""
    c = cluster(seed=2)
    tap = Wiretap(c)
    a, b = c.peers[:2]
    submit(a, J1, [a.gossip.peer_id, b.gossip.peer_id])
    steps(c, 6)
    frames = dict(tap.frames)
    ev, own = lane_done(a, J1, 1), a.sink.emit()
    a.sink.merge([ev])
    a.gossip.broadcast([ev, own])
    c.net.pump()
    assert tap.frames[b.gossip.peer_id] == frames[b.gossip.peer_id] + 1
    assert tap.mixed[b.gossip.peer_id] == 1 and b.sink.state.events.keys() >= {ev.id, own.id}
    for p in c.peers[2:]:
        assert tap.frames[p.gossip.peer_id] == frames[p.gossip.peer_id] + 1
        assert own.id in p.sink.state.events and not lane_ids(p, J1)
    assert sum(tap.lane_events_to(p.gossip.peer_id, J1) for p in c.peers[2:]) == 0


def test_a_relay_never_forwards_a_lane_event() -> None:
    """A partial push (more live peers than `fanout`) relays mesh events by hops; a lane
    event goes to its members directly (ttl 0), and nobody relays it, even when a frame asks
    for it (ttl > 0)."""
    c = Cluster(6, GossipConfig.local(fanout=2), seed=3, connect=False, lanes=True)
    seed_swim(c)
    tap = Wiretap(c)
    a, b = c.peers[:2]
    submit(a, J1, [a.gossip.peer_id, b.gossip.peer_id])
    c.net.pump()
    steps(c, 6)
    assert all(p.sink.state.members_of.get(J1) for p in c.peers)
    sent = c.net.sent
    ev, own = lane_done(a, J1, 1), a.sink.emit()
    a.sink.merge([ev])
    a.gossip.broadcast([own, ev])
    c.net.pump()
    assert lane_ids(b, J1) == {ev.id}
    assert all(not lane_ids(p, J1) and tap.lane_events_to(p.gossip.peer_id, J1) == 0
               for p in c.peers[2:])
    assert c.net.sent - sent >= 2  # (the mesh event went by a partial push)
    # a frame that asks for a relay of a lane event (ttl 2) from member b: not forwarded
    ev2 = lane_done(b, J1, 1)
    b.sink.merge([ev2])
    b.gossip.send_events([a.addr], [ev2], ttl=2)
    before = tap.lane_events_to(a.gossip.peer_id, J1)
    c.net.pump()
    assert tap.lane_events_to(a.gossip.peer_id, J1) == before + 1
    assert all(tap.lane_events_to(p.gossip.peer_id, J1) == 0 for p in c.peers[2:])


def test_a_peer_without_lanes_v1_is_never_sent_jobs_nor_a_lane_event() -> None:
    """OLD is named a member of J1 but does not announce lanes-v1: pushes and pair rounds
    leave it out; its mesh rounds run as before and it converges on the mesh streams."""
    c, tap, (a, b, _d, _e) = run(seed=5, loss=0.2, n_lane=6, old=True)
    old = c.peers[-1]
    assert old.gossip.peer_id == OLD
    assert tap.frames[OLD] > 0 and tap.jobs_keys[OLD] == 0
    assert all(not per_frame for per_frame in tap.lanes.get(OLD, []))
    assert not lane_ids(old, J1) and not lane_ids(old, J2)
    assert mesh_ids(old) == mesh_ids(a)
    assert len(lane_ids(a, J1)) == len(lane_ids(b, J1)) == 12
    assert sum(tap.jobs_keys.values()) > 0  # (the members ran pair rounds)


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**16), seq=st.integers(1, 4), loss=st.sampled_from([0.0, 0.3]))
def test_two_contents_of_a_lane_seq_settle_among_the_members(seed: int, seq: int,
                                                             loss: float) -> None:
    """Members a and b hold two contents of a's lane seq `seq` (and equal heads): the pair
    round's block exchange ("blk", "fix", with "jobs") leaves the winner on both; the
    non-members hold neither."""
    c = cluster(seed=seed)
    tap = Wiretap(c)
    a, b = c.peers[:2]
    submit(a, J1, [a.gossip.peer_id, b.gossip.peer_id])
    steps(c, 6)
    evs = [lane_done(a, J1, q) for q in range(1, 5)]
    i = seq - 1
    other = Event(evs[i].origin, seq, evs[i].hlc, EventType.TASK_DONE,
                  {**evs[i].payload, "output": CID.replace("q", "a")})
    a.sink.merge(evs)
    b.sink.merge([*evs[:i], other, *evs[i + 1:]])
    assert held_hash(a.sink.state.events[evs[i].id]) != held_hash(
        b.sink.state.events[evs[i].id])
    mesh(c, loss=loss)
    steps(c, 40)
    c.net.loss = c.net.duplicate = 0.0
    steps(c, 20)
    ha, hb = (held_hash(p.sink.state.events[evs[i].id]) for p in (a, b))
    assert ha == hb and a.sink.replaced + b.sink.replaced == 1
    assert a.sink.state.content_sum([J1]) == b.sink.state.content_sum([J1])
    assert all(tap.lane_events_to(p.gossip.peer_id, J1) == 0 for p in c.peers[2:])


def test_one_pair_round_per_period_whatever_the_jobs_shared() -> None:
    """Peers 1 and 2 share 30 live jobs: each starts at most one pair round per anti-entropy
    period (one DIGEST_SUM naming them all), not one per job; members of no job, none."""
    c = cluster(seed=13)
    tap = Wiretap(c)
    a, b = c.peers[:2]
    jobs = [f"j{k:012x}" for k in range(1, 31)]
    for j in jobs:
        submit(a, j, [a.gossip.peer_id, b.gossip.peer_id])
    steps(c, 4)
    before = dict(tap.pair_sums)
    periods = 20
    steps(c, 2 * periods)
    for p in (a, b):
        started = tap.pair_sums[p.gossip.peer_id] - before.get(p.gossip.peer_id, 0)
        assert 0 < started <= periods + 1
    assert all(tap.pair_sums[p.gossip.peer_id] == 0 for p in c.peers[2:])


def test_a_non_member_asking_for_a_job_gets_nothing() -> None:
    """A pair DIGEST naming J1 from a peer that is no member of it (all the lanes asked for,
    a zero vector) is answered with no lane event; nor is one sent with a forged sender."""
    c = cluster(seed=11)
    tap = Wiretap(c)
    a, b, d = c.peers[:3]
    submit(a, J1, [a.gossip.peer_id, b.gossip.peer_id])
    steps(c, 6)
    emit_lane(a, [lane_done(a, J1, q) for q in range(1, 4)])
    c.net.pump()
    for _ in range(3):  # (the first frames exchange cookies)
        d.gossip._ae.send_digest(a.addr, jobs=[J1])
        d.gossip._ae.send_sum(a.addr, jobs=[J1])
        c.net.pump()
    assert tap.lane_events_to(d.gossip.peer_id, J1) == 0 and not lane_ids(d, J1)
    # a forged sender: d's frames claiming to be b's (b is a member), from d's address
    d.gossip._writer = FrameWriter(c.cfg.mesh_id, b.gossip.peer_id, d.addr, None)
    for _ in range(3):
        d.gossip._ae.send_digest(a.addr, jobs=[J1])
        d.gossip._ae.send_sum(a.addr, jobs=[J1])
        c.net.pump()
    assert tap.lane_events_to(d.gossip.peer_id, J1) == 0 and not lane_ids(d, J1)


def test_signed_lanes_travel_to_members_and_a_lane_signed_by_another_is_refused() -> None:
    """Signed peers: lane events signed by the lane's peer (`bs` set) reach the members and
    no one else; a member's push of a lane of another peer, signed by itself (an
    attestation), is refused by the receiver (`lane_signer`) and held nowhere but its own."""
    c = Cluster(4, GossipConfig.local(max_events_per_frame=8), seed=17, connect=False,
                lanes=True, signed=True)
    seed_swim(c)
    tap = Wiretap(c)
    a, b = c.peers[:2]
    submit(a, J1, [a.gossip.peer_id, b.gossip.peer_id])
    steps(c, 6)
    evs = [lane_done(a, J1, q) for q in range(1, 4)]
    assert a.gossip.auth is not None and b.gossip.auth is not None
    sign_events(a.gossip.auth.identity, a.gossip.peer_id, evs, a.gossip.auth.admit)
    emit_lane(a, evs)
    mesh(c, loss=0.2)
    steps(c, 20)
    c.net.loss = c.net.duplicate = 0.0
    steps(c, 10)
    assert lane_ids(b, J1) == {e.id for e in evs}
    assert all(not lane_ids(p, J1) and tap.lane_events_to(p.gossip.peer_id, J1) == 0
               for p in c.peers[2:])
    forged = lane_done(a, J1, 4)  # a's lane, signed by b
    sign_events(b.gossip.auth.identity, b.gossip.peer_id, [forged], b.gossip.auth.admit)
    b.sink.merge([forged])
    b.gossip.broadcast([forged])
    steps(c, 10)
    assert forged.id not in a.sink.state.events
    assert a.gossip.auth.keyring.refused.total.get("lane_signer", 0) >= 1


def test_a_pair_round_tells_the_sender_s_lanes_vector_of_the_shared_jobs_only() -> None:
    """What a pair round proves a member holds (`AntiEntropy(pair_seen=...)`, what a
    compacted job's lanes wait for: peer.log.compact.Compactor.pair_vvs): the vector of the
    lanes of the jobs both share, under its proven sender; never a non-member's, never a
    lane of a job not shared, never under a forged sender."""
    c = cluster(seed=21)
    a, b, d = c.peers[:3]
    ia, ib, i_d = (p.gossip.peer_id for p in (a, b, d))
    submit(a, J1, [ia, ib])
    submit(b, J2, [ib, i_d])
    steps(c, 6)
    seen: dict[str, list[tuple[str, dict[str, int]]]] = {ia: [], ib: [], i_d: []}
    for p in (a, b, d):
        p.gossip._ae._pair_seen = (  # type: ignore[method-assign]
            lambda peer, vv, me=p.gossip.peer_id: seen[me].append((peer, dict(vv))))
    emit_lane(b, [lane_done(b, J1, 1), lane_done(b, J1, 2), lane_done(b, J2, 1)])
    emit_lane(a, [lane_done(a, J1, 1)])
    steps(c, 20)
    full = {lane(ia, J1): 1, lane(ib, J1): 2}
    assert [vv for peer, vv in seen[ia] if peer == ib][-1] == full
    assert [vv for peer, vv in seen[ib] if peer == ia][-1] == full
    assert {peer for peer, _ in seen[ia]} == {ib}  # (d shares no job with a)
    assert all(lane_of(o) is not None and lane_of(o)[1] == J2  # type: ignore[index]
               for peer, vv in seen[i_d] for o in vv) and seen[i_d]
    # d's frames claiming to be b's (a member of J1), from d's address: nothing told
    before = len(seen[ia])
    d.gossip._writer = FrameWriter(c.cfg.mesh_id, ib, d.addr, None)
    for _ in range(3):
        d.gossip._ae.send_digest(a.addr, jobs=[J1])
        d.gossip._ae.send_sum(a.addr, jobs=[J1])
        c.net.pump()
    assert len(seen[ia]) == before
def test_lane_partners_are_kept_per_membership_change_not_read_per_push() -> None:
    """The live peers announcing lanes-v1 are kept by the view at each change of a member's
    state or report (`MeshView.lane_peers`): a lane event's push copies no report, and a
    member revoked (dead) is no partner any more."""
    c = cluster(seed=7, n=3)
    a, b, d = c.peers
    ids = [p.gossip.peer_id for p in c.peers]
    assert set(a.gossip.view.lane_peers) == set(ids[1:])
    submit(a, J1, ids[:2])
    c.net.pump()
    steps(c, 4)

    def no_copies() -> dict[str, dict[str, object]]:
        raise AssertionError("a lane event's push read every live peer's report")

    a.gossip.view.live_peers = no_copies  # type: ignore[method-assign]
    ev = lane_done(a, J1, 1)
    emit_lane(a, [ev])
    c.net.pump()
    assert lane_ids(b, J1) == {ev.id} and not lane_ids(d, J1)
    a.gossip.member_revoked(ids[1])
    assert set(a.gossip.view.lane_peers) == {ids[2]}
    emit_lane(a, [lane_done(a, J1, 2)])
    c.net.pump()
    assert lane_ids(b, J1) == {ev.id}


def test_a_pair_round_names_at_most_max_pair_jobs_rotating_over_all() -> None:
    """The receiver refuses a frame naming more than MAX_PAIR_JOBS jobs: the sender names
    that many a round (sorted, as the receiver compares them), the next round going on
    after the last one named, so that every shared job is in a round."""
    c = cluster(seed=9, n=2)
    a = c.peers[0]
    ids = {p.gossip.peer_id for p in c.peers}
    jobs = [f"j{i:012x}" for i in range(MAX_PAIR_JOBS + 10)]
    for p in c.peers:
        p.sink.state.members_of.update({j: set(ids) for j in jobs})
    sent: list[list[str]] = []
    a.gossip._ae.send_sum = (  # type: ignore[method-assign]
        lambda addr, jobs=None: sent.append(list(jobs or [])))
    for _ in range(3):
        a.gossip.pair_round()
    assert [len(s) for s in sent] == [MAX_PAIR_JOBS] * 3 and all(s == sorted(s) for s in sent)
    assert sent[0] == jobs[:MAX_PAIR_JOBS]
    assert sent[1] == sorted(jobs[MAX_PAIR_JOBS:] + jobs[:MAX_PAIR_JOBS - 10])
    assert set(sent[0]) | set(sent[1]) == set(jobs)
    assert set(sent[2]) == set(jobs) - set(jobs[MAX_PAIR_JOBS - 20:MAX_PAIR_JOBS - 10])


@pytest.mark.parametrize("settings", [{"anti_entropy_nonces": False}, {"swim": None}])
def test_lanes_without_swim_or_anti_entropy_nonces_refuse_to_start(
        settings: dict[str, object]) -> None:
    """A pair round is answered only from the proven address SWIM holds for its sender:
    without nonces (or SWIM) no pair round would be answered, members would never catch up
    on each other's lanes; the gossip refuses to start, naming the settings."""
    c = Cluster(1, GossipConfig.local(), lanes=False)
    with pytest.raises(ConfigError, match="anti-entropy nonces") as e:
        c.add(f"{7:016x}", GossipConfig.local(**settings), lanes=True)
    assert e.value.field == "gossip"
    c.add(f"{8:016x}", GossipConfig.local(**settings), lanes=False)  # (lanes off: as before)


def _joined(c: Cluster, adder: SimPeer, joiner: SimPeer, jobs: list[str]) -> None:
    """`adder` adds `joiner` to `jobs` (a scale-out's JOB_MEMBERS with its lanes' heads),
    folded by every peer at once (no push, no time: nothing else moves)."""
    for job in jobs:
        ev = adder.sink.emit({"job": job, "add": [joiner.gossip.peer_id],
                              "heads": dict(adder.sink.state.lane_heads([job]))},
                             EventType.JOB_MEMBERS)
        for p in c.peers:
            if p is not adder:
                p.sink.merge([ev])


def test_catch_up_brings_the_one_jobs_lanes_from_the_adder_at_once() -> None:
    """Design 5.3: a peer just added to a job asks for its lanes (`Gossip.catch_up`, what
    `Scheduler._join` calls through `Node._catch_up`): one pair round of that job alone with
    the adder, its three legs (DIGEST_SUM, DIGEST, the EVENTS answer) on the real gossip.
    d, added to J1 and J2 after their lanes were pushed (to the members then: a and b),
    holds J1's lanes, a's and b's, once the frames in flight are delivered (no time
    passes: no periodic round, no push), and nothing of J2; if catch_up sent nothing, d
    would hold nothing (the joiner's scheduler would wait lease_s for every scale-out)."""
    c = cluster(seed=3, n=3)
    tap = Wiretap(c)
    a, b, d = c.peers
    ia, ib, i_d = (p.gossip.peer_id for p in c.peers)
    for job in (J1, J2):
        submit(a, job, [ia, ib])
    steps(c, 6)
    emit_lane(a, [lane_done(a, J1, q) for q in range(1, 4)] + [lane_done(a, J2, 1)])
    emit_lane(b, [lane_done(b, J1, 1)])
    c.net.pump()
    assert len(lane_ids(a, J1)) == 4 and not lane_ids(d, J1) and not lane_ids(d, J2)
    _joined(c, a, d, [J1, J2])
    sums = tap.pair_sums[i_d]
    d.gossip.catch_up(J1, ia, fallback=True)
    assert c.net.pump() >= 3 and tap.pair_sums[i_d] == sums + 1
    assert lane_ids(d, J1) == lane_ids(a, J1) and not lane_ids(d, J2)
    assert d.sink.state.lane_heads([J1]) == a.sink.state.lane_heads([J1])


def test_catch_up_asks_another_member_when_the_adder_is_not_a_live_lanes_partner(
        ) -> None:
    """The adder gone (not live here): catch_up asks a live member that shares the job;
    with lanes off (no LaneSink) it sends nothing."""
    c = cluster(seed=4, n=3)
    a, b, d = c.peers
    ia, ib = a.gossip.peer_id, b.gossip.peer_id
    submit(a, J1, [ia, ib])
    steps(c, 6)
    emit_lane(b, [lane_done(b, J1, q) for q in range(1, 3)])
    c.net.pump()
    _joined(c, a, d, [J1])
    del d.gossip.view.lane_peers[ia]  # (a is no live lanes partner of d's)
    d.gossip.catch_up(J1, ia, fallback=True)
    c.net.pump()
    assert lane_ids(d, J1) == lane_ids(b, J1) and len(lane_ids(d, J1)) == 2
    sent: list[object] = []
    d.gossip._lanes = None
    d.gossip._ae.send_sum = lambda *args, **kwargs: sent.append(args)  # type: ignore[method-assign]
    d.gossip.catch_up(J1, ib, fallback=True)
    assert sent == []


def test_a_member_folding_an_add_pairs_with_the_added_peer_only_never_another(
        ) -> None:
    """Review finding 5: a member that folds another's JOB_MEMBERS starts a pair round of
    the job with each peer added (`Scheduler._members_grew`, wired to the real gossip as
    `Node._catch_up` does), with that peer alone: an add naming a made-up peer, or one not
    live here, starts no round (a round with another member would bring it nothing; the
    door lets a member add anyone). (A round with the peer added when it is a live lanes
    partner: test_catch_up_brings_the_one_jobs_lanes_from_the_adder_at_once.)"""
    c = cluster(seed=5, n=3)
    tap = Wiretap(c)
    a, b, _ = c.peers
    ia, ib, i_d = (p.gossip.peer_id for p in c.peers)
    submit(a, J1, [ia, ib])
    steps(c, 6)
    store = MemoryStore(Content())
    sched = Scheduler(SchedulerConfig(store=StoreConfig("/nonexistent")), ib, b.sink.state,
                      lambda t, p: b.sink.emit(p, t), store, FakeRunner(store), {},
                      MemoryData(store), catch_up=b.gossip.catch_up)
    sums = tap.pair_sums[ib]
    made_up = "e" * 16
    del b.gossip.view.lane_peers[i_d]  # (d is not live here: b's view)
    for added in (made_up, i_d):
        ev = a.sink.emit({"job": J1, "add": [added], "heads": {}}, EventType.JOB_MEMBERS)
        assert b.sink.merge([ev]) == [ev]
        sched.poke(ev)
        c.net.pump()
        assert tap.pair_sums[ib] == sums  # (before the fix: one round with a, each)
