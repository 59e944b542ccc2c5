"""A claim made while a local run's outcome is being recorded goes out with that outcome
(issue 12): Node holds its end-of-turn flush, at most HOLD_MAX_S, while the scheduler says an
outcome is pending; acknowledged writes are never held."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any, TypeVar

import pytest

import peer.node
from peer.config import PeerConfig
from peer.ipfs.store import StoreConfig
from peer.jobs import claims
from peer.jobs.claims import AttemptKey
from peer.jobs.ports import SchedulerConfig
from peer.jobs.scheduler import FILL_SCAN
from peer.jobs.sim import JobMesh
from peer.log import Event, EventType
from peer.node import Node
from peer.rendezvous import rendezvous
from tasks import registry

T = TypeVar("T")
PENDING = AttemptKey("j", "t0", 0, 0)


class _Gossip:
    def __init__(self) -> None:
        self.frames: list[list[Event]] = []

    def broadcast(self, events: Sequence[Event]) -> None:
        self.frames.append(list(events))

    def acknowledge(self, origins: object) -> None:
        pass


def _node(d: Path) -> tuple[Node, _Gossip]:
    node = Node(PeerConfig(data_dir=d, slots=1, mdns=False))
    node.listeners.clear()  # no scheduler reactions: this is about the flush
    node.live_peers = dict  # type: ignore[method-assign,assignment]
    gossip = _Gossip()
    node.gossip = gossip  # type: ignore[assignment]
    return node, gossip


def _chunk(i: int) -> dict[str, Any]:
    return {"job": "j", "task": f"t{i}", "split": ["x", 1], "chunk": 0, "attempt": 0}


async def _turns(n: int = 3) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


async def test_a_claim_made_while_an_outcome_is_recorded_goes_out_with_it(
        tmp_path: Path) -> None:
    node, gossip = _node(tmp_path)
    runs = node.scheduler._runs
    runs.unrecorded.add(PENDING)  # run t0 ended; its record is being saved
    node.emit(EventType.CLAIM, _chunk(1))  # the freed slot's next claim
    await _turns()
    assert gossip.frames == []  # held for the outcome
    runs.unrecorded.discard(PENDING)  # as Runs does in the outcome's loop turn
    node.emit(EventType.CHUNK_DONE, {**_chunk(0), "output": "c"})
    node.emit(EventType.TASK_DONE, {"job": "j", "task": "t0", "output": "c"})
    await _turns()
    [[ev]] = gossip.frames  # one frame of one TURN: one signature, one row
    assert ev.type == EventType.TURN
    assert [p.type for p in ev.parts] == [EventType.CLAIM, EventType.CHUNK_DONE,
                                          EventType.TASK_DONE]
    assert node._held is None
    node.log.close()


async def test_the_hold_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An outcome that never comes (a run whose record cannot be saved) holds nothing for
    longer than HOLD_MAX_S: the timer flushes."""
    monkeypatch.setattr(peer.node, "HOLD_MAX_S", 0.0)
    node, gossip = _node(tmp_path)
    node.scheduler._runs.unrecorded.add(PENDING)
    node.emit(EventType.CLAIM, _chunk(1))
    await asyncio.sleep(0)
    assert gossip.frames == [] and node._held is not None
    await _turns(4)  # the timer (0 s) fires on a later loop iteration
    assert [[e.type for e in f] for f in gossip.frames] == [[EventType.CLAIM]]
    assert node._held is None
    node.log.close()


async def test_acknowledged_writes_are_not_held(tmp_path: Path) -> None:
    node, gossip = _node(tmp_path)
    node.scheduler._runs.unrecorded.add(PENDING)
    ev = node.emit(EventType.PROVIDE, {"cids": ["a"]})
    await node.durable(ev)  # written and fsynced at once, hold or not
    assert [[e.type for e in f] for f in gossip.frames] == [[EventType.PROVIDE]]
    assert node._held is None
    node.log.close()


async def test_a_received_frame_does_not_cut_the_held_turn(tmp_path: Path) -> None:
    """Merging another peer's events while our turn is open (no conflict) leaves it open."""
    node, gossip = _node(tmp_path)
    runs = node.scheduler._runs
    runs.unrecorded.add(PENDING)
    node.emit(EventType.CLAIM, _chunk(1))
    await _turns()
    other = Event("p-other", 1, node.hlc.now(), EventType.PROVIDE, {"cids": ["b"]})
    assert [e.id for e in node.merge([other])] == [other.id]
    runs.unrecorded.discard(PENDING)
    node.emit(EventType.CHUNK_DONE, {**_chunk(0), "output": "c"})
    await _turns()
    [[ev]] = gossip.frames
    assert [p.type for p in ev.parts] == [EventType.CLAIM, EventType.CHUNK_DONE]
    node.log.close()


# -- the scheduler's side: the window in which an outcome is pending ---------------------------
CATALOG = registry.load(("tests.fixture_tasks",))
CFG = SchedulerConfig(store=StoreConfig("/nonexistent"), stagger_s=0.05, tick_s=0.25)


async def test_an_outcome_is_pending_from_the_slot_freeing_to_its_emit() -> None:
    mesh = JobMesh(1, CATALOG, CFG, slots=1, batch=True)
    gate = asyncio.Event()

    async def gated(fn: Callable[[], T]) -> T:
        await gate.wait()  # the run's record is being saved
        return fn()

    try:
        tasks = [{"name": f"e{i}", "call": "T_WRITE", "params": {"files": 1, "tag": str(i)}}
                 for i in range(2)]
        job = mesh.submit("p0", tasks)
        await mesh.settle()
        p = mesh["p0"]
        sched = p.sched
        sched._runs.offload = gated  # type: ignore[assignment]
        [key] = p.runner.running
        assert not sched.outcomes_pending
        p.runner.finish(key)
        await mesh.settle()
        assert sched.outcomes_pending  # ended, its CHUNK_DONE not yet emitted
        assert sched.free_slots == 0  # the freed slot already took the next task
        gate.set()
        await mesh.settle()
        assert not sched.outcomes_pending
        assert sum(1 for k in p.state.task_done if k[0] == job) == 1
    finally:
        gate.set()
        await mesh.close()


async def test_slots_freeing_at_once_look_at_different_starved_tasks() -> None:
    """Each peer sees the other full (its last heartbeat) and so ranks itself first for
    every task: both freed slots used to take the oldest starved task, a duplicate claim
    (one run wasted); each now looks first at a task it comes first for by rendezvous."""
    mesh = JobMesh(2, CATALOG, CFG, slots=1, batch=True)
    try:
        tasks = [{"name": f"e{i}", "call": "T_WRITE", "params": {"files": 1, "tag": str(i)}}
                 for i in range(12)]
        job = mesh.submit("p0", tasks)
        await mesh.settle()
        await mesh.advance(CFG.stagger_s)
        mesh.heartbeats()  # both busy: each sees the other with no free slot
        running = {(job, k.split("/")[1]) for p in mesh.peers.values() for k in p.runner.running}
        queued = sorted({k for p in mesh.peers.values() for k in p.sched._starved} - running)
        for p in mesh.peers.values():  # both full when the split came: the same queue
            p.sched._starved = dict.fromkeys(queued)
        for p in mesh.peers.values():
            assert p.sched.free_slots == 0 and p.sched.starved > 0
            [key] = p.runner.running
            p.runner.finish(key)  # both slots free in the same round
        await mesh.settle()
        claimed = [(e.payload["task"], e.payload["attempt"])
                   for e in mesh.events(EventType.CLAIM, "p0", job=job)]
        assert len(claimed) == 4  # two runs, then the two freed slots' claims
        assert len(set(claimed)) == len(claimed)  # no task claimed twice
    finally:
        await mesh.close()


async def test_a_backlog_holds_the_turn_until_the_next_outcome(tmp_path: Path) -> None:
    """Runs of ours queued behind the slot (a backlog): an outcome and the next claim are
    held (at most HOLD_MAX_S) for the outcomes that follow, then go out as one TURN; once
    no run is queued, the turn goes out at its end."""
    node, gossip = _node(tmp_path)
    runs = node.scheduler._runs
    queued = AttemptKey("j", "t2", 0, 0)
    run = SimpleNamespace(tdef=SimpleNamespace(name="T_SHORT"))
    runs.active = {AttemptKey("j", "t1", 0, 0): run, queued: run}  # type: ignore[dict-item]
    assert not node.scheduler.backlog  # how long T_SHORT runs is not known yet
    runs.last_s["T_SHORT"] = 0.01
    assert node.scheduler.backlog
    node.emit(EventType.CHUNK_DONE, {**_chunk(0), "output": "c"})
    node.emit(EventType.CLAIM, _chunk(3))
    await _turns()
    assert gossip.frames == [] and node._held is not None  # held for the backlog
    del runs.active[queued]  # t1's outcome next; nothing queued behind it any more
    node.emit(EventType.CHUNK_DONE, {**_chunk(1), "output": "d"})
    await _turns()
    [[ev]] = gossip.frames
    assert [p.type for p in ev.parts] == [EventType.CHUNK_DONE, EventType.CLAIM,
                                          EventType.CHUNK_DONE]
    assert node._held is None
    node.log.close()


async def test_one_run_in_one_slot_holds_nothing(tmp_path: Path) -> None:
    """A run in a slot with none queued behind it (one task at a time): no hold."""
    node, gossip = _node(tmp_path)
    node.scheduler._runs.active = {AttemptKey("j", "t1", 0, 0): None}  # type: ignore[dict-item]
    assert not node.scheduler.backlog
    node.emit(EventType.CLAIM, _chunk(1))
    await _turns()
    assert [[e.type for e in f] for f in gossip.frames] == [[EventType.CLAIM]]
    node.log.close()


def _firsts_of(job: str, peer: str, n: int) -> list[dict[str, Any]]:
    """n tasks (in name order) that `peer` comes first for of p0 and p1 (rendezvous)."""
    names = [f"x{i:03d}" for i in range(200)
             if rendezvous(f"{job}/x{i:03d}", ["p0", "p1"])[0] == peer][:n]
    return [{"name": x, "call": "T_WRITE", "params": {"files": 1, "tag": x}} for x in names]


async def test_a_backlog_another_peer_takes_from_holds_no_claim_back_from_it() -> None:
    """p0 works through a backlog of its own tasks (one runs, one queued behind the slot),
    holding its turns for it; p1, out of tasks, takes p0's last one. From then on p0's
    turns are not held: its claim of the next task of its backlog reaches p1 before p1's
    slot frees and takes that task from the far end of its queue too (a held claim: the
    same task run twice, the tail of a job on three peers, ~1 % of its tasks)."""
    cfg = SchedulerConfig(store=StoreConfig("/nonexistent"), stagger_s=0.05, tick_s=0.25,
                          split_wait_s=0.2, queue_ahead=1)
    mesh = JobMesh(2, CATALOG, cfg, slots=1, batch=True, hold_s=0.02)
    try:
        tasks = _firsts_of("j1", "p0", 5)
        x = [t["name"] for t in tasks]
        job = mesh.submit("p0", tasks, implicit=True)  # (p1 waits a split wait per task)
        await mesh.settle()
        p0, p1 = mesh["p0"], mesh["p1"]
        [first] = p0.runner.running
        p0.runner.finish(first)  # short: the next one runs, one more is queued behind it
        await mesh.settle()
        assert len(p0.runner.running) == 2 and p0.sched.backlog
        assert not p1.state.chunk(job, x[2], 0).claims  # p0's turn is held for its backlog
        await mesh.advance(0.25)  # the hold is over; p1's turn to look at p0's tasks came
        [(_, taken)] = [k.split("/")[:2] for k in p1.runner.running]
        assert taken == x[3] and p1.sched.starved == 1  # x[4] waits for p1's slot
        p0.runner.finish(p0.runner.running[0])  # x[2] runs, x[4] is claimed behind it
        await mesh.settle()
        p1.runner.finish(p1.runner.running[0])  # p1's slot frees: x[4] from its queue?
        await mesh.settle()
        await mesh.advance(0.25)
        assert {e.origin for e in mesh.sent(EventType.CLAIM, job=job, task=x[4])} == {"p0"}
        assert not p1.runner.running
    finally:
        await mesh.close()


async def test_only_a_claim_of_the_next_tasks_of_a_backlog_stops_its_holds() -> None:
    """Another peer's claim of a task at the far end of p0's backlog (past the FILL_SCAN
    next, where p0 looks for its own) leaves p0's turns held: a slow peer is taken from
    that way for a third of a job, and its claims are far from the taker's. A claim of one
    of its next tasks stops the holds until that claim's outcome comes."""
    cfg = SchedulerConfig(store=StoreConfig("/nonexistent"), stagger_s=0.05, tick_s=0.25,
                          split_wait_s=0.2, queue_ahead=1)
    mesh = JobMesh(2, CATALOG, cfg, slots=1, batch=True, hold_s=0.02)
    try:
        job = mesh.submit("p0", _firsts_of("j1", "p0", FILL_SCAN + 8), implicit=True)
        await mesh.settle()
        p0 = mesh["p0"]
        p0.runner.finish(p0.runner.running[0])
        await mesh.settle()
        assert p0.sched.backlog
        queue = list(p0.sched._starved)
        assert len(queue) > FILL_SCAN

        def taken_by_p1(key: tuple[str, str]) -> AttemptKey:
            ak = AttemptKey(*key, 0, 0)
            mesh.emit("p1", EventType.CLAIM, claims.claim(ak, p0.state.split_id(*key)))
            mesh.deliver()
            return ak

        taken_by_p1(queue[-1])
        assert p0.sched.backlog  # the far end: still held
        ak = taken_by_p1(queue[1])
        assert not p0.sched.backlog  # one of p0's next: its claims go out at once
        mesh.emit("p1", EventType.CHUNK_FAILED,
                  claims.orphan_failure(ak, p0.state.split_id(job, ak.task)))
        mesh.deliver()
        assert p0.sched.backlog  # that claim's outcome came: held again
    finally:
        await mesh.close()
