"""General-purpose tasks: trivial building blocks for pipelines, tests and benchmarks."""

from __future__ import annotations

from pathlib import Path

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
