"""What a failed run printed, read over HTTP from real peers (session 51, helper d): on the
peer that ran it and on the other peer of the mesh, once its job is compacted, and after a
restart (before, it lived in the running peer's memory only, until the task ran again)."""

from __future__ import annotations

import signal
from typing import Any

import pytest

from tests.helpers import JsonApi, until, wait_job, wait_mesh
from tests.helpers import get_json as get
from tests.helpers import post_json as post

pytestmark = pytest.mark.integration

LINES = ["about to fail", "[banzai] attempt 0 failed: ValueError: printed then failed"]


def _log(url: str, job: str) -> list[str]:
    return list(get(f"{url}/api/jobs/{job}/tasks/t_raise/log")["lines"])


def test_a_failed_runs_log_is_served_by_every_peer_compacted_and_after_a_restart(
        peer_factory: Any) -> None:
    flags = ("--no-mdns", "--compact-recent-tasks", "0")
    a = peer_factory("a", *flags)
    gossip = get(a.url + "/api/health")["gossip_address"]
    b = peer_factory("b", *flags, "--join", gossip)
    wait_mesh([a, b], 2)
    job = post(a.url + "/api/jobs", [{"call": "T_RAISE", "args": ["printed then failed"]}])["job"]
    view = wait_job(a, job)
    [t] = view["tasks"]
    assert (view["state"], t["error"]) == ("failed", "ValueError: printed then failed"), view
    for p in (a, b):  # (one of them ran it: the other fetches the record from it)
        assert _log(p.url, job) == LINES, p.url
        status, _, text = JsonApi(timeout=20).http(
            "GET", f"{p.url}/api/jobs/{job}/tasks/t_raise/log?format=text")
        assert (status, text.decode().splitlines()) == (200, LINES)
    # compacted (its events dropped): the record's task keeps the run's log
    until(lambda: get(a.url + "/api/health")["log"]["compaction"]["dropped"])
    assert _log(a.url, job) == LINES
    for p in (b, a):
        p.kill(signal.SIGTERM)
    a = peer_factory("a", *flags)  # alone: what it holds itself
    assert get(f"{a.url}/api/jobs/{job}")["state"] == "failed"
    assert _log(a.url, job) == LINES

