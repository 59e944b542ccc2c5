"""The planner's bound on a task's input listing (`MAX_INPUT_ENTRIES`, session 51 helper e)
holds where this peer decides a split; an existing split's PARTIALs and assembly list under a
higher ceiling, and an assembly that fails for good fails its task: it ends, and its job
(review rr of session 51, RR-4)."""

from __future__ import annotations

from pathlib import Path

import pytest

from peer.errors import TooLarge
from peer.ipfs import EmbeddedStore
from peer.ipfs.store import StoreConfig
from peer.jobs.claims import task_failed
from peer.jobs.planner import Planner
from peer.jobs.ports import SchedulerConfig
from peer.jobs.retention import finished_at
from peer.jobs.sim import JobMesh
from peer.jobs.spec import from_obj, with_splits
from peer.log import EventType, MeshState
from tasks import registry
from tests.unit.split_helpers import write_then_upper

CATALOG = registry.load(("tests.fixture_tasks",))
URLS = [f"http://127.0.0.1:8765/cmu_us_{s}_arctic-0.90-release.zip" for s in ("awb", "bdl",
                                                                              "clb")]


async def test_a_split_made_without_the_bound_is_assembled_under_it() -> None:
    """T_UPPER over 24 files split under the default bound (a peer of ded7c6f2, or this
    data dir before its upgrade), then the bound is 10 on every peer: the chunks run and
    the task is assembled (its PARTIALs and assembly list the input under the ceiling);
    before, a peer's next look failed the task for good mid-run."""
    cfg = SchedulerConfig(store=StoreConfig("/nonexistent"), tick_s=0.25, lease_s=10.0)
    mesh = JobMesh(2, CATALOG, cfg)
    try:
        job, _, _ = await write_then_upper(mesh, files=24)
        assert mesh.events(EventType.TASK_SPLIT, job=job, task="u")
        for p in mesh.peers.values():
            p.sched.planner.max_input_entries = 10
            p.sched.planner._files.clear()  # (listed again: as after a restart)
        for _ in range(60):  # bounded: each round finishes every run
            if mesh.events(EventType.TASK_DONE, job=job, task="u"):
                break
            for p in mesh.peers.values():
                for r in list(p.runner.running):
                    p.runner.finish(r)
            await mesh.settle()
            await mesh.advance(cfg.stagger_s * 2 + 1)
            mesh.heartbeats()
        assert mesh.events(EventType.TASK_DONE, job=job, task="u")
        assert not mesh.events(EventType.CHUNK_FAILED, job=job, task="u")
    finally:
        await mesh.close()


async def test_a_value_split_whose_outputs_pass_the_bound_fails_and_its_job_ends() -> None:
    """FETCH_FESTVOX split by its 3 URLs, each chunk's output 5 files in a directory, the
    bound 4: its listing passes it. The task fails (a CHUNK_FAILED naming the bound,
    reopening the last chunk), and the job ends; before, it was neither done nor failed."""
    cfg = SchedulerConfig(store=StoreConfig("/nonexistent"), lease_s=10.0, stagger_s=0.05)
    m = JobMesh(1, CATALOG, cfg)
    wf = with_splits(from_obj({"name": "x", "tasks": [
        {"name": "fetch", "call": "FETCH_FESTVOX", "args": URLS}]}, CATALOG), CATALOG, True, True)
    m.emit("p0", EventType.JOB_SUBMITTED, {"job": "j1", "workflow": wf.to_json()})
    try:
        m["p0"].sched.planner.max_input_entries = 4
        st = m["p0"].store
        for _ in range(20):  # bounded: each round finishes the chunks running
            await m.settle()
            await m.advance(0.3)
            for k in list(m["p0"].runner.running):
                name = k.replace("/", "-")
                m["p0"].runner.finish(k, {"output": st.make_dir({name: st.make_dir(
                    {f"{i}.wav": st.add_bytes(f"{k} {i}".encode()) for i in range(5)})})})
            if m.events(EventType.CHUNK_FAILED, task="fetch"):
                break
        assert len(m.events(EventType.CHUNK_DONE, task="fetch")) == 3
        assert not m.events(EventType.TASK_DONE, task="fetch")
        [failed] = m.events(EventType.CHUNK_FAILED, task="fetch")
        assert failed.payload["kind"] == "error" and failed.payload["reopen"] is True
        assert "hold more than 4 files and directories in all" in failed.payload["error"]
        assert task_failed(m["p0"].state, "j1", "fetch", cfg.max_attempts)
        tasks = m["p0"].state.jobs["j1"].payload["workflow"]["tasks"]
        assert finished_at(m["p0"].state, "j1", tasks, cfg.max_attempts) is not None
    finally:
        await m.close()


def test_a_listing_kept_under_the_ceiling_is_refused_under_the_bound(tmp_path: Path) -> None:
    """An input listed for an assembly (under `max_assembly_entries`) and remembered is
    still refused where this peer splits (under `max_input_entries`), naming both."""
    store = EmbeddedStore(tmp_path / "store")
    root = store.make_dir({f"f{i:02d}": store.add_bytes(f"{i}".encode()) for i in range(12)})

    class Data:
        def mark(self, cid: str) -> None:
            pass

    planner = Planner(MeshState(), store, Data(), 1, 64,  # type: ignore[arg-type]
                      max_input_entries=10, max_assembly_entries=20)
    assert len(planner.files(root, "input", planner.max_assembly_entries)) == 12
    with pytest.raises(TooLarge, match=f"{root} holds more than 10 files"):
        planner.files(root, "input")
