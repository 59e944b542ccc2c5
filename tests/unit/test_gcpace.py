"""peer.gcpace: the collector's thresholds for a peer's process, and its collections timed."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from peer import gcpace
from peer.gcpace import GcPace, GcStats


@pytest.fixture
def restore() -> Iterator[None]:
    """Put back this process's thresholds and callbacks (pytest's own process)."""
    before, callbacks = gc.get_threshold(), list(gc.callbacks)
    try:
        yield
    finally:
        gc.set_threshold(*before)
        gc.callbacks[:] = callbacks
        gcpace._stats = gcpace._pace = gcpace._last_full = None


def test_apply_sets_the_thresholds_and_counts_collections(restore: None) -> None:
    stats = gcpace.apply(GcPace(40_000, 20, 30))
    assert gc.get_threshold() == (40_000, 20, 30) and gcpace.stats() is stats
    gc.collect(0)
    gc.collect(2)
    assert stats.collections[0] >= 1 and stats.collections[2] >= 1
    assert all(s >= 0 for s in stats.seconds)


def test_zero_keeps_pythons_thresholds_and_a_second_apply_replaces_the_timer(
        restore: None) -> None:
    gc.set_threshold(700, 10, 10)
    first = gcpace.apply(GcPace(0))
    assert gc.get_threshold() == (700, 10, 10)
    second = gcpace.apply(GcPace(0))
    assert first.callback not in gc.callbacks and gc.callbacks.count(second.callback) == 1
    gc.collect(1)
    assert first.collections == [0, 0, 0] and second.collections[1] >= 1


def test_the_callback_counts_by_generation() -> None:
    s = GcStats()
    for gen in (0, 0, 1, 2):
        s.callback("start", {"generation": gen})
        s.callback("stop", {"generation": gen, "collected": 0, "uncollectable": 0})
    assert s.collections == [2, 1, 1]


@pytest.mark.parametrize("bad", [dict(young_allocs=-1), dict(young_allocs=2**31),
                                 dict(young_per_middle=0), dict(middle_per_old=0),
                                 dict(full_every_s=-1.0)])
def test_bad_thresholds_are_refused(bad: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        GcPace(**bad)


class _Cycle:
    """A container in a reference cycle (as an exception kept with its traceback is)."""

    def __init__(self) -> None:
        self.me = self


def test_after_a_storage_cycle_cyclic_garbage_is_collected(restore: None) -> None:
    """At the peer's pace a cycle may wait for 50,000 net allocations (on an idle peer its
    garbage is most of them): the sweep after each storage cycle frees it, a middle
    collection each time and a full one at most once per full_every_s."""
    assert gcpace.after_cycle() == -1  # never applied in this process: nothing done
    stats = gcpace.apply(GcPace(50_000, full_every_s=3600.0))
    assert gcpace.after_cycle(now=1000.0) == 2  # the first: a full one
    assert gcpace.after_cycle(now=1010.0) == 1  # then middle ones
    gone: list[bool] = []
    c = _Cycle()
    weakref.finalize(c, gone.append, True)
    del c
    assert gone == []  # (a young collection is 50,000 allocations away)
    before = list(stats.collections)
    assert gcpace.after_cycle(now=1020.0) == 1
    assert gone == [True] and stats.collections[1] == before[1] + 1
    assert gcpace.after_cycle(now=4600.0) == 2  # an hour after the last full one
    assert stats.collections[2] >= before[2] + 1
