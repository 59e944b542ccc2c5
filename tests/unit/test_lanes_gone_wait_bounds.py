"""Review r3 of session 48, F3 and F6: what waits of a gone lanes job for a vouched
member's JOB_MEMBERS (`GoneWait`) is bounded by what it costs (each peer an add names,
each lane event held), per job and in all, is freed with the job's tombstone, and a refold
re-folding what waits costs nothing more. The real fold on a real `MeshState`."""

from __future__ import annotations

from peer.log import Event, EventType, fold
from peer.log.fold import GONE_WAIT_ALL, GONE_WAIT_MAX, MeshState
from peer.log.lanes import lane
from tests.unit.test_lanes_gone import DEL, state
from tests.unit.test_lanes_hostile import BAD, REAL, SUB, WF, H, J, R, X, task_done

Q = "f6" * 8  # a peer that is no member of any job


def _gone_job(s: MeshState, n: int) -> str:
    """A lanes job (H, R members) submitted and deleted: its id."""
    job = f"j{n:012x}"
    fold([Event(H, 3 * n + 101, 1000 + n, EventType.JOB_SUBMITTED,
                {"job": job, "workflow": WF, "members": [H, R]}),
          Event(H, 3 * n + 102, 900000 + n, EventType.JOB_DELETED,
                {"job": job, "reason": "user"})], s)
    return job


def _parked(s: MeshState, job: str) -> int:
    wait = s._gone_waits.get(job)
    return 0 if wait is None else sum(map(len, wait.adds.values()))


def test_a_non_members_adds_to_a_gone_job_are_bounded_by_the_peers_they_name() -> None:
    """Q (no member, not vouched) sends 10 JOB_MEMBERS of 1,024 fresh peers each to one
    deleted job: at most GONE_WAIT_MAX peers wait (on e66c4c5a all 10,240 did: each
    JOB_MEMBERS counted one of 512, so one job could hold 524,288 ids, ~51 MB)."""
    s = state()
    job = _gone_job(s, 1)
    for i in range(10):
        fold([Event(Q, i + 1, 2000 + i, EventType.JOB_MEMBERS,
                    {"job": job, "add": [f"{i * 1024 + k:016x}" for k in range(1024)]})], s)
    assert 0 < _parked(s, job) <= GONE_WAIT_MAX
    assert s._gone_waits[job].n == _parked(s, job)


def test_what_waits_of_all_gone_jobs_is_bounded_in_all() -> None:
    """One JOB_MEMBERS of 1,024 fresh peers to each of 70 deleted jobs: at most
    GONE_WAIT_ALL peers wait in all (on e66c4c5a all 71,680 did)."""
    s = state()
    for n in range(70):
        job = _gone_job(s, n)
        fold([Event(Q, n + 1, 2000 + n, EventType.JOB_MEMBERS,
                    {"job": job, "add": [f"{n * 1024 + k:016x}" for k in range(1024)]})], s)
    total = sum(_parked(s, j) for j in s._gone_waits)
    assert 0 < total <= GONE_WAIT_ALL
    assert s._gone_wait_n == total


def test_a_gone_jobs_wait_is_freed_when_its_tombstone_goes() -> None:
    """What waited of a deleted job goes when its tombstone does (`drop_wait`, called by the
    compactor's `_forget`), and its cost with it (on e66c4c5a nothing freed a wait)."""
    s = state()
    job = _gone_job(s, 1)
    fold([Event(Q, 1, 2000, EventType.JOB_MEMBERS, {"job": job, "add": [X]})], s)
    assert _parked(s, job) == 1
    s.drop_wait(job)
    assert job not in s._gone_waits and s._gone_wait_n == 0


def test_a_refold_costs_what_waits_nothing_more() -> None:
    """X adds itself (not vouched) and its lane event waits, J deleted; three refolds leave
    the wait's cost and its held events as they were (on e66c4c5a each refold charged them
    again, and held X's lane event once more: after ~510 refolds a later wait was let go on
    this peer only)."""
    xx = Event(X, 2, 1500, EventType.JOB_MEMBERS, {"job": J, "add": [X]})
    xl = task_done(lane(X, J), 1, 1700, BAD)
    s = fold([SUB, REAL, DEL, xx, xl], state())
    wait = s._gone_waits[J]
    before = (wait.n, {p: len(v) for p, v in wait.lanes.lanes.items()}, s._gone_wait_n)
    for _ in range(3):
        s.refold()
    wait = s._gone_waits[J]
    assert (wait.n, {p: len(v) for p, v in wait.lanes.lanes.items()},
            s._gone_wait_n) == before


def test_a_vouched_add_to_a_gone_job_grows_its_facts_in_place() -> None:
    """H (vouched) adds 1,024 new peers to deleted J five times: the facts are grown in
    place after the first (one object, every peer a member and vouched), not copied whole
    per JOB_MEMBERS (on e66c4c5a each made new sets: 400 adds of 1,024 peers took 11 s
    against 0.5 s live, review r3 of session 48, F4)."""
    s = fold([SUB, REAL, DEL], state())
    seen = []
    for i in range(5):
        fold([Event(H, 10 + i, 1500 + i, EventType.JOB_MEMBERS,
                    {"job": J, "add": [f"{i * 1024 + k:016x}" for k in range(1024)]})], s)
        seen.append(s.gone_lanes(J))
    assert all(f is seen[0] for f in seen)
    got = seen[-1]
    assert got is not None and len(got.members) == len(got.vouched) == 5 * 1024 + 2


def test_a_refold_does_not_share_the_facts_grown_in_place() -> None:
    """A refold's state takes copies of the facts grown in place: a vouched add folded
    after it does not grow the facts the old state handed out (the compactor's, a
    caller's)."""
    s = fold([SUB, REAL, DEL, Event(H, 10, 1500, EventType.JOB_MEMBERS,
                                    {"job": J, "add": [X]})], state())
    before = s.gone_lanes(J)
    assert before is not None and X in before.members
    s.refold()
    fold([Event(H, 11, 1501, EventType.JOB_MEMBERS, {"job": J, "add": [Q]})], s)
    after = s.gone_lanes(J)
    assert after is not None and Q in after.members and Q not in before.members
