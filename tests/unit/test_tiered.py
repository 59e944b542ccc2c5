"""The cache tables in front of the job index (peer.log.fold.Tiered) keep a bounded number of
the entries read back from it: a peer that runs for months and reads many old task keys or
CIDs (cached outputs, providers, the janitor's archived CIDs) does not grow without bound.
What the fold changed of an entry read back is live: it is kept until compaction spills it."""

from __future__ import annotations

import importlib
import sqlite3
from typing import Any

import pytest

from peer.cids import sha256_cid
from peer.config import PeerConfig
from peer.log import Event, EventType, MeshState
from peer.log.compact import CompactConfig
from peer.log.fold import Tiered, TieredSet
from peer.log.jobindex import ITEM, OUTPUT, CacheEntry, JobIndex

fold_mod = importlib.import_module("peer.log.fold")  # (peer.log.fold is the function)
BOUND = 8
N = 100  # distinct old keys, many more than BOUND


def _c(i: int) -> str:
    """The i-th provided CID."""
    return str(sha256_cid(f"c{i}".encode(), "raw", 1))


@pytest.fixture
def state(db: sqlite3.Connection, monkeypatch: pytest.MonkeyPatch) -> MeshState:
    """A state whose cache tables keep at most BOUND entries read back, in front of an index
    that holds N outputs, items and provided CIDs of compacted jobs (order (10, "o", 1))."""
    monkeypatch.setattr(fold_mod, "READ_MAX", BOUND, raising=False)
    index = JobIndex(db)
    index.put([], [CacheEntry(kind, f"k{i}", v, (10, "o", 1)) for i in range(N)
                   for kind, v in ((OUTPUT, f"out{i}"), (ITEM, {"n": f"n{i}", "c": _c(i)}))],
              [(_c(i), "peerA") for i in range(N)])
    s = MeshState()
    s.tier(**index.lookups())  # type: ignore[arg-type]
    return s


def _tables(s: MeshState) -> list[dict[str, Any]]:
    return [s.outputs, s._outputs_src, s.cache, s._cache_src, s.providers]


def _in_memory(table: dict[str, Any], k: str) -> bool:
    return dict.__contains__(table, k)


def _ev(origin: str, seq: int, hlc: int, typ: EventType, payload: dict[str, object]) -> Event:
    return Event(origin, seq, hlc, typ, payload)


def test_reads_of_many_old_keys_stay_bounded(state: MeshState) -> None:
    for _ in range(2):
        for i in range(N):
            k = f"k{i}"
            assert state.outputs.get(k) == f"out{i}"  # Planner.cached_output
            assert state.providers.get(_c(i)) == {"peerA"}
            assert k in state.cache  # item_cached
            assert state.cache[k] == {"n": f"n{i}", "c": _c(i)}
            assert state._outputs_src[k] == (10, "o", 1)
            assert state._cache_src.get(k) == (10, "o", 1)  # the fold's _merge_first
            for t in _tables(state):
                assert len(t) <= BOUND


def test_an_entry_let_go_is_read_again_from_the_index(state: MeshState,
                                                      db: sqlite3.Connection) -> None:
    assert state.outputs.get("k0") == "out0"
    for i in range(1, N):
        state.outputs.get(f"k{i}")
    assert not _in_memory(state.outputs, "k0")
    reads: list[str] = []
    db.set_trace_callback(lambda sql: reads.append(sql) if sql.startswith("SELECT") else None)
    assert state.outputs.get("k0") == "out0"  # read again
    assert state.outputs["k0"] == "out0" and "k0" in state.outputs  # now a hit
    assert len(reads) == 1


def test_the_first_read_goes_first(state: MeshState) -> None:
    for i in range(BOUND + 1):
        state.providers.get(_c(i))
    assert [c for c in state.providers] == [_c(i) for i in range(1, BOUND + 1)]


def test_a_provider_set_the_fold_added_to_is_kept(state: MeshState) -> None:
    assert state.providers.get(_c(0)) == {"peerA"}  # read back first, then changed in place
    state.apply(_ev("peerB", 1, 20, EventType.PROVIDE, {"cids": [_c(0), _c(1)]}))  # c1: loaded
    for i in range(2, N):
        state.providers.get(_c(i))
    assert dict.__getitem__(state.providers, _c(0)) == {"peerA", "peerB"}
    assert dict.__getitem__(state.providers, _c(1)) == {"peerA", "peerB"}
    assert len(state.providers) <= BOUND + 2


def test_a_provider_the_fold_took_away_stays_away(state: MeshState) -> None:
    assert state.providers.get(_c(0)) == {"peerA"}
    state.apply(_ev("peerA", 1, 20, EventType.UNPROVIDE, {"cids": [_c(0)]}))
    for i in range(1, N):
        state.providers.get(_c(i))
    assert state.providers.get(_c(0)) == set()  # not read again from the index


def test_an_entry_the_fold_wrote_over_a_read_back_one_is_kept(state: MeshState) -> None:
    assert state._outputs_src.get("k0") == (10, "o", 1) and state.outputs.get("k0") == "out0"
    state.apply(_ev("peerB", 1, 5, EventType.TASK_DONE, {  # earlier than the index's: it wins
        "job": "j", "task": "t", "output": "other", "key": "k0", "cached": True}))
    for i in range(1, N):
        state.outputs.get(f"k{i}")
        state._outputs_src.get(f"k{i}")
    assert state.outputs.get("k0") == "other"
    assert state._outputs_src.get("k0") == (5, "peerB", 1)


def test_a_spilled_entry_leaves_the_read_back_ones(state: MeshState) -> None:
    state.outputs.get("k0")
    state.spill(["k0"], [], [])  # compaction: k0's entry left memory for the index
    for i in range(1, N):  # k0 read first: had it stayed in the read-back order, letting it
        state.outputs.get(f"k{i}")  # go again would fail (it is not in memory)
    assert len(state.outputs) <= BOUND
    state.outputs["k0"] = "live"  # a later live write of the same key
    for i in range(1, N):
        state.outputs.get(f"k{i}")
    assert dict.__getitem__(state.outputs, "k0") == "live"


def test_a_refold_keeps_the_bound_and_the_index(state: MeshState) -> None:
    state.refold()
    for i in range(N):
        assert state.outputs.get(f"k{i}") == f"out{i}"
        assert len(state.outputs) <= BOUND


def test_without_an_index_nothing_is_let_go() -> None:
    t = Tiered(set)
    for i in range(3 * BOUND):
        t[_c(i)].add("p")
    assert len(t) == 3 * BOUND


def test_every_write_makes_an_entry_live(state: MeshState) -> None:
    for k in ("k0", "k1", "k2", "k3"):
        state.outputs.get(k)
    t = state.outputs
    t["k0"] = "a"
    t.update({"k1": "b"})
    t.setdefault("k2", "ignored")  # in memory already: a read, not a write
    t |= {"k3": "d"}
    for i in range(4, N):
        t.get(f"k{i}")
    assert [dict.get(t, k) for k in ("k0", "k1", "k3")] == ["a", "b", "d"]
    assert not _in_memory(t, "k2")


def test_the_bound_is_at_least_one() -> None:
    with pytest.raises(ValueError):
        Tiered(read_max=0)
    with pytest.raises(ValueError):
        Tiered().bound(0)


def test_the_default_bound_keeps_a_few_megabytes() -> None:
    """4096 entries per table, about 2.2 KB for the five (docs/benchmarks.md, "Read-back
    cache"): about 9 MB when full, where 65,536 was about 145 MB."""
    assert fold_mod.READ_MAX == 4096
    assert CompactConfig().read_back_entries == fold_mod.READ_MAX
    assert PeerConfig().compact_read_back_entries == fold_mod.READ_MAX
    with pytest.raises(ValueError, match="read_back_entries"):
        CompactConfig(read_back_entries=0)


def test_tier_sets_each_table_s_bound_and_refold_keeps_it(db: sqlite3.Connection) -> None:
    index = JobIndex(db)
    index.put([], [CacheEntry(OUTPUT, f"k{i}", f"out{i}", (10, "o", 1)) for i in range(N)],
              [(_c(i), "peerA") for i in range(N)])
    s = MeshState()
    s.tier(**index.lookups(), read_max=3)  # type: ignore[arg-type]
    for s2 in (s, None):
        if s2 is None:
            s.refold()
        for i in range(N):
            assert s.outputs.get(f"k{i}") == f"out{i}"
            assert s.providers.get(_c(i)) == {"peerA"}
        for t in _tables(s):
            assert isinstance(t, Tiered) and t.read_max == 3
            assert dict.__len__(t) <= 3


def test_a_lower_bound_lets_the_first_read_go_at_once(state: MeshState) -> None:
    for i in range(BOUND):
        state.outputs.get(f"k{i}")
    assert isinstance(state.outputs, Tiered)
    state.outputs.bound(2)
    assert list(state.outputs) == [f"k{BOUND - 2}", f"k{BOUND - 1}"]


def test_setdefault_of_a_key_held_in_the_index_gives_the_index_s_value(state: MeshState) -> None:
    """As `in` and `get`: a key only the index holds is not hidden behind the default."""
    assert state.outputs.setdefault("k3", "default") == "out3"
    assert state.outputs.setdefault("absent", "default") == "default"
    assert state.outputs["absent"] == "default"


# -- the compacted jobs (MeshState.compacted, a TieredSet in front of the job index) ------------


def _tiered_set(index: set[str], asked: list[str]) -> TieredSet:
    def lookup(job: str) -> bool:
        asked.append(job)
        return job in index

    t = TieredSet(members_max=BOUND, absent_max=BOUND)
    t.tier(lookup, bool(index))
    return t


def test_compacted_jobs_in_memory_are_bounded_and_the_index_answers_for_the_rest() -> None:
    index: set[str] = set()
    asked: list[str] = []
    t = _tiered_set(index, asked)
    for i in range(N):  # compaction writes the record, then adds the job
        index.add(f"j{i}")
        t.add(f"j{i}")
    assert len(t) == BOUND and t.added == N  # a change counter, though len stays level
    assert all(f"j{i}" in t for i in range(N - BOUND, N)) and asked == []  # the last in
    assert all(f"j{i}" in t for i in range(N - BOUND))  # the others: asked of the index
    assert len(t) == BOUND and asked == [f"j{i}" for i in range(N - BOUND)]


def test_a_job_the_index_does_not_hold_is_asked_once_until_it_is_added() -> None:
    index = {"old"}
    asked: list[str] = []
    t = _tiered_set(index, asked)
    assert t and len(t) == 0  # not empty: the index holds a job
    assert "live" not in t and "live" not in t and asked == ["live"]
    index.add("live")
    t.add("live")
    assert "live" in t and asked == ["live"]
    t.discard("live")  # its record deleted
    index.discard("live")
    assert "live" not in t and asked == ["live", "live"]
    for i in range(N):  # the jobs it did not hold are remembered within a bound
        assert f"x{i}" not in t
    assert len(t._absent) == BOUND


def test_without_a_lookup_a_tiered_set_is_a_plain_set() -> None:
    t = TieredSet(members_max=1)
    t |= {"a", "b", "c"}
    assert t == {"a", "b", "c"} and "d" not in t and not TieredSet()
    with pytest.raises(ValueError, match="members_max"):
        TieredSet(members_max=0)


def test_tombstones_ask_the_index_only_once_it_holds_one_and_keep_nothing_read_back() -> None:
    from peer.log.fold import Tombstones

    asked: list[str] = []
    index: dict[str, tuple[int, str, int]] = {}

    def lookup(job: str) -> tuple[int, str, int] | None:
        asked.append(job)
        return index.get(job)

    s = MeshState()
    s.tier(lambda k: None, lambda k: None, lambda k: None, lambda k: None, lambda k: None,
           deleted=lookup, some_deleted=False)
    assert isinstance(s.deleted, Tombstones) and not s.deleted
    assert "live" not in s.deleted and asked == []  # a mesh that never deleted asks nothing
    s.apply(Event("o", 1, 5, EventType.JOB_DELETED, {"job": "gone", "reason": "rm"}))
    index.update(s.spill_deleted())  # a compaction pass wrote it to the index
    assert s.deleted and dict.__len__(s.deleted) == 0
    assert s.deleted.get("gone") == (5, "o", 1) and "gone" in s.deleted
    assert dict.__len__(s.deleted) == 0 and asked == ["gone", "gone"]  # nothing kept


def test_a_tiered_set_refuses_set_operations_that_would_see_memory_only() -> None:
    s = TieredSet()
    s.tier(lambda k: k == "in-the-index", some=True)
    assert "in-the-index" in s  # asked of the index
    for op in (lambda: s | {"a"}, lambda: {"a"} - s, lambda: s <= {"a"},
               lambda: s.union({"a"}), lambda: s.issubset({"a"})):
        with pytest.raises(TypeError, match="memory only"):
            op()
