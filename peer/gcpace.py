"""The pace of Python's cyclic garbage collector in a peer (issue 12): collections less often,
and a sweep of cyclic garbage at each storage cycle.

CPython runs a young collection after 700 net allocations of container objects (a dict, a
tuple, a dataclass instance each count), a middle one after 10 young ones, an old (full)
one after 10 middle ones once the objects moved to the old generation since the last full
collection exceed a quarter of it. A peer allocates many small objects per event (parsed
payloads, part events, the fold's entries) and keeps many of them (the state in memory), so
the survivors of each young collection are many and are traversed again at each middle and
old collection while the state grows: in process, with a job of 20,000 tasks in flight, the
peer's pace below cut what receiving another peer's short tasks cost from 86 to 48-52 us per
task (with 2,000 after a full collection: no difference; docs/benchmarks.md, "What a peer
spends receiving another peer's short tasks"); the passes are charged to whatever line
allocated (profiles cannot show them apart). Receiving and compaction make no cyclic
garbage: reference counting frees it as it goes. The collector is for cycles (exceptions
kept with their tracebacks, whose frames may hold buffers; asyncio's and aiohttp's objects),
which at this pace could wait for hours on an idle peer (its net allocations are its
garbage): so `after_cycle`, run after each storage cycle (before the allocator's trim, which
can then give their memory back), makes a young and middle collection, and a full one at
most once per `full_every_s`.

`apply` sets the thresholds for the process (the peer's `main` calls it once; tests and
embedders keep Python's) and times the collections (`stats`, shown by /metrics). On Python
3.14 and later (an incremental collector) the second and third thresholds mean other things;
the young threshold and `after_cycle` keep their sense.
"""

from __future__ import annotations

import gc
import time
from dataclasses import dataclass, field
from typing import Any

PYTHON_YOUNG_ALLOCS = 700  # CPython's own first threshold
MAX_YOUNG_ALLOCS = 100_000_000  # (gc.set_threshold takes a C int)


@dataclass(frozen=True)
class GcPace:
    """Thresholds of `gc.set_threshold`: net allocations of container objects between young
    collections (0: Python's own thresholds, unchanged), young collections per middle one,
    middle collections per old one (CPython's quarter rule still applies to old ones)."""

    young_allocs: int = 50_000
    young_per_middle: int = 50
    middle_per_old: int = 100
    full_every_s: float = 3600.0  # `after_cycle`'s full collection, at most this often

    def __post_init__(self) -> None:
        if not 0 <= self.young_allocs <= MAX_YOUNG_ALLOCS:
            raise ValueError(f"young_allocs must be from 0 to {MAX_YOUNG_ALLOCS}, got "
                             f"{self.young_allocs}")
        if not self.full_every_s >= 0:
            raise ValueError(f"full_every_s must be >= 0, got {self.full_every_s}")
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
_pace: GcPace | None = None
_last_full: float | None = None  # time.monotonic() of after_cycle's last full collection


def apply(pace: GcPace) -> GcStats:
    """Set this process's thresholds (unless `young_allocs` is 0) and start timing its
    collections; a second call replaces the first's timer."""
    global _stats, _pace, _last_full
    _pace, _last_full = pace, None  # (the first storage cycle's is a full one)
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


def after_cycle(now: float | None = None) -> int:
    """After a storage cycle: collect the young and middle generations (about a millisecond
    for 50,000 young objects), and everything at most once per `full_every_s` (about 0.1 s
    per million live objects, as Python's own pace paid every ~70,000 allocations); which
    generation was collected (-1: none, `apply` was never called in this process)."""
    global _last_full
    if _pace is None:
        return -1
    now = time.monotonic() if now is None else now
    if _last_full is None or now - _last_full >= _pace.full_every_s:
        _last_full = now
        gc.collect()
        return 2
    gc.collect(1)
    return 1


async def after_cycle_hook() -> None:
    """`after_cycle` as a janitor's `after_gc` hook (on the loop: it takes ms)."""
    after_cycle()
