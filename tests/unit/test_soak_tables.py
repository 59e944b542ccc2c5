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


def test_soak_rows_relates_cache_and_provider_rows_to_every_peers_pins(tmp_path: Path) -> None:
    from peer.log.jobindex import OUTPUT, JobIndex

    rows = load_script("soak_rows")
    for p, pid in (("peer0", "aaaa"), ("peer1", "bbbb")):
        (tmp_path / f"{p}.log").write_text(f"mesh secret: x\nbanzai-peer {pid} (vm) ready\n")
        (tmp_path / p / "store" / "pins").mkdir(parents=True)
        db = sqlite3.connect(tmp_path / p / "events.sqlite", isolation_level=None)
        JobIndex(db)  # the tables
        db.executemany("INSERT INTO cache_index VALUES (?, ?, ?, 1, 'aaaa', 1)",
                       [(OUTPUT, "k1", '"held"'), (OUTPUT, "k2", '"gone"')])
        db.executemany("INSERT INTO provider_index VALUES (?, ?)",
                       [("held", "aaaa"), ("gone", "bbbb"), ("other", "bbbb")])
        db.close()
    (tmp_path / "peer0" / "store" / "pins" / "held").touch()  # a file pin
    pack = sqlite3.connect(tmp_path / "peer1" / "store" / "inline.sqlite")
    pack.execute("CREATE TABLE pins (cid TEXT PRIMARY KEY)")
    pack.execute("INSERT INTO pins VALUES ('held')")  # a replica's row of the inline pack
    pack.commit()
    pack.close()
    got = rows.rows(tmp_path)["peer0"]
    assert got["cache rows by kind"] == {1: 2} and got["output CIDs"] == 2
    assert got["output CIDs by holders"] == {2: 1, 0: 1}
    assert got["provider rows"] == 3 and got["provider rows whose origin pins the CID"] == 1
    assert got["provider CIDs with no output entry"] == 1
