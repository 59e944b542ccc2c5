#!/usr/bin/env python3
"""What reading a peer's log back at start costs (EventLog.load): N signed events, in signed
batches of 16 (a turn's size), each a PROVIDE of 3 CIDs; the minimum of --repeat loads of
the same file. Since session 25, `load` checks each signed row's content against the hash
its batch signed (an event edited on disk is quarantined, not folded under the signature);
run it from an archive of the code before to compare (PYTHONPATH=<that archive>).

    PYTHONPATH=$PWD .venv/bin/python scripts/bench_replay.py [-n 50000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import hashlib
import tempfile
import time
from pathlib import Path

from peer.cids import sha256_cid
from peer.log import Event, EventType
from peer.log.signing import Identity, sign_events
from peer.log.sqlite import EventLog


def build(path: Path, n: int) -> None:
    me = Identity.generate()
    log = EventLog(path)
    for first in range(1, n + 1, 1000):
        evs = []
        for seq in range(first, min(first + 1000, n + 1)):
            cids = [str(sha256_cid(hashlib.sha256(b"%d/%d" % (seq, i)).digest(), "raw", 1))
                    for i in range(3)]
            evs.append(Event("a" * 64, seq, seq, EventType.PROVIDE, {"cids": cids}))
        sign_events(me, "a" * 64, evs, None, max_batch=16)
        log.append(evs, sync=False)
    log.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=50_000)
    ap.add_argument("--repeat", type=int, default=5)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "events.sqlite"
        build(path, a.n)
        times = []
        for _ in range(a.repeat):
            log = EventLog(path)
            t = time.perf_counter()
            got = sum(1 for _ in log.load())
            times.append(time.perf_counter() - t)
            log.close()
        assert got == a.n, got
        best = min(times)
        print(f"load of {a.n} signed events: min {best:.3f} s of {a.repeat} "
              f"({best / a.n * 1e6:.1f} us per event); all: "
              + ", ".join(f"{t:.3f}" for t in times))


if __name__ == "__main__":
    main()
