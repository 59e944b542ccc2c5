#!/usr/bin/env python3
"""The event loop while an executor worker floods its pipe (peer/jobs/executor.py, session 40).

    PYTHONPATH=$PWD .venv/bin/python scripts/bench_executor_flood.py [--seconds 2] [--repeat 3]
    PYTHONPATH=$PWD .venv/bin/python scripts/bench_executor_flood.py --requests 1,4,16

  flood     a worker writes tiny log frames (~40 bytes) without pause for --seconds: the
            longest and the 99th-percentile gap of a 1 ms ticker on the loop meanwhile, the
            frames handled a second, and how long after the flood's end its result came
  big       a run logging and returning 16 MiB each (~32 MiB of frames): its time and the
            longest ticker gap (median of --repeat)
  trivial   1,000 echo runs on 2 slots submitted at once: runs a second (median of --repeat)
  requests  (only these, with --requests) runs whose payload is N MiB, for each N given: the
            run's time and the longest ticker gap (median of --repeat; session 41)
The targets are the unit tests' (tests/unit/executor_targets.py). Run with PYTHONPATH at the
tree measured: the workers import `peer` from there too.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import bench_executor  # noqa: E402  (throughput: the trivial row)

from peer.jobs.executor import Executor, ExecutorConfig  # noqa: E402

T = "tests.unit.executor_targets:"
TICK_S = 0.001


async def _ticked(work: Callable[[], Awaitable[Any]]) -> tuple[Any, list[float]]:
    """`work()`'s result and the gaps (beyond TICK_S) of a 1 ms ticker while it ran."""
    gaps: list[float] = []
    done = False

    async def ticker() -> None:
        while not done:
            t0 = time.monotonic()
            await asyncio.sleep(TICK_S)
            gaps.append(max(0.0, time.monotonic() - t0 - TICK_S))

    tick = asyncio.create_task(ticker())
    await asyncio.sleep(0)  # the ticker runs before the work starts
    try:
        return await work(), gaps
    finally:
        done = True
        await tick


async def flood(seconds: float) -> dict[str, float]:
    got = 0

    def count(kind: str, args: tuple[Any, ...]) -> None:
        nonlocal got
        got += 1

    async with Executor(ExecutorConfig(slots=1)) as ex:
        await ex.run("warm", T + "echo", 0)
        t0 = time.monotonic()
        res, gaps = await _ticked(lambda: ex.run("flood", T + "flood_for", seconds,
                                                 on_message=count))
        wall = time.monotonic() - t0
    assert res.ok and res.value == got, (res, got)
    gaps.sort()
    return {"max_ms": gaps[-1] * 1e3, "p99_ms": gaps[int(len(gaps) * 0.99)] * 1e3,
            "frames_per_s": got / wall, "tail_s": wall - seconds, "frames": got}


async def big(repeat: int) -> dict[str, float]:
    walls, stalls = [], []
    async with Executor(ExecutorConfig(slots=1)) as ex:
        await ex.run("warm", T + "echo", 0)
        for r in range(repeat):
            t0 = time.monotonic()
            res, gaps = await _ticked(lambda key=f"big{r}": ex.run(key, T + "big", 16 << 20))
            walls.append(time.monotonic() - t0)
            stalls.append(max(gaps, default=0.0))
            assert res.ok and len(res.value) == 16 << 20
    return {"wall_s": statistics.median(walls), "max_ms": statistics.median(stalls) * 1e3}


async def requests(mib: int, repeat: int) -> dict[str, float]:
    walls, stalls = [], []
    payload = "x" * (mib << 20)  # (describe looks it up in the environment: found nowhere)
    async with Executor(ExecutorConfig(slots=1)) as ex:
        await ex.run("warm", T + "echo", 0)
        for r in range(repeat):
            t0 = time.monotonic()
            res, gaps = await _ticked(lambda key=f"req{r}": ex.run(key, T + "describe", payload))
            walls.append(time.monotonic() - t0)
            stalls.append(max(gaps, default=0.0))
            assert res.ok, res
    return {"wall_s": statistics.median(walls), "max_ms": statistics.median(stalls) * 1e3}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=2.0, help="how long the worker floods")
    ap.add_argument("--repeat", type=int, default=3, help="rounds of big and trivial")
    ap.add_argument("--requests", help="only runs of payloads of these MiB (e.g. 1,4,16)")
    a = ap.parse_args(argv)
    if a.requests:
        for mib in map(int, a.requests.split(",")):
            r = asyncio.run(requests(mib, a.repeat))
            print(f"request of {mib} MiB: run {r['wall_s'] * 1e3:.1f} ms, "
                  f"longest loop gap {r['max_ms']:.1f} ms")
        return 0
    f = asyncio.run(flood(a.seconds))
    b = asyncio.run(big(a.repeat))
    t = asyncio.run(bench_executor.throughput(1000, a.repeat))["runs_per_s"]
    print(f"flood {a.seconds:g} s: longest loop gap {f['max_ms']:.1f} ms, "
          f"p99 {f['p99_ms']:.2f} ms, {f['frames_per_s']:,.0f} frames/s handled "
          f"({f['frames']:,.0f}), result {f['tail_s']:.2f} s after the flood's end")
    print(f"big 16 MiB log + result: {b['wall_s']:.3f} s, longest loop gap {b['max_ms']:.1f} ms")
    print(f"trivial: {t:,.0f} runs/s on 2 slots")
    return 0


if __name__ == "__main__":
    sys.exit(main())
