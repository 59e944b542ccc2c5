"""Review r3 of session 48, F2: the facts a late vouched JOB_MEMBERS grew of a compacted
lanes job (`gone_vouched`) and the record they regrow are written in one transaction, so
that a crash while writing them leaves neither: the replay grows them again. A real `Node`
(no network) and its real job index; the crash is raised by the connection at the
record's write."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from peer.log import EventType
from tests.unit.test_lanes_compact import J1, _end, _node
from tests.unit.test_lanes_gone_frozen import _restarted

X = "c3" * 8


class Crash(BaseException):
    """A kill while the job index is written."""


class _CrashAtRecord:
    """The index's connection, raising at the write of a job's record (`job_index`)."""

    def __init__(self, db: Any) -> None:
        self.db = db

    def __getattr__(self, name: str) -> Any:
        return getattr(self.db, name)

    def execute(self, sql: str, *args: Any) -> Any:
        return self.db.execute(sql, *args)

    def executemany(self, sql: str, *args: Any) -> Any:
        if sql.startswith("INSERT OR REPLACE INTO job_index"):
            raise Crash
        return self.db.executemany(sql, *args)


def test_a_crash_writing_grown_facts_leaves_no_record_naming_the_old_members(
        tmp_path: Path) -> None:
    """J1 compacted (its record names this peer only); this peer adds X (vouched); the pass
    that writes the grown facts is killed at the record's write; after a restart and three
    passes the record and `lanes_of` name X (on e66c4c5a the facts were committed first, the
    replay found them grown already and the record named [me] for good)."""
    node = _node(tmp_path)
    me = node.peer_id
    _end(node, J1)
    assert node.catchup.compact().jobs == [J1]
    node.emit(EventType.JOB_MEMBERS, {"job": J1, "add": [X]})
    node.flush()
    real = node.index._db
    node.index._db = _CrashAtRecord(real)  # type: ignore[assignment]
    try:
        node.catchup.compact()
        raise AssertionError("the pass did not write the grown record")
    except Crash:
        pass
    finally:
        node.index._db = real
        node.log.close()
    back = _restarted(tmp_path)
    try:
        for _ in range(3):
            back.catchup.compact()
        rec = back.index.full(J1)
        assert rec is not None and sorted(rec.summary["members"]) == sorted({me, X})
        lanes = back.index.lanes_of(J1)
        assert lanes is not None and sorted(lanes[0]) == sorted({me, X})
        assert back.index.vouched_of(J1) == (sorted({me, X}), sorted({me, X}))
    finally:
        back.log.close()
