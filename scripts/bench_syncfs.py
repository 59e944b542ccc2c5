#!/usr/bin/env python3
"""A batch commit of the embedded store beside a neighbour's unwritten data: one syncfs
(it writes back every dirty page of the file system, the neighbour's too) against fsyncs of
the batch's own files, and what `BlockBatch.commit` chooses (`syncfs_pays`); the same batch
when its blocks are there already, written unsynced as inline outputs (written again) or
known durable (no sync); and the store's open (one syncfs) beside that data.

Each round: `os.sync()`, a fresh store is opened, then the neighbour writes --neighbour-mb
MB to a file on the same file system without syncing it, then one batch of --files small
files (4 KB) is added and committed; the commit's wall time is printed per mode. Then the
open alone: `os.sync()`, the neighbour's write, a fresh store opened. The neighbour file is
removed at the end. Local disk only, no network.

    .venv/bin/python scripts/bench_syncfs.py [--dir /var/tmp] [--neighbour-mb 0,200] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scriptlib import machine  # noqa: E402

import peer.ipfs.blocks as blocks  # noqa: E402
from peer.ipfs import EmbeddedStore, inline  # noqa: E402

MODES = ("syncfs", "fsync", "chosen", "inline found", "durable found")


def one_commit(work: Path, n_files: int, mode: str, neighbour_mb: int, tag: str) -> float:
    """Seconds of one batch's add and commit, after the neighbour's unsynced write."""
    os.sync()
    src = work / f"src-{tag}"
    src.mkdir()
    files = []
    for i in range(n_files):
        p = src / f"f{i}"
        p.write_bytes(os.urandom(4096))
        files.append(p)
    store = EmbeddedStore(work / f"store-{tag}")  # before the neighbour: its open syncs
    if mode == "inline found":
        for f in files:
            cid, made = inline.import_bytes(f.read_bytes())
            store.keep_inline(inline.checked(made, cid), [])
    elif mode == "durable found":
        with store.adding() as add:
            for f in files:
                add(f)
    neighbour(work, neighbour_mb)
    big = work / "neighbour.bin"
    saved = blocks.dirty_bytes
    if mode == "syncfs":
        blocks.dirty_bytes = lambda: 0  # type: ignore[assignment]
    elif mode == "fsync":
        blocks.dirty_bytes = lambda: 1 << 62  # type: ignore[assignment]
    try:
        t = time.perf_counter()
        with store.adding() as add:
            for f in files:
                add(f)
        return time.perf_counter() - t
    finally:
        blocks.dirty_bytes = saved  # type: ignore[assignment]
        big.unlink(missing_ok=True)


def neighbour(work: Path, mb: int) -> None:
    """The neighbour's write of `mb` MB, not synced."""
    if mb:
        chunk = os.urandom(1 << 20)
        with open(work / "neighbour.bin", "wb") as f:
            for _ in range(mb):
                f.write(chunk)


def one_open(work: Path, neighbour_mb: int, tag: str) -> float:
    """Seconds of a fresh store's open (its sync of the file system) after the neighbour's
    unsynced write."""
    os.sync()
    neighbour(work, neighbour_mb)
    try:
        t = time.perf_counter()
        EmbeddedStore(work / f"open-{tag}")
        return time.perf_counter() - t
    finally:
        (work / "neighbour.bin").unlink(missing_ok=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", default="/var/tmp", help="where the stores and neighbour go")
    ap.add_argument("--neighbour-mb", default="0,200")
    ap.add_argument("--files", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    if blocks._syncfs_fn is None:
        sys.exit("this OS has no syncfs: nothing to compare")
    work = Path(tempfile.mkdtemp(prefix="bench-syncfs-", dir=a.dir))
    print(f"Command: `python scripts/bench_syncfs.py --dir {a.dir} --neighbour-mb "
          f"{a.neighbour_mb} --files {a.files} --rounds {a.rounds}` "
          f"({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}). Machine: {machine()}.")
    print(f"Threshold: SYNCFS_DIRTY_MAX_BYTES = {blocks.SYNCFS_DIRTY_MAX_BYTES >> 20} MB.\n")
    print("| neighbour's unsynced MB | " + " | ".join(f"{m} ms (median; all)" for m in MODES)
          + " | store's open ms (median; all) |")
    print("| --- | " + " | ".join("---" for _ in MODES) + " | --- |")
    try:
        for mb in (int(x) for x in a.neighbour_mb.split(",")):
            got: dict[str, list[float]] = {m: [] for m in (*MODES, "open")}
            for r in range(a.rounds):
                for m in MODES:
                    tag = f"{mb}-{r}-{m.replace(' ', '-')}"
                    got[m].append(one_commit(work, a.files, m, mb, tag) * 1e3)
                got["open"].append(one_open(work, mb, f"{mb}-{r}") * 1e3)
            cells = [f"{statistics.median(v):.1f} ({', '.join(f'{x:.1f}' for x in v)})"
                     for v in got.values()]
            print(f"| {mb} | " + " | ".join(cells) + " |", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
