"""A new job's id is none the peer knows (peer.log.ids.new_job_id with
MeshState.knows_job): a drawn id of a live, compacted or deleted job would make the new
job's JOB_SUBMITTED fold as a rival of the old one or as an event of a job gone (never run,
never shown)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from peer.config import PeerConfig
from peer.log import Event, EventType
from peer.log.fold import MeshState
from peer.log.ids import JOB_HEX_DIGITS, JOB_ID_DRAWS, is_job_id, new_job_id
from peer.node import Node
from tests.unit.test_compaction import ORIGIN, history


def _draws(*hexes: str) -> Callable[[int], str]:
    """A random source that gives `hexes` in turn (each JOB_HEX_DIGITS long)."""
    it: Iterator[str] = iter(hexes)

    def draw(n_bytes: int) -> str:
        assert n_bytes * 2 == JOB_HEX_DIGITS
        return next(it)

    return draw


def test_a_drawn_id_that_is_taken_is_drawn_again() -> None:
    taken = {"j" + "0" * 12, "j" + "1" * 12}
    job = new_job_id(taken.__contains__, _draws("0" * 12, "1" * 12, "2" * 12))
    assert job == "j" + "2" * 12 and is_job_id(job)


def test_a_random_source_that_names_known_jobs_only_is_an_error_not_a_loop() -> None:
    with pytest.raises(RuntimeError, match=f"{JOB_ID_DRAWS} draws in a row"):
        new_job_id(lambda job: True, _draws(*["a" * 12] * JOB_ID_DRAWS))


def _open(d: Path, nodes: list[Node]) -> Node:
    n = Node(PeerConfig(data_dir=d, slots=1, mdns=False, compact_recent_tasks=0))
    n.listeners[:] = [n.compactor.note]  # no scheduler: only the compactor listens
    nodes.append(n)
    return n


def test_the_peer_knows_its_live_compacted_and_deleted_jobs_also_after_a_restart(
        tmp_path: Path, opened: list[Node]) -> None:
    n = _open(tmp_path / "a", opened)
    n.merge(history(jobs=2, per_job=1, live=1))  # job000, job001 done; job002 live
    n.catchup.compact()
    assert "job000" not in n.state.jobs and "job001" not in n.state.jobs  # out of memory
    n.janitor.delete_job("job001")
    _knows_these_only(n)
    _knows_these_only(_reopened(n, tmp_path / "a", opened))


def _knows_these_only(n: Node) -> None:
    assert all(n.state.knows_job(j) for j in ("job000", "job001", "job002"))
    assert not n.state.knows_job("job003") and not n.state.knows_job("j" + "0" * 12)


def _reopened(n: Node, d: Path, nodes: list[Node]) -> Node:
    n.log.close()
    nodes.remove(n)
    return _open(d, nodes)


def test_a_job_only_heard_of_is_known() -> None:
    """A cancel that came before its job's JOB_SUBMITTED names a job of another peer."""
    s = MeshState()
    s.apply(Event(ORIGIN, 1, 1 << 16, EventType.JOB_CANCELLED,
                  {"job": "jx", "reason": "by a user"}))
    assert s.knows_job("jx") and not s.knows_job("jy")


def test_why_a_taken_id_matters_a_new_job_with_a_compacted_jobs_id_is_never_seen(
        tmp_path: Path, opened: list[Node]) -> None:
    """What new_job_id keeps from happening: the JOB_SUBMITTED of a new job named as a
    compacted one folds as that job's straggler: no live job, its view the old record."""
    n = _open(tmp_path / "a", opened)
    n.merge(history(jobs=1, per_job=1))
    n.catchup.compact()
    new = n.emit(EventType.JOB_SUBMITTED, {"job": "job000", "workflow": {"name": "new", "tasks": [
        {"name": "other", "call": "ECHO", "params": {"text": "new"}}]}})
    assert n.state.holds(new.id) and "job000" not in n.state.jobs
    record = n.catchup.job_record("job000")
    assert record is not None and record["workflow"]["name"] == "job000"  # the old job's
