"""What a worker process runs for one chunk: materialise input, call the task, store output.

Runs inside executor workers (never in the event loop). The store is opened per
process, by peer.ipfs.store.open_store from the work order's store settings, and shared
with the peer through the filesystem. A per-item chunk imports each finished batch on one
helper thread of its own while the next batch computes.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from concurrent.futures import Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

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
    return {"output": store.add_path(Path(result) if result is not None else out)}


def _run_items(store: Store, tdef: TaskDef, params: dict[str, Any], items: list[list[str]],
               ctx: TaskContext) -> dict[str, Any]:
    """Run a per-item chunk in batches of about _FLUSH_S. A batch's outputs are imported,
    made durable together (one store sync) and announced to the peer in one message on a
    helper thread while the next batch computes; at most one batch is in flight."""
    results: dict[str, Any] = {}
    scratch = _scratch(ctx, tdef)
    flusher = _Flusher(store, ctx, results, len(items))
    try:
        n = 0
        while n < len(items):
            batch = scratch / f"b{n}"
            first, (n, done, wait) = n, _batch(store, tdef, params, items, n, ctx, batch)
            flusher.submit(done, batch, first)
            if wait:  # an output the next items could change: imported before they run
                flusher.wait()
        flusher.wait()
    finally:
        flusher.close()
        shutil.rmtree(scratch, ignore_errors=True)
    return {"items": results, "inputs": items}


# One finished item: (relpath, input cid, result, output file to import or None, its name).
_Done = tuple[str, str, Any, Path | None, str]


def _batch(store: Store, tdef: TaskDef, params: dict[str, Any], items: list[list[str]],
           n: int, ctx: TaskContext, batch: Path) -> tuple[int, list[_Done], bool]:
    """Run items from index `n` for about _FLUSH_S (one at least), each with an output
    directory of its own under `batch`; returns the next index, the finished items, and
    whether they must be imported before the next item runs (an output that is not a file
    of its own directory)."""
    until = time.monotonic() + _FLUSH_S
    inp = batch / "in"
    inp.mkdir(parents=True)
    done: list[_Done] = []
    size = 0
    while n < len(items):
        relpath, cid = items[n]
        name = relpath.rsplit("/", 1)[-1] or "item"
        out = batch / str(n)
        out.mkdir()
        try:
            r = kinds.invoke(tdef, ctx, _place(store, tdef, cid, inp / name, ctx), out, params)
        finally:
            _empty(inp)
            if (ctx.workdir / "in").is_dir():
                _empty(ctx.workdir / "in")
        n += 1
        if r is None or r is KEEP:
            done.append((relpath, cid, None if r is None else {"n": name, "c": cid}, None, ""))
        else:
            p = Path(r)
            done.append((relpath, cid, None, p, p.name))
            if not _private(p, out):
                return n, done, True
            size += p.stat().st_size
        if time.monotonic() >= until or size >= _BATCH_BYTES:
            break
    return n, done, False


def _private(p: Path, out: Path) -> bool:
    """True if `p` is a regular file in `out` (no later item can change it before its
    import); anything else (a directory, a link, a path elsewhere) is imported at once."""
    return (os.path.dirname(os.path.abspath(p)) == str(out) and not p.is_symlink()
            and p.is_file())


class _Flusher:
    """Imports finished batches on one helper thread, in order: their outputs are added
    under one store sync, then (durable) announced in one `items` message."""

    def __init__(self, store: Store, ctx: TaskContext, results: dict[str, Any],
                 total: int) -> None:
        self._store, self._ctx, self._results, self._total = store, ctx, results, total
        self._send = getattr(ctx, "send", None)
        self._pool: ThreadPoolExecutor | None = None
        self._fut: Future[None] | None = None
        self._count = 0

    def submit(self, done: list[_Done], batch: Path, first: int) -> None:
        self.wait()  # the previous batch first: one in flight, messages in order
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="banzai-items")
        self._fut = self._pool.submit(self._flush, done, batch)

    def wait(self) -> None:
        """Until the batch in flight is durable and announced; raises its error."""
        fut, self._fut = self._fut, None
        if fut is not None:
            fut.result()

    def close(self) -> None:
        """Wait for the batch in flight (its error, if any, is dropped: another one is
        being raised) and stop the thread."""
        if self._fut is not None:
            wait([self._fut])
        if self._pool is not None:
            self._pool.shutdown(wait=True)

    def _flush(self, done: list[_Done], batch: Path) -> None:
        message = []
        with self._store.adding() as add:
            for relpath, cid, result, path, name in done:
                if path is not None:
                    result = {"n": name, "c": add(path)}
                self._results[relpath] = result
                message.append([relpath, cid, result])
        if self._send is not None:  # lets the peer record finished items before the chunk ends
            self._send("items", message)
        self._count += len(done)
        self._ctx.progress(self._count / self._total)
        shutil.rmtree(batch, ignore_errors=True)


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
