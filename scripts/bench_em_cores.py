#!/usr/bin/env python3
"""How much the same EM's CPU varies on this host's cores, outside the mesh: LEARN's EM
(tasks.gmm_em, K = 8 diagonal, 20 iterations after the first) on the same synthetic frames
(96,000 x 13), in processes pinned with `taskset` to core 0 alone, core 1 alone, then both
at once; per-iteration CPU in ms, a few EMs per process (the first of each pays the heap's
growth). Per-peer CPU figures of bench_pinned.py differ by less than this spread tell
nothing about the mesh (docs/benchmarks.md, session 47 helper f).

    flock /work/wt/bench.lock .venv/bin/python scripts/bench_em_cores.py [--trials 3] [--reps 3]
"""

from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_v] = "1"  # before numpy is imported, here and in every child

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
ITERATIONS = 20


def child(reps: int) -> list[float]:
    """`reps` EMs in this process, each on a fresh model: ms of CPU per iteration after the
    first (k-means) one."""
    import numpy as np
    from sklearn.mixture import GaussianMixture

    from peer.jobs.heap import HeapConfig, libc_mallopt, tune
    from tasks.gmm_em import EmSteps

    tune(HeapConfig(), libc_mallopt())  # as a worker's heap
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.normal(i, 1 + i / 4, size=(12_000, 13)) for i in range(8)])
    out = []
    for _ in range(reps):
        em = EmSteps(GaussianMixture(8, covariance_type="diag", max_iter=1, warm_start=True,
                                     random_state=0, reg_covar=1e-3), x)
        em.step()
        t0 = time.process_time()
        for _ in range(ITERATIONS):
            em.step()
        out.append(round((time.process_time() - t0) / ITERATIONS * 1000, 1))
    return out


def run(cores: Sequence[int], reps: int) -> list[list[float]]:
    """One process per core in `cores`, all at once; each one's per-iteration ms."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen(["taskset", "-c", str(c), sys.executable, __file__, "--child",
                               str(reps)], stdout=subprocess.PIPE, text=True, env=env)
             for c in cores]
    out = []
    for p in procs:
        text, _ = p.communicate(timeout=300)
        if p.returncode != 0:
            raise RuntimeError(f"a child on cores {list(cores)} exited {p.returncode}")
        out.append(json.loads(text))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=3, help="rounds of alone, alone, both")
    ap.add_argument("--reps", type=int, default=3, help="EMs per process")
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child is not None:
        print(json.dumps(child(a.child)))
        return 0
    if (os.cpu_count() or 1) < 2:
        print("needs 2 cores", file=sys.stderr)
        return 2
    seen: dict[str, list[float]] = {"core 0 alone": [], "core 1 alone": [],
                                    "core 0 with core 1 busy": [], "core 1 with core 0 busy": []}
    for t in range(a.trials):
        (c0,), (c1,) = run([0], a.reps), run([1], a.reps)
        b0, b1 = run([0, 1], a.reps)
        print(f"trial {t + 1}: core 0 alone {c0}, core 1 alone {c1}, both: core 0 {b0}, "
              f"core 1 {b1} (ms per EM iteration)", flush=True)
        for key, xs in zip(seen, (c0, c1, b0, b1), strict=True):
            seen[key] += xs
    for key, xs in seen.items():
        print(f"{key}: median {statistics.median(xs):.1f} ms, {min(xs):.1f}-{max(xs):.1f} "
              f"({len(xs)} EMs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
