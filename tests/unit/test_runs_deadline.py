"""Runs' deadline over a runner that never ends a run (peer/jobs/runs.py): the loop's own
time passes (a few milliseconds), with the in-memory mesh and fake runner of peer/jobs/sim.py."""

from __future__ import annotations

import asyncio
import dataclasses

from peer.jobs.sim import JobMesh
from peer.log import EventType
from tests.unit.test_scheduler_sim import CATALOG, CFG, WRITE


async def test_a_run_the_runner_never_ends_fails_as_a_crash_at_its_deadline() -> None:
    """A run handed to a runner that never answered (a worker that never ends, none that
    can start) kept its slot and its claim for ever. At task_timeout_s (times 1 +
    queue_ahead) plus run_end_grace_s it is cancelled and fails as a crash naming the run
    and why; the slot is free again and the attempt is retried."""
    cfg = dataclasses.replace(CFG, task_timeout_s=0.002, run_end_grace_s=0.003)
    mesh = JobMesh(2, CATALOG, cfg)
    try:
        job = mesh.submit("p0", [WRITE])
        await mesh.settle()
        key = f"{job}/w/0/0"
        [holder] = [pid for pid, p in mesh.peers.items() if key in p.runner.running]
        for _ in range(1000):  # bounded: the deadline is 5 ms of the loop's time away
            if mesh.events(EventType.CHUNK_FAILED, holder, task="w"):
                break
            await asyncio.sleep(0.005)
        [failed, *_] = mesh.events(EventType.CHUNK_FAILED, holder, task="w")
        assert (failed.payload["attempt"], failed.payload["kind"]) == (0, "crash")
        assert failed.payload["error"] == (
            f"run {key} did not end 0.005 s after it was handed to the executor "
            "(task_timeout_s 0.002 s): its worker never answered, or none could start")
        assert key not in mesh[holder].runner.running  # cancelled: its slot is free
    finally:
        await mesh.close()
