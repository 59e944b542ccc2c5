"""A listener that fails on every event is logged rate-limited (Node._tell, `Repeats`):
each kind's first failure with its traceback, then a counting line at most once per window
on the peer's clock (session 48; a traceback per event of a flood before)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from peer.config import PeerConfig
from peer.log import Event, EventType
from peer.log.flaps import FLAP_WINDOW_S, Repeats
from peer.node import Node

pytestmark = pytest.mark.listener_errors  # (the failures are the tests' own)


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    n = Node(PeerConfig(data_dir=tmp_path, slots=1, mdns=False))
    n.listeners.clear()  # only the test's listeners
    yield n
    n.log.close()


def jobs(first: int, n: int) -> list[Event]:
    hlc = int(time.time() * 1000) << 16
    wf = {"name": "w", "tasks": [{"name": "t", "call": "ECHO", "params": {"text": "x"},
                                  "depends": []}]}
    return [Event("o", i + 1, hlc + i, EventType.JOB_SUBMITTED, {"job": f"j{i}", "workflow": wf})
            for i in range(first, first + n)]


def _lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "banzai.node" and "listener" in r.message]


def test_a_listener_failing_on_every_event_of_a_flood_logs_one_traceback_then_a_count(
        node: Node, caplog: pytest.LogCaptureFixture) -> None:
    now = [1000.0]
    node.outage_clock = lambda: now[0]
    told: list[int] = []

    def broken(ev: Event) -> None:
        raise RuntimeError(f"a bug at {ev.seq}")

    node.listeners[:] = [broken, lambda ev: told.append(ev.seq)]
    with caplog.at_level(logging.INFO, logger="banzai.node"):
        assert len(node.merge(jobs(0, 500))) == 500
        lines = _lines(caplog)
        assert len(lines) == 1  # (500 tracebacks on 45818f71)
        assert lines[0].exc_info is not None and "a bug at 1" in lines[0].message
        assert "broken" in lines[0].message and "o/1" in lines[0].message
        now[0] += FLAP_WINDOW_S - 1  # within the window: counted only
        node.merge(jobs(500, 100))
        assert len(_lines(caplog)) == 1
        now[0] += 1
        node.merge(jobs(600, 3))
        lines = _lines(caplog)
        assert len(lines) == 2  # one line for the window, with the count, no traceback
        assert lines[1].exc_info is None
        assert "a bug at 601" in lines[1].message and "599 more failures" in lines[1].message
    assert node.listener_errors == 603 and node.log_health()["listener_errors"] == 603
    assert told == list(range(1, 604))  # the other listener was told every event


def test_a_new_kind_of_failure_gets_its_traceback_and_each_listener_its_own_lines(
        node: Node, caplog: pytest.LogCaptureFixture) -> None:
    node.outage_clock = lambda: 5.0

    def broken(ev: Event) -> None:
        if ev.seq % 2:
            raise RuntimeError("odd")
        raise KeyError("even")

    def other(ev: Event) -> None:
        raise ValueError("other")

    node.listeners[:] = [broken, other]
    with caplog.at_level(logging.INFO, logger="banzai.node"):
        node.merge(jobs(0, 50))
    lines = _lines(caplog)
    assert [(r.exc_info is not None, r.message.split(" failed")[0]) for r in lines] == [
        (True, f"listener {broken.__qualname__}"), (True, f"listener {other.__qualname__}"),
        (True, f"listener {broken.__qualname__}")]
    assert node.listener_errors == 100


def test_repeats_remembers_a_bounded_number_of_kinds() -> None:
    r = Repeats(window_s=10.0, max_traced=2)
    assert r.note("a", "E1", 0.0) == (True, 0)
    assert r.note("a", "E2", 0.0) == (True, 0)
    assert r.note("a", "E3", 0.0) is None  # (past the bound: a repeat)
    assert r.note("b", "E1", 1.0) == (False, 0)  # (past the bound, but b's first line)
    assert r.note("a", "E1", 10.0) == (False, 1)
    assert len(r.traced) == 2
