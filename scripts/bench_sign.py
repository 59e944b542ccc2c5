#!/usr/bin/env python3
"""Signing and verifying events (peer.log.signing): events per second on one core, per event
and per batch of 1, 16 and 256 events, for a mix of typical payloads.

    .venv/bin/python scripts/bench_sign.py [--n 4096] [--repeat 5]

Rows: `hash` is the content hash alone; `sign` is what Node.flush adds (hash every event,
one Ed25519 signature per batch); `verify` is what a receiver adds (one Ed25519 check per
batch, a hash and a comparison per event); `accept` is the whole receive path of a frame
body (Event.from_json with its validation, then verify). Best of `--repeat` runs, CPU time
of this process (one core); absolute figures move with the machine's load.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from bench_events import PAYLOADS  # noqa: E402
from scriptlib import machine  # noqa: E402

from peer.log import Event  # noqa: E402
from peer.log.signing import (  # noqa: E402
    Batch,
    Identity,
    MemberKeys,
    event_hash,
    peer_id_for,
    sign_events,
)
from peer.mesh.wire import pack_frames  # noqa: E402

ME = Identity.generate()
ID = peer_id_for(ME.key)


def _events(n: int) -> list[Event]:
    mix = list(PAYLOADS.values())
    return [Event(ID, i + 1, (1_700_000_000_000 << 16) + i, *mix[i % len(mix)])
            for i in range(n)]


def _best(fn: Callable[[], Any], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.process_time()
        fn()
        best = min(best, time.process_time() - t0)
    return best


def _frames(events: list[Event], batch: int) -> list[tuple[list[Any], list[Any]]]:
    sign_events(ME, ID, events, None, max_batch=batch)
    packed, _ = pack_frames(events, 1 << 30, batch)
    return [([json.loads(e) for e in f.events], [json.loads(b) for b in f.batches])
            for f in packed]


def _verify_only(frames: list[tuple[list[Any], list[Any]]], events: list[Event]) -> None:
    k = MemberKeys()
    i = 0
    for _raw, batches in frames:  # the events are already decoded: signature + hashes only
        for b in batches:
            bt = Batch.from_json(b)
            assert k.check_batch(bt) is None
            k._good.clear()  # every batch checked as new (no relay cache)
            for _ in range(bt.count):
                e = events[i]
                assert k.check_event(e, bt) is None
                i += 1


def _accept(frames: list[tuple[list[Any], list[Any]]]) -> None:
    k = MemberKeys()
    for raw, batches in frames:
        k._good.clear()
        k.accept(raw, batches)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=4096, help="events per run")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    events = _events(a.n)
    rows: dict[str, float] = {}
    rows["hash"] = a.n / _best(lambda: [event_hash(e) for e in events], a.repeat)
    for batch in (1, 16, 256):
        rows[f"sign /{batch}"] = a.n / _best(
            lambda b=batch: sign_events(ME, ID, events, None, max_batch=b), a.repeat)
        frames = _frames(events, batch)
        rows[f"verify /{batch}"] = a.n / _best(
            lambda f=frames: _verify_only(f, events), a.repeat)
        rows[f"accept /{batch}"] = a.n / _best(lambda f=frames: _accept(f), a.repeat)
    if a.json:
        print(json.dumps(rows))
        return
    print(f"# {machine()}; {a.n} events (mix of {len(PAYLOADS)} payloads), best of {a.repeat}")
    print(f"{'row':<14}{'events/s':>12}{'us/event':>10}")
    for k, v in rows.items():
        print(f"{k:<14}{v:>12,.0f}{1e6 / v:>10.1f}")


if __name__ == "__main__":
    main()
