#!/usr/bin/env python3
"""What folding another peer's inline output costs a peer (peer/ipfs/inline.py, issue 12):
`InlineBlocks.on_event` per CHUNK_DONE carrying a small output (a directory holding one
~40-byte file, as ECHO's) and its run record, on a peer that is not one of its replicas (kept
in memory) and on one that is (checked, then written to a keeper that does nothing); and
`restage` per output (the fetcher taking one kept in memory), all in this process.

    PYTHONPATH=<tree> .venv/bin/python scripts/bench_inline_keep.py [-n 2000] [--repeats 15]

The code measured is whatever `peer` imports (PYTHONPATH): an A/B runs it on each tree.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scriptlib import machine

from peer.cids import Cid
from peer.ipfs import inline
from peer.log import ChunkDone, Event, EventType


class NullKeeper:
    """A Keeper that keeps nothing: only the peer's own work is measured."""

    def stage_inline(self, blocks: Mapping[Cid, bytes]) -> None:
        pass

    def keep_inline(self, blocks: Mapping[Cid, bytes], roots: Iterable[str]) -> None:
        pass

    def get_block(self, cid: str) -> bytes:
        raise KeyError(cid)


def events(n: int) -> list[Event]:
    """n CHUNK_DONEs of another peer, each with its own small output and run record inline."""
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(n):
            d = Path(tmp, f"o{i}")
            d.mkdir()
            (d / "echo.txt").write_bytes(f"inline {i:08d} {'x' * 24}\n".encode())
            small = inline.import_small(d, 1024)
            assert small is not None
            cid, blocks = small
            rec, more = inline.import_bytes(f'{{"log": ["{i}"], "metrics": []}}'.encode())
            p = {"job": "j", "task": f"t{i}", "split": ["a", 1], "chunk": 0, "attempt": 1,
                 "output": cid, "log": rec, "s": 0.01,
                 "inline": inline.encode({**blocks, **more})}
            out.append(Event("other000", i + 1, i + 1, EventType.CHUNK_DONE, p))
    return out


def keep_us(evs: list[Event], replica: bool, repeats: int) -> list[float]:
    """on_event, microseconds per event, each repeat on a new InlineBlocks."""
    runs = []
    for _ in range(repeats):
        ib = inline.InlineBlocks("me", NullKeeper(), 1024, replica=lambda c, p, j: replica)
        t0 = time.perf_counter()
        for ev in evs:
            ib.on_event(ev)
        runs.append((time.perf_counter() - t0) / len(evs) * 1e6)
        assert ib.kept == len(evs), ib.health()
    return runs


def restage_us(evs: list[Event], repeats: int) -> list[float]:
    """restage of every output kept in memory, microseconds per output."""
    runs = []
    for _ in range(repeats):
        ib = inline.InlineBlocks("me", NullKeeper(), 1024, replica=lambda c, p, j: False,
                                 staged_max_bytes=1 << 30)
        for ev in evs:
            ib.on_event(ev)
        outputs = [ev.body.output for ev in evs if isinstance(ev.body, ChunkDone)]
        t0 = time.perf_counter()
        written = sum(ib.restage(c) for c in outputs if c)
        runs.append((time.perf_counter() - t0) / len(evs) * 1e6)
        assert written == len(evs), ib.health()
    return runs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=2000, help="events per repeat")
    ap.add_argument("--repeats", type=int, default=15)
    a = ap.parse_args(argv)
    evs = events(a.n)
    res: dict[str, Any] = {"machine": machine(), "code": inline.__file__, "n": a.n}
    for name, runs in (("keep_non_replica_us", keep_us(evs, False, a.repeats)),
                       ("keep_replica_us", keep_us(evs, True, a.repeats)),
                       ("restage_us", restage_us(evs, a.repeats))):
        res[name] = {"median": round(statistics.median(runs), 2), "min": round(min(runs), 2)}
    print(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
