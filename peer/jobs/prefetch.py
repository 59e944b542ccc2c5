"""Fetching a chunk's input ahead of its claim: the items of one chunk this peer will likely
claim next, fetched into the local store (nothing claimed) while its slots run, so that the
run starts without that fetch. One chunk at a time, bounded in items and bytes; cancelled
when another peer takes the chunk. Loop-owned and never blocking: the fetch is a task.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

from peer.jobs.ports import FetchAhead, SchedulerConfig

log = logging.getLogger("banzai.scheduler")

ChunkRef = tuple[str, str, int]  # job, task, chunk


class Prefetch:
    """At most one chunk's items being (or done being) fetched ahead: `want` one, `claimed`
    when this peer claims it (its run's own fetch then waits for this one), `taken` when
    another peer does (the fetch is cancelled), `drop` when its task or job ends."""

    def __init__(self, cfg: SchedulerConfig, fetcher: FetchAhead) -> None:
        self.max_items = cfg.prefetch_max_items
        self.max_bytes = cfg.prefetch_max_bytes
        self.fetcher = fetcher
        self.target: ChunkRef | None = None
        self.started = 0  # fetches ahead begun (tests and the debug log count them)
        self.cancelled = 0  # of them cancelled because another peer took the chunk, or ended
        self._task: asyncio.Task[int] | None = None
        self._claimed: set[asyncio.Task[int]] = set()  # fetches whose chunk we claimed

    def chunk_for(self, job: str, task: str) -> int | None:
        """The chunk of `job`/`task` whose items are fetched ahead here, if any."""
        t = self.target
        return t[2] if t is not None and t[:2] == (job, task) else None

    def want(self, ref: ChunkRef, cids: Sequence[str], hints: Sequence[str]) -> None:
        """Fetch the items `cids` of chunk `ref` ahead (unless that is under way or done
        already, or the chunk is beyond the bounds); another chunk's fetch ahead stops."""
        if ref == self.target:
            return
        self._cancel()
        if self.max_bytes <= 0 or not cids or len(cids) > self.max_items:
            return
        self.target = ref
        self.started += 1
        self._task = asyncio.create_task(
            self.fetcher.fetch_ahead(list(cids), list(hints), self.max_bytes),
            name=f"prefetch {ref[0]}/{ref[1]}/{ref[2]}")

    def claimed(self, ref: ChunkRef) -> None:
        """This peer claimed chunk `ref`: its fetch ahead, if any, goes on (the run's fetch
        waits for it rather than fetching the items again) and is forgotten here."""
        if ref != self.target:
            return
        if self._task is not None and not self._task.done():
            self._claimed.add(self._task)
            self._task.add_done_callback(self._claimed.discard)
        self.target, self._task = None, None

    def taken(self, ref: ChunkRef) -> None:
        """Another peer claimed (or something settled) chunk `ref`: its fetch ahead stops."""
        if ref == self.target:
            self._cancel()

    def drop(self, job: str, task: str | None = None) -> None:
        """`job` (or its task `task`) ended or was cancelled: its fetch ahead stops."""
        t = self.target
        if t is not None and t[0] == job and (task is None or t[1] == task):
            self._cancel()

    def _cancel(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            self.cancelled += 1
            log.debug("fetch ahead of %s cancelled", self.target)
        self.target, self._task = None, None

    async def close(self) -> None:
        """Cancel every fetch ahead and wait for them to end."""
        tasks = [t for t in (self._task, *self._claimed) if t is not None]
        self.target, self._task = None, None
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
