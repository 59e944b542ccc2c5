"""Node.emit batches persistence and pushes per loop turn; nothing leaves unpersisted."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from peer.config import PeerConfig
from peer.log import Event, EventLog, EventType
from peer.node import Node
from tests.helpers import RecordingGossip


def _node(d: Path) -> tuple[Node, list[int], RecordingGossip]:
    node = Node(PeerConfig(data_dir=d, slots=1, mdns=False))
    node.listeners.clear()  # no scheduler reactions: this is about the log and the push
    txns: list[int] = []
    append = node.log.append

    def spy(events: Sequence[Event], sync: bool | None = None, keep_texts: bool = False) -> None:
        txns.append(len(events))
        append(events, sync, keep_texts)

    node.log.append = spy  # type: ignore[method-assign]
    gossip = RecordingGossip()
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


def _claim(i: int, cache: int = 0) -> dict[str, Any]:
    p: dict[str, Any] = {"job": "j", "task": f"t{i}", "split": ["x", 1], "chunk": 0,
                         "attempt": 0}
    if cache:
        p["cache"] = {f"k{i}-{n}": None for n in range(cache)}
    return p


async def _turn(node: Node, *emits: tuple[EventType, dict[str, Any]]) -> list[Event]:
    """Emit these in one loop turn; the events written at its end."""
    before = node.state.heads.get(node.peer_id, 0)
    for typ, p in emits:
        node.emit(typ, p)
    await asyncio.sleep(0)
    return [node.state.by_origin[node.peer_id][q]
            for q in range(before + 1, node.state.heads[node.peer_id] + 1)]


async def test_a_loop_turn_of_task_events_is_one_turn_event(tmp_path: Path) -> None:
    """Claims, outcomes, finished tasks of one loop turn: one TURN event (one seq, one row,
    one push), folded and told to the listeners part by part as they are emitted."""
    node, txns, gossip = _node(tmp_path)
    heard: list[Event] = []
    node.listeners.append(heard.append)
    node.live_peers = dict  # type: ignore[method-assign,assignment]
    node.state.apply(Event("s" * 16, 1, 1, EventType.JOB_SUBMITTED, {  # (a peer emits task
        "job": "j", "workflow": {"name": "w", "tasks": []}}))  # events of jobs it holds only)
    got = await _turn(node, (EventType.CLAIM, _claim(0)), (EventType.CLAIM, _claim(1)),
                      (EventType.TASK_DONE, {"job": "j", "task": "t9", "output": "c"}))
    assert [e.type for e in got] == [EventType.TURN] and got[0].seq == 1
    assert [(e.type, e.seq) for e in heard] == [(EventType.CLAIM, 1), (EventType.CLAIM, 1),
                                                (EventType.TASK_DONE, 1)]
    assert ("j", "t9") in node.state.task_done  # folded at once, before the turn ended
    assert txns == [1] and [[e.type for e in f] for f in gossip.frames] == [[EventType.TURN]]
    assert _stored(tmp_path) == 1
    # an event a turn does not hold ends the turn: seqs stay in emission order
    got = await _turn(node, (EventType.CLAIM, _claim(2)), (EventType.PROVIDE, {"cids": ["a"]}),
                      (EventType.CLAIM, _claim(3)), (EventType.CLAIM, _claim(4)))
    assert [(e.type, e.seq) for e in got] == [(EventType.CLAIM, 2), (EventType.PROVIDE, 3),
                                             (EventType.TURN, 4)]
    assert [p.payload["task"] for p in got[2].parts] == ["t3", "t4"]
    node.log.close()


async def test_turns_only_while_every_live_member_folds_them(tmp_path: Path) -> None:
    """Forward compatibility: a live peer that does not announce "batch-v1" (in its heartbeat
    or its MEMBER event) is of the previous version: it would keep a TURN unfolded, so it
    gets single events."""
    node, _, _ = _node(tmp_path)
    live: dict[str, dict[str, Any]] = {"old": {"calls": []}}  # a peer of the previous version
    node.live_peers = lambda: live  # type: ignore[method-assign]
    got = await _turn(node, (EventType.CLAIM, _claim(0)), (EventType.CLAIM, _claim(1)))
    assert [(e.type, e.seq) for e in got] == [(EventType.CLAIM, 1), (EventType.CLAIM, 2)]
    node.state.apply(Event("old", 1, 1, EventType.MEMBER, {  # it upgraded: its MEMBER says so
        "name": "o", "http": "", "calls": [], "slots": 1, "cores": 1, "mem_mb": 1,
        "features": ["batch-v1"]}))
    assert node.batching()
    live["new"] = {"features": ["batch-v1"]}
    live["other"] = {"features": ["something-else"]}  # its heartbeat: no turns
    assert not node.batching()
    del live["other"]
    got = await _turn(node, (EventType.CLAIM, _claim(2)), (EventType.CLAIM, _claim(3)))
    assert [e.type for e in got] == [EventType.TURN]
    node.log.close()


async def test_a_turn_is_bounded_in_size(tmp_path: Path) -> None:
    node, _, _ = _node(tmp_path)
    node.live_peers = dict  # type: ignore[method-assign,assignment]
    done = [{**_claim(i, cache=1500), "output": "c"} for i in range(5)]
    got = await _turn(node, *[(EventType.CHUNK_DONE, p) for p in done])
    assert [len(e.singles) for e in got] == [2, 2, 1]  # 1 + 1500 items each: 4096 at most
    assert [p.payload for e in got for p in e.singles] == done
    node.log.close()


def test_without_a_loop_a_turn_is_written_through(tmp_path: Path) -> None:
    node, txns, _ = _node(tmp_path)
    node.live_peers = dict  # type: ignore[method-assign,assignment]
    node.emit(EventType.CLAIM, _claim(0))
    node.emit(EventType.CLAIM, _claim(1))
    assert txns == [1, 1] and node.state.heads[node.peer_id] == 2
    node.log.close()


async def test_without_a_loop_an_inline_turn_is_fsynced_before_it_is_pushed(
        tmp_path: Path) -> None:
    node, _, gossip = _node(tmp_path)
    order: list[str] = []
    sync = node.log.sync
    node.log.sync = lambda since=None: (  # type: ignore[method-assign]
        order.append(f"sync after {len(gossip.frames)} frames"), sync(since))[1]
    done = {"job": "j", "task": "t", "split": ["x", 1], "chunk": 0, "attempt": 1,
            "output": "bafyout", "s": 0.1}
    node.emit(EventType.CHUNK_DONE, done)  # no inline: written, pushed, not fsynced
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert order == [] and len(gossip.frames) == 1
    node.emit(EventType.CHUNK_DONE, {**done, "attempt": 2, "inline": {"bafyout": "AA=="}})
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert order == ["sync after 1 frames"] and len(gossip.frames) == 2
    node.emit(EventType.CHUNK_DONE, {**done, "attempt": 3})  # the next turn: no fsync
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert order == ["sync after 1 frames"] and len(gossip.frames) == 3


class _Gate:
    """The log's fsync held in its thread until `open()`; with `error` it raises."""

    def __init__(self, node: Node) -> None:
        self.entered, self.released = threading.Event(), threading.Event()
        self.calls, self.error = 0, False
        self._sync = node.log.sync
        node.log.sync = self  # type: ignore[method-assign,assignment]

    def __call__(self, since: int | None = None) -> None:
        self.calls += 1
        self.entered.set()
        assert self.released.wait(10)
        if self.error:
            raise OSError(5, "EIO (test)")
        self._sync(since)

    def open(self) -> None:
        self.released.set()


async def _until(cond: Any, turns: int = 2000) -> None:
    """Yield to the loop (and the fsync threads) until `cond()`, at most `turns` times."""
    for _ in range(turns):
        if cond():
            return
        await asyncio.sleep(0.001)
    raise AssertionError("condition not reached")


_DONE = {"job": "j", "task": "t", "split": ["x", 1], "chunk": 0, "attempt": 1,
         "output": "bafyout", "s": 0.1}


async def _held_inline_turn(node: Node) -> _Gate:
    """With a running loop, our turn with inline blocks written and its fsync held in its
    thread (the gate's `open()` releases it)."""
    node._loop = asyncio.get_running_loop()
    gate = _Gate(node)
    node.emit(EventType.CHUNK_DONE, {**_DONE, "inline": {"bafyout": "AA=="}})
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert gate.entered.wait(10)
    return gate


async def test_with_a_loop_an_inline_turn_is_fsynced_in_a_thread_and_pushed_in_order(
        tmp_path: Path) -> None:
    """The loop goes on while a turn with inline blocks is fsynced (the next turn gathers what
    comes meanwhile; written when asked for, as heads are), nothing is pushed before it, nor
    served, nor counted in our heads; once its fsync returns, it and the turns behind it are
    pushed in order."""
    node, txns, gossip = _node(tmp_path)
    gate = await _held_inline_turn(node)
    assert txns == [1]  # written; its fsync runs in a thread
    node.emit(EventType.PROVIDE, {"cids": ["a"]})  # the loop goes on: the next turn is
    await asyncio.sleep(0)  # held while that fsync runs
    await asyncio.sleep(0)
    assert txns == [1] and gossip.frames == []
    assert node.heads()[node.peer_id] == 0  # (written now) neither counted nor served
    assert txns == [1, 1]
    assert node.events_after({}, 10) == [] and node.content_sum() is None
    gate.open()
    await _until(lambda: len(gossip.frames) == 2)
    assert [[e.seq for e in f] for f in gossip.frames] == [[1], [2]]
    assert gate.calls == 1 and node.heads()[node.peer_id] == 2
    node.emit(EventType.PROVIDE, {"cids": ["b"]})  # nothing waits now: pushed at its turn
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert [[e.seq for e in f] for f in gossip.frames] == [[1], [2], [3]]
    await asyncio.gather(*node._bg)
    node.log.close()


async def test_with_a_loop_an_inline_turn_whose_fsync_fails_is_not_pushed(
        tmp_path: Path) -> None:
    """A failed fsync: the inline turn is rewritten and fsynced again later (served then by
    anti-entropy), never pushed; the turn behind it is pushed."""
    node, _, gossip = _node(tmp_path)
    gate = await _held_inline_turn(node)
    gate.error = True
    node.emit(EventType.PROVIDE, {"cids": ["a"]})
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    gate.open()
    await _until(lambda: len(gossip.frames) == 1)
    assert [[e.seq for e in f] for f in gossip.frames] == [[2]]
    assert (node.peer_id, 1) in node._rewrite and node.heads()[node.peer_id] == 0
    gate.error = False
    node._retry_flush()  # (WRITE_RETRY_S later): rewritten, fsynced, then our heads cover it
    await _until(lambda: not node._rewrite and not node._syncing)
    assert node.heads()[node.peer_id] == 2
    assert [[e.seq for e in f] for f in gossip.frames] == [[2]]  # anti-entropy serves it
    assert [e.seq for e in node.events_after({}, 10)] == [1, 2]
    if node._retry is not None:
        node._retry.cancel()
    await asyncio.gather(*node._bg)
    node.log.close()


async def test_what_comes_during_a_fsync_is_one_turn_proven_by_one_more(tmp_path: Path) -> None:
    """What we emit while a turn of ours is fsynced (a slow disk) gathers in the next turn,
    flushed when that fsync returns and proven by one more fsync; and one fsync in flight
    proves every turn written before it began (`heads` writes the held turn at once)."""
    node, _, gossip = _node(tmp_path)
    node._loop = asyncio.get_running_loop()
    gate = _Gate(node)
    for i in range(11):
        node.emit(EventType.CHUNK_DONE, {**_DONE, "attempt": i + 1,
                                         "inline": {"bafyout": "AA=="}})
        await asyncio.sleep(0)
        await asyncio.sleep(0)
    assert gate.entered.wait(10) and gossip.frames == [] and len(node._outbox) == 1
    node.emit(EventType.PROVIDE, {"cids": ["a"]})
    node.emit(EventType.CHUNK_DONE, {**_DONE, "attempt": 12, "inline": {"bafyout": "AA=="}})
    assert node.heads()[node.peer_id] == 0 and len(node._outbox) == 2  # (one flush)
    gate.open()
    await _until(lambda: len(gossip.frames) == 2)
    assert gate.calls == 2
    assert [len(e.singles) for f in gossip.frames for e in f] == [1, 10, 1, 1]
    assert [e.seq for f in gossip.frames for e in f] == [1, 2, 3, 4]
    await asyncio.gather(*node._bg)
    node.log.close()


async def test_a_snapshot_serves_no_turn_of_ours_before_its_fsync(tmp_path: Path) -> None:
    node, _, _ = _node(tmp_path)
    gate = await _held_inline_turn(node)
    assert b"bafyout" not in b"".join(node.catchup.snapshot_stream(1))
    assert b"bafyout" not in b"".join(node.catchup.snapshot_stream(3))
    gate.open()
    await _until(lambda: not node._syncing)
    assert b"bafyout" in b"".join(node.catchup.snapshot_stream(1))
    await asyncio.gather(*node._bg)
    node.log.close()


class _Closing(RecordingGossip):
    def __init__(self) -> None:
        super().__init__()
        self.closed_after = -1

    async def close(self) -> None:
        self.closed_after = len(self.frames)

    def acknowledge(self, _: object) -> None:
        pass


async def test_closing_pushes_the_turns_waiting_for_a_fsync_before_gossip_stops(
        tmp_path: Path) -> None:
    node, _, _ = _node(tmp_path)
    gossip = _Closing()
    node.gossip = gossip  # type: ignore[assignment]
    gate = await _held_inline_turn(node)
    node.emit(EventType.PROVIDE, {"cids": ["last"]})  # (as closing the scheduler may)
    closing = asyncio.create_task(node.close())
    await asyncio.sleep(0.01)
    gate.open()
    await asyncio.wait_for(closing, 10)
    assert [[e.seq for e in f] for f in gossip.frames] == [[1], [2]]
    assert gossip.closed_after == 2


async def test_an_error_after_a_fsync_strands_no_turn_written_meanwhile(tmp_path: Path) -> None:
    """An error in what follows a fsync (here the push) does not end the fsyncs: the turn
    written while it ran is still proven (heads cover it)."""
    node, _, gossip = _node(tmp_path)
    gate = await _held_inline_turn(node)
    node.emit(EventType.CHUNK_DONE, {**_DONE, "attempt": 2, "inline": {"bafyout": "AA=="}})
    node.flush()
    assert len(node._syncing) == 2

    def broken(events: Sequence[Event]) -> None:
        raise RuntimeError("a listener's bug (test)")

    gossip.broadcast = broken  # type: ignore[method-assign]
    gate.open()
    await _until(lambda: not node._syncing)
    assert node.heads()[node.peer_id] == 2
    await asyncio.gather(*node._bg)
    node.log.close()


async def test_closing_waits_for_the_outbox_not_for_later_fsyncs(tmp_path: Path) -> None:
    """A closing node stops gossip once its waiting turns are pushed, not after the fsyncs
    of what was registered after them (received events): it waits for those (at most
    CLOSE_SYNC_S, `Node._sync_last`) after gossip stopped."""
    node, _, _ = _node(tmp_path)
    gossip = _Closing()
    node.gossip = gossip  # type: ignore[assignment]
    gate = await _held_inline_turn(node)
    node._sync_received([], {"x"}, node.log.write_epoch)  # a later generation: its fsync
    blocked = threading.Event()  # (the next one) blocks until gossip has stopped
    node.log.sync = lambda since=None: blocked.wait(10)  # type: ignore[method-assign,assignment,misc]
    stopped = asyncio.Event()
    stop = gossip.close

    async def close() -> None:
        await stop()
        stopped.set()

    gossip.close = close  # type: ignore[method-assign]
    gate.open()
    closing = asyncio.create_task(node.close())
    try:
        await asyncio.wait_for(stopped.wait(), 3)
    finally:
        blocked.set()
    await asyncio.wait_for(closing, 10)
    assert [[e.seq for e in f] for f in gossip.frames] == [[1]] and gossip.closed_after == 1
