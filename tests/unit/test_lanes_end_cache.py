"""Review r3 of session 46, R3-D (design section 8, H2 (d)): which JOB_ENDEDs' outputs enter
the output cache. A peer that added itself to a lanes job (any peer may: orphan takeover)
sends a JOB_ENDED that loses to the home's but names, for a task's cache key, an output it
made up with an early order (naming another member's lane as its origin). The real fold,
every arrival order, as the home, the other submission member, the self-added peer itself
and a peer that is no member."""

from __future__ import annotations

import itertools
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from peer.log import Event, EventType, MeshState, fold
from peer.log.lanes import lane, lane_of

H, R, X, N = "a1" * 8, "b2" * 8, "c3" * 8, "d4" * 8  # home, replica, self-added, no member
J, J2 = "j" + "0" * 11 + "1", "j" + "0" * 11 + "2"
GOOD = "bafkreiaheqdfvsfwin2qysg2nd3n4upuu7oyiwtnuvai2oi3lesbeuh42q"
BAD = "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"
WF = {"name": "w", "tasks": [{"name": "t0", "call": "c", "params": {}, "depends": []}]}


def submitted(job: str = J, members: list[str] | None = None, seq: int = 1,
              hlc: int = 1000) -> Event:
    return Event(H, seq, hlc, EventType.JOB_SUBMITTED,
                 {"job": job, "workflow": WF, "members": members or [H, R]})


def task_done(origin: str, seq: int, hlc: int, output: str = GOOD, job: str = J) -> Event:
    return Event(origin, seq, hlc, EventType.TASK_DONE,
                 {"job": job, "task": "t0", "output": output, "cached": False, "key": "k0"})


def ended(origin: str, seq: int, hlc: int, out: list[object], job: str = J) -> Event:
    """A JOB_ENDED of `job` naming t0's output `out`: [key, cid, hlc, origin, seq]."""
    return Event(origin, seq, hlc, EventType.JOB_ENDED,
                 {"job": job, "state": "done", "n_tasks": 1, "end": hlc,
                  "outputs": {"t0": out}, "producers": {}, "failed": {}, "digest": "0" * 32})


def named(ev: Event) -> list[object]:
    """TASK_DONE `ev`'s output as an honest JOB_ENDED names it."""
    return ["k0", ev.payload["output"], ev.hlc, ev.origin, ev.seq]


SUB = submitted()
ADD = Event(X, 1, 1100, EventType.JOB_MEMBERS, {"job": J, "add": [X]})
REAL = task_done(lane(R, J), 1, 2000)
REAL_END = ended(H, 2, 3000, named(REAL))
# X's end: it loses to the home's (X is no member the submission names), and names for
# k0 a CID nobody made, ordered before the real TASK_DONE, "made" in the home's lane
FAKE_END = ended(X, 2, 2500, ["k0", BAD, 1200, lane(H, J), 7])


def lanes_fold(events: list[Event], me: str) -> MeshState:
    """`me`'s fold of `events`, of those it gets: no lane's if it is `N`, the peer that is
    no member (its door drops them: design section 3)."""
    got = [e for e in events if me != N or lane_of(e.origin) is None]
    return fold(got, MeshState(lanes_on=True, me=me))


def test_a_self_added_members_losing_end_puts_no_made_up_output_in_any_cache() -> None:
    """(On 9590a1d, every peer's cache holds BAD for k0 in every order, the home's too, and
    the end a non-member shows names BAD for t0.)"""
    for order in itertools.permutations([SUB, ADD, REAL, REAL_END, FAKE_END]):
        for me in (H, R, X, N):
            s = lanes_fold(list(order), me)
            assert s.ended[J].id == REAL_END.id
            assert s.outputs["k0"] == GOOD, (me, [e.id for e in order])
            assert s._outputs_src["k0"] == REAL.order
            assert s.end_body(s.ended[J]).outputs["t0"].cid == GOOD


def test_a_self_added_members_end_alone_puts_its_outputs_in_no_cache() -> None:
    """Where no member the submission names ended the job, the self-added one's end is the
    job's (as before), but a peer that holds no lane of the job takes none of its outputs
    into its cache (it cannot tell a made-up one); a member's cache is its TASK_DONEs'."""
    for order in itertools.permutations([SUB, ADD, REAL, FAKE_END]):
        for me, want in ((H, GOOD), (X, GOOD), (N, None)):
            s = lanes_fold(list(order), me)
            assert s.ended[J].id == FAKE_END.id
            assert s.outputs.get("k0") == want


def test_the_home_s_end_coming_later_still_gives_the_real_output() -> None:
    """The home's end after the self-added one's (the home emits it: its merit ranks first,
    `ending.better_end`): every peer then holds the real CID, as in any other order."""
    s = lanes_fold([SUB, ADD, FAKE_END], N)
    assert "k0" not in s.outputs
    s.apply(REAL_END)
    assert s.outputs["k0"] == GOOD and s.ended[J].id == REAL_END.id


def test_an_honest_orphan_takeovers_outputs_enter_once_a_job_submitted_names_its_peer() -> None:
    """The set of peers whose ends' outputs count only grows (the `members` of every
    JOB_SUBMITTED of the job, as `end_refusal`'s task names): a second JOB_SUBMITTED naming
    X (its submitter's own, of an unbound id) takes in X's end's outputs, in any order."""
    taker = task_done(lane(X, J), 1, 1500)
    x_end = ended(X, 2, 2500, named(taker))
    again = submitted(members=[H, R, X], seq=5, hlc=1050)
    for evs, want in (([SUB, ADD, taker, x_end], None),
                      ([SUB, ADD, taker, x_end, again], GOOD)):
        for order in itertools.permutations(evs):
            s = lanes_fold(list(order), N)
            assert s.outputs.get("k0") == want
            if want is not None:
                assert s._outputs_src["k0"] == taker.order


def test_two_homes_ends_both_enter_the_cache_first_by_order() -> None:
    """Two members the submission names, cut apart, each ended the job: both ends' outputs
    count, the earliest by order wins the key (as before), on members and non-members."""
    early = task_done(lane(H, J), 1, 1800)
    h_end = ended(H, 2, 3000, named(early))
    r_end = ended(R, 2, 3100, named(REAL))
    for order in itertools.permutations([SUB, early, REAL, h_end, r_end]):
        for me in (H, N):
            s = lanes_fold(list(order), me)
            assert s._outputs_src["k0"] == early.order
            assert s.end_body(s.ended[J]).outputs["t0"][2:] == early.order


def test_a_made_up_output_does_not_beat_another_jobs_real_one_for_a_shared_key() -> None:
    """Two jobs share cache key k0 (a rerun): X's losing end in the first names an early
    made-up output; the second job's home end names its real one, later."""
    sub2 = submitted(J2, seq=3, hlc=4000)
    real2 = task_done(lane(R, J2), 1, 4100, job=J2)
    end2 = ended(H, 4, 4200, named(real2), job=J2)
    for order in itertools.permutations([SUB, ADD, FAKE_END, sub2, real2, end2]):
        s = lanes_fold(list(order), N)
        assert s.outputs["k0"] == GOOD and s._outputs_src["k0"] == real2.order


def test_a_peer_a_vouched_member_added_counts_one_a_self_added_peer_added_does_not() -> None:
    """Vouched members: those a JOB_SUBMITTED names and, as a closure, those a vouched
    member's JOB_MEMBERS adds (a home's scale-out). R added by the home's scale-out ends
    the job alone (the home gone): its outputs count; Y added by X (self-added) does not,
    until a vouched member adds X; in every order of the events."""
    solo = submitted(members=[H])
    y = "e5" * 8
    r_add = Event(H, 3, 1050, EventType.JOB_MEMBERS, {"job": J, "add": [R]})
    y_add = Event(X, 3, 1150, EventType.JOB_MEMBERS, {"job": J, "add": [y]})
    x_vouched = Event(R, 3, 1160, EventType.JOB_MEMBERS, {"job": J, "add": [X]})
    r_end = ended(R, 2, 3000, named(REAL))
    y_done = task_done(lane(y, J), 1, 1900)
    y_end = ended(y, 2, 2900, named(y_done))
    for evs, want in (([solo, r_add, r_end], REAL.order),
                      ([solo, r_add, ADD, y_add, y_end], None),
                      ([solo, r_add, ADD, y_add, y_end, x_vouched], y_done.order)):
        for order in itertools.permutations(evs):
            s = lanes_fold(list(order), N)
            assert s._outputs_src.get("k0") == want, [e.id for e in order]


PEERS = [H, R, X, "e5" * 8, "f6" * 8]


def _adds(draw: st.DrawFn, max_adds: int) -> tuple[list[Event], dict[str, int], set[str],
                                                  set[str]]:
    """Up to `max_adds` JOB_MEMBERS among PEERS (any origin adding any peers: self-adds,
    scale-outs, chains), the next seq of each origin, the vouched closure they make with
    SUB's [H, R] (whoever a vouched member's JOB_MEMBERS adds), and the members."""
    adds, seqs = [], dict.fromkeys(PEERS, 10)
    for _ in range(draw(st.integers(0, max_adds))):
        by = draw(st.sampled_from(PEERS))
        add = draw(st.lists(st.sampled_from(PEERS), min_size=1, max_size=2, unique=True))
        adds.append(Event(by, seqs[by], draw(st.integers(1001, 1400)), EventType.JOB_MEMBERS,
                          {"job": J, "add": add}))
        seqs[by] += 1
    vouched, grew = {H, R}, True
    while grew:
        more = {p for a in adds if a.origin in vouched for p in a.payload["add"]}
        grew = not more <= vouched
        vouched |= more
    return adds, seqs, vouched, {H, R} | {p for a in adds for p in a.payload["add"]}


@st.composite
def members_and_ends(draw: st.DrawFn) -> tuple[list[Event], set[str], list[Event]]:
    """JOB_MEMBERS among PEERS (any origin adding any peers: self-adds, scale-outs, chains),
    the vouched closure they make with SUB's [H, R], and JOB_ENDEDs of random members, each
    naming for k0 a random CID at a random order in a random member's lane."""
    adds, seqs, vouched, members = _adds(draw, 5)
    ends = []
    for _ in range(draw(st.integers(1, 4))):
        by = draw(st.sampled_from(sorted(members)))
        made_in = draw(st.sampled_from(sorted(members)))
        out = ["k0", draw(st.sampled_from([GOOD, BAD])), draw(st.integers(1001, 2999)),
               lane(made_in, J), draw(st.integers(1, 9))]
        ends.append(ended(by, seqs[by], draw(st.integers(3000, 3100)), out))
        seqs[by] += 1
    return adds, vouched, ends


@settings(max_examples=200, deadline=None)
@given(members_and_ends(), st.lists(st.integers(0, 2**32), min_size=2, max_size=2))
def test_the_cache_holds_the_earliest_output_of_a_vouched_members_end_in_any_order(
        drawn: tuple[list[Event], set[str], list[Event]], seeds: list[int]) -> None:
    """A non-member's cache: k0 is the earliest output by order of the ends of vouched
    members (a closure: SUB's members, and whoever a vouched member's JOB_MEMBERS adds)
    made in a vouched member's lane (session 48), none if none; the same in every order of
    the events; the winning end shows its own output where that is earlier."""
    adds, vouched, ends = drawn
    outs = [o for e in ends if e.origin in vouched
            if lane_of((o := e.payload["outputs"]["t0"])[3])[0] in vouched]  # type: ignore[index]
    want = min(((o[2], o[3], o[4]) for o in outs), default=None)
    for seed in seeds:
        evs = [SUB, *adds, *ends]
        random.Random(seed).shuffle(evs)
        s = lanes_fold(evs, N)
        assert s._outputs_src.get("k0") == want
        assert s._vouched[J] == vouched
        won = s.ended[J]
        if won.origin in vouched:
            own = tuple(won.payload["outputs"]["t0"][2:])
            assert s.end_body(won).outputs["t0"][2:] == min(own, want or own)


def test_a_self_added_members_backdated_lane_task_done_does_not_win_the_cache() -> None:
    """R3-D's rest (session 48): X's TASK_DONE in its own lane, ordered after the
    JOB_SUBMITTED (before its own JOB_MEMBERS, even), counted as a member's on every member
    (`_task_fold`): it won t0 and k0 there, and the home's end, made from its fold, named
    it. A vouched lane's TASK_DONE now ranks first, and an unvouched one's output enters no
    cache: on every member, in every order (the home's end names the real output)."""
    x_done = task_done(lane(X, J), 1, 1050, BAD)
    for order in itertools.permutations([SUB, ADD, x_done, REAL]):
        for me in (H, R, X):
            s = lanes_fold(list(order), me)
            assert s.outputs["k0"] == GOOD and s._outputs_src["k0"] == REAL.order
            assert s.task_done[(J, "t0")].id == REAL.id


def test_an_orphan_takeovers_task_done_alone_finishes_its_task_and_counts_once_vouched() -> None:
    """A self-added member's TASK_DONE still wins its task where no vouched member's is
    folded (an orphan takeover finishes the job when every vouched member is gone), but its
    output enters no cache until a vouched member adds it (`_vouch`); then it ranks as a
    vouched lane's: by order, so its earlier TASK_DONE takes the task and key from R's, in
    every order."""
    x_done = task_done(lane(X, J), 1, 1050)
    vouching = Event(R, 3, 1200, EventType.JOB_MEMBERS, {"job": J, "add": [X]})
    for evs, winner, cached in (([SUB, ADD, x_done], x_done, None),
                                ([SUB, ADD, x_done, REAL], REAL, REAL),
                                ([SUB, ADD, x_done, REAL, vouching], x_done, x_done)):
        for order in itertools.permutations(evs):
            s = lanes_fold(list(order), H)
            assert s.task_done[(J, "t0")].id == winner.id, [e.id for e in order]
            assert s._outputs_src.get("k0") == (None if cached is None else cached.order)


def chunk_done(origin: str, seq: int, hlc: int, output: str = GOOD, items: bool = False,
               ) -> Event:
    """A CHUNK_DONE of J's t0 in `origin`: its one chunk's item result (`items`), else the
    whole output, implying t0's TASK_DONE of key k0."""
    body: dict[str, object] = {"job": J, "task": "t0", "chunk": 0, "attempt": 0,
                               "split": [H, 1]}
    body.update({"cache": {"i0": {"n": "a.wav", "c": output}}} if items
                else {"output": output, "done": {"key": "k0"}})
    return Event(origin, seq, hlc, EventType.CHUNK_DONE, body)


@st.composite
def members_and_dones(draw: st.DrawFn) -> tuple[list[Event], set[str], list[Event]]:
    """JOB_MEMBERS among PEERS (as `members_and_ends`), the vouched closure, and 1-5
    TASK_DONEs or CHUNK_DONEs (implying t0's TASK_DONE, or with an item result) of t0 in
    random members' lanes at random orders after the JOB_SUBMITTED's."""
    adds, _, vouched, members = _adds(draw, 4)
    dones, lane_seqs = [], dict.fromkeys(PEERS, 1)
    for _ in range(draw(st.integers(1, 5))):
        by = draw(st.sampled_from(sorted(members)))
        cid, hlc = draw(st.sampled_from([GOOD, BAD])), draw(st.integers(1001, 1500))
        kind = draw(st.sampled_from(["task", "chunk", "items"]))
        dones.append(task_done(lane(by, J), lane_seqs[by], hlc, cid) if kind == "task" else
                     chunk_done(lane(by, J), lane_seqs[by], hlc, cid, kind == "items"))
        lane_seqs[by] += 1
    return adds, vouched, dones


@settings(max_examples=200, deadline=None)
@given(members_and_dones(), st.lists(st.integers(0, 2**32), min_size=2, max_size=2),
       st.sampled_from([H, X]))
def test_task_done_and_the_cache_rank_a_vouched_lane_first_in_any_order_and_a_restart(
        drawn: tuple[list[Event], set[str], list[Event]], seeds: list[int], me: str) -> None:
    """A member's fold (the home's, or a peer's that may have added itself): t0's TASK_DONE
    (implied ones too) is the least by (not in a vouched lane, order); k0's cache entry the
    earliest of a vouched lane's, none if none; i0's item entry likewise; the same in every
    order, after a refold and a replay in the log's order (a restart)."""
    adds, vouched, dones = drawn
    task_dones = [e for e in dones if "output" in e.payload]  # (items imply none)
    want_done = min(((lane_of(e.origin)[0] not in vouched, e.order)  # type: ignore[index]
                     for e in task_dones), default=None)
    counted = [e for e in dones if lane_of(e.origin)[0] in vouched]  # type: ignore[index]
    want_k0 = min((e.order for e in counted if "output" in e.payload), default=None)
    want_i0 = min((e.order for e in counted if "cache" in e.payload), default=None)
    for seed in seeds:
        evs = [SUB, *adds, *dones]
        random.Random(seed).shuffle(evs)
        s = lanes_fold(evs, me)
        replayed = lanes_fold(sorted(evs, key=lambda e: e.order), me)
        for st_ in (s, replayed):
            won = st_.task_done.get((J, "t0"))
            got = None if won is None else (lane_of(won.origin)[0] not in vouched,  # type: ignore[index]
                                            won.order)
            assert got == want_done
            assert st_._outputs_src.get("k0") == want_k0
            assert st_._cache_src.get("i0") == want_i0
            assert st_._vouched[J] == vouched
        s.refold()
        assert s.task_done.get((J, "t0")) == replayed.task_done.get((J, "t0"))
        assert s._outputs_src.get("k0") == want_k0 and s._cache_src.get("i0") == want_i0


def test_a_home_end_naming_a_self_added_members_output_puts_it_in_no_cache() -> None:
    """X's TASK_DONE was t0's only one (no vouched member ran it: an orphan takeover, or X
    was first), so the home's end, made from its fold, names X's output: a vouched end,
    but an output of an unvouched lane, which enters no peer's cache (on 9db4c16 every
    peer took BAD from the end) until a vouched member adds X; the end still shows it."""
    x_done = task_done(lane(X, J), 1, 1050, BAD)
    home_end = ended(H, 2, 3000, named(x_done))
    vouching = Event(R, 3, 1200, EventType.JOB_MEMBERS, {"job": J, "add": [X]})
    for evs, want in (([SUB, ADD, x_done, home_end], None),
                      ([SUB, ADD, x_done, home_end, vouching], x_done.order)):
        for order in itertools.permutations(evs):
            for me in (H, R, X, N):
                s = lanes_fold(list(order), me)
                assert s._outputs_src.get("k0") == want, (me, [e.id for e in order])
                assert s.end_body(s.ended[J]).outputs["t0"].cid == BAD


def test_a_self_added_members_lane_task_done_after_its_job_went_puts_nothing_in_the_cache(
) -> None:
    """The seam of session 48's helpers a and c: a self-added member's backdated lane
    TASK_DONE is kept out of the cache while its job is live (`_unvouched`); once the job
    was compacted or deleted, it was judged by the job's members alone (X is one: it added
    itself), so a peer that got it late held BAD for k0 and one that got it early GOOD. Now
    the gone job's kept vouched set decides, as the live `_vouched` did: one answer for
    every order and every point the job went."""
    x_done = task_done(lane(X, J), 1, 1050, BAD)
    deleted = Event(H, 5, 9000, EventType.JOB_DELETED, {"job": J, "reason": "user"})
    for rest in itertools.permutations([ADD, x_done, REAL]):
        for cut in range(len(rest) + 1):
            for me in (H, R):
                s = fold([SUB, *rest[:cut]], MeshState(lanes_on=True, me=me))
                s.compact([J])
                fold(rest[cut:], s)
                assert s.outputs.get("k0") == GOOD, ("compacted", me, cut)
                s = fold([SUB, *rest[:cut], deleted, *rest[cut:]],
                         MeshState(lanes_on=True, me=me))
                assert s.outputs.get("k0") == GOOD, ("deleted", me, cut)
