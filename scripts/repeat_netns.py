#!/usr/bin/env python3
"""Repeat the two self-repair namespace scenarios of issue 11 (tests/integration/
repair_scenarios.py) N times in a row and print a per-run result table; exit 1 if any run
stalled or failed. Needs root and `ip netns`.

    sudo PYTHONPATH=$PWD .venv/bin/python scripts/repeat_netns.py --runs 10
    ... --scenario kill_all --runs 3 --quick     # the suite's cheap settings

Full settings (default): 24 items of 0.5 s, the cut-off peer away for 120 s, a 3 s lease,
at most 180 s per job; --quick: the suite's (6 items of 0.3 s, not kept away).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.integration import netns, repair_scenarios
from tests.integration.repair_scenarios import Settings

FULL = Settings(files=24, item_s=0.5, away_s=120.0, lease_s=3.0, timeout_s=180.0)
QUICK = Settings(files=6, item_s=0.3, away_s=0.0, lease_s=3.0, timeout_s=60.0)
SCENARIOS = {"cut_off": repair_scenarios.cut_off, "kill_all": repair_scenarios.kill_all}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--scenario", choices=[*SCENARIOS, "both"], default="both")
    ap.add_argument("--quick", action="store_true", help="the suite's cheap settings")
    ap.add_argument("--keep", action="store_true", help="keep the peers' data and logs")
    a = ap.parse_args()
    if reason := netns.unavailable_reason():
        print(f"cannot run: {reason}", file=sys.stderr)
        return 2
    netns.sweep_stale()
    settings = QUICK if a.quick else FULL
    names = list(SCENARIOS) if a.scenario == "both" else [a.scenario]
    rows: list[tuple[int, str, str, float, str]] = []
    for i in range(1, a.runs + 1):
        for name in names:
            tmp = Path(tempfile.mkdtemp(prefix=f"repeat-{name}-{i}-"))
            t0 = time.monotonic()
            try:
                r = SCENARIOS[name](tmp, settings)
                result, detail = "ok", ", ".join(f"{k}={v}" for k, v in r.items()
                                                 if k not in ("scenario", "ok"))
            except Exception as e:  # a stall (AssertionError) or a broken run: reported
                result = "STALL" if isinstance(e, AssertionError) else "ERROR"
                detail = str(e).splitlines()[0][:160] if str(e) else type(e).__name__
                traceback.print_exc()
                print(f"logs kept in {tmp}", file=sys.stderr)
            took = time.monotonic() - t0
            rows.append((i, name, result, took, detail))
            print(f"run {i:2d} {name:8s} {result:5s} {took:6.1f} s  {detail}", flush=True)
            if result == "ok" and not a.keep:
                shutil.rmtree(tmp, ignore_errors=True)
    print(f"\n{'run':>3}  {'scenario':8}  {'result':6}  {'seconds':>7}  detail")
    for i, name, result, took, detail in rows:
        print(f"{i:3d}  {name:8}  {result:6}  {took:7.1f}  {detail}")
    bad = sum(1 for r in rows if r[2] != "ok")
    print(f"\n{len(rows) - bad}/{len(rows)} runs ok ({'quick' if a.quick else 'full'} settings)")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
