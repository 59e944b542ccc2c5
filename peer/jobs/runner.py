"""What a worker process runs for one chunk: materialise input, call the task, store output.

Runs inside executor workers (never in the event loop). The store is opened per
process, by peer.ipfs.store.open_store from the work order's store settings, and shared
with the peer through the filesystem. A whole task's output is imported as one batch of adds
(one store commit). A per-item chunk imports each output as its item ends and makes its
batches durable (one store commit each), a batch followed by others on a helper thread of its
own while the next batch computes.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from peer.cids import RAW, parse_cid
from peer.dataentry import empty, remove_tree
from peer.ipfs import inline
from peer.ipfs.store import AddBatch, Store, StoreConfig, open_store
from peer.jobs import kinds, scratch
from tasks import registry
from tasks.registry import KEEP, TaskContext, TaskDef

_stores: dict[StoreConfig, Store] = {}
# A per-item chunk makes its finished items' outputs durable and reports them to the peer
# at least this often (a slower item: after itself), so a crash loses at most this much work.
_FLUSH_S = 0.25
# A chunk's last items run as a batch of their own: the batch before them is committed on the
# helper thread while they compute, so the chunk waits at its end for a small commit only.
_TAIL_ITEMS = 4


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
    free_min = int(payload.get("tmpfs_free_min_bytes", 0))
    if payload["items"] is not None:  # scratch on disk after a storage failure (the peer's)
        return _run_items(store, tdef, params, payload["items"], ctx,
                          free_min if payload.get("tmpfs_items", True) else None)
    inp: Path | None = None
    if payload["input"] is not None:  # on disk, whatever its size
        inp = ctx.workdir / "input"
        store.materialize(payload["input"], inp)
    tmp = (scratch.on_tmpfs(free_min)
           if payload.get("tmpfs_output") and tdef.kind == "python" else None)
    try:
        out = (tmp or ctx.workdir) / "output"  # ctx.workdir: made only if needed
        out.mkdir()
        if payload.get("reduce") and tdef.reduce is not None:  # a per-item task's assembly
            result = tdef.reduce(ctx, inp, out, **params)
        else:
            result = kinds.invoke(tdef, ctx, inp, out, params)
        ctx.progress(1.0)
        return _output(store, Path(result) if result is not None else out, out, payload)
    finally:
        if tmp is not None:
            scratch.remove(tmp)


def _output(store: Store, path: Path, out: Path, payload: dict[str, Any]) -> dict[str, Any]:
    """A whole task's output `path` imported (inline if small: its blocks ride in the
    CHUNK_DONE, the peer keeps them), with the bytes the task wrote in `out` (counted up to
    tmpfs_output_max_bytes: the peer's rule of where this call's next output goes)."""
    limit = int(payload.get("tmpfs_output_max_bytes", 0))
    size = {"bytes": scratch.tree_bytes(out, limit)} if limit > 0 else {}
    small = inline.import_small(path, int(payload.get("inline_max_bytes", 0)))
    if small is not None:
        return {"output": small[0], "inline": inline.encode(small[1]), **size}  # base64
    return {"output": _import(store, path, out), **size}


def _import(store: Store, path: Path, out: Path) -> str:
    """`path` imported as one batch of adds, durable when this returns (the same CID as
    `add_path`). The blocks' temp files are made durable together (`AddBatch.commit`)
    rather than fsynced one by one: an output of many blocks (FETCH_FESTVOX's 440) cost a
    journal commit per block. The task's files in `out` are removed before that commit:
    they are in the store's temp files by then, and the commit's sync of the file system
    would otherwise write them to disk only for the run's cleanup to delete them."""
    adds = store.add_batch()
    try:
        cid = adds.add(path)
        remove_tree(out, ignore_errors=True)
    except BaseException:
        adds.discard()
        raise
    adds.commit()  # StorageFull or StoreError: the run fails, its CID is never reported
    return cid


def _run_items(store: Store, tdef: TaskDef, params: dict[str, Any], items: list[list[str]],
               ctx: TaskContext, tmpfs_free_min_bytes: int | None = 0) -> dict[str, Any]:
    """Run a per-item chunk in batches of about _FLUSH_S. Each output is imported as soon as
    its item ends, on this thread, into the batch's `Store.add_batch`; at a batch's end the
    batch is made durable (one store commit) and only then announced to the peer in one
    message: on a helper thread while the next batch computes, here for the chunk's last.
    The chunk ends once its last batch is durable and announced. `tmpfs_free_min_bytes`:
    see _scratch."""
    results: dict[str, Any] = {}
    where = _scratch(ctx, tdef, tmpfs_free_min_bytes)
    try:
        announcer = _Announcer(ctx, results, len(items))  # (if it raises: `where` goes too)
        try:
            n = 0
            while n < len(items):
                adds = store.add_batch()
                try:
                    n, message = _batch(store, tdef, params, items, n, ctx, where, adds.add)
                except BaseException:
                    adds.discard()
                    raise
                announcer.commit(adds, message, last=n >= len(items))
            announcer.wait()
        finally:
            announcer.close()
    finally:
        scratch.remove(where)
    return {"items": results, "inputs": items}


def _batch(store: Store, tdef: TaskDef, params: dict[str, Any], items: list[list[str]],
           n: int, ctx: TaskContext, where: Path, add: Callable[[Path], str],
           ) -> tuple[int, list[list[Any]]]:
    """Run items from index `n` for about _FLUSH_S (one at least), each in an empty output
    directory, importing each output with `add` before the next item runs; returns the next
    index and the batch's results as [relpath, input cid, result]."""
    until = time.monotonic() + _FLUSH_S
    tail = len(items) - _TAIL_ITEMS if n < len(items) - 2 * _TAIL_ITEMS else -1
    inp, out = where / "in", where / "out"
    message: list[list[Any]] = []
    while n < len(items):
        inp.mkdir(exist_ok=True)  # again: a task may have removed them
        out.mkdir(exist_ok=True)
        relpath, cid = items[n]
        name = relpath.rsplit("/", 1)[-1] or "item"
        src = _place(store, tdef, cid, inp / name, ctx)
        r = kinds.invoke(tdef, ctx, src, out, params)
        n += 1
        result: dict[str, str] | None = None
        if r is KEEP:
            result = {"n": name, "c": cid}
        elif r is not None:
            p = Path(r)
            result = {"n": p.name, "c": add(p)}
        message.append([relpath, cid, result])
        for d in dict.fromkeys((inp, src.parent, out)):  # for the next item: a symlink the
            empty(d)  # task put in place of one is removed, never followed (made again above)
        if n == tail or time.monotonic() >= until:
            break
    return n, message


_Commit = tuple[AddBatch, list[list[Any]], Future[None]]  # a batch handed to the thread


class _Announcer:
    """Makes each batch of a chunk durable (`AddBatch.commit`), then announces it in one
    `items` message and records its results: a batch followed by others on one helper
    thread (the next batch computes meanwhile), the chunk's last on the chunk's thread. At
    most one batch is pending: `commit` first waits for the one before."""

    def __init__(self, ctx: TaskContext, results: dict[str, Any], total: int) -> None:
        self._ctx, self._results, self._total = ctx, results, total
        self._send = getattr(ctx, "send", None)
        self._queue: queue.SimpleQueue[_Commit | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._pending: Future[None] | None = None  # the batch handed to the thread
        self._count = 0

    def commit(self, adds: AddBatch, message: list[list[Any]], last: bool) -> None:
        """Commit and announce a batch (`last`: here, before returning); raises the error
        of an earlier batch (then `adds` is discarded) or, if `last`, of this one."""
        try:
            self.wait()
        except BaseException:
            adds.discard()
            raise
        if last:
            self._announce(adds, message)
            return
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="banzai-items", daemon=True)
            self._thread.start()
        self._pending = Future()
        self._queue.put((adds, message, self._pending))

    def wait(self) -> None:
        """Until the batch handed to the thread is durable and announced; raises its error."""
        fut, self._pending = self._pending, None
        if fut is not None:
            fut.result()

    def close(self) -> None:
        """Stop the thread once it is idle (its error, if any, is `wait`'s to raise)."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()

    def _announce(self, adds: AddBatch, message: list[list[Any]]) -> None:
        adds.commit()  # StorageFull or StoreError: nothing of this batch is announced
        if self._send is not None:  # the peer records finished items before the end
            self._send("items", message)
        for relpath, _, result in message:
            self._results[relpath] = result
        self._count += len(message)
        self._ctx.progress(self._count / self._total)

    def _run(self) -> None:
        while (got := self._queue.get()) is not None:
            adds, message, fut = got
            try:
                self._announce(adds, message)
            except BaseException as e:  # the chunk's thread raises it at its next wait
                fut.set_exception(e)
            else:
                fut.set_result(None)


def _scratch(ctx: TaskContext, tdef: TaskDef, free_min_bytes: int | None) -> Path:
    """A fresh directory for a chunk's per-item inputs and outputs: on tmpfs for python
    tasks where there is one with `free_min_bytes` free (its files never reach the disk: no
    journal, nothing for the store's syncfs to write back), else (or if None) in the run's
    work directory."""
    if (tdef.kind == "python" and free_min_bytes is not None
            and (d := scratch.on_tmpfs(free_min_bytes)) is not None):
        return d
    d = ctx.workdir / "items"
    d.mkdir()
    return d


def _place(store: Store, tdef: TaskDef, cid: str, src: Path, ctx: TaskContext) -> Path:
    """Put item `cid` at `src` as a private copy and return where it is: for a python task
    whose item is one raw block (a CIDv1 raw leaf), its verified bytes, read once; else
    materialized from the store, on the run's work directory (never a large item on
    tmpfs), under the same name."""
    if tdef.kind == "python" and parse_cid(cid).codec == RAW:
        with open(src, "wb") as f:
            f.write(store.get_block(cid))  # verified against the CID: NotFound, IntegrityError
        return src
    if not src.is_relative_to(ctx.workdir):  # the scratch is on tmpfs
        big = ctx.workdir / "in"
        big.mkdir(exist_ok=True)
        src = big / src.name
    store.materialize(cid, src)
    return src

