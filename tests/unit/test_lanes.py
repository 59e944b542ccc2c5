"""Lane names (peer/log/lanes.py): a lanes job's task events travel in one origin per
(peer, job), "<peer>/<job>"; every other origin, however close, is no lane."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from peer.log.events import TURN_PARTS, EventType
from peer.log.ids import is_job_id, is_peer_id, new_job_id
from peer.log.lanes import LANE_PARTS, LANE_TYPES, is_lane, lane, lane_of, shown_origin

P20, P16, JOB = "0123456789abcdef0123", "fedcba9876543210", "j0123456789ab"
HEX = "0123456789abcdef"
_LANE = re.compile(r"([0-9a-f]{16}|[0-9a-f]{20})/j[0-9a-f]{12}")  # the form, written apart


@pytest.mark.parametrize("peer", [P20, P16])
def test_a_lane_is_named_by_its_peer_and_job(peer: str) -> None:
    name = lane(peer, JOB)
    assert name == f"{peer}/{JOB}" and lane_of(name) == (peer, JOB) and is_lane(name)


def test_a_new_job_id_makes_a_lane() -> None:
    job = new_job_id()
    assert is_job_id(job) and lane_of(lane(P20, job)) == (P20, job)


@pytest.mark.parametrize(("peer", "job"), [
    ("p1", JOB), (P20.upper(), JOB), (P20 + "0", JOB), (P16[:-1], JOB), (f"{P16}/{JOB}", JOB),
    (P20, "j1"), (P20, "J0123456789ab"), (P20, "k0123456789ab"), (P20, JOB + "0"),
    (P20, JOB.upper()), (P20, f"{JOB}/x"), (P20, ""), ("", JOB)])
def test_no_lane_of_a_malformed_peer_or_job(peer: str, job: str) -> None:
    with pytest.raises(ValueError, match="no lane of peer"):
        lane(peer, job)


@pytest.mark.parametrize("origin", [
    P20, P16, "a", "", "/", f"{P20}/", f"/{JOB}", f"{P20}//{JOB}", f"{P20}/{JOB}/",
    f"{P20}/{JOB}/x", f"{P20} /{JOB}", f" {P20}/{JOB}", f"{P20}/{JOB}\n", f"{P20}\\{JOB}",
    f"{P20.upper()}/{JOB}", f"{P20}/{JOB.upper()}", f"{P20[:-1]}/{JOB}", f"{P20}0/{JOB}",
    f"{P20[:18]}/{JOB}", f"{P20}/j{JOB}", f"{P20}/{JOB[:-1]}", f"{P20}/x0123456789ab",
    f"{P20}/j０123456789ab", f"{JOB}/{P20}", None, 5, [P20, JOB], (P20, JOB)])
def test_lane_of_refuses_every_malformed_origin(origin: object) -> None:
    assert lane_of(origin) is None and not is_lane(origin)


@settings(max_examples=500, deadline=None)
@given(st.one_of(
    st.text(max_size=40),
    st.builds(lambda a, b: f"{a}/{b}", st.text(HEX + "ABj/g ", max_size=22),
              st.text(HEX + "ABj/g ", max_size=15))))
def test_lane_of_takes_exactly_the_lane_form(origin: str) -> None:
    """Whatever the text, lane_of names a lane exactly when it is of the form, and its
    parts are then a peer id and a job id that name it again."""
    got = lane_of(origin)
    assert (got is not None) == bool(_LANE.fullmatch(origin))
    if got is not None:
        assert is_peer_id(got[0]) and is_job_id(got[1]) and lane(*got) == origin


@given(st.sampled_from([16, 20]), st.text(HEX, min_size=32, max_size=32))
def test_every_peer_and_job_of_their_forms_make_a_lane(n: int, digits: str) -> None:
    peer, job = digits[:n], "j" + digits[n:n + 12]
    assert lane_of(lane(peer, job)) == (peer, job)


def test_a_lane_holds_task_events_only() -> None:
    """Design section 2: a job's task events (a TURN of them, PARTIAL); never what every peer
    holds (members, revocations, providers, the cache, submissions and ends of jobs)."""
    assert LANE_PARTS | {EventType.TURN} == LANE_TYPES
    assert (TURN_PARTS - {EventType.CACHE_PUT}) | {EventType.PARTIAL} == LANE_PARTS
    for t in (EventType.MEMBER, EventType.REVOKE, EventType.PROVIDE, EventType.UNPROVIDE,
              EventType.CACHE_PUT, EventType.IPNS_RECORD, EventType.JOB_SUBMITTED,
              EventType.JOB_CANCELLED, EventType.JOB_DELETED, EventType.JOB_ENDED,
              EventType.JOB_MEMBERS, EventType.RENEW):
        assert t not in LANE_TYPES


def test_a_log_line_names_a_lane_whole() -> None:
    """Its first 16 characters would name its peer alone (and a seq after it would read as
    the peer's own); any other origin is cut at 16 as before."""
    assert shown_origin(lane(P20, JOB)) == f"{P20}/{JOB}"
    assert shown_origin(lane(P16, JOB)) == f"{P16}/{JOB}"
    assert shown_origin(P20) == P20[:16] and shown_origin("P/j0" * 9) == ("P/j0" * 9)[:16]
