"""A JOB_ENDED's outputs folded on a peer that holds no lane of its job (lanes on; in
process, no network), two measures:

- (default) the event loop's longest hold while `EndListings.step` reads and folds an
  N-output JOB_ENDED listing: a 1 ms ticker's longest gap (session 38, helper i);
- `--fold N[,N...]`: the fold alone, µs per output, median of `--repeat` runs each on a fresh
  Node: an inline JOB_ENDED's (`MeshState.apply`: `end_refusal` and `_end`) and a
  listing's (`MeshState.fold_listing` of the body `read_listing` makes). Inline only up to
  INLINE_MAX outputs (a frame holds about that many); the job index holds `--prior`
  output entries and provider rows of other jobs (a peer with a history). `--profile F`:
  one cProfile'd run of the largest N's listing fold, its stats written to F (session 39,
  helper c).

    PYTHONPATH=<tree> python scripts/bench_listing.py [N=100000]
    PYTHONPATH=<tree> python scripts/bench_listing.py --fold 1000,100000 [--repeat 5] [--prior K]

(docs/benchmarks.md, session 38 helper i, session 39 helper c)."""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from peer.config import PeerConfig
from peer.jobs.ending import listing_body
from peer.log import Event, EventType
from peer.log.jobindex import OUTPUT, CacheEntry
from peer.log.lanes import lane
from peer.node import Node

JOB, OTHER = "j0000000000d1", "0123456789abcdef0123"
cid0 = "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"
SUB, END = 5 << 16, (1 << 40)
INLINE_MAX = 5_000
B32 = "abcdefghijklmnopqrstuvwxyz234567"


def fake_cid(i: int, tag: str = "a") -> str:
    """A CID's text (base32, as the job index writes them) unique per (i, tag)."""
    tail = "".join(B32[(i >> (5 * k)) & 31] for k in range(5))
    return cid0[:-6] + tag + tail


def listed(n: int) -> dict[str, Any]:
    """The outputs and producers of n tasks, each its own key and CID, made in OTHER's lane
    (the job's one member), each CID with OTHER as its producer."""
    outputs = {f"t{i}": [f"key-{i:032x}", fake_cid(i), SUB + i + 1,
                         lane(OTHER, JOB), i + 1] for i in range(n)}
    return {"outputs": outputs, "producers": {v[1]: [OTHER] for v in outputs.values()}}


def node_with_job(d: str, n: int, prior: int = 0) -> Node:
    """A lanes Node (not started) that holds the n-task job's JOB_SUBMITTED (members: OTHER,
    not it), its job index `prior` output entries and provider rows of other jobs."""
    node = Node(PeerConfig(data_dir=Path(d), slots=1, mdns=False, compact_recent_tasks=0),
                lanes=True)
    if prior:
        cids = [fake_cid(i, "p") for i in range(prior)]
        node.index.put((), [CacheEntry(OUTPUT, f"prior-{i:032x}", c, (1, OTHER, i + 1))
                            for i, c in enumerate(cids)], [(c, OTHER) for c in cids])
    wf = {"name": "w", "tasks": [{"name": f"t{i}", "call": "c", "params": {}, "depends": []}
                                 for i in range(n)]}
    sub = Event(OTHER, 1, SUB, EventType.JOB_SUBMITTED,
                {"job": JOB, "workflow": wf, "members": [OTHER]})
    node.state.apply(sub)
    node.compactor.note(sub)
    return node


def ended(n: int, extra: dict[str, Any]) -> Event:
    return Event(OTHER, 2, END, EventType.JOB_ENDED, {
        "job": JOB, "state": "done", "n_tasks": n, "end": END, "failed": {},
        "digest": "0" * 32, **extra})


def fold_us(n: int, inline: bool, prior: int, prof: cProfile.Profile | None = None) -> float:
    """One fold of an n-output JOB_ENDED on a fresh Node (`node_with_job`): µs per output."""
    with tempfile.TemporaryDirectory() as d:
        node = node_with_job(d, n, prior)
        try:
            lst = listed(n)
            if inline:
                ev = ended(n, lst)
            else:
                ev = ended(n, {"outputs": {}, "producers": {}, "listing": cid0})
                node.state.apply(ev)
                full = listing_body(ev, json.loads(json.dumps(lst)))
            if prof is not None:
                prof.enable()
            t0 = time.perf_counter()
            if inline:
                node.state.apply(ev)
            else:
                why = node.state.fold_listing(ev, full)
            t1 = time.perf_counter()
            if prof is not None:
                prof.disable()
            assert (node.state.ended.get(JOB) is ev if inline else why is None), "not folded"
            assert len(node.state.outputs) == n, "outputs not folded"
            return (t1 - t0) / n * 1e6
        finally:
            node.log.close()


def fold_main(sizes: list[int], repeat: int, prior: int, profile: str | None) -> None:
    if profile:
        prof = cProfile.Profile()
        fold_us(max(sizes), False, prior, prof)
        prof.dump_stats(profile)
        return
    res: dict[str, list[float]] = {}
    fold_us(min(sizes), True, prior)  # (warm-up, unmeasured)
    for _ in range(repeat):
        for n in sizes:
            for inline in (True, False):
                if inline and n > INLINE_MAX:
                    continue
                res.setdefault(f"{n} {'inline' if inline else 'listing'}", []).append(
                    round(fold_us(n, inline, prior), 2))
    print(json.dumps({k: {"us_per_output": v, "median": statistics.median(v)}
                      for k, v in res.items()}))


async def hold_main(n: int) -> None:
    raw = json.dumps(listed(n)).encode()
    with tempfile.TemporaryDirectory() as d:
        node = node_with_job(d, n)
        cid = node.store.add_bytes(raw)
        node.listeners[:] = [node.compactor.note]
        ev = ended(n, {"outputs": {}, "producers": {}, "listing": cid})
        node.state.apply(ev)
        node.compactor.note(ev)
        node.catchup.compact()
        assert node.compactor.unlisted, "not waiting"
        node.end_listings.fetch = None
        gaps: list[float] = []
        done = False

        async def tick() -> None:
            last = time.perf_counter()
            while not done:
                await asyncio.sleep(0.001)
                now = time.perf_counter()
                gaps.append(now - last)
                last = now

        t = asyncio.create_task(tick())
        await asyncio.sleep(0.01)
        t0 = time.perf_counter()
        await node.end_listings.step()
        wall = time.perf_counter() - t0
        done = True
        await t
        assert JOB in node.state.listed, "not folded"
        print(f"listing {len(raw)} bytes, {n} outputs: step {wall:.3f} s wall, longest loop "
              f"hold {max(gaps):.3f} s, 2nd {sorted(gaps)[-2]:.3f} s")
        node.log.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("n", nargs="?", type=int, default=100_000)
    ap.add_argument("--fold", help="N[,N...]: the fold alone, µs per output")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--prior", type=int, default=100_000,
                    help="(with --fold) output entries and provider rows in the job index")
    ap.add_argument("--profile", help="(with --fold) one cProfile'd listing fold's stats file")
    a = ap.parse_args()
    if a.fold:
        fold_main([int(x) for x in a.fold.split(",")], a.repeat, a.prior, a.profile)
    else:
        asyncio.run(hold_main(a.n))


if __name__ == "__main__":
    main()
