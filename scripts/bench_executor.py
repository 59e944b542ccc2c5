#!/usr/bin/env python3
"""Executor timings (peer/jobs/executor.py) that the unit tests no longer assert.

    .venv/bin/python scripts/bench_executor.py [-n 1000] [--repeat 3] [--write docs/benchmarks.md]

  throughput   n trivial runs (echo) on 2 slots, submitted at once: runs/s, median of --repeat
  loop lag     the longest stall of a 5 ms ticker on the event loop while a crash, a 4 MiB
               message and result, a 0.2 s timeout and a plain run happen at the same time
  cancel       cancel() -> result, for a sleeping run, a run that ignores SIGTERM (ended by
               SIGKILL after kill_grace_s) and a run whose grandchild must die too (until the
               grandchild is gone)
  timeout      result time minus timeout_s, for a 0.3 s timeout
The targets are those of the unit tests (tests/unit/executor_targets.py).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from bench_pipeline import write_section  # noqa: E402
from scriptlib import machine  # noqa: E402

from peer.jobs.executor import Executor, ExecutorConfig  # noqa: E402

SECTION = "## Executor: throughput, loop lag, cancel and timeout (issue 9)"
T = "tests.unit.executor_targets:"


async def throughput(n: int, repeat: int) -> dict[str, float]:
    walls = []
    async with Executor(ExecutorConfig(slots=2)) as ex:
        await ex.run("warm", T + "echo", 0)
        for r in range(repeat):
            t0 = time.perf_counter()
            results = await asyncio.gather(*(ex.run(f"{r}/{i}", T + "echo", i) for i in range(n)))
            walls.append(time.perf_counter() - t0)
            assert [x.value for x in results] == list(range(n))
    wall = statistics.median(walls)
    return {"wall_s": wall, "runs_per_s": n / wall, "us_per_run": wall / n * 1e6}


async def loop_lag() -> float:
    lag, done = 0.0, False

    async def ticker() -> None:
        nonlocal lag
        while not done:
            t0 = time.monotonic()
            await asyncio.sleep(0.005)
            lag = max(lag, time.monotonic() - t0 - 0.005)

    async with Executor(ExecutorConfig(slots=2)) as ex:
        tick = asyncio.create_task(ticker())
        results = await asyncio.gather(
            ex.run("crash", T + "exit_now", 3),
            ex.run("big", T + "big", 4 << 20),
            ex.run("slow", T + "sleep", 5, timeout_s=0.2),
            ex.run("after", T + "echo", 1),
        )
        done = True
        await tick
    assert [r.exit_kind for r in results] == ["crash", "ok", "timeout", "ok"]
    return lag


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


async def _cancel_one(ex: Executor, target: str, payload: Any, pid_file: Path | None) -> float:
    started = asyncio.Event()
    task = asyncio.create_task(ex.run("c", T + target, payload,
                                      on_message=lambda k, a: started.set()))
    await started.wait()
    grandchild = int(pid_file.read_text()) if pid_file is not None else None
    t0 = time.perf_counter()
    ex.cancel("c")
    res = await task
    assert res.exit_kind == "cancelled"
    while grandchild is not None and _running(grandchild):
        await asyncio.sleep(0.001)
    return time.perf_counter() - t0


async def cancel_and_timeout(repeat: int) -> dict[str, float]:
    out: dict[str, list[float]] = {"sleep": [], "stubborn": [], "family": [], "timeout": []}
    with tempfile.TemporaryDirectory() as tmp:
        pid_file = Path(tmp) / "grandchild"
        async with Executor(ExecutorConfig(slots=1)) as ex:
            for _ in range(repeat):
                out["sleep"].append(await _cancel_one(ex, "sleep", 30, None))
                out["stubborn"].append(await _cancel_one(ex, "stubborn", 30, None))
                out["family"].append(await _cancel_one(ex, "family", str(pid_file), pid_file))
                await ex.run("w", T + "echo", 0)  # the worker replaced after the cancel is up
                t0 = time.perf_counter()
                res = await ex.run("t", T + "sleep", 30, timeout_s=0.3)
                assert res.exit_kind == "timeout"
                out["timeout"].append(time.perf_counter() - t0 - 0.3)
    return {k: statistics.median(v) for k, v in out.items()}


def markdown(n: int, repeat: int, tp: dict[str, float], lag: float,
             ct: dict[str, float]) -> str:
    grace = ExecutorConfig(slots=1).kill_grace_s
    return "\n".join([
        SECTION,
        "",
        f"`.venv/bin/python scripts/bench_executor.py -n {n} --repeat {repeat}`; {machine()}.",
        "",
        "| measure | value |",
        "| --- | --- |",
        f"| {n} trivial runs on 2 slots (median of {repeat}) | {tp['wall_s']:.3f} s = "
        f"{tp['runs_per_s']:.0f} runs/s ({tp['us_per_run']:.0f} µs a run) |",
        f"| longest event-loop stall, crash + 4 MiB + timeout + run at once | "
        f"{lag * 1000:.1f} ms |",
        f"| cancel -> result, sleeping run | {ct['sleep'] * 1000:.1f} ms |",
        f"| cancel -> result, run ignoring SIGTERM (kill_grace_s={grace}) | "
        f"{ct['stubborn'] * 1000:.1f} ms |",
        f"| cancel -> grandchild gone | {ct['family'] * 1000:.1f} ms |",
        f"| timeout overshoot (0.3 s timeout) | {ct['timeout'] * 1000:.1f} ms |",
        "",
    ])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=1000, help="trivial runs per throughput round")
    ap.add_argument("--repeat", type=int, default=3, help="rounds; medians are reported")
    ap.add_argument("--write", type=Path, help="replace this script's section in this file")
    a = ap.parse_args(argv)
    tp = asyncio.run(throughput(a.n, a.repeat))
    lag = asyncio.run(loop_lag())
    ct = asyncio.run(cancel_and_timeout(a.repeat))
    text = markdown(a.n, a.repeat, tp, lag, ct)
    print(text)
    if a.write:
        write_section(a.write, SECTION, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
