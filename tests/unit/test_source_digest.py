"""scripts/scriptlib.source_digest: the benchmarks' name for the code their peers run, the
same for every copy of one commit's peer/ and tasks/ and different for any other."""

from __future__ import annotations

import shutil
from pathlib import Path

from scripts.scriptlib import source_digest


def _tree(root: Path) -> Path:
    for rel, text in {"peer/__init__.py": "", "peer/jobs/run.py": "X = 1\n",
                      "tasks/audio.py": "def f() -> int:\n    return 2\n",
                      "docs/notes.md": "anything\n"}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


def test_two_copies_of_one_tree_have_one_digest(tmp_path: Path) -> None:
    a = _tree(tmp_path / "a")
    b = tmp_path / "elsewhere" / "b"
    shutil.copytree(a, b)
    assert source_digest(a) == source_digest(b)
    assert len(source_digest(a)) == 12


def test_caches_docs_and_other_files_do_not_count(tmp_path: Path) -> None:
    a = _tree(tmp_path / "a")
    before = source_digest(a)
    (a / "peer" / "__pycache__").mkdir()
    (a / "peer" / "__pycache__" / "run.cpython-311.pyc").write_bytes(b"\0compiled")
    (a / "docs" / "notes.md").write_text("changed\n")
    (a / ".cache").mkdir()
    assert source_digest(a) == before


def test_a_changed_or_moved_source_changes_the_digest(tmp_path: Path) -> None:
    a = _tree(tmp_path / "a")
    before = source_digest(a)
    (a / "tasks" / "audio.py").write_text("def f() -> int:\n    return 3\n")
    changed = source_digest(a)
    (a / "peer" / "jobs" / "run.py").rename(a / "peer" / "jobs" / "ran.py")
    assert len({before, changed, source_digest(a)}) == 3

