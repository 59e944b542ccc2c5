"""One peer's events of one loop turn made into one TURN event (fewer events per task: one
row, one hash, one frame entry, one fold record for a turn's claims, outcomes, splits and
finished tasks). Each part is folded at once, as a single event would be; the turn is
recorded as held, and leaves the process, only once closed. Loop-owned, not thread-safe."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from peer.log.events import TURN_PARTS, Event, EventType, turn_event
from peer.log.fold import MeshState

MAX_TURN_WEIGHT = 4096  # parts + item results in one turn (bounds its bytes); then a new one


class TurnBuilder:
    """The open turn of `origin`: `add` folds a part, `close` returns the turn's event."""

    def __init__(self, origin: str, state: MeshState, now: Callable[[], int]) -> None:
        self.origin = origin
        self.state = state
        self.now = now  # the HLC: every part of a turn has the turn's
        self._parts: list[Event] = []
        self._weight = 0

    @property
    def open(self) -> bool:
        return bool(self._parts)

    @staticmethod
    def holds(typ: EventType) -> bool:
        """True if an event of `typ` may be a part of a turn."""
        return typ in TURN_PARTS

    def add(self, typ: EventType, payload: dict[str, Any]) -> tuple[Event, Event | None]:
        """Fold a part of the open turn (opening one: its seq is the origin's next); returns
        the part, and the turn closed first if this part would make it too large."""
        w = 1 + len(payload.get("cache") or ())  # item results dominate a turn's bytes
        closed = self.close() if self._parts and self._weight + w > MAX_TURN_WEIGHT else None
        if self._parts:
            first = self._parts[0]
            seq, hlc = first.seq, first.hlc
        else:
            seq, hlc = self.state.heads.get(self.origin, 0) + 1, self.now()
        ev = Event(self.origin, seq, hlc, typ, payload)  # validated here, once
        self.state.fold_only(ev)
        self._parts.append(ev)
        self._weight += w
        return ev, closed

    def close(self) -> Event | None:
        """The open turn as one event (a lone part as itself), recorded as held; None if no
        turn is open."""
        if not self._parts:
            return None
        ev = turn_event(self._parts)
        self._parts, self._weight = [], 0
        self.state.record(ev)
        return ev
