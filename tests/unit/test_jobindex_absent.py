"""The job index remembers the keys it does not hold (issue 12: every peer's fold and scheduler
ask it for each fresh output CID and task key), until cache or provider rows are written."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from peer.cids import sha256_cid
from peer.log import MeshState
from peer.log import jobindex as ji
from peer.log.jobindex import ITEM, OUTPUT, CacheEntry, JobIndex

C1, C2 = (str(sha256_cid(s.encode(), "raw", 1)) for s in ("c1", "c2"))  # (provided CIDs)


def _reads(db: sqlite3.Connection) -> list[str]:
    """The SELECTs on cache_index and provider_index run from now on."""
    seen: list[str] = []
    db.set_trace_callback(lambda sql: seen.append(sql) if sql.startswith("SELECT") and (
        "cache_index" in sql or "provider_index" in sql) else None)
    return seen


def _entry(kind: int, key: str, value: object) -> CacheEntry:
    return CacheEntry(kind, key, value, (1, "o", 1))


def test_a_key_not_found_is_not_looked_up_again(db: sqlite3.Connection) -> None:
    index = JobIndex(db)
    reads = _reads(db)
    for _ in range(3):
        assert index.providers_of("") is None
        assert index.entry(OUTPUT, "job/t") is None
        assert index.entry(ITEM, "job/t") is None
    assert len(reads) == 3  # one per table and key, not one per ask


def test_rows_written_by_compaction_are_found_after_a_miss(db: sqlite3.Connection) -> None:
    index = JobIndex(db)
    assert index.providers_of(C1) is None and index.entry(OUTPUT, "k") is None
    index.put([], [_entry(OUTPUT, "k", C1)], [(C1, "peerA")])
    assert index.providers_of(C1) == {"peerA"}
    e = index.entry(OUTPUT, "k")
    assert e is not None and e.value == C1
    assert index.entry(ITEM, "k") is None  # the other table's key stays unknown


def test_rows_taken_from_a_snapshot_are_found_after_a_miss(db: sqlite3.Connection,
                                                           tmp_path: Path) -> None:
    index = JobIndex(db, tmp_path)
    spool = str(tmp_path / ji.spool_name(bytes(16)))
    for cid in (C1, C2):
        assert index.providers_of(cid) is None
    index.put_batches([("p", [(C1, "peerA")])])
    assert index.providers_of(C1) == {"peerA"}
    index.spooled(spool, "signer", "signer")
    index.put_rows([("p", [(C2, "peerB")]), ("c", [(ITEM, "i", '"v"', 1, "o", 1)])],
                   spool, None)
    assert index.providers_of(C2) == {"peerB"}
    e = index.entry(ITEM, "i")
    assert e is not None and e.value == "v"


def test_a_write_that_fails_forgets_the_misses_too(db: sqlite3.Connection) -> None:
    index = JobIndex(db)
    assert index.providers_of(C1) is None

    def rows() -> Iterator[tuple[str, list[tuple[str, str]]]]:
        yield "p", [(C1, "peerA")]
        raise ValueError("a malformed row")

    with pytest.raises(ValueError):
        index.put_batches(rows())
    reads = _reads(db)
    assert index.providers_of(C1) is None  # rolled back: asked again, still not there
    assert len(reads) == 1


def test_the_misses_kept_are_bounded(db: sqlite3.Connection,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ji, "ABSENT_MAX", 4)
    index = JobIndex(db)
    for i in range(10):
        assert index.providers_of(f"c{i}") is None
        assert len(index._absent[ji._PROVIDERS]) <= 4
    reads = _reads(db)
    assert index.providers_of("c9") is None and not reads  # the latest is still remembered
    assert index.providers_of("c0") is None and len(reads) == 1  # an early one was let go


def test_the_fold_asks_the_index_once_for_a_task_without_input(db: sqlite3.Connection) -> None:
    index = JobIndex(db)
    state = MeshState()
    state.tier(**index.lookups())  # type: ignore[arg-type]
    reads = _reads(db)
    for _ in range(5):
        assert state.providers.get("", set()) == set()
        assert state.outputs.get("job/t") is None
    assert len(reads) == 2


def test_keys_screened_at_once_are_not_looked_up_one_by_one(db: sqlite3.Connection) -> None:
    """`screen` asks once per SCREEN_BATCH keys; those it finds no row of cost no query when
    looked up, those it does (one that reads back or not) are looked up as before."""
    index = JobIndex(db)
    index.put([], [_entry(OUTPUT, "held", C1)], [(C1, "peerA")])
    db.execute("INSERT INTO cache_index VALUES (?, ?, ?, ?, ?, ?)",
               (OUTPUT, "edited", "{not json", 1, "o", 1))  # (does not read back)
    keys = ["held", "edited", *(f"k{i}" for i in range(ji.SCREEN_BATCH + 1))]
    reads = _reads(db)
    index.screen(OUTPUT, keys)
    index.screen(ji._PROVIDERS, [C1, C2])
    assert len(reads) == 3  # two batches of keys, one of CIDs
    reads.clear()
    assert all(index.entry(OUTPUT, k) is None for k in keys[2:])
    assert index.providers_of(C2) is None and not reads
    e = index.entry(OUTPUT, "held")
    assert e is not None and e.value == C1 and index.providers_of(C1) == {"peerA"}
    assert index.entry(OUTPUT, "edited") is None and len(reads) == 3
    assert index.entry(ITEM, "k0") is None and len(reads) == 4  # (another table's keys)
