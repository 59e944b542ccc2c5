"""scripts/bench_record.py runs (a small run of each version) and reports both versions'
records as the same bytes."""

from __future__ import annotations

import json

import pytest

from scripts.scriptlib import ROOT, load_script

bench_record = load_script("bench_record")


def test_a_small_run_of_two_versions_reports_both_and_the_same_records(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_record.main(["--tasks", "3", "--chunks", "2", "--repeat", "1", "--rounds", "1",
                              "--base", str(ROOT), "--json"]) == 0
    figures = json.loads(capsys.readouterr().out)
    assert figures["same"] is True
    for version in ("base", "this"):
        for job in ("tasks", "chunks"):
            assert figures[version][job]["record_ms"] > 0
            assert figures[version][job]["view_ms"] > 0
            assert 0 < figures[version][job]["record_min_ms"] <= figures[version][job]["record_ms"]


def test_a_size_below_one_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        bench_record.main(["--tasks", "0"])
    assert e.value.code == 2
    assert "--tasks, --chunks, --repeat and --rounds must be at least 1" in capsys.readouterr().err
