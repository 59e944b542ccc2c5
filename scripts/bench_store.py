#!/usr/bin/env python3
"""Embedded store throughput: add (import) and cat (read back) in MB/s.

Datasets: one 200 MB random file, and a directory of 1,000 random ~100 KB files (WAV-sized).
Each run uses a fresh store directory. Page cache: nothing is dropped; the source files were
just written, so they are in the page cache, and "cat" reads blocks the add just wrote (also
cached). Run 1 is reported as "first" (fresh store, warm source); "median" is over --runs.

With --kubo PATH_TO_IPFS the same operations run through Kubo (`ipfs add -Q --offline`,
`ipfs cat`/`ipfs get`) on a throw-away repo (IPFS_PATH in a temp dir, `ipfs init
--profile=test`, default flatfs+leveldb datastore), and the CIDs are checked to be equal.
Kubo figures include the CLI process start (~tens of ms per call).

    .venv/bin/python scripts/bench_store.py [--runs 5] [--workdir DIR] [--kubo .cache/kubo/bin/ipfs]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scriptlib import machine  # noqa: E402

from peer.ipfs import EmbeddedStore  # noqa: E402

MB = 1_000_000


def make_data(work: Path, file_mb: int, n_files: int, file_kb: int) -> tuple[Path, Path, int, int]:
    big = work / "big.bin"
    with big.open("wb") as f:
        for _ in range(file_mb):
            f.write(os.urandom(MB))
    d = work / "wavs"
    d.mkdir()
    total = 0
    for i in range(n_files):
        size = file_kb * 1000 + (i * 37) % 4096  # ~100 KB, not all equal
        (d / f"spk{i % 10}").mkdir(exist_ok=True)
        (d / f"spk{i % 10}" / f"utt{i:04d}.wav").write_bytes(os.urandom(size))
        total += size
    return big, d, file_mb * MB, total


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def embedded_run(work: Path, big: Path, d: Path) -> dict[str, float | str]:
    root = work / f"store-{time.monotonic_ns()}"
    store = EmbeddedStore(root)
    t_add_f, cid_f = timed(lambda: store.add_path(big, pin=True))
    t_cat_f, _ = timed(lambda: sum(len(b) for b in store.cat(str(cid_f))))
    t_add_d, cid_d = timed(lambda: store.add_path(d, pin=True))

    def cat_dir() -> int:
        return sum(len(b) for e in store.walk(str(cid_d)) for b in store.cat(e.cid))

    t_cat_d, _ = timed(cat_dir)
    out = work / "out"
    t_get_d, _ = timed(lambda: store.materialize(str(cid_d), out))
    shutil.rmtree(out)
    shutil.rmtree(root)
    return {"add_file": t_add_f, "cat_file": t_cat_f, "add_dir": t_add_d, "cat_dir": t_cat_d,
            "get_dir": t_get_d, "cid_file": str(cid_f), "cid_dir": str(cid_d)}


def kubo_run(ipfs: str, work: Path, big: Path, d: Path) -> dict[str, float | str]:
    repo = work / f"kubo-{time.monotonic_ns()}"
    env = {**os.environ, "IPFS_PATH": str(repo)}

    def ipfs_(*args: str, keep: bool = True) -> str:
        r = subprocess.run([ipfs, *args], env=env, check=True, text=True,
                           stdout=subprocess.PIPE if keep else subprocess.DEVNULL,
                           stderr=subprocess.PIPE)
        return r.stdout.strip() if keep else ""

    ipfs_("init", "--profile=test", "-e")
    add = ("add", "-Q", "--offline", "--cid-version=1", "--pin=true")
    t_add_f, cid_f = timed(lambda: ipfs_(*add, str(big)))
    t_cat_f, _ = timed(lambda: ipfs_("cat", "--offline", str(cid_f), keep=False))
    t_add_d, cid_d = timed(lambda: ipfs_(*add, "-r", str(d)))
    out = work / "kout"
    t_get_d, _ = timed(lambda: ipfs_("get", "--offline", "-o", str(out), str(cid_d)))
    shutil.rmtree(out)
    shutil.rmtree(repo)
    return {"add_file": t_add_f, "cat_file": t_cat_f, "add_dir": t_add_d, "get_dir": t_get_d,
            "cid_file": str(cid_f), "cid_dir": str(cid_d)}


def report(name: str, runs: list[dict[str, float | str]], sizes: dict[str, int]) -> None:
    for op in ("add_file", "cat_file", "add_dir", "cat_dir", "get_dir"):
        if op not in runs[0]:
            continue
        size = sizes[op.split("_")[1]]
        secs = [float(r[op]) for r in runs]
        med = statistics.median(secs)
        print(f"| {name} | {op.replace('_', ' ')} | {size / MB:.0f} MB | "
              f"{size / MB / secs[0]:.1f} | {size / MB / med:.1f} | {med:.3f} |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--file-mb", type=int, default=200)
    ap.add_argument("--files", type=int, default=1000)
    ap.add_argument("--file-kb", type=int, default=100)
    ap.add_argument("--workdir", type=Path, help="where data and stores go (default: a temp "
                    "dir under the repo's .cache, on the same disk as a data dir)")
    ap.add_argument("--kubo", help="path of an `ipfs` binary for a side-by-side run")
    a = ap.parse_args()
    base = a.workdir or ROOT / ".cache"
    base.mkdir(parents=True, exist_ok=True)
    print(f"machine: {machine()}")
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    with tempfile.TemporaryDirectory(prefix="bench-store-", dir=base) as tmp:
        work = Path(tmp)
        fs = subprocess.run(["df", "-T", str(work)], capture_output=True, text=True).stdout
        print("filesystem: " + " ".join(fs.splitlines()[-1].split()[:2]))
        big, d, fsize, dsize = make_data(work, a.file_mb, a.files, a.file_kb)
        sizes = {"file": fsize, "dir": dsize}
        print(f"data: one {fsize / MB:.0f} MB random file; {a.files} random files, "
              f"{dsize / MB:.0f} MB in total; {a.runs} runs, fresh store each run\n")
        print("| store | operation | size | first run MB/s | median MB/s | median s |")
        print("| --- | --- | --- | --- | --- | --- |")
        emb = [embedded_run(work, big, d) for _ in range(a.runs)]
        report("embedded", emb, sizes)
        if a.kubo:
            version = subprocess.run([a.kubo, "version"], capture_output=True,
                                     text=True).stdout.strip()
            kubo = [kubo_run(a.kubo, work, big, d) for _ in range(a.runs)]
            report(f"Kubo ({version}, flatfs)", kubo, sizes)
            same = (kubo[0]["cid_file"], kubo[0]["cid_dir"]) == (emb[0]["cid_file"],
                                                                 emb[0]["cid_dir"])
            print(f"\nCIDs identical to Kubo: {same} (file {emb[0]['cid_file']}, "
                  f"dir {emb[0]['cid_dir']})")


if __name__ == "__main__":
    main()
