"""What one more opinion costs a catch-up whose second member's digests differed
(`CatchUp._vote`, session 49 helper f): a data dir of a long history (bench_snapshot_serve's:
`--tasks` finished tasks compacted into job records, `--kept` more left in the log) opened by
a Node of the code on PYTHONPATH (not started), its snapshot of each version spooled as
`_catch_up` spools it (`?v=3&part=jobs`, `?v=2`), then compared `--runs` times with its own
per-job digests (`_comparer`: every job compared, the whole spool read: what an agreeing
member's opinion costs; a liar's ends at its first differing job), in this thread (the vote
runs it in a worker thread). Prints per version: the spool's bytes, the jobs compared, the
digests answer's bytes, and the compare's seconds (min-max).

    PYTHONPATH=TREE .venv/bin/python scripts/bench_catchup_vote.py --data DIR
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_snapshot_serve import _config, build
from scriptlib import machine, mesh_secret_file

from peer.log.snapframe import FrameSpool
from peer.log.snapstream import Spool
from peer.node import Node


def compare_costs(data: Path, runs: int) -> None:
    node = Node(_config(data))
    try:
        for v in (3, 2):
            body = b"".join(node.catchup.snapshot_stream(v=v, part="jobs" if v == 3 else None))
            digests = node.catchup.digest_reader(per_job=True, v=v)()
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "rows"
                with path.open("wb") as f:
                    spool = (FrameSpool if v == 3 else Spool)(f, 1 << 40)
                    spool.feed(body)
                dir_fd = os.open(tmp, os.O_RDONLY | os.O_DIRECTORY)
                try:
                    compare = node.catchup._comparer(spool, path, dir_fd)
                    took = []
                    for _ in range(runs):
                        t0 = time.perf_counter()
                        verdict = compare(digests)
                        took.append(time.perf_counter() - t0)
                finally:
                    os.close(dir_fd)
            assert verdict is True, verdict
            print(f"v{v}: spool {len(body):,} bytes, {len(digests['jobs']):,} jobs compared, "
                  f"digests answer {len(json.dumps(digests)):,} bytes, compare "
                  f"{min(took):.3f}-{max(took):.3f} s", flush=True)
    finally:
        node.log.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True, help="the data dir (built if absent)")
    ap.add_argument("--tasks", type=int, default=20_000, help="compacted into job records")
    ap.add_argument("--kept", type=int, default=5_000, help="their events left in the log")
    ap.add_argument("--per-job", type=int, default=4)
    ap.add_argument("--runs", type=int, default=5)
    a = ap.parse_args()
    print(machine())
    if not a.data.exists():
        a.data.parent.mkdir(parents=True, exist_ok=True)
        mesh_secret_file(a.data.parent)
        t0 = time.perf_counter()
        build(a.data, a.tasks, a.kept, a.per_job)
        print(f"built {a.data} in {time.perf_counter() - t0:.1f} s")
    compare_costs(a.data, a.runs)


if __name__ == "__main__":
    main()
