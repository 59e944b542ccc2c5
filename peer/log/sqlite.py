"""SQLite persistence of the event log. Not thread-safe: owned by the event loop.

A commit that holds an acknowledged kind of event (DURABLE_TYPES: a submission, a cancel, a
PROVIDE) is durable when `append` returns (synchronous=FULL: one fsync of the WAL, which
covers every earlier commit too) unless the caller passes sync=False and calls `sync` later
(off the loop); others are written without waiting for the disk (NORMAL: they survive a
crash of the process, not a power loss). Callers batch: the node writes all events of a loop
turn in one transaction (group commit)."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path

from peer.errors import StorageFull, StoreError, disk_full
from peer.log.events import Event, EventType

log = logging.getLogger(__name__)

# Events that the API acknowledges or that announce stored blocks: written with an fsync.
DURABLE_TYPES = frozenset({EventType.JOB_SUBMITTED, EventType.JOB_CANCELLED, EventType.PROVIDE})
LOGGED_SKIPS = 10  # rows skipped by one load that are logged one by one (then a total)


class EventLog:
    """SQLite persistence of events; `append` commits (durably) before it returns or rolls
    back and raises. `skipped` counts the rows `load` left out because they are not valid
    events."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.skipped = 0
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # FULL per commit, see _sync
        self._full = False
        self._dir_synced = False
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS events (origin TEXT NOT NULL, seq INTEGER NOT NULL, "
            "hlc INTEGER NOT NULL, type INTEGER NOT NULL, payload TEXT NOT NULL, "
            "PRIMARY KEY (origin, seq))")
        self._db.execute("CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT)")

    def append(self, events: Sequence[Event], sync: bool | None = None) -> None:
        """Persist events (one transaction); duplicates are ignored. With `sync` (default:
        if any is of DURABLE_TYPES) they are on disk when this returns. On any failure
        nothing is written and the connection stays usable: StorageFull when the disk is
        full, StoreError for another SQLite failure, anything else as raised."""
        if not events:
            return
        rows = [(e.origin, e.seq, e.hlc, int(e.type),
                 json.dumps(e.payload, separators=(",", ":"))) for e in events]
        if sync is None:
            sync = any(e.type in DURABLE_TYPES for e in events)
        try:
            self._sync(sync)
            self._db.execute("BEGIN")
            self._db.executemany("INSERT OR IGNORE INTO events VALUES (?, ?, ?, ?, ?)", rows)
            self._db.execute("COMMIT")
        except BaseException as e:
            self._rollback()
            if disk_full(e):
                raise StorageFull(f"cannot write the event log {self.path}: the disk is "
                                  "full") from e
            if isinstance(e, sqlite3.Error):
                raise StoreError(f"cannot write the event log {self.path}: {e}") from e
            raise

    def sync(self) -> None:
        """Make every commit so far durable: fsync the WAL (what synchronous=FULL does at a
        commit; a checkpoint that moved frames to the database synced it first). Needs no
        connection: safe on any thread while the loop goes on. OSError if it fails."""
        for path in (Path(f"{self.path}-wal"), self.path):
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                continue  # no WAL: everything is in the database file
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            if not self._dir_synced:  # the WAL's directory entry, once
                fd = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
                self._dir_synced = True
            return

    def _sync(self, full: bool) -> None:
        """FULL: the next COMMIT fsyncs the WAL (and with it every earlier commit)."""
        if full != self._full:
            self._db.execute(f"PRAGMA synchronous={'FULL' if full else 'NORMAL'}")
            self._full = full

    def _rollback(self) -> None:
        """End a failed transaction (SQLite may have rolled it back already)."""
        if self._db.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("ROLLBACK")

    def load(self) -> Iterator[Event]:
        """Every valid event, in hlc order; an invalid row (an older release's bug, a damaged
        file) is skipped, counted and logged rather than stopping the peer's start."""
        skipped = 0
        for origin, seq, hlc, typ, payload in self._db.execute(
                "SELECT origin, seq, hlc, type, payload FROM events ORDER BY hlc"):
            try:
                ev = Event(origin, seq, hlc, typ, json.loads(payload))
            except (ValueError, TypeError) as e:  # InvalidEvent, bad JSON
                skipped += 1
                if skipped <= LOGGED_SKIPS:
                    log.warning("%s: skipped the invalid event %s/%s: %s", self.path,
                                str(origin)[:16], seq, e)
                continue
            yield ev
        self.skipped += skipped
        if skipped > LOGGED_SKIPS:
            log.warning("%s: skipped %d invalid events in all", self.path, skipped)

    def get_meta(self, k: str) -> str | None:
        row = self._db.execute("SELECT v FROM meta WHERE k = ?", (k,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, k: str, v: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (k, v))

    def close(self) -> None:
        self._db.close()
