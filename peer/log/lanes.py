"""Lanes (docs/design/partial-replication.md, LANES_FEATURE): a lanes job's task events
travel in one event stream per (peer, job), an origin of its own named "<peer>/<job>", held
by the job's members only. Here: the lane names and which event types a lane holds. Pure."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping

from peer.log.events import EventType
from peer.log.ids import is_job_id, is_peer_id

SEPARATOR = "/"  # in neither a peer id nor a job id

# The task events a lane holds (design section 2): a TURN of them, and each alone. Not the
# mesh stream's (JOB_SUBMITTED, JOB_CANCELLED, JOB_DELETED, JOB_ENDED, JOB_MEMBERS, MEMBER,
# REVOKE, PROVIDE, UNPROVIDE, CACHE_PUT, IPNS_RECORD), which every peer holds.
LANE_PARTS: frozenset[EventType] = frozenset({
    EventType.TASK_SPLIT, EventType.TASK_SPLIT_REF, EventType.CLAIM, EventType.PROGRESS,
    EventType.CHUNK_DONE, EventType.CHUNK_FAILED, EventType.TASK_DONE, EventType.PARTIAL})
LANE_TYPES: frozenset[EventType] = LANE_PARTS | {EventType.TURN}


def lane(peer: str, job: str) -> str:
    """The origin of `peer`'s lane of `job`; ValueError if either is not of its form."""
    if not (is_peer_id(peer) and is_job_id(job)):
        raise ValueError(f"no lane of peer {peer!r:.40} and job {job!r:.40}: a peer id is 16 or "
                         "20 lowercase hex digits, a job id 'j' and 12 (maybe '.' and a peer "
                         "id: peer.log.ids)")
    return peer + SEPARATOR + job


# Origins `lane_of` read, and what it found (emptied once LANE_MEMO are held: an origin of
# a hostile event only costs a read): the fold, the scheduler, the metrics and the
# replicator ask it of every event (peer_of), ~3 % of a 3-peer dag's peer CPU read afresh
# each time (issue 12, session 50 helper e). Texts longer than a lane's are not kept.
LANE_MEMO = 4096
_MEMO_CHARS = 64  # (a lane: 20 hex digits, "/", a job id of at most 34 characters)
_lanes_read: dict[str, tuple[str, str] | None] = {}


def lane_of(origin: object) -> tuple[str, str] | None:
    """(peer, job) of a lane's origin; None for any other origin (a peer's own stream, or a
    text that is no lane: strict, so that no other origin is ever taken for one)."""
    if type(origin) is not str:
        return None
    try:
        return _lanes_read[origin]
    except KeyError:
        pass
    got = _lane_of(origin)
    if len(origin) <= _MEMO_CHARS:
        if len(_lanes_read) >= LANE_MEMO:
            _lanes_read.clear()
        _lanes_read[origin] = got
    return got


def _lane_of(origin: str) -> tuple[str, str] | None:
    """`lane_of`, read."""
    peer, sep, job = origin.partition(SEPARATOR)
    if not sep or not is_peer_id(peer) or not is_job_id(job):
        return None
    return peer, job


def peer_of(origin: str) -> str:
    """The peer whose events an origin's are (what they made, claimed, split: its): the
    origin itself, or a lane's peer."""
    if SEPARATOR in origin and (got := lane_of(origin)) is not None:
        return got[0]
    return origin


def is_lane(origin: object) -> bool:
    return lane_of(origin) is not None


def in_scope(origin: str, scope: Collection[str] | None) -> bool:
    """Is `origin` of `scope`: without one, a mesh origin (not a lane); with one (job ids),
    a lane of one of those jobs?"""
    lane = lane_of(origin)
    return lane is None if scope is None else lane is not None and lane[1] in scope


def owned_by(origin: object, peer: str) -> bool:
    """Is `origin` one of `peer`'s own origins: its stream, or a lane of its (what it alone
    emits and signs: its seqs are never reused, never past MAX_OWN_SEQ)?"""
    if origin == peer:
        return True
    lane = lane_of(origin)
    return lane is not None and lane[0] == peer


def shown_origin(origin: object) -> str:
    """An origin as a log line names it: a lane whole (its peer and its job), any other
    text its first 16 characters (a peer id of 0.1.0; this release's differ by then)."""
    text = str(origin)
    return text if is_lane(text) else text[:16]


def member_jobs(members_of: Mapping[str, Collection[str]], ended: Collection[str],
                peer: str) -> list[str]:
    """The live (not ended) lanes jobs `peer` is a member of, sorted: a pair round's
    (`members_of`, `ended`: MeshState's)."""
    return sorted(j for j, m in members_of.items() if peer in m and j not in ended)


def shared_jobs(members_of: Mapping[str, Collection[str]], jobs: Iterable[str], peer: str,
                other: str) -> list[str]:
    """The lanes jobs of `jobs` whose members are both `peer` and `other`, sorted."""
    return sorted({j for j in jobs if peer in members_of.get(j, ()) and other in members_of[j]})
