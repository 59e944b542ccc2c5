"""Session 50 helper f's left (views): a self-added member's CHUNK_FAILED, for an attempt no
one claimed, failed its task in the fold, and /api/jobs/<id> (and so the web UI's task rows
and `banzai status`) showed the task and job failed while a vouched member ran the chunk
again. A live lanes job's view now leaves such a member's failures out of its chunks'
counts, as a scheduler does (`views._left_out`); a vouched member's failure, a job with no
member not vouched for, and a job's record (the fold's every failure) are as before."""

from __future__ import annotations

from peer.http.views import job_record, job_view
from peer.log import MeshState
from tests.unit.test_lanes_unvouched_done import ADD, SUB, H, J, R, X, lanes_fold
from tests.unit.test_lanes_unvouched_split import HSPLIT, failure


def _states(s: MeshState) -> tuple[str, str, str]:
    view = job_view(s, J, 3)
    [t] = view["tasks"]
    [c] = t["chunks"]
    return view["state"], t["state"], c["state"]


def test_a_self_added_members_failure_shows_no_live_task_failed() -> None:
    """X adds itself and fails t0's chunk with a made-up `error`: on H, R and X the view
    shows t0 pending, not failed (on ded7c6f2: failed, and the job failed)."""
    for me in (H, R, X):
        s = lanes_fold([SUB, ADD, HSPLIT, failure(X, 1, 1300, 0)], me)
        assert _states(s) == ("pending", "pending", "pending"), me
        [t] = job_record(s, J, 3)["tasks"]  # (a record: every failure, as the fold's)
        assert t["state"] == "failed"


def test_a_vouched_members_failure_shows_the_task_failed_as_before() -> None:
    """Guards (pass on ded7c6f2 too): R's own `error` fails t0 in the view, with or without
    a self-added member."""
    for evs in ([SUB, HSPLIT, failure(R, 1, 1300, 0)],
                [SUB, ADD, HSPLIT, failure(R, 1, 1300, 0)]):
        assert _states(lanes_fold(evs)) == ("failed", "failed", "failed")
