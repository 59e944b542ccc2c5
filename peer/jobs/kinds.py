"""Executor kinds: how a task of each kind (`TaskDef.kind`) is run, in one table.

Pure lookups, safe from any thread; a kind's worker-side module is imported lazily, in
the worker process, on its first call. A new kind is one module with an `invoke`
function plus one entry in `KINDS`.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple, Protocol, cast

from peer.errors import SpecError
from tasks.registry import TaskContext, TaskDef

__all__ = ["KINDS", "RUNNER", "Invoke", "Kind", "check", "invoke", "target"]

RUNNER = "peer.jobs.runner:run"
"""The executor target that materialises a chunk's input, invokes the task and stores output."""


class Invoke(Protocol):
    """Worker side: run task `tdef` once on `inp` (a file, a directory or None), filling `out`.

    Returns what a Python task function returns: None (the output is `out`; for a per-item
    task: drop the item), a path to use as the output, or `tasks.registry.KEEP`. Blocks the
    worker for the duration of the task; raising fails the run with that error.
    """

    def __call__(self, tdef: TaskDef, ctx: TaskContext, inp: Path | None, out: Path,
                 params: Mapping[str, Any]) -> Any: ...


class Kind(NamedTuple):
    """One executor kind."""

    target: str  # the executor target ("module:function") that runs one chunk, daemon side
    invoke: str  # the Invoke ("module:function") that target calls, worker side


KINDS: Mapping[str, Kind] = {
    "python": Kind(RUNNER, "peer.jobs.kinds:invoke_python"),
}

_invokers: dict[str, Invoke] = {}  # per process: kind -> imported Invoke


def check(tdef: TaskDef, field: str | None = None) -> Kind:
    """The kind of `tdef`; SpecError naming the task if this peer has no such kind."""
    kind = KINDS.get(tdef.kind)
    if kind is None:
        where = f"{field}: " if field else ""
        raise SpecError(f"{where}task {tdef.name} has an unknown executor kind {tdef.kind!r} "
                        f"(known: {', '.join(sorted(KINDS))})", field=field)
    return kind


def target(tdef: TaskDef) -> str:
    """The executor target that runs a chunk of `tdef`. A kind this peer does not know
    (checked at submission, so only a changed catalog gets here) goes to the runner, whose
    dispatch fails the run with the error of `check`: the chunk fails, the scheduler goes on."""
    kind = KINDS.get(tdef.kind)
    return RUNNER if kind is None else kind.target


def invoke(tdef: TaskDef, ctx: TaskContext, inp: Path | None, out: Path,
           params: Mapping[str, Any]) -> Any:
    """Worker side: invoke `tdef` through its kind's Invoke (imported on first use)."""
    fn = _invokers.get(tdef.kind)
    if fn is None:
        module, _, name = check(tdef).invoke.partition(":")
        fn = _invokers[tdef.kind] = cast(Invoke, getattr(importlib.import_module(module), name))
    return fn(tdef, ctx, inp, out, params)


def invoke_python(tdef: TaskDef, ctx: TaskContext, inp: Path | None, out: Path,
                  params: Mapping[str, Any]) -> Any:
    """The `python` kind: call the registered function in the worker process."""
    return tdef.fn(ctx, inp, out, **params)
