"""A data dir whose log file holds a hostile start-up value (a meta row, a table of other
columns) or is not a file: the peer refuses to start with an error naming the file and what
is wrong (main prints it on one line and exits 2), never a traceback."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import pytest

from peer.config import PeerConfig
from peer.errors import DataError, StoreError
from peer.mesh.swim import MAX_START_INC
from peer.node import Node

MAX_START_COUNT = MAX_START_INC >> 16  # (peer.mesh.gossip's: SWIM starts at it << 16)


def _start(d: Path) -> Node:
    n = Node(PeerConfig(data_dir=d, slots=1, mdns=False))
    n.log.close()
    return n


def _edit(d: Path, *stmts: tuple[str, tuple[object, ...]]) -> Path:
    path = d / "events.sqlite"
    db = sqlite3.connect(path)
    for sql, args in stmts:
        db.execute(sql, args)
    db.commit()
    db.close()
    return path


META = "INSERT OR REPLACE INTO meta VALUES (?, ?)"


@pytest.mark.parametrize("key,value,message", [
    ("peer_id", "a" * 2_000_000,  # (struct.error as it was signed for the admit tag)
     f"meta 'peer_id' holds {'a' * 39!r:.40} (2000000 characters), not a peer id (16 or 20 "
     "hex digits)"),
    ("peer_id", "peer one", "meta 'peer_id' holds 'peer one' (8 characters), not a peer id"),
    ("incarnation", str(2**63 - 1),  # (one more: 2^63, which no frame carries)
     f"meta 'incarnation' holds '{2**63 - 1}', not a count of at most {MAX_START_COUNT - 1}"),
    ("incarnation", "9" * 5000, "meta 'incarnation' holds '9999"),  # (int()'s digit limit)
], ids=["peer_id_2mb", "peer_id_not_hex", "incarnation_max", "incarnation_5000_digits"])
def test_a_hostile_meta_value_is_an_error_naming_the_file_and_key(
        tmp_path: Path, key: str, value: str, message: str) -> None:
    _start(tmp_path / "a")
    path = _edit(tmp_path / "a", (META, (key, value)))
    with pytest.raises(DataError, match=re.escape(f"{path}: {message}")):
        _start(tmp_path / "a")


def test_the_start_counter_may_reach_its_bound_and_no_further(tmp_path: Path) -> None:
    """Its SWIM incarnation (the counter << 16) stays within MAX_START_INC."""
    from peer.mesh.gossip import MAX_START_COUNT as bound

    assert bound == MAX_START_COUNT
    _start(tmp_path / "a")
    _edit(tmp_path / "a", (META, ("incarnation", str(MAX_START_COUNT - 1))))
    assert _start(tmp_path / "a").incarnation == MAX_START_COUNT
    with pytest.raises(DataError, match="not a count of at most"):
        _start(tmp_path / "a")


def test_peer_ids_of_both_releases_read_back() -> None:
    from peer.log.signing import stored_peer_id

    for pid in ("9b79d67a1e23336a", "0123456789abcdef0123", None):
        assert stored_peer_id(pid, Path("x")) == pid
    for pid in ("9B79D67A1E23336A", "9b79d67a1e23336", "", "é" * 16):
        with pytest.raises(DataError, match="not a peer id"):
            stored_peer_id(pid, Path("x"))


INDEX_TABLES = ("job_index", "cache_index", "provider_index", "compact_floors", "job_thin",
                "snapshot_pending", "snapshot_owed", "job_deleted", "deleted_ids", "deleted_lanes")


@pytest.mark.parametrize("table", INDEX_TABLES)
def test_an_index_table_of_other_columns_is_an_error_naming_the_file_and_table(
        tmp_path: Path, table: str) -> None:
    """job_index's raised sqlite3.OperationalError (its CREATE INDEX), the others failed at
    their first read or write, or (compact_floors) refused with SQLite's words."""
    _start(tmp_path / "a")
    path = _edit(tmp_path / "a", (f"DROP TABLE {table}", ()), (f"CREATE TABLE {table} (a, b)", ()))
    with pytest.raises(DataError, match=re.escape(
            f"{path}: its table {table} has the columns ('a', 'b'), not (")):
        _start(tmp_path / "a")


def test_an_index_table_with_a_column_more_is_an_error_too(tmp_path: Path) -> None:
    """(The index writes some of its tables with INSERT ... VALUES of every column.)"""
    _start(tmp_path / "a")
    path = _edit(tmp_path / "a", ("ALTER TABLE provider_index ADD COLUMN extra", ()))
    with pytest.raises(DataError, match=re.escape(
            f"{path}: its table provider_index has the columns ('cid', 'origin', 'extra'), "
            "not ('cid', 'origin')")):
        _start(tmp_path / "a")


def test_an_index_of_an_index_table_name_is_an_error_naming_the_file(tmp_path: Path) -> None:
    _start(tmp_path / "a")
    path = _edit(tmp_path / "a", ("DROP TABLE snapshot_owed", ()),
                 ("CREATE INDEX snapshot_owed ON meta (v)", ()))
    with pytest.raises(StoreError, match=re.escape(
            f"cannot use the event log {path}: there is already an index named snapshot_owed")):
        _start(tmp_path / "a")


def test_an_event_log_that_is_a_directory_is_an_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "a" / "events.sqlite"
    path.mkdir(parents=True)
    with pytest.raises(StoreError, match=re.escape(
            f"cannot open the event log {path}: unable to open database file: it is a "
            "directory")):
        _start(tmp_path / "a")
