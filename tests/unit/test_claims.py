"""Claim, lease and retry rules of peer/jobs/claims.py: table tests over folded states."""

from __future__ import annotations

from typing import Any

import pytest

from peer.jobs import claims
from peer.jobs.claims import AttemptKey, Standing
from peer.log import ChunkState, Event, EventType, FailureKind, MeshState, fold
from peer.rendezvous import rendezvous

SPLIT = ("p0", 2)  # the TASK_SPLIT below is p0's second event
OTHER_SPLIT = ("p1", 1)


class Log:
    """Events of one story, with increasing HLCs, folded on demand."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.seqs: dict[str, int] = {}

    def add(self, origin: str, typ: EventType, **payload: Any) -> Event:
        seq = self.seqs[origin] = self.seqs.get(origin, 0) + 1
        ev = Event(origin, seq, 100 + len(self.events), typ, payload)
        self.events.append(ev)
        return ev

    def job(self, chunks: int = 1) -> Log:
        self.add("p0", EventType.JOB_SUBMITTED, job="j", workflow={"name": "w", "tasks": [
            {"name": "t", "call": "T_WRITE", "params": {}, "depends": []}]})
        self.add("p0", EventType.TASK_SPLIT, job="j", task="t", input=None,
                 chunks=[[] for _ in range(chunks)])
        return self

    def claim(self, origin: str, attempt: int = 0, chunk: int = 0,
              split: tuple[str, int] = SPLIT) -> Event:
        return self.add(origin, EventType.CLAIM, job="j", task="t", chunk=chunk,
                        attempt=attempt, split=list(split))

    def fail(self, origin: str, kind: str, attempt: int = 0, chunk: int = 0) -> Event:
        return self.add(origin, EventType.CHUNK_FAILED, job="j", task="t", chunk=chunk,
                        attempt=attempt, split=list(SPLIT), kind=kind, error="x")

    def done(self, origin: str, attempt: int = 0, chunk: int = 0) -> Event:
        return self.add(origin, EventType.CHUNK_DONE, job="j", task="t", chunk=chunk,
                        attempt=attempt, split=list(SPLIT), output="bafyout", log="", s=0.1)

    def state(self) -> MeshState:
        return fold(self.events)


def failures(*kinds: str) -> dict[int, Event]:
    return {a: Event("p", a + 1, a, EventType.CHUNK_FAILED, {
        "job": "j", "task": "t", "split": list(SPLIT), "chunk": 0, "attempt": a, "kind": k,
        "error": "x"}) for a, k in enumerate(kinds)}


# -- retry and exhaustion ------------------------------------------------------------------
@pytest.mark.parametrize(("kind", "retryable"), [
    (FailureKind.ERROR, False), (FailureKind.CANCELLED, False), (FailureKind.CRASH, True),
    (FailureKind.TIMEOUT, True), (FailureKind.MEMORY, True), (FailureKind.LEASE, True),
    (FailureKind.LOST, True), (FailureKind.FETCH, True), ("bogus", False), (None, False)])
def test_retryable(kind: str | None, retryable: bool) -> None:
    assert claims.retryable(kind) is retryable


@pytest.mark.parametrize(("kinds", "max_attempts", "exhausted"), [
    ((), 3, False),
    (("crash",), 3, False),
    (("crash", "lease"), 3, False),
    (("crash", "lease", "timeout"), 3, True),  # max_attempts failures
    (("crash",), 1, True),
    (("error",), 3, True),  # the task itself failed: not retried
    (("crash", "cancelled"), 3, True),
    (("error", "crash"), 3, False),  # only the last failure's kind counts
])
def test_chunk_exhausted(kinds: tuple[str, ...], max_attempts: int, exhausted: bool) -> None:
    assert claims.chunk_exhausted(failures(*kinds), max_attempts) is exhausted


def _standing(build: str) -> tuple[Standing, str | None, int]:
    log = Log().job()
    if build == "fresh":
        pass
    elif build == "claimed":
        log.claim("p2")
        log.claim("p1")
    elif build == "claimed on a losing split":
        log.claim("p1", split=OTHER_SPLIT)
    elif build == "failed, retryable":
        log.claim("p1")
        log.fail("p1", "crash")
    elif build == "failed, reclaimed":
        log.claim("p1")
        log.fail("p1", "crash")
        log.claim("p2", attempt=1)
    elif build == "failed for good":
        log.claim("p1")
        log.fail("p1", "error")
    elif build == "done":
        log.claim("p1")
        log.done("p1")
    c = log.state().chunk("j", "t", 0)
    where, holder = claims.standing(c, SPLIT, 3)
    return where, holder.origin if holder else None, c.attempt


@pytest.mark.parametrize(("build", "where", "holder", "attempt"), [
    ("fresh", Standing.OPEN, None, 0),
    ("claimed", Standing.HELD, "p2", 0),  # the earliest claim wins
    ("claimed on a losing split", Standing.OPEN, None, 0),
    ("failed, retryable", Standing.OPEN, None, 1),
    ("failed, reclaimed", Standing.HELD, "p2", 1),
    ("failed for good", Standing.SETTLED, None, 1),
    ("done", Standing.SETTLED, None, 0),
])
def test_standing(build: str, where: Standing, holder: str | None, attempt: int) -> None:
    assert _standing(build) == (where, holder, attempt)


def test_the_winning_claim_is_the_same_whatever_the_arrival_order() -> None:
    log = Log().job()
    log.claim("p2")
    log.claim("p1")
    forward = log.state().chunk("j", "t", 0).winner(0, SPLIT)
    backward = fold(reversed(log.events)).chunk("j", "t", 0).winner(0, SPLIT)
    assert forward is not None and backward is not None
    assert forward.id == backward.id == ("p2", 1)


@pytest.mark.parametrize(("story", "status"), [
    ([], "pending"),
    ([("claim", "p1")], "running"),
    ([("claim", "p1"), ("fail", "crash")], "pending"),  # waiting for attempt 1
    ([("claim", "p1"), ("fail", "error")], "failed"),
    ([("claim", "p1"), ("done", "")], "pending"),  # chunk 1 still open
    ([("cancel", "")], "cancelled"),
    ([("task_done", "")], "done"),
])
def test_task_status(story: list[tuple[str, str]], status: str) -> None:
    log = Log().job(chunks=2)
    for what, arg in story:
        if what == "claim":
            log.claim(arg)
        elif what == "fail":
            log.fail("p1", arg)
        elif what == "done":
            log.done("p1")
        elif what == "cancel":
            log.add("p3", EventType.JOB_CANCELLED, job="j", reason="r")
        elif what == "task_done":
            log.add("p1", EventType.TASK_DONE, job="j", task="t", output="bafy", key=None,
                    cached=True)
    state = log.state()
    assert claims.task_status(state, "j", "t", 3) == status
    assert claims.task_failed(state, "j", "t", 3) is (status == "failed")


def test_task_status_without_a_split_is_pending() -> None:
    assert claims.task_status(MeshState(), "j", "t", 3) == "pending"
    assert claims.task_failed(MeshState(), "j", "t", 3) is False


@pytest.mark.parametrize("story", [
    [("claim", "p1", 0), ("fail", "error", 0), ("done", "", 0)],  # a later done settles it
    [("claim", "p1", 1), ("fail", "error", 1)],  # the second chunk failed for good
    [("fail", "crash", 0), ("fail", "crash", 0), ("fail", "crash", 0)],  # 3 attempts
    [("fail", "crash", 0), ("fail", "crash", 0)],
    [("claim", "p2", 0), ("claim", "p1", 1), ("done", "", 0)],
    [("fail", "error", 0), ("cancel", "", 0)],
    [("fail", "error", 0), ("task_done", "", 0)],
])
def test_task_failed_says_what_task_status_says(story: list[tuple[str, str, int]]) -> None:
    """Failed, running, pending and settled tasks: the same answer, and the same chunk
    entries made in the fold's table (each asks every chunk of the split)."""
    log = Log().job(chunks=2)
    attempt = 0
    for what, arg, chunk in story:
        if what == "claim":
            log.claim(arg, attempt=attempt, chunk=chunk)
        elif what == "fail":
            log.fail("p1", arg, attempt=attempt, chunk=chunk)
            attempt += 1
        elif what == "done":
            log.done("p1", attempt=attempt, chunk=chunk)
        elif what == "cancel":
            log.add("p3", EventType.JOB_CANCELLED, job="j", reason="r")
        elif what == "task_done":
            log.add("p1", EventType.TASK_DONE, job="j", task="t", output="bafy", key=None,
                    cached=True)
    for max_attempts in (1, 2, 3):
        a, b = log.state(), log.state()
        status = claims.task_status(a, "j", "t", max_attempts)
        assert claims.task_failed(b, "j", "t", max_attempts) is (status == "failed")
        assert set(a.chunks) == set(b.chunks)


# -- ranking and the stagger -----------------------------------------------------------------
def _info(calls: tuple[str, ...] = ("C",), free: int = 1) -> dict[str, Any]:
    return {"calls": list(calls), "free_slots": free}


SPLIT_EV = Event("ps", 1, 1, EventType.TASK_SPLIT, {"job": "j", "task": "t", "input": "bafyin",
                                                    "chunks": [[]]})


@pytest.mark.parametrize(("peers", "holders", "expect"), [
    # no holder: the splitter first, then rendezvous order of the others (me included)
    ({"ps": _info(), "a": _info(), "b": _info()}, set(),
     ["ps", *rendezvous("u", ["a", "b", "me"])]),
    # holders first (by rendezvous), then the splitter, then the others
    ({"ps": _info(), "a": _info(), "b": _info()}, {"b", "me"},
     [*rendezvous("u", ["b", "me"]), "ps", "a"]),
    # a splitter that holds the input is ranked among the holders
    ({"ps": _info(), "a": _info()}, {"ps", "a"}, [*rendezvous("u", ["ps", "a"]), "me"]),
    # peers without the call or a free slot are left out; the splitter too
    ({"ps": _info(free=0), "a": _info(calls=("D",)), "b": _info()}, set(),
     rendezvous("u", ["b", "me"])),
    # alone
    ({}, set(), ["me"]),
])
def test_candidates(peers: dict[str, Any], holders: set[str], expect: list[str]) -> None:
    assert claims.candidates("u", "C", SPLIT_EV, "me", peers, holders) == expect


def test_candidates_leave_out_peers_the_log_shows_full() -> None:
    # a holder whose last heartbeat still says free, but whose claims fill its slots, is
    # not waited for: the others rank as if it had reported no free slot
    peers = {"ps": _info(), "a": _info(), "b": _info()}
    assert claims.candidates("u", "C", SPLIT_EV, "me", peers, {"b"}, full={"b"}) == [
        "ps", *rendezvous("u", ["a", "me"])]
    assert claims.candidates("u", "C", SPLIT_EV, "me", peers, {"b"}, full={"ps", "b"}) == (
        rendezvous("u", ["a", "me"]))


def _slots(n: int) -> dict[str, Any]:
    return {"calls": ["C"], "free_slots": n, "slots": n}


def test_full_peers_count_open_winning_claims_against_slots() -> None:
    log = Log().job(chunks=5)
    log.claim("p1", chunk=0)  # p1 (1 slot): one open claim, full
    log.claim("p2", chunk=1)  # p2 (2 slots): one open claim (its other one is done)
    log.claim("p2", chunk=2)
    log.done("p2", chunk=2)
    log.claim("p1", chunk=3)  # p3's claim loses to p1's earlier one
    log.claim("p3", chunk=3)
    log.claim("p4", chunk=4)  # p4 failed its attempt 0: its claim is not held any more
    log.fail("p4", FailureKind.ERROR.value, chunk=4)
    st = log.state()
    held = [AttemptKey("j", "t", i, 0) for i in range(5)]
    peers = {"p1": _slots(1), "p2": _slots(2), "p3": _slots(1), "p4": _slots(1)}
    assert claims.full_peers(st, held, "me", peers) == {"p1"}
    assert claims.full_peers(st, held, "p1", peers) == set()  # ours are not counted
    assert claims.full_peers(st, held, "me", {"p2": _slots(2)}) == set()  # p1 not live
    assert claims.full_peers(st, held[:1], "me", peers) == {"p1"}
    assert claims.full_peers(st, [], "me", peers) == set()


@pytest.mark.parametrize(("rank", "waited_s", "due"), [
    (0, 0.0, True), (1, 0.0, False), (1, 0.049, False), (1, 0.05, True), (2, 0.09, False),
    (2, 0.1, True), (2, 5.0, True)])
def test_turn_due_after_rank_times_stagger(rank: int, waited_s: float, due: bool) -> None:
    ranked = [f"p{i}" for i in range(3)]
    assert claims.turn_due(ranked, f"p{rank}", 0.0, waited_s, 0.05) is due


@pytest.mark.parametrize(("heard_s", "now_s", "lapsed"), [
    (0.0, 0.0, False), (0.0, 9.99, False), (0.0, 10.0, False), (0.0, 10.01, True),
    (5.0, 14.0, False), (5.0, 15.5, True)])
def test_lease_lapses_after_lease_s_of_silence(heard_s: float, now_s: float,
                                               lapsed: bool) -> None:
    assert claims.lease_lapsed(heard_s, now_s, 10.0) is lapsed


def _claim_ev(origin: str) -> Event:
    return Event(origin, 1, 1, EventType.CLAIM, {"job": "j", "task": "t", "chunk": 0,
                                                 "attempt": 0, "split": list(SPLIT)})


@pytest.mark.parametrize(("run_split", "winner", "dup"), [
    (SPLIT, None, False),  # no claim heard yet
    (SPLIT, "me", False),  # ours won
    (SPLIT, "p1", True),  # another's won
    (OTHER_SPLIT, None, True),  # our split lost
    (OTHER_SPLIT, "me", True),
])
def test_duplicate(run_split: tuple[str, int], winner: str | None, dup: bool) -> None:
    w = _claim_ev(winner) if winner else None
    assert claims.duplicate(run_split, SPLIT, w, "me") is dup


# -- payloads --------------------------------------------------------------------------------
AK = AttemptKey("j", "t", 3, 1)


def test_attempt_key_unit_is_the_run_key() -> None:
    assert AK.unit == "j/t/3/1"


def test_claim_payload_keeps_its_wire_form() -> None:
    assert list(claims.claim(AK, SPLIT).items()) == [
        ("job", "j"), ("task", "t"), ("chunk", 3), ("attempt", 1), ("split", ["p0", 2])]


def test_lease_failure_payload_keeps_its_wire_form() -> None:
    p = claims.lease_failure(AK, _claim_ev("p7"), 10.0)
    assert list(p) == ["job", "task", "split", "chunk", "attempt", "kind", "error"]
    assert (p["split"], p["chunk"], p["attempt"], p["kind"]) == (["p0", 2], 3, 1, "lease")
    assert type(p["kind"]) is str and "p7" in p["error"] and "10 s" in p["error"]


def test_restart_failures_are_our_open_claims_of_winning_splits() -> None:
    log = Log().job(chunks=4)
    log.claim("me", chunk=0)  # open: lost
    log.claim("me", chunk=1)
    log.done("me", chunk=1)  # done: kept
    log.claim("p1", chunk=2)  # another's
    log.claim("me", chunk=3, split=OTHER_SPLIT)  # on a losing split
    log.claim("p1", chunk=3)
    log.claim("me", chunk=3, attempt=1)  # attempt 0 never failed: not the current one
    out = claims.restart_failures(log.state(), "me")
    assert out == [{"job": "j", "task": "t", "split": ["p0", 2], "chunk": 0, "attempt": 0,
                    "kind": "lost", "error": "the peer restarted while running this chunk",
                    "counts": False}]  # a restart does not count against the attempts
    assert list(out[0]) == ["job", "task", "split", "chunk", "attempt", "kind", "error",
                            "counts"]


def test_restart_failures_fail_the_current_attempt() -> None:
    log = Log().job()
    log.claim("p1")
    log.fail("p1", "crash")
    log.claim("me", attempt=1)
    assert [(p["chunk"], p["attempt"]) for p in claims.restart_failures(log.state(), "me")] == \
        [(0, 1)]


@pytest.mark.parametrize(("done", "expect"), [
    ((), 0), ((0,), 1), ((0, 1), None)])
def test_task_failure_fails_the_first_unfinished_chunk(done: tuple[int, ...],
                                                       expect: int | None) -> None:
    log = Log().job(chunks=2)
    for i in done:
        log.done("p1", chunk=i)
    p = claims.task_failure(log.state(), "j", "t", "boom")
    if expect is None:
        assert p is None
        return
    assert p is not None
    assert list(p) == ["job", "task", "split", "chunk", "attempt", "error", "kind"]
    assert (p["chunk"], p["attempt"], p["kind"], p["error"]) == (expect, 0, "error", "boom")


def test_task_failure_without_a_split_is_none() -> None:
    assert claims.task_failure(MeshState(), "j", "t", "boom") is None


def test_an_unknown_chunk_has_no_claims() -> None:
    assert claims.standing(ChunkState(), None, 3) == (Standing.OPEN, None)


# -- self-repair (issue 11 item 5) --------------------------------------------------------------
def _uncounted(n: int, counted_kinds: tuple[str, ...] = ()) -> dict[int, Event]:
    fs = failures(*(["lease"] * n), *counted_kinds)
    for a, ev in fs.items():
        if a < n:
            ev.payload["counts"] = False
    return fs


@pytest.mark.parametrize(("n_uncounted", "counted_kinds", "exhausted"), [
    (2, (), False), (5, ("crash", "crash"), False), (5, ("crash", "crash", "crash"), True),
    (claims.MAX_UNCOUNTED + 2, (), False), (claims.MAX_UNCOUNTED + 3, (), True)])
def test_failures_of_departed_holders_do_not_count_up_to_a_bound(
        n_uncounted: int, counted_kinds: tuple[str, ...], exhausted: bool) -> None:
    assert claims.chunk_exhausted(_uncounted(n_uncounted, counted_kinds), 3) is exhausted


def test_a_lease_failure_of_a_departed_holder_is_marked_not_counted() -> None:
    p = claims.lease_failure(AK, _claim_ev("p7"), 10.0, left=True)
    assert p["counts"] is False and p["kind"] == "lease" and "left" in p["error"]
    assert "counts" not in claims.lease_failure(AK, _claim_ev("p7"), 10.0)


def test_a_reopen_failure_undoes_a_done_chunk_until_a_later_attempt_is_done() -> None:
    log = Log().job()
    log.claim("p1")
    log.done("p1")
    assert claims.standing(log.state().chunk("j", "t", 0), SPLIT, 3)[0] is Standing.SETTLED
    log.add("p2", EventType.CHUNK_FAILED, **claims.reopen_failure("j", "t", SPLIT, 0, 0, 2))
    c = log.state().chunk("j", "t", 0)
    assert claims.chunk_done(c) is None and claims.reopened(c)
    assert claims.standing(c, SPLIT, 3) == (Standing.OPEN, None)
    assert claims.task_status(log.state(), "j", "t", 3) == "pending"
    log.claim("p2", attempt=1)
    redo = log.done("p2", attempt=1)
    for order in (log.events, list(reversed(log.events))):  # the fold is order-independent
        c = fold(order).chunk("j", "t", 0)
        assert claims.chunk_done(c) == redo
        assert claims.standing(c, SPLIT, 3)[0] is Standing.SETTLED


def test_a_plain_late_failure_does_not_undo_a_done_chunk() -> None:
    log = Log().job()
    log.claim("p1")
    done = log.done("p1")
    log.fail("p2", "lease")  # a lease that lapsed while the outcome was on its way
    assert claims.chunk_done(log.state().chunk("j", "t", 0)) == done
