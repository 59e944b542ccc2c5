"""An assembly on a peer whose item cache entries compaction deleted (peer/jobs/sim.py): a split
keeps the results of the items it leaves out, so the output is whole wherever it is made; a
split of an older peer, which keeps none, is not assembled where an entry is missing (the
splitter, which holds them, assembles). Fake clock and runner; no processes, sockets, sleeps."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from peer.cids import sha256_cid
from peer.ipfs.store import StoreConfig
from peer.jobs.claims import task_status
from peer.jobs.ports import SchedulerConfig
from peer.jobs.sim import JobMesh
from peer.log import Event, EventType
from tasks import registry

CATALOG = registry.load(("tests.fixture_tasks",))
CFG = SchedulerConfig(store=StoreConfig("/nonexistent"), lease_s=10.0, stagger_s=0.05,
                      max_attempts=3)
WRITE = {"name": "w", "call": "T_WRITE", "params": {"files": 3}}
UPPER = {"name": "u", "call": "T_UPPER", "params": {}, "depends": ["w"]}
TURN_S = max(CFG.stagger_s * 2, CFG.tick_s)


async def _until(mesh: JobMesh, done: Callable[[], bool], rounds: int = 200) -> None:
    for _ in range(rounds):
        if done():
            return
        await mesh.advance(TURN_S)
    raise AssertionError("not reached")


def _done(mesh: JobMesh, job: str, pid: str = "p0") -> bool:
    return task_status(mesh[pid].state, job, "u", CFG.max_attempts) == "done"


def _output(mesh: JobMesh, job: str, pid: str = "p0") -> dict[str, str]:
    ev = mesh[pid].state.task_done[(job, "u")]  # (the first of duplicates)
    return dict(mesh.content.dirs[ev.payload["output"]])


def _u_split(ev: Event, job: str) -> bool:
    return (ev.type in (EventType.TASK_SPLIT, EventType.TASK_SPLIT_REF)
            and ev.payload["task"] == "u" and ev.payload["job"] == job)


async def _second_job(mesh: JobMesh, older: bool = False) -> tuple[str, str, dict[str, str]]:
    """A first job computes 3 items; a second's input holds them and one more. Its split
    is held back from the other peers, which then lose the 3 items' cache entries (as
    compaction deletes them) before they fold it; the splitter goes silent. The job, the
    splitter and the first job's results. `older`: every peer splits as a peer of the
    previous release does (no `kept`)."""
    first = mesh.submit("p0", [WRITE, UPPER])
    await _until(mesh, lambda: _done(mesh, first))
    results = _output(mesh, first)
    [w] = mesh.events(EventType.TASK_DONE, "p0", job=first, task="w")
    listing = mesh.content.dirs[w.payload["output"]]
    inp = str(sha256_cid(b"the second input", "dag-pb", 1))  # (a valid CID for the spec)
    mesh.content.dirs[inp] = {**listing, "f0099.txt":
                              mesh["p0"].store.add_bytes(b"one more file")}
    mesh["p0"].data.mark(inp)
    mesh.emit("p0", EventType.PROVIDE, {"cids": [inp]})
    if older:
        for p in mesh.peers.values():
            split = p.sched.planner.split

            def without_kept(*a: Any, _split: Any = split) -> dict[str, Any]:
                out: dict[str, Any] = _split(*a)
                out.pop("kept", None)
                return out
            p.sched.planner.split = without_kept  # type: ignore[method-assign]
    mesh["p0"].runner.auto = False  # (the splitter: its claim of the new item hangs)
    job = f"j{mesh._jobs + 1}"
    mesh.hold = lambda ev, to: _u_split(ev, job)
    assert mesh.submit("p0", [{"name": "w", "cid": inp}, UPPER]) == job
    await _until(mesh, lambda: any(_u_split(s, job) for p in mesh.peers.values()
                                   for e in p.emitted for s in e.singles))
    [splitter] = {p.peer_id for p in mesh.peers.values() for e in p.emitted
                  for s in e.singles if _u_split(s, job)}
    assert splitter == "p0"  # the input's holder
    keys = [k for k, v in mesh[splitter].state.cache.items()
            if isinstance(v, dict) and v["c"] in results.values()]
    assert len(keys) == 3
    for pid, p in mesh.peers.items():
        if pid != splitter:  # what compaction's `_reap` does to the fold's memory
            for k in keys:
                del p.state.cache[k]
                del p.state._cache_src[k]
    mesh.hold = None
    mesh.deliver()
    for p in mesh.peers.values():  # (as replication does: the others may run the item)
        p.data.mark(inp)
    mesh.silent.add(splitter)
    return job, splitter, results


@pytest.mark.parametrize("max_split_bytes", [8 << 20, 64], ids=["inline", "by-reference"])
async def test_an_assembly_without_the_cache_entries_makes_the_whole_output(
        max_split_bytes: int) -> None:
    cfg = SchedulerConfig(store=StoreConfig("/nonexistent"), lease_s=10.0, stagger_s=0.05,
                          max_attempts=3, max_split_bytes=max_split_bytes)
    mesh = JobMesh(3, CATALOG, cfg, auto=True, batch=True)
    try:
        job, splitter, results = await _second_job(mesh)
        other = next(pid for pid in mesh.peers if pid != splitter)
        [split] = mesh.events(EventType.TASK_SPLIT_REF if max_split_bytes == 64
                              else EventType.TASK_SPLIT, other, job=job, task="u")
        assert ("kept_listing" in split.payload) == (max_split_bytes == 64)
        await _until(mesh, lambda: _done(mesh, job, other))
        out = _output(mesh, job, other)
        assert sorted(out) == ["f0000.txt", "f0001.txt", "f0002.txt", "f0099.txt"]
        assert {out[p] for p in results} == set(results.values())  # the cached ones
        assert mesh[other].state.task_done[(job, "u")].origin != splitter
    finally:
        await mesh.close()


async def test_an_older_peers_split_is_not_assembled_where_an_entry_is_gone() -> None:
    mesh = JobMesh(2, CATALOG, CFG, auto=True, batch=False)
    try:
        job, splitter, results = await _second_job(mesh, older=True)
        other = next(pid for pid in mesh.peers if pid != splitter)
        for _ in range(int(4 * CFG.lease_s / TURN_S)):  # the new item is run elsewhere
            await mesh.advance(TURN_S)
        assert not _done(mesh, job, other)  # no output without the 3 items
        why = mesh[other].sched.waiting()[(job, "u")]
        assert "cached results of 3 item(s)" in why
        mesh.heal()  # the splitter (which holds the entries) assembles
        await _until(mesh, lambda: _done(mesh, job, other))
        out = _output(mesh, job, other)
        assert sorted(out) == ["f0000.txt", "f0001.txt", "f0002.txt", "f0099.txt"]
        assert {out[p] for p in results} == set(results.values())
        assert (job, "u") not in mesh[other].sched.waiting()
    finally:
        await mesh.close()


async def test_a_restarted_peer_assembles_from_the_split_it_folded() -> None:
    mesh = JobMesh(2, CATALOG, CFG, auto=True, batch=True)
    try:
        job, splitter, results = await _second_job(mesh)
        other = next(pid for pid in mesh.peers if pid != splitter)
        await mesh.restart(other)
        await _until(mesh, lambda: _done(mesh, job, other))
        out = _output(mesh, job, other)
        assert {out[p] for p in results} == set(results.values()) and len(out) == 4
    finally:
        await mesh.close()
