"""Locality alone (peer/jobs/locality.py), with a fake clock and fake data: which waiting
tasks are due for another look, and who is told when a fetch ends."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Sequence
from typing import Any

from peer.jobs.locality import Locality
from peer.log import TaskKey
from peer.log.clock import FakeClock

GRACE_S = 10.0
A: TaskKey = ("j", "a")
B: TaskKey = ("j", "b")


class Data:
    def __init__(self) -> None:
        self.complete: set[str] = set()
        self.asked: list[list[str]] = []

    def is_complete(self, cid: str) -> bool:
        return cid in self.complete

    def mark(self, cid: str) -> None:
        self.complete.add(cid)

    async def ensure(self, cids: Sequence[str], hints: Sequence[str] = ()) -> None:
        self.asked.append(list(cids))
        self.complete.update(cids)


def make(peers: tuple[str, ...] = ("other",)) -> tuple[Locality, FakeClock, Data, list[Any],
                                                       list[TaskKey]]:
    clock, data = FakeClock(), Data()
    spawned: list[Coroutine[Any, Any, Any]] = []
    told: list[TaskKey] = []
    loc = Locality("me", data, lambda: {p: {} for p in peers}, clock, GRACE_S,
                   spawned.append, told.append)
    return loc, clock, data, spawned, told


def test_a_wait_in_its_grace_period_is_due_once_when_it_ends() -> None:
    loc, clock, _, spawned, _ = make()
    assert not loc.have(A, ["x"], "other")  # the preferred peer acts first
    assert spawned == [] and loc.due(clock()) == []
    clock.advance(GRACE_S)
    assert loc.due(clock()) == [A]
    assert loc.due(clock()) == []  # once: `have` sets the next time if it still waits
    clock.advance(0.25)
    assert not loc.have(A, ["x"], "other")
    assert len(spawned) == 1  # its fetch: looked at again when it ends, not on time
    clock.advance(100.0)
    assert loc.due(clock()) == []
    for c in spawned:
        c.close()


def test_a_wait_nothing_more_is_asked_of_is_not_due_again() -> None:
    """A task whose split came during its wait (`have` not called again) is not looked at
    again on time: only events, a fetch's end or the peers' change wake it."""
    loc, clock, _, _, _ = make()
    assert not loc.have(A, ["x"], "other")
    clock.advance(GRACE_S + 1)
    assert loc.due(clock()) == [A]
    for _ in range(100):
        clock.advance(0.25)
        assert loc.due(clock()) == []
    assert A in loc.waiting  # (what it waits for, should its data come)


async def test_a_fetch_that_ends_tells_every_task_waiting_for_its_data() -> None:
    loc, _, _, spawned, told = make(peers=())  # no peer: each fetches at once
    assert not loc.have(A, ["x", "y"], "gone")
    assert not loc.have(B, ["y"], "gone")
    assert loc.wanting(["y"]) == [A, B] and loc.wanting(["x"]) == [A]
    await spawned[0]  # A's fetch brings y too
    assert sorted(told) == [A, B]
    assert loc.have(B, ["y"], "gone") and B not in loc.waiting
    spawned[1].close()
    await asyncio.sleep(0)
