"""What a home's tick costs while its lanes job runs (issue 12, session 50 helper e): its
look for the job's end (`Scheduler._end_jobs`) stops at a task that waits for nothing and is
open (`Scheduler._open_task`), instead of walking every task of the job at every tick
(`_unsettled_tasks`, then `job_ended`'s `finished_at`); the job still ends as before."""

from __future__ import annotations

from typing import Any

import pytest

from peer.jobs import scheduler
from peer.jobs.sim import JobMesh
from peer.log import EventType, MeshState
from tests.unit.test_members_sim import CATALOG, CFG, done, finish_all, writes


async def test_a_running_lanes_jobs_end_is_looked_for_without_a_walk_of_its_tasks(
        monkeypatch: pytest.MonkeyPatch) -> None:
    walks: list[str] = []
    real_ended, real_unsettled = scheduler.job_ended, scheduler.Scheduler._unsettled_tasks

    def job_ended(state: MeshState, job: str, max_attempts: int) -> Any:
        walks.append("job_ended")
        return real_ended(state, job, max_attempts)

    def unsettled(self: scheduler.Scheduler, job: str) -> bool:
        walks.append("_unsettled_tasks")
        return real_unsettled(self, job)

    monkeypatch.setattr(scheduler, "job_ended", job_ended)
    monkeypatch.setattr(scheduler.Scheduler, "_unsettled_tasks", unsettled)
    mesh = JobMesh(2, CATALOG, CFG, lanes=True)
    p0, p1 = mesh.peers
    tasks = writes(40)
    try:
        job = mesh.submit(p0, tasks, members=[p0, p1])
        await mesh.settle()
        for _ in range(5):  # some of its tasks done, most open
            for pid in (p0, p1):
                for key in mesh[pid].runner.running:
                    mesh[pid].runner.finish(key, duration_s=0.01)
            await mesh.advance(1.0)
        sched = mesh[p0].sched
        assert job in sched._lanes_live and 0 < len(
            [t for t in tasks if (job, t["name"]) in mesh[p0].state.task_done]) < len(tasks)
        walks.clear()
        for _ in range(8):  # ticks while its runs go on (not finished: the job stays open)
            sched._lanes_moved.add(job)
            await mesh.advance(0.5)
        assert walks == []
        assert job in sched._lanes_live and not mesh.sent(EventType.JOB_ENDED, job=job)
        await finish_all(mesh, rounds=40)
        assert done(mesh, p0, job, tasks)
        [end] = mesh.sent(EventType.JOB_ENDED, job=job)  # (once finished: the full look)
        assert end.payload["state"] == "done" and "job_ended" in walks
    finally:
        await mesh.close()
