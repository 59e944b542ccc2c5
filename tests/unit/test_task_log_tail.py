"""GET /api/jobs/{job}/tasks/{task}/log?tail=N: the last N lines and how many there are (the
web UI's log panel, refetched while the task runs, shows the newest; session 49, helper c),
and /api/peers' `provides` counted in one walk. A real Node (not started) through its app
(aiohttp's test client, loopback only)."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest

from peer.http import app as app_module
from peer.http.records import RecordCache
from peer.log import Event, EventType
from peer.node import Node
from tests.unit.api_client import api_client
from tests.unit.test_compaction import ORIGIN, _cid, _open, history

LINES = [f"line {i}" for i in range(5000)]


@pytest.fixture
def running(tmp_path: Path, opened: list[Node]) -> Node:
    """A peer with one job of one task that has logged LINES so far (it runs here)."""
    n = _open(tmp_path / "a", opened)
    n.merge(history(jobs=0, per_job=1, live=1))
    n.scheduler.live.logs[("job000", "t0")] = list(LINES)
    return n


async def test_the_log_tail_is_its_last_lines_with_the_total(running: Node) -> None:
    async with api_client(running) as c:
        r = await c.get("/api/jobs/job000/tasks/t0/log", params={"tail": "1000"})
        body = await r.json()
        assert r.status == 200, body
        assert body == {"lines": LINES[-1000:], "total": 5000}
        r = await c.get("/api/jobs/job000/tasks/t0/log", params={"tail": "3",
                                                                  "format": "text"})
        assert await r.text() == "line 4997\nline 4998\nline 4999\n"
        r = await c.get("/api/jobs/job000/tasks/t0/log")  # (without tail: every line)
        assert await r.json() == {"lines": LINES, "total": 5000}


async def test_a_bad_tail_is_400_naming_it(running: Node) -> None:
    async with api_client(running) as c:
        for tail in ("0", "-1", "x", "1000001"):
            r = await c.get("/api/jobs/job000/tasks/t0/log", params={"tail": tail})
            body = await r.json()
            assert (r.status, body["field"]) == (400, "tail"), body
            assert "tail must be an integer 1..1000000" in body["message"]


async def test_the_peers_list_counts_each_members_provided_cids(
        tmp_path: Path, opened: list[Node]) -> None:
    """/api/peers' `provides` (each member's count of the CIDs it provides), counted in one
    walk of the providers (was one walk per member: members x CIDs per request, the mesh
    page's every 5 s per open tab; session 49, helper c)."""
    n = _open(tmp_path / "a", opened)
    for i, pid in enumerate(("m1", "m2", "m3")):
        n.state.members[pid] = Event(pid, 1, 1 + i, EventType.MEMBER,
                                     {**n.capabilities(), "name": pid})
    for c in range(30):
        n.state.providers[f"cid{c}"] = {"m1"} | ({"m2"} if c % 3 == 0 else set())
    async with api_client(n) as c:
        r = await c.get("/api/peers")
        body = await r.json()
    assert r.status == 200, body
    assert {p["id"]: p["provides"] for p in body["peers"]} == {"m1": 30, "m2": 10, "m3": 0}


async def test_a_stored_run_record_is_parsed_off_the_loop(
        tmp_path: Path, opened: list[Node], monkeypatch: pytest.MonkeyPatch) -> None:
    """A chunk's run record (up to --task-log-max-bytes of log: ~80 ms to parse 6 MB) was
    parsed on the loop, per chunk per request: the log panel's every 0.7 s while a task
    runs, per open tab. It is read and parsed in a worker thread (session 50, helper c)."""
    n, parsed_in = _one_recorded_chunk(tmp_path, opened, monkeypatch)
    async with api_client(n) as c:
        r = await c.get("/api/jobs/job000/tasks/t0/log", params={"tail": "2"})
        body = await r.json()
        assert (r.status, body) == (200, {"lines": ["done 2998", "done 2999"], "total": 3000})
        r = await c.get("/api/jobs/job000/tasks/t0/metrics")
        assert await r.json() == {"metrics": [["loss", 1, 0.5]], "cut": []}
    assert len(parsed_in) == 2 and threading.main_thread() not in parsed_in


async def test_a_stored_run_record_is_parsed_once_for_the_log_panels_refetches(
        tmp_path: Path, opened: list[Node], monkeypatch: pytest.MonkeyPatch) -> None:
    """The log panel refetches ?tail= every 0.7 s while a task runs: each refetch parsed
    every finished chunk's record again. A record's list is kept by CID (content-addressed)
    within RECORDS_MAX_BYTES: the refetches parse nothing (session 50, helper c)."""
    n, parsed_in = _one_recorded_chunk(tmp_path, opened, monkeypatch)
    async with api_client(n) as c:
        for _ in range(5):
            r = await c.get("/api/jobs/job000/tasks/t0/log", params={"tail": "1"})
            assert await r.json() == {"lines": ["done 2999"], "total": 3000}
    assert len(parsed_in) == 1


def _one_recorded_chunk(tmp_path: Path, opened: list[Node], monkeypatch: pytest.MonkeyPatch,
                        ) -> tuple[Node, list[threading.Thread]]:
    """A peer whose job000/t0 has one finished chunk with a stored run record of 3,000 log
    lines and one metric point, and the threads each record parse ran in (in order)."""
    n = _open(tmp_path / "a", opened)
    evs = history(jobs=0, per_job=1, live=1)
    record = {"log": [f"done {i}" for i in range(3000)], "metrics": [["loss", 1, 0.5]]}
    cid = n.store.add_bytes(json.dumps(record).encode())
    hlc, seq = evs[-1].hlc, evs[-1].seq
    split = Event(ORIGIN, seq + 1, hlc + 1, EventType.TASK_SPLIT,
                  {"job": "job000", "task": "t0", "input": None, "chunks": [[]]})
    base = {"job": "job000", "task": "t0", "split": [ORIGIN, seq + 1], "chunk": 0,
            "attempt": 0}
    evs += [split, Event(ORIGIN, seq + 2, hlc + 2, EventType.CLAIM, base),
            Event(ORIGIN, seq + 3, hlc + 3, EventType.CHUNK_DONE,
                  {**base, "output": _cid("out"), "cache": {}, "log": cid})]
    n.merge(evs)
    parsed_in: list[threading.Thread] = []
    parse = app_module._run_record

    def spied(data: bytes, cid: str, kind: str) -> list[Any]:
        parsed_in.append(threading.current_thread())
        return parse(data, cid, kind)

    monkeypatch.setattr(app_module, "_run_record", spied)
    return n, parsed_in


def test_the_record_cache_keeps_the_latest_within_its_budget() -> None:
    cache = RecordCache(max_bytes=100)
    cache.put("a", "log", ["a"], 40)
    cache.put("b", "log", ["b"], 40)
    assert cache.get("a", "log") == ["a"]  # (now the latest used)
    cache.put("c", "log", ["c"], 40)  # over the budget: b, the least recently used, goes
    cache.put("huge", "log", ["h"], 101)  # alone over it: not kept
    assert [cache.get(k, "log") for k in "abc"] == [["a"], None, ["c"]]
    assert (cache.get("huge", "log"), cache.get("a", "metrics"), cache.bytes) == (None, None, 80)
