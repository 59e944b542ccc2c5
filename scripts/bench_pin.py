#!/usr/bin/env python3
"""The embedded store's pin_many of DAGs whose blocks are all durable files: the walk a
replicator's pin does (since session 36 it also makes the DAG durable, `EmbeddedStore.
_durable`: one more stat per linking block, nothing written here). In process, local disk.

--dags directories of --files one-block files (1 KiB each) and one 1 MiB file (four raw
leaves and a root) are added, pinned once (untimed), then pinned again --rounds times (the
walk alone: the pins exist, so no fsync) and unpinned and pinned --rounds times (the walk
and the pin directory's fsync); the median of each is printed in ms. Run it with
PYTHONPATH set to a base checkout and to the head, alternately, to compare them.

    .venv/bin/python scripts/bench_pin.py [--dir /var/tmp] [--dags 200] [--files 20] [--rounds 7]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from peer.ipfs import EmbeddedStore


def build(root: Path, n_dags: int, n_files: int) -> tuple[EmbeddedStore, list[str]]:
    store = EmbeddedStore(root / "store")
    cids = []
    for d in range(n_dags):
        src = root / "src" / f"d{d}"
        src.mkdir(parents=True)
        for i in range(n_files):
            (src / f"f{i}").write_bytes(f"{d}/{i}\n".encode() * 200)
        (src / "big").write_bytes(bytes([d % 256]) * (1 << 20))
        cids.append(store.add_path(src))
    shutil.rmtree(root / "src")
    return store, cids


def timed(fn: object) -> float:
    t = time.perf_counter()
    fn()  # type: ignore[operator]
    return (time.perf_counter() - t) * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", default="/var/tmp")
    ap.add_argument("--dags", type=int, default=200)
    ap.add_argument("--files", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=7)
    a = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-pin-", dir=a.dir))
    try:
        store, cids = build(root, a.dags, a.files)
        store.pin_many(cids)
        again = [timed(lambda: store.pin_many(cids)) for _ in range(a.rounds)]
        fresh = []
        for _ in range(a.rounds):
            for c in cids:
                store.unpin(c)
            fresh.append(timed(lambda: store.pin_many(cids)))
        print(f"{a.dags} DAGs x ({a.files} files + 1 MiB file): pin_many, pinned already "
              f"{statistics.median(again):.1f} ms, after an unpin "
              f"{statistics.median(fresh):.1f} ms (medians of {a.rounds})")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
