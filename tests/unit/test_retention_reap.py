"""The job index's rows of a task output leave it once output retention unpinned it: the
producer's storage cycle unpins and collects its inline output (a row of the store's inline
pack), says so (UNPROVIDE), and the next compaction pass deletes the output's cache entry and
provider row (`Compactor._reap`). What bounds `cache_index` and `provider_index` in a mesh
left running (docs/benchmarks.md, "What the job index's cache rows are"). A real node on a
temp dir, no scheduler running (as test_compaction)."""

from __future__ import annotations

import time
from pathlib import Path

from peer.cids import parse_cid, sha256_cid
from peer.config import PeerConfig
from peer.jobs.retention import UNNAMED_MIN_AGE_S
from peer.log import Event, EventType
from peer.log.jobindex import OUTPUT
from peer.node import Node


def _open(d: Path, opened: list[Node], keep_outputs_days: float | None) -> Node:
    n = Node(PeerConfig(data_dir=d, slots=1, mdns=False, compact_recent_tasks=0,
                        keep_outputs_days=keep_outputs_days, gc_grace_s=0))
    n.listeners[:] = [n.compactor.note]  # no scheduler running: only the compactor listens
    opened.append(n)
    return n


def _inline_output(n: Node, job: str, text: str) -> str:
    """A finished job of one task whose output is an inline output of `n` (a row of its
    store's inline pack, pinned there, as its producer keeps it), emitted by `n` itself."""
    data = text.encode()
    cid = str(sha256_cid(data, "raw", 1))
    n.store.keep_inline({parse_cid(cid): data}, [cid])
    n.emit(EventType.JOB_SUBMITTED, {"job": job, "workflow": {"name": job, "tasks": [
        {"name": "t0", "call": "ECHO", "params": {"text": text}}]}})
    split = n.emit(EventType.TASK_SPLIT, {"job": job, "task": "t0", "input": None,
                                          "chunks": [[]]})
    base = {"job": job, "task": "t0", "split": list(split.id), "chunk": 0, "attempt": 0}
    n.emit(EventType.CLAIM, base)
    n.emit(EventType.CHUNK_DONE, {**base, "output": cid, "cache": {}})
    n.emit(EventType.TASK_DONE, {"job": job, "task": "t0", "output": cid, "key": f"key-{job}"})
    n.flush()
    return cid


def _rows(n: Node, cid: str) -> tuple[int, int]:
    """(output cache entries naming `cid`, provider rows of `cid`) in the job index."""
    db = n.log.db
    return (db.execute("SELECT count(*) FROM cache_index WHERE kind = ? AND v = ?",
                       (OUTPUT, f'"{cid}"')).fetchone()[0],
            db.execute("SELECT count(*) FROM provider_index WHERE cid = ?",
                       (cid,)).fetchone()[0])


async def test_an_output_that_retention_unpinned_and_collected_leaves_the_job_index(
        tmp_path: Path, opened: list[Node]) -> None:
    n = _open(tmp_path / "a", opened, keep_outputs_days=0)
    n.emit(EventType.MEMBER, n.capabilities())
    cid = _inline_output(n, "job0", "an inline output")
    n.catchup.compact()  # compacted (recent history 0): its entry and provider row indexed
    assert _rows(n, cid) == (1, 1) and n.store.pins() == [cid]
    n.janitor.wall = lambda: time.time() + 60  # a minute after the job ended
    report = await n.janitor.cycle()
    assert report.unpinned == (cid,) and report.gc.blocks == 1 and report.unprovided == 1
    n.catchup.compact()
    assert _rows(n, cid) == (0, 0)
    assert n.compactor.total.reaped == 1


async def test_without_output_retention_the_rows_stay_with_the_output(
        tmp_path: Path, opened: list[Node]) -> None:
    n = _open(tmp_path / "a", opened, keep_outputs_days=None)
    n.emit(EventType.MEMBER, n.capabilities())
    cid = _inline_output(n, "job0", "an inline output")
    n.catchup.compact()
    report = await n.janitor.cycle()
    assert report.unpinned == () and report.unprovided == 0
    n.catchup.compact()
    assert _rows(n, cid) == (1, 1) and n.store.pins() == [cid]  # still pinned: still a hit


PRODUCER = "prod0000000000000000"


def _hlc() -> int:
    return (int(time.time() * 1000) - 30_000) << 16


async def test_a_replicas_copy_of_a_deleted_jobs_inline_output_is_unpinned_after_its_entry_went(
        tmp_path: Path, opened: list[Node]) -> None:
    """A replica writes and pins another peer's inline output and announces nothing: once the
    job is deleted and its producer collected the output and said so (UNPROVIDE), the
    output's cache entry leaves the index here (no provider). The replica's own storage
    cycle, after that, still unpins its copy: a pin of the inline pack is a task output."""
    n = _open(tmp_path / "r", opened, keep_outputs_days=0)
    data = b"another peer's inline output"
    cid = str(sha256_cid(data, "raw", 1))
    n.store.keep_inline({parse_cid(cid): data}, [cid])  # as a replica keeps it
    hlc = _hlc()
    evs: list[Event] = []

    def add(typ: EventType, payload: dict[str, object]) -> list[object]:
        seq = len(evs) + 1
        evs.append(Event(PRODUCER, seq, hlc + seq, typ, payload))
        return [PRODUCER, seq]

    add(EventType.JOB_SUBMITTED, {"job": "job0", "workflow": {"name": "job0", "tasks": [
        {"name": "t0", "call": "ECHO", "params": {"text": "x"}}]}})
    split = add(EventType.TASK_SPLIT, {"job": "job0", "task": "t0", "input": None,
                                       "chunks": [[]]})
    base = {"job": "job0", "task": "t0", "split": split, "chunk": 0, "attempt": 0}
    add(EventType.CLAIM, base)
    add(EventType.CHUNK_DONE, {**base, "output": cid, "cache": {}})
    add(EventType.TASK_DONE, {"job": "job0", "task": "t0", "output": cid, "key": "key0"})
    n.merge(evs)
    n.catchup.compact()
    assert _rows(n, cid) == (1, 1)
    add(EventType.JOB_DELETED, {"job": "job0", "reason": "older than --keep-jobs-days"})
    add(EventType.UNPROVIDE, {"cids": [cid]})  # the producer collected its copy
    n.merge(evs[-2:])
    n.catchup.compact()
    assert "job0" in n.state.deleted
    assert _rows(n, cid) == (0, 0) and n.store.pins() == [cid]  # the entry went first
    n.janitor.wall = lambda: time.time() + UNNAMED_MIN_AGE_S + 60  # (unnamed: kept a while)
    report = await n.janitor.cycle()
    assert report.unpinned == (cid,) and report.gc.blocks == 1
    assert n.store.pins() == [] and not n.store.has(cid)
