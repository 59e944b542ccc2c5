#!/usr/bin/env python3
"""What deleting output cache entries whose CID no peer provides (`Compactor._reap`) frees and
costs: a job index on a temp file holding `--entries` output cache entries (~300 bytes of
index each: a 64-hex task key, a CIDv1, the winning event's order), one provider row each;
then every output of a fraction `--dead` is UNPROVIDEd by its origin (one event per 10,000
CIDs, as the janitor emits them) and compaction passes run until a full scan. Prints the
index's size (cache_index and provider_index pages, dbstat) before and after, and the time of
one pass (the loop is held that long, every `interval_s`).

    .venv/bin/python scripts/bench_reap.py [--entries 100000] [--dead 0.5] [--reap-rows 1024]
"""

from __future__ import annotations

import argparse
import hashlib
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from peer.cids import sha256_cid
from peer.log import Event, EventType, MeshState
from peer.log.compact import CompactConfig, Compactor
from peer.log.jobindex import OUTPUT, CacheEntry, JobIndex

ORIGIN = "bench000000000000000"


class _Log:
    def delete(self, ids: Iterable[tuple[str, int]], floors: Mapping[str, int] | None = None,
               also: Any = None) -> int:
        return 0

    def set_floor(self, origin: str, seq: int) -> None:
        pass

    def prune_batches(self) -> None:
        pass


def _sizes(db: sqlite3.Connection) -> dict[str, tuple[int, int, int]]:
    """Table -> (rows, bytes of pages, bytes of payload)."""
    out = {}
    for name in ("cache_index", "provider_index"):
        rows = db.execute(f"SELECT count(*) FROM {name}").fetchone()[0]
        pages, payload = db.execute("SELECT sum(pgsize), sum(payload) FROM dbstat WHERE "
                                    "name = ?", (name,)).fetchone()
        out[name] = (int(rows), int(pages or 0), int(payload or 0))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--entries", type=int, default=100_000)
    ap.add_argument("--dead", type=float, default=0.5)
    ap.add_argument("--reap-rows", type=int, default=1024)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db = sqlite3.connect(str(Path(tmp) / "log.sqlite"), isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        index = JobIndex(db)
        cids = [str(sha256_cid(f"out{i}".encode(), "raw", 1)) for i in range(a.entries)]
        keys = [hashlib.sha256(f"key{i}".encode()).hexdigest() for i in range(a.entries)]
        for lo in range(0, a.entries, 10_000):
            part = range(lo, min(lo + 10_000, a.entries))
            index.put((), [CacheEntry(OUTPUT, keys[i], cids[i], (1, ORIGIN, i + 1))
                           for i in part], [(cids[i], ORIGIN) for i in part])
        state = MeshState()
        state.tier(**index.lookups())
        c = Compactor(CompactConfig(reap_rows=a.reap_rows), state, _Log(), index,
                      lambda job: None, lambda: [dict(state.heads)], lambda: 1 << 60)
        before = _sizes(db)
        dead = cids[:int(a.entries * a.dead)]
        for n, lo in enumerate(range(0, len(dead), 10_000)):
            state.apply(Event(ORIGIN, n + 1, (1 << 40) + n, EventType.UNPROVIDE,
                              {"cids": dead[lo:lo + 10_000]}))
        c.cfg = CompactConfig(reap_rows=a.reap_rows, provider_sets_max=1 << 30)
        times: list[float] = []
        passes = -(-a.entries // a.reap_rows) + 1
        for _ in range(passes):
            t0 = time.perf_counter()
            c._reap(c.total)  # the pass's step that deletes (the others have nothing to do)
            times.append(time.perf_counter() - t0)
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        after = _sizes(db)
        left = db.execute("SELECT count(*) FROM cache_index").fetchone()[0]
        print(f"entries {a.entries}, dead {len(dead)}, reap_rows {a.reap_rows}: "
              f"{passes} passes deleted {c.total.reaped}, {left} left")
        for name in ("cache_index", "provider_index"):
            (r0, p0, b0), (r1, p1, b1) = before[name], after[name]
            print(f"  {name}: rows {r0} -> {r1}, payload {b0 / 1e6:.1f} -> {b1 / 1e6:.1f} MB, "
                  f"pages {p0 / 1e6:.1f} -> {p1 / 1e6:.1f} MB (room in pages is reused; the "
                  "file does not shrink)")
        ms = sorted(t * 1000 for t in times)
        print(f"  one pass: median {statistics.median(ms):.1f} ms, max {ms[-1]:.1f} ms")
        db.close()


if __name__ == "__main__":
    main()
