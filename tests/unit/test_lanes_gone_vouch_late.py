"""Review rr of session 48, S2: a TASK_DONE or CHUNK_DONE made in the lane of a peer not
vouched for (set aside while its job was live, `_aside_done`, or a straggler folded once
it went) waits with the gone job (`GoneWait.done`), so that a vouched member's JOB_MEMBERS
that vouches for the peer only after the job went takes its output into the cache, as the
live fold does (`_vouch`): one cache for every arrival order and every point the job went.
The real fold on a real `MeshState`."""

from __future__ import annotations

import itertools
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from peer.log import Event, EventType, MeshState, fold
from peer.log.lanes import lane, lane_of
from tests.unit.test_lanes_end_cache import (
    ADD,
    GOOD,
    SUB,
    H,
    J,
    R,
    X,
    lanes_fold,
    members_and_dones,
    task_done,
)

VOUCH = Event(H, 3, 1200, EventType.JOB_MEMBERS, {"job": J, "add": [X]})
DEL = Event(H, 5, 9000, EventType.JOB_DELETED, {"job": J, "reason": "user"})


def _gone_fold(first: list[Event], rest: list[Event], me: str, how: str) -> MeshState:
    """`me`'s fold of `first`, then `J` goes (`how`: compacted, or its JOB_DELETED), then
    `rest`."""
    if how == "deleted":
        return fold([*first, DEL, *rest], MeshState(lanes_on=True, me=me))
    s = fold(first, MeshState(lanes_on=True, me=me))
    s.compact([J])
    return fold(rest, s)


def test_a_vouching_after_the_job_went_takes_the_output_in_in_every_order() -> None:
    """The review's reproduction: X adds itself, its lane TASK_DONE, the home's add of X;
    every order, the job going at every point, on H and R: GOOD for k0, as live (on
    6c66b4c1 none for 6 of the 48 compacted cases: the output waited aside, or came as a
    straggler, before the vouching, and left with the job)."""
    x_done = task_done(lane(X, J), 1, 1500, GOOD)
    for rest in itertools.permutations([ADD, VOUCH, x_done]):
        for cut in range(len(rest) + 1):
            for me in (H, R):
                assert lanes_fold([SUB, *rest], me).outputs.get("k0") == GOOD
                for how in ("compacted", "deleted"):
                    s = _gone_fold([SUB, *rest[:cut]], list(rest[cut:]), me, how)
                    assert s.outputs.get("k0") == GOOD, (how, me, cut,
                                                         [e.id for e in rest])


def test_no_vouching_takes_no_output_in_whenever_the_job_went() -> None:
    """Without the home's add, X's output enters no cache, whatever went when (the wait
    makes nothing up)."""
    x_done = task_done(lane(X, J), 1, 1500, GOOD)
    for rest in itertools.permutations([ADD, x_done]):
        for cut in range(len(rest) + 1):
            for how in ("compacted", "deleted"):
                s = _gone_fold([SUB, *rest[:cut]], list(rest[cut:]), H, how)
                assert s.outputs.get("k0") is None


@settings(max_examples=150, deadline=None)
@given(members_and_dones(), st.integers(0, 2**32), st.integers(0, 12),
       st.sampled_from(["compacted", "deleted"]), st.sampled_from([H, R]))
def test_the_cache_of_a_gone_job_is_the_live_folds_in_any_order_and_any_going(
        drawn: tuple[list[Event], set[str], list[Event]], seed: int, cut: int, how: str,
        me: str) -> None:
    """Random JOB_MEMBERS (self-adds, chains, vouched adds) and TASK_DONEs / CHUNK_DONEs in
    random members' lanes, shuffled, the job going after any number of them: k0's and i0's
    cache entries are the earliest of a vouched lane's, as in the live fold. (No refold
    here: a state without a job index keeps no cache entry of an event that left memory.)"""
    adds, vouched, dones = drawn
    counted = [e for e in dones if lane_of(e.origin)[0] in vouched]  # type: ignore[index]
    want_k0 = min((e.order for e in counted if "output" in e.payload), default=None)
    want_i0 = min((e.order for e in counted if "cache" in e.payload), default=None)
    evs = [*adds, *dones]
    random.Random(seed).shuffle(evs)
    cut = min(cut, len(evs))
    s = _gone_fold([SUB, *evs[:cut]], evs[cut:], me, how)
    assert (s._outputs_src.get("k0"), s._cache_src.get("i0")) == (want_k0, want_i0)
