#!/usr/bin/env python3
"""Where each millisecond of a warm EXTRACT_MFCC file goes (issue 12): the worker's chunk path
timed phase by phase in one process, then a warm peer's chunk timeline (and py-spy).

    .venv/bin/python scripts/profile_mfcc.py [--mfcc '[32,24,1,8000,16000]'] [--peer]
        [--spy DIR] [--json PATH]

1. worker: the corpus (scripts/make_corpus.py, 4 speakers x 100) added to an EmbeddedStore,
   then peer.jobs.runner.run on chunks of 58 items (what --slots 1 makes of 400 files) with
   a recording ctx, after a warm-up chunk (librosa's import, numba's compilation). Timed per
   item: the task function (the plain loop's work), each store call, emptying the run's
   directories, the messages to the peer, and fsyncs (files and directories, counted).
2. --peer: one warm banzai-peer (--slots 1), FETCH_FESTVOX -> EXTRACT_MFCC, run three times
   with fmin moved by 1, 2, 3 (the FETCH is cached, the MFCC is not); per run the task's
   claim-to-done per file and its chunks' start/end offsets and gaps; with --spy DIR,
   py-spy on the peer and its workers during the last run (top functions per process kind).
Threads: OMP/OPENBLAS/MKL/NUMBA = 1.
"""

from __future__ import annotations

import os

THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
               "NUMBA_NUM_THREADS")
for _v in THREAD_VARS:  # before numpy is imported
    os.environ[_v] = "1"

import argparse  # noqa: E402
import functools  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections import defaultdict  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from scriptlib import load_script  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
CHUNK = 58  # chunk_items(400 files, 1 slot, 4, 64): 7 chunks of 58 (the last 52)


class Timers:
    """Seconds and calls per name; wraps callables in place."""

    def __init__(self) -> None:
        self.s: dict[str, float] = defaultdict(float)
        self.n: dict[str, int] = defaultdict(int)

    def wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def timed(*a: Any, **k: Any) -> Any:
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                self.s[name] += time.perf_counter() - t
                self.n[name] += 1
        return timed

    def reset(self) -> None:
        self.s.clear()
        self.n.clear()


class Ctx:
    """The executor's ctx, as far as the runner uses it: progress, log, metric, send."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True)
        self.sent: list[tuple[Any, ...]] = []

    def progress(self, fraction: float) -> None:
        self.sent.append(("progress", fraction))

    def log(self, message: str) -> None:
        self.sent.append(("log", message))

    def metric(self, name: str, step: int, value: float) -> None:
        pass

    def send(self, kind: str, *args: Any) -> None:
        json.dumps(args)  # as the executor pickles it; the cost is the peer's, mostly
        self.sent.append((kind, *args))


def corpus_items(store: Any, zips: Sequence[Path], work: Path) -> tuple[str, list[list[str]]]:
    from tasks.audio_fetch import FetchLimits, extract_festvox
    wavs = work / "wavs"
    wavs.mkdir()
    for z in zips:
        extract_festvox(Path(z), wavs, FetchLimits(), str(z), lambda f: None)
    root = store.add_path(wavs)
    items = [[e.path, e.cid] for e in store.walk(root) if e.path.endswith(".wav")]
    return root, sorted(items)


def worker_phases(zips: Sequence[Path], mfcc: list[int], work: Path) -> dict[str, Any]:
    """Step 1: runner.run on chunks of CHUNK items, timed by phase."""
    from peer.ipfs import blocks
    from peer.ipfs.store import StoreConfig
    from peer.jobs import kinds, runner
    from tasks import audio  # noqa: F401  (registers EXTRACT_MFCC)
    from tasks.registry import catalog

    cfg = StoreConfig(str(work / "store"))
    store = runner._store(cfg.to_json())  # the very object runner.run uses
    root, items = corpus_items(store, zips, work)
    params = catalog()["EXTRACT_MFCC"].bind(mfcc, None, "EXTRACT_MFCC")
    tm = Timers()
    for name in ("materialize", "add_path", "add_paths", "input_path", "batch"):
        if hasattr(store, name):
            setattr(store, name, tm.wrap(f"store.{name}", getattr(store, name)))
    kinds.invoke = tm.wrap("task (invoke)", kinds.invoke)  # type: ignore[method-assign]
    # blocking on the worker's thread: verifying the input block, the batch-end wait
    for name in ("block_file",):
        if hasattr(store, name):
            setattr(store, name, tm.wrap(f"store.{name} (verify input)", getattr(store, name)))
    if hasattr(blocks, "BlockBatch"):  # a batch of adds: its temp files, its commit
        blocks.BlockBatch.put_trusted = tm.wrap(  # type: ignore[method-assign]
            "write block temp file", blocks.BlockBatch.put_trusted)
        blocks.BlockBatch.commit = tm.wrap(  # type: ignore[method-assign]
            "batch commit (syncfs, renames, syncfs)", blocks.BlockBatch.commit)
        blocks.syncfs = tm.wrap("syncfs", blocks.syncfs)
    else:
        store.blocks.sync = tm.wrap("batch sync (worker waits)", store.blocks.sync)
    from peer.ipfs import unixfs
    unixfs.Importer.path = tm.wrap("import output (read, hash, write)",  # type: ignore
                                   unixfs.Importer.path)
    runner._empty = tm.wrap("empty dirs", runner._empty)
    blocks._fsync_file = tm.wrap("fsync file (pool thread)", blocks._fsync_file)
    blocks.fsync_dir = tm.wrap("fsync dir", blocks.fsync_dir)
    orig_send = Ctx.send
    Ctx.send = tm.wrap("ctx.send", orig_send)  # type: ignore[method-assign]

    def payload(chunk: list[list[str]], fmin: int) -> dict[str, Any]:
        return {"store": cfg.to_json(), "modules": [], "call": "EXTRACT_MFCC",
                "params": {**params, "fmin": float(fmin)}, "input": root, "items": chunk,
                "fetch_allow": [], "kind": {}}

    runner.run(payload(items[:8], 0), Ctx(work / "warm"))  # librosa, numba: paid once
    tm.reset()
    walls = []
    n = 0
    for i in range(0, len(items), CHUNK):
        chunk = items[i:i + CHUNK]
        t = time.perf_counter()
        out = runner.run(payload(chunk, 1), Ctx(work / f"run{i}"))
        walls.append(time.perf_counter() - t)
        n += len(chunk)
        assert len(out["items"]) == len(chunk)
    total = sum(walls)
    ms = {k: round(v * 1e3 / n, 3) for k, v in sorted(tm.s.items(), key=lambda kv: -kv[1])}
    calls = {k: round(v / n, 2) for k, v in tm.n.items()}
    task = tm.s["task (invoke)"]
    return {"files": n, "chunks": len(walls), "ms_per_file": round(total * 1e3 / n, 3),
            "task_ms_per_file": round(task * 1e3 / n, 3),
            "engine_ms_per_file": round((total - task) * 1e3 / n, 3),
            "phases_ms_per_file": ms, "calls_per_file": calls}


# -- step 2: a warm peer -------------------------------------------------------------------
def chunk_timeline(view: dict[str, Any], name: str) -> dict[str, Any]:
    t = next(x for x in view["tasks"] if x["name"] == name)
    t0 = t["started_ms"]
    rows = [[c["peer"][:6] if c["peer"] else "?", c["items"],
             round((c["started_ms"] or t0) - t0), round((c["finished_ms"] or t0) - t0)]
            for c in t["chunks"]]
    ends = sorted(r[3] for r in rows)
    return {"duration_s": t["duration_s"], "chunks": rows,
            "done_after_last_chunk_ms": round(t["finished_ms"] - t0 - (ends[-1] if ends else 0))}


def peer_runs(urls: Sequence[str], files: int, mfcc: list[int], work: Path,
              spy: Path | None) -> list[dict[str, Any]]:
    bp = load_script("bench_pipeline")
    out = []
    with bp.peer(work / "peer", 1) as p:
        bp.run_job(p, [{"call": "FETCH_FESTVOX", "args": list(urls)},
                       {"call": "EXTRACT_MFCC", "args": mfcc}])  # warm-up, cached FETCH
        for k in (1, 2, 3):  # fmin moved by k: fresh cache keys (the warm-up's differ)
            fmin = mfcc[2] + k
            args = [mfcc[0], mfcc[1], fmin, *mfcc[3:]]
            sp = None
            if spy is not None and k == 3:
                spy.mkdir(parents=True, exist_ok=True)
                sp = subprocess.Popen(
                    [str(BIN / "py-spy"), "record", "--pid", str(p.proc.pid), "--subprocesses",
                     "--rate", "200", "--format", "raw", "--output", str(spy / "mfcc.txt"),
                     "--nonblocking"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                time.sleep(2.0)
            job = bp.run_job(p, [{"call": "FETCH_FESTVOX", "args": list(urls)},
                                 {"call": "EXTRACT_MFCC", "args": args}])
            if sp is not None:
                sp.send_signal(signal.SIGINT)
                sp.wait(60)
            tl = chunk_timeline(job["view"], "extract_mfcc")
            tl["ms_per_file"] = round(tl["duration_s"] * 1e3 / files, 2)
            tl["load1"] = round(os.getloadavg()[0], 2)
            print(f"peer run fmin={fmin}: {json.dumps(tl)}", file=sys.stderr, flush=True)
            out.append(tl)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mfcc", default="[32, 24, 1, 8000, 16000]")
    ap.add_argument("--speakers", type=int, default=4)
    ap.add_argument("--utterances", type=int, default=100)
    ap.add_argument("--corpus", type=Path, default=ROOT / ".cache" / "bench-corpus")
    ap.add_argument("--peer", action="store_true", help="also time a warm peer")
    ap.add_argument("--spy", type=Path, help="py-spy output directory (with --peer)")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args(argv)
    mfcc = json.loads(a.mfcc)
    mc = load_script("make_corpus")
    zips = mc.build_corpus(a.corpus, list(mc.VOICES)[: a.speakers], a.utterances)
    res: dict[str, Any] = {"mfcc": mfcc, "load1": [round(os.getloadavg()[0], 2)]}
    with tempfile.TemporaryDirectory(prefix="profile-mfcc-") as tmp:
        res["worker"] = worker_phases(zips, mfcc, Path(tmp))
        print(json.dumps(res["worker"], indent=1), file=sys.stderr, flush=True)
    if a.peer:
        bm = load_script("bench_mfcc")
        base = Path(tempfile.mkdtemp(prefix="profile-mfcc-peer-"))
        try:
            with load_script("serve_dir").serve(a.corpus) as url:
                res["peer"] = peer_runs([url + z.name for z in zips], bm.count_wavs(zips),
                                        mfcc, base, a.spy)
        finally:
            shutil.rmtree(base, ignore_errors=True)
        if a.spy:
            res["spy"] = load_script("bench_mesh").hot_spots(a.spy / "mfcc.txt", top=25)
    res["load1"].append(round(os.getloadavg()[0], 2))
    text = json.dumps(res, indent=1)
    print(text)
    if a.json:
        a.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
