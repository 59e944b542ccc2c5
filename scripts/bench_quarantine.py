#!/usr/bin/env python3
"""What quarantining costs once the quarantine is large: an EventLog on a temp file whose
quarantine holds `--held` rows of one origin, then `--new` events of that origin written and
quarantined in one call (`EventLog.quarantine`, as the door does when their fold raises), then
the same events again (anti-entropy brings a quarantined event back: no row is added). Run
with the lookup as shipped (`NOT_QUARANTINED`: `q.seq = +e.seq`, both columns of
`quarantine_id`) and as first written (`q.seq = e.seq`: SQLite used the origin column only).

    .venv/bin/python scripts/bench_quarantine.py [--held 20000] [--new 500]
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

from peer.log import Event, EventType
from peer.log import sqlite as sqlite_module
from peer.log.sqlite import EventLog

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scriptlib import machine

ORIGIN = "bench000000000000000"


def _events(first: int, n: int) -> list[Event]:
    return [Event(ORIGIN, s, s, EventType.PROVIDE, {"cids": [f"c{s}"]})
            for s in range(first, first + n)]


def run(lookup: str, held: int, new: int) -> tuple[float, float, int]:
    """Seconds to quarantine `new` fresh events, then the same again; rows at the end."""
    sqlite_module.NOT_QUARANTINED = lookup
    with tempfile.TemporaryDirectory() as d:
        log = EventLog(Path(d) / "e.sqlite")
        old = _events(1, held)
        log.append(old)
        log.quarantine([(e.id, "bench") for e in old])
        fresh = _events(held + 1, new)
        times = []
        for _ in range(2):
            log.append(fresh)
            t0 = time.perf_counter()
            log.quarantine([(e.id, "bench") for e in fresh])
            times.append(time.perf_counter() - t0)
        rows = log.quarantined()
        log.close()
    return times[0], times[1], rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--held", type=int, default=20_000)
    ap.add_argument("--new", type=int, default=500)
    a = ap.parse_args()
    logging.disable(logging.WARNING)  # (each quarantine logs its first rows)
    shipped = sqlite_module.NOT_QUARANTINED
    first = shipped.replace("q.seq = +e.seq", "q.seq = e.seq")
    print(f"Machine: {machine()}. {a.held} rows held, {a.new} new\n")
    print("| lookup | first quarantine (s) | the same again (s) | rows at the end |")
    print("| --- | ---: | ---: | ---: |")
    for name, lookup in (("q.seq = e.seq (origin only)", first),
                         ("q.seq = +e.seq (shipped)", shipped)):
        t1, t2, rows = run(lookup, a.held, a.new)
        print(f"| {name} | {t1:.3f} | {t2:.3f} | {rows:,} |")


if __name__ == "__main__":
    main()
