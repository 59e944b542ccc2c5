"""`lane_of` remembers the origins it read (issue 12, session 50 helper e: it is asked of
every event by the fold, the scheduler, the metrics and the replicator): the same answers
as a fresh read, for lanes and for any other text, and a memo that stays bounded whatever
origins come (a hostile event's too)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from peer.log import lanes
from peer.log.lanes import LANE_MEMO, _lane_of, lane, lane_of, peer_of

P20 = "ab" * 10
JOB = "j" + "0" * 12

origins = st.one_of(
    st.text(max_size=80),
    st.builds(lambda p, j: p + "/" + j,
              st.sampled_from([P20, "cd" * 8, "AB" * 10, "ab" * 9]),
              st.sampled_from([JOB, JOB + "." + P20, "j" + "0" * 11, "x" * 13])))


@given(st.lists(origins, max_size=20))
def test_lane_of_answers_as_a_fresh_read_asked_once_or_again(texts: list[str]) -> None:
    for text in texts + texts:
        assert lane_of(text) == _lane_of(text)
        assert peer_of(text) == (_lane_of(text) or (text,))[0]
    assert lane_of(lane(P20, JOB)) == (P20, JOB)


def test_lane_of_remembers_a_bounded_number_of_origins() -> None:
    for i in range(LANE_MEMO * 2 + 5):
        assert lane_of(f"{i:020x}/{JOB}") == (f"{i:020x}", JOB)
        assert len(lanes._lanes_read) <= LANE_MEMO
    assert lane_of("x" * 100_000) is None and len(lanes._lanes_read) <= LANE_MEMO
    assert "x" * 100_000 not in lanes._lanes_read  # (a text longer than a lane: not kept)
