"""Session 50, helper f (session 49 helper b's left (3)): a self-added member's TASK_SPLIT
ranks after every vouched lane's (`fold._split`, as a TASK_DONE does), in any order, and a
vouched member that finds an unvouched lane's split winning splits the task itself
(`Scheduler._unvouched_split`) rather than run the chunks that split declares; where no
vouched member is live the taker's split stands (orphan takeover)."""

from __future__ import annotations

import itertools

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
