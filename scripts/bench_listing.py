"""The event loop's longest hold while `EndListings.step` reads and folds an N-output
JOB_ENDED listing (lanes on; in process, no network): a 1 ms ticker's longest gap. Usage:
PYTHONPATH=<tree> python scripts/bench_listing.py [N=100000] (docs/benchmarks.md, session 38,
helper i)."""

import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

from peer.config import PeerConfig
from peer.log import Event, EventType
from peer.log.lanes import lane
from peer.node import Node

N = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
JOB, OTHER = "j0000000000d1", "0123456789abcdef0123"
cid0 = "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"
SUB, END = 5 << 16, (1 << 40)
wf = {"name": "w", "tasks": [{"name": f"t{i}", "call": "c", "params": {}, "depends": []}
                             for i in range(N)]}
outputs = {f"t{i}": [f"key-{i:032x}", cid0[:-6] + f"{i:06d}", SUB + i + 1, lane(OTHER, JOB),
                    i + 1] for i in range(N)}
producers = {v[1]: [OTHER] for v in outputs.values()}
raw = json.dumps({"outputs": outputs, "producers": producers}).encode()


async def main() -> None:
    with tempfile.TemporaryDirectory() as d:
        node = Node(PeerConfig(data_dir=Path(d), slots=1, mdns=False, compact_recent_tasks=0),
                    lanes=True)
        node.listeners[:] = [node.compactor.note]
        sub = Event(OTHER, 1, SUB, EventType.JOB_SUBMITTED,
                    {"job": JOB, "workflow": wf, "members": [OTHER]})
        node.state.apply(sub)
        node.compactor.note(sub)
        cid = node.store.add_bytes(raw)
        ev = Event(OTHER, 2, END, EventType.JOB_ENDED, {
            "job": JOB, "state": "done", "n_tasks": N, "end": END, "outputs": {},
            "producers": {}, "failed": {}, "digest": "0" * 32, "listing": cid})
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
        print(f"listing {len(raw)} bytes, {N} outputs: step {wall:.3f} s wall, longest loop "
              f"hold {max(gaps):.3f} s, 2nd {sorted(gaps)[-2]:.3f} s")
        node.log.close()


if __name__ == "__main__":
    asyncio.run(main())
