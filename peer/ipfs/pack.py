"""The inline pack: the blocks and pins of inline outputs (peer.ipfs.inline) as rows of one
SQLite file, <root>/inline.sqlite, rather than two files each (a block file and a pin file).

Why: every replica of an inline output wrote both files, and each file creation cost this
host 50-70 us of kernel CPU plus its journal's share, on every peer (issue 12,
docs/benchmarks.md, "Inline outputs as rows of one file"). Here one writer pass is one
transaction, never fsynced: the event log is the durable copy of every inline block, and the
store's `sync_inline` (one syncfs of the file system, which covers this file's WAL) makes
them durable before the inline marker moves, as it did the files.

Safety. WAL journal with synchronous=NORMAL: a crash of the machine may lose the last
transactions (a prefix of the WAL survives: its frames are checksummed in a chain), never
corrupt the file. Every byte read back is hostile: a block is verified against its CID by
the caller (peer.ipfs.blocks.BlockStore), rows are paged by rowid (a key of another type
cannot loop a scan), a row longer than any block is not read, a text that is not UTF-8 is
read as its bytes (peer.log.sqlite.text_or_bytes, as every events.sqlite connection does).
Reads that gc relies on (`pinned`, `entries`, `get`) raise StoreError when the file cannot
be read, so a failed read never looks like "nothing pinned" (gc would then delete what is
pinned). One rule for a row that does not read back (a CID or key that is not one, a time
that is not one): what it stands for is not known, so nothing is freed for it. A pin row
makes `pinned` raise DataError (what it pins is not known: gc and retention hold back); a
block row is left out of gc's sweep (kept, logged once), never deleted unread. `has` and
`size` answer "absent" (the caller fetches it). A time ahead of the clock (a clock that ran
ahead) is known to be wrong, not what it stands for: it is set to now as it is read, and the
row ages from then (`_ahead`).

Unsound packs. Only `check` (the peer's start, under the store's exclusive lock: peer.ipfs.
inlineoutputs) judges the file: its schema, then SQLite's `quick_check` (a read of every
page: about a second per few hundred MB). A pack found unsound is moved aside
(`inline.sqlite.bad-<ns>`, kept for a post-mortem) and a new one made, fsynced, holding a
`restore` flag: until `restored` clears it, at this start and every later one, the inline
outputs keep again the blocks of every event they hold (the marker no longer covers what was
in the old pack, and a crash mid-restore must not forget that). Other opens never move the
file (a worker process finding it unsound just fails its reads).

Several processes share the file (SQLite's locks; a busy timeout for writes, a short one for
reads). Within one, a connection for writes and one for reads, each behind a lock, so a read
on the event loop never waits for a write's commit or checkpoint; a failed open of the read
connection is retried only after REOPEN_S (a read on the loop must not wait on every call).
A data dir of an earlier release has no pack: it is made at the first inline write; the
blocks and pins written then as files stay there and are read as before.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from peer.cids import is_key, parse_cid
from peer.dataentry import check_entry
from peer.errors import BanzaiError, DataError, StorageFull, StoreError
from peer.log.sqlite import connect

log = logging.getLogger("banzai.store")

PACK_FILE = "inline.sqlite"
SCHEMA_VERSION = 1
BUSY_TIMEOUT_MS = 5000  # a write waits this long for another process's
READ_BUSY_MS = 50  # a read (on the event loop, too) waits at most this long
REOPEN_S = 5.0  # after a failed open of the read connection, reads answer without retrying
JOURNAL_LIMIT_BYTES = 16 << 20  # the WAL is cut back to this after a checkpoint
VACUUM_PAGES = 512  # free pages given back after a gc that deleted rows
MAX_ROW_BYTES = 4 << 20  # a row longer than any block (a hostile one) is not read
PAGE_ROWS = 1024  # rows per query of a scan
# A pin's CID text or a block's key is shorter than this (a CID text: 512 characters at most,
# peer.cids; a key: a multihash in hex); a longer text or blob in those columns (or in a
# time's) is read cut short (`_cut`), a row that does not read back, never read whole.
MAX_NAME_CHARS = 1024
# A row's time (a pin's, a block's) later than the clock by more than this is set to now as
# it is read (`_ahead`): it ages from then (else retention would never unpin it, nor gc's
# grace end for it); up to this far ahead (a clock stepped back a little) it is taken as is.
AHEAD_SLACK_S = 60.0
_TABLES = {  # name -> (create statement, its columns)
    "blocks": ("CREATE TABLE IF NOT EXISTS blocks (key TEXT PRIMARY KEY, data BLOB NOT NULL,"
               " at REAL NOT NULL)", ["key", "data", "at"]),
    "pins": ("CREATE TABLE IF NOT EXISTS pins (cid TEXT PRIMARY KEY, at REAL NOT NULL)"
             " WITHOUT ROWID", ["cid", "at"]),
    "meta": ("CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v) WITHOUT ROWID",
             ["k", "v"]),
}


def _time(at: object) -> float | None:
    """A row's time (wall seconds, as `keep` writes it); None if it is not one (not a finite
    number, or below 0: a damaged or edited row)."""
    return float(at) if isinstance(at, int | float) and math.isfinite(at) and at >= 0 else None


def _cut(column: str) -> str:
    """SQL reading `column` as it is if it is a number or NULL, else (a text, a blob) its
    first MAX_NAME_CHARS + 1 characters (bytes): one past the longest name, so a value cut
    short still reads as too long (`_is_cid`, `_is_key`), never as a name."""
    return (f"CASE WHEN typeof({column}) IN ('text', 'blob') THEN "
            f"substr({column}, 1, {MAX_NAME_CHARS + 1}) ELSE {column} END")


def _is_key(key: object) -> bool:
    """Does a block row's key read back as one (`is_key`, at most MAX_NAME_CHARS)?"""
    return isinstance(key, str) and len(key) <= MAX_NAME_CHARS and is_key(key)


def _is_cid(text: object) -> bool:
    """Does a pin row's CID read back as one (an earlier release's too: `lenient`)?"""
    if not isinstance(text, str):
        return False
    try:
        parse_cid(text, lenient=True)
    except (ValueError, BanzaiError):
        return False
    return True


class Unsound(sqlite3.DatabaseError):
    """The file is not a pack of this release (its schema or its pages)."""


def _error(e: sqlite3.Error, what: str) -> StoreError:
    if isinstance(e, sqlite3.OperationalError) and "full" in str(e):
        return StorageFull(f"cannot {what}: the disk is full")
    return StoreError(f"cannot {what}: the inline pack: {e}")


def _check_schema(db: sqlite3.Connection) -> None:
    version = db.execute("PRAGMA user_version").fetchone()[0]
    if version != SCHEMA_VERSION:
        raise Unsound(f"schema version {version}, not {SCHEMA_VERSION}")
    for name, (_, cols) in _TABLES.items():
        got = [r[1] for r in db.execute(f"PRAGMA table_info({name})")]
        if got != cols:
            raise Unsound(f"table {name} has columns {got}, not {cols}")


class InlinePack:
    """Inline blocks (multihash hex key -> bytes, with the time written) and pins (CID
    text, with the time pinned) of one store; the file is made at the first write. Writes
    raise StoreError (StorageFull); reads as the module's docstring says."""

    def __init__(self, root: Path, clock: Callable[[], float] = time.monotonic) -> None:
        self.path = root / PACK_FILE
        check_entry(self.path, "file", "the store's inline pack")
        self._clock = clock
        self._w: sqlite3.Connection | None = None
        self._r: sqlite3.Connection | None = None
        self._wlock = threading.Lock()
        self._rlock = threading.Lock()
        self._failed: tuple[float, str] | None = None  # the read connection's failed open
        self._left_out: tuple[int, list[str]] = (0, [])  # block rows gc left out: logged

    # --- connections ------------------------------------------------------------------------

    def _connect_writer(self) -> sqlite3.Connection:
        db = connect(str(self.path), timeout=BUSY_TIMEOUT_MS / 1000,
                     check_same_thread=False, isolation_level=None)
        try:
            db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            if db.execute("PRAGMA user_version").fetchone()[0] == 0:  # new
                db.execute("PRAGMA auto_vacuum=INCREMENTAL")  # (before WAL, or ignored)
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("BEGIN IMMEDIATE")
                if db.execute("PRAGMA user_version").fetchone()[0] == 0:  # still: ours
                    for create, _ in _TABLES.values():
                        db.execute(create)
                    db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
                db.execute("COMMIT")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute(f"PRAGMA journal_size_limit={JOURNAL_LIMIT_BYTES}")
            _check_schema(db)
        except BaseException:
            db.close()
            raise
        return db

    def _writer(self) -> sqlite3.Connection:
        if self._w is None:
            self._w = self._connect_writer()
        return self._w

    def _reader(self) -> sqlite3.Connection | None:
        """The read connection, None while there is no pack (or one not yet made whole by
        its writer); StoreError while its open failed less than REOPEN_S ago."""
        if self._r is not None:
            return self._r
        if self._failed is not None and self._clock() - self._failed[0] < REOPEN_S:
            raise StoreError(f"the inline pack cannot be read: {self._failed[1]}")
        if not self.path.exists():
            return None  # nothing kept yet (by any process)
        try:
            db = connect(str(self.path), timeout=READ_BUSY_MS / 1000,
                         check_same_thread=False, isolation_level=None)
            try:
                db.execute(f"PRAGMA busy_timeout={READ_BUSY_MS}")
                db.execute("PRAGMA query_only=1")
                if db.execute("PRAGMA user_version").fetchone()[0] == 0:
                    db.close()
                    return None  # being made by its writer, now
                _check_schema(db)
            except BaseException:
                db.close()
                raise
        except sqlite3.Error as e:
            self._failed = (self._clock(), str(e))
            log.error("the inline pack %s cannot be read (tried again in %.0f s): %s",
                      self.path, REOPEN_S, e)
            raise StoreError(f"the inline pack cannot be read: {e}") from e
        self._failed = None
        self._r = db
        return db

    def close(self) -> None:
        """Close both connections (a later use opens them again)."""
        for lock, attr in ((self._wlock, "_w"), (self._rlock, "_r")):
            with lock:
                db = getattr(self, attr)
                setattr(self, attr, None)
                if db is not None:
                    db.close()

    # --- the start's check -------------------------------------------------------------------

    def check(self) -> bool:
        """Judge the pack (call under the store's exclusive lock, before any write): an
        unsound one is moved aside and a new one made with the `restore` flag. True while
        that flag is set (the inline outputs are to keep again every event's blocks)."""
        self.close()
        if not self.path.exists():
            return False
        try:
            db = self._connect_writer()
            try:
                rows = db.execute("PRAGMA quick_check").fetchall()
                if rows != [("ok",)]:
                    raise Unsound("; ".join(str(r[0]) for r in rows[:5]))
                flag = db.execute("SELECT v FROM meta WHERE k = 'restore'").fetchone()
            finally:
                db.close()
        except sqlite3.OperationalError as e:  # not its content: cannot open, lock or read
            raise _error(e, "check the inline pack") from e
        except sqlite3.DatabaseError as e:  # Unsound, "not a database", "malformed"
            self._move_aside(str(e))
            return True
        return flag is not None

    def _move_aside(self, why: str) -> None:
        aside = self.path.with_name(f"{PACK_FILE}.bad-{time.time_ns()}")
        try:
            for suffix in ("", "-wal", "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    os.rename(f"{self.path}{suffix}", f"{aside}{suffix}")
            db = self._connect_writer()
            try:
                db.execute("INSERT OR REPLACE INTO meta (k, v) VALUES ('restore', 1)")
                db.execute("PRAGMA wal_checkpoint(FULL)")  # the flag in the file, fsynced
            finally:
                db.close()
            fd = os.open(self.path.parent, os.O_RDONLY)  # ... and the renames and the file
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except (OSError, sqlite3.Error) as e:
            raise StoreError(f"cannot replace the unsound inline pack {self.path}: {e}") from e
        log.error("the inline pack %s is not sound (%s): moved to %s; the inline outputs of "
                  "every event held are kept again", self.path, why, aside)

    # --- reads -------------------------------------------------------------------------------

    def _read(self, sql: str, args: tuple[object, ...]) -> list[tuple[Any, ...]]:
        """The rows of a query; StoreError if the pack cannot be read."""
        with self._rlock:
            db = self._reader()
            if db is None:
                return []
            try:
                return db.execute(sql, args).fetchall()
            except sqlite3.Error as e:
                raise _error(e, "read") from e

    def _absent_on_error(self, sql: str, args: tuple[object, ...]) -> list[tuple[Any, ...]]:
        try:
            return self._read(sql, args)
        except StoreError as e:
            log.debug("%s", e)  # (the failed open was logged once)
            return []

    def get(self, key: str) -> bytes | None:
        """The bytes kept under `key` (not verified: the caller checks them), or None;
        StoreError if the pack cannot be read."""
        rows = self._read("SELECT data FROM blocks WHERE key = ? AND typeof(data) = 'blob'"
                          f" AND length(data) <= {MAX_ROW_BYTES}", (key,))
        data = rows[0][0] if rows else None
        return data if isinstance(data, bytes) else None

    def has(self, key: str) -> bool:
        """Whether a block is kept under `key` (False if the pack cannot be read)."""
        return bool(self._absent_on_error(
            "SELECT 1 FROM blocks WHERE key = ? AND typeof(data) = 'blob'", (key,)))

    def size(self, key: str) -> int | None:
        rows = self._absent_on_error(
            "SELECT length(data) FROM blocks WHERE key = ? AND typeof(data) = 'blob'", (key,))
        n = rows[0][0] if rows else None
        return n if isinstance(n, int) else None

    def pinned(self) -> dict[str, float]:
        """Every pin's CID text as stored -> when it was pinned (wall seconds); StoreError if
        the pack cannot be read, DataError if a row does not read back (its CID not text,
        not UTF-8 or not a CID; its time not a number `_time` takes): what it pins, or since
        when, is not known, so gc and retention (which unpins the oldest first) are held back
        until the row is mended or removed. CIDs and times are read cut short (`_cut`); a
        time ahead of the clock is read as now (`_ahead`)."""
        out: dict[str, float] = {}
        damaged: list[str] = []
        now, ahead = time.time(), []
        for c, at in self._read(f"SELECT {_cut('cid')}, {_cut('at')} FROM pins", ()):
            when = _time(at)
            if when is None or not _is_cid(c):
                damaged.append(f"({c!r:.64}, {at!r:.32})")
                continue
            if when > now + AHEAD_SLACK_S:
                ahead.append(c)
                when = now
            out[c] = when
        self._ahead("pins", "cid", ahead, now)
        if damaged:
            raise DataError(
                f"{self.path}: the inline pack's pins table holds {len(damaged)} row(s) whose "
                f"CID or time does not read back ((cid, at): {', '.join(damaged[:3])}"
                f"{', ...' if len(damaged) > 3 else ''}): what they pin, or since when, is not "
                "known, so this peer unpins nothing and collects no garbage until each is "
                "mended or removed (or the file is restored from a backup)", field="pins")
        return out

    def has_pin(self, cid: str) -> bool:
        return bool(self._read("SELECT 1 FROM pins WHERE cid = ?", (cid,)))

    def entries(self) -> Iterator[tuple[int, str, float, int]]:
        """(rowid, key, time written, length) of every block row that reads back, read
        PAGE_ROWS at a time in rowid order (gc's sweep); StoreError if unreadable. A row
        whose key is not a block's (not text, not UTF-8, not `_is_key`) or whose time is not
        one (`_time`) is left out: kept, never freed unread (`_leave_out`). Keys and times
        are read cut short (`_cut`); a time ahead of the clock is read as now (`_ahead`)."""
        last, left = 0, 0  # (left: rows left out; shown: the first few, as logs show them)
        shown: list[str] = []
        now, ahead = time.time(), []
        while True:
            rows = self._read(f"SELECT rowid, {_cut('key')}, {_cut('at')}, length(data) FROM "
                              f"blocks WHERE rowid > ? ORDER BY rowid LIMIT {PAGE_ROWS}",
                              (last,))
            for rowid, key, at, n in rows:
                when = _time(at)
                if when is None or not _is_key(key):
                    left += 1
                    if len(shown) < 3:
                        shown.append(f"{rowid} ({key!r:.64}, {at!r:.32})")
                    continue
                if when > now + AHEAD_SLACK_S:
                    ahead.append(rowid)
                    when = now
                yield int(rowid), key, when, n if isinstance(n, int) else 0
            if len(rows) < PAGE_ROWS:
                break
            last = int(rows[-1][0])
        self._leave_out(left, shown)
        self._ahead("blocks", "rowid", ahead, now)

    def _ahead(self, table: str, key: str, keys: list[Any], now: float) -> None:
        """Set to `now` the time of the rows of `table` (by `key`: `keys`) a read found later
        than the clock past AHEAD_SLACK_S (a clock that ran ahead when they were written, a
        damaged or edited row): read as now, they age from now on. Logged; if the write
        fails (read-only, a full disk), they are read as now again at the next read."""
        if not keys:
            return
        try:
            self._write(f"set {table} times ahead of the clock to now", (
                (f"UPDATE {table} SET at = ? WHERE {key} = ? AND at > ?",
                 [(now, k, now + AHEAD_SLACK_S) for k in keys]),))
        except StoreError as e:
            log.warning("%s: %d %s row(s) hold a time ahead of the clock, read as now: %s",
                        self.path, len(keys), table, e)
            return
        log.warning("%s: %d %s row(s) held a time ahead of the clock (a clock that ran ahead "
                    "when they were written, or a damaged row): set to now, they age from "
                    "now on", self.path, len(keys), table)

    def _leave_out(self, left: int, shown: list[str]) -> None:
        """Log the block rows a sweep left out (`left`, the first of them `shown`), once
        while they stay the same."""
        if left and (left, shown) != self._left_out:
            log.warning("%s: %d block row(s) do not read back (a key that is not a block's, "
                        "or a time that is not one; rowid (key, at): %s%s): left out of gc "
                        "(kept); delete them, or restore the file from a backup", self.path,
                        left, ", ".join(shown), ", ..." if left > 3 else "")
        self._left_out = (left, shown)

    def file_bytes(self) -> int:
        """The pack's bytes on disk (its file and WAL)."""
        total = 0
        for suffix in ("", "-wal"):
            with contextlib.suppress(OSError):
                total += os.stat(f"{self.path}{suffix}").st_size
        return total

    # --- writes ------------------------------------------------------------------------------

    def _write(self, what: str, stmts: Iterable[tuple[str, Iterable[tuple[object, ...]]]],
               ) -> int:
        """Run `stmts` (sql, rows) in one transaction, not fsynced; rows changed."""
        with self._wlock:
            try:
                db = self._writer()
                db.execute("BEGIN IMMEDIATE")
                try:
                    before = db.total_changes
                    for sql, rows in stmts:
                        db.executemany(sql, rows)
                    changed = db.total_changes - before
                    db.execute("COMMIT")
                except BaseException:
                    with contextlib.suppress(sqlite3.Error):
                        db.execute("ROLLBACK")
                    raise
                return changed
            except sqlite3.Error as e:
                raise _error(e, what) from e

    def keep(self, blocks: Mapping[str, bytes], pins: Iterable[str]) -> None:
        """Keep `blocks` (key -> bytes, verified by the caller; a key kept already keeps its
        row) and pin `pins`, in one transaction, not fsynced."""
        now = time.time()
        self._write("keep inline blocks", (
            ("INSERT OR IGNORE INTO blocks (key, data, at) VALUES (?, ?, ?)",
             [(k, d, now) for k, d in blocks.items()]),
            ("INSERT OR IGNORE INTO pins (cid, at) VALUES (?, ?)", [(p, now) for p in pins])))

    def restored(self) -> None:
        """The inline outputs kept again every event's blocks: clear the `restore` flag."""
        self._write("clear the restore flag", (("DELETE FROM meta WHERE k = ?", [("restore",)]),))

    def unpin(self, cid: str) -> bool:
        """Remove the pin `cid`; False if it was not pinned here (or there is no pack)."""
        if not self.path.exists():
            return False
        return self._write("unpin", (("DELETE FROM pins WHERE cid = ?", [(cid,)]),)) > 0

    def delete(self, rowids: Iterable[int]) -> None:
        """Delete the block rows `rowids` (gc: the rows its sweep read, `entries`), then give
        back up to VACUUM_PAGES free pages."""
        rows = [(r,) for r in rowids]
        if not rows:
            return
        self._write("delete inline blocks", (("DELETE FROM blocks WHERE rowid = ?", rows),))
        with self._wlock, contextlib.suppress(sqlite3.Error):
            # executescript steps the pragma to its end (`execute` frees one page)
            self._writer().executescript(f"PRAGMA incremental_vacuum({VACUUM_PAGES});")

    def delete_key(self, key: str) -> None:
        """Delete the row of `key` (a corrupt one)."""
        self._write("delete an inline block", (("DELETE FROM blocks WHERE key = ?", [(key,)]),))
