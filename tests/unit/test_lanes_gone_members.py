"""Review r2 of session 47, finding 3: a gone lanes job's members are decided by the events,
not by when they came relative to this peer's compaction or deletion. A vouched member's
JOB_MEMBERS adds its peers to the job whether it is folded while the job is live or after
it left memory (and the lane events it admits, held until then, fold); one by a peer that
is not vouched for (it added itself) adds none once the job left memory, whatever its
order (R3-C). The real fold on a real `MeshState`."""

from __future__ import annotations

import itertools
from typing import Any

from peer.log import Event, EventType, fold
from peer.log.fold import GoneLanes, MeshState
from peer.log.lanes import lane
from tests.unit.test_lanes_gone import DEL, WANT, cache, state
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


def test_a_job_whose_submission_came_after_its_deletion_takes_no_members() -> None:
    """Nothing fixed was known of J as it went (its JOB_SUBMITTED came after its
    JOB_DELETED): a JOB_MEMBERS adds no member there, as before (R3-C)."""
    for order in itertools.permutations([SUB, HX, XL]):
        s = fold([DEL, *order], state())
        assert (cache(s), _members(s)) == ((None, {}), frozenset({H, R})), [e.id for e in order]
