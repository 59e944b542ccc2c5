"""Our gateway side by side with Kubo 0.39's, in one run (issue 14's measure).

A lone banzai-peer and a loopback-only Kubo daemon (tests/integration/kubo.py: no bootstrap, no
routing) are given the same data by the same client (Kubo's CLI `ipfs add`, pointed at each
one's RPC API, so the CIDs must be equal): a 200 MB file of random bytes and a directory of
10,000 small files (HAMT-sharded on both). Each request is made `--rounds` times, alternating
the two gateways, and the median wall time of reading the whole response is kept:

  file      GET /ipfs/FILE                       (200 MB)
  listing   GET /ipfs/DIR/, Accept: text/html    (the 10,000-entry HAMT listing)
  car       GET /ipfs/DIR?format=car             (the directory as a CAR)

The ratio is Kubo's time over ours (>= 1: ours is as fast or faster). Prints a Markdown table.

  .venv/bin/python scripts/bench_gateway.py [--file-mb 200] [--entries 10000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]

import scriptlib  # noqa: E402

from tests.integration.kubo import kubo_binary, restart_kubo, start_kubo  # noqa: E402


def read_all(url: str, headers: dict[str, str]) -> tuple[float, int]:
    """(seconds, bytes) to read the whole response of GET `url`."""
    req = urllib.request.Request(url, headers=headers)
    start = time.perf_counter()
    n = 0
    with urllib.request.urlopen(req, timeout=600) as r:
        while chunk := r.read(1 << 20):
            n += len(chunk)
    return time.perf_counter() - start, n


def add(binary: str, api: str, path: Path, token: str | None) -> str:
    """`ipfs add -r -Q --cid-version=1 PATH` against the RPC API at `api` (a URL)."""
    host, port = api.removeprefix("http://").rsplit(":", 1)
    args = [binary, "--api", f"/ip4/{host}/tcp/{port}"]
    if token:
        args += ["--api-auth", f"bearer:{token}"]
    env = {**os.environ, "IPFS_PATH": str(Path(tempfile.gettempdir()) / "bench-gw-client")}
    done = subprocess.run([*args, "add", "-r", "-Q", "--cid-version=1", str(path)], env=env,
                          capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        raise RuntimeError(f"ipfs add to {api}: {done.stderr}")
    return done.stdout.strip()


def make_data(work: Path, file_mb: int, entries: int) -> tuple[Path, Path]:
    big = work / "big.bin"
    rng = random.Random(14)
    with big.open("wb") as f:
        for _ in range(file_mb):
            f.write(rng.randbytes(1_000_000))
    d = work / "hamt"
    d.mkdir()
    for i in range(entries):
        (d / f"{i:05d}.txt").write_text(f"{i}\n")
    return big, d


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--file-mb", type=int, default=200)
    ap.add_argument("--entries", type=int, default=10_000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--hash-on-read", action="store_true",
                    help="Kubo verifies every block read (Datastore.HashOnRead), as ours does")
    a = ap.parse_args()
    binary = kubo_binary()
    with tempfile.TemporaryDirectory(prefix="bench-gw-") as tmp:
        work = Path(tmp)
        big, d = make_data(work, a.file_mb, a.entries)
        kubo = start_kubo(work / "kubo")
        if a.hash_on_read:
            cfg_path = kubo.repo / "config"
            cfg = json.loads(cfg_path.read_text())
            cfg.setdefault("Datastore", {})["HashOnRead"] = True
            cfg_path.write_text(json.dumps(cfg, indent=2))
            kubo = restart_kubo(kubo)
        try:
            with scriptlib.lone_peer(work / "peer", work / "peer.log", 1, mesh_prefix="bench-gw",
                                     log_level="WARNING",
                                     extra=["--max-upload-bytes", str(4 << 30)]) as (_, url):
                token = scriptlib.peer_token(work / "peer")
                cids = {}
                for name, path in (("file", big), ("dir", d)):
                    ours, theirs = add(binary, url, path, token), add(binary, kubo.api, path,
                                                                        None)
                    assert ours == theirs, (name, ours, theirs)
                    cids[name] = ours
                cases = {
                    "file": (f"/ipfs/{cids['file']}", {}),
                    "listing": (f"/ipfs/{cids['dir']}/", {"Accept": "text/html"}),
                    "car": (f"/ipfs/{cids['dir']}?format=car", {}),
                }
                rows = []
                for case, (target, headers) in cases.items():
                    times: dict[str, list[float]] = {"ours": [], "kubo": []}
                    sizes: dict[str, int] = {}
                    for _ in range(a.rounds):
                        for who, base in (("ours", url), ("kubo", kubo.gateway)):
                            t, sizes[who] = read_all(base + target, headers)
                            times[who].append(t)
                    ours_s = statistics.median(times["ours"])
                    kubo_s = statistics.median(times["kubo"])
                    rows.append(f"| {case} | {sizes['ours']:,} / {sizes['kubo']:,} | "
                                f"{ours_s:.3f} | {kubo_s:.3f} | {kubo_s / ours_s:.2f} |")
        finally:
            kubo.stop()
    hor = " (Datastore.HashOnRead: true)" if a.hash_on_read else ""
    print(f"Machine: {scriptlib.machine()}. Kubo 0.39.0 gateway{hor} vs banzai's, loopback, "
          f"median of {a.rounds} (s).")
    print(f"File {a.file_mb} MB; directory of {a.entries} files ({cids['dir']}).\n")
    print("| request | bytes ours / Kubo | ours s | Kubo s | Kubo/ours (>= 1: ours as fast) |")
    print("| --- | ---: | ---: | ---: | ---: |")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
