"""A received workflow is rebuilt once per peer (issue 12): the door's check of a
JOB_SUBMITTED and the planner share `peer.jobs.spec.Workflows`, a memo by the identity of the
stored document."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from peer.config import PeerConfig
from peer.errors import SpecError
from peer.jobs import spec
from peer.jobs.spec import Workflows, workflow_from_json
from peer.log import Event, EventType
from peer.node import Node


def doc(n: int = 3, name: str = "w") -> dict[str, Any]:
    return {"name": name, "tasks": [{"name": f"t{i}", "call": "ECHO", "params": {"text": str(i)},
                                     "depends": [], "cache": True} for i in range(n)]}


def test_the_same_document_is_rebuilt_once() -> None:
    memo = Workflows()
    d = doc()
    first = memo.workflow(d)
    assert memo.workflow(d) is first
    assert memo.built == 1
    assert first == workflow_from_json(d)


def test_an_equal_document_that_is_another_object_is_rebuilt() -> None:
    memo = Workflows()
    a = memo.workflow(doc())
    b = memo.workflow(doc())
    assert a == b
    assert memo.built == 2


def test_the_memo_keeps_only_the_last_few() -> None:
    memo = Workflows(max_entries=2)
    docs = [doc(name=f"w{i}") for i in range(3)]
    for d in docs:
        memo.workflow(d)
    memo.workflow(docs[2])
    memo.workflow(docs[1])
    assert memo.built == 3
    memo.workflow(docs[0])  # pushed out by the later two
    assert memo.built == 4


def test_a_frame_of_many_submissions_is_rebuilt_once_each() -> None:
    """The door checks every submission of a frame before the planner reads any: ten
    one-task jobs are ten rebuilds, not twenty (a memo of 8 lost them all)."""
    memo = Workflows()
    docs = [doc(1, name=f"w{i}") for i in range(10)]
    for d in docs + docs:
        memo.workflow(d)
    assert memo.built == 10


def test_a_used_workflow_stays_and_the_memo_is_bounded_by_tasks() -> None:
    memo = Workflows(max_entries=10, max_tasks=10)
    a, b, c = doc(4, "a"), doc(4, "b"), doc(4, "c")
    memo.workflow(a)
    memo.workflow(b)
    memo.workflow(a)  # used: b is now the least recently used
    memo.workflow(c)  # 12 tasks > 10: b leaves
    memo.workflow(a)
    memo.workflow(c)
    assert memo.built == 3
    memo.workflow(b)
    assert memo.built == 4
    big = doc(30, "big")  # alone above the bound: still held, the newest
    memo.workflow(big)
    memo.workflow(big)
    assert memo.built == 5


def test_a_document_that_fails_is_not_remembered() -> None:
    memo = Workflows()
    bad = {"name": "w", "tasks": [{"name": "a", "call": "ECHO", "params": {},
                                   "depends": ["nope"]}]}
    for _ in range(2):
        with pytest.raises(SpecError):
            memo.workflow(bad)
    assert memo.built == 0


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    n = Node(PeerConfig(data_dir=tmp_path, slots=1, mdns=False))
    n.listeners.clear()  # no scheduler reactions: the test asks the planner itself
    yield n
    n.log.close()


def counting(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the workflows rebuilt (each rebuild sorts its tasks once)."""
    calls: list[int] = []
    real: Callable[..., list[int]] = spec._toposort

    def sort(*args: Any) -> list[int]:
        calls.append(1)
        return real(*args)

    monkeypatch.setattr(spec, "_toposort", sort)
    return calls


def test_a_received_job_is_rebuilt_once_for_the_door_and_the_planner(
        node: Node, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = counting(monkeypatch)
    hlc = int(time.time() * 1000) << 16
    ev = Event("o", 1, hlc, EventType.JOB_SUBMITTED, {"job": "j", "workflow": doc(50)})
    assert node.merge([ev]) == [ev]  # checked at the door: one rebuild
    assert len(calls) == 1
    wf = node.scheduler.workflow("j")
    assert [t.name for t in wf.tasks] == [f"t{i}" for i in range(50)]
    assert len(calls) == 1  # the planner took the door's
