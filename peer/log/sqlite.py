"""SQLite persistence of the event log, the quarantine of rows that cannot be replayed and
the per-origin floors (MeshState.floors). Not thread-safe: owned by the event loop."""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from peer.log.events import Event

log = logging.getLogger(__name__)

LOGGED_SKIPS = 10  # rows quarantined by one load that are logged one by one (then a total)


class EventLog:
    """SQLite persistence of events; `append` commits before it returns. `skipped` counts
    the rows `load` set aside (quarantined) because they are not valid events."""

    def __init__(self, path: Path, max_payload_bytes: int = 1 << 30) -> None:
        self.path = path
        self.skipped = 0
        self.max_payload_bytes = max_payload_bytes
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS events (origin TEXT NOT NULL, seq INTEGER NOT NULL, "
            "hlc INTEGER NOT NULL, type INTEGER NOT NULL, payload TEXT NOT NULL, "
            "PRIMARY KEY (origin, seq))")
        self._db.execute("CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT)")
        # Rows moved out of `events` because they could not be replayed: kept for a human.
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS quarantine (origin, seq, hlc, type, payload, "
            "reason TEXT NOT NULL, at_ms INTEGER NOT NULL)")
        self._db.execute("CREATE TABLE IF NOT EXISTS floors (origin TEXT PRIMARY KEY, "
                         "seq INTEGER NOT NULL)")

    def append(self, events: Sequence[Event]) -> None:
        """Persist events durably (one transaction); duplicates are ignored."""
        if not events:
            return
        self._db.execute("BEGIN")
        self._db.executemany(
            "INSERT OR IGNORE INTO events VALUES (?, ?, ?, ?, ?)",
            [(e.origin, e.seq, e.hlc, int(e.type), json.dumps(e.payload, separators=(",", ":")))
             for e in events])
        self._db.execute("COMMIT")

    def load(self) -> Iterator[Event]:
        """Every valid event, in hlc order; an invalid row (an older release's bug, a damaged
        file) is quarantined (moved out of the log, counted, logged) rather than stopping the
        peer's start. The rows are moved once the iteration is over."""
        bad: list[tuple[int, str]] = []
        for rowid, origin, seq, hlc, typ, payload in self._db.execute(
                "SELECT rowid, origin, seq, hlc, type, payload FROM events ORDER BY hlc"):
            try:
                if isinstance(payload, str | bytes) and len(payload) > self.max_payload_bytes:
                    raise ValueError(f"payload of {len(payload)} bytes")
                ev = Event(origin, seq, hlc, typ, json.loads(payload))
            except (ValueError, TypeError) as e:  # InvalidEvent, bad JSON
                bad.append((rowid, f"{e!s:.300}"))
                self._note(len(bad), origin, seq, str(e))
                continue
            yield ev
        self.skipped += len(bad)
        self._move("rowid = ?", [(rowid,) for rowid, _ in bad], [r for _, r in bad])
        if len(bad) > LOGGED_SKIPS:
            log.warning("%s: quarantined %d invalid events in all", self.path, len(bad))

    def _note(self, n: int, origin: Any, seq: Any, reason: str) -> None:
        if n <= LOGGED_SKIPS:
            log.warning("%s: quarantined the event %s/%s: %s", self.path, str(origin)[:16],
                        seq, reason[:300])

    def quarantine(self, bad: Sequence[tuple[tuple[str, int], str]]) -> None:
        """Move the rows of these (event id, reason) out of the log into the quarantine
        table (one transaction), logging each."""
        for n, ((origin, seq), reason) in enumerate(bad, 1):
            self._note(n, origin, seq, reason)
        self._move("origin = ? AND seq = ?", [i for i, _ in bad], [r for _, r in bad])

    def _move(self, where: str, keys: Sequence[tuple[Any, ...]], reasons: Sequence[str]) -> None:
        if not keys:
            return
        now = int(time.time() * 1000)
        self._db.execute("BEGIN")
        for key, reason in zip(keys, reasons, strict=True):
            self._db.execute(f"INSERT INTO quarantine SELECT origin, seq, hlc, type, payload, "
                             f"?, ? FROM events WHERE {where}", (reason, now, *key))
            self._db.execute(f"DELETE FROM events WHERE {where}", key)
        self._db.execute("COMMIT")

    def quarantined(self) -> int:
        """How many rows the quarantine holds (over every start)."""
        return int(self._db.execute("SELECT count(*) FROM quarantine").fetchone()[0])

    def quarantined_max_seq(self, origin: str) -> int:
        """The highest seq of `origin` in the quarantine (0 if none)."""
        row = self._db.execute("SELECT max(seq) FROM quarantine WHERE origin = ? AND "
                               "typeof(seq) = 'integer'", (origin,)).fetchone()
        return int(row[0] or 0)

    def delete(self, ids: Iterable[tuple[str, int]]) -> None:
        """Drop these events' rows (events set aside on purpose, see `set_floor`)."""
        self._db.execute("BEGIN")
        self._db.executemany("DELETE FROM events WHERE origin = ? AND seq = ?", list(ids))
        self._db.execute("COMMIT")

    def floors(self) -> dict[str, int]:
        return {str(o): int(s) for o, s in self._db.execute("SELECT origin, seq FROM floors")}

    def set_floor(self, origin: str, seq: int) -> None:
        self._db.execute("INSERT INTO floors VALUES (?, ?) ON CONFLICT(origin) DO UPDATE "
                         "SET seq = max(seq, excluded.seq)", (origin, seq))

    def get_meta(self, k: str) -> str | None:
        row = self._db.execute("SELECT v FROM meta WHERE k = ?", (k,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, k: str, v: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (k, v))

    def close(self) -> None:
        self._db.close()
