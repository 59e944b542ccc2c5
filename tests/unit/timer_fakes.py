"""A timer whose time moves only when a test says so (executor and watch unit tests)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(eq=False)
class _Call:
    when: float
    callback: Callable[[], object]
    cancelled: bool = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeTimer:
    """`time` and `call_later` on a time that moves only when told to: timeouts, SIGKILL
    escalation and the watch's checks fire exactly when a test advances past them."""

    def __init__(self) -> None:
        self.now = 0.0
        self._calls: list[_Call] = []

    def time(self) -> float:
        return self.now

    def call_later(self, delay: float, callback: Callable[[], object]) -> _Call:
        call = _Call(self.now + delay, callback)
        self._calls.append(call)
        return call

    def pending(self) -> list[float]:
        """When the calls not yet run nor cancelled are due, in order."""
        return sorted(c.when for c in self._calls if not c.cancelled)

    def advance(self, dt: float) -> None:
        self.now += dt
        due = sorted((c for c in self._calls if not c.cancelled and c.when <= self.now),
                     key=lambda c: c.when)
        self._calls = [c for c in self._calls if c not in due]
        for c in due:
            c.callback()
