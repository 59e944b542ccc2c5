"""Review r3 of session 46, R3-C and R3-A: what decides a gone lanes job's task events
(`GoneLanes`) is fixed as the job leaves memory: a JOB_MEMBERS that comes after (any peer
may add itself then: `Node._adders`) adds no member, live or at a replay (the compactor's
record says the same members); and a deleted lanes job's facts are kept in the job index
beside its tombstone, so that a replay reads them (R3-A). The real fold; a real Node."""

from __future__ import annotations

import importlib
import itertools
from pathlib import Path

import pytest

from peer.config import PeerConfig
from peer.log import Event, EventType, fold
from peer.log.fold import GoneLanes, MeshState, Order
from peer.log.lanes import lane
from peer.node import Node
from tests.unit.test_lanes_gone import DEL, FACTS, MESH, WANT, cache, state
from tests.unit.test_lanes_hostile import BAD, REAL, SUB, H, J, R, X, task_done

JM = Event(X, 2, 1600, EventType.JOB_MEMBERS, {"job": J, "add": [X]})  # X adds itself
XL = task_done(lane(X, J), 1, 1700, BAD)  # X's lane, after the SUB: folds if X is a member


def test_a_job_members_after_a_compaction_adds_no_member_in_either_order() -> None:
    """(On 9590a1d the JOB_MEMBERS grew the compacted job's members: X's lane TASK_DONE was
    dropped if it came first, folded if it came after.)"""
    for order in itertools.permutations([JM, XL]):
        s = fold([SUB, REAL], state())
        s.compact([J])
        fold(order, s)
        assert cache(s) == WANT, [e.id for e in order]
        assert s.gone_lanes(J) == FACTS


@pytest.mark.parametrize("jm_hlc", [1600, 1800])
def test_a_replay_of_a_compacted_job_reads_its_members_from_its_record_alone(
        jm_hlc: int) -> None:
    """A restart replays in hlc order (the JOB_MEMBERS before or after X's TASK_DONE) with J
    compacted: its record's members decide (on 9590a1d the replayed JOB_MEMBERS was united
    with them, and a TASK_DONE after it that the live fold had let go was folded)."""
    s = state(gone_lookup={J: FACTS}.get)
    s.compacted.add(J)
    jm = Event(X, 2, jm_hlc, EventType.JOB_MEMBERS, {"job": J, "add": [X]})
    fold(sorted([SUB, REAL, jm, XL], key=lambda e: e.order), s)
    assert cache(s) == WANT and s.gone_lanes(J) == FACTS


def test_a_job_members_after_a_deletion_adds_no_member_in_any_order() -> None:
    """Every arrival order with the JOB_SUBMITTED before the JOB_DELETED and the JOB_MEMBERS
    after it (one before it makes X a member while the job is live, as it should)."""
    for order in itertools.permutations([SUB, REAL, DEL, JM, XL]):
        if order.index(SUB) < order.index(DEL) < order.index(JM):
            s = fold(order, state())
            assert cache(s) == WANT, [e.id for e in order]
            assert s.gone_lanes(J) == FACTS
    s = state(gone_lookup={J: FACTS}.get)  # a replay: the tombstone and its facts indexed
    s.deleted[J] = DEL.order
    fold(sorted([SUB, REAL, JM, XL, DEL], key=lambda e: e.order), s)
    assert cache(s) == WANT


def test_a_job_deleted_before_its_job_submitted_came_takes_that_submission_s_facts() -> None:
    """Nothing was known of J as it went: a straggling JOB_SUBMITTED still says what it was
    (a lanes job, its members; as on 9590a1d), a JOB_MEMBERS never adds one (it did there)."""
    for order in itertools.permutations([SUB, JM]):
        s = fold([DEL, *order, MESH, XL], state())
        assert cache(s) == (None, {}), [e.id for e in order]
        got = s.gone_lanes(J)
        assert got is not None and (got.lanes, got.members, got.sub) == (True, {H, R}, SUB.order)


# -- a Node: the facts go to the job index with the tombstone, and a replay reads them ------------
OTHER = "0123456789abcdef0123"  # a live peer whose vector covers nothing: the rows stay


def _restarted(tmp_path: Path) -> Node:
    node = Node(PeerConfig(data_dir=tmp_path, slots=1, mdns=False, compact_recent_tasks=0),
                lanes=True)
    node.listeners[:] = [node.compactor.note]
    return node


@pytest.mark.parametrize("compacted", [False, True])
def test_a_replay_of_a_deleted_lanes_job_reads_its_facts_beside_its_tombstone(
        tmp_path: Path, compacted: bool) -> None:
    """X's mesh-stream TASK_DONE of lanes job J1, backdated before its JOB_SUBMITTED, is let
    go live; J1 is deleted (live, or once compacted: its record then goes) and its tombstone
    written, and the peer restarts before J1's rows leave the log. The replay (hlc order:
    the TASK_DONE first) reads J1's facts from the job index (on 9590a1d it knew nothing of
    J1 there and folded it: BAD in the output cache, X a provider)."""
    from tests.unit.test_lanes_compact import _end, _Gossip, _node
    node = _node(tmp_path)
    try:
        assert isinstance(node.gossip, _Gossip)
        node.gossip.heads[OTHER] = {}
        me, sub = node.peer_id, node.state.jobs["j0000000000b1"].order
        job = "j0000000000b1"
        if compacted:
            _end(node, job)
            assert node.catchup.compact().jobs == [job]
        stray = Event(X, 1, sub[0] - 1, EventType.TASK_DONE,
                      {"job": job, "task": "t0", "output": BAD, "cached": False, "key": "kx"})
        assert node.merge([stray]) == [stray]
        node.janitor.delete_job(job)
        node.flush()
        node.catchup.compact()
        assert node.index.tombstone(job) is not None and job not in node.index
        assert node.log.db.execute("SELECT 1 FROM events WHERE origin = ?", (X,)).fetchone()
        assert node.state.outputs.get("kx") is None
    finally:
        node.log.close()
    _restarted_lets_x_go(tmp_path, job, me, sub, deleted=True)


def _restarted_lets_x_go(tmp_path: Path, job: str, me: str, sub: Order,
                         deleted: bool = False) -> None:
    """Restarted, the peer knows deleted `job`'s facts (a lanes job of `me` alone, `sub`)
    and X's stray TASK_DONE is not folded (no BAD in the cache, X no provider)."""
    node = _restarted(tmp_path)
    try:
        assert not deleted or job in node.state.deleted
        assert node.state.gone_lanes(job) == GoneLanes(True, frozenset({me}), sub,
                                                       vouched=frozenset({me}))
        assert node.state.outputs.get("kx") is None and BAD not in node.state.providers
    finally:
        node.log.close()


def test_a_deleted_lanes_job_s_facts_are_read_back_and_forgotten_with_its_tombstone(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """`put_deleted` keeps the first facts of a job; a row that does not read back is left
    out (logged: decided as a job nothing is known of); `note_forgotten` removes it."""
    node = _restarted(tmp_path)
    try:
        index, db = node.index, node.log.db
        index.put_deleted([(J, DEL.order)], [(J, DEL.order)], [(J, [R, H], SUB.order)])
        index.put_deleted([(J, DEL.order)], (), [(J, [X], (1, X, 1))])
        assert index.lanes_of(J) == ([H, R], SUB.order)
        db.execute("UPDATE deleted_lanes SET members = '[1]' WHERE job = ?", (J,))
        assert index.lanes_of(J) is None
        assert "the lanes facts of the deleted job" in caplog.text
        index.note_forgotten([J], {})
        assert db.execute("SELECT count(*) FROM deleted_lanes").fetchone() == (0,)
    finally:
        node.log.close()


def test_a_compacted_lanes_job_s_facts_outlive_a_crash_before_the_next_pass(
        tmp_path: Path) -> None:
    """Review r2 of session 47, finding 1: J1 is compacted and its rows leave the log (no
    live peer keeps them), then X's backdated mesh-stream TASK_DONE is let go and J1 is
    deleted: its record goes at once. The peer is killed before the next pass (`_bury`):
    J1's facts were in memory only, and the replay folded the TASK_DONE (BAD in the output
    cache, X a provider). They now go to `deleted_lanes` with the record's deletion."""
    from tests.unit.test_lanes_compact import _end, _node
    node = _node(tmp_path)
    job = "j0000000000b1"
    try:
        me, sub = node.peer_id, node.state.jobs[job].order
        _end(node, job)
        assert node.catchup.compact().jobs == [job]
        node.catchup.compact()
        assert node.log.db.execute("SELECT 1 FROM events WHERE origin = ? AND seq = ?",
                                   (sub[1], sub[2])).fetchone() is None  # (its rows left)
        stray = Event(X, 1, sub[0] - 1, EventType.TASK_DONE,
                      {"job": job, "task": "t0", "output": BAD, "cached": False, "key": "kx"})
        assert node.merge([stray]) == [stray]
        node.janitor.delete_job(job)
        node.flush()
        assert job not in node.index and node.index.tombstone(job) is None  # (no pass yet)
        assert node.state.outputs.get("kx") is None
    finally:
        node.log.close()  # (no pass after: as a kill -9 would leave it)
    _restarted_lets_x_go(tmp_path, job, me, sub)


def test_every_deleted_lanes_job_s_facts_are_written_past_the_memory_bound(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Review r2 of session 47, finding 2: more lanes jobs deleted between two passes than
    GONE_LANES_MAX (lowered to 1 here): `_bury` looked each up in that bounded memory, and
    a miss (the first job's facts pushed out) cached NO_LANES, which pushed out the next
    job's: no job's facts were written (and the live fold decided the first job's late
    events as a job nothing is known of). Each one's are now, read from `tomb_lanes`."""
    from tests.unit.test_lanes_compact import J1, J2, _node
    monkeypatch.setattr(importlib.import_module("peer.log.fold"), "GONE_LANES_MAX", 1)
    node = _node(tmp_path)
    try:
        me = node.peer_id
        subs = {j: node.state.jobs[j].order for j in (J1, J2)}
        for j in (J1, J2):
            node.emit(EventType.JOB_DELETED, {"job": j, "reason": "retention"})
        node.flush()
        assert node.state.gone_lanes(J1) == GoneLanes(True, frozenset({me}), subs[J1],
                                                      vouched=frozenset({me}))
        node.catchup.compact()
        assert node.index.tombstone(J1) is not None and node.index.tombstone(J2) is not None
        assert {j: node.index.lanes_of(j) for j in (J1, J2)} == {
            j: ([me], subs[j]) for j in (J1, J2)}
        assert node.state.tomb_lanes == {}  # (let go with the tombstones)
    finally:
        node.log.close()


def test_a_refold_keeps_the_facts_of_the_tombstones_it_keeps() -> None:
    """Review of session 47's merge (the lead's reread): `refold` keeps the tombstones whose
    JOB_DELETED left memory; the facts `_bury` writes beside them (`tomb_lanes`, while a
    pass has not written them, e.g. after its write failed) were lost with the rest of the
    state, and the next pass wrote the tombstone alone (a replay then knew nothing of the
    job's members)."""
    state = MeshState(lanes_on=True)
    facts = GoneLanes(True, frozenset({H}), SUB.order)
    state.deleted[J] = DEL.order  # (its JOB_DELETED not in `events`: it left memory)
    state.tomb_lanes[J] = facts
    state.tomb_lanes["j-other"] = facts  # (no tombstone kept for it: not carried over)
    state.refold()
    assert state.deleted.get(J) == DEL.order
    assert state.tomb_lanes == {J: facts} and state.gone_lanes(J) == facts
