"""Self-repair of the scheduler (issue 11 item 5) on the in-memory mesh (peer/jobs/sim.py) with a
fake clock: claims with no run behind them, leases renewed only for reported runs, uncounted
failures of departed holders, data with no live provider, lost results recomputed."""

from __future__ import annotations

import errno
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import pytest

from peer.errors import NotFound
from peer.ipfs.store import StoreConfig
from peer.jobs.claims import task_status
from peer.jobs.ports import SchedulerConfig
from peer.jobs.sim import JobMesh
from peer.log import EventType
from tasks import registry
from tests.helpers import meshes

CATALOG = registry.load(("tests.fixture_tasks",))
CFG = SchedulerConfig(store=StoreConfig("/nonexistent"), lease_s=10.0, stagger_s=0.05,
                      max_attempts=3, fetch_attempts=3, fetch_backoff_s=1.0,
                      fetch_max_backoff_s=8.0)
WRITE = {"name": "w", "call": "T_WRITE", "params": {"files": 2}}
UPPER = {"name": "u", "call": "T_UPPER", "params": {}, "depends": ["w"]}
SRC = "bafkreiaheqdfvsfwin2qysg2nd3n4upuu7oyiwtnuvai2oi3lesbeuh42q"
SRC2 = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
TURN_S = max(CFG.stagger_s * 2, CFG.tick_s)
MeshFactory = Callable[..., JobMesh]


@pytest.fixture
async def make_mesh() -> AsyncIterator[MeshFactory]:
    async with meshes(CATALOG, CFG) as make:
        yield make


def only_runner(mesh: JobMesh, key: str) -> str:
    peers = [pid for pid, p in mesh.peers.items() if key in p.runner.running]
    assert len(peers) == 1, f"{key} runs on {peers}"
    return peers[0]


def failed(mesh: JobMesh, job: str, task: str = "w", pid: str = "p0") -> list[tuple[Any, ...]]:
    """(origin, kind, attempt, counts) of the task's failures, in order."""
    return [(e.origin, e.payload["kind"], e.payload["attempt"], e.payload.get("counts", True))
            for e in mesh.events(EventType.CHUNK_FAILED, pid, job=job, task=task)]


async def started(mesh: JobMesh) -> tuple[str, str]:
    job = mesh.submit("p0", [WRITE])
    await mesh.settle()
    return job, only_runner(mesh, f"{job}/w/0/0")


async def finish_elsewhere(mesh: JobMesh, job: str, attempt: int) -> None:
    key = f"{job}/w/0/{attempt}"
    mesh[only_runner(mesh, key)].runner.finish(key)
    await mesh.settle()
    for pid in mesh.peers:
        if pid not in mesh.silent:
            assert task_status(mesh[pid].state, job, "w", CFG.max_attempts) == "done"


# -- 1. a peer fails its own claim when no run is behind it --------------------------------
async def test_a_run_whose_input_fetch_raises_an_oserror_ends_its_claim(
        make_mesh: MeshFactory) -> None:
    mesh = make_mesh(2)
    async def enospc(cids: Sequence[str], hints: Sequence[str] = ()) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    for p in mesh.peers.values():
        p.data.ensure = enospc  # type: ignore[method-assign]
    mesh.content.files[SRC] = b"input"
    job = mesh.submit("p0", [{"name": "src", "cid": SRC},
                             {"name": "w", "call": "T_CONCAT", "params": {}, "depends": ["src"]}])
    await mesh.settle()
    [(holder, kind, attempt, counts)] = failed(mesh, job)[:1]
    assert (kind, attempt, counts) == ("storage", 0, True)  # a full disk (not counted)
    assert mesh[holder].sched.runs == {}
    [ev] = mesh.events(EventType.CHUNK_FAILED, job=job)[:1]
    assert "No space left on device" in ev.payload["error"]


async def test_a_run_whose_outcome_cannot_be_recorded_ends_its_claim(
        make_mesh: MeshFactory) -> None:
    mesh = make_mesh(2)
    job, holder = await started(mesh)

    def full(data: bytes, cid_version: int = 1) -> str:
        raise OSError(errno.ENOSPC, "No space left on device")

    saved = mesh[holder].store.add_bytes
    mesh[holder].store.add_bytes = full  # type: ignore[method-assign]
    mesh[holder].runner.finish(f"{job}/w/0/0", {"output": "bafkout"})
    await mesh.settle()
    assert failed(mesh, job) == [(holder, "storage", 0, True)]
    mesh[holder].store.add_bytes = saved  # type: ignore[method-assign]
    await finish_elsewhere(mesh, job, 1)


async def test_a_claim_left_without_its_run_is_failed_by_its_own_peer_at_the_next_tick(
        make_mesh: MeshFactory) -> None:
    mesh = make_mesh(2)
    job, holder = await started(mesh)
    run = mesh[holder].sched.runs[next(iter(mesh[holder].sched.runs))]
    assert run.task is not None
    run.task.cancel()  # the run ends without recording anything (as a bug would)
    await mesh.settle()
    assert mesh.events(EventType.CHUNK_FAILED, job=job) == []
    await mesh.advance(CFG.tick_s)  # well within the lease: the holder itself notices
    assert failed(mesh, job) == [(holder, "lost", 0, True)]
    await finish_elsewhere(mesh, job, 1)


async def test_a_claim_whose_outcome_is_being_recorded_is_not_failed(
        make_mesh: MeshFactory) -> None:
    mesh = make_mesh(2)
    job, holder = await started(mesh)
    for _ in range(4):
        await mesh.advance(CFG.tick_s)
    assert mesh.events(EventType.CHUNK_FAILED, job=job) == []
    mesh[holder].runner.finish(f"{job}/w/0/0")
    await mesh.advance(CFG.tick_s)
    assert mesh.events(EventType.CHUNK_FAILED, job=job) == []
    assert task_status(mesh["p1"].state, job, "w", CFG.max_attempts) == "done"


# -- 2. a lease is renewed only while the holder reports the run -----------------------------
@pytest.mark.parametrize(("report", "lapses"), [
    ("nothing", True),  # alive, heartbeats flow, but its run is gone
    ("other", True),  # it reports another attempt
    ("no-field", False),  # a peer that does not report runs: any heartbeat renews
])
async def test_a_lease_is_renewed_only_while_the_holder_reports_the_run(
        make_mesh: MeshFactory, report: str, lapses: bool) -> None:
    mesh = make_mesh(2)
    job, holder = await started(mesh)
    other = "p1" if holder == "p0" else "p0"

    def tamper(pid: str, info: dict[str, Any]) -> dict[str, Any]:
        if pid != holder:
            return info
        if report == "no-field":
            return {k: v for k, v in info.items() if k != "running"}
        return {**info, "running": [[job, "w", 0, 7]] if report == "other" else []}

    mesh.tamper = tamper
    mesh[holder].sched._check_claims = lambda: None  # type: ignore[method-assign]
    for _ in range(6):
        await mesh.advance(CFG.lease_s / 2)
    got = failed(mesh, job, pid=other)
    if lapses:  # counted: the holder is alive, the run is not
        assert got[:1] == [(other, "lease", 0, True)]
    else:
        assert got == []


# -- 3. leases of departed or restarted holders do not count ---------------------------------
async def test_lease_expiries_of_departed_holders_do_not_count_against_attempts(
        make_mesh: MeshFactory) -> None:
    mesh = make_mesh(5)
    job = mesh.submit("p0", [WRITE])
    await mesh.settle()
    for attempt in range(CFG.max_attempts + 1):  # more departures than max_attempts
        key = f"{job}/w/0/{attempt}"
        mesh.silent.add(only_runner(mesh, key))  # it leaves the mesh mid-run
        await mesh.advance(CFG.lease_s * 1.2)
    live = next(p for p in mesh.peers if p not in mesh.silent)
    kinds = failed(mesh, job, pid=live)  # every live peer may notice: duplicates
    assert sorted({(k, a, c) for _, k, a, c in kinds}) == [
        ("lease", a, False) for a in range(CFG.max_attempts + 1)]
    await finish_elsewhere(mesh, job, CFG.max_attempts + 1)


async def test_a_restarted_holders_lost_claim_does_not_count(make_mesh: MeshFactory) -> None:
    cfg = SchedulerConfig(store=CFG.store, lease_s=CFG.lease_s, stagger_s=CFG.stagger_s,
                          max_attempts=1)
    mesh = make_mesh(2, cfg=cfg)
    job, holder = await started(mesh)
    await mesh.restart(holder)
    await mesh.settle()
    assert failed(mesh, job) == [(holder, "lost", 0, False)]
    # with max_attempts 1 a counted failure would have failed the task: it runs again
    assert task_status(mesh["p0"].state, job, "w", 1) == "running"


# -- 4. data with no live provider: bounded retries, a visible reason, a recompute -----------
async def test_a_task_whose_input_has_no_provider_waits_visibly_with_backoff(
        make_mesh: MeshFactory, caplog: pytest.LogCaptureFixture) -> None:
    mesh = make_mesh(2)
    calls: list[str] = []

    async def nowhere(cids: Sequence[str], hints: Sequence[str] = ()) -> None:
        calls.append(cids[0])
        raise NotFound(f"no live peer could provide {cids[0]}")

    for p in mesh.peers.values():
        p.data.ensure = nowhere  # type: ignore[method-assign]
    gone = SRC  # a source two inputs merge from: a task that needs its data
    job = mesh.submit("p0", [{"name": "a", "cid": gone}, {"name": "b", "cid": SRC2},
                             {"name": "w", "call": "T_CONCAT", "params": {},
                              "depends": ["a", "b"]}])
    caplog.set_level(logging.INFO, "banzai.scheduler")
    await mesh.settle()
    for _ in range(240):  # a minute of ticks
        await mesh.advance(CFG.tick_s)
    waits = [p.sched.waiting().get((job, "w")) for p in mesh.peers.values()]
    assert all(w is not None and "no live peer could provide" in w for w in waits), waits
    # backoff 1, 2, 4, 8, 8 ... s: at most ~10 fetches a peer in a minute (not 240)
    assert 2 <= len(calls) <= 2 * 12, len(calls)
    lines = [r for r in caplog.records if "waiting for data" in r.getMessage()]
    assert len(lines) == 2  # one line per peer, when it started waiting
    assert task_status(mesh["p0"].state, job, "w", CFG.max_attempts) == "pending"


async def test_item_results_in_no_store_are_recomputed_from_the_tasks_inputs(
        make_mesh: MeshFactory) -> None:
    mesh = make_mesh(2)
    job = mesh.submit("p0", [WRITE, UPPER])
    await mesh.settle()
    mesh[only_runner(mesh, f"{job}/w/0/0")].runner.finish(f"{job}/w/0/0")
    await mesh.advance(TURN_S)
    key = f"{job}/u/0/0"
    holder = only_runner(mesh, key)
    items = mesh[holder].runner.payloads[key]["items"]
    # Results recorded in the log whose blocks no peer has (a kill -9 lost them):
    lost = {path: {"n": path, "c": f"bafklost{i}"} for i, (path, _) in enumerate(items)}
    mesh[holder].data.mark = lambda cid: None  # type: ignore[method-assign]
    mesh[holder].runner.finish(key, {"items": lost, "inputs": items})
    await mesh.settle()
    for _ in range(60):  # backoff 1 + 2 + 4 s, then a recompute
        await mesh.advance(CFG.tick_s)
        if mesh.events(EventType.CLAIM, job=job, task="u", attempt=1):
            break
    reopen = [e for e in mesh.events(EventType.CHUNK_FAILED, job=job, task="u")
              if e.payload.get("reopen")]
    assert reopen and all(e.payload["attempt"] == 0 for e in reopen), reopen
    rerun = f"{job}/u/0/1"
    again = only_runner(mesh, rerun)
    assert mesh[again].runner.payloads[rerun]["items"] == items  # cached or not: all rerun
    mesh[again].runner.finish(rerun)
    await mesh.advance(TURN_S)
    for pid in mesh.peers:
        assert task_status(mesh[pid].state, job, "u", CFG.max_attempts) == "done"
    [out] = mesh.events(EventType.TASK_DONE, job=job, task="u")
    listing = mesh.content.dirs[out.payload["output"]]
    assert sorted(listing) == sorted(p for p, _ in items)
    assert all(c in mesh.content.files for c in listing.values())  # the recomputed results


async def test_a_whole_output_in_no_store_is_recomputed(make_mesh: MeshFactory) -> None:
    mesh = make_mesh(2)
    job = mesh.submit("p0", [WRITE, {"name": "c", "call": "T_CONCAT", "params": {},
                                     "depends": ["w"]}])
    await mesh.settle()
    mesh[only_runner(mesh, f"{job}/w/0/0")].runner.finish(f"{job}/w/0/0")
    await mesh.advance(TURN_S)
    key = f"{job}/c/0/0"
    holder = only_runner(mesh, key)
    mesh[holder].data.mark = lambda cid: None  # type: ignore[method-assign]
    mesh[holder].runner.finish(key, {"output": "bafklostwhole"})
    await mesh.settle()  # its CHUNK_DONE is out, its store lost the output
    mesh.silent.add(holder)  # then the producer leaves
    other = "p1" if holder == "p0" else "p0"
    for _ in range(80):
        await mesh.advance(CFG.tick_s)
        if key.replace("/0/0", "/0/1") in mesh[other].runner.running:
            break
    assert any(e.payload.get("reopen") for e in mesh.events(EventType.CHUNK_FAILED, other,
                                                             job=job, task="c"))
    mesh[other].runner.finish(f"{job}/c/0/1")
    await mesh.advance(TURN_S)
    assert task_status(mesh[other].state, job, "c", CFG.max_attempts) == "done"


# -- 6. a split too large for one frame goes as the CID of its listing -----------------------
async def test_a_split_too_large_for_a_frame_goes_as_a_listing_that_peers_fetch(
        make_mesh: MeshFactory) -> None:
    cfg = SchedulerConfig(store=CFG.store, lease_s=CFG.lease_s, stagger_s=CFG.stagger_s,
                          max_attempts=3, max_split_bytes=200, min_chunk_items=2,
                          max_chunk_items=2)
    mesh = make_mesh(3, cfg=cfg)
    job = mesh.submit("p0", [{**WRITE, "params": {"files": 8}}, UPPER])
    for _ in range(12):  # one slot each: the chunks spread over the peers
        await mesh.advance(TURN_S)
        for p in mesh.peers.values():
            for key in p.runner.running:
                p.runner.finish(key)
    assert mesh.events(EventType.TASK_SPLIT, job=job, task="u") == []
    [ref] = mesh.events(EventType.TASK_SPLIT_REF, job=job, task="u")
    listing = ref.payload["listing"]
    assert ref.payload["sizes"] == [2, 2, 2, 2] and "chunks" not in ref.payload
    assert listing in mesh[ref.origin].store.pinned
    ran = {e.origin for e in mesh.events(EventType.CHUNK_DONE, job=job, task="u")}
    assert ran - {ref.origin}, "only the splitting peer ran chunks"
    assert all(listing in mesh[p].data.fetched for p in ran - {ref.origin})
    for pid in mesh.peers:
        assert task_status(mesh[pid].state, job, "u", cfg.max_attempts) == "done"
    [out] = mesh.events(EventType.TASK_DONE, job=job, task="u")
    assert sorted(mesh.content.dirs[out.payload["output"]]) == [f"f{i:04d}.txt"
                                                                for i in range(8)]
    # a small split stays inline
    job2 = mesh.submit("p1", [{**WRITE, "params": {"files": 1, "tag": "x"}}])
    await mesh.advance(TURN_S)
    await mesh.advance(TURN_S)
    assert len(mesh.events(EventType.TASK_SPLIT, job=job2)) == 1


def test_a_split_by_reference_folds_as_a_split_and_is_validated() -> None:
    from peer.errors import InvalidEvent
    from peer.log import Event, MeshState, TaskSplitRef

    p = {"job": "j", "task": "t", "input": None, "listing": SRC, "sizes": [3, 1]}
    ev = Event("p0", 1, 5, EventType.TASK_SPLIT_REF, p)
    assert ev.body_as(TaskSplitRef).sizes == (3, 1)
    s = MeshState()
    s.apply(ev)
    assert s.splits[("j", "t")] == ev
    with pytest.raises(InvalidEvent):
        Event("p0", 2, 6, EventType.TASK_SPLIT_REF, {**p, "sizes": [-1]})


async def test_results_recorded_by_a_lost_attempt_and_lost_are_recomputed(
        make_mesh: MeshFactory) -> None:
    """Items flushed (CACHE_PUT) by an attempt that died with its peer, whose blocks are
    gone, are not in the later attempt's CHUNK_DONE (the netns kill -9 scenario, in
    memory). The restarted peer, which runs the chunk again, does not count its own
    providing of a result its store lacks: it computes that item again at once, with no
    failed fetch and no reopen (the reopen when another peer holds on: tests above)."""
    mesh = make_mesh(2)
    job = mesh.submit("p0", [{**WRITE, "params": {"files": 4}}, UPPER])
    await mesh.settle()
    mesh[only_runner(mesh, f"{job}/w/0/0")].runner.finish(f"{job}/w/0/0")
    await mesh.advance(TURN_S)
    key = f"{job}/u/0/0"
    holder = only_runner(mesh, key)
    path, cid = mesh[holder].runner.payloads[key]["items"][0]
    mesh.clock.advance(CFG.progress_interval_s)
    mesh[holder].runner.messages[key]("item", (path, cid, {"n": path, "c": "bafklostitem"}))
    await mesh.settle()
    assert mesh.events(EventType.CACHE_PUT)  # recorded in the log...
    assert holder in mesh[holder].state.providers["bafklostitem"]
    await mesh.restart(holder)  # ... then the peer died mid-chunk
    for _ in range(80):
        await mesh.advance(CFG.tick_s)
        for p in mesh.peers.values():
            for k in p.runner.running:
                p.runner.finish(k)
        if task_status(mesh["p0"].state, job, "u", CFG.max_attempts) == "done":
            break
    assert task_status(mesh["p0"].state, job, "u", CFG.max_attempts) == "done"
    rerun = mesh[holder].runner.payloads[f"{job}/u/0/1"]["items"]
    assert [path, cid] in rerun and len(rerun) == 4  # the lost item computed again
    assert not [e for e in mesh.events(EventType.CHUNK_FAILED, job=job, task="u")
                if e.payload.get("reopen")]
    [out] = mesh.events(EventType.TASK_DONE, job=job, task="u")
    listing = mesh.content.dirs[out.payload["output"]]
    assert "bafklostitem" not in listing.values() and len(listing) == 4


@pytest.mark.parametrize("left", [False, True])
async def test_a_cached_output_whose_providers_all_left_is_computed_again(
        make_mesh: MeshFactory, left: bool) -> None:
    """A cached output is a hit while it is here or a live peer provides it. Once every
    peer that provides it has left the mesh (here: cut off from the asker), a new job
    computes it again rather than finishing from the cache with an output no live peer
    can serve (its dependents would wait for it for good)."""
    mesh = make_mesh(2)
    job, runner = await started(mesh)
    await finish_elsewhere(mesh, job, 0)
    asker = next(p for p in mesh.peers if p != runner)
    out = mesh[asker].state.task_done[(job, "w")].payload["output"]
    assert not mesh[asker].store.has(out) and mesh[asker].state.providers.get(out) == {runner}
    if left:
        mesh.partition({runner}, {asker})
    again = mesh.submit(asker, [WRITE])
    await mesh.settle()
    if not left:
        [done] = mesh.events(EventType.TASK_DONE, asker, job=again)
        assert done.payload["cached"] is True and done.payload["output"] == out
        return
    assert mesh.events(EventType.TASK_DONE, asker, job=again) == []
    key = f"{again}/w/0/0"
    assert only_runner(mesh, key) == asker
    mesh[asker].runner.finish(key)
    await mesh.settle()
    [done] = mesh.events(EventType.TASK_DONE, asker, job=again)
    assert done.payload["cached"] is False and mesh[asker].store.has(done.payload["output"])


async def test_a_lone_peer_does_not_burn_attempts_on_an_input_it_cannot_fetch(
        make_mesh: MeshFactory) -> None:
    """A peer that knows no live peer (just restarted, or cut off) waits, visibly, to claim
    a chunk whose input is elsewhere: each claim would fail its fetch and count."""
    mesh = make_mesh(2)
    job = mesh.submit("p0", [WRITE, UPPER])
    await mesh.settle()
    mesh[only_runner(mesh, f"{job}/w/0/0")].runner.finish(f"{job}/w/0/0")
    await mesh.advance(TURN_S)
    holder = only_runner(mesh, f"{job}/u/0/0")  # the input's producer runs it
    lone = "p1" if holder == "p0" else "p0"
    mesh.silent.add(holder)
    for _ in range(int(CFG.lease_s * 3 / CFG.tick_s)):
        await mesh.advance(CFG.tick_s)
    assert [e.payload["kind"] for e in mesh.events(EventType.CHUNK_FAILED, lone, job=job)] \
        == ["lease"]  # the holder's lease (not counted); no fetch failure after it
    assert mesh.events(EventType.CLAIM, lone, job=job, task="u", attempt=1) == []
    assert "live peer" in mesh[lone].sched.waiting()[(job, "u")]
    mesh.heal()  # the others are back: it runs
    await mesh.advance(TURN_S)
    await mesh.advance(TURN_S)
    assert mesh.events(EventType.CLAIM, lone, job=job, task="u", attempt=1)
