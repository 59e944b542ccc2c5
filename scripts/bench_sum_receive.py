#!/usr/bin/env python3
"""CPU per proven, in-sync DIGEST_SUM received (decode, the cookie check, the heads compare):
two peers in process that hold each other's cookies; one frame of b's handed to a's receive
callback 20,000 times, best of 7 (`time.process_time`). Uses only what db471b6 has too.

    PYTHONPATH=<checkout> .venv/bin/python scripts/bench_sum_receive.py
"""

from __future__ import annotations

import time

from peer.mesh.gossip import GossipConfig
from peer.mesh.sim import swim_cluster


def main() -> None:
    c = swim_cluster(2, GossipConfig.local())
    a, b = c.peers
    for p in c.peers:
        for q in c.peers:
            if p is not q:  # each takes the other's cookie
                p.gossip.anti_entropy(q.addr)
                c.net.pump()
    raw: list[bytes] = []
    t = c.net._nodes[a.addr]
    handler = t.handler
    assert handler is not None
    t.handler = raw.append
    b.gossip.anti_entropy(a.addr)
    c.net.pump()
    t.handler = handler
    frame = raw[0]
    best = 1e9
    for _ in range(7):
        t0 = time.process_time()
        for _ in range(20_000):
            handler(frame)
        best = min(best, (time.process_time() - t0) / 20_000 * 1e6)
    print(f"{best:.2f} us per proven in-sync DIGEST_SUM received")


if __name__ == "__main__":
    main()
