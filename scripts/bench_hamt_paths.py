#!/usr/bin/env python3
"""The peak of Python allocations (tracemalloc) on each path that reads a whole directory, for
one HAMT directory of N entries (default 100,000) on an embedded store: planning's listing
(`file_cids`, what `Planner.files` and so a per-item task's split read), `walk`, `ls`,
`materialize` (a task's inputs written to its scratch dir), the gateway's JSON listing whole and
one page of it (`?limit=`; skipped on a tree without pages), and a per-item task's whole split
of it (its listing, keys, chunks and event). In process, no network.

The store is built once under --keep (reused by later runs, so that a run of an older tree reads
the same blocks): run it with PYTHONPATH at each tree.

    PYTHONPATH=<tree> python scripts/bench_hamt_paths.py [--entries 100000] [--keep DIR]

(docs/benchmarks.md, session 51 helper e)."""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

from aiohttp.test_utils import make_mocked_request

from peer.errors import BanzaiError
from peer.ipfs import EmbeddedStore
from peer.ipfs.gateway import Gateway, Target


def build(store: EmbeddedStore, n: int, tmp: Path) -> str:
    """A folder of `n` small distinct files (as a corpus), added: a HAMT (Kubo's threshold)."""
    folder = tmp / "corpus"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for i in range(n):
        (folder / f"arctic_a{i:06d}.wav").write_bytes(f"{i}\n".encode())
    root = store.add_path(folder)
    shutil.rmtree(folder)
    return root


def json_listing(store: EmbeddedStore, root: str, query: str) -> Callable[[], object]:
    def run() -> object:
        request = make_mocked_request("GET", f"/ipfs/{root}/{query}",
                                      headers={"Accept": "application/json"})
        plan = Gateway(store).plan(request, Target(root, ""))
        return sum(len(p) for p in (plan.stream or [plan.body or b""]))
    return run


def split(store: EmbeddedStore, root: str) -> Callable[[], object]:
    """A per-item task's split of the directory (what the splitting peer's planner makes: its
    listing, the items' cache keys, the chunks, the event, or the listing stored)."""
    from peer.jobs.planner import Planner
    from peer.jobs.spec import TaskSpec
    from peer.log import MeshState
    from tasks.registry import TaskDef

    class Data:
        def mark(self, cid: str) -> None:
            pass

    tdef = TaskDef("BENCH_ITEMS", "1", lambda *a, **k: None, (), per_item=True)
    spec = TaskSpec("items", "BENCH_ITEMS", {}, ("corpus",))

    def run() -> object:
        planner = Planner(MeshState(), store, Data(), 1, 64)  # type: ignore[arg-type]
        payload = planner.split("job", "items", tdef, spec, root, 4)
        return planner.framed(payload, 8 << 20)
    return run


def peak(run: Callable[[], object]) -> tuple[int, float, str]:
    """(peak bytes, seconds, what went wrong or "") of one run, traced."""
    tracemalloc.start()
    t = time.perf_counter()
    err = ""
    try:
        run()
    except BanzaiError as e:
        err = f"{type(e).__name__}: {e}"
    finally:
        took = time.perf_counter() - t
        top = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return top, took, err


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--entries", type=int, default=100_000)
    ap.add_argument("--keep", type=Path, default=None,
                    help="a directory to keep the store in (built once, reused)")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        keep = a.keep or Path(d)
        keep.mkdir(parents=True, exist_ok=True)
        store = EmbeddedStore(keep / "store")
        marker = keep / f"root-{a.entries}"
        if marker.exists():
            root = marker.read_text().strip()
        else:
            t = time.perf_counter()
            root = build(store, a.entries, keep)
            marker.write_text(root)
            print(f"built a HAMT of {a.entries} entries in {time.perf_counter() - t:.1f} s")
        print(f"root {root}")
        out = Path(d) / "materialized"
        cases: dict[str, Callable[[], object]] = {
            "file_cids (planning's listing)": lambda: store.file_cids(root),
            "walk": lambda: sum(1 for _ in store.walk(root)),
            "ls": lambda: store.ls(root),
            "materialize": lambda: store.materialize(root, out),
            "gateway JSON listing, whole": json_listing(store, root, ""),
            "a per-item task's split (Planner.split, framed)": split(store, root),
        }
        if hasattr(store, "ls_page"):  # (and file_cids' bound: both since session 51)
            cases["file_cids past a bound of 10,000 entries"] = (
                lambda: store.file_cids(root, 10_000))
            cases["gateway JSON listing, ?limit=1000"] = json_listing(store, root, "?limit=1000")
            cases["ls_page(limit=1000)"] = lambda: store.ls_page(root, None, 1000)
        print("| path | peak Python allocations (MB) | s (traced) | outcome |")
        print("| --- | --- | --- | --- |")
        for name, run in cases.items():
            shutil.rmtree(out, ignore_errors=True)
            top, took, err = peak(run)
            print(f"| {name} | {top / 1e6:.1f} | {took:.1f} | {err or 'ok'} |", flush=True)


if __name__ == "__main__":
    main()
