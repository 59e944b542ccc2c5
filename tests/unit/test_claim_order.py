"""Which starved task a freed slot takes, and when (issue 12: a job of many independent tasks
on three peers): a task this peer comes first for among every live peer is claimed at once;
a peer with none of its own left takes from the far end of its queue; a task without input
is split by its first peer, the others waiting split_wait_s per rank."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import pytest

from peer.ipfs.store import StoreConfig
from peer.jobs import claims
from peer.jobs.ports import SchedulerConfig
from peer.jobs.sim import JobMesh
from peer.log import EventType
from peer.rendezvous import rendezvous
from tasks import registry
from tests.unit.split_helpers import chunks_running_on_both

CATALOG = registry.load(("tests.fixture_tasks",))
CFG = SchedulerConfig(store=StoreConfig("/nonexistent"), stagger_s=0.05, tick_s=0.25)


def _tasks(n: int) -> list[dict[str, Any]]:
    return [{"name": f"e{i}", "call": "T_WRITE", "params": {"files": 1, "tag": str(i)}}
            for i in range(n)]


def _first(key: tuple[str, str], peers: list[str]) -> str:
    return rendezvous(f"{key[0]}/{key[1]}", peers)[0]


def _rank_p0_last(monkeypatch: pytest.MonkeyPatch) -> None:
    """The stagger ranks p1 first and p0 last for every chunk."""
    real = claims.candidates
    monkeypatch.setattr(claims, "candidates", lambda *a, **k: [
        "p1", *(p for p in real(*a, **k) if p not in ("p0", "p1")), "p0"])


async def _busy_pair(n: int) -> tuple[JobMesh, str, list[tuple[str, str]]]:
    """Two one-slot peers, both running a task of one job of n; the job's open tasks."""
    mesh = JobMesh(2, CATALOG, CFG, slots=1, batch=True)
    job = mesh.submit("p0", _tasks(n))
    await mesh.settle()
    await mesh.advance(CFG.stagger_s * 2)
    mesh.heartbeats()
    running = {(job, k.split("/")[1]) for p in mesh.peers.values() for k in p.runner.running}
    assert len(running) == 2
    return mesh, job, sorted({(job, f"e{i}") for i in range(n)} - running)


async def test_a_starved_task_this_peer_comes_first_for_is_claimed_without_the_stagger(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The stagger ranks p0 after p1 for every task (as when p1's stale heartbeat shows a
    free slot, or p1 split the task): a freed slot still takes a task p0
    comes first for among every live peer at once, in the round its slot frees."""
    mesh, _, open_ = await _busy_pair(12)
    try:
        _rank_p0_last(monkeypatch)
        p = mesh["p0"]
        mine = [k for k in open_ if _first(k, ["p0", "p1"]) == "p0"]
        assert mine and len(mine) < len(open_)
        p.sched._starved = dict.fromkeys(sorted(open_, key=lambda k: k in mine))  # p1's first
        p.sched._ready_since.clear()
        [key] = p.runner.running
        p.runner.finish(key)
        await mesh.settle()  # no time passes
        [new] = p.runner.running
        assert tuple(new.split("/")[:2]) in mine
    finally:
        await mesh.close()


async def test_a_task_another_peer_comes_first_for_still_waits_for_its_turn(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Only this peer's own tasks skip the stagger: with none of them queued, the freed
    slot waits for its turn (rank 1: one stagger_s) before it claims."""
    mesh, _, open_ = await _busy_pair(12)
    try:
        _rank_p0_last(monkeypatch)
        p = mesh["p0"]
        theirs = [k for k in open_ if _first(k, ["p0", "p1"]) == "p1"]
        p.sched._starved = dict.fromkeys(theirs)
        p.sched._ready_since.clear()
        [key] = p.runner.running
        p.runner.finish(key)
        await mesh.settle()
        assert p.runner.running == []
        await mesh.advance(CFG.stagger_s)
        assert len(p.runner.running) == 1
    finally:
        await mesh.close()


async def test_a_peer_with_none_of_its_own_left_takes_from_the_far_end() -> None:
    """The peer that comes first for the oldest tasks takes them oldest first; another peer
    that ran out of its own takes the newest, not the task the first one is about to take."""
    mesh, _, open_ = await _busy_pair(12)
    try:
        sched = mesh["p0"].sched
        theirs = [k for k in open_ if _first(k, ["p0", "p1"]) == "p1"]
        assert len(theirs) >= 2
        sched._starved = dict.fromkeys(theirs)
        sched._stepping = True  # as in a round: the live peers read once
        try:
            assert sched._next_starved() == (theirs[-1], False)
            sched._starved = dict.fromkeys(open_)
            mine = next(k for k in open_ if _first(k, ["p0", "p1"]) == "p0")
            assert sched._next_starved() == (mine, True)
        finally:
            sched._stepping, sched._live = False, None
    finally:
        await mesh.close()


async def test_a_scan_of_the_starved_reads_the_memo_of_its_live_peers() -> None:
    """`_next_starved` reads the remembered first peers (session 49 helper e: its scan of up
    to FILL_SCAN tasks, up to FILL_PER_ROUND times a round, made a set of the live peers per
    task), still per set of live peers: a peer that joins takes the tasks it comes first
    for from the next scan, and gives them back when it leaves."""
    mesh = JobMesh(1, CATALOG, CFG)
    try:
        sched = mesh["p0"].sched
        keys = [("j", f"e{i}") for i in range(40)]
        two, three = ["p0", "p1"], ["p0", "p1", "p2"]
        taken = next(k for k in keys if _first(k, two) == "p0" and _first(k, three) == "p2")
        sched._starved = dict.fromkeys([k for k in keys if _first(k, two) == "p1"] + [taken])
        sched._stepping = True
        try:
            for live, want in (({"p1": {}}, (taken, True)),
                               ({"p1": {}, "p2": {}}, (taken, False)),
                               ({"p1": {}}, (taken, True))):
                sched._live = live
                assert sched._next_starved() == want
                assert sched._next_starved() == want  # (the second from the memo)
        finally:
            sched._stepping, sched._live = False, None
    finally:
        await mesh.close()


async def test_who_comes_first_is_remembered_per_set_of_live_peers() -> None:
    """_first_peer hashes a task once per set of live peers: a peer that joins (or
    leaves) changes the answer for the tasks it comes first for."""
    mesh = JobMesh(1, CATALOG, CFG)
    try:
        sched = mesh["p0"].sched
        keys = [("j", f"e{i}") for i in range(40)]
        mine = [k for k in keys if _first(k, ["p0", "p1"]) == "p0"]
        taken = next(k for k in mine if _first(k, ["p0", "p1", "p2"]) == "p2")
        assert [sched._first_peer(k, ["p0", "p1"]) == "p0" for k in keys] == [
            k in mine for k in keys]
        assert sched._first_peer(taken, ["p1", "p0"]) == "p0"  # the same set, remembered
        assert sched._first_peer(taken, ["p0", "p1", "p2"]) == "p2"  # p2 joined
        assert sched._first_peer(taken, ["p0", "p1"]) == "p0"  # and left
    finally:
        await mesh.close()


async def test_a_task_without_input_is_split_once_when_its_first_peer_is_slow() -> None:
    """Three peers see a job of many tasks; the first peer's splits take longer than
    stagger_s to reach the others (a big job to fold): the others wait split_wait_s per
    rank, so each task is split once."""
    cfg = SchedulerConfig(store=StoreConfig("/nonexistent"), stagger_s=0.05, tick_s=0.25,
                          split_wait_s=0.2)
    mesh = JobMesh(3, CATALOG, cfg, slots=1, batch=True)
    try:
        mesh.hold = lambda ev, to: ev.type == EventType.TASK_SPLIT  # slow on the wire
        job = mesh.submit("p0", _tasks(30))
        await mesh.settle()  # every peer saw the job; each split the tasks it comes first for
        await mesh.advance(cfg.stagger_s * 3)  # well past the claim stagger
        mesh.hold = None
        await mesh.settle()
        splits = [e.payload["task"] for e in mesh.events(EventType.TASK_SPLIT, "p0", job=job)]
        assert len(splits) == len(set(splits)) == 30
    finally:
        await mesh.close()


async def test_a_big_job_waits_longer_before_a_task_without_input_is_split_again() -> None:
    """The first peer's splits of a job of 400 tasks come after split_wait_s (its pass over
    the job): the others wait split_wait_per_task_s more per task of the job, so each task
    is still split once; with no wait per task, or a bound below the delay, they split the
    tasks again."""
    for per_task_s, job_max_s, once in ((0.0005, 5.0, True), (0.0, 5.0, False),
                                        (0.0005, 0.05, False)):  # (at most 0.25 s)
        cfg = SchedulerConfig(store=StoreConfig("/nonexistent"), stagger_s=0.05, tick_s=0.25,
                              split_wait_s=0.2, split_wait_per_task_s=per_task_s,
                              split_wait_job_max_s=job_max_s)
        mesh = JobMesh(3, CATALOG, cfg, slots=1, batch=True)
        try:
            mesh.hold = lambda ev, to: ev.type == EventType.TASK_SPLIT  # slow on the wire
            job = mesh.submit("p0", _tasks(400))
            await mesh.settle()
            await mesh.advance(0.3)  # past split_wait_s, within 0.2 + 400 x 0.0005 s
            mesh.hold = None
            await mesh.settle()
            splits = [e.payload["task"]
                      for e in mesh.events(EventType.TASK_SPLIT, "p0", job=job)]
            assert len(set(splits)) == 400 and (len(splits) == 400) is once
        finally:
            await mesh.close()


# -- runs queued behind the slots (queue_ahead) ------------------------------------------------
AHEAD = SchedulerConfig(store=StoreConfig("/nonexistent"), stagger_s=0.05, tick_s=0.25,
                        queue_ahead=1, queue_alone=True)


async def test_a_backlog_of_its_own_queues_one_run_behind_the_slot() -> None:
    """One one-slot peer and a job of 7 tasks: alone, the peer holds two runs at once (one
    runs, one waits in the executor's queue, so that the worker starts it as the first
    ends), and each outcome frees room for the next; the flush is held for the backlog
    only once the call is known short (its first run took 0.01 s); every task runs once."""
    mesh = JobMesh(1, CATALOG, AHEAD, slots=1, batch=True)
    try:
        job = mesh.submit("p0", _tasks(7))
        await mesh.settle()
        p = mesh["p0"]
        assert len(p.runner.running) == 2  # alone: no other peer could take the second
        assert not p.sched.backlog  # how long the call runs is not known yet
        p.runner.finish(p.runner.running[0])  # 0.01 s
        await mesh.settle()
        assert len(p.runner.running) == 2
        assert p.sched.free_slots == 0 and p.sched.backlog
        done = 1
        while p.runner.running:
            p.runner.finish(p.runner.running[0])
            await mesh.settle()
            done += 1
            assert len(p.runner.running) == min(2, 7 - done)
        assert not p.sched.backlog
        assert sum(1 for k in p.state.task_done if k[0] == job) == 7
        claims_ = [e.payload["task"] for e in mesh.events(EventType.CLAIM, "p0", job=job)]
        assert sorted(claims_) == sorted(f"e{i}" for i in range(7))
    finally:
        await mesh.close()


async def test_runs_at_no_usable_slot_are_no_backlog() -> None:
    """A backlog of short runs held the peer's flush open (`backlog`) after its slots went
    to 0 (its workers given up hold every one: Executor.slots): none of those runs will
    start, and no outcome brings the claim of a next (review h, N3). No backlog at 0 slots;
    one again once a slot can run."""
    mesh = JobMesh(1, CATALOG, AHEAD, slots=1, batch=True)
    try:
        mesh.submit("p0", _tasks(4))
        await mesh.settle()
        p = mesh["p0"]
        p.runner.finish(p.runner.running[0])  # 0.01 s: short
        await mesh.settle()
        assert len(p.runner.running) == 2 and p.sched.backlog
        p.runner.slots = 0
        assert not p.sched.backlog
        p.runner.slots = 1
        assert p.sched.backlog
    finally:
        await mesh.close()


async def _label(mesh: JobMesh, pid: str, labels: dict[str, str]) -> None:
    """`pid` announces `labels` (a later MEMBER), folded by every peer."""
    mesh.announce(pid, labels)
    await mesh.settle()


def _labelled_tasks(job: str, n: int, not_first: str) -> list[dict[str, Any]]:
    """n tasks that require the label gpu=a, none of which `not_first` comes first for by
    rendezvous hash of p0, p1 and p2."""
    names = [f"g{i}" for i in range(500)
             if _first((job, f"g{i}"), ["p0", "p1", "p2"]) != not_first][:n]
    return [{"name": x, "call": "T_WRITE", "params": {"files": 1, "tag": x},
             "requires": {"labels": {"gpu": "a"}}} for x in names]


async def test_the_one_peer_that_meets_a_tasks_requires_queues_its_runs_behind_the_slot(
        ) -> None:
    """Three one-slot peers; a job of 6 tasks that only p0 meets the `requires` of, none of
    which p0 comes first for by rendezvous hash of every live peer: p0 comes first for
    each all the same (nobody else may claim them), so once the call is known short it
    queues one run behind its slot, and holds its flush for that backlog, as a lone peer
    does (it ran them one at a time, each outcome and next claim a TURN of their own:
    0.69 events per task in a job of 1,000 on three real peers, against 0.06 with this)."""
    mesh = JobMesh(3, CATALOG, AHEAD, slots=1, batch=True)
    try:
        await _label(mesh, "p0", {"gpu": "a"})
        job = mesh.submit("p1", _labelled_tasks("j1", 6, "p0"), implicit=True)
        assert job == "j1"
        await mesh.settle()
        p = mesh["p0"]
        assert len(p.runner.running) == 1  # how long the call runs is not known yet
        p.runner.finish(p.runner.running[0])  # 0.01 s: short
        await mesh.settle()
        assert len(p.runner.running) == 2 and p.sched.backlog
        while p.runner.running:
            p.runner.finish(p.runner.running[0])
            await mesh.settle()
        assert sum(1 for k in p.state.task_done if k[0] == job) == 6
        claimed = [(e.origin, e.payload["task"]) for e in mesh.events(EventType.CLAIM, job=job)]
        assert len(claimed) == 6 and {o for o, _ in claimed} == {"p0"}
    finally:
        await mesh.close()


async def test_who_comes_first_is_whom_the_claim_order_puts_first() -> None:
    """`_first_peer` agrees with the claim order: a peer that does not meet a task's
    `requires`, or does not run its call, never comes first; a job that says `local`
    comes first at its submitter (it took those tasks to run them at once)."""
    mesh = JobMesh(3, CATALOG, CFG, slots=2)
    mesh.tamper = lambda pid, info: {**info, "calls": []} if pid == "p2" else info
    mesh.heartbeats()
    try:
        await _label(mesh, "p1", {"gpu": "a"})
        peers = ["p0", "p1", "p2"]
        labelled = mesh.submit("p0", _labelled_tasks("j1", 4, "p1"), implicit=True)
        plain = mesh.submit("p0", _tasks(12), implicit=True, local=False)
        local = mesh.submit("p1", _tasks(12), implicit=True, local=True)
        split = mesh.submit("p2", _tasks(12))  # split by a peer (as with an older peer)
        await mesh.settle()
        await mesh.advance(1.0)
        sched = mesh["p0"].sched
        sched._stepping = True  # as in a round: the live peers read once
        try:
            for i in range(4):
                task = _labelled_tasks("j1", 4, "p1")[i]["name"]
                assert sched._first_peer((labelled, task), peers) == "p1"
            firsts = {_first((plain, f"e{i}"), peers) for i in range(12)}
            assert "p2" in firsts  # by rendezvous hash alone, p2 would come first for some
            for i in range(12):
                assert sched._first_peer((plain, f"e{i}"), peers) == _first(
                    (plain, f"e{i}"), ["p0", "p1"])
                assert sched._first_peer((local, f"e{i}"), peers) == "p1"
            # a task a peer split: that peer first (`candidates` ranks it after the input's
            # holders), here p1 for tasks p0 comes first for by rendezvous hash
            state = mesh["p0"].state
            mine = [f"e{i}" for i in range(12) if _first((split, f"e{i}"), ["p0", "p1"]) == "p0"]
            assert mine
            others = [f"e{i}" for i in range(12) if f"e{i}" not in mine]
            for name in mine + others:  # remembered: who split them so far
                sched._first_peer((split, name), peers)
            # another split wins (told as it is folded): the memo follows it; split by p2,
            # which does not run the call (its heartbeat): the first peer that may
            for names, origin in ((mine, "p1"), (others, "p2")):
                for name in names:
                    state.splits[(split, name)] = won = dataclasses.replace(
                        state.splits[(split, name)], origin=origin)
                    sched._note(won)
            assert {sched._first_peer((split, name), peers) for name in mine} == {"p1"}
            assert [sched._first_peer((split, x), peers) for x in others] == [
                _first((split, x), ["p0", "p1"]) for x in others]
        finally:
            sched._stepping, sched._live = False, None
    finally:
        await mesh.close()


def _p1_late(mesh: JobMesh, labels: dict[str, dict[str, str]]) -> Callable[[], None]:
    """Every peer announces its `labels`; p1's MEMBER reaches p0 only once the returned
    function is called (its heartbeats do at once)."""
    late = [True]
    mesh.hold = lambda ev, dst: late[0] and ev.type is EventType.MEMBER and (
        ev.origin == "p1" and dst == "p0")
    for pid in ("p0", "p1", "p2"):
        mesh.announce(pid, labels[pid])
    mesh.deliver()
    mesh.heartbeats()

    def arrive() -> None:
        late[0] = False
        mesh.deliver()
    return arrive


async def _finish_runs(mesh: JobMesh, rounds: int, step_s: float = 0.0) -> None:
    """End one run on each busy peer per round (then `step_s` passes), until none runs."""
    for _ in range(rounds):
        busy = [p.runner for p in mesh.peers.values() if p.runner.running]
        if not busy:
            return
        for r in busy:
            r.finish(r.running[0])
        if step_s:
            mesh.heartbeats()
            await mesh.settle()
            await mesh.advance(step_s)
        else:
            await mesh.settle()


@pytest.mark.parametrize("n", [12, 32])
async def test_a_member_event_that_comes_late_claims_nothing_twice(n: int) -> None:
    """p0 and p1 meet the tasks' `requires`; p1's MEMBER reaches p0 only after the job (its
    heartbeats did before): p0 ranks p1 as if it met them until then, and ranks again when
    it comes. Ranked as not meeting them (and remembered so), p0 came first for p1's tasks
    too, and both claimed some at once (review of cb89acd: 1-8 per job)."""
    mesh = JobMesh(3, CATALOG, CFG, slots=1, batch=True, members=False)
    try:
        arrive = _p1_late(mesh, {"p0": {"gpu": "a"}, "p1": {"gpu": "a"}, "p2": {}})
        job = mesh.submit("p2", _labelled_tasks("j1", n, ""), implicit=True, local=False)
        await mesh.settle()
        arrive()
        await _finish_runs(mesh, 4 * n, CFG.stagger_s)
        await mesh.advance(10.0)  # the split waits of tasks no runner took yet
        await _finish_runs(mesh, 4 * n)
        assert sum(1 for k in mesh["p2"].state.task_done if k[0] == job) == n
        claimed = [(e.payload["task"], e.payload["attempt"])
                   for e in mesh.events(EventType.CLAIM, "p2", job=job)]
        assert len(claimed) == len(set(claimed)) == n
    finally:
        await mesh.close()


async def test_who_comes_first_is_ranked_again_when_a_member_event_comes() -> None:
    """Before p1's MEMBER reaches p0, p0 ranks p1 as meeting the tasks' `requires` (it may);
    once it comes and says p1 does not, p0 comes first for them all (not from a memo)."""
    mesh = JobMesh(3, CATALOG, CFG, slots=1, batch=True, members=False)
    try:
        arrive = _p1_late(mesh, {"p0": {"gpu": "a"}, "p1": {}, "p2": {}})
        tasks = _labelled_tasks("j1", 8, "")
        job = mesh.submit("p0", tasks, implicit=True, local=False)
        sched, peers = mesh["p0"].sched, ["p0", "p1", "p2"]
        theirs = [t["name"] for t in tasks if _first((job, t["name"]), ["p0", "p1"]) == "p1"]
        assert theirs
        assert {sched._first_peer((job, x), peers) for x in theirs} == {"p1"}
        arrive()
        assert {sched._first_peer((job, x), peers) for x in theirs} == {"p0"}
        assert {sched._implicit_rank(job, x, "T_WRITE")[0] for x in theirs} == {"p0"}
    finally:
        await mesh.close()


async def test_only_tasks_this_peer_comes_first_for_are_queued_behind_the_slot() -> None:
    """Two one-slot peers, both running: p0's queue holds only tasks p1 comes first for, so
    p0 queues none of them behind its slot (p1 will take them); given one of its own, it
    queues that one at once."""
    mesh, job, open_ = await _busy_pair(12)
    try:
        p = mesh["p0"]
        theirs = [k for k in open_ if _first(k, ["p0", "p1"]) == "p1"]
        mine = [k for k in open_ if _first(k, ["p0", "p1"]) == "p0"]
        for q in mesh.peers.values():  # as without queue_ahead so far: one run each
            assert len(q.runner.running) == 1
        p.sched.cfg = AHEAD
        p.sched._runs.cfg = AHEAD
        p.sched._runs.last_s["T_WRITE"] = 0.01  # a short call
        p.sched._starved = dict.fromkeys(theirs)
        p.sched.poke()
        await mesh.settle()
        assert len(p.runner.running) == 1
        p.sched._starved = dict.fromkeys([*theirs, mine[0]])
        p.sched.poke()
        await mesh.settle()
        assert len(p.runner.running) == 2
        assert f"{job}/{mine[0][1]}/0/0" in p.runner.running
    finally:
        await mesh.close()


async def test_a_lone_peer_queues_a_long_call_without_holding_its_flush() -> None:
    """Alone, a peer queues the next run of a long call behind its slot too (nobody else
    could take it), but a long call's outcomes come far apart: no flush is held for them."""
    mesh = JobMesh(1, CATALOG, AHEAD, slots=1, batch=True)
    try:
        job = mesh.submit("p0", _tasks(4))
        await mesh.settle()
        p = mesh["p0"]
        p.sched._runs.last_s["T_WRITE"] = AHEAD.queue_ahead_max_s * 2
        assert len(p.runner.running) == 2 and p.sched.free_slots == 0
        assert not p.sched.backlog
        while p.runner.running:
            p.runner.finish(p.runner.running[0])
            await mesh.settle()
        assert sum(1 for k in p.state.task_done if k[0] == job) == 4
    finally:
        await mesh.close()


async def test_a_lone_peer_whose_slots_fill_its_cores_queues_only_short_calls() -> None:
    """Without a core to spare (`queue_alone` off: slots fill the cores, e.g. pinned to one),
    a lone peer queues no run of a call not known short: recording one run would preempt
    the next one's compute on the same core."""
    cfg = SchedulerConfig(store=StoreConfig("/nonexistent"), stagger_s=0.05, tick_s=0.25,
                          queue_ahead=1, queue_alone=False)
    mesh = JobMesh(1, CATALOG, cfg, slots=1, batch=True)
    try:
        mesh.submit("p0", _tasks(4))
        await mesh.settle()
        p = mesh["p0"]
        assert len(p.runner.running) == 1  # how long the call runs is not known yet
        p.runner.finish(p.runner.running[0])  # 0.01 s: short
        await mesh.settle()
        assert len(p.runner.running) == 2
    finally:
        await mesh.close()


async def test_a_long_call_is_not_queued_behind_the_slot() -> None:
    """A call whose last run here took longer than queue_ahead_max_s: a peer that frees
    meanwhile would wait that long for work queued here, so nothing is queued."""
    mesh, _, open_ = await _busy_pair(12)
    try:
        p = mesh["p0"]
        p.sched.cfg = AHEAD
        p.sched._runs.cfg = AHEAD
        p.sched._runs.last_s["T_WRITE"] = AHEAD.queue_ahead_max_s * 2
        p.sched._starved = dict.fromkeys(k for k in open_ if _first(k, ["p0", "p1"]) == "p0")
        p.sched.poke()
        await mesh.settle()
        assert len(p.runner.running) == 1 and not p.sched.backlog
    finally:
        await mesh.close()


async def _chunks_running_on_both() -> tuple[JobMesh, str, str, str]:
    """Two one-slot peers; T_WRITE's 24 files on one of them (the holder), then T_UPPER over
    them in 6 chunks of 4: the holder runs one, the other peer (after its stagger, fetching
    its items) another. The mesh, the job, the holder and the other peer."""
    cfg = SchedulerConfig(store=StoreConfig("/nonexistent"), stagger_s=0.05, tick_s=0.25,
                          queue_ahead=1, max_chunk_items=4)
    mesh = JobMesh(2, CATALOG, cfg, slots=1, batch=True)
    job, holder, other = await chunks_running_on_both(mesh, cfg)
    for p in mesh.peers.values():
        [key] = p.runner.running
        assert key.startswith(f"{job}/u/")
    assert holder in mesh[other].state.providers.get(
        mesh[other].state.splits[(job, "u")].payload["input"], set())
    return mesh, job, holder, other


@pytest.mark.parametrize("where", ["holder", "other"])
async def test_only_a_peer_holding_the_input_queues_a_chunk_behind_its_slot(
        monkeypatch: pytest.MonkeyPatch, where: str) -> None:
    """A short per-item call this peer comes first for, its slot busy: the holder of the
    task's input queues its next chunk behind the slot; the other peer does not (it would
    fetch the items first and hold the chunk back while the holder frees), also when its
    slot frees: then it claims one chunk, not one more behind it."""
    mesh, job, holder, other = await _chunks_running_on_both()
    try:
        p = mesh[holder if where == "holder" else other]
        p.sched._runs.last_s["T_UPPER"] = 0.01  # a short call
        monkeypatch.setattr(p.sched, "_next_starved", lambda: ((job, "u"), True))
        p.sched._starved = {(job, "u"): None}
        p.sched.poke()
        await mesh.settle()  # no time passes
        assert len(p.runner.running) == (2 if where == "holder" else 1)
        if where == "other":
            p.runner.finish(p.runner.running[0])  # its slot frees
            await mesh.settle()
            assert len(p.runner.running) == 1
    finally:
        await mesh.close()


async def test_a_holders_chunk_long_in_all_but_short_per_item_is_queued_and_left_to_it() -> None:
    """The holder's chunk of 4 items of T_UPPER ran 0.07 s: longer than queue_ahead_max_s
    (0.05 s) but 0.0175 s an item, within queue_ahead_item_max_s (0.02 s here). A peer
    without the items would fetch each first, whatever the chunk's length (bench_mesh's
    per-file map under load: chunks of 56 items ran 45-170 ms, and with the fixed bound
    alone the holder claimed one at a time while the others fetched the rest): the holder
    queues its next chunk behind its busy slot as the one before ends (not only when its
    slot frees), and the other peer, its slot free, leaves the open chunk to it for
    local_wait_s beyond its stagger."""
    cfg = SchedulerConfig(store=StoreConfig("/nonexistent"), stagger_s=0.05, tick_s=0.25,
                          queue_ahead=1, max_chunk_items=4, queue_ahead_item_max_s=0.02)
    mesh = JobMesh(2, CATALOG, cfg, slots=1, batch=True)
    try:
        _, holder, other = await chunks_running_on_both(mesh, cfg)
        h, o = mesh[holder], mesh[other]
        h.runner.finish(h.runner.running[0], duration_s=0.07)
        await mesh.settle()  # no time passes
        assert len(h.runner.running) == 2  # its slot freed: one runs, the next waits behind it
        h.runner.finish(h.runner.running[0], duration_s=0.07)
        await mesh.settle()
        assert len(h.runner.running) == 2  # its slot still busy: the next queued at once
        o.runner.finish(o.runner.running[0], duration_s=0.3)
        await mesh.settle()
        await mesh.advance(cfg.stagger_s * 2)
        mesh.heartbeats()
        await mesh.advance(cfg.stagger_s)
        assert not o.runner.running
        await mesh.advance(cfg.local_wait_s)
        assert len(o.runner.running) == 1  # the bound: the holder is still on its chunks
    finally:
        await mesh.close()


@pytest.mark.parametrize("holder_run_s", [0.01, 0.5])
async def test_a_peer_without_the_input_leaves_a_short_calls_chunks_to_its_holder(
        holder_run_s: float) -> None:
    """The holder's chunks of T_UPPER ran within queue_ahead_max_s (0.01 s): the other peer,
    its slot free, leaves the open chunks to the holder for local_wait_s beyond its stagger
    (fetching their items would take it longer than the holder's runs), then claims one if
    the holder has not (the bound: a holder busy elsewhere does not hold the task up). The
    holder's runs took 0.5 s: the other peer claims after its stagger, as before."""
    mesh, job, holder, other = await _chunks_running_on_both()
    try:
        h, o = mesh[holder], mesh[other]
        h.runner.finish(h.runner.running[0], duration_s=holder_run_s)
        await mesh.settle()
        assert h.runner.running  # the holder took its next chunk (or two) at once
        o.runner.finish(o.runner.running[0], duration_s=0.3)
        await mesh.settle()
        await mesh.advance(h.sched.cfg.stagger_s * 2)
        mesh.heartbeats()  # the holder shows a free slot or not: the other waits either way
        await mesh.advance(h.sched.cfg.stagger_s)
        assert len(o.runner.running) == (1 if holder_run_s > 0.05 else 0)
        if holder_run_s < 0.05:
            await mesh.advance(h.sched.cfg.local_wait_s)
            assert len(o.runner.running) == 1  # the holder is still on its chunk
        done = 0
        while any(p.runner.running for p in mesh.peers.values()) and done < 20:
            for p in mesh.peers.values():
                for key in p.runner.running:
                    p.runner.finish(key, duration_s=holder_run_s)
                    done += 1
            await mesh.settle()
            await mesh.advance(h.sched.cfg.local_wait_s + 0.1)
        assert (job, "u") in h.state.task_done
        ran = [e.payload["chunk"] for p in ("p0", "p1")
               for e in mesh.events(EventType.CHUNK_DONE, p, job=job, task="u")
               if e.origin == p]
        assert sorted(ran) == list(range(6))  # each chunk ran once
    finally:
        await mesh.close()
