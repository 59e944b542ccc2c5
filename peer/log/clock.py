"""Hybrid logical clock: orders events across machines without trusting wall clocks. A remote
timestamp moves it at most `max_drift_ms` past the local wall clock. Loop-owned."""

from __future__ import annotations

import time
from collections.abc import Callable

COUNTER_BITS = 16
# Far below SQLite's INTEGER bound (2^63 - 1): no sequence of timestamps can overflow it.
MAX_HLC = (1 << 62) - 1


class HLC:
    """Hybrid logical clock packed into an int: wall milliseconds << 16 | counter.

    `observe` never moves it past `ceiling()` (the wall clock plus `max_drift_ms`), so a
    remote value (2^63 - 1, say) cannot push the local timestamps out of range or far into
    the future; `accepts` says whether a remote timestamp is within that bound."""

    def __init__(self, wall_ms: Callable[[], int] | None = None,
                 max_drift_ms: int = 300_000) -> None:
        if max_drift_ms < 0:
            raise ValueError("max_drift_ms must be >= 0")
        self._wall = wall_ms or (lambda: int(time.time() * 1000))
        self._last = 0
        self.max_drift_ms = max_drift_ms

    def now(self) -> int:
        """A timestamp greater than every one issued or observed before."""
        self._last = max(self._last + 1, self._wall() << COUNTER_BITS)
        return self._last

    def ceiling(self) -> int:
        """The largest timestamp accepted from elsewhere at this moment."""
        top = (self._wall() + self.max_drift_ms + 1) << COUNTER_BITS
        return min(top - 1, MAX_HLC)

    def accepts(self, remote: int) -> bool:
        """`remote` is no further ahead of the local wall clock than the drift bound."""
        return remote <= self.ceiling()

    def observe(self, remote: int) -> None:
        """Move past a remote timestamp (at most to `ceiling()`) so later local events sort
        after it."""
        self._last = max(self._last, min(remote, self.ceiling()))


def hlc_ms(h: int) -> int:
    return h >> COUNTER_BITS


class FakeClock:
    """A monotonic clock that moves only when told to."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, dt: float) -> None:
        self.now += dt
