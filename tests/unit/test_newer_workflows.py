"""Workflows of newer peers (docs/architecture.md): a stored task with keys this version does
not know is kept as stored and never run here; the rest of its job runs; what a user submits
is still checked strictly."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from peer.config import PeerConfig
from peer.errors import SpecError
from peer.ipfs.store import StoreConfig
from peer.jobs.ports import SchedulerConfig
from peer.jobs.sim import JobMesh
from peer.jobs.spec import from_obj, workflow_from_json
from peer.log import Event, EventType
from peer.node import Node
from tasks import registry

CATALOG = registry.load(("tests.fixture_tasks",))
WRITE = {"name": "w", "call": "T_WRITE", "params": {"files": 1}, "depends": []}


def stored(*tasks: dict[str, Any], **top: Any) -> dict[str, Any]:
    return {"name": "x", "tasks": list(tasks), **top}


@pytest.mark.parametrize(("task", "newer"), [
    ({**WRITE, "name": "f", "priority": 5}, ("priority",)),
    ({**WRITE, "name": "f", "requires": {"arch": "arm64", "mem_mb": 10}}, ("requires.arch",)),
    ({"name": "f", "call": "shell", "params": {"shell": "true", "env": {}, "stdin": "",
                                               "timeout_s": 3}, "depends": ["w"]},
     ("params.timeout_s",)),
    ({"name": "f", "cid": "bafkreiaheqdfvsfwin2qysg2nd3n4upuu7oyiwtnuvai2oi3lesbeuh42q",
      "path": "a/b"}, ("path",)),
])
def test_a_task_with_keys_of_a_newer_version_is_kept_as_stored(task: dict[str, Any],
                                                               newer: tuple[str, ...]) -> None:
    doc = json.loads(json.dumps(stored(WRITE, task)))
    wf = workflow_from_json(doc)
    assert wf.task("f").newer == newer and wf.task("w").newer == ()
    assert wf.to_json() == doc  # forwarded and shown as the newer peer stored it
    assert workflow_from_json(wf.to_json()) == wf


def test_top_level_keys_of_a_newer_version_hold_back_every_task() -> None:
    doc = stored(WRITE, priority="high")
    wf = workflow_from_json(doc)
    assert wf.task("w").newer == ("workflow.priority",)
    assert wf.to_json() == doc


@pytest.mark.parametrize(("task", "field"), [
    ({"call": "T_WRITE", "priority": 5}, "tasks[1].name"),  # the graph must still be sound
    ({"name": "f", "priority": 5, "depends": ["nope"]}, "tasks[1].depends[0]"),
    ({"name": "f", "priority": 5, "depends": "w"}, "tasks[1].depends"),
])
def test_a_newer_task_still_needs_a_sound_graph(task: dict[str, Any], field: str) -> None:
    with pytest.raises(SpecError) as e:
        workflow_from_json(stored(WRITE, task))
    assert e.value.field == field


def test_what_a_user_submits_is_still_checked_strictly() -> None:
    with pytest.raises(SpecError) as e:
        from_obj(stored(WRITE, {**WRITE, "name": "f", "priority": 5}), CATALOG)
    assert e.value.field == "tasks[1].priority"
    with pytest.raises(SpecError) as e:
        from_obj(stored(WRITE, priority=1), CATALOG)
    assert e.value.field == "priority"


async def test_a_peer_runs_the_tasks_it_knows_and_leaves_the_newer_ones_waiting() -> None:
    cfg = SchedulerConfig(store=StoreConfig("/nonexistent"), stagger_s=0.05)
    mesh = JobMesh(2, CATALOG, cfg, auto=True)  # runs finish at once
    try:
        doc = stored(WRITE, {**WRITE, "name": "f", "cache": False, "priority": 5},
                     {"name": "u", "call": "T_UPPER", "params": {}, "depends": ["f"]})
        mesh.emit("p0", EventType.JOB_SUBMITTED, {"job": "j1", "workflow": doc})
        await mesh.advance(1.0)
        done = {e.payload["task"] for e in mesh.events(EventType.TASK_DONE, job="j1")}
        assert done == {"w"}  # f is neither run nor taken from the cache; u waits for it
        assert mesh.events(EventType.CLAIM, job="j1", task="f") == []
        for pid in ("p0", "p1"):
            why = mesh[pid].sched.waiting()[("j1", "f")]
            assert why == ("waiting for a peer of a newer version: this one does not know "
                           "priority")
    finally:
        await mesh.close()


def test_the_door_admits_a_newer_peers_job_and_keeps_it_as_sent(tmp_path: Path) -> None:
    """Before this rule an unknown key refused the whole JOB_SUBMITTED (not stored, not
    forwarded, the job invisible here)."""
    node = Node(PeerConfig(data_dir=tmp_path, slots=1, mdns=False))
    node.listeners.clear()  # about the log only
    try:
        doc = stored(WRITE, {**WRITE, "name": "f", "priority": 5})
        ev = Event("o", 1, int(time.time() * 1000) << 16, EventType.JOB_SUBMITTED,
                   {"job": "j", "workflow": doc})
        assert node.merge([ev]) == [ev]
        assert node.state.jobs["j"].payload["workflow"] == doc
        broken = stored({**WRITE, "name": "f", "priority": 5, "depends": ["nowhere"]})
        ev2 = Event("o", 2, int(time.time() * 1000) << 16, EventType.JOB_SUBMITTED,
                    {"job": "k", "workflow": broken})
        assert node.merge([ev2]) == [] and "k" not in node.state.jobs  # the graph still counts
    finally:
        node.log.close()
