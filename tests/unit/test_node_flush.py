"""Node.emit batches persistence and pushes per loop turn; nothing leaves unpersisted."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from peer.config import PeerConfig
from peer.log import Event, EventLog, EventType
from peer.node import Node


class _Gossip:
    def __init__(self) -> None:
        self.frames: list[list[Event]] = []

    def broadcast(self, events: Sequence[Event]) -> None:
        self.frames.append(list(events))


def _node(d: Path) -> tuple[Node, list[int], _Gossip]:
    node = Node(PeerConfig(data_dir=d, slots=1, mdns=False))
    node.listeners.clear()  # no scheduler reactions: this is about the log and the push
    txns: list[int] = []
    append = node.log.append

    def spy(events: Sequence[Event], sync: bool | None = None) -> None:
        txns.append(len(events))
        append(events, sync)

    node.log.append = spy  # type: ignore[method-assign]
    gossip = _Gossip()
    node.gossip = gossip  # type: ignore[assignment]
    return node, txns, gossip


def _stored(d: Path) -> int:
    log = EventLog(d / "events.sqlite")
    try:
        return sum(1 for _ in log.load())
    finally:
        log.close()


async def test_events_of_one_loop_turn_are_one_transaction_and_one_push(tmp_path: Path) -> None:
    node, txns, gossip = _node(tmp_path)
    for i in range(5):
        node.emit(EventType.PROVIDE, {"cids": [f"c{i}"]})
    assert node.state.heads[node.peer_id] == 5  # folded at once
    assert txns == [] and gossip.frames == []  # not yet written nor sent
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert txns == [5]
    assert [[e.seq for e in f] for f in gossip.frames] == [[1, 2, 3, 4, 5]]
    assert _stored(tmp_path) == 5
    node.emit(EventType.PROVIDE, {"cids": ["c5"]})
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert txns == [5, 1]
    node.log.close()


async def test_heads_and_events_are_flushed_before_they_are_read_for_peers(
        tmp_path: Path) -> None:
    node, txns, gossip = _node(tmp_path)
    node.emit(EventType.PROVIDE, {"cids": ["a"]})
    assert node.heads()[node.peer_id] == 1
    assert txns == [1] and len(gossip.frames) == 1  # on disk and pushed before it was read
    node.emit(EventType.PROVIDE, {"cids": ["b"]})
    got: Any = node.events_after({}, 10)
    assert [e.seq for e in got] == [1, 2] and txns == [1, 1]
    await asyncio.sleep(0)
    assert txns == [1, 1]  # the scheduled flush finds nothing left
    node.log.close()


def test_without_a_loop_emit_writes_through(tmp_path: Path) -> None:
    node, txns, gossip = _node(tmp_path)
    node.emit(EventType.PROVIDE, {"cids": ["a"]})
    assert txns == [1] and _stored(tmp_path) == 1 and len(gossip.frames) == 1
    node.log.close()
