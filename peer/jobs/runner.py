"""What a worker process runs for one chunk: materialise input, call the task, store output.

Runs inside executor workers (never in the event loop). The store is opened per
process, by peer.ipfs.store.open_store from the work order's store settings, and shared
with the peer through the filesystem.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

from peer.ipfs import inline
from peer.ipfs.store import Store, StoreConfig, open_store
from peer.jobs import kinds
from tasks import registry
from tasks.registry import KEEP, TaskContext, TaskDef

_stores: dict[StoreConfig, Store] = {}
# A per-item chunk makes its finished items' outputs durable and reports them to the peer
# at least this often (a slower item: after itself), so a crash loses at most this much work.
_FLUSH_S = 0.25


def _store(settings: dict[str, Any]) -> Store:
    cfg = StoreConfig.from_json(settings)
    if cfg not in _stores:
        _stores[cfg] = open_store(cfg)
    return _stores[cfg]


def _task(call: str, modules: list[str]) -> TaskDef:
    if call in kinds.KIND_TASKS:
        return kinds.KIND_TASKS[call]
    cat = registry.catalog()
    if call not in cat:
        cat = registry.load(modules)
    return cat[call]


def run(payload: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    """Run one chunk; returns {"output": cid} (a whole task, or the reduce of a per-item
    task) or {"items": {path: result}, "inputs": [...]}."""
    store = _store(payload["store"])
    tdef = _task(payload["call"], payload["modules"])
    ctx.fetch_allow = tuple(payload.get("fetch_allow", ()))  # the peer's, never the job's
    ctx.kind_settings = payload.get("kind") or {}  # type: ignore[attr-defined]  # the peer's
    params = payload["params"]
    if payload["items"] is not None:
        return _run_items(store, tdef, params, payload["items"], ctx)
    inp: Path | None = None
    if payload["input"] is not None:
        inp = ctx.workdir / "input"
        store.materialize(payload["input"], inp)
    out = ctx.workdir / "output"
    out.mkdir()
    if payload.get("reduce") and tdef.reduce is not None:  # a per-item task's assembling step
        result = tdef.reduce(ctx, inp, out, **params)
    else:
        result = kinds.invoke(tdef, ctx, inp, out, params)
    ctx.progress(1.0)
    path = Path(result) if result is not None else out
    small = inline.import_small(path, int(payload.get("inline_max_bytes", 0)))
    if small is not None:  # its blocks ride in the CHUNK_DONE: the peer keeps them
        return {"output": small[0], "inline": inline.encode(small[1])}  # JSON: base64
    return {"output": store.add_path(path)}


def _run_items(store: Store, tdef: TaskDef, params: dict[str, Any], items: list[list[str]],
               ctx: TaskContext) -> dict[str, Any]:
    """Run a per-item chunk in batches of about _FLUSH_S: each batch's outputs are made
    durable together (one store sync), then its results go to the peer in one message."""
    results: dict[str, Any] = {}
    inp, out_dir = ctx.workdir / "in", ctx.workdir / "out"
    inp.mkdir()
    out_dir.mkdir()
    send = getattr(ctx, "send", None)
    n = 0
    while n < len(items):
        first, n = n, _batch(store, tdef, params, items, n, results, ctx, inp, out_dir)
        if send is not None:  # lets the peer record finished items before the chunk ends
            send("items", [[path, cid, results[path]] for path, cid in items[first:n]])
        ctx.progress(n / len(items))
    return {"items": results, "inputs": items}


def _batch(store: Store, tdef: TaskDef, params: dict[str, Any], items: list[list[str]],
           n: int, results: dict[str, Any], ctx: TaskContext, inp: Path, out_dir: Path) -> int:
    """Run items from index `n` for about _FLUSH_S (one at least); returns the next index
    once their outputs are durable (the store's sync when the `adding` block ends)."""
    until = time.monotonic() + _FLUSH_S
    with store.adding() as add:
        while n < len(items):
            relpath, cid = items[n]
            name = relpath.rsplit("/", 1)[-1] or "item"
            src = inp / name  # one item at a time: names never collide
            _place(store, tdef, cid, src)
            r = kinds.invoke(tdef, ctx, src, out_dir, params)
            if r is None:
                results[relpath] = None
            elif r is KEEP:
                results[relpath] = {"n": name, "c": cid}
            else:
                p = Path(r)
                results[relpath] = {"n": p.name, "c": add(p)}
            _empty(inp)
            _empty(out_dir)
            n += 1
            if time.monotonic() >= until:
                break
    return n


def _place(store: Store, tdef: TaskDef, cid: str, src: Path) -> None:
    """Put item `cid` at `src`: for a python task, when the item is one raw block, a
    symlink to the store's block file, verified (python tasks read their items only); else,
    and for other kinds (external commands), a private copy."""
    block = store.block_file(cid) if tdef.kind == "python" else None
    if block is None:
        store.materialize(cid, src)
    else:
        os.symlink(block, src)


def _empty(d: Path) -> None:
    """Empty `d` for the next item. Unlinks files and rmtree()s only subdirectories: a
    per-item rmtree of fresh directories cost more than the trivial tasks themselves."""
    with os.scandir(d) as it:
        for e in it:
            if e.is_dir(follow_symlinks=False):
                shutil.rmtree(e.path)
            else:
                os.unlink(e.path)
