#!/usr/bin/env python3
"""One chunk's input imported from a CAR into a store: what `EmbeddedStore.import_car` costs
a non-holder (issue 12, EXTRACT_MFCC on two pinned peers: 33 one-block WAVs of ~175 KB).

Each round: a CAR of --files random one-block files of --kb KB (exported from a source store
once), `os.sync()`, a fresh store opened, then the CAR imported in 1 MiB pieces (as the
fetcher reads its spool); the import's wall time and this process's CPU time (every thread)
are printed, with medians and ranges. --pin-cpu N runs the whole on core N (taskset). Local
disk only, no network. The peer code imported is the one on PYTHONPATH (compare two trees
by running this script with each).

    .venv/bin/python scripts/bench_import.py [--dir /var/tmp] [--files 33] [--kb 175] [--rounds 15]
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

from scriptlib import machine, source_digest  # noqa: E402

import peer  # noqa: E402
from peer.ipfs import EmbeddedStore  # noqa: E402

PIECE_BYTES = 1 << 20  # the fetcher's spool reads (peer.ipfs.fetch)


def make_car(work: Path, n_files: int, kb: int) -> list[bytes]:
    """A CAR of `n_files` random files of `kb` KB each, in PIECE_BYTES pieces."""
    src = work / "src"
    src.mkdir()
    store = EmbeddedStore(work / "src-store")
    cids = []
    for i in range(n_files):
        p = src / f"f{i}.wav"
        p.write_bytes(os.urandom(kb * 1000))
        cids.append(store.add_path(p))
    car = b"".join(store.export_cars(cids))
    return [car[i:i + PIECE_BYTES] for i in range(0, len(car), PIECE_BYTES)]


def one_import(work: Path, pieces: list[bytes], tag: str) -> tuple[float, float]:
    """(wall s, CPU s) of one import into a fresh store."""
    os.sync()
    store = EmbeddedStore(work / f"dst-{tag}")
    t, c = time.perf_counter(), time.process_time()
    store.import_car(pieces)
    wall, cpu = time.perf_counter() - t, time.process_time() - c
    shutil.rmtree(work / f"dst-{tag}")
    return wall, cpu


def _summary(values: list[float]) -> str:
    ms = [v * 1e3 for v in values]
    return f"{statistics.median(ms):.1f} ms ({min(ms):.1f}-{max(ms):.1f})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", default="/var/tmp", help="where the stores go")
    ap.add_argument("--files", type=int, default=33)
    ap.add_argument("--kb", type=int, default=175)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--pin-cpu", type=int, default=None)
    a = ap.parse_args()
    if a.pin_cpu is not None:
        os.sched_setaffinity(0, {a.pin_cpu})
    code = Path(peer.__file__).resolve().parent.parent
    work = Path(tempfile.mkdtemp(prefix="bench-import-", dir=a.dir))
    try:
        pieces = make_car(work, a.files, a.kb)
        walls, cpus = [], []
        for r in range(a.rounds):
            wall, cpu = one_import(work, pieces, str(r))
            walls.append(wall)
            cpus.append(cpu)
        print(f"{time.strftime('%H:%M:%S UTC', time.gmtime())} code {code} "
              f"({source_digest(code)}), {a.files} x {a.kb} KB, {a.rounds} rounds, "
              f"load {os.getloadavg()[0]:.2f}, {machine()}: import wall {_summary(walls)}, "
              f"CPU {_summary(cpus)}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
