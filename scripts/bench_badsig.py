"""What frames of forged signatures cost a signed peer: one Ed25519 verification against a
frame's receive cost, and frames that pack many forged SWIM updates or event batches; and
frames that pack many validly signed reports of one member (a member's own, counters rising:
each newer than the last, so each verified where nothing bounds a frame's updates).

In process, on the in-memory network of peer/mesh/sim.py (a signed cluster of two peers): each
frame is handed to peer 0's receive path (`Gossip._on_frame`: decode, checks, handlers) as it
would come off the transport, again and again (a forged update or batch is verified anew each
time: nothing remembers a failure). Reported: the best of `--repeat` runs, µs per frame.
What the transport adds (ZeroMQ, CURVE) is in docs/benchmarks.md (scripts/bench_curve.py).

    PYTHONPATH=$PWD .venv/bin/python scripts/bench_badsig.py [--repeat 5]

Run it with PYTHONPATH on a `git archive` copy of another commit for an A/B.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scriptlib import machine

from peer.log.signing import membership_message, verify
from peer.mesh.sim import Cluster
from peer.mesh.swim import Sig
from peer.mesh.wire import Kind, encode_frame


def best_us(fn: Callable[[], None], n: int, repeat: int) -> float:
    """The best of `repeat` runs of `n` calls of `fn`, µs per call."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - t0) / n)
    return best * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    c = Cluster(2, signed=True, seed=1)
    for _ in range(20):
        c.step(0.05)
    me, other = c.peers[0], c.peers[1]
    oid = other.gossip.peer_id
    s = me.gossip.swim
    assert s is not None and oid in s.members and s.members[oid].report is not None
    inc, ctr = s.members[oid].report_ver
    handler = c.net._nodes[me.addr].handler
    assert handler is not None
    mesh = c.cfg.mesh_id
    forged_sig = "00" * 64

    def frame(kind: Kind, body: dict[str, object]) -> bytes:
        return encode_frame(kind, mesh, "intruder", "127.0.0.1:9",
                            json.dumps(body).encode(), None)

    def reports(n: int, *, stale: bool) -> bytes:
        """An UPDATES frame of `n` reports of `other`: newer than the one held (each is
        verified) or not (each is dropped before any verification)."""
        base = ctr - n if stale else ctr + 1
        return frame(Kind.UPDATES, {"m": [
            {"t": "r", "i": oid, "n": inc, "c": max(0, base + k), "d": "{}", "g": forged_sig}
            for k in range(n)]})

    assert other.gossip.auth is not None
    key = other.gossip.auth.identity.key

    def batches(n: int) -> bytes:
        """An EVENTS frame of no events and `n` distinct batches of `other` (forged)."""
        return frame(Kind.EVENTS, {"events": [], "batches": [
            {"o": oid, "f": 10_000 + k, "h": os.urandom(32).hex(), "k": key.hex(),
             "g": forged_sig} for k in range(n)]})

    msg = membership_message(0xA4, mesh, oid, "", inc, ctr + 1, b"{}")
    sig = bytes(64)
    rows: list[tuple[str, int, float]] = [
        ("Ed25519 verify (a forged signature), alone", 0,
         best_us(lambda: verify(key, sig, msg), 2000, args.repeat))]
    cases = [("UPDATES, 1 stale report (no verify): the receive cost", reports(1, stale=True)),
             ("UPDATES, 1 forged report", reports(1, stale=False)),
             ("UPDATES, 24 forged reports (a piggyback's worth)", reports(24, stale=False)),
             ("UPDATES, 1,000 stale reports", reports(1000, stale=True)),
             ("UPDATES, 1,000 forged reports", reports(1000, stale=False)),
             ("EVENTS, 1 forged batch", batches(1)),
             ("EVENTS, 512 forged batches", batches(512))]
    for name, data in cases:
        calls = 200 if len(data) < 20_000 else 5
        rows.append((name, len(data),
                     best_us(lambda d=data: handler(d), calls, args.repeat)))  # type: ignore[misc]
    osw = other.gossip.swim
    assert osw is not None
    signer = osw._signer
    top = [max(ctr, s.members[oid].report_ver[1]) + 1]

    def valid(kind: Kind, n: int) -> bytes:
        """A frame of `n` reports of `other`, validly signed, each newer than any before."""
        ups = []
        for k in range(n):
            c = top[0] + k
            ups.append({"t": "r", "i": oid, "n": inc, "c": c, "d": "{}",
                        **signer.sign(Sig.REPORT, oid, "", inc, c, b"{}")})
        top[0] += n
        return frame(kind, {"m": ups})

    for kind in (Kind.UPDATES, Kind.SYNC):
        frames = [valid(kind, 1000) for _ in range(5 * args.repeat)]
        rows.append((f"{kind.name}, 1,000 valid reports of one member (counters rising)",
                     len(frames[0]), best_us(lambda f=frames: handler(f.pop(0)), 5, args.repeat)))
    print(f"# {machine()}")
    print(f"# bench_badsig.py --repeat {args.repeat}; best of {args.repeat}, µs per call")
    print("| case | frame bytes | µs per frame |")
    print("| --- | ---: | ---: |")
    for name, size, us in rows:
        print(f"| {name} | {size or '-'} | {us:,.1f} |")
    g = me.gossip.stats
    print(f"# swim_dropped_updates={g.swim_dropped_updates} "
          f"events_refused={g.events_refused} swim_unverified="
          f"{getattr(g, 'swim_unverified', 'n/a')} swim_over_frame="
          f"{getattr(g, 'swim_over_frame', 'n/a')}")


if __name__ == "__main__":
    main()
