"""Failures a peer records are bounded (review r1 of session 49, helper g): a run's error
text is cut where it is made (F5), and a task whose workflow this release's spec refuses is
failed once, not at every evaluation without end (the review's "found and left"). Schedulers
on the in-memory mesh (peer/jobs/sim.py): fake clock and runner, no sleeps."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from peer.jobs.claims import task_status
from peer.jobs.sim import JobMesh
from peer.log import EventType
from peer.log.events import MAX_SHOWN_CHARS, cut_text
from tests.unit.test_scheduler_sim import CATALOG, CFG, TURN_S, WRITE, started_job


@pytest.fixture
async def mesh() -> AsyncIterator[JobMesh]:
    m = JobMesh(2, CATALOG, CFG)
    yield m
    await m.close()


def test_cut_text_keeps_head_and_tail_and_says_how_much_was_cut() -> None:
    assert cut_text("x" * MAX_SHOWN_CHARS) == "x" * MAX_SHOWN_CHARS
    long = "H" * 500_000 + "T" * 500_000
    cut = cut_text(long)
    assert len(cut) <= MAX_SHOWN_CHARS and cut.startswith("H" * 3000) and cut.endswith("T" * 1000)
    head, tail = cut.count("H"), cut.count("T")
    assert f"({len(long) - head - tail} characters cut)" in cut


async def test_a_runs_long_error_is_cut_in_its_chunk_failed(mesh: JobMesh) -> None:
    """On 6c66b4c1 the CHUNK_FAILED held the run's whole error (up to 1 MiB: a shell task's
    output, an exception quoting a server's answer), gossiped to every peer and shown per
    chunk; now at most MAX_SHOWN_CHARS, its head and tail."""
    job, holder = await started_job(mesh)
    error = "Traceback: " + "x" * 300_000 + " ValueError: the end"
    mesh[holder].runner.fail(f"{job}/w/0/0", "error", error)
    await mesh.advance(TURN_S)
    [failed] = mesh.events(EventType.CHUNK_FAILED, task="w")
    got = failed.payload["error"]
    assert len(got) <= MAX_SHOWN_CHARS and got.startswith("Traceback: xxx")
    assert got.endswith("ValueError: the end") and "characters cut)" in got
    assert task_status(mesh["p1"].state, job, "w", CFG.max_attempts) == "failed"


async def test_a_task_whose_workflow_fails_the_spec_is_failed_once(mesh: JobMesh) -> None:
    """A JOB_SUBMITTED of our own whose workflow this release refuses (stored by a release
    whose spec was looser, or sent past the HTTP check): each evaluation raised SpecError,
    `_fail_task` failed the task's first unfinished chunk again with the next attempt, which
    made the task dirty again: CHUNK_FAILED without end (on 6c66b4c1 the mesh did not settle;
    the real peer stopped answering). Now one CHUNK_FAILED per task and peer; it settles."""
    wf = {"name": {"not": "a string"}, "tasks": [WRITE]}
    mesh.emit("p0", EventType.JOB_SUBMITTED, {"job": "j1", "workflow": wf})
    await mesh.settle()
    await mesh.advance(CFG.lease_s * 2)
    failed = mesh.events(EventType.CHUNK_FAILED, job="j1")
    # (each peer evaluates the job and fails it before it hears the other: once each)
    assert sorted((e.origin, e.payload["task"], e.payload["chunk"], e.payload["attempt"])
                  for e in failed) == [("p0", "w", 0, 0), ("p1", "w", 0, 0)]
    assert all("the workflow name must be" in e.payload["error"] for e in failed)
    for pid in mesh.peers:
        assert task_status(mesh[pid].state, "j1", "w", CFG.max_attempts) == "failed"
