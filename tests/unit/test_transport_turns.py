"""The ZeroMQ receive loop's turns with a fake ROUTER (no sockets): the frames one turn takes
are each handled on their own, so a frame whose handler fails loses no other frame of that
turn (issue 12: what a receiver batching a turn's frames must keep)."""

from __future__ import annotations

import asyncio
import logging
from collections import deque

import pytest
import zmq

from peer.mesh.transport import HANDLE_BUDGET, ZmqTransport


class _Router:
    """recv_multipart as the ROUTER's: [connection, frame] while frames are held; then
    zmq.Again without waiting (NOBLOCK), or a wait that ends only when cancelled."""

    def __init__(self, frames: list[bytes]) -> None:
        self.frames = deque(frames)

    async def recv_multipart(self, flags: int = 0) -> list[bytes]:
        if self.frames:
            return [b"conn", self.frames.popleft()]
        if flags & zmq.NOBLOCK:
            raise zmq.Again()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


async def test_a_failing_frame_loses_no_other_frame_of_its_turn(
        caplog: pytest.LogCaptureFixture) -> None:
    frames = [b"good-1", b"bad", b"good-2", b"good-3"]
    assert len(frames) <= HANDLE_BUDGET  # one turn handles them all
    t = ZmqTransport()
    t._router = _Router(frames)  # type: ignore[assignment]
    calls: list[bytes] = []
    handled: list[bytes] = []

    def on_frame(frame: bytes) -> None:
        calls.append(frame)
        if frame == b"bad":
            raise ValueError("a handler's bug (test)")
        handled.append(frame)

    with caplog.at_level(logging.ERROR, "banzai.transport"):
        loop = asyncio.get_running_loop()
        task = loop.create_task(t._recv_loop(on_frame))
        after_first_turn: list[int] = []
        loop.call_soon(lambda: after_first_turn.append(len(calls)))  # runs after its 1st step
        for _ in range(3):  # the loop's first turn, then its wait for more
            await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert handled == [b"good-1", b"good-2", b"good-3"]
    assert after_first_turn == [4]  # all four in the first turn, the bad one among them
    assert [r.message for r in caplog.records] == ["frame handler failed"]
