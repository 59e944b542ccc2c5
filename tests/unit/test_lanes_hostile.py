"""Review r1 of session 45 (H1, H2, L6): what a peer that is no member of a lanes job, or
one that added itself, can do to it. The real fold and door (wired as `Node` wires it, on a
real `MeshState`), and the in-memory job mesh (real schedulers and fold, fake clock)."""

from __future__ import annotations

import itertools

import pytest

from peer.jobs.ending import job_ended
from peer.jobs.sim import JobMesh
from peer.log import Event, EventType, JobEnded, MeshState, fold
from peer.log.clock import HLC
from peer.log.door import Door, DoorConfig
from peer.log.fold import end_refusal
from peer.log.lanes import lane
from tests.unit.test_members_sim import CATALOG, CFG, done, finish_all, writes

H, R, X = "a1" * 8, "b2" * 8, "c3" * 8  # home, replica, a peer that is no member
J, NOJOB = "j" + "0" * 11 + "1", "j" + "f" * 12
GOOD = "bafkreiaheqdfvsfwin2qysg2nd3n4upuu7oyiwtnuvai2oi3lesbeuh42q"
BAD = "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"
WF = {"name": "w", "tasks": [{"name": "t0", "call": "c", "params": {}, "depends": []}]}
SUB = Event(H, 1, 1000, EventType.JOB_SUBMITTED, {"job": J, "workflow": WF, "members": [H, R]})


def task_done(origin: str, seq: int, hlc: int, output: str = GOOD) -> Event:
    return Event(origin, seq, hlc, EventType.TASK_DONE,
                 {"job": J, "task": "t0", "output": output, "cached": False, "key": "k0"})


def ended(origin: str, seq: int, hlc: int, out: Event | None = None) -> Event:
    outputs = {} if out is None else {"t0": ["k0", out.payload["output"], out.hlc, out.origin,
                                             out.seq]}
    return Event(origin, seq, hlc, EventType.JOB_ENDED,
                 {"job": J, "state": "done" if out else "failed", "n_tasks": 1, "end": hlc,
                  "outputs": outputs, "producers": {}, "failed": {}, "digest": "0" * 32})


def lanes_fold(events: list[Event], me: str) -> MeshState:
    return fold(events, MeshState(lanes_on=True, me=me))


REAL = task_done(lane(R, J), 1, 2000)
STRAYS = [task_done(X, 1, 1500, BAD), task_done(lane(X, J), 1, 1500, BAD)]


def test_a_non_members_task_event_never_wins_a_lanes_jobs_task_in_any_order() -> None:
    """(On 4f5ca2e the stray wins t0 and the home's JOB_ENDED naming it is refused: the job
    never ends on a non-member.) Ours: the member's TASK_DONE wins, the end is folded."""
    end = ended(H, 2, 3000, REAL)
    for stray in STRAYS:
        for order in itertools.permutations([SUB, stray, REAL, end]):
            for me in (H, X):
                s = lanes_fold(list(order), me)
                assert s.task_done[(J, "t0")].id == REAL.id
                assert s.ended[J].id == end.id and s.outputs["k0"] == GOOD
                assert not s.unended


def test_a_lane_event_is_held_until_a_job_members_makes_its_peer_a_member() -> None:
    stray = STRAYS[1]
    s = lanes_fold([SUB, stray], H)
    assert (J, "t0") not in s.task_done and list(s._untasked[J]) == [stray]
    s.apply(Event(R, 1, 1200, EventType.JOB_MEMBERS, {"job": J, "add": [X]}))
    assert s.task_done[(J, "t0")].id == stray.id and not s._untasked


def test_a_task_event_before_its_job_submitted_is_held_until_it_comes() -> None:
    """A mesh stream's: folded if the job is no lanes job, never if it is one."""
    plain = Event(H, 1, 1000, EventType.JOB_SUBMITTED, {"job": J, "workflow": WF})
    for sub, folded in ((plain, True), (SUB, False)):
        s = lanes_fold([STRAYS[0]], H)
        assert (J, "t0") not in s.task_done and list(s._untasked[J]) == [STRAYS[0]]
        s.apply(sub)
        assert ((J, "t0") in s.task_done) is folded and not s._untasked


def test_a_member_s_task_event_backdated_before_the_job_submitted_does_not_count() -> None:
    """(A self-added member's backdated TASK_DONE won the task, and `end_refusal` then held
    the home's JOB_ENDED naming it for good.)"""
    early = task_done(lane(R, J), 2, 900, BAD)
    s = lanes_fold([SUB, early, REAL], H)
    assert s.task_done[(J, "t0")].id == REAL.id
    payload = job_ended(s, J, 3)
    assert payload is not None
    ev = Event(H, 2, 3000, EventType.JOB_ENDED, payload)
    assert end_refusal(s, ev, ev.body_as(JobEnded)) is None  # the home's own end is taken


def test_a_backdated_or_self_added_job_ended_does_not_end_the_job() -> None:
    """(On 4f5ca2e `X`'s JOB_ENDED at hlc 2 ends the job on every peer, whatever the order.)"""
    add = Event(X, 1, 1100, EventType.JOB_MEMBERS, {"job": J, "add": [X]})
    backdated, early = ended(X, 2, 2), ended(X, 3, 1200)
    real_end = ended(H, 2, 3000, REAL)
    assert "not after its job's JOB_SUBMITTED" in (
        end_refusal(lanes_fold([SUB, add], H), backdated, backdated.body_as(JobEnded)) or "")
    for order in itertools.permutations([SUB, add, backdated, early, REAL, real_end]):
        for me in (H, R, "d4" * 8):
            s = lanes_fold(list(order), me)
            assert s.ended[J].id == real_end.id and list(s.unended[J]) == [backdated.id]
    s = lanes_fold([SUB, add, early], H)
    assert s.ended[J].id == early.id  # (no member of the submission ended it: X's counts)


def rival(hlc: int, members: list[str]) -> Event:
    """A hostile member's JOB_SUBMITTED of job `J` (its id read off the real one's), at
    `hlc`: later than `SUB`'s (1000) loses the job to it, earlier wins it."""
    return Event(X, 5, hlc, EventType.JOB_SUBMITTED, {"job": J, "workflow": WF,
                                                       "members": members})


def test_a_later_rival_job_submitted_does_not_rank_its_members_first_in_any_order() -> None:
    """(Review r3 of session 45, R3-1: on 5c96899 the members of every JOB_SUBMITTED of the
    job ranked first, so `X`'s end, earlier than the home's, ended the job on every peer.)
    The winning JOB_SUBMITTED's members rank first; `on_end` was last told of the end taken,
    whatever order the events came in (the rival naming the home too: its end was folded
    while the rival won, and is the job's once `SUB` wins)."""
    real_end, x_end = ended(H, 2, 3000, REAL), ended(X, 6, 2500, REAL)
    for members in ([X], [X, H, R]):
        for order in itertools.permutations([SUB, rival(1100, members), REAL, real_end,
                                             x_end]):
            for me in (H, X):
                told: list[Event] = []
                s = MeshState(lanes_on=True, me=me)
                s.on_end = told.append
                fold(list(order), s)
                assert s.ended[J].id == real_end.id and told[-1] is s.ended[J]
                assert s.members_of[J] == {H, R, X} and not s.unended


def test_a_backdated_rival_job_submitted_wins_the_job_alike_in_any_order() -> None:
    """What stays open for an unbound id as `J` (docs/security.md, "What is not protected";
    closed for bound ids: test_bound_job_ids.py): a rival ordered before `SUB` wins the job
    on every peer, its members rank first, and so `X`'s end is the job's; the fold is one
    state whatever the order, with or without `X`'s end."""
    real_end, x_end = ended(H, 2, 3000, REAL), ended(X, 6, 2500, REAL)
    for evs, won in (([SUB, rival(900, [X, R]), REAL, real_end, x_end], x_end),
                     ([SUB, rival(900, [X, R]), REAL, real_end], real_end)):
        for order in itertools.permutations(evs):
            told: list[Event] = []
            s = MeshState(lanes_on=True, me=H)
            s.on_end = told.append
            fold(list(order), s)
            assert s.jobs[J].origin == X and s.ended[J].id == won.id and told[-1] is s.ended[J]
            assert s.members_of[J] == {H, R, X} and s.task_done[(J, "t0")].id == REAL.id


@pytest.mark.xfail(strict=True, reason="open for unbound ids (docs/security.md): a "
                   "rival JOB_SUBMITTED naming `members` makes a job submitted without them a "
                   "lanes job, and a task event of a mesh stream counts only if folded before")
def test_a_rival_naming_members_of_a_plain_job_does_not_change_its_fold() -> None:
    """What is left of a rival's `members` (session 46, helper a), for an unbound id (a bound
    one: test_bound_job_ids.py, closed): a job every peer holds in full (its JOB_SUBMITTED
    names no `members`: fewer tasks than lanes_min_job_tasks) becomes a lanes job of `X`
    alone on every peer that folds `X`'s rival; a TASK_DONE in the home's
    stream folded before the rival stays folded, one after it is never: two peers holding
    the same events fold two states."""
    plain = Event(H, 1, 1000, EventType.JOB_SUBMITTED, {"job": J, "workflow": WF})
    done_ = task_done(H, 2, 2000)
    states = [lanes_fold(list(order), H)
              for order in itertools.permutations([plain, done_, rival(1100, [X])])]
    assert all(s.task_done == states[0].task_done for s in states)


def door(s: MeshState, me: str) -> Door:
    """A door wired as `Node` wires it (lanes on) to state `s` of peer `me`."""
    return Door(DoorConfig(), HLC(), store=None,  # type: ignore[arg-type]
                member_of=lambda j: j in s.jobs and s.member_of(j, me),
                lane_closed=lambda j: False,
                adders=lambda j: [p for p in s.members_of.get(j, ())] if j in s.jobs
                and j in s.members_of else None)


def test_the_door_admits_a_lanes_jobs_stray_task_events_and_the_fold_holds_them() -> None:
    """A lanes job's task events outside its members' lanes are admitted (a refusal hung on
    the order events came in: review r3 of session 45, R3-2, R3-3) and never folded while
    their peer is no member; a JOB_ENDED of a job nobody submitted is refused (L6; on
    4f5ca2e it was admitted and held for ever)."""
    s = lanes_fold([SUB], H)
    d = door(s, H)
    why = {name: (d.problem(ev) or "admitted").split(":")[0] for name, ev in {
        "mesh": STRAYS[0], "lane": STRAYS[1], "turn": Event(
            X, 2, 1500, EventType.TURN, {"parts": [[EventType.TASK_DONE.value,
                                                     STRAYS[0].payload]]}),
        "ended": Event(X, 3, 1500, EventType.JOB_ENDED,
                       {**ended(X, 3, 1500).payload, "job": NOJOB}),
        "member": REAL, "home's end": ended(H, 2, 3000, REAL)}.items()}
    assert why == {"mesh": "admitted", "lane": "admitted", "turn": "admitted",
                   "ended": "ended_job", "member": "admitted", "home's end": "admitted"}
    for ev in STRAYS:
        s.apply(ev)
    assert (J, "t0") not in s.task_done  # (held: X is no member, and a mesh stream's never)
    s.apply(Event(R, 1, 1200, EventType.JOB_MEMBERS, {"job": J, "add": [X]}))
    assert s.task_done[(J, "t0")].origin == STRAYS[1].origin  # (X's lane, now a member's)
    plain = Event(H, 2, 1000, EventType.JOB_SUBMITTED, {"job": NOJOB, "workflow": WF})
    s.apply(plain)  # a job without members: a task event in a mesh stream, as before
    assert d.problem(Event(X, 1, 1500, EventType.TASK_DONE, {
        **STRAYS[0].payload, "job": NOJOB})) is None


async def test_a_stray_task_done_does_not_keep_a_lanes_job_from_ending() -> None:
    """(Review r1's sim: on 4f5ca2e the job never ends on any peer.)"""
    mesh = JobMesh(3, CATALOG, CFG, lanes=True)
    p0, p1, p2 = mesh.peers
    tasks = writes(4)
    try:
        job = mesh.submit(p0, tasks, members=[p0, p1])
        await mesh.settle()
        mesh.emit(p2, EventType.TASK_DONE, {"job": job, "task": "w0", "output": GOOD,
                                            "cached": False})
        await finish_all(mesh, rounds=30)
        assert done(mesh, p0, job, tasks) and done(mesh, p1, job, tasks)
        for p in (p0, p1, p2):
            st = mesh[p].state
            assert job in st.ended and not st.unended
            assert st.ended[job].origin == p0
    finally:
        await mesh.close()



def test_the_door_admits_a_batch_whose_job_members_or_job_submitted_comes_with_it() -> None:
    """A taker's first frame holds its JOB_MEMBERS and its first lane events, a sync's answer
    a job's JOB_SUBMITTED and its JOB_ENDED: the door checks the batch before folding any of
    it (on 8ac2b8d the lane events were refused, `lane_peer`, the end `ended_job`); a lane
    event whose JOB_MEMBERS comes later is admitted too (the fold holds it)."""
    s = lanes_fold([SUB], H)
    d = door(s, H)
    add = Event(X, 1, 1100, EventType.JOB_MEMBERS, {"job": J, "add": [X]})
    assert d.admit([add, STRAYS[1]]) == [add, STRAYS[1]]
    assert d.admit([STRAYS[1]]) == [STRAYS[1]]
    t = lanes_fold([], "d4" * 8)
    end = ended(H, 2, 3000, REAL)
    assert door(t, "d4" * 8).admit([SUB, end]) == [SUB, end]
    assert door(t, "d4" * 8).admit([end]) == []  # (alone: `ended_job`, as before)


def test_a_job_ended_is_waived_only_by_a_job_submitted_the_door_admits_in_its_batch() -> None:
    """`ended_job` is waived for a batch's JOB_SUBMITTED only once the door admits it (review
    r1 of session 46, F7: on 061057e a JOB_SUBMITTED refused by the node's check let its
    JOB_ENDED in, held in `unended` for ever), in either order within the batch; and the
    waiver ends with the batch (`_batch_jobs` outlived `admit`: `Conflicts.settle` asks
    `problem` between batches)."""
    t = lanes_fold([], "d4" * 8)
    end = ended(H, 2, 3000, REAL)

    def refuse_workflow(ev: Event) -> None:  # as Node's JOB_SUBMITTED check refusing one
        raise ValueError("workflow: unknown call")

    d = door(t, "d4" * 8)
    d.checks[EventType.JOB_SUBMITTED] = refuse_workflow
    assert d.admit([SUB, end]) == [] and d.admit([end, SUB]) == []
    assert d.refused.as_dict()  # (both counted)
    for ev in d.admit([SUB, end]):
        t.apply(ev)
    assert not t.unended
    ok = door(t, "d4" * 8)
    assert ok.admit([end, SUB]) == [end, SUB]  # (the end first: checked again after the pass)
    assert ok.problem(end) is not None  # (the waiver ended with its batch)
