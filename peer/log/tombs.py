"""The bound on deleted jobs' tombstones (docs/architecture.md, Compaction, item 9): when a
tombstone and every JOB_DELETED row of its job may leave the job index and the log
(`holds_back`, pure), and the version vector each member last sent, kept in the job index so
that a member away counts with what it had folded when last heard (`Vectors`). Loop-owned,
like the compactor (peer.log.compact) that forgets."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Protocol

from peer.log.clock import hlc_ms

# A tombstone stays at least this long after its first JOB_DELETED (a protocol constant: peers
# with different values would widen the window where one forgot and another did not).
TOMB_GRACE_S = 30 * 86_400.0
# A heartbeat's (and MEMBER's) `features`: this peer forgets tombstones past the grace once
# every member announces it (a peer of the previous release keeps them all: nothing goes).
TOMB_FEATURE = "tomb-v1"
# The members' last vectors are written to the job index at most this often (a crash loses
# at most this much of their progress: the clause then waits a little longer, never less).
VV_WRITE_S = 60.0
# Tombstones past the grace examined per pass, at most (oldest first).
TOMB_SCAN_JOBS = 1024


class VectorStore(Protocol):
    """What `Vectors` needs of the job index (peer.log.jobindex.JobIndex)."""

    def member_vvs(self) -> dict[str, dict[str, int]]: ...
    def put_member_vvs(self, vvs: Mapping[str, Mapping[str, int]]) -> None: ...
    def drop_member_vvs(self, members: Iterable[str]) -> None: ...


class Vectors:
    """Member -> the version vector it last sent us (a digest or a heartbeat), in memory and
    in the job index. `note` takes the live members' as they are now and writes those that
    changed, at most every VV_WRITE_S; raises (kept dirty) if the index cannot be written."""

    def __init__(self, store: VectorStore) -> None:
        self.store = store
        self.vvs: dict[str, dict[str, int]] = store.member_vvs()
        self._dirty: set[str] = set()
        self._written_ms: int | None = None

    def note(self, heard: Mapping[str, Mapping[str, int]], now_ms: int) -> None:
        for member, vv in heard.items():
            if vv and self.vvs.get(member) != vv:
                self.vvs[member] = dict(vv)
                self._dirty.add(member)
        if self._dirty and (self._written_ms is None
                            or now_ms - self._written_ms >= VV_WRITE_S * 1000):
            self.store.put_member_vvs({m: self.vvs[m] for m in sorted(self._dirty)})
            self._dirty.clear()
            self._written_ms = now_ms

    def keep(self, members: Iterable[str]) -> None:
        """Only these members' vectors are kept (a revoked member's, or a peer heard that is
        no member, go: from memory and the job index); raises (kept) if it cannot write."""
        gone = self.vvs.keys() - set(members)
        if gone:
            self.store.drop_member_vvs(sorted(gone))
            for m in gone:
                del self.vvs[m]
                self._dirty.discard(m)


def holds_back(tomb_hlc: int, ids: Iterable[tuple[str, int]], now_hlc: int,
               members: Iterable[str], vvs: Mapping[str, Mapping[str, int]],
               heads: Mapping[str, int]) -> str | None:
    """Why a tombstone (its first JOB_DELETED's hlc, the ids of every JOB_DELETED row of its
    job) may not leave yet, by clauses (a) and (c) of the design: "grace" while it is younger
    than TOMB_GRACE_S; else the first of `members` whose last vector (`vvs`) does not cover
    every row, or whose own seq in that vector our `heads` do not cover (we may lack what it
    emitted before it reported), or that never sent one. None: it may leave (clauses (b),
    every member announces TOMB_FEATURE, and (d), no other event of the job is in the log,
    are the caller's)."""
    if hlc_ms(now_hlc) - hlc_ms(tomb_hlc) < TOMB_GRACE_S * 1000:
        return "grace"
    marks: dict[str, int] = {}
    for origin, seq in ids:
        marks[origin] = max(marks.get(origin, 0), seq)
    for member in sorted(members):
        vv = vvs.get(member)
        if vv is None or any(vv.get(o, 0) < q for o, q in marks.items()) or (
                heads.get(member, 0) < vv.get(member, 0)):
            return member
    return None
