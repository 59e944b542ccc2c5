"""Executor: real worker processes; every test closes its pool and checks nothing leaks."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from peer.errors import ConfigError
from peer.jobs.executor import Executor, ExecutorConfig, RunResult

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
    made: list[Executor] = []

    async def make(slots: int = 2, **kw: Any) -> Executor:
        ex = Executor(ExecutorConfig(slots=slots, default_timeout_s=20.0, kill_grace_s=0.05, **kw))
        made.append(ex)
        await ex.start()
        return ex

    yield make
    for ex in made:
        await ex.close()
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
    except FileNotFoundError:
        return False


async def _started(ex: Executor, key: str, target: str, payload: Any) -> asyncio.Task[RunResult]:
    """Start a run whose target logs "started" first; return once it has."""
    seen = asyncio.Event()
    task = asyncio.create_task(ex.run(key, T + target, payload, on_message=lambda k, a: seen.set()))
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
        ({"slots": 1, "preload": ("",)}, "preload"),
        ({"slots": 1, "env": {"A": 1}}, "env"),
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


async def test_timeout_kills_within_bound(make_executor: MakeExecutor) -> None:
    ex = await make_executor(slots=1)
    t0 = time.monotonic()
    res = await ex.run("a", T + "sleep", 30, timeout_s=0.3)
    elapsed = time.monotonic() - t0
    assert (res.exit_kind, res.error) == ("timeout", "timed out after 0.3 s")
    assert 0.3 <= elapsed < 0.8
    assert (await ex.run("b", T + "echo", 2)).value == 2


async def test_cancel_running_kills_within_one_second(make_executor: MakeExecutor) -> None:
    ex = await make_executor(slots=1)
    task = await _started(ex, "a", "sleep", 30)
    assert ex.free_slots == 0
    t0 = time.monotonic()
    assert ex.cancel("a")
    res = await task
    assert time.monotonic() - t0 < 1.5
    assert (res.ok, res.exit_kind, res.error) == (False, "cancelled", "cancelled")
    assert not ex.cancel("a")
    assert (await ex.run("b", T + "echo", 3)).value == 3


async def test_cancel_escalates_to_sigkill(make_executor: MakeExecutor) -> None:
    ex = await make_executor(slots=1)
    task = await _started(ex, "a", "stubborn", 30)
    t0 = time.monotonic()
    ex.cancel("a")
    res = await task
    assert res.exit_kind == "cancelled" and time.monotonic() - t0 < 1.5


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


async def test_worker_environment(make_executor: MakeExecutor) -> None:
    ex = await make_executor(slots=1, env={"BANZAI_TEST_X": "42"}, preload=("colorsys",))
    info = (await ex.run("a", T + "describe", "BANZAI_TEST_X")).value
    assert info["env"] == "42" and info["sigint_ignored"] and info["preloaded"]


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


async def test_thousand_trivial_runs_are_fast(make_executor: MakeExecutor) -> None:
    ex = await make_executor(slots=2)
    t0 = time.perf_counter()
    results = await asyncio.gather(*(ex.run(f"k{i}", T + "echo", i) for i in range(1000)))
    elapsed = time.perf_counter() - t0
    assert [r.value for r in results] == list(range(1000))
    assert elapsed < 2.0, f"1000 runs took {elapsed:.2f} s"


async def test_loop_stays_responsive(make_executor: MakeExecutor) -> None:
    ex = await make_executor(slots=2)
    lag, done = 0.0, False

    async def ticker() -> None:
        nonlocal lag
        while not done:
            t0 = time.monotonic()
            await asyncio.sleep(0.005)
            lag = max(lag, time.monotonic() - t0 - 0.005)

    tick = asyncio.create_task(ticker())
    size = 4 << 20
    got: list[tuple[str, tuple[Any, ...]]] = []
    results = await asyncio.gather(
        ex.run("crash", T + "exit_now", 3),
        ex.run("big", T + "big", size, on_message=lambda k, a: got.append((k, a))),
        ex.run("slow", T + "sleep", 5, timeout_s=0.2),
        ex.run("after", T + "echo", 1),
    )
    done = True
    await tick
    assert [r.exit_kind for r in results] == ["crash", "ok", "timeout", "ok"]
    assert len(results[1].value) == size and got == [("log", ("l" * size,))]
    assert lag < 0.1, f"event loop blocked for {lag:.3f} s"


PARENT = """
import asyncio, pathlib, sys
from peer.jobs.executor import Executor, ExecutorConfig

async def main() -> None:
    ex = Executor(ExecutorConfig(slots=1))
    await ex.start()
    res = await ex.run("pid", "tests.unit.executor_targets:describe", "X")
    pathlib.Path(sys.argv[1]).write_text(str(res.value["pid"]))
    await ex.run("sleep", "tests.unit.executor_targets:sleep", 60)

if __name__ == "__main__":
    asyncio.run(main())
"""


async def test_workers_die_with_the_parent(tmp_path: Path) -> None:
    (tmp_path / "parent.py").write_text(PARENT)
    out = tmp_path / "pid"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(tmp_path / "parent.py"), str(out), env=env
    )
    try:
        for _ in range(500):
            if out.exists() and out.read_text():
                break
            await asyncio.sleep(0.02)
        pid = int(out.read_text())
        assert _running(pid)
    finally:
        proc.kill()
        await proc.wait()
    for _ in range(100):
        if not _running(pid):
            break
        await asyncio.sleep(0.02)
    assert not _running(pid)
