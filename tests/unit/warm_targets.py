"""A task module with a numba warm-up, and a probe that reports what a worker inherited.

Imported only inside the executor processes of tests/unit/test_warm_workers.py.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import numba

from tasks import registry
from tasks.registry import TaskContext, task


@numba.njit(cache=False)
def plus_one(x: int) -> int:
    return x + 1


def warm_plus_one() -> None:
    plus_one(1)  # compiles plus_one for int64


@task("T_WARM_PROBE", needs_input=False, warm=warm_plus_one)
def t_warm_probe(ctx: TaskContext, inp: Path | None, out: Path) -> None:
    """A task that only declares a warm-up."""


def probe(payload: Any, ctx: Any) -> dict[str, Any]:
    """What this worker holds before it runs anything else (imports nothing itself)."""
    utils = sys.modules.get("librosa.util.utils")
    return {
        "pid": os.getpid(),
        "warmed": registry.warmed(),
        "librosa": "librosa" in sys.modules,
        "librosa_feature": "librosa.feature.spectral" in sys.modules,
        "sklearn_mixture": "sklearn.mixture" in sys.modules,
        "librosa_ufunc_loops": 0 if utils is None else len(utils._cabs2.types),
        "jit_signatures": [str(s) for s in plus_one.signatures],
    }
