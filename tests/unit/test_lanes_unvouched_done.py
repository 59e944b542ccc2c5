"""Session 49, helper b (session 48 helper a's left (a) and (c)): an unvouched lane's
(a self-added member's) TASK_DONE or CHUNK_DONE ranks after every vouched lane's, the
chunk's winner too (`ChunkState.done`), in any order; where it is a task's only one, a
vouched member's scheduler runs the task again rather than take its output."""

from __future__ import annotations

import itertools
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from peer.log import Event, EventType, MeshState, fold
from peer.log.events import ChunkKey
from peer.log.fold import NO_CHUNK
from peer.log.lanes import lane, lane_of

H, R, X, Y = "a1" * 8, "b2" * 8, "c3" * 8, "e5" * 8  # home, replica, self-added, added by X
J = "j" + "0" * 11 + "1"
GOOD = "bafkreiaheqdfvsfwin2qysg2nd3n4upuu7oyiwtnuvai2oi3lesbeuh42q"
BAD = "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"
WF = {"name": "w", "tasks": [{"name": "t0", "call": "c", "params": {}, "depends": []}]}
SUB = Event(H, 1, 1000, EventType.JOB_SUBMITTED, {"job": J, "workflow": WF, "members": [H, R]})
KEY = ChunkKey(J, "t0", H, 1, 0)  # (t0's chunk 0 of the split [H, 1])
ADD = Event(X, 1, 1100, EventType.JOB_MEMBERS, {"job": J, "add": [X]})


def chunk_done(peer: str, seq: int, hlc: int, output: str = GOOD, attempt: int = 0,
               ) -> Event:
    """A CHUNK_DONE of t0's chunk 0 in `peer`'s lane, implying t0's TASK_DONE."""
    return Event(lane(peer, J), seq, hlc, EventType.CHUNK_DONE,
                 {"job": J, "task": "t0", "chunk": 0, "attempt": attempt, "split": [H, 1],
                  "output": output, "done": {"key": "k0"}})


def reopen(peer: str, seq: int, hlc: int, attempt: int) -> Event:
    """A CHUNK_FAILED reopening t0's chunk 0 at `attempt` (its results were lost)."""
    return Event(lane(peer, J), seq, hlc, EventType.CHUNK_FAILED,
                 {"job": J, "task": "t0", "chunk": 0, "attempt": attempt, "split": [H, 1],
                  "kind": "lost", "reopen": True, "error": "lost"})


def lanes_fold(events: list[Event], me: str = H) -> MeshState:
    return fold(events, MeshState(lanes_on=True, me=me))


def test_a_self_added_members_backdated_chunk_done_wins_no_chunk_a_vouched_member_did() -> None:
    """X's CHUNK_DONE, ordered before R's (backdated) or of a made-up later attempt, won
    t0's chunk on every member (by attempt, then order) and so what a split task's assembly
    reads (on 6c66b4c1); R's wins now, in every order, on H, R and X."""
    real = chunk_done(R, 1, 2000)
    for fake in (chunk_done(X, 1, 1050, BAD), chunk_done(X, 1, 2500, BAD, attempt=7)):
        for order in itertools.permutations([SUB, ADD, fake, real]):
            for me in (H, R, X):
                s = lanes_fold(list(order), me)
                c = s.chunks.get(KEY, NO_CHUNK)
                assert c.done is not None and c.done.id == real.id, (me, fake.payload)
                assert c.finished() is c.done
                assert s.chunks.done((J, "t0", H, 1))[0].id == real.id
                assert s.task_done[(J, "t0")].id == real.id


def test_an_orphan_takers_chunk_done_wins_alone_and_after_a_reopen_of_the_vouched_one() -> None:
    """Orphan takeover: X's CHUNK_DONE wins the chunk where no vouched member's is folded;
    and where R's was reopened (its results lost: R gone) and X did the next attempt, the
    chunk is finished by X's (`latest`), in every order; a reopen of X's attempt too leaves
    it open."""
    real, taker = chunk_done(R, 1, 2000), chunk_done(X, 2, 2600, attempt=1)
    lost = reopen(X, 1, 2500, 0)
    for evs, want in (([SUB, ADD, taker], taker), ([SUB, ADD, real, lost, taker], taker),
                      ([SUB, ADD, real, lost, taker, reopen(X, 3, 2700, 1)], None),
                      ([SUB, ADD, real, taker], real)):
        for order in itertools.permutations(evs):
            c = lanes_fold(list(order)).chunks.get(KEY, NO_CHUNK)
            got = c.finished()
            assert (got and got.id) == (want and want.id), [e.id for e in order]


def test_a_chunk_done_set_aside_ranks_as_a_vouched_lanes_once_its_peer_is_vouched() -> None:
    """X's CHUNK_DONE, ordered before R's, loses the chunk while X is self-added; once R
    adds X (a vouched member's JOB_MEMBERS) it ranks by order, so it wins: in every order."""
    real, x_done = chunk_done(R, 1, 2000), chunk_done(X, 1, 1050)
    vouching = Event(R, 3, 1200, EventType.JOB_MEMBERS, {"job": J, "add": [X]})
    for order in itertools.permutations([SUB, ADD, x_done, real, vouching]):
        s = lanes_fold(list(order))
        c = s.chunks.get(KEY, NO_CHUNK)
        assert c.done is not None and c.done.id == x_done.id, [e.id for e in order]
        assert s.task_done[(J, "t0")].id == x_done.id


@st.composite
def chunk_events(draw: st.DrawFn) -> tuple[list[Event], set[str], list[Event]]:
    """X's self-add, maybe X's add of Y, maybe R's add of X (which vouches for both), and
    1-6 CHUNK_DONEs (attempts 0-2) and reopening CHUNK_FAILEDs (attempts 0-2) of t0's chunk
    0 in random members' lanes at random orders."""
    adds = [ADD]
    if draw(st.booleans()):
        adds.append(Event(X, 2, 1110, EventType.JOB_MEMBERS, {"job": J, "add": [Y]}))
    vouched = {H, R}
    if draw(st.booleans()):
        adds.append(Event(R, 1, draw(st.integers(1001, 1500)), EventType.JOB_MEMBERS,
                          {"job": J, "add": [X]}))
        vouched |= {X} | ({Y} if len(adds) == 3 else set())
    members = sorted({H, R, X} | ({Y} if any(Y in a.payload["add"] for a in adds) else set()))
    evs, seqs = [], dict.fromkeys(members, 1)
    for _ in range(draw(st.integers(1, 6))):
        by = draw(st.sampled_from(members))
        hlc, attempt = draw(st.integers(1001, 1500)), draw(st.integers(0, 2))
        evs.append(reopen(by, seqs[by], hlc, attempt) if draw(st.integers(0, 3)) == 0 else
                   chunk_done(by, seqs[by], hlc, draw(st.sampled_from([GOOD, BAD])), attempt))
        seqs[by] += 1
    return adds, vouched, evs


@settings(max_examples=200, deadline=None)
@given(chunk_events(), st.lists(st.integers(0, 2**32), min_size=2, max_size=2))
def test_a_chunks_winners_rank_a_vouched_lane_first_in_any_order_and_a_restart(
        drawn: tuple[list[Event], set[str], list[Event]], seeds: list[int]) -> None:
    """`done` is the least CHUNK_DONE by (not in a vouched lane, latest attempt, order),
    `latest` by (latest attempt, order), `finished` the first of them no reopening
    failure at or after its attempt reopened; the same in every order, after a refold and a
    replay in the log's order."""
    adds, vouched, evs = drawn
    dones = [e for e in evs if e.type == EventType.CHUNK_DONE]
    opened = [e.payload["attempt"] for e in evs if e.type == EventType.CHUNK_FAILED]

    def peer(e: Event) -> str:
        return lane_of(e.origin)[0]  # type: ignore[index]

    done = min(dones, default=None, key=lambda e: (peer(e) not in vouched,
                                                   -e.payload["attempt"], e.order))
    latest = min(dones, default=None, key=lambda e: (-e.payload["attempt"], e.order))
    fin = next((d for d in (done, latest) if d is not None
                and not any(a >= d.payload["attempt"] for a in opened)), None)
    for seed in seeds:
        shuffled = [SUB, *adds, *evs]
        random.Random(seed).shuffle(shuffled)
        s = lanes_fold(shuffled)
        replayed = lanes_fold(sorted(shuffled, key=lambda e: e.order))
        s2 = lanes_fold(shuffled)
        s2.refold()
        for st_ in (s, replayed, s2):
            c = st_.chunks.get(KEY, NO_CHUNK)
            assert (c.done and c.done.id) == (done and done.id)
            assert (c.latest and c.latest.id) == (latest and latest.id)
            got = c.finished()
            assert (got and got.id) == (fin and fin.id)
            assert (st_.chunks.done((J, "t0", H, 1)).get(0) is got) or got is None
