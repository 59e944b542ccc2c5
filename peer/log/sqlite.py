"""SQLite persistence of the event log. Not thread-safe: owned by the event loop."""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path

from peer.log.events import Event
from peer.log.signing import Batch

log = logging.getLogger(__name__)

LOGGED_SKIPS = 10  # rows skipped by one load that are logged one by one (then a total)


class EventLog:
    """SQLite persistence of events; `append` commits before it returns. `skipped` counts
    the rows `load` left out because they are not valid events."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.skipped = 0
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS events (origin TEXT NOT NULL, seq INTEGER NOT NULL, "
            "hlc INTEGER NOT NULL, type INTEGER NOT NULL, payload TEXT NOT NULL, "
            "PRIMARY KEY (origin, seq))")
        self._db.execute("CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT)")
        self._batch_ids: dict[bytes, int] = {}  # signature -> batches.id
        self._migrate()

    def _migrate(self) -> None:
        """Signed batches (this release): a table of batches and a reference on each event
        row. Rows of 0.1.0 keep their columns byte for byte; their reference is NULL."""
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS batches (id INTEGER PRIMARY KEY, signer TEXT NOT NULL, "
            "origin TEXT NOT NULL, first INTEGER NOT NULL, hashes BLOB NOT NULL, "
            "key BLOB NOT NULL, admit BLOB, sig BLOB NOT NULL UNIQUE)")
        cols = {r[1] for r in self._db.execute("PRAGMA table_info(events)")}
        if "batch" not in cols:
            self._db.execute("ALTER TABLE events ADD COLUMN batch INTEGER")

    def _batch_id(self, b: Batch) -> int:
        """The row id of `b`, inserted if new (inside the caller's transaction)."""
        bid = self._batch_ids.get(b.sig)
        if bid is None:
            self._db.execute(
                "INSERT OR IGNORE INTO batches (signer, origin, first, hashes, key, admit, sig) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (b.signer, b.origin, b.first, b.hashes, b.key, b.admit, b.sig))
            bid = int(self._db.execute("SELECT id FROM batches WHERE sig = ?",
                                       (b.sig,)).fetchone()[0])
            self._batch_ids[b.sig] = bid
        return bid

    def _rows(self, events: Sequence[Event]) -> list[tuple[object, ...]]:
        return [(e.origin, e.seq, e.hlc, int(e.type),
                 json.dumps(e.payload, separators=(",", ":")),
                 None if e.att is None else self._batch_id(e.att)) for e in events]

    def attest(self, events: Sequence[Event]) -> None:
        """Record the batches now set on stored events (`att`) in one transaction."""
        if not events:
            return
        self._db.execute("BEGIN")
        self._db.executemany("UPDATE events SET batch = ? WHERE origin = ? AND seq = ?",
                             [(self._batch_id(e.att), e.origin, e.seq) for e in events])
        self._db.execute("COMMIT")

    def replace(self, ev: Event) -> None:
        """Store `ev` in place of the event with its (origin, seq) (the conflict rule)."""
        self._db.execute("BEGIN")
        self._db.execute(
            "INSERT OR REPLACE INTO events (origin, seq, hlc, type, payload, batch) "
            "VALUES (?, ?, ?, ?, ?, ?)", self._rows([ev])[0])
        self._db.execute("COMMIT")

    def append(self, events: Sequence[Event]) -> None:
        """Persist events durably (one transaction); duplicates are ignored."""
        if not events:
            return
        self._db.execute("BEGIN")
        self._db.executemany(
            "INSERT OR IGNORE INTO events (origin, seq, hlc, type, payload, batch) "
            "VALUES (?, ?, ?, ?, ?, ?)", self._rows(events))
        self._db.execute("COMMIT")

    def load(self) -> Iterator[Event]:
        """Every valid event, in hlc order; an invalid row (an older release's bug, a damaged
        file) is skipped, counted and logged rather than stopping the peer's start."""
        skipped = 0
        batches = self._load_batches()
        for origin, seq, hlc, typ, payload, bid in self._db.execute(
                "SELECT origin, seq, hlc, type, payload, batch FROM events ORDER BY hlc"):
            try:
                ev = Event(origin, seq, hlc, typ, json.loads(payload))
                if bid is not None and bid in batches:
                    object.__setattr__(ev, "att", batches[bid])
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

    def _load_batches(self) -> dict[int, Batch]:
        out: dict[int, Batch] = {}
        for bid, *cols in self._db.execute(
                "SELECT id, signer, origin, first, hashes, key, admit, sig FROM batches"):
            b = Batch(*cols)
            out[bid] = b
            self._batch_ids[b.sig] = bid
        return out

    def signer_keys(self) -> list[tuple[str, bytes]]:
        """(signer, key) of the batches on disk, oldest first."""
        return [(str(s), bytes(k)) for s, k in self._db.execute(
            "SELECT signer, key FROM batches WHERE signer = origin ORDER BY id")]

    def get_meta(self, k: str) -> str | None:
        row = self._db.execute("SELECT v FROM meta WHERE k = ?", (k,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, k: str, v: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (k, v))

    def close(self) -> None:
        self._db.close()
