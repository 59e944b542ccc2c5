"""What a peer spends on another peer's short tasks (issue 12, fewer events per task): the
TURN frames a peer running whole tasks of an implicit-split job sends (per task a CLAIM and a
CHUNK_DONE, then a TASK_DONE, or with `--shape implied` the CHUNK_DONE's `done` instead),
parsed from their wire JSON bytes, decoded and merged into a peer one frame at a time
(`Node.merge`: the door's checks, the log's append, the fold, the listeners: the compactor
only, no scheduler),
then compacted once (the job's record, its cache entries into the job index). In process, CPU
time (`time.process_time`), so far less noisy than a mesh; what it leaves out (signatures,
sockets, the scheduler's rounds) is the same per TURN on both shapes.

    PYTHONPATH=$PWD .venv/bin/python scripts/bench_receive.py --shape implied --reps 5
    PYTHONPATH=$PWD .venv/bin/python scripts/bench_receive.py --gc-young-allocs 0  # Python's pace
    PYTHONPATH=$PWD .venv/bin/python scripts/bench_receive.py --jobs 500 --tasks 1
    PYTHONPATH=$PWD .venv/bin/python scripts/bench_receive.py --inline --listeners node

With `--inline` (with `--jobs` too), each CHUNK_DONE carries its output's blocks and its
run record's, as a runner's small outputs ride (the receiver checks them and, a replica
with no other peer live, writes them in the inline writer's thread: counted in the merge's
CPU, its passes in `inline_passes_per_job`); with
`--listeners node`, every listener a Node makes is told of the folded events (the
scheduler's note, the inline blocks, the replicator, IPNS, revocations; no loop runs, so
no scheduler step), not the compactor alone.

With `--jobs N`, N jobs of `--tasks` tasks each, as the peer that ran them sends them when
jobs are posted to it one at a time: per job its JOB_SUBMITTED (saying `local` and `claimed`:
its claims are implied) then one TURN (or the lone CHUNK_DONE of a one-task job) of the
CHUNK_DONEs with `done`; each frame merged with the scheduler listening too and one
`Scheduler.step` after it (as its loop wakes per received frame), then every job compacted
in one pass (`compact` per job: that pass over jobs).

With `--frames-per-merge K`, K frames in a row go into one `Node.merge` (one transaction,
one fsync for the submissions among them, one scheduler step): what a receiver that merged
the frames of a receive turn together would spend if K arrived per turn (issue 12; a peer
merges each frame on its own). Against K = 1 it bounds what that batching can save.

With `--jobs N --non-member K,...`, the same run also measures, alternated with today's
receiver rep by rep, a peer that is no member of the N jobs under partial replication
(docs/design/partial-replication.md, section 3; its falsifier 2): per job its JOB_SUBMITTED
merged without the fsync and the acknowledgement, then a JOB_ENDED (type 26, kept unfolded
by this release) whose fold is emulated with today's functions (the outputs' cache entries
and providers, the job's row in the job index), K jobs' events a frame (0: one event a
frame), the scheduler's step after each frame, then one compaction pass (the jobs leave
memory, their events the log).

    PYTHONPATH=$PWD .venv/bin/python scripts/bench_receive.py --jobs 300 --tasks 1 --non-member 0,10

Run it with PYTHONPATH on a `git archive` copy of another commit for an A/B (`--shape
explicit` only on a release without implied completions).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import gc
import hashlib
import json
import pstats
import statistics
import sys
import tempfile
import time
from collections.abc import Coroutine, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scriptlib import machine

from peer.cids import RAW, sha256_cid
from peer.config import PeerConfig
from peer.ipfs.inline import encode as inline_encode
from peer.ipfs.inline import import_bytes, import_small
from peer.log import Event, EventType, turn_event
from peer.log.clock import hlc_ms
from peer.log.compact import _pairs, _spill
from peer.log.events import JobSubmitted
from peer.log.jobindex import OUTPUT, CacheEntry, JobRecord
from peer.log.snapframe import job_digest3, outputs_sha
from peer.node import Node

try:  # the collector's pace of a peer's process (absent from releases before session 20)
    from peer import gcpace
except ImportError:
    gcpace = None  # type: ignore[assignment]

T = TypeVar("T")
ORIGIN = "bench0000000000000000"  # the peer that ran the tasks
RUNNER = "be0c0000000000000000"  # its peer id in a JOB_ENDED's producers (a real id's form)
JOB_ENDED = EventType(26)  # partial replication's end of a job (not folded by this release)


def _cid(s: str) -> str:
    """A CID as a peer's content store makes them (a raw CIDv1 of `s`): the compactor
    checks each one it writes into the job index (a malformed one is logged, per task)."""
    return str(sha256_cid(s.encode(), RAW, 1))


def _inline_output(i: int, scratch: Path) -> tuple[str, str, dict[str, str]]:
    """Task `i`'s output directory (a result file), its run record (a raw block) and their
    blocks as they ride in a CHUNK_DONE (`inline`), as a runner makes them (`--inline`)."""
    out = scratch / f"out{i}"
    out.mkdir()
    (out / "result.json").write_text(json.dumps({"text": str(i)}))
    small = import_small(out, 1024)
    assert small is not None
    record = json.dumps({"task": f"t{i}", "exit": 0, "stdout": "", "s": 0.002}).encode()
    log_cid, log_blocks = import_bytes(record)
    return small[0], log_cid, inline_encode({**small[1], **log_blocks})


def frames(tasks: int, per_turn: int, implied: bool, start_hlc: int,
           inline: bool = False) -> list[bytes]:
    """The wire JSON (bytes) of one flagged job of `tasks` ECHO tasks and of the TURNs that
    ran them, `per_turn` tasks a turn (as `Node.flush` sends them); with `inline`, each
    CHUNK_DONE carries its output's and run record's blocks (`_inline_output`)."""
    job = "bench-job"
    wf = {"name": job, "splits": "implicit",
          "tasks": [{"name": f"t{i}", "call": "ECHO", "params": {"text": str(i)}}
                    for i in range(tasks)]}
    sub = Event(ORIGIN, 1, start_hlc, EventType.JOB_SUBMITTED, {"job": job, "workflow": wf})
    out = [_wire(sub)]
    seq, hlc = 1, start_hlc
    scratch = tempfile.TemporaryDirectory(prefix="bench-receive-out-")
    for first in range(0, tasks, per_turn):
        seq += 1
        hlc += 1
        parts = []
        for i in range(first, min(first + per_turn, tasks)):
            base = {"job": job, "task": f"t{i}", "split": list(sub.id), "chunk": 0,
                    "attempt": 0}
            out_cid = _cid(f"{job}/t{i}")
            key = hashlib.sha256(f"key/{i}".encode()).hexdigest()
            done = {**base, "output": out_cid, "cache": {}, "log": _cid(f"log/{i}"), "s": 0.002}
            if inline:
                done["output"], done["log"], done["inline"] = _inline_output(
                    i, Path(scratch.name))
                out_cid = done["output"]
            if implied:
                done["done"] = {"key": key}
            parts.append(Event(ORIGIN, seq, hlc, EventType.CLAIM, base))
            parts.append(Event(ORIGIN, seq, hlc, EventType.CHUNK_DONE, done))
            if not implied:
                parts.append(Event(ORIGIN, seq, hlc, EventType.TASK_DONE,
                                   {"job": job, "task": f"t{i}", "output": out_cid, "key": key,
                                    "cached": False}))
        out.append(_wire(turn_event(parts)))
    scratch.cleanup()
    return out


def _posted_jobs(jobs: int, tasks: int, start_hlc: int,
                   ) -> Iterator[tuple[Event, int, int, list[tuple[str, str, str, str]]]]:
    """Per job of `job_frames`: its JOB_SUBMITTED, then the (seq, hlc) of the runner's next
    event (the one that ends it) and its tasks' (name, cache key, output CID, log CID)."""
    seq, hlc = 0, start_hlc
    for j in range(jobs):
        job = f"bench-job-{j}"
        wf = {"name": job, "splits": "implicit",
              "tasks": [{"name": f"t{i}", "call": "ECHO", "params": {"text": f"{j}/{i}"}}
                        for i in range(tasks)]}
        seq, hlc = seq + 1, hlc + 1
        sub = Event(ORIGIN, seq, hlc, EventType.JOB_SUBMITTED,
                    {"job": job, "workflow": wf, "local": True, "claimed": True})
        seq, hlc = seq + 1, hlc + 1
        yield sub, seq, hlc, [
            (f"t{i}", hashlib.sha256(f"key/{j}/{i}".encode()).hexdigest(),
             _cid(f"{job}/t{i}"), _cid(f"log/{j}/{i}")) for i in range(tasks)]


def job_frames(jobs: int, tasks: int, start_hlc: int, inline: bool = False) -> list[bytes]:
    """The wire JSON (bytes) of `jobs` one-turn jobs of `tasks` ECHO tasks each, as a peer
    sends the jobs posted to it (`--jobs`): a JOB_SUBMITTED that claims its tasks, then one
    TURN of their CHUNK_DONEs with `done` (the lone event of a one-task job); with `inline`,
    each CHUNK_DONE carries its output's and run record's blocks (`_inline_output`)."""
    out = []
    scratch = tempfile.TemporaryDirectory(prefix="bench-receive-out-")
    for n, (sub, seq, hlc, done) in enumerate(_posted_jobs(jobs, tasks, start_hlc)):
        job = sub.payload["job"]
        out.append(_wire(sub))
        parts = []
        for i, (task, key, out_cid, log_cid) in enumerate(done):
            body = {"job": job, "task": task, "split": list(sub.id), "chunk": 0,
                    "attempt": 0, "output": out_cid, "cache": {}, "log": log_cid, "s": 0.002,
                    "done": {"key": key}}
            if inline:
                body["output"], body["log"], body["inline"] = _inline_output(
                    n * tasks + i, Path(scratch.name))
            parts.append(Event(ORIGIN, seq, hlc, EventType.CHUNK_DONE, body))
        out.append(_wire(turn_event(parts)))
    scratch.cleanup()
    return out


def non_member_frames(jobs: int, tasks: int, start_hlc: int, per_frame: int) -> list[bytes]:
    """The wire JSON (bytes: a list of events) of `job_frames`' jobs as a peer that is no
    member of them would get them under partial replication (docs/design/
    partial-replication.md, section 3): per job its JOB_SUBMITTED, then in the CHUNK_DONE's
    place a JOB_ENDED (type 26, folded since lanes step 2) carrying the outputs, each with
    its cache key and the (hlc, origin, seq) of the completion in the job's lane. The job
    names the runner its member (`members`): the JOB_ENDED is the runner's (its seq n for
    the n-th job, the JOB_SUBMITTED's the same in the submitter's stream), just after the
    completion in the runner's lane (who may end a job: lanes step 6, `fold.end_refusal`;
    so the n-th job is named as a lanes job is, `ids.new_job_id`'s form: "j" and n in 12
    hex digits), and the receiver, no member, makes no implicit split nor implied claim of
    the job. `per_frame` jobs' events a frame (step 11's batched push); 0: one event a
    frame (pushed as today, two frames a job)."""
    events = []
    for n, (sub, _seq, hlc, done) in enumerate(_posted_jobs(jobs, tasks, start_hlc), 1):
        job = f"j{n:012x}"
        sub = Event(sub.origin, n, sub.hlc, sub.type,
                    {**sub.payload, "job": job, "members": [RUNNER]})
        lane = f"{RUNNER}/{job}"
        outputs = {task: [key, out_cid, hlc, lane, 1] for task, key, out_cid, _ in done}
        cids = [out_cid for _, _, out_cid, _ in done]
        events += [sub, Event(RUNNER, n, hlc + 1, JOB_ENDED, {
            "job": job, "state": "done", "n_tasks": tasks, "end": hlc, "outputs": outputs,
            "producers": {c: [RUNNER] for c in cids}, "failed": {},
            "digest": job_digest3(job, sub.hlc, sub.origin, sub.seq, hlc, "done",
                                  outputs_sha(cids))})]
    step = 2 * per_frame or 1
    return [json.dumps([e.to_json() for e in events[i:i + step]],
                       separators=(",", ":")).encode() for i in range(0, len(events), step)]


def _wire(ev: Event) -> bytes:
    return json.dumps(ev.to_json(), separators=(",", ":")).encode()


class _Phases:
    """cProfile of the merge and of the compaction, each over every repetition (`--profile`);
    without it, timing only."""

    def __init__(self, on: bool) -> None:
        self.profiles = {"merge": cProfile.Profile(), "compact": cProfile.Profile()} if on \
            else {}

    @contextlib.contextmanager
    def of(self, phase: str) -> Iterator[None]:
        p = self.profiles.get(phase)
        if p is None:
            yield
            return
        p.enable()
        try:
            yield
        finally:
            p.disable()

    def print(self, top: int) -> None:
        for phase, p in self.profiles.items():
            print(f"== {phase}: top {top} by own time", file=sys.stderr)
            pstats.Stats(p, stream=sys.stderr).sort_stats("tottime").print_stats(top)


def _merges(wire: list[bytes], per_merge: int) -> Iterator[list[Event]]:
    """The frames' events, `per_merge` frames in a row at a time, parsed and decoded as a
    receiver does: what one `Node.merge` takes (one frame, as a peer merges them, or the
    frames of one receive turn if it merged those together)."""
    for i in range(0, len(wire), per_merge):
        yield [Event.from_json(json.loads(w)) for w in wire[i:i + per_merge]]


def once(tasks: int, per_turn: int, implied: bool,
         phases: _Phases | None = None, per_merge: int = 1, inline: bool = False,
         listeners: str = "compactor") -> dict[str, float]:
    phases = phases or _Phases(False)
    wire = frames(tasks, per_turn, implied, (int(time.time() * 1000) - 60_000) << 16, inline)
    with tempfile.TemporaryDirectory(prefix="bench-receive-") as d:
        node = Node(PeerConfig(data_dir=Path(d), slots=1, mdns=False,
                               compact_recent_tasks=0))
        if listeners == "compactor":  # nothing runs here: the compactor listens
            node.listeners[:] = [node.compactor.note]
        try:
            node.merge([Event.from_json(json.loads(wire[0]))])
            gc.collect()  # what earlier repetitions left is not collected in this one's time
            before = [st["collections"] for st in gc.get_stats()]
            t0 = time.process_time()
            with phases.of("merge"):
                for events in _merges(wire[1:], per_merge):
                    node.merge(events)
            collections = [st["collections"] - b for st, b in zip(gc.get_stats(), before,
                                                                 strict=True)]
            if node.inline_outputs is not None:  # (`--inline`: its writer's passes counted)
                node.inline_outputs.pool.shutdown(wait=True)
            merged = time.process_time() - t0
            done = sum(1 for k in node.state.task_done if k[0] == "bench-job")
            if done != tasks:
                raise SystemExit(f"{done} of {tasks} tasks done: this code does not fold "
                                 f"the {'implied' if implied else 'explicit'} shape")
            t0 = time.process_time()
            with phases.of("compact"):
                node.catchup.compact()
            compacted = time.process_time() - t0
            if "bench-job" not in node.state.compacted:
                raise SystemExit("the job was not compacted")
        finally:
            node.log.close()
    parts = sum(len(json.loads(w)["payload"]["parts"]) for w in wire[1:])
    size = sum(len(w) for w in wire[1:])
    return {"merge_us_per_task": merged / tasks * 1e6,
            "compact_us_per_task": compacted / tasks * 1e6,
            "parts_per_task": parts / tasks, "frame_bytes_per_task": size / tasks,
            "young_collections": collections[0], "middle_collections": collections[1],
            "full_collections": collections[2]}


async def _merge_jobs(node: Node, wire: list[bytes], per_merge: int = 1) -> None:
    """Each frame merged as a peer's loop does (a received submission fsynced in a thread
    meanwhile: `Node._sync_received`), then the scheduler's step; the fsync awaited before
    the next frame (a job at a time). With `per_merge` K > 1, K frames in a row merged in
    one `Node.merge` (one transaction, one fsync), one step after them: what a receiver
    that merged the frames of one receive turn together would spend when K arrive in it."""
    node._loop = asyncio.get_running_loop()
    for events in _merges(wire, per_merge):
        node.merge(events)
        node.scheduler.step()
        if node._syncer is not None:
            await node._syncer
    if node.inline_outputs is not None:  # (`--inline`: every writer's pass counted)
        await node.inline_outputs.landed()
    node._loop = None


def _receiver(d: str) -> Node:
    """A peer on data dir `d` that receives another peer's jobs: its scheduler and its
    compactor listen (every job's events compacted once it ends)."""
    node = Node(PeerConfig(data_dir=Path(d), slots=1, mdns=False, compact_recent_tasks=0))
    node.listeners[:] = [node.scheduler.poke, node.compactor.note]
    return node


def _merged(phases: _Phases, merging: Coroutine[Any, Any, T]) -> tuple[float, list[int], T]:
    """Run `merging` (what was left of earlier repetitions collected first): its CPU
    seconds, the garbage collections by generation meanwhile, and its result."""
    gc.collect()
    before = [st["collections"] for st in gc.get_stats()]
    t0 = time.process_time()
    with phases.of("merge"):
        out = asyncio.run(merging)
    merged = time.process_time() - t0
    return merged, [st["collections"] - b for st, b in zip(gc.get_stats(), before,
                                                           strict=True)], out


def once_jobs(jobs: int, tasks: int, phases: _Phases | None = None, per_merge: int = 1,
              inline: bool = False) -> dict[str, float]:
    """`--jobs`: CPU per job of merging (with the scheduler's step after each merge of
    `per_merge` frames) and of compacting another peer's `jobs` jobs; with `inline`, their
    outputs ride inline and are written here (the inline writer's passes counted in the
    merge's CPU)."""
    phases = phases or _Phases(False)
    wire = job_frames(jobs, tasks, (int(time.time() * 1000) - 60_000) << 16, inline)
    with tempfile.TemporaryDirectory(prefix="bench-receive-") as d:
        node = _receiver(d)
        passes = [0]  # the inline writer's passes (one store call each)
        if inline and node.inline is not None:  # (the inline keeper listens too)
            node.listeners.append(node.inline.on_event)
            keep = node.store.keep_inline
            node.store.keep_inline = (  # type: ignore[method-assign]
                lambda blocks, roots: passes.__setitem__(0, passes[0] + 1) or keep(blocks, roots))
        try:
            merged, collections, _ = _merged(phases, _merge_jobs(node, wire, per_merge))
            done = sum(1 for k in node.state.task_done if k[0].startswith("bench-job-"))
            if done != jobs * tasks:
                raise SystemExit(f"{done} of {jobs * tasks} tasks done")
            t0 = time.process_time()
            with phases.of("compact"):
                node.catchup.compact()
            compacted = time.process_time() - t0
            left = sum(1 for j in range(jobs) if f"bench-job-{j}" not in node.state.compacted)
            if left:
                raise SystemExit(f"{left} of {jobs} jobs not compacted")
        finally:
            node.log.close()
    return {"merge_us_per_job": merged / jobs * 1e6,
            "compact_us_per_job": compacted / jobs * 1e6,
            "total_us_per_job": (merged + compacted) / jobs * 1e6,
            "frame_bytes_per_job": sum(len(w) for w in wire) / jobs,
            "inline_passes_per_job": passes[0] / jobs,
            "young_collections": collections[0], "middle_collections": collections[1],
            "full_collections": collections[2]}


def _end_job(node: Node, ended: Sequence[Event]) -> None:
    """What a non-member would do with each JOB_ENDED of `ended` once merged (design,
    section 3) beyond the fold, which put each output in the cache (the completion's order)
    and its producers in the providers (`fold._job_ended`, lanes step 2): the job's record
    is a thin row made from its JOB_SUBMITTED and the summary (`JobIndex.put`, the cache
    and provider rows with it, one transaction for all of `ended`) instead of a compaction
    of its task events; the entries leave memory (the index has them). What a build would
    store differs in one column: the record, here `{}` where a thin row holds '' (fetched
    on demand). The jobs leave memory at the next compaction pass (`once_non_member`)."""
    state = node.state
    records: list[JobRecord] = []
    entries: list[CacheEntry] = []
    cids: list[str] = []
    for ev in ended:
        b = ev.payload
        job, end_ms = b["job"], hlc_ms(b["end"])
        sub = state.jobs[job]
        for key, *_ in b["outputs"].values():
            entries.append(CacheEntry(OUTPUT, key, state.outputs[key],
                                      state._outputs_src[key]))
        cids += b["producers"]
        tasks = sub.body_as(JobSubmitted).workflow["tasks"]
        outputs = {t: o[1] for t, o in b["outputs"].items()}
        summary = {"id": job, "name": sub.payload["workflow"].get("name", job),
                   "state": b["state"], "submitted_by": sub.origin,
                   "submitted_ms": hlc_ms(sub.hlc), "finished_ms": end_ms,
                   "duration_s": (end_ms - hlc_ms(sub.hlc)) / 1000, "progress": 1.0,
                   "outputs": outputs, "tasks": [{"name": t["name"], "state": "done",
                                                  "progress": 1.0} for t in tasks]}
        facts = {"finished_s": end_ms / 1000, "outputs": sorted(set(outputs.values())),
                 "logs": []}
        records.append(JobRecord(job, sub.order, b["end"], b["state"], summary, {},
                                 (sub.id, ev.id), facts))
    node.index.put(records, entries, _pairs(state, cids), cids)
    _spill(state, entries, cids)


async def _merge_non_member(node: Node, wire: list[bytes]) -> float:
    """Each frame merged as a peer's loop does, but as a non-member would (design, section
    3): its JOB_SUBMITTEDs not fsynced nor acknowledged (`Node._sync_received` left out),
    its JOB_ENDEDs ended (`_end_job`), then the scheduler's step. Returns the CPU seconds
    spent ending jobs (within the merge's)."""
    node._loop = asyncio.get_running_loop()  # (received events are not fsynced in line)
    node._sync_received = lambda *_a, **_k: 0  # type: ignore[method-assign]
    node.state.lanes_on = True  # (JOB_ENDEDs folded: partial replication on)
    ending = 0.0
    for w in wire:
        new = node.merge([Event.from_json(d) for d in json.loads(w)])
        ended = [e for e in new if e.type == JOB_ENDED]
        if ended:
            t0 = time.process_time()
            _end_job(node, ended)
            ending += time.process_time() - t0
        node.scheduler.step()
    node._loop = None
    return ending


def once_non_member(jobs: int, tasks: int, per_frame: int, phases: _Phases | None = None,
                    ) -> dict[str, float]:
    """`--non-member`: CPU per job of a peer that is no member of another peer's `jobs`
    jobs (`non_member_frames`, `per_frame` jobs a frame, 0: one event a frame): the merges
    with the scheduler's step after each and the jobs' ends (`_end_job`), then one
    compaction pass: the ended jobs leave memory (`MeshState.compact`, what a build's pass
    would do of the jobs whose JOB_ENDED it holds) and their events the log, as today's
    pass does of compacted jobs'."""
    phases = phases or _Phases(False)
    wire = non_member_frames(jobs, tasks, (int(time.time() * 1000) - 60_000) << 16, per_frame)
    with tempfile.TemporaryDirectory(prefix="bench-receive-") as d:
        node = _receiver(d)
        try:
            merged, collections, ending = _merged(phases, _merge_non_member(node, wire))
            if len(node.index) != jobs or node._syncing:
                raise SystemExit(f"{len(node.index)} of {jobs} jobs ended, "
                                 f"{len(node._syncing)} fsyncs pending")
            t0 = time.process_time()
            with phases.of("compact"):
                node.compactor._compact_state([f"bench-job-{j}" for j in range(jobs)])
                node.catchup.compact()
            compacted = time.process_time() - t0
            if node.state.jobs or node.log.db.execute("SELECT count(*) FROM events").fetchone()[0]:
                raise SystemExit("the ended jobs are still in memory or their events in "
                                 "the log")
        finally:
            node.log.close()
    return {"merge_us_per_job": merged / jobs * 1e6, "end_us_per_job": ending / jobs * 1e6,
            "compact_us_per_job": compacted / jobs * 1e6,
            "total_us_per_job": (merged + compacted) / jobs * 1e6,
            "frames_per_job": len(wire) / jobs,
            "frame_bytes_per_job": sum(len(w) for w in wire) / jobs,
            "young_collections": collections[0], "middle_collections": collections[1],
            "full_collections": collections[2]}


def _stats(runs: Sequence[dict[str, float]]) -> dict[str, dict[str, float]]:
    """Median, min and max of each figure over the repetitions."""
    out = {}
    for k in runs[0]:
        vals = [r[k] for r in runs]
        out[k] = {"median": round(statistics.median(vals), 2),
                  "min": round(min(vals), 2), "max": round(max(vals), 2)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shape", choices=("explicit", "implied"), default="implied")
    ap.add_argument("--tasks", type=int, default=2000)
    ap.add_argument("--per-turn", type=int, default=5)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--jobs", type=int, default=0,
                    help="N jobs of --tasks tasks each, each submitted and run by another "
                    "peer in one turn (figures per job); 0: one job of --tasks tasks")
    ap.add_argument("--frames-per-merge", type=int, default=1, metavar="K",
                    help="K frames in a row merged in one Node.merge (what a "
                    "receiver merging each receive turn's frames together spends when K "
                    "arrive in one turn); 1: one merge per frame, as a peer does")
    ap.add_argument("--non-member", default="", metavar="K,...",
                    help="with --jobs: also, in the same run (alternated with today's "
                    "receiver, rep by rep), a peer that is no member of the jobs (partial "
                    "replication's design: their JOB_SUBMITTEDs not fsynced nor acknowledged, "
                    "a JOB_ENDED instead of their tasks' events), K jobs' events a frame "
                    "for each K given (0: one event a frame)")
    ap.add_argument("--gc-young-allocs", type=int, default=None,
                    help="the collector's pace as a peer's --gc-young-allocs (default: the "
                    "peer's, or Python's on a release without peer.gcpace; 0: Python's)")
    ap.add_argument("--inline", action="store_true",
                    help="each CHUNK_DONE carries its output's and run record's blocks "
                    "(as a runner's small outputs ride), checked and written by the receiver")
    ap.add_argument("--listeners", choices=("compactor", "node"), default="compactor",
                    help="who is told of the folded events: the compactor only, or every "
                    "listener a Node makes (scheduler, compactor, inline blocks, replicator, "
                    "IPNS, revocations)")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--profile", type=int, default=0, metavar="TOP",
                    help="cProfile the merge and the compaction apart (over all repetitions; "
                    "times then include the profiler's cost) and print each one's TOP "
                    "functions by own time to stderr")
    a = ap.parse_args()
    young = a.gc_young_allocs
    if gcpace is not None:
        if young is None:
            young = PeerConfig.__dataclass_fields__["gc_young_allocs"].default
        gcpace.apply(gcpace.GcPace(young))
    elif young:  # a release without peer.gcpace: the same thresholds, set here
        gc.set_threshold(young, 50, 100)
    phases = _Phases(a.profile > 0)
    per_frame = [int(k) for k in a.non_member.split(",") if k]
    if per_frame and not a.jobs:
        ap.error("--non-member needs --jobs")
    non_member: dict[int, list[dict[str, float]]] = {k: [] for k in per_frame}
    if a.jobs:
        runs = []
        for _ in range(a.reps):
            runs.append(once_jobs(a.jobs, a.tasks, phases, a.frames_per_merge, a.inline))
            for k in per_frame:
                non_member[k].append(once_non_member(a.jobs, a.tasks, k, phases))
    else:
        runs = [once(a.tasks, a.per_turn, a.shape == "implied", phases, a.frames_per_merge,
                     a.inline, a.listeners) for _ in range(a.reps)]
    phases.print(a.profile)
    out: dict[str, Any] = {"shape": "jobs" if a.jobs else a.shape, "jobs": a.jobs,
                           "tasks": a.tasks, "per_turn": a.per_turn,
                           "frames_per_merge": a.frames_per_merge,
                           "gc_young_allocs": young, "gc_threshold": gc.get_threshold(),
                           "machine": machine()}
    out.update(_stats(runs))
    if per_frame:
        out["non_member"] = {str(k): _stats(r) for k, r in non_member.items()}
    print(json.dumps(out))
    if a.json:
        a.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
