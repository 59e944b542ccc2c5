"""Hybrid logical clock: orders events across machines without trusting wall clocks."""

from __future__ import annotations

import time
from collections.abc import Callable


class HLC:
    """Hybrid logical clock packed into an int: wall milliseconds << 16 | counter."""

    def __init__(self, wall_ms: Callable[[], int] | None = None) -> None:
        self._wall = wall_ms or (lambda: int(time.time() * 1000))
        self._last = 0

    def now(self) -> int:
        """A timestamp greater than every one issued or observed before."""
        self._last = max(self._last + 1, self._wall() << 16)
        return self._last

    def observe(self, remote: int) -> None:
        """Move past a remote timestamp so later local events sort after it."""
        self._last = max(self._last, remote)


def hlc_ms(h: int) -> int:
    return h >> 16


class FakeClock:
    """A monotonic clock that moves only when told to."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, dt: float) -> None:
        self.now += dt
