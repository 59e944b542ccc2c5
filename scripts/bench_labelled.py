#!/usr/bin/env python3
"""Tasks only one peer may run (placement, issue 12): one job of `-n` independent ECHO tasks
that require a label only peer 0 announces (`--label bench=only`), on N real peers, against
the same job on peer 0 alone.

    .venv/bin/python scripts/bench_labelled.py [--peers 3] [-n 1000] [--repeat 3]
        [--json PATH]

The meshes are bench_mesh.py's (--slots 1 each, 127.0.0.1, formed before the first batch,
a warm-up batch first); each repetition runs the labelled job on the N-peer mesh, then on
the lone peer. Per batch: tasks/s (post to the last task_done on peer 0's SSE stream), CPU
per task of every peer process with its forkserver and workers, and of each peer, and
events per task (`banzai_events_emitted_total`: a TURN is one). The other peers run none
of the tasks: their CPU is what receiving peer 0's events costs them. An A/B runs this
script from one tree with PYTHONPATH and the peers' code of the other (bench_mesh.py
starts the peers from the tree the script is in: copy this script and bench_mesh.py into
the other tree)."""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import bench_mesh as bm  # noqa: E402  (start_mesh, banzai_batches, stop_mesh)
import bench_pipeline as bp  # noqa: E402  (machine, tree_cpu_s)

LABEL = {"labels": {"bench": "only"}}


def batch(mesh: bm.Mesh, n: int) -> dict[str, Any]:
    """One labelled job of n tasks on `mesh`: its figures and each peer's CPU per task."""
    before = [bp.tree_cpu_s(p.proc.pid) for p in mesh.peers]
    r = bm.banzai_batches(mesh, ["dag"], n, 0, requires=LABEL)["dag"]
    after = [bp.tree_cpu_s(p.proc.pid) for p in mesh.peers]
    ran = r["per_peer"]
    assert set(ran) == {"p0"}, f"a labelled task ran elsewhere: {ran}"
    return {"tasks_per_s": r["tasks_per_s"], "cpu_ms_per_task": r["cpu_ms_per_task"],
            "events_per_task": r.get("events_per_task"),
            "peer_cpu_ms_per_task": [(b - a) * 1000 / n for a, b in zip(before, after,
                                                                          strict=True)]}


def run(a: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {"machine": bp.machine(), "n": a.n, "peers": a.peers,
                           "mesh": [], "alone": []}
    with tempfile.TemporaryDirectory(prefix="bench-labelled-") as d:
        meshes = [bm.start_mesh(k, Path(d) / f"n{k}", first_extra=("--label", "bench=only"))
                  for k in (a.peers, 1)]
        try:
            for m in meshes:
                bm.banzai_batches(m, ["warm"], a.n, 0)
                batch(m, min(a.n, 200))  # the labelled call's first runs, its TURNs
            for rep in range(a.repeat):
                for key, m in zip(("mesh", "alone"), meshes, strict=True):
                    out[key].append(batch(m, a.n))
                    x = out[key][-1]
                    print(f"rep {rep + 1} {key}: {x['tasks_per_s']:.0f} tasks/s, "
                          f"{x['cpu_ms_per_task']:.2f} ms CPU per task, "
                          f"{x['events_per_task']} events per task, by peer "
                          f"{[round(c, 2) for c in x['peer_cpu_ms_per_task']]}",
                          file=sys.stderr, flush=True)
        finally:
            for m in meshes:
                bm.stop_mesh(m)
    return out


def markdown(r: dict[str, Any]) -> str:
    def med(key: str, f: str) -> float:
        return statistics.median(x[f] for x in r[key])

    rows = ["| mesh | tasks/s | CPU ms per task | events per task | CPU ms per task, by peer |",
            "| --- | ---: | ---: | ---: | --- |"]
    for key, name in (("mesh", f"{r['peers']} peers, peer 0 labelled"), ("alone", "peer 0 alone")):
        by_peer = [statistics.median(x["peer_cpu_ms_per_task"][i] for x in r[key])
                   for i in range(len(r[key][0]["peer_cpu_ms_per_task"]))]
        rows.append(f"| {name} | {med(key, 'tasks_per_s'):.0f} | "
                    f"{med(key, 'cpu_ms_per_task'):.2f} | {med(key, 'events_per_task'):.3f} | "
                    f"{' / '.join(f'{c:.2f}' for c in by_peer)} |")
    return "\n".join(rows) + f"\n\nMedians of {len(r['mesh'])} repetitions, n = {r['n']}.\n"


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--peers", type=int, default=3, help="peers in the mesh (peer 0 labelled)")
    ap.add_argument("-n", type=int, default=1000, help="tasks in the job")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", type=Path, help="also save the raw results here")
    a = ap.parse_args(argv)
    r = run(a)
    print(markdown(r))
    if a.json:
        a.json.write_text(json.dumps(r, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
