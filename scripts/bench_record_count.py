"""How long a run record's JSON values take to count, on a record whose strings never close
(every quote escaped: review r2 of session 51, H1): session 51 helper g's regex (kept here as
the reference it was) against `peer.http.app.json_values_at_most`, one linear pass.

    env PYTHONPATH=. .venv/bin/python scripts/bench_record_count.py
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable

from peer.http.app import json_values_at_most

OLD = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)  # (helper g's, replaced)


def hostile(n: int) -> bytes:
    return b'"' + b'\\",' * n


def timed(fn: Callable[[bytes], object], data: bytes) -> float:
    t = time.perf_counter()
    fn(data)
    return time.perf_counter() - t


def old_count(data: bytes) -> object:
    return OLD.sub(b'""', data)


def main() -> None:
    print("| input | bytes | old regex s | one pass s |")
    print("| --- | ---: | ---: | ---: |")
    for n in (2_000, 4_000, 8_000, 300_000, 3_000_000):
        d = hostile(n)
        old = f"{timed(old_count, d):.3f}" if n <= 8_000 else "(not run)"
        print(f"| never closed, n={n:,} | {len(d):,} | {old} "
              f"| {timed(json_values_at_most, d):.4f} |")


if __name__ == "__main__":
    main()
