#!/usr/bin/env python3
"""Anti-entropy between 3 peers, in process: the real Gossip on the in-memory network with a
fake clock (peer.mesh.sim), so the wall time is the CPU of the exchange itself.

    PYTHONPATH=<checkout> .venv/bin/python scripts/bench_ae3.py [--events 20000] [--idle 2000]

1. catch-up: peer 0 holds `--events` events, the two others none; rounds of anti-entropy
   (each peer starts one exchange with a random live peer) until all three hold them all:
   rounds, wall seconds, frames and bytes sent.
2. in sync: `--idle` more rounds of the converged mesh: microseconds and bytes per round.
3. a content repair: the three hold 3 x 256 events, peer 1 with another content of one of
   them (equal heads); rounds until every peer holds the winner: rounds, frames and bytes.
4. forged: a member sends a peer holding 3,072 events two DIGESTs with another peer's
   address as reply-to (one asking for everything, one whose content digests differ) and
   two `fix` frames of every block (one with a guessed nonce): the bytes forged, and the
   frames, events and bytes the victim then receives.
Uses only what the previous release has too, so that one run compares two checkouts."""

from __future__ import annotations

import argparse
import json
import time

from peer.log import Event, EventType
from peer.log.signing import held_hash
from peer.mesh.gossip import GossipConfig
from peer.mesh.sim import Cluster, swim_cluster
from peer.mesh.wire import Kind, dumps, encode_frame


def rounds_until(c: Cluster, done: object, limit: int = 1000) -> int:
    for r in range(limit):
        if done():  # type: ignore[operator]
            return r
        c.clock.advance(c.cfg.anti_entropy_s)
        for p in c.peers:
            p.gossip.anti_entropy()
            c.net.pump()
    raise SystemExit("did not converge")


def provide(seq: int, variant: int = 0) -> Event:
    return Event("o", seq, seq * 10 + variant, EventType.PROVIDE, {"cids": [f"c{seq}-{variant}"]})


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=20_000)
    ap.add_argument("--idle", type=int, default=2000)
    a = ap.parse_args()
    out: dict[str, object] = {}

    c = swim_cluster(3, GossipConfig.local(max_events_per_frame=512), seed=1)
    for _ in range(a.events):
        c.peers[0].sink.emit()
    f0, b0, t = c.net.sent, c.net.bytes_sent, time.perf_counter()
    out["catchup_rounds"] = rounds_until(c, c.converged)
    out["catchup_s"] = round(time.perf_counter() - t, 3)
    out["catchup_frames"], out["catchup_bytes"] = c.net.sent - f0, c.net.bytes_sent - b0

    f0, b0, t = c.net.sent, c.net.bytes_sent, time.perf_counter()
    for _ in range(a.idle):
        c.clock.advance(c.cfg.anti_entropy_s)
        for p in c.peers:
            p.gossip.anti_entropy()
            c.net.pump()
    out["idle_us_per_round"] = round((time.perf_counter() - t) / a.idle * 1e6, 1)
    out["idle_frames_per_round"] = round((c.net.sent - f0) / a.idle, 2)
    out["idle_bytes_per_round"] = round((c.net.bytes_sent - b0) / a.idle, 1)

    c = swim_cluster(3, GossipConfig.local(max_events_per_frame=512), seed=2)
    lose, win = sorted((provide(300, v) for v in range(2)), key=held_hash)[::-1]
    base = [provide(q) for q in range(1, 769) if q != 300]
    for i, p in enumerate(c.peers):
        p.sink.merge([*base, lose if i == 1 else win])
    f0, b0, t = c.net.sent, c.net.bytes_sent, time.perf_counter()
    out["repair_rounds"] = rounds_until(
        c, lambda: all(held_hash(p.sink.state.events[("o", 300)]) == held_hash(win)
                       for p in c.peers))
    out["repair_s"] = round(time.perf_counter() - t, 4)
    out["repair_frames"], out["repair_bytes"] = c.net.sent - f0, c.net.bytes_sent - b0
    out.update(forged())
    print(json.dumps(out))


def forged() -> dict[str, int]:
    c = swim_cluster(2, GossipConfig.local(), seed=3)
    a, victim = c.peers
    for _ in range(3072):
        a.sink.emit()
    aid = a.gossip.peer_id
    every = {aid: [[b, ""] for b in range(13)]}
    got: list[bytes] = []
    send = c.net._send

    def tap(src: str, dst: str, frame: bytes) -> bool:
        if dst == victim.addr:
            got.append(frame)
        return send(src, dst, frame)
    c.net._send = tap  # type: ignore[method-assign]
    cookie = {"n": "abcdef0123456789"}  # (what a peer of this release sends; the other ignores)
    frames = [encode_frame(k, c.cfg.mesh_id, "intruder", victim.addr, dumps(b), None)
              for k, b in [(Kind.DIGEST, {"vv": {}, "peers": [], **cookie, "p": "." * 64}),
                           (Kind.DIGEST, {"vv": dict(a.sink.heads()), "peers": [],
                                          "cs": {aid: "0" * 32}, **cookie}),
                           (Kind.EVENTS, {"events": [], "fix": every}),
                           (Kind.EVENTS, {"events": [], "fix": every, "fn": "0" * 16})]]
    handler = c.net._nodes[a.addr].handler
    assert handler is not None
    for f in frames:
        handler(f)
    c.net.pump()
    events = sum(len(json.loads(f[f.index(b"{"):]).get("events", ())) for f in got)
    return {"forged_bytes": sum(map(len, frames)), "victim_frames": len(got),
            "victim_events": events, "victim_bytes": sum(map(len, got))}


if __name__ == "__main__":
    main()
