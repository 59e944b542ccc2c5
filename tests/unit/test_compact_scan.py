"""A compaction pass builds a finished job's record only to compact it: its scan of the jobs
touched since the last pass asks only when each ended (Node._ended), not for the record."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from peer.config import PeerConfig
from peer.http.views import job_view
from peer.log import Event
from peer.log.compact import Finished
from peer.node import Node
from tests.unit.record_oracle import compact_view
from tests.unit.test_compaction import history as compaction_history


def history(jobs: int, per_job: int, live: int = 0) -> list[Event]:
    """`jobs` finished jobs of `per_job` ECHO tasks, then `live` jobs submitted, not run; a
    millisecond apart, so that each job's end differs."""
    return compaction_history(jobs, per_job, live, hlc_step=1 << 16)


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    n = Node(PeerConfig(data_dir=tmp_path, slots=1, mdns=False, compact_recent_tasks=2))
    n.listeners[:] = [n.compactor.note]  # no scheduler running: only the compactor listens
    yield n
    n.log.close()


def test_ended_is_what_the_record_says(node: Node) -> None:
    node.merge(history(jobs=3, per_job=2, live=1))
    for job in ("job000", "job001", "job002"):
        f = node._finished(job)
        assert f is not None
        assert node._ended(job) == (f.ended_hlc, f.n_tasks)
    assert node._ended("job003") is None and node._finished("job003") is None
    ends = [node._ended(j) for j in ("job000", "job001", "job002")]
    assert len(set(ends)) == 3  # (the jobs' ends differ: the order the scan keeps is theirs)


def test_a_pass_builds_the_record_of_the_jobs_it_compacts_only(node: Node) -> None:
    built: list[str] = []
    real = node.compactor.finished

    def counting(job: str) -> Finished | None:
        built.append(job)
        return real(job)

    node.compactor.finished = counting
    node.compactor.vvs = lambda: [dict(node.heads()), {}]  # nothing leaves the log
    node.merge(history(jobs=3, per_job=2, live=1))
    views = {j: job_view(node.state, j, node.cfg.max_attempts) for j in node.state.jobs}
    stats = node.catchup.compact()
    # the two oldest leave memory (their records built once each); the newest finished job
    # (the recent history) and the live one stay, and no record of theirs is built
    assert sorted(stats.jobs) == ["job000", "job001"]
    assert sorted(built) == ["job000", "job001"]
    for j in ("job000", "job001"):
        assert node.catchup.job_record(j) == compact_view(views[j])
    # a later event touching the finished job of the recent history: scanned, not built
    node.compactor.dirty.add("job002")
    node.catchup.compact()
    assert sorted(built) == ["job000", "job001"]
    assert "job002" in node.compactor.ended


def test_a_compactor_without_ended_takes_it_from_the_record(node: Node) -> None:
    c = node.compactor
    c.ended_of = c._ended_of
    node.merge(history(jobs=3, per_job=2, live=1))
    stats = node.catchup.compact()
    assert sorted(stats.jobs) == ["job000", "job001"]
    assert sorted(node.state.jobs) == ["job002", "job003"]
