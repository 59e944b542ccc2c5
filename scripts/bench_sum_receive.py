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
c = swim_cluster(2, GossipConfig.local())
a, b = c.peers
for p in c.peers:
    for q in c.peers:
        if p is not q:
            p.gossip.anti_entropy(q.addr); c.net.pump()
raw = []
t = c.net._nodes[a.addr]
h = t.handler
t.handler = lambda f: raw.append(f)
b.gossip.anti_entropy(a.addr)
c.net.pump()
t.handler = h
frame = raw[0]
best = 1e9
for rep in range(7):
    t0 = time.process_time()
    for _ in range(20000):
        h(frame)
    best = min(best, (time.process_time() - t0) / 20000 * 1e6)
print(f"{best:.2f} us per proven in-sync DIGEST_SUM received")
