"""Giving the free pages of the log's SQLite file (events, quarantine, floors, batches, job
index) back to the file system. Loop-owned: runs on the EventLog's connection, as its writes.

A new file is made with auto_vacuum=INCREMENTAL (`new_file`, before its first table). A file
of an earlier release (auto_vacuum=NONE) holding more than `min_free_bytes` of free pages is
rewritten once at open (`convert`: VACUUM, skipped with a warning if its disk lacks room).
After each compaction pass, `step` gives back at most `step_pages` pages (one transaction and
a checkpoint, which truncates the file: a few ms)."""

from __future__ import annotations

import logging
import os
import shutil
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from peer.errors import ConfigError

log = logging.getLogger(__name__)

INCREMENTAL = 2  # PRAGMA auto_vacuum's value for INCREMENTAL


@dataclass(frozen=True)
class VacuumConfig:
    """Settings of vacuuming; an invalid value raises ConfigError at construction."""

    min_free_bytes: int = 64 << 20  # an older file freeing more than this is VACUUMed at open
    step_pages: int = 512  # pages one step gives back at most (a few ms, docs/benchmarks.md)
    step_min_pages: int = 64  # fewer free pages than this: no step (not worth a transaction)
    disk_factor: float = 2.0  # a VACUUM needs this many times the file's size free on its disk
    wal_limit_bytes: int = 64 << 20  # a WAL grown past this (a burst) is cut back to it when
    # SQLite next starts it over (journal_size_limit; about 4 MB between checkpoints else)

    def __post_init__(self) -> None:
        if self.min_free_bytes < 0:
            raise ConfigError("vacuum min_free_bytes must not be negative",
                              field="min_free_bytes")
        for name in ("step_pages", "step_min_pages", "disk_factor", "wal_limit_bytes"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"vacuum {name} must be positive", field=name)


@dataclass(frozen=True)
class FileStats:
    """The file's pages as SQLite counts them (WAL frames included)."""

    page_size: int
    pages: int
    free_pages: int
    incremental: bool  # auto_vacuum=INCREMENTAL: `step` can give free pages back

    @property
    def free_bytes(self) -> int:
        return self.free_pages * self.page_size


@dataclass(frozen=True)
class Converted:
    """A one-off VACUUM at open: the file's size (database and WAL) before and after."""

    before_bytes: int
    after_bytes: int
    seconds: float


def file_stats(db: sqlite3.Connection) -> FileStats:
    """Four pragmas reading the header page: microseconds."""
    def one(pragma: str) -> int:
        return int(db.execute(f"PRAGMA {pragma}").fetchone()[0])
    return FileStats(one("page_size"), one("page_count"), one("freelist_count"),
                     one("auto_vacuum") == INCREMENTAL)


def file_bytes(path: Path) -> int:
    """The size on disk of the database file and its WAL."""
    return sum(p.stat().st_size for p in (path, path.with_name(path.name + "-wal"))
               if p.exists())


def disk_free(path: Path) -> int:
    """Bytes free for us on the file system of `path`."""
    return shutil.disk_usage(path).free


def new_file(db: sqlite3.Connection) -> None:
    """Ask for auto_vacuum=INCREMENTAL: the first statement on a new connection (it takes
    effect only on a file without tables, and not after `PRAGMA journal_mode=WAL` has
    written the header); on an existing file it does nothing until a VACUUM."""
    db.execute(f"PRAGMA auto_vacuum={INCREMENTAL}")


def limit_wal(db: sqlite3.Connection, cfg: VacuumConfig) -> None:
    """A WAL grown past `cfg.wal_limit_bytes` is cut back to it when SQLite starts it over
    after a checkpoint (else it keeps its peak size for good)."""
    db.execute(f"PRAGMA journal_size_limit={int(cfg.wal_limit_bytes)}").fetchall()


def sqlite_temp_dir() -> Path:
    """Where SQLite (on Unix) writes a VACUUM's temporary copy: its own search order."""
    for d in (os.environ.get("SQLITE_TMPDIR"), os.environ.get("TMPDIR"), "/var/tmp",
              "/usr/tmp", "/tmp"):
        if d and os.path.isdir(d) and os.access(d, os.W_OK | os.X_OK):
            return Path(d)
    return Path(".")


def convert(db: sqlite3.Connection, path: Path, cfg: VacuumConfig,
            free: Callable[[Path], int] = disk_free,
            temp: Callable[[], Path] = sqlite_temp_dir) -> Converted | None:
    """Rewrite the file at `path` (VACUUM) with auto_vacuum=INCREMENTAL if it is not so and
    its free pages exceed `cfg.min_free_bytes`; skipped with a warning if its disk has less
    than `cfg.disk_factor` times its size free, or SQLite's temporary directory (`temp`,
    where the copy is built, often another file system) less than its size (`free`: the
    probe). Never raises (a failed VACUUM leaves the file as it was): None unless it was
    rewritten. Blocks about 0.5 s per 100 MB of live rows (docs/benchmarks.md): call at
    open, before the peer serves."""
    try:
        s = file_stats(db)
        if s.incremental or s.free_bytes <= cfg.min_free_bytes or db.in_transaction:
            return None
        before = file_bytes(path)
        need = int(before * cfg.disk_factor)
        for where, want in ((path.parent, need), (temp(), before)):
            avail = free(where)
            if avail < want:
                log.warning("%s: %d MiB of free pages not given back: a VACUUM needs %d MiB "
                            "free in %s, %d MiB are (tried again at the next start)", path,
                            s.free_bytes >> 20, want >> 20, where, avail >> 20)
                return None
        log.info("%s: %d MiB of %d MiB free: rewriting the file (VACUUM) once", path,
                 s.free_bytes >> 20, before >> 20)
        t0 = time.perf_counter()
        db.execute(f"PRAGMA auto_vacuum={INCREMENTAL}")
        db.execute("VACUUM")
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()  # (the WAL held it all)
        done = Converted(before, file_bytes(path), time.perf_counter() - t0)
    except (sqlite3.Error, OSError) as e:
        log.warning("%s: no VACUUM at open: %s", path, e)
        return None
    log.info("%s: vacuumed at open: %d -> %d bytes in %.2f s (auto_vacuum incremental from now "
             "on)", path, done.before_bytes, done.after_bytes, done.seconds)
    return done


def step(db: sqlite3.Connection, cfg: VacuumConfig) -> int:
    """Give back at most `cfg.step_pages` free pages (one transaction, then a checkpoint;
    none if fewer than `cfg.step_min_pages` are free, the file is not incremental or a
    transaction is open): the number given back. sqlite3.Error as raised."""
    s = file_stats(db)
    if not s.incremental or s.free_pages < cfg.step_min_pages or db.in_transaction:
        return 0
    # executescript steps the pragma to its end (`execute` would free one page: it stops at
    # the pragma's first, empty, result row).
    db.executescript(f"PRAGMA incremental_vacuum({min(s.free_pages, cfg.step_pages)});")
    given = s.free_pages - int(db.execute("PRAGMA freelist_count").fetchone()[0])
    if given:  # the file shrinks at a checkpoint; a step that only unlinks free pages at its
        # end writes a few frames, not the 1000 that trigger SQLite's own (PASSIVE: never
        # waits for readers; they only defer the truncation)
        db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
    return given
