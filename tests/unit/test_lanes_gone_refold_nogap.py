"""Review r3 of session 49, A4: a gone lanes job's JOB_MEMBERS or lane event sent with no gap
before it leaves memory as it is folded (`record`), so F5's undo (`_gone_undo`, a refold)
never reached it: a second content for its (origin, seq) that came later was taken for one
held already (`Node.merge`) and dropped, and the peer that got the loser first kept its
growth for good. Such stragglers are now kept aside with their undo notes, the last
GONE_RECENT_MAX (`MeshState._gone_recent`); a rival goes to the conflict rule, and a winner
replaces the loser so that the refold undoes its changes and folds the winner. The real
fold on a real `MeshState`, and a real `Node` (its log, conflict rule and refold; no
network, no sleeps)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from peer.log import Event, EventType, fold
from peer.log.fold import GONE_RECENT_MAX
from peer.log.lanes import lane
from peer.log.signing import held_hash
from tests.unit.test_lanes_compact import J1, _node
from tests.unit.test_lanes_gone import DEL, state
from tests.unit.test_lanes_gone_refold import Y_OUT, Y, Z, a_conflict, members, seen
from tests.unit.test_lanes_hostile import REAL, SUB, H, J, R, X

# H deletes J at its seq 2 and equivocates on its seq 3 (no gap: each leaves memory as it
# is folded); which content wins is the rule's (the smaller content hash)
DEL2 = Event(H, 2, 9000, EventType.JOB_DELETED, {"job": J, "reason": "user"})
LOSE, WIN = sorted((Event(H, 3, 9100, EventType.JOB_MEMBERS, {"job": J, "add": [Y]}),
                    Event(H, 3, 9100, EventType.JOB_MEMBERS, {"job": J, "add": [Z]})),
                   key=held_hash, reverse=True)


def test_a_gap_free_losers_growth_is_undone_when_its_rival_comes() -> None:
    """The reviewer's case: the loser left memory as it was folded (on db663953 it was not
    kept, its rival was never compared and the members stayed the loser's). Kept aside,
    replaced and refolded (then swept): the clean peer's members."""
    clean = fold([SUB, REAL, DEL2, WIN], state())
    s = fold([SUB, REAL, DEL2, LOSE], state())
    assert LOSE.id not in s.events and s.straggler(LOSE.id) is LOSE
    assert s.replace(WIN) is False
    s.refold()
    s.compact(())
    assert seen(s) == seen(clean)
    assert WIN.id not in s.events and s.straggler(LOSE.id) is None


def test_a_gap_free_losers_taken_lane_event_waits_again() -> None:
    """Y's lane TASK_DONE waits (Y no member); the gap-free loser adds Y (its output enters
    the cache), the winner adds Z. After replace + refold the event waits again, uncached."""
    y_done = Event(lane(Y, J), 1, 2500, EventType.TASK_DONE,
                   {"job": J, "task": "t0", "output": Y_OUT, "cached": False, "key": "ky"})
    lose, win = (Event(H, 3, 9100, EventType.JOB_MEMBERS, {"job": J, "add": [p]})
                 for p in (Y, Z))
    clean = fold([SUB, REAL, DEL2, y_done, win], state())
    s = fold([SUB, REAL, DEL2, y_done, lose], state())
    assert s.outputs.get("ky") == Y_OUT
    s.replace(win)
    s.refold()
    s.compact(())
    assert seen(s) == seen(clean) and s.outputs.get("ky") is None


def test_what_a_kept_straggler_did_on_the_losers_vouching_is_undone_too() -> None:
    """The loser vouches Y; Y's gap-free add of X then counts (Y vouched) and leaves memory.
    After replace + refold Y is not vouched, so its add of X waits again, as on the clean
    peer (helper a's left of session 49: a change an evicted event made on the strength of
    a loser's vouching was kept)."""
    yx = Event(Y, 1, 9200, EventType.JOB_MEMBERS, {"job": J, "add": [X]})
    lose, win = (Event(H, 3, 9100, EventType.JOB_MEMBERS, {"job": J, "add": [p]})
                 for p in (Y, Z))
    clean = fold([SUB, REAL, DEL2, win, yx], state())
    s = fold([SUB, REAL, DEL2, lose, yx], state())
    assert X in members(s)[1] and s.straggler(yx.id) is yx
    s.replace(win)
    s.refold()
    s.compact(())
    assert seen(s) == seen(clean) and X not in members(s)[1]


def test_the_stragglers_kept_aside_are_bounded_and_free_their_notes() -> None:
    """Past GONE_RECENT_MAX the first kept leaves (its undo notes with it: for good); a
    refold keeps the others and their notes."""
    evs = [Event(X, q, 9000 + q, EventType.JOB_MEMBERS, {"job": J, "add": [X]})
           for q in range(1, GONE_RECENT_MAX + 2)]
    s = fold([SUB, REAL, DEL2, *evs], state())
    assert s.straggler(evs[0].id) is None and s.straggler(evs[-1].id) is evs[-1]
    assert len(s._gone_recent) == GONE_RECENT_MAX
    assert set(s._gone_undo) <= set(s._gone_recent)
    s.refold()  # (they are folded again, after R's lane event that leaves memory now)
    assert s.straggler(evs[1].id) is evs[1] and s.straggler(evs[-1].id) is evs[-1]
    assert len(s._gone_recent) == GONE_RECENT_MAX
    assert set(s._gone_undo) <= set(s._gone_recent)


def test_forget_lanes_lets_go_of_its_lanes_stragglers() -> None:
    y_done = Event(lane(Y, J), 1, 9500, EventType.TASK_DONE,
                   {"job": J, "task": "t0", "output": Y_OUT, "cached": False, "key": "ky"})
    s = fold([SUB, REAL, DEL2, y_done], state())
    assert s.straggler(y_done.id) is y_done
    s.forget_lanes(J)
    assert s.straggler(y_done.id) is None and y_done.id not in s._gone_undo


@settings(max_examples=150, deadline=None)
@given(a_conflict(), st.sampled_from([R, X]),
       st.lists(st.lists(st.sampled_from([H, X, Y, Z]), min_size=1, max_size=2, unique=True),
                max_size=3),
       st.lists(st.tuples(st.sampled_from([Y, Z]),
                          st.lists(st.sampled_from([H, X, Y, Z]), min_size=1, max_size=2,
                                   unique=True)), max_size=3),
       st.integers(0, 2**32), st.integers(0, 8))
def test_a_gap_free_conflict_holds_what_a_peer_without_the_loser_holds(
        drawn: tuple[list[Event], Event, Event], by: str, adds: list[list[str]],
        later: list[tuple[str, list[str]]], seed: int, cut: int) -> None:
    """The F5 property test's events (held past gaps) and conflict, but the loser and winner
    at `by`'s (vouched R, or X, no member) seq n + 1 after its JOB_MEMBERS at 1..n, all
    folded before the loser (no gap: it leaves memory as it is folded), and gap-free
    JOB_MEMBERS of Y and Z folded after it (they leave memory too, some counted on the
    loser's vouching): after replace, refold, the rest and a sweep, the members, vouched
    members, what waits and the cache are the clean peer's (on db663953 the loser was not
    kept: the rival was dropped)."""
    evs, lose, win = drawn
    mine = [Event(by, q, 1100 + q, EventType.JOB_MEMBERS, {"job": J, "add": add})
            for q, add in enumerate(adds, 1)]
    n = len(mine) + 1
    lose, win = (Event(by, n, e.hlc, EventType.JOB_MEMBERS, e.payload) for e in (lose, win))
    seqs = dict.fromkeys((Y, Z), 0)
    after = []
    for p, add in later:
        seqs[p] += 1
        after.append(Event(p, seqs[p], 1200 + len(after), EventType.JOB_MEMBERS,
                           {"job": J, "add": add}))
    evs = list(evs)
    random.Random(seed).shuffle(evs)
    cut = min(cut, len(evs))
    clean = fold([SUB, REAL, DEL, *mine, *evs, *after, win], state())
    s = fold([SUB, REAL, DEL, *mine, *evs[:cut], lose, *after], state())
    assert s.straggler(lose.id) is lose
    s.replace(win)
    s.refold()
    fold(evs[cut:], s)
    s.compact(())
    clean.compact(())
    assert seen(s) == seen(clean)


@pytest.mark.parametrize("loser_first", [True, False])
def test_a_node_settles_a_gap_free_rival_of_a_deleted_jobs_members(tmp_path: Path,
                                                                   loser_first: bool) -> None:
    """R, a vouched member, sends two contents of its seq 1 after J1 was deleted. Whichever
    came first, the node ends with the winner's peer a member and not the loser's (on
    db663953 the one that got the loser first kept it: `Node.merge` dropped the rival as
    held)."""
    node = _node(tmp_path, [R])
    try:
        node.janitor.delete_job(J1)
        node.flush()
        t = node.hlc.now()
        lose, win = sorted((Event(R, 1, t + (1 << 16), EventType.JOB_MEMBERS,
                                  {"job": J1, "add": [p]}) for p in (Y, Z)),
                           key=held_hash, reverse=True)
        first, second = (lose, win) if loser_first else (win, lose)
        assert node.merge([first]) == [first]
        assert first.id not in node.state.events  # (gap-free: it left memory)
        assert node.merge([second]) == []
        node.rule.refold()
        node.catchup.compact()
        f = node.state.gone_lanes(J1)
        assert f is not None
        kept = win.payload["add"][0]
        assert kept in f.members and lose.payload["add"][0] not in f.members
        assert node.rule.counts.by_origin == {R: {"conflict": 1}}
        assert [e.payload for e in node.log.load() if e.id == win.id] == [win.payload]
    finally:
        node.log.close()

