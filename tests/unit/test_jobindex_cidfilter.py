"""The job index knows which CIDs its provider rows may name once a scan read them all
(`providers_sound`'s, the first reap's), and adds those of each of its writes before it
runs: a fresh output's CID (each CHUNK_DONE's, on every peer) costs `providers_of` no query,
and a provider written after a miss is still found (issue 12, session 52 helper b)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from peer.cids import sha256_cid
from peer.log import jobindex as ji
from peer.log import keyfilter
from peer.log.jobindex import ITEM, JobIndex
from peer.log.keyfilter import KeyFilter
from tests.unit.test_jobindex_absent import _reads


def _cid(s: str) -> str:
    return str(sha256_cid(s.encode(), "raw", 1))


C1, C2, C3 = (_cid(s) for s in ("c1", "c2", "c3"))


def _put(index: JobIndex, cid: str, origin: str, tmp_path: Path) -> None:
    index.put([], [], [(cid, origin)])


def _put_batches(index: JobIndex, cid: str, origin: str, tmp_path: Path) -> None:
    index.put_batches([("p", [(cid, origin)])])


def _put_rows(index: JobIndex, cid: str, origin: str, tmp_path: Path) -> None:
    spool = str(tmp_path / ji.spool_name(bytes(16)))
    index.spooled(spool, "signer", "signer")
    index.put_rows([("p", [(cid, origin)]), ("c", [(ITEM, "i", '"v"', 1, "o", 1)])], spool, None)


WRITES = [_put, _put_batches, _put_rows]


def test_a_cid_no_row_names_costs_no_query_once_the_rows_were_read(
        db: sqlite3.Connection) -> None:
    """On a04f558d each fresh CID's `providers_of` (and a TURN's `screen`) read the file."""
    index = JobIndex(db)
    index.put([], [], [(C1, "peerA")])
    assert index.providers_sound()
    reads = _reads(db)
    assert index.providers_of(C2) is None and index.providers_of(C3) is None
    index.screen(ji._PROVIDERS, [C2, C3])
    assert reads == []
    assert index.providers_of(C1) == {"peerA"}  # (a row: read)
    assert len(reads) == 1


@pytest.mark.parametrize("write", WRITES, ids=lambda f: f.__name__)
def test_a_provider_written_after_a_miss_is_found(
        db: sqlite3.Connection, tmp_path: Path,
        write: Callable[[JobIndex, str, str, Path], None]) -> None:
    index = JobIndex(db, tmp_path)
    assert index.providers_sound()
    assert index.providers_of(C1) is None
    write(index, C1, "peerA", tmp_path)
    assert index.providers_of(C1) == {"peerA"}


def test_rows_on_disk_before_the_scan_are_found(db: sqlite3.Connection) -> None:
    """Another object's rows (a restart's: the file as it was left) are read by the scan."""
    JobIndex(db).put([], [], [(C1, "peerA"), (C2, "peerB")])
    index = JobIndex(db)
    assert index.providers_sound()
    assert index.providers_of(C1) == {"peerA"} and index.providers_of(C2) == {"peerB"}
    assert index.providers_of(C3) is None


def test_a_failed_write_leaves_a_maybe_not_a_miss(db: sqlite3.Connection) -> None:
    index = JobIndex(db)
    assert index.providers_sound()

    def rows() -> Iterator[tuple[str, list[tuple[str, str]]]]:
        yield "p", [(C1, "peerA")]
        raise ValueError("a malformed row")

    with pytest.raises(ValueError):
        index.put_batches(rows())
    reads = _reads(db)
    assert index.providers_of(C1) is None  # (asked: the filter holds it, the file does not)
    assert len(reads) == 1


def test_a_full_filter_is_read_anew_and_misses_nothing(db: sqlite3.Connection,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(keyfilter, "MIN_BITS", 64)  # (room for 4 CIDs; full past 8)
    index = JobIndex(db)
    assert index.providers_sound()
    cids = [_cid(f"k{i}") for i in range(40)]  # (full past 8 even where keys share bits)
    index.put([], [], [(c, "peerA") for c in cids])
    reads = _reads(db)
    assert index.providers_of(C1) is None and len(reads) == 1  # (full: every look-up asks)
    assert index.providers_sound()  # (the next reap's: read anew, sized for 40)
    reads.clear()
    assert all(index.providers_of(c) == {"peerA"} for c in cids)
    assert index.providers_of(C2) is None
    assert len(reads) <= len(cids) + 1  # (one per row's CID; C2 in all likelihood none)


def test_a_filter_answers_maybe_for_every_key_added() -> None:
    f = KeyFilter(1000)
    added = [f"a{i}" for i in range(1000)]
    f.add_all(added)
    assert all(f.maybe(k) for k in added)
    assert 990 <= f.count <= 1000 and not f.full  # (a key whose bits were set is not counted)
    others = sum(f.maybe(f"b{i}") for i in range(10_000))
    assert others < 500  # (about 1.4 %: 140 expected; a "maybe" costs a look, never a miss)


def test_a_key_added_again_is_not_counted_again() -> None:
    """Review r1 of session 52, finding 4: a CID's provider set rewritten (a key added again)
    counted again, so the filter soon called itself full and the provider table was scanned
    anew at every reap."""
    f = KeyFilter(10)
    for _ in range(3 * f.capacity):
        f.add("same")
    assert f.count == 1 and not f.full and f.maybe("same")
