#!/usr/bin/env python3
"""What a big `/api/v0/dag/put` costs the other requests of a peer: two banzai-peer processes,
one of a base commit and one of this tree, one after the other; each gets the puts below
while a client polls `GET /api/health` every 50 ms. Per put: its status, its time, and the
longest a health request waited (the event loop held by the put shows there).

    flock /work/wt/bench.lock .venv/bin/python scripts/bench_dag_put.py [--base c499be7]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import re
import signal
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import aiohttp
from scriptlib import machine, mesh_secret_file, peer_token

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
URL = re.compile(r"^web UI: (http://127\.0\.0\.1:\d+)/?$", re.M)
MIB = 1 << 20


def inputs() -> list[tuple[str, str, bytes]]:
    """(label, query, node) of each put."""
    zeros_json = b"[" + b",".join([b"0"] * (2 * MIB - 1)) + b"]"  # 4 MiB
    zeros_cbor = b"\x9a" + struct.pack(">I", 4 * MIB - 10) + b"\x00" * (4 * MIB - 10)
    refused = b"[" + b",".join([b"0"] * (8 * MIB - 1)) + b"]"  # 16 MiB
    return [  # (a request over peer.ipfs.dagput.IN_PROCESS_BYTES is made in a process)
        ("dag-json 200 KiB [0,...]", "", b"[" + b",".join([b"0"] * (100 << 10)) + b"]"),
        ("dag-json 600 KiB [0,...]", "", b"[" + b",".join([b"0"] * (300 << 10)) + b"]"),
        ("dag-json 4 MiB [0,...], allow-big-block", "?allow-big-block=true", zeros_json),
        ("dag-cbor 4 MiB array of 0, allow-big-block",
         "?input-codec=dag-cbor&allow-big-block=true", zeros_cbor),
        ("dag-json 16 MiB [0,...] (refused)", "", refused),
    ]


@contextmanager
def peer(tree: Path, tmp: Path, name: str) -> Iterator[tuple[str, str]]:
    """A lone peer running the code of `tree`: its URL and token."""
    log = tmp / f"{name}.log"
    args = [str(BIN / "banzai-peer"), "--data-dir", str(tmp / name), "--http", "127.0.0.1:0",
            "--no-mdns", "--slots", "1", "--log-level", "WARNING", "--mesh-name", name,
            "--secret-file", str(mesh_secret_file(tmp / f"{name}-secret"))]
    with log.open("wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, cwd=tree,
                                env={**os.environ, "PYTHONPATH": str(tree),
                                     "BANZAI_WARM_WORKERS": "0"})
    try:
        deadline = time.monotonic() + 120
        while not (m := URL.search(log.read_text())):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not start:\n{log.read_text()}")
            time.sleep(0.05)
        yield m.group(1), peer_token(tmp / name)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


async def one(s: aiohttp.ClientSession, base: str, query: str,
              node: bytes) -> tuple[int, float, float]:
    """(status, seconds of the put, longest health wait in seconds)."""
    waits: list[float] = []
    done = asyncio.Event()

    async def poll() -> None:
        while not done.is_set():
            t0 = time.monotonic()
            async with s.get(base + "/api/health") as r:
                await r.read()
            waits.append(time.monotonic() - t0)
            await asyncio.sleep(0.05)

    poller = asyncio.create_task(poll())
    await asyncio.sleep(0.3)
    form = aiohttp.FormData()
    form.add_field("file", io.BytesIO(node), filename="node")
    t0 = time.monotonic()
    async with s.post(f"{base}/api/v0/dag/put{query}", data=form) as r:
        await r.read()
        status = r.status
    took = time.monotonic() - t0
    await asyncio.sleep(0.3)
    done.set()
    await poller
    return status, took, max(waits)


async def run(base: str, token: str) -> list[tuple[str, int, float, float]]:
    out = []
    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"},
                                     timeout=timeout) as s:
        for label, query, node in inputs():
            out.append((label, *await one(s, base, query, node)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", default="c499be7", help="the commit before the fix")
    a = ap.parse_args()
    print(machine())
    with tempfile.TemporaryDirectory(prefix="bench-dag-put-") as d:
        tmp = Path(d)
        base = tmp / "base"
        base.mkdir()
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", a.base],
                                 capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(base)], input=archive, check=True)
        head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, check=True).stdout.strip()
        for side, tree in ((f"base {a.base}", base), (f"this tree ({head}+)", ROOT)):
            with peer(tree, tmp, side.split()[0]) as (url, token):
                for label, status, took, wait in asyncio.run(run(url, token)):
                    print(f"{side:24} {label:44} {status}  put {took:6.2f} s  "
                          f"health waited at most {wait:6.2f} s", flush=True)


if __name__ == "__main__":
    main()
