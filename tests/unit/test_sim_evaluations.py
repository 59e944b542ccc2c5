"""scripts/sim_evaluations.py runs and reports every peer's evaluations per task (a small run)."""

from __future__ import annotations

import pytest

from scripts.scriptlib import load_script

sim_evaluations = load_script("sim_evaluations")


def test_a_small_run_reports_each_peer(capsys: pytest.CaptureFixture[str]) -> None:
    assert sim_evaluations.main(["--peers", "2", "-n", "6"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == ["implicit splits", "real splits"]
    assert all("'p0'" in line and "'p1'" in line for line in lines)


def test_a_per_item_run_reports_its_evaluations(capsys: pytest.CaptureFixture[str]) -> None:
    assert sim_evaluations.main(["--peers", "2", "-n", "2", "--per-item", "3",
                                 "--run-s", "5"]) == 0
    [line] = [x for x in capsys.readouterr().out.splitlines() if x.startswith("per-item")]
    assert "3 chunks" in line and "in 20 ticks" in line and "'p1'" in line
