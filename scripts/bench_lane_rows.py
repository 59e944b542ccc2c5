#!/usr/bin/env python3
"""A peer's start with lanes off on a data dir that holds many lane rows (review r1 L3): its
peak RSS and wall time to its URL. The data dir: a peer's, started once (lanes on) and
stopped, then `--rows` lane rows (CLAIMs, `--lanes` lanes of one other peer) written into
its log, and one start and clean stop of the peer on it; its twin without them is the
baseline. Each start is `banzai-peer --no-lanes` on a
fresh copy (scriptlib.lone_peer), its peak RSS the peer process's VmHWM once it serves;
`--code` runs the peer of other source trees (a `git archive` of the code before) beside
this one's, in the order given, `--repeat` rounds.

    .venv/bin/python scripts/bench_lane_rows.py [--rows 1000000] [--lanes 100] [--repeat 1]
        [--code TREE ...] [--cache .cache/bench-lane-rows]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]  # scriptlib, and this tree's peer

from scriptlib import ROOT, lone_peer, machine  # noqa: E402

from peer.log import Event, EventType  # noqa: E402
from peer.log.lanes import lane  # noqa: E402
from peer.log.owner import LOG_FILE  # noqa: E402
from peer.log.sqlite import EventLog  # noqa: E402

PEER = "0123456789abcdef"  # the lanes' peer (not the data dir's own)
WRITE_ROWS = 10_000  # rows per append while building


def start(data_dir: Path, code: Path, extra: tuple[str, ...] = ()) -> tuple[int, float]:
    """Start a peer on `data_dir` (code of `code`), stop it: (its VmHWM in kB, seconds to
    its URL)."""
    t0 = time.monotonic()
    with lone_peer(data_dir, data_dir.parent / "peer.log", 1, mesh_prefix="bench-lane-rows",
                   log_level="WARNING", extra=extra, code=code) as (proc, _url):
        took = time.monotonic() - t0
        status = Path(f"/proc/{proc.pid}/status").read_text()
        hwm = next(int(ln.split()[1]) for ln in status.splitlines() if ln.startswith("VmHWM"))
    return hwm, took


def build(cache: Path, rows: int, lanes: int) -> tuple[Path, Path]:
    """The data dir without lane rows and with them (made once, kept in `cache`)."""
    empty, full = cache / "empty" / "data", cache / f"rows{rows}-lanes{lanes}" / "data"
    if not empty.exists():
        empty.parent.mkdir(parents=True, exist_ok=True)
        start(empty, ROOT)
    if not full.exists():
        tmp = full.parent / "building"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(empty, tmp)
        log = EventLog(tmp / LOG_FILE)
        jobs = [f"j{i:012x}" for i in range(lanes)]
        per = -(-rows // lanes)
        batch: list[Event] = []
        for i in range(rows):
            job, seq = jobs[i // per], i % per + 1
            batch.append(Event(lane(PEER, job), seq, seq, EventType.CLAIM, {
                "job": job, "task": f"t{seq}", "split": ["x", 1], "chunk": 0, "attempt": 0}))
            if len(batch) == WRITE_ROWS:
                log.append(batch, sync=False)
                batch = []
        log.append(batch, sync=False)
        log.close()
        # one clean start and stop on them: a peer's own stop leaves the rows it wrote
        # behind its inline outputs' durable mark (rows after the mark, written without a
        # peer, would be read back at every start as an unclean exit's: InlineOutputs)
        start(tmp, ROOT, ("--no-lanes",))
        tmp.rename(full)
    return empty, full


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--lanes", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--code", type=Path, nargs="*", default=[], help="other source trees")
    ap.add_argument("--cache", type=Path, default=ROOT / ".cache" / "bench-lane-rows")
    a = ap.parse_args()
    if a.rows < 1 or a.lanes < 1:
        ap.error("--rows and --lanes must be >= 1")
    empty, full = build(a.cache, a.rows, a.lanes)
    print(f"machine: {machine()}; {a.rows} lane rows in {a.lanes} lanes")
    print("| code | data dir | peak RSS MB (VmHWM) | s to URL |")
    print("| --- | --- | --- | --- |")
    for _ in range(a.repeat):
        for code in [ROOT, *a.code]:
            for name, src in (("no lane rows", empty), (f"{a.rows} lane rows", full)):
                with tempfile.TemporaryDirectory(prefix="bench-lane-rows-") as tmp:
                    d = Path(tmp) / "data"
                    shutil.copytree(src, d)
                    hwm, took = start(d, code, ("--no-lanes",))
                print(f"| {code} | {name} | {hwm / 1024:.1f} | {took:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
