"""Gives the C allocator's free memory back to the system: glibc's `malloc_trim(0)` after a
storage cycle, at most once per interval; a no-op where the C library has none (musl, macOS).
Loop-owned: `after_cycle` runs on the loop, the trim itself in a thread (it takes ms).
"""

from __future__ import annotations

import asyncio
import ctypes
import functools
import logging
import os
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

log = logging.getLogger("banzai.memtrim")

T = TypeVar("T")
TrimFn = Callable[[int], int]  # malloc_trim(pad): 1 if memory was given back, else 0
Offload = Callable[[Callable[[], T]], Coroutine[Any, Any, T]]


@functools.cache
def glibc_malloc_trim() -> TrimFn | None:
    """glibc's `malloc_trim`, looked up once in the running process; None without one."""
    try:
        fn = ctypes.CDLL(None).malloc_trim  # the symbols the process already has loaded
    except (OSError, AttributeError, TypeError):  # no such symbol; no dlopen(NULL) (Windows)
        return None
    fn.argtypes = [ctypes.c_size_t]
    fn.restype = ctypes.c_int
    return fn


def rss_bytes() -> int:
    """This process's resident set (/proc/self/statm), 0 where it cannot be read."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


@dataclass(frozen=True)
class TrimConfig:
    interval_s: float = 30.0  # at most one trim per this many seconds; 0: never

    def __post_init__(self) -> None:
        if not self.interval_s >= 0:
            raise ValueError(f"interval_s must be >= 0, got {self.interval_s}")


@dataclass
class TrimStats:
    """What the trims did: their count, the RSS they gave back (summed before - after, a
    trim that gave nothing back counts 0) and their time."""

    trims: int = 0
    freed_bytes: int = 0
    seconds: float = 0.0
    last_rss_before: int = 0
    last_rss_after: int = 0


class Trimmer:
    """Calls `trim(0)` from `after_cycle` (a storage cycle's hook) when the last trim is at
    least `interval_s` old; `trim` None (no glibc) or interval 0: never."""

    def __init__(self, cfg: TrimConfig, trim: TrimFn | None,
                 clock: Callable[[], float] = time.monotonic,
                 rss: Callable[[], int] = rss_bytes,
                 offload: Offload[tuple[int, int, float]] = asyncio.to_thread) -> None:
        self.cfg = cfg
        self.trim = trim
        self.clock = clock
        self.rss = rss
        self.offload = offload
        self.stats = TrimStats()
        self._last: float | None = None  # the clock at the last trim

    @property
    def enabled(self) -> bool:
        return self.trim is not None and self.cfg.interval_s > 0

    async def after_cycle(self) -> None:
        """Trim now unless disabled or the last trim is younger than the interval."""
        if not self.enabled:
            return
        now = self.clock()
        if self._last is not None and now - self._last < self.cfg.interval_s:
            return
        self._last = now
        before, after, seconds = await self.offload(self._run)
        s = self.stats
        s.trims += 1
        s.freed_bytes += max(0, before - after)
        s.seconds += seconds
        s.last_rss_before, s.last_rss_after = before, after
        log.debug("malloc_trim: RSS %.1f -> %.1f MB in %.1f ms", before / 2**20, after / 2**20,
                  seconds * 1e3)

    def _run(self) -> tuple[int, int, float]:
        """In a thread: RSS before, trim, RSS after, and the trim's time."""
        assert self.trim is not None
        before = self.rss()
        t0 = time.perf_counter()
        self.trim(0)
        seconds = time.perf_counter() - t0
        return before, self.rss(), seconds
