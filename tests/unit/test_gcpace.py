"""peer.gcpace: the collector's thresholds for a peer's process, and its collections timed."""

from __future__ import annotations

import gc
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
        gcpace._stats = None


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


@pytest.mark.parametrize("bad", [dict(young_allocs=-1), dict(young_per_middle=0),
                                 dict(middle_per_old=0)])
def test_bad_thresholds_are_refused(bad: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        GcPace(**bad)
