"""scripts/soak.py: the log's bytes per table and index, sampled as the soak runs."""

from __future__ import annotations

import sqlite3
from pathlib import Path

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
