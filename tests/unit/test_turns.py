"""peer.log.turns: one open turn per origin (ours, and our lane of each lanes job: design
docs/design/partial-replication.md section 4 "Emitting"). A lane's TURN holds only what a
lane holds (a CACHE_PUT goes to the turn of the lane's peer's stream: the door refuses a
lane TURN carrying one whole), and turns leave in the order they were opened, also when one
closes for its weight. Pure: a MeshState with lanes on and a counting clock."""

from __future__ import annotations

from itertools import count
from typing import Any

from peer.log import EventType, MeshState
from peer.log.lanes import lane
from peer.log.turns import MAX_TURN_WEIGHT, TurnBuilder

P = "0123456789abcdef0123"
JOB = "j0123456789ab"
LANE = lane(P, JOB)


def builder() -> TurnBuilder:
    return TurnBuilder(MeshState(lanes_on=True), count(1).__next__)


def claim(task: str = "t") -> dict[str, Any]:
    return {"job": JOB, "task": task, "split": ["x", 1], "chunk": 0, "attempt": 0}


def cache(n: int, tag: str = "k") -> dict[str, Any]:
    return {"cache": {f"{tag}{i}": {"n": f"a{i}", "c": f"c{i}"} for i in range(n)}}


def test_a_part_no_lane_holds_goes_to_the_turn_of_the_lanes_peer() -> None:
    tb = builder()
    tb.add(LANE, EventType.CLAIM, claim())
    put, closed = tb.add(LANE, EventType.CACHE_PUT, cache(1))
    assert (put.origin, put.seq, closed) == (P, 1, [])
    turns = tb.close()
    assert [(t.origin, t.type) for t in turns] == [(LANE, EventType.CLAIM),
                                                   (P, EventType.CACHE_PUT)]


def test_a_turn_closed_for_its_weight_closes_the_turns_opened_before_it() -> None:
    """The lane's turn, opened first, leaves first: the queue stays in the HLC order."""
    tb = builder()
    first, _ = tb.add(LANE, EventType.CLAIM, claim())
    tb.add(P, EventType.CACHE_PUT, cache(MAX_TURN_WEIGHT - 10))
    tb.add(LANE, EventType.CLAIM, claim("u"))  # (its turn stays the one opened first)
    put, closed = tb.add(P, EventType.CACHE_PUT, cache(20, "m"))
    assert [(c.origin, c.seq, c.hlc) for c in closed] == [(LANE, 1, first.hlc),
                                                          (P, 1, closed[1].hlc)]
    assert closed[0].hlc < closed[1].hlc < put.hlc and (put.origin, put.seq) == (P, 2)
    assert [len(c.singles) for c in closed] == [2, 1] and not tb._open.get(LANE)
    assert [t.origin for t in tb.close()] == [P]
