"""The event log on a disk without room: the write probe after a failed write (session 46,
review r1 F10) and opening the log on a full disk. The tests that need a really full disk
mount a small tmpfs (root: skipped with the reason elsewhere)."""

from __future__ import annotations

import contextlib
import os
import re
import resource
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from peer.config import PeerConfig
from peer.errors import StorageFull, StoreError
from peer.log import Event, EventLog, EventType
from peer.log.sqlite import SQLITE_IOERR_SHMSIZE, _unopenable
from peer.node import Node
from tests.integration.tmpfs import mounted_tmpfs

ORIGIN = "a" * 16
PAY = {"job": "j0000000000e1", "task": "t", "chunk": 0, "attempt": 0, "x": "y" * 300}


def _claims(first: int, n: int) -> list[Event]:
    return [Event(ORIGIN, s, s << 16, EventType.CLAIM, dict(PAY))
            for s in range(first, first + n)]


def _provides(first: int, n: int) -> list[Event]:
    return [Event(ORIGIN, s, 1000 + s, EventType.PROVIDE,
                  {"cids": [f"c{s}-{i}" + "x" * 200 for i in range(4)]})
            for s in range(first, first + n)]


def _meta_keys(log: EventLog) -> set[str]:
    return {k for (k,) in log.db.execute("SELECT k FROM meta")}


def _pages(log: EventLog) -> int:
    return int(log.db.execute("PRAGMA page_count").fetchone()[0])


def test_a_probe_after_a_failed_write_leaves_nothing_of_its_blob(tmp_path: Path) -> None:
    """Until session 46 the probe committed its blob (twice the failed write) and deleted
    it after: the database kept the blob's pages as free pages (the checkpoint writes them
    into the file: room taken until `vacuum`), and if the DELETE failed the row stayed
    (review r1 F10). Now the blob is rolled back: no row, the file no larger, but the WAL
    did grow by the blob's size (the proof the probe is for)."""
    log = EventLog(tmp_path / "e.sqlite")
    log.append(_claims(1, 3000), sync=False)
    log.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    room = max(p.stat().st_size for p in tmp_path.iterdir())
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (room, hard))  # (Python ignores SIGXFSZ)
    try:
        with pytest.raises(StoreError, match="disk I/O error"):
            log.append(_claims(3001, 6000), sync=False)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    log.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # (the failed write's frames go)
    pages = _pages(log)
    log.probe()
    assert "write_room" not in _meta_keys(log)
    assert _pages(log) == pages  # (until session 46: + the blob's pages, free)
    wal = Path(f"{log.path}-wal").stat().st_size
    assert wal >= 0.9 * 2 * 6000 * len(str(PAY)), wal  # its rows' size, twice
    log.append(_claims(3001, 6000), sync=False)
    assert len(list(log.load())) == 9000
    log.close()


def test_a_leftover_probe_row_of_session_45_is_dropped_at_open(tmp_path: Path) -> None:
    """A data dir whose log holds a probe's blob that session 45's code left (its DELETE
    failed on a full disk: review r1 F10) opens without it."""
    path = tmp_path / "e.sqlite"
    log = EventLog(path)
    log.append(_claims(1, 10), sync=False)
    log.db.execute("INSERT INTO meta VALUES ('write_room', zeroblob(?))", (1 << 20,))
    log.close()
    log = EventLog(path)
    assert "write_room" not in _meta_keys(log)
    assert len(list(log.load())) == 10
    log.close()


def _free(path: Path) -> int:
    return shutil.disk_usage(path).free


def _fill(mnt: Path, leave: int) -> Path:
    """A file taking all but `leave` bytes of the file system at `mnt`."""
    filler = mnt / "filler"
    with open(filler, "ab") as f:
        f.write(b"\0" * max(0, _free(mnt) - leave))
    return filler


@contextlib.contextmanager
def _after_a_failed_write(tmp_path: Path) -> Iterator[tuple[EventLog, Path, Path, StorageFull]]:
    """An event log on an 8 MiB tmpfs whose ~2 MiB write just failed for want of room (the
    WAL took the last 1.5 MiB): the log (closed after), the mount, the file filling it, and
    the write's error."""
    with mounted_tmpfs(tmp_path / "mnt", 8 << 20) as mnt:
        log = EventLog(mnt / "e.sqlite")
        try:
            log.append(_provides(1, 500), sync=False)
            log.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            filler = _fill(mnt, 1536 << 10)
            with pytest.raises(StorageFull) as failed:
                log.append(_provides(501, 2000), sync=False)
            yield log, mnt, filler, failed.value
        finally:
            log.close()


def test_on_a_really_full_disk_the_probe_proves_the_freed_room_and_keeps_none_of_it(
        tmp_path: Path) -> None:
    """Review r1 F10 on an 8 MiB tmpfs: a ~2 MiB write fails (the WAL takes the last
    1.5 MiB), the operator frees 3 MiB. Until session 46 the probe's 3.5 MiB blob committed,
    its DELETE then failed: the probe failed (the outage went on), the blob held the freed
    room (a 512 KiB file did not fit, the failed write failed again) and stayed in the log.
    Now the probe succeeds and leaves the room to the write that failed, and to the rest."""
    with _after_a_failed_write(tmp_path) as (log, mnt, filler, failed):
        assert "the disk is full" in str(failed) and _free(mnt) < 64 << 10
        os.truncate(filler, filler.stat().st_size - (3 << 20))
        log.probe()
        assert "write_room" not in _meta_keys(log)
        with open(mnt / "block", "wb") as f:  # (a block of the store, say)
            f.write(b"b" * (512 << 10))
            f.flush()
            os.fsync(f.fileno())
        log.append(_provides(501, 2000), sync=False)
        assert len(list(log.load())) == 2500


def test_a_probe_that_finds_no_room_commits_nothing(tmp_path: Path) -> None:
    """The same with 1 MiB freed only: the probe fails (StorageFull) and leaves nothing in
    the log; freed 3 MiB more, it succeeds and the write that failed fits."""
    with _after_a_failed_write(tmp_path) as (log, _, filler, _):
        os.truncate(filler, filler.stat().st_size - (1 << 20))
        with pytest.raises(StorageFull, match="the disk is full"):
            log.probe()
        assert "write_room" not in _meta_keys(log)
        os.truncate(filler, filler.stat().st_size - (3 << 20))
        log.probe()
        log.append(_provides(501, 2000), sync=False)
        assert len(list(log.load())) == 2500


FULL_AT_OPEN = (r"cannot open the event log .*/e\.sqlite: too little room on the file system "
                r"holding .* \(\d+ KiB free; the peer needs at least 1 MiB there to start\): "
                r"free space on it \(or move the data dir to a larger one\), then start the "
                r"peer again")


@pytest.mark.parametrize("leave_kib", [0, 16, 48])
def test_a_log_on_a_full_disk_does_not_open_and_says_why(tmp_path: Path,
                                                         leave_kib: int) -> None:
    """A peer restarted on a full disk (review r1 of session 46): the open failed as
    "cannot use the event log ...: disk I/O error" (SQLite's -shm file cannot grow, below
    32 KiB free), "the disk is full", or, with a few pages free, a traceback from the
    start's first write. Now, under 1 MiB free, one message: the file system, what is
    free, what the peer needs and what to do; and the log opens once room comes back."""
    with mounted_tmpfs(tmp_path / "mnt", 8 << 20) as mnt:
        path = mnt / "e.sqlite"
        log = EventLog(path)
        log.append(_provides(1, 50), sync=False)
        log.close()
        filler = _fill(mnt, leave_kib << 10)
        with pytest.raises(StorageFull, match=FULL_AT_OPEN) as got:
            EventLog(path)
        assert f"({_free(mnt) >> 10} KiB free;" in str(got.value)
        filler.unlink()
        log = EventLog(path)
        assert len(list(log.load())) == 50
        log.close()


def test_an_open_that_fails_for_room_says_so(tmp_path: Path) -> None:
    """The room can go between the check and the open (another writer): SQLite's own
    errors of a full disk at open are told as the check tells them (here the -shm file
    that cannot grow: "disk I/O error", which said nothing of room)."""
    with mounted_tmpfs(tmp_path / "mnt", 8 << 20) as mnt:
        path = mnt / "e.sqlite"
        EventLog(path).close()
        filler = _fill(mnt, 0)
        db = sqlite3.connect(path)
        with pytest.raises(sqlite3.OperationalError) as got:
            db.execute("SELECT count(*) FROM meta").fetchall()
        db.close()
        assert got.value.sqlite_errorcode == SQLITE_IOERR_SHMSIZE
        assert isinstance(_unopenable(path, got.value), StorageFull)
        assert re.fullmatch(FULL_AT_OPEN, str(_unopenable(path, got.value)))
        filler.unlink()  # the same error with room on the disk: not for room (a limit)
        told = _unopenable(path, got.value)
        assert not isinstance(told, StorageFull)
        assert str(told) == f"cannot use the event log {path}: disk I/O error"


def test_a_file_size_limit_at_open_is_not_told_as_a_full_disk(tmp_path: Path) -> None:
    """A file size limit (RLIMIT_FSIZE: EFBIG, the -shm cannot be made) with room on the
    disk stays what it was at open: a StoreError, "disk I/O error", not a full disk."""
    path = tmp_path / "e.sqlite"
    EventLog(path).close()
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1, hard))
    try:
        with pytest.raises(StoreError, match="disk I/O error") as got:
            EventLog(path)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert not isinstance(got.value, StorageFull)


def test_a_peer_restarted_on_a_full_disk_does_not_start_and_says_why(tmp_path: Path) -> None:
    """Review r1 of session 46 (/tmp/s46r1/restart_full.py): a Node restarted with 48 KiB
    free met a raw sqlite3 "database or disk is full" at its first write (a traceback from
    the CLI). Now it is refused at the log's open, saying why; once room is back it starts
    with its events."""
    with mounted_tmpfs(tmp_path / "mnt", 8 << 20) as mnt:
        cfg = PeerConfig(data_dir=mnt / "peer", slots=1, mdns=False)
        n = Node(cfg)
        for i in range(50):
            n.emit(EventType.PROVIDE, {"cids": [f"bafy{i}"]})
        n.flush()
        me, head = n.peer_id, n.state.heads[n.peer_id]
        n.log.close()
        filler = _fill(mnt, 48 << 10)
        with pytest.raises(StorageFull, match=FULL_AT_OPEN.replace(r"/e\.", r"/events\.")):
            Node(cfg)
        filler.unlink()
        n = Node(cfg)
        try:
            assert (n.peer_id, n.state.heads[me]) == (me, head)
        finally:
            n.log.close()
