"""One peer's events of one loop turn made into one TURN event per origin it touches (fewer
events per task: one row, one hash, one frame entry, one fold record for a turn's claims,
outcomes, splits and finished tasks): the peer's own stream, and each lane of a lanes job
(peer.log.lanes: a loop turn touching three lanes jobs makes three TURNs; a part no lane
holds, a CACHE_PUT, goes to the turn of the lane's peer's own stream). Each part is folded at
once, as a single event would be; a turn is recorded as held, and leaves the process, only
once closed, in the order the turns were opened (their HLC order). Loop-owned, not
thread-safe."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from peer.log.events import TURN_PARTS, Event, EventType, turn_event
from peer.log.fold import MeshState
from peer.log.lanes import LANE_PARTS, lane_of

MAX_TURN_WEIGHT = 4096  # parts + item results in one turn (bounds its bytes); then a new one


class _Open:
    """The parts of one origin's open turn and their weight."""

    __slots__ = ("parts", "weight")

    def __init__(self) -> None:
        self.parts: list[Event] = []
        self.weight = 0


class TurnBuilder:
    """The open turns, one per origin: `add` folds a part, `close` returns the turns' events."""

    def __init__(self, state: MeshState, now: Callable[[], int]) -> None:
        self.state = state
        self.now = now  # the HLC: every part of a turn has the turn's
        self._open: dict[str, _Open] = {}  # origin -> its open turn, in the order opened

    @property
    def open(self) -> bool:
        return bool(self._open)

    @staticmethod
    def holds(typ: EventType) -> bool:
        """True if an event of `typ` may be a part of a turn."""
        return typ in TURN_PARTS

    def add(self, origin: str, typ: EventType, payload: dict[str, Any],
            ) -> tuple[Event, list[Event]]:
        """Fold a part of `origin`'s open turn (opening one: its seq is the origin's next;
        for a lane, a part of a type no lane holds goes to its peer's stream's turn: the
        door refuses a lane's TURN carrying one whole); returns the part, and the turns
        closed first if this part would make that turn too large: it and every turn opened
        before it (they leave in the order opened)."""
        if "/" in origin and typ not in LANE_PARTS:  # (no peer's own stream has a "/")
            lane = lane_of(origin)
            if lane is not None:
                origin = lane[0]
        w = 1 + len(payload.get("cache") or ())  # item results dominate a turn's bytes
        turn = self._open.get(origin)
        closed: list[Event] = []
        if turn is not None and turn.weight + w > MAX_TURN_WEIGHT:
            for o in list(self._open):  # (in the order opened, up to `origin`'s)
                closed.append(self._close(o, self._open[o]))
                if o == origin:
                    break
            turn = None
        if turn is None:
            seq, hlc = self.state.heads.get(origin, 0) + 1, self.now()
        else:
            first = turn.parts[0]
            seq, hlc = first.seq, first.hlc
        ev = Event(origin, seq, hlc, typ, payload)  # validated here, once
        self.state.fold_only(ev)
        if turn is None:  # (opened once its first part is folded)
            turn = self._open[origin] = _Open()
        turn.parts.append(ev)
        turn.weight += w
        return ev, closed

    def close(self) -> list[Event]:
        """The open turns as one event each (a lone part as itself), in the order opened,
        recorded as held; none if no turn is open."""
        return [self._close(origin, turn) for origin, turn in list(self._open.items())]

    def _close(self, origin: str, turn: _Open) -> Event:
        del self._open[origin]
        ev = turn_event(turn.parts)
        self.state.record(ev)
        return ev
