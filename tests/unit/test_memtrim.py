"""peer/memtrim.py: glibc's malloc_trim after storage cycles, at most once per interval."""

from __future__ import annotations

import asyncio
import ctypes
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

from peer import memtrim
from peer.config import PeerConfig, from_args, load
from peer.errors import ConfigError
from peer.log.clock import FakeClock
from peer.memtrim import TrimConfig, Trimmer, glibc_malloc_trim, rss_bytes
from peer.node import Node

T = TypeVar("T")


async def inline(fn: Callable[[], T]) -> T:
    """Runs the trim on the loop: no thread in unit tests."""
    return fn()


class FakeTrim:
    """malloc_trim that records its calls and gives back `freed` bytes of a fake RSS."""

    def __init__(self, freed: int = 4096) -> None:
        self.calls: list[int] = []
        self.freed = freed
        self.rss = 10 * 2**20

    def __call__(self, pad: int) -> int:
        self.calls.append(pad)
        self.rss -= self.freed
        return 1 if self.freed else 0


def trimmer(interval_s: float, trim: FakeTrim | None, clock: FakeClock) -> Trimmer:
    return Trimmer(TrimConfig(interval_s), trim, clock=clock,
                   rss=lambda: trim.rss if trim else 0, offload=inline)


def test_trims_after_a_cycle_at_most_once_per_interval() -> None:
    clock, trim = FakeClock(), FakeTrim()
    t = trimmer(30.0, trim, clock)

    async def cycles(n: int, every_s: float) -> None:
        for _ in range(n):
            await t.after_cycle()
            clock.advance(every_s)
    asyncio.run(cycles(7, 10.0))  # cycles at 0, 10, ..., 60 s: trims at 0, 30, 60
    assert trim.calls == [0, 0, 0]
    asyncio.run(cycles(3, 45.0))  # at 70 (10 s after the last trim: none), 115, 160
    assert len(trim.calls) == 5
    assert t.stats.trims == 5 and t.stats.freed_bytes == 5 * 4096
    assert t.stats.last_rss_before - t.stats.last_rss_after == 4096


def test_a_trim_that_gives_nothing_back_counts_no_bytes() -> None:
    clock, trim = FakeClock(), FakeTrim(freed=0)
    t = trimmer(1.0, trim, clock)
    asyncio.run(t.after_cycle())
    assert trim.calls == [0] and t.stats.trims == 1 and t.stats.freed_bytes == 0


def test_interval_zero_never_trims() -> None:
    clock, trim = FakeClock(), FakeTrim()
    t = trimmer(0.0, trim, clock)
    assert not t.enabled
    asyncio.run(t.after_cycle())
    assert trim.calls == [] and t.stats.trims == 0


def test_without_the_symbol_a_trimmer_does_nothing() -> None:
    t = trimmer(30.0, None, FakeClock())
    assert not t.enabled
    asyncio.run(t.after_cycle())
    assert t.stats.trims == 0


def test_lookup_without_malloc_trim_is_none(monkeypatch: pytest.MonkeyPatch) -> None:
    class NoTrim:  # a C library without the symbol (musl, macOS): attribute lookup fails
        def __init__(self, name: object) -> None:
            pass

        def __getattr__(self, name: str) -> object:
            raise AttributeError(name)
    monkeypatch.setattr(ctypes, "CDLL", NoTrim)
    glibc_malloc_trim.cache_clear()
    try:
        assert glibc_malloc_trim() is None
    finally:
        glibc_malloc_trim.cache_clear()


def test_lookup_is_done_once() -> None:
    assert glibc_malloc_trim() is glibc_malloc_trim()


def test_rss_reads_statm_or_is_zero(monkeypatch: pytest.MonkeyPatch) -> None:
    assert rss_bytes() >= 0

    def missing(*_: object, **__: object) -> object:
        raise OSError("no /proc")
    monkeypatch.setattr(memtrim, "open", missing, raising=False)
    assert rss_bytes() == 0


def test_config_rejects_a_negative_interval() -> None:
    with pytest.raises(ValueError, match="interval_s"):
        TrimConfig(-1.0)


def test_the_setting_by_flag_env_and_default() -> None:
    assert load({}, env={}).malloc_trim_interval_s == 30.0
    assert load({}, env={"BANZAI_MALLOC_TRIM_INTERVAL_S": "0"}).malloc_trim_interval_s == 0.0
    cfg, _ = from_args(["--malloc-trim-interval-s", "120"])
    assert cfg.malloc_trim_interval_s == 120.0
    with pytest.raises(ConfigError) as e:
        load({"malloc_trim_interval_s": -5.0}, env={})
    assert e.value.field == "malloc_trim_interval_s"
    assert "must not be negative, got -5.0" in e.value.message


def test_a_node_trims_after_its_gc(tmp_path: Path, opened: list[Node]) -> None:
    node = Node(PeerConfig(data_dir=tmp_path, slots=1, mdns=False, malloc_trim_interval_s=60))
    opened.append(node)
    assert node.trimmer.cfg.interval_s == 60
    assert node.trimmer.after_cycle in node.janitor.after_gc
    assert node.trimmer.trim is glibc_malloc_trim()
    assert node.load()["malloc_trims"] == 0
