"""The per-origin index that serves events_after (heads + the seqs held beyond a gap)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from peer.log import Event, EventType, MeshState, fold


def _ev(origin: str, seq: int) -> Event:
    # An origin's hlc grows with its seq, as the HLC makes it.
    return Event(origin, seq, (seq << 8) + ord(origin[0]), EventType.PROVIDE,
                 {"cids": [f"{origin}{seq}"]})


def _reference(s: MeshState, vv: dict[str, int], limit: int) -> list[Event]:
    """The rule as first written: sort every event the asker lacks."""
    out = [e for e in s.events.values() if e.seq > vv.get(e.origin, 0)]
    out.sort(key=lambda e: (e.seq > s.heads.get(e.origin, 0), e.hlc, e.origin, e.seq))
    return out[:limit]


held = st.dictionaries(st.sampled_from("abc"), st.sets(st.integers(1, 40), max_size=30))


@settings(max_examples=200, deadline=None)
@given(held, st.dictionaries(st.sampled_from("abcd"), st.integers(0, 45)), st.integers(1, 50))
def test_events_after_serves_what_the_full_sort_served(
        have: dict[str, set[int]], vv: dict[str, int], limit: int) -> None:
    s = fold(_ev(o, q) for o, seqs in have.items() for q in seqs)
    assert s.events_after(vv, limit) == _reference(s, vv, limit)


def test_in_sync_serves_nothing_and_the_beyond_index_follows_the_heads() -> None:
    s = fold([_ev("a", 1), _ev("a", 3), _ev("a", 5)])
    assert s.heads["a"] == 1 and s.beyond == {"a": {3, 5}}
    assert s.events_after({"a": 5}, 10) == []
    s.apply(_ev("a", 2))
    assert s.heads["a"] == 3 and s.beyond == {"a": {5}}
    s.raise_floor("a", 4)  # seq 4 set aside on purpose
    assert s.heads["a"] == 5 and s.beyond == {}
    assert s.events_after(dict(s.heads), 10) == []
    assert [e.seq for e in s.events_after({"a": 2}, 10)] == [3, 5]


def test_gaps_filled_counts_a_head_moving_past_seqs_held_beyond_a_gap_and_nothing_else() -> None:
    s = fold(_ev("a", q) for q in (1, 2, 3))  # contiguous, in one fold
    assert s.gaps_filled == 0
    for q in (4, 5, 6):  # contiguous, one at a time
        s.apply(_ev("a", q))
    assert s.gaps_filled == 0
    s.apply(_ev("a", 9))  # held past a gap: none filled
    s.apply(_ev("b", 2))
    assert s.gaps_filled == 0 and s.beyond == {"a": {9}, "b": {2}}
    s.apply(_ev("a", 7))  # moves the head, not past a held seq
    assert s.gaps_filled == 0
    s.apply(_ev("a", 8))  # past 9 now
    assert s.gaps_filled == 1 and s.beyond == {"b": {2}}
    s.raise_floor("b", 1)  # a floor too
    assert s.gaps_filled == 2 and s.beyond == {}
    s.refold()  # keeps the count, and adds the gaps its own fold fills (held out of order:
    assert s.gaps_filled == 4  # a's 9 before 7 and 8, b's 2 before its floor)
    assert fold([_ev("c", 2), _ev("c", 3), _ev("c", 1)]).gaps_filled == 1  # one batch


class _Counted(set[int]):
    """A `beyond` set that counts the seqs read out of it."""

    read = 0

    def __iter__(self) -> Any:
        for q in super().__iter__():
            _Counted.read += 1
            yield q


def test_events_held_past_a_gap_are_not_rescanned_at_each_event() -> None:
    """A snapshot's events (a taker's heads below them): each event held past the gap read
    every seq held before it (n² / 2: 5 s of the loop for 25,500 events); now the seqs held
    are read only when the head moves past some (a gap filled, a floor raised)."""
    s = fold([_ev("a", 1), _ev("a", 3)])
    s.beyond["a"] = _Counted(s.beyond["a"])
    _Counted.read = 0
    held = [*range(5, 1500), *range(1501, 2005)]  # (a second gap at 1500)
    for q in held:
        s.apply(_ev("a", q))
    assert _Counted.read == 0 and s.heads["a"] == 1 and len(s.beyond["a"]) == 2000
    s.apply(_ev("a", 2))  # fills the gap: 3 leaves, by a range of one
    assert s.heads["a"] == 3 and s.beyond["a"] == set(held) and s.gaps_filled == 1
    s.raise_floor("a", 1000)  # the head moves on to 1499: a range of 1496 (< 1999 held)
    assert s.heads["a"] == 1499 and s.beyond["a"] == set(range(1501, 2005))
    assert s.gaps_filled == 2 and _Counted.read == 0
    s.raise_floor("a", 1500)  # to 2004: every seq held leaves, read once
    assert s.heads["a"] == 2004 and s.beyond == {} and _Counted.read == 504


def test_forgetting_an_event_beyond_a_gap_drops_it_from_the_index() -> None:
    unknown = Event("a", 3, 3 << 8, 200, {"x": 1})  # a newer peer's type
    s = fold([_ev("a", 1), unknown])
    assert s.beyond == {"a": {3}}
    s.forget(unknown.id)
    assert s.beyond == {} and s.events_after({}, 10) == [_ev("a", 1)]


def test_catch_up_pages_reach_the_heads() -> None:
    s = fold(_ev(o, q) for o in "abc" for q in range(1, 301))
    vv: dict[str, Any] = {}
    pages = 0
    while got := s.events_after(vv, 64):
        pages += 1
        for e in got:
            assert e.seq == vv.get(e.origin, 0) + 1  # each page moves the heads on, in order
            vv[e.origin] = e.seq
    assert vv == s.heads and pages == 15


def test_a_thread_reads_the_index_s_outputs_and_provided_cids_page_by_page(
        tmp_path: Path) -> None:
    """read_outputs and read_provided read every row once, a page at a time (each page its
    own statement: the loop's writes between pages are not held back), on a connection of
    their own."""
    import sqlite3

    from peer.log.jobindex import ITEM, OUTPUT, CacheEntry, JobIndex, read_outputs, read_provided

    path = tmp_path / "index.sqlite"
    db = sqlite3.connect(str(path), isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    index = JobIndex(db)
    from peer.cids import sha256_cid

    outs = [str(sha256_cid(f"out{i:03d}".encode(), "raw", 1)) for i in range(10)]
    index.put((), [CacheEntry(OUTPUT, f"k{i:03d}", c, (i, "o", i)) for i, c in enumerate(outs)]
              + [CacheEntry(ITEM, "item", "bafyitem", (0, "o", 0))],
              [(c, "me") for c in outs[:7]] + [(c, "other") for c in outs])
    pages = read_outputs(path, batch=3)
    first = [next(pages) for _ in range(3)]
    index.put((), [CacheEntry(OUTPUT, "k999", "bafylate", (99, "o", 99))], [])  # meanwhile
    assert first + list(pages) == [*outs, "bafylate"]
    assert sorted(read_provided(path, "me", batch=3)) == sorted(outs[:7])
    assert list(read_provided(path, "nobody", batch=3)) == []


class _Looked(dict[int, Event]):
    """An origin's events that count every seq looked up or read out of them."""

    looked = 0

    def get(self, q: int, default: Any = None) -> Any:  # type: ignore[override]
        _Looked.looked += 1
        return super().get(q, default)

    def __iter__(self) -> Any:
        for q in super().__iter__():
            _Looked.looked += 1
            yield q


def test_a_floor_over_seqs_let_go_is_not_walked_seq_by_seq() -> None:
    """Review r2 of session 48, L1: the unknown-type cap lets go of seqs and raises the
    floor over them (no evicted mark, so no archive read); a DIGEST below the floor walked
    every seq under it (a floor of 10^6: 83 ms of the loop per DIGEST). Now the seqs walked
    are at most about as many as the origin holds."""
    s = fold([_ev("a", 1), _ev("a", 2), _ev("a", 3), _ev("b", 1)])
    s.raise_floor("a", 1_000_000)  # seqs 4..10^6 let go
    s.apply(_ev("a", 1_000_001))
    s.apply(_ev("a", 1_000_003))  # beyond a gap
    s.by_origin["a"] = _Looked(s.by_origin["a"])
    _Looked.looked = 0
    assert [(e.origin, e.seq) for e in s.events_after({}, 10)] == [
        ("a", 1), ("b", 1), ("a", 2), ("a", 3), ("a", 1_000_001), ("a", 1_000_003)]
    assert _Looked.looked < 50
    _Looked.looked = 0
    assert [e.seq for e in s.events_after({"b": 1}, 2)] == [1, 2]  # the limit holds
    assert [e.seq for e in s.events_after({"a": 2, "b": 1}, 10)] == [3, 1_000_001, 1_000_003]
    assert [e.seq for e in s.events_after({"a": 500, "b": 1}, 10)] == [1_000_001, 1_000_003]
    assert _Looked.looked < 100


@settings(max_examples=200, deadline=None)
@given(held, st.dictionaries(st.sampled_from("abc"), st.integers(0, 45)),
       st.dictionaries(st.sampled_from("abcd"), st.integers(0, 45)), st.integers(1, 50))
def test_events_after_under_floors_serves_what_the_full_sort_served(
        have: dict[str, set[int]], floors: dict[str, int], vv: dict[str, int],
        limit: int) -> None:
    s = fold(_ev(o, q) for o, seqs in have.items() for q in seqs)
    for o, f in floors.items():
        s.raise_floor(o, f)
    assert s.events_after(vv, limit) == _reference(s, vv, limit)
