"""The live peers are read once while a merge tells its listeners (Node.live_peers)."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from peer.config import PeerConfig
from peer.log import Event, EventType
from peer.node import Node


class FakeGossip:
    """What Node.merge and Node.live_peers ask of gossip; counts the membership reads."""

    def __init__(self) -> None:
        self.reads = 0
        self.live: dict[str, dict[str, Any]] = {"a": {"status": "alive"},
                                                "b": {"status": "alive"},
                                                "c": {"status": "suspect"}}

    def live_peers(self) -> dict[str, dict[str, Any]]:
        self.reads += 1
        return {p: dict(i) for p, i in self.live.items()}

    def acknowledge(self, origins: Any) -> None:
        pass


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    n = Node(PeerConfig(data_dir=tmp_path, slots=1, mdns=False))
    n.listeners.clear()  # only the test's listener
    yield n
    n.log.close()


def jobs(n: int) -> list[Event]:
    hlc = int(time.time() * 1000) << 16
    wf = {"name": "w", "tasks": [{"name": "t", "call": "ECHO", "params": {"text": "x"},
                                  "depends": []}]}
    return [Event("o", i + 1, hlc + i, EventType.JOB_SUBMITTED, {"job": f"j{i}", "workflow": wf})
            for i in range(n)]


def test_a_merge_reads_the_membership_once_for_all_its_listeners(node: Node) -> None:
    g = FakeGossip()
    node.gossip = g  # type: ignore[assignment]
    seen: list[dict[str, Mapping[str, Any]]] = []

    def listener(ev: Event) -> None:
        for _ in range(2):  # (as the inline replica rule and the replicator do)
            live = node.live_peers()
            seen.append(dict(live))
            live.pop("a", None)  # a caller's own dict: the next one is whole

    node.listeners.append(listener)
    assert len(node.merge(jobs(5))) == 5
    assert g.reads == 1
    assert len(seen) == 10
    assert all(s == {"a": {"status": "alive"}, "b": {"status": "alive"}} for s in seen)


def test_outside_a_merge_the_membership_is_read_at_every_call(node: Node) -> None:
    g = FakeGossip()
    node.gossip = g  # type: ignore[assignment]
    node.merge(jobs(2))
    assert set(node.live_peers()) == {"a", "b"}
    g.live.pop("a")  # the membership changed after the merge: seen at once
    assert set(node.live_peers()) == {"b"}
    assert g.reads == 2


def test_the_next_merge_reads_the_membership_again(node: Node) -> None:
    g = FakeGossip()
    node.gossip = g  # type: ignore[assignment]
    seen: list[set[str]] = []
    node.listeners.append(lambda ev: seen.append(set(node.live_peers())))
    evs = jobs(4)
    node.merge(evs[:2])
    g.live.pop("b")
    node.merge(evs[2:])
    assert seen == [{"a", "b"}, {"a", "b"}, {"a"}, {"a"}]
    assert g.reads == 2


@pytest.mark.listener_errors
def test_a_listener_that_raises_leaves_no_memo_behind(node: Node) -> None:
    g = FakeGossip()
    node.gossip = g  # type: ignore[assignment]

    def bad(ev: Event) -> None:
        node.live_peers()
        raise RuntimeError("boom")

    node.listeners.append(bad)
    node.merge(jobs(1))  # (logged and counted, not raised: Node._tell, session 47)
    assert node.listener_errors == 1
    g.live.pop("a")
    assert set(node.live_peers()) == {"b"}
