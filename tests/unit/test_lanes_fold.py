"""Partial replication, step 2: the fold of lanes (docs/design/partial-replication.md,
sections 3, 4 and 8). A lane (one peer's task events of one job, an origin "<peer>/<job>") is
held and folded like any origin, but every mesh-wide reader (heads sent to any peer, content
digests, `events_after` without a scope, blocks asked for by origin) sees the mesh origins
only; the members of a job and its end (JOB_SUBMITTED's `members`, JOB_MEMBERS, JOB_ENDED)
fold order-free; a peer that folds a job's JOB_ENDED instead of its lanes holds the same
cache and provider entries as one that folded the lanes."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from peer.config import PeerConfig
from peer.log import Event, EventType, MeshState, fold
from peer.log.contents import BLOCK_SEQS
from peer.log.lanes import lane, lane_of, peer_of
from peer.mesh.gossip import GossipConfig
from peer.mesh.sim import Cluster
from peer.node import Node

PEERS = ("a1" * 8, "b2" * 8, "c3" * 10)  # two 16-digit ids and a 20-digit one
JOBS = ("j" + "0" * 11 + "1", "j" + "0" * 11 + "2")
LANES = tuple(lane(p, j) for p in PEERS for j in JOBS)
CID = "bafkreiaheqdfvsfwin2qysg2nd3n4upuu7oyiwtnuvai2oi3lesbeuh42q"


def job_of(lane_origin: str) -> str:
    got = lane_of(lane_origin)
    assert got is not None
    return got[1]


def provide(origin: str, seq: int) -> Event:
    return Event(origin, seq, seq * 10, EventType.PROVIDE, {"cids": [f"c-{origin}-{seq}"]})


def task_done(origin: str, seq: int, job: str, task: str, key: str | None, output: str,
              hlc: int | None = None, cached: bool = False) -> Event:
    return Event(origin, seq, seq * 10 + 1 if hlc is None else hlc, EventType.TASK_DONE,
                 {"job": job, "task": task, "output": output, "cached": cached,
                  **({} if key is None else {"key": key})})


def seqs(draw: st.DrawFn) -> list[int]:
    """Some seqs of one origin: mostly held, some missing (gaps), some a block further."""
    out = []
    for q in range(1, draw(st.integers(0, 6)) + 1):
        if draw(st.integers(0, 4)):
            out.append(q if q < 5 else q + draw(st.sampled_from([0, BLOCK_SEQS])))
    return out


@st.composite
def mesh_and_lanes(draw: st.DrawFn) -> tuple[list[Event], list[Event], dict[str, int], int]:
    """Mesh events (PROVIDEs) and lane events (TASK_DONEs) of three peers and two jobs, with
    gaps; an asker's vector (naming lanes too) and a limit."""
    mesh = [provide(p, q) for p in PEERS for q in seqs(draw)]
    lanes = [task_done(o, q, job_of(o), f"t{q}", f"k{q}", CID)
             for o in LANES for q in seqs(draw)]
    vv = draw(st.dictionaries(st.sampled_from(PEERS + LANES), st.integers(0, 6), max_size=5))
    return mesh, lanes, vv, draw(st.integers(1, 12))


def shuffled(evs: list[Event], seed: int) -> list[Event]:
    out = list(evs)
    random.Random(seed).shuffle(out)
    return out


# -- (a) mesh-wide readers see the mesh origins only --------------------------------------


@settings(max_examples=150, deadline=None)
@given(mesh_and_lanes(), st.integers(0, 2**32))
def test_mesh_readers_answer_as_if_no_lane_were_held(
        given_events: tuple[list[Event], list[Event], dict[str, int], int], seed: int) -> None:
    mesh, lanes, vv, limit = given_events
    s, bare = fold(shuffled(mesh + lanes, seed)), fold(mesh)
    # (on d62dcec the first fails: events_after served every origin the vector lacks, lanes too)
    assert s.events_after(vv, limit) == bare.events_after(vv, limit)
    assert s.content_sum() == bare.content_sum()
    assert s.content_digests() == bare.content_digests()
    assert s.mesh_heads == bare.mesh_heads == bare.heads
    for o in LANES:  # asked for by origin (anti-entropy's blocks): nothing of a lane
        assert s.block_digests(o) == {} and s.events_in(o, range(3)) == []
    # a scope of jobs is served their lanes, and nothing else
    job = JOBS[0]
    want = sorted(e.id for e in lanes if job_of(e.origin) == job
                  and e.seq > vv.get(e.origin, 0))
    assert sorted(e.id for e in s.events_after(vv, 1000, [job])) == want
    held = {o for o in LANES if job_of(o) == job and o in s.by_origin}
    assert set(s.content_digests([job])) == held
    assert s.lanes == {j: {e.origin for e in lanes if job_of(e.origin) == j}
                       for j in JOBS if any(job_of(e.origin) == j for e in lanes)}


def test_a_mesh_exchanges_no_lane_however_the_peers_ask() -> None:
    """Three simulated peers, the first holding mesh events and two jobs' lanes: after
    anti-entropy rounds both ways the others hold every mesh event and no lane event, and
    their heads and content sums equal the first's (mesh scope)."""
    c = Cluster(3, GossipConfig.local(max_events_per_frame=4))
    mesh = [provide(p, q) for p in PEERS for q in range(1, 4)]
    lanes = [task_done(o, q, job_of(o), f"t{q}", f"k{q}", CID)
             for o in LANES for q in range(1, 4)]
    c.peers[0].sink.merge(mesh + lanes)
    for _ in range(4):
        for p in c.peers:
            for q in c.peers:
                if p is not q:
                    p.gossip.anti_entropy(q.addr)
                    c.net.pump()
    first = c.peers[0].sink.state
    for p in c.peers[1:]:
        st_ = p.sink.state
        assert set(st_.events) == {e.id for e in mesh}
        assert st_.heads == first.mesh_heads and p.sink.heads() == c.peers[0].sink.heads()
        assert st_.content_sum() == first.content_sum()


def test_a_node_shows_the_mesh_only_with_lanes_held(tmp_path: Path) -> None:
    """A node's own readers (what heartbeats, DIGESTs, anti-entropy's blocks and /api/health
    read) with lanes in its state. (Folded in directly: until lanes are enabled the door
    refuses lane events, from peers and from disk: step 3.)"""
    node = Node(PeerConfig(data_dir=tmp_path, slots=1, mdns=False))
    node.listeners.clear()  # (no scheduler reactions: this is about the log)
    mesh = [provide(p, q) for p in PEERS for q in (1, 2)]
    bare = fold(mesh)
    try:
        assert node.merge(mesh)
        for o in LANES:
            assert node.state.apply(task_done(o, 1, job_of(o), "t1", "k1", CID))
        assert set(node.state.heads) == set(PEERS) | set(LANES)  # held, folded
        assert dict(node.heads()) == bare.heads
        assert node.events_after({}, 100) == bare.events_after({}, 100)
        assert node.content_sum() == bare.content_sum()
        assert node.content_digests() == bare.content_digests()
        assert node.events_in(LANES[0], [0]) == [] and node.block_digests(LANES[0]) == {}
        h = node.log_health()
        assert h["origins"] == len(PEERS) and h["content_digest"] == bare.content_sum()
        assert h["heads_digest"] == hashlib.sha256(json.dumps(
            sorted(bare.heads.items()), separators=(",", ":")).encode()).hexdigest()[:32]
    finally:
        node.log.close()


# -- helpers for the jobs' members and ends -----------------------------------------------

WORKFLOW = {"name": "w", "tasks": [{"name": f"t{i}", "call": "c", "params": {}, "depends": []}
                                   for i in range(4)]}


def submitted(origin: str, seq: int, job: str, members: list[str] | None) -> Event:
    return Event(origin, seq, seq * 10, EventType.JOB_SUBMITTED,
                 {"job": job, "workflow": WORKFLOW,
                  **({} if members is None else {"members": members})})


def job_members(origin: str, seq: int, job: str, add: list[str]) -> Event:
    return Event(origin, seq, seq * 10 + 2, EventType.JOB_MEMBERS, {"job": job, "add": add})


def job_ended(origin: str, seq: int, hlc: int, job: str, s: MeshState) -> Event:
    """The JOB_ENDED a home makes of `job` from its fold `s` (as the Scheduler does:
    peer.jobs.retention.job_ended): each task's winning TASK_DONE as [key, cid, hlc, origin,
    seq], and the holders of each output's CID (of no other: `fold.end_refusal`)."""
    outputs: dict[str, Any] = {}
    for (j, task), ev in s.task_done.items():
        if j == job:
            b = ev.payload
            outputs[task] = [b.get("key"), b["output"], ev.hlc, ev.origin, ev.seq]
    cids = output_cids(outputs)
    producers = {c: sorted(s.providers[c]) for c in sorted(cids) if s.providers.get(c)}
    return Event(origin, seq, hlc, EventType.JOB_ENDED,
                 {"job": job, "state": "done", "n_tasks": len(WORKFLOW["tasks"]), "end": hlc,
                  "outputs": outputs, "producers": producers, "failed": {}, "digest": "0" * 32})


def output_cids(outputs: dict[str, Any]) -> set[str]:
    return {o[1] for o in outputs.values()}


def lanes_fold(events: list[Event]) -> MeshState:
    """The fold with partial replication enabled (`MeshState.lanes_on`: off until the
    flag is announced, so that no JOB_ENDED nor `members` is folded)."""
    return fold(events, MeshState(lanes_on=True))


@st.composite
def lane_dones(draw: st.DrawFn, job: str) -> list[Event]:
    """TASK_DONEs of `job` in its members' lanes, after its JOB_SUBMITTED (`submitted`'s
    hlc 10 at seq 1): a task may be done twice (two peers ran it: the earliest wins), with
    different outputs (a task that is not deterministic); a task's cache key is its own
    (none: not cacheable), two tasks may share one; some are cached (no holder)."""
    out = []
    next_seq = dict.fromkeys(PEERS, 1)
    keys = [draw(st.sampled_from([None, f"k{t}", f"k{t % 2}"])) for t in range(4)]
    for _ in range(draw(st.integers(1, 8))):
        p = draw(st.sampled_from(PEERS))
        t = draw(st.integers(0, 3))
        out.append(task_done(lane(p, job), next_seq[p], job, f"t{t}", keys[t],
                             f"cid-{draw(st.integers(0, 3))}", hlc=draw(st.integers(11, 50)),
                             cached=draw(st.booleans())))
        next_seq[p] += 1
    return out


def entries(s: MeshState, cids: set[str] | None = None) -> tuple[Any, ...]:
    """The cache and provider entries (of `cids` only, if given)."""
    return (dict(s.outputs), dict(s._outputs_src),
            {c: set(v) for c, v in s.providers.items() if v and (cids is None or c in cids)})


# -- (b) members and ends fold order-free --------------------------------------------------


X = "d4" * 8  # a peer that adds itself (review r1 of session 45, H1 and H2)


def hostile(job: str, member: MeshState) -> list[Event]:
    """What a peer that is no member (`X`, then self-added) and a faulty member make of lanes
    job `job` (submitted at hlc 10 by PEERS[0]): task events in mesh streams (never folded),
    one in the lane of a peer added by nobody, one backdated before the JOB_SUBMITTED, and
    JOB_ENDEDs of `X`: one earlier than the members' (ranks after them: it added itself), one
    backdated before the JOB_SUBMITTED (held: `end_refusal`)."""
    a = PEERS[0]
    return [task_done(a, 9, job, "t0", "k0", "cid-bad", hlc=11),  # (a member's mesh stream)
            task_done(X, 9, job, "t1", "k1", "cid-bad", hlc=11),
            task_done(lane("e5" * 8, job), 1, job, "t2", "k2", "cid-bad", hlc=11),
            task_done(lane(a, job), 9, job, "t3", "k3", "cid-bad", hlc=9),
            job_members(X, 1, job, [X]), job_ended(X, 2, 500, job, member),
            Event(X, 3, 5, EventType.JOB_ENDED,
                  {"job": job, "state": "failed", "n_tasks": 4, "end": 5, "outputs": {},
                   "producers": {}, "failed": {}, "digest": "f" * 32})]


@settings(max_examples=150, deadline=None)
@given(lane_dones(JOBS[0]), st.lists(st.integers(0, 2**32), min_size=2, max_size=2),
       st.data())
def test_a_members_fold_is_one_state_whatever_the_order_and_duplicates(
        dones: list[Event], seeds: list[int], data: st.DataObject) -> None:
    """(Session 45, review r1 H1 and H2: with `hostile`'s events, on 4f5ca2e a task event
    of a non-member wins its task and its cache key, and `X`'s JOB_ENDED ends the job.)"""
    job, (a, b, c) = JOBS[0], PEERS
    member = lanes_fold([submitted(a, 1, job, [a, b]), job_members(b, 1, job, [c]), *dones])
    mesh = [submitted(a, 1, job, [a, b]), job_members(b, 1, job, [c]),
            job_members(c, 1, job, [c, b]),
            job_ended(a, 2, 1000, job, member), job_ended(b, 2, 999, job, member)]
    # X's rival JOB_SUBMITTED of the job naming itself (review r3, R3-1): none, later than
    # the real one (loses: on 5c96899 it made X's end, the earliest, the job's), or
    # backdated before it (wins the job: docs/security.md, what is not protected)
    rival_hlc = data.draw(st.sampled_from([None, 20, 5]))
    rival = [] if rival_hlc is None else [
        Event(X, 4, rival_hlc, EventType.JOB_SUBMITTED,
              {"job": job, "workflow": WORKFLOW, "members": [X]})]
    evs = mesh + dones + hostile(job, member) + rival
    dups = data.draw(st.lists(st.sampled_from(evs), max_size=6))
    states = [lanes_fold(shuffled(evs + dups, seed)) for seed in seeds]
    for s in states:
        assert s.members_of == {job: {a, b, c, X}}
        assert s.member_of(job, c) and not s.member_of(job, "e5" * 8)
        assert s.member_of(JOBS[1], "e5" * 8)  # a job without members: everyone's
        assert list(s.unended[job]) == [(X, 3)]  # (before its JOB_SUBMITTED: held)
        assert (entries(s), s.task_done, s.ended) == (
            entries(states[0]), states[0].task_done, states[0].ended)
        if rival_hlc == 5:  # X's JOB_SUBMITTED is the job's: its member's end is first
            assert s.jobs[job].origin == X and s.ended[job].id == (X, 2)
            continue
        assert s.ended[job].id == (b, 2)  # a submission member's first, by (hlc, origin, seq)
        assert entries(s) == entries(member)
        assert s.task_done == member.task_done


def test_a_job_submitted_without_members_has_none_and_a_deleted_job_forgets_them() -> None:
    a, b = PEERS[:2]
    s = lanes_fold([submitted(a, 1, JOBS[0], None), submitted(a, 2, JOBS[1], [a]),
              job_members(b, 1, JOBS[1], [b])])
    assert s.members_of == {JOBS[1]: {a, b}} and not s.member_of(JOBS[1], PEERS[2])
    s.apply(Event(a, 3, 30, EventType.JOB_DELETED, {"job": JOBS[1], "reason": "x"}))
    assert s.members_of == {} and s.member_of(JOBS[1], PEERS[2])
    s.apply(job_members(b, 2, JOBS[1], [b]))  # a straggler of a deleted job: forgotten
    assert s.members_of == {}


# -- (c) a non-member holds what a member holds of an ended job ----------------------------


@settings(max_examples=150, deadline=None)
@given(lane_dones(JOBS[0]), st.integers(0, 2**32))
def test_a_non_member_folding_job_ended_holds_the_members_cache_and_provider_entries(
        dones: list[Event], seed: int) -> None:
    job, a = JOBS[0], PEERS[0]
    dones = [d for d in dones if peer_of(d.origin) != PEERS[2]]  # (no member: it made none)
    mesh = [submitted(a, 1, job, [a, PEERS[1]]),
            provide(PEERS[2], 1)]  # (a mesh event of the non-member itself)
    member = lanes_fold(shuffled(mesh + dones, seed))
    ended = job_ended(a, 2, 10_000, job, member)
    outs = output_cids(ended.payload["outputs"])  # (a losing TASK_DONE's CID is none: a
    other = lanes_fold(shuffled([*mesh, ended], seed))  # member holds its producer too)
    assert entries(other) == entries(member, outs | {f"c-{PEERS[2]}-1"})
    member.apply(ended)  # the member folds it too: nothing changes
    assert entries(member, outs) == entries(other, outs) and member.ended == other.ended
    assert not any(lane_of(p) for held in member.providers.values() for p in held)  # a
    # lane's events are its peer's: the peer holds what they made


def test_a_snapshot_taken_counts_no_lane_seq_as_held(tmp_path: Path) -> None:
    """A snapshot is of the mesh streams: a lane in its heads or floors (a signer of
    another release, or a hostile one) is not counted as held here, where its events would
    then never be fetched; the mesh origins beside it are (here the signer's own, whose
    word counts for its own origin: tests/unit/test_snapshot_heads.py)."""
    n = Node(PeerConfig(data_dir=tmp_path, slots=1, mdns=False))
    try:
        la, mesh = lane(PEERS[0], JOBS[0]), PEERS[1]
        n.compactor.take_rows([], {la: 5, mesh: 3}, {la: 4, mesh: 2}, signer=mesh)
        assert n.state.heads.get(mesh) == 3 and la not in n.state.heads
        assert n.compactor.floors == {mesh: 2} and la not in n.state.evicted
        assert la not in n.log.floors() and not n.state.lanes
    finally:
        n.log.close()


def test_a_refold_keeps_lanes_on() -> None:
    """`refold` (the conflict rule's) makes a fresh state: it folds as the one it replaces,
    with lanes on or off."""
    a, b = PEERS[:2]
    for on in (True, False):
        s = fold([submitted(a, 1, JOBS[0], [a, b])], MeshState(lanes_on=on))
        s.refold()
        assert s.lanes_on is on
        assert s.members_of == ({JOBS[0]: {a, b}} if on else {})


def by_peer(s: MeshState) -> dict[str, set[str]]:
    """`s.lanes` indexed by the lanes' peer."""
    out: dict[str, set[str]] = {}
    for held in s.lanes.values():
        for o in held:
            out.setdefault(peer_of(o), set()).add(o)
    return out


@settings(max_examples=60, deadline=None)
@given(mesh_and_lanes(), st.integers(0, 2**32))
def test_the_lanes_held_are_indexed_by_their_peer_as_they_come_and_go(
        given_events: tuple[list[Event], list[Event], dict[str, int], int], seed: int) -> None:
    """`peer_lanes` (what `Node.servable_upto` walks for a revoked peer, not every lane
    held) is `lanes` by peer: after a fold in any order, a job's lanes forgotten, a refold."""
    mesh, lanes, _, _ = given_events
    s = fold(shuffled(mesh + lanes, seed), MeshState(lanes_on=True))
    assert s.peer_lanes == by_peer(s)
    s.forget_lanes(JOBS[0])
    assert s.peer_lanes == by_peer(s) and all(job_of(o) == JOBS[1] for o in s.heads if "/" in o)
    s.refold()
    assert s.peer_lanes == by_peer(s)
