"""Paging of the job list (GET /api/jobs?limit=&cursor=): a pure function of the state."""

from __future__ import annotations

import pytest

from peer.errors import ArgError
from peer.http.views import page_jobs
from peer.log import Event, EventType, fold


def _job(origin: str, seq: int, hlc: int) -> Event:
    return Event(origin, seq, hlc, EventType.JOB_SUBMITTED,
                 {"job": f"{origin}{seq}", "workflow": {"tasks": []}})


STATE = fold([_job("a.b", 1, 10), _job("c", 1, 10), _job("a.b", 2, 30), _job("c", 2, 20),
              _job("c", 3, 40)])
NEWEST_FIRST = ["c3", "a.b2", "c2", "c1", "a.b1"]


def test_without_a_limit_every_job_newest_first_and_no_cursor() -> None:
    assert page_jobs(STATE, None, None) == (NEWEST_FIRST, None)


@pytest.mark.parametrize("limit", [1, 2, 3, 4, 5, 6])
def test_pages_cover_every_job_once_in_order(limit: int) -> None:
    seen: list[str] = []
    cursor = None
    while True:
        page, cursor = page_jobs(STATE, limit, cursor)
        assert 1 <= len(page) <= limit
        seen += page
        if cursor is None:
            break
    assert seen == NEWEST_FIRST


def test_a_page_is_stable_when_newer_jobs_arrive() -> None:
    s = fold([_job("a.b", 1, 10), _job("c", 1, 20)])
    first, cursor = page_jobs(s, 1, None)
    s.apply(_job("d", 1, 50))
    assert first == ["c1"] and page_jobs(s, 1, cursor) == (["a.b1"], None)


@pytest.mark.parametrize(("limit", "cursor"), [(0, None), (1001, None), (5, "x"),
                                               (5, "1.2."), (5, "a.1.o")])
def test_bad_limit_or_cursor_is_an_arg_error(limit: int, cursor: str | None) -> None:
    with pytest.raises(ArgError):
        page_jobs(STATE, limit, cursor)
