#!/usr/bin/env python3
"""The cost of unproven DIGESTs (anti-entropy's cookie gate, fixnonce-v1), in process: the
real Gossip on the in-memory network with a fake clock (peer.mesh.sim), so the wall time is
the CPU of handling the frames.

    PYTHONPATH=<checkout> .venv/bin/python scripts/bench_unproven.py [--events 20000]
        [--frames 2000] [--pad 1000] [--signed]

A peer holds `--events` events; a bare endpoint sends it `--frames` DIGESTs that ask for
everything, carry a cookie but echo none of the peer's (an address that proved nothing), each
padded by `--pad` characters. Prints microseconds per DIGEST handled and the frames, events
and bytes sent back. Uses only what the previous release has too, so that one run compares
two checkouts."""

from __future__ import annotations

import argparse
import json
import time

from peer.mesh.gossip import GossipConfig
from peer.mesh.sim import Cluster
from peer.mesh.wire import Kind, encode_frame


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=20_000)
    ap.add_argument("--frames", type=int, default=2000)
    ap.add_argument("--pad", type=int, default=1000)
    ap.add_argument("--signed", action="store_true")
    a = ap.parse_args()
    c = Cluster(1, GossipConfig.local(), signed=a.signed)
    p = c.peers[0]
    for _ in range(a.events):
        p.sink.emit()
    got: list[bytes] = []
    t = c.net.transport()
    addr = t.open(got.append)
    body = json.dumps({"vv": {}, "peers": [], "n": "c0ffee0123456789",
                       "p": "." * a.pad}).encode()
    frame = encode_frame(Kind.DIGEST, "banzai", "probe", addr, body, None)
    c.net.pump()
    got.clear()
    out0 = p.gossip.stats.events_out
    t0 = time.perf_counter()
    for _ in range(a.frames):
        t.send(p.addr, frame)
        c.net.pump()
    dt = time.perf_counter() - t0
    print(f"events held {a.events}, DIGEST {len(frame)} B x {a.frames}, signed={a.signed}: "
          f"{dt / a.frames * 1e6:.1f} us per DIGEST; back: {len(got)} frames, "
          f"{p.gossip.stats.events_out - out0} events, {sum(map(len, got))} B")


if __name__ == "__main__":
    main()
