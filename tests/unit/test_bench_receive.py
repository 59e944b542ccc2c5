"""scripts/bench_receive.py's `--non-member` mode (partial replication's falsifier 2): what
the peer it emulates stores of another peer's one-task jobs, from their JOB_SUBMITTEDs and
JOB_ENDEDs only, and that it does so without an fsync."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from peer.config import PeerConfig
from peer.node import Node
from tests.helpers import load_script

HLC = 1_700_000_000_000 << 16


@pytest.mark.parametrize(("per_frame", "frames"), [(0, 12), (1, 6), (5, 2)])
def test_a_non_members_frames_carry_per_frame_jobs(per_frame: int, frames: int) -> None:
    """Six jobs: one event a frame (0), or a frame of each job's two, or of five jobs'."""
    bench = load_script("bench_receive")
    assert len(bench.non_member_frames(6, 2, HLC, per_frame)) == frames


def test_a_non_member_keeps_each_ended_job_as_a_row_and_its_outputs_unsynced(
        tmp_path: Path) -> None:
    """The JOB_ENDEDs' outputs enter the cache with the order of their completion in the
    runner's lane of the job (j + 1 in a lanes job id's form: `non_member_frames`), their
    producer the providers, each job a row of the job index; nothing is fsynced (a
    non-member neither fsyncs nor acknowledges a submission)."""
    bench = load_script("bench_receive")
    node = Node(PeerConfig(data_dir=tmp_path, slots=1, mdns=False, compact_recent_tasks=0))
    node.listeners[:] = [node.scheduler.poke, node.compactor.note]
    syncs: list[object] = []
    node.log.sync = lambda since=None: syncs.append(since)  # type: ignore[method-assign]
    try:
        asyncio.run(bench._merge_non_member(node, bench.non_member_frames(6, 2, HLC, 5)))
        assert not syncs and not node._syncing
        assert len(node.index) == 6
        for j in range(6):
            job = f"bench-job-{j}"
            for i in range(2):
                key = bench.hashlib.sha256(f"key/{j}/{i}".encode()).hexdigest()
                cid = bench._cid(f"{job}/t{i}")
                assert node.state.outputs[key] == cid
                assert node.state._outputs_src[key] == (HLC + 2 * j + 2,
                                                        f"{bench.RUNNER}/j{j + 1:012x}", 1)
                assert node.state.providers[cid] == {bench.RUNNER}
    finally:
        node.log.close()


def test_the_non_member_mode_measures_each_grouping() -> None:
    """`once_non_member` ends every job and leaves none of them in memory nor in the log (it
    checks), per frame as asked."""
    bench = load_script("bench_receive")
    one, five = bench.once_non_member(10, 1, 0), bench.once_non_member(10, 1, 5)
    assert one["frames_per_job"] == 2.0 and five["frames_per_job"] == 0.2
    assert one["total_us_per_job"] > one["end_us_per_job"] > 0
