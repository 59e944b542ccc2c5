"""A task's completion implied by its one chunk's outcome (issue 12, fewer events per task):
while every live member announces DONE_FEATURE, the run of an implicit split's one chunk says
in its CHUNK_DONE (`"done": {"key": ...}`) that its task is done, and no TASK_DONE follows.
The fold makes that TASK_DONE from the CHUNK_DONE (never held), the listeners are told of it
after it (`facts`), and compaction indexes its cache entry as a TASK_DONE's."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from peer.ipfs.store import StoreConfig
from peer.jobs.claims import task_status
from peer.jobs.ports import SchedulerConfig
from peer.jobs.sim import JobMesh
from peer.log import (
    DONE_FEATURE,
    ChunkDone,
    Event,
    EventType,
    MeshState,
    TaskDone,
    facts,
    fold,
    implied_done,
    turn_event,
)
from peer.log.events import part_event
from tasks import registry
from tests.helpers import load_script
from tests.unit.test_implicit_splits import nine_and_a_dependent

CATALOG = registry.load(("tests.fixture_tasks",))
CFG = SchedulerConfig(store=StoreConfig("/nonexistent"), lease_s=10.0, stagger_s=0.05,
                      max_attempts=3)
A, B = "peera000000000000000", "peerb000000000000000"
OUT = "bafkreiaheqdfvsfwin2qysg2nd3n4upuu7oyiwtnuvai2oi3lesbeuh42q"
OTHER = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
JOB = {"job": "j", "workflow": {"name": "x", "splits": "implicit", "tasks": [
    {"name": "a", "call": "ECHO", "params": {"text": "a"}, "depends": []},
    {"name": "b", "call": "ECHO", "params": {"text": "b"}, "depends": ["a"]}]}}
SUB = Event(A, 1, 100, EventType.JOB_SUBMITTED, JOB)
BASE = {"job": "j", "task": "a", "split": list(SUB.id), "chunk": 0, "attempt": 0}


def _done(seq: int = 2, hlc: int = 200, origin: str = B, **extra: Any) -> Event:
    return Event(origin, seq, hlc, EventType.CHUNK_DONE,
                 {**BASE, "output": OUT, "cache": {}, "log": None, "s": 0.1, **extra})


# -- the event ---------------------------------------------------------------------------
def test_a_chunk_done_with_done_implies_a_task_done() -> None:
    ev = _done(done={"key": "k1", "later": [1]})  # a newer peer's other keys: ignored
    assert ev.body_as(ChunkDone).done == TaskDone("j", "a", OUT, "k1", False, None)
    t = implied_done(ev)
    assert t is not None and t.type == EventType.TASK_DONE and t.id == ev.id
    assert t.hlc == ev.hlc and t.body == TaskDone("j", "a", OUT, "k1", False, None)
    assert t.payload == {"job": "j", "task": "a", "output": OUT, "key": "k1", "cached": False}
    assert _done(done={}).body_as(ChunkDone).done == TaskDone("j", "a", OUT, None, False, None)
    assert implied_done(_done()) is None and _done().body_as(ChunkDone).done is None


@pytest.mark.parametrize("payload", [
    {"done": True}, {"done": ["k"]}, {"done": {"key": 7}}, {"done": {"key": ""}},
    {"done": {"key": "k" * 1025}}, {"done": {"key": "k"}, "output": None},
    {"done": {"key": "k"}, "cache": {"item": {"n": "x", "c": OTHER}}},
], ids=["bool", "list", "int-key", "empty-key", "long-key", "no-output", "item-results"])
def test_a_done_that_implies_nothing_is_ignored_not_refused(payload: dict[str, Any]) -> None:
    """An older peer ignores the key and folds such an event: refusing it here would make
    their logs differ. So it is held and folded as a CHUNK_DONE that implies nothing."""
    ev = _done(**payload)
    assert ev.body_as(ChunkDone).done is None and implied_done(ev) is None
    s = fold([SUB, ev])
    assert ("j", "a") not in s.task_done and s.holds(ev.id)


def test_facts_tell_the_implied_task_done_after_its_chunk_done() -> None:
    single = _done(done={"key": "k"})
    assert [(e.type, e.id) for e in facts(single)] == [
        (EventType.CHUNK_DONE, single.id), (EventType.TASK_DONE, single.id)]
    parts = [part_event(B, 5, 500, EventType.CLAIM, BASE, Event(B, 5, 500, EventType.CLAIM,
                                                                  BASE).body),
             part_event(B, 5, 500, EventType.CHUNK_DONE, single.payload, single.body),
             part_event(B, 5, 500, EventType.PROGRESS, {**BASE, "progress": 0.5},
                        Event(B, 5, 500, EventType.PROGRESS, {**BASE, "progress": 0.5}).body)]
    turn = turn_event(parts)
    assert [e.type for e in facts(turn)] == [EventType.CLAIM, EventType.CHUNK_DONE,
                                            EventType.TASK_DONE, EventType.PROGRESS]
    assert len(turn.payload["parts"]) == 3  # what is sent and logged: no TASK_DONE in it
    again = Event.from_json(turn.to_json())  # as a receiver rebuilds it
    assert [e.type for e in facts(again)] == [e.type for e in facts(turn)]
    assert [e.type for e in facts(_done())] == [EventType.CHUNK_DONE]


# -- the fold ----------------------------------------------------------------------------
def _view(s: MeshState) -> tuple[Any, ...]:
    done = s.task_done.get(("j", "a"))
    return (None if done is None else (done.id, done.type, done.payload),
            dict(s.outputs), {c: sorted(v) for c, v in s.providers.items()},
            s.content_sum())


def test_the_fold_makes_the_task_done_in_any_order() -> None:
    claim = Event(B, 1, 150, EventType.CLAIM, BASE)
    implied = _done(done={"key": "k1"})
    late = Event(A, 2, 300, EventType.TASK_DONE,  # e.g. an older peer's, after its grace
                 {"job": "j", "task": "a", "output": OUT, "key": "k1", "cached": False})
    views = set()
    for order in itertools.permutations([SUB, claim, implied, late]):
        s = fold(order)
        views.add(repr(_view(s)))
        assert s.task_done[("j", "a")].id == implied.id  # the earlier completion wins
        assert s.outputs["k1"] == OUT and B in s.providers[OUT]
        assert task_status(s, "j", "a", 3) == "done"
        assert not s.refold() and repr(_view(s)) in views
    assert len(views) == 1
    s = fold([SUB, claim, implied])
    assert s.task_done[("j", "a")].type == EventType.TASK_DONE
    assert set(s.events) == {SUB.id, claim.id, implied.id}  # nothing more is held


def test_a_deleted_job_forgets_an_implied_task_done_in_any_order() -> None:
    gone = Event(A, 2, 400, EventType.JOB_DELETED, {"job": "j", "reason": "x"})
    for order in itertools.permutations([SUB, _done(done={"key": "k1"}), gone]):
        s = fold(order)
        assert s.task_done == {} and "j" in s.deleted


# -- peers -------------------------------------------------------------------------------
@pytest.mark.parametrize("batch", [False, True], ids=["single", "batched"])
async def test_three_peers_finish_tasks_without_a_task_done(batch: bool) -> None:
    mesh = JobMesh(3, CATALOG, CFG, auto=True, batch=batch)
    try:
        job = nine_and_a_dependent(mesh)
        for _ in range(10):
            await mesh.advance(CFG.tick_s)
        for pid in mesh.peers:  # the dependent ran: its peers were told of e0's completion
            for name in ["u", *(f"e{i}" for i in range(9))]:
                assert task_status(mesh[pid].state, job, name, CFG.max_attempts) == "done"
        sent = mesh.sent(EventType.TASK_DONE, job=job)
        assert [e.payload["task"] for e in sent] == ["u"]  # a real split's task: assembled
        dones = mesh.sent(EventType.CHUNK_DONE, job=job)
        assert sorted(e.payload["task"] for e in dones if "done" in e.payload) == sorted(
            f"e{i}" for i in range(9))
        for e in dones:
            if "done" in e.payload:  # its runner pinned the output (as `_done` did)
                assert e.payload["output"] in mesh[e.origin].store.pinned
                key = e.payload["done"]["key"]
                assert key and all(mesh[p].state.outputs[key] == e.payload["output"]
                                   for p in mesh.peers)
        # what every peer folded and told: one TASK_DONE per task, as before
        assert len(mesh.events(EventType.TASK_DONE, "p2", job=job)) == 10
    finally:
        await mesh.close()


async def test_a_live_member_without_the_feature_gets_task_dones_as_before() -> None:
    mesh = JobMesh(3, CATALOG, CFG, auto=True)

    def older(pid: str, info: dict[str, Any]) -> dict[str, Any]:
        if pid == "p2":  # folds implicit splits, not implied completions
            info["features"] = [f for f in info["features"] if f != DONE_FEATURE]
        return info

    mesh.tamper = older
    try:
        tasks = [{"name": f"e{i}", "call": "T_WRITE", "params": {"files": 1, "tag": str(i)},
                  "depends": []} for i in range(6)]
        job = mesh.submit("p0", tasks, implicit=True)
        for _ in range(10):
            await mesh.advance(CFG.tick_s)
        for i in range(6):
            assert task_status(mesh["p2"].state, job, f"e{i}", CFG.max_attempts) == "done"
        # p0 and p1 hear p2 without the feature (p2 runs this release here: it hears them
        # with it, and its own runs say their tasks are done, unlike a real older peer's)
        ran = {e.payload["task"]: e for e in mesh.sent(EventType.CHUNK_DONE, job=job)
               if e.origin != "p2"}
        assert ran and not [e for e in ran.values() if "done" in e.payload]
        sent = mesh.sent(EventType.TASK_DONE, job=job)
        assert sorted(e.payload["task"] for e in sent if e.origin != "p2") == sorted(ran)
    finally:
        await mesh.close()


async def test_a_run_of_a_cancelled_job_implies_no_completion() -> None:
    """A run that ends well after its job was cancelled (the cancel folded, its run not yet
    stopped) records its CHUNK_DONE without `done`: the task stays undone, as before."""
    mesh = JobMesh(1, CATALOG, CFG)
    try:
        job = mesh.submit("p0", [{"name": "w", "call": "T_WRITE", "params": {"files": 1},
                                  "depends": []}], implicit=True)
        await mesh.advance(CFG.tick_s)
        (key,) = mesh["p0"].runner.started
        hlc = mesh["p0"].state.jobs[job].hlc + 1
        assert mesh["p0"].state.apply(Event(A, 1, hlc, EventType.JOB_CANCELLED,
                                                 {"job": job, "reason": "x"}))
        mesh["p0"].runner.finish(key)
        await mesh.advance(CFG.tick_s)
        (done,) = mesh.sent(EventType.CHUNK_DONE, job=job)
        assert "done" not in done.payload
        assert (job, "w") not in mesh["p0"].state.task_done
    finally:
        await mesh.close()


def _member(pid: str, features: list[str], hlc: int) -> Event:
    return Event(pid, 1, hlc, EventType.MEMBER,
                 {"name": pid, "http": "", "calls": ["ECHO"], "slots": 1, "cores": 1,
                  "mem_mb": 1, "gpu": False, "features": features})


async def test_a_member_away_without_the_feature_holds_implied_completions_back() -> None:
    """A peer of the previous release that is not live now (restarting, cut off) would come
    back to tasks it cannot see done: while its latest MEMBER event lacks the feature, runs
    end with a TASK_DONE as before; once it is revoked (gone for good), or announces the
    feature (upgraded), their CHUNK_DONE says it again."""
    mesh = JobMesh(2, CATALOG, CFG, auto=True)
    old = "oldpeer0000000000000"
    try:
        for p in mesh.peers.values():
            assert p.state.apply(_member(old, ["batch-v1", "splits-v1"], 10))
        write = [{"name": "w", "call": "T_WRITE", "params": {"files": 1}, "depends": []}]
        first = mesh.submit("p0", write, implicit=True)
        await mesh.advance(CFG.tick_s)
        assert [e.payload["task"] for e in mesh.sent(EventType.TASK_DONE, job=first)] == ["w"]
        assert not [e for e in mesh.sent(EventType.CHUNK_DONE, job=first)
                    if "done" in e.payload]
        for p in mesh.peers.values():  # it came back upgraded
            assert p.state.apply(Event(old, 2, 20, EventType.MEMBER, {
                **_member(old, [], 20).payload, "features": ["splits-v1", DONE_FEATURE]}))
        second = mesh.submit("p1", [{**write[0], "params": {"files": 2}}], implicit=True)
        await mesh.advance(CFG.tick_s)
        assert mesh.sent(EventType.TASK_DONE, job=second) == []
        for p in mesh.peers.values():  # another old member, then revoked
            assert p.state.apply(_member("old1000000000000000", [], 30))
        third = mesh.submit("p0", [{**write[0], "params": {"files": 3}}], implicit=True)
        await mesh.advance(CFG.tick_s)
        assert len(mesh.sent(EventType.TASK_DONE, job=third)) == 1
        for p in mesh.peers.values():
            assert p.state.apply(Event(A, 9, 40, EventType.REVOKE, {
                "peer": "old1000000000000000", "after": 1, "reason": "retired"}))
        fourth = mesh.submit("p0", [{**write[0], "params": {"files": 4}}], implicit=True)
        await mesh.advance(CFG.tick_s)
        assert mesh.sent(EventType.TASK_DONE, job=fourth) == []
        for job in (first, second, third, fourth):
            assert all(task_status(p.state, job, "w", 3) == "done" for p in mesh.peers.values())
    finally:
        await mesh.close()


def test_the_latency_trace_names_an_implied_completion() -> None:
    """scripts/trace_latency.py names a flush by its main kind (TASK_DONE first): a TURN
    whose CHUNK_DONE implies the completion is still the completion's, not the next claim's."""
    hooks, trace = load_script("latency_hooks"), load_script("trace_latency")
    done = _done(seq=3, done={"key": None})
    claim = Event(B, 3, 200, EventType.CLAIM, {**BASE, "task": "b"})
    turn = turn_event([part_event(B, 3, 200, e.type, e.payload, e.body) for e in (done, claim)])
    kinds = ",".join(sorted({k for k, _ in hooks._jobs([turn])}))
    assert trace._main_kind(kinds) == "TASK_DONE"


def test_the_receive_benchmark_runs_both_shapes() -> None:
    """scripts/bench_receive.py: each shape's tasks all end done on the receiving peer
    (it checks), with two single events per task implied and three explicit."""
    bench = load_script("bench_receive")
    implied, explicit = bench.once(40, 5, True), bench.once(40, 5, False)
    assert implied["parts_per_task"] == 2.0 and explicit["parts_per_task"] == 3.0
    assert implied["frame_bytes_per_task"] < explicit["frame_bytes_per_task"]
