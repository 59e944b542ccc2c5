"""The inline pack: the blocks and pins of inline outputs (peer.ipfs.inline) as rows of one
SQLite file, <root>/inline.sqlite, rather than two files each (a block file and a pin file).

Why: every replica of an inline output wrote both files, and each file creation cost this
host 50-70 us of kernel CPU plus its journal's share, on every peer (issue 12,
docs/benchmarks.md: with those writes skipped, three peers' CPU per task fell from 2.2-2.5 to
1.4-1.5 ms). Here one writer pass is one transaction, never fsynced: the event log is the
durable copy of every inline block, and the store's `sync_inline` (one syncfs of the file
system, which covers this file's WAL) marks them durable as it did the files.

Safety: WAL journal with synchronous=NORMAL, so a crash of the machine may lose the last
transactions but never corrupts the file; a file that is not a sound pack when opened (torn
by a disk fault, overwritten, another program's) is moved aside (`inline.sqlite.bad-<time>`)
and a new one made, and `recreated` tells the inline outputs to keep again the blocks of
every event they hold (the marker no longer covers what was in it). Every row read is
hostile: its block is verified against its CID by the caller (peer.ipfs.blocks.BlockStore)
and a pin that does not parse is ignored. Safe for several processes (SQLite's locks, a
busy timeout); within one, a connection for writes and one for reads, each behind a lock, so
a read on the event loop never waits for a write's commit or checkpoint.

A data dir of an earlier release has no pack: it is made at the first inline write; its
blocks and pins written as files stay there and are read as before.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

from peer.errors import StorageFull, StoreError

log = logging.getLogger("banzai.store")

PACK_FILE = "inline.sqlite"
SCHEMA_VERSION = 1
BUSY_TIMEOUT_MS = 5000  # another process's write (a worker's store on the same root)
JOURNAL_LIMIT_BYTES = 16 << 20  # the WAL is cut back to this after a checkpoint
VACUUM_PAGES = 512  # free pages given back after a gc that deleted rows
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS blocks (key TEXT PRIMARY KEY, data BLOB NOT NULL,"
    " at REAL NOT NULL)",
    "CREATE TABLE IF NOT EXISTS pins (cid TEXT PRIMARY KEY) WITHOUT ROWID",
)


def _error(e: sqlite3.Error, what: str) -> StoreError:
    if isinstance(e, sqlite3.OperationalError) and "full" in str(e):
        return StorageFull(f"cannot {what}: the disk is full")
    return StoreError(f"cannot {what}: the inline pack: {e}")


class InlinePack:
    """Inline blocks (multihash hex key -> bytes, with the time written) and pins (CID
    text) of one store; the file is made at the first write. Raises StoreError (StorageFull)
    for a write that fails; a read that fails is logged and answers "absent"."""

    def __init__(self, root: Path) -> None:
        self.path = root / PACK_FILE
        self._w: sqlite3.Connection | None = None
        self._r: sqlite3.Connection | None = None
        self._wlock = threading.Lock()
        self._rlock = threading.Lock()
        self.recreated = False  # a pack found unsound was moved aside by this process

    # --- connections ------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000,
                             check_same_thread=False, isolation_level=None)
        try:
            db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            if db.execute("PRAGMA user_version").fetchone()[0] == 0:  # new: before WAL
                db.execute("PRAGMA auto_vacuum=INCREMENTAL")
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute(f"PRAGMA journal_size_limit={JOURNAL_LIMIT_BYTES}")
            for stmt in _SCHEMA:
                db.execute(stmt)
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version == 0:
                db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            elif version != SCHEMA_VERSION:
                raise sqlite3.DatabaseError(f"schema version {version}, not {SCHEMA_VERSION}")
            cols = [r[1] for r in db.execute("PRAGMA table_info(blocks)")]
            if cols != ["key", "data", "at"]:
                raise sqlite3.DatabaseError(f"table blocks has columns {cols}")
        except BaseException:
            db.close()
            raise
        return db

    def _open(self) -> sqlite3.Connection:
        """A new connection; a file that is not a sound pack is moved aside first (logged)."""
        try:
            return self._connect()
        except sqlite3.DatabaseError as e:
            if isinstance(e, sqlite3.OperationalError):
                raise  # cannot open, lock or write it (permissions, a full disk, another
                # process's lock held past the timeout): not its content
            aside = self.path.with_name(f"{PACK_FILE}.bad-{time.time_ns()}")
            for suffix in ("", "-wal", "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    Path(f"{self.path}{suffix}").rename(f"{aside}{suffix}")
            log.error("the inline pack %s is not sound (%s): moved to %s; the inline "
                      "outputs of every event held are kept again", self.path, e, aside)
            self.recreated = True
            return self._connect()

    def _writer(self) -> sqlite3.Connection:
        if self._w is None:
            self._w = self._open()
        return self._w

    def _reader(self) -> sqlite3.Connection | None:
        if self._r is None:
            if not self.path.exists():
                return None  # nothing kept yet (by any process)
            self._r = self._open()
        return self._r

    def probe(self) -> bool:
        """Open the pack if there is one (moving an unsound one aside); `recreated`."""
        with self._rlock:
            try:
                self._reader()
            except sqlite3.Error as e:
                log.error("the inline pack %s cannot be opened: %s", self.path, e)
        return self.recreated

    def close(self) -> None:
        for lock, attr in ((self._wlock, "_w"), (self._rlock, "_r")):
            with lock:
                db = getattr(self, attr)
                setattr(self, attr, None)
                if db is not None:
                    db.close()

    # --- reads -------------------------------------------------------------------------------

    def _read(self, sql: str, args: tuple[object, ...]) -> list[tuple[object, ...]]:
        with self._rlock:
            try:
                db = self._reader()
                return [] if db is None else db.execute(sql, args).fetchall()
            except sqlite3.Error as e:
                log.error("the inline pack %s cannot be read: %s", self.path, e)
                return []

    def get(self, key: str) -> bytes | None:
        """The bytes kept under `key` (not verified: the caller checks them), or None."""
        rows = self._read("SELECT data FROM blocks WHERE key = ?", (key,))
        data = rows[0][0] if rows else None
        return data if isinstance(data, bytes) else None

    def has(self, key: str) -> bool:
        return bool(self._read("SELECT 1 FROM blocks WHERE key = ? AND typeof(data) = 'blob'",
                               (key,)))

    def size(self, key: str) -> int | None:
        rows = self._read("SELECT length(data) FROM blocks WHERE key = ?"
                          " AND typeof(data) = 'blob'", (key,))
        n = rows[0][0] if rows else None
        return n if isinstance(n, int) else None

    def pins(self) -> list[str]:
        """Every pin's CID text as stored (the caller parses them)."""
        return [r[0] for r in self._read("SELECT cid FROM pins", ()) if isinstance(r[0], str)]

    def entries(self) -> Iterator[tuple[str, float, int]]:
        """(key, time written, length) of every block, read in pages (gc's sweep)."""
        last = ""
        while True:
            rows = self._read("SELECT key, at, length(data) FROM blocks WHERE key > ?"
                              " ORDER BY key LIMIT 1024", (last,))
            for key, at, n in rows:
                if isinstance(key, str):
                    yield key, at if isinstance(at, float) else 0.0, n if isinstance(n, int) else 0
            if len(rows) < 1024:
                return
            last = str(rows[-1][0])

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
            ("INSERT OR IGNORE INTO pins (cid) VALUES (?)", [(p,) for p in pins])))

    def replace(self, key: str, data: bytes) -> None:
        """Write `key`'s row again (a corrupt one, with verified bytes)."""
        self._write("repair an inline block", (
            ("INSERT OR REPLACE INTO blocks (key, data, at) VALUES (?, ?, ?)",
             [(key, data, time.time())]),))

    def unpin(self, cid: str) -> bool:
        """Remove the pin `cid`; False if it was not pinned here."""
        if not self.path.exists():
            return False
        return self._write("unpin", (("DELETE FROM pins WHERE cid = ?", [(cid,)]),)) > 0

    def delete(self, keys: Iterable[str]) -> None:
        """Delete the blocks `keys` (gc), then give back up to VACUUM_PAGES free pages."""
        rows = [(k,) for k in keys]
        if not rows:
            return
        self._write("delete inline blocks", (("DELETE FROM blocks WHERE key = ?", rows),))
        with self._wlock, contextlib.suppress(sqlite3.Error):
            self._writer().execute(f"PRAGMA incremental_vacuum({VACUUM_PAGES})").fetchall()
