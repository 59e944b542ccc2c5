"""The pace of Python's cyclic garbage collector in a peer (issue 12): collections less often.

CPython runs a young collection after 700 net allocations of container objects (a dict, a
tuple, a dataclass instance each count), a middle one after 10 young ones, an old (full)
one after 10 middle ones once the objects moved to the old generation since the last full
collection exceed a quarter of it. A peer allocates many small objects per event (parsed
payloads, part events, the fold's entries) and keeps most of them (the state in memory),
so the survivors of each young collection are many and are traversed again at each middle
and old collection: at the defaults, a third of what a peer spent receiving another peer's
short tasks was these collections (docs/benchmarks.md, "The cyclic garbage collector's
pace"), charged to whatever line allocated (py-spy cannot show it apart). Nearly all of a
peer's garbage is freed by reference counting as it goes: the collector is only for cycles
(asyncio's futures and exceptions with tracebacks, mostly), which wait a little longer.

`apply` sets the thresholds for the process (the peer's `main` calls it once; tests and
embedders keep Python's) and times the collections (`stats`, shown by /metrics).
"""

from __future__ import annotations

import gc
import time
from dataclasses import dataclass, field
from typing import Any

PYTHON_YOUNG_ALLOCS = 700  # CPython's own first threshold


@dataclass(frozen=True)
class GcPace:
    """Thresholds of `gc.set_threshold`: net allocations of container objects between young
    collections (0: Python's own thresholds, unchanged), young collections per middle one,
    middle collections per old one (CPython's quarter rule still applies to old ones)."""

    young_allocs: int = 50_000
    young_per_middle: int = 50
    middle_per_old: int = 100

    def __post_init__(self) -> None:
        if self.young_allocs < 0:
            raise ValueError(f"young_allocs must be >= 0, got {self.young_allocs}")
        if self.young_per_middle < 1 or self.middle_per_old < 1:
            raise ValueError("young_per_middle and middle_per_old must be at least 1")


@dataclass
class GcStats:
    """The collections seen since `apply`, by generation (0 young, 1 middle, 2 old): their
    count and the time they took."""

    collections: list[int] = field(default_factory=lambda: [0, 0, 0])
    seconds: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    _started: float = 0.0

    def callback(self, phase: str, info: dict[str, Any]) -> None:
        """`gc.callbacks` entry: times each collection."""
        if phase == "start":
            self._started = time.perf_counter()
            return
        gen = info.get("generation", 2)
        if isinstance(gen, int) and 0 <= gen <= 2:
            self.collections[gen] += 1
            self.seconds[gen] += time.perf_counter() - self._started


_stats: GcStats | None = None


def apply(pace: GcPace) -> GcStats:
    """Set this process's thresholds (unless `young_allocs` is 0) and start timing its
    collections; a second call replaces the first's timer."""
    global _stats
    if pace.young_allocs:
        gc.set_threshold(pace.young_allocs, pace.young_per_middle, pace.middle_per_old)
    if _stats is not None and _stats.callback in gc.callbacks:
        gc.callbacks.remove(_stats.callback)
    _stats = GcStats()
    gc.callbacks.append(_stats.callback)
    return _stats


def stats() -> GcStats | None:
    """The collections timed since `apply` (None: never applied in this process)."""
    return _stats
