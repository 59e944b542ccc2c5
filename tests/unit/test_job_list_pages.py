"""GET /api/jobs has a ceiling and reads the job index off the loop (session 48, review r1
F3): a real Node (not started) with compacted and live jobs, through its app (aiohttp's test
client, loopback only), and `banzai status`'s paging over it."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from peer import cli
from peer.http import app
from peer.http.views import MAX_PAGE_JOBS, merge_page
from peer.log.jobindex import JobIndex
from peer.node import Node
from tests.unit.api_client import api_client
from tests.unit.test_compaction import _open, history

FINISHED, LIVE = 1100, 150  # compacted into the job index, and in the state


@pytest.fixture
def many(tmp_path: Path, opened: list[Node]) -> Node:
    """A peer holding FINISHED compacted jobs (all but the recent ones: records in the job
    index) and LIVE jobs of its state."""
    n = _open(tmp_path / "a", opened, recent_tasks=2)
    n.compactor.vvs = lambda: [dict(n.heads())]  # every member holds everything
    n.merge(history(jobs=FINISHED, per_job=1, live=LIVE))
    n.catchup.compact()
    assert len(n.state.jobs) < FINISHED and len(n.state.compacted) > 1000
    return n


def _ids(jobs: list[dict[str, Any]]) -> list[str]:
    return [j["id"] for j in jobs]


async def test_the_list_without_limit_is_one_page_with_next(
        many: Node, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without `limit` the answer is the newest MAX_PAGE_JOBS and `next` (on 45818f71: every
    job, no `next`); following `next` gives every job once, newest first. The job index is
    read in a worker thread on a connection of its own, never the loop's."""
    reads: list[tuple[bool, bool]] = []
    page = JobIndex.page

    def noted(index: JobIndex, limit: int | None, before: Any, db: Any = None) -> Any:
        reads.append((threading.current_thread() is threading.main_thread(),
                      db is None or db is index._db))
        return page(index, limit, before, db)

    monkeypatch.setattr(JobIndex, "page", noted)
    async with api_client(many) as c:
        r = await c.get("/api/jobs")
        body = await r.json()
        assert r.status == 200, body
        assert len(body["jobs"]) == MAX_PAGE_JOBS and body["next"]
        assert reads == [(False, False)]  # off the loop, on a connection of its own
        listed = _ids(body["jobs"])
        for _ in range(10):  # (bounded: 2 pages are left)
            if body["next"] is None:
                break
            r = await c.get("/api/jobs", params={"limit": "100", "cursor": body["next"]})
            body = await r.json()
            listed += _ids(body["jobs"])
    everything = [f"job{j:03d}" for j in range(FINISHED + LIVE)]
    assert listed == everything[::-1]


async def test_banzai_status_pages_through_every_job(many: Node) -> None:
    """The CLI's list (`banzai status` without a job) follows `next` to the last page."""
    async with api_client(many) as c:
        client = cli.Client(str(c.make_url("")), c.session)
        jobs = await cli.all_jobs(client)
    assert _ids(jobs) == [f"job{j:03d}" for j in range(FINISHED + LIVE)][::-1]


async def test_bad_limits_and_cursors_are_400_naming_them(many: Node) -> None:
    async with api_client(many) as c:
        for query, field in ((("limit", "0"), "limit"), (("limit", "1001"), "limit"),
                             (("limit", "x"), "limit"), (("cursor", "nope"), "cursor")):
            r = await c.get("/api/jobs", params=[query])
            body = await r.json()
            assert r.status == 400 and body["field"] == field, body


def test_a_job_compacted_between_the_two_reads_is_listed_once() -> None:
    """The live entries are made first, the index read after: a job compacted in between is
    in both, and listed once (by its summary)."""
    live = [((9, "o", 1), {"id": "j9"}), ((5, "o", 2), {"id": "j5"})]
    archived = [((5, "o", 2), {"id": "j5", "state": "done"}), ((3, "o", 3), {"id": "j3"})]
    page, nxt = merge_page(live, archived, 2)
    assert page == [{"id": "j9"}, {"id": "j5", "state": "done"}] and nxt == "5.2.o"
    page, nxt = merge_page(live, archived, 3)
    assert [p["id"] for p in page if isinstance(p, dict)] == ["j9", "j5", "j3"] and nxt is None


async def test_entries_are_made_only_for_the_live_jobs_the_page_shows(
        many: Node, monkeypatch: pytest.MonkeyPatch) -> None:
    """Session 49, review rr S6: a page of 6 made `limit` + 1 live entries (1,001 without a
    limit, ~40 ms on the loop for the web UI's 6 rows); now one per live job it lists."""
    made: list[str] = []
    entry = app._entry

    def noted(node: Any, job: str) -> dict[str, Any]:
        made.append(job)
        return entry(node, job)

    monkeypatch.setattr(app, "_entry", noted)
    async with api_client(many) as c:
        for params in ({"limit": "6"}, {}):
            made.clear()
            r = await c.get("/api/jobs", params=params)
            body = await r.json()
            assert r.status == 200, body
            live = [j["id"] for j in body["jobs"] if j["id"] in many.state.jobs]
            assert live and made == live, (params, len(made), len(live))


async def test_a_live_job_gone_during_the_index_read_is_read_again(
        many: Node, monkeypatch: pytest.MonkeyPatch) -> None:
    """The entries are made after the index read: a listed live job that left the state
    meanwhile (here: taken out of the state's jobs as a deletion would) makes the page be
    read again, and it is not listed (no 500 for a job no longer there)."""
    reads: list[int] = []
    page_apart = JobIndex.page_apart
    newest = max(many.state.jobs, key=lambda j: many.state.jobs[j].order)

    def racing(index: JobIndex, limit: int, before: Any) -> Any:
        reads.append(limit)
        many.state.jobs.pop(newest, None)  # (the first read only: then it is gone)
        return page_apart(index, limit, before)

    monkeypatch.setattr(JobIndex, "page_apart", racing)
    async with api_client(many) as c:
        r = await c.get("/api/jobs", params={"limit": "6"})
        body = await r.json()
    assert r.status == 200, body
    assert len(reads) == 2 and len(body["jobs"]) == 6
    assert newest not in _ids(body["jobs"])
