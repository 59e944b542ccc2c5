"""The job index counts its records (`len`, /api/health) without a query: counted once at
open, then kept by its writes (put, a snapshot's rows, delete), a rolled-back write leaving
it as it was."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from peer.log.jobindex import ITEM, CacheEntry, JobIndex, JobRecord


def _rec(job: str, state: str = "done") -> JobRecord:
    return JobRecord(job, (1, "o", 1), 2, state, {"id": job}, {"id": job})


def _count(db: sqlite3.Connection) -> int:
    return int(db.execute("SELECT count(*) FROM job_index").fetchone()[0])


def _no_count_query(db: sqlite3.Connection) -> list[str]:
    seen: list[str] = []
    db.set_trace_callback(lambda sql: seen.append(sql) if "count(" in sql else None)
    return seen


def test_the_count_follows_puts_snapshot_rows_deletes_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "log.sqlite"
    db = sqlite3.connect(path, isolation_level=None)
    index = JobIndex(db)
    counts = _no_count_query(db)
    assert len(index) == 0
    index.put([_rec("a"), _rec("b")], [], [])
    index.put([_rec("a", "failed"), _rec("c"), _rec("c")], [], [])  # a replaced, c twice
    assert len(index) == 3
    index.put_batches([("j", [("b", 1, "o", 1, 2, "done", "{}", "{}", "{}"),  # held: kept
                              ("d", 1, "o", 2, 2, "done", "{}", "{}", "{}")]),
                       ("t", [("e", 1, "o", 3, 2, "done", "{}", "{}", "sha"),
                              ("a", 1, "o", 4, 2, "done", "{}", "{}", "sha")])])
    assert len(index) == 5 == _count(db)
    index.delete(["a", "zz", "d"])  # zz: not held
    assert len(index) == 3 == _count(db)
    counts.clear()
    for _ in range(3):
        assert len(index) == 3
    assert counts == []  # no query
    db.close()
    db = sqlite3.connect(path, isolation_level=None)
    assert len(JobIndex(db)) == 3
    db.close()


def test_a_write_rolled_back_leaves_the_count(db: sqlite3.Connection) -> None:
    index = JobIndex(db)
    index.put([_rec("a")], [], [])

    def batches() -> Iterator[tuple[str, list[Any]]]:
        yield "j", [("b", 1, "o", 1, 2, "done", "{}", "{}", "{}")]
        raise ValueError("a malformed frame")

    with pytest.raises(ValueError):
        index.put_batches(batches())
    with pytest.raises(TypeError):  # after the record's row: rolled back
        index.put([_rec("c")], [CacheEntry(ITEM, "k", object(), (1, "o", 1))], [])
    assert len(index) == 1 == _count(db)
