"""Who holds and runs a lanes job (peer/jobs/members.py; design
docs/design/partial-replication.md sections 5.1, 5.3, 5.4): whether a job is big enough to be
one, its members in order, its home. Pure functions of a workflow, a folded state, the live
peers and a time passed in."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from peer.jobs import members
from peer.jobs.spec import from_obj, with_splits
from peer.log import Event, EventType, MeshState
from peer.log.fold import fold
from peer.log.lanes import lane
from peer.rendezvous import rendezvous
from tasks import registry

A, B, C, D = "a" * 16, "b" * 16, "c" * 16, "d" * 16
JOB = "j0123456789ab"
CID = "bafkreiaheqdfvsfwin2qysg2nd3n4upuu7oyiwtnuvai2oi3lesbeuh42q"
WORKFLOW = {"name": "w", "tasks": [{"name": "t", "call": "c", "params": {}, "depends": []}]}


def submitted(job: str = JOB, members_: list[str] | None = None, origin: str = A) -> Event:
    payload: dict[str, Any] = {"job": job, "workflow": WORKFLOW}
    if members_ is not None:
        payload["members"] = members_
    return Event(origin, 1, 10, EventType.JOB_SUBMITTED, payload)


def added(add: list[str], origin: str = B, seq: int = 1, job: str = JOB) -> Event:
    return Event(origin, seq, 20 + seq, EventType.JOB_MEMBERS, {"job": job, "add": add})


def state(*events: Event, lanes_on: bool = True) -> MeshState:
    return fold(list(events), MeshState(lanes_on=lanes_on))


def test_a_job_is_sized_by_its_tasks_with_a_call_and_a_per_item_task_as_unbounded() -> None:
    catalog = registry.load(())
    echo = [{"name": f"e{i}", "call": "ECHO", "args": [str(i)]} for i in range(3)]
    assert members.lanes_size(from_obj({"name": "w", "tasks": echo}, catalog), catalog) == 3
    with_source = [{"name": "src", "cid": CID}, *echo]  # (a source runs nothing)
    wf = from_obj({"name": "w", "tasks": with_source}, catalog)
    assert members.lanes_size(wf, catalog) == 3
    per_item = [{"name": "src", "cid": CID},
                {"name": "sum", "call": "CHECKSUM", "args": [], "depends": ["src"]}]
    wf = from_obj({"name": "w", "tasks": per_item}, catalog)
    assert members.lanes_size(wf, catalog) == math.inf  # its items: listed at its split


def test_a_task_split_by_its_values_counts_one_per_value() -> None:
    """(Review r, session 40.) A FETCH_FESTVOX of n URLs marked to split by them runs n
    chunks on as many peers: it counted one task, so a job of few such tasks was held in
    full however many chunks it ran."""
    catalog = registry.load(("tests.fixture_tasks",))
    urls = [f"http://127.0.0.1:8765/cmu_us_s{i}_arctic-0.90-release.zip" for i in range(20)]
    fetch = from_obj({"name": "w", "tasks": [
        {"name": "fetch", "call": "FETCH_FESTVOX", "args": urls},
        {"name": "one", "call": "FETCH_FESTVOX", "args": urls[:1]}]}, catalog)
    assert members.lanes_size(with_splits(fetch, catalog, True, True), catalog) == 21
    assert members.lanes_size(with_splits(fetch, catalog, True, False), catalog) == 2  # unmarked


def test_the_members_are_the_submitted_list_then_the_added_ones() -> None:
    s = state(submitted(members_=[A, B]), added([D, C], origin=B))
    order = members.ordered(s, JOB)
    assert order[:2] == [A, B]
    assert sorted(order[2:]) == [C, D]


@given(st.permutations([added([C], origin=A, seq=2), added([D], origin=B, seq=1),
                        added([C, D], origin=C, seq=1)]))
def test_the_order_of_the_members_does_not_depend_on_the_arrival_order(
        adds: list[Event]) -> None:
    s = state(*adds, submitted(members_=[B, A]))
    assert members.ordered(s, JOB) == [B, A, *members.ordered(
        state(submitted(members_=[B, A]), added([C, D])), JOB)[2:]]


def test_a_job_without_members_or_with_lanes_off_has_none() -> None:
    assert members.ordered(state(submitted()), JOB) == []
    assert members.ordered(state(submitted(members_=[A, B]), lanes_on=False), JOB) == []
    assert members.ordered(state(added([C])), JOB) == []  # (no JOB_SUBMITTED held)
    assert members.home(JOB, state(submitted()), {A, B}) is None


def test_the_home_is_the_first_live_member() -> None:
    s = state(submitted(members_=[A, B]), added([C], origin=A, seq=2))
    assert members.home(JOB, s, {A, B, C, D}) == A
    assert members.home(JOB, s, {B, C, D}) == B
    assert members.home(JOB, s, {C, D}) == C
    assert members.home(JOB, s, {D}) is None


# -- scale-out: spread_to, open_chunks ----------------------------------------------------

LANES = state(submitted(members_=[A, B]))


@pytest.mark.parametrize(("live", "work_s", "want"), [
    ({A: 1, B: 1, C: 1, D: 1}, 2.0, []),  # 1 s a member slot: at the bound, it stays
    ({A: 1, B: 1, C: 1, D: 1}, 2.5, "one"),  # a third slot holds it
    ({A: 1, B: 1, C: 1, D: 1}, 30.0, "both"),  # every live non-member
    ({A: 1, B: 1, C: 4, D: 1}, 5.0, "C-or-first"),
    ({A: 4, B: 4, C: 1}, 8.0, []),  # the members' slots count
    ({B: 1, C: 1}, 1.5, "one"),  # a member that is not live does not
    ({A: 1, B: 1}, 30.0, []),  # nobody else to add
    ({C: 1, D: 1}, 0.0, "one"),  # no member has a usable slot, no run ended: one is added
])
def test_spread_to_adds_the_next_peers_by_rendezvous_until_their_slots_hold_the_work(
        live: dict[str, int], work_s: float, want: object) -> None:
    others = rendezvous(JOB, [p for p in live if p not in (A, B)])
    got = members.spread_to(JOB, LANES, live, 3, work_s, spread_s=1.0)
    if want == "one":
        assert got == others[:1]
    elif want == "both":
        assert got == others
    elif want == "C-or-first":  # C's 4 slots hold it alone; D's 1 does not
        assert got == ([C] if others[0] == C else others)
    else:
        assert got == want


def test_spread_to_nothing_for_a_job_without_members() -> None:
    assert members.spread_to(JOB, state(submitted()), {A: 1, C: 1}, 3, 99.0, 1.0) == []


def test_spread_to_nobody_without_open_chunks_even_with_no_usable_member_slot() -> None:
    assert members.spread_to(JOB, LANES, {C: 1, D: 1}, 0, 0.0, 1.0) == []


def chunk_event(typ: EventType, seq: int, chunk: int, attempt: int = 0, **more: Any) -> Event:
    """A chunk event of member A (in its lane: a lanes job's task events count only there)."""
    return Event(lane(A, JOB), seq, 100 + seq, typ, {"job": JOB, "task": "t", "chunk": chunk,
                                                     "attempt": attempt,
                                                     "split": [lane(A, JOB), 2], **more})


def test_open_chunks_counts_the_ready_unclaimed_chunks_of_split_tasks() -> None:
    split = Event(lane(A, JOB), 2, 50, EventType.TASK_SPLIT, {
        "job": JOB, "task": "t", "input": None, "chunks": [[] for _ in range(5)]})
    s = state(submitted(members_=[A, B]), split,
              chunk_event(EventType.CLAIM, 3, 0),  # held
              chunk_event(EventType.CLAIM, 4, 1),
              chunk_event(EventType.CHUNK_DONE, 5, 1, output=CID),  # done
              chunk_event(EventType.CLAIM, 6, 2),
              chunk_event(EventType.CHUNK_FAILED, 7, 2, error="x", kind="crash"))  # open again
    assert members.open_chunks(s, JOB, ["t", "u"], max_attempts=3) == {"t": 3}
    assert members.open_chunks(s, JOB, ["t"], max_attempts=1) == {"t": 2}  # 2 failed for good


# -- orphan takeover: takeover_at, running ------------------------------------------------

def test_takeover_comes_a_lease_after_the_members_went_then_one_wait_per_rank() -> None:
    s = state(submitted(members_=[A, B]))
    first, second = rendezvous(JOB, [C, D])
    assert members.takeover_at(JOB, s, first, {C, D}, 100.0, 10.0, 0.5) == 110.0
    assert members.takeover_at(JOB, s, second, {C, D}, 100.0, 10.0, 0.5) == 110.5
    # (Whether a member keeps the job going is `kept_until`'s: a live member that keeps
    # nothing going is no rank, session 46)
    assert members.takeover_at(JOB, s, first, {B, C, D}, 100.0, 10.0, 0.5) == 110.0
    assert members.takeover_at(JOB, s, A, {A, C}, 100.0, 10.0, 0.5) is None  # a member
    assert members.takeover_at(JOB, state(submitted()), C, {C}, 100.0, 10.0, 0.5) is None


def test_a_takeover_folded_makes_the_taker_a_member_and_stops_the_others() -> None:
    s = state(submitted(members_=[A, B]), added([C], origin=C))
    assert members.takeover_at(JOB, s, C, {C, D}, 100.0, 10.0, 0.5) is None  # a member now
    assert members.kept_until(JOB, s, {C, D}, {}, {}, 100.0, 10.0) == 110.0  # C is live:
    assert members.home(JOB, s, {C, D}) == C  # a lease to show it runs the job


# -- who keeps a job going: kept_until, cannot_claim (review r1 M3, session 46) -----------

def test_a_live_named_member_that_can_claim_keeps_the_job_for_good() -> None:
    s = state(submitted(members_=[A, B]), added([C], origin=C))
    assert members.kept_until(JOB, s, {B, C, D}, {}, {C: 0.0}, 500.0, 10.0) == math.inf
    assert members.kept_until(JOB, s, {D}, {}, {}, 500.0, 10.0) == -math.inf  # none live
    assert members.kept_until(JOB, state(submitted()), {A}, {}, {}, 500.0, 10.0) == -math.inf


def test_a_self_added_member_keeps_the_job_a_lease_past_its_last_run_seen() -> None:
    """A peer that added itself (no JOB_SUBMITTED names it) and stays live keeps the job
    only `window_s` past the last sign that it runs it: its first look (`seen` missing:
    `now`), then each run of the job its heartbeats report (the caller's `seen`). On
    5c96899 any live member kept it for good: one that ran nothing held the job (r1 M3)."""
    s = state(submitted(members_=[A, B]), added([C], origin=C))
    assert members.kept_until(JOB, s, {C, D}, {}, {}, 100.0, 10.0) == 110.0  # (first look)
    assert members.kept_until(JOB, s, {C, D}, {}, {C: 100.0}, 130.0, 10.0) == 110.0  # over
    assert members.kept_until(JOB, s, {C, D}, {}, {C: 125.0}, 130.0, 10.0) == 135.0  # a run
    s2 = state(submitted(members_=[A, B]), added([C], origin=C), added([D], origin=D, seq=2))
    assert members.kept_until(JOB, s2, {C, D}, {}, {C: 100.0, D: 120.0}, 130.0, 10.0) == 130.0


def test_a_named_member_that_can_claim_nothing_keeps_the_job_a_lease_past_since_then() -> None:
    """A named member at 0 usable slots or holding its claims back (its log unwritable):
    `window_s` past since when it is so, or past its last run of the job seen."""
    s = state(submitted(members_=[A, B]))
    assert members.kept_until(JOB, s, {A, C}, {A: 50.0}, {}, 100.0, 10.0) == 60.0
    assert members.kept_until(JOB, s, {A, C}, {A: 50.0}, {A: 95.0}, 100.0, 10.0) == 105.0
    assert members.kept_until(JOB, s, {A, B, C}, {A: 50.0}, {}, 100.0, 10.0) == math.inf  # B


@given(st.sets(st.sampled_from([A, B, C, D])), st.sets(st.sampled_from([A, B])),
       st.dictionaries(st.sampled_from([A, B, C, D]), st.floats(0, 200)),
       st.floats(0, 200), st.sampled_from([0.0, 1.0, 10.0]))
def test_a_job_is_kept_for_good_only_by_a_live_named_member_that_can_claim(
        live: set[str], stuck_named: set[str], seen: dict[str, float], now: float,
        window_s: float) -> None:
    s = state(submitted(members_=[A, B]), added([C], origin=C))
    stuck = {p: 0.0 for p in stuck_named}
    got = members.kept_until(JOB, s, live, stuck, seen, now, window_s)
    assert (got == math.inf) == any(p in live and p not in stuck for p in (A, B))
    if got < math.inf:  # the last sign of a live member, a window on; none: -inf
        signs = [*(0.0 for p in stuck_named if p in live),
                 *(seen[p] for p in (A, B) if p in live and p in seen),
                 *([seen.get(C, now)] if C in live else [])]
        assert got == (max(signs) + window_s if signs else -math.inf)
    assert D not in s.members_of[JOB] and got == members.kept_until(
        JOB, s, live - {D}, stuck, seen, now, window_s)  # (a non-member keeps nothing)


def test_a_peer_that_can_start_no_run_is_told_by_its_heartbeat() -> None:
    assert members.cannot_claim({"slots": 0, "free_slots": 0, "running": []})  # wedged
    # its log unwritable: no free slot reported, fewer runs than slots
    assert members.cannot_claim({"slots": 2, "free_slots": 0, "running": [["j", "t", 0, 0]]})
    assert not members.cannot_claim(  # busy: its runs fill its slots
        {"slots": 2, "free_slots": 0, "running": [["j", "t", 0, 0], ["k", "t", 0, 0]]})
    assert not members.cannot_claim({"slots": 2, "free_slots": 1, "running": []})
    assert not members.cannot_claim({})  # (an earlier release's, or odd: says nothing)
    assert not members.cannot_claim({"slots": "0", "free_slots": 0, "running": []})
    assert not members.cannot_claim({"slots": 2, "free_slots": 0, "running": None})


@pytest.mark.parametrize(("info", "busy"), [
    ({"slots": 2, "free_slots": 0, "running": [["j", "t", 0, 0], ["k", "t", 0, 0]]}, True),
    ({"slots": 1, "free_slots": 0, "running": [["j", "t", 0, 0], ["j", "t", 1, 0]]}, True),
    ({"slots": 2, "free_slots": 0, "running": [["j", "t", 0, 0]]}, False),  # held back
    ({"slots": 2, "free_slots": 1, "running": [["j", "t", 0, 0]]}, False),  # a free slot
    ({"slots": 0, "free_slots": 0, "running": []}, False),  # wedged: no usable slot
    ({}, False),  # (an earlier release's, or odd: says nothing)
    ({"slots": "1", "free_slots": 0, "running": [["j", "t", 0, 0]]}, False),
    ({"slots": 1, "free_slots": None, "running": [["j", "t", 0, 0]]}, False),
    ({"slots": 1, "free_slots": 0, "running": "x"}, False),
])
def test_a_peer_whose_runs_fill_its_slots_is_told_busy_by_its_heartbeat(
        info: dict[str, Any], busy: bool) -> None:
    """Review r2 L3 (session 46): an added member waiting for its slot keeps its job
    (`Scheduler._busy_seen`); never one that `cannot_claim`."""
    assert members.busy(info) is busy
    assert not (busy and members.cannot_claim(info))


def test_a_job_runs_until_it_is_cancelled_ended_or_done() -> None:
    sub = submitted(members_=[A, B])
    assert members.running(state(sub), JOB, 3)
    assert not members.running(state(), JOB, 3)
    assert not members.running(state(sub, Event(B, 1, 30, EventType.JOB_CANCELLED,
                                                 {"job": JOB, "reason": ""})), JOB, 3)
    assert not members.running(state(sub, Event(lane(B, JOB), 1, 30, EventType.TASK_DONE, {
        "job": JOB, "task": "t", "output": CID})), JOB, 3)


@given(st.dictionaries(st.sampled_from([A, B, C, D, "e" * 16, "f" * 16]),
                       st.integers(1, 4), min_size=1),
       st.integers(0, 3), st.floats(0, 100), st.sampled_from([0.0, 0.5, 1.0, 3.0]))
def test_spread_to_adds_a_prefix_of_the_non_members_that_holds_the_work_or_all(
        live: dict[str, int], chunks: int, work_s: float, spread_s: float) -> None:
    got = members.spread_to(JOB, LANES, live, chunks, work_s, spread_s)
    others = rendezvous(JOB, [p for p in live if p not in (A, B)])
    assert got == others[:len(got)]  # no member, in the job's order
    held = sum(live[p] for p in (A, B, *got) if p in live)
    usable = sum(live[p] for p in (A, B) if p in live)
    assert bool(got) == bool(chunks and others and (usable == 0 or work_s > spread_s * usable))
    if got:
        assert got == others or work_s <= spread_s * held  # it stops once they hold it
        assert len(got) == 1 or spread_s <= 0 or (  # (spread_s 0: every one, at once)
            work_s > spread_s * (held - live[got[-1]]))  # no extra peer


def test_join_heads_keeps_only_positive_seqs_of_the_jobs_lanes() -> None:
    """A JOB_MEMBERS's `heads` are a peer's wire data: what is not a lane of the job with a
    positive int seq waits for nothing (a malformed `heads` makes no wait at all)."""
    job, other = JOB, "j0123456789ac"
    a, b = A, B
    heads = {f"{a}/{job}": 3, f"{b}/{job}": 0, f"{a}/{other}": 5, a: 7, f"{b}/{job}x": 2,
             "x": True}
    assert members.join_heads(C, job, heads) == {f"{a}/{job}": 3}
    assert members.join_heads(C, job, {f"{a}/{job}": True}) == {}
    for bad in (None, [], "h", 3):
        assert members.join_heads(C, job, bad) == {}


def test_join_heads_waits_for_every_lane_of_the_job_but_the_joiners_own() -> None:
    """The joiner's own lane is left out (it emitted nothing in the job: `joins`; on
    a95f359 an adder naming it held the joiner for lease_s). A lane of a peer that is no
    member as folded here is kept (review e, session 41, E7): that peer's add, another
    origin's JOB_MEMBERS, may come after the joiner's (on 8facbac such a lane was dropped
    for good at the add, and the joiner ran that member's chunks again)."""
    heads = {f"{A}/{JOB}": 3, f"{C}/{JOB}": 2, f"{D}/{JOB}": 10**9}
    assert members.join_heads(C, JOB, heads) == {f"{A}/{JOB}": 3, f"{D}/{JOB}": 10**9}
    assert members.join_heads(D, JOB, heads) == {f"{A}/{JOB}": 3, f"{C}/{JOB}": 2}


def test_caught_up_once_the_heads_reach_the_adds() -> None:
    st = MeshState()
    st.heads.update({"o1": 3, "o2": 1})
    assert members.caught_up(st, {"o1": 3}, 100) and members.caught_up(st, {}, 100)
    assert not members.caught_up(st, {"o1": 3, "o2": 2}, 100)
    assert not members.caught_up(st, {"o3": 1}, 100)


def test_caught_up_once_a_lane_holds_an_event_made_after_the_add() -> None:
    """(Session 40.) A seq an adder made up past a lane's end held the joiner for lease_s on
    a95f359. The adder's clock had passed every event it held when it emitted the add: a
    lane held up to an event of HLC at or after the add's holds all the adder held of it."""
    lane_a = f"{A}/{JOB}"
    made = [Event(lane_a, i, 10 + 10 * i, EventType.CLAIM,
                  {"job": JOB, "task": "t", "chunk": 0, "attempt": 0, "split": [A, 1]})
            for i in (1, 2, 3)]  # (HLCs 20, 30, 40)
    st = MeshState()
    for ev in made[:2]:
        st.record(ev)
    assert st.heads[lane_a] == 2
    assert not members.caught_up(st, {lane_a: 10**9}, 31)  # (all held was before the add)
    assert members.caught_up(st, {lane_a: 10**9}, 30)  # (its seq 2 came at the add or after)
    st2 = MeshState()
    st2.record(made[2])  # (held past a gap: not up to it)
    assert not members.caught_up(st2, {lane_a: 10**9}, 10)


def heads_add(add: list[str], heads: dict[str, int], origin: str = B, seq: int = 2) -> Event:
    """A scale-out's JOB_MEMBERS: `add` with the adder's `heads` of the job's lanes."""
    return Event(origin, seq, 20 + seq, EventType.JOB_MEMBERS,
                 {"job": JOB, "add": add, "heads": heads})


def test_a_peer_named_at_submission_or_that_ran_some_of_the_job_never_joins_again() -> None:
    """`joins` (review r0 finding 4): a JOB_MEMBERS naming a member named in the job's
    `members` again, or one that holds a lane of its own in the job, does not make it wait
    for the `heads` it says (any member's word: 10**9 would never come); after a restart
    neither (`first_adds`). A peer that only an add made a member, with no lane, joins."""
    far = {f"{A}/{JOB}": 10**9}
    s = state(submitted(members_=[A, B]), heads_add([B, C], far, origin=A))
    assert members.first_adds(s, B, [JOB]) == {}
    assert {j: (e.origin, h) for j, (e, h) in members.first_adds(s, C, [JOB]).items()} == {
        JOB: (A, far)}
    assert not members.joins(s, B, JOB) and members.joins(s, C, JOB)
    assert not members.joins(s, D, JOB)  # (no member)
    s.heads[f"{C}/{JOB}"] = 1  # C ran some of it
    assert not members.joins(s, C, JOB) and members.first_adds(s, C, [JOB]) == {}


def test_a_restarted_joiner_joins_as_of_the_add_that_made_it_a_member_only() -> None:
    """Of two adds naming C (two peers that each saw themselves home; a member adding it
    again with seqs that never come), a restart joins as of the earliest (its `heads`,
    asked of its origin), not for the highest seq any add named; found held or not (the
    scheduler's to tell: `caught_up`, review e, session 41, E8)."""
    first = heads_add([C], {f"{A}/{JOB}": 3}, origin=A)
    again = heads_add([C], {f"{A}/{JOB}": 10**9, f"{B}/{JOB}": 10**9}, origin=B, seq=5)
    for events in ([first, again], [again, first]):  # (whatever order they came in)
        s = state(submitted(members_=[A, B]), *events)
        for _ in range(2):
            assert {j: (e.id, h) for j, (e, h) in members.first_adds(s, C, [JOB]).items()
                    } == {JOB: (first.id, {f"{A}/{JOB}": 3})}
            s.heads[f"{A}/{JOB}"] = 3  # (then held)
