"""The run records' lists (a chunk's log lines or metrics) the log and metrics API parsed
lately, by CID (content-addressed: a CID's list never changes), within a byte budget, so that
the web UI's log panel, refetched every 0.7 s while a task runs, parses each record once.
Loop-owned.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, NamedTuple

RECORDS_MAX_BYTES = 8 << 20  # of the records' JSON (their lists hold ~2-3x that)
# Of a log too large for the budget, the last lines kept (`Tail`): the web UI's log panel
# reads the last 1,000 (webui/js/pages/job.js, LOG_LINES)
TAIL_LINES = 1000
MISS_TTL_S = 60.0  # a record no live peer served is not asked for again for this long
MISSES_MAX = 10_000  # misses remembered (the oldest forgotten first)


class Tail(NamedTuple):
    """A record's log too large for the cache's budget, as kept: how many lines it holds and
    its last TAIL_LINES, what a read of a task log's tail needs of it (a read of more parses
    the record again). Before, such a record (8 to 28 MiB at the default bounds) was read,
    counted and parsed again at every read, the log panel's every 0.7 s (session 52)."""

    total: int
    lines: list[Any]


def list_bytes(value: list[Any]) -> int:
    """About the JSON bytes of a parsed record list (a log's lines, metric points: texts,
    numbers, short lists of them), what the budget counts of what is kept."""
    n = 2
    for x in value:
        if type(x) is str:
            n += len(x) + 3
        elif type(x) is list:
            n += 3 + sum(len(y) + 3 if type(y) is str else 24 for y in x)
        else:
            n += 24
    return n


class RecordCache:
    """(cid, kind) -> the list parsed from the record at cid, least recently used first out,
    within the budget: a list larger than it is not kept, but a log's `Tail`."""

    def __init__(self, max_bytes: int = RECORDS_MAX_BYTES) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self._lists: OrderedDict[tuple[str, str], tuple[int, list[Any] | Tail]] = (
            OrderedDict())
        self.clock: Callable[[], float] = time.monotonic
        self._misses: OrderedDict[str, float] = OrderedDict()  # cid -> when it was missed
        # (cid, kind) -> why it is no record read here (content-addressed: that never changes;
        # a refused record was read, counted or parsed again at every read: up to ~1 s)
        self._refused: OrderedDict[tuple[str, str], str] = OrderedDict()

    def refused(self, cid: str, kind: str) -> str | None:
        """Why the CID's `kind` list was not read lately (`refuse`; `kind` "": no list of
        it is read), if it was not."""
        return self._refused.get((cid, kind)) or self._refused.get((cid, ""))

    def refuse(self, cid: str, kind: str, why: str) -> None:
        self._refused[(cid, kind)] = why
        while len(self._refused) > MISSES_MAX:
            self._refused.popitem(last=False)

    def missed(self, cid: str) -> bool:
        """Did a fetch of `cid` find no live peer serving it within MISS_TTL_S? (A task's
        log names a record per failed attempt: each read asked the mesh for each again,
        session 51, helper g, RR-3.)"""
        at = self._misses.get(cid)
        if at is None:
            return False
        if self.clock() - at < MISS_TTL_S:
            return True
        del self._misses[cid]
        return False

    def miss(self, cid: str) -> None:
        """No live peer served `cid` now."""
        self._misses.pop(cid, None)
        self._misses[cid] = self.clock()
        while len(self._misses) > MISSES_MAX:
            self._misses.popitem(last=False)

    def get(self, cid: str, kind: str) -> list[Any] | Tail | None:
        got = self._lists.get((cid, kind))
        if got is None:
            return None
        self._lists.move_to_end((cid, kind))
        return got[1]

    def put(self, cid: str, kind: str, value: list[Any], size: int) -> None:
        """Keep `value` (parsed from `size` bytes: its record's, or `list_bytes`) unless it
        alone exceeds the budget; then a log's `Tail`, if that is within it."""
        got = self._lists.get((cid, kind))
        if got is not None and not isinstance(got[1], Tail):
            return
        kept: list[Any] | Tail = value
        if size > self.max_bytes:
            if kind != "log" or got is not None:  # (a tail kept: kept as it is)
                return
            kept = Tail(len(value), value[-TAIL_LINES:])
            size = list_bytes(kept.lines)
            if size > self.max_bytes:
                return
        if got is not None:
            self.bytes -= got[0]
            del self._lists[(cid, kind)]
        self._lists[(cid, kind)] = (size, kept)
        self.bytes += size
        while self.bytes > self.max_bytes:
            old, _ = self._lists.popitem(last=False)[1]
            self.bytes -= old
