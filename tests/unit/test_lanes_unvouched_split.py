"""Session 50, helper f (session 49 helper b's left (3)): a self-added member's TASK_SPLIT
ranks after every vouched lane's (`fold._split`, as a TASK_DONE does), in any order, and a
vouched member that finds an unvouched lane's split winning splits the task itself
(`Scheduler._unvouched_split`) rather than run the chunks that split declares; where no
vouched member is live the taker's split stands (orphan takeover). Likewise its left (4):
a self-added member's CHUNK_FAILEDs are left out of a chunk's count by a scheduler that
sees a vouched member that can run the task live (`Scheduler._unvouched_failures`), and
an attempt's failure ranks a vouched lane's first (`fold._chunk_failed`)."""

from __future__ import annotations

import itertools

from peer.jobs.claims import task_failed
from peer.jobs.sim import JobMesh
from peer.log import Event, EventType
from peer.log.lanes import lane, lane_of
from tests.unit.test_lanes_unvouched_done import (
    ADD,
    CATALOG,
    CHAIN,
    SIM_CFG,
    SUB,
    H,
    J,
    R,
    X,
    finish_all,
    lanes_fold,
)


def split(peer: str, seq: int, hlc: int, chunks: int = 1) -> Event:
    """A TASK_SPLIT of t0 in `peer`'s lane, of `chunks` empty chunks."""
    return Event(lane(peer, J), seq, hlc, EventType.TASK_SPLIT,
                 {"job": J, "task": "t0", "input": None, "chunks": [[]] * chunks, "kept": {}})


def test_a_self_added_members_backdated_split_wins_no_task_a_vouched_member_split() -> None:
    """X's split, ordered before R's (backdated), won t0's split on every member (by order
    alone, on db663953); R's wins now, in every order, on H, R and X."""
    real, fake = split(R, 1, 2000), split(X, 1, 1050, chunks=3)
    for order in itertools.permutations([SUB, ADD, fake, real]):
        for me in (H, R, X):
            s = lanes_fold(list(order), me)
            assert s.splits[(J, "t0")].id == real.id, (me, [e.id for e in order])


def test_an_unvouched_split_wins_alone_and_ranks_by_order_once_vouched() -> None:
    """Orphan takeover: X's split wins where no vouched lane's is folded; once H adds X, X's
    lane is a vouched one and the earlier split wins, in every order."""
    real, fake = split(R, 1, 2000), split(X, 1, 1050)
    hx = Event(H, 2, 3000, EventType.JOB_MEMBERS, {"job": J, "add": [X]})
    for order in itertools.permutations([SUB, ADD, fake]):
        assert lanes_fold(list(order)).splits[(J, "t0")].id == fake.id
    for order in itertools.permutations([SUB, ADD, fake, real, hx]):
        assert lanes_fold(list(order)).splits[(J, "t0")].id == fake.id


async def test_a_self_added_members_split_first_is_split_again_by_the_vouched_members() -> None:
    """X (p2) adds itself to a job of [p0, p1] and splits a first (before any member's turn).
    On db663953 every member took X's split and ran its chunks. Now a vouched member splits
    a itself, its split wins a on every member, the chunks run are of it, the job ends,
    and X runs nothing while a vouched member that can is live."""
    mesh = JobMesh(3, CATALOG, SIM_CFG, lanes=True)
    p0, p1, p2 = mesh.peers
    try:
        job = mesh.submit(p0, CHAIN, members=[p0, p1])
        mesh.deliver()
        mesh.emit(p2, EventType.JOB_MEMBERS, {"job": job, "add": [p2]})
        ev = mesh.emit(p2, EventType.TASK_SPLIT, {"job": job, "task": "a", "input": None,
                                                  "chunks": [[], [], []], "kept": {}})
        assert lane_of(ev.origin) == (p2, job)
        await finish_all(mesh)
        for pid in (p0, p1, p2):
            st_ = mesh[pid].state
            won = st_.splits[(job, "a")]
            assert lane_of(won.origin)[0] in (p0, p1), pid  # type: ignore[index]
            done = st_.task_done[(job, "a")]
            assert done.payload.get("split", list(won.id)) == list(won.id)
            assert job in st_.ended
        claims = mesh.sent(EventType.CLAIM, job=job, task="a")
        assert claims and all(c.payload["split"] != list(ev.id) for c in claims)
        assert mesh[p2].runner.started == []
    finally:
        await mesh.close()


async def test_a_self_added_members_split_stands_once_no_vouched_member_is_live() -> None:
    """The orphan half: with every vouched member gone, X's split of a stands and X runs its
    chunks (passes on db663953 too: the guard of the takeover)."""
    mesh = JobMesh(3, CATALOG, SIM_CFG, lanes=True)
    p0, p1, p2 = mesh.peers
    try:
        job = mesh.submit(p0, CHAIN, members=[p0, p1])
        mesh.deliver()
        mesh.emit(p2, EventType.JOB_MEMBERS, {"job": job, "add": [p2]})
        ev = mesh.emit(p2, EventType.TASK_SPLIT, {"job": job, "task": "a", "input": None,
                                                  "chunks": [[]], "kept": {}})
        mesh.silent.update((p0, p1))
        await finish_all(mesh)
        st_ = mesh[p2].state
        assert st_.splits[(job, "a")].id == ev.id
        assert (job, "a") in st_.task_done and mesh[p2].runner.started
    finally:
        await mesh.close()


# -- a self-added member's CHUNK_FAILEDs fail no task a live vouched member runs (2(b)) --
HSPLIT = split(H, 1, 1200)


def failure(peer: str, seq: int, hlc: int, attempt: int, kind: str = "error") -> Event:
    """A CHUNK_FAILED of t0's chunk 0 (of H's split) at `attempt` in `peer`'s lane."""
    return Event(lane(peer, J), seq, hlc, EventType.CHUNK_FAILED,
                 {"job": J, "task": "t0", "chunk": 0, "attempt": attempt,
                  "split": list(HSPLIT.id), "kind": kind, "error": "made up"})


def test_a_self_added_members_failures_are_left_out_of_a_vouched_view() -> None:
    """X (self-added) sends one CHUNK_FAILED of kind `error` (not retried) for attempt 0 of
    t0's chunk, which no one claimed, or max_attempts of kind `crash`: t0 is failed in the
    fold (every failure counts: the orphan takeover's view), not in the view that leaves
    an unvouched lane's out (a scheduler's while a vouched member that can run t0 is live),
    on H, R and X. A backdated one of X does not stand for R's failure of that attempt, in
    any order (on db663953 it did: order alone)."""
    for fails in ([failure(X, 1, 1300, 0)],
                  [failure(X, q, 1300 + q, q - 1, "crash") for q in (1, 2, 3)]):
        for me in (H, R, X):
            s = lanes_fold([SUB, ADD, HSPLIT, *fails], me)
            assert task_failed(s, J, "t0", 3)
            assert not task_failed(s, J, "t0", 3, lambda f, s=s: s.unvouched_lane(J, f)
                                   is not None)
    real, fake = failure(R, 1, 2000, 0, "crash"), failure(X, 1, 1250, 0)
    for order in itertools.permutations([SUB, ADD, HSPLIT, fake, real]):
        c = lanes_fold(list(order)).chunk(J, "t0", 0)
        assert c.failures[0].id == real.id


async def test_a_self_added_members_failure_first_fails_no_task_of_a_live_vouched_member(
) -> None:
    """X (p2) adds itself and fails a's one chunk (implicit split) with a made-up `error`
    before any member ran it. On db663953 a failed on every member and the home ended the
    job failed (a denial by two events). Now a vouched member runs a, then b, the job ends
    with both done, and X runs nothing."""
    mesh = JobMesh(3, CATALOG, SIM_CFG, lanes=True)
    p0, p1, p2 = mesh.peers
    try:
        job = mesh.submit(p0, CHAIN, members=[p0, p1], implicit=True)
        mesh.deliver()
        sid = mesh[p0].state.splits[(job, "a")].id
        mesh.emit(p2, EventType.JOB_MEMBERS, {"job": job, "add": [p2]})
        mesh.emit(p2, EventType.CHUNK_FAILED, {
            "job": job, "task": "a", "chunk": 0, "attempt": 0, "split": list(sid),
            "kind": "error", "error": "made up"})
        await finish_all(mesh)
        for pid in (p0, p1, p2):
            st_ = mesh[pid].state
            assert (job, "a") in st_.task_done and (job, "b") in st_.task_done, pid
            assert job in st_.ended and not st_.ended[job].payload["failed"], pid
        assert mesh[p2].runner.started == []
    finally:
        await mesh.close()


async def test_a_self_added_members_failure_counts_once_no_vouched_member_is_live() -> None:
    """The orphan half: with every vouched member gone, X's failure of a counts (a fails:
    a taker's failures must end a task that fails; passes on db663953 too, a guard)."""
    mesh = JobMesh(3, CATALOG, SIM_CFG, lanes=True)
    p0, p1, p2 = mesh.peers
    try:
        job = mesh.submit(p0, CHAIN, members=[p0, p1], implicit=True)
        mesh.deliver()
        sid = mesh[p0].state.splits[(job, "a")].id
        mesh.silent.update((p0, p1))
        mesh.emit(p2, EventType.JOB_MEMBERS, {"job": job, "add": [p2]})
        mesh.emit(p2, EventType.CHUNK_FAILED, {
            "job": job, "task": "a", "chunk": 0, "attempt": 0, "split": list(sid),
            "kind": "error", "error": "made up"})
        await finish_all(mesh)
        st_ = mesh[p2].state
        assert task_failed(st_, job, "a", SIM_CFG.max_attempts)
        assert (job, "a") not in st_.task_done and mesh[p2].runner.started == []
    finally:
        await mesh.close()
