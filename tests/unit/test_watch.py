"""The executor's watch (peer/jobs/watch.py) alone: fake runs, readings and clock; the tmpfs is
a directory of the test's."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from pathlib import Path

import pytest

from peer.jobs import scratch
from peer.jobs.scratch import Space
from peer.jobs.watch import Watch, Watched
from tests.unit.timer_fakes import FakeTimer

MIB = 1 << 20


class Runs:
    """The executor as the watch sees it: its runs, and the ones it was told to stop."""

    def __init__(self) -> None:
        self.runs: list[Watched] = []
        self.stopped: list[tuple[str, str, str]] = []

    def watched(self) -> Sequence[Watched]:
        return [r for r in self.runs if r.key not in {k for k, _, _ in self.stopped}]

    def stop(self, run: Watched, kind: str, error: str) -> None:
        self.stopped.append((run.key, kind, error))


def _run(tmp_path: Path, key: str, pid: int) -> Watched:
    return Watched(key, pid, tmp_path / "work" / key)


def test_below_the_floor_every_run_with_a_directory_on_the_tmpfs_is_stopped(
        tmp_path: Path, shm: Path) -> None:
    """Every run whose worker holds a directory there; not one whose PID names a dead
    worker's directory left there (a reused PID: that run has nothing on the tmpfs)."""
    clock, runs = FakeTimer(), Runs()
    reading = [Space(1 << 30, 1 << 30)]
    watch = Watch(0.5, 64 * MIB, None, runs, clock.call_later, lambda: reading[0])
    runs.runs = [_run(tmp_path, "a", 101), _run(tmp_path, "b", 102), _run(tmp_path, "c", 103)]
    for r in runs.runs:
        watch.started(r)
    held = []
    for pid in (101, 102, 103):
        (shm / f"{scratch.PREFIX}{pid}-x").mkdir()
        if pid != 102:  # (102's is a dead worker's of its PID, held by nobody: session 51)
            held.append(scratch.hold(shm / f"{scratch.PREFIX}{pid}-x"))
    (shm / "someone-else").mkdir()
    assert clock.pending() == [0.5]  # one check for all
    clock.advance(0.5)
    assert runs.stopped == [] and clock.pending() == [1.0]
    reading[0] = Space(64 * MIB - 1, 1 << 30)
    clock.advance(0.5)
    assert [(k, kind) for k, kind, _ in runs.stopped] == [("a", "storage"), ("c", "storage")]
    assert f"tmpfs {shm} below its floor of 64.0 MiB" in runs.stopped[0][2]
    assert "free on" in runs.stopped[0][2] and "63.9 MiB" in runs.stopped[0][2]
    runs.runs = []
    clock.advance(0.5)  # nothing runs: no further check until a run starts
    assert clock.pending() == []
    watch.started(_run(tmp_path, "d", 104))
    assert clock.pending() == [2.0]
    watch.close()
    assert clock.pending() == []
    for fd in held:
        os.close(fd)


@pytest.mark.parametrize("reading", [None, Space(1 << 30, 64 * MIB)])
def test_nothing_is_stopped_without_a_tmpfs_or_above_the_floor(
        tmp_path: Path, shm: Path, reading: Space | None) -> None:
    clock, runs = FakeTimer(), Runs()
    watch = Watch(0.5, 64 * MIB, None, runs, clock.call_later, lambda: reading)
    runs.runs = [_run(tmp_path, "a", 101)]
    (shm / f"{scratch.PREFIX}101-x").mkdir()
    watch.started(runs.runs[0])
    clock.advance(0.5)
    assert runs.stopped == [] and clock.pending() == [1.0]
    watch.close()


async def test_a_run_is_measured_only_once_the_disk_grew_by_its_bound(
        tmp_path: Path, shm: Path) -> None:
    clock, runs, used, watch = _disk_watch()
    small, big = _run(tmp_path, "small", 1), _run(tmp_path, "big", 2)
    (small.workdir).mkdir(parents=True)
    (small.workdir / "f").write_bytes(b"x" * 4096)
    (big.workdir).mkdir(parents=True)
    (big.workdir / "f").write_bytes(b"x" * (2 * MIB))
    runs.runs = [small, big]
    for r in runs.runs:
        watch.started(r)
    assert small.disk_mark == 5 << 30
    used[0] += MIB  # not more than the bound: nobody can be over it
    clock.advance(0.5)
    assert not watch._walking and runs.stopped == []
    used[0] += MIB
    clock.advance(0.5)
    assert watch._walking
    for _ in range(500):  # bounded: the walk is short work on the watch's thread
        if not watch._walking:
            break
        await asyncio.sleep(0.01)
    assert [(k, kind) for k, kind, _ in runs.stopped] == [("big", "error")]
    assert "bound of 1 MiB per run (task_scratch_max_bytes)" in runs.stopped[0][2]
    assert small.disk_mark is not None and (5 << 30) + 2 * MIB - small.disk_mark >= 4096
    used[0] += MIB // 2  # the small one's mark moved: not due again
    clock.advance(0.5)
    assert not watch._walking
    watch.close()


def _disk_watch() -> tuple[FakeTimer, Runs, list[int], Watch]:
    """(its clock, its runs, the bytes its disk has used (5 GiB: set it), a Watch of a 1 MiB
    bound on what runs write to that disk, no tmpfs floor)."""
    clock, runs = FakeTimer(), Runs()
    used = [5 << 30]
    watch = Watch(0.5, 0, 1 * MIB, runs, clock.call_later, lambda: Space(1 << 30, 1 << 30),
                  lambda p: used[0])
    return clock, runs, used, watch


async def _walked(watch: Watch) -> None:
    for _ in range(500):  # bounded: the walk is short work on the watch's thread
        if not watch._walking:
            return
        await asyncio.sleep(0.01)


async def test_a_run_growing_while_another_runs_directory_is_removed_is_still_measured(
        tmp_path: Path, shm: Path) -> None:
    """With slots > 1 a run's mark counts the directories of the others: removing one lowers
    the file system's use by as much as the run may write unseen. The removal is counted as
    still there from its report (before it starts) and as written once it is done."""
    clock, runs, used, watch = _disk_watch()
    ended, grows = _run(tmp_path, "ended", 1), _run(tmp_path, "grows", 2)
    runs.runs = [ended, grows]
    for r in runs.runs:
        watch.started(r)
    used[0] += 4 * MIB  # the first run wrote 4 MiB and ended: its directory goes
    runs.runs = [grows]
    watch.removing(4 * MIB)
    used[0] -= 3 * MIB  # a part of it is removed ...
    grows.workdir.mkdir(parents=True)
    (grows.workdir / "f").write_bytes(b"x" * (2 * MIB))
    used[0] += 2 * MIB  # ... while the other run writes 2 MiB
    clock.advance(0.5)  # 5 GiB + 3 MiB used, 1 MiB of 4 still being removed: due
    assert watch._walking
    await _walked(watch)
    assert [(k, kind) for k, kind, _ in runs.stopped] == [("grows", "error")]
    watch.close()


async def test_a_removal_done_before_a_check_still_counts_as_written(
        tmp_path: Path, shm: Path) -> None:
    clock, runs, used, watch = _disk_watch()
    small, grows = _run(tmp_path, "small", 1), _run(tmp_path, "grows", 2)
    runs.runs = [small, grows]
    watch.started(small)
    used[0] += 4 * MIB  # an earlier run's directory, still there when this one starts
    watch.started(grows)
    watch.removing(4 * MIB)
    used[0] -= 4 * MIB
    watch.removed(4 * MIB)
    small.workdir.mkdir(parents=True)
    grows.workdir.mkdir(parents=True)
    (grows.workdir / "f").write_bytes(b"x" * (2 * MIB))
    used[0] += 2 * MIB  # the file system is at 2 MiB less than when `grows` started
    clock.advance(0.5)
    assert watch._walking  # both: `small` might hold what was written, too
    await _walked(watch)
    assert [(k, kind) for k, kind, _ in runs.stopped] == [("grows", "error")]
    assert small.disk_mark == (5 << 30) + 6 * MIB  # 2 MiB used more, 4 MiB removed
    watch.close()
