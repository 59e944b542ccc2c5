"""Executor kinds: how a task of each kind (`TaskDef.kind`) is run, in one table.

Pure lookups, safe from any thread; a kind's worker-side module is imported lazily, in
the worker process, on its first call. A new kind is one module with an `invoke`
function plus one entry in `KINDS`.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple, Protocol, cast

from peer.errors import SpecError
from peer.jobs.kindspec import EXTERNAL, secret_names
from tasks.registry import TaskContext, TaskDef

__all__ = ["KINDS", "KIND_TASKS", "RUNNER", "Invoke", "Kind", "check", "invoke", "settings",
           "target"]

log = logging.getLogger("banzai.kinds")
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
    "shell": Kind(RUNNER, "peer.jobs.kind_shell:invoke"),
    "container": Kind(RUNNER, "peer.jobs.kind_container:invoke"),
    "api": Kind(RUNNER, "peer.jobs.kind_api:invoke"),
}


def _not_python(*_: Any, **__: Any) -> None:
    raise SpecError("a task of an external kind has no Python function")


_DOCS = {"shell": "a command run by /bin/sh in a fresh work dir (--allow-shell)",
         "container": "a command run in a container image (--allow-containers)",
         "api": "a run of an HTTP service (docs/executors.md)"}
KIND_TASKS: Mapping[str, TaskDef] = {
    k: TaskDef(name=k, version="1", fn=_not_python, args=(), needs_input=False, doc=_DOCS[k],
               module=f"peer.jobs.kind_{k}", kind=k) for k in EXTERNAL}
"""The catalog entries of the external kinds: a workflow's kind task has `call` = its kind.
A peer puts into its catalog (and so announces, and claims) only the kinds it allows."""

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


def allowed(shell: bool, containers: bool) -> dict[str, TaskDef]:
    """The external kinds a peer runs (and announces as calls): api always (under the fetch
    address policy), shell and container only when its operator allows them."""
    ok = {"api": True, "shell": shell, "container": containers}
    return {k: d for k, d in KIND_TASKS.items() if ok[k]}


def unavailable(call: str) -> str:
    """Why a task of `call` waits when no live peer runs it."""
    how = {"shell": " (a peer runs shell tasks with --allow-shell)",
           "container": " (a peer runs container tasks with --allow-containers)"}
    what = f"{call} tasks" if call in KIND_TASKS else f"the task {call}"
    return f"waiting: no live peer runs {what}{how.get(call, '')}"


def peer_settings(*, log_max_bytes: int, secrets: Mapping[str, str], runtime: str,
                  network: bool, owner: str = "", mem_mb: int = 0,
                  images: Mapping[str, str] | None = None,
                  confine: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A peer's settings for its external kinds (SchedulerConfig.kind_settings): `owner`
    labels its containers, `mem_mb` bounds them, `images` (name -> sha256:ID) it holds,
    `confine` how its shell tasks are confined (`confine.box`; None: they are not)."""
    return {"log_max_bytes": log_max_bytes, "secrets": dict(secrets), "runtime": runtime,
            "allow_network": network, "owner": owner, "mem_mb": mem_mb,
            "images": dict(images or {}), "confine": dict(confine) if confine else None}


def start_containers(runtime: str, owner: str) -> dict[str, str] | None:
    """Blocking, once at a peer's start with --allow-containers: None (logged) if `runtime`
    cannot run containers here; else remove the containers an earlier run of `owner` left
    (a kill -9) and return the images held (name -> sha256:ID)."""
    from peer.jobs import kind_container as kc
    why = kc.usable(runtime)
    if why is not None:
        log.warning("--allow-containers: %s; this peer runs no container tasks", why)
        return None
    left = kc.sweep(runtime, owner)
    if left:
        log.info("removed %d container(s) left by an earlier run: %s", len(left),
                 " ".join(c[:12] for c in left))
    return kc.images(runtime)


def runnable(call: str | None, params: Mapping[str, Any], peer: Mapping[str, Any]) -> bool:
    """False for a container task whose image (by digest) this peer does not hold."""
    if call != "container":
        return True
    from peer.jobs.kind_container import held
    return held(str(params.get("image", "")), peer.get("images") or {})


def cleanup(tdef: TaskDef, run: str, peer: Mapping[str, Any]) -> list[str]:
    """Daemon side, blocking (call it in a thread): remove what a killed run of `tdef` may
    have left running outside its worker's process group (a container); what was removed."""
    if tdef.kind != "container":
        return []
    from peer.jobs.kind_container import RUN_LABEL, remove
    return remove(str(peer.get("runtime", "podman")), RUN_LABEL, run)


def work_settings(tdef: TaskDef, params: Mapping[str, Any], peer: Mapping[str, Any],
                  run: str = "") -> dict[str, Any]:
    """Daemon side: what a work order carries of the peer's kind settings: none for a
    python task; for the others all but the secrets, of which only those the task names."""
    if tdef.kind not in EXTERNAL:
        return {}
    held: Mapping[str, str] = peer.get("secrets") or {}
    out = {k: v for k, v in peer.items() if k not in ("secrets", "images")}
    out["secrets"] = {n: held[n] for n in secret_names(params) if n in held}
    out["run"] = run
    return out


def settings(ctx: TaskContext) -> Mapping[str, Any]:
    """Worker side: the peer's settings for external kinds that came with the work order
    (log bound, secrets the task names, container runtime, network permission)."""
    return cast(Mapping[str, Any], getattr(ctx, "kind_settings", None) or {})


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
