#!/usr/bin/env python3
"""What one /metrics render costs the peer's loop (session 39 helper f), in this process.

    cd TREE && PYTHONPATH=$PWD .venv/bin/python scripts/bench_metrics.py [-n 500]

A real Node (not started; its SQLite log in a temporary directory) that knows 20 peers (and
them as live in a stand-in gossip) and whose metrics counted a job of --tasks tasks (a claim
and a CHUNK_DONE each, half of them ours, so the histogram has samples): CPU ms of
`Metrics.render` (median of -n, after 20 warm-ups), and the same split into the collectors'
reads and the text. Prints one JSON line. Run it in each tree, alternated.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from peer.config import PeerConfig
from peer.http.metrics import Metrics
from peer.log import Event, EventType
from peer.node import Node

JOB = "j" + "0" * 12


class _Stats:
    def as_dict(self) -> Mapping[str, int]:
        return {"frames_in": 900, "frames_out": 800, "bytes_in": 10**7, "bytes_out": 9 * 10**6,
                "events_in": 5000, "events_out": 4000, "dropped_bad_mac": 2,
                "events_refused": 1}


class _Gossip:
    def __init__(self, peers: list[str]) -> None:
        self.stats, self.peers = _Stats(), peers

    def live_peers(self) -> Mapping[str, Mapping[str, Any]]:
        return {p: {"status": "alive"} for p in self.peers}

    def left_peers(self) -> frozenset[str]:
        return frozenset()


def _cpu_ms(f: Callable[[], object], n: int) -> float:
    for _ in range(20):
        f()
    took = []
    for _ in range(n):
        t0 = time.process_time()
        f()
        took.append(time.process_time() - t0)
    return round(statistics.median(took) * 1e3, 4)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=500)
    ap.add_argument("--tasks", type=int, default=1000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        node = Node(PeerConfig(data_dir=Path(d) / "p", slots=1, mdns=False))
        me = node.peer_id
        peers = [f"{i:02x}" * 8 for i in range(1, 21)]
        for i, p in enumerate([me, *peers]):
            node.state.apply(Event(p, 1, 1 + i, EventType.MEMBER, {
                "name": p, "http": "", "calls": [], "slots": 1, "cores": 1, "mem_mb": 1}))
        node.gossip = _Gossip(peers)  # type: ignore[assignment]
        m = Metrics(node)
        wf = {"name": "w", "tasks": [{"name": f"t{i}", "call": "c", "params": {}, "depends": []}
                                     for i in range(args.tasks)]}
        node.state.apply(Event(me, 2, 100, EventType.JOB_SUBMITTED,
                               {"job": JOB, "workflow": wf}))
        seq = 3
        for i in range(args.tasks):
            base = {"job": JOB, "task": f"t{i}", "split": ["a", 1], "chunk": 0, "attempt": 0}
            origin = me if i % 2 else peers[i % 20]
            for kind, body in ((EventType.CLAIM, base),
                               (EventType.CHUNK_DONE, {**base, "output": "x",
                                                       "s": 0.01 * (i % 50)})):
                ev = Event(origin, seq, 100 + seq, kind, body)
                seq += 1
                node.state.apply(ev)
                m.on_event(ev)
        try:
            text = m.render()
            out = {"bytes": len(text), "samples": sum(not ln.startswith(b"#")
                                                      for ln in text.splitlines()),
                   "render_ms": _cpu_ms(m.render, args.n),
                   "collect_ms": _cpu_ms(lambda: list(m.registry.collect()), args.n)}
        finally:
            node.log.close()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
