"""Review r2 of session 47, finding 3: a gone lanes job's members are decided by the events,
not by when they came relative to this peer's compaction or deletion. A vouched member's
JOB_MEMBERS adds its peers to the job whether it is folded while the job is live or after
it left memory (and the lane events it admits, held until then, fold); one by a peer that
is not vouched for (it added itself) adds none once the job left memory, whatever its
order (R3-C). The real fold on a real `MeshState`."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

from peer.log import Event, EventType, fold
from peer.log.fold import GoneLanes, MeshState
from peer.log.lanes import lane
from peer.node import Node
from tests.unit.test_lanes_compact import J1, _end, _node
from tests.unit.test_lanes_gone import DEL, WANT, cache, state
from tests.unit.test_lanes_gone_frozen import _restarted
from tests.unit.test_lanes_hostile import BAD, REAL, SUB, H, J, R, X, task_done

Y = "d4" * 8  # a peer X adds once H added X
HX = Event(H, 3, 1600, EventType.JOB_MEMBERS, {"job": J, "add": [X]})  # a home's scale-out
XL = task_done(lane(X, J), 1, 1700, BAD)  # X's lane, before R's (2000): wins if X is a member
ADDED = (BAD, {BAD: frozenset({X}), WANT[0]: frozenset({R})})  # X's output, both providers
MEMBERS = frozenset({H, R, X})


def _members(s: MeshState) -> frozenset[str]:
    got = s.gone_lanes(J)
    assert got is not None
    return got.members


def test_a_vouched_job_members_adds_to_a_deleted_job_in_any_order() -> None:
    """Every arrival order with the JOB_SUBMITTED first (every peer that deletes a job holds
    it): on 45818f71 the JOB_MEMBERS added X only if it came before the JOB_DELETED, so
    peers that got it before and after split (X's output cached on some only)."""
    for rest in itertools.permutations([REAL, HX, XL, DEL]):
        s = fold([SUB, *rest], state())
        assert (cache(s), _members(s)) == (ADDED, MEMBERS), [e.id for e in rest]


def test_a_vouched_job_members_adds_to_a_compacted_job_whenever_the_compaction_came() -> None:
    """Compacted after each prefix of every order: one answer (on 45818f71 X was a member
    only where the JOB_MEMBERS came before the compaction)."""
    for rest in itertools.permutations([REAL, HX, XL]):
        for cut in range(len(rest) + 1):
            s = fold([SUB, *rest[:cut]], state())
            s.compact([J])
            fold(rest[cut:], s)
            assert (cache(s), _members(s)) == (ADDED, MEMBERS), ([e.id for e in rest], cut)


def _index(members: frozenset[str], vouched: frozenset[str]) -> Any:
    return {J: GoneLanes(True, members, SUB.order, vouched=vouched)}.get


def test_a_replay_decides_as_the_live_fold_did_whatever_the_index_kept() -> None:
    """A restart replays in hlc order with J gone, its facts from the job index: kept before
    the JOB_MEMBERS came ({H, R}) or after ({H, R, X}), one answer."""
    replay = sorted([SUB, REAL, HX, XL], key=lambda e: e.order)
    for kept in ({H, R}, {H, R, X}):
        for gone in ("compacted", "deleted"):
            s = state(gone_lookup=_index(frozenset(kept), frozenset(kept)))
            if gone == "compacted":
                s.compacted.add(J)
            else:
                s.deleted[J] = DEL.order
            fold(replay, s)
            assert (cache(s), _members(s)) == (ADDED, MEMBERS), (kept, gone)


def test_a_self_added_peer_adds_no_one_to_a_gone_job_in_any_order() -> None:
    """R3-C kept: X adds itself (not vouched) ordered before the deletion but sent once the
    job left memory; it makes no member there, and nor does a peer X then adds. A vouched
    member's add of X coming later still vouches for X's own adds (the order-free closure,
    as `_vouch` makes it live)."""
    xx = Event(X, 2, 1500, EventType.JOB_MEMBERS, {"job": J, "add": [X]})
    xy = Event(X, 3, 1550, EventType.JOB_MEMBERS, {"job": J, "add": [Y]})
    yl = task_done(lane(Y, J), 1, 1650, BAD)
    for late in itertools.permutations([xx, xy, yl]):
        s = fold([SUB, REAL, DEL, *late], state())
        assert (cache(s), _members(s)) == (WANT, frozenset({H, R})), [e.id for e in late]
        fold([HX], s)  # H vouches for X: X's add of Y counts now, Y's lane event folds
        assert (cache(s), _members(s)) == (
            (BAD, {BAD: frozenset({Y}), WANT[0]: frozenset({R})}), frozenset({H, R, X, Y}))


def test_the_vouched_closure_is_the_same_whichever_adds_came_before_the_deletion() -> None:
    """X adds itself and then Y (not vouched for), H adds X: in every order around the
    deletion, the gone job's members and vouched members are the live fold's (X's adds
    folded live wait in the facts' closure, `GoneWait.adds`, until H vouches for X)."""
    xx = Event(X, 2, 1500, EventType.JOB_MEMBERS, {"job": J, "add": [X]})
    xy = Event(X, 3, 1550, EventType.JOB_MEMBERS, {"job": J, "add": [Y]})
    every = frozenset({H, R, X, Y})
    for order in itertools.permutations([xx, xy, HX, DEL]):
        s = fold([SUB, *order], state())
        got = s.gone_lanes(J)
        assert got is not None and (got.members, got.vouched) == (every, every), [
            e.id for e in order]

def test_a_job_whose_submission_came_after_its_deletion_takes_no_members() -> None:
    """Nothing fixed was known of J as it went (its JOB_SUBMITTED came after its
    JOB_DELETED): a JOB_MEMBERS adds no member there, as before (R3-C)."""
    for order in itertools.permutations([SUB, HX, XL]):
        s = fold([DEL, *order], state())
        assert (cache(s), _members(s)) == ((None, {}), frozenset({H, R})), [e.id for e in order]


# -- a Node: the facts a late JOB_MEMBERS grew go to the job index; older ones read as before ------
def _deleted(tmp_path: Path) -> tuple[Node, str, tuple[int, str, int]]:
    """A Node whose job J1 (it its one member) is deleted and the pass after it run: the
    node, its peer id and J1's submission order."""
    node = _node(tmp_path)
    me, sub = node.peer_id, node.state.jobs[J1].order
    node.janitor.delete_job(J1)
    node.flush()
    node.catchup.compact()
    return node, me, sub


def test_a_late_job_members_of_a_deleted_job_outlives_its_rows_and_a_restart(
        tmp_path: Path) -> None:
    """J1 (this peer its one member) is deleted and its tombstone written; then this peer
    adds X (the JOB_MEMBERS lands after the job went, as on a peer that got it late). The
    next pass writes the grown facts (`gone_vouched`), and a restart reads them back from
    the job index (whether or not the JOB_MEMBERS is still in the log): X is a member there
    (on 45818f71 the JOB_MEMBERS added nothing once the job had gone)."""
    node, me, sub = _deleted(tmp_path)
    try:
        assert node.index.tombstone(J1) is not None
        node.emit(EventType.JOB_MEMBERS, {"job": J1, "add": [X]})
        node.flush()
        node.catchup.compact()
        node.catchup.compact()
        want = GoneLanes(True, frozenset({me, X}), sub, vouched=frozenset({me, X}))
        assert node.state.gone_lanes(J1) == want
        assert node.index.vouched_of(J1) == (sorted({me, X}), sorted({me, X}))
    finally:
        node.log.close()
    back = _restarted(tmp_path)
    try:
        assert back.state.gone_lanes(J1) == want
        assert back.state.gone_lookup is not None and back.state.gone_lookup(J1) == want
    finally:
        back.log.close()


def test_a_job_gone_before_the_vouched_members_were_kept_decides_as_before(
        tmp_path: Path) -> None:
    """A data dir of session 47: no `gone_vouched` row (the table is made where missing).
    The job's facts read as then (no one vouched for), and a JOB_MEMBERS folded after it
    went adds no member, as then."""
    node, me, sub = _deleted(tmp_path)
    try:
        node.log.db.execute("DROP TABLE gone_vouched")  # (as an earlier release made it)
    finally:
        node.log.close()
    back = _restarted(tmp_path)
    try:
        assert back.index.vouched_of(J1) is None
        assert back.state.gone_lanes(J1) == GoneLanes(True, frozenset({me}), sub)
        back.emit(EventType.JOB_MEMBERS, {"job": J1, "add": [X]})
        assert back.state.gone_lanes(J1) == GoneLanes(True, frozenset({me}), sub)
    finally:
        back.log.close()


def test_a_late_job_members_of_a_compacted_job_names_its_member_in_the_record(
        tmp_path: Path) -> None:
    """J1 is compacted, then this peer (its home, vouched) adds X: the next pass writes the
    record again naming X among its members, as a peer that got the JOB_MEMBERS before it
    compacted J1 wrote it (on 45818f71 the record kept the members as of compaction)."""
    node = _node(tmp_path)
    try:
        me = node.peer_id
        _end(node, J1)
        assert node.catchup.compact().jobs == [J1]
        before = node.index.full(J1)
        assert before is not None and before.summary["members"] == [me]
        node.emit(EventType.JOB_MEMBERS, {"job": J1, "add": [X]})
        node.flush()
        node.catchup.compact()
        after = node.index.full(J1)
        assert after is not None
        assert after.summary["members"] == after.record["members"] == sorted({me, X})
        assert (after.state, after.facts, after.order) == (before.state, before.facts,
                                                            before.order)
        got = node.index.lanes_of(J1)
        assert got is not None and set(got[0]) == {me, X}
    finally:
        node.log.close()
