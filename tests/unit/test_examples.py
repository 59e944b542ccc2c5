"""Every pipeline in examples/ validates against the catalog of a peer that runs every kind;
the mixed-kinds example has the kinds its README section promises and well-formed scripts."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from peer.jobs import kinds
from peer.jobs.spec import Workflow, parse, resolve_images, workflow_from_json
from tasks import registry
from tasks.registry import TaskDef

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.*"))
MIXED = ROOT / "examples" / "mixed-kinds.yaml"
IMAGE_ID = "sha256:" + "ab" * 32


def catalog() -> dict[str, TaskDef]:
    """A peer's catalog with --allow-shell and --allow-containers."""
    return {**registry.load(), **kinds.allowed(shell=True, containers=True)}


def load(path: Path, cat: dict[str, TaskDef] | None = None) -> Workflow:
    ctype = "application/yaml" if path.suffix in (".yaml", ".yml") else "application/json"
    return parse(path.read_bytes(), catalog() if cat is None else cat, content_type=ctype)


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_every_example_validates_and_round_trips(path: Path) -> None:
    wf = load(path)
    assert workflow_from_json(wf.to_json()) == wf


def test_the_mixed_example_runs_each_kind_where_the_readme_says() -> None:
    wf = load(MIXED)
    calls = {t.name: t.call for t in wf.tasks}
    assert calls == {"fetch": "FETCH_FESTVOX", "resample": "shell", "mfcc": "EXTRACT_MFCC",
                     "learn": "LEARN", "summary": "container"}
    assert [t.name for t in wf.tasks] == ["fetch", "resample", "mfcc", "learn", "summary"]
    assert wf.task("summary").depends == ("resample", "learn")
    # the MFCCs are taken at the rate the shell task resamples to
    assert wf.task("resample").params["env"] == {"RATE": "8000"}
    assert wf.task("mfcc").params["sample_rate"] == 8000
    # the image is resolved to the digest the peers announce, as at submission
    held = resolve_images(wf, {"p1": {"localhost/busybox:test": IMAGE_ID}})
    assert held.task("summary").params["image"] == f"localhost/busybox:test@{IMAGE_ID}"


@pytest.mark.skipif(shutil.which("sh") is None, reason="no /bin/sh")
@pytest.mark.parametrize(("task", "field"), [("resample", "shell"), ("summary", "command")])
def test_the_mixed_example_scripts_parse_as_sh(task: str, field: str) -> None:
    wf = load(MIXED)
    script = wf.task(task).params[field]
    script = script if isinstance(script, str) else script[-1]
    script = script.replace("{in}", "/in").replace("{out}", "/out")
    r = subprocess.run(["sh", "-n", "-c", script], capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr
