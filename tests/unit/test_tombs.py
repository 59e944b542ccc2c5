"""The tombstones of deleted jobs (docs/architecture.md, Compaction, item 9): every
JOB_DELETED row of a job is found (`deleted_ids`, filled as they leave memory and backfilled
once for a data dir of an earlier release)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from peer.log import Event, EventType
from peer.node import Node
from tests.unit.test_compaction import ORIGIN, _deleted, _open, history

OTHER = "othr0000000000000000"


def _ids(n: Node) -> set[tuple[str, str, int]]:
    return {(str(j), str(o), int(q))
            for j, o, q in n.log.db.execute("SELECT job, origin, seq FROM deleted_ids")}


def _other_deleted(evs: list[Event], job: str, seq: int = 1) -> Event:
    """OTHER's JOB_DELETED of `job`, later than ORIGIN's (a second peer deleted it too)."""
    return Event(OTHER, seq, evs[-1].hlc + 10, EventType.JOB_DELETED,
                 {"job": job, "reason": "rm"})


def test_every_job_deleted_row_of_a_job_is_noted_with_its_tombstone(
        tmp_path: Path, opened: list[Node]) -> None:
    n = _open(tmp_path / "a", opened, recent_tasks=1000)
    evs = history(jobs=2, per_job=1)
    first, second = _deleted(evs, "job000"), _other_deleted(evs, "job000")
    n.merge([*evs, first])
    n.catchup.compact()
    n.merge([second])  # after the tombstone went to the job index
    n.catchup.compact()
    assert _ids(n) == {("job000", ORIGIN, first.seq), ("job000", OTHER, 1)}
    assert n.index.tombstone("job000") == first.order


def test_a_data_dir_of_the_previous_release_gets_its_deleted_ids_backfilled(
        tmp_path: Path, opened: list[Node]) -> None:
    d = tmp_path / "a"
    n = _open(d, opened, recent_tasks=1000)
    n.listeners[:] = []
    evs = history(jobs=2, per_job=1)
    first, second = _deleted(evs, "job000"), _other_deleted(evs, "job000")
    n.log.append([*evs, first, second])
    n.log.close()
    opened.remove(n)
    c = sqlite3.connect(d / "events.sqlite")
    for table in ("job_deleted", "deleted_ids", "member_vv"):  # f151f27's tables had none
        c.execute(f"DROP TABLE {table}")
    c.commit()
    c.close()
    again = _open(d, opened, recent_tasks=1000)
    assert again.index.backfilled == 2
    assert _ids(again) == {("job000", ORIGIN, first.seq), ("job000", OTHER, 1)}


def test_rows_the_previous_release_wrote_into_a_data_dir_of_ours_are_noted_at_the_replay(
        tmp_path: Path, opened: list[Node]) -> None:
    """The previous release, opening a data dir this one wrote, appends JOB_DELETEDs and
    knows no `deleted_ids`: the next start of ours notes them as the replay lets them go."""
    d = tmp_path / "a"
    n = _open(d, opened, recent_tasks=1000)
    evs = history(jobs=2, per_job=1)
    n.merge(evs)
    n.catchup.compact()
    gone = _deleted(evs, "job001")
    n.log.append([gone])  # as the previous release would (no pass of ours saw it)
    n.log.close()
    opened.remove(n)
    again = _open(d, opened, recent_tasks=1000)
    assert again.index.backfilled == 0  # (the table was there)
    assert _ids(again) == {("job001", ORIGIN, gone.seq)}
