"""What a peer spends per written TURN on its JSON encodings, its signature and its row (issue
12, session 48 helper e: one encoding per written event). In process, CPU time
(`time.process_time`) per TURN of `--per-turn` ECHO tasks with inline outputs (bench_receive's
frames: a CLAIM and a CHUNK_DONE with `done` per task), three rows:

- `sender`: what `Node.flush` does per TURN: `sign_events` (its content hash, one Ed25519
  signature) then `EventLog.append` (the row, one transaction, not fsynced);
- `receiver`: what a peer does with a received frame of one TURN: `MemberKeys.accept` (the
  batch's Ed25519 verify, the event's decode and validation, its content hash) then
  `EventLog.append`;
- `load`: what a start (`EventLog.load`) or a snapshot's serve (`stored_events`) does per
  row of the sender's log: decode it and check it against its signed batch (its content
  hash: the payload encoded again before; the row's text hashed as it is with one text);
- `encode`: the two encodings alone, the content hash's and the row's (`event_hash` and
  `compact` before; `event_hash(keep=True)` and `stored_text` with one text);
- `flush` (session 49 helper e): the whole of `Node.flush` per TURN: `sender`'s, then the
  push's frame (`pack_frames`: the wire form's encoding, the third before; the kept text
  since, `EventLog.append(keep_texts=True)`, dropped after).

Each rep writes `--turns` TURNs into a fresh log in a temporary directory. For an A/B, run it
with PYTHONPATH on each tree (a `git archive` copy of the base), alternating:

    PYTHONPATH=$PWD .venv/bin/python scripts/bench_encode.py --turns 400 --reps 5 --json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_receive import frames
from scriptlib import machine

from peer.jsontext import compact
from peer.log import Event
from peer.log.signing import Identity, MemberKeys, event_hash, peer_id_for, sign_events
from peer.log.sqlite import EventLog
from peer.mesh.wire import pack_frames

try:  # this release's one text (absent before session 48)
    from peer.log.signing import stored_text
except ImportError:
    stored_text = None  # type: ignore[assignment]
try:  # the push's kept text (absent before session 49)
    from peer.log.signing import drop_texts
except ImportError:
    drop_texts = None  # type: ignore[assignment]

ME = Identity.generate()
ID = peer_id_for(ME.key)


def _turns(turns: int, per_turn: int) -> list[dict[str, Any]]:
    """The wire objects of `turns` TURNs of one origin (the job's JOB_SUBMITTED left out),
    their origin our identity's id."""
    wire = frames(turns * per_turn, per_turn, True, 1_700_000_000_000 << 16, inline=True)
    out = []
    for raw in wire[1:]:
        d = json.loads(raw)
        d["origin"] = ID
        out.append(d)
    return out


def _fresh(objs: list[dict[str, Any]]) -> list[Event]:
    return [Event.from_json(json.loads(json.dumps(d))) for d in objs]


def _timed(fn: Callable[[], None]) -> float:
    t0 = time.process_time()
    fn()
    return time.process_time() - t0


def _sender(objs: list[dict[str, Any]], tmp: Path, rep: int) -> float:
    events = _fresh(objs)
    log = EventLog(tmp / f"s{rep}.db")

    def run() -> None:
        for e in events:  # one flush per TURN
            sign_events(ME, ID, [e], None)
            log.append([e], sync=False)
    took = _timed(run)
    log.close()
    return took / len(events)


def _flush(objs: list[dict[str, Any]], tmp: Path, rep: int) -> float:
    events = _fresh(objs)
    log = EventLog(tmp / f"f{rep}.db")
    keep = drop_texts is not None

    def run() -> None:
        for e in events:  # one flush per TURN, pushed in one frame
            sign_events(ME, ID, [e], None)
            if keep:
                log.append([e], sync=False, keep_texts=True)
            else:
                log.append([e], sync=False)
            pack_frames([e], 1 << 20, 512)
            if keep:
                drop_texts([e])
    took = _timed(run)
    log.close()
    return took / len(events)


def _load(tmp: Path, rep: int) -> float:
    log = EventLog(tmp / f"s{rep}.db")
    got: list[Event] = []
    took = _timed(lambda: got.extend(log.load()))
    assert log.quarantined() == 0 and all(e.att is not None for e in got)
    log.close()
    return took / len(got)


def _receiver(objs: list[dict[str, Any]], tmp: Path, rep: int) -> float:
    events = _fresh(objs)
    sign_events(ME, ID, events, None, max_batch=1)  # one batch per TURN, as flushed
    packed, _ = pack_frames(events, 1 << 30, 1)
    bodies = [([json.loads(e) for e in f.events], [json.loads(b) for b in f.batches])
              for f in packed]
    log = EventLog(tmp / f"r{rep}.db")
    keys = MemberKeys()

    def run() -> None:
        for raw, batches in bodies:  # one frame per TURN
            got = keys.accept(raw, batches)
            assert len(got) == 1
            log.append(got, sync=False)
    took = _timed(run)
    log.close()
    return took / len(bodies)


def _encode(objs: list[dict[str, Any]]) -> float:
    events = _fresh(objs)
    if stored_text is None:
        def run() -> None:
            for e in events:
                event_hash(e)
                compact(e.payload)
    else:
        def run() -> None:
            for e in events:
                event_hash(e, True)
                stored_text(e)
    return _timed(run) / len(events)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--turns", type=int, default=400, help="TURNs written per rep")
    ap.add_argument("--per-turn", type=int, default=6, help="tasks per TURN")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    objs = _turns(a.turns, a.per_turn)
    rows: dict[str, list[float]] = {"sender": [], "receiver": [], "load": [], "encode": [],
                                    "flush": []}
    with tempfile.TemporaryDirectory(prefix="bench-encode-") as d:
        tmp = Path(d)
        _sender(objs[:20], tmp, -1)  # (warm-up: imports, the first log's schema)
        for rep in range(a.reps):
            rows["sender"].append(_sender(objs, tmp, rep) * 1e6)
            rows["receiver"].append(_receiver(objs, tmp, rep) * 1e6)
            rows["load"].append(_load(tmp, rep) * 1e6)
            rows["encode"].append(_encode(objs) * 1e6)
            rows["flush"].append(_flush(objs, tmp, rep) * 1e6)
    out = {k: {"median_us": statistics.median(v), "min_us": min(v),
               "reps": [round(x, 1) for x in v]} for k, v in rows.items()}
    out["one_text"] = stored_text is not None  # type: ignore[assignment]
    out["wire_text"] = drop_texts is not None  # type: ignore[assignment]
    if a.json:
        print(json.dumps(out))
        return
    print(f"# {machine()}; {a.turns} TURNs of {a.per_turn} tasks per rep, {a.reps} reps; "
          f"one text: {stored_text is not None}")
    print(f"{'row':<10}{'median us/TURN':>16}{'min':>10}")
    for k, v in rows.items():
        print(f"{k:<10}{statistics.median(v):>16.1f}{min(v):>10.1f}")


if __name__ == "__main__":
    main()
