"""Session 50, helper f (session 49 helper b's left (3)): a self-added member's TASK_SPLIT
ranks after every vouched lane's (`fold._split`, as a TASK_DONE does), in any order, and a
vouched member that finds an unvouched lane's split winning splits the task itself
(`Scheduler._unvouched_split`) rather than run the chunks that split declares; where no
vouched member is live the taker's split stands (orphan takeover). And what is left (its
left (4)): a self-added member's CHUNK_FAILEDs alone still fail a task (a strict xfail)."""

from __future__ import annotations

import itertools

import pytest

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


# -- left: a self-added member's CHUNK_FAILEDs still exhaust a chunk (task f's 2(b)) ------
HSPLIT = split(H, 1, 1200)


def failure(peer: str, seq: int, hlc: int, attempt: int, kind: str = "error") -> Event:
    """A CHUNK_FAILED of t0's chunk 0 (of H's split) at `attempt` in `peer`'s lane."""
    return Event(lane(peer, J), seq, hlc, EventType.CHUNK_FAILED,
                 {"job": J, "task": "t0", "chunk": 0, "attempt": attempt,
                  "split": list(HSPLIT.id), "kind": kind, "error": "made up"})


@pytest.mark.xfail(strict=True, reason="left (task f of session 50, 2(b)): a failure needs "
                   "no claim, and the takeover needs a self-added member's failures to count "
                   "where no vouched member is live: a liveness half not made")
def test_a_self_added_members_failures_alone_fail_no_task_of_a_live_vouched_member() -> None:
    """X (self-added) sends one CHUNK_FAILED of kind `error` (not retried) for attempt 0 of
    t0's chunk, which no one claimed: t0 fails on every member (its chunk is exhausted), a
    denial of the job by two events. Likewise max_attempts counted ones of kind `crash`."""
    for fails in ([failure(X, 1, 1300, 0)],
                  [failure(X, q, 1300 + q, q - 1, "crash") for q in (1, 2, 3)]):
        for me in (H, R, X):
            s = lanes_fold([SUB, ADD, HSPLIT, *fails], me)
            assert not task_failed(s, J, "t0", 3), me
