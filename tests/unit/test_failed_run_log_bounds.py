"""The task log's run records, named by members' events, read within bounds (session 51,
helper g: review rr's RR-1 and RR-2). A CHUNK_FAILED's `log` may name any CID: a record is
fetched and parsed only within its own bound (its size, its count of JSON values), and a CID
that is no run record this peer reads is one line of the log, the rest served."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from peer.config import PeerConfig
from peer.errors import NotFound, TooLarge
from peer.http.app import (
    MAX_RECORD_FETCHES,
    RECORD_SLACK_BYTES,
    _archived_lists,
    _record_parts,
    json_values_at_most,
    record_cids,
    record_max_bytes,
    record_max_values,
)
from peer.http.records import MISS_TTL_S, RecordCache
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


async def test_a_record_whose_strings_never_close_is_counted_in_one_pass(
        tmp_path: Path, opened: list[Node]) -> None:
    """Review r2 of session 51, H1: a string never closed (every quote escaped) made the
    count's regex scan to the end from each quote, with the GIL held: 1.7 s at 24 KB,
    quadratic, so the 900 KB here would hold the peer for ~40 min (docs/benchmarks.md). Now
    one pass: its commas count (it is no JSON), a line says so, the other attempts' lines are
    served."""
    n = _node(tmp_path / "a", opened, log_max=1024)
    hostile = b'"' + b'\\",' * 300_000
    assert json_values_at_most(hostile) == 300_001
    assert json_values_at_most(b'{"log": ["a,b", "c\\"[,{", "x\\\\"], "m": [[1,2,3]]}') == 10
    rec = n.store.add_bytes(hostile)
    _last_names(n, rec)
    lines, _ = await _log_and_metrics(n)
    assert lines == [*GOOD, f"[banzai] the run record {rec} holds more JSON values (300001) "
                     f"than a run record may ({record_max_values(1024)}): its lines are not "
                     "shown"]


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


async def test_a_fetch_sent_too_large_is_a_miss_asked_again_not_refused_for_good(
        tmp_path: Path, opened: list[Node]) -> None:
    """Review r2 of session 51, L1: a fetch's TooLarge is counted from bytes not yet
    verified (a liar that is the only live source may send them); it was remembered as a
    refusal of the CID until a restart. Now a miss: asked again after MISS_TTL_S, and the
    record, served whole then, is shown."""
    n = _node(tmp_path / "a", opened)
    record_bytes = b'{"log": ["the real lines"], "metrics": []}'
    real = _node(tmp_path / "b", opened).store.add_bytes(record_bytes)  # (held there only)
    liar = [True]

    async def ensure(cids: Any, hints: Any = (), max_bytes: int | None = None) -> None:
        if liar[0]:
            raise TooLarge("every peer tried sent more")
        assert n.store.add_bytes(record_bytes) == real

    n.fetcher.ensure = ensure  # type: ignore[method-assign]
    record = {"id": "j1", "tasks": [{"name": "t", "logs": [real]}]}
    cache = RecordCache()
    now = [0.0]
    cache.clock = lambda: now[0]
    lines = (await _archived_lists(n, record, "t", "log", cache))[1]
    assert lines == [f"[banzai] the run record {real} was sent larger than a run record may "
                     f"be ({record_max_bytes(10 << 20)} bytes) by every live peer asked: its "
                     "lines are not shown"]
    liar[0] = False
    now[0] += MISS_TTL_S
    assert (await _archived_lists(n, record, "t", "log", cache))[1] == ["the real lines"]


async def test_a_held_cid_that_is_no_run_record_is_a_line_and_the_rest_is_served(
        tmp_path: Path, opened: list[Node]) -> None:
    """RR-2: a member's failure naming a small raw block, or a directory (the job's input),
    made the whole log a 422 (BadDag) or 501, and the metrics too."""
    n = _node(tmp_path / "a", opened)
    junk = n.store.add_bytes(b"not a run record at all")
    _last_names(n, junk)
    lines, metrics = await _log_and_metrics(n)
    assert lines[:-1] == GOOD and lines[-1].startswith(
        f"[banzai] the run record {junk} is no run record (invalid JSON")
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


# -- RR-3: a read fetches a few missing records, together, and remembers a miss --------------
class _Fetches:
    """A fetcher no live peer answers: counts the CIDs asked for; each ask waits until
    `together` asks are under way (a read that fetched one at a time would wait for ever:
    bounded by wait_for)."""

    def __init__(self, together: int) -> None:
        self.asked: list[str] = []
        self.together = together
        self.all_in = asyncio.Event()

    async def ensure(self, cids: Any, hints: Any = (), max_bytes: int | None = None) -> None:
        self.asked.extend(cids)
        if len(self.asked) % self.together == 0:
            self.all_in.set()
        await asyncio.wait_for(self.all_in.wait(), 10)
        raise NotFound("no live peer holds it")


async def test_a_read_fetches_a_few_missing_records_together_and_remembers_a_miss(
        tmp_path: Path, opened: list[Node]) -> None:
    """20 records nobody holds (a compacted job's, here): a read asked the mesh for each in
    turn, at every read. Now at most MAX_RECORD_FETCHES at once per read, each other a line;
    a miss is not asked again within MISS_TTL_S (the fake clock)."""
    n = _node(tmp_path / "a", opened)
    good = n.store.add_bytes(b'{"log": ["held"], "metrics": []}')
    gone = [_cid(f"x{i}") for i in range(20)]
    record = {"id": "j1", "tasks": [{"name": "t", "logs": [good, *gone]}]}
    fetches = _Fetches(MAX_RECORD_FETCHES)
    n.fetcher.ensure = fetches.ensure  # type: ignore[method-assign]
    cache = RecordCache()
    now = [0.0]
    cache.clock = lambda: now[0]

    lines = (await _archived_lists(n, record, "t", "log", cache))[1]
    assert sorted(fetches.asked) == sorted(gone[:8])  # (in any order: together)
    nobody = "is held neither here nor by a live peer"
    later = ("is not held here and was not fetched (at most 8 records are fetched per read: "
             "read again)")
    assert lines == ["held", *(f"[banzai] the run record {c} {nobody}: its lines are not shown"
                               for c in gone[:8]),
                     *(f"[banzai] the run record {c} {later}: its lines are not shown"
                       for c in gone[8:])]
    fetches.all_in.clear()
    lines = (await _archived_lists(n, record, "t", "log", cache))[1]
    assert sorted(fetches.asked[8:]) == sorted(gone[8:16])  # (the 8 missed: not again)
    assert lines[1] == (f"[banzai] the run record {gone[0]} was served by no live peer less "
                        "than 60 s ago: its lines are not shown")
    now[0] += MISS_TTL_S
    fetches.all_in.clear()
    (await _archived_lists(n, record, "t", "log", cache))[1]
    assert sorted(fetches.asked[16:]) == sorted(gone[:8])  # (a minute on: asked again)
    assert (await _archived_lists(n, record, "t", "metrics", cache))[1] == []


def test_a_self_added_members_failures_records_are_not_fetched() -> None:
    """Seam b x d: X (self-added) fails t0's chunk naming a record; R (vouched) too. R's
    may be fetched from the mesh, X's is shown only if held here (else a line)."""
    from tests.unit.test_lanes_unvouched_done import ADD, SUB, J, R, X, lanes_fold
    from tests.unit.test_lanes_unvouched_split import HSPLIT, failure

    def named(ev: Event, cid: str) -> Event:
        return Event(ev.origin, ev.seq, ev.hlc, ev.type, {**ev.payload, "log": cid})

    theirs, ours = _cid("X's"), _cid("R's")
    s = lanes_fold([SUB, ADD, HSPLIT, named(failure(X, 1, 1300, 0), theirs),
                    named(failure(R, 1, 1400, 1), ours)])
    assert record_cids(s, J, "t0") == [(theirs, False), (ours, True)]


async def test_a_self_added_members_missing_record_is_a_line_not_a_fetch(
        tmp_path: Path, opened: list[Node]) -> None:
    n = _node(tmp_path / "a", opened)
    fetches = _Fetches(1)
    n.fetcher.ensure = fetches.ensure  # type: ignore[method-assign]
    missing = _cid("x")
    lines = (await _record_parts(n, [(missing, False)], "log", RecordCache()))[1]
    assert fetches.asked == []
    assert lines == [f"[banzai] the run record {missing} is a self-added member's, not held "
                     "here: it is not fetched: its lines are not shown"]


def test_a_failed_chunks_view_shows_a_counted_failures_error_and_record() -> None:
    """RR-8 (seam b x d): R (vouched) fails t0's chunk for good (an `error`, not retried);
    X (self-added) then fails the next attempt with a made-up error and record. The chunk
    and task rows showed X's (the highest attempt's); they show R's."""
    from peer.http.views import job_view
    from tests.unit.test_lanes_unvouched_done import ADD, SUB, J, R, X, lanes_fold
    from tests.unit.test_lanes_unvouched_split import HSPLIT, failure

    def said(ev: Event, error: str, cid: str) -> Event:
        return Event(ev.origin, ev.seq, ev.hlc, ev.type,
                     {**ev.payload, "error": error, "log": cid})

    real, fake = _cid("R's record"), _cid("X's record")
    s = lanes_fold([SUB, ADD, HSPLIT, said(failure(R, 1, 1300, 0), "real", real),
                    said(failure(X, 1, 1400, 1), "fake", fake)])
    [t] = job_view(s, J, 3)["tasks"]
    [c] = t["chunks"]
    assert (t["state"], c["state"], c["error"], c["log"]) == ("failed", "failed", "real", real)


async def test_a_refused_record_is_remembered_not_read_again(
        tmp_path: Path, opened: list[Node], monkeypatch: pytest.MonkeyPatch) -> None:
    """A record refused for what it holds (here: its values, a regex pass of up to ~1 s for
    28 MiB of short strings) is not read again: its CID's content never changes."""
    n = _node(tmp_path / "a", opened, log_max=1024)
    big = n.store.add_bytes(json.dumps({"log": ["ab"] * 100_000, "metrics": []}).encode())
    cache = RecordCache()
    first = (await _record_parts(n, [(big, True)], "log", cache))[1]
    assert cache.refused(big, "log") is not None

    def unread(cid: str) -> Any:
        raise AssertionError(f"{cid} read again")

    monkeypatch.setattr(n.store, "stat", unread)
    assert (await _record_parts(n, [(big, True)], "log", cache))[1] == first
    assert (await _record_parts(n, [(big, True)], "metrics", cache))[1] == []
    assert cache.refused(big, "metrics") == cache.refused(big, "log")  # (either list)
    junk = n.store.add_bytes(b'{"log": 7, "metrics": []}')  # (no log list: metrics read)
    monkeypatch.undo()
    assert len((await _record_parts(n, [(junk, True)], "log", cache))[1]) == 1
    assert (await _record_parts(n, [(junk, True)], "metrics", cache))[1] == []
    assert cache.refused(junk, "log") and cache.refused(junk, "metrics") is None
