"""The ZeroMQ receive loop under a flood (session 27's review, F2): on 127.0.0.1 one DEALER
sends as fast as it can while another sends a few frames; the honest ones are still handled
(reading libzmq until it held nothing never ended under a flood: nothing was handled and every
honest frame was dropped)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time

from peer.mesh.transport import ZmqTransport

HONEST = 100

# role flood: send 200-byte frames without waiting until the pipe `fd` closes (the honest
# sender exited) or 30 s; role honest: 100 frames, one per 10 ms, then exit (closing `fd`).
_PEER = r"""
import os, select, sys, time, zmq
role, ep, fd = sys.argv[1], sys.argv[2], int(sys.argv[3])
ctx = zmq.Context(); d = ctx.socket(zmq.DEALER); d.connect(ep)
if role == "flood":
    d.setsockopt(zmq.LINGER, 0); d.setsockopt(zmq.SNDHWM, 100000)
    end, n = time.monotonic() + 30, 0
    while time.monotonic() < end:
        try:
            d.send(b"A" * 200, zmq.NOBLOCK)
        except zmq.Again:
            time.sleep(0.0002)
        n += 1
        if n % 1000 == 0 and select.select([fd], [], [], 0)[0]:
            break
else:
    d.setsockopt(zmq.LINGER, 5000)
    time.sleep(0.5)
    for _ in range(%d):
        d.send(b"H" * 200); time.sleep(0.01)
d.close(); ctx.term()
""".replace("%d", str(HONEST))


async def _until(cond: object, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond() and time.monotonic() < deadline:  # type: ignore[operator]
        await asyncio.sleep(0.05)


async def _settled(got: dict[str, int]) -> None:
    """Wait until what was received is handled: no more frames handled for 0.2 s (at most
    20 s)."""
    before = None
    for _ in range(100):
        if before == dict(got):
            return
        before = dict(got)
        await asyncio.sleep(0.2)


async def test_a_flooding_connection_does_not_starve_another_ones_frames() -> None:
    t = ZmqTransport("127.0.0.1:0")
    got = {"H": 0, "A": 0}

    def on_frame(f: bytes) -> None:  # about what a frame of forged signatures costs
        got[chr(f[0])] += 1
        end = time.perf_counter() + 0.0003
        while time.perf_counter() < end:
            pass

    ep = "tcp://" + t.open(on_frame)
    r, w = os.pipe()
    procs = []
    try:
        procs.append(subprocess.Popen([sys.executable, "-c", _PEER, "flood", ep, str(r)],
                                      pass_fds=(r,)))
        procs.append(subprocess.Popen([sys.executable, "-c", _PEER, "honest", ep, str(w)],
                                      pass_fds=(w,)))
        os.close(w)
        w = -1
        await _until(lambda: all(p.poll() is not None for p in procs), 60.0)
        await _settled(got)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()
        os.close(r)
        if w >= 0:
            os.close(w)
        await t.close()
    assert got["A"] > 0 and t.overflowed > 0  # it was a flood: frames were dropped
    assert got["H"] >= HONEST // 2, got  # and the honest connection's frames were handled
