"""The log's integrity check (peer/log/scrub.py): damage in the middle of the SQLite file that
the peer's reads and writes do not meet is found, named, shown in /api/health and logged once;
a sound file passes; a file that is not a database at all is a problem, not an exception."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from peer.config import PeerConfig
from peer.log.scrub import Scrub, ScrubConfig, quick_check
from peer.node import Node

PAGE = 4096


def _database(path: Path) -> sqlite3.Connection:
    """A WAL database of a few hundred pages, checkpointed into the file, left open (as the
    peer holds its log)."""
    con = sqlite3.connect(path)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("CREATE TABLE t (a INTEGER PRIMARY KEY, b TEXT)")
    con.execute("CREATE INDEX tb ON t (b)")
    con.executemany("INSERT INTO t VALUES (?, ?)", [(i, f"v{i}" * 20) for i in range(5000)])
    con.commit()
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return con


def _damage(path: Path, page: int) -> None:
    """Overwrite the header of page `page` (1-based), as a lost write or a bad sector would."""
    with path.open("r+b") as f:
        f.seek((page - 1) * PAGE)
        f.write(b"\xff" * 12)


async def _inline(fn: Callable[[], Any]) -> Any:
    return fn()


def test_damage_mid_file_that_reads_do_not_meet_is_found_and_named(tmp_path: Path) -> None:
    db = tmp_path / "events.sqlite"
    con = _database(db)
    assert quick_check(db, 10) == []
    _damage(db, 41)
    assert con.execute("SELECT count(*), max(a) FROM t").fetchone() == (5000, 4999)  # unseen
    problems = quick_check(db, 10)
    assert problems and "Page 41" in problems[0]
    con.close()


def test_a_file_that_is_no_database_is_a_problem_not_an_exception(tmp_path: Path) -> None:
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"not a database at all" * 500)
    [problem] = quick_check(junk, 10)
    assert problem.startswith("DatabaseError: ") and "not a database" in problem


async def test_a_scrub_shows_each_check_and_logs_a_change_once(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    db = tmp_path / "events.sqlite"
    con = _database(db)
    ticks = iter(range(100))
    scrub = Scrub(ScrubConfig(max_errors=3), db, offload=_inline, wall=lambda: 1_700_000_000.0,
                  clock=lambda: float(next(ticks)))
    assert scrub.health() == {"checks": 0, "ok": None}
    assert await scrub.check() == []
    assert scrub.health() == {"checks": 1, "ok": True, "problems": [],
                              "at": 1_700_000_000, "s": 1.0}
    _damage(db, 41)
    with caplog.at_level(logging.WARNING, logger="banzai.log"):
        await scrub.check()
        await scrub.check()
    health = scrub.health()
    assert health["checks"] == 3 and health["ok"] is False and "Page 41" in health["problems"][0]
    assert [r.levelname for r in caplog.records] == ["ERROR"]  # once, not per check
    assert str(db) in caplog.text and "integrity check" in caplog.text
    con.close()


async def test_a_scrub_configured_never_returns_at_once(tmp_path: Path) -> None:
    scrub = Scrub(ScrubConfig(interval_s=0), tmp_path / "x.sqlite")
    await asyncio.wait_for(scrub.run(), 5)
    assert scrub.checks == 0
    with pytest.raises(ValueError):
        ScrubConfig(max_errors=0)


async def test_a_peer_shows_its_logs_check_in_health(tmp_path: Path) -> None:
    node = Node(PeerConfig(data_dir=tmp_path / "peer", slots=1, mdns=False))
    try:
        assert node.log_health()["check"] == {"checks": 0, "ok": None}
        assert await node.scrub.check() == []  # a peer's own log, open, passes
        assert node.log_health()["check"]["ok"] is True
    finally:
        node.log.close()
