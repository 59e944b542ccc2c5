"""The bound on deleted jobs' tombstones (docs/architecture.md, Compaction, item 9): when a
tombstone and every JOB_DELETED row of its job may leave the job index and the log
(`holds_back`, pure; the compactor, peer.log.compact, forgets)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from peer.log.clock import hlc_ms

# A tombstone stays at least this long after its first JOB_DELETED (a protocol constant: peers
# with different values would widen the window where one forgot and another did not).
TOMB_GRACE_S = 30 * 86_400.0
# A heartbeat's (and MEMBER's) `features`: this peer forgets tombstones past the grace once
# every member announces it (a peer of the previous release keeps them all: nothing goes).
TOMB_FEATURE = "tomb-v1"
# Tombstones past the grace examined per pass, at most (oldest first).
TOMB_SCAN_JOBS = 1024


def holds_back(tomb_hlc: int, ids: Iterable[tuple[str, int]], now_hlc: int,
               members: Iterable[str], heard: Mapping[str, Mapping[str, int]],
               heads: Mapping[str, int], revoked: Mapping[str, int] | None = None,
               ) -> str | None:
    """Why a tombstone (its first JOB_DELETED's hlc, the ids of every JOB_DELETED row of its
    job) may not leave yet, by clauses (a) and (c) of the design: "grace" while it is younger
    than TOMB_GRACE_S; else the first of `members` that is not live ("ID (not heard)": it
    may hold or emit, cut off, events of the job that would reach us after we forgot), or
    whose vector (`heard`: the one it sent last) does not cover every row, or holds an event
    our `heads` do not (one of the job, relayed later, would find no tombstone here while
    its other holders had let it go). None: it may leave (clauses (b), every member
    announces TOMB_FEATURE, and (d), no other event of the job is in the log, are the
    caller's). `revoked`: origin -> the last seq of it still accepted (its REVOKE's
    `after`): a member may hold later events of a revoked origin (sent to it before the
    REVOKE spread), which no peer that folded the REVOKE takes, so they count up to there."""
    if hlc_ms(now_hlc) - hlc_ms(tomb_hlc) < TOMB_GRACE_S * 1000:
        return "grace"
    cap = revoked or {}
    marks: dict[str, int] = {}
    for origin, seq in ids:
        marks[origin] = max(marks.get(origin, 0), seq)
    for member in sorted(members):
        vv = heard.get(member)
        if vv is None:
            return f"{member} (not heard)"
        if any(vv.get(o, 0) < q for o, q in marks.items()) or any(
                heads.get(o, 0) < min(q, cap.get(o, q)) for o, q in vv.items()):
            return member
    return None
