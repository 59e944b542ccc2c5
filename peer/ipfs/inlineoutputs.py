"""The inline outputs' lifecycle on a peer with an embedded store: the writer thread (one,
in order), the restore at start, the durability marker (peer.ipfs.inlinemark), moved every
INLINE_MARK_S and at a clean close. Loop-owned; the writes, restore and marks run in threads.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Protocol

from peer.errors import BanzaiError
from peer.ipfs.inline import InlineBlocks, Keeper, every_peer
from peer.ipfs.inlinemark import Key, read_mark, write_mark
from peer.log import Event

log = logging.getLogger("banzai.inline")

# A running peer makes its inline writes durable (one syncfs) and marks them this often: a
# crash then pins again only the inline outputs logged since (peer/ipfs/inlinemark.py).
INLINE_MARK_S = 300.0
# The writer thread starts this long after the first write asked for while it was idle, and
# takes every write asked for meanwhile in one pass: waking it for each output (as each
# event came) cost the three peers of a 2-core machine more than the writes themselves
# (issue 12). Meanwhile the blocks are served from memory (`stage_inline`); the log is
# their durable copy either way.
INLINE_WRITE_WAIT_S = 0.01
# Inline writes that failed while the event log took writes (the block store alone failed:
# no log outage ends to write them again, peer.node `_note_outage`) are written again this
# long after, the wait doubling up to INLINE_AGAIN_MAX_S while they fail again (each failed
# pass logs a line), back to the first once none waits (`again`; session 46, helper e).
INLINE_AGAIN_S = 5.0
INLINE_AGAIN_MAX_S = 300.0


class DurableKeeper(Keeper, Protocol):
    """A Keeper whose unsynced inline writes can be made durable (EmbeddedStore)."""

    def sync_inline(self) -> None: ...  # blocks (one syncfs); OSError if it fails
    def inline_lost(self) -> bool: ...  # at start: its inline writes were lost (not a crash)
    def inline_restored(self) -> None: ...  # every event's inline blocks were kept again
    def close(self) -> None: ...  # release what it holds open (used again: opened again)


class MarkedLog(Protocol):
    """What the marker needs of the event log (peer.log.sqlite.EventLog); loop-owned but
    `sync`, which may run in a thread."""

    def key_at(self, rowid: int) -> Key | None: ...  # the event at a position
    def keys_after(self, rowid: int) -> set[Key]: ...  # the events logged after it
    def last_rowid(self) -> int: ...  # the log's last position (0 if empty)
    @property
    def sync_epoch(self) -> int: ...  # failed fsyncs so far
    def sync(self, since: int | None = None) -> None: ...  # commits so far durable (fsync)


class Folded(Protocol):
    @property
    def events(self) -> Mapping[Key, Event]: ...  # the events in memory


class InlineHost(Protocol):
    """What the inline outputs need of their peer (peer.node.Node): its log and the events
    it holds in memory; read on the loop only."""

    @property
    def log(self) -> MarkedLog: ...
    @property
    def state(self) -> Folded: ...


class InlineOutputs:
    """Keeps the inline blocks (`blocks`, written by `pool` in order), restores at start those
    a crash may have lost, and marks the writes durable while running and at close."""

    def __init__(self, data_dir: Path, self_id: str, store: DurableKeeper, max_bytes: int,
                 host: InlineHost, mark: Callable[[str], None] = lambda c: None,
                 replica: Callable[[str, str, str], bool] = every_peer,
                 unmark: Callable[[str], None] = lambda c: None,
                 write_wait_s: float = INLINE_WRITE_WAIT_S) -> None:
        if write_wait_s < 0:
            raise ValueError("write_wait_s must be >= 0")
        self.data_dir = data_dir
        self.store = store
        self.host = host
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="inline")  # writes, in order
        self.write_wait_s = write_wait_s
        self._due: Callable[[], None] | None = None  # the writer's pass, not yet submitted
        self._due_at: asyncio.TimerHandle | None = None
        self.blocks = InlineBlocks(self_id, store, max_bytes, mark, self._later, replica,
                                   unmark=unmark, hurry=self._submit_due)
        # Restored at start: the inline writes a crash may have lost, those of the events
        # logged after the last clean close's marker (None: every event; so too when the
        # store's inline pack was found unsound and made anew). Read before this
        # run logs anything: what it logs later is folded, so kept, by this run itself.
        self._every = store.inline_lost()  # the restore must cover every event held
        mark_at = None if self._every else read_mark(data_dir, host.log.key_at)
        self._lost: set[Key] | None = None if mark_at is None else host.log.keys_after(mark_at)
        self._restored = False  # the start's restore has ended (the marker may move on)
        self._mark_epoch = host.log.sync_epoch  # the log's failed fsyncs at the last mark
        self._tasks: set[asyncio.Task[None]] = set()

    def _later(self, write: Callable[[], None]) -> None:
        """InlineBlocks' `background`: submit its writer's pass `write_wait_s` from now (at
        once without a running loop: a thread's call, or no loop yet). It asks for one pass
        at a time (the next once that one found its queue empty)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._submit(write)
            return
        self._due = write
        self._due_at = loop.call_later(self.write_wait_s, self._submit_due)

    def _submit_due(self) -> None:
        """Submit the writer's pass now if one is waiting (every write asked for so far then
        lands before a job submitted after it)."""
        write, self._due = self._due, None
        if self._due_at is not None:
            self._due_at.cancel()
            self._due_at = None
        if write is not None:
            self._submit(write)

    def _submit(self, write: Callable[[], None]) -> None:
        try:
            self.pool.submit(write)
        except RuntimeError:  # closed: asked for after the close's last pass (not marked)
            self.blocks.unwritable()
            log.warning("inline blocks asked to be written after the close are not written")

    async def landed(self) -> None:
        """Return once every write asked for so far has landed (or failed: `blocks.failed`)."""
        self._submit_due()
        try:
            done = self.pool.submit(lambda: None)  # in order: after every pass asked for
        except RuntimeError:  # closed: every pass submitted before has ended
            return
        await asyncio.wrap_future(done)

    def start(self) -> None:
        """Restore in the background, then mark the writes durable every INLINE_MARK_S, and
        write again the writes that failed (`again_every`)."""
        loop = asyncio.get_running_loop()
        for coro in (self.restore(), self.mark_every(), self.again_every()):
            task = loop.create_task(coro)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def restore(self) -> None:
        """Keep again the inline blocks of the events in memory logged after the last clean
        close (all without its marker), in a thread: written unsynced, a crash of the
        machine may have lost them; the log holds them. Those before the marker were made
        durable then: an output unpinned since stays unpinned."""
        events = list(self.host.state.events.values())
        lost = self._lost
        n = await asyncio.to_thread(
            self.blocks.restore, events,
            (lambda ev: True) if lost is None else (lambda ev: ev.id in lost))
        if self._every and not self.blocks.failed:
            try:  # (not cleared: the next start restores every event again)
                await asyncio.to_thread(self.store.inline_restored)
            except BanzaiError as e:
                log.warning("inline outputs: %s", e)
        self._restored = True
        log.info("inline outputs restored: %d events' blocks written again (%s)", n,
                 "every event: no sound marker" if lost is None else
                 f"{len(lost)} logged since the last clean close")

    async def mark_every(self) -> None:
        """Mark the inline writes durable every INLINE_MARK_S while the peer runs: after a
        crash, only the outputs logged since then are pinned again (even if unpinned)."""
        while True:
            await asyncio.sleep(INLINE_MARK_S)
            await self.mark_durable(closing=False)

    async def again_every(self) -> None:
        """Write again the inline writes that failed while the peer runs (`again`): with the
        log writable all along, on a peer alone, an output whose write failed was held
        nowhere until a restart (a write of the writer's that succeeds writes them too, but
        none may come: the runs wait for that output)."""
        wait = INLINE_AGAIN_S
        while True:
            await asyncio.sleep(wait)
            wait = await self.again(wait)

    async def again(self, wait_s: float) -> float:
        """One retry: the inline writes that failed (if any) are asked again and landed;
        returns the retry's next wait: doubled after `wait_s` (at most INLINE_AGAIN_MAX_S)
        while some still fail, INLINE_AGAIN_S once none waits."""
        if not self.blocks.has_unwritten:
            return INLINE_AGAIN_S
        self.blocks.write_again()
        await self.landed()
        if not self.blocks.has_unwritten:
            return INLINE_AGAIN_S
        return min(wait_s * 2, INLINE_AGAIN_MAX_S)

    async def mark_durable(self, closing: bool = True) -> None:
        """Make the store's unsynced inline writes durable, then move the marker to the log's
        last event (the next start restores only later ones): at a clean close once the
        inline writer has drained, and while running (`closing` False) once the writes
        asked for so far have landed. Not if some were not written (a full disk) or the
        start's restore did not end: the old marker stays true."""
        if not self._restored or self.blocks.failed:
            if closing:
                log.info("inline outputs not marked durable (%s): the next start writes "
                         "again those logged since the last mark", "some writes failed"
                         if self.blocks.failed else "the start's restore did not end")
            return
        eventlog = self.host.log
        try:
            rowid = eventlog.last_rowid()  # on the loop: the connection is the loop's
            key = eventlog.key_at(rowid)
        except sqlite3.Error as e:
            log.warning("inline outputs not marked durable: %s", e)
            return
        # An fsync of the log that failed since the last mark may have dropped pages of the
        # events it would cover: then this one does not move it (`since`).
        since, self._mark_epoch = self._mark_epoch, eventlog.sync_epoch
        if not closing:  # every event up to `rowid` was folded: its writes were asked for
            await self.landed()
            if self.blocks.failed:
                return

        def mark() -> None:
            self.store.sync_inline()
            eventlog.sync(since)  # the marked events are on disk before the marker
            write_mark(self.data_dir, rowid, key)

        try:
            await asyncio.to_thread(mark)
        except (OSError, BanzaiError) as e:  # StorageFull
            log.warning("inline outputs not marked durable (the next start writes again "
                        "those logged since the last mark): %s", e)

    async def stop(self) -> None:
        """Cancel the restore and the periodic marks (with the peer's other background
        tasks, before its last flush)."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def close(self) -> None:
        """After the peer's last flush: let the blocks still being written land, then mark
        them durable."""
        await self.stop()
        self._submit_due()
        await asyncio.to_thread(self.pool.shutdown)
        await self.mark_durable()
        self.store.close()
