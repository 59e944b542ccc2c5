"""The task log's run records, named by members' events, read within bounds (session 51,
helper g: review rr's RR-1 and RR-2). A CHUNK_FAILED's `log` may name any CID: a record is
fetched and parsed only within its own bound (its size, its count of JSON values), and a CID
that is no run record this peer reads is one line of the log, the rest served."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from peer.config import PeerConfig
from peer.errors import NotFound
from peer.http.app import RECORD_SLACK_BYTES, record_max_bytes, record_max_values
from peer.log import Event
from peer.node import Node
from tests.unit.api_client import api_client
from tests.unit.test_compaction import _cid
from tests.unit.test_failed_run_log import _attempts

GOOD = [f"attempt {a} line {i}" for a in range(2) for i in range(3)]


def _node(d: Path, opened: list[Node], log_max: int = 10 << 20) -> Node:
    n = Node(PeerConfig(data_dir=d, slots=1, mdns=False, task_log_max_bytes=log_max))
    n.listeners[:] = [n.compactor.note]  # no scheduler running: only the compactor listens
    opened.append(n)
    return n


def _last_names(n: Node, cid: str) -> None:
    """job000/t0: 3 failed attempts, the first two with good records, the last naming `cid`."""
    _, evs = _attempts(n, 3, done=False)
    last = evs[-1]
    evs[-1] = Event(last.origin, last.seq, last.hlc, last.type, {**last.payload, "log": cid})
    n.merge(evs)


async def _log_and_metrics(n: Node) -> tuple[list[Any], list[Any]]:
    async with api_client(n) as c:
        r = await c.get("/api/jobs/job000/tasks/t0/log")
        body = await r.json()
        assert r.status == 200, body
        m = await c.get("/api/jobs/job000/tasks/t0/metrics")
        metrics = await m.json()
        assert m.status == 200, metrics
    return body["lines"], metrics["metrics"]


def test_a_records_bounds_follow_the_log_bound() -> None:
    assert record_max_bytes(10 << 20) == (20 << 20) + RECORD_SLACK_BYTES  # (was 256 MiB)
    assert record_max_values(10 << 20) == (10 << 20) // 64 + 81_024


async def test_a_record_of_more_values_than_a_run_may_hold_is_a_line_not_a_parse(
        tmp_path: Path, opened: list[Node]) -> None:
    """RR-1: 2 million short lines in 12 MB took 143 MB to parse, per read (not cached over
    8 MiB). Counted before the parse: a line says so; the other attempts' lines are served.
    (Before: the 100,000 lines were served.)"""
    n = _node(tmp_path / "a", opened, log_max=1024)  # (at most 16 lines + the metrics' slack)
    big = n.store.add_bytes(json.dumps({"log": ["ab"] * 100_000, "metrics": []}).encode())
    _last_names(n, big)
    lines, metrics = await _log_and_metrics(n)
    assert lines == [*GOOD, f"[banzai] the run record {big} holds more JSON values (100004) "
                     f"than a run record may ({record_max_values(1024)}): its lines are not "
                     "shown"]
    assert metrics == [["m", 0, 1.0], ["m", 1, 1.0]]


async def test_commas_and_brackets_in_a_records_lines_are_no_values(
        tmp_path: Path, opened: list[Node]) -> None:
    """A log of CSV or JSON lines is read as any other: only the values count."""
    n = _node(tmp_path / "a", opened, log_max=1024)
    text = ["a,b,[c],{d}," * 10_000 + '\\"],[,', '{"k": [1, 2, 3]}']
    rec = n.store.add_bytes(json.dumps({"log": text, "metrics": []}).encode())
    _last_names(n, rec)
    lines, _ = await _log_and_metrics(n)
    assert lines == [*GOOD, *text]


async def test_a_held_record_larger_than_its_bound_is_not_read(
        tmp_path: Path, opened: list[Node]) -> None:
    """RR-1: a CID held here (the job's own input, say: gigabytes) was read whole and
    parsed. Its size is read from its root block first."""
    n = _node(tmp_path / "a", opened, log_max=1024)
    bound = record_max_bytes(1024)
    padded = n.store.add_bytes(b'{"log": ["x"], "metrics": []}' + b" " * bound)
    _last_names(n, padded)
    lines, _ = await _log_and_metrics(n)
    assert lines == [*GOOD, f"[banzai] the run record {padded} is larger than a run record may "
                     f"be ({bound} bytes): its lines are not shown"]


async def test_a_missing_record_is_fetched_within_the_records_bound(
        tmp_path: Path, opened: list[Node]) -> None:
    """RR-1: the fetch accepted a CAR of 256 MiB for any record."""
    n = _node(tmp_path / "a", opened, log_max=4096)
    asked: list[int | None] = []
    async def ensure(cids: Any, hints: Any = (), max_bytes: int | None = None) -> None:
        asked.append(max_bytes)
        raise NotFound("no live peer holds it")

    n.fetcher.ensure = ensure  # type: ignore[method-assign]
    missing = _cid("held by nobody")
    _last_names(n, missing)
    lines, _ = await _log_and_metrics(n)
    assert lines[-1] == (f"[banzai] the run record {missing} is held neither here nor by a "
                         "live peer: its lines are not shown")
    assert asked and set(asked) == {record_max_bytes(4096)}


async def test_a_held_cid_that_is_no_run_record_is_a_line_and_the_rest_is_served(
        tmp_path: Path, opened: list[Node]) -> None:
    """RR-2: a member's failure naming a small raw block, or a directory (the job's input),
    made the whole log a 422 (BadDag) or 501, and the metrics too."""
    n = _node(tmp_path / "a", opened)
    junk = n.store.add_bytes(b"not a run record at all")
    _last_names(n, junk)
    lines, metrics = await _log_and_metrics(n)
    assert lines[:-1] == GOOD and lines[-1].startswith(
        f"[banzai] the run record {junk} is no run record (the run record {junk}: invalid JSON")
    assert lines[-1].endswith(": its lines are not shown")
    assert metrics == [["m", 0, 1.0], ["m", 1, 1.0]]


async def test_a_directory_named_as_a_record_is_a_line(
        tmp_path: Path, opened: list[Node]) -> None:
    n = _node(tmp_path / "a", opened)
    d = n.store.make_dir({"f": n.store.add_bytes(b"{}")})
    _last_names(n, d)
    lines, metrics = await _log_and_metrics(n)
    assert lines == [*GOOD, f"[banzai] the run record {d} is a directory, no run record: its "
                     "lines are not shown"]
    assert len(metrics) == 2
