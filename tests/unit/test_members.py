"""Who holds and runs a lanes job (peer/jobs/members.py; design
docs/design/partial-replication.md sections 5.3, 5.4): its members in order, its home. Pure
functions of a folded state, the live peers and a time passed in."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from peer.jobs import members
from peer.log import Event, EventType, MeshState
from peer.log.fold import fold

A, B, C, D = "a" * 16, "b" * 16, "c" * 16, "d" * 16
JOB = "j0123456789ab"
WORKFLOW = {"name": "w", "tasks": [{"name": "t", "call": "c", "params": {}, "depends": []}]}


def submitted(job: str = JOB, members_: list[str] | None = None, origin: str = A) -> Event:
    payload: dict[str, Any] = {"job": job, "workflow": WORKFLOW}
    if members_ is not None:
        payload["members"] = members_
    return Event(origin, 1, 10, EventType.JOB_SUBMITTED, payload)


def added(add: list[str], origin: str = B, seq: int = 1, job: str = JOB) -> Event:
    return Event(origin, seq, 20 + seq, EventType.JOB_MEMBERS, {"job": job, "add": add})


def state(*events: Event, lanes_on: bool = True) -> MeshState:
    return fold(list(events), MeshState(lanes_on=lanes_on))


def test_the_members_are_the_submitted_list_then_the_added_ones() -> None:
    s = state(submitted(members_=[A, B]), added([D, C], origin=B))
    order = members.ordered(s, JOB)
    assert order[:2] == [A, B]
    assert sorted(order[2:]) == [C, D]


@given(st.permutations([added([C], origin=A, seq=2), added([D], origin=B, seq=1),
                        added([C, D], origin=C, seq=1)]))
def test_the_order_of_the_members_does_not_depend_on_the_arrival_order(
        adds: list[Event]) -> None:
    s = state(*adds, submitted(members_=[B, A]))
    assert members.ordered(s, JOB) == [B, A, *members.ordered(
        state(submitted(members_=[B, A]), added([C, D])), JOB)[2:]]


def test_a_job_without_members_or_with_lanes_off_has_none() -> None:
    assert members.ordered(state(submitted()), JOB) == []
    assert members.ordered(state(submitted(members_=[A, B]), lanes_on=False), JOB) == []
    assert members.ordered(state(added([C])), JOB) == []  # (no JOB_SUBMITTED held)
    assert members.home(JOB, state(submitted()), {A, B}) is None


def test_the_home_is_the_first_live_member() -> None:
    s = state(submitted(members_=[A, B]), added([C], origin=A, seq=2))
    assert members.home(JOB, s, {A, B, C, D}) == A
    assert members.home(JOB, s, {B, C, D}) == B
    assert members.home(JOB, s, {C, D}) == C
    assert members.home(JOB, s, {D}) is None
