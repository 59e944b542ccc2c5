"""The job view's chunk states (peer/http/views.py) folded from small logs."""

from __future__ import annotations

from typing import Any

import pytest

from peer.http.views import job_view
from peer.log import Event, EventType, fold

SPLIT = ("p0", 2)


def _view(story: list[tuple[str, str]]) -> dict[str, Any]:
    events: list[Event] = []

    def add(origin: str, typ: EventType, **payload: Any) -> None:
        seq = 1 + sum(1 for e in events if e.origin == origin)
        events.append(Event(origin, seq, 100 + len(events), typ, payload))

    add("p0", EventType.JOB_SUBMITTED, job="j", workflow={"name": "w", "tasks": [
        {"name": "t", "call": "T_WRITE", "params": {}, "depends": []}]})
    add("p0", EventType.TASK_SPLIT, job="j", task="t", input=None, chunks=[[]])
    chunk = {"job": "j", "task": "t", "chunk": 0, "attempt": 0, "split": list(SPLIT)}
    for what, peer in story:
        if what == "claim":
            add(peer, EventType.CLAIM, **chunk)
        elif what == "cancel":
            add(peer, EventType.JOB_CANCELLED, job="j", reason="r")
        elif what == "killed":  # what a run's peer records when the cancel kills it
            add(peer, EventType.CHUNK_FAILED, **chunk, kind="cancelled", error="cancelled")
    [c] = job_view(fold(events), "j", 3)["tasks"][0]["chunks"]
    return c


@pytest.mark.parametrize(("story", "state", "error"), [
    ([], "pending", None),
    ([("claim", "p1")], "running", None),
    ([("cancel", "p2")], "pending", None),
    # the holder's record of the cancel not heard yet, or the holder died holding the claim
    ([("claim", "p1"), ("cancel", "p2")], "cancelled", None),
    ([("claim", "p1"), ("cancel", "p2"), ("killed", "p1")], "failed", "cancelled"),
])
def test_a_claimed_chunk_of_a_cancelled_job_is_not_running(
        story: list[tuple[str, str]], state: str, error: str | None) -> None:
    c = _view(story)
    assert (c["state"], c["error"]) == (state, error)
    if story and story[0][0] == "claim":
        assert (c["peer"], c["attempts"]) == ("p1", 1)
