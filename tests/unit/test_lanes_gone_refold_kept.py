"""Review r3 of session 49, A5: a refold's undo of a held loser's growth of a gone lanes job
must not take back what a vouched add that left memory also made. Such an add of a peer
the loser had vouched for already changed nothing (so it noted nothing to undo) and is not
folded again; its peers are kept (`MeshState._gone_kept`) and vouched for again after the
refold (`_gone_revouch`), with what that vouching walks, folds and takes in. Afterwards the
state is what a peer that never held the loser holds. The real fold on a real `MeshState`
(no sleeps, no network)."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from peer.log import Event, EventType, fold
from peer.log.fold import UNDO_NAMED
from peer.log.gonewait import WaitJournal
from peer.log.lanes import lane
from tests.unit.test_lanes_gone import DEL, state
from tests.unit.test_lanes_gone_refold import (
    PEERS,
    Y_DONE,
    Y_OUT,
    Y,
    Z,
    a_conflict,
    assert_refold_holds_the_clean_peers,
    members,
    seen,
)
from tests.unit.test_lanes_hostile import REAL, SUB, H, J, R, X

# H equivocates on its seq 3 (seq 2 never comes: the loser is held in memory); R, a vouched
# member, adds Y with no gap before it (it leaves memory as it is folded)
LOSE = Event(H, 3, 1600, EventType.JOB_MEMBERS, {"job": J, "add": [Y]})
WIN = Event(H, 3, 1600, EventType.JOB_MEMBERS, {"job": J, "add": [Z]})
RY = Event(R, 1, 1700, EventType.JOB_MEMBERS, {"job": J, "add": [Y]})


def test_an_evicted_vouched_add_after_a_held_loser_keeps_its_peer() -> None:
    """The reviewer's case: the loser vouched Y first, R's add of Y (evicted) changed
    nothing. After replace + refold Y is still a member, as on the clean peer (at
    b54996d8 {H, R, Z} against {H, R, Y, Z})."""
    clean = fold([SUB, REAL, DEL, WIN, RY], state())
    told: dict[str, Any] = {}
    s = fold([SUB, REAL, DEL, LOSE, RY], state(on_members=told.__setitem__))
    assert RY.id not in s.events and LOSE.id in s.events
    s.replace(WIN)
    s.refold()
    assert members(s) == members(clean)
    assert Y in members(s)[1]
    assert sorted(told[J].members) == members(clean)[0]  # (what the compactor writes)


def test_what_the_kept_peer_walks_is_kept_too() -> None:
    """Y had added X while not vouched for (parked); the loser's vouching of Y walked it.
    After the refold Y and X are vouched for and nothing waits, as on the clean peer."""
    yx = Event(Y, 1, 1500, EventType.JOB_MEMBERS, {"job": J, "add": [X]})
    clean = fold([SUB, REAL, DEL, yx, WIN, RY], state())
    s = fold([SUB, REAL, DEL, yx, LOSE, RY], state())
    s.replace(WIN)
    s.refold()
    assert seen(s) == seen(clean)
    assert X in members(s)[1]


def test_the_kept_peers_lane_event_and_output_stay_folded() -> None:
    """Y's lane TASK_DONE waited; the loser's vouching of Y folded it (its output cached).
    After the refold it is still folded, its output cached, as on the clean peer."""
    clean = fold([SUB, REAL, DEL, Y_DONE, WIN, RY], state())
    s = fold([SUB, REAL, DEL, Y_DONE, LOSE, RY], state(wait_journal=WaitJournal()))
    assert s.wait_journal is not None
    s.wait_journal.jobs.clear()  # (written by the compactor)
    s.replace(WIN)
    s.refold()
    assert seen(s) == seen(clean)
    assert s.outputs.get("ky") == Y_OUT
    # the journal's last word on Y's event: no longer waiting (the undo's re-hold undone)
    assert list(s.wait_journal.jobs[J].held.values()) == [None]


def test_the_kept_peers_parked_output_stays_taken_in() -> None:
    """Y added itself while J was live; its TASK_DONE waited aside (Y not vouched for), the
    loser took it in. After the refold the output is still cached, as on the clean peer."""
    add = Event(Y, 1, 1100, EventType.JOB_MEMBERS, {"job": J, "add": [Y]})
    y_done = Event(lane(Y, J), 1, 1500, EventType.TASK_DONE,
                   {"job": J, "task": "t0", "output": Y_OUT, "cached": False, "key": "ky"})
    clean = fold([SUB, REAL, add, y_done, DEL, WIN, RY], state())
    s = fold([SUB, REAL, add, y_done, DEL, LOSE, RY], state())
    s.replace(WIN)
    s.refold()
    assert seen(s) == seen(clean)
    assert s.outputs.get("ky") == Y_OUT


def test_a_refold_without_a_loser_keeps_the_kept_peer_once() -> None:
    """No conflict: the loser stays (it is the only content); a refold changes nothing, and
    what is kept is one set of peers per job, no note per refold. (Session 50: RY, kept
    aside as a gap-free straggler, is folded again by each refold, with one note; its
    peers are kept once it leaves `_gone_recent`.)"""
    s = fold([SUB, REAL, DEL, LOSE, RY], state())
    before = seen(s)
    for _ in range(3):
        s.refold()
        assert seen(s) == before
    assert s._gone_kept == {} and [c[0] for c in s._gone_undo[RY.id]] == [UNDO_NAMED]
    s._gone_recent.pop(RY.id)
    s._undo_gone(RY.id)  # (as it leaves `_gone_recent`: past its bound)
    assert s._gone_kept == {J: {Y}}


def test_forget_lanes_frees_the_undo_notes_of_the_events_it_drops() -> None:
    """Review r3 of session 49, A1: Y (no member) sends lane TASK_DONEs of gone J past a
    gap (held in memory, each waiting with a `_gone_undo` note holding the event);
    `forget_lanes(J)` drops those events and, now, their notes (at b54996d8 48 notes of
    events no longer held stayed until a refold)."""
    s = fold([SUB, REAL, DEL], state())
    evs = [Event(lane(Y, J), q, 2500 + q, EventType.TASK_DONE,
                 {"job": J, "task": f"t{q}", "output": Y_OUT, "cached": False, "key": f"k{q}"})
           for q in range(2, 50)]
    fold(evs, s)
    assert sum(i[0] == lane(Y, J) for i in s._gone_undo) == len(evs)
    s.forget_lanes(J)
    assert not [i for i in s._gone_undo if i not in s.events]


def test_forget_lanes_keeps_what_a_dropped_lane_add_named() -> None:
    """A lane JOB_MEMBERS of vouched R (past a gap) naming Y, which the held loser vouched
    for first, is dropped by `forget_lanes`: it left memory, so Y is kept as an evicted
    add's (A5) and a refold replacing the loser keeps Y."""
    ry = Event(lane(R, J), 3, 1700, EventType.JOB_MEMBERS, {"job": J, "add": [Y]})
    s = fold([SUB, REAL, DEL, LOSE, ry], state())
    assert ry.id in s.events
    s.forget_lanes(J)
    assert s._gone_kept == {J: {Y}}
    s.replace(WIN)
    s.refold()
    assert Y in members(s)[1]



def test_the_undo_of_a_parking_an_evicted_add_walked_frees_no_room() -> None:
    """X (not vouched) adds H past a gap (held: parked, cost 1); R's gap-free add of X walks
    it (for good: R/1 leaves memory). A refold replacing an H loser undid X's parking as if
    it were still parked: the wait's cost went to -1 (at b54996d8; 0 on the clean peer)."""
    xh = Event(X, 10, 1001, EventType.JOB_MEMBERS, {"job": J, "add": [H]})
    rx = Event(R, 1, 1101, EventType.JOB_MEMBERS, {"job": J, "add": [X]})
    lose = Event(H, 99, 1001, EventType.JOB_MEMBERS, {"job": J, "add": [H]})
    win = Event(H, 99, 1001, EventType.JOB_MEMBERS, {"job": J, "add": [H, X]})
    clean = fold([SUB, REAL, DEL, xh, rx, win], state())
    s = fold([SUB, REAL, DEL, xh, rx, lose], state())
    assert rx.id not in s.events and xh.id in s.events
    s.replace(win)
    s.refold()
    assert seen(s) == seen(clean)
    assert s._gone_wait_n == 0

@settings(max_examples=150, deadline=None)
@given(a_conflict(), st.lists(st.lists(st.sampled_from(PEERS), min_size=1, max_size=2,
                                       unique=True), max_size=3),
       st.integers(0, 2**32), st.integers(0, 8))
def test_a_refold_with_evicted_vouched_adds_holds_what_a_peer_without_the_loser_holds(
        drawn: tuple[list[Event], Event, Event], r_adds: list[list[str]], seed: int,
        cut: int) -> None:
    """The F5 property test's conflicts, with JOB_MEMBERS of R (vouched from the start) at
    seqs 1, 2, ... (no gap: each leaves memory as it is folded) among the events: after
    replace + refold and the rest, the members, vouched members, what waits and the cache
    are the clean peer's (at b54996d8 an R add of a peer the loser grew first was lost)."""
    evs, lose, win = drawn
    evs = evs + [Event(R, q, 1100 + q, EventType.JOB_MEMBERS, {"job": J, "add": add})
                 for q, add in enumerate(r_adds, 1)]
    assert_refold_holds_the_clean_peers(evs, lose, win, seed, cut)
