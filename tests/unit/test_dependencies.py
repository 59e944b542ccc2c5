"""pyproject.toml's dependencies: each bounded above, pinned in constraints.txt within its
range, and (the runtime ones) imported somewhere in peer/ or tasks/."""

from __future__ import annotations

import ast
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
GROUPS = {"runtime": PROJECT["dependencies"], **PROJECT["optional-dependencies"]}
REQS = [(g, Requirement(r)) for g, reqs in GROUPS.items() for r in reqs]
PINS = {canonicalize_name(name): version for name, _, version in (
    line.partition("==") for line in (ROOT / "constraints.txt").read_text().split())}


@pytest.mark.parametrize(("group", "req"), REQS, ids=[f"{g}:{r.name}" for g, r in REQS])
def test_bounded_above_and_pinned_within_range(group: str, req: Requirement) -> None:
    ops = {s.operator for s in req.specifier}
    assert ops & {"<", "<=", "==", "~="}, f"{req} ({group}) has no upper bound"
    pin = PINS.get(canonicalize_name(req.name))
    assert pin is not None, f"{req.name} ({group}) is not pinned in constraints.txt"
    assert req.specifier.contains(pin, prereleases=True), f"constraints.txt {pin} not in {req}"


def _imported_top_level(pkg: Path) -> set[str]:
    names: set[str] = set()
    for f in pkg.rglob("*.py"):
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Import):
                names |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
    return names


def test_every_runtime_dependency_is_imported() -> None:
    modules = _imported_top_level(ROOT / "peer") | _imported_top_level(ROOT / "tasks")
    dists = packages_distributions()
    used = {canonicalize_name(d) for m in modules for d in dists.get(m, [])}
    unused = [r.name for r in map(Requirement, PROJECT["dependencies"])
              if canonicalize_name(r.name) not in used]
    assert unused == [], f"declared in pyproject.toml, never imported: {unused}"
