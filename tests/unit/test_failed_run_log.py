"""What a failed run leaves for the person who must debug it (session 51, helper d): its run
record (what it printed and reported before it failed, bounded as a successful run's) is
stored and its CHUNK_FAILED names it (`log`, a key an older peer ignores); the task's log
endpoint, a compacted job's record and retention read it as they read a done run's. The
in-memory mesh of peer/jobs/sim.py, and a real Node (not started) through its app."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from peer.http.views import job_record
from peer.jobs.live import Kept, log_lines, metric_point, metric_points, run_record
from peer.jobs.retention import job_facts
from peer.jobs.sim import JobMesh
from peer.log import ChunkFailed, Event, EventType
from peer.log.door import cid_problem
from peer.log.events import FailureKind
from peer.node import Node
from tests.unit.api_client import api_client
from tests.unit.test_compaction import ORIGIN, _cid, _open, history
from tests.unit.test_scheduler_sim import CATALOG, CFG, WRITE


async def test_a_failed_runs_log_and_metrics_are_stored_and_its_failure_names_them() -> None:
    """Before, a failed run's lines lived only in the live view of the peer that ran it (until
    that peer ran the task again, or restarted); its CHUNK_FAILED named nothing."""
    mesh = JobMesh(1, CATALOG, CFG)
    try:
        job = mesh.submit("p0", [WRITE])
        await mesh.settle()
        p = mesh["p0"]
        [key] = p.runner.running
        send = p.runner.messages[key]
        send("log", ("reading the input",))
        send("metric", ("loss", 1, 0.5))
        send("log", ("about to divide by zero",))
        p.runner.fail(key, kind="error", error="ZeroDivisionError: division by zero")
        await mesh.settle()
        [failed] = mesh.events(EventType.CHUNK_FAILED, "p0", task="w")
        record: dict[str, Any] = json.loads(b"".join(p.store.cat(failed.payload["log"])))
        assert record == {
            "log": ["reading the input", "about to divide by zero",
                    "[banzai] attempt 0 failed: ZeroDivisionError: division by zero"],
            "metrics": [["loss", 1, 0.5]]}
        assert failed.body_as(ChunkFailed).log == failed.payload["log"]
        # the live entry is gone: the API reads the stored record (not both)
        assert (job, "w") not in p.sched.logs and (job, "w") not in p.sched.metrics
    finally:
        await mesh.close()


async def test_a_run_that_never_started_stores_no_record() -> None:
    """A run no worker slot could take (no_slot) printed nothing: no record, no `log`."""
    mesh = JobMesh(1, CATALOG, CFG)
    try:
        mesh.submit("p0", [WRITE])
        await mesh.settle()
        p = mesh["p0"]
        [key] = p.runner.running
        p.runner.fail(key, error="no worker can run it", no_slot=True)
        await mesh.settle()
        failed = mesh.events(EventType.CHUNK_FAILED, "p0", task="w")
        assert failed and all("log" not in f.payload for f in failed)
    finally:
        await mesh.close()


BASE = {"job": "j1", "task": "t", "chunk": 0, "attempt": 0, "kind": "crash", "error": "x"}


@pytest.mark.parametrize(("log", "parsed"), [
    (None, None),  # an older peer's failure: no key
    (_cid("record"), _cid("record")),
    ("", None),
    (7, None),  # not refused (an older peer folds it): ignored
    ("c" * 10_000, None),
])
def test_a_failures_log_is_read_leniently(log: Any, parsed: str | None) -> None:
    payload = dict(BASE) if log is None else {**BASE, "log": log}
    ev = Event("p", 1, 1, EventType.CHUNK_FAILED, payload)
    assert ev.body_as(ChunkFailed) == ChunkFailed("j1", "t", None, 0, 0, "x", FailureKind.CRASH,
                                                  parsed)


def test_an_incoming_failure_whose_log_is_no_cid_is_refused_at_the_door() -> None:
    """As a CHUNK_DONE's `log`: a member's is served to people, as a link."""
    bad = Event("p", 1, 1, EventType.CHUNK_FAILED, {**BASE, "log": "not a cid"})
    good = Event("p", 1, 1, EventType.CHUNK_FAILED, {**BASE, "log": _cid("record")})
    assert "CHUNK_FAILED.log is not a CID" in (cid_problem(bad) or "")
    assert cid_problem(good) is None


def _attempts(n: Node, failed: int, done: bool) -> tuple[list[str], list[Event]]:
    """job000/t0 with one chunk whose first `failed` attempts failed, each leaving a record,
    then (`done`) the next one done with its own; the records' CIDs in order, the events."""
    evs = history(jobs=0, per_job=1, live=1)
    hlc, seq = evs[-1].hlc, evs[-1].seq
    evs.append(Event(ORIGIN, seq + 1, hlc + 1, EventType.TASK_SPLIT,
                     {"job": "job000", "task": "t0", "input": None, "chunks": [[]]}))
    cids = []
    for attempt in range(failed + done):
        base = {"job": "job000", "task": "t0", "split": [ORIGIN, seq + 1], "chunk": 0,
                "attempt": attempt}
        lines = [f"attempt {attempt} line {i}" for i in range(3)]
        cid = n.store.add_bytes(json.dumps({"log": lines, "metrics": [["m", attempt, 1.0]]})
                                .encode())
        cids.append(cid)
        at = len(evs)
        evs.append(Event(ORIGIN, seq + at, hlc + at, EventType.CLAIM, base))
        evs.append(Event(ORIGIN, seq + at + 1, hlc + at + 1, EventType.CHUNK_FAILED,
                         {**base, "kind": "error", "error": "boom", "log": cid})
                   if attempt < failed else
                   Event(ORIGIN, seq + at + 1, hlc + at + 1, EventType.CHUNK_DONE,
                         {**base, "output": _cid("out"), "cache": {}, "log": cid}))
    return cids, evs


async def test_the_task_log_shows_each_failed_attempts_lines_then_the_done_runs(
        tmp_path: Path, opened: list[Node]) -> None:
    n = _open(tmp_path / "a", opened)
    cids, evs = _attempts(n, 2, done=True)
    n.merge(evs)
    async with api_client(n) as c:
        r = await c.get("/api/jobs/job000/tasks/t0/log")
        body = await r.json()
        assert r.status == 200, body
        assert body["lines"] == [f"attempt {a} line {i}" for a in range(3) for i in range(3)]
        r = await c.get("/api/jobs/job000/tasks/t0/metrics")
        assert (await r.json())["metrics"] == [["m", a, 1.0] for a in range(3)]
        r = await c.get("/api/jobs/job000")
        [chunk] = (await r.json())["tasks"][0]["chunks"]
        assert chunk["log"] == cids[2]
    assert job_record(n.state, "job000", 3)["tasks"][0]["logs"] == cids  # (a compacted job's)
    [facts] = [f for f in job_facts(n.state, 3) if f.job == "job000"]
    assert facts.logs == frozenset(cids)  # gc roots while the job is kept


async def test_a_failed_chunk_links_its_last_record_and_a_record_held_nowhere_is_said(
        tmp_path: Path, opened: list[Node]) -> None:
    """A failed chunk's view links its last attempt's record. A record neither held here
    nor by a live peer (its peer gone) is a line saying so: the rest of the log is served
    (was a 404 for the whole log)."""
    n = _open(tmp_path / "a", opened)
    assert n.cfg.max_attempts == 3
    _, evs = _attempts(n, 3, done=False)
    gone = _cid("held by nobody")
    last = evs[-1]
    evs[-1] = Event(last.origin, last.seq, last.hlc, last.type, {**last.payload, "log": gone})
    n.merge(evs)
    async with api_client(n) as c:
        r = await c.get("/api/jobs/job000/tasks/t0/log")
        body = await r.json()
        assert r.status == 200, body
        assert body["lines"] == [f"attempt {a} line {i}" for a in range(2) for i in range(3)] + [
            f"[banzai] the run record {gone} is held neither here nor by a live peer: its "
            "lines are not shown"]
        r = await c.get("/api/jobs/job000")
        [t] = (await r.json())["tasks"]
    assert (t["state"], t["error"], t["chunks"][0]["log"]) == ("failed", "boom", gone)


# -- where a run's metric points were cut (item 2) ---------------------------------------
NOTE = ("[banzai] ... {n} metric points cut here: a run keeps its first and its last 10000 "
        "points ...")


def _points(n: int) -> Kept[list[Any]]:
    k = metric_points()
    for i in range(n):
        k.append(metric_point("loss", i, 1.0))
    return k


def test_a_stored_record_says_where_its_points_were_cut() -> None:
    record = run_record(log_lines(), _points(20_005))
    assert record["metrics_cut"] == {"at": 10_000, "points": 5}
    assert len(record["metrics"]) == 20_000  # (the list stays points: an older peer's UI)
    assert "metrics_cut" not in run_record(log_lines(), _points(3))


async def test_the_metrics_api_marks_where_points_were_cut_live_and_stored(
        tmp_path: Path, opened: list[Node]) -> None:
    """The log has a marker line where lines were cut; the metrics had none: a curve's
    points jumped from step 9,999 to the latest with nothing said. `cut` says where (the
    index of the first point after the cut), live and in stored records; a stored record's
    marker that does not fit its list is ignored."""
    n = _open(tmp_path / "a", opened)
    _, evs = _attempts(n, 2, done=False)
    records = [{"log": [], "metrics": [["m", i, 1.0] for i in range(4)],
                "metrics_cut": {"at": 2, "points": 7}},
               {"log": [], "metrics": [["m", 9, 1.0]], "metrics_cut": {"at": 5, "points": 1}}]
    for ev, record in zip(evs[-3::2], records, strict=True):  # the two CHUNK_FAILEDs
        cid = n.store.add_bytes(json.dumps(record).encode())
        evs[evs.index(ev)] = Event(ev.origin, ev.seq, ev.hlc, ev.type, {**ev.payload, "log": cid})
    n.merge(evs)
    n.scheduler.live.metrics[("job000", "t0")] = _points(20_003)
    async with api_client(n) as c:
        r = await c.get("/api/jobs/job000/tasks/t0/metrics")
        body = await r.json()
    assert r.status == 200, body
    assert len(body["metrics"]) == 4 + 1 + 20_000
    assert body["cut"] == [{"at": 2, "points": 7, "note": NOTE.format(n=7)},
                           {"at": 5 + 10_000, "points": 3, "note": NOTE.format(n=3)}]
    assert body["metrics"][5 + 9_999][1] == 9_999 and body["metrics"][5 + 10_000][1] == 10_003
