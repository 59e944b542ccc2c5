#!/usr/bin/env python3
"""The peer's own listings of one HAMT directory of N entries (default 100,000): the gateway's
HTML and JSON listings and its TAR, in process (no network), on an embedded store in a temp dir.

For each: the time to the first piece (the request's plan, what runs before the status, and
its first piece) and to the last, and the peak of Python allocations while it runs
(tracemalloc, in a second pass: tracing slows it). Run it with PYTHONPATH at an older tree to
compare (the script uses only Gateway.plan, Target and tar_stream, unchanged since).

    PYTHONPATH=<tree> python scripts/bench_hamt_listing.py [--entries 100000] [--repeat 3]

(docs/benchmarks.md, session 50 helper d)."""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path

from aiohttp.test_utils import make_mocked_request

from peer.ipfs import EmbeddedStore, dagpb, hamt
from peer.ipfs.gateway import Gateway, Target
from peer.ipfs.tarstream import tar_stream


def build(store: EmbeddedStore, n: int, tmp: Path) -> str:
    """A folder of `n` small distinct files (as a corpus), added: a HAMT (Kubo's threshold)."""
    folder = tmp / "corpus"
    folder.mkdir()
    for i in range(n):
        (folder / f"arctic_a{i:06d}.wav").write_bytes(f"{i}\n".encode())
    root = store.add_path(folder)
    block = store.get_block(root)
    node = dagpb.decode_node(block)
    assert node.data is not None and hamt.is_shard(dagpb.decode_unixfs(node.data)), root
    return root


def listing(store: EmbeddedStore, root: str, accept: str) -> Callable[[], Iterator[bytes]]:
    def run() -> Iterator[bytes]:
        request = make_mocked_request("GET", f"/ipfs/{root}/", headers={"Accept": accept})
        plan = Gateway(store).plan(request, Target(root, ""))
        return plan.stream if plan.stream is not None else iter([plan.body or b""])
    return run


def tar(store: EmbeddedStore, root: str) -> Callable[[], Iterator[bytes]]:
    return lambda: tar_stream(store, root, "corpus")


def measure(make: Callable[[], Iterator[bytes]]) -> tuple[float, float, int]:
    """(s to the first piece, s to the last, bytes)."""
    t0 = time.perf_counter()
    stream = make()
    first = next(stream)
    t1 = time.perf_counter()
    n = len(first) + sum(len(p) for p in stream)
    return t1 - t0, time.perf_counter() - t0, n


def peak(make: Callable[[], Iterator[bytes]]) -> int:
    tracemalloc.start()
    try:
        for _ in make():
            pass
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--entries", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        store = EmbeddedStore(Path(d) / "store")
        t = time.perf_counter()
        root = build(store, a.entries, Path(d))
        print(f"built a HAMT of {a.entries} entries in {time.perf_counter() - t:.1f} s: {root}")
        cases = {"HTML listing": listing(store, root, "text/html"),
                 "JSON listing": listing(store, root, "application/json"),
                 "TAR": tar(store, root)}
        print("| listing | first piece (s) | whole (s) | bytes | peak Python allocations (MB) |")
        print("| --- | --- | --- | --- | --- |")
        for name, make in cases.items():
            runs = [measure(make) for _ in range(a.repeat)]
            first = statistics.median(r[0] for r in runs)
            whole = statistics.median(r[1] for r in runs)
            print(f"| {name} | {first:.3f} | {whole:.2f} | {runs[0][2]:,} | "
                  f"{peak(make) / 1e6:.1f} |")


if __name__ == "__main__":
    main()
