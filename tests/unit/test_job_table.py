"""The state's jobs keep their order filed (peer/log/jobtable.py `JobTable`; session 50,
helper c): the job list's page of the newest jobs reads the jobs it shows, not every job of
the state (a walk of ~2 us per job on the loop per page: 0.2 s at 100,000), and lists what
the walk listed, whatever was added, replaced or removed between pages."""

from __future__ import annotations

import heapq
import random

from peer.http.views import live_page, page_jobs
from peer.log import Event, EventType, MeshState
from peer.log.jobtable import JobTable
from tests.unit.test_compaction import ORIGIN, history


def _submitted(job: str, hlc: int, seq: int, origin: str = ORIGIN) -> Event:
    return Event(origin, seq, hlc, EventType.JOB_SUBMITTED,
                 {"job": job, "workflow": {"name": job, "tasks": [
                     {"name": "t", "call": "ECHO", "params": {"text": "x"}}]}})


def _walk(table: dict[str, Event], n: int, before: tuple[int, str, int] | None,
          ) -> list[tuple[tuple[int, str, int], str]]:
    """What live_page's walk of every job gave (db663953)."""
    entries = [(ev.order, j) for j, ev in table.items() if before is None or ev.order < before]
    return heapq.nlargest(n, entries, key=lambda oe: oe[0])


def test_the_newest_jobs_are_those_of_a_walk_of_every_job_whatever_changed() -> None:
    rng = random.Random(50)
    table = JobTable()
    for seq in range(1, 3001):  # bounded: 3,000 random changes, a page read after each
        job = f"job{rng.randrange(400):03d}"
        op = rng.random()
        if op < 0.5:
            table[job] = _submitted(job, rng.randrange(1, 10_000), seq)
        elif op < 0.7:
            table.pop(job, None)
        elif op < 0.8 and job in table:  # the same event filed again (a refold)
            table[job] = table[job]
        elif op < 0.9:
            table.setdefault(job, _submitted(job, rng.randrange(1, 10_000), seq))
        else:
            del_all = list(table)[: rng.randrange(3)]
            for j in del_all:
                del table[j]
        n = rng.choice((1, 2, 7, 51))
        before = None if rng.random() < 0.5 else (rng.randrange(10_000), ORIGIN, 0)
        assert table.newest(n, before) == _walk(table, n, before)
    assert len(table._sorted) <= 2 * len(table) + 1024  # stale entries do not pile up


def test_a_folded_states_pages_are_those_of_the_walk() -> None:
    """Through the fold (MeshState.apply: the table the state makes) and page_jobs' cursor."""
    state = MeshState()
    for ev in history(jobs=0, per_job=1, live=40):
        state.apply(ev)
    assert isinstance(state.jobs, JobTable)
    pages, cursor = [], None
    for _ in range(20):  # bounded: 40 jobs, 7 a page
        page, cursor = page_jobs(state, 7, cursor)
        pages += page
        if cursor is None:
            break
    assert pages == [j for _, j in _walk(state.jobs, 1000, None)] and len(pages) == 40
    assert live_page(state, 3, None) == _walk(state.jobs, 4, None)


def test_the_entries_of_jobs_gone_unread_do_not_pile_up() -> None:
    """Jobs submitted and compacted (popped) while no page is read: their entries are dropped
    at a write once they outnumber the jobs (a mesh's months of jobs, the job list unopened)."""
    table = JobTable()
    for i in range(10_000):  # bounded
        table[f"j{i}"] = _submitted(f"j{i}", i + 1, i + 1)
        if i >= 5:
            table.pop(f"j{i - 5}")
    assert len(table) == 5 and len(table._sorted) <= 2 * 5 + 1024
    assert [j for _, j in table.newest(3)] == ["j9999", "j9998", "j9997"]
