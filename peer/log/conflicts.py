"""The conflict rule applied to a peer's log: a second content for a held (origin, seq) is
checked at the door, counted by origin, and the one with the smaller content hash is kept in
SQLite and in the state (peer.log.contents.wins). A folded loser cannot be unfolded in place:
the state is then folded again from the held events, coalesced and spaced so that refolds
take at most `max_duty` of the time. Loop-owned, like the state, the door and the log."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from peer.log.contents import wins
from peer.log.door import Door
from peer.log.events import Event
from peer.log.fold import MeshState
from peer.log.lanes import shown_origin
from peer.log.signing import Counters

log = logging.getLogger("banzai.log")


class ReplaceStore(Protocol):
    """What the rule needs of the SQLite log (peer.log.sqlite.EventLog)."""

    def replace(self, events: Sequence[Event]) -> None: ...

    def range(self, origin: str, after: int, upto: int, limit: int) -> list[Event]: ...


class ConflictRule:
    """Settles pairs (held, challenger) of one (origin, seq). `stale` is True while a
    replaced loser's effects are still folded; `refold()` clears it (call it once
    `refold_at()` has passed: the caller owns the timer)."""

    def __init__(self, state: MeshState, store: ReplaceStore, door: Door,
                 tell: Callable[[Event], None], *, max_duty: float = 0.1,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not 0 < max_duty <= 1:
            raise ValueError("max_duty must be in (0, 1]")
        self.state = state
        self.store = store
        self.door = door
        self.tell = tell  # listeners of a known winner (after the refold when one is due)
        self.max_duty = max_duty
        self.clock = clock
        self.counts = Counters()  # (origin, seq)s seen with two contents, by origin
        self.replaced = 0
        self.refolds = 0
        self.stale = False
        self._untold: list[Event] = []
        self._next_refold = 0.0

    def settle(self, pairs: Sequence[tuple[Event, Event]]) -> None:
        """Apply the rule to each (held, challenger) whose contents differ; a challenger that
        fails the door's checks is refused there (counted), never kept."""
        best: dict[tuple[str, int], Event] = {}  # id -> the winner so far
        for held, other in pairs:
            why = self.door.problem(other)
            if why is not None:
                self.door.refuse(other.origin, why)
                continue
            self.counts.add(held.origin, "conflict")
            n = self.counts.by_origin.get(held.origin, {}).get("conflict", 0)
            if n and n & (n - 1) == 0:  # the 1st, 2nd, 4th, 8th... of an origin
                log.warning("event %s/%d exists with two contents (%d of that origin so "
                            "far; origin reported)", shown_origin(held.origin), held.seq, n)
            cur = best.get(held.id) or self.state.events.get(held.id, held)
            if wins(other, cur):
                best[held.id] = other
        self._in_log(best)
        if not best:
            return
        try:
            self.store.replace(list(best.values()))
        except Exception as e:  # nothing replaced: the next exchange brings them again
            log.error("cannot store %d conflict winners: %s", len(best), e)
            return
        for winner in best.values():
            loser = self.state.content(winner.id)  # (in memory, or a straggler kept aside)
            try:
                up_to_date = self.state.replace(winner)
            except Exception as e:  # its fold raised: the state keeps the loser
                self.door.refuse(winner.origin, f"fold: {type(e).__name__}: {e!s:.200}")
                continue
            self.door.replaced(self.state, loser, winner)
            self.replaced += 1
            if not up_to_date:
                self.stale = True
            if winner.known:
                self._untold.append(winner)
        if not self.stale:
            self._flush_untold()

    def _in_log(self, best: dict[tuple[str, int], Event]) -> None:
        """Leave out of `best` the winners over a straggler kept aside (not in memory) whose
        row left the log: a REPLACE would write it back below its origin's floor (review rr
        of session 50, RR-7); the straggler is let go."""
        for i in [i for i in best if i not in self.state.events]:
            if not self.store.range(i[0], i[1] - 1, i[1], 1):
                del best[i]
                self.state.left_log([i])

    def refold_at(self) -> float:
        """When the next refold may run (clock time): refolds take at most `max_duty`."""
        return self._next_refold

    def refold(self) -> None:
        """Fold the state again from the held events (no loser's effects left), then tell
        the listeners of the winners. The caller closes any open turn first."""
        if not self.stale:
            return
        t0 = self.clock()
        failed = self.state.refold()
        took = self.clock() - t0
        self._next_refold = t0 + took / self.max_duty
        self.stale = False
        self.refolds += 1
        for ev, err in failed:
            log.error("event %s/%d does not fold after a conflict (kept unfolded): %s",
                      shown_origin(ev.origin), ev.seq, err)
        log.info("state folded again after conflicting contents (%d events, %.3f s)",
                 len(self.state.events), took)
        self._flush_untold()

    def _flush_untold(self) -> None:
        untold, self._untold = self._untold, []
        for ev in untold:
            if self.state.events.get(ev.id) is ev:  # still the winner
                self.tell(ev)

    def health(self) -> dict[str, int]:
        return {"replaced": self.replaced, "refolds": self.refolds, "stale": int(self.stale)}


__all__ = ["ConflictRule", "ReplaceStore"]
