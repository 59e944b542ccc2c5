"""A test-only task for the self-repair scenarios (loaded with --task-module
tests.repair_tasks): a slow per-item task whose result differs from its input."""

from __future__ import annotations

import os
import time
from pathlib import Path

from tasks.registry import Arg, TaskContext, task


@task("T_SLOW_TAG", args=[Arg("seconds", "float"), Arg("tag", "str", default="+")],
      per_item=True, items="*.txt")
def t_slow_tag(ctx: TaskContext, src: Path, out_dir: Path, seconds: float, tag: str) -> Path:
    """Sleep then copy one file with `tag` appended (a result unlike its input)."""
    path = os.environ.get("BANZAI_TEST_COUNTER")
    if path:
        with open(path, "a") as f:
            f.write(f"T_SLOW_TAG {src.name}\n")
    time.sleep(seconds)
    dst = out_dir / src.name
    dst.write_bytes(src.read_bytes() + tag.encode())
    return dst
