"""Events that left memory outside a compaction pass (`Compactor.unindexed`) have their cache
entries and providers written to the job index at the next passes, at most UNINDEXED_PER_PASS
a pass, none dropped before; a job index that cannot be written keeps them queued, counted
and logged. A real job index on an in-memory SQLite, a fake event store."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Iterable, Mapping

import pytest

from peer.cids import sha256_cid
from peer.log import Event, EventType, MeshState
from peer.log import compact as compact_mod
from peer.log.compact import CompactConfig, Compactor
from peer.log.jobindex import OUTPUT, CacheEntry, JobIndex, JobRecord
from tests.unit.test_cache_reap import _Log

ORIGIN = "orig0000000000000000"


class Store(_Log):
    """The event store: records the drops."""

    def __init__(self) -> None:
        super().__init__()
        self.deleted: list[tuple[str, int]] = []

    def delete(self, ids: Iterable[tuple[str, int]], floors: Mapping[str, int] | None = None,
               also: Callable[[], None] | None = None) -> int:
        ids = list(ids)
        self.deleted += ids
        return super().delete(ids, floors, also)


class FailingIndex(JobIndex):
    """A job index whose `put` raises while `failing` (a full disk)."""

    failing = False

    def put(self, records: Iterable[JobRecord], entries: Iterable[CacheEntry],
            providers: Iterable[tuple[str, str]], cids: Iterable[str] = (),
            vouched: Iterable[tuple[str, Iterable[str], Iterable[str]]] = ()) -> None:
        if self.failing:
            raise sqlite3.OperationalError("database or disk is full")
        super().put(records, entries, providers, cids, vouched)


def _cid(i: int) -> str:
    """The output (a provided CID) of the i-th TASK_DONE."""
    return str(sha256_cid(f"cid{i}".encode(), "raw", 1))

def _setup(db: sqlite3.Connection, n: int) -> tuple[Compactor, FailingIndex, list[Event]]:
    """A compactor over a state that folded `n` TASK_DONEs (each a cached output and a
    provided CID), then let them leave memory outside a pass, with a CLAIM each."""
    index = FailingIndex(db)
    state = MeshState()
    state.tier(**index.lookups())  # type: ignore[arg-type]
    c = Compactor(CompactConfig(), state, Store(), index, lambda job: None, lambda: [],
                  lambda: 1 << 16)
    evs: list[Event] = []
    for i in range(n):
        done = Event(ORIGIN, 2 * i + 1, (10 + i) << 16, EventType.TASK_DONE,
                     {"job": f"j{i}", "task": "t", "output": _cid(i), "key": f"k{i}"})
        claim = Event(ORIGIN, 2 * i + 2, (10 + i) << 16, EventType.CLAIM,
                      {"job": f"j{i}", "task": "t", "split": [ORIGIN, 1], "chunk": 0,
                       "attempt": 0})
        state.apply(done)
        evs.append(done)
        c.evicted(done)
        c.evicted(claim)  # (makes no entry: not queued)
    return c, index, evs


def test_only_events_that_make_entries_wait(db: sqlite3.Connection) -> None:
    c, _, evs = _setup(db, 3)
    assert c.unindexed == evs


def test_a_pass_indexes_at_most_its_share_and_drops_nothing_before_all_are(
        db: sqlite3.Connection, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(compact_mod, "UNINDEXED_PER_PASS", 4)
    c, index, _ = _setup(db, 10)
    drops: list[int] = []
    monkeypatch.setattr(c, "_drop", lambda out: drops.append(1))
    written: list[int] = []
    put = index.put
    monkeypatch.setattr(index, "put", lambda r, e, p, cids=(): (
        written.append(len(list(cids))), put(r, e, p, cids))[1])
    for left in (6, 2, 0):
        c.step()
        assert len(c.unindexed) == left
        assert drops == ([1] if left == 0 else [])
    assert written == [4, 4, 2]
    for i in range(10):
        assert index.entry(OUTPUT, f"k{i}") is not None
        assert index.providers_of(_cid(i)) == {ORIGIN}
        assert not dict.__contains__(c.state.outputs, f"k{i}")  # memory let it go
        assert c.state.outputs.get(f"k{i}") == _cid(i)  # read back


def test_a_failing_index_keeps_them_queued_counted_and_logged_once(
        db: sqlite3.Connection, caplog: pytest.LogCaptureFixture) -> None:
    c, index, evs = _setup(db, 3)
    index.failing = True
    caplog.set_level(logging.WARNING, "banzai.log")
    for passes in (1, 2, 3):
        with pytest.raises(sqlite3.OperationalError):
            c.step()
        assert c.index_failures == passes
        assert c.unindexed == evs  # nothing lost
    assert [r.getMessage() for r in caplog.records if "cannot be written" in r.getMessage()] \
        == ["the job index cannot be written (database or disk is full): 3 events that left "
            "memory wait for it; compaction stops until it can"]
    index.failing = False
    c.step()
    assert c.unindexed == [] and c.index_failures == 3
    assert "written again after 3 failed passes" in caplog.text
    assert all(index.entry(OUTPUT, f"k{i}") is not None for i in range(3))


def test_settle_indexes_the_whole_replay_s(db: sqlite3.Connection,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(compact_mod, "UNINDEXED_PER_PASS", 2)
    c, index, _ = _setup(db, 5)
    c.settle()
    assert c.unindexed == []
    assert all(index.entry(OUTPUT, f"k{i}") is not None for i in range(5))


