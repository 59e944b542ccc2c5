"""The door's rules for lanes (peer/log/door.py, peer/log/lanes.py; design
docs/design/partial-replication.md section 4): a lane holds its job's task events only, of
its own job (every part's, for a TURN), and only a member of the job takes them; with lanes
not enabled (the default while LANES_FEATURE is not announced) every lane event is refused,
counted, and never stored nor folded. A fake log store and a fake wall clock."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from peer.log import HLC, Door, DoorConfig, Event, EventLog, EventType, MeshState
from peer.log.door import MemberOf
from peer.log.lanes import lane, owned_by

P, Q = "0123456789abcdef0123", "fedcba9876543210"
JOB, OTHER_JOB = "j0123456789ab", "jba9876543210"
LANE = lane(P, JOB)
WALL_MS = 1_000_000
HLC_NOW = WALL_MS << 16
CID = "bafkreiaheqdfvsfwin2qysg2nd3n4upuu7oyiwtnuvai2oi3lesbeuh42q"


def chunk(job: str = JOB) -> dict[str, Any]:
    return {"job": job, "task": "t", "split": [LANE, 1], "chunk": 0, "attempt": 0}


def event(typ: EventType, payload: dict[str, Any], origin: str = LANE, seq: int = 1) -> Event:
    return Event(origin, seq, HLC_NOW, typ, payload)


def turn(*parts: tuple[EventType, dict[str, Any]], seq: int = 1) -> Event:
    return event(EventType.TURN, {"parts": [[int(t), p] for t, p in parts]}, seq=seq)


class FakeLog:
    """The LogStore the door needs: rows in a dict, the quarantine in a list."""

    path = Path("events.sqlite")

    def __init__(self, rows: Iterable[Event] = ()) -> None:
        self.rows = {e.id: e for e in rows}
        self.set_aside: list[tuple[tuple[str, int], str]] = []
        self.dropped: list[str] = []  # the origins `delete_origins` was given

    def load(self) -> Iterable[Event]:
        return list(self.rows.values())

    def quarantine(self, bad: Sequence[tuple[tuple[str, int], str]]) -> None:
        self.set_aside += bad
        for ev_id, _ in bad:
            del self.rows[ev_id]

    def quarantined(self) -> int:
        return len(self.set_aside)

    def quarantine_health(self) -> Mapping[str, int]:
        return {}

    def quarantined_jobs(self, typ: int) -> set[str] | None:
        return set()  # (what `quarantine` set aside is not read back here)

    def quarantined_max_seqs(self, own: str, below: int) -> dict[str, int]:
        out: dict[str, int] = {}
        for (o, s), _ in self.set_aside:
            if owned_by(o, own) and out.get(o, 0) < s <= below:
                out[o] = s
        return out

    def delete(self, ids: Iterable[tuple[str, int]]) -> object:
        return [self.rows.pop(i, None) for i in ids]

    def delete_origins(self, origins: Iterable[str]) -> int:
        self.dropped += origins
        gone = [i for i in self.rows if i[0] in self.dropped]
        for i in gone:
            del self.rows[i]
        return len(gone)

    def floors(self, own: str = "") -> dict[str, int]:
        return {}

    def set_floor(self, origin: str, seq: int) -> None:
        pass


def door(member_of: MemberOf | None = None, log: FakeLog | EventLog | None = None) -> Door:
    return Door(DoorConfig(), HLC(lambda: WALL_MS), log or FakeLog(), member_of=member_of)


def everywhere(job: str) -> bool:
    return True


def test_with_lanes_off_every_lane_event_is_refused_and_counted() -> None:
    """Lanes off (the door's default, no `member_of`; a --no-lanes peer): a lane event from a
    peer is dropped and counted `lanes_off`; the peer's own stream beside it is taken."""
    d = door()
    mesh = event(EventType.PROVIDE, {"cids": [CID]}, origin=P)
    lane_evs = [event(EventType.CLAIM, chunk()),
                turn((EventType.CLAIM, chunk()), (EventType.TASK_DONE,
                     {"job": JOB, "task": "t", "output": CID}), seq=2)]
    assert d.admit([*lane_evs, mesh]) == [mesh]
    assert d.refused.by_reason == {"lanes_off": 2} and d.refused.by_origin == {LANE: 2}
    assert d.problem(lane_evs[0], stored=True) is not None  # nor taken from disk
    # a text with a "/" that is not of the lane form is an origin as any other (refused, if
    # at all, by the keyring: no member may attest it)
    odd = event(EventType.PROVIDE, {"cids": [CID]}, origin="P/j0")
    assert d.admit([odd]) == [odd]


def test_a_member_takes_its_jobs_lane_events() -> None:
    d = door(lambda job: job == JOB)
    evs = [event(EventType.CLAIM, chunk()),
           event(EventType.PARTIAL, {"job": JOB, "task": "t", "output": CID, "items": 1,
                                     "of": 2}, seq=2),
           turn((EventType.TASK_SPLIT, {"job": JOB, "task": "t", "input": None,
                                        "chunks": [[]]}),
                (EventType.CHUNK_DONE, {**chunk(), "output": CID}), seq=3)]
    assert d.admit(evs) == evs and d.refused.total == 0


def test_a_lane_event_of_a_job_we_are_no_member_of_is_refused() -> None:
    d = door(lambda job: job == OTHER_JOB)
    assert d.admit([event(EventType.CLAIM, chunk())]) == []
    assert d.refused.by_reason == {"not_member": 1}


def test_a_lane_event_of_a_job_whose_lanes_were_dropped_is_refused_as_closed() -> None:
    """Once a job's lanes left the log here (`lane_closed`: compacted, its lanes forgotten),
    a straggling lane event of it is refused and counted `lane_closed`, a member's too; one
    read back from disk is not asked (as `not_member`); another job's lanes are taken."""
    d = Door(DoorConfig(), HLC(lambda: WALL_MS), FakeLog(), member_of=everywhere,
             lane_closed=lambda job: job == JOB)
    mine = event(EventType.CLAIM, chunk(OTHER_JOB), origin=lane(P, OTHER_JOB))
    assert d.admit([event(EventType.CLAIM, chunk()), mine]) == [mine]
    assert d.refused.by_reason == {"lane_closed": 1} and d.refused.by_origin == {P: 1}  # (its peer)
    assert d.problem(event(EventType.CLAIM, chunk()), stored=True) is None


@pytest.mark.parametrize(("typ", "payload"), [
    (EventType.MEMBER, {"name": "n", "http": "", "calls": [], "slots": 1, "cores": 1,
                        "mem_mb": 1, "gpu": False}),
    (EventType.REVOKE, {"peer": Q, "after": 3, "reason": "left"}),
    (EventType.PROVIDE, {"cids": [CID]}),
    (EventType.CACHE_PUT, {"cache": {"k": 1}}),
    (EventType.JOB_SUBMITTED, {"job": JOB, "workflow": {"tasks": [{"name": "t"}]}}),
    (EventType.JOB_ENDED, {"job": JOB, "state": "done", "n_tasks": 0, "end": 1,
                           "digest": "0" * 32}),
    (EventType.JOB_MEMBERS, {"job": JOB, "add": [Q]}),
    (EventType(200), {"x": 1}),  # a newer peer's type
])
def test_a_lane_holds_task_events_only(typ: EventType, payload: dict[str, Any]) -> None:
    """A MEMBER, REVOKE or any mesh-stream event in a lane is refused (`lane_type`), even of
    a job we are a member of, and before lanes are enabled it is named as what it is."""
    for d in (door(everywhere), door()):
        assert d.admit([event(typ, payload)]) == []
        assert d.refused.by_reason == {"lane_type": 1}


def test_a_lane_turn_holds_task_events_only() -> None:
    d = door(everywhere)
    bad = turn((EventType.CLAIM, chunk()), (EventType.CACHE_PUT, {"cache": {"k": 1}}))
    assert d.admit([bad]) == []
    assert d.refused.by_reason == {"lane_type": 1}
    assert "part 1 of a TURN" in (d.problem(bad) or "")


@pytest.mark.parametrize("bad", [
    event(EventType.CLAIM, chunk(OTHER_JOB)),
    event(EventType.TASK_DONE, {"job": OTHER_JOB, "task": "t", "output": CID}),
    turn((EventType.CLAIM, chunk()), (EventType.CHUNK_DONE, {**chunk(OTHER_JOB), "output": CID})),
    turn((EventType.CLAIM, chunk(OTHER_JOB)), (EventType.CLAIM, chunk())),
], ids=["claim", "task_done", "turn-second-part", "turn-first-part"])
def test_a_lane_event_of_another_job_is_refused(bad: Event) -> None:
    """Every part of a lane's event is of the lane's job (`lane_job`), whatever jobs we
    are a member of."""
    d = door(everywhere)
    assert d.admit([bad]) == []
    assert d.refused.by_reason == {"lane_job": 1}
    assert OTHER_JOB in (d.problem(bad) or "")


def test_replay_with_lanes_off_leaves_lane_rows_unfolded_on_disk_and_folds_the_rest() -> None:
    """A data dir holding lane rows (run with lanes on, started with --no-lanes): the rows
    stay on disk unfolded, to fold again once lanes are on (they went to the quarantine
    before, for good); the peer's other rows fold, it starts. A lane row that is no lane
    event is still set aside."""
    mesh = event(EventType.PROVIDE, {"cids": [CID]}, origin=P)
    odd = event(EventType.PROVIDE, {"cids": [CID]}, seq=3)
    rows = [event(EventType.CLAIM, chunk()), event(EventType.CLAIM, chunk(), seq=2), mesh, odd]
    log = FakeLog(rows)
    state = MeshState()
    assert door(log=log).replay(state, Q) == 1
    assert set(state.events) == {mesh.id} and LANE not in state.heads
    assert [(i, why.split(":")[0]) for i, why in log.set_aside] == [((LANE, 3), "lane_type")]


def test_replay_of_a_member_does_not_ask_membership() -> None:
    """On disk, a lane of a job is kept by its type and job alone: the job's membership is
    folded from the same rows (not yet known while they are checked)."""
    rows = [event(EventType.CLAIM, chunk()), event(EventType.MEMBER, {
        "name": "n", "http": "", "calls": [], "slots": 1, "cores": 1, "mem_mb": 1,
        "gpu": False}, seq=2)]
    log = FakeLog(rows)
    state = MeshState()
    assert door(lambda job: False, log).replay(state, Q) == 1
    assert [i for i, _ in log.set_aside] == [(LANE, 2)]


# -- JOB_MEMBERS (design section 3): a member adds anyone, a non-member only itself --------

R = "0123456789abcdef"  # no member of JOB


def members_door(adders: dict[str, list[str]]) -> Door:
    """A door with lanes on whose `adders` are the members of the jobs in `adders` (other
    jobs: none held)."""
    return Door(DoorConfig(), HLC(lambda: WALL_MS), FakeLog(), member_of=everywhere,
                adders=adders.get)


def add(add_: list[str], origin: str, job: str = JOB, seq: int = 1) -> Event:
    return event(EventType.JOB_MEMBERS, {"job": job, "add": add_}, origin=origin, seq=seq)


def test_a_member_may_add_anyone_and_a_non_member_only_itself() -> None:
    d = members_door({JOB: [P, Q]})
    ok = [add([R], P), add([R, Q], Q, seq=2), add([R], R)]
    assert d.admit(ok) == ok and d.refused.total == 0
    bad = [add([Q], R, seq=2), add([R, P], R, seq=3), add([P], R, seq=4)]
    assert d.admit(bad) == []
    assert d.refused.by_reason == {"members_add": 3} and d.refused.by_origin == {R: 3}
    assert "only itself" in (d.problem(bad[0]) or "")


def test_a_job_members_of_a_job_we_hold_no_lanes_submission_of_is_refused() -> None:
    """Not of a job we know (it comes again by anti-entropy once we do), nor of a job
    without `members` (a JOB_MEMBERS would make it a lanes job of a few peers)."""
    d = members_door({JOB: [P, Q]})
    assert d.admit([add([P], P, job=OTHER_JOB)]) == []
    assert d.refused.by_reason == {"members_job": 1}
    assert OTHER_JOB in (d.problem(add([P], P, job=OTHER_JOB)) or "")


def test_the_members_rule_is_not_asked_of_rows_on_disk_nor_with_lanes_off() -> None:
    """A stored JOB_MEMBERS passed when it came (replay checks rows before it folds their
    JOB_SUBMITTED); with lanes off it is held unfolded, as before."""
    bad = add([P], R)
    assert members_door({}).problem(bad, stored=True) is None
    assert door().admit([bad]) == [bad]
def test_with_lanes_on_lane_refusals_are_counted_under_the_lanes_peer() -> None:
    """One peer's lanes of many jobs are one origin of the refusal counters (they would fill
    the `max_origins_counted` origins with one job each, and the next peer's go to OTHER);
    with lanes off a lane is counted as any origin, as before."""
    jobs = [f"j{i:012x}" for i in range(100)]
    on, off = door(lambda job: False), door()
    for d in (on, off):
        d.admit([event(EventType.CLAIM, chunk(j), origin=lane(P, j)) for j in jobs])
        d.admit([event(EventType.CLAIM, chunk(JOB), origin=lane(Q, JOB))])
    assert on.refused.by_origin == {P: 100, Q: 1}
    assert on.refused.by_reason == {"not_member": 101}
    assert len(off.refused.by_origin) == DoorConfig().max_origins_counted + 1  # (OTHER)
    assert off.refused.by_origin[lane(P, jobs[0])] == 1


def test_replay_keeps_the_lane_rows_of_a_job_whose_submission_the_log_quarantined(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Review r3 N2: a JOB_SUBMITTED row that the log's own load sets aside (a damaged
    payload) was not counted: its compacted job's lane rows were deleted as orphans while
    the row sat in the quarantine, restorable, its lanes not. Kept now (its job cannot be
    read: no lane row is deleted, and the log says why), at this start and the next (it is
    still quarantined)."""
    caplog.set_level(logging.INFO, "banzai.log")
    log = EventLog(tmp_path / "e.sqlite")
    sub = event(EventType.JOB_SUBMITTED, {"job": JOB, "workflow": {"tasks": []}}, origin=P)
    log.append([sub, event(EventType.CLAIM, chunk())])
    log.db.execute("UPDATE events SET payload = ? WHERE origin = ? AND seq = ?",
                   ("{not json", *sub.id))
    for _ in range(2):  # this start, and the next
        state = MeshState()
        state.compacted |= {JOB}
        door(everywhere, log).replay(state, Q)
        assert log.quarantined() == 1
        assert [e.id for e in log.load()] == [(LANE, 1)]
    log.close()
    said = [r.getMessage() for r in caplog.records if "cannot be read" in r.getMessage()]
    assert len(said) == 2 and "of 1 jobs" in said[0]  # (once a start: review r2 L3)


def test_replay_keeps_the_lane_rows_of_a_compacted_job_whose_submission_is_set_aside() -> None:
    """Review r1 L2: a job compacted here whose JOB_SUBMITTED row on disk fails its checks
    at this start (damaged, or refused by a later release's check) goes to the quarantine,
    where it is kept and may be restored: its job is on disk, so its lane rows are no
    orphans (they were deleted with it counted as gone)."""
    bad = event(EventType.JOB_SUBMITTED, {"job": JOB, "workflow": {"tasks": []}}, origin=P)
    log = FakeLog([bad, event(EventType.CLAIM, chunk())])
    state = MeshState()
    state.compacted |= {JOB}
    d = door(everywhere, log)

    def refuse(ev: Event) -> None:
        raise ValueError("a workflow this release refuses")

    d.checks[EventType.JOB_SUBMITTED] = refuse
    d.replay(state, Q)
    assert [i for i, _ in log.set_aside] == [bad.id]
    assert (LANE, 1) in log.rows


@pytest.mark.parametrize("member_of", [None, everywhere])
def test_replay_drops_the_lanes_of_a_job_gone_from_the_log_whole(
        member_of: MemberOf | None) -> None:
    """Review r1 L3: the lane rows of a job compacted here whose JOB_SUBMITTED left the log
    (review r2 F2) leave it by their lane, whole (the store drops them by key range: no id
    of a row is held, lanes off as on), after a row of them that fails its checks went to
    the quarantine; another job's lane is kept, and with lanes on folded."""
    other = lane(P, OTHER_JOB)
    odd = event(EventType.PROVIDE, {"cids": [CID]}, seq=3)
    kept = event(EventType.CLAIM, chunk(OTHER_JOB), origin=other)
    log = FakeLog([event(EventType.CLAIM, chunk()), event(EventType.CLAIM, chunk(), seq=2), odd,
                   kept])
    state = MeshState()
    state.compacted |= {JOB}
    door(member_of, log).replay(state, Q)
    assert log.dropped == [LANE]
    assert [i for i, _ in log.set_aside] == [odd.id]
    assert set(log.rows) == {kept.id}
    assert set(state.events) == (set() if member_of is None else {kept.id})
