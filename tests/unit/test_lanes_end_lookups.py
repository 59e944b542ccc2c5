"""A JOB_ENDED's outputs folded on a peer that holds no lane of its job ask the job index for
their keys and CIDs a batch at a time (`Tiered.ahead`, `JobIndex.screen`), not once per
output (session 38: ~24 us per output, 1 s of loop for a 100,000-output listing), and fold
to the same entries and providers as asked one by one."""

from __future__ import annotations

import importlib
import math
import sqlite3

import pytest

from peer.cids import sha256_cid
from peer.log import Event, EventType, MeshState
from peer.log import jobindex as ji
from peer.log.jobindex import OUTPUT, CacheEntry, JobIndex
from peer.log.lanes import lane
from tests.unit.test_jobindex_absent import _reads

fold_mod = importlib.import_module("peer.log.fold")  # (peer.log.fold is the function)

A, B, C, X = "a1" * 8, "b2" * 8, "c3" * 10, "d4" * 8  # home, member, non-member (us), other
JOB = "j" + "0" * 11 + "1"
N = 1200
CIDS = [str(sha256_cid(f"out{i}".encode(), "raw", 1)) for i in range(N)]
OLD_CID = str(sha256_cid(b"old", "raw", 1))


def _submitted() -> Event:
    wf = {"name": "w", "tasks": [{"name": f"t{i}", "call": "c", "params": {}, "depends": []}
                                 for i in range(N)]}
    return Event(A, 1, 100, EventType.JOB_SUBMITTED,
                 {"job": JOB, "workflow": wf, "members": [A, B]})


def _ended() -> Event:
    outputs = {f"t{i}": [f"k{i}", CIDS[i], 1000 + i, lane(B, JOB), i + 1] for i in range(N)}
    return Event(A, 2, 10**6, EventType.JOB_ENDED,
                 {"job": JOB, "state": "done", "n_tasks": N, "end": 10**6, "outputs": outputs,
                  "producers": {c: [B] for c in CIDS}, "failed": {}, "digest": "0" * 32})


@pytest.mark.parametrize("ahead", [4096, 300])
@pytest.mark.parametrize("refolded", [False, True])
def test_a_job_ended_asks_the_job_index_per_batch_not_per_output(
        db: sqlite3.Connection, monkeypatch: pytest.MonkeyPatch, ahead: int,
        refolded: bool) -> None:
    monkeypatch.setattr(fold_mod, "AHEAD", ahead, raising=False)
    index = JobIndex(db)
    # Of earlier jobs: k3's entry earlier than the JOB_ENDED's output (it stays), k4's later
    # (replaced), a provider of output 5's CID (kept beside the JOB_ENDED's)
    index.put([], [CacheEntry(OUTPUT, "k3", OLD_CID, (50, X, 1)),
                   CacheEntry(OUTPUT, "k4", OLD_CID, (10**5, X, 1))], [(CIDS[5], X)])
    state = MeshState(lanes_on=True, me=C)
    state.tier(**index.lookups())
    state.apply(_submitted())
    if refolded:
        state.refold()
    reads = _reads(db)
    state.apply(_ended())
    assert JOB in state.ended and not state.unended
    batches = math.ceil(N / ahead) * math.ceil(min(ahead, N) / getattr(ji, "SCREEN_BATCH", 500))
    # one query per batch of keys and of CIDs, then one of each key or CID that has rows
    assert len(reads) == 2 * batches + 3, len(reads)
    assert state.outputs["k3"] == OLD_CID and state._outputs_src["k3"] == (50, X, 1)
    assert state.outputs["k4"] == CIDS[4] and state._outputs_src["k4"] == (1004, lane(B, JOB), 5)
    assert all(state.outputs[f"k{i}"] == CIDS[i] for i in range(N) if i not in (3,))
    assert state.providers[CIDS[5]] == {X, B}
    assert all(state.providers[c] == {B} for i, c in enumerate(CIDS) if i != 5)
