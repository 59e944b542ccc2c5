"""The run records' lists (a chunk's log lines or metrics) the log and metrics API parsed
lately, by CID (content-addressed: a CID's list never changes), within a byte budget, so that
the web UI's log panel, refetched every 0.7 s while a task runs, parses each record once.
Loop-owned.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

RECORDS_MAX_BYTES = 8 << 20  # of the records' JSON (their lists hold ~2-3x that)


class RecordCache:
    """(cid, kind) -> the list parsed from the record at cid, least recently used first out;
    a record larger than the budget is not kept."""

    def __init__(self, max_bytes: int = RECORDS_MAX_BYTES) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self._lists: OrderedDict[tuple[str, str], tuple[int, list[Any]]] = OrderedDict()

    def get(self, cid: str, kind: str) -> list[Any] | None:
        got = self._lists.get((cid, kind))
        if got is None:
            return None
        self._lists.move_to_end((cid, kind))
        return got[1]

    def put(self, cid: str, kind: str, value: list[Any], size: int) -> None:
        """Keep `value` (parsed from `size` bytes) unless it alone exceeds the budget."""
        if size > self.max_bytes or (cid, kind) in self._lists:
            return
        self._lists[(cid, kind)] = (size, value)
        self.bytes += size
        while self.bytes > self.max_bytes:
            old, _ = self._lists.popitem(last=False)[1]
            self.bytes -= old
