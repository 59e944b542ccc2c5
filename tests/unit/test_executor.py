"""Executor: real worker processes; every test closes its pool and checks nothing leaks."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import multiprocessing
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
import types
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from peer.errors import ConfigError
from peer.jobs import executor, scratch
from peer.jobs.executor import Executor, ExecutorConfig, ExitKind, OnMessage, RunResult
from peer.jobs.heap import libc_mallopt
from peer.jobs.scratch import Space
from tests.unit.timer_fakes import FakeTimer

T = "tests.unit.executor_targets:"
MakeExecutor = Callable[..., Awaitable[Executor]]


def _fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


@pytest.fixture(scope="module", autouse=True)
def _warm_forkserver() -> None:
    """Start the forkserver (and resource tracker) once, so per-test leak checks are exact."""

    async def warm() -> None:
        async with Executor(ExecutorConfig.local(slots=1)) as ex:
            await ex.run("warm", T + "echo", None)

    asyncio.run(warm())


@pytest.fixture
async def make_executor() -> AsyncIterator[MakeExecutor]:
    """Factory of started executors; closes them and asserts no process, thread or fd leaks."""
    threads, fds = threading.active_count(), _fds()
    made: list[tuple[Executor, FakeTimer | None]] = []

    async def make(slots: int = 2, timer: FakeTimer | None = None, wait: bool = True,
                   space: Callable[[], Space | None] | None = None,
                   used: Callable[[Path], int | None] | None = None, **kw: Any) -> Executor:
        cfg = ExecutorConfig(slots=slots, default_timeout_s=20.0, kill_grace_s=0.05, **kw)
        probes = {k: v for k, v in (("space", space), ("used", used)) if v is not None}
        ex = Executor(cfg, timer=timer, **probes)
        made.append((ex, timer))
        await ex.start(wait=wait)
        return ex

    yield make
    for ex, timer in made:
        closing = asyncio.create_task(ex.close())
        await asyncio.sleep(0)  # close() has sent SIGTERM and set its SIGKILL timers
        if timer is not None:
            timer.advance(3600.0)  # fire them, as a real clock would
        await closing
    assert multiprocessing.active_children() == []
    assert threading.active_count() == threads
    assert _fds() <= fds


def _gone(pid: int) -> bool:
    """True if `pid` no longer exists (a zombie still counts as present)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):  # (reaped between the open and the read)
        return False


async def _ends(pid: int) -> bool:
    """Whether `pid` stops running (exits or becomes a zombie) within a bounded wait."""
    for _ in range(250):
        if not _running(pid):
            return True
        await asyncio.sleep(0.02)
    return not _running(pid)


async def _pid_in(path: Path) -> int:
    for _ in range(250):
        if path.exists() and path.read_text():
            return int(path.read_text())
        await asyncio.sleep(0.02)
    raise AssertionError(f"no pid written to {path}")


async def _worker_pid(ex: Executor, key: str = "pid") -> int:
    pid: int = (await ex.run(key, T + "describe", "X")).value["pid"]
    return pid


async def _started(
    ex: Executor, key: str, target: str, payload: Any, timeout_s: float | None = None
) -> asyncio.Task[RunResult]:
    """Start a run whose target logs "started" first; return once it has."""
    seen = asyncio.Event()
    task = asyncio.create_task(ex.run(key, T + target, payload, timeout_s=timeout_s,
                                      on_message=lambda k, a: seen.set()))
    await asyncio.wait_for(seen.wait(), 5)
    return task


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"slots": 0}, "slots"),
        ({"slots": True}, "slots"),
        ({"slots": 1, "default_timeout_s": 0}, "default_timeout_s"),
        ({"slots": 1, "memory_limit_mb": 0}, "memory_limit_mb"),
        ({"slots": 1, "kill_grace_s": -1}, "kill_grace_s"),
        ({"slots": 1, "stuck_after_s": 0}, "stuck_after_s"),
        ({"slots": 1, "preload": ("",)}, "preload"),
        ({"slots": 1, "env": {"A": 1}}, "env"),
        ({"slots": 1, "math_threads": 0}, "math_threads"),
        ({"slots": 1, "tmpfs_check_s": 0}, "tmpfs_check_s"),
        ({"slots": 1, "tmpfs_kill_min_bytes": -1}, "tmpfs_kill_min_bytes"),
        ({"slots": 1, "tmpfs_kill_min_bytes": 1.5}, "tmpfs_kill_min_bytes"),
        ({"slots": 1, "task_scratch_max_bytes": 0}, "task_scratch_max_bytes"),
    ],
)
def test_config_rejects_bad_values(kw: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as err:
        ExecutorConfig(**kw)
    assert err.value.field == field


def test_config_is_hashable_and_copies_env() -> None:
    env = {"A": "1"}
    cfg = ExecutorConfig(slots=1, env=env)
    env["B"] = "2"
    assert cfg.env == {"A": "1"}
    assert hash(cfg) == hash(ExecutorConfig(slots=1))


async def test_ok_result_is_json_round_tripped(make_executor: MakeExecutor) -> None:
    ex = await make_executor()
    res = await ex.run("a", T + "echo", {"x": (1, 2.5, "s")})
    assert res.ok and res.exit_kind == "ok" and res.error is None
    assert res.value == {"x": [1, 2.5, "s"]}
    assert res.duration_s >= 0


@pytest.mark.parametrize(
    ("target", "payload", "error"),
    [
        ("fail", "bad thing", "ValueError: bad thing"),
        ("unserialisable", None, "TypeError: Object of type object is not JSON serializable"),
        ("nope", None, "AttributeError: module 'tests.unit.executor_targets' has no attribute"),
    ],
)
async def test_target_errors_are_results(
    make_executor: MakeExecutor, target: str, payload: Any, error: str
) -> None:
    ex = await make_executor(slots=1)
    res = await ex.run("a", T + target, payload)
    assert not res.ok and res.exit_kind == "error"
    assert res.error is not None and res.error.startswith(error)
    assert res.trace is not None and "Traceback" in res.trace
    assert (await ex.run("b", T + "echo", 1)).value == 1  # same worker keeps serving


async def test_missing_module_is_an_error(make_executor: MakeExecutor) -> None:
    ex = await make_executor(slots=1)
    res = await ex.run("a", "no_such_module_xyz:f", None)
    assert res.exit_kind == "error"
    assert res.error == "ModuleNotFoundError: No module named 'no_such_module_xyz'"


@pytest.mark.parametrize(
    ("target", "payload", "error"),
    [
        ("exit_now", 1, "worker exited with code 1"),
        ("kill_self", signal.SIGKILL, "killed by signal 9"),
        ("segfault", None, "killed by signal 11"),
    ],
)
async def test_crash_replaces_worker(
    make_executor: MakeExecutor, target: str, payload: Any, error: str
) -> None:
    ex = await make_executor(slots=1)
    pid = (await ex.run("pid", T + "describe", "X")).value["pid"]
    res = await ex.run("a", T + target, payload)
    assert (res.ok, res.exit_kind, res.error) == (False, "crash", error)
    after = await ex.run("b", T + "describe", "X")
    assert after.ok and after.value["pid"] != pid
    assert _gone(pid)


async def test_timeout_fires_at_the_deadline_and_replaces_the_worker(
    make_executor: MakeExecutor,
) -> None:
    timer = FakeTimer()
    ex = await make_executor(slots=1, timer=timer, tmpfs_check_s=None)  # its timer calls only
    pid = await _worker_pid(ex)
    task = await _started(ex, "a", "sleep", 30, timeout_s=0.3)
    timer.advance(0.29)
    assert timer.pending() == [0.3]  # the deadline is still ahead: nothing was signalled
    timer.advance(0.01)
    assert timer.pending() == [pytest.approx(0.35)]  # SIGTERM sent, SIGKILL after the grace
    res = await task
    assert (res.ok, res.exit_kind, res.error) == (False, "timeout", "timed out after 0.3 s")
    assert res.duration_s == pytest.approx(0.3)
    assert timer.pending() == []  # the worker ended on SIGTERM: no SIGKILL left to send
    assert _gone(pid)
    assert await _worker_pid(ex, "b") != pid


async def test_cancel_running_ends_it_and_replaces_the_worker(make_executor: MakeExecutor) -> None:
    ex = await make_executor(slots=1)
    pid = await _worker_pid(ex)
    task = await _started(ex, "a", "sleep", 30)
    assert ex.free_slots == 0
    assert ex.cancel("a")
    res = await task
    assert (res.ok, res.exit_kind, res.error) == (False, "cancelled", "cancelled")
    assert _gone(pid)
    assert not ex.cancel("a")
    assert await _worker_pid(ex, "b") != pid
    assert ex.free_slots == 1


async def test_cancel_escalates_to_sigkill(make_executor: MakeExecutor) -> None:
    timer = FakeTimer()
    ex = await make_executor(slots=1, timer=timer)
    pid = await _worker_pid(ex)
    task = await _started(ex, "a", "stubborn", 30)  # ignores SIGTERM
    ex.cancel("a")
    assert timer.pending()[0] == 0.05  # SIGKILL is due when the grace is over
    timer.advance(0.05)
    res = await task
    assert (res.exit_kind, res.error) == ("cancelled", "cancelled")
    assert _gone(pid)
    assert await _worker_pid(ex, "b") != pid


@pytest.mark.parametrize("end", ["cancel", "timeout"])
@pytest.mark.parametrize(
    ("target", "needs_sigkill"),
    [("family", False), ("stubborn_child", False), ("stubborn_family", True)],
)
async def test_cancel_and_timeout_end_the_process_group(
    make_executor: MakeExecutor, tmp_path: Path, end: str, target: str, needs_sigkill: bool
) -> None:
    """Processes a task started die with its run, also those that ignore SIGTERM."""
    timer = FakeTimer()
    ex = await make_executor(slots=1, timer=timer)
    pid_file = tmp_path / "grandchild"
    task = await _started(ex, "a", target, str(pid_file))
    grandchild = await _pid_in(pid_file)
    assert _running(grandchild)
    if end == "cancel":
        assert ex.cancel("a")
    else:
        timer.advance(20.0)  # the default timeout
    if needs_sigkill:
        timer.advance(0.05)
    res = await task
    assert res.exit_kind == ("cancelled" if end == "cancel" else "timeout")
    assert await _ends(grandchild)
    assert (await ex.run("b", T + "echo", 6)).value == 6


async def test_cancel_queued_removes_it(make_executor: MakeExecutor) -> None:
    ex = await make_executor(slots=1)
    running = await _started(ex, "a", "sleep", 30)
    queued = asyncio.create_task(ex.run("b", T + "echo", 1))
    await asyncio.sleep(0)
    assert ex.cancel("b")
    res = await queued
    assert (res.exit_kind, res.duration_s) == ("cancelled", 0.0)
    ex.cancel("a")
    assert (await running).exit_kind == "cancelled"


async def test_cancelling_the_caller_kills_the_run(make_executor: MakeExecutor) -> None:
    ex = await make_executor(slots=1)
    task = await _started(ex, "a", "sleep", 30)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    queued = asyncio.create_task(ex.run("q", T + "echo", 1))
    await asyncio.sleep(0)
    queued.cancel()
    with pytest.raises(asyncio.CancelledError):
        await queued
    assert (await ex.run("a", T + "echo", 4)).value == 4  # key free, worker replaced
    assert ex.free_slots == 1


@pytest.mark.skipif(libc_mallopt() is None, reason="no mallopt (not glibc)")
async def test_workers_keep_freed_arrays_in_their_heap(make_executor: MakeExecutor) -> None:
    # Growing buffers, each freed: with glibc's adaptive thresholds each is mapped afresh
    # (about 55 MiB of page faults); a tuned worker reuses and extends its heap (about 10).
    sizes = list(range(1, 11))
    tuned = await make_executor(slots=1)
    default = await make_executor(slots=1, heap=None)
    faults_tuned = (await tuned.run("a", T + "fresh_pages", sizes)).value
    faults_default = (await default.run("b", T + "fresh_pages", sizes)).value
    assert faults_tuned * 3 < faults_default


async def test_memory_limit_reports_memory_error(make_executor: MakeExecutor) -> None:
    ex = await make_executor(slots=1, memory_limit_mb=512)
    res = await ex.run("a", T + "hog", 64)
    assert (res.ok, res.exit_kind) == (False, "memory")
    assert res.error is not None and res.error.startswith("MemoryError")
    assert (await ex.run("b", T + "echo", 5)).value == 5


async def test_crash_with_memory_limit_hints_at_it(make_executor: MakeExecutor) -> None:
    ex = await make_executor(slots=1, memory_limit_mb=512)
    res = await ex.run("a", T + "kill_self", signal.SIGKILL)
    assert res.error == "killed by signal 9 (memory_limit_mb=512 may be too low)"


async def test_messages_arrive_in_order(make_executor: MakeExecutor) -> None:
    ex = await make_executor(slots=1)
    got: list[tuple[str, tuple[Any, ...]]] = []
    res = await ex.run("a", T + "chatty", 300, on_message=lambda k, a: got.append((k, a)))
    assert res.value == 300
    logs = [a for k, a in got if k == "log"]
    metrics = [a for k, a in got if k == "metric"]
    progress = [a[0] for k, a in got if k == "progress"]
    assert logs == [(f"line {i}",) for i in range(300)]
    assert metrics == [("loss", i, 1.0 / (i + 1)) for i in range(300)]
    assert progress == sorted(progress) and progress[-1] == 1.0
    assert len(progress) < 30  # coalesced to at most ~20/s


async def test_queue_never_exceeds_slots_and_is_fifo(make_executor: MakeExecutor) -> None:
    ex = await make_executor(slots=2)
    runs = [ex.run(f"k{i}", T + "span", 0.1) for i in range(6)]
    await asyncio.sleep(0)
    results = await asyncio.gather(*runs)
    spans = [r.value for r in results]
    edges = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    running = peak = 0
    for _, step in edges:
        running += step
        peak = max(peak, running)
    assert peak == 2
    assert min(s for s, _ in spans[4:]) >= max(e for _, e in spans[:2]) - 0.01


async def test_single_slot_runs_in_submission_order(make_executor: MakeExecutor) -> None:
    ex = await make_executor(slots=1)
    results = await asyncio.gather(*(ex.run(f"k{i}", T + "span", 0.01) for i in range(5)))
    starts = [r.value[0] for r in results]
    assert starts == sorted(starts)
    assert ex.free_slots == 1


async def test_workdir_is_fresh_and_removed(make_executor: MakeExecutor) -> None:
    ex = await make_executor(slots=1)
    first = await ex.run("a", T + "use_workdir", "x")
    second = await ex.run("b", T + "use_workdir", "y")
    assert first.value != second.value
    assert not Path(first.value).exists() and not Path(second.value).exists()


async def test_a_finished_runs_directory_is_removed_after_its_result(
        make_executor: MakeExecutor) -> None:
    """Renamed away before the result is sent, removed by a thread of the worker after."""
    ex = await make_executor(slots=1)
    runs = [Path((await ex.run(f"k{i}", T + "use_workdir", "x")).value) for i in range(3)]
    base = runs[0].parent
    assert not any(r.exists() for r in runs)
    for _ in range(500):  # bounded: the removal is short work on another thread
        if not any(base.iterdir()):
            break
        await asyncio.sleep(0.01)
    assert list(base.iterdir()) == []


async def test_math_libraries_get_one_thread_per_worker(
        make_executor: MakeExecutor, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "7")  # restored after the test
    monkeypatch.delenv("OPENBLAS_NUM_THREADS")
    monkeypatch.setenv("OMP_NUM_THREADS", "3")  # the process's own setting wins
    ex = await make_executor(slots=1)
    assert (await ex.run("a", T + "describe", "OPENBLAS_NUM_THREADS")).value["env"] == "1"
    assert (await ex.run("b", T + "describe", "OMP_NUM_THREADS")).value["env"] == "3"
    assert os.environ["OPENBLAS_NUM_THREADS"] == "1"  # for a forkserver started after this


async def test_math_threads_none_leaves_the_libraries_alone(
        make_executor: MakeExecutor, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MKL_NUM_THREADS", "7")
    monkeypatch.delenv("MKL_NUM_THREADS")
    ex = await make_executor(slots=1, math_threads=None, env={"OMP_NUM_THREADS": "2"})
    assert (await ex.run("a", T + "describe", "OMP_NUM_THREADS")).value["env"] == "2"
    assert "MKL_NUM_THREADS" not in os.environ


async def test_worker_environment(make_executor: MakeExecutor) -> None:
    ex = await make_executor(slots=1, env={"BANZAI_TEST_X": "42"}, preload=("colorsys",))
    info = (await ex.run("a", T + "describe", "BANZAI_TEST_X")).value
    assert info["env"] == "42" and info["sigint_ignored"] and info["preloaded"]


async def test_a_background_start_queues_runs_until_workers_are_ready(
        make_executor: MakeExecutor) -> None:
    ex = await make_executor(slots=2, wait=False)
    results = await asyncio.gather(*(ex.run(f"r{i}", T + "echo", i) for i in range(5)))
    assert [r.value for r in results] == list(range(5))
    assert all(r.exit_kind == "ok" for r in results)


async def test_close_right_after_a_background_start_stops_every_worker(
        make_executor: MakeExecutor) -> None:
    ex = await make_executor(slots=2, wait=False)
    await ex.close()  # the fixture checks that no process, thread or fd is left
    with pytest.raises(RuntimeError):
        await ex.run("late", T + "echo", 1)


async def test_misuse_raises(make_executor: MakeExecutor) -> None:
    ex = await make_executor(slots=1)
    with pytest.raises(ValueError, match="module:function"):
        await ex.run("a", "no_colon", None)
    with pytest.raises(ValueError, match="timeout_s"):
        await ex.run("a", T + "echo", None, timeout_s=0)
    running = await _started(ex, "a", "sleep", 30)
    with pytest.raises(ValueError, match="already"):
        await ex.run("a", T + "echo", None)
    ex.cancel("a")
    await running
    with pytest.raises(RuntimeError, match="not started"):
        await Executor(ExecutorConfig(slots=1)).run("a", T + "echo", None)


async def test_close_stops_everything(make_executor: MakeExecutor) -> None:
    ex = await make_executor(slots=2)
    pids = {(await ex.run(f"p{i}", T + "describe", "X")).value["pid"] for i in range(4)}
    running = await _started(ex, "a", "sleep", 30)
    await ex.close()
    assert (await running).exit_kind == "cancelled"
    assert multiprocessing.active_children() == []
    assert all(_gone(pid) for pid in pids)
    with pytest.raises(RuntimeError, match="closed"):
        await ex.run("b", T + "echo", None)
    await ex.close()  # idempotent


async def test_thousand_trivial_runs_all_return_in_order(make_executor: MakeExecutor) -> None:
    """Throughput is measured by scripts/bench_executor.py; this checks the outcomes."""
    ex = await make_executor(slots=2)
    before = await asyncio.gather(_worker_pid(ex, "p0"), _worker_pid(ex, "p1"))  # one each
    results = await asyncio.gather(*(ex.run(f"k{i}", T + "echo", i) for i in range(1000)))
    assert [r.value for r in results] == list(range(1000))
    assert all(r.ok and r.exit_kind == "ok" for r in results)
    after = await asyncio.gather(_worker_pid(ex, "q0"), _worker_pid(ex, "q1"))
    assert len(set(before)) == 2 and set(after) == set(before)  # no worker was replaced
    assert ex.free_slots == 2


async def test_mixed_outcomes_at_once(make_executor: MakeExecutor) -> None:
    """A crash, a 4 MiB message and result, a timeout and a plain run, all at the same time,
    each end as they should. (How long the event loop stalls meanwhile is measured by
    scripts/bench_executor.py.)"""
    timer = FakeTimer()
    ex = await make_executor(slots=2, timer=timer)
    size = 4 << 20
    got: list[tuple[str, tuple[Any, ...]]] = []
    slow = await _started(ex, "slow", "sleep", 30, timeout_s=0.2)
    others = asyncio.gather(
        ex.run("crash", T + "exit_now", 3),
        ex.run("big", T + "big", size, on_message=lambda k, a: got.append((k, a))),
        ex.run("after", T + "echo", 1),
    )
    timer.advance(0.2)  # the timeout of "slow" only
    results = [await slow, *await others]
    assert [r.exit_kind for r in results] == ["timeout", "crash", "ok", "ok"]
    assert len(results[2].value) == size and got == [("log", ("l" * size,))]


PARENT = """
import asyncio, pathlib, sys
from peer.jobs.executor import Executor, ExecutorConfig

async def main() -> None:
    ex = Executor(ExecutorConfig(slots=1))
    await ex.start()
    res = await ex.run("pid", "tests.unit.executor_targets:describe", "X")
    pathlib.Path(sys.argv[1]).write_text(str(res.value["pid"]))
    await ex.run("family", "tests.unit.executor_targets:stubborn_child", sys.argv[2])

if __name__ == "__main__":
    asyncio.run(main())
"""


async def test_workers_and_their_processes_die_with_the_parent(tmp_path: Path) -> None:
    (tmp_path / "parent.py").write_text(PARENT)
    out, grandchild_out = tmp_path / "pid", tmp_path / "grandchild"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(tmp_path / "parent.py"), str(out), str(grandchild_out), env=env
    )
    try:
        pid = await _pid_in(out)
        grandchild = await _pid_in(grandchild_out)
        assert _running(pid) and _running(grandchild)
    finally:
        proc.kill()
        await proc.wait()
    assert await _ends(pid)
    assert await _ends(grandchild)  # it ignores SIGTERM: the worker took its group along


MAIN_SCRIPT = """
import asyncio, json
from tests.unit.forkserver_targets import IMPORTED_BY  # what a daemon's script imports
from peer.jobs.executor import Executor, ExecutorConfig

async def main() -> None:
    async with Executor(ExecutorConfig(slots=1)) as ex:
        r = await ex.run("p", "tests.unit.forkserver_targets:probe", None)
        print(json.dumps({**r.value, "parent": IMPORTED_BY}))

if __name__ == "__main__":
    asyncio.run(main())
"""


async def test_workers_find_the_main_scripts_imports_done_by_the_forkserver(
        tmp_path: Path) -> None:
    # A forkserver child runs the parent's main script again: what that script imports must
    # come from the forkserver, not be imported again by every new worker.
    (tmp_path / "main.py").write_text(MAIN_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(tmp_path / "main.py"), env=env, stdout=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate()
    assert proc.returncode == 0
    got = json.loads(out)
    assert got["imported_by"] not in (got["pid"], got["parent"])  # by the forkserver


# -- the watch over the tmpfs ----------------------------------------------------------------

MIB = 1 << 20


class Readings:
    """An executor's `space`: what the tmpfs and the host's memory have free, as a test sets."""

    def __init__(self) -> None:
        self.now: Space | None = Space(1 << 30, 1 << 30)
        self.reads = 0

    def __call__(self) -> Space | None:
        self.reads += 1
        return self.now


def _names(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir())


async def test_a_run_writing_on_a_tmpfs_below_the_floor_is_killed_and_its_directory_removed(
        make_executor: MakeExecutor, shm: Path) -> None:
    timer, space = FakeTimer(), Readings()
    ex = await make_executor(slots=2, timer=timer, space=space, tmpfs_kill_min_bytes=64 * MIB)
    writer = await _started(ex, "writer", "on_tmpfs", [str(shm), "wait"])
    other = await _started(ex, "other", "sleep", 60)  # a run with nothing on the tmpfs
    assert len(_names(shm)) == 1
    timer.advance(0.5)  # room enough: the next check is due, nothing was signalled
    assert space.reads == 1 and timer.pending() == [1.0, 20.0, 20.0]
    space.now = Space(63 * MIB, 1 << 30)
    timer.advance(0.5)
    res = await asyncio.wait_for(writer, 30)  # it would run 60 s
    assert (res.ok, res.exit_kind) == (False, ExitKind.STORAGE)
    assert res.error is not None
    assert all(s in res.error for s in (str(shm), "63.0 MiB", "floor of 64.0 MiB", "disk"))
    assert _names(shm) == []  # removed as its worker was reaped, not at a later sweep
    assert not other.done()  # nothing of it on the tmpfs: left alone
    assert ex.cancel("other") and (await other).exit_kind == ExitKind.CANCELLED


async def test_memory_short_kills_a_run_on_the_tmpfs_even_if_it_ignores_sigterm(
        make_executor: MakeExecutor, shm: Path) -> None:
    timer, space = FakeTimer(), Readings()
    ex = await make_executor(slots=1, timer=timer, space=space, tmpfs_kill_min_bytes=64 * MIB)
    writer = await _started(ex, "writer", "on_tmpfs", [str(shm), "stubborn"])
    space.now = Space(1 << 30, 10 * MIB)  # the tmpfs has room, the machine's memory not
    timer.advance(0.5)
    timer.advance(0.05)  # the kill grace: SIGKILL
    res = await asyncio.wait_for(writer, 30)  # it would run 60 s
    assert res.exit_kind == ExitKind.STORAGE and res.error is not None
    assert "MemAvailable: 10.0 MiB" in res.error
    assert _names(shm) == []


async def test_a_dead_workers_directory_on_the_tmpfs_is_removed_as_it_is_reaped(
        make_executor: MakeExecutor, shm: Path) -> None:
    ex = await make_executor(slots=1)
    res = await ex.run("exit", T + "on_tmpfs", [str(shm), "exit"])
    assert res.exit_kind == ExitKind.CRASH and _names(shm) == []
    other = shm / f"{scratch.PREFIX}{os.getpid()}-alive"  # a live process's: not the worker's
    other.mkdir()
    assert (await ex.run("exit2", T + "on_tmpfs", [str(shm), "exit"])).exit_kind == "crash"
    assert _names(shm) == [other.name]


async def test_no_tmpfs_watch_when_it_is_off_or_nothing_runs(
        make_executor: MakeExecutor, shm: Path) -> None:
    timer, space = FakeTimer(), Readings()
    space.now = Space(0, 0)
    ex = await make_executor(slots=1, timer=timer, space=space, tmpfs_check_s=None)
    writer = await _started(ex, "writer", "on_tmpfs", [str(shm), "wait"])
    assert timer.pending() == [20.0]  # the run's timeout only
    assert ex.cancel("writer") and (await writer).exit_kind == ExitKind.CANCELLED
    timer2, space2 = FakeTimer(), Readings()
    ex2 = await make_executor(slots=1, timer=timer2, space=space2)
    assert (await ex2.run("a", T + "echo", 1)).ok
    timer2.advance(0.5)  # the check after the run: nothing runs, so no further check
    assert space2.reads == 0 and timer2.pending() == []


# -- a bound on a run's work directory on disk -----------------------------------------------

class Used:
    """An executor's `used`: the used bytes of the work directory's file system, as set."""

    def __init__(self) -> None:
        self.now = 10 << 30

    def __call__(self, path: Path) -> int | None:
        return self.now


async def test_a_run_over_its_disk_bound_is_killed_once_the_disk_grew_by_as_much(
        make_executor: MakeExecutor, shm: Path) -> None:
    timer, used = FakeTimer(), Used()
    ex = await make_executor(slots=1, timer=timer, used=used, task_scratch_max_bytes=64 << 10)
    run = await _started(ex, "big", "fill_workdir", 256)  # 256 KiB in its work directory
    timer.advance(0.5)  # the file system did not grow: not measured, not killed
    assert timer.pending() == [1.0, 20.0]
    used.now += 1 << 20  # it grew by more than the bound
    timer.advance(0.5)
    res = await asyncio.wait_for(run, 30)  # it would run 60 s
    assert (res.ok, res.exit_kind) == (False, ExitKind.ERROR) and res.error is not None
    assert "bound of 64 KiB per run (task_scratch_max_bytes)" in res.error
    assert str(ex._base) in res.error  # names its directory


async def test_a_run_writing_before_the_loop_runs_again_is_still_held_to_its_bound(
        make_executor: MakeExecutor, shm: Path) -> None:
    """The mark a run's growth is counted from is taken before its worker is sent the run:
    taken after, it counted what the worker wrote meanwhile, and a run that wrote its 16 MiB
    at once was never measured (a CI run on a loaded host ended "done")."""
    timer, used = FakeTimer(), Used()
    ex = await make_executor(slots=1, timer=timer, used=used, task_scratch_max_bytes=64 << 10)
    send = ex._send

    def send_then_grow(w: Any, *parts: bytes) -> None:  # (a loaded host: the woken worker
        send(w, *parts)  # writes 1 MiB before the event loop runs again)
        used.now += 1 << 20

    ex._send = send_then_grow  # type: ignore[method-assign]
    run = await _started(ex, "big", "fill_workdir", 256)
    timer.advance(0.5)  # grown by 1 MiB since the mark: measured
    assert ex._watch is not None and ex._watch._walking
    res = await asyncio.wait_for(run, 30)  # it would run 60 s
    assert (res.ok, res.exit_kind) == (False, ExitKind.ERROR) and res.error is not None
    assert "bound of 64 KiB per run (task_scratch_max_bytes)" in res.error


async def test_a_run_under_its_disk_bound_is_measured_only_when_the_disk_grew(
        make_executor: MakeExecutor, shm: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from peer.jobs import scratch

    walks: list[Path] = []
    real = scratch.tree_bytes
    monkeypatch.setattr(scratch, "tree_bytes",
                        lambda p, *a, **k: (walks.append(p), real(p, *a, **k))[1])
    timer, used = FakeTimer(), Used()
    ex = await make_executor(slots=1, timer=timer, used=used, task_scratch_max_bytes=1 << 20)
    run = await _started(ex, "small", "fill_workdir", 16)
    used.now += 2 << 20  # others wrote: the run might be over
    timer.advance(0.5)
    for _ in range(500):  # bounded: the walk is short work on the watch's thread
        if walks and not ex._watch._walking:  # type: ignore[union-attr]
            break
        await asyncio.sleep(0.01)
    assert len(walks) == 1 and not run.done()  # measured: 16 KiB, under the bound
    timer.advance(0.5)
    used.now += 512 << 10  # grown by less than the bound since it was measured
    timer.advance(0.5)
    await asyncio.sleep(0.05)
    assert len(walks) == 1 and not run.done()
    assert ex.cancel("small") and (await run).exit_kind == ExitKind.CANCELLED


async def _until(done: Callable[[], bool]) -> bool:
    for _ in range(500):  # bounded: short work on workers and threads
        if done():
            return True
        await asyncio.sleep(0.01)
    return False


@pytest.mark.parametrize("cancelled", [False, True])
async def test_a_run_growing_while_an_earlier_runs_directory_is_removed_is_held_to_its_bound(
        make_executor: MakeExecutor, tmp_path: Path, cancelled: bool) -> None:
    """With slots > 1, a run's mark counted the directory of an earlier run still there;
    removed meanwhile (by its worker's thread, or as its killed worker is reaped), it hid as
    much of what the run wrote next: a run 1 MiB past its bound of 512 KiB was never
    measured. The file system here is the executor's run directories."""
    timer, work = FakeTimer(), tmp_path / "work"
    ex = await make_executor(slots=2, timer=timer, work_dir=str(work),
                             used=lambda p: scratch.tree_bytes(p, sys.maxsize, on_disk=True),
                             task_scratch_max_bytes=512 << 10)
    base, cue_first, cue_grows = next(work.iterdir()), tmp_path / "first", tmp_path / "grows"
    first = await _started(ex, "first", "fill_until", [2048, str(cue_first)])
    said: list[str] = []
    grows = asyncio.create_task(ex.run("grows", T + "fill_after", [1536, str(cue_grows)],
                                       on_message=lambda k, a: said.append(a[0])))
    assert await _until(lambda: said == ["started"])  # its mark counts the first's 2 MiB
    if cancelled:
        assert ex.cancel("first")
    cue_first.touch()
    assert (await asyncio.wait_for(first, 10)).ok is not cancelled
    assert await _until(lambda: not list(base.glob(".*.gone")))  # its directory removed
    cue_grows.touch()
    assert await _until(lambda: said == ["started", "filled"])
    timer.advance(0.5)
    assert await _until(grows.done)
    res = grows.result()
    assert (res.ok, res.exit_kind) == (False, ExitKind.ERROR) and res.error is not None
    assert "bound of 512 KiB per run (task_scratch_max_bytes)" in res.error


async def test_a_killed_runs_work_directory_is_gone_when_its_result_arrives(
        make_executor: MakeExecutor, tmp_path: Path) -> None:
    """SIGTERM ends a run through its `finally`, which moves its directory away for a thread
    of the worker to remove: that thread dies with the worker; the directory must not stay
    until the executor closes."""
    ex = await make_executor(slots=1, work_dir=str(tmp_path / "work"))
    run = await _started(ex, "many", "fill_files", 400)
    base = next((tmp_path / "work").iterdir())
    assert ex.cancel("many") and (await run).exit_kind == ExitKind.CANCELLED
    assert _names(base) == []


async def test_a_dead_workers_earlier_run_directories_are_removed_as_it_is_reaped(
        make_executor: MakeExecutor, tmp_path: Path) -> None:
    """A finished run's directory is moved away (`.N.gone`) for a thread of its worker to
    remove; if the worker dies first, they were left until the executor closed."""
    ex = await make_executor(slots=1, work_dir=str(tmp_path / "work"))
    base = next((tmp_path / "work").iterdir())
    first = Path((await ex.run("a", T + "stall_trash", "x")).value)
    second = Path((await ex.run("b", T + "use_workdir", "y")).value)
    assert _names(base) == sorted(f".{p.name}.gone" for p in (first, second))  # kept
    assert (await ex.run("c", T + "exit_now", 3)).exit_kind == ExitKind.CRASH
    assert _names(base) == []  # removed as the worker was reaped, before the result



def _said(said: list[str]) -> OnMessage:
    """An on_message that keeps each log line in `said`."""
    return lambda kind, args: said.append(args[0]) if kind == "log" else None


@pytest.mark.parametrize(("forged", "why"), [
    (("done", "RUN", True, "not json", None, None, "ok"), "whose result is not JSON"),
    (("done", "RUN", False, None, "ValueError", None, "bogus"), "whose kind is wrong"),
    (("done", "RUN", True, "42", None, None, "error"), "whose kind is wrong"),
    (("done", "RUN", "yes", "42", None, None, "ok"), "whose ok is wrong"),
    (("done", "RUN", False, None, None, None, "error"), "whose error is wrong"),
    (("done", "RUN"), "a frame of no known form"),
    (("removing", "lots"), "a frame of no known form"),
    (("removing", -1), "a 'removing' frame of -1 bytes, more done than the 0"),
    (("m", "RUN", "log", "not a tuple"), "a frame of no known form"),
    (executor._FRAME.pack(3) + b"xyz", "a frame that does not unpickle"),
], ids=["not-json", "no-kind", "ok-as-error", "ok-not-bool", "no-error", "short", "no-count",
        "more-removed", "args", "no-pickle"])
async def test_a_bad_frame_kills_its_worker_and_fails_the_run_naming_it(
        make_executor: MakeExecutor, forged: Any, why: str) -> None:
    """A 'done' frame whose JSON or kind did not decode left the run on its worker forever
    (the worker was marked free before decoding; the timeout's kill then found no run to
    fail), and any frame that raised was skipped: a task can write anything to the pipe.
    Now the worker is killed (what it sends after is not read) and the run fails as a crash
    naming the frame; the frames before it arrive, the executor runs on."""
    ex = await make_executor(slots=1)  # (no timeout_s: only the kill ends the run)
    said: list[str] = []
    frames = [("m", "RUN", "log", ("before",)), forged, ("m", "RUN", "log", ("after",))]
    res = await asyncio.wait_for(ex.run("bad", T + "forge_frames", frames,
                                        on_message=_said(said)), 10)
    assert (res.ok, res.exit_kind, said) == (False, ExitKind.CRASH, ["before"])
    assert res.error is not None and res.error.startswith("the worker sent ") and why in res.error
    assert (await asyncio.wait_for(ex.run("next", T + "echo", 7), 10)).value == 7


async def test_a_bad_frame_after_a_done_one_does_not_fail_the_next_run(
        make_executor: MakeExecutor) -> None:
    """A 'done' then a bad frame in one read (a task's stray write after its result): the
    'done' freed the worker and handed it the queued run at once, which the bad frame's kill
    then failed as a crash though it never started (review r1, session 39). The next run
    waits for the frames read to be handled and goes to the replacement worker."""
    ex = await make_executor(slots=1)
    frames = [("done", "RUN", True, '"first"', None, None, "ok"), executor._FRAME.pack(3) + b"xyz"]
    first, second = await asyncio.wait_for(asyncio.gather(
        ex.run("a", T + "forge_frames", frames), ex.run("b", T + "echo", 7)), 10)
    assert (first.ok, first.value) == (True, "first")
    assert (second.ok, second.value) == (True, 7)


async def test_a_second_ready_frame_kills_its_worker_and_fails_only_its_run(
        make_executor: MakeExecutor) -> None:
    """A well-formed 'ready' from a busy worker put it back on the idle list: the queued run
    overwrote its run, which then never ended, and the queued run failed as a crash when the
    worker was killed (review d, session 40). Now the worker is killed for the frame, its run
    fails naming it, and the queued run goes to the replacement."""
    ex = await make_executor(slots=1)  # (no timeout_s: only the kill ends the run)
    first, second = await asyncio.wait_for(asyncio.gather(
        ex.run("a", T + "forge_frames", [("ready", 12345, [])]), ex.run("b", T + "echo", 7)), 10)
    assert (first.ok, first.exit_kind) == (False, ExitKind.CRASH)
    assert first.error == "the worker sent a second 'ready' frame"
    assert (second.ok, second.value) == (True, 7)


async def test_a_frame_announcing_too_many_bytes_kills_its_worker(
        make_executor: MakeExecutor) -> None:
    """A frame header announcing 2**63 bytes was waited for until the worker died (the read
    buffer grew by what it wrote meanwhile). More than _MAX_FRAME_BYTES is never read: the
    worker is killed and its run fails naming the header."""
    ex = await make_executor(slots=1)  # (no timeout_s: only the kill ends the run)
    said: list[str] = []
    frames = [("m", "RUN", "log", ("before",)), executor._FRAME.pack(1 << 63) + b"x" * 100]
    res = await asyncio.wait_for(ex.run("huge", T + "forge_frames", frames,
                                        on_message=_said(said)), 10)
    assert (res.ok, res.exit_kind, said) == (False, ExitKind.CRASH, ["before"])
    assert res.error == (f"the worker sent a frame header announcing {1 << 63} bytes (at most "
                         f"{executor._MAX_FRAME_BYTES} are read)")
    assert (await asyncio.wait_for(ex.run("next", T + "echo", 7), 10)).value == 7


async def test_a_frame_the_executor_fails_to_handle_fails_its_run(
        make_executor: MakeExecutor, caplog: pytest.LogCaptureFixture) -> None:
    """An error of ours while handling a good frame was logged as the worker's bad frame,
    once per worker, and its run never ended. It is logged as ours (with its traceback) and
    the run fails as a crash saying so."""
    ex = await make_executor(slots=1)

    def broken(w: Any, msg: tuple[Any, ...]) -> None:
        raise RuntimeError("a bug")

    ex._on_done = broken  # type: ignore[method-assign]
    res = await asyncio.wait_for(ex.run("a", T + "echo", 1), 10)
    assert (res.ok, res.exit_kind) == (False, ExitKind.CRASH)
    assert res.error == ("the executor failed handling the worker's 'done' frame "
                         "(RuntimeError: a bug)")
    ours = [r for r in caplog.records if r.levelname == "ERROR" and r.exc_info]
    assert len(ours) == 1 and "handling a 'done' frame of worker" in ours[0].getMessage()


def test_a_run_directory_that_cannot_be_measured_is_removed_unreported(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Measuring a run directory before its removal raised out of the remover (the helper
    thread's _join, a worker's _Trash), and the directory stayed. It counts as 0 now (the
    watch takes its removal for anyone's) and is removed."""
    run = tmp_path / "run"
    (run / "sub").mkdir(parents=True)
    (run / "sub" / "f").write_bytes(b"x" * 4096)

    def unreadable(path: Path, stop_above: int, **kw: Any) -> int:
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(scratch, "tree_bytes", unreadable)
    reported: list[int] = []
    executor._remove_runs([run], reported.append)
    assert not run.exists() and reported == []


def test_the_trash_thread_removes_later_run_directories_after_one_fails(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An error while measuring (or reporting) one run directory ended a worker's removing
    thread, and every later run directory of that worker stayed on disk."""
    runs = [tmp_path / name for name in ("unreadable", "unreported", "later")]
    for run in runs:
        run.mkdir()
        (run / "f").write_bytes(b"x" * 4096)
    measure = scratch.tree_bytes

    def flaky(path: Path, stop_above: int, **kw: Any) -> int:
        if "unreadable" in path.name:
            raise PermissionError(13, "Permission denied", str(path))
        return measure(path, stop_above, **kw)

    monkeypatch.setattr(scratch, "tree_bytes", flaky)
    later_gone = threading.Event()

    def report(run: Path) -> Callable[[int], None]:
        def told(nbytes: int) -> None:
            if run.name == "unreported":
                raise RuntimeError("the loop is closed")
            if nbytes < 0:
                later_gone.set()
        return told

    trash = executor._Trash()
    for run in runs:
        trash.remove(run, report(run))
    assert later_gone.wait(10)  # bounded: a thread of this process removes them
    assert sorted(p.name for p in tmp_path.iterdir()) == []


FORKSERVER_PROBE = """
import asyncio, json, sys
from peer.jobs.executor import Executor, ExecutorConfig

async def main() -> None:
    async with Executor(ExecutorConfig(slots=1)) as ex:
        r = await ex.run("a", "tests.unit.executor_targets:describe", "PYTHONSAFEPATH")
        print(json.dumps([r.exit_kind, r.value]))

if __name__ == "__main__":
    asyncio.run(main())
"""


def test_the_forkserver_preloads_nothing_from_the_working_directory(tmp_path: Path) -> None:
    """CPython 3.11's forkserver runs `python -c` (the working directory first on sys.path)
    and ignores the sys_path it is handed: a `peer/` package in the directory the daemon was
    started from was preloaded into every worker (here: its import leaves a mark, and the
    worker cannot start). Run in a fresh process: the forkserver is started once per process.
    The workers' own environment has no PYTHONSAFEPATH (their tasks' processes see none)."""
    cwd, script = tmp_path / "cwd", tmp_path / "bin" / "probe.py"
    (cwd / "peer").mkdir(parents=True)
    (cwd / "peer" / "__init__.py").write_text(
        f"open({str(tmp_path / 'mark')!r}, 'w').write('imported from the working directory')\n")
    script.parent.mkdir()
    script.write_text(FORKSERVER_PROBE)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONSAFEPATH"}
    env["PYTHONPATH"] = str(Path(__file__).parents[2])
    out = subprocess.run([sys.executable, str(script)], cwd=cwd, env=env, capture_output=True,
                         text=True, timeout=120)
    assert not (tmp_path / "mark").exists(), out.stderr[-2000:]
    assert out.returncode == 0, out.stderr[-2000:]
    kind, value = json.loads(out.stdout.strip().splitlines()[-1])
    assert kind == "ok" and value["env"] is None


def _wait_for_file(path: Path) -> None:
    """Block this thread (the event loop's too) until `path` exists, up to 30 s."""
    for _ in range(3000):
        if path.exists():
            return
        time.sleep(0.01)
    raise AssertionError(f"{path} never appeared")


async def test_a_flood_of_frames_is_handled_over_several_turns_of_the_loop(
        make_executor: MakeExecutor, tmp_path: Path) -> None:
    """A worker writing without end held the loop: its pipe was read on while reads came
    full, and every frame read was handled before anything else ran (a review's flood test
    saw 0.02 s stalls). Each turn now reads once: with 20,000 frames (~800 KB) waiting in
    the pipe, a call the first frame's handler schedules runs before the last frame is
    handled; none is lost or reordered."""
    ex = await make_executor(slots=1)
    loop = asyncio.get_running_loop()
    said: list[str] = []
    seen_by_then: list[int] = []

    def on_message(kind: str, args: tuple[Any, ...]) -> None:
        said.append(args[0])
        if len(said) == 1:
            loop.call_soon(lambda: seen_by_then.append(len(said)))

    count, cue = 20_000, tmp_path / "written"
    task = asyncio.create_task(ex.run("flood", T + "flood", [count, str(cue)],
                                      on_message=on_message))
    await asyncio.sleep(0)  # the run is sent to the worker
    _wait_for_file(cue)  # the loop held meanwhile: the whole flood waits in the pipe
    res = await asyncio.wait_for(task, 30)
    assert (res.ok, res.value) == (True, count)
    assert said == [str(i) for i in range(count)]
    assert seen_by_then and seen_by_then[0] < count


def _state(pid: int) -> str:
    """The state letter of process `pid` ("T": stopped)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def _digest(data: bytes) -> list[Any]:
    return [len(data), hashlib.sha256(data).hexdigest()]


async def _handed_to_stopped(ex: Executor, pid: int, key: str, payload: bytes,
                             timeout_s: float | None = None) -> asyncio.Task[RunResult]:
    """Run `key` (the payload's digest) started while worker `pid` is stopped (SIGSTOP),
    its request far larger than the pipe: the loop's next step (this test's) must come while
    the worker is still stopped, the rest of the request unwritten. A watchdog lets the
    worker go on after 10 s (a loop held by the write waits for it: the check then fails)."""
    os.kill(pid, signal.SIGSTOP)
    assert await _until(lambda: _state(pid) == "T")  # (it stops once it is scheduled)
    watchdog = threading.Timer(10, os.kill, (pid, signal.SIGCONT))
    watchdog.start()
    try:
        task = asyncio.create_task(ex.run(key, T + "digest", payload, timeout_s=timeout_s))
        await asyncio.sleep(0)  # the run is handed to the stopped worker
        assert _state(pid) == "T"  # the loop went on with the worker still stopped
        assert ex._jobs[key].worker is not None
    finally:
        watchdog.cancel()
        watchdog.join()
    return task


async def test_a_request_larger_than_the_pipe_is_written_without_holding_the_loop(
        make_executor: MakeExecutor) -> None:
    """A request was written whole, blocking: one of a few MB (a task's params or items; a
    workflow's JSON may hold 2 MB) held the loop until its worker had read all but the
    pipe's 64 KiB, and for ever a worker that does not read. It is written as the pipe
    drains: the loop runs on meanwhile, the worker gets it whole, the next run after it."""
    ex = await make_executor(slots=1)
    pid = await _worker_pid(ex)
    payload, ended = os.urandom(4 << 20), []
    big = await _handed_to_stopped(ex, pid, "big", payload)
    small = asyncio.create_task(ex.run("small", T + "echo", 7))
    for task in (big, small):
        task.add_done_callback(ended.append)
    os.kill(pid, signal.SIGCONT)
    res, after = await asyncio.wait_for(asyncio.gather(big, small), 30)
    assert (res.ok, res.value) == (True, _digest(payload))
    assert (after.ok, after.value) == (True, 7) and ended == [big, small]


async def test_a_worker_that_dies_before_reading_its_whole_request_gives_its_run_back(
        make_executor: MakeExecutor, monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker dying with the rest of its request unwritten never started the run, even when
    it read all that its pipe held: the run goes back to the queue (within the requeue
    bound) and runs on the replacement."""
    ex = await make_executor(slots=1)
    pid = await _worker_pid(ex)
    payload = os.urandom(4 << 20)
    run = await _handed_to_stopped(ex, pid, "big", payload)
    monkeypatch.setattr(executor, "_unread", lambda conn: False)  # as if its pipe were read
    os.kill(pid, signal.SIGKILL)
    res = await asyncio.wait_for(run, 30)
    assert (res.ok, res.value) == (True, _digest(payload))


async def test_a_run_whose_request_is_still_being_written_times_out_at_its_deadline(
        make_executor: MakeExecutor) -> None:
    """The run's deadline counts from its hand-over, its request written or not: a worker
    that does not read it is killed then, and the run fails as timed out."""
    timer = FakeTimer()
    ex = await make_executor(slots=1, timer=timer)
    pid = await _worker_pid(ex)
    run = await _handed_to_stopped(ex, pid, "big", os.urandom(4 << 20), timeout_s=5.0)
    timer.advance(5.0)  # the deadline: SIGTERM (held: it is stopped)
    timer.advance(0.05)  # the kill's grace: SIGKILL
    res = await asyncio.wait_for(run, 30)
    assert (res.ok, res.exit_kind, res.error) == (False, ExitKind.TIMEOUT, "timed out after 5.0 s")


async def test_a_run_its_dying_worker_never_read_goes_to_the_next_worker(
        make_executor: MakeExecutor) -> None:
    """A worker whose last frame was a 'done' was handed the queued run, then died before
    reading it: that run failed as the worker's crash though it never started. The run's
    request still unread in the pipe, it goes back to the head of the queue and runs on the
    replacement."""
    ex = await make_executor(slots=1)
    pid = await _worker_pid(ex)
    first, second = await asyncio.wait_for(asyncio.gather(
        ex.run("a", T + "done_then_exit", "first"), ex.run("b", T + "describe", "X")), 30)
    assert (first.ok, first.value) == (True, "first")
    assert second.ok and second.value["pid"] != pid
    assert _gone(pid)


async def test_a_dead_workers_last_done_frame_does_not_free_it() -> None:
    """The order real processes seldom take, driven by hand: a worker's exit is seen before
    its last frame, a 'done', is read (the exit handler drains the pipe). The 'done' ends its
    run, but must not free the dead worker: the queued run would be handed to it (and fail
    as its crash, or go back to the queue). It stays queued for the replacement. Fakes: no
    process (a pid of None is signalled by no one), no reap; the pipes are real."""
    loop = asyncio.get_running_loop()
    ex = Executor(ExecutorConfig.local(slots=1), timer=FakeTimer())
    ex._loop, ex._timer = loop, ex._given_timer
    reaped: list[Any] = []

    async def reap(w: Any) -> None:
        reaped.append(w)

    ex._reap = reap  # type: ignore[method-assign]
    requests, tx = multiprocessing.Pipe(duplex=False)
    rx, frames = multiprocessing.Pipe(duplex=False)
    sentinel_r, sentinel_w = os.pipe()
    try:
        os.set_blocking(rx.fileno(), False)
        proc = types.SimpleNamespace(pid=None, sentinel=sentinel_r)
        w = executor._Worker(proc, tx, rx, loop.create_future(),  # type: ignore[arg-type]
                             loop.create_future(), ready=True)
        first, queued = (executor._Job(key, T + "echo", b"", 5.0, None, loop.create_future())
                         for key in ("first", "queued"))
        first.run_id, first.worker, w.job = 1, w, first
        ex._workers.add(w)
        ex._jobs.update(first=first, queued=queued)
        ex._queue.append(queued)
        done = pickle.dumps(("done", 1, True, '"its result"', None, None, "ok"))
        os.write(frames.fileno(), executor._FRAME.pack(len(done)) + done)

        ex._on_exit(w)  # the sentinel first, the 'done' still in the pipe
        await asyncio.gather(*ex._tasks)

        assert first.fut.result().value == "its result"
        assert queued.worker is None, "the queued run was handed to the dead worker"
        assert list(ex._queue) == [queued] and ex._idle == [] and w.job is None
        assert not executor._unread(tx) and reaped == [w]  # nothing sent to it; reaped
    finally:
        for conn in (requests, tx, rx, frames):
            conn.close()
        os.close(sentinel_r)
        os.close(sentinel_w)


async def test_a_run_whose_workers_each_die_before_reading_it_fails_after_two_requeues(
        make_executor: MakeExecutor, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run whose worker died before reading it went back to the queue with no bound: a
    worker that dies each time before it reads would fork and requeue for ever (review r,
    session 40). Here each death is taken for one before the read; after two requeues the
    run fails as the crash it is."""
    monkeypatch.setattr(executor, "_unread", lambda conn: True)
    ex = await make_executor(slots=1)
    res = await asyncio.wait_for(ex.run("a", T + "exit_now", 3), 30)
    assert (res.ok, res.exit_kind, res.error) == (False, "crash", "worker exited with code 3")
    assert (await asyncio.wait_for(ex.run("b", T + "echo", 5), 10)).value == 5


async def test_a_sigterm_that_lands_just_before_a_sleep_still_ends_the_worker(
        make_executor: MakeExecutor) -> None:
    """A SIGTERM delivered while the worker ran C code that does not check for signals,
    right before a sleep, had its Python handler (SystemExit) wait for the sleep's end: the
    worker outlived its SIGTERM (once in a full unit run; only SIGKILL after kill_grace_s
    ended it, and a test's fake timer held that back). The worker's watcher thread now sends
    the SIGTERM again to its main thread, which interrupts the sleep."""
    ex = await make_executor(slots=1)
    res = await asyncio.wait_for(ex.run("a", T + "sigterm_in_c", 100), 30)
    assert (res.ok, res.exit_kind, res.error) == (False, "crash", "worker exited with code 143")
    assert (await asyncio.wait_for(ex.run("b", T + "echo", 5), 10)).value == 5


async def test_a_task_that_took_the_signal_wake_up_fd_leaves_the_sigterm_resend_on(
        make_executor: MakeExecutor) -> None:
    """A task using an asyncio loop's signal handlers (adding one takes the signal wake-up fd,
    closing the loop leaves none) turned the watcher's re-sending of SIGTERM off for the rest
    of its worker's life: a later run's SIGTERM landing just before a sleep waited the sleep
    out. The worker's own fd is set again before each run."""
    ex = await make_executor(slots=1)
    assert (await asyncio.wait_for(ex.run("a", T + "drop_wakeup_fd", None), 10)).ok
    res = await asyncio.wait_for(ex.run("b", T + "sigterm_in_c", 100), 30)
    assert (res.ok, res.exit_kind, res.error) == (False, "crash", "worker exited with code 143")


async def test_the_watcher_reads_no_file_a_task_put_on_its_wake_up_pipes_number(
        make_executor: MakeExecutor) -> None:
    """A task that closes the worker's wake-up pipe (closerange, daemonising code) and opens
    another file on its number: the watcher thread went on reading that number, took the
    file's bytes for signal numbers (its 15 for a SIGTERM, which it sent on: the worker
    ended) and stole them from the task (review e, session 41, E10). It stops watching a
    number that names another file now; the worker runs on."""
    ex = await make_executor(slots=1)
    res = await asyncio.wait_for(ex.run("a", T + "own_the_wakeup_pipes_number", None), 20)
    assert (res.ok, res.error, res.value) == (True, None, [signal.SIGTERM])
    assert (await asyncio.wait_for(ex.run("b", T + "echo", 5), 10)).value == 5


async def test_a_worker_whose_request_pipes_number_names_another_file_ends(
        make_executor: MakeExecutor) -> None:
    """A task that closes the worker's request pipe and opens another file on its number:
    the worker read its next request from that file (here a pipe no one writes: the run
    handed to it waited for its timeout; E10). It ends instead, before reading: the run
    goes to a new worker."""
    ex = await make_executor(slots=1)
    await asyncio.wait_for(ex.run("a", T + "own_the_request_pipes_number", None), 20)
    res = await asyncio.wait_for(ex.run("b", T + "echo", 5, timeout_s=10), 30)
    assert (res.ok, res.error, res.value) == (True, None, 5)


async def test_a_run_whose_task_took_every_copy_of_the_request_pipe_goes_on_to_its_end(
        make_executor: MakeExecutor) -> None:
    """A task that closes even the watcher's copy of the request pipe (closerange) and opens
    files on those numbers: the watcher SIGKILLed the worker at its next wake-up, in the
    middle of the run (review h, H2: failed on every attempt). It stops watching instead
    (a hang-up on those numbers ends nothing); the run ends with its answer, and the worker
    ends after it (the next run goes to a new one). Its wake-ups here are the task's
    signals, not a periodic look."""
    ex = await make_executor(slots=1)
    res = await asyncio.wait_for(ex.run("a", T + "own_every_copy_of_the_request_pipe", None), 30)
    assert (res.ok, res.error, res.value) == (True, None, "worked on")
    res = await asyncio.wait_for(ex.run("b", T + "echo", 5, timeout_s=10), 30)
    assert (res.ok, res.error, res.value) == (True, None, 5)


class _Stop(Exception):
    """Ends `_watch` in test_the_watcher_sleeps_until_a_pipe_wakes_it."""


def test_the_watcher_sleeps_until_a_pipe_wakes_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker's watcher thread woke every second (its poll timed out after 1 s) to look
    whether its task had closed the request pipe's copy, which its next wake-up by a pipe
    finds all the same: one wake-up a second per idle worker, for nothing. Its poll has no
    timeout now. (Here on this process's pipes, the poll's timeouts recorded; the second
    poll ends the watcher.)"""
    timeouts: list[float | None] = []
    real_poll = executor.select.poll

    class Poll:
        def __init__(self) -> None:
            self._poll = real_poll()
            self.register, self.unregister = self._poll.register, self._poll.unregister

        def poll(self, timeout: float | None = None) -> list[tuple[int, int]]:
            timeouts.append(timeout)
            if len(timeouts) > 1:
                raise _Stop
            return self._poll.poll(timeout)

    monkeypatch.setattr(executor.select, "poll", Poll)
    requests, requests_w = os.pipe()
    wakeups, wakeup_w = os.pipe()
    try:
        os.write(wakeup_w, bytes([signal.SIGUSR1]))  # a signal's wake-up: the first poll
        with pytest.raises(_Stop):
            executor._watch(executor._Fd(requests), executor._Fd(wakeups), wakeup_w)
    finally:
        for fd in (requests, requests_w, wakeups, wakeup_w):
            os.close(fd)
    assert timeouts == [None, None]


async def test_signals_after_a_task_closed_the_wake_up_pipes_read_end_print_nothing(
        make_executor: MakeExecutor) -> None:
    """A task that closes the read end of the worker's signal wake-up pipe (closerange):
    each signal after it made the interpreter print "Exception ignored when trying to write
    to the signal wakeup fd" on the worker's stderr (the pipe had no reader: EPIPE; session
    42, helper b). The watcher opens a read end of its own again (and reads on: SIGTERM's
    re-sending still works); nothing is printed, and the worker runs on."""
    ex = await make_executor(slots=1)
    res = await asyncio.wait_for(ex.run("a", T + "close_the_wakeup_pipes_read_end", 3), 30)
    assert (res.ok, res.error, res.value) == (True, None, "")
    res = await asyncio.wait_for(ex.run("b", T + "sigterm_in_c", 100), 30)
    assert (res.ok, res.exit_kind, res.error) == (False, "crash", "worker exited with code 143")


async def test_a_worker_whose_task_closed_its_wake_up_fd_ends_after_the_run(
        make_executor: MakeExecutor) -> None:
    """A task that closes the worker's signal wake-up fd (the pipe's write end): the
    interpreter went on writing a byte per signal to that number, so a later run on the same
    worker whose file took the number found a byte of ours in it for each signal it took
    (review r1, session 43, M1: its output silently corrupted). The worker ends after such a
    run; the next run goes to a new worker and its file holds only what it wrote."""
    ex = await make_executor(slots=1)
    pid = await _worker_pid(ex)
    res = await asyncio.wait_for(ex.run("b", T + "close_the_wakeup_fd", None), 30)
    assert res.ok, res.error
    later = await asyncio.wait_for(
        ex.run("c", T + "a_file_on_that_number_takes_a_signal", res.value), 30)
    assert later.ok, later.error
    assert (later.value["pid"] != pid, later.value["holds"]) == (True, "")


async def _unkillable(make_executor: MakeExecutor, monkeypatch: pytest.MonkeyPatch,
                      ) -> tuple[Executor, int]:
    """An executor (one slot, stuck_after_s 0.2) whose worker's SIGKILL is held back (as if it
    were in the kernel's uninterruptible sleep), and that worker's pid."""
    ex = await make_executor(slots=1, stuck_after_s=0.2)
    pid = await _worker_pid(ex)
    signal_worker = executor._signal
    monkeypatch.setattr(executor, "_signal", lambda w, sig: None if (
        sig == signal.SIGKILL and w.proc.pid == pid) else signal_worker(w, sig))
    return ex, pid


async def _given_up(make_executor: MakeExecutor, monkeypatch: pytest.MonkeyPatch,
                    ) -> tuple[Executor, int, RunResult]:
    """`_unkillable`'s executor and pid, and that worker's run: 'a', timed out after 0.3 s."""
    ex, pid = await _unkillable(make_executor, monkeypatch)
    return ex, pid, await asyncio.wait_for(ex.run("a", T + "stubborn", 60, timeout_s=0.3), 20)


async def test_a_worker_that_outlives_its_sigkill_is_given_up_and_replaced(
        make_executor: MakeExecutor, monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker that SIGKILL does not end (in the kernel's uninterruptible sleep: a hung file
    system, a device; here its SIGKILL is held back) kept its run waiting for ever, and its
    slot. stuck_after_s after the SIGKILL, the run fails saying so and a new worker takes
    the slot; the old one is joined once it exits."""
    ex, pid, res = await _given_up(make_executor, monkeypatch)
    assert (res.ok, res.exit_kind) == (False, ExitKind.TIMEOUT)
    assert res.error == f"timed out after 0.3 s; its worker {pid} did not exit 0.2 s after SIGKILL"
    assert _running(pid)
    assert await asyncio.wait_for(_worker_pid(ex, "b"), 20) != pid
    os.kill(pid, signal.SIGKILL)
    assert await _ends(pid)


async def test_close_does_not_wait_for_a_worker_given_up(
        make_executor: MakeExecutor, monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker given up (it outlived its SIGKILL by stuck_after_s) held `close` for as long as
    it lived, maybe for ever: a peer with one worker in the kernel's uninterruptible sleep
    never finished stopping (review r, session 40). `close` waits for the others only."""
    ex, pid, res = await _given_up(make_executor, monkeypatch)
    assert res.exit_kind == ExitKind.TIMEOUT and _running(pid)
    assert await asyncio.wait_for(_worker_pid(ex, "b"), 20) != pid  # (its replacement's up)
    [stuck] = [w.proc for w in ex._workers if w.proc.pid == pid]
    try:
        await asyncio.wait_for(ex.close(), 20)
    finally:
        with contextlib.suppress(ProcessLookupError):  # (close's SIGTERM to its group may
            os.kill(pid, signal.SIGKILL)  # have ended it already: a real one would not)
    assert await _ends(pid)
    stuck.join(10)  # (ended: at once; what no one joins now, the fixture counts it)
    stuck.close()


async def test_close_does_not_wait_for_a_worker_given_up_while_it_closes(
        make_executor: MakeExecutor, monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker whose run is in the kernel's uninterruptible sleep when the peer stops: close's
    SIGTERM and SIGKILL do not end it, it is given up stuck_after_s later, but close went on
    waiting for its join, for ever (review e, session 41). Giving it up ends that wait."""
    ex, pid = await _unkillable(make_executor, monkeypatch)
    run = await _started(ex, "a", "stubborn", 60)
    [stuck] = [w.proc for w in ex._workers]
    try:
        await asyncio.wait_for(ex.close(), 20)  # (its pipes closed, the worker may end)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    res = await asyncio.wait_for(run, 10)
    assert (res.ok, res.exit_kind) == (False, ExitKind.CANCELLED)
    assert res.error is not None and res.error.endswith(
        f"; its worker {pid} did not exit 0.2 s after SIGKILL")
    assert await _ends(pid)
    stuck.join(10)
    stuck.close()


async def _slot_back(ex: Executor) -> None:
    """Return once a slot can run again (a worker given up that held it was reaped)."""
    for _ in range(500):
        if ex.slots:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("no slot came back")


def _no_sigkill(monkeypatch: pytest.MonkeyPatch) -> None:
    """No worker's SIGKILL arrives (they are given up alive); the test's own ends them
    (`_killed_given_up`)."""
    signal_worker = executor._signal
    monkeypatch.setattr(executor, "_signal",
                        lambda w, sig: None if sig == signal.SIGKILL else signal_worker(w, sig))


async def _killed_given_up(ex: Executor, pids: list[int]) -> None:
    """End the test's workers given up (`pids`: the executor's SIGKILL was held back) and
    return once the executor has reaped them, or after a bounded wait (not raising: the
    test's own error, if any, is the one to report). Closed before it heard their exit (a
    loaded machine: the forkserver reports it late), the executor left them "running" and
    their pipes open, and the fixture's fd check errored the test (session 46)."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    for _ in range(1000):
        if not ex.given_up_workers:
            return
        await asyncio.sleep(0.02)


async def test_workers_given_up_are_replaced_up_to_slots_of_them(
        make_executor: MakeExecutor, monkeypatch: pytest.MonkeyPatch) -> None:
    """On a hung file system each run touching it leaves one more worker given up, each one
    replaced: processes without bound, counted as ready (review e, session 41). Past `slots`
    given up alive, the slot stays empty (and not ready) until one of them exits."""
    ex = await make_executor(slots=1, stuck_after_s=0.2)
    _no_sigkill(monkeypatch)
    pids = []
    try:
        for key in "ab":
            pids.append(await _worker_pid(ex, f"pid-{key}"))
            res = await asyncio.wait_for(ex.run(key, T + "stubborn", 60, timeout_s=0.3), 20)
            assert res.error is not None and res.error.endswith("0.2 s after SIGKILL")
        assert (ex.given_up_workers, ex.ready_workers, ex.free_slots) == (2, 0, 0)
        assert not ex._tasks and len(ex._workers) == 2  # no third worker is being started
        os.kill(pids[0], signal.SIGKILL)  # one exits: its slot is taken again
        await _slot_back(ex)
        assert await asyncio.wait_for(_worker_pid(ex, "c"), 20) not in pids
        assert (ex.given_up_workers, ex.ready_workers, ex.free_slots) == (1, 1, 1)
    finally:
        await _killed_given_up(ex, pids)


async def test_runs_fail_at_once_while_workers_given_up_hold_every_slot(
        make_executor: MakeExecutor, monkeypatch: pytest.MonkeyPatch) -> None:
    """One slot, two workers given up (a hung file system): no worker was left and the runs
    queued, or handed over later, waited for ever (`_unreplaced`: session 42). They fail at
    once, saying so, and `slots` is 0 (the peer offers none) until one of them exits."""
    ex = await make_executor(slots=1, stuck_after_s=0.2)
    _no_sigkill(monkeypatch)
    pids = [await _worker_pid(ex, "pid-a")]
    try:
        await asyncio.wait_for(ex.run("a", T + "stubborn", 60, timeout_s=0.3), 20)
        pids.append(await asyncio.wait_for(_worker_pid(ex, "pid-b"), 20))
        b = await _started(ex, "b", "stubborn", 60, timeout_s=0.3)
        queued = asyncio.create_task(ex.run("c", T + "echo", 1))
        await asyncio.wait_for(b, 20)
        no_worker = ("no worker can run it: the 2 workers given up (they outlived their "
                     "SIGKILL by 0.2 s) hold every slot")
        for res in (await asyncio.wait_for(queued, 20), await ex.run("d", T + "echo", 2)):
            assert (res.ok, res.exit_kind, res.error) == (False, ExitKind.CRASH, no_worker)
            assert res.no_slot  # (it never started: not counted against its attempts)
        assert (ex.slots, ex.free_slots, ex.queued, ex.given_up_workers) == (0, 0, 0, 2)
        os.kill(pids[0], signal.SIGKILL)  # one exits: its slot takes runs again
        await _slot_back(ex)
        assert (ex.slots, ex.given_up_workers) == (1, 1)
        assert (await asyncio.wait_for(ex.run("e", T + "echo", 3), 20)).value == 3
    finally:
        await _killed_given_up(ex, pids)


async def test_a_close_reaps_the_workers_given_up_that_exited_unheard(
        make_executor: MakeExecutor, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """Every worker given up (one slot, two of them), then both exit, and `close` runs before
    the loop has heard it (no turn since; on a loaded machine the forkserver reports exits
    late): with nothing else to wait for, close left both "running", their pipes open (the
    fixture's fd check fails). Now it reaps them (session 46)."""
    ex = await make_executor(slots=1, stuck_after_s=0.2)
    _no_sigkill(monkeypatch)
    pids = []
    try:
        for key in "ab":
            pids.append(await _worker_pid(ex, f"pid-{key}"))
            await asyncio.wait_for(ex.run(key, T + "stubborn", 60, timeout_s=0.3), 20)
        assert (ex.slots, ex.given_up_workers) == (0, 2) and not ex._tasks
        sentinels = [w.proc.sentinel for w in ex._workers]
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        for _ in range(2):  # (blocks the loop: their exit is not heard before close)
            sentinels = [s for s in sentinels if s not in multiprocessing.connection.wait(
                sentinels, 20)]
        assert sentinels == []
        await ex.close()
        assert ex.given_up_workers == 0
        assert not [r for r in caplog.records if "left running" in r.getMessage()]
    finally:
        await _killed_given_up(ex, pids)


EXIT_SCRIPT = """
import asyncio, os, signal, sys
from peer.jobs import executor
from peer.jobs.executor import Executor, ExecutorConfig

T = "tests.unit.executor_targets:"

async def main() -> None:
    ex = Executor(ExecutorConfig(slots=1, stuck_after_s=0.2, kill_grace_s=0.05))
    await ex.start()
    pid = (await ex.run("pid", T + "describe", "X")).value["pid"]
    open(sys.argv[1], "w").write(str(pid))
    signal_worker = executor._signal  # its SIGKILL held back: in the kernel, as it were
    executor._signal = lambda w, sig: None if (
        sig == signal.SIGKILL and w.proc.pid == pid) else signal_worker(w, sig)
    started = asyncio.Event()
    run = asyncio.create_task(ex.run("a", T + "stubborn", 3600, timeout_s=0.3,
                                     on_message=lambda k, a: started.set()))
    await started.wait()
    os.kill(pid, signal.SIGSTOP)  # it runs nothing more (nor sees its pipes closed)
    res = await run
    assert res.error.endswith("did not exit 0.2 s after SIGKILL"), res.error
    await ex.close()
    print("closed", flush=True)

if __name__ == "__main__":
    asyncio.run(main())
"""


def test_a_process_whose_worker_was_given_up_still_exits(tmp_path: Path) -> None:
    """`close` returned, but the worker given up (it ignores SIGTERM, SIGKILL does not end it)
    was still among multiprocessing's children, which its exit handler joins with no timeout:
    a peer that stopped never exited (review e, session 41). Left out of them by close, it is
    left running."""
    (tmp_path / "main.py").write_text(EXIT_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    pid_file, out = tmp_path / "pid", tmp_path / "out"
    with out.open("w") as sink:  # (not a pipe: the worker left running would hold it open)
        proc = subprocess.Popen([sys.executable, str(tmp_path / "main.py"), str(pid_file)],
                                env=env, stdout=sink, stderr=subprocess.STDOUT)
    try:
        code = proc.wait(120)  # a generous bound: it exits about a second after it started
    except subprocess.TimeoutExpired:
        code = None
    finally:
        proc.kill()
        proc.wait()
        with contextlib.suppress(FileNotFoundError, ValueError, ProcessLookupError):
            os.kill(int(pid_file.read_text()), signal.SIGKILL)
    log = out.read_text()
    assert code == 0, log[-2000:]
    assert "closed" in log and "given up, is left running" in log


# -- worker starts that fail (session 50) ------------------------------------------------------
# The forkserver cannot fork (a lab machine at its process or memory limit: the fork raises,
# the forkserver dies, and the worker's start reads "unexpected EOF"). Tried again with a
# growing pause on the executor's timer; after _FAILED_STARTS_NO_SLOT in a row with no worker
# ready, the executor holds no run (each fails at once as `no_slot`, not counted against its
# task) and offers no slot; the first worker that starts brings its slots back.

async def _until_true(cond: Callable[[], bool], what: str) -> None:
    """Wait (bounded) for the executor's helper thread and loop to get there."""
    for _ in range(1000):
        if cond():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(what)


async def test_workers_that_cannot_start_hold_no_run_and_the_executor_recovers(
        make_executor: MakeExecutor, monkeypatch: pytest.MonkeyPatch) -> None:
    can_fork: list[bool] = []
    start_process = Executor._start_process

    def forkserver_at_its_limit(self: Executor) -> Any:
        if not can_fork:
            raise EOFError("unexpected EOF")  # what a start reads from a forkserver that died
        return start_process(self)

    monkeypatch.setattr(Executor, "_start_process", forkserver_at_its_limit)
    timer = FakeTimer()
    ex = await make_executor(slots=1, timer=timer, wait=False)
    await _until_true(lambda: timer.pending() == [1.0], "a failed start is not tried in 1 s")
    held = asyncio.create_task(ex.run("held", T + "echo", 1))
    await asyncio.sleep(0)
    assert (ex.failed_starts, ex.slots, ex.queued) == (1, 1, 1)  # queued: a start may follow
    timer.advance(1.0)
    await _until_true(lambda: timer.pending() == [3.0], "no second try 2 s after the first")
    assert not held.done() and ex.slots == 1
    timer.advance(2.0)
    res = await asyncio.wait_for(held, 10)  # the third failure: nothing is held any more
    assert (res.ok, res.no_slot, ex.failed_starts, ex.slots, ex.free_slots) == (
        False, True, 3, 0, 0)
    assert "3 worker starts in a row failed (the last: EOFError: unexpected EOF)" in res.error
    new = await ex.run("new", T + "echo", 2)  # fails at once, never queued
    assert new.no_slot and ex.queued == 0
    pauses = []
    for _ in range(5):  # 4, 8, 16, then the cap, twice
        (due,) = timer.pending()
        pauses.append(due - timer.now)
        failed = ex.failed_starts
        timer.advance(due - timer.now)
        await _until_true(lambda n=failed + 1: ex.failed_starts == n and len(timer.pending()) == 1,
                     "a failed start is not tried again")
    assert pauses == [4.0, 8.0, 16.0, 30.0, 30.0]
    can_fork.append(True)  # the load is gone
    (due,) = timer.pending()
    timer.advance(due - timer.now)
    await _until_true(lambda: ex.ready_workers == 1, "no worker started once it could")
    assert (ex.failed_starts, ex.slots, ex.free_slots) == (0, 1, 1)
    assert (await asyncio.wait_for(ex.run("after", T + "echo", 3), 30)).value == 3


FORKSERVER_DEATH_PROBE = """
import asyncio, json, os, signal, sys
from multiprocessing import forkserver
from peer.jobs.executor import Executor, ExecutorConfig

T = "tests.unit.executor_targets:"

async def main() -> None:
    cue = sys.argv[1]
    async with Executor(ExecutorConfig(slots=1, tmpfs_check_s=None)) as ex:
        started = asyncio.Event()
        run = asyncio.create_task(ex.run("a", T + "fill_until", [1, cue],
                                         on_message=lambda kind, args: started.set()))
        await asyncio.wait_for(started.wait(), 30)
        (worker,) = ex._workers
        os.kill(forkserver._forkserver._forkserver_pid, signal.SIGKILL)
        for _ in range(3000):  # until the executor heard of it (bounded)
            if run.done() or getattr(worker, "orphaned", False):
                break
            await asyncio.sleep(0.01)
        open(cue, "w").close()
        first = await asyncio.wait_for(run, 30)
        second = await asyncio.wait_for(ex.run("b", T + "echo", 2), 30)
        print(json.dumps([first.exit_kind, first.error, second.exit_kind, second.value]))

if __name__ == "__main__":
    asyncio.run(main())
"""


def test_a_forkserver_that_dies_leaves_the_runs_of_live_workers_alone(tmp_path: Path) -> None:
    """The forkserver dies when a fork fails (a machine at its process or memory limit:
    CPython 3.11 re-raises in its loop). Every worker's sentinel is a pipe from it, so each
    read as an exit: the running worker was SIGKILLed and its run failed as "worker exited
    with code 255" (session 50). It runs on now, watched on its pidfd, and takes the next
    run; a fresh process (the forkserver is one per process)."""
    script = tmp_path / "probe.py"
    script.write_text(FORKSERVER_DEATH_PROBE)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    out = subprocess.run([sys.executable, str(script), str(tmp_path / "cue")], env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == ["ok", None, "ok", 2]
    assert "its forkserver is gone; it runs on" in out.stderr


ORPHAN_DEATH_PROBE = """
import asyncio, json, os, signal, sys
from multiprocessing import forkserver
from peer.jobs.executor import Executor, ExecutorConfig

T = "tests.unit.executor_targets:"

async def main() -> None:
    cue = sys.argv[1]
    cfg = ExecutorConfig(slots=1, tmpfs_check_s=None, memory_limit_mb=4096)
    async with Executor(cfg) as ex:
        started = asyncio.Event()
        run = asyncio.create_task(ex.run("a", T + "fill_until", [1, cue],
                                         on_message=lambda kind, args: started.set()))
        await asyncio.wait_for(started.wait(), 30)
        (worker,) = ex._workers
        os.kill(forkserver._forkserver._forkserver_pid, signal.SIGKILL)
        for _ in range(3000):  # until the executor heard of it (bounded)
            if run.done() or getattr(worker, "orphaned", False):
                break
            await asyncio.sleep(0.01)
        os.kill(worker.proc.pid, signal.SIGKILL)  # as the OOM killer would, mid-run
        first = await asyncio.wait_for(run, 30)
        print(json.dumps([first.exit_kind, first.error]))

if __name__ == "__main__":
    asyncio.run(main())
"""


def test_an_orphaned_worker_that_dies_mid_run_is_said_to_have_an_unknown_status(
        tmp_path: Path) -> None:
    """A worker whose forkserver died runs on (watched on its pidfd); if it then dies
    mid-run (the OOM killer, its memory limit), its exit status is not recoverable: only
    its parent, the dead forkserver, could wait for it. Its run failed as "worker exited
    with code 255" (a code CPython makes up at the forkserver pipe's EOF; review RR-4 of
    session 50); the error says what is known now, with the memory limit's hint."""
    script = tmp_path / "probe.py"
    script.write_text(ORPHAN_DEATH_PROBE)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    out = subprocess.run([sys.executable, str(script), str(tmp_path / "cue")], env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    kind, error = json.loads(out.stdout.strip().splitlines()[-1])
    assert kind == "crash"
    assert error == ("worker died after its forkserver had died (a machine at its process or "
                     "memory limit?); its exit status is unknown (memory_limit_mb=4096 may be "
                     "too low)")


def test_an_orphaned_workers_group_is_not_signalled_once_its_pid_is_anothers() -> None:
    """An orphaned worker is reaped by init as it exits, so its PID (its group's id) may be
    reused before `_on_exit` SIGKILLs its group (review RR-4 of session 50): the group is
    signalled while the worker exists (a zombie too) or nothing has its PID, not once
    another process has it. Real processes; the reuse is played by pairing a reaped
    process's pidfd with a live process's PID."""
    cmd = [sys.executable, "-c", "import time; time.sleep(60)"]
    gone = subprocess.Popen(cmd)
    other = subprocess.Popen(cmd)
    fd = os.pidfd_open(gone.pid)
    try:
        assert executor._group_may_be_its(gone.pid, fd)  # alive
        gone.kill()
        os.waitid(os.P_PIDFD, fd, os.WEXITED | os.WNOWAIT)  # a zombie: still its own
        assert executor._group_may_be_its(gone.pid, fd)
        gone.wait(10)  # reaped: its PID is nobody's (until reused)
        assert executor._group_may_be_its(gone.pid, fd) == (not scratch.alive(gone.pid))
        assert not executor._group_may_be_its(other.pid, fd)  # the PID another's
    finally:
        os.close(fd)
        other.kill()
        other.wait(10)
        gone.kill()
        gone.wait(10)


async def test_a_runs_request_goes_to_its_worker_in_one_write(
        make_executor: MakeExecutor, monkeypatch: pytest.MonkeyPatch) -> None:
    """(Issue 12, session 50 helper e.) A request's four parts (two frames: a length, then
    a pickle) go to the worker's pipe in one writev, not a write each (each woke the
    worker, blocked on its read, again); the run's result is the same."""
    ex = await make_executor(slots=1)
    await _worker_pid(ex)  # (started, idle)
    fds = {w.tx.fileno() for w in ex._workers}
    calls: list[str] = []
    write, writev = os.write, os.writev

    def counted_write(fd: int, data: Any) -> int:
        if fd in fds:
            calls.append("write")
        return write(fd, data)

    def counted_writev(fd: int, parts: Any) -> int:
        if fd in fds:
            calls.append("writev")
        return writev(fd, parts)

    monkeypatch.setattr(os, "write", counted_write)
    monkeypatch.setattr(os, "writev", counted_writev)
    res = await asyncio.wait_for(ex.run("one", T + "echo", 7), 30)
    assert (res.ok, res.value) == (True, 7)
    assert calls == ["writev"]


LONG_TEMP_PROBE = """
import asyncio, json, multiprocessing.util, sys
from peer.jobs.executor import Executor, ExecutorConfig

async def main() -> None:
    async with Executor(ExecutorConfig(slots=1, tmpfs_check_s=None)) as ex:
        res = await asyncio.wait_for(ex.run("a", "tests.unit.executor_targets:echo", 7), 60)
        print(json.dumps([res.exit_kind, res.value, multiprocessing.util.get_temp_dir()]))

if __name__ == "__main__":
    asyncio.run(main())
"""


def test_workers_start_where_the_temp_dir_is_too_long_for_their_socket(tmp_path: Path) -> None:
    """A peer's TMPDIR is under its data dir; one longer than ~75 bytes put the forkserver's
    socket past AF_UNIX's 107 and every worker start failed ("AF_UNIX path too long": a
    data dir of ~72 bytes or more could run nothing; session 50, helper a). The workers'
    socket directory is now made in a short temp dir; the tasks' TMPDIR stays."""
    long_tmp = tmp_path / ("t" * 100)
    long_tmp.mkdir()
    script = tmp_path / "probe.py"
    script.write_text(LONG_TEMP_PROBE)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2]), "TMPDIR": str(long_tmp)}
    out = subprocess.run([sys.executable, str(script)], env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    kind, value, socket_dir = json.loads(out.stdout.strip().splitlines()[-1])
    assert (kind, value) == ("ok", 7)
    assert not socket_dir.startswith(str(long_tmp)) and len(socket_dir) < 75
