"""Warm workers: task warm-ups run once, in the executor's forkserver, and workers inherit them."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from tasks import registry

ROOT = Path(__file__).parents[2]


@pytest.fixture
def fresh_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """An empty catalog and warm-up record for this test only."""
    monkeypatch.setattr(registry, "_REGISTRY", {})
    monkeypatch.setattr(registry, "_warmed", {})


def _register(name: str, warm: registry.Warm | None) -> None:
    registry.task(name, needs_input=False, warm=warm)(lambda ctx, inp, out: None)


@pytest.mark.usefixtures("fresh_registry")
def test_a_shared_hook_runs_once_and_only_once_per_process() -> None:
    calls: list[str] = []
    shared = lambda: calls.append("shared")  # noqa: E731
    _register("A", shared)
    _register("B", shared)
    _register("C", lambda: calls.append("c"))
    _register("COLD", None)
    assert registry.warm_up() == []
    assert sorted(calls) == ["c", "shared"]
    assert registry.warmed() == {"A": os.getpid(), "B": os.getpid(), "C": os.getpid()}
    assert registry.warm_up() == [] and len(calls) == 2  # already warm: nothing reruns


@pytest.mark.usefixtures("fresh_registry")
def test_a_failing_hook_is_reported_not_raised_and_retried() -> None:
    attempts: list[int] = []

    def flaky() -> None:
        attempts.append(1)
        if len(attempts) == 1:
            raise ImportError("no librosa here")

    _register("FLAKY", flaky)
    _register("OK", lambda: None)
    assert registry.warm_up() == ["warm-up of FLAKY failed: ImportError: no librosa here"]
    assert set(registry.warmed()) == {"OK"}
    assert registry.warm_up() == [] and set(registry.warmed()) == {"FLAKY", "OK"}


def test_extract_mfcc_declares_its_warm_up() -> None:
    from tasks import audio

    assert registry.load()["EXTRACT_MFCC"].warm is audio.warm_mfcc


def test_learn_declares_its_warm_up() -> None:
    from tasks import audio

    assert registry.load()["LEARN"].warm is audio.warm_learn


PROBE = """
import asyncio, json, sys
from peer.jobs.executor import Executor, ExecutorConfig

async def main() -> None:
    preload = ("tasks.audio", "tests.unit.warm_targets", *sys.argv[1:])
    async with Executor(ExecutorConfig(slots=2, preload=preload)) as ex:
        runs = [ex.run(f"p{i}", "tests.unit.warm_targets:probe", None) for i in range(2)]
        print(json.dumps([r.value for r in await asyncio.gather(*runs)]))

if __name__ == "__main__":
    asyncio.run(main())
"""


async def _probe(tmp_path: Path, *extra_preload: str) -> list[dict[str, Any]]:
    """Each worker's state on its first run, from a fresh process (hence a fresh forkserver)."""
    (tmp_path / "probe.py").write_text(PROBE)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(tmp_path / "probe.py"), *extra_preload, env=env,
        stdout=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate()
    assert proc.returncode == 0
    states: list[dict[str, Any]] = json.loads(out)
    return states


async def test_workers_fork_warm_from_a_forkserver_that_ran_the_warm_ups(tmp_path: Path) -> None:
    states = await _probe(tmp_path, "tasks.warmup")
    assert len({s["pid"] for s in states}) == 2  # two workers, each on its first run
    for s in states:
        assert set(s["warmed"]) == {"EXTRACT_MFCC", "LEARN", "T_WARM_PROBE"}
        warm_pid = s["warmed"]["EXTRACT_MFCC"]
        assert warm_pid == s["warmed"]["T_WARM_PROBE"] != s["pid"]  # run once, by the parent
        assert s["librosa"] and s["librosa_feature"]
        assert s["sklearn_mixture"]  # LEARN's: scikit-learn's GaussianMixture
        assert s["librosa_ufunc_loops"] > 0  # numba's eagerly compiled ufuncs
        assert s["jit_signatures"] == ["(int64,)"]  # a lazily jitted function, compiled
    assert states[0]["warmed"] == states[1]["warmed"]


async def test_without_the_warm_up_workers_start_cold(tmp_path: Path) -> None:
    for s in await _probe(tmp_path):
        assert s["warmed"] == {}
        assert not s["librosa"] and s["librosa_ufunc_loops"] == 0
        assert not s["sklearn_mixture"]
        assert s["jit_signatures"] == []
