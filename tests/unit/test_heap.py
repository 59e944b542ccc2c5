"""peer.jobs.heap: the worker's mallopt settings, with a fake mallopt (the real one is
exercised in worker processes by test_executor)."""

from __future__ import annotations

from typing import Any

import pytest

from peer.errors import ConfigError
from peer.jobs.heap import (
    M_MMAP_THRESHOLD,
    M_TRIM_THRESHOLD,
    MAX_MMAP_THRESHOLD_BYTES,
    HeapConfig,
    tune,
)

MIB = 1 << 20


class FakeMallopt:
    """Records calls; refuses the parameters in `refuse` (returns 0, as glibc does)."""

    def __init__(self, refuse: tuple[int, ...] = ()) -> None:
        self.calls: list[tuple[int, int]] = []
        self.refuse = refuse

    def __call__(self, param: int, value: int, /) -> int:
        self.calls.append((param, value))
        return 0 if param in self.refuse else 1


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"mmap_threshold_bytes": 0}, "mmap_threshold_bytes"),
        ({"mmap_threshold_bytes": MAX_MMAP_THRESHOLD_BYTES + 1}, "mmap_threshold_bytes"),
        ({"mmap_threshold_bytes": 4 * MIB, "trim_threshold_bytes": 2 * MIB},
         "trim_threshold_bytes"),
    ],
)
def test_config_rejects_bad_values(kw: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as err:
        HeapConfig(**kw)
    assert err.value.field == field


def test_tune_sets_mmap_then_trim_threshold() -> None:
    fake = FakeMallopt()
    assert tune(HeapConfig(4 * MIB, 16 * MIB), fake)
    assert fake.calls == [(M_MMAP_THRESHOLD, 4 * MIB), (M_TRIM_THRESHOLD, 16 * MIB)]


def test_trim_threshold_is_left_alone_when_mmap_threshold_is_refused() -> None:
    # alone, a trim threshold would fix glibc's mmap threshold at its 128 KiB start
    fake = FakeMallopt(refuse=(M_MMAP_THRESHOLD,))
    assert not tune(HeapConfig(), fake)
    assert fake.calls == [(M_MMAP_THRESHOLD, 32 * MIB)]


def test_tune_reports_a_refused_trim_threshold() -> None:
    assert not tune(HeapConfig(), FakeMallopt(refuse=(M_TRIM_THRESHOLD,)))


def test_tune_without_mallopt_does_nothing() -> None:
    assert not tune(HeapConfig(), None)
