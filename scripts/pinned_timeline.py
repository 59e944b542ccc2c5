#!/usr/bin/env python3
"""Where each 2-peer run of bench_pinned.py loses against a perfect split, per stage, from
its --json files: the first claim after the previous task's TASK_DONE, each peer's busy
time, the gap between the peers' last chunk ends, the last chunk to TASK_DONE, LEARN's
assembling step (on which peer, how long after the last speaker), and the CPU seconds of
each peer's own process and of its workers, how long its processes waited, runnable, for
their core, what was not the peer's (the stage's wall time less that CPU: idle, or another
process on its core), and the bench driver's CPU (client, corpus server, sampler), when the
run was sampled, and the machine's CPU that was none of these (others': other processes and
kernel threads; on this shared host, other sessions' work, which a 1-peer run leaves on the
free core and a 2-peer run meets on a pinned one) and the hypervisor's steal.

    .venv/bin/python scripts/pinned_timeline.py /tmp/pinned/*.json
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

STAGES = {"fetch_festvox": None, "filter_longer": "fetch_festvox",
          "extract_mfcc": "filter_longer", "learn": "extract_mfcc"}  # stage -> the one before


def stage_line(x: dict[str, Any], stage: str) -> str:
    ch = x["chunks"]
    done = dict(ch["done_s"])
    before = STAGES[stage]
    start = done[before] if before else 0.0
    runs = ch[stage][:-1] if stage == "learn" else ch[stage]  # LEARN's last: the assembly
    ends: dict[str, float] = {}
    busy: dict[str, float] = {}
    for peer, _, a, b in runs:
        ends[peer] = max(ends.get(peer, 0.0), b)
        busy[peer] = busy.get(peer, 0.0) + b - a
    last = max(ends.values())
    first = min(c[2] for c in runs) - start
    per_peer = " ".join(f"{p} {v:.2f}" for p, v in sorted(busy.items()))
    s = (f"  {stage}: {done[stage] - start:.2f} s; first claim +{first:.2f}; busy {per_peer}"
         f"; last-chunk ends {last - min(ends.values()):.2f} apart; last chunk to done "
         f"{done[stage] - last:.2f}")
    if stage == "learn":
        red = ch[stage][-1]
        s += f" (assembly on {red[0]}, starts +{red[2] - last:.2f}, runs {red[3] - red[2]:.2f})"
    cpu = x.get("stage_cpu", {}).get(stage)
    if cpu:
        s += "; CPU s peer/workers (waited for the core) " + " ".join(
            f"p{i} {c[0]:.2f}/{c[1]:.2f}" + (f" ({c[2]:.2f})" if len(c) > 2 else "")
            for i, c in enumerate(cpu))
        # the stage's wall time less the CPU of the peer's own process and its workers: its
        # core was idle or ran something else (the other peer's, the driver's, anyone's)
        s += "; not the peer's " + " ".join(
            f"p{i} {done[stage] - start - c[0] - c[1]:.2f}" for i, c in enumerate(cpu))
    drv = x.get("driver_cpu", {}).get(stage)
    if drv is not None:
        s += f"; driver CPU {drv:.2f}"
    others = x.get("others_cpu", {}).get(stage)
    if others is not None:
        s += f"; others' CPU {others:.2f}, steal {x['steal_s'][stage]:.2f}"
    return s


def main(argv: Sequence[str]) -> int:
    for f in argv:
        r = json.loads(Path(f).read_text())
        for cfg in ("one", "two"):
            for x in r.get(cfg, []):
                print(f"{Path(f).name} {cfg}: total {x['seconds']:.2f} s, load "
                      f"{x['load1'][0]:.1f} -> {x['load1'][1]:.1f}")
                for stage in STAGES:
                    print(stage_line(x, stage))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
