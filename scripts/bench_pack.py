#!/usr/bin/env python3
"""The inline pack's costs at a size a lab reaches (peer/ipfs/pack.py): keeping rows (one
transaction per writer pass), the start's check (`quick_check` of the whole file), the
storage cycle's reads of the pins (`pins()`, `output_pins()`) and the DAG size of each pin
(`dag_size`: read only under a store budget) and a gc pass, on a store in a temp dir.

    .venv/bin/python scripts/bench_pack.py [--pins 100000] [--pass-rows 50] [--block-bytes 900]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scriptlib import machine

from peer.cids import RAW, Cid, sha256_cid
from peer.ipfs import EmbeddedStore


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pins", type=int, default=100_000, help="outputs kept and pinned")
    ap.add_argument("--pass-rows", type=int, default=50, help="outputs per writer pass")
    ap.add_argument("--block-bytes", type=int, default=900)
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-pack-") as tmp:
        store = EmbeddedStore(Path(tmp) / "store")
        passes: list[tuple[dict[Cid, bytes], list[str]]] = []
        for start in range(0, a.pins, a.pass_rows):  # made first: the keeps alone are timed
            blocks: dict[Cid, bytes] = {}
            for i in range(start, min(start + a.pass_rows, a.pins)):
                data = i.to_bytes(8, "big") + os.urandom(a.block_bytes - 8)
                blocks[sha256_cid(data, RAW, 1)] = data
            passes.append((blocks, [str(c) for c in blocks]))
        t0 = time.perf_counter()
        for blocks, roots in passes:
            store.keep_inline(blocks, roots)
        keep_s = time.perf_counter() - t0
        del passes
        store.close()
        size_mb = store.blocks.pack.file_bytes() / 1e6
        t0 = time.perf_counter()
        store.inline_lost()  # the start's check, under the store's exclusive lock
        check_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        n = len(store.pins())
        pins_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        store.output_pins()
        out_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        for cid in store.pins():
            store.dag_size(cid)
        sizes_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        store.gc()
        gc_s = time.perf_counter() - t0
    print(f"Command: `scripts/bench_pack.py --pins {a.pins} --pass-rows {a.pass_rows} "
          f"--block-bytes {a.block_bytes}`. Machine: {machine()}.")
    print(f"| pins | pack MB | keep, us per output ({a.pass_rows} a pass) | start's check s "
          "| pins() s | output_pins() s | DAG sizes s | gc s |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    print(f"| {n} | {size_mb:.1f} | {keep_s / a.pins * 1e6:.1f} | {check_s:.2f} | {pins_s:.2f} "
          f"| {out_s:.2f} | {sizes_s:.2f} | {gc_s:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
