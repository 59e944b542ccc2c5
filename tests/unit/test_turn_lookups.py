"""A TURN of another peer's tasks folded here asks the job index for its output keys and CIDs
a batch at a time (`MeshState._ahead_turn`: `Tiered.ahead`, `JobIndex.screen`), not twice per
task (issue 12: every receiver's fold of a 3-peer dag asked for each fresh key and CID), and
folds to the same entries and providers as asked one by one."""

from __future__ import annotations

import sqlite3

from peer.cids import sha256_cid
from peer.log import Event, EventType, MeshState, turn_event
from peer.log.jobindex import OUTPUT, CacheEntry, JobIndex
from tests.unit.test_jobindex_absent import _reads

A, X = "a1" * 8, "d4" * 8  # the peer that ran the tasks, a peer of earlier jobs
JOB = "job"
N = 20
CIDS = [str(sha256_cid(f"out{i}".encode(), "raw", 1)) for i in range(N)]
OLD_CID = str(sha256_cid(b"old", "raw", 1))


def _submitted() -> Event:
    wf = {"name": "w", "splits": "implicit",
          "tasks": [{"name": f"t{i}", "call": "c", "params": {}} for i in range(N)]}
    return Event(A, 1, 100, EventType.JOB_SUBMITTED, {"job": JOB, "workflow": wf})


def _turn(sub: Event) -> Event:
    """Per task a CLAIM and a CHUNK_DONE that implies its TASK_DONE (cache key k<i>)."""
    parts = []
    for i in range(N):
        base = {"job": JOB, "task": f"t{i}", "split": list(sub.id), "chunk": 0, "attempt": 0}
        parts += [Event(A, 2, 1000, EventType.CLAIM, base),
                  Event(A, 2, 1000, EventType.CHUNK_DONE,
                        {**base, "output": CIDS[i], "cache": {}, "s": 0.1,
                         "done": {"key": f"k{i}"}})]
    return turn_event(parts)


def test_a_turn_asks_the_job_index_per_batch_not_per_task(db: sqlite3.Connection) -> None:
    index = JobIndex(db)
    # Of earlier jobs: k3's entry earlier than the TURN's (it stays), k4's later (replaced),
    # a provider of output 5's CID (kept beside the TURN's origin)
    index.put([], [CacheEntry(OUTPUT, "k3", OLD_CID, (50, X, 1)),
                   CacheEntry(OUTPUT, "k4", OLD_CID, (10**5, X, 1))], [(CIDS[5], X)])
    state = MeshState()
    state.tier(**index.lookups())  # type: ignore[arg-type]
    sub = _submitted()
    state.apply(sub)
    reads = _reads(db)
    assert state.apply(_turn(sub))
    asked = len(reads)
    assert all((JOB, f"t{i}") in state.task_done for i in range(N))
    # one query for the keys, one for the CIDs, then one of each key or CID that has rows
    # (before: one per key and per CID, 2 N + 1)
    assert asked == 2 + 3, reads
    assert state.outputs["k3"] == OLD_CID and state._outputs_src["k3"] == (50, X, 1)
    assert state.outputs["k4"] == CIDS[4] and state._outputs_src["k4"] == (1000, A, 2)
    assert all(state.outputs[f"k{i}"] == CIDS[i] for i in range(N) if i != 3)
    assert state.providers[CIDS[5]] == {X, A}
    assert all(state.providers[c] == {A} for i, c in enumerate(CIDS) if i != 5)
