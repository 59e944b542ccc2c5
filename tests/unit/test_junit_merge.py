"""scripts/junit_merge.py: the junit files of scripts/test.sh's two pytest runs become one,
every test case kept, each run a suite named after its file; a missing file is reported."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from scripts.scriptlib import load_script

junit_merge = load_script("junit_merge")


def _junit(path: Path, names: list[str], failures: int = 0) -> Path:
    cases = "".join(f'<testcase classname="tests.x" name="{n}" time="0.5" />' for n in names)
    path.write_text(f'<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest" '
                    f'errors="0" failures="{failures}" skipped="0" tests="{len(names)}" '
                    f'time="1.5">{cases}</testsuite></testsuites>')
    return path


def test_both_runs_become_one_file_with_every_case(tmp_path: Path) -> None:
    a = _junit(tmp_path / "integration.xml", ["test_a", "test_b"], failures=1)
    b = _junit(tmp_path / "unit.xml", ["test_c"])
    out = tmp_path / "junit.xml"
    assert junit_merge.main([str(out), str(a), str(b)]) == 0
    suites = ET.parse(out).getroot().findall("testsuite")
    assert [(s.get("name"), s.get("tests"), s.get("failures")) for s in suites] == [
        ("integration", "2", "1"), ("unit", "1", "0")]
    assert [c.get("name") for c in ET.parse(out).getroot().iter("testcase")] == [
        "test_a", "test_b", "test_c"]


def test_a_missing_part_is_named_and_fails(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    a = _junit(tmp_path / "integration.xml", ["test_a"])
    out = tmp_path / "junit.xml"
    assert junit_merge.main([str(out), str(a), str(tmp_path / "unit.xml")]) == 1
    assert [s.get("name") for s in ET.parse(out).getroot().findall("testsuite")] == [
        "integration"]
    assert "unit.xml is missing" in capsys.readouterr().err
