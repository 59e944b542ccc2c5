"""Review r3 of session 48, F5: a refold starts a gone lanes job's facts and waits from what
the events it does not fold again made of them (`MeshState._gone_undo`), so that a replaced
loser's growth of a gone job (members, vouched members, walked or parked adds, lane events
folded out of a wait) is not kept: afterwards the state is what a peer that never held the
loser holds. The real fold on a real `MeshState` (no sleeps, no network)."""

from __future__ import annotations

import random
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from peer.log import Event, EventType, MeshState, fold
from peer.log.lanes import lane
from tests.unit.test_lanes_gone import DEL, state
from tests.unit.test_lanes_hostile import REAL, SUB, H, J, X

Y, Z = "d4" * 8, "e5" * 8
HX = Event(H, 3, 1600, EventType.JOB_MEMBERS, {"job": J, "add": [X]})
Y_OUT = "bafkreiels5j6bmj5rqdmhd7u55ll65dg2oqpduss6f66eomgazgstbcp7e"
Y_DONE = Event(lane(Y, J), 1, 2500, EventType.TASK_DONE,
               {"job": J, "task": "t0", "output": Y_OUT, "cached": False, "key": "ky"})


def members(s: MeshState) -> tuple[list[str], list[str]]:
    f = s.gone_lanes(J)
    assert f is not None
    return sorted(f.members), sorted(f.vouched)


def waiting(s: MeshState) -> tuple[Any, ...]:
    w = s._gone_waits.get(J)
    if w is None:
        return ({}, [], 0)
    return ({by: sorted(p) for by, p in w.adds.items()}, sorted(e.id for e in w.lanes),
            w.n)


def seen(s: MeshState) -> tuple[Any, ...]:
    return members(s), waiting(s), s.outputs.get("ky"), s._gone_wait_n


def test_a_non_vouched_losers_parked_add_is_gone_after_the_refold() -> None:
    """X (not vouched) sends two contents for its seq 2 after J went: the loser adds Y (it
    waits, parked), the winner adds X. After replace + refold, then H's add of X: members
    {H, R, X} as on the peer that held only the winner (on 6c66b4c1 {H, R, X, Y})."""
    loser = Event(X, 2, 1500, EventType.JOB_MEMBERS, {"job": J, "add": [Y]})
    winner = Event(X, 2, 1500, EventType.JOB_MEMBERS, {"job": J, "add": [X]})
    clean = fold([SUB, REAL, DEL, winner, HX], state())
    s = fold([SUB, REAL, DEL, loser], state())
    assert waiting(s)[0] == {X: [Y]}
    s.replace(winner)
    s.refold()
    assert waiting(s)[0] == {X: [X]}
    fold([HX], s)
    assert seen(s) == seen(clean)


def test_a_vouched_losers_growth_is_gone_after_the_refold() -> None:
    """H (vouched) equivocates on a gone J's JOB_MEMBERS: the loser adds Y, the winner Z.
    After replace + refold: {H, R, Z} as the clean peer (on 6c66b4c1 {H, R, Y, Z}), and
    what the compactor is told to write names no Y."""
    lose = Event(H, 3, 1600, EventType.JOB_MEMBERS, {"job": J, "add": [Y]})
    win = Event(H, 3, 1600, EventType.JOB_MEMBERS, {"job": J, "add": [Z]})
    clean = fold([SUB, REAL, DEL, win], state())
    told: dict[str, Any] = {}
    s = fold([SUB, REAL, DEL, lose], state(on_members=told.__setitem__))
    s.replace(win)
    s.refold()
    assert seen(s) == seen(clean)
    assert sorted(told[J].members) == members(clean)[0]


def test_a_lane_event_a_loser_took_out_of_its_wait_waits_again() -> None:
    """Y's lane TASK_DONE waits (Y is no member); H's loser adds Y (the event folds: Y's
    output in the cache), its winner adds Z. After replace + refold Y's event waits again
    and no output is cached, as on the clean peer; a later vouched add of Y folds it."""
    lose = Event(H, 3, 1600, EventType.JOB_MEMBERS, {"job": J, "add": [Y]})
    win = Event(H, 3, 1600, EventType.JOB_MEMBERS, {"job": J, "add": [Z]})
    clean = fold([SUB, REAL, DEL, Y_DONE, win], state())
    s = fold([SUB, REAL, DEL, Y_DONE, lose], state())
    assert s.outputs.get("ky") == Y_OUT
    s.replace(win)
    s.refold()
    assert seen(s) == seen(clean)
    assert s.outputs.get("ky") is None
    later = Event(H, 4, 1700, EventType.JOB_MEMBERS, {"job": J, "add": [Y]})
    fold([later], s)
    fold([later], clean)
    assert seen(s) == seen(clean) and s.outputs.get("ky") == Y_OUT


def test_a_refold_without_a_loser_keeps_every_gone_jobs_state() -> None:
    """No conflict: a refold changes nothing of the gone job (facts, waits, their cost),
    including what events that left memory made (compacted right after they came)."""
    xy = Event(X, 1, 1400, EventType.JOB_MEMBERS, {"job": J, "add": [Y]})
    s = fold([SUB, REAL, DEL, xy, Y_DONE, HX], state())
    before = seen(s)
    s.refold()
    assert seen(s) == before
    s.compact([])  # (the events of J leave memory: what they made is for good)
    s.refold()
    assert members(s) == before[0]


def test_an_output_a_loser_took_in_from_the_wait_waits_again() -> None:
    """X added itself and its lane TASK_DONE waits aside (X not vouched) as J goes; H's
    loser adds X (the output enters the cache), its winner adds Z. After replace + refold
    the output waits again, uncached, as on the clean peer (review rr of session 48, S2
    with F5)."""
    add = Event(X, 1, 1100, EventType.JOB_MEMBERS, {"job": J, "add": [X]})
    x_done = Event(lane(X, J), 1, 1500, EventType.TASK_DONE,
                   {"job": J, "task": "t0", "output": Y_OUT, "cached": False, "key": "ky"})
    lose = Event(H, 3, 1600, EventType.JOB_MEMBERS, {"job": J, "add": [X]})
    win = Event(H, 3, 1600, EventType.JOB_MEMBERS, {"job": J, "add": [Z]})
    clean = fold([SUB, REAL, add, x_done, DEL, win], state())
    s = fold([SUB, REAL, add, x_done, DEL, lose], state())
    assert s.outputs.get("ky") == Y_OUT
    s.replace(win)
    s.refold()
    assert seen(s) == seen(clean) and s.outputs.get("ky") is None
    assert list(s._gone_waits[J].done) == [X]


PEERS = [H, X, Y, Z]


@st.composite
def a_conflict(draw: st.DrawFn) -> tuple[list[Event], Event, Event]:
    """JOB_MEMBERS of gone J among PEERS (self-adds, chains, vouched adds) and TASK_DONEs in
    their lanes, every one past a gap in its origin (held in memory, as a conflict's
    events are), and a loser and winner for one JOB_MEMBERS' (origin, seq)."""
    evs, seqs = [], dict.fromkeys(PEERS, 10)
    for _ in range(draw(st.integers(0, 5))):
        by = draw(st.sampled_from(PEERS))
        add = draw(st.lists(st.sampled_from(PEERS), min_size=1, max_size=2, unique=True))
        evs.append(Event(by, seqs[by], draw(st.integers(1001, 1400)), EventType.JOB_MEMBERS,
                         {"job": J, "add": add}))
        seqs[by] += 1
    for p in draw(st.lists(st.sampled_from([X, Y, Z]), max_size=3)):
        evs.append(Event(lane(p, J), seqs[p], draw(st.integers(1001, 1500)),
                         EventType.TASK_DONE, {"job": J, "task": "t0", "output": Y_OUT,
                                               "cached": False, "key": "ky"}))
        seqs[p] += 1
    by = draw(st.sampled_from(PEERS))
    hlc = draw(st.integers(1001, 1400))
    lose, win = (Event(by, 99, hlc, EventType.JOB_MEMBERS, {"job": J, "add": add})
                 for add in draw(st.lists(st.lists(st.sampled_from(PEERS), min_size=1,
                                                   max_size=2, unique=True),
                                          min_size=2, max_size=2, unique_by=tuple)))
    return evs, lose, win


def assert_refold_holds_the_clean_peers(evs: list[Event], lose: Event, win: Event, seed: int,
                                        cut: int) -> None:
    """`evs` shuffled by `seed`, the first `cut` of them and the loser folded, the loser
    replaced by `win` and refolded, then the rest: what the gone job holds is what a peer
    that folded `evs` and `win` alone holds."""
    evs = list(evs)
    random.Random(seed).shuffle(evs)
    cut = min(cut, len(evs))
    clean = fold([SUB, REAL, DEL, *evs, win], state())
    s = fold([SUB, REAL, DEL, *evs[:cut], lose], state())
    s.replace(win)
    s.refold()
    fold(evs[cut:], s)
    assert seen(s) == seen(clean)


@settings(max_examples=150, deadline=None)
@given(a_conflict(), st.integers(0, 2**32), st.integers(0, 8))
def test_a_refold_after_any_conflict_holds_what_a_peer_without_the_loser_holds(
        drawn: tuple[list[Event], Event, Event], seed: int, cut: int) -> None:
    """Any JOB_MEMBERS of gone J equivocated on (a vouched origin's or not), the loser
    folded among random adds and lane TASK_DONEs, then replaced and refolded, then the
    rest: the members, vouched members, what waits and the cache are the clean peer's."""
    evs, lose, win = drawn
    assert_refold_holds_the_clean_peers(evs, lose, win, seed, cut)
