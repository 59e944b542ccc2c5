"""Test-only tasks (loaded with --task-module tests.fixture_tasks): failures and counters."""

from __future__ import annotations

import os
import time
from pathlib import Path

from tasks.registry import Arg, TaskContext, task


def _count(name: str) -> None:
    """Append one line to $BANZAI_TEST_COUNTER so tests can count executions."""
    path = os.environ.get("BANZAI_TEST_COUNTER")
    if path:
        with open(path, "a") as f:
            f.write(name + "\n")


@task("T_WRITE", args=[Arg("files", "int", doc="how many files"),
                       Arg("tag", "str", default="")], needs_input=False)
def t_write(ctx: TaskContext, inp: Path | None, out: Path, files: int, tag: str) -> None:
    """Write `files` small text files."""
    _count("T_WRITE")
    for i in range(files):
        (out / f"f{i:04d}.txt").write_text(f"file {i} {tag}\n")


@task("T_FILL", args=[Arg("mib", "int", doc="MiB to write"),
                      Arg("hold_s", "float", doc="seconds to wait after"),
                      Arg("tag", "str", default="")], needs_input=False)
def t_fill(ctx: TaskContext, inp: Path | None, out: Path, mib: int, hold_s: float,
           tag: str) -> None:
    """Write where its output directory is (where.txt) and `mib` files of 1 MiB, then wait
    `hold_s` (a watch of the tmpfs has that long to see them)."""
    _count(f"T_FILL {tag}")
    (out / "where.txt").write_text(f"{out}\n")
    block = bytes(range(256)) * 4096
    for i in range(mib):
        (out / f"f{i:04d}.bin").write_bytes(block)
    time.sleep(hold_s)


@task("T_UPPER", args=[Arg("suffix", "str", default="")], per_item=True, items="*.txt")
def t_upper(ctx: TaskContext, src: Path, out_dir: Path, suffix: str) -> Path:
    """Upper-case one text file."""
    _count(f"T_UPPER {src.name}")
    dst = out_dir / src.name
    dst.write_text(src.read_text().upper() + suffix)
    return dst


@task("T_SLOW_ITEMS", args=[Arg("seconds", "float")], per_item=True, items="*.txt")
def t_slow_items(ctx: TaskContext, src: Path, out_dir: Path, seconds: float) -> Path:
    """Sleep then copy one file."""
    _count(f"T_SLOW_ITEMS {src.name}")
    time.sleep(seconds)
    dst = out_dir / src.name
    dst.write_bytes(src.read_bytes())
    return dst


@task("T_CONCAT", args=[])
def t_concat(ctx: TaskContext, inp: Path | None, out: Path) -> Path:
    """Concatenate the input files in name order."""
    _count("T_CONCAT")
    assert inp is not None
    f = out / "all.txt"
    f.write_text("".join(p.read_text() for p in sorted(inp.rglob("*.txt"))))
    ctx.log(f"concatenated into {f.name}")
    ctx.metric("bytes", 0, float(f.stat().st_size))
    return f


@task("T_RAISE", args=[Arg("message", "str", default="boom")], needs_input=False)
def t_raise(ctx: TaskContext, inp: Path | None, out: Path, message: str) -> None:
    """Raise ValueError."""
    ctx.log("about to fail")
    raise ValueError(message)


@task("T_EXIT", args=[Arg("code", "int", default=1)], needs_input=False)
def t_exit(ctx: TaskContext, inp: Path | None, out: Path, code: int) -> None:
    """Kill the interpreter with os._exit."""
    os._exit(code)


@task("T_SLEEP", args=[Arg("seconds", "float", default=3600.0)], needs_input=False)
def t_sleep(ctx: TaskContext, inp: Path | None, out: Path, seconds: float) -> None:
    """Sleep (forever by default)."""
    _count("T_SLEEP")
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        ctx.progress(min(0.99, 1 - (end - time.monotonic()) / max(seconds, 1e-9)))
        time.sleep(0.05)


@task("T_GATE", args=[Arg("path", "str", doc="the file that opens the gate"),
                      Arg("max_s", "float", default=300.0)], needs_input=False)
def t_gate(ctx: TaskContext, inp: Path | None, out: Path, path: str, max_s: float) -> None:
    """Run until the file `path` exists (a test opens the gate when its step is done: a
    job held running exactly as long as the test needs, not a guessed sleep), failing after
    `max_s` (a test that never opens it fails, not hangs)."""
    _count("T_GATE")
    end = time.monotonic() + max_s
    while not os.path.exists(path):
        if time.monotonic() >= end:
            raise TimeoutError(f"T_GATE: {path} did not appear within {max_s} s")
        time.sleep(0.05)


@task("T_HOG", args=[], needs_input=False)
def t_hog(ctx: TaskContext, inp: Path | None, out: Path) -> None:
    """Allocate memory until stopped."""
    hog = []
    while True:
        hog.append(bytearray(64 * 1024 * 1024))
