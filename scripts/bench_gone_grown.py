"""What a compaction pass costs to write a gone lanes job's grown facts when a late vouched
JOB_MEMBERS added one member since the last pass (review r3 of session 48, F4's rest): the
whole `gone_vouched` row read, united and written again (`JobIndex._vouched_rows`), and the
compacted record regrown (`Compactor._regrown`: read, then written with every member), at
N members. A real JobIndex on a file in a temporary directory; CPU and wall per pass,
median of REPS.

    env PYTHONPATH=. .venv/bin/python scripts/bench_gone_grown.py [N ...]
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

from peer.log.jobindex import JobIndex, JobRecord
from peer.log.sqlite import connect

REPS = 7
JOB = "j0000000000f1"


def _peer(i: int) -> str:
    return f"{i:020x}"


def bench(n: int) -> tuple[float, float, float, float]:
    with tempfile.TemporaryDirectory() as d:
        db = connect(str(Path(d) / "index.sqlite"), isolation_level=None)
        index = JobIndex(db)
        members = {_peer(i) for i in range(n)}
        named = {"members": sorted(members)}
        index.put([JobRecord(JOB, (1, "a", 1), 2, "done", {"job": JOB, **named},
                             {"job": JOB, "tasks": [], **named})], (), (),
                  vouched=[(JOB, members, members)])
        row_s, row_cpu, rec_s, rec_cpu = [], [], [], []
        for k in range(REPS):
            members.add(_peer(n + k))  # (one more member since the last pass)
            w, c = time.perf_counter(), time.process_time()
            index.put([], (), (), vouched=[(JOB, members, members)])
            row_s.append(time.perf_counter() - w)
            row_cpu.append(time.process_time() - c)
            w, c = time.perf_counter(), time.process_time()
            held = index.full(JOB)
            assert held is not None
            m = {"members": sorted({*members, *held.summary["members"]})}
            index.put([JobRecord(JOB, held.order, held.ended_hlc, held.state,
                                 {**held.summary, **m}, {**held.record, **m}, (), held.facts)],
                      (), ())
            rec_s.append(time.perf_counter() - w)
            rec_cpu.append(time.process_time() - c)
        db.close()
    med = statistics.median
    return med(row_s), med(row_cpu), med(rec_s), med(rec_cpu)


def main() -> None:
    sizes = [int(a) for a in sys.argv[1:]] or [100, 1_000, 10_000, 100_000]
    print("members  row wall ms  row cpu ms  record wall ms  record cpu ms")
    for n in sizes:
        r, rc, c, cc = bench(n)
        print(f"{n:>7}  {r * 1e3:11.2f}  {rc * 1e3:10.2f}  {c * 1e3:14.2f}  {cc * 1e3:13.2f}")


if __name__ == "__main__":
    main()
