#!/usr/bin/env python3
"""CPU cost of CURVE per gossip frame: frames/s and CPU µs per frame over loopback, with and
without CURVE (and, for comparison, the HMAC-SHA256 tag CURVE replaces), for a few sizes.

    .venv/bin/python scripts/bench_curve.py [--seconds 1.0] [--repeat 5]

One process: a DEALER sends bursts of frames to a ROUTER on 127.0.0.1 (the gossip path of
peer/mesh/transport.py, with the keys of peer/mesh/keyring.py) and the same thread receives
them, so CPU time (process time: Python plus libzmq's I/O threads, both ends) per frame is
what one frame costs a sender and a receiver together. Modes run interleaved, best of
`--repeat`, so ratios hold on a busy machine; absolute figures depend on the load.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import zmq

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from scriptlib import machine  # noqa: E402

from peer.mesh.keyring import CurveKeys, derive, new_secret  # noqa: E402
from peer.mesh.wire import FrameWriter, Kind, decode_frame  # noqa: E402

SIZES = (256, 4096, 65536, 1 << 20)
BURST = 64


def pair(ctx: zmq.Context[zmq.Socket[bytes]], keys: CurveKeys | None,
         ) -> tuple[zmq.Socket[bytes], zmq.Socket[bytes]]:
    r = ctx.socket(zmq.ROUTER)
    r.setsockopt(zmq.LINGER, 0)
    if keys is not None:
        r.setsockopt(zmq.CURVE_SERVER, 1)
        r.setsockopt(zmq.CURVE_SECRETKEY, keys.server_secret)
    r.bind("tcp://127.0.0.1:*")
    d = ctx.socket(zmq.DEALER)
    d.setsockopt(zmq.LINGER, 0)
    if keys is not None:
        d.setsockopt(zmq.CURVE_SERVERKEY, keys.server_public)
        d.setsockopt(zmq.CURVE_PUBLICKEY, keys.client_public)
        d.setsockopt(zmq.CURVE_SECRETKEY, keys.client_secret)
    d.connect(r.getsockopt_string(zmq.LAST_ENDPOINT))
    d.send(b"hello")
    r.recv_multipart()  # the handshake is done
    return d, r


def run(d: zmq.Socket[bytes], r: zmq.Socket[bytes], make: Callable[[], bytes],
        check: Callable[[bytes], object], seconds: float) -> tuple[float, float]:
    """(frames/s, CPU µs per frame) for `seconds` of bursts: `make` builds each frame, `check`
    decodes each received one (as gossip does)."""
    n = 0
    t0, c0 = time.perf_counter(), time.process_time()
    while time.perf_counter() - t0 < seconds:
        for _ in range(BURST):
            f = make()
            d.send(f, copy=len(f) < 65536)
        for _ in range(BURST):
            check(r.recv_multipart(copy=True)[1])
        n += BURST
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return n / wall, cpu / n * 1e6


def handshake_ms(ctx: zmq.Context[zmq.Socket[bytes]], keys: CurveKeys | None, n: int = 20,
                 ) -> float:
    """CPU ms per new connection (connect, handshake, first frame), both ends."""
    c0 = time.process_time()
    for _ in range(n):
        d, r = pair(ctx, keys)
        d.close()
        r.close()
    return (time.process_time() - c0) / n * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=1.0, help="per measurement")
    ap.add_argument("--repeat", type=int, default=5, help="best of N per mode and size")
    args = ap.parse_args()
    keys = derive(new_secret())
    secret = new_secret()
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    plain, curve = pair(ctx, None), pair(ctx, keys)
    print(f"machine: {machine()}")
    print(f"libzmq {zmq.zmq_version()}, pyzmq {zmq.__version__}; load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"{'frame':>9} | {'plain f/s':>10} {'µs CPU':>8} | {'CURVE f/s':>10} {'µs CPU':>8} | "
          f"{'+HMAC f/s':>10} {'µs CPU':>8} | CURVE extra µs/frame")
    for size in SIZES:
        body = b'{"events":[],"ttl":0,"pad":"' + b"x" * size + b'"}'
        untagged = FrameWriter("m" * 16, "p" * 16, "127.0.0.1:7700", None)
        tagged = FrameWriter("m" * 16, "p" * 16, "127.0.0.1:7700", secret)
        modes = {  # name: (sockets, make, check); "hmac": the tag without CURVE, as before
            "plain": (plain, lambda w=untagged, b=body: w.frame(Kind.EVENTS, b),
                      lambda f: decode_frame(f, None, "m" * 16, 1 << 30)),
            "curve": (curve, lambda w=untagged, b=body: w.frame(Kind.EVENTS, b),
                      lambda f: decode_frame(f, None, "m" * 16, 1 << 30)),
            "hmac": (plain, lambda w=tagged, b=body: w.frame(Kind.EVENTS, b),
                     lambda f: decode_frame(f, secret, "m" * 16, 1 << 30)),
        }
        best: dict[str, tuple[float, float]] = {}
        secs = args.seconds if size < (1 << 20) else args.seconds * 2
        for _ in range(args.repeat):
            for name, ((d, r), make, check) in modes.items():
                fps, us = run(d, r, make, check, secs)
                if name not in best or us < best[name][1]:
                    best[name] = (fps, us)
        p, c, h = best["plain"], best["curve"], best["hmac"]
        print(f"{len(body) + 40:>9} | {p[0]:>10.0f} {p[1]:>8.1f} | {c[0]:>10.0f} {c[1]:>8.1f} | "
              f"{h[0]:>10.0f} {h[1]:>8.1f} | {c[1] - p[1]:>+8.1f}", flush=True)
    for s in (*plain, *curve):
        s.close()
    print(f"new connection, CPU ms (both ends): plain {handshake_ms(ctx, None):.2f}, "
          f"CURVE {handshake_ms(ctx, keys):.2f}")
    t0 = time.process_time()
    derive(new_secret())
    print(f"key derivation (scrypt + HKDF, once per secret and process): "
          f"{(time.process_time() - t0) * 1e3:.0f} ms CPU")
    ctx.term()


if __name__ == "__main__":
    main()
