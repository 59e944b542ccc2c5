"""The log's SQLite file gives its free pages back: incremental from creation, a one-off
VACUUM at open of an older file with many free pages (not without room on its disk), a
bounded step after each compaction pass, the file smaller once the WAL is checkpointed."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import pytest

from peer.config import PeerConfig
from peer.errors import ConfigError
from peer.log import Event, EventLog, EventType
from peer.log import sqlite as sqlite_module
from peer.log.vacuum import VacuumConfig, convert, file_stats, sqlite_temp_dir
from peer.node import Node

ORIGIN = "a" * 16
PAD = "p" * 200  # a few events to a page: a few thousand events fill a few hundred pages


def _events(n: int) -> list[Event]:
    return [Event(ORIGIN, s, 1000 + s, EventType.PROVIDE, {"cids": [f"c{s}{PAD}"]})
            for s in range(1, n + 1)]


def _fill_and_drop(log: EventLog, n: int, keep: int = 10) -> None:
    """`n` events written, then all but the last `keep` dropped as compaction drops them."""
    log.append(_events(n), sync=False)
    log.delete([(ORIGIN, s) for s in range(1, n - keep + 1)], {ORIGIN: n - keep})


def _older_file(path: Path) -> None:
    """A file as an earlier release made it: WAL, auto_vacuum NONE, tables in it."""
    db = sqlite3.connect(str(path), isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE meta (k TEXT PRIMARY KEY, v TEXT)")
    db.close()


def _older_log(path: Path, events: int) -> EventLog:
    """An earlier release's file opened by this one, `events` written and dropped in it."""
    _older_file(path)
    log = EventLog(path)
    _fill_and_drop(log, events)
    return log


def _db_bytes(path: Path) -> int:
    return path.stat().st_size


def test_a_new_file_is_incremental(tmp_path: Path) -> None:
    log = EventLog(tmp_path / "e.sqlite")
    assert log.file_stats().incremental
    assert log.converted is None
    log.close()


def test_the_pages_compaction_frees_go_back_to_the_disk_at_checkpoints(tmp_path: Path) -> None:
    path = tmp_path / "e.sqlite"
    log = EventLog(path, vacuum=VacuumConfig(step_pages=64, step_min_pages=8))
    _fill_and_drop(log, 4000)
    log.db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    full = _db_bytes(path)
    free = log.file_stats().free_pages
    assert free * log.file_stats().page_size > full // 2
    given = []
    for _ in range(free // 64 + 2):  # (bounded: each step gives 64 back)
        given.append(log.vacuum())
        if given[-1] == 0:
            break
    assert given[-1] == 0 and max(given) == 64
    assert sum(given) == log.vacuumed_pages > free - 8
    assert log.file_stats().free_pages < 8
    assert _db_bytes(path) < full // 2  # the checkpoints truncated the file
    assert len(list(log.load())) == 10
    log.close()
    again = EventLog(path)
    assert [e.seq for e in again.load()] == list(range(3991, 4001))
    again.close()


def test_a_step_gives_back_at_most_step_pages_and_none_below_the_threshold(
        tmp_path: Path) -> None:
    log = EventLog(tmp_path / "e.sqlite", vacuum=VacuumConfig(step_pages=16, step_min_pages=8))
    _fill_and_drop(log, 2000)
    before = log.file_stats().free_pages
    assert log.vacuum() == 16
    assert log.file_stats().free_pages == before - 16
    log.db.executescript(f"PRAGMA incremental_vacuum({before - 16 - 7});")  # 7 left
    assert log.file_stats().free_pages == 7
    assert log.vacuum() == 0
    log.close()


def test_an_older_file_with_many_free_pages_is_rewritten_once_at_open(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "e.sqlite"
    _older_file(path)
    log = EventLog(path)
    assert not log.file_stats().incremental
    _fill_and_drop(log, 4000)
    assert log.vacuum() == 0  # (not incremental: nothing to do until it is rewritten)
    log.close()
    caplog.set_level(logging.INFO, "peer.log.vacuum")
    log = EventLog(path, vacuum=VacuumConfig(min_free_bytes=64 << 10))
    done = log.converted
    assert done is not None and done.after_bytes < done.before_bytes // 2
    assert log.file_stats().incremental and log.file_stats().free_pages == 0
    assert not Path(f"{path}-wal").exists() or Path(f"{path}-wal").stat().st_size == 0
    assert [e.seq for e in log.load()] == list(range(3991, 4001))
    assert any("vacuumed at open" in r.getMessage() for r in caplog.records)
    log.close()
    log = EventLog(path, vacuum=VacuumConfig(min_free_bytes=0))
    assert log.converted is None  # once
    log.close()


def test_an_older_file_with_few_free_pages_is_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "e.sqlite"
    log = _older_log(path, 4000)
    log.close()
    log = EventLog(path)  # 64 MiB by default
    assert log.converted is None and not log.file_stats().incremental
    assert log.file_stats().free_pages > 100
    log.close()


def test_no_vacuum_without_room_on_the_disk(tmp_path: Path,
                                            caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "e.sqlite"
    log = _older_log(path, 4000)
    size = _db_bytes(path) + Path(f"{path}-wal").stat().st_size
    cfg = VacuumConfig(min_free_bytes=0)
    probed: list[Path] = []

    def free(p: Path) -> int:
        probed.append(p)
        return 2 * size - 1

    assert convert(log.db, path, cfg, free) is None
    assert probed == [tmp_path]
    assert not file_stats(log.db).incremental
    assert any(r.levelno == logging.WARNING and "needs" in r.getMessage()
               for r in caplog.records)
    # SQLite builds the copy in its temporary directory: without room there, none either
    scratch = tmp_path / "sqlite-tmp"
    caplog.clear()
    assert convert(log.db, path, cfg, lambda p: size - 1 if p == scratch else 2 * size,
                   lambda: scratch) is None
    assert str(scratch) in caplog.text and not file_stats(log.db).incremental
    assert convert(log.db, path, cfg, lambda p: 2 * size) is not None
    assert file_stats(log.db).incremental
    log.close()


def test_sqlite_temp_dir_follows_sqlites_search_order(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SQLITE_TMPDIR", str(tmp_path))
    assert sqlite_temp_dir() == tmp_path
    monkeypatch.setenv("SQLITE_TMPDIR", str(tmp_path / "absent"))
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    assert sqlite_temp_dir() == tmp_path


def test_a_failing_probe_or_vacuum_never_fails_the_open(tmp_path: Path,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "e.sqlite"
    log = _older_log(path, 1000)

    def broken(p: Path) -> int:
        raise OSError("no statfs")

    assert convert(log.db, path, VacuumConfig(min_free_bytes=0), broken) is None
    log.db.execute("BEGIN")  # (a VACUUM cannot run in a transaction: not tried)
    assert convert(log.db, path, VacuumConfig(min_free_bytes=0)) is None
    log.db.execute("ROLLBACK")
    assert any("no VACUUM at open" in r.getMessage() for r in caplog.records)
    log.close()


@pytest.mark.parametrize("kw", [{"min_free_bytes": -1}, {"step_pages": 0},
                                {"step_min_pages": 0}, {"disk_factor": 0.0},
                                {"wal_limit_bytes": 0}])
def test_invalid_settings_raise(kw: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        VacuumConfig(**kw)  # type: ignore[arg-type]


def test_a_wal_grown_by_a_burst_is_cut_back_when_it_starts_over(tmp_path: Path) -> None:
    path = tmp_path / "e.sqlite"
    wal = Path(f"{path}-wal")
    log = EventLog(path, vacuum=VacuumConfig(wal_limit_bytes=64 << 10))
    log.append(_events(4000), sync=False)  # one transaction: a WAL of about 1 MB
    assert wal.stat().st_size > 512 << 10
    log.db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
    log.set_meta("k", "v")  # the next commit starts the WAL over
    assert wal.stat().st_size <= 64 << 10
    log.close()


def test_a_compaction_pass_gives_back_the_pages_its_drop_freed(tmp_path: Path,
                                                               opened: list[Node]) -> None:
    from .test_compaction import history

    n = Node(PeerConfig(data_dir=tmp_path, slots=1, mdns=False, compact_recent_tasks=2))
    n.listeners[:] = [n.compactor.note]
    opened.append(n)
    n.merge(history(jobs=60, per_job=20))
    n.log.db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    full = _db_bytes(n.log.path)
    assert n.log.file_stats().incremental and n.log.file_stats().free_pages == 0
    out = n.catchup.compact()  # a lone peer: every compacted job's events are dropped
    assert out.dropped > 4000 and n.log.vacuumed_pages > 0
    for _ in range(20):  # (bounded) the next passes give back the rest
        n.catchup.compact()
    stats = n.log.file_stats()
    assert stats.free_pages < n.log.vacuum_cfg.step_min_pages
    assert n.log.vacuumed_pages * stats.page_size > full // 3  # (the job index took the rest)
    n.log.db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    assert _db_bytes(n.log.path) == stats.pages * stats.page_size
    health = n.log_health()["file"]
    assert health["log_incremental"] == 1 and health["log_vacuumed_pages"] > 0


def test_a_failed_vacuum_step_taints_the_later_syncs(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A step's checkpoint fsyncs the files itself: when it fails, the pages it could not
    write may be gone without a later fsync saying so, so it counts as a failed sync."""
    log = EventLog(tmp_path / "e.sqlite")
    epoch = log.sync_epoch

    def broken(db: sqlite3.Connection, cfg: VacuumConfig) -> int:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(sqlite_module, "step", broken)
    assert log.vacuum() == 0
    assert log.sync_epoch == epoch + 1
    log.close()
