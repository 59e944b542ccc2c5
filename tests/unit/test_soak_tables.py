"""scripts/soak.py: the log's bytes per table and index, sampled as the soak runs."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from scripts.scriptlib import load_script

soak = load_script("soak")


def test_log_tables_gives_each_table_and_index_its_pages_and_the_free_and_wal(
        tmp_path: Path) -> None:
    path = tmp_path / "events.sqlite"
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE big (x BLOB)")
    db.execute("CREATE INDEX big_x ON big (x)")
    db.executemany("INSERT INTO big VALUES (?)", [(bytes([i % 256]) * 900,) for i in range(400)])
    db.execute("CREATE TABLE small (y)")
    db.commit()
    got = soak.log_tables(path)
    db.close()
    assert got["big"] > 0.36 and got["big_x"] > 0.36  # 400 rows of 900 bytes, each
    assert 0 < got["small"] < got["big"]
    assert got["free"] == 0 and "wal" in got


def test_log_tables_of_no_file_is_empty(tmp_path: Path) -> None:
    assert soak.log_tables(tmp_path / "absent.sqlite") == {}


def test_base_dir_keeps_the_given_directory_and_refuses_one_not_empty(tmp_path: Path) -> None:
    keep = tmp_path / "kept" / "soak"
    with soak.base_dir(keep) as base:
        (base / "peer0").mkdir()
    assert (keep / "peer0").is_dir()  # still there after
    with pytest.raises(ValueError, match="not empty"), soak.base_dir(keep):
        pass


def test_base_dir_without_one_is_a_temporary_directory_removed_after() -> None:
    with soak.base_dir(None) as base:
        (base / "peer0").mkdir()
    assert not base.exists()
