"""Session 49, helper b (session 48 helper a's left (a) and (c)): an unvouched lane's
(a self-added member's) TASK_DONE or CHUNK_DONE ranks after every vouched lane's, the
chunk's winner too (`ChunkState.done`), in any order; where it is a task's only one, a
vouched member's scheduler runs the task again rather than take its output."""

from __future__ import annotations

import itertools
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from peer.ipfs.store import StoreConfig
from peer.jobs.ports import SchedulerConfig
from peer.jobs.sim import JobMesh
from peer.log import Event, EventType, MeshState, fold
from peer.log.events import ChunkKey
from peer.log.fold import NO_CHUNK
from peer.log.lanes import lane, lane_of, peer_of
from tasks import registry

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


# -- the scheduler: a vouched member runs a task again that only an unvouched lane did ----
SIM_CFG = SchedulerConfig(store=StoreConfig("/nonexistent"), lease_s=10.0, stagger_s=0.05,
                          max_attempts=3, spread_s=1.0)
CATALOG = registry.load(("tests.fixture_tasks",))
CHAIN = [{"name": "a", "call": "T_WRITE", "params": {"files": 1}},
         {"name": "b", "call": "T_WRITE", "params": {"files": 2}, "depends": ["a"]}]


async def finish_all(mesh: JobMesh, rounds: int = 30) -> None:
    """Finish every run of the live peers, round after round, a second apart."""
    for _ in range(rounds):
        for pid, p in mesh.peers.items():
            if pid not in mesh.silent:
                for key in p.runner.running:
                    p.runner.finish(key)
        await mesh.advance(1.0)


def self_added(mesh: JobMesh, job: str, pid: str) -> str:
    """`pid` holds `job`'s JOB_SUBMITTED, adds itself and sends task a's TASK_DONE of a
    made-up output (which it holds) in its lane, before any member ran a; that output."""
    mesh.deliver()
    bad = mesh[pid].store.make_dir({"made-up.txt": mesh[pid].store.add_bytes(b"made up")})
    mesh[pid].data.mark(bad)
    mesh.emit(pid, EventType.JOB_MEMBERS, {"job": job, "add": [pid]})
    ev = mesh.emit(pid, EventType.TASK_DONE, {"job": job, "task": "a", "output": bad,
                                              "key": None, "cached": False})
    assert lane_of(ev.origin) == (pid, job)
    return bad


async def test_a_self_added_members_task_done_first_is_run_again_by_the_vouched_members(
) -> None:
    """X (p2) adds itself to a job of [p0, p1] and sends a's TASK_DONE of a made-up output
    first. On 6c66b4c1 nobody ran a: every member took X's output, b ran after it and the
    home's end named it. Now p0 or p1 runs a (X's done counts only where no vouched member
    can run it), b after that, the end names the real output, and X runs nothing while a
    vouched member that can is live."""
    mesh = JobMesh(3, CATALOG, SIM_CFG, lanes=True)
    p0, p1, p2 = mesh.peers
    try:
        job = mesh.submit(p0, CHAIN, members=[p0, p1])
        bad = self_added(mesh, job, p2)
        await finish_all(mesh)
        for pid in (p0, p1, p2):
            st_ = mesh[pid].state
            won = st_.task_done[(job, "a")]
            assert won.payload["output"] != bad and lane_of(won.origin)[0] in (p0, p1)  # type: ignore[index]
            assert st_.end_body(st_.ended[job]).outputs["a"].cid == won.payload["output"]
        assert mesh.sent(EventType.CLAIM, job=job, task="a")
        assert mesh[p2].runner.started == []
    finally:
        await mesh.close()


async def test_a_self_added_members_done_counts_once_no_vouched_member_is_live() -> None:
    """The orphan half: X's TASK_DONE of a, with every vouched member gone, stands (X runs
    b after it and ends the job: a vouched member is no longer there to run a)."""
    mesh = JobMesh(3, CATALOG, SIM_CFG, lanes=True)
    p0, p1, p2 = mesh.peers
    try:
        job = mesh.submit(p0, CHAIN, members=[p0, p1])
        bad = self_added(mesh, job, p2)
        mesh.silent.update((p0, p1))
        await finish_all(mesh)
        st_ = mesh[p2].state
        assert st_.task_done[(job, "a")].payload["output"] == bad
        assert (job, "b") in st_.task_done and job in st_.ended
        assert mesh[p2].runner.started
    finally:
        await mesh.close()


async def test_a_self_added_members_chunk_done_first_is_reopened_and_run_again() -> None:
    """Task a of an implicit split (no TASK_SPLIT: its one chunk is claimed at once): X's
    CHUNK_DONE of it, implying a's TASK_DONE of a made-up output, comes first. On 6c66b4c1
    it finished the chunk and the task on every member. Now a vouched member reopens the
    chunk (an uncounted CHUNK_FAILED) and runs it again: its CHUNK_DONE wins the chunk and
    the task, in every member's fold; X runs nothing."""
    mesh = JobMesh(3, CATALOG, SIM_CFG, lanes=True)
    p0, p1, p2 = mesh.peers
    try:
        job = mesh.submit(p0, CHAIN, members=[p0, p1], implicit=True)
        mesh.deliver()
        split = mesh[p0].state.splits[(job, "a")]  # (its implicit split: the home's)
        store = mesh[p2].store
        bad = store.make_dir({"made-up.txt": store.add_bytes(b"made up")})
        mesh[p2].data.mark(bad)
        mesh.emit(p2, EventType.JOB_MEMBERS, {"job": job, "add": [p2]})
        mesh.emit(p2, EventType.CHUNK_DONE, {
            "job": job, "task": "a", "chunk": 0, "attempt": 0, "split": list(split.id),
            "output": bad, "done": {"key": None}})
        await finish_all(mesh)
        reopened = mesh.sent(EventType.CHUNK_FAILED, job=job, task="a")
        assert reopened  # (by each vouched member that can run it: both, at attempt 0)
        for f in reopened:
            assert f.payload["reopen"] is True and f.payload["counts"] is False
            assert peer_of(f.origin) in (p0, p1) and f.payload["attempt"] == 0
        for pid in (p0, p1, p2):
            st_ = mesh[pid].state
            won = st_.task_done[(job, "a")]
            assert won.payload["output"] != bad and lane_of(won.origin)[0] in (p0, p1)  # type: ignore[index]
            fin = st_.chunk(job, "a", 0).finished()
            assert fin is not None and lane_of(fin.origin)[0] in (p0, p1)  # type: ignore[index]
            assert st_.end_body(st_.ended[job]).outputs["a"].cid == won.payload["output"]
        assert mesh[p2].runner.started == []
    finally:
        await mesh.close()


async def test_a_vouched_member_restarted_runs_again_a_task_an_unvouched_lane_did() -> None:
    """p0 (p1 gone) folded X's made-up TASK_DONE of a and restarted before it looked at a
    again: its restart's evaluation takes the tasks done by an unvouched lane only too
    (`recover`), so it runs a and the job ends with its output."""
    mesh = JobMesh(3, CATALOG, SIM_CFG, lanes=True)
    p0, p1, p2 = mesh.peers
    try:
        mesh.silent.add(p1)
        job = mesh.submit(p0, CHAIN, members=[p0, p1])
        bad = self_added(mesh, job, p2)
        mesh.deliver()
        assert mesh[p0].state.task_done[(job, "a")].payload["output"] == bad
        await mesh.restart(p0)
        await finish_all(mesh)
        st_ = mesh[p0].state
        won = st_.task_done[(job, "a")]
        assert won.payload["output"] != bad and lane_of(won.origin)[0] == p0  # type: ignore[index]
        assert st_.end_body(st_.ended[job]).outputs["a"].cid == won.payload["output"]
    finally:
        await mesh.close()


async def test_after_an_orphan_takeover_a_vouched_member_back_runs_again_what_the_taker_did(
) -> None:
    """p0 and p1 (the vouched members) go; p2 takes the job over (it adds itself after a
    lease) and runs a. p0 comes back (anti-entropy brings it what it missed) before the job
    ended: it runs a again (p2's output may be made up, and a vouched member is live now),
    p2 leaves the rest to it, and the job ends with p0's outputs."""
    mesh = JobMesh(3, CATALOG, SIM_CFG, lanes=True)
    p0, p1, p2 = mesh.peers
    try:
        job = mesh.submit(p0, CHAIN, members=[p0, p1])
        await mesh.settle()
        mesh.silent.update((p0, p1))
        for _ in range(40):
            for key in mesh[p2].runner.running:
                if "/a/" in key or key.endswith("/a"):
                    mesh[p2].runner.finish(key)
            await mesh.advance(1.0)
            if (job, "a") in mesh[p2].state.task_done:
                break
        taken = mesh[p2].state.task_done[(job, "a")]
        assert lane_of(taken.origin) == (p2, job)
        assert job not in mesh[p2].state.ended
        mesh.silent.discard(p0)
        for ev in list(mesh[p2].state.events.values()):  # (anti-entropy: what p0 missed)
            if ev.id not in mesh[p0].state.events:
                mesh._queue.append((mesh.clock(), p0, ev))
        await finish_all(mesh)
        for pid in (p0, p2):
            st_ = mesh[pid].state
            for t in ("a", "b"):
                assert lane_of(st_.task_done[(job, t)].origin) == (p0, job), (pid, t)
            end = st_.end_body(st_.ended[job])
            assert end.outputs["a"].cid == st_.task_done[(job, "a")].payload["output"]
    finally:
        await mesh.close()


async def test_a_chunk_an_unvouched_lane_alone_finished_is_run_again_before_assembly() -> None:
    """X's CHUNK_DONE of a's one chunk comes first, implying no TASK_DONE: the task is not
    done, and on 6c66b4c1 a vouched member assembled a's output from X's chunk (a vouched
    TASK_DONE of the made-up output). Now it reopens the chunk and runs it first."""
    mesh = JobMesh(3, CATALOG, SIM_CFG, lanes=True)
    p0, p1, p2 = mesh.peers
    try:
        job = mesh.submit(p0, CHAIN, members=[p0, p1], implicit=True)
        mesh.deliver()
        split = mesh[p0].state.splits[(job, "a")]
        store = mesh[p2].store
        bad = store.make_dir({"made-up.txt": store.add_bytes(b"made up")})
        mesh[p2].data.mark(bad)
        mesh.emit(p2, EventType.JOB_MEMBERS, {"job": job, "add": [p2]})
        mesh.emit(p2, EventType.CHUNK_DONE, {
            "job": job, "task": "a", "chunk": 0, "attempt": 0, "split": list(split.id),
            "output": bad})
        await finish_all(mesh)
        for pid in (p0, p1):
            st_ = mesh[pid].state
            won = st_.task_done[(job, "a")]
            assert won.payload["output"] != bad and lane_of(won.origin)[0] in (p0, p1)  # type: ignore[index]
            assert st_.end_body(st_.ended[job]).outputs["a"].cid == won.payload["output"]
        assert mesh.sent(EventType.CHUNK_FAILED, job=job, task="a")
        assert mesh[p2].runner.started == []
    finally:
        await mesh.close()


def test_a_gone_jobs_wait_holds_no_split_or_failure_set_aside() -> None:
    """A self-added member's TASK_SPLIT and CHUNK_FAILED are set aside to be ranked again
    once it is vouched (helper f of session 50); when the job went, they were parked as
    held outputs of the gone job: room and disk taken for events nothing takes in, let go
    at the next start (review rr of session 50, RR-3). Only its outputs wait now."""
    split = Event(lane(X, J), 1, 1200, EventType.TASK_SPLIT,
                  {"job": J, "task": "t0", "input": None, "chunks": [[]], "kept": {}})
    failed = Event(lane(X, J), 2, 1300, EventType.CHUNK_FAILED,
                   {"job": J, "task": "t0", "chunk": 0, "attempt": 0, "split": [H, 1],
                    "kind": "error", "error": "made up"})
    s = lanes_fold([SUB, ADD, split, failed, chunk_done(X, 3, 1400)])
    assert {e.type for evs in s._aside_done[J].values() for e in evs} >= {
        EventType.TASK_SPLIT, EventType.CHUNK_FAILED}
    s.compact([J])
    wait = s.gone_wait(J)
    held = {e.type for evs in wait.done.values() for e in evs.values()}
    assert held and held <= {EventType.TASK_DONE, EventType.CHUNK_DONE}, held
