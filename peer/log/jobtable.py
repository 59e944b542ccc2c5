"""The state's jobs (MeshState.jobs): a dict of job -> its winning JOB_SUBMITTED that also keeps
the (order, job) of every event set in it, sorted, so that the job list's page (newest first)
reads the jobs it shows, not every job. Loop-owned, as the state.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from typing import Any

from peer.log.events import Event

Order = tuple[int, str, int]


class JobTable(dict[str, Event]):
    """A dict (reads are dict's own); each `table[job] = ev` also files (ev.order, job). An
    entry whose job left the table or holds another event since is stale: skipped and dropped
    where a page meets it, and all are dropped once they outnumber the jobs."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # (hlc, origin, seq, job): flat, ~80 bytes a job
        self._sorted: list[tuple[int, str, int, str]] = []
        self._refile()

    def _refile(self) -> None:
        self._sorted = sorted((ev.hlc, ev.origin, ev.seq, job) for job, ev in self.items())

    def __setitem__(self, job: str, ev: Event) -> None:
        super().__setitem__(job, ev)
        insort(self._sorted, (ev.hlc, ev.origin, ev.seq, job))  # (a new job: at the end)
        if len(self._sorted) > 2 * len(self) + 1024:  # compacted jobs' entries, unread
            self._refile()

    def setdefault(self, job: str, ev: Event) -> Event:
        if job not in self:
            self[job] = ev
        return self[job]

    def update(self, *args: Any, **kwargs: Any) -> None:
        for job, ev in dict(*args, **kwargs).items():
            self[job] = ev

    def newest(self, n: int, before: Order | None = None) -> list[tuple[Order, str]]:
        """(order, job) of the newest `n` jobs older than `before` (None: of all), newest
        first: as heapq.nlargest over every job, in the time of the entries walked."""
        entries = self._sorted
        i = len(entries) if before is None else bisect_left(entries, before)
        out: list[tuple[Order, str]] = []
        seen: set[str] = set()
        while i > 0 and len(out) < n:
            i -= 1
            hlc, origin, seq, job = entries[i]
            order = (hlc, origin, seq)
            ev = self.get(job)
            if ev is None or ev.order != order or job in seen:
                del entries[i]  # stale (or a second filing of the same event)
                continue
            seen.add(job)
            out.append((order, job))
        return out
