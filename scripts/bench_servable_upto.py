#!/usr/bin/env python3
"""`Node.servable_upto` with a peer revoked and many lanes held, in this process (session 39,
helper e): every frame served (`servable`: pushes, anti-entropy, pair rounds, snapshots)
asks it, and while any peer is revoked 30bc9d5 walked every lane held to find the revoked
peers'. A lanes Node (no gossip) folds `--lanes` lane origins of other peers (one CLAIM
each, `--lanes / 2` jobs of two members) plus one lane of peer Q, and a REVOKE of Q; then
`servable_upto` is timed `--calls` times, `--repeat` rounds; the median µs per call is
printed as JSON. Run it with PYTHONPATH=TREE for the tree to time (base, head).

    PYTHONPATH=TREE .venv/bin/python scripts/bench_servable_upto.py [--lanes 1000]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from peer.config import PeerConfig
from peer.log import Event, EventType
from peer.log.lanes import lane
from peer.node import Node

Q, A, B, R = "a" * 16, "b" * 16, "c" * 16, "d" * 16


def claim(origin: str, job: str, hlc: int) -> Event:
    return Event(origin, 1, hlc, EventType.CLAIM,
                 {"job": job, "task": "t", "split": ["x", 1], "chunk": 0, "attempt": 0})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lanes", type=int, default=1000)
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    d = Path(tempfile.mkdtemp(prefix="bench_servable_"))
    try:
        node = Node(PeerConfig(data_dir=d, slots=1, mdns=False), lanes=True)
        st, hlc = node.state, 1 << 40
        for i in range(args.lanes // 2):
            job = f"j{i:012x}"
            for p in (A, B):
                hlc += 1
                st.apply(claim(lane(p, job), job, hlc))
        st.apply(claim(lane(Q, "j" + "f" * 12), "j" + "f" * 12, hlc + 1))
        st.apply(Event(R, 1, hlc + 2, EventType.REVOKE, {"peer": Q, "after": 0, "reason": "x"}))
        assert Q in st.revoked and len([o for o in st.heads if "/" in o]) >= args.lanes
        per_call = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            for _ in range(args.calls):
                node.servable_upto()
            per_call.append((time.perf_counter() - t0) / args.calls * 1e6)
        print(json.dumps({"lanes": args.lanes, "revoked": 1, "calls": args.calls,
                          "us_per_call": round(statistics.median(per_call), 2),
                          "rounds_us": [round(x, 2) for x in per_call]}))
        node.log.close()
    finally:
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
