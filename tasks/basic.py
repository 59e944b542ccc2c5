"""General-purpose tasks: trivial building blocks for pipelines, tests and benchmarks."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from peer.errors import ArgError
from tasks.registry import Arg, TaskContext, task


@task("ECHO", args=[Arg("text", "str", doc="the text to write")], needs_input=False)
def echo(ctx: TaskContext, inp: Path | None, out: Path, text: str) -> Path:
    """Write `text` to a file: the smallest possible task (used by the engine benchmark)."""
    f = out / "echo.txt"
    f.write_text(text)
    return f


@task("COUNT_FILES", args=[])
def count_files(ctx: TaskContext, inp: Path | None, out: Path) -> Path:
    """Count the files of the input and write the number as JSON."""
    n = sum(1 for p in inp.rglob("*") if p.is_file()) if inp and inp.is_dir() else 1
    f = out / "count.json"
    f.write_text(f'{{"files": {n}}}\n')
    return f


_ALGORITHMS = sorted(a for a in hashlib.algorithms_guaranteed if not a.startswith("shake"))


def _check_algorithm(params: Mapping[str, Any]) -> None:
    if params["algorithm"] not in _ALGORITHMS:
        known = ", ".join(_ALGORITHMS)
        raise ArgError(f"unknown hash algorithm {params['algorithm']!r}; known: {known}",
                       field="algorithm")


@task("CHECKSUM", per_item=True, check=_check_algorithm,
      args=[Arg("algorithm", "str", default="sha256", doc="a hashlib algorithm, e.g. sha256")])
def checksum(ctx: TaskContext, src: Path, out: Path, algorithm: str) -> Path:
    """Write `<file>.<algorithm>` holding the hex digest of each input file (per item)."""
    h = hashlib.new(algorithm)
    with src.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    dst = out / f"{src.name}.{algorithm}"
    dst.write_text(f"{h.hexdigest()}  {src.name}\n")
    return dst
