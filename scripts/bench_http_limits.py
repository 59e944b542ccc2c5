#!/usr/bin/env python3
"""What the limits on slow and many HTTP clients (peer/http/limits.py) cost per request:
GET /api/health on loopback against two banzai-peer processes running at once, one of a base
commit (aiohttp's defaults, no limits) and one of this tree, in alternating rounds. Per side
and mode: requests per second seen by a client in this process, and the peer's CPU per
request (utime + stime of its process from /proc, 10 ms ticks). Modes: `keep-alive`, n
requests one after another on one connection; `new-conn`, n/2 requests each on a connection
of its own (`Connection: close`). The two processes differ by more than the limits cost
(`--base HEAD` shows the noise), so `--inproc` measures the gate alone: one process serves a
trivial route (behind a pass-through middleware, as the peer's routes are behind theirs)
over socketpairs through aiohttp's own protocol or through the gate (its connection protocol
and its middleware), client in the same process, CPU per request (process_time),
alternating rounds.

    .venv/bin/python scripts/bench_http_limits.py [--base e71ec14] [--rounds 5] [-n 3000]
    .venv/bin/python scripts/bench_http_limits.py --inproc [--rounds 7] [-n 20000]

`--once gate|plain keep-alive|new-conn N` runs one in-process round and prints nothing: for
valgrind's instruction counts, the precise figure on a noisy host (a round of 1,200 minus a
round of 200, over 1,000):

    valgrind --tool=callgrind --callgrind-out-file=/dev/null .venv/bin/python \
        scripts/bench_http_limits.py --once gate keep-alive 1200
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from scriptlib import machine, mesh_secret_file

if TYPE_CHECKING:
    from peer.http.limits import Handler

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
URL = re.compile(r"^web UI: http://127\.0\.0\.1:(\d+)/?$", re.M)
TICK_S = 1 / os.sysconf("SC_CLK_TCK")
REQUEST = b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
CLOSE = b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"


@contextmanager
def peer(tree: Path, tmp: Path, name: str) -> Iterator[tuple[int, int]]:
    """A lone peer running the code of `tree`: its pid and HTTP port."""
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
        yield proc.pid, int(m.group(1))
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * TICK_S  # utime, stime


def read_response(s: socket.socket, buf: bytes) -> bytes:
    """Reads one response with a Content-Length; returns what follows it."""
    while b"\r\n\r\n" not in buf:
        buf += s.recv(65536)
    head, _, rest = buf.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))  # type: ignore[union-attr]
    while len(rest) < length:
        rest += s.recv(65536)
    return rest[length:]


def keep_alive(port: int, n: int) -> None:
    with socket.create_connection(("127.0.0.1", port)) as s:
        buf = b""
        for _ in range(n):
            s.sendall(REQUEST)
            buf = read_response(s, buf)


def new_conn(port: int, n: int) -> None:
    for _ in range(n):
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(CLOSE)
            read_response(s, b"")


def measure(pid: int, port: int, mode: str, n: int) -> tuple[float, float]:
    """Requests per second and the peer's CPU microseconds per request."""
    c0, t0 = cpu_s(pid), time.perf_counter()
    (keep_alive if mode == "keep-alive" else new_conn)(port, n)
    wall, cpu = time.perf_counter() - t0, cpu_s(pid) - c0
    return n / wall, cpu / n * 1e6


async def _inproc_round(gated: bool, mode: str, n: int) -> float:
    """CPU microseconds per request of `n` requests to a trivial route, client included."""
    from aiohttp import web

    from peer.http.limits import Gate, HttpLimits

    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    @web.middleware
    async def passing(request: web.Request, handler: Handler) -> web.StreamResponse:
        return await handler(request)  # stands for the peer's own (auth, errors)

    gate = Gate(HttpLimits())
    app = web.Application(middlewares=[gate.middleware, passing] if gated else [passing])
    app.router.add_get("/", ok)
    runner = web.AppRunner(app, access_log=None, keepalive_timeout=60)
    await runner.setup()
    assert runner.server is not None
    factory = gate.protocol(runner.server) if gated else runner.server
    loop = asyncio.get_running_loop()

    async def one_conn(count: int, request: bytes) -> None:
        a, b = socket.socketpair()
        await loop.connect_accepted_socket(factory, a)
        reader, writer = await asyncio.open_connection(sock=b)
        for _ in range(count):
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            m = re.search(rb"(?i)content-length: *(\d+)", head)
            await reader.readexactly(int(m.group(1)) if m else 0)
        writer.close()
        await writer.wait_closed()

    get = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    t0 = time.process_time()
    if mode == "keep-alive":
        await one_conn(n, get)
    else:
        for _ in range(n):
            await one_conn(1, get.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n"))
    spent = time.process_time() - t0
    await runner.cleanup()
    return spent / n * 1e6


def inproc(rounds: int, n: int) -> None:
    sys.path.insert(0, str(ROOT))
    modes = {"keep-alive": n, "new-conn": n // 4}
    results: dict[tuple[str, str], list[float]] = {}
    for mode, count in modes.items():
        for side in (False, True):  # warm up
            asyncio.run(_inproc_round(side, mode, count // 10))
        for r in range(rounds):
            for gated in ((False, True) if r % 2 == 0 else (True, False)):
                side = "through the gate" if gated else "aiohttp's protocol alone"
                results.setdefault((mode, side), []).append(
                    asyncio.run(_inproc_round(gated, mode, count)))
    print(f"machine: {machine()}")
    print(f"in process, a trivial route, client included; {rounds} rounds of {modes}")
    print("| mode | served | CPU us/request, median | rounds |\n| --- | --- | --- | --- |")
    for (mode, side), rows in results.items():
        print(f"| {mode} | {side} | {statistics.median(rows):.1f} | "
              f"{', '.join(f'{x:.1f}' for x in rows)} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", default="e71ec14", help="the commit without the limits")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("-n", type=int, default=3000, help="keep-alive requests per round")
    ap.add_argument("--inproc", action="store_true", help="the gate alone, in this process")
    ap.add_argument("--once", nargs=3, metavar=("SIDE", "MODE", "N"),
                    help="one in-process round (gate or plain; keep-alive or new-conn)")
    a = ap.parse_args()
    if a.once:
        sys.path.insert(0, str(ROOT))
        asyncio.run(_inproc_round(a.once[0] == "gate", a.once[1], int(a.once[2])))
        return
    if a.inproc:
        inproc(a.rounds, a.n)
        return
    modes = {"keep-alive": a.n, "new-conn": a.n // 2}
    with tempfile.TemporaryDirectory(prefix="bench-http-limits-") as t:
        tmp = Path(t)
        base = tmp / "base"
        base.mkdir()
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", a.base],
                                 capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(base)], input=archive, check=True)
        head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, check=True).stdout.strip()
        sides = {f"base {a.base}": base, f"this tree ({head}+)": ROOT}
        results: dict[tuple[str, str], list[tuple[float, float]]] = {}
        with peer(base, tmp, "base") as p_base, peer(ROOT, tmp, "this") as p_this:
            procs = dict(zip(sides, (p_base, p_this), strict=True))
            for pid, port in procs.values():  # warm up (imports, first requests)
                for mode, n in modes.items():
                    measure(pid, port, mode, n // 10)
            for r in range(a.rounds):
                order = list(procs) if r % 2 == 0 else list(procs)[::-1]
                for mode, n in modes.items():
                    for side in order:
                        pid, port = procs[side]
                        results.setdefault((side, mode), []).append(measure(pid, port, mode, n))
    print(f"machine: {machine()}")
    print(f"{a.rounds} rounds, medians; keep-alive {modes['keep-alive']} requests, new-conn "
          f"{modes['new-conn']} per round and side")
    print("| mode | side | requests/s | (rounds' range) | peer CPU us/request | (range) |\n"
          "| --- | --- | --- | --- | --- | --- |")
    for (side, mode), rows in sorted(results.items(), key=lambda kv: kv[0][1]):
        rps, cpu = [r[0] for r in rows], [r[1] for r in rows]
        print(f"| {mode} | {side} | {statistics.median(rps):,.0f} | {min(rps):,.0f}-"
              f"{max(rps):,.0f} | {statistics.median(cpu):.0f} | {min(cpu):.0f}-{max(cpu):.0f} |")


if __name__ == "__main__":
    main()
