"""The task catalog: a decorator that registers plain functions as Banzai tasks.

Two kinds of task exist. A *whole* task receives its input (a local file or
directory, or None) and fills an output directory. A *per-item* task is called
once per input file matching its `items` glob; the engine caches, splits and
assembles the items. Registration happens at import time; third-party
packages add modules through the entry-point group ``banzai.tasks``. A task may
declare a warm-up (`warm=`) that the peer runs once, in its executor's forkserver,
so that every worker forked afterwards inherits its imports and compiled code.
"""

from __future__ import annotations

import fnmatch
import importlib
import json
import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Protocol

from peer.errors import ArgError

ARG_TYPES: dict[str, tuple[type, ...]] = {
    "int": (int,),
    "float": (int, float),
    "str": (str,),
    "bool": (bool,),
}


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()


class Keep:
    """Returned by a per-item task to keep its input item unchanged (same CID)."""


KEEP = Keep()


class TaskContext(Protocol):
    """What a running task may report and the peer's policy it runs under; every method is
    cheap and never blocks."""

    workdir: Path
    # CIDRs the peer lets fetching tasks reach beyond public addresses (--fetch-allow); the
    # runner sets it from the work order, so a job's own arguments can never widen it
    fetch_allow: tuple[str, ...]

    def progress(self, fraction: float) -> None: ...
    def log(self, message: str) -> None: ...
    def metric(self, name: str, step: int, value: float) -> None: ...


@dataclass(frozen=True)
class Arg:
    """One task argument: its name, type (int|float|str|bool), default and doc."""

    name: str
    type: str
    default: Any = REQUIRED
    doc: str = ""
    variadic: bool = False  # the last argument only: takes the remaining positionals
    min: float | None = None
    max: float | None = None

    def __post_init__(self) -> None:
        if self.type not in ARG_TYPES:
            raise ValueError(f"argument {self.name}: unknown type {self.type!r}")

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    def check(self, value: Any, where: str) -> Any:
        """Return the value converted to the declared type or raise ArgError."""
        values = value if self.variadic else [value]
        if self.variadic and (not isinstance(value, list) or not value):
            raise ArgError(f"{where}: {self.name} must be a non-empty list of {self.type}",
                           field=where)
        out = []
        for v in values:
            ok = isinstance(v, ARG_TYPES[self.type]) and not (
                self.type != "bool" and isinstance(v, bool))
            if not ok:
                raise ArgError(
                    f"{where}: {self.name} must be {self.type}, got {type(v).__name__} {v!r}",
                    field=where)
            if self.type == "float":
                v = float(v)
            if self.min is not None and v < self.min:
                raise ArgError(f"{where}: {self.name} must be >= {self.min}, got {v}", field=where)
            if self.max is not None and v > self.max:
                raise ArgError(f"{where}: {self.name} must be <= {self.max}, got {v}", field=where)
            out.append(v)
        return out if self.variadic else out[0]

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "type": self.type, "doc": self.doc,
                             "required": self.required, "variadic": self.variadic}
        if not self.required:
            d["default"] = self.default
        if self.min is not None:
            d["min"] = self.min
        if self.max is not None:
            d["max"] = self.max
        return d


Checker = Callable[[Mapping[str, Any]], None]
Warm = Callable[[], None]
"""A task's warm-up: imports and compiles what its first call would (e.g. librosa, numba).
Runs once per process before any worker forks from it: it must be idempotent, must not
start threads or processes and must not leave files open. Raising only loses the warm-up."""

log = logging.getLogger("banzai.tasks")


@dataclass(frozen=True)
class TaskDef:
    """A registered task. `fn` signatures:

    whole:    fn(ctx, inp: Path | None, out: Path, **params) -> Path | None
              (fill `out`, or return another path to use as the output)
    per-item: fn(ctx, src: Path, out_dir: Path, **params) -> Path | Keep | None
              (None drops the item, KEEP keeps it, a path is the new item,
              placed beside the input's relative path under its own name)
    reduce:   reduce(ctx, inp: Path, out: Path, **params) -> None, inp holding the
              per-item results as the per-item task's output would
    """

    name: str
    version: str
    fn: Callable[..., Any]
    args: tuple[Arg, ...]
    per_item: bool = False
    items: str = "*"  # glob on the file name of items a per-item task maps over
    passthrough: bool = False  # per-item: keep files not matching `items` unchanged
    needs_input: bool = True
    doc: str = ""
    check: Checker | None = None
    module: str = ""
    kind: str = "python"  # executor kind (peer/jobs/kinds.py): how the peer runs this task
    warm: Warm | None = None  # see Warm; run by warm_up()
    # per-item: an item is a directory holding files that match `items` (only those files,
    # as one directory), not a file; files at the input's root form one item
    groups: bool = False
    # per-item: the assembling step, a whole function over the directory of the item
    # results (in a worker, as the split's last chunk, once the others are done); its
    # output is the task's
    reduce: Callable[..., Any] | None = None
    # a whole task without input: the name of its variadic argument whose values a split
    # may run in chunks on several peers, each chunk the task on its values alone; the
    # task's output is the merge of the chunks' output directories, whose top-level names
    # must differ (the task's output on all values must be that merge)
    split_arg: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.kind, str) or not self.kind:
            raise ValueError(f"task {self.name}: kind must be a non-empty string")

    def matches(self, relpath: str) -> bool:
        return fnmatch.fnmatchcase(relpath.rsplit("/", 1)[-1], self.items)

    def bind(self, args: Sequence[Any] | None, params: Mapping[str, Any] | None,
             where: str) -> dict[str, Any]:
        """Map positional `args` or named `params` onto a full, checked params dict."""
        if args is not None and params is not None:
            raise ArgError(f"{where}: give either args or params, not both", field=where)
        given: dict[str, Any] = {}
        if args is not None:
            given = self._bind_positional(list(args), where)
        elif params is not None:
            known = {a.name for a in self.args}
            for k in params:
                if k not in known:
                    raise ArgError(
                        f"{where}: {self.name} has no argument {k!r} "
                        f"(known: {', '.join(sorted(known)) or 'none'})",
                        field=f"{where}.params.{k}")
            given = dict(params)
        out: dict[str, Any] = {}
        for a in self.args:
            loc = f"{where}.{a.name}"
            if a.name in given:
                out[a.name] = a.check(given[a.name], loc)
            elif a.required:
                raise ArgError(f"{loc}: missing required argument {a.name} ({a.type})",
                               field=loc)
            else:
                out[a.name] = a.default
        if self.check is not None:
            try:
                self.check(out)
            except ArgError as e:  # place the task's own complaint at the task
                field = f"{where}.{e.field}" if e.field else where
                raise ArgError(f"{where}: {e.message}", field=field) from None
        return out

    def _bind_positional(self, args: list[Any], where: str) -> dict[str, Any]:
        formal = list(self.args)
        variadic = formal and formal[-1].variadic
        fixed = formal[:-1] if variadic else formal
        if len(args) > len(fixed) and not variadic:
            raise ArgError(
                f"{where}: {self.name} takes at most {len(fixed)} argument(s) "
                f"({', '.join(a.name for a in fixed) or 'none'}), got {len(args)}",
                field=f"{where}.args")
        given: dict[str, Any] = dict(zip([a.name for a in fixed], args, strict=False))
        if variadic and len(args) > len(fixed):
            given[formal[-1].name] = args[len(fixed):]
        return given

    def to_json(self) -> dict[str, Any]:
        return {"call": self.name, "version": self.version, "kind": self.kind, "doc": self.doc,
                "per_item": self.per_item, "items": self.items,
                "needs_input": self.needs_input, "args": [a.to_json() for a in self.args]}


_REGISTRY: dict[str, TaskDef] = {}


def task(name: str, *, version: str = "1", args: Iterable[Arg] = (), per_item: bool = False,
         items: str = "*", passthrough: bool = False, needs_input: bool = True,
         check: Checker | None = None, warm: Warm | None = None, groups: bool = False,
         reduce: Callable[..., Any] | None = None, split_arg: str | None = None,
         ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register `fn` as task `name`. Bump `version` when its output changes; `warm` is its
    warm-up (see Warm); `groups`, `reduce` and `split_arg`: see TaskDef."""

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        doc = (fn.__doc__ or "").strip().split("\n\n")[0].replace("\n", " ")
        d = TaskDef(name=name, version=version, fn=fn, args=tuple(args), per_item=per_item,
                    items=items, passthrough=passthrough, needs_input=needs_input, doc=doc,
                    check=check, module=fn.__module__, warm=warm, groups=groups,
                    reduce=reduce, split_arg=split_arg)
        if (groups or reduce is not None) and not per_item:
            raise ValueError(f"task {name}: groups and reduce are for per-item tasks")
        if split_arg is not None and (per_item or needs_input or not d.args
                                      or d.args[-1].name != split_arg
                                      or not d.args[-1].variadic):
            raise ValueError(f"task {name}: split_arg must name the variadic last argument "
                             "of a whole task without input")
        for a in d.args[:-1]:
            if a.variadic:
                raise ValueError(f"task {name}: only the last argument may be variadic")
        _REGISTRY[name] = d
        return fn

    return deco


def load(extra_modules: Iterable[str] = ()) -> dict[str, TaskDef]:
    """Import the built-in, entry-point and `extra_modules` task modules; return the catalog."""
    for ep in entry_points(group="banzai.tasks"):
        importlib.import_module(ep.value.split(":")[0])
    for mod in extra_modules:
        importlib.import_module(mod)
    return dict(_REGISTRY)


def catalog() -> dict[str, TaskDef]:
    """The tasks registered so far (call `load` first)."""
    return dict(_REGISTRY)


_warmed: dict[str, int] = {}  # task name -> pid of the process that ran its warm-up


def warm_up() -> list[str]:
    """Run the warm-up of every registered task not warmed yet in this process (a hook
    shared by several tasks runs once); returns one line per failed warm-up, also logged.
    A forked child inherits what its parent warmed (see `warmed`)."""
    errors: list[str] = []
    ran: dict[Warm, bool] = {}  # hook -> succeeded
    for name, d in _REGISTRY.items():
        if d.warm is None or name in _warmed:
            continue
        if d.warm not in ran:
            ran[d.warm] = _run_warm(name, d.warm, errors)
        if ran[d.warm]:
            _warmed[name] = os.getpid()
    return errors


def _run_warm(name: str, hook: Warm, errors: list[str]) -> bool:
    try:
        hook()
    except Exception as e:
        errors.append(f"warm-up of {name} failed: {type(e).__name__}: {e}")
        log.warning("%s", errors[-1])
        return False
    return True


def warmed() -> dict[str, int]:
    """The tasks whose warm-up has run, each with the pid of the process that ran it (an
    ancestor of this one when it was inherited through fork)."""
    return dict(_warmed)


def canonical_json(value: Any) -> str:
    """Canonical JSON: sorted keys, no whitespace, UTF-8; the input of cache keys."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
