"""SQLite persistence of the event log, the quarantine of rows that cannot be replayed and
the per-origin floors (MeshState.floors). Not thread-safe: owned by the event loop
(`stored_events` reads on a connection of its caller's, in any one thread).

A commit that holds an acknowledged kind of event (DURABLE_TYPES: a submission, a cancel, a
deletion, a PROVIDE) is durable when `append` returns (synchronous=FULL: one fsync of the WAL, which
covers every earlier commit too) unless the caller passes sync=False and calls `sync` later
(off the loop); others are written without waiting for the disk (NORMAL: they survive a
crash of the process, not a power loss). Callers batch: the node writes all events of a loop
turn in one transaction (group commit)."""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from peer.errors import DataError, StorageFull, StoreError, disk_full
from peer.log.events import MAX_CLOCK, MAX_ID_CHARS, MAX_OWN_SEQ, SET_TEXT, Event, EventType
from peer.log.lanes import SEPARATOR, owned_by, shown_origin
from peer.log.signing import Batch, stored_text
from peer.log.vacuum import (
    Converted,
    FileStats,
    VacuumConfig,
    convert,
    disk_free,
    file_stats,
    limit_wal,
    new_file,
    step,
)

log = logging.getLogger(__name__)

# Events that the API acknowledges or that announce stored blocks: written with an fsync.
# A JOB_DELETED too: a member's version vector covering it lets the others forget the
# tombstone past the grace (peer.log.tombs), so the member must not lose it to a power loss
# once its heads counted it (received ones stay below the heads until fsynced). Deletions
# are rare: one fsync each, off the loop (docs/benchmarks.md).
DURABLE_TYPES = frozenset({EventType.JOB_SUBMITTED, EventType.JOB_CANCELLED,
                           EventType.JOB_DELETED, EventType.PROVIDE})
BATCH_COLUMNS = "id, signer, origin, first, hashes, key, admit, sig"
LOGGED_SKIPS = 10  # rows quarantined by one load that are logged one by one (then a total)
# A probe after a failed write writes twice that write's size (its rows: payloads and this
# much per row for the other columns), at most this: `probe`
ROW_OVERHEAD_BYTES = 64
PROBE_MAX_BYTES = 16 << 20
PROBE_CACHE_KIB = 64  # the page cache while a probe writes that: all but this much spills
ORIGIN_ROWS_PER_DELETE = 10_000  # rows of an origin `delete_origins` drops per transaction
# A row the quarantine holds already is not added again: an event whose fold raises is not
# held, so anti-entropy brings it again, round after round. (The unary + drops e.seq's
# affinity, so that the lookup uses both columns of quarantine_id.)
NOT_QUARANTINED = ("NOT EXISTS (SELECT 1 FROM quarantine q WHERE q.origin = e.origin AND "
                   "q.seq = +e.seq AND q.payload = e.payload)")


# The bytes a quarantined row counts: its payload and reason (characters; NULL counts 0)
ROW_BYTES = ("coalesce(length(CAST(payload AS BLOB)), 0) + "
             "coalesce(length(CAST(reason AS BLOB)), 0)")
# The query of `load` and `stored_events`: one text, so that rows of equal hlc come in the
# same order from both (SQLite's plan for it decides that order). The texts come as their
# bytes, decoded by `_event`: one whose bytes are not UTF-8 (a flipped bit) is that row's
# fault, not the whole read's (the sqlite3 module would raise at it and end the read). An
# origin that is not a text (a blob) stays refused, as it was.
LOAD_SQL = ("SELECT rowid, CASE typeof(origin) WHEN 'text' THEN CAST(origin AS BLOB) END, seq, "
            "hlc, type, CAST(payload AS BLOB), batch FROM events ORDER BY hlc")
STORED_ROWS = 512  # rows `stored_events` reads at a time (and the batches they refer to)
STORED_BATCHES = 1024  # batches it keeps between reads (past that it forgets them all)


@dataclass(frozen=True)
class QuarantineConfig:
    """Bounds of the quarantine (rows set aside for a human, over every start): past either,
    the oldest rows go (counted in `EventLog.quarantine_dropped`). A member whose events the
    fold refuses could otherwise add a row per content it sends. ValueError at construction
    if a bound is below 1."""

    max_rows: int = 10_000
    max_bytes: int = 64 << 20

    def __post_init__(self) -> None:
        if self.max_rows < 1 or self.max_bytes < 1:
            raise ValueError("quarantine max_rows and max_bytes must be >= 1")


SQLITE_CORRUPT, SQLITE_NOTADB = 11, 26  # SQLite's (primary) result codes of a damaged file
SQLITE_CANTOPEN = 14  # ... of a file it cannot open (a directory, no permission)
SQLITE_IOERR_SHMSIZE = 4874  # (extended) a WAL file's shared memory (-shm) cannot grow
# A log is not opened with less than this free on its file system: SQLite needs room for its
# -shm (32 KiB) and -wal files before the first read, and the peer's start writes (its
# incarnation; the job index's tables on a new data dir); with less it failed at one of
# them as "disk I/O error", "the disk is full" or a traceback (session 46, helper h)
OPEN_MIN_FREE_BYTES = 1 << 20


def text_or_bytes(raw: bytes) -> str | bytes:
    """The `text_factory` of every connection to a log's file or to the store's inline pack
    (`connect`; peer.ipfs.pack): a TEXT value as a str if its bytes are UTF-8, else those
    bytes (a flipped bit, a hand edit). The sqlite3 module's default fails the whole read at
    such a value (OperationalError "Could not decode to UTF-8"), and a cursor cannot step
    past it; with this, each read's check of a row's types (a str where the file holds
    text) leaves that row out, and the others are read (docs/benchmarks.md: its cost on the
    index's reads)."""
    try:
        return raw.decode()
    except UnicodeDecodeError:
        return raw


def connect(target: str, **kw: Any) -> sqlite3.Connection:
    """sqlite3.connect to a log's file or the inline pack (`target`: its path, or a URI
    with uri=True), its texts read as `text_or_bytes` says."""
    db: sqlite3.Connection = sqlite3.connect(target, **kw)
    db.text_factory = text_or_bytes
    return db


def unreadable(path: Path, e: sqlite3.Error, table: str = "") -> StoreError:
    """What to report when SQLite fails on the log file at `path` as the peer opens or reads
    it back (`table`, if one was read): DataError if the file is not a sound database (or
    holds a text that is not UTF-8: the sqlite3 module's own error, with no SQLite code),
    StorageFull, else StoreError."""
    if getattr(e, "sqlite_errorcode", 0) & 0xFF in (SQLITE_CORRUPT, SQLITE_NOTADB) or (
            type(e) is sqlite3.OperationalError and str(e).startswith("Could not decode")):
        return DataError(f"{path}: {e}: the file is damaged or is not an event log; restore "
                         "it from a backup")
    if disk_full(e):
        return StorageFull(f"cannot use the event log {path}: the disk is full")
    if getattr(e, "sqlite_errorcode", 0) & 0xFF == SQLITE_CANTOPEN:
        what = "it is a directory" if path.is_dir() else (
            "the peer's user must be able to read and write it and its directory")
        return StoreError(f"cannot open the event log {path}: {e}: {what}")
    where = f"{path} (its table {table})" if table else str(path)
    return StoreError(f"cannot use the event log {where}: {e}")


def no_room(path: Path, free: int | None = None) -> StorageFull:
    """Why the log at `path` cannot be opened on a full disk: the file system holding it
    and its free bytes (`free`: read now if None), what the peer needs and what to do. A
    full disk at open was "disk I/O error" (SQLite's failure to grow its -shm file), or a
    traceback from the start's first write."""
    if free is None:
        free = _free(path)
    return StorageFull(
        f"cannot open the event log {path}: too little room on the file system holding "
        f"{path.resolve().parent} ({free >> 10} KiB free; the peer needs at least "
        f"{OPEN_MIN_FREE_BYTES >> 20} MiB there to start): free space on it (or move the data "
        "dir to a larger one), then start the peer again")


def _free(path: Path) -> int:
    """Bytes free on the file system that holds the log at `path` and its -wal and -shm
    files (beside the file a link names: SQLite follows it); OPEN_MIN_FREE_BYTES if that
    cannot be read (the open then says what is wrong)."""
    try:
        return disk_free(path.resolve().parent)
    except OSError:
        return OPEN_MIN_FREE_BYTES


def _unopenable(path: Path, e: sqlite3.Error) -> StoreError:
    """`unreadable`, but a failure of the open for room is `no_room`: SQLITE_FULL, or the
    -shm file that cannot grow (SQLite says "disk I/O error") while the disk holds less
    than OPEN_MIN_FREE_BYTES (else it is something else: a file size limit, EFBIG)."""
    if disk_full(e) or (getattr(e, "sqlite_errorcode", 0) == SQLITE_IOERR_SHMSIZE
                        and _free(path) < OPEN_MIN_FREE_BYTES):
        return no_room(path)
    return unreadable(path, e)


def _key(origin: Any, seq: Any) -> tuple[str, int] | None:
    """An events row's (origin, seq) if it reads back as the log writes it (a text, an
    integer), else None (damaged while the peer runs: the next start's `load` quarantines
    it); never a text made of another type, such as "b'...'" of a text that is not UTF-8."""
    return (origin, seq) if type(origin) is str and type(seq) is int else None


def seq_rows(path: Path, table: str, rows: Iterable[tuple[Any, Any]], own: str = "",
             ) -> dict[str, int]:
    """origin -> seq of `table`'s (origin, seq) rows (floors) read back from the file at
    `path`; DataError naming the file at a row that is not (an id, a seq). The row of `own`
    of `own` (this peer's id) or of one of its lanes (peer.log.lanes) past MAX_OWN_SEQ is left
    out with a warning naming it, as an own seq read back anywhere (peer.log.door): no room
    to go on."""
    out: dict[str, int] = {}
    for o, q in rows:
        if not (type(o) is str and 0 < len(o) <= MAX_ID_CHARS and type(q) is int
                and 0 <= q <= MAX_CLOCK):
            raise DataError(f"{path}: a row of {table} holds ({o!r:.40}, {q!r:.40}), not "
                            "(origin, seq): the file is damaged or was edited")
        if q > MAX_OWN_SEQ and own and owned_by(o, own):
            log.warning("%s: the %s row of this peer (%s) holds %d, past %d: left out (the "
                        "file is damaged or was edited)", path, table, shown_origin(o), q,
                        MAX_OWN_SEQ)
            continue
        out[o] = q
    return out


class SyncTainted(OSError):
    """An fsync succeeded, but one that failed came between it and the write it was to make
    durable: nothing proves that write is on disk."""


class EventLog:
    """SQLite persistence of events; `append` commits (durably) before it returns or rolls
    back and raises. `skipped` counts the rows `load` set aside (quarantined) because they
    are not valid events. Its file gives free pages back (peer.log.vacuum): `vacuum` after
    each compaction pass; `converted` is the one-off VACUUM done at open, if any. The
    quarantine holds at most `quarantine_cfg`'s rows and bytes (the oldest go first).
    `created`: the file had no log's tables before this open (peer.log.owner)."""

    def __init__(self, path: Path, max_payload_bytes: int = 1 << 30,
                 vacuum: VacuumConfig | None = None,
                 quarantine: QuarantineConfig | None = None) -> None:
        self.path = path
        self.skipped = 0
        self._unserved: set[tuple[Any, Any]] = set()  # (origin, seq)s `range` logged
        self.quarantine_cfg = quarantine or QuarantineConfig()
        self.quarantine_dropped = 0  # rows the quarantine let go (its bounds), since open
        self._q_rows = self._q_bytes = 0
        self.max_payload_bytes = max_payload_bytes
        self.vacuum_cfg = vacuum or VacuumConfig()
        self.vacuumed_pages = 0  # pages `vacuum` gave back, since open
        self._full = False
        self._dir_synced = False
        self._sync_lock = threading.Lock()  # one `sync` at a time, from any thread
        self._failed_syncs = 0
        self._unwritten_bytes = 0  # what a `probe` writes: the writes failed since one landed
        self._write_epoch = 0
        self._batch_ids: dict[bytes, int] = {}  # signature -> batches.id
        path.parent.mkdir(parents=True, exist_ok=True)
        if (free := _free(path)) < OPEN_MIN_FREE_BYTES:  # (room for the files and the
            raise no_room(path, free)  # start's writes: the open's errors would not say so)
        try:
            self._db = connect(str(path), isolation_level=None, check_same_thread=False)
        except sqlite3.Error as e:  # (a directory, a file this user may not open)
            raise _unopenable(path, e) from e
        try:
            self._open()
        except sqlite3.Error as e:
            self._db.close()
            raise _unopenable(path, e) from e
        self.converted: Converted | None = convert(self._db, path, self.vacuum_cfg)

    def _open(self) -> None:
        """Set the connection up and make the tables a new file lacks (sqlite3.Error: the
        first statement reads the file's header)."""
        new_file(self._db)  # (before the WAL pragma writes a new file's header)
        # a file without tables (missing, 0 bytes): peer.log.owner tells a lost log by it
        self.created = self._db.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'events'"
        ).fetchone() is None
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # FULL per commit, see _sync
        limit_wal(self._db, self.vacuum_cfg)
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS events (origin TEXT NOT NULL, seq INTEGER NOT NULL, "
            "hlc INTEGER NOT NULL, type INTEGER NOT NULL, payload TEXT NOT NULL, "
            "PRIMARY KEY (origin, seq))")
        self._db.execute("CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT)")
        # Rows moved out of `events` because they could not be replayed: kept for a human.
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS quarantine (origin, seq, hlc, type, payload, "
            "reason TEXT NOT NULL, at_ms INTEGER NOT NULL)")
        self._db.execute("CREATE INDEX IF NOT EXISTS quarantine_id ON quarantine (origin, seq)")
        self._db.execute("CREATE TABLE IF NOT EXISTS floors (origin TEXT PRIMARY KEY, "
                         "seq INTEGER NOT NULL)")
        self._recount_quarantine()
        self._quarantine_in(lambda: (0, 0))  # an earlier release's may be over the bounds
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
        # The blob of a probe of session 45 whose DELETE failed on a full disk (review r1 of
        # session 46, F10; `probe` commits none now): up to PROBE_MAX_BYTES of the file
        if self._db.execute("SELECT 1 FROM meta WHERE k = 'write_room'").fetchone():
            self._db.execute("DELETE FROM meta WHERE k = 'write_room'")
            log.info("%s: dropped a probe's leftover meta row write_room", self.path)

    def _batch_id(self, b: Batch) -> int:
        """The row id of `b`, inserted if new (inside the caller's transaction)."""
        bid = self._batch_ids.get(b.sig)
        if bid is None:
            cur = self._db.execute(
                "INSERT OR IGNORE INTO batches (signer, origin, first, hashes, key, admit, sig) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (b.signer, b.origin, b.first, b.hashes, b.key, b.admit, b.sig))
            if cur.rowcount == 1 and cur.lastrowid is not None:  # new: no second query
                bid = int(cur.lastrowid)
            else:  # stored already (by an earlier write that rolled back our memo)
                bid = int(self._db.execute("SELECT id FROM batches WHERE sig = ?",
                                           (b.sig,)).fetchone()[0])
            self._batch_ids[b.sig] = bid
        return bid

    def _rows(self, events: Sequence[Event], keep: bool = False) -> list[tuple[object, ...]]:
        return [(e.origin, e.seq, e.hlc, int(e.type), stored_text(e, keep),
                 None if e.att is None else self._batch_id(e.att)) for e in events]

    def attest(self, events: Sequence[Event]) -> None:
        """Record the batches now set on stored events (`att`) in one transaction."""
        if not events:
            return
        self._db.execute("BEGIN")
        self._db.executemany("UPDATE events SET batch = ? WHERE origin = ? AND seq = ?",
                             [(self._batch_id(e.att), e.origin, e.seq) for e in events])
        self._db.execute("COMMIT")
        for e in events:  # (their rows stay as they are: the texts their signing kept go)
            SET_TEXT(e, None)

    def replace(self, events: Sequence[Event], sync: bool | None = None) -> None:
        """Store `events` in place of the events with their (origin, seq)s (the conflict
        rule; a rewrite after a failed fsync), in one transaction (`sync`: as `_write`); on
        a failure nothing is written and it raises as `append`."""
        if events:
            self._write("REPLACE", events, sync)

    def append(self, events: Sequence[Event], sync: bool | None = None,
               keep_texts: bool = False) -> None:
        """Persist events (one transaction); duplicates are ignored. With `sync` (default:
        if any is of DURABLE_TYPES) they are on disk when this returns. On any failure
        nothing is written and the connection stays usable: StorageFull when the disk is
        full, StoreError for another SQLite failure, anything else as raised.
        `keep_texts`: the canonical texts the events' signing kept stay on them (a flush's,
        for the push's frames: `peer.log.signing.stored_text`), else the write takes them."""
        if not events:
            return
        if sync is None:
            sync = any(e.type in DURABLE_TYPES for e in events)
        self._write("IGNORE", events, sync, keep_texts)

    def _write(self, conflict: Literal["IGNORE", "REPLACE"], events: Sequence[Event],
               sync: bool | None, keep_texts: bool = False) -> None:
        """One transaction of `INSERT OR <conflict>` rows (`sync`: set the synchronous
        level first; None keeps it). Failures as `append` says."""
        self._write_epoch = self._failed_syncs
        rows: list[tuple[object, ...]] = []
        try:
            if sync is not None:
                self._sync(sync)
            self._db.execute("BEGIN")
            rows = self._rows(events, keep_texts)
            self._db.executemany(
                f"INSERT OR {conflict} INTO events (origin, seq, hlc, type, payload, batch) "
                "VALUES (?, ?, ?, ?, ?, ?)", rows)
            self._db.execute("COMMIT")
        except BaseException as e:
            self._unwritten_bytes = min(PROBE_MAX_BYTES, max(self._unwritten_bytes, 2 * sum(
                len(str(r[4])) + ROW_OVERHEAD_BYTES for r in rows)))  # (str: len ~ bytes)
            self._failed(e)
            raise
        self._unwritten_bytes = 0  # (a write that succeeds: what a probe is to prove)

    def probe(self) -> None:
        """Does the log take writes again, as large as the largest that failed since the last
        probe that succeeded? After a failed write, a blob twice its rows' size (at most
        PROBE_MAX_BYTES: indexes grow too) written in a transaction that is rolled back, the
        page cache cut to PROBE_CACHE_KIB meanwhile so that SQLite spills the blob's pages
        into the WAL as it goes (the WAL must grow by that much: the proof); then one small
        row committed (meta `write_probe`: the time, so that a page changes), not synced. A
        small write alone proves nothing on a full disk or at a file size limit: it fits in
        the space the files have, where a merge that grows them fails (review r2 of session
        45, M2: health and claims flapped every retry).

        Nothing of the blob is ever committed (session 46, review r1 F10): committed then
        deleted, as until then, it held the room it had proven once its DELETE failed on a
        really full disk (the probe failed, the blob stayed in the log for good), and even
        when the DELETE landed its pages stayed in the file as free pages that a checkpoint
        writes into the database file: room taken from the disk until `vacuum`. Rolled
        back, the frames it wrote stay in the WAL file unused, and the write that failed,
        retried next, reuses them. Failures as `append`'s."""
        try:
            if self._unwritten_bytes:
                self._room(self._unwritten_bytes)
            self._db.execute("INSERT OR REPLACE INTO meta VALUES ('write_probe', ?)",
                             (str(time.time_ns()),))
        except BaseException as e:
            self._failed(e)
            raise
        self._unwritten_bytes = 0

    def _room(self, size: int) -> None:
        """Write `size` bytes of zeros through SQLite into the WAL (the pages spilled out of
        a cache of PROBE_CACHE_KIB: `probe`) and roll them back; sqlite3.Error if the WAL
        cannot grow that much (SQLITE_FULL on a full disk)."""
        cache = int(self._db.execute("PRAGMA cache_size").fetchone()[0])
        self._db.execute(f"PRAGMA cache_size=-{PROBE_CACHE_KIB}")
        try:
            self._db.execute("BEGIN")
            self._db.execute("INSERT OR REPLACE INTO meta VALUES ('write_room', zeroblob(?))",
                             (size,))
        finally:
            self._rollback()
            self._db.execute(f"PRAGMA cache_size={cache}")

    def _failed(self, e: BaseException) -> None:
        """End a failed write (rolled back) and raise StorageFull (a full disk) or
        StoreError (another SQLite failure) naming the file; anything else is the caller's
        to raise."""
        self._rollback()
        if disk_full(e):
            raise StorageFull(f"cannot write the event log {self.path}: the disk is "
                              "full") from e
        if isinstance(e, sqlite3.Error):
            raise StoreError(f"cannot write the event log {self.path}: {e}") from e

    @property
    def sync_epoch(self) -> int:
        """How many fsyncs of `sync` have failed so far."""
        return self._failed_syncs

    @property
    def write_epoch(self) -> int:
        """`sync_epoch` when the last write began: given to `sync` (`since`), it says whether
        an fsync failed after that write began (one running in a thread meanwhile may have
        dropped its pages). Read on the loop right after the write."""
        return self._write_epoch

    def sync(self, since: int | None = None) -> None:
        """Make every commit so far durable: fsync the WAL (what synchronous=FULL does at a
        commit; a checkpoint that moved frames to the database synced it first). Needs no
        connection: safe on any thread while the loop goes on. OSError if it fails.

        One fsync at a time (they queue on a lock), so each one's outcome is its own: two
        that overlap could have one report the error of pages the other was writing (the
        kernel reports a writeback error once), and the other "succeed" without them. With
        `since` (a `write_epoch`) it also fails, as SyncTainted, if any fsync failed since:
        Linux may have dropped the pages that one could not write, and a later fsync then
        succeeds without them."""
        with self._sync_lock:
            try:
                self._fsync()
            except OSError:
                self._failed_syncs += 1
                raise
            if since is not None and self._failed_syncs != since:
                raise SyncTainted(errno.EIO, "an earlier fsync of the event log failed after "
                                  "this write: its pages may not be on disk")

    def _fsync(self) -> None:
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
        """End a failed transaction (SQLite may have rolled it back already) and forget the
        batch row ids it may have inserted."""
        self._batch_ids.clear()
        if self._db.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("ROLLBACK")

    def load(self) -> Iterator[Event]:
        """Every valid event, in hlc order; an invalid row (an older release's bug, a damaged
        or hand-edited file: a content that is not the one its signed batch holds among
        them) is quarantined (moved out of the log, counted, logged) rather than stopping
        the peer's start. The rows are moved once the iteration is over."""
        bad: list[tuple[int, str]] = []
        batches = self._load_batches()
        for rowid, origin, seq, hlc, typ, payload, bid in self._read(LOAD_SQL):
            try:
                ev = _event(origin, seq, hlc, typ, payload, bid, batches.get(bid),
                            self.max_payload_bytes)
            except (ValueError, TypeError, RecursionError) as e:  # InvalidEvent, bad JSON
                bad.append((rowid, f"{e!s:.300}"))  # (or nested too deep), edited content
                self._note(len(bad), _shown(origin), seq, str(e))
                continue
            yield ev
        self.skipped += len(bad)
        self._move("rowid = ?", [(rowid,) for rowid, _ in bad], [r for _, r in bad])
        if len(bad) > LOGGED_SKIPS:
            log.warning("%s: quarantined %d invalid events in all", self.path, len(bad))

    def _read(self, sql: str, args: Sequence[Any] = ()) -> Iterator[Any]:
        """The rows of a query reading back what the file holds; a sqlite3.DatabaseError
        (a damaged page) is raised as `unreadable` says, naming the file."""
        try:
            yield from self._db.execute(sql, args)
        except sqlite3.DatabaseError as e:
            raise unreadable(self.path, e) from e

    def _note(self, n: int, origin: Any, seq: Any, reason: str) -> None:
        if n <= LOGGED_SKIPS:
            log.warning("%s: quarantined the event %s/%s: %s", self.path, shown_origin(origin),
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

        def move() -> tuple[int, int]:
            rows = size = 0
            for key, reason in zip(keys, reasons, strict=True):
                cur = self._db.execute(f"INSERT INTO quarantine SELECT origin, seq, hlc, type, "
                                       f"payload, ?, ? FROM events e WHERE {where} AND "
                                       f"{NOT_QUARANTINED}", (reason, now, *key))
                if cur.rowcount > 0:
                    rows += cur.rowcount
                    size += int(self._db.execute(
                        f"SELECT {ROW_BYTES} FROM quarantine WHERE rowid = last_insert_rowid()"
                    ).fetchone()[0])
                self._db.execute(f"DELETE FROM events WHERE {where}", key)
            return rows, size

        self._quarantine_in(move)

    def _recount_quarantine(self) -> None:
        rows, size = self._db.execute(f"SELECT count(*), sum({ROW_BYTES}) FROM quarantine"
                                      ).fetchone()
        self._q_rows, self._q_bytes = int(rows), int(size or 0)

    def _quarantine_in(self, change: Callable[[], tuple[int, int]]) -> None:
        """Run `change` (statements that add rows to the quarantine: it returns how many, and
        their bytes) and let the oldest rows go
        while the quarantine holds more than its bounds, in one transaction (rolled back
        whole if anything fails: the counts are read again then). Nothing the peer needs
        goes with them: a row is not replayed, and a row of our own id keeps its seq from
        reuse as a floor, as one of its lanes' (persisted, as `quarantined_max_seqs` would
        have given at the next start)."""
        cfg = self.quarantine_cfg
        self._db.execute("BEGIN")
        try:
            added, added_bytes = change()
            rows, size = self._q_rows + added, self._q_bytes + added_bytes
            held, last = rows, None
            mine: dict[str, int] = {}  # our own origin -> the highest seq let go
            me = self._db.execute("SELECT v FROM meta WHERE k = 'peer_id'").fetchone()
            if rows > cfg.max_rows or size > cfg.max_bytes:
                cur = self._db.execute(
                    f"SELECT rowid, origin, seq, {ROW_BYTES} FROM quarantine ORDER BY rowid")
                for rowid, origin, seq, n in cur:
                    if rows <= cfg.max_rows and size <= cfg.max_bytes:
                        break
                    rows, size, last = rows - 1, size - int(n), rowid
                    if (me is not None and type(seq) is int and owned_by(origin, me[0])
                            and mine.get(origin, 0) < seq <= MAX_OWN_SEQ):  # (past: no room)
                        mine[origin] = seq
                cur.close()
            if last is not None:
                self._db.execute("DELETE FROM quarantine WHERE rowid <= ?", (last,))
                for origin, seq in mine.items():
                    self.set_floor(origin, seq)
            self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            self._recount_quarantine()
            raise
        self._q_rows, self._q_bytes = rows, size
        if held > rows:
            self.quarantine_dropped += held - rows
            log.warning("%s: the quarantine let go of its %d oldest rows (bounds: %d rows, %d "
                        "bytes)", self.path, held - rows, cfg.max_rows, cfg.max_bytes)

    def quarantined(self) -> int:
        """How many rows the quarantine holds (over every start)."""
        return self._q_rows

    def quarantine_health(self) -> dict[str, int]:
        """What /api/health shows of the quarantine: rows and bytes held, rows let go since
        open, and the bounds."""
        cfg = self.quarantine_cfg
        return {"rows": self._q_rows, "bytes": self._q_bytes,
                "dropped": self.quarantine_dropped, "max_rows": cfg.max_rows,
                "max_bytes": cfg.max_bytes}

    def quarantined_jobs(self, typ: int) -> set[str] | None:
        """The jobs the quarantine's rows of type `typ` name (their payloads' `job`, read
        best effort); None if one of them names none that reads (a damaged payload)."""
        jobs: set[str] = set()
        for (payload,) in self._read("SELECT payload FROM quarantine WHERE type = ?", (typ,)):
            try:
                job = json.loads(payload).get("job")
            except (ValueError, TypeError, AttributeError):
                return None
            if type(job) is not str:
                return None
            jobs.add(job)
        return jobs

    def quarantined_max_seqs(self, own: str, below: int) -> dict[str, int]:
        """The highest seq in the quarantine up to `below` of each of `own`'s origins (its
        stream and its lanes, peer.log.lanes) held there; a row above is left out, with a
        warning naming it (damaged or edited: no room to go on)."""
        out: dict[str, int] = {}
        for rowid, origin, seq in self._db.execute(  # (a peer id is hex: no LIKE wildcard)
                "SELECT rowid, origin, seq FROM quarantine WHERE (origin = ? OR origin LIKE ?) "
                "AND typeof(seq) = 'integer'", (own, own + SEPARATOR + "%")):
            if not owned_by(origin, own):
                continue
            if seq > below:
                log.warning("%s: quarantine row %d holds the seq %d of %s, past %d: left out",
                            self.path, rowid, seq, shown_origin(origin), below)
            elif seq > out.get(origin, 0):
                out[origin] = seq
        return out

    def delete(self, ids: Iterable[tuple[str, int]],
               floors: Mapping[str, int] | None = None,
               also: Callable[[], None] | None = None) -> int:
        """Drop these events' rows (events set aside on purpose, see `set_floor`), and raise
        these `floors` (origin -> seq) in the same transaction, with `also`'s statements on
        this connection (the job index's record of the drop): a crash between them would
        leave a gap below a head that no floor covers. Returns how many rows left (an id
        with no row, dropped before, is not counted)."""
        self._db.execute("BEGIN")
        try:
            cur = self._db.executemany("DELETE FROM events WHERE origin = ? AND seq = ?",
                                       list(ids))
            for origin, seq in (floors or {}).items():
                self.set_floor(origin, seq)
            if also is not None:
                also()
            self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise
        return cur.rowcount

    def delete_origins(self, origins: Iterable[str]) -> int:
        """Drop every row of these origins (the lanes of jobs gone from the log: Door.replay),
        ORIGIN_ROWS_PER_DELETE at a time in the key's order, each batch a transaction of its
        own: neither this process nor SQLite holds the ids of all (a lane may hold millions
        of rows; review r1 L3). A crash between two leaves the rest, which the next start
        drops as it would have. Returns how many rows left."""
        gone = 0
        for origin in origins:
            while n := self._db.execute(
                    "DELETE FROM events WHERE rowid IN (SELECT rowid FROM events WHERE "
                    "origin = ? ORDER BY seq LIMIT ?)",
                    (origin, ORIGIN_ROWS_PER_DELETE)).rowcount:
                gone += n
        return gone

    def range(self, origin: str, after: int, upto: int, limit: int) -> list[Event]:
        """`origin`'s events of seq in (after, upto], in seq order, at most `limit`, with
        their signed batches (events that left memory are served from here). Not hashed
        again: `load` checked the rows at start, and every receiver checks each event
        against its batch (a row edited since is refused there as bad_hash). A row damaged
        or edited since, that is no event (or whose batch is malformed), is left out, logged
        once (`_not_served_once`), as a snapshot's serve does (`stored_events`); nothing is
        deleted (the next start's `load` quarantines it)."""
        rows = list(self._read(
            "SELECT seq, hlc, type, payload, batch FROM events WHERE origin = ? AND seq > ? "
            "AND seq <= ? ORDER BY seq LIMIT ?", (origin, after, upto, limit)))
        bids = {bid for *_, bid in rows if bid is not None}
        batches: dict[Any, Batch | DataError] = {}
        if bids:
            marks = ",".join("?" * len(bids))
            for bid, *cols in self._read(
                    f"SELECT {BATCH_COLUMNS} FROM batches WHERE id IN ({marks})", list(bids)):
                try:
                    batches[bid] = self._batch(bid, cols)
                except DataError as e:
                    batches[bid] = e
        out: list[Event] = []
        for seq, hlc, typ, payload, bid in rows:
            att = batches.get(bid)
            try:
                if isinstance(att, DataError):
                    raise att
                ev = _event(origin, seq, hlc, typ, payload, bid, None, self.max_payload_bytes)
            except (ValueError, TypeError, RecursionError, DataError) as e:
                self._not_served_once(origin, seq, e)
                continue
            if att is not None:
                object.__setattr__(ev, "att", att)
            out.append(ev)
        return out

    def _not_served_once(self, origin: Any, seq: Any, why: Exception) -> None:
        """`_not_served` for `range`, once per row while the peer runs (anti-entropy asks
        the same range again and again): the first LOGGED_SKIPS rows one by one, then one
        line saying that more are not logged."""
        n = len(self._unserved)
        if (origin, seq) in self._unserved or n > LOGGED_SKIPS:
            return
        self._unserved.add((origin, seq))
        if n < LOGGED_SKIPS:
            _not_served(self.path, origin, seq, why)
        else:
            log.warning("%s: more invalid events are not served, not logged one by one (the "
                        "next start's load sets them aside)", self.path)

    def prune_batches(self) -> None:
        """Remove the signed batches no stored event refers to (their events were dropped)."""
        self._db.execute("DELETE FROM batches WHERE id NOT IN (SELECT batch FROM events WHERE "
                         "batch IS NOT NULL)")
        self._batch_ids.clear()

    @property
    def db(self) -> sqlite3.Connection:
        """The connection (the job index keeps its tables in the same file)."""
        return self._db

    def floors(self, own: str = "") -> dict[str, int]:
        """Origin -> its floor (`seq_rows`; `own`: this peer's id)."""
        return seq_rows(self.path, "floors", self._read("SELECT origin, seq FROM floors"), own)

    def lowest(self, origin: str, types: Iterable[int]) -> int | None:
        """The lowest seq of `origin`'s events of these types in the log, if any (the key's
        order, stopping at the first)."""
        ts = [int(t) for t in types]
        row = self._db.execute(
            f"SELECT seq FROM events WHERE origin = ? AND type IN ({','.join('?' * len(ts))}) "
            "ORDER BY seq LIMIT 1", (origin, *ts)).fetchone()
        return None if row is None else int(row[0])

    def set_floor(self, origin: str, seq: int) -> None:
        self._db.execute("INSERT INTO floors VALUES (?, ?) ON CONFLICT(origin) DO UPDATE "
                         "SET seq = max(seq, excluded.seq)", (origin, seq))

    def _load_batches(self) -> dict[int, Batch]:
        out: dict[int, Batch] = {}
        for bid, *cols in self._read(f"SELECT {BATCH_COLUMNS} FROM batches"):
            b = out[bid] = self._batch(bid, cols)
            self._batch_ids[b.sig] = bid
        return out

    def _batch(self, bid: Any, cols: Sequence[Any]) -> Batch:
        return batch_row(self.path, bid, cols)

    def signer_keys(self) -> list[tuple[str, bytes]]:
        """(signer, key) of the batches on disk, oldest first."""
        return [(b.signer, b.key) for b in (self._batch(bid, cols) for bid, *cols in
                self._read(f"SELECT {BATCH_COLUMNS} FROM batches WHERE signer = origin "
                           "ORDER BY id"))]

    def last_rowid(self) -> int:
        """The highest rowid of the events table (0 if empty): a position of the log. Rows
        written later get higher ones unless the highest is deleted first (SQLite reuses)."""
        return int(self._db.execute("SELECT coalesce(max(rowid), 0) FROM events").fetchone()[0])

    def key_at(self, rowid: int) -> tuple[str, int] | None:
        """The (origin, seq) of the event at position `rowid`, None if there is none or its
        row's key does not read back (`_key`)."""
        row = self._db.execute("SELECT origin, seq FROM events WHERE rowid = ?",
                               (rowid,)).fetchone()
        return None if row is None else _key(*row)

    def keys_after(self, rowid: int) -> set[tuple[str, int]]:
        """The (origin, seq) of the events written after position `rowid` (`last_rowid`),
        but rows whose key does not read back (`_key`: no event held has it)."""
        return {k for o, s in self._db.execute(
            "SELECT origin, seq FROM events WHERE rowid > ?", (rowid,))
            if (k := _key(o, s)) is not None}

    def get_meta(self, k: str) -> str | None:
        """The text stored under `k`, None if there is none; DataError naming the file if
        the row holds something else (NULL, a blob, an empty text)."""
        rows = list(self._read("SELECT v FROM meta WHERE k = ?", (k,)))
        if not rows:
            return None
        v = rows[0][0]
        if type(v) is not str or not v:
            raise DataError(f"{self.path}: meta {k!r} holds {v!r:.40}, not a text: the file "
                            "is damaged or was edited")
        return v

    def get_meta_int(self, k: str, most: int = MAX_CLOCK) -> int:
        """The count stored under `k` (decimal digits, at most `most`), 0 if there is none;
        DataError naming the file if the row holds something else."""
        v = self.get_meta(k)
        if v is None:
            return 0
        if not (v.isascii() and v.isdigit() and len(v) <= 20 and int(v) <= most):
            raise DataError(f"{self.path}: meta {k!r} holds {v!r:.40}, not a count of at most "
                            f"{most}: the file is damaged or was edited")
        return int(v)

    def set_meta(self, k: str, v: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (k, v))

    def vacuum(self) -> int:
        """Give back a bounded number of free pages (peer.log.vacuum.step; a few ms): the
        number given back; 0 if the step failed (logged: the next pass tries again)."""
        try:
            n = step(self._db, self.vacuum_cfg)
        except sqlite3.Error as e:
            self._rollback()
            with self._sync_lock:  # its checkpoint fsyncs the files: a failure there may
                self._failed_syncs += 1  # have cost pages a later fsync would not report
            log.warning("%s: incremental vacuum failed: %s", self.path, e)
            return 0
        self.vacuumed_pages += n
        return n

    def file_stats(self) -> FileStats:
        """The file's pages: size, count, free (reads the header: microseconds)."""
        return file_stats(self._db)

    def close(self) -> None:
        self._db.close()



def batch_row(path: Path, bid: Any, cols: Sequence[Any]) -> Batch:
    """The signed batch of a `batches` row; DataError naming the file if malformed."""
    b = Batch(*cols)
    why = b.malformed()
    if why is not None:
        raise DataError(f"{path}: the signed batch of row {bid!r:.40} is malformed "
                        f"({why}): the file is damaged or was edited")
    return b


def _event(origin: Any, seq: Any, hlc: Any, typ: Any, payload: Any, bid: Any,
           att: Batch | None, max_payload_bytes: int) -> Event:
    """The event of an `events` row (LOAD_SQL: its origin and payload as bytes), with its
    signed batch `att` (None: none, or not stored); ValueError (UnicodeDecodeError among
    them), TypeError or RecursionError if it is not a valid one."""
    if isinstance(payload, str | bytes) and len(payload) > max_payload_bytes:
        raise ValueError(f"payload of {len(payload)} bytes")
    text = _text(payload)
    ev = Event(_text(origin), seq, hlc, typ, json.loads(text))
    if att is not None:  # its content must be the one signed (one hash; of the row's text
        why = att.mismatch(ev, row=text)  # itself when it is the canonical one)
        if why is not None:
            raise ValueError(f"{why}: not the content its signed batch (row {bid}) holds at "
                             f"seq {seq}")
        object.__setattr__(ev, "att", att)
    return ev


def _not_served(path: Path, origin: Any, seq: Any, why: Exception) -> None:
    """Log a row of the log file at `path` that a serve leaves out: it is no valid event."""
    log.warning("%s: not served, an invalid event %s/%s: %s", path,
                shown_origin(_shown(origin)), seq, f"{why!s:.300}")


def _shown(origin: Any) -> str:
    """An origin read as bytes (LOAD_SQL), as a log line shows it."""
    return origin.decode(errors="replace") if type(origin) is bytes else str(origin)


def _text(v: Any) -> Any:
    """A text column read as its bytes (LOAD_SQL), decoded; UnicodeDecodeError (a
    ValueError) if they are not UTF-8. Anything else as it is."""
    return v.decode() if type(v) is bytes else v


def stored_events(db: sqlite3.Connection, path: Path, max_payload_bytes: int,
                  ) -> Iterator[Event]:
    """What `EventLog.load` gives, read on `db`: a connection of the caller's (a snapshot's
    read transaction, in a thread), never the log's. An invalid row is skipped and logged,
    not quarantined (that writes: `load` does it, on the log's connection). Holds
    STORED_ROWS rows and at most STORED_BATCHES batches at a time, not the log's."""
    batches: dict[Any, Batch] = {}
    skipped = 0
    try:
        cur = db.execute(LOAD_SQL)
        while rows := cur.fetchmany(STORED_ROWS):
            want = {r[6] for r in rows if r[6] is not None} - batches.keys()
            if len(batches) + len(want) > STORED_BATCHES:
                batches.clear()
                want = {r[6] for r in rows if r[6] is not None}
            if want:
                marks = ",".join("?" * len(want))
                for bid, *cols in db.execute(
                        f"SELECT {BATCH_COLUMNS} FROM batches WHERE id IN ({marks})",
                        list(want)):
                    batches[bid] = batch_row(path, bid, cols)
            for _, origin, seq, hlc, typ, payload, bid in rows:
                try:
                    ev = _event(origin, seq, hlc, typ, payload, bid, batches.get(bid),
                                max_payload_bytes)
                except (ValueError, TypeError, RecursionError) as e:
                    skipped += 1
                    if skipped <= LOGGED_SKIPS:
                        _not_served(path, origin, seq, e)
                    continue
                yield ev
    except sqlite3.DatabaseError as e:
        raise unreadable(path, e) from e
