"""Partial replication, step 6 (docs/design/partial-replication.md, sections 3, 5.2 and 8):
who may end a lanes job, and who makes its implicit splits. The fold of a JOB_ENDED holds it
(`MeshState.unended`), unfolded, unless its origin is a member of the job, the job's
JOB_SUBMITTED with `members` is here, its `producers` name only CIDs of its outputs and
every output's order lies between the JOB_SUBMITTED's and the JOB_ENDED's; one held for
what may still come (the JOB_SUBMITTED, a JOB_MEMBERS adding its origin) is folded when it
comes, so the fold stays order-free. Only a member (`MeshState.me`) folds a lanes job's
implicit splits and implied claims."""

from __future__ import annotations

import itertools
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as hs

from peer.config import PeerConfig
from peer.ipfs.replicate import made_outputs
from peer.jobs.ending import Merits, better_end, job_ended
from peer.jobs.retention import finished_at
from peer.log import Event, EventType, JobEnded, MeshState, fold
from peer.log.events import Output
from peer.log.fold import end_flaw, end_merit, end_rank, end_refusal
from peer.log.lanes import lane
from peer.node import Node
from tests.unit.test_lanes_hostile import BAD, GOOD, SUB, H, J, X

A, B, C = "a1" * 8, "b2" * 8, "c3" * 10  # home, member, non-member
JOB = "j" + "0" * 11 + "1"
CID = "bafkreiaheqdfvsfwin2qysg2nd3n4upuu7oyiwtnuvai2oi3lesbeuh42q"
OTHER_CID = "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"
WORKFLOW = {"name": "w", "splits": "implicit",
            "tasks": [{"name": "t", "call": "c", "params": {}, "depends": []}]}


def submitted(members: list[str] | None = None, hlc: int = 100, claimed: bool = False,
              ) -> Event:
    return Event(A, 1, hlc, EventType.JOB_SUBMITTED,
                 {"job": JOB, "workflow": WORKFLOW, "local": claimed, "claimed": claimed,
                  **({} if members is None else {"members": members})})


def done(hlc: int = 200) -> Event:
    return Event(lane(B, JOB), 1, hlc, EventType.TASK_DONE,
                 {"job": JOB, "task": "t", "output": CID, "key": "k", "cached": False})


def ended(origin: str = A, hlc: int = 300, out: tuple[int, str, int] = (200, lane(B, JOB), 1),
          producers: dict[str, list[str]] | None = None, task: str = "t") -> Event:
    return Event(origin, 2 if origin == A else 1, hlc, EventType.JOB_ENDED,
                 {"job": JOB, "state": "done", "n_tasks": 1, "end": hlc,
                  "outputs": {task: ["k", CID, *out]},
                  "producers": {CID: [B]} if producers is None else producers,
                  "failed": {}, "digest": "0" * 32})


def joined(peer: str) -> Event:
    return Event(B, 2, 150, EventType.JOB_MEMBERS, {"job": JOB, "add": [peer]})


def lanes_fold(events: list[Event], me: str | None = None) -> MeshState:
    """The fold with lanes on, of peer `me` (none: a state of no peer, a member of every
    job)."""
    return fold(events, MeshState(lanes_on=True) if me is None
                else MeshState(lanes_on=True, me=me))


def folded_end(s: MeshState) -> bool:
    """Is the job's JOB_ENDED folded (its end and output entries), and none held?"""
    return JOB in s.ended and s.outputs.get("k") == CID and not s.unended


def held_end(s: MeshState) -> bool:
    """Is a JOB_ENDED of the job held unfolded (no end, no cache entry, no producer)?"""
    return (JOB not in s.ended and "k" not in s.outputs and not s.providers.get(CID)
            and len(s.unended.get(JOB, {})) == 1)


def test_the_home_or_another_member_may_end_the_job() -> None:
    assert folded_end(lanes_fold([submitted([A, B]), ended(A)]))
    assert folded_end(lanes_fold([submitted([A, B]), ended(B)]))


# (for_good: what `end_flaw` finds in the body alone, which no event folded later admits)
@pytest.mark.parametrize(("why", "events", "for_good"), [
    ("is no member", [submitted([A, B]), ended(C)], False),
    ("`members` is not here", [submitted(None), ended(A)], False),  # (a job without members)
    ("`members` is not here", [ended(A)], False),  # (its JOB_SUBMITTED not here yet)
    ("`producers` names a CID that is no output", [
        submitted([A, B]), ended(A, producers={OTHER_CID: [C]})], True),
    ("order is not between", [submitted([A, B], hlc=250), ended(A)], False),  # made before it
    ("order is not between", [submitted([A, B]), ended(A, hlc=150)], True),  # after the end
    ("order is not between", [submitted([A, B]), ended(A, out=(300, A, 2))], True),  # the end's
    # (review r1, risk 2: on 99be419 each of these is folded)
    ("is no lane of a member", [submitted([A, B]), ended(A, out=(200, "zz", 1))], True),
    ("is no lane of a member", [submitted([A, B]), ended(A, out=(200, A, 1))], True),  # a stream
    ("is no lane of a member", [submitted([A, B]), ended(A, out=(200, lane(C, JOB), 1))], False),
    ("is no lane of a member", [submitted([A, B]), ended(A, out=(200, lane(B, "j" + "0" * 12),
                                                                   1))], True),  # another job's
    ("is no task of the job", [submitted([A, B]), ended(A, task="u")], False),
])
def test_a_job_ended_that_may_not_end_its_job_is_held_not_folded(
        why: str, events: list[Event], for_good: bool) -> None:
    """(On 2b5ab6b each is folded: its outputs enter the cache and its producers the
    providers, whoever made it.) One its body alone refuses (`end_flaw`) is refused for
    good: held (in the log), folded nowhere, kept in no table (session 40: on a95f359 it
    stayed in `unended` until its job left memory, looked at again at each JOB_SUBMITTED
    and JOB_MEMBERS of the job)."""
    s = lanes_fold(events)
    ev = events[-1]
    if for_good:
        assert JOB not in s.ended and "k" not in s.outputs and not s.providers.get(CID)
        assert s.unended == {}, why
        assert end_flaw(ev, ev.body_as(JobEnded)) is not None
    else:
        assert held_end(s), why
        assert end_flaw(ev, ev.body_as(JobEnded)) is None
    assert s.holds(ev.id)  # (held: in the log, counted in the heads, served)
    assert why in (end_refusal(s, ev, ev.body_as(JobEnded)) or "")


def test_a_job_ended_refused_for_good_stays_so_whatever_comes_after_it() -> None:
    """The events that admit a JOB_ENDED held for what may come (its JOB_SUBMITTED, a
    JOB_MEMBERS adding its origin) do not admit one its body refuses, in any order; the
    job's own JOB_ENDED is folded whatever order the flawed one came in."""
    flawed = ended(C, hlc=150)  # (its output made after its end)
    evs = [submitted([A, B]), joined(C), flawed, ended(A), done()]
    for order in itertools.permutations(evs):
        s = lanes_fold(list(order), me=A)
        assert folded_end(s) and s.ended[JOB].origin == A and s.holds(flawed.id)


def test_a_job_ended_held_for_what_comes_later_is_folded_then_in_any_order() -> None:
    """The JOB_SUBMITTED arriving after its JOB_ENDED, a JOB_MEMBERS adding the JOB_ENDED's
    origin after it: every order of the events folds one state, the JOB_ENDED's."""
    evs = [submitted([A, B]), joined(C), ended(C), done()]
    states = [lanes_fold(list(order), me=A) for order in itertools.permutations(evs)]
    for s in states:
        assert folded_end(s) and s.ended[JOB].origin == C
        assert (s.outputs, s._outputs_src, s.providers) == (
            states[0].outputs, states[0]._outputs_src, states[0].providers)
    early = lanes_fold([ended(C), submitted([A, B])])
    assert held_end(early)  # (C is no member yet)
    early.apply(joined(C))
    assert folded_end(early)


def test_a_non_member_that_adds_itself_cannot_end_a_job_with_an_output_it_made_up() -> None:
    """(Review r1, risk 2: the door lets any peer add itself. On 99be419 its JOB_ENDED is
    folded, on a member too: the job ends, its made-up output takes the cache key.)"""
    x = "d4" * 8
    add = Event(x, 1, 150, EventType.JOB_MEMBERS, {"job": JOB, "add": [x]})
    fake = Event(x, 2, 160, EventType.JOB_ENDED,
                 {"job": JOB, "state": "done", "n_tasks": 1, "end": 160,
                  "outputs": {"t": ["k", OTHER_CID, 101, "zz", 1]},
                  "producers": {OTHER_CID: [x]}, "failed": {}, "digest": "0" * 32})
    for me in (A, C):
        s = lanes_fold([submitted([A, B]), done(200), add, fake], me=me)
        assert JOB not in s.ended and s.outputs.get("k") != OTHER_CID
        assert "is no lane of a member" in (end_refusal(s, fake, fake.body_as(JobEnded)) or "")


def test_a_held_job_ended_leaves_with_its_job() -> None:
    s = lanes_fold([submitted([A, B]), ended(C)])
    s.apply(Event(A, 2, 400, EventType.JOB_DELETED, {"job": JOB, "reason": "x"}))
    assert s.unended == {}


def test_an_origin_s_least_end_only_is_kept_for_a_rerank() -> None:
    """Review r2 of session 46, L1: every JOB_ENDED folded was kept, and each earlier rival
    JOB_SUBMITTED walked them all (R rivals x E ends on every peer holding the job). The
    winning JOB_SUBMITTED's members rank every end of one origin alike, so only an origin's
    least can win: one kept per origin, whatever order they came in."""
    later = [replace(ended(B, hlc=250 + i), seq=1 + i) for i in range(5)]
    for order in ([*later], [*reversed(later)]):
        s = lanes_fold([submitted([A, B]), done(), *order])
        assert list(s._ends[JOB]) == [B] and s._ends[JOB][B].id == later[0].id
        assert s.ended[JOB].id == later[0].id


def test_the_job_endeds_folded_leave_with_their_job() -> None:
    """Each JOB_ENDED folded is kept while its job lives (`MeshState._ends`: the job's end is
    taken again among them when an earlier JOB_SUBMITTED wins, review r3 of session 45,
    R3-1), and leaves with it: deleted, compacted, its lanes forgotten (`forget_lanes`); a
    straggler of a compacted job is kept by none."""
    evs = [submitted([A, B]), done(), ended(A), ended(B, hlc=250)]
    for leave in ("delete", "compact", "forget"):
        s = lanes_fold(evs)
        assert set(s._ends[JOB]) == {A, B} and s.ended[JOB].origin == B
        if leave == "delete":
            s.apply(Event(A, 3, 400, EventType.JOB_DELETED, {"job": JOB, "reason": "x"}))
        elif leave == "compact":
            s.compact([JOB])
            s.apply(ended(C, hlc=500))
        else:
            s.forget_lanes(JOB)
        assert s._ends == {} and s.ended == {}, leave


def test_lanes_off_fold_no_job_ended_whoever_made_it() -> None:
    s = fold([submitted([A, B]), ended(A)], MeshState(me=A))
    assert JOB not in s.ended and not s.unended and "k" not in s.outputs


# -- implicit splits and implied claims: members only ---------------------------------------


def tables(s: MeshState) -> tuple[Any, ...]:
    return (sorted(s.splits), sorted(s.chunks), dict(s.jobs))


def test_only_a_member_makes_a_lanes_jobs_implicit_splits_and_implied_claims() -> None:
    sub = submitted([A, B], claimed=True)
    member, other = lanes_fold([sub], me=B), lanes_fold([sub], me=C)
    assert (JOB, "t") in member.splits and member.chunk(JOB, "t", 0).claims
    assert not other.splits and not other.chunks  # (2b5ab6b: a split and a claim)
    assert other.jobs[JOB] is sub  # (the job is listed all the same)
    everyone = fold([submitted(None, claimed=True)], MeshState(lanes_on=True, me=C))
    assert (JOB, "t") in everyone.splits  # a job without members: every peer's


def test_a_peer_added_to_a_job_makes_its_implicit_splits_in_any_order() -> None:
    sub = submitted([A, B], claimed=True)
    for order in ([sub, joined(C)], [joined(C), sub]):
        s = lanes_fold(order, me=C)
        assert tables(s) == tables(lanes_fold([sub], me=A)) and not s._unjoined
    s = lanes_fold([sub, joined(C)], me=C)
    s.refold()
    assert tables(s) == tables(lanes_fold([sub], me=A))


def test_lanes_off_every_peer_makes_the_implicit_splits() -> None:
    s = fold([submitted([A, B], claimed=True)], MeshState(me=C))
    assert (JOB, "t") in s.splits and s.chunk(JOB, "t", 0).claims


# -- a member compacts a lanes job once its JOB_ENDED is here ---------------------------------


def test_a_lanes_job_is_finished_for_the_compactor_once_its_job_ended_is_folded(
        tmp_path: Path) -> None:
    """Its home emits the JOB_ENDED once the job ended (`Scheduler._end_jobs`, at a tick): a
    compaction pass before that would take the job out of memory and no JOB_ENDED would ever
    be made of it. (On 2b5ab6b the job is finished for the compactor at its last TASK_DONE.)"""
    node = Node(PeerConfig(data_dir=tmp_path, slots=1, mdns=False), lanes=True)
    try:
        me, job = node.peer_id, JOB
        wf = {"name": "w", "tasks": [{"name": "t", "call": "c", "params": {}, "depends": []}]}
        for ev in (Event(me, 1, 100 << 16, EventType.JOB_SUBMITTED,
                         {"job": job, "workflow": wf, "members": [me, B]}),
                   Event(lane(B, job), 1, 200 << 16, EventType.TASK_DONE,
                         {"job": job, "task": "t", "output": CID, "cached": False})):
            node.state.apply(ev)
        assert finished_at(node.state, job, wf["tasks"], 3) is not None  # it ended
        assert node._ended(job) is None and node._finished(job) is None
        payload = job_ended(node.state, job, node.cfg.max_attempts)
        assert payload is not None
        node.state.apply(Event(me, 2, 300 << 16, EventType.JOB_ENDED, payload))
        assert JOB in node.state.ended and node._ended(job) is not None
        finished = node._finished(job)
        assert finished is not None and finished.state == payload["state"] == "done"
        assert finished.ended_hlc == payload["end"]
    finally:
        node.log.close()


def test_a_non_member_replicates_only_outputs_of_the_job_ended_the_fold_took() -> None:
    """`made_outputs` (the replicator's JOB_ENDED path, review r2 F1/F2): of the job's end as
    folded only; not one held back (from a non-member) and not a task's given `cid`."""
    s = lanes_fold([submitted([A, B]), ended(A)], me=C)
    assert made_outputs(s, s.ended[JOB]) == [(CID, B)]
    held = lanes_fold([submitted([A, B]), ended(C)], me=C)
    assert held_end(held) and made_outputs(held, ended(C)) == []
    given = {**WORKFLOW, "tasks": [{**WORKFLOW["tasks"][0], "cid": CID}]}
    sub = Event(A, 1, 100, EventType.JOB_SUBMITTED,
                {"job": JOB, "workflow": given, "local": False, "claimed": False,
                 "members": [A, B]})
    s = lanes_fold([sub, ended(A)], me=C)
    assert JOB in s.ended and made_outputs(s, s.ended[JOB]) == []


def test_the_fold_tells_on_end_of_each_end_it_takes_and_a_refold_keeps_the_listener() -> None:
    """`MeshState.on_end` (the replicator's, on a node: review r2 F3, F4) is told of a
    JOB_ENDED when the fold takes it for its job's end: not while it is held, but once what
    it waited for comes; of one that beats it later too. A `refold` that takes the same ends
    tells it nothing and keeps it (the node's replicator must hear of the ends taken after
    one)."""
    told: list[Event] = []
    s = MeshState(lanes_on=True, me=C)
    s.on_end = told.append
    fold([submitted([A, B]), ended(C)], s)
    assert held_end(s) and told == []
    s.apply(joined(C))
    assert told == [ended(C)]
    s.refold()
    assert told == [ended(C)] and s.on_end == told.append
    s.apply(ended(B, hlc=250))  # (earlier: it beats C's)
    assert s.ended[JOB].origin == B and told == [ended(C), ended(B, hlc=250)]
    s.apply(ended(A))  # (later: it does not)
    assert told == [ended(C), ended(B, hlc=250)]


def test_of_two_homes_ends_the_one_with_fewest_failed_tasks_wins_in_any_order() -> None:
    """(Review r1 of session 45, M5: two homes cut apart each ended the job.) The end with
    the fewest failed tasks is the job's whatever order they came in, and it names each
    task's earliest output of the ends folded (a member's fold's first-wins TASK_DONE). On
    4f5ca2e the earlier by (hlc, origin, seq) won: A's `failed`, one task and no output."""
    two = {"name": "w", "splits": "implicit", "tasks": [
        {"name": n, "call": "c", "params": {}, "depends": []} for n in ("t", "u")]}
    sub = Event(A, 1, 100, EventType.JOB_SUBMITTED, {"job": JOB, "workflow": two,
                                                     "local": False, "claimed": False,
                                                     "members": [A, B]})
    early_u = ["k2", OTHER_CID, 150, lane(A, JOB), 1]  # (u done on both sides: A's first)
    failed = Event(A, 2, 300, EventType.JOB_ENDED, {
        "job": JOB, "state": "failed", "n_tasks": 2, "end": 300, "outputs": {"u": early_u},
        "producers": {}, "failed": {"t": "flaky"}, "digest": "0" * 32})
    done_ = Event(B, 1, 400, EventType.JOB_ENDED, {
        "job": JOB, "state": "done", "n_tasks": 2, "end": 400,
        "outputs": {"t": ["k", CID, 200, lane(B, JOB), 1],
                    "u": ["k2", CID, 250, lane(B, JOB), 2]},
        "producers": {}, "failed": {}, "digest": "0" * 32})
    # (and with a later rival JOB_SUBMITTED of C naming itself, alone or with an end of C's
    # that is earlier than B's: on 5c96899 C ranked as a submission member and its end won,
    # review r3 of session 45, R3-1)
    rival = Event(C, 1, 120, EventType.JOB_SUBMITTED, {**sub.payload, "members": [C]})
    c_end = Event(C, 2, 350, EventType.JOB_ENDED, {**done_.payload, "end": 350})
    for order in itertools.chain(*(itertools.permutations([sub, failed, done_, *more])
                                   for more in ([], [rival], [rival, c_end]))):
        s = lanes_fold(list(order), me=C)
        assert s.ended[JOB] is done_
        b = s.end_body(done_)
        assert b.state == "done" and {t: o.cid for t, o in b.outputs.items()} == {
            "t": CID, "u": OTHER_CID}
        assert s.outputs["k2"] == OTHER_CID


def test_a_refold_that_takes_another_end_tells_on_end_of_it() -> None:
    """A refold (run to drop a replaced loser) that takes another JOB_ENDED for the job's
    end tells `on_end` of it; before, the replicator of a non-member heard of it only at its
    next rescan (review r2 L5). One it takes again is not told twice."""
    told: list[Event] = []
    s = MeshState(lanes_on=True, me=C)
    s.on_end = told.append
    early = ended(B, hlc=250)
    fold([submitted([A, B]), ended(A), early], s)
    assert s.ended[JOB] == early
    told.clear()
    s.refold()
    assert told == []
    del s.events[early.id]  # (as a replaced event leaves the held ones)
    s.refold()
    assert s.ended[JOB] == ended(A) and told == [ended(A)]


# -- a member's better end after a partition (session 46, helper b: review r1 M5's (1)) -------

TWO = {"name": "w", "tasks": [{"name": n, "call": "c", "params": {}, "depends": []}
                              for n in ("t", "u")]}


def side(peer: str, does: str, fails: str, hlc: int) -> list[Event]:
    """`peer`'s lane events of a side of a partition: it splits both tasks, does `does` and
    fails `fails` for good (a non-retryable error), from `hlc` on."""
    ln = lane(peer, JOB)
    return [Event(ln, 1, hlc, EventType.TASK_SPLIT, {"job": JOB, "task": does, "input": None,
                                                      "chunks": [[]], "kept": {}}),
            Event(ln, 2, hlc + 1, EventType.TASK_SPLIT, {"job": JOB, "task": fails,
                                                          "input": None, "chunks": [[]],
                                                          "kept": {}}),
            Event(ln, 3, hlc + 2, EventType.TASK_DONE, {"job": JOB, "task": does,
                                                         "output": CID, "key": "k" + does,
                                                         "cached": False}),
            Event(ln, 4, hlc + 3, EventType.CHUNK_FAILED, {
                "job": JOB, "task": fails, "split": [ln, 2], "chunk": 0, "attempt": 0,
                "kind": "error", "error": "flaky"})]


def two_sub() -> Event:
    return Event(A, 1, 100, EventType.JOB_SUBMITTED, {"job": JOB, "workflow": TWO,
                                                      "local": False, "claimed": False,
                                                      "members": [A, B]})


def end_of(events: list[Event], origin: str, seq: int, hlc: int, me: str) -> Event:
    """The JOB_ENDED `origin` makes from `me`'s fold of `events` (`job_ended`)."""
    payload = job_ended(lanes_fold(events, me=me), JOB, 3)
    assert payload is not None
    return Event(origin, seq, hlc, EventType.JOB_ENDED, payload)


def crossing() -> tuple[list[Event], Event, Event]:
    """Members A | B cut apart: A's side did t and failed u, B's the reverse; each ended
    the job `failed` from its side. Every event, and the two ends."""
    a_side, b_side = side(A, "t", "u", 110), side(B, "u", "t", 120)
    a_end = end_of([two_sub(), *a_side], A, 2, 300, A)
    b_end = end_of([two_sub(), *b_side], B, 1, 310, B)
    return [two_sub(), *a_side, *b_side, a_end, b_end], a_end, b_end


def test_a_member_whose_merged_fold_fails_fewer_tasks_than_every_end_makes_a_better_one(
        ) -> None:
    """Each side's end fails one task; a member's merged fold fails none: its end (`done`)
    ranks before the winner, and once folded nothing ranks before it (no loop), on the
    member and on the peer that holds no lane (which reports it). On 5c96899 no peer made
    another end: the non-member reported A's `failed` for good."""
    events, a_end, b_end = crossing()
    assert (a_end.payload["failed"], b_end.payload["failed"]) == ({"u": "flaky"},
                                                                  {"t": "flaky"})
    for order in itertools.permutations([events[:9], [a_end], [b_end]]):
        s = lanes_fold([e for part in order for e in part], me=A)
        assert s.ended[JOB] is a_end  # (as few failed: the earlier)
        better = better_end(s, JOB, A, 3)
        assert better is not None and (better["state"], better["failed"]) == ("done", {})
        assert set(better["outputs"]) == {"t", "u"}
    again = Event(A, 3, 400, EventType.JOB_ENDED, better)
    s.apply(again)
    assert s.ended[JOB] is again and better_end(s, JOB, A, 3) is None
    assert better_end(lanes_fold([*events, again], me=B), JOB, B, 3) is None
    far = lanes_fold([two_sub(), a_end, b_end, again], me=C)  # (mesh streams only)
    assert far.ended[JOB] is again and far.end_body(again).state == "done"


def test_no_better_end_where_it_would_tie_none_is_ended_or_we_hold_no_lane() -> None:
    """A fold whose end ties with the winner by merit makes none (a side's own fold, or a
    second end of the same merit); nor one of a job not ended here, nor of a job compacted
    or deleted here (no fold of it to make one of), nor a peer that holds no lane."""
    events, a_end, _ = crossing()
    a_only = lanes_fold([two_sub(), *events[1:5], a_end], me=A)
    assert better_end(a_only, JOB, A, 3) is None  # (its own side: a tie)
    assert better_end(lanes_fold(events[:9], me=A), JOB, A, 3) is None  # (not ended)
    assert better_end(lanes_fold(events, me=C), JOB, C, 3) is None  # (no lane held)
    s = lanes_fold(events, me=A)
    s.apply(Event(A, 3, 500, EventType.JOB_DELETED, {"job": JOB, "reason": ""}))
    assert better_end(s, JOB, A, 3) is None


def test_a_peer_that_added_itself_makes_no_end_before_a_submission_members() -> None:
    """A member that added itself (orphan takeover) ranks after any end of a submission
    member (`end_rank`'s first key), however few tasks its end fails: it makes none."""
    events, _, _ = crossing()
    added = Event(B, 5, 130, EventType.JOB_MEMBERS, {"job": JOB, "add": [C]})
    s = lanes_fold([*events, added], me=C)
    assert C in s.members_of[JOB] and job_ended(s, JOB, 3)["failed"] == {}
    assert better_end(s, JOB, C, 3) is None
    assert better_end(lanes_fold([*events, added], me=A), JOB, A, 3) is not None


def test_a_cancelled_job_gets_a_better_end_only_if_it_fails_fewer_tasks() -> None:
    """(Decided, session 46 helper b: review r1 M5's (2).) A cancelled job's fold fails no
    task (`task_failed`), so a member makes an end of it only before a winner that failed
    some (one made on a side the cancel had not reached); ends that fail none tie by merit
    whatever each saw done: the earlier stays (its outputs are what a non-member shows)."""
    events, _, _ = crossing()
    cancel = Event(A, 3, 320, EventType.JOB_CANCELLED, {"job": JOB, "reason": ""})
    s = lanes_fold([*events, cancel], me=A)
    better = better_end(s, JOB, A, 3)
    assert better is not None and better["failed"] == {}
    assert better["state"] == "done"  # (both tasks are done in the merged fold)
    one = lanes_fold([two_sub(), *events[1:5], cancel], me=A)  # (t done, u cancelled)
    cancelled = Event(A, 4, 330, EventType.JOB_ENDED, job_ended(one, JOB, 3))
    assert (cancelled.payload["state"], cancelled.payload["failed"]) == ("cancelled", {})
    s = lanes_fold([*events[:9], cancel, cancelled], me=A)
    assert end_rank(s, cancelled)[:3] == (False, 0, True)
    assert better_end(s, JOB, A, 3) is not None  # (every task done here: `done` is first)
    early = lanes_fold([two_sub(), cancel], me=A)  # (cancelled before anything was done)
    bare = Event(A, 4, 330, EventType.JOB_ENDED, job_ended(early, JOB, 3))
    assert (bare.payload["state"], bare.payload["outputs"]) == ("cancelled", {})
    s = lanes_fold([two_sub(), *events[1:5], cancel, bare], me=A)  # (t done here, u not)
    assert job_ended(s, JOB, 3)["outputs"].keys() == {"t"}
    assert better_end(s, JOB, A, 3) is None  # (a tie by merit: open case (2) stays)


_SIDES = (side(A, "t", "u", 110), side(B, "u", "t", 120))


@settings(max_examples=60, deadline=None)
@given(a_held=hs.integers(0, 4), b_held=hs.integers(0, 4), ends=hs.sets(hs.sampled_from("ab")),
       me=hs.sampled_from((A, B)))
def test_a_better_end_once_folded_ranks_first_and_none_follows(
        a_held: int, b_held: int, ends: set[str], me: str) -> None:
    """Whatever part of each side's lane events a member holds and whichever ends are
    folded: a better end ranks strictly before the winner by merit, and once folded it is
    the winner and no further end is made (so a member emits at most one per merit a fold
    of it can reach: bounded, and none that ties)."""
    _, a_end, b_end = crossing()
    events = [two_sub(), *_SIDES[0][:a_held], *_SIDES[1][:b_held],
              *([a_end] if "a" in ends else []), *([b_end] if "b" in ends else [])]
    s = lanes_fold(events, me=me)
    better = better_end(s, JOB, me, 3)
    if better is None:
        return
    won = s.ended[JOB]
    merit = end_merit(s, JOB, me, len(better["failed"]), better["state"])
    assert merit < end_rank(s, won)[:3]
    s.apply(Event(me, 10, 1000, EventType.JOB_ENDED, better))
    assert s.ended[JOB].origin == me and not s.unended
    assert better_end(s, JOB, me, 3) is None


DEP = {"name": "w", "tasks": [*TWO["tasks"], {"name": "v", "call": "c", "params": {},
                                              "depends": ["t", "u"]}]}


REVERSED = {"name": "w", "tasks": DEP["tasks"][::-1]}  # (v before what it waits on)


@settings(max_examples=80, deadline=None)
@given(data=hs.data(), me=hs.sampled_from((A, B)), dep=hs.sampled_from((TWO, DEP, REVERSED)))
def test_merits_says_what_better_end_does_after_each_event_in_any_order(
        data: hs.DataObject, me: str, dep: dict[str, Any]) -> None:
    """Review r2 of session 46, L2: `Merits` keeps each task's status and reads again only
    those of the tasks an event was noted of (`changed`, as the scheduler's `_note_lanes`
    calls it). Whatever events come, in whatever order (both sides, both ends, a cancel, a
    self-added member; a task `v` that waits on both, blocked on each side, pending in the
    merged fold), after each
    one it says what `better_end`'s full walk does."""
    sub = replace(two_sub(), payload={**two_sub().payload, "workflow": dep})
    a_end = end_of([sub, *_SIDES[0]], A, 2, 300, A)
    b_end = end_of([sub, *_SIDES[1]], B, 1, 310, B)
    extra = [Event(A, 3, 320, EventType.JOB_CANCELLED, {"job": JOB, "reason": ""}),
             Event(B, 5, 130, EventType.JOB_MEMBERS, {"job": JOB, "add": [C]})]
    pool = [*_SIDES[0], *_SIDES[1], a_end, b_end, *extra]
    events = [sub, *data.draw(hs.permutations(pool))[:data.draw(hs.integers(0, len(pool)))]]
    events = data.draw(hs.permutations(events))
    s = MeshState(lanes_on=True, me=me)
    merits = Merits(3)
    for ev in events:
        s.apply(ev)
        merits.changed(JOB, ev.payload.get("task"))
        assert merits.better(s, JOB, me) is (better_end(s, JOB, me, 3) is not None)


def chain_job(n: int, reverse: bool) -> tuple[list[Event], Event]:
    """A job of task x and a chain t0 <- t1 <- ... (each waits on the one before), listed
    in reverse if `reverse`, of members A, B, C: B's side failed x and t0, and B ended the
    job from it (2 failed); A's lane did x and failed t0 (its fold: 1 failed, the chain
    blocked behind t0). A's fold's events, and C's rival TASK_SPLIT of t0 (nothing
    changes: A's split of it came first)."""
    chain = [{"name": f"t{i}", "call": "c", "params": {},
              "depends": [f"t{i - 1}"] if i else []} for i in range(n)]
    wf = {"name": "w", "tasks": [{"name": "x", "call": "c", "params": {}, "depends": []},
                                 *(chain[::-1] if reverse else chain)]}
    sub = Event(A, 1, 100, EventType.JOB_SUBMITTED, {
        "job": JOB, "workflow": wf, "local": False, "claimed": False, "members": [A, B, C]})
    a_side, b_side = side(A, "x", "t0", 110), side(B, "t0", "x", 120)
    b_side = [b_side[0], b_side[1], b_side[3]]  # (B's split of t0 is A's rival: no done)
    b_side += [Event(lane(B, JOB), 5, 125, EventType.CHUNK_FAILED, {
        "job": JOB, "task": "t0", "split": [lane(B, JOB), 1], "chunk": 0, "attempt": 0,
        "kind": "error", "error": "flaky"})]
    b_end = end_of([sub, *b_side], B, 1, 310, B)
    assert len(b_end.payload["failed"]) == 2
    rival = Event(lane(C, JOB), 1, 130, EventType.TASK_SPLIT, {
        "job": JOB, "task": "t0", "input": None, "chunks": [[]], "kept": {}})
    return [sub, *a_side, *b_side, b_end], rival


@pytest.mark.parametrize("reverse", [False, True])
def test_a_look_at_a_failed_chain_is_linear_counted_and_free_after_an_event_that_changes_nothing(
        reverse: bool) -> None:
    """Review r2 of session 47, finding 4: `_Tally.finished` found the blocked tasks with a
    fixed-point loop over every task at each look (O(tasks²) for tasks in reverse order),
    not counted in `walked` (the scheduler's tick budget). A 1,000-task chain blocked
    behind its failed root: the first look reads each status and walks each blocked task
    once, counted (on 21d172b the walk was not: walked == the statuses only); a look after
    an event that changes no status reads that task only."""
    n = 1000
    events, rival = chain_job(n, reverse)
    s = lanes_fold(events, me=A)
    merits = Merits(3)
    assert merits.better(s, JOB, A) and better_end(s, JOB, A, 3) is not None
    first = merits.walked
    assert 2 * n <= first <= 3 * n + 10  # (statuses n + 1, the chain's n - 1 blocked, once)
    s.apply(rival)
    merits.changed(JOB, "t0")
    assert merits.better(s, JOB, A) and better_end(s, JOB, A, 3) is not None
    assert merits.walked - first == 1  # (t0's status read again: no other)


def test_a_look_at_a_failed_chain_that_ends_no_better_walks_nothing_blocked() -> None:
    """The merit by the counts comes first: a fold that fails as many tasks as the winner
    makes no better end whatever is blocked, and no blocked task is walked (counted)."""
    events, _ = chain_job(1000, False)
    a_end = end_of(events[:5], A, 2, 320, A)  # (A's side only: 1 failed, ranks first)
    s = lanes_fold([*events, a_end], me=A)
    merits = Merits(3)
    assert not merits.better(s, JOB, A) and better_end(s, JOB, A, 3) is None
    assert merits.walked == 1001  # (each status once: no walk of the blocked)


def test_merits_reads_every_status_again_after_a_refold() -> None:
    """Review r2 of session 47, finding 7: a conflict's refold tells the listeners of the
    winner only; B's lane seq 2 was a TASK_DONE of u (the loser), its winner one of t.
    `Merits` kept u `done` (told of t only) and said "better" where `better_end` does not
    (on 21d172b); it now reads every status again after a refold."""
    sub, a_side = two_sub(), _SIDES[0]  # (A: t done, u failed for good)
    a_end = end_of([sub, *a_side], A, 2, 300, A)
    ln = lane(B, JOB)
    split_u = Event(ln, 1, 120, EventType.TASK_SPLIT, {"job": JOB, "task": "u", "input": None,
                                                       "chunks": [[]], "kept": {}})
    loser, winner = (Event(ln, 2, 122, EventType.TASK_DONE, {
        "job": JOB, "task": task, "output": CID, "key": "k" + task, "cached": False})
        for task in ("u", "t"))
    s, merits = MeshState(lanes_on=True, me=A), Merits(3)
    for ev in [sub, *a_side, a_end, split_u, loser]:
        s.apply(ev)
        merits.changed(JOB, ev.payload.get("task"))
    assert merits.better(s, JOB, A) and better_end(s, JOB, A, 3) is not None
    s.replace(winner)
    assert not s.refold()
    merits.changed(JOB, "t")  # (as the scheduler is told: of the winner)
    assert better_end(s, JOB, A, 3) is None and not merits.better(s, JOB, A)


def test_the_winner_s_outputs_do_not_depend_on_a_losing_listing_folded_while_it_won() -> None:
    """Review r1 of session 46, F3: `end_outputs` merged every folded body, a listing's too,
    but a peer fetches only the listing of the JOB_ENDED that wins while it holds the job:
    peer a folded X's listing (X added itself and ended the job first; its t0 output is the
    earlier) before H's inline end came and won; peer b got H's first and never fetched X's
    listing. a's `end_body` (its list entry and record) named X's output, b's and a
    restarted a's H's (on d8519ea: euh42q vs 4s52zy). Only inline outputs join
    `end_outputs` now; the winner's own listing is counted by `end_body`."""
    me = "d4" * 8  # no member
    listing = "bafkreifjjcie6lypi6ny7amxnfftagclbuxndqonfxkjbybbuvtgmpllaq"

    def ended(origin: str, seq: int, hlc: int, **body: Any) -> Event:
        return Event(origin, seq, hlc, EventType.JOB_ENDED, {
            "job": J, "state": "done", "n_tasks": 1, "end": hlc, "outputs": {},
            "producers": {}, "failed": {}, "digest": "0" * 32, **body})

    add = Event(X, 1, 1100, EventType.JOB_MEMBERS, {"job": J, "add": [X]})
    e2 = ended(X, 2, 3000, listing=listing)
    e1 = ended(H, 2, 4000, outputs={"t0": list(Output("k0", BAD, 2500, lane(H, J), 1))})
    a = fold([SUB, add, e2], MeshState(lanes_on=True, me=me))
    full = replace(e2.body_as(JobEnded), listing=None,
                   outputs={"t0": Output("k0", GOOD, 1500, lane(X, J), 1)})
    assert a.fold_listing(e2, full) is None  # (fetched while e2 won here)
    assert a.end_body(e2).outputs["t0"].cid == GOOD  # (its own listing's, while it wins)
    a.apply(e1)
    b = fold([SUB, add, e1, e2], MeshState(lanes_on=True, me=me))
    restarted = fold([SUB, add, e2, e1], MeshState(lanes_on=True, me=me))
    bodies = [s.end_body(s.ended[J]) for s in (a, b, restarted)]
    assert all(s.ended[J] is e1 or s.ended[J].id == e1.id for s in (a, b, restarted))
    assert [body.outputs["t0"].cid for body in bodies] == [BAD] * 3
