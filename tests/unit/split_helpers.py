"""Helpers for the scheduler's unit tests of a split on two peers: T_WRITE's files on one
of them (the holder), then T_UPPER over them in chunks (in-memory mesh, fake clock)."""

from __future__ import annotations

from peer.jobs.ports import SchedulerConfig
from peer.jobs.sim import JobMesh


async def write_then_upper(mesh: JobMesh, files: int = 24) -> tuple[str, str, str]:
    """Submit T_WRITE (`files` files) then T_UPPER over them, let the peer that claimed
    T_WRITE (the holder) finish it; returns the job, the holder and the other peer."""
    job = mesh.submit("p0", [{"name": "w", "call": "T_WRITE", "params": {"files": files}},
                             {"name": "u", "call": "T_UPPER", "params": {}, "depends": ["w"]}])
    await mesh.settle()
    [holder] = [pid for pid, p in mesh.peers.items() if p.runner.running]
    other = next(p for p in mesh.peers if p != holder)
    mesh[holder].runner.finish(mesh[holder].runner.running[0])
    await mesh.settle()
    return job, holder, other


async def chunks_running_on_both(mesh: JobMesh, cfg: SchedulerConfig,
                                 ) -> tuple[str, str, str]:
    """`write_then_upper`, then the other peer's stagger passes: the holder runs one chunk,
    the other peer (fetching its items) another. The job, the holder and the other peer."""
    job, holder, other = await write_then_upper(mesh)
    await mesh.advance(cfg.stagger_s * 2)
    mesh.heartbeats()
    return job, holder, other
