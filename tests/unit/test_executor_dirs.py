"""Where an executor's run directories go and that none outlives it (peer.jobs.executor):
removed at close, at the exit of a process that never closed it, and, for a process killed
before either, by the next executor started in the same directory."""

from __future__ import annotations

import asyncio
import fcntl
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from peer.jobs import executor as ex_mod
from peer.jobs import scratch
from peer.jobs.executor import Executor, ExecutorConfig, sweep_bases
from tests.unit.test_scratch import _deep_tree
from tests.unit.test_scratch import deep as deep  # (a fixture)


def _gone_pid() -> int:
    """A PID no process has: above the kernel's highest."""
    return int(Path("/proc/sys/kernel/pid_max").read_text()) + 1


def test_the_directories_of_gone_executors_are_swept_and_no_other(tmp_path: Path) -> None:
    dead = tmp_path / f"banzai-exec-{_gone_pid()}-a1b2c3d4"
    (dead / "7").mkdir(parents=True)
    (dead / "7" / "out").write_text("left by a killed run")
    live = tmp_path / f"banzai-exec-{os.getpid()}-e5f6g7h8"
    live.mkdir()
    old_empty = tmp_path / "banzai-exec-01xnk3am"  # the earlier form: no PID
    old_empty.mkdir()
    old_used = tmp_path / "banzai-exec-0555d8fu"
    (old_used / "3").mkdir(parents=True)
    old_stale = tmp_path / "banzai-exec-0_kosepp"  # untouched for two days
    (old_stale / "1").mkdir(parents=True)
    two_days_ago = time.time() - 2 * 86400
    os.utime(old_stale, (two_days_ago, two_days_ago))
    other = tmp_path / "upload-x"
    other.mkdir()
    a_file = tmp_path / f"banzai-exec-{_gone_pid()}-file"
    a_file.write_text("")
    assert sweep_bases(tmp_path) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        p.name for p in (live, old_used, other, a_file))
    assert sweep_bases(tmp_path / "missing") == 0


def test_the_sweep_leaves_another_users_directories(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The system temp directory is shared: the sweep removed any user's directories named
    as a gone executor's (a peer run as root, every user's). Only its own uid's go now."""
    dead = tmp_path / f"banzai-exec-{_gone_pid()}-a1b2c3d4"
    (dead / "7").mkdir(parents=True)
    old_empty = tmp_path / "banzai-exec-01xnk3am"
    old_empty.mkdir()
    real = os.geteuid()
    monkeypatch.setattr(os, "geteuid", lambda: real + 1)  # (they are another user's)
    assert sweep_bases(tmp_path) == 0
    assert (dead / "7").is_dir() and old_empty.is_dir()
    monkeypatch.setattr(os, "geteuid", lambda: real)
    assert sweep_bases(tmp_path) == 2 and list(tmp_path.iterdir()) == []


def test_the_sweep_leaves_the_directories_a_live_executor_holds(tmp_path: Path) -> None:
    """A live executor whose PID is another PID namespace's (a container sharing the temp
    directory) looks gone here: its run directories were removed under it. It holds them
    locked while it runs (flock), and the sweep passes over what is held."""
    live = tmp_path / f"banzai-exec-{_gone_pid()}-e5f6g7h8"
    (live / "3").mkdir(parents=True)
    fd = os.open(live, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        assert sweep_bases(tmp_path) == 0 and (live / "3").is_dir()
    finally:
        os.close(fd)  # (the executor ends)
    assert sweep_bases(tmp_path) == 1 and not live.exists()


async def test_an_executor_sweeps_at_start_and_removes_its_own_at_close(
        tmp_path: Path) -> None:
    stale = tmp_path / f"banzai-exec-{_gone_pid()}-zzzzzzzz"
    (stale / "1").mkdir(parents=True)
    ex = Executor(ExecutorConfig(slots=1, default_timeout_s=30.0, kill_grace_s=0.05,
                                 work_dir=str(tmp_path)))
    await ex.start()
    try:
        assert not stale.exists()
        mine = [p.name for p in tmp_path.iterdir()]
        assert len(mine) == 1 and mine[0].startswith(f"banzai-exec-{os.getpid()}-")
        other = os.open(tmp_path / mine[0], os.O_RDONLY)  # (as another process's sweep)
        try:
            with pytest.raises(BlockingIOError):  # held while it runs
                fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(other)
        result = await ex.run("a", "tests.unit.executor_targets:echo", "x")
        assert result.ok
    finally:
        await ex.close()
    assert list(tmp_path.iterdir()) == []


NEVER_CLOSED = """
import asyncio, sys
from peer.jobs.executor import Executor, ExecutorConfig

async def main() -> None:
    ex = Executor(ExecutorConfig(slots=1, kill_grace_s=0.05, work_dir=sys.argv[1]))
    await ex.start()
    await ex.run("a", "tests.unit.executor_targets:echo", "x")
    print(sorted(p.name for p in __import__("pathlib").Path(sys.argv[1]).iterdir()))

asyncio.run(main())  # returns without ex.close()
"""


async def test_the_directory_of_an_executor_never_closed_goes_with_its_process(
        tmp_path: Path) -> None:
    work = tmp_path / "work"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", NEVER_CLOSED, str(work), env=env, stdout=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate()
    assert proc.returncode == 0
    assert "banzai-exec-" in out.decode()  # it was there while the executor ran
    assert list(work.iterdir()) == []


async def test_a_run_directory_swept_before_it_is_held_is_made_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The run directory is seen before its lock is held: a peer of another PID namespace
    sharing the directory (this PID looks gone there) may sweep it in between; the start
    failed (FileNotFoundError). It makes another (session 34 review)."""
    real_mkdtemp, swept = tempfile.mkdtemp, []

    def mkdtemp(*a: Any, **k: Any) -> str:
        made = real_mkdtemp(*a, **k)
        if not swept:  # the rival's sweep, right after the first is made
            with monkeypatch.context() as m:
                m.setattr(ex_mod, "alive", lambda pid: False)
                swept.append(sweep_bases(tmp_path))
        return made

    monkeypatch.setattr(ex_mod.tempfile, "mkdtemp", mkdtemp)
    ex = Executor(ExecutorConfig(slots=1, default_timeout_s=30.0, kill_grace_s=0.05,
                                 work_dir=str(tmp_path)))
    await ex.start()
    fd = os.open(ex._base, os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert swept == [1] and not scratch.free(fd)  # (the new one held)
    finally:
        os.close(fd)
        await ex.close()


def test_the_sweep_removes_a_gone_executors_tree_of_any_depth(deep: Path) -> None:
    """(Review: a task's tree deeper than shutil.rmtree's recursion raised RecursionError
    out of the sweep.)"""
    dead = deep / f"banzai-exec-{_gone_pid()}-a1b2c3d4"
    dead.mkdir()
    _deep_tree(dead / "7")
    assert sweep_bases(deep) == 1
    assert list(deep.iterdir()) == []
