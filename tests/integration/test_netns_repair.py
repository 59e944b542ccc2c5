"""Self-repair with real peers in network namespaces (issue 11, "Tests"): one peer of three
cut off while the others run a job whose input they hold; kill -9 of every peer mid-job and a
restart with item results lost from every store. Once each, cheap (small corpora, fixture
tasks, short leases); scripts/repeat_netns.py repeats the full versions. Needs root and
`ip netns`; skipped otherwise."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration import netns, repair_scenarios
from tests.integration.repair_scenarios import Settings

pytestmark = pytest.mark.integration

CHEAP = Settings(files=6, item_s=0.3, away_s=0.0, lease_s=3.0, timeout_s=60.0)


@pytest.fixture(scope="module", autouse=True)
def netns_ok() -> None:
    reason = netns.unavailable_reason()
    if reason:
        pytest.skip(reason)
    netns.sweep_stale()


@pytest.mark.timeout(420)
def test_a_job_whose_input_the_others_hold_finishes_while_a_peer_is_cut_off(
        tmp_path: Path) -> None:
    r = repair_scenarios.cut_off(tmp_path, CHEAP)
    print(f"[timing] {r}")
    assert r["ok"]


@pytest.mark.timeout(420)
def test_after_kill_9_of_every_peer_the_job_finishes_and_lost_items_are_recomputed(
        tmp_path: Path) -> None:
    r = repair_scenarios.kill_all(tmp_path, CHEAP)
    print(f"[timing] {r}")
    assert r["ok"] and r["lost_items"] >= 1 and r["items_rerun"] >= 1
