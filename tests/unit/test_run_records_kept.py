"""Failed runs' records, what a compacted job's record says of them and what gc keeps
(session 52, helper c: review r2 of session 51, M1 and M2; review rr, RR-5).

M2: a self-added (unvouched) member's failure's record is not fetched once its job is
compacted either (the record lists it under `unvouched_logs`). RR-5/M1: a failed run's
record is a gc root on the peer that made it (its CHUNK_FAILED's origin), whoever wrote the
job's record and facts; a copy fetched here by a read of another peer's is a cache,
collected by the next gc."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from peer.config import PeerConfig
from peer.errors import NotFound
from peer.http.app import _archived_record
from peer.http.records import RecordCache
from peer.http.views import job_record
from peer.log import Event
from peer.node import Node
from tests.unit.test_compaction import _cid
from tests.unit.test_lanes_unvouched_done import ADD, SUB, J, R, X, lanes_fold
from tests.unit.test_lanes_unvouched_split import HSPLIT, failure


def _node(d: Path, opened: list[Node]) -> Node:
    n = Node(PeerConfig(data_dir=d, slots=1, mdns=False))
    n.listeners[:] = [n.compactor.note]  # no scheduler running: only the compactor listens
    opened.append(n)
    return n


class _Asked:
    """A fetcher no live peer answers: the CIDs asked for."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    async def ensure(self, cids: Any, hints: Any = (), max_bytes: int | None = None) -> None:
        self.asked.extend(cids)
        await asyncio.sleep(0)
        raise NotFound("no live peer holds it")


def _named(ev: Event, cid: str) -> Event:
    return Event(ev.origin, ev.seq, ev.hlc, ev.type, {**ev.payload, "log": cid})


THEIRS, OURS = _cid("X's record"), _cid("R's record")


def _lanes_record() -> dict[str, Any]:
    """J's record as compacted: t0's chunk failed by X (self-added, attempt 0) and by R
    (vouched, attempt 1), each naming a record held by nobody."""
    s = lanes_fold([SUB, ADD, HSPLIT, _named(failure(X, 1, 1300, 0), THEIRS),
                    _named(failure(R, 1, 1400, 1), OURS)])
    return job_record(s, J, 3)


async def test_a_compacted_jobs_self_added_members_record_is_not_fetched(
        tmp_path: Path, opened: list[Node]) -> None:
    """M2: the record listed both alike and a read of the compacted job's log fetched X's
    record (on a04f558d). Now its `unvouched_logs` names X's: a line, no fetch."""
    n = _node(tmp_path / "a", opened)
    fetches = _Asked()
    n.fetcher.ensure = fetches.ensure  # type: ignore[method-assign]
    record = _lanes_record()
    [t] = record["tasks"]
    assert (t["logs"], t["unvouched_logs"]) == ([THEIRS, OURS], [THEIRS])
    lines = await _archived_record(n, record, "t0", "log", RecordCache())
    assert fetches.asked == [OURS]
    assert lines == [f"[banzai] the run record {THEIRS} is a self-added member's, not held "
                     "here: it is not fetched: its lines are not shown",
                     f"[banzai] the run record {OURS} is held neither here nor by a live "
                     "peer: its lines are not shown"]


async def test_a_record_without_the_key_fetches_each_and_a_malformed_one_none(
        tmp_path: Path, opened: list[Node]) -> None:
    """An earlier release's record (no `unvouched_logs`) is read as it was: each record
    fetched. One whose key is no list of texts (no release writes it) fetches none."""
    n = _node(tmp_path / "a", opened)
    fetches = _Asked()
    n.fetcher.ensure = fetches.ensure  # type: ignore[method-assign]
    record = _lanes_record()
    [t] = record["tasks"]
    del t["unvouched_logs"]
    await _archived_record(n, record, "t0", "log", RecordCache())
    assert sorted(fetches.asked) == sorted([THEIRS, OURS])
    for bad in ("x", [7], {THEIRS: 1}):
        fetches.asked.clear()
        t["unvouched_logs"] = bad
        lines = await _archived_record(n, record, "t0", "log", RecordCache())
        assert fetches.asked == [] and len(lines) == 2, bad


def test_a_record_a_vouched_member_names_too_is_not_left_unfetched() -> None:
    """The same record (the same CID) named by X's failure and R's is fetched: R's counts."""
    s = lanes_fold([SUB, ADD, HSPLIT, _named(failure(X, 1, 1300, 0), OURS),
                    _named(failure(R, 1, 1400, 1), OURS)])
    [t] = job_record(s, J, 3)["tasks"]
    assert t["logs"] == [OURS, OURS] and "unvouched_logs" not in t
