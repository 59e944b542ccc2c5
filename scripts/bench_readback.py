"""What one entry read back from the job index costs a peer (peer.log.fold.Tiered): the memory
each of the five cache tables keeps per entry (tracemalloc: key, value, dict slot and the FIFO
record), and the time of a miss (one SQLite lookup, through `JobIndex.lookups`) against a hit
(a dict lookup); and what a key the index does not hold costs it (remembered until the
next write of cache rows). Keys and values are shaped as a peer's: 64-hex task and item keys, CIDv1
(59 characters), item names of 24 characters, peer ids of 20 hex digits, two providers per
CID. In process, an on-disk SQLite file in a temporary directory; a few seconds.

    PYTHONPATH=$PWD .venv/bin/python scripts/bench_readback.py [--entries 20000]
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import sqlite3
import tempfile
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from peer.log.fold import Tiered
from peer.log.jobindex import ITEM, OUTPUT, CacheEntry, JobIndex


def _hex(tag: str, i: int, n: int) -> str:
    return hashlib.sha256(f"{tag}{i}".encode()).hexdigest()[:n]


def _cid(i: int) -> str:
    return "bafkrei" + _hex("cid", i, 52)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--entries", type=int, default=20_000)
    a = ap.parse_args()
    n = a.entries
    origins = [_hex("peer", i, 20) for i in range(8)]
    with tempfile.TemporaryDirectory() as d:
        db = sqlite3.connect(str(Path(d) / "log.db"), isolation_level=None)
        index = JobIndex(db)
        entries = []
        for i in range(n):
            order = (1_700_000_000_000 << 16 | i, origins[i % 8], i + 1)
            entries.append(CacheEntry(OUTPUT, _hex("task", i, 64), _cid(i), order))
            entries.append(CacheEntry(ITEM, _hex("item", i, 64),
                                      {"n": f"clip-{i:06d}-take-02.wav"[:24], "c": _cid(n + i)},
                                      order))
        index.put([], entries, [(_cid(i), origins[(i + j) % 8]) for i in range(n)
                                for j in range(2)])
        look = index.lookups()
        kinds = {"outputs": "task", "outputs_src": "task", "cache": "item", "cache_src": "item"}

        def fresh(name: str) -> Iterator[str]:  # new key objects: the table keeps its own
            for i in range(n):
                yield _cid(i) if name == "providers" else _hex(kinds[name], i, 64)
        print(f"entries per table {n}; sqlite {sqlite3.sqlite_version}")
        print("table        bytes/entry  miss us  hit us")
        total = 0.0
        for name, fn in look.items():
            t: Tiered = Tiered(set if name == "providers" else None, read_max=n)
            t.lookup = fn
            gc.collect()
            tracemalloc.start()
            before = tracemalloc.get_traced_memory()[0]
            for k in fresh(name):
                t.get(k)
            gc.collect()
            per = (tracemalloc.get_traced_memory()[0] - before) / n
            tracemalloc.stop()
            total += per
            ks = list(fresh(name))
            miss = _time_misses(fn, ks)
            hit = _time_hits(t, ks)
            print(f"{name:<12} {per:>11.0f} {miss:>8.1f} {hit:>7.2f}")
        print(f"all five     {total:>11.0f}")
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        for i in range(n):  # keys the index does not hold: remembered (ABSENT_MAX a table)
            index.entry(OUTPUT, _hex("fresh", i, 64))
        gc.collect()
        per = (tracemalloc.get_traced_memory()[0] - before) / n
        tracemalloc.stop()
        print(f"absent key (JobIndex._absent, one table) {per:.0f} bytes")
        db.close()


def _time_misses(fn: Any, ks: list[str]) -> float:
    """Microseconds per lookup of a key in the index (what a miss of a Tiered costs)."""
    t0 = time.perf_counter()
    for k in ks:
        fn(k)
    return (time.perf_counter() - t0) / len(ks) * 1e6


def _time_hits(t: Tiered, ks: list[str]) -> float:
    t0 = time.perf_counter()
    for k in ks:
        t.get(k)
    return (time.perf_counter() - t0) / len(ks) * 1e6


if __name__ == "__main__":
    main()
