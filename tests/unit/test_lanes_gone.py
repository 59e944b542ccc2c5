"""Review r1 of session 46, F1 and F5: a lanes job's task events are decided by one rule
whether the job is live, compacted or deleted (`_task_fold`, `_gone_task_fold`: the same
cache and providers in any order, across a compaction, a deletion and a replay in hlc
order), and the task events held for a JOB_SUBMITTED or JOB_MEMBERS are re-checked once
each, not at every JOB_MEMBERS (`Untasked`). The real fold on a real `MeshState`."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from peer.config import PeerConfig
from peer.log import Event, EventType, MeshState, fold
from peer.log.fold import GoneLanes
from peer.log.lanes import lane
from peer.node import Node
from tests.unit.test_lanes_hostile import BAD, GOOD, REAL, SUB, WF, H, J, R, X, task_done

DEL = Event(H, 5, 9000, EventType.JOB_DELETED, {"job": J, "reason": "user"})
MESH = task_done(X, 1, 1500, BAD)  # a non-member's, in its mesh stream
LANE = task_done(lane(X, J), 1, 1500, BAD)  # a non-member's lane
EARLY = task_done(lane(R, J), 2, 500, BAD)  # a member's lane, ordered before the SUB
STRAYS = [MESH, LANE, EARLY]
FACTS = GoneLanes(True, frozenset({H, R}), SUB.order, vouched=frozenset({H, R}))  # (the index)


def state(**kw: Any) -> MeshState:
    return MeshState(lanes_on=True, me=H, **kw)


def cache(s: MeshState) -> tuple[Any, ...]:
    """What stays of a job once it is gone: its outputs and providers."""
    return s.outputs.get("k0"), {c: frozenset(p) for c, p in s.providers.items() if p}


WANT = (GOOD, {GOOD: frozenset({R})})  # the member's output only


def test_a_deleted_lanes_jobs_task_events_are_decided_as_while_it_was_live() -> None:
    """Every arrival order (its JOB_SUBMITTED before its JOB_DELETED, as every peer that
    deletes a job holds it), and the replay's hlc order: on 061057e a stray folded after the
    JOB_DELETED (or held then, as a straggler) put BAD in the cache and X among providers."""
    events = [SUB, REAL, *STRAYS, DEL]
    for order in itertools.permutations(events):
        if order.index(SUB) < order.index(DEL):
            assert cache(fold(order, state())) == WANT, [e.id for e in order]
    assert cache(fold(sorted(events, key=lambda e: e.order), state())) == WANT


@pytest.mark.parametrize("cut", range(1, 6))
def test_a_compacted_lanes_jobs_task_events_are_decided_as_while_it_was_live(cut: int) -> None:
    """Compacted after `cut` events (the JOB_SUBMITTED first), the others coming after: on
    061057e a held stray was let go unfolded at compaction but folded when it came after."""
    for rest in itertools.permutations([REAL, *STRAYS]):
        order = [SUB, *rest]
        s = fold(order[:cut], state())
        s.compact([J])
        fold(order[cut:], s)
        assert cache(s) == WANT, ([e.id for e in order], cut)


def test_a_compacted_lanes_job_replayed_after_a_restart_decides_by_its_record() -> None:
    """A restart replays the log in hlc order with J compacted (the job index): the strays
    ordered before J's JOB_SUBMITTED come first, and only its record (`gone_lookup`: the
    members its summary names, its order) says they are a lanes job's."""
    back = task_done(X, 2, 600, BAD)  # a mesh stream's, backdated before the SUB
    replay = sorted([SUB, REAL, back, *STRAYS], key=lambda e: e.order)
    s = state(gone_lookup={J: FACTS}.get)
    s.compacted.add(J)
    assert cache(fold(replay, s)) == WANT
    blind = state()  # (without the record: a mesh stream's stray is a plain job's, folded)
    blind.compacted.add(J)
    assert cache(fold(replay, blind)) != WANT


def test_a_gone_job_without_members_folds_its_mesh_streams_task_events_as_before() -> None:
    """A job replicated in full (no `members`): its stragglers fold as they did before lanes
    (and a lane event, of no lanes job, never)."""
    plain = Event(H, 1, 1000, EventType.JOB_SUBMITTED, {"job": J, "workflow": WF})
    mine = task_done(H, 2, 2000, GOOD)
    for order in ([plain, mine, DEL, LANE], [plain, DEL, mine, LANE], [plain, LANE, mine, DEL]):
        assert cache(fold(order, state())) == (GOOD, {GOOD: frozenset({H})})
    s = fold([plain], state())
    s.compact([J])
    fold([LANE, mine], s)
    assert cache(s) == (GOOD, {GOOD: frozenset({H})})


def test_a_job_members_re_checks_only_the_lanes_of_the_peers_it_adds(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """N lane events of a member backdated before the JOB_SUBMITTED (held: a rival ordered
    earlier may still admit them) and M JOB_MEMBERS re-adding that member fold N + M events,
    not N x M (review r1 F5: 4000 x 4000 took 24 s on the loop)."""
    n = 200
    s = fold([SUB], state())
    for i in range(n):
        s.apply(Event(lane(R, J), i + 1, 1 + i, EventType.PROGRESS,
                      {"job": J, "task": "t0", "chunk": 0, "attempt": 0, "progress": 0.5}))
    folds = 0
    real = MeshState.fold_only

    def counted(self: MeshState, ev: Event) -> None:
        nonlocal folds
        folds += 1
        real(self, ev)

    monkeypatch.setattr(MeshState, "fold_only", counted)
    for i in range(n):
        s.apply(Event(R, i + 1, 2000 + i, EventType.JOB_MEMBERS, {"job": J, "add": [R]}))
    assert folds == n  # (the JOB_MEMBERS themselves)
    assert len(s._untasked[J]) == n
    rival = Event(X, 1, 1, EventType.JOB_SUBMITTED, {"job": J, "workflow": WF, "members": [R]})
    s.apply(rival)  # ordered before all but the first (hlc 1, origin b2...): folded once now
    assert folds == n + 1 + (n - 1) and [e.seq for e in s._untasked[J]] == [1]


# Random events of J: lane TASK_DONEs of R and X, JOB_MEMBERS adding X, rival JOB_SUBMITTEDs
# (with members), at random orders; every arrival order folds the same state.
_hlc = st.integers(1, 40).map(lambda h: h * 100)


@st.composite
def _events(draw: st.DrawFn) -> list[Event]:
    out: list[Event] = [SUB]
    for i, hlc in enumerate(draw(st.lists(_hlc, max_size=3))):
        out.append(Event(X, 100 + i, hlc, EventType.JOB_MEMBERS, {"job": J, "add": [X]}))
    for i, hlc in enumerate(draw(st.lists(_hlc, max_size=2))):
        out.append(Event(H, 200 + i, hlc, EventType.JOB_SUBMITTED,
                         {"job": J, "workflow": WF, "members": [H]}))
    for peer in (R, X):
        for i, hlc in enumerate(draw(st.lists(_hlc, max_size=4))):
            out.append(task_done(lane(peer, J), i + 1, hlc + 1, f"{BAD[:-3]}{peer[:1]}{i:02d}"))
    out.append(task_done(X, 300, draw(_hlc), BAD))  # a mesh stream's
    return out


def _seen(s: MeshState) -> tuple[Any, ...]:
    done = s.task_done.get((J, "t0"))
    return (None if done is None else done.id, cache(s),
            sorted(e.id for e in s._untasked.get(J, ())))


@settings(max_examples=150, deadline=None)
@given(_events(), st.randoms(use_true_random=False))
def test_held_task_events_fold_alike_in_any_order(events: list[Event], rnd: Any) -> None:
    want = _seen(fold(events, state()))
    for _ in range(4):
        order = list(events)
        rnd.shuffle(order)
        assert _seen(fold(order, state())) == want


def test_a_node_reads_a_compacted_lanes_jobs_members_and_order_from_its_job_index(
        tmp_path: Path) -> None:
    """After a restart the job index answers `gone_lookup` (`JobIndex.lanes_of`: its
    summary's members, its JOB_SUBMITTED's order), so a mesh stream's TASK_DONE of the
    compacted lanes job, backdated before it, is not folded into the output cache."""
    from tests.unit.test_lanes_compact import J1, OUT, _end, _node
    node = _node(tmp_path)
    try:
        me, sub = node.peer_id, node.state.jobs[J1].order
        _end(node, J1)
        assert node.catchup.compact().jobs == [J1]
    finally:
        node.log.close()
    node = Node(PeerConfig(data_dir=tmp_path, slots=1, mdns=False, compact_recent_tasks=0),
                lanes=True)
    node.listeners[:] = [node.compactor.note]  # (as `_node`: no scheduler)
    try:
        assert J1 in node.state.compacted and J1 not in node.state._gone_lanes
        assert node.state.gone_lanes(J1) == GoneLanes(True, frozenset({me}), sub,
                                                      vouched=frozenset({me}))
        assert node.state.gone_lanes("j" + "e" * 12) is None
        stray = Event(X, 1, sub[0] - 1, EventType.TASK_DONE,
                      {"job": J1, "task": "t0", "output": BAD, "cached": False, "key": "kx"})
        assert node.merge([stray]) == [stray]  # (admitted: a mesh stream's, decided by the fold)
        assert node.state.outputs.get("kx") is None and BAD not in node.state.providers
        assert OUT["t0"] != BAD
    finally:
        node.log.close()


def test_the_job_index_is_asked_once_per_gone_job_not_once_per_event() -> None:
    """A replay folds a compacted job's events still in the log: a job replicated in full
    has no record of members, and that "none" is kept too (NO_LANES), not asked again."""
    asked: list[str] = []

    def lookup(job: str) -> GoneLanes | None:
        asked.append(job)
        return None

    s = state(gone_lookup=lookup)
    s.compacted.add(J)
    plain = Event(H, 1, 1000, EventType.JOB_SUBMITTED, {"job": J, "workflow": WF})
    fold([plain, *(task_done(H, 2 + i, 2000 + i, GOOD) for i in range(20))], s)
    assert asked == [J] and cache(s) == (GOOD, {GOOD: frozenset({H})})
