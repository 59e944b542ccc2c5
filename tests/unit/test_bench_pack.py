"""scripts/bench_pack.py runs and reports the pins it kept (a small run)."""

from __future__ import annotations

import pytest

from scripts.scriptlib import load_script

bench_pack = load_script("bench_pack")


def test_a_small_run_reports_every_pin(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_pack.main(["--pins", "30", "--pass-rows", "7", "--block-bytes", "64"]) == 0
    row = capsys.readouterr().out.strip().splitlines()[-1]
    assert row.startswith("| 30 |")
