"""The job index (issue 11 item 3): one compact record per finished job, the cache entries and
providers its events made, and how far each origin's events were dropped, in the log's SQLite
file. Loop-owned, like the EventLog whose connection it shares.

Tables (added when a data dir of an earlier release is opened; nothing else changes):
`job_index` (a job's order, end, state, list summary, full record, and the ids of its events
still in the log until they are dropped), `cache_index` (item and output cache entries with
the order of the event that won them), `provider_index` (cid, origin), `compact_floors`
(origin -> the highest seq dropped by compaction: an asker below it needs a snapshot),
`snapshot_pending` (a spooled snapshot whose cache and provider rows are still being taken,
and how far), `job_thin` (a job's thin row: its list entry without per-task lists, its
facts without CIDs, the hash of its full texts; what a version 3 snapshot sends,
peer.log.snapframe), `job_deleted` (deleted jobs' tombstones), `deleted_ids` (every
JOB_DELETED row of a deleted job, backfilled from the log when the table is made). A job
taken from such a snapshot has an empty `record` until it is fetched (`fill`). Cache entries
whose CID has no provider, and item entries with no result past the compaction horizon, are deleted
(`reap`, peer.log.compact.Compactor._reap). Every JSON text is read back within
peer.jsontext.MAX_STORED_DEPTH levels: a deeper one (written by an earlier release, or taken
from its snapshot) is left out as a text that does not read back, never served nor encoded
again (a later encode could exceed the stack)."""

from __future__ import annotations

import contextlib
import functools
import itertools
import json
import logging
import os
import re
import sqlite3
import stat
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, TypeGuard, TypeVar

from peer.cids import never_cid
from peer.errors import DataError, InvalidEvent, StoreError
from peer.jsontext import compact, loads_within
from peer.log.events import MAX_CLOCK, MAX_ID_CHARS, Event, EventType
from peer.log.gonewait import HELD_BATCH, HELD_TEXT_MAX, JobWaits, event_text, held_id
from peer.log.keyfilter import KeyFilter
from peer.log.snapframe import (
    check_thin,
    is_bare,
    is_outputs_sha,
    is_record_sha,
    outputs_sha,
    thin,
)
from peer.log.snapstream import (
    CACHE_KINDS,
    CHECKS,
    JOB_KEYS,
    PROVIDER_KINDS,
    facts_cids,
    row_fault,
)
from peer.log.sqlite import connect, seq_rows, unreadable

log = logging.getLogger(__name__)
_T = TypeVar("_T")

Order = tuple[int, str, int]  # (hlc, origin, seq) of the JOB_SUBMITTED: the list's order
UNKNOWN_ORDER: Order = (MAX_CLOCK, "", MAX_CLOCK)  # a tombstone's that does not read back
_TOMB_KINDS = (("hlc", "u"), ("origin", "s"), ("seq", "u"))  # job_deleted's order columns
ITEM, OUTPUT = 0, 1  # cache_index kinds: MeshState.cache / MeshState.outputs
_PROVIDERS = 2  # the provider_index's key in JobIndex's memo of keys it does not hold
_DELETED = 3  # and job_deleted's
_UNREAD = object()  # a cache entry's value that does not read back (`JobIndex._value`)
# A cache entry replaces one of a later order only; a provider row is added once.
_CACHE_UPSERT = (
    "INSERT INTO cache_index VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (kind, k) DO UPDATE SET "
    "v = excluded.v, hlc = excluded.hlc, origin = excluded.origin, seq = excluded.seq WHERE "
    "(excluded.hlc, excluded.origin, excluded.seq) < "
    "(cache_index.hlc, cache_index.origin, cache_index.seq)")
_PROVIDER_ADD = "INSERT OR IGNORE INTO provider_index VALUES (?, ?)"
# Keys looked up and not found, remembered per table up to this many (then forgotten all at
# once): the fold and the scheduler ask for every fresh output CID and task key, most of
# them not compacted, some again and again (a task with no input asks for the CID "").
ABSENT_MAX = 65536
SCREEN_BATCH = 500  # keys per query of `JobIndex.screen` (within SQLite's 999 variables)
# What a read does of a row that does not read back, as its log line says (`JobIndex._skip`):
# most leave it out; `facts` holds retention and gc back instead (its run logs are not known).
_LEFT_OUT = "is left out"
_WAIT_KEPT = "is not held (kept on disk as it is: it may be mended)"  # (a gone job's wait row)
MAX_LOGGED_ROWS = 4096  # rows that do not read back logged one by one (`_skip`), then one line
_HELD = "holds retention and gc back (nothing is freed until it is mended or removed)"
_IDS_HELD = "holds its job's deletion and its events in the log (until it is mended)"
_DELETED_ROW = "is deleted (every read leaves it out)"  # (`JobIndex.providers_sound`)
# A taken snapshot's cache and provider rows wait in the data dir's snapshots/ (peer.catchup),
# one file per snapshot named by `spool_name`; a `snapshot_pending` row names one of them (its
# name; a data dir of an earlier release: its path in that directory).
SPOOL_DIR = "snapshots"
SPOOL_DIR_WHAT = "the dir of snapshots being taken"  # (its files are deleted once taken)
# A waiting row's id column read back: the text if it is no longer than the door's bound
_ID_COL = f"CASE WHEN length({{0}}) BETWEEN 1 AND {MAX_ID_CHARS} THEN {{0}} END"
_SPOOL_NAME = re.compile(r"[0-9a-f]{32}\.frames")


# The index's tables (made where missing; a table of one of these names with other columns
# refuses the open: `_make`):
_MADE = (
    "CREATE TABLE IF NOT EXISTS job_index (job TEXT PRIMARY KEY, hlc INTEGER NOT NULL, "
    "origin TEXT NOT NULL, seq INTEGER NOT NULL, ended INTEGER NOT NULL, "
    "state TEXT NOT NULL, summary TEXT NOT NULL, record TEXT NOT NULL, "
    "ids TEXT NOT NULL DEFAULT '[]', facts TEXT NOT NULL DEFAULT '{}', "
    "marks TEXT NOT NULL DEFAULT '{}')",
    # (a data dir of an earlier release keeps its rowid tables: the same SQL reads both; a
    # new one's take one B-tree per row)
    "CREATE TABLE IF NOT EXISTS cache_index (kind INTEGER NOT NULL, k TEXT NOT NULL, "
    "v TEXT NOT NULL, hlc INTEGER NOT NULL, origin TEXT NOT NULL, seq INTEGER NOT NULL, "
    "PRIMARY KEY (kind, k)) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS provider_index (cid TEXT NOT NULL, origin TEXT NOT NULL, "
    "PRIMARY KEY (cid, origin)) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS compact_floors (origin TEXT PRIMARY KEY, seq INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS job_thin (job TEXT PRIMARY KEY, summary TEXT NOT NULL, "
    "facts TEXT NOT NULL, sha TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS snapshot_pending (path TEXT PRIMARY KEY, at INTEGER NOT NULL, "
    "signer TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS snapshot_owed (signer TEXT PRIMARY KEY)",
    # The digest (sha256 of the spool file's bytes: its row frames, as its signed trailer was
    # checked against) of a `snapshot_pending` row's spool, by the same name, written in the
    # same transaction: `ingest` checks the spool against it before it takes a row (review
    # r1 L2). A table of its own, so that an earlier release's inserts still fit (a row of
    # one has none: its spool is taken as it is).
    "CREATE TABLE IF NOT EXISTS snapshot_sums (path TEXT PRIMARY KEY, sha BLOB NOT NULL)",
    # Deleted jobs' tombstones (MeshState.deleted): job -> its first JOB_DELETED's order.
    # The JOB_DELETED events stay in the log; a data dir of an earlier release gets the
    # table empty and fills it from them at its first pass.
    "CREATE TABLE IF NOT EXISTS job_deleted (job TEXT PRIMARY KEY, hlc INTEGER NOT NULL, "
    "origin TEXT NOT NULL, seq INTEGER NOT NULL) WITHOUT ROWID",
    # Every JOB_DELETED row of a deleted job (job, origin, seq, hlc): what a tombstone's
    # forgetting deletes from the log (a job may have several: two peers deleted it).
    # Written with the tombstones (`put_deleted`).
    "CREATE TABLE IF NOT EXISTS deleted_ids (job TEXT NOT NULL, origin TEXT NOT NULL, "
    "seq INTEGER NOT NULL, hlc INTEGER NOT NULL, PRIMARY KEY (job, origin, seq)) WITHOUT ROWID",
    # A deleted lanes job's members and its JOB_SUBMITTED's order as it left memory (what
    # decides its task events at a replay, `lanes_of`: a compacted one's record says them,
    # a deleted one has none; review r3 of session 46, R3-A). Written with its tombstone
    # (`put_deleted`, the first kept), forgotten with it (`note_forgotten`).
    "CREATE TABLE IF NOT EXISTS deleted_lanes (job TEXT PRIMARY KEY, members TEXT NOT NULL, "
    "hlc INTEGER NOT NULL, origin TEXT NOT NULL, seq INTEGER NOT NULL) WITHOUT ROWID",
    # A gone lanes job's vouched members, and the members a vouched member's JOB_MEMBERS
    # added once it left memory (`vouched_of`: what a replay decides such a JOB_MEMBERS and
    # its lane events by, as the live fold did; review r2 of session 47, finding 3). Written
    # as the job is compacted or its tombstone is, and as a JOB_MEMBERS grows them
    # (`_vouched_rows`, united with the row there), forgotten with its tombstone. A job gone
    # before session 48 has none: decided as then (no JOB_MEMBERS adds to it).
    "CREATE TABLE IF NOT EXISTS gone_vouched (job TEXT PRIMARY KEY, members TEXT NOT NULL, "
    "vouched TEXT NOT NULL) WITHOUT ROWID",
    # What of a gone lanes job waits for a vouched member's JOB_MEMBERS (peer.log.fold
    # `GoneWait`, bounded there): the adds of peers not vouched for (adder, peer) and the
    # events held (`kind`: peer.log.gonewait, the wire form as `event_text` writes it).
    # Written with the vouched rows as they change (`put`'s `waits`: a row each, what
    # changed only), read back at a start (`gone_waits`), forgotten with the tombstone:
    # a restart whose log no longer holds the job's rows waits as before (review r3 of
    # session 48, F1). A data dir of session 48 gets them empty (nothing waited on disk).
    "CREATE TABLE IF NOT EXISTS gone_wait_adds (job TEXT NOT NULL, by TEXT NOT NULL, "
    "peer TEXT NOT NULL, PRIMARY KEY (job, by, peer)) WITHOUT ROWID",
    # The held events are keyed by their text's digest (`held_id`): session 49's
    # `gone_wait_held` was keyed by the whole text, its index a second copy of every event
    # (review r1 of session 50, R1-1); its rows are moved here at an open (`_move_held`).
    "CREATE TABLE IF NOT EXISTS gone_wait_events (job TEXT NOT NULL, kind INTEGER NOT NULL, "
    "id TEXT NOT NULL, peer TEXT NOT NULL, event TEXT NOT NULL, PRIMARY KEY (job, kind, id))",
    # (`member_vv`, the version vector each member last sent, made by session 27's build
    # and never written by it while the bound was off, is no longer made nor read: every
    # member must be live for a tombstone to go, with the vector it sends now.)
)


def _make(db: sqlite3.Connection, path: Path, sql: str) -> None:
    """Run `sql` (one of _MADE) on `db`, the log's file at `path`. A table of its name
    already held with other columns (made or edited by hand) is a DataError naming the file
    and the table: every read and write of it would fail, one query at a time."""
    db.execute(sql)
    table, want = _columns(sql)
    have = tuple(r[1] for r in db.execute(f"PRAGMA table_info({table})"))
    if have != want:
        raise DataError(f"{path}: its table {table} has the columns {have!r:.200}, not "
                        f"{want}: the file was edited or made by another program; restore "
                        "it from a backup")


@functools.cache
def _columns(sql: str) -> tuple[str, tuple[str, ...]]:
    """The table a CREATE TABLE statement makes and its columns, in order, as SQLite reads
    them (made in a database in memory)."""
    mem = sqlite3.connect(":memory:")
    try:
        mem.execute(sql)
        (table,) = mem.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchone()
        return table, tuple(r[1] for r in mem.execute(f"PRAGMA table_info({table})"))
    finally:
        mem.close()


def spool_name(digest: bytes) -> str:
    """The file name, in SPOOL_DIR, of the spooled rows of a snapshot of this content digest."""
    return f"{digest.hex()[:32]}.frames"


def _dumps(obj: Any) -> str:
    return compact(obj)


@dataclass(frozen=True)
class JobRecord:
    """A finished job as the index keeps it: `summary` is its list entry, `record` its full
    view (both JSON objects), `ids` its events still in the log (dropped later)."""

    job: str
    order: Order
    ended_hlc: int
    state: str
    summary: Mapping[str, Any]
    record: Mapping[str, Any]
    ids: tuple[tuple[str, int], ...] = ()
    facts: Mapping[str, Any] | None = None  # what retention needs: finished_s, outputs, logs


@dataclass(frozen=True)
class CacheEntry:
    kind: int  # ITEM or OUTPUT
    key: str
    value: Any
    order: Order  # the winning event's


class SliceRow(NamedTuple):
    """A cache entry as `output_slice` and `item_slice` give it."""

    key: str
    value: str  # as stored (its JSON text)
    cid: str | None  # the CID it names (None: none, or a malformed value)
    held: bool  # the index holds a provider row of that CID
    hlc: int  # of the event that won it


class JobIndex:
    """The index over one SQLite connection (the event log's). Every write is one
    transaction. The keys that `entry` and `providers_of` did not find are remembered
    (`ABSENT_MAX` per table) until the next write of cache or provider rows, whatever its
    outcome: only this object's `put`, `put_batches` and `put_rows` write them (`reap` only
    deletes some). For the same reason it knows which CIDs the provider rows may name once
    a scan read them all (`providers_sound`'s, the first reap's): a KeyFilter, added to by
    each of those writes before it runs; a CID it surely lacks (a new output's, each
    CHUNK_DONE's on every peer) costs `providers_of` and `screen` no query."""

    def __init__(self, db: sqlite3.Connection, spool_dir: Path | None = None,
                 own: str = "") -> None:
        self._db = db
        self.own = own  # this peer's id: its compaction floor is bounded (`floors`)
        self.path = db_path(db)  # (named in what is logged or raised of its rows)
        # where the files that `snapshot_pending` rows name are (by default: SPOOL_DIR beside
        # the SQLite file; an in-memory database without `spool_dir` can have none)
        self.spool_dir = spool_dir if spool_dir is not None or not str(self.path) else (
            self.path.parent / SPOOL_DIR)
        # (job, column) of the rows a read left out because that column does not read back
        # as it was written (damaged, edited by hand): each logged once; `skipped` counts them
        self._bad: set[tuple[str, str]] = set()
        self._unexamined: set[str] = set()  # spool files that lstat failed on (logged once)
        self._providers_sound: bool | None = None  # (`providers_sound`: not checked yet)
        # The CIDs provider_index may hold rows of (None: not read yet, or to be read again
        # at the next `providers_sound`: `_owe_cids`)
        self._cids: KeyFilter | None = None
        self._cids_owed = False
        self._backfill_at = 0  # the rowid of job_index that `backfill` goes on after
        # Set once a `backfill` scan reached the end of job_index: every record then has
        # its thin row or makes none, and each later call reads nothing (a full scan
        # per compaction pass was 0.5 s at a month of records, review r2 of session 49
        # H1). A write that may add a full record without its thin row (an older
        # snapshot's "j" rows, `fill`) sets it back (`_thin_owed`).
        self._backfill_done = False
        self._absent: dict[int, set[str]] = {ITEM: set(), OUTPUT: set(), _PROVIDERS: set(),
                                             _DELETED: set()}
        # Deleted jobs' JOB_DELETED rows: a data dir of an earlier release gets `deleted_ids`
        # filled from its log once, when the table is made (`_backfill_deleted`).
        try:
            fresh = db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND "
                               "name = 'deleted_ids'").fetchone() is None
            for sql in _MADE:
                _make(db, self.path, sql)
            db.execute("CREATE INDEX IF NOT EXISTS job_index_order ON job_index "
                       "(hlc, origin, seq)")
            db.execute("CREATE INDEX IF NOT EXISTS deleted_ids_hlc ON deleted_ids (hlc, job)")
            # The records whose events are still in the log (`pending`, every compaction
            # pass): a few, against every record ever compacted (review r2 of session 49
            # H1); made here for a data dir of an earlier release too.
            db.execute("CREATE INDEX IF NOT EXISTS job_index_pending ON job_index (job) "
                       "WHERE ids != '[]'")
            self._move_held()
            self.backfilled = self._backfill_deleted() if fresh else 0  # (rows, at this open)
            # How many records the index holds: counted once here, then kept by this object's
            # writes (the only ones to job_index), so `len` (/api/health) costs nothing.
            self._count = int(db.execute("SELECT count(*) FROM job_index").fetchone()[0])
        except sqlite3.Error as e:  # (a damaged file; an index or a view of a table's name)
            raise unreadable(self.path, e) from e

    def _move_held(self) -> None:
        """Session 49's `gone_wait_held` rows (keyed by the event's text) move to
        `gone_wait_events` in their order (keyed by `held_id`), every row, readable or not
        (read as hostile when loaded: `wait_rows`), and the old table goes; one transaction.
        A release of session 49 opening the file later makes it anew, empty (it then knows
        nothing waited), and its rows move here again at the next open."""
        if self._db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND "
                            "name = 'gone_wait_held'").fetchone() is None:
            return
        with self._tx() as db:
            rows = self._batches("SELECT rowid, job, kind, peer, event FROM gone_wait_held "
                                 "WHERE 1 {after}", "rowid")
            while page := list(itertools.islice(rows, HELD_BATCH)):
                db.executemany("INSERT OR IGNORE INTO gone_wait_events VALUES (?, ?, ?, ?, ?)",
                               [(r[1], r[2], held_id(r[4] if type(r[4]) is str else repr(r[4])),
                                 r[3], r[4]) for r in page])
            db.execute("DROP TABLE gone_wait_held")

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One transaction on the index's connection: committed if the body returns, rolled
        back if it raises."""
        db = self._db
        db.execute("BEGIN")
        try:
            yield db
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise

    def put(self, records: Iterable[JobRecord], entries: Iterable[CacheEntry],
            providers: Iterable[tuple[str, str]], cids: Iterable[str] = (),
            vouched: Iterable[tuple[str, Iterable[str], Iterable[str]]] = (),
            waits: Mapping[str, JobWaits] | None = None) -> None:
        """Store finished jobs, the cache entries their events made (an entry replaces one of
        a later order only), (cid, origin) providers and gone lanes jobs' vouched rows
        (`_vouched_rows`: a record regrown by them is never written apart from them, review r3
        of session 48, F2) and what changed of their waits (`waits`: `_wait_rows`), in one
        transaction. The provider rows
        of `cids` are replaced by those of `providers` (the set the fold holds now: an origin
        that UNPROVIDEd a CID is no longer listed); those of other CIDs are added to. A
        record held already whose ids do not read back (`_ids`: logged once) is set aside:
        its row is left as it is (its events stay in the log), the others are written."""
        records = list(records)
        grown = {job: (set(m), set(v)) for job, m, v in vouched}
        try:
            with self._tx() as db:
                self._vouched_rows(db, grown)
                if waits:
                    _wait_rows(db, waits)
                held: dict[str, list[tuple[str, int]]] = {}  # job -> its ids as held
                aside: set[str] = set()  # jobs whose held ids do not read back
                for r in records:
                    row = db.execute("SELECT ids FROM job_index WHERE job = ?",
                                     (r.job,)).fetchone()
                    if row is None:
                        continue
                    try:
                        held[r.job] = self._ids(r.job, row[0])
                    except DataError:  # (writing its ids anew would lose those held)
                        aside.add(r.job)
                records = [r for r in records if r.job not in aside]
                new = len({r.job for r in records}) - len(held)
                rows = []
                for r in records:  # (a record held keeps its ids: events still in the log)
                    ids = _union(held.get(r.job, ()), r.ids)
                    rows.append((r.job, r.order[0], r.order[1], r.order[2], r.ended_hlc,
                                 r.state, _dumps(r.summary), _dumps(r.record),
                                 _dumps([list(i) for i in ids]), _dumps(r.facts or {}),
                                 _dumps(_marks(ids))))
                db.executemany(
                    "INSERT OR REPLACE INTO job_index (job, hlc, origin, seq, ended, state, "
                    "summary, record, ids, facts, marks) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    rows)
                db.executemany("INSERT OR REPLACE INTO job_thin VALUES (?, ?, ?, ?)",
                               [(r[0], *thin(r[6], r[7], r[9])) for r in rows])
                db.executemany(_CACHE_UPSERT,
                               [(e.kind, e.key, _dumps(e.value), *e.order) for e in entries])
                db.executemany("DELETE FROM provider_index WHERE cid = ?", [(c,) for c in cids])
                db.executemany(_PROVIDER_ADD, self._provider_rows(
                    providers, "is not written (a member's PROVIDE of something else)"))
            self._count += new  # (committed)
        finally:
            self._forget_absent()

    def put_batches(self, batches: Iterable[tuple[str, Sequence[Sequence[Any]]]],
                    pending: tuple[str, int, str] | None = None, owed: str | None = None,
                    sha: bytes | None = None) -> None:
        """Store rows as a snapshot stream carries them (("j", rows of JOB_COLUMNS), ("t",
        thin rows, peer.log.snapframe.THIN_COLUMNS), ("c", rows of CACHE_COLUMNS), ("p",
        (cid, origin) rows); checked by the caller), all in one transaction (an exception from
        `batches`: nothing stored). A job already held keeps its record (and its events still
        in the log); cache entries follow `put`'s rule. The transaction runs with a larger
        page cache and synchronous=OFF, and the file is fsynced once after it commits: it is
        durable when this returns, as with synchronous=FULL. `pending`: (path, offset,
        signer) of a spooled snapshot whose remaining rows are taken later (`put_rows`);
        `owed`: the signer of a snapshot whose cache and provider rows are fetched later
        (`snapshots_owed`)."""
        sql = {"j": "INSERT OR IGNORE INTO job_index (job, hlc, origin, seq, ended, state, "
                    "summary, record, facts) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
               "t": "INSERT OR IGNORE INTO job_index (job, hlc, origin, seq, ended, state, "
                    "summary, record, facts) VALUES (?, ?, ?, ?, ?, ?, ?, '', ?)",
               "c": _CACHE_UPSERT, "p": _PROVIDER_ADD}
        db = self._db
        sync, cache = (db.execute(f"PRAGMA {p}").fetchone()[0] for p in ("synchronous",
                                                                          "cache_size"))
        db.execute("PRAGMA synchronous=OFF")
        db.execute("PRAGMA cache_size=-65536")  # 64 MiB while the bulk runs
        new = 0  # job rows inserted (a job already held is ignored: not counted)
        try:
            with self._tx():
                for tag, rows in batches:
                    before = db.total_changes
                    if tag == "t":
                        db.executemany(sql[tag], [tuple(r[:8]) for r in rows])
                        new += db.total_changes - before
                        db.executemany("INSERT OR IGNORE INTO job_thin VALUES (?, ?, ?, ?)",
                                       [(r[0], *r[6:]) for r in rows])
                    else:
                        db.executemany(sql[tag], self._provider_rows(rows) if tag == "p"
                                       else rows)
                        if tag == "j":
                            new += db.total_changes - before
                            self._thin_owed()  # (an older snapshot's: no thin rows)
                if pending is not None:
                    key = self._spool_key(pending[0])
                    db.execute("INSERT OR REPLACE INTO snapshot_pending VALUES (?, ?, ?)",
                               (key, *pending[1:]))
                    self._put_sum(db, key, sha)
                if owed is not None:
                    db.execute("INSERT OR IGNORE INTO snapshot_owed VALUES (?)", (owed,))
            self._count += new  # (committed)
        finally:
            self._forget_absent()
            db.execute(f"PRAGMA synchronous={int(sync)}")
            db.execute(f"PRAGMA cache_size={int(cache)}")
        fsync_files(db)

    def __contains__(self, job: object) -> bool:
        return self._one("SELECT 1 FROM job_index WHERE job = ?", (job,)) is not None

    def __len__(self) -> int:
        """The number of records: O(1), kept by the writes (counted once at open)."""
        return self._count

    def record(self, job: str) -> dict[str, Any] | None:
        """The full view of a finished job; None if it is not in the index, or only its thin
        row is (its record not fetched yet). DataError if its row is there but does not read
        back (its keys or its record: damaged, edited, or a snapshot's malformed record): the
        job exists, as the list (its summary) shows, but its view is not known."""
        row = self._one(f"SELECT {KEY_COLUMNS}, record FROM job_index WHERE job = ?", (job,))
        if row is None:
            return None
        keys = self._keys_ok(row)
        if keys and row[6] == "":  # a thin row's record, not fetched yet
            return None
        # (a snapshot's record is checked here, when read: peer.log.snapstream)
        rec: dict[str, Any] | None = self._column(_job(job), "record", row[6],
                                                  _of_job(job)) if keys else None
        if rec is None:
            raise self._unknown_view(job, "record" if keys else "keys")
        return rec

    def lanes_of(self, job: str) -> tuple[list[str], tuple[int, str, int]] | None:
        """A compacted lanes job's members and its JOB_SUBMITTED's order, as its summary names
        them (peer.log.compact: a lanes job's record and summary name its members), or a
        deleted one's as kept beside its tombstone (`deleted_lanes`); None if it is neither
        here, or its row does not read back (left out, logged). What the fold decides a
        gone job's late task events by (MeshState.gone_lookup: session 46, helper g)."""
        row = self._one(f"SELECT {KEY_COLUMNS}, summary FROM job_index WHERE job = ?", (job,))
        if row is None:
            return self._deleted_lanes(job)
        if not self._keys_ok(row):
            return None
        summary = self._column(_job(job), "summary", row[6], _of_job(job))
        members = None if summary is None else summary.get("members")
        if not _peer_list(members):
            return None
        return members, (row[1], row[2], row[3])

    def _deleted_lanes(self, job: str) -> tuple[list[str], tuple[int, str, int]] | None:
        """`lanes_of` a deleted lanes job (its `deleted_lanes` row), None without one or if
        it does not read back (left out, logged once: decided as a job nothing is known of)."""
        row = self._one("SELECT members, hlc, origin, seq FROM deleted_lanes WHERE job = ?",
                        (job,))
        if row is None:
            return None
        what = f"the lanes facts of the deleted job {job[:64]!r}"
        if (bad := row_fault(row[1:], _TOMB_KINDS)) is not None:
            self._skip(what, bad, f"{row[1:]!r:.80} is not (hlc, origin, seq)")
            return None
        members = self._column(what, "members", row[0], _peer_list)
        return None if members is None else (members, (row[1], row[2], row[3]))

    def vouched_of(self, job: str) -> tuple[list[str], list[str]] | None:
        """Gone lanes job `job`'s (members added since it went, vouched members) as
        `put` kept them; None without a row, or if it does not read back (left out,
        logged once: decided as a job gone before they were kept)."""
        row = self._one("SELECT members, vouched FROM gone_vouched WHERE job = ?", (job,))
        if row is None:
            return None
        what = f"the vouched members of the gone job {job[:64]!r}"
        members = self._column(what, "members", row[0], _peer_list)
        vouched = None if members is None else self._column(what, "vouched", row[1],
                                                            _peer_list)
        return None if members is None or vouched is None else (members, vouched)

    def gone_waits(self) -> tuple[list[tuple[str, str, str]],
                                  list[tuple[str, int, str, Event | None, str]]]:
        """`wait_rows` as lists (tests, tools)."""
        adds, held = self.wait_rows()
        return list(adds), list(held)

    def wait_rows(self) -> tuple[Iterator[tuple[str, str, str]],
                                 Iterator[tuple[str, int, str, Event | None, str]]]:
        """What waited of gone lanes jobs as `put` kept it, read HELD_BATCH rows at a time
        as iterated: (job, adder, peer) adds and (job, kind, peer, event, row key) held
        events, in the order written. A row that does not read back (not texts, ids longer
        than MAX_ID_CHARS as the door bounds them, an event that does not decode: edited,
        damaged) is left out and kept on disk, logged once (a later vouching then does not
        take it in, as before session 49); an event whose text is over HELD_TEXT_MAX is not
        read (None: the fold lets it go and deletes its row)."""
        return self._add_rows(), self._held_rows()

    def _batches(self, sql: str, key: str) -> Iterator[Any]:
        """The rows of `sql` (selecting `key`'s columns first, with "{after}" where a
        `(key) > (?, ...)` goes, ordered by `key`), HELD_BATCH at a time."""
        last: tuple[Any, ...] | None = None
        n = key.count(",") + 1
        while True:
            rows = list(self._read(
                sql.replace("{after}", "" if last is None else f"AND ({key}) > "
                            f"({', '.join('?' * n)})") + f" ORDER BY {key} LIMIT ?",
                (*(last or ()), HELD_BATCH)))
            if not rows:
                return
            last = tuple(rows[-1][:n])
            yield from rows

    def _add_rows(self) -> Iterator[tuple[str, str, str]]:
        for row in self._batches("SELECT job, by, peer FROM gone_wait_adds WHERE 1 {after}",
                                 "job, by, peer"):
            if all(type(v) is str and 0 < len(v) <= MAX_ID_CHARS for v in row):
                yield row[0], row[1], row[2]
            else:
                self._skip(f"a waiting add of the gone job {str(row[0])[:64]!r}", "row",
                           f"{row!r:.80} is not ids (of 1 to {MAX_ID_CHARS} characters)",
                           _WAIT_KEPT)

    def _held_rows(self) -> Iterator[tuple[str, int, str, Event | None, str]]:
        for row in self._batches(
                f"SELECT rowid, {_ID_COL.format('job')}, kind, {_ID_COL.format('peer')}, id, "
                f"CASE WHEN length(event) <= {HELD_TEXT_MAX} THEN event END "
                "FROM gone_wait_events WHERE 1 {after}", "rowid"):
            _, job, kind, peer, key, text = row
            what = f"an event waiting for the gone job {str(job)[:64]!r}"
            if not (type(job) is str and type(kind) is int and type(peer) is str
                    and type(key) is str):
                self._skip(what, "row", f"{row[1:5]!r:.80} is not (job, kind, peer, id)",
                           _WAIT_KEPT)
                continue
            if text is None:
                yield job, kind, peer, None, key
                continue
            d = self._column(what, "event", text, lambda v: type(v) is dict, _WAIT_KEPT)
            if d is None:
                continue
            try:
                ev = Event.from_json(d)
            except (InvalidEvent, ValueError, TypeError) as e:
                self._skip(what, "event", e, _WAIT_KEPT)
                continue
            yield job, kind, peer, ev, key

    def _vouched_rows(self, db: sqlite3.Connection,
                      got: Mapping[str, tuple[set[str], set[str]]]) -> None:
        """Keep gone lanes jobs' (members, vouched members) (`vouched_of`), each united with
        the row there (both only grow), in the caller's transaction (`got` is united in
        place)."""
        for job, (members, vouched) in got.items():
            if (old := self.vouched_of(job)) is not None:
                members.update(old[0])
                vouched.update(old[1])
            db.execute("INSERT OR REPLACE INTO gone_vouched VALUES (?, ?, ?)",
                       (job, _dumps(sorted(members)), _dumps(sorted(vouched))))

    def _unknown_view(self, job: str, column: str) -> DataError:
        """The DataError of a job whose row is there but whose `column` does not read back
        (the API's 503: the list shows the job, its view is not known)."""
        return DataError(
            f"{self.path}: {_job(job)} does not read back (its {column}: see the peer's "
            "log): this job's view is not known here; restore the file from a backup, or "
            "delete the job (`banzai jobs rm`)", field="job_index")

    def page_apart(self, limit: int, before: Order | None) -> list[tuple[Order, dict[str, Any]]]:
        """`page` on a read connection of its own to the index's file, closed after: for a
        worker thread (GET /api/jobs reads the list off the loop, session 48 review r1 F3;
        the index's own connection is its owner's). An index without a file (in memory) is
        read on its connection."""
        return self._apart(lambda db: self.page(limit, before, db))

    def _apart(self, read: Callable[[sqlite3.Connection | None], _T]) -> _T:
        """`read(db)` on a read connection of its own to the index's file, closed after (a
        worker thread's: the index's own connection is its owner's); `read(None)`, on the
        index's connection, for an index without a file (in memory)."""
        if not self.path.is_file():
            return read(None)
        try:
            db = connect(str(self.path), isolation_level=None, check_same_thread=False)
        except sqlite3.Error as e:
            raise unreadable(self.path, e) from e
        try:
            return read(db)
        finally:
            db.close()

    def page(self, limit: int | None, before: Order | None,
             db: sqlite3.Connection | None = None) -> list[tuple[Order, dict[str, Any]]]:
        """(order, summary) of the jobs older than `before` (all without it), newest first,
        at most `limit` (all without it); on `db` if given (`_read`)."""
        sql = f"SELECT {KEY_COLUMNS}, summary FROM job_index"
        args: list[Any] = []
        if before is not None:
            sql += " WHERE (hlc, origin, seq) < (?, ?, ?)"
            args += list(before)
        sql += " ORDER BY hlc DESC, origin DESC, seq DESC"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        out: list[tuple[Order, dict[str, Any]]] = []
        for row in self._read(sql, args, db):
            if not self._keys_ok(row):
                continue
            summary = self._column(_job(row[0]), "summary", row[6], _of_job(row[0]))
            if summary is not None:
                out.append(((row[1], row[2], row[3]), summary))
        return out

    def delete(self, jobs: Iterable[str]) -> list[tuple[str, int]]:
        """Remove jobs' records; returns the ids of their events still in the log.
        DataError (nothing removed) if a record's ids do not read back (`_ids`). A lanes
        job's facts (`lanes_of`: its members and order) go to `deleted_lanes` in the same
        transaction (the first kept), so that a restart before the next pass's `_bury`
        still reads them beside the tombstone (session 47, review r2 finding 1)."""
        out: list[tuple[str, int]] = []
        gone = 0
        with self._tx() as db:
            for job in jobs:
                row = db.execute("SELECT ids FROM job_index WHERE job = ?", (job,)).fetchone()
                if row is not None:
                    out += self._ids(job, row[0])
                    if (facts := self.lanes_of(job)) is not None:
                        db.execute("INSERT OR IGNORE INTO deleted_lanes VALUES (?, ?, ?, ?, ?)",
                                   (job, _dumps(sorted(facts[0])), *facts[1]))
                    db.execute("DELETE FROM job_index WHERE job = ?", (job,))
                    db.execute("DELETE FROM job_thin WHERE job = ?", (job,))
                    gone += 1
        self._count -= gone  # (committed)
        return out

    def snapshots_pending(self) -> list[tuple[str, int, str]]:
        """(path, offset, signer) of the spooled snapshots whose rows are still being taken.
        Each row is checked as it is read (the file is the data dir's, read as hostile): its
        path must name a spool file in `spool_dir` (`_spool_key`), `at` be a non-negative
        integer, the signer a peer id's string. A row that is not is deleted, with one
        warning naming it; the file it names is never touched. A row of an earlier release
        (the file's path in `spool_dir`) is kept under its name."""
        out: list[tuple[str, int, str]] = []
        kept: list[tuple[str, int, str]] = []  # (those already kept under their name)
        bad: list[int] = []
        renamed: list[tuple[str, int]] = []
        for rowid, p, a, s in self._db.execute(
                "SELECT rowid, path, at, signer FROM snapshot_pending ORDER BY rowid").fetchall():
            try:
                key = self._pending_row(p, a, s)
            except ValueError as e:
                log.warning("%s: snapshot_pending row %d (path %.200r) is deleted: %s (the "
                            "file it names is left alone)", self.path, rowid, p, e)
                bad.append(rowid)
                continue
            out.append((str(self._spool(key)), a, s))
            if key == p:
                kept.append(out[-1])
            else:
                renamed.append((key, rowid))
        if bad or renamed:
            try:
                with self._tx() as db:
                    db.executemany("DELETE FROM snapshot_pending WHERE rowid = ?",
                                   [(r,) for r in bad])
                    if bad:  # (their digests: kept with a pending row only)
                        db.execute("DELETE FROM snapshot_sums WHERE path NOT IN "
                                   "(SELECT path FROM snapshot_pending)")
                    db.executemany("UPDATE OR REPLACE snapshot_pending SET path = ? "
                                   "WHERE rowid = ?", renamed)
            except sqlite3.Error as e:  # (a full disk: the others are left out meanwhile)
                log.warning("%s: snapshot_pending rows could not be rewritten: %s", self.path, e)
                return kept
        return out

    def _pending_row(self, path: object, at: object, signer: object) -> str:
        """The spool's name if a `snapshot_pending` row reads back as written, else
        ValueError (what is wrong)."""
        if type(at) is not int or at < 0:
            raise ValueError("at is not a non-negative integer")
        if type(signer) is not str or not 0 < len(signer) <= MAX_ID_CHARS:
            raise ValueError("signer is not a peer id")
        return self._spool_key(path)

    def _spool(self, key: str) -> Path:
        assert self.spool_dir is not None  # (a key was made)
        return self.spool_dir / key

    def _spool_key(self, path: object) -> str:
        """The name under which the spool file `path` is kept in `snapshot_pending`: a file
        named as `spool_name` makes, directly in `spool_dir` (a bare name, or a path in a
        directory named so: only its name is used), not a symlink nor anything but a file if
        it exists. ValueError if it is not; one that cannot be examined (EACCES, EIO: not
        known to be absent or of the wrong kind) is kept, logged once."""
        if type(path) is not str or self.spool_dir is None:
            raise ValueError("path is not a spool file's name")
        p = Path(path)
        if not _SPOOL_NAME.fullmatch(p.name):
            raise ValueError(f"path does not name a spool file in {SPOOL_DIR}/")
        # A path: written by an earlier release, or given to `spooled`; in a data dir since
        # moved, its directory is another snapshots/: only the name is used (in spool_dir).
        if str(p) != p.name and p.parent.name != SPOOL_DIR and not _same_dir(
                p.parent, self.spool_dir):
            raise ValueError(f"path is outside {self.spool_dir}")
        try:
            mode = os.lstat(self.spool_dir / p.name).st_mode
        except (FileNotFoundError, NotADirectoryError):
            return p.name  # (taken as lost when read)
        except OSError as e:  # (EACCES, EIO: it may be there, and may be read later)
            if p.name not in self._unexamined:
                self._unexamined.add(p.name)
                log.warning("%s: the spool file %s cannot be examined (%s): its snapshot_"
                            "pending row is kept", self.path, self.spool_dir / p.name, e)
            return p.name
        if not stat.S_ISREG(mode):
            raise ValueError("path is not a regular file (a symlink?)")
        return p.name

    def snapshots_owed(self) -> list[str]:
        """Signers of taken snapshots whose cache and provider rows are still to fetch (a
        row whose signer is not a text is left out, logged once)."""
        out = []
        for (s,) in self._read("SELECT signer FROM snapshot_owed"):
            if type(s) is str:
                out.append(s)
            else:
                self._skip(f"the snapshot_owed row of {s!r:.64}", "signer", "not a text")
        return out

    def spooled(self, path: str, signer: str, owed: str, sha: bytes | None = None) -> None:
        """The rows owed for `owed`'s snapshot are spooled at `path` (signed by `signer`;
        `sha`: the digest of the spool's bytes its trailer was checked against, kept to check
        it again before its rows are taken, `spool_sum`): taken from now on (`put_rows`), in
        one transaction."""
        key = self._spool_key(path)
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO snapshot_pending VALUES (?, 0, ?)",
                       (key, signer))
            self._put_sum(db, key, sha)
            db.execute("DELETE FROM snapshot_owed WHERE signer = ?", (owed,))

    @staticmethod
    def _put_sum(db: sqlite3.Connection, key: str, sha: bytes | None) -> None:
        if sha is None:
            db.execute("DELETE FROM snapshot_sums WHERE path = ?", (key,))
        else:
            db.execute("INSERT OR REPLACE INTO snapshot_sums VALUES (?, ?)", (key, sha))

    def spool_sum(self, path: str) -> bytes | None:
        """The digest kept for the pending spool `path` (`spooled`, `put_batches`); None if
        none is (an earlier release's row), or it does not read back (a 32-byte blob; logged
        once): the spool is then taken as it is."""
        key = Path(path).name  # (as `snapshots_pending` gave it)
        row = self._one("SELECT sha FROM snapshot_sums WHERE path = ?", (key,))
        if row is None:
            return None
        sha = row[0]
        if type(sha) is not bytes or len(sha) != 32:
            self._skip(f"the snapshot_sums row of {key!r:.80}", "sha", "not a 32-byte blob",
                       "leaves its spool unchecked (taken as it is)")
            return None
        return sha

    def put_rows(self, batches: Sequence[tuple[str, Sequence[Sequence[Any]]]], path: str,
                 at: int | None) -> None:
        """Cache and provider rows of the pending snapshot `path` (checked by the caller), and
        how far it was read (`at`; None: all of it, the snapshot is no longer pending), in one
        transaction: a crash resumes where the last one ended (a row taken twice is
        harmless)."""
        sql = {"c": _CACHE_UPSERT, "p": _PROVIDER_ADD}
        key = Path(path).name  # (as `snapshots_pending` gave it)
        try:
            with self._tx() as db:
                for tag, rows in batches:
                    db.executemany(sql[tag], self._provider_rows(rows) if tag == "p" else rows)
                if at is None:
                    db.execute("DELETE FROM snapshot_pending WHERE path = ?", (key,))
                    db.execute("DELETE FROM snapshot_sums WHERE path = ?", (key,))
                else:
                    db.execute("UPDATE snapshot_pending SET at = ? WHERE path = ?", (at, key))
        finally:
            self._forget_absent()

    def put_deleted(self, tombs: Iterable[tuple[str, Order]],
                    ids: Iterable[tuple[str, Order]] = (),
                    lanes: Iterable[tuple[str, Sequence[str], Order]] = ()) -> None:
        """Store deleted jobs' tombstones (job, order of its JOB_DELETED; the earlier order
        of two is kept), JOB_DELETED rows (job, their (hlc, origin, seq)) and deleted lanes
        jobs' facts (job, members, its JOB_SUBMITTED's order; the first kept: `lanes_of`),
        in one transaction."""
        try:
            with self._tx() as db:
                db.executemany(
                    "INSERT INTO job_deleted VALUES (?, ?, ?, ?) ON CONFLICT (job) DO UPDATE "
                    "SET hlc = excluded.hlc, origin = excluded.origin, seq = excluded.seq WHERE "
                    "(excluded.hlc, excluded.origin, excluded.seq) < "
                    "(job_deleted.hlc, job_deleted.origin, job_deleted.seq)",
                    [(j, *o) for j, o in tombs])
                db.executemany("INSERT OR IGNORE INTO deleted_ids VALUES (?, ?, ?, ?)",
                               [(j, o, q, h) for j, (h, o, q) in ids])
                db.executemany("INSERT OR IGNORE INTO deleted_lanes VALUES (?, ?, ?, ?, ?)",
                               [(j, _dumps(sorted(m)), *o) for j, m, o in lanes])
        finally:
            self._absent[_DELETED].clear()

    def add_ids(self, ids: Mapping[str, Iterable[tuple[str, int]]]) -> int:
        """Add to each job's record these ids of its events still in the log (a straggler:
        one that left memory after its job was compacted), in one transaction; a job with
        no record (deleted meanwhile) is skipped. Returns the ids added."""
        added = 0
        with self._tx() as db:
            for job, got in ids.items():
                row = db.execute("SELECT ids FROM job_index WHERE job = ?", (job,)).fetchone()
                if row is None:
                    continue
                try:
                    have = self._ids(job, row[0])
                except DataError:  # (its events stay: the row is left as it is)
                    continue
                both = _union(have, got)
                if len(both) > len(have):
                    added += len(both) - len(have)
                    db.execute("UPDATE job_index SET ids = ?, marks = ? WHERE job = ?",
                               (_dumps([list(i) for i in both]), _dumps(_marks(both)), job))
        return added

    def _backfill_deleted(self) -> int:
        """Fill `deleted_ids` from the log's JOB_DELETED rows (a data dir of an earlier
        release: once, as the table is made); returns the rows written. A row whose payload
        does not read as a JOB_DELETED's is left out (the door quarantines it at the replay)."""
        rows: list[tuple[str, str, int, int]] = []
        if self._db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND "
                            "name = 'events'").fetchone() is None:
            return 0  # (an index without a log: tests, benchmarks)
        for origin, seq, hlc, payload in self._db.execute(
                "SELECT origin, seq, hlc, payload FROM events WHERE type = ?",
                (int(EventType.JOB_DELETED),)):
            try:
                job = json.loads(payload).get("job")
            except (TypeError, ValueError, AttributeError):
                continue
            if (isinstance(job, str) and type(origin) is str and type(seq) is int
                    and type(hlc) is int):  # (a text that is not UTF-8 reads as bytes)
                rows.append((job, origin, seq, hlc))
        with self._tx() as db:
            db.executemany("INSERT OR IGNORE INTO deleted_ids VALUES (?, ?, ?, ?)", rows)
        return len(rows)

    def old_deleted(self, before_hlc: int, after: tuple[int, str], limit: int,
                    ) -> list[tuple[int, str]]:
        """Up to `limit` (hlc, job) of JOB_DELETED rows older than `before_hlc`, in that order,
        after `after` (a range of the `deleted_ids_hlc` index: no scan of the older rows)."""
        return [(h, j) for h, j in self._db.execute(
            "SELECT hlc, job FROM deleted_ids WHERE hlc < ? AND (hlc, job) > (?, ?) "
            "ORDER BY hlc, job LIMIT ?", (before_hlc, after[0], after[1], limit))
            if type(h) is int and type(j) is str]  # (a row edited on disk: left, not read)

    def tomb_rows(self, job: str) -> tuple[Order, list[tuple[str, int]]] | None:
        """A deleted job's tombstone and the ids of all its JOB_DELETED rows; None if the
        index holds no tombstone of it (`_tomb`)."""
        tomb = self._tomb(job)
        if tomb is None:
            return None
        ids = self._db.execute("SELECT origin, seq FROM deleted_ids WHERE job = ?",
                               (job,)).fetchall()
        h, o, q = tomb
        bad = next((f"({o!r:.40}, {q!r:.40}) is not an event id" for o, q in ids
                    if type(o) is not str or not _is_seq(q)), None)
        if row_fault(tomb, _TOMB_KINDS) is not None:  # (as `tombstone` reads it)
            bad = f"({h!r:.40}, {o!r:.40}, {q!r:.40}) is not (hlc, origin, seq)"
        if bad is not None:  # (edited on disk: the tombstone is kept, never forgotten)
            self._skip(f"the tombstone of {job[:64]!r}", "order or ids", bad,
                       "is kept, never forgotten")
            return None
        return (h, o, q), list(ids)

    def _tomb(self, job: str) -> tuple[Any, ...] | None:
        """A deleted job's tombstone (hlc, origin, seq) as held, None if it is not deleted:
        its job_deleted row, else the first of its deleted_ids rows (written with it, in one
        transaction: a job_deleted row whose job column was damaged is found under no job,
        and the deleted job would come back at its next event)."""
        db = self._db
        row: tuple[Any, ...] | None = db.execute(
            "SELECT hlc, origin, seq FROM job_deleted WHERE job = ?", (job,)).fetchone() or (
            db.execute("SELECT hlc, origin, seq FROM deleted_ids WHERE job = ? ORDER BY hlc, "
                       "origin, seq LIMIT 1", (job,)).fetchone())
        return row

    def note_forgotten(self, jobs: Iterable[str], floors: Mapping[str, int]) -> None:
        """Deleted jobs whose tombstones leave (peer.log.tombs), in the caller's transaction
        on this connection (the log's delete of their JOB_DELETED rows): their tombstone and
        ids go, each origin's compaction floor rises to `floors`."""
        names = [(j,) for j in jobs]
        self._db.executemany("DELETE FROM job_deleted WHERE job = ?", names)
        self._db.executemany("DELETE FROM deleted_ids WHERE job = ?", names)
        self._db.executemany("DELETE FROM deleted_lanes WHERE job = ?", names)
        self._db.executemany("DELETE FROM gone_vouched WHERE job = ?", names)
        self._db.executemany("DELETE FROM gone_wait_adds WHERE job = ?", names)
        self._db.executemany("DELETE FROM gone_wait_events WHERE job = ?", names)
        self.note_dropped((), floors)

    def forgot(self, jobs: Iterable[str]) -> None:
        """After `note_forgotten` committed: the jobs' tombstones are no longer held."""
        for job in jobs:
            self._note_absent(_DELETED, job)

    def tombstone(self, job: str) -> Order | None:
        """A deleted job's tombstone (its JOB_DELETED's order, `_tomb`), None if it is not
        deleted. A tombstone whose order does not read back (`_TOMB_KINDS`: damaged, edited) is not
        left out, which would bring the deleted job back at its next event: the job stays
        deleted, its order read as UNKNOWN_ORDER, the latest there is (the events of the job
        are kept, never dropped for it, as `tomb_rows` keeps the tombstone), logged once."""
        absent = self._absent[_DELETED]
        if job in absent:
            return None
        row = self._tomb(job)
        if row is None:
            self._note_absent(_DELETED, job)
            return None
        bad = row_fault(row, _TOMB_KINDS)
        if bad is not None:
            self._skip(f"the tombstone of {job[:64]!r}", bad,
                       f"{row!r:.80} is not (hlc, origin, seq): the job stays deleted, its "
                       "order unknown", "is kept")
            return UNKNOWN_ORDER
        h, o, q = row
        return (h, o, q)

    def deleted_records(self) -> list[str]:
        """The jobs with both a record and a tombstone (a crash between logging a JOB_DELETED
        and removing the record)."""
        return [j for (j,) in self._read(
            "SELECT job FROM job_index WHERE job IN (SELECT job FROM job_deleted)")
            if type(j) is str]  # (a text that is not UTF-8 reads as bytes: left, not read)

    def deleted_any(self) -> bool:
        """Does the index hold a tombstone?"""
        return self._db.execute("SELECT 1 FROM job_deleted LIMIT 1").fetchone() is not None

    def _forget_absent(self) -> None:
        """Cache or provider rows may have been written: a key not found before may be now."""
        for table, keys in self._absent.items():
            if table != _DELETED:  # (tombstones are written by put_deleted only)
                keys.clear()

    def _note_absent(self, table: int, key: str) -> None:
        keys = self._absent[table]
        if len(keys) >= ABSENT_MAX:
            keys.clear()
        keys.add(key)

    # -- thin rows (peer.log.snapframe): a job's full texts fetched on demand ---------------
    def thin_sha(self, job: str) -> str | None:
        """The hash of a job's full texts if the index holds only its thin row (taken from
        a version 3 snapshot, not fetched yet), else None. DataError (`record`'s) if that
        hash does not read back (damaged, edited: no member's answer would match it; the
        list shows the job, its view is not known)."""
        row = self._one("SELECT t.sha FROM job_index j JOIN job_thin t USING (job) "
                        "WHERE j.job = ? AND j.record = ''", (job,))
        if row is None:
            return None
        if not is_record_sha(row[0]):
            self._skip(f"the job index's job_thin row of {job[:64]!r}", "sha",
                       f"{row[0]!r:.80} is not a record's hash",
                       "is not fetched (its job's view is not known)")
            raise self._unknown_view(job, "thin row's hash")
        sha: str = row[0]
        return sha

    def texts(self, job: str) -> list[str] | None:
        """[summary, record, facts] of a job whose full record the index holds (what a
        member answers a peer fetching it), else None."""
        row = self._one(f"SELECT {JOB_COLUMNS} FROM job_index WHERE job = ? AND record != ''",
                        (job,))
        return None if row is None or self.left_out("j", row) else list(row[6:])

    def fill(self, job: str, texts: Sequence[str]) -> None:
        """A thin job's full texts (checked against its hash by the caller: snapframe.
        check_record) replace its thin summary, record and facts."""
        summary, record, facts = texts
        with self._tx() as db:
            db.execute("UPDATE job_index SET summary = ?, record = ?, facts = ? WHERE job = ? "
                       "AND record = ''", (summary, record, facts, job))
        self._thin_owed()  # (its thin row came with it; a row without one, a v2 row)

    def backfill(self, limit: int) -> int:
        """Thin rows for at most `limit` records written by an earlier release (none yet):
        a snapshot stream then reads them instead of the full texts. Returns how many rows
        it read. Each call goes on after the last row the previous one read (rowid order);
        once one reads fewer than `limit` (the scan reached the end) every later call reads
        nothing until a write may add a record without its thin row (`_thin_owed`). A row
        whose texts do not make a thin row (not texts, not JSON objects: damaged, edited)
        is stepped past, logged once, and never holds the others back. The rows without a
        thin row are found on the two tables' keys alone (no record's text is read but
        theirs)."""
        if self._backfill_done:
            return 0
        owed = [r for (r,) in self._db.execute(
            "SELECT j.rowid FROM job_index j WHERE j.rowid > ? AND NOT EXISTS (SELECT 1 FROM "
            "job_thin t WHERE t.job = j.job) ORDER BY j.rowid LIMIT ?",
            (self._backfill_at, limit))]
        rows = [row for r in owed for row in self._db.execute(
            "SELECT rowid, job, summary, record, facts FROM job_index WHERE rowid = ? AND "
            "record != ''", (r,))]
        self._backfill_at = owed[-1] if len(owed) >= limit else 0
        self._backfill_done = len(owed) < limit
        out = []
        for _, job, summary, record, facts in rows:
            try:
                if not all(type(t) is str for t in (job, summary, record, facts)):  # (a
                    raise ValueError("a text that is not UTF-8")  # text that is not UTF-8
                out.append((job, *thin(summary, record, facts)))  # reads as bytes)
            except (ValueError, RecursionError) as e:
                self._skip(_job(job), "texts", f"no thin row is made of it: {e!s:.100}",
                           "is stepped past")
        if out:
            with self._tx() as db:
                db.executemany("INSERT OR REPLACE INTO job_thin VALUES (?, ?, ?, ?)", out)
        return len(rows)

    def _thin_owed(self) -> None:
        """A write may have added a full record without its thin row: `backfill` scans
        again, from the start."""
        self._backfill_done = False
        self._backfill_at = 0

    def thin_digests(self, digest: Callable[..., str],
                     db: sqlite3.Connection | None = None) -> dict[str, str]:
        """Job -> `digest(job, hlc, origin, seq, ended, state, outputs hash)` for every job
        of the index (snapframe.job_digest3) whose facts read back, their outputs hash a
        hash (`is_outputs_sha`; read on `db`, as `_read`), but a bare one (its record made
        without its outputs: `is_bare`)."""
        out: dict[str, str] = {}
        for row in self._read(
                "SELECT j.job, j.hlc, j.origin, j.seq, j.ended, j.state, t.facts, "
                "CASE WHEN t.job IS NULL THEN j.facts END, t.summary FROM job_index j "
                "LEFT JOIN job_thin t USING (job)", (), db):
            if not self._keys_ok(row) or is_bare(row[8]):
                continue
            job, h, o, q, ended, state, tf, facts, _ = row
            f = self._column(_job(job), "facts", facts if tf is None else tf, _is_object)
            if f is None:
                continue
            try:
                osha = f.get("outputs_sha") if tf is not None else outputs_sha(facts_cids(f))
            except (ValueError, TypeError) as e:
                self._skip(_job(job), "facts", e)
                continue
            if not is_outputs_sha(osha):  # (a thin row's, damaged or a member's: no "None")
                self._skip(_job(job), "facts", f"outputs_sha {osha!r:.40} is not a hash")
                continue
            out[job] = digest(job, h, o, q, ended, state, osha)
        return out

    def pending(self) -> Iterator[tuple[str, int, dict[str, int]]]:
        """(job, ended hlc, marks: origin -> its highest seq) of the jobs whose events are
        still in the log (a row whose end or marks do not read back is left out, its events
        kept)."""
        for job, ended, marks in self._db.execute(
                "SELECT job, ended, marks FROM job_index WHERE ids != '[]'").fetchall():
            m = self._column(_job(job), "marks", marks, _is_marks)
            if type(job) is not str:
                self._skip(_job(job), "job", f"{job!r:.40} is not a text")
            elif type(ended) is not int:
                self._skip(_job(job), "ended", f"{ended!r:.40} is not an hlc")
            elif m is not None:
                yield str(job), ended, m

    def ids(self, jobs: Iterable[str]) -> list[tuple[str, int]]:
        """The ids of these jobs' events still in the log; DataError if a row's ids do not
        read back (`_ids`)."""
        out: list[tuple[str, int]] = []
        for job in jobs:
            row = self._db.execute("SELECT ids FROM job_index WHERE job = ?", (job,)).fetchone()
            if row is not None:
                out += self._ids(job, row[0])
        return out

    def _ids(self, job: Any, text: Any) -> list[tuple[str, int]]:
        """A row's ids. DataError naming the file and the row if they do not read back
        (logged once): the events of the job still in the log are not known, so what would
        lose them waits (its deletion, their drop, its ids written anew) and they stay."""
        ids = self._column(_job(job), "ids", text, _is_ids, _IDS_HELD)
        if ids is None:
            raise DataError(
                f"{self.path}: {_job(job)} {_IDS_HELD}: its ids do not read back (see the "
                "peer's log): restore the file from a backup", field="job_index")
        return [(o, q) for o, q in ids]

    @property
    def skipped(self) -> int:
        """The (row, column)s that reads left out because they do not read back (at most
        MAX_LOGGED_ROWS are counted)."""
        return min(len(self._bad), MAX_LOGGED_ROWS)

    def _read(self, sql: str, args: Sequence[Any] = (),
              db: sqlite3.Connection | None = None) -> Iterator[Any]:
        """The rows of a query reading the index back (on `db`, a read transaction of the
        same file, else the index's connection): the one place its reads meet the file. A
        sqlite3.DatabaseError (a damaged page mid-file, a text that does not decode) is
        raised as peer.log.sqlite.unreadable says: a DataError naming the file."""
        try:
            yield from (self._db if db is None else db).execute(sql, args)
        except sqlite3.DatabaseError as e:
            raise unreadable(self.path, e) from e

    def _one(self, sql: str, args: Sequence[Any] = ()) -> Any:
        """The first row of `_read(sql, args)`, None if there is none."""
        return next(self._read(sql, args), None)

    def _valid(self, row: Sequence[Any], columns: Sequence[tuple[str, str]], what: str,
               fate: str = _LEFT_OUT) -> bool:
        """Are `row`'s `columns` (peer.log.snapstream: JOB_KEYS, CACHE_KINDS, PROVIDER_KINDS)
        what the index writes there? If not, the row is left out (`_skip`, naming `what`
        and the column, and saying `fate`). Every read of those tables checks each row so
        (and `put` each provider row it writes: a member's PROVIDE may name any string)."""
        bad = row_fault(row, columns)
        if bad is None:
            return True
        names = [name for name, _ in columns]
        value = row[names.index(bad)] if bad in names else row
        self._skip(what, bad, f"{value!r:.60} is not what the index writes there", fate)
        return False

    def _keys_ok(self, row: Sequence[Any], fate: str = _LEFT_OUT) -> bool:
        """A job_index row (its first six columns: JOB_KEYS) reads back."""
        return self._valid(row, JOB_KEYS, _job(row[0]), fate)

    def _entry_ok(self, row: Sequence[Any]) -> bool:
        """A cache_index row (CACHE_COLUMNS) reads back."""
        return self._valid(row, CACHE_KINDS,
                           f"the job index's cache entry {str(row[1])[:64]!r}")

    def _provider_ok(self, row: Sequence[Any], fate: str = _LEFT_OUT) -> bool:
        """A provider_index row (cid, origin) reads back (a CID, a peer id)."""
        return self._valid(row, PROVIDER_KINDS,
                           f"the job index's provider row of {str(row[0])[:64]!r}", fate)

    def _cids_only(self, rows: Iterable[Sequence[Any]], fate: str) -> list[Sequence[Any]]:
        """The provider rows of `rows` that name a CID and a peer id (PROVIDER_KINDS), as
        they are written; the others are left out (logged once each, saying `fate`): a
        member's PROVIDE may name any text, and a peer of release e418a64 stored and sends
        it."""
        return [r for r in rows if self._provider_ok(r, fate)]

    def providers_sound(self) -> bool:
        """Does every provider_index row read back? Checked once per open (one scan, the
        first time this is asked: the compactor's first reap; each bad row logged once):
        while one whose cid is not a text is held (`_holds_back`), the index cannot tell
        which CIDs it lists no provider of (that row may be a CID's only one), and the
        compactor deletes no cache entry for want of a provider. The scan deletes the rows
        whose cid is a text that names no CID (`_names_no_cid`)."""
        if self._providers_sound is None:
            dead: set[str] = set()
            try:
                cids = self._cid_filter()
                bad = sum(self._provider_fault(r, dead) for r in _noting(cids, self._read(
                    "SELECT cid, origin FROM provider_index")))
                self._cids = cids  # (read whole)
            except StoreError as e:  # (a text that does not decode, a damaged page)
                log.warning("%s", e)
                bad, dead = 1, set()  # (deleted once a scan reads the whole table)
            if dead:
                with self._tx() as db:
                    db.executemany("DELETE FROM provider_index WHERE cid = ?",
                                   [(c,) for c in sorted(dead)])
                log.warning("%s: deleted the provider rows of %d texts that name no CID "
                            "(an earlier release's: a truncated digest, or a PROVIDE of "
                            "another text)", self.path, len(dead))
            self._providers_sound = not bad
            if bad:
                log.warning("%s: provider_index holds rows that do not read back: no cache "
                            "entry is deleted for want of a provider until it is repaired "
                            "(docs/architecture.md, \"The log's integrity check\")", self.path)
        elif self._cids_owed:  # (the filter grew full: read anew, the next pass's reap)
            self._cids_owed = False
            try:
                cids = self._cid_filter()
                cids.add_all(r[0] for r in self._read("SELECT cid FROM provider_index")
                             if type(r[0]) is str)
                self._cids = cids
            except StoreError as e:  # (left None: every look-up asks the file)
                log.warning("%s", e)
        return self._providers_sound

    def _cid_filter(self) -> KeyFilter:
        """An empty KeyFilter sized for provider_index's rows."""
        return KeyFilter(int(self._one("SELECT count(*) FROM provider_index")[0]))

    def _provider_rows(self, rows: Iterable[Sequence[Any]],
                       fate: str = "is not taken (a snapshot's provider row of something else)",
                       ) -> list[Sequence[Any]]:
        """Provider `rows` to write (`_cids_only`, logging `fate`), their CIDs in the
        filter."""
        out = self._cids_only(rows, fate)
        self._owe_cids(out)
        return out

    def _owe_cids(self, rows: Iterable[Sequence[Any]]) -> None:
        """Provider `rows` are about to be written: their CIDs enter the filter (before: a
        write that fails leaves a `maybe` more, never a CID missed); one full past its
        capacity is read anew at the next `providers_sound`."""
        cids = self._cids
        if cids is None:
            return
        cids.add_all(r[0] for r in rows)
        if cids.full:
            self._cids, self._cids_owed = None, True

    def _provider_fault(self, row: Sequence[Any], dead: set[str]) -> bool:
        """Does provider_index `row` hold the reaping of cache entries back (it does not
        read back: `_holds_back`)? One whose cid names no CID (`_names_no_cid`) is added
        to `dead` (logged once as deleted)."""
        if _names_no_cid(row):
            dead.add(row[0])
            self._provider_ok(row, _DELETED_ROW)
            return False
        return not self._provider_ok(row) and _holds_back(row)

    def left_out(self, tag: str, row: Sequence[Any]) -> bool:
        """Is `row` (of a snapshot's batch `tag`: "j", "t", "c" or "p") left out of what
        this peer serves, its receiver refusing it (`refused`)? Logged once per row. Safe
        in a snapshot stream's thread."""
        why = refused(tag, row)
        if why is not None:
            self._skip(f"the job index's {_TABLES[tag]} row of {str(row[0])[:64]!r}",
                       "row", why)
        return why is not None

    def _column(self, row: str, column: str, text: Any, ok: Callable[[Any], bool],
                fate: str = _LEFT_OUT) -> Any:
        """A row's JSON `column` parsed, if it parses to what `ok` accepts; else None, and
        the row is left out (`_skip`)."""
        try:
            v = loads_within(text)
        except (ValueError, TypeError, RecursionError) as e:
            self._skip(row, column, e, fate)
            return None
        if not ok(v):
            self._skip(row, column, f"{text!r:.60} is not what the index writes there", fate)
            return None
        return v

    def _value(self, key: Any, text: Any) -> Any:
        """A cache entry's value parsed from its JSON text; _UNREAD if it does not parse
        (damaged, edited, or a malformed value a snapshot stream brought: left out)."""
        try:
            return loads_within(text)
        except ValueError as e:  # (also a text that is not one: peer.jsontext)
            self._skip(_entry(key), "value", e)
            return _UNREAD

    def _skip(self, row: str, column: str, why: object, fate: str = _LEFT_OUT) -> None:
        """A row (as `_job` names it) that a read met and that does not read back: counted
        and logged once per (row, column), saying what the read does of it (`fate`: it is
        left out, or, for `facts`, it holds retention and gc back)."""
        if (row, column) in self._bad:
            return
        if len(self._bad) >= MAX_LOGGED_ROWS:  # (a member's snapshot may hold any number)
            if len(self._bad) == MAX_LOGGED_ROWS:
                self._bad.add(("", ""))  # (the mark that this line was logged)
                log.warning("%s: more rows do not read back (%d logged one by one); the "
                            "rest are left out unlogged until the peer restarts", self.path,
                            MAX_LOGGED_ROWS)
            return
        self._bad.add((row, column))
        log.warning("%s: %s %s: its %s does not read back (%s)", self.path, row, fate,
                    column, f"{why!s:.200}")

    def dropped(self, jobs: Iterable[str], floors: Mapping[str, int]) -> None:
        """These jobs' events left the log; each origin's compaction floor rises to `floors`."""
        with self._tx():
            self.note_dropped(jobs, floors)

    def note_dropped(self, jobs: Iterable[str], floors: Mapping[str, int]) -> None:
        """`dropped`, in the caller's transaction on this connection (the log's delete)."""
        self._db.executemany("UPDATE job_index SET ids = '[]' WHERE job = ?",
                             [(j,) for j in jobs])
        self._db.executemany("INSERT INTO compact_floors VALUES (?, ?) ON CONFLICT (origin) DO "
                             "UPDATE SET seq = max(seq, excluded.seq)", list(floors.items()))

    def job_digests(self, digest: Callable[[tuple[Any, ...]], str],
                    db: sqlite3.Connection | None = None) -> dict[str, str]:
        """Job -> `digest` of its row (JOB_COLUMNS), for every job of the index whose facts
        read back (`digest` raises ValueError, TypeError or AttributeError else: the row is
        left out; read on `db`, as `_read`)."""
        out: dict[str, str] = {}
        for r in self._read(f"SELECT {JOB_COLUMNS} FROM job_index WHERE record != ''", (), db):
            if not self._keys_ok(r):  # (not thin rows)
                continue
            try:
                out[r[0]] = digest(r)
            except (ValueError, TypeError, AttributeError, RecursionError) as e:  # (facts
                # of another JSON type, or not UTF-8: bytes)
                self._skip(_job(r[0]), "facts", e)
        return out

    def floors(self) -> dict[str, int]:
        """Origin -> the highest seq compaction dropped (`compact_floors`)."""
        return compact_floors(self._db, self.path, self.own)

    def entries(self, db: sqlite3.Connection | None = None) -> Iterator[CacheEntry]:
        """Every cache entry (for a snapshot; read on `db`, as `_read`); one that does not
        read back is left out."""
        for row in self._read(f"SELECT {CACHE_COLUMNS} FROM cache_index", (), db):
            if not self._entry_ok(row):
                continue
            kind, k, v, h, o, q = row
            value = self._value(k, v)  # (a malformed value taken from a snapshot stream
            if value is _UNREAD:  # is not served on)
                continue
            yield CacheEntry(kind, k, value, (h, o, q))

    def facts_apart(self, read: Callable[[str, dict[str, Any]], _T]) -> list[_T]:
        """`facts` on a read connection of its own to the index's file, closed after: for a
        worker thread (the janitor's cycle reads every record's facts off the loop, review
        r2 of session 49 H2), as `page_apart`. An index without a file (in memory) is read
        on its connection."""
        return self._apart(lambda db: self.facts(read, db))

    def facts(self, read: Callable[[str, dict[str, Any]], _T],
              db: sqlite3.Connection | None = None) -> list[_T]:
        """`read(job, facts)` of every record: what retention needs of compacted jobs (read
        on `db` if given, as `_read`).
        DataError if a row's facts do not parse to an object or `read` refuses them
        (ValueError): that job's run logs are not known, and gc would free them; retention
        and gc are held back until the row is mended or removed (each row logged once)."""
        out: list[_T] = []
        damaged: list[str] = []
        for row in self._read(f"SELECT {KEY_COLUMNS}, facts FROM job_index", (), db):
            job = row[0]
            facts = self._column(_job(job), "facts", row[6], _is_object, _HELD) if (
                self._keys_ok(row, _HELD)) else None
            try:
                if facts is not None:
                    out.append(read(job, facts))
                    continue
            except ValueError as e:
                self._skip(_job(job), "facts", e, _HELD)
            damaged.append(f"{str(job)[:64]!r}")
        if damaged:
            raise DataError(
                f"{self.path}: the job index holds {len(damaged)} row(s) whose facts do not "
                f"read back (job {', '.join(damaged[:3])}{', ...' if len(damaged) > 3 else ''}): "
                "the run logs they keep are not known, so this peer deletes no job record, "
                "unpins nothing and collects no garbage until each is mended or removed "
                "(docs/architecture.md, \"The log's integrity check\")", field="job_index")
        return out

    def entry(self, kind: int, key: str) -> CacheEntry | None:
        absent = self._absent.get(kind)
        if absent is not None and key in absent:
            return None
        row = self._one(f"SELECT {CACHE_COLUMNS} FROM cache_index WHERE kind = ? AND k = ?",
                        (kind, key))
        if row is None:
            if absent is not None:
                self._note_absent(kind, key)
            return None
        if not self._entry_ok(row):  # (an edited row: as absent, replaced when won)
            return None
        _, _, v, h, o, q = row
        value = self._value(key, v)  # a snapshot's value is checked here, when read
        if value is _UNREAD:  # (peer.log.snapstream)
            return None
        return CacheEntry(kind, key, value, (h, o, q))

    def screen(self, table: int, keys: Iterable[str]) -> None:
        """Of `keys` about to be looked up one by one in `table` (ITEM or OUTPUT: `entry`;
        _PROVIDERS: `providers_of`), note those the index holds no row of as absent, with one
        query per SCREEN_BATCH keys instead of one each: then the look-up of each costs no
        query (a fresh JOB_ENDED's outputs: `MeshState`'s `_end_outputs`). A key with a row,
        read back or not, is left to its own look-up; so are all of a batch whose rows name
        a key it did not ask for (a table edited to compare keys otherwise)."""
        absent = self._absent[table]
        cids = self._cids if table == _PROVIDERS else None
        todo = [k for k in dict.fromkeys(keys)
                if k not in absent and (cids is None or cids.maybe(k))]
        for i in range(0, len(todo), SCREEN_BATCH):
            part = todo[i:i + SCREEN_BATCH]
            marks = ",".join("?" * len(part))
            if table == _PROVIDERS:
                rows = self._read(f"SELECT cid FROM provider_index WHERE cid IN ({marks})", part)
            else:
                rows = self._read(f"SELECT k FROM cache_index WHERE kind = ? AND k IN ({marks})",
                                  (table, *part))
            held = {r[0] for r in rows}
            if held <= set(part):
                for k in part:
                    if k not in held:
                        self._note_absent(table, k)

    def providers_of(self, cid: str) -> set[str] | None:
        """The origins that provided `cid` by the events of compacted jobs (None: none)."""
        if cid in self._absent[_PROVIDERS] or (self._cids is not None
                                                and not self._cids.maybe(cid)):
            return None
        out = {r[1] for r in self._read("SELECT cid, origin FROM provider_index WHERE cid = ?",
                                        (cid,)) if self._provider_ok(r)}
        if not out:
            self._note_absent(_PROVIDERS, cid)
        return out or None

    def output_slice(self, after: str | bytes, limit: int) -> tuple[list[SliceRow], str | bytes]:
        """At most `limit` output cache entries of keys after `after`, in key order (the CID
        is the value's JSON string), and the key the next slice comes after (`_next_after`).
        What `Compactor._reap` examines per pass. A row that does not read back (`_entry_ok`:
        a key or value that is not a text, an hlc that is not an integer) is left out,
        logged once; its place still moves the scan on. A key that is not a text at all (a
        BLOB, not what the index writes) is not read."""
        out: list[SliceRow] = []
        rows = list(self._read(  # (a CID's JSON text is the CID in quotes)
            f"SELECT {CACHE_COLUMNS}, EXISTS (SELECT 1 FROM provider_index WHERE cid = "
            "substr(v, 2, length(v) - 2)) FROM cache_index WHERE kind = ? AND "
            "typeof(k) = 'text' AND k > CAST(? AS TEXT) ORDER BY k LIMIT ?",
            (OUTPUT, after, limit)))
        for row in rows:
            if not self._entry_ok(row):
                continue
            _, k, v, h, _, _, held = row
            cid = self._value(k, v)  # (_UNREAD: a malformed value taken from a snapshot
            if not isinstance(cid, str) or v != f'"{cid}"':  # not a CID (or escaped)
                cid = None
            out.append(SliceRow(k, v, cid, bool(held), h))
        return out, _next_after(rows, limit)

    def item_slice(self, after: str | bytes, limit: int) -> tuple[list[SliceRow], str | bytes]:
        """As `output_slice`, of item cache entries: an item's CID is its result's string
        "c" (None: no result, e.g. an item a task left out, or not an item result)."""
        out: list[tuple[str, str, str | None, int]] = []
        rows = list(self._read(f"SELECT {CACHE_COLUMNS} FROM cache_index WHERE kind = ? AND "
                               "typeof(k) = 'text' AND k > CAST(? AS TEXT) ORDER BY k LIMIT ?",
                               (ITEM, after, limit)))
        for row in rows:
            if not self._entry_ok(row):
                continue
            _, k, v, h, _, _ = row
            r = self._value(k, v)  # (_UNREAD: a malformed value taken from a snapshot stream)
            cid = r.get("c") if isinstance(r, dict) else None
            out.append((k, v, cid if isinstance(cid, str) and cid else None, h))
        cids = sorted({c for _, _, c, _ in out if c is not None})
        held: set[str] = set()
        for i in range(0, len(cids), 500):  # (SQLite's bound on a statement's parameters)
            part = cids[i:i + 500]
            held.update(c for (c,) in self._db.execute(
                "SELECT DISTINCT cid FROM provider_index WHERE cid IN "
                f"({','.join('?' * len(part))})", part) if type(c) is str)
        return [SliceRow(k, v, c, c in held, h) for k, v, c, h in out], _next_after(rows, limit)

    def reap(self, entries: Iterable[tuple[str, str]], cids: Iterable[str],
             items: Iterable[tuple[str, str]] = ()) -> None:
        """Delete output cache entries and item cache entries ((key, value as stored): one
        whose value changed meanwhile stays) and every provider row of `cids` (sets the fold
        holds empty), in one transaction. (The keys remembered as absent stay so: a deletion
        adds none.)"""
        with self._tx() as db:
            db.executemany("DELETE FROM cache_index WHERE kind = ? AND k = ? AND v = ?",
                           [*((OUTPUT, k, v) for k, v in entries),
                            *((ITEM, k, v) for k, v in items)])
            db.executemany("DELETE FROM provider_index WHERE cid = ?", [(c,) for c in cids])

    def lookups(self) -> dict[str, Any]:
        """The on-demand reads of MeshState.tier (and its `screens`: `screen`)."""
        def value(kind: int) -> Callable[[str], Any]:
            return lambda k: None if (e := self.entry(kind, k)) is None else e.value

        def order(kind: int) -> Callable[[str], Any]:
            return lambda k: None if (e := self.entry(kind, k)) is None else e.order

        return {"outputs": value(OUTPUT), "outputs_src": order(OUTPUT), "cache": value(ITEM),
                "cache_src": order(ITEM), "providers": self.providers_of,
                "screens": {"outputs_src": functools.partial(self.screen, OUTPUT),
                            "providers": functools.partial(self.screen, _PROVIDERS)}}

    def providers(self, db: sqlite3.Connection | None = None) -> Iterator[tuple[str, str]]:
        for row in self._read("SELECT cid, origin FROM provider_index", (), db):
            if self._provider_ok(row):
                yield row

    def facts_of(self, job: str) -> dict[str, Any] | None:
        """`job`'s facts if the index holds its full record (not only a thin row's) and they
        read back (else None: logged once, `_column`); a smaller read than `full`."""
        row = self._one("SELECT facts FROM job_index WHERE job = ? AND record != ''", (job,))
        if row is None:
            return None
        facts: dict[str, Any] | None = self._column(_job(job), "facts", row[0], _is_object)
        return facts

    def full(self, job: str) -> JobRecord | None:
        """`job`'s record as `put` wrote it, without its ids; None if the index holds no
        full record of it (none, or a thin row's) or a column does not read back (logged
        once: `_column`)."""
        row = self._one(f"SELECT {JOB_COLUMNS} FROM job_index WHERE job = ? AND record != ''",
                        (job,))
        return None if row is None else self._job_record(row)

    def _job_record(self, row: Sequence[Any]) -> JobRecord | None:
        """A row of JOB_COLUMNS as a JobRecord (no ids), None if it does not read back."""
        if not self._keys_ok(row):
            return None
        job, h, o, q, ended, st, summary, record, facts = row
        rec = self._column(_job(job), "record", record, _is_object)
        if rec is None:
            return None
        summ = self._column(_job(job), "summary", summary, _is_object)
        fact = self._column(_job(job), "facts", facts, _is_object)
        if summ is None or fact is None:
            return None
        return JobRecord(job, (h, o, q), ended, st, summ, rec, (), fact)

    def rows(self, db: sqlite3.Connection | None = None) -> Iterator[JobRecord]:
        """Every record (for a snapshot; read on `db`, as `_read`), oldest first; without
        their event ids."""
        for row in self._read(f"SELECT {JOB_COLUMNS} FROM job_index ORDER BY hlc, origin, seq",
                              (), db):
            if not self._keys_ok(row):
                continue
            if row[7] == "":  # (a thin row's, not fetched yet)
                continue  # (a malformed one taken from a snapshot stream is not served on)
            r = self._job_record(row)
            if r is not None:
                yield r


JOB_COLUMNS = "job, hlc, origin, seq, ended, state, summary, record, facts"
KEY_COLUMNS = "job, hlc, origin, seq, ended, state"  # a job row's keys (snapstream.JOB_KEYS)
_TABLES = {"j": "job_index", "t": "job_index", "c": "cache_index", "p": "provider_index"}


def refused(tag: str, row: Sequence[Any]) -> str | None:
    """Why the receiver of a snapshot would refuse `row` of its batch `tag` (its own check:
    peer.log.snapstream.CHECKS, snapframe.check_thin for "t"), refusing the whole snapshot
    with it, or leave it out (a provider row of two texts that are not a CID and a peer id:
    PROVIDER_KINDS); None if it takes the row. Pure."""
    try:
        (check_thin if tag == "t" else CHECKS[tag])(list(row))
    except (ValueError, TypeError, RecursionError) as e:  # (StreamError is a ValueError)
        return f"{e!s:.200}"
    if tag == "p" and (bad := row_fault(row, PROVIDER_KINDS)) is not None:
        return f"a provider row whose {bad} is not what the index writes there (left out)"
    return None


def _noting(into: KeyFilter, rows: Iterable[Sequence[Any]]) -> Iterator[Sequence[Any]]:
    """Provider `rows` (cid first) as they come, each text cid added to `into` (a cid of
    any other type is a BLOB, which no look-up's text equals: TEXT affinity)."""
    for r in rows:
        if type(r[0]) is str:
            into.add(r[0])
        yield r


def _holds_back(row: Sequence[Any]) -> bool:
    """Does a provider_index row that does not read back (PROVIDER_KINDS) hold the reaping
    of cache entries back (`JobIndex.providers_sound`)? Only if its cid is not a text (a
    blob, a number, a text that is not UTF-8): it may be some CID's only provider, which
    one is not known. A text cid is read as it is by the reap's slices (`output_slice`,
    `item_slice`: any row of that text, whatever its origin, counts as a provider): a CID
    whose origin does not read back keeps its own cache entry and holds nothing else
    back; a text that is not a CID (as a data dir of e418a64 holds for a member's PROVIDE
    of another text) is no entry's CID."""
    return type(row[0]) is not str


def _names_no_cid(row: Sequence[Any]) -> bool:
    """Is provider_index `row`'s cid a text that names no CID, whatever codecs and hash
    functions a release knows (`never_cid`: not a CID by its structure, or a truncated
    digest an earlier release took, which `parse_cid` refuses since session 40)? Another
    text a member's PROVIDE named (release e418a64 wrote it), say. Every read leaves such a
    row out and nothing writes one again (`JobIndex.put`: `_cids_only`): it would stay for
    good, so `providers_sound`'s scan deletes it (what it provides, no read of any release
    takes). A CID of a codec or hash function this py-cid does not know is left out of
    reads and kept (review h, session 42, N2: a release that knows it reads it)."""
    return type(row[0]) is str and bool(never_cid(row[0]))


def _quiet(tag: str, row: Sequence[Any]) -> bool:
    return refused(tag, row) is not None


LeftOut = Callable[[str, Sequence[Any]], bool]  # (JobIndex.left_out: logs once per row)


def compact_floors(db: sqlite3.Connection, path: Path, own: str) -> dict[str, int]:
    """Origin -> the highest seq compaction dropped, as `db` (the log's file at `path`)
    holds it in `compact_floors`, read as hostile (peer.log.sqlite.seq_rows; `own`: this
    peer's id): the start and every snapshot served read them so (the peer does not start
    without them: DataError or StoreError naming the file)."""
    try:
        rows = db.execute("SELECT origin, seq FROM compact_floors").fetchall()
    except sqlite3.Error as e:
        raise unreadable(path, e, "compact_floors") from e
    return seq_rows(path, "compact_floors", rows, own)


def fsync_path(path: Path) -> None:
    """fsync a file or a directory (FileNotFoundError if it is not there)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def db_path(db: sqlite3.Connection) -> Path:
    """The main database file of `db`."""
    return Path(str(db.execute("PRAGMA database_list").fetchone()[2]))


def fsync_files(db: sqlite3.Connection) -> None:
    """fsync the main database file of `db` and its WAL (after writes made with
    synchronous=OFF)."""
    path = db_path(db)
    for p in (path, Path(f"{path}-wal")):
        try:
            fsync_path(p)
        except FileNotFoundError:
            continue


def thin_rows(db: sqlite3.Connection, batch: int = 16384, jobs: bool = True,
              rows: bool = True, left_out: LeftOut = _quiet,
              ) -> Iterator[tuple[str, list[tuple[Any, ...]]]]:
    """`raw_rows` for a version 3 snapshot (peer.log.snapframe): ("t", thin job rows: a job
    without its `job_thin` row yet gets one made of its full texts here; unless not `jobs`),
    ("c", cache rows), ("p", provider rows) (unless not `rows`). Read on `db` as `raw_rows`
    says; a row the receiver would refuse is left out as there."""
    if jobs:
        for tag, got in _thin_jobs(db):
            yield tag, [r for r in got if not left_out(tag, r)]
    if rows:
        for tag, sql in (("c", f"SELECT {CACHE_COLUMNS} FROM cache_index ORDER BY kind, k"),
                         ("p", "SELECT cid, origin FROM provider_index ORDER BY cid, origin")):
            cur = db.execute(sql)
            while got := cur.fetchmany(batch):
                yield tag, [r for r in got if not left_out(tag, r)]


def _thin_jobs(db: sqlite3.Connection) -> Iterator[tuple[str, list[tuple[Any, ...]]]]:
    cur = db.execute(
        "SELECT j.job, j.hlc, j.origin, j.seq, j.ended, j.state, t.summary, t.facts, t.sha, "
        "CASE WHEN t.job IS NULL THEN j.summary END, CASE WHEN t.job IS NULL THEN j.record END, "
        "CASE WHEN t.job IS NULL THEN j.facts END FROM job_index j LEFT JOIN job_thin t "
        "USING (job)")
    while rows := cur.fetchmany(256):
        out = []
        for r in rows:
            if r[8] is not None:
                out.append(tuple(r[:9]))
                continue
            try:
                out.append((*r[:6], *thin(r[9], r[10], r[11])))
            except (ValueError, TypeError, AttributeError, RecursionError):  # a malformed
                continue  # record (or a NULL text) is not served on
        yield "t", out
CACHE_COLUMNS = "kind, k, v, hlc, origin, seq"


def raw_rows(db: sqlite3.Connection, batch: int = 4096, left_out: LeftOut = _quiet,
             ) -> Iterator[tuple[str, list[tuple[Any, ...]]]]:
    """The index's rows as stored, in batches: ("j", job rows of JOB_COLUMNS, their JSON
    texts as they are; not the thin rows of jobs whose record was never fetched: a version 2
    receiver could not check or fetch them), ("c", cache rows of CACHE_COLUMNS), ("p",
    (cid, origin) rows). Read on `db` (a connection of its own, inside a read transaction,
    for a consistent view). A row its receiver would refuse (`refused`: the whole snapshot
    with it) is left out (`left_out`, e.g. JobIndex.left_out: logged once)."""
    for tag, sql in (("j", f"SELECT {JOB_COLUMNS} FROM job_index WHERE record != ''"),
                     ("c", f"SELECT {CACHE_COLUMNS} FROM cache_index"),
                     ("p", "SELECT cid, origin FROM provider_index")):
        cur = db.execute(sql)
        while rows := cur.fetchmany(batch):
            yield tag, [r for r in rows if not left_out(tag, r)]


def read_provided(path: Path, origin: str, batch: int = 4096) -> Iterator[str]:
    """The CIDs the job index lists `origin` as a provider of, read in batches on a
    connection of its own (blocking: for a thread; the loop keeps writing meanwhile). A
    row that does not read back (PROVIDER_KINDS: not a CID) is left out (logged by
    `JobIndex.providers_sound`, once)."""
    for cid in _pages(path, "SELECT cid, cid FROM provider_index WHERE origin = ? AND "
                      "typeof(cid) = 'text' AND cid > CAST(? AS TEXT) ORDER BY cid LIMIT ?",
                      (origin,), batch):
        if row_fault((cid, origin), PROVIDER_KINDS) is None:
            yield cid


def read_outputs(path: Path, batch: int = 4096) -> Iterator[str]:
    """The output CIDs of the job index's cache entries (MeshState.outputs' values), read as
    `read_provided` reads."""
    for v in _pages(path, "SELECT k, v FROM cache_index WHERE kind = ? AND "
                    "typeof(k) = 'text' AND k > CAST(? AS TEXT) ORDER BY k LIMIT ?",
                    (OUTPUT,), batch):
        try:
            cid = loads_within(v)
        except ValueError:  # a malformed value taken from a snapshot stream
            continue
        if isinstance(cid, str):
            yield cid


def _pages(path: Path, sql: str, args: tuple[Any, ...], batch: int) -> Iterator[str]:
    """The values of `sql` ((key, value) rows `WHERE ... AND typeof(key) = 'text' AND key >
    CAST(? AS TEXT) ORDER BY key LIMIT ?`)
    read a page of `batch` at a time, each page its own statement: no read transaction is
    held while the caller works between pages (it would keep the WAL from being
    checkpointed past it). A value that is not a text is left out; a key that is not
    (bytes: not UTF-8) still moves the page on (`key > CAST(? AS TEXT)`: SQLite compares
    texts by their bytes). A key of another type is never read: a BLOB sorts after every
    text, so a page ending on one would be read again for ever."""
    db = connect(str(path), isolation_level=None, check_same_thread=False)  # reads
    try:
        after = ""
        while rows := db.execute(sql, (*args, after, batch)).fetchall():
            after = rows[-1][0]
            for _, v in rows:
                if type(v) is str:  # (a value of another type, damaged or edited: left out)
                    yield v
            if len(rows) < batch:
                break
    finally:
        db.close()


def _next_after(rows: Sequence[Sequence[Any]], limit: int) -> str | bytes:
    """Where a slice of cache rows (CACHE_COLUMNS) read with LIMIT `limit` leaves the scan:
    its last key if it is full (bytes: a text that is not UTF-8, compared as a text by its
    bytes: `k > CAST(? AS TEXT)`; the slices read text keys only, `typeof(k) = 'text'`: a
    BLOB sorts after every text and would be read again), else "" (the next scan starts
    over)."""
    if not rows or len(rows) < limit:
        return ""
    k: str | bytes = rows[-1][1]
    return k


def _same_dir(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except (OSError, RuntimeError):
        return False


def _wait_rows(db: sqlite3.Connection, waits: Mapping[str, JobWaits]) -> None:
    """What changed of gone jobs' waits (`WaitJournal`), in the caller's transaction: a job
    dropped loses every row first, then each add and held event kept or gone."""
    for job, got in waits.items():
        if got.dropped:
            db.execute("DELETE FROM gone_wait_adds WHERE job = ?", (job,))
            db.execute("DELETE FROM gone_wait_events WHERE job = ?", (job,))
        db.executemany("INSERT OR IGNORE INTO gone_wait_adds VALUES (?, ?, ?)",
                       [(job, by, p) for (by, p), kept in got.adds.items() if kept])
        db.executemany("DELETE FROM gone_wait_adds WHERE job = ? AND by = ? AND peer = ?",
                       [(job, by, p) for (by, p), kept in got.adds.items() if not kept])
        db.executemany("INSERT OR IGNORE INTO gone_wait_events VALUES (?, ?, ?, ?, ?)",
                       [(job, kind, key, v[0], got.texts.get((kind, key)) or event_text(v[1]))
                        for (kind, key), v in got.held.items() if v is not None])
        db.executemany("DELETE FROM gone_wait_events WHERE job = ? AND kind = ? AND id = ?",
                       [(job, kind, key) for (kind, key), v in got.held.items()
                        if v is None])


def _peer_list(v: Any) -> TypeGuard[list[str]]:
    """A list of peer ids' texts (a lanes job's members, as the index writes them)."""
    return isinstance(v, list) and all(type(p) is str for p in v)


def _job(job: Any) -> str:
    """A job_index row as logs name it."""
    return f"the job index's row of {str(job)[:64]!r}"


def _entry(key: Any) -> str:
    """A cache_index row as logs name it."""
    return f"the job index's cache entry {str(key)[:64]!r}"


def _is_object(v: Any) -> bool:
    return type(v) is dict


def _of_job(job: str) -> Callable[[Any], bool]:
    """Is a summary or record the object of `job` (its "id", if it names one, is the row's:
    a row whose job column was damaged is listed as, and fetched by, no other job's name)?"""
    return lambda v: type(v) is dict and v.get("id", job) == job


def _is_seq(q: Any) -> bool:
    return type(q) is int and q > 0


def _is_ids(v: Any) -> bool:
    """A list of [origin, seq] (the ids column)."""
    return type(v) is list and all(type(i) is list and len(i) == 2 and type(i[0]) is str
                                   and _is_seq(i[1]) for i in v)


def _is_marks(v: Any) -> bool:
    """An object origin -> seq (the marks column)."""
    return type(v) is dict and all(_is_seq(q) for q in v.values())


def _union(a: Iterable[tuple[str, int]], b: Iterable[tuple[str, int]],
           ) -> list[tuple[str, int]]:
    """The ids of `a`, then those of `b` not in `a`, each once."""
    return list(dict.fromkeys([*((str(o), int(q)) for o, q in a),
                               *((str(o), int(q)) for o, q in b)]))


def _marks(ids: Iterable[tuple[str, int]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for o, q in ids:
        out[o] = max(out.get(o, 0), q)
    return out


__all__ = ["CACHE_COLUMNS", "ITEM", "JOB_COLUMNS", "OUTPUT", "SPOOL_DIR", "CacheEntry",
           "JobIndex", "JobRecord", "Order", "fsync_files", "fsync_path", "raw_rows",
           "read_outputs", "read_provided", "spool_name", "thin_rows"]
