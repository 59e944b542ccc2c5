"""What a worker process runs for one chunk: materialise input, call the task, store output.

Runs inside executor workers (never in the event loop). The store is opened per
process, by peer.ipfs.store.open_store from the work order's store settings, and shared
with the peer through the filesystem. A per-item chunk imports its outputs on one helper
thread of its own (a queue in, futures out) while the next items compute.
"""

from __future__ import annotations

import os
import queue
import shutil
import stat
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from peer.ipfs import inline
from peer.ipfs.cids import RAW, parse_cid
from peer.ipfs.store import Store, StoreConfig, open_store
from peer.jobs import kinds
from tasks import registry
from tasks.registry import KEEP, TaskContext, TaskDef

_stores: dict[StoreConfig, Store] = {}
# A per-item chunk makes its finished items' outputs durable and reports them to the peer
# at least this often (a slower item: after itself), so a crash loses at most this much work.
_FLUSH_S = 0.25
# A python task's per-item scratch (inputs and outputs) lives on tmpfs where there is one;
# a batch ends early once its outputs there reach this many bytes.
_TMPFS = "/dev/shm"
_PREFIX = "banzai-items-"
_BATCH_BYTES = 64 << 20


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
    """Run a per-item chunk in batches of about _FLUSH_S. A helper thread imports each
    output as soon as its item ends, while the next ones compute; at a batch's end it makes
    the batch's outputs durable (one store sync) and then announces them to the peer in one
    message. The chunk ends once its last batch is durable and announced."""
    results: dict[str, Any] = {}
    scratch = _scratch(ctx, tdef)
    flusher = _Flusher(store, ctx, results, len(items))
    try:
        n = 0
        while n < len(items):
            batch = scratch / f"b{n}"
            n, must_wait = _batch(store, tdef, params, items, n, ctx, batch, flusher.put)
            flusher.end_batch(batch)
            if must_wait:  # an output the next items could change: imported before they run
                flusher.wait()
                if (ctx.workdir / "in").is_dir():  # a large item's copy (the batch's go with it)
                    _empty(ctx.workdir / "in")
        flusher.wait()
    finally:
        flusher.close()
        shutil.rmtree(scratch, ignore_errors=True)
    return {"items": results, "inputs": items}


# One finished item: (relpath, input cid, result, output file to import or None, its name).
_Done = tuple[str, str, Any, Path | None, str]


def _batch(store: Store, tdef: TaskDef, params: dict[str, Any], items: list[list[str]],
           n: int, ctx: TaskContext, batch: Path, put: Callable[[_Done], None],
           ) -> tuple[int, bool]:
    """Run items from index `n` for about _FLUSH_S (one at least), each with an output
    directory of its own under `batch`, handing each to `put` as it ends; returns the next
    index and whether the batch must be durable before the next item runs (an output that
    is not a file of its own directory)."""
    until = time.monotonic() + _FLUSH_S
    inp = batch / "in"
    inp.mkdir(parents=True)
    size = 0
    while n < len(items):
        relpath, cid = items[n]
        name = relpath.rsplit("/", 1)[-1] or "item"
        out = batch / str(n)
        out.mkdir()
        src = _place(store, tdef, cid, inp / name, ctx)
        r = kinds.invoke(tdef, ctx, src, out, params)
        n += 1
        if r is None or r is KEEP:
            put((relpath, cid, None if r is None else {"n": name, "c": cid}, None, ""))
        else:
            p = Path(r)
            put((relpath, cid, None, p, p.name))
            private = _private(p, out)
            if private is None:  # imported before anything changes (`src`'s directory too)
                return n, True
            size += private
        _empty(src.parent)
        if time.monotonic() >= until or size >= _BATCH_BYTES:
            break
    return n, False


def _private(p: Path, out: Path) -> int | None:
    """The size of `p` if it is a regular file in `out` (no later item can change it before
    its import); None for anything else (a directory, a link, a path elsewhere), which is
    imported before the next item runs."""
    if os.path.dirname(os.path.abspath(p)) != str(out):
        return None
    st = os.lstat(p)
    return st.st_size if stat.S_ISREG(st.st_mode) else None


class _Flusher:
    """One helper thread that imports finished items in order, each batch under one store
    sync (`Store.adding`), then announces the batch, durable, in one `items` message. At
    most one batch's end is pending: `end_batch` first waits for the one before."""

    def __init__(self, store: Store, ctx: TaskContext, results: dict[str, Any],
                 total: int) -> None:
        self._store, self._ctx, self._results, self._total = store, ctx, results, total
        self._send = getattr(ctx, "send", None)
        self._queue: queue.SimpleQueue[_Done | tuple[Path, Future[None]] | None] = (
            queue.SimpleQueue())
        self._thread: threading.Thread | None = None
        self._pending: Future[None] | None = None  # the end of the last batch handed over
        self._error: BaseException | None = None
        self._count = 0

    def put(self, done: _Done) -> None:
        """Hand over a finished item (imported soon, announced at its batch's end)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="banzai-items", daemon=True)
            self._thread.start()
        self._queue.put(done)

    def end_batch(self, batch: Path) -> None:
        """End the current batch (its scratch `batch` is removed once it is imported);
        raises the error of an earlier batch."""
        self.wait()
        if self._thread is None:  # an empty batch: nothing to import or announce
            return
        self._pending = Future()
        self._queue.put((batch, self._pending))

    def wait(self) -> None:
        """Until every batch ended so far is durable and announced; raises its error."""
        fut, self._pending = self._pending, None
        if fut is not None:
            fut.result()

    def close(self) -> None:
        """Stop the thread once it is idle (an error of its is dropped here: `wait` raises
        it; close runs on the way out of a chunk that failed already)."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()

    def _run(self) -> None:
        while self._batch():
            pass

    def _batch(self) -> bool:
        """Import one batch's items, sync, announce; False once told to stop."""
        message: list[list[Any]] = []
        got: _Done | tuple[Path, Future[None]] | None = None
        try:
            with self._store.adding() as add:
                while True:
                    got = self._queue.get()
                    if got is None or len(got) == 2:
                        break
                    message.append(self._import(add, got))
                if got is None:  # stopping: an unfinished batch is not announced
                    raise _Stop
            if self._send is not None:  # the peer records finished items before the end
                self._send("items", message)
            self._count += len(message)
            self._ctx.progress(self._count / self._total)
            shutil.rmtree(got[0], ignore_errors=True)
            got[1].set_result(None)
        except _Stop:
            return False
        except BaseException as e:  # this batch's end, and every later one, fail with it
            self._error = e
            if got is not None and len(got) == 2:
                got[1].set_exception(e)
            return self._fail()
        return True

    def _import(self, add: Callable[[Path], str], done: _Done) -> list[Any]:
        relpath, cid, result, path, name = done
        if path is not None:
            result = {"n": name, "c": add(path)}
        self._results[relpath] = result
        return [relpath, cid, result]

    def _fail(self) -> bool:
        """After an error: every later batch's end fails with it, nothing is imported."""
        while True:
            got = self._queue.get()
            if got is None:
                return False
            if len(got) == 2:
                got[1].set_exception(self._error)


class _Stop(Exception):
    """The chunk ends with a batch unfinished (an item failed): nothing more to do."""


def _scratch(ctx: TaskContext, tdef: TaskDef) -> Path:
    """A fresh directory for a chunk's per-item inputs and outputs: on tmpfs for python
    tasks where there is one (its files never reach the disk: no journal, nothing for
    the store's syncfs to write back), else in the run's work directory."""
    if tdef.kind == "python" and os.path.isdir(_TMPFS) and os.access(_TMPFS, os.W_OK):
        _sweep(Path(_TMPFS))
        try:
            return Path(tempfile.mkdtemp(prefix=f"{_PREFIX}{os.getpid()}-", dir=_TMPFS))
        except OSError:
            pass
    d = ctx.workdir / "items"
    d.mkdir()
    return d


def _sweep(root: Path) -> None:
    """Remove scratch directories left on tmpfs by workers that died (killed mid-chunk)."""
    with os.scandir(root) as it:
        names = [e.name for e in it if e.name.startswith(_PREFIX)]
    for name in names:
        pid = name[len(_PREFIX):].split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(root / name, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # someone else's: alive
        return True
    return True


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


def _empty(d: Path) -> None:
    """Empty `d` for the next item. Unlinks files and rmtree()s only subdirectories: a
    per-item rmtree of fresh directories cost more than the trivial tasks themselves."""
    with os.scandir(d) as it:
        for e in it:
            if e.is_dir(follow_symlinks=False):
                shutil.rmtree(e.path)
            else:
                os.unlink(e.path)
