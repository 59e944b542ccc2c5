"""Job ids bound to their submitter (session 46, helper f; peer.log.ids): "j", 12 hex digits,
"." and the submitter's self-certifying peer id. A JOB_SUBMITTED of such an id from any other
origin is refused at the door and skipped by the fold (stored rows), by the event alone: a
rival JOB_SUBMITTED (backdated, or naming `members` of a plain job: session 46 helper a,
review r1 F2) changes nothing on any peer, in any order. Unbound ids stay accepted, and
unprotected; a peer makes bound ids only while every member announces BOUND_FEATURE. The
real fold and door, real data dirs in tmp_path, a fake gossip; no sleeps."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from peer.config import PeerConfig
from peer.log import Event, EventType, MeshState, Revoke, fold
from peer.log.clock import HLC
from peer.log.door import Door, DoorConfig
from peer.log.ids import (
    BOUND_FEATURE,
    JOB_HEX_DIGITS,
    bind,
    is_job_id,
    new_job_id,
    submitter_of,
    submitter_problem,
)
from peer.log.lanes import lane, lane_of
from peer.node import Node
from tests.unit.api_client import api_client
from tests.unit.test_lanes_hostile import GOOD, WF
from tests.unit.test_lanes_submission import FEATURES, _gossip, _live, _member_event, _node

H, R, X = "a1" * 10, "b2" * 10, "c3" * 10  # home (the submitter), replica, a hostile member
J = bind("j" + "0" * 11 + "1", H)
SUB = Event(H, 1, 1000, EventType.JOB_SUBMITTED, {"job": J, "workflow": WF, "members": [H, R]})
PLAIN = Event(H, 1, 1000, EventType.JOB_SUBMITTED, {"job": J, "workflow": WF})
BOUND = [*FEATURES, BOUND_FEATURE]
HEX = st.text("0123456789abcdef", min_size=1, max_size=24)


def _hex(n: int) -> st.SearchStrategy[str]:
    return st.text("0123456789abcdef", min_size=n, max_size=n)


# -- the form ----------------------------------------------------------------------------------
@given(_hex(JOB_HEX_DIGITS), _hex(20), _hex(16))
def test_a_bound_id_names_its_submitter_and_has_lanes(digits: str, peer: str, old: str) -> None:
    job = bind("j" + digits, peer)
    assert job == f"j{digits}.{peer}" and is_job_id(job) and submitter_of(job) == peer
    assert lane_of(lane(old, job)) == (old, job) and lane_of(lane(peer, job)) == (peer, job)
    assert submitter_of("j" + digits) is None and is_job_id("j" + digits)  # unbound: as before
    assert submitter_problem(peer, job) is None and submitter_problem(old, job) is not None


@given(HEX, HEX)
def test_nothing_else_is_read_as_a_bound_id(a: str, b: str) -> None:
    for s in (f"j{a}.{b}", f"j{a}.{b}.{b}", f"x{a}.{b}", f"j{a}/{b}", f"J{a}.{b}"):
        if not (len(a) == JOB_HEX_DIGITS and len(b) == 20 and s == f"j{a}.{b}"):
            assert submitter_of(s) is None and submitter_problem("z", s) is None


def test_only_a_self_certifying_peer_id_binds_a_job_id() -> None:
    """A peer id of 0.1.0 (16 hex digits) certifies no key: another member could claim it."""
    for job, peer in (("j" + "0" * 12, "ab" * 8), ("j" + "0" * 11, H), (J, H)):
        try:
            bind(job, peer)
        except ValueError as e:
            assert "no job id binds" in str(e)
        else:
            raise AssertionError(f"bound {job} to {peer}")


def _draws(*hexes: str) -> Callable[[int], str]:
    it: Iterator[str] = iter(hexes)
    return lambda n: next(it)


def test_a_bound_id_that_is_taken_is_drawn_again() -> None:
    taken = {bind("j" + "0" * 12, H)}
    job = new_job_id(taken.__contains__, _draws("0" * 12, "1" * 12), submitter=H)
    assert job == bind("j" + "1" * 12, H)


# -- the door ----------------------------------------------------------------------------------
def rival(hlc: int, members: list[str] | None, origin: str = X) -> Event:
    """A JOB_SUBMITTED of `J` (its id read off the real one's) from `origin`, at `hlc`."""
    extra = {} if members is None else {"members": members}
    return Event(origin, 5, hlc, EventType.JOB_SUBMITTED, {"job": J, "workflow": WF, **extra})


def test_the_door_refuses_a_job_submitted_of_a_bound_id_from_another_origin() -> None:
    """(On 061057e the door admitted it: any member's JOB_SUBMITTED of any id.) Counted as a
    refusal of its own reason, under the rival's origin; the submitter's own, and a rival of
    an unbound id (open: docs/security.md), are admitted. A stored one is left to the fold."""
    d = Door(DoorConfig(), HLC(), store=None)  # type: ignore[arg-type]
    why = d.problem(rival(900, [X]))
    assert why is not None and why.startswith("job_submitter: ") and H in why and X in why
    d.refuse(X, why)
    assert d.refused.by_reason == {"job_submitter": 1} and d.refused.by_origin == {X: 1}
    assert d.problem(SUB) is None and d.problem(rival(900, [X]), stored=True) is None
    unbound = Event(X, 5, 900, EventType.JOB_SUBMITTED, {"job": "j" + "0" * 12, "workflow": WF})
    assert d.problem(unbound) is None


# -- the fold: a rival changes nothing, in any order --------------------------------------------
def _td(origin: str, seq: int, hlc: int) -> Event:
    return Event(origin, seq, hlc, EventType.TASK_DONE,
                 {"job": J, "task": "t0", "output": GOOD, "cached": False, "key": "k0"})


def _ended(origin: str, seq: int, hlc: int, out: Event) -> Event:
    return Event(origin, seq, hlc, EventType.JOB_ENDED, {
        "job": J, "state": "done", "n_tasks": 1, "end": hlc,
        "outputs": {"t0": ["k0", GOOD, out.hlc, out.origin, out.seq]}, "producers": {},
        "failed": {}, "digest": "0" * 32})


def _view(s: MeshState) -> tuple[object, ...]:
    return (s.jobs[J].id, dict(s.members_of), s.ended.get(J) and s.ended[J].id,
            {k: v.id for k, v in s.task_done.items()}, s.runs(J),
            {j: sorted(e.id for e in held) for j, held in s._untasked.items()})


@settings(deadline=None)  # (720 folds an example: 630 ms on a loaded host, over the 200 ms)
@given(st.sampled_from([None, [X], [X, H, R]]), st.sampled_from([500, 1100]),
       st.sampled_from([H, R, X]))
def test_a_rival_of_a_bound_id_changes_nothing_on_any_peer_in_any_order(
        members: list[str] | None, hlc: int, me: str) -> None:
    """(With an unbound id, test_lanes_hostile.py: a backdated rival wins the job on every
    peer, and its end is the job's.) With `X`'s task event and end (held, as without the
    rival: `X` is no member), in all 720 orders: the state of the fold without the rival."""
    real, real_end = _td(lane(R, J), 1, 2000), _ended(H, 2, 3000, _td(lane(R, J), 1, 2000))
    x_done, x_end = _td(lane(X, J), 1, 1500), _ended(X, 6, 2500, _td(lane(X, J), 1, 1500))
    without = [SUB, real, real_end, x_done, x_end]
    want = _view(fold(list(without), MeshState(lanes_on=True, me=me)))
    assert want[0] == SUB.id and want[2] == real_end.id and want[1] == {J: {H, R}}
    for order in itertools.permutations([*without, rival(hlc, members)]):
        assert _view(fold(list(order), MeshState(lanes_on=True, me=me))) == want


def test_a_rival_naming_members_of_a_plain_bound_job_does_not_change_its_fold() -> None:
    """What test_lanes_hostile.py records as open for unbound ids (a plain job made a lanes
    job of the rival's peers, a home's task event counted by order): closed here."""
    done_ = _td(H, 2, 2000)
    views = [_view(fold(list(order), MeshState(lanes_on=True, me=H)))
             for order in itertools.permutations([PLAIN, done_, rival(500, [X])])]
    assert all(v == views[0] for v in views)
    s = fold([PLAIN, rival(500, [X]), done_], MeshState(lanes_on=True, me=H))
    assert s.task_done[(J, "t0")].id == done_.id and J not in s.members_of and s.runs(J)


# -- the submitter: bound ids under the flag rule ------------------------------------------------
def test_new_ids_are_bound_only_while_every_peer_and_member_announce_the_feature(
        tmp_path: Path, opened: list[Node]) -> None:
    """`Node.new_job_id`: bound to us while every live peer and every member the fold knows
    (away or not, until revoked) announce BOUND_FEATURE; unbound (as before) while one of
    the previous release is live or known."""
    node = _node(tmp_path / "a")
    opened.append(node)
    me = node.peer_id
    assert submitter_of(node.new_job_id()) is None  # our own MEMBER (the test's) lacks it
    node.emit(EventType.MEMBER, {**node.capabilities(), "features": BOUND})
    assert submitter_of(node.new_job_id()) == me
    _live(node, "1" * 20, features=BOUND)
    assert submitter_of(node.new_job_id()) == me
    _live(node, "2" * 20, features=FEATURES)  # one live peer of the previous release
    assert submitter_of(node.new_job_id()) is None
    del _gossip(node).live["2" * 20]
    node.state.apply(_member_event("2" * 20, FEATURES))  # a member of it, away now
    assert submitter_of(node.new_job_id()) is None
    node.state.apply(Event(me, 99, 1 << 40, EventType.REVOKE,
                           {"peer": "2" * 20, "after": 1, "reason": "gone"}))
    assert submitter_of(node.new_job_id()) == me


async def test_a_submission_of_a_bound_mesh_is_named_by_a_bound_id_the_api_serves(
        tmp_path: Path, opened: list[Node]) -> None:
    """POST /api/jobs answers a bound id, GET /api/jobs/<id> serves it; the job is a lanes
    job (its lanes named by the bound id); with a peer of the previous release live, the
    next job's id is unbound, as before."""
    node = _node(tmp_path / "a")
    opened.append(node)
    node.emit(EventType.MEMBER, {**node.capabilities(), "features": BOUND})
    _live(node, "1" * 20, features=BOUND)
    _gossip(node).heads = {"1" * 20: {node.peer_id: 99}}
    async with api_client(node) as client:
        r = await client.post("/api/jobs", json=WF | {"tasks": [
            {"name": "t0", "call": "ECHO", "params": {"text": "x"}, "depends": []}]})
        assert r.status == 201, await r.text()
        bound = (await r.json())["job"]
        assert submitter_of(bound) == node.peer_id and node.state.members_of[bound]
        got = await client.get(f"/api/jobs/{bound}")
        assert got.status == 200 and (await got.json())["id"] == bound
        _live(node, "2" * 20, features=FEATURES)
        r = await client.post("/api/jobs", json=WF | {"tasks": [
            {"name": "t0", "call": "ECHO", "params": {"text": "x"}, "depends": []}]})
        unbound = (await r.json())["job"]
        assert r.status == 201 and is_job_id(unbound) and submitter_of(unbound) is None
    assert node.state.knows_job(bound) and node.state.knows_job(unbound)


# -- lanes, compaction, the job index, deletion: keyed by a bound id ------------------------------
def test_a_bound_lanes_job_is_compacted_indexed_deleted_and_known_after_a_restart(
        tmp_path: Path) -> None:
    """A lanes job named by a bound id (its lane "<peer>/j<hex>.<peer>"): its lanes leave the
    log once it is compacted, its record is the job index's under its id, a straggler of
    its lane is refused (`lane_closed`), a rival of it (a stored row) is skipped after a
    restart, and its JOB_DELETED deletes it; the peer knows it throughout."""
    from tests.unit.test_lanes_compact import OUT, TASKS, WORKFLOW, _end, _lane_rows

    node = Node(PeerConfig(data_dir=tmp_path, slots=1, mdns=False, compact_recent_tasks=0),
                lanes=True)
    try:
        node.listeners[:] = [node.compactor.note]
        node.live_peers = dict  # type: ignore[method-assign,assignment]
        me = node.peer_id
        job = bind("j" + "b" * 12, me)
        node.emit(EventType.JOB_SUBMITTED, {"job": job, "workflow": WORKFLOW, "members": [me]})
        for t in TASKS:
            node.emit(EventType.TASK_DONE, {"job": job, "task": t, "output": OUT[t]})
        node.flush()
        assert _lane_rows(node) == [(lane(me, job), 1), (lane(me, job), 2)]
        _end(node, job)
        assert node.catchup.compact().jobs == [job] and _lane_rows(node) == []
        assert node.index.record(job)["members"] == [me]  # type: ignore[index]
        late = Event(lane(me, job), 3, node.hlc.now(), EventType.CLAIM, {
            "job": job, "task": "t0", "split": ["x", 1], "chunk": 0, "attempt": 1})
        assert node.merge([late]) == [] and node.door.refused.by_reason == {"lane_closed": 1}
        node.janitor.delete_job(job)
        node.flush()
        node.log.close()
        node = Node(PeerConfig(data_dir=tmp_path, slots=1, mdns=False,
                               compact_recent_tasks=0), lanes=True)
        assert node.state.knows_job(job) and job in node.state.deleted
        assert job not in node.state.jobs and _lane_rows(node) == []
    finally:
        node.log.close()


def test_a_stored_rival_of_a_bound_id_is_skipped_at_replay(tmp_path: Path) -> None:
    """A rival row on disk (written by a release that did not check, or by hand) is held,
    never folded: after a restart the job is its submitter's."""
    node = Node(PeerConfig(data_dir=tmp_path, slots=1, mdns=False), lanes=True)
    try:
        sub = node.emit(EventType.JOB_SUBMITTED, {"job": bind("j" + "c" * 12, node.peer_id),
                                                  "workflow": WF})
        node.flush()
        job = sub.payload["job"]
        bad = Event(X, 1, 1000, EventType.JOB_SUBMITTED, {"job": job, "workflow": WF})
        assert node.merge([bad]) == [] and node.door.refused.by_reason == {"job_submitter": 1}
        node.log.append([bad])  # (past the door: as a row of an older release's log)
        node.log.close()
        node = Node(PeerConfig(data_dir=tmp_path, slots=1, mdns=False), lanes=True)
        assert node.state.jobs[job].id == sub.id
    finally:
        node.log.close()


def test_a_revoke_names_a_bound_jobs_lane_bound() -> None:
    """REVOKE's `lanes_after` is keyed by job ids: a bound one is read (the previous release
    refuses such a REVOKE: its `is_job_id` knows no bound id; no bound id is made while a
    member of it is known and not revoked)."""
    ev = Event(H, 2, 2000, EventType.REVOKE,
               {"peer": X, "after": 3, "reason": "r", "lanes_after": {J: 4}})
    assert dict(ev.body_as(Revoke).lanes_after) == {J: 4}
