"""Small outputs inline: a task output (and its run record) of at most `max_bytes` of blocks
travels inside its CHUNK_DONE (`inline`: CID -> base64 block), whose log write is its
durability; a peer that folds the event checks the blocks and writes them if it is one of
the output's replicas (peer.ipfs.replicate.replica_peers); the others only bound them
(`sized`) and keep them in memory for a while as they rode (`Staged`), checked (`decode`)
and written only when this peer needs the output.
Pure but for `InlineBlocks` (loop-owned; its writes are small and unsynced: the log is the
source).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import io
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, InvalidStateError
from pathlib import Path
from typing import Protocol

from peer.cids import Cid, parse_cid, verify
from peer.errors import BanzaiError, IntegrityError, StoreError
from peer.ipfs import dag
from peer.ipfs.fetch import RecentSet
from peer.ipfs.unixfs import Importer
from peer.log import ChunkDone, Event, EventType
from peer.log.lanes import peer_of

log = logging.getLogger("banzai.inline")

# The default bound, in bytes of blocks (the event carries 4/3 of it, base64). 1 KiB holds a
# small task's output directory (its node and a file of a few hundred bytes) and an empty
# run record; a bigger bound makes every peer's log, and every frame, carry more for each
# task, and compaction keeps the recent tasks' events in memory.
DEFAULT_MAX_BYTES = 1024
MAX_ENTRIES = 16  # files and directories of an output that may ride inline
# The inline outputs a peer keeps in memory rather than on disk (it is not one of their
# replicas), the latest folded: thousands of small outputs, a downstream task's input
# or a read through this peer's gateway written from memory rather than fetched. Counted in
# the characters they hold (CID texts and base64: 4/3 of their blocks' bytes and more) plus
# BLOCK_OVERHEAD a block and CARRIED_OVERHEAD an entry, so that no entry is free.
STAGED_MAX_BYTES = 4 << 20
# Blocks whose write failed, kept in memory to be written again when the disk takes writes
# (`write_again`), at most this much (the oldest go first: the next start restores them)
UNWRITTEN_MAX_BYTES = 4 << 20
CARRIED_OVERHEAD = 256  # an entry's objects (its Carried, tuples, the table's slot), about
BLOCK_OVERHEAD = 160  # a block's: its key's and text's str objects, its slot in the mapping


class MemorySink:
    """A BlockSink that keeps what the importer hashed (CID text -> bytes), in order."""

    def __init__(self) -> None:
        self.blocks: dict[str, bytes] = {}
        self.bytes = 0

    def put_trusted(self, c: Cid, data: bytes) -> None:
        if str(c) not in self.blocks:
            self.blocks[str(c)] = data
            self.bytes += len(data)


def _small_tree(path: Path, max_bytes: int) -> bool:
    """True if `path` is a file or a tree of regular files and directories whose files hold
    at most `max_bytes` together, with at most MAX_ENTRIES entries (nothing else read)."""
    if path.is_symlink():
        return False
    if path.is_file():
        return path.stat().st_size <= max_bytes
    if not path.is_dir():
        return False
    total = entries = 0
    for top, dirs, files in os.walk(path):
        entries += len(dirs) + len(files)
        if entries > MAX_ENTRIES:
            return False
        for name in files:
            p = Path(top, name)
            if p.is_symlink() or not p.is_file():
                return False
            total += p.stat().st_size
            if total > max_bytes:
                return False
        if any(Path(top, d).is_symlink() for d in dirs):
            return False
    return True


def import_small(path: Path, max_bytes: int, cid_version: int = 1,
                 ) -> tuple[str, dict[str, bytes]] | None:
    """The CID and blocks of `path` imported as `add_path` would (same CID), without writing
    anything, if its blocks total at most `max_bytes`; else None (the caller adds it)."""
    if max_bytes <= 0 or not _small_tree(path, max_bytes):
        return None
    sink = MemorySink()
    try:
        node = Importer(sink, cid_version).path(path)
    except (OSError, IntegrityError):  # what add_path would report: let it
        return None
    if sink.bytes > max_bytes:
        return None
    return str(node.cid), sink.blocks


def import_bytes(data: bytes, cid_version: int = 1) -> tuple[str, dict[str, bytes]]:
    """The CID and blocks of `data` as one file (as `add_bytes`), written nowhere."""
    sink = MemorySink()
    node = Importer(sink, cid_version).file(io.BytesIO(data))
    return str(node.cid), sink.blocks


def encode(blocks: Mapping[str, bytes]) -> dict[str, str]:
    """The event's `inline` value: CID -> standard base64 of the block."""
    return {c: base64.b64encode(b).decode("ascii") for c, b in blocks.items()}


def _b64_size(b64: str) -> int:
    """The bytes a base64 text of a valid shape (`sized`) decodes to: 4 characters -> 3
    bytes, less its padding (exact for valid base64; other characters are refused when
    decoded)."""
    return len(b64) * 3 // 4 - (b64[-2:] == "==") - (b64[-1:] == "=")


def sized(inline: Mapping[str, str], max_bytes: int) -> int:
    """The bytes of blocks an event's `inline` value holds, from its texts' lengths alone
    (nothing decoded nor hashed): IntegrityError if more blocks than allowed, a text whose
    length or padding no base64 text has, one block's text or all of them larger than
    `max_bytes` of blocks. The first checks of `decode`."""
    if len(inline) > 2 * MAX_ENTRIES + 2:
        raise IntegrityError(f"inline: {len(inline)} blocks, more than allowed")
    total = 0
    for text, b64 in inline.items():
        if len(b64) > (max_bytes + 2) // 3 * 4:
            raise IntegrityError(f"inline block {text[:64]}: larger than {max_bytes} bytes")
        body = b64.rstrip("=")
        if (not (b64.isascii() and text.isascii()) or len(b64) % 4
                or len(b64) - len(body) > 2 or "=" in body):
            raise IntegrityError(f"inline block {text[:64]!r}: not base64 (its characters, "
                                 "length or padding)")
        total += _b64_size(b64)
    if total > max_bytes:
        raise IntegrityError(f"inline blocks: more than {max_bytes} bytes")
    return total


def decode(inline: Mapping[str, str], roots: Iterable[str | None], max_bytes: int,
           ) -> dict[Cid, bytes]:
    """Check an event's `inline` value as hostile input: at most `max_bytes` of blocks, each
    hashing to its CID, every root named in the event among them. IntegrityError if not."""
    sized(inline, max_bytes)  # the bounds (exact for the base64 decoded below), first
    out: dict[Cid, bytes] = {}
    for text, b64 in inline.items():
        try:
            data = base64.b64decode(b64, validate=True)
            c = parse_cid(text)
        except (binascii.Error, ValueError, BanzaiError) as e:  # BadCID
            raise IntegrityError(f"inline block {text[:64]}: not a CID and base64: {e}") from e
        verify(c, data)  # IntegrityError on a mismatch
        out[c] = data
    have: set[str] | None = None  # every block's CID text, made only when needed
    for r in roots:
        if r is None or (r in inline and str(parse_cid(r)) == r):
            continue  # a block's key, in canonical form: no need to format every block's
        if have is None:
            have = {str(c) for c in out}
        if r not in have:
            raise IntegrityError(f"inline: the announced CID {r[:64]} is not among the blocks")
    return out


def checked(blocks: Mapping[str, bytes], output: str) -> dict[Cid, bytes]:
    """A worker's inline blocks, each verified against its CID, the output among them
    (IntegrityError if not: the task's process made them)."""
    out = {}
    for text, data in blocks.items():
        c = parse_cid(text)
        verify(c, data)
        out[c] = data
    if output not in blocks:
        raise IntegrityError(f"inline: the output {output[:64]} is not among the blocks")
    return out


PENDING_WALK_MAX = 4096  # blocks of a run's input looked at for a pending inline write


class Keeper(Protocol):
    """Where a peer keeps inline blocks (EmbeddedStore): served from memory at once
    (`stage_inline`), then written and `roots` pinned, unsynced (`keep_inline`, a thread);
    `get_block` reads one (from memory or disk; NotFound), in any thread."""

    def stage_inline(self, blocks: Mapping[Cid, bytes]) -> None: ...
    def keep_inline(self, blocks: Mapping[Cid, bytes], roots: Iterable[str]) -> None: ...
    def get_block(self, cid: str) -> bytes: ...


def last_pending(get: Callable[[str], bytes], roots: Iterable[str],
                 pending: Mapping[str, int], max_blocks: int = PENDING_WALK_MAX) -> int:
    """The latest of the `pending` writes (block key -> the first write not yet landed that
    holds it) holding a block of the DAGs under `roots`, 0 if none: their linking blocks
    are read (`get`; one not found or malformed is not followed: the worker reports it).
    Past `max_blocks` blocks, the latest of them all (waiting for every pending write costs
    less than reading a large input's every directory)."""
    last = max(pending.values(), default=0)
    need = 0
    seen: set[str] = set()
    stack: list[Cid] = []
    for r in roots:
        try:
            stack.append(parse_cid(r))
        except BanzaiError:
            continue
    while stack and need < last:
        c = stack.pop()
        if c.key in seen:
            continue
        if len(seen) >= max_blocks:
            return last
        seen.add(c.key)
        need = max(need, pending.get(c.key, 0))
        if dag.may_link(c):
            try:
                stack.extend(dag.links(c, get(str(c))))
            except BanzaiError:
                continue
    return need


class Carried:
    """An inline output's blocks as they rode (CID text -> base64; the event's own mapping,
    so holding it copies nothing), within the bounds (`sized`) but not yet checked against
    their CIDs: `decode` runs when they are taken, at most once for a refusal (the same
    blocks may be kept under the output and its run record)."""

    __slots__ = ("_lock", "_refused", "held", "inline", "job", "max_bytes", "origin", "roots")

    def __init__(self, inline: Mapping[str, str], roots: Iterable[str | None],
                 max_bytes: int, job: str = "", origin: str = "") -> None:
        self.inline = inline
        self.roots = tuple(roots)
        self.max_bytes = max_bytes
        # what holding it costs, about: its texts' characters (ASCII: `sized`), each
        # block's BLOCK_OVERHEAD and the entry's CARRIED_OVERHEAD (never 0)
        self.held = CARRIED_OVERHEAD + sum(BLOCK_OVERHEAD + len(k) + len(v)
                                           for k, v in inline.items())
        self.job = job
        self.origin = origin
        self._refused: IntegrityError | None = None
        self._lock = threading.Lock()

    def decode(self) -> tuple[dict[Cid, bytes] | IntegrityError, bool]:
        """The checked blocks (`decode`), or why they are refused; and whether this call
        found that (False: an earlier one refused them already). In any thread."""
        with self._lock:
            if self._refused is not None:
                return self._refused, False
            try:
                return decode(self.inline, self.roots, self.max_bytes), True
            except IntegrityError as e:
                self._refused = e
                return e, True


class Staged:
    """The blocks of inline outputs kept in memory, as they rode (root CID text -> its
    `Carried`), bounded to `max_bytes` of what they hold (`Carried.held`): the least
    recently folded or asked for goes first. Thread-safe (the fetcher takes them in its
    threads)."""

    def __init__(self, max_bytes: int = STAGED_MAX_BYTES) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self._outputs: OrderedDict[str, tuple[Carried, int]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._outputs)

    def __contains__(self, root: object) -> bool:
        with self._lock:
            return root in self._outputs

    def put(self, root: str, blocks: Carried) -> None:
        """Keep `blocks` under `root`, dropping the oldest beyond the bound."""
        size = blocks.held
        with self._lock:
            old = self._outputs.pop(root, None)
            if old is not None:
                self.bytes -= old[1]
            if size > self.max_bytes:
                return
            self._outputs[root] = (blocks, size)
            self.bytes += size
            while self.bytes > self.max_bytes:
                _, (_, n) = self._outputs.popitem(last=False)
                self.bytes -= n

    def take(self, root: str) -> Carried | None:
        """The blocks kept under `root` (then no longer kept), or None."""
        with self._lock:
            got = self._outputs.pop(root, None)
            if got is None:
                return None
            self.bytes -= got[1]
            return got[0]


def roots_of(body: ChunkDone) -> list[str | None]:
    """The CIDs a CHUNK_DONE announces that its inline blocks must hold (its run record may
    ride too, or be fetched by CID as before)."""
    return [body.output]


def every_peer(cid: str, producer: str, job: str) -> bool:
    """The rule of a peer that keeps a copy of every inline output."""
    return True


class InlineBlocks:
    """Listener: keeps the inline blocks of every CHUNK_DONE folded here (another peer's;
    ours are kept before they are emitted); counts what it kept and refused. Another
    peer's output is checked (`decode`), written and pinned here only if this peer is to
    hold a copy (`replica(cid, producer, job)`: one of its replicas); otherwise its blocks stay
    in memory as they rode (`staged`, bounded; only their count and sizes checked) until
    the fetcher asks for them (`restage`: checked then, refused and fetched by CID if they
    do not match) or newer ones push them out. Most are never asked for: the full check
    of every other peer's outputs was the largest item of a peer's receive path (issue 12).
    `holds(cid)`: an output written here (or being written)."""

    def __init__(self, self_id: str, store: Keeper, max_bytes: int,
                 mark: Callable[[str], None] = lambda c: None,
                 background: Callable[[Callable[[], None]], object] | None = None,
                 replica: Callable[[str, str, str], bool] = every_peer,
                 staged_max_bytes: int = STAGED_MAX_BYTES,
                 unmark: Callable[[str], None] = lambda c: None,
                 hurry: Callable[[], None] = lambda: None) -> None:
        self.self_id = self_id
        self.store = store
        self.max_bytes = max_bytes
        self.mark = mark  # the fetcher's "complete here" memo
        self.unmark = unmark  # ... forgotten for an output whose write failed
        # runs the writes off the loop, in order (None: at once, in the caller's thread)
        self.background = background
        # (cid, producer peer, job) -> this peer holds a copy of the output
        self.replica = replica
        self.staged = Staged(staged_max_bytes)  # the others' outputs, in memory only
        self.kept = 0  # outputs kept (written, or in memory: `unwritten`)
        self.refused = 0  # when folded, or (kept in memory) when taken: then counted in both
        self._counts_lock = threading.Lock()  # the fetcher's threads count too
        self.unwritten = 0  # outputs kept in memory only (this peer holds no copy)
        self.restaged = 0  # of those, written here when this peer needed them
        self.failed = 0  # writes that failed (disk full): the next start restores them all
        self._held = RecentSet()
        # Writes that failed (their blocks, roots), oldest first, and their blocks' size:
        # written again by `write_again` (under `_queue_lock`)
        self._unwritten: list[tuple[Mapping[Cid, bytes], list[str]]] = []
        self._unwritten_bytes = 0
        # A write asked again (`write_again`) failed again: the writer's passes no longer ask
        # them again (the retry timer's and a log outage's end do), else one that keeps
        # failing for its own reason went again at every pass, a log pair each (review r2
        # of session 46, M1)
        self._again_failed = False
        # Blocks (and roots) asked to be written while a write is queued or under way: the
        # writer takes them all at its next pass, one store call (one lock) for the lot.
        # Each write asked for is numbered (`_asked`, from 1); `_landed`: the last one landed
        # or failed (the writer's, in order); whether it is one asked again. All of it under
        # `_queue_lock`.
        self._queue: list[tuple[Mapping[Cid, bytes], list[str], int, bool]] = []
        self._queue_lock = threading.Lock()
        self._writing = False  # a `_write_queued` is queued or running in `background`
        self._asked = 0
        self._landed = 0
        self._pending: dict[str, int] = {}  # block key -> the first write not landed holding it
        self._waiters: list[tuple[int, Future[None]]] = []  # (write, resolved once it landed)
        self.hurry = hurry  # submits the writer's pass now if it waits (InlineOutputs)

    async def landed(self, roots: Iterable[str]) -> None:
        """Return once the writes asked for so far that hold a block of the DAGs under
        `roots` have landed (or failed): a worker, in its own process, reads a run's input
        from disk, not from the blocks staged here. No wait, and the writer's pass is not
        hurried, if none does (written already, or never inline); the DAGs are walked in a
        thread only while some write is pending."""
        roots = list(roots)
        if not self._pending or not roots:
            return
        with self._queue_lock:
            pending = dict(self._pending)
        need = await asyncio.to_thread(last_pending, self.store.get_block, roots, pending)
        await self.written(need)

    async def written(self, n: int) -> None:
        """Return once write `n` (and so every write before it) has landed or failed; its
        pass is submitted now if it still waits for the writer (`hurry`)."""
        with self._queue_lock:
            if n <= self._landed:
                return
            done: Future[None] = Future()
            self._waiters.append((n, done))
        self.hurry()
        await asyncio.wrap_future(done)

    def _settle(self, n: int) -> None:
        """Writes up to `n` have landed or failed (any thread): their blocks are no longer
        pending and their waiters resume."""
        with self._queue_lock:
            self._landed = max(self._landed, n)
            self._pending = {k: w for k, w in self._pending.items() if w > self._landed}
            due = [f for w, f in self._waiters if w <= self._landed]
            self._waiters = [(w, f) for w, f in self._waiters if w > self._landed]
        for f in due:
            with contextlib.suppress(InvalidStateError):  # its waiter was cancelled
                f.set_result(None)

    def store_blocks(self, blocks: Mapping[Cid, bytes], output: str | None) -> None:
        """Serve `blocks` now and write them (and pin `output`) in the background."""
        self._store(blocks, [output] if output else [])

    def _store(self, blocks: Mapping[Cid, bytes], roots: list[str], again: bool = False,
               ) -> None:
        if self.background is None:
            try:
                self.store.keep_inline(blocks, roots)
            except (OSError, StoreError):
                self._failed(blocks, roots, again)
                raise
            return
        self.store.stage_inline(blocks)
        with self._queue_lock:
            self._asked += 1
            for c in blocks:
                self._pending.setdefault(c.key, self._asked)
            self._queue.append((blocks, roots, self._asked, again))
            if self._writing:
                return  # the queued (or running) writer takes these too
            self._writing = True
        self.background(self._write_queued)

    def _write_queued(self) -> None:
        """The writer (in `background`, in order): everything queued so far, in one store
        call per pass, until the queue is empty. A write asked for before a later job of
        `background` has landed when that job runs (InlineOutputs.mark_durable)."""
        while True:
            with self._queue_lock:
                batch, self._queue = self._queue, []
                if not batch:
                    self._writing = False
                    return
            try:
                landed = self._write_batch(batch)
            finally:  # landed or failed: its waiters (runs) resume either way
                self._settle(batch[-1][2])
            # The store takes writes: those that failed go again, in this writer's next pass
            # (queued by `write_again`: `_writing` is set); else, with the log writable all
            # along, only a log outage's end or a restart wrote them (session 46, helper e).
            # Not once one asked again failed again: the retry timer's wait then.
            if landed and self.has_unwritten and not self._again_failed:
                n = self.write_again(by_writer=True)
                log.info("inline blocks of %d earlier write(s) that failed are written "
                         "again: the block store takes writes", n)

    def _write_batch(self, batch: list[tuple[Mapping[Cid, bytes], list[str], int, bool]],
                     ) -> bool:
        """One store call for the writes of `batch`; if it fails, each write alone, so that
        one that keeps failing (its blocks too large for the room left, a bug on them) fails
        alone: merged, the others failed with it and were kept welded to it, never landing
        (review r2 of session 46, M1). Whether a write landed."""
        blocks = {c: data for b, _, _, _ in batch for c, data in b.items()}
        roots = [r for _, rs, _, _ in batch for r in rs]
        try:
            self.store.keep_inline(blocks, roots)
            return True
        except Exception as e:  # a full disk (served by other peers later), or a bug: the
            # writer goes on (else `_writing` stays set and every run waits for ever)
            if len(batch) == 1:
                self._failed_write(e, batch)
                return False
        landed = False
        failed = []
        for entry in batch:
            try:
                self.store.keep_inline(entry[0], entry[1])
                landed = True
            except Exception as e:
                failed.append(entry)
                err = e
        if failed:
            self._failed_write(err, failed, len(batch))
        return landed

    def _failed_write(self, e: Exception, failed: list[tuple[Mapping[Cid, bytes], list[str],
                                                             int, bool]],
                      of: int | None = None) -> None:
        """Log the store's error `e` (a bug's with its traceback) for the writes `failed` (of
        `of` in the pass, when it was split) and keep each one (`_failed`)."""
        bug = not isinstance(e, (OSError, StoreError))
        log.log(logging.ERROR if bug else logging.WARNING,
                "inline blocks of %d output(s)%s not written: %s", len(failed),
                "" if of is None else f" of {of} written one by one", e, exc_info=bug)
        for blocks, roots, _, again in failed:
            self._failed(blocks, roots, again)

    def unwritable(self) -> None:
        """The writer's pass could not be submitted (the peer closed): what is queued is not
        written (a failure, counted: no durability mark), its outputs not held here after
        all, its waiters resume; a later write asks for a pass again."""
        with self._queue_lock:
            batch, self._queue = self._queue, []
            self._writing = False
        self.failed += 1
        self.forget([r for _, rs, _, _ in batch for r in rs])
        if batch:
            self._settle(batch[-1][2])

    def _failed(self, blocks: Mapping[Cid, bytes], roots: list[str], again: bool = False,
                ) -> None:
        """A write failed: its outputs are not held here after all (`forget`), its blocks
        kept (bounded) to be written again once the disk takes writes (`write_again`).
        `again`: it was asked again, and failed again."""
        self.failed += 1  # racing increments may lose a count, never all
        self.forget(roots)
        size = sum(len(data) for data in blocks.values())
        with self._queue_lock:
            self._again_failed = self._again_failed or again
            self._unwritten.append((blocks, roots))
            self._unwritten_bytes += size
            while self._unwritten_bytes > UNWRITTEN_MAX_BYTES:
                old, _ = self._unwritten.pop(0)
                self._unwritten_bytes -= sum(len(data) for data in old.values())

    @property
    def has_unwritten(self) -> bool:
        """Blocks whose write failed wait to be written again (`write_again`)."""
        return bool(self._unwritten)

    def write_again(self, by_writer: bool = False) -> int:
        """Write again (noted as held: served now, written in the background) the blocks
        whose write failed, once the disk takes writes: on a peer alone, an output whose
        write failed in an outage was held nowhere until a restart, and the task reading
        it waited for a peer to fetch it from for ever (review r2 of session 45, M1).
        Called as a log outage ends (peer.node), after a write of the writer's that
        succeeds, and by InlineOutputs' retry timer. Returns how many writes were asked
        again; one that fails again is kept again. Any thread: the writer's too, whose
        next pass then takes them. Asked by another than the writer (`by_writer`), the
        writer's passes ask again too until one asked again fails again."""
        with self._queue_lock:
            again, self._unwritten, self._unwritten_bytes = self._unwritten, [], 0
            self._again_failed = self._again_failed and by_writer
        for blocks, roots in again:
            for r in roots:
                self.note(r)
            with contextlib.suppress(OSError, StoreError):  # (kept again: `_failed`)
                self._store(blocks, roots, again=True)
        return len(again)

    def holds(self, cid: str) -> bool:
        return cid in self._held

    def note(self, cid: str) -> None:
        """An output kept inline here: noted before its blocks are asked to be written, so
        that a write failing at once (a full disk) is the one to `forget` it, never undone."""
        self._held.add(cid)
        self.mark(cid)

    def forget(self, cids: Iterable[str]) -> None:
        """Outputs whose write failed: not held here after all (fetched or replicated again)."""
        for cid in cids:
            self._held.discard(cid)
            self.unmark(cid)

    def on_event(self, ev: Event) -> None:
        """Keep the inline blocks of another peer's CHUNK_DONE; ours (of our stream or of
        our lane of a lanes job) were kept by our run before it was emitted."""
        if ev.type != EventType.CHUNK_DONE or peer_of(ev.origin) == self.self_id:
            return
        body = ev.body
        if not isinstance(body, ChunkDone) or not body.inline:
            return
        self.keep(ev.origin, body)

    def keep(self, origin: str, body: ChunkDone) -> bool:
        """Keep `body`'s inline blocks (checked if written here, only bounded if kept in
        memory); False (counted) if refused or not kept."""
        assert body.inline is not None
        if body.output and not self.replica(body.output, peer_of(origin), body.job):
            try:  # the replicas write it; checked when taken, fetched by CID if refused
                sized(body.inline, self.max_bytes)
            except IntegrityError as e:
                self._refuse(body.job, origin, e)
                return False
            carried = Carried(body.inline, roots_of(body), self.max_bytes, body.job, origin)
            self.staged.put(body.output, carried)
            if body.log and body.log in body.inline:  # its run record rode too (/api logs)
                self.staged.put(body.log, carried)
            self.kept += 1
            self.unwritten += 1
            return True
        try:
            blocks = decode(body.inline, roots_of(body), self.max_bytes)
        except IntegrityError as e:
            self._refuse(body.job, origin, e)
            return False
        if body.output:
            self.note(body.output)
        try:  # the output is pinned, as its producer pins it; the run record is not
            self.store_blocks(blocks, body.output)
        except (OSError, StoreError) as e:  # a full disk: fetched by CID later
            log.warning("inline blocks of %s not kept: %s", body.job, e)
            return False
        self.kept += 1
        return True

    def _refuse(self, job: str, origin: str, e: IntegrityError) -> None:
        with self._counts_lock:
            self.refused += 1
        log.warning("inline blocks of %s from %s refused: %s", job, origin[:8], e)

    def restage(self, cid: str) -> bool:
        """Write the blocks of `cid` kept in memory here (not pinned: a cache copy, the
        replicas hold it), checked first (`decode`: refused, counted and logged, if they
        do not match); True if written, False if not kept, refused or not written (fetched
        by CID then). For the fetcher, in its threads."""
        kept = self.staged.take(cid)
        if kept is None:
            return False
        blocks, first = kept.decode()
        if isinstance(blocks, IntegrityError):
            if first:
                self._refuse(kept.job, kept.origin, blocks)
            return False
        try:
            self.store.keep_inline(blocks, [])
        except (OSError, StoreError) as e:
            log.warning("inline blocks of %s not written: %s", cid[:64], e)
            return False
        with self._counts_lock:
            self.restaged += 1
        return True

    def restore(self, events: Iterable[Event],
                lost: Callable[[Event], bool] = lambda ev: True) -> int:
        """Keep again the inline blocks of the `events` (ours too) that a crash may have
        lost (`lost`; default all), in the caller's thread: written and pinned unsynced,
        they may be gone (or torn: the store writes those again) while the log holds them.
        All of them, whatever the replica rule: the membership has not formed at start,
        and a copy too many is harmless. The others were made durable at the last clean
        close (peer.ipfs.inlinemark): never written nor pinned again, so an output unpinned
        since (retention, a user) stays unpinned; nor noted as held: this peer wrote one
        only if it was among its replicas then, and the replicator goes by the PROVIDEs.
        Returns how many events had blocks written again."""
        n = 0
        for ev in events:
            if not lost(ev):
                continue
            for part in ev.parts or (ev,):
                b = part.body
                if not (isinstance(b, ChunkDone) and b.inline):
                    continue
                try:
                    blocks = decode(b.inline, roots_of(b), self.max_bytes)
                except IntegrityError:
                    continue  # refused when it came: as then
                try:
                    self.store.keep_inline(blocks, [b.output] if b.output else [])
                except (OSError, StoreError):
                    self.failed += 1  # no room: as then (and restored again next start)
                    continue
                if b.output:
                    self.note(b.output)  # thread-safe memos
                n += 1
        return n

    def health(self) -> dict[str, int]:
        return {"kept": self.kept, "refused": self.refused, "unwritten": self.unwritten,
                "restaged": self.restaged, "staged_bytes": self.staged.bytes}
