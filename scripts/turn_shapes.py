#!/usr/bin/env python3
"""What each task costs in events (issue 12): one job of n independent ECHO tasks on N peers
(bench_mesh.py's mesh); then, from peer 0's events.sqlite, the shapes of every emitted event
(a TURN's part types in order, `lone 4` = a CLAIM alone), the claims per attempt (2+ =
duplicate claims) and, for each lone CLAIM, its origin's previous event.

    .venv/bin/python scripts/turn_shapes.py [--peers 3] [-n 300]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sqlite3
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_mesh as bm


def shapes(db: Path) -> dict[str, Any]:
    con = sqlite3.connect(db)
    shape: Counter[str] = Counter()
    claims: Counter[tuple[str, str, int, int]] = Counter()
    before_lone: Counter[str] = Counter()
    prev: dict[str, str] = {}
    for origin, typ, payload in con.execute(
            "select origin, type, payload from events order by origin, seq"):
        p = json.loads(payload)
        parts = [(t, q) for t, q in p["parts"]] if typ == 17 else [(typ, p)]
        types = [t for t, _ in parts]
        key = "lone 4" if types == [4] else ("split" if 3 in types else
                                             " ".join(map(str, types)))
        shape[key] += 1
        for t, q in parts:
            if t == 4:
                claims[(q["job"], q["task"], q["chunk"], q["attempt"])] += 1
        if key == "lone 4" and origin in prev:
            before_lone[prev[origin]] += 1
        prev[origin] = key
    con.close()
    return {"events": sum(shape.values()), "shapes": dict(shape.most_common()),
            "claims_per_attempt": dict(Counter(claims.values())),
            "before_lone_claim": dict(before_lone.most_common())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--peers", type=int, default=3)
    ap.add_argument("-n", type=int, default=300)
    a = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="turn-shapes-"))
    mesh = bm.start_mesh(a.peers, base)
    try:
        bm.banzai_batches(mesh, ["dag"], a.n, 0)
    finally:
        bm.stop_mesh(mesh)
    try:
        out = shapes(next(base.rglob("events.sqlite")))
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print(json.dumps({"peers": a.peers, "n": a.n, **out}, indent=1))


if __name__ == "__main__":
    main()
