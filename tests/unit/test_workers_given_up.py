"""A peer whose executor workers were given up (they outlived their SIGKILL): what its
/metrics, /api/health and heartbeat say; a real app and executor, the SIGKILL held back."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from dataclasses import replace
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families

from peer.jobs import executor
from peer.node import Node

T = "tests.unit.executor_targets:"


async def _metrics(c: TestClient[Any, Any]) -> dict[str, float]:
    resp = await c.get("/metrics")
    assert resp.status == 200
    return {s.name: s.value for fam in text_string_to_metric_families(await resp.text())
            for s in fam.samples if not s.labels}


async def _health(c: TestClient[Any, Any]) -> tuple[int, dict[str, Any]]:
    resp = await c.get("/api/health")
    return resp.status, await resp.json()


async def test_workers_given_up_show_on_metrics_health_and_the_heartbeat(
        served_node: tuple[TestClient[Any, Any], Node], monkeypatch: pytest.MonkeyPatch) -> None:
    """`given_up_workers` was on /api/health only, not on /metrics; and a peer of one slot
    whose two workers were given up (none left) went on offering its slot (session 42).
    Now /metrics shows both counts, /api/health how many slots can run, and the heartbeat
    offers none. And /api/health said ok (200, `ok` true) with no slot left that can run
    (review h, N1): it answers 503, `ok` false, naming the reason, as a check that reads
    the status only expects; 200 and ok again once a slot can run."""
    c, node = served_node
    ex = node.executor
    ex.cfg = replace(ex.cfg, stuck_after_s=0.2, kill_grace_s=0.05)
    signal_worker = executor._signal  # no worker's SIGKILL arrives; the test's own ends them
    monkeypatch.setattr(executor, "_signal",
                        lambda w, sig: None if sig == signal.SIGKILL else signal_worker(w, sig))
    pids: list[int] = []
    await ex.start()
    try:
        before = await _metrics(c)
        healthy = await _health(c)
        for key in "ab":
            pids.append((await ex.run(f"pid-{key}", T + "describe", "X")).value["pid"])
            res = await asyncio.wait_for(ex.run(key, T + "stubborn", 60, timeout_s=0.3), 20)
            assert res.error is not None and res.error.endswith("0.2 s after SIGKILL")
        after = await _metrics(c)
        status, health = await _health(c)
        info = node.local_info()
        os.kill(pids.pop(0), signal.SIGKILL)  # one exits: its slot takes runs again
        for _ in range(500):
            if ex.slots:
                break
            await asyncio.sleep(0.02)
        again = await _health(c)
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        await ex.close()
    names = ("banzai_slots", "banzai_slots_usable", "banzai_workers_ready",
             "banzai_workers_given_up")
    assert [before[n] for n in names] == [1, 1, 1, 0]
    assert [after[n] for n in names] == [1, 0, 0, 2]
    assert health["workers"] == {"slots": 1, "usable": 0, "ready": 0, "given_up": 2,
                                 "failed_starts": 0}
    assert (status, health["ok"], health["reason"], health["peer"]) == (
        503, False, "no usable worker slots: 2 workers given up (they outlived their SIGKILL) "
        "hold all 1 slot; no run can start here until one of them exits", node.peer_id)
    for status, body in (healthy, again):
        assert (status, body["ok"], body["reason"]) == (200, True, None)
    assert (info["slots"], info["free_slots"]) == (0, 0)


async def test_worker_starts_that_keep_failing_show_on_metrics_and_health(
        served_node: tuple[TestClient[Any, Any], Node], monkeypatch: pytest.MonkeyPatch) -> None:
    """Worker starts that keep failing (a forkserver that cannot fork on a machine at its
    limits, session 50): from the third in a row with no worker ready the peer offers no
    slot; /api/health answers 503 naming that, /metrics counts the failures; both are well
    again once a worker starts."""
    c, node = served_node
    can_fork: list[bool] = []
    start_process = executor.Executor._start_process

    def forkserver_at_its_limit(self: executor.Executor) -> Any:
        if not can_fork:
            raise EOFError("unexpected EOF")
        return start_process(self)

    monkeypatch.setattr(executor.Executor, "_start_process", forkserver_at_its_limit)
    monkeypatch.setattr(executor, "_RESPAWN_BACKOFF_S", 0.01)  # (the pause's first step)
    ex = node.executor
    await ex.start(wait=False)
    try:
        for _ in range(500):
            if not ex.slots:  # (from the third failure in a row)
                break
            await asyncio.sleep(0.01)
        failing, status_body = await _metrics(c), await _health(c)
        can_fork.append(True)
        for _ in range(1000):
            if ex.ready_workers:
                break
            await asyncio.sleep(0.01)
        well = await _health(c)
    finally:
        await ex.close()
    status, health = status_body
    assert ex.cfg.slots == 1 and failing["banzai_slots_usable"] == 0
    assert failing["banzai_worker_starts_failed"] >= 3
    assert (status, health["ok"], health["workers"]["usable"]) == (503, False, 0)
    assert health["reason"].startswith("no usable worker slots: ")
    assert "worker starts in a row failed and no worker is ready" in health["reason"]
    assert (well[0], well[1]["ok"], well[1]["workers"]["failed_starts"]) == (200, True, 0)
