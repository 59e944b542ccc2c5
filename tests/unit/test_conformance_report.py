"""scripts/conformance.py: leaf results of go test2json events, the known-failures comparison
and the generated table of docs/conformance.md."""

from __future__ import annotations

import json
from pathlib import Path

from scripts.scriptlib import load_script

conformance = load_script("conformance")


def _events(path: Path, rows: list[tuple[str, str]]) -> Path:
    lines = [json.dumps({"Action": "run", "Test": t}) for t, _ in rows]
    lines += [json.dumps({"Action": a, "Test": t}) for t, a in rows]
    path.write_text("\n".join([*lines, "not json", json.dumps({"Action": "output"})]))
    return path


def test_leaf_results_keep_only_the_checks(tmp_path: Path) -> None:
    path = _events(tmp_path / "r.json", [
        ("TestA/x/Status_code", "pass"), ("TestA/x/Body", "fail"), ("TestA/x", "fail"),
        ("TestA", "fail"), ("TestB", "skip"), ("TestC/y", "pass"), ("TestC", "pass")])
    assert conformance.leaf_results(path) == {
        "TestA/x/Status_code": "pass", "TestA/x/Body": "fail", "TestB": "skip", "TestC/y": "pass"}


def test_compare_reports_new_failures_and_stale_entries() -> None:
    results = {"T/a": "fail", "T/b": "pass", "T/c": "fail", "T/d": "skip"}
    assert conformance.compare(results, {"T/a", "T/b", "T/gone"}) == (["T/c"], ["T/b", "T/gone"])
    assert conformance.compare(results, {"T/a", "T/c"}) == ([], [])


def test_known_failures_round_trip_and_doc_block(tmp_path: Path) -> None:
    results = {"TestX/a": "fail", "TestX/b": "pass", "TestY/c": "skip", "TestY/d": "fail"}
    known = tmp_path / "known.txt"
    conformance.write_known_failures(results, known)
    assert conformance.read_known_failures(known) == {"TestX/a", "TestY/d"}
    doc = tmp_path / "doc.md"
    doc.write_text(f"intro\n{conformance.DOC_BEGIN}\nold\n{conformance.DOC_END}\ntail\n")
    conformance.update_doc(results, "s", doc)
    text = doc.read_text()
    assert "old" not in text and text.startswith("intro\n") and text.endswith("tail\n")
    assert "**1 checks pass, 2 fail, 1 skip** (of 4)" in text
    assert "| TestX | 1 | 1 | 0 |" in text and "| TestY | 0 | 1 | 1 |" in text
