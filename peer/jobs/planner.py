"""Planning and assembly of tasks: workflows and readiness, input CIDs, cache keys, splits into
chunks, and a task's output from its chunks'. Loop-owned; its store calls are cheap and bounded.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Container, Iterator, Mapping, Sequence
from typing import Any

from peer.errors import BanzaiError, TooLarge
from peer.ipfs.store import Listings, too_many_entries
from peer.jobs.claims import chunk_done
from peer.jobs.ports import MAX_INPUT_ENTRIES, Data
from peer.jobs.spec import TaskSpec, Workflow, workflow_from_json
from peer.jsontext import loads
from peer.log import Event, EventType, MeshState, TaskKey, TaskSplit
from peer.log.lanes import peer_of
from peer.rendezvous import rendezvous
from tasks.registry import TaskDef, canonical_json

MAX_GROUP_MEMOS = 16  # inputs whose groups `Planner.items` keeps
MAX_LISTING_MEMOS = 4  # inputs whose listings `Planner.files` keeps,
MAX_LISTED_FILES = 100_000  # of this many files in all (a larger listing is not kept)
# The ceiling of the same listing for a split already made (its PARTIALs and its assembly):
# its size was decided where it was split, perhaps by a peer of a release without the bound
# or before this peer's upgrade (review rr of session 51, RR-4), and that split names its
# items already; past this the task fails, naming the input and the ceiling
MAX_ASSEMBLY_ENTRIES = 8 * MAX_INPUT_ENTRIES
_ABSENT = object()  # (a cache entry that `items_assembly` found absent)


# -- pure core -------------------------------------------------------------------------
def cache_key(tdef: TaskDef, params: Mapping[str, Any], input_cid: str | None) -> str:
    """hash(call, version, canonical params, input CID): the content-addressed cache key."""
    raw = canonical_json([tdef.name, tdef.version, dict(params), input_cid])
    return hashlib.sha256(raw.encode()).hexdigest()


def chunk_items(items: Sequence[Any], free_slots: int, lo: int, hi: int) -> list[list[Any]]:
    """Split items, order kept, into chunks of equal size within [lo, hi] (the last may be
    shorter): one per slot, or when that makes them larger than `hi`, about a whole number
    of rounds of one chunk per slot (200 items, 2 slots, hi 64: 4 × 50, not 64+64+64+8)."""
    if not items:
        return []
    slots = max(free_slots, 1)
    size = max(lo, min(hi, -(-len(items) // slots)))
    chunks = -(-len(items) // size)
    if chunks > slots:
        rounds = -(-chunks // slots)
        size = max(lo, -(-len(items) // (rounds * slots)))
    return [list(items[i:i + size]) for i in range(0, len(items), size)]


def value_chunks(tdef: TaskDef, params: Mapping[str, Any]) -> list[list[list[str]]]:
    """The chunks of a task split by its values (`TaskSpec.split_args`): one per value of its
    call's `split_arg`, in order, its one item `["<arg>[i]", "i"]` (a name and the value's
    index: a value may be longer than an item's fields hold)."""
    arg = tdef.split_arg
    assert arg is not None
    return [[[f"{arg}[{i}]", str(i)]] for i in range(len(params[arg]))]


def chunk_params(tdef: TaskDef, params: Mapping[str, Any], items: Sequence[Sequence[str]],
                 ) -> dict[str, Any]:
    """The params a chunk of `value_chunks` runs with: the task's, its `split_arg` holding
    the chunk's values alone (BanzaiError if an item names no value of it, or it has none)."""
    arg = tdef.split_arg
    assert arg is not None
    values = params[arg]
    if not items:
        raise BanzaiError(f"{tdef.name}: a chunk of a split by {arg} names no value of it")
    picked = []
    for _, index in items:
        if not (index.isascii() and index.isdecimal() and str(int(index)) == index
                and int(index) < len(values)):  # (the form value_chunks writes: "²" is a
            # digit int() refuses, "02" not how it writes 2)
            raise BanzaiError(f"{tdef.name}: a chunk names value {index!r} of {arg}, which "
                              f"holds {len(values)}")
        picked.append(values[int(index)])
    return {**params, arg: picked}


def merged_outputs(task: str, outputs: Sequence[Sequence[tuple[str, str]]]) -> dict[str, str]:
    """The files (relpath -> CID) of the merge of chunk outputs (each a directory's files):
    a task split by its values, whose chunks must make distinct top-level names (BanzaiError
    naming one that two chunks made)."""
    merged: dict[str, str] = {}
    made_by: dict[str, int] = {}
    for i, files in enumerate(outputs):
        for path, cid in files:
            top = path.split("/", 1)[0]
            if made_by.setdefault(top, i) != i:
                raise BanzaiError(f"{task}: chunks {made_by[top]} and {i} both made {top!r} "
                                  "(the same name from two values)")
            merged[path] = cid
    return merged


def longest_first(items: Sequence[Any], size: Callable[[Any], int]) -> list[Any]:
    """Items by `size`, largest first, ties in their order: the groups of a task of
    `groups` are claimed in this order as slots free, so that the last to start are the
    shortest and the peers finish close together (LPT scheduling; a group's bytes stand for
    its run time)."""
    sizes = [size(it) for it in items]
    return [items[i] for i in sorted(range(len(items)), key=lambda i: -sizes[i])]


class _Anyone:
    """Every peer (`Container`): where no membership is known, any provider counts."""

    def __contains__(self, peer: object) -> bool:
        return True


ANYONE: Container[str] = _Anyone()


def provided(state: MeshState, cid: str, live: Container[str]) -> bool:
    """True if a peer of `live` provides `cid`, by the fold's provider set."""
    return any(p in live for p in state.providers.get(cid) or ())


def item_cached(state: MeshState, store: Listings, key: str,
                live: Container[str] = ANYONE) -> bool:
    """True if an item's result is cached and, if it has an output, that output is here or
    a live peer (of `live`) provides it: an output no live peer holds (collected, or its
    peers left the mesh) is computed again. A split leaves a cached item out and keeps its
    result in its own payload (`kept`): its assembly, on any peer, never reads the cache
    entry, which compaction may delete."""
    if key not in state.cache:
        return False
    r = state.cache[key]
    cid = r.get("c") if isinstance(r, dict) else None
    return not cid or provided(state, cid, live) or store.has(cid)


def item_name(spec: TaskSpec) -> str:
    """The name a per-item task gives an input that is one file, not a directory: that of
    the task it came from (as a merge of several inputs names them)."""
    return spec.depends[0] if spec.depends else "input"


def ready(state: MeshState, job: str, spec: TaskSpec) -> bool:
    """True if every dependency of the task is done."""
    return all((job, d) in state.task_done for d in spec.depends)


def mesh_slots(call: str, own_slots: int, peers: Mapping[str, Mapping[str, Any]]) -> int:
    """Slots of every live peer that runs `call`, busy or not (this peer's `own_slots`
    included): heartbeats are up to 0.5 s old, and the previous step's chunks are usually
    just finishing."""
    return own_slots + sum(int(i.get("slots", 0)) for i in peers.values()
                           if call in i.get("calls", ()))


def producer(state: MeshState, live: set[str], job: str, spec: TaskSpec) -> str | None:
    """The peer to act first on a task's input: one that holds the first input (the
    producer of a task's output; for a {"cid"} source, a live provider of the CID)."""
    if not spec.depends:
        return None
    done = state.task_done[(job, spec.depends[0])]
    holders = [p for p in state.providers.get(done.payload["output"], ()) if p in live]
    made_by = peer_of(done.origin)
    if made_by in holders or not holders:
        return made_by
    return rendezvous(f"{job}/{spec.name}", holders)[0]


class Planner:
    """Workflows, cache keys, inputs, splits and assemblies of this peer's view of the mesh."""

    def __init__(self, state: MeshState, store: Listings, data: Data, min_chunk_items: int,
                 max_chunk_items: int,
                 parse: Callable[[Any], Workflow] = workflow_from_json,
                 live: Callable[[], Container[str]] = lambda: ANYONE,
                 max_input_entries: int = MAX_INPUT_ENTRIES,
                 max_assembly_entries: int | None = None) -> None:
        self.state = state
        self.max_input_entries = max_input_entries  # TooLarge past it (`files`)
        self.max_assembly_entries = (  # (of a split made: `files`; 8x a raised bound)
            max(MAX_ASSEMBLY_ENTRIES, 8 * max_input_entries) if max_assembly_entries is None
            else max_assembly_entries)
        self.live = live  # the other peers alive now: only their providing counts for a hit
        self.parse = parse  # a stored workflow document -> its Workflow (Workflows.workflow)
        self.store = store
        self.data = data
        self.min_chunk_items = min_chunk_items
        self.max_chunk_items = max_chunk_items
        self._workflows: dict[str, Workflow] = {}
        self._users: dict[str, dict[str, list[str]]] = {}  # job -> task -> its dependents
        self._keys: dict[TaskKey, tuple[str | None, str]] = {}  # memo: input -> cache key
        self._item_keys: dict[TaskKey, dict[str, str]] = {}  # memo: item CID -> cache key
        self._listings: dict[TaskKey, list[Any]] = {}  # chunks read from TASK_SPLIT_REFs
        self._kept: dict[TaskKey, dict[str, Any]] = {}  # their `kept_listing`s, read
        # (input, items glob, name) -> the groups of a task of `groups` (content-addressed,
        # so always what a new make_dir would give; the most recent few)
        self._groups: OrderedDict[tuple[str, str, str], list[tuple[str, str]]] = OrderedDict()
        # input CID -> its files (None: a file), the most recent few (`files`)
        self._files: OrderedDict[str, tuple[tuple[str, str], ...] | None] = OrderedDict()
        self._listed = 0  # files in `_files`
        # per task, as of its split's done chunks (`done_epoch`): `chunk_outputs`, and
        # `items_assembly` with the cache entries it read (a look at an unchanged split
        # makes neither again: O(chunks + items) each, per look while its results come)
        self._outputs: dict[TaskKey, tuple[Any, Mapping[str, int]]] = {}
        self._assemblies: dict[TaskKey, tuple[Any, dict[str, Any], Assembly]] = {}

    def workflow(self, job: str) -> Workflow:
        wf = self._workflows.get(job)
        if wf is None:
            wf = self._workflows[job] = self.parse(self.state.jobs[job].payload["workflow"])
        return wf

    def dependents(self, job: str, task: str) -> list[str]:
        """Tasks of `job` that depend on `task` (indexed once per job)."""
        index = self._users.get(job)
        if index is None:
            if job not in self.state.jobs:  # compacted or deleted: none left to wake
                return []
            index = self._users[job] = defaultdict(list)
            for t in self.workflow(job).tasks:
                for d in t.depends:
                    index[d].append(t.name)
        return index.get(task, [])

    def active_tasks(self) -> Iterator[TaskKey]:
        """Tasks of jobs not cancelled that are not done."""
        for job, ev in self.state.jobs.items():
            if job in self.state.cancelled:
                continue
            for t in ev.payload["workflow"]["tasks"]:
                if (job, t["name"]) not in self.state.task_done:
                    yield (job, t["name"])

    def key(self, job: str, task: str, tdef: TaskDef, spec: TaskSpec,
            input_cid: str | None) -> str:
        """The task's cache key (memoized per input)."""
        memo = self._keys.get((job, task))
        if memo is None or memo[0] != input_cid:
            memo = self._keys[(job, task)] = (input_cid, cache_key(tdef, spec.params, input_cid))
        return memo[1]

    def item_key(self, job: str, task: str, tdef: TaskDef, spec: TaskSpec, cid: str) -> str:
        """The cache key of the task's item `cid` (memoized per task: the split and each
        assembly ask it of every item, 4 us each)."""
        keys = self._item_keys.setdefault((job, task), {})
        k = keys.get(cid)
        if k is None:
            k = keys[cid] = cache_key(tdef, spec.params, cid)
        return k

    def sweep(self, gone: Callable[[str], bool]) -> None:
        """Drop what is memoised for the jobs that are `gone` (they left memory)."""
        for table in (self._workflows, self._users):
            for job in [j for j in table if gone(j)]:
                del table[job]
        for memo in (self._keys, self._item_keys, self._listings, self._kept, self._outputs,
                     self._assemblies):
            for key in [k for k in memo if gone(k[0])]:
                del memo[key]

    def forget(self, job: str, task: str) -> None:
        for memo in (self._keys, self._item_keys, self._listings, self._kept, self._outputs,
                     self._assemblies):
            memo.pop((job, task), None)

    def chunk_outputs(self, job: str, task: str, n: int) -> Mapping[str, int]:
        """The CIDs the chunks of a finished split produced (whole outputs and item
        results), each with the chunk that made it (made again when a chunk of the winning
        split is done or reopened)."""
        sid = self.state.split_id(job, task)
        at = (sid, n, None if sid is None else self.state.chunks.done_epoch((job, task, *sid)))
        memo = self._outputs.get((job, task))
        if memo is not None and memo[0] == at:
            return memo[1]
        out: dict[str, int] = {}
        for i in range(n):
            done = chunk_done(self.state.chunk(job, task, i))
            assert done is not None
            if done.payload.get("output"):
                out[done.payload["output"]] = i
            out.update((v["c"], i) for v in (done.payload.get("cache") or {}).values() if v)
        self._outputs[(job, task)] = (at, out)
        return out

    def framed(self, payload: dict[str, Any], max_bytes: int,
               ) -> tuple[EventType, dict[str, Any]]:
        """The split event for a TASK_SPLIT payload: itself, or when its chunks and kept
        results exceed `max_bytes` of JSON (a frame holds 16 MiB), a TASK_SPLIT_REF to the
        chunks stored as a file (pinned here; peers fetch it), and to the kept results as
        another when they alone exceed a quarter of it (older peers read only the first)."""
        raw = json.dumps(payload["chunks"], separators=(",", ":")).encode()
        kept = payload.get("kept")
        raw_kept = json.dumps(kept, separators=(",", ":")).encode() if kept else b""
        if len(raw) + len(raw_kept) <= max_bytes:
            return EventType.TASK_SPLIT, payload
        out = {"job": payload["job"], "task": payload["task"], "input": payload["input"],
               "listing": self.stored(raw), "sizes": [len(c) for c in payload["chunks"]]}
        if kept is not None:
            if len(raw_kept) > max_bytes // 4:
                out["kept_listing"] = self.stored(raw_kept)
            else:
                out["kept"] = kept
        return EventType.TASK_SPLIT_REF, out

    def stored(self, raw: bytes) -> str:
        """Store `raw` as a file, pinned and marked complete here (peers fetch it); its CID."""
        cid = self.store.add_bytes(raw)
        self.store.pin(cid)
        self.data.mark(cid)
        return cid

    @staticmethod
    def listings(split: Event) -> list[str]:
        """The files a TASK_SPLIT_REF's chunks and kept results are read from."""
        p = split.payload
        return [p["listing"], *([p["kept_listing"]] if p.get("kept_listing") else [])]

    def chunks(self, split: Event) -> list[Any] | None:
        """A split's chunks (lists of [path, cid]): inline, or read from the listing of a
        TASK_SPLIT_REF once that is here, and its kept results' too (None: fetch them
        first, `listings`). A listing is validated as a TASK_SPLIT's chunks are, a kept
        listing as its `kept` (BanzaiError if it is not one)."""
        if split.type != EventType.TASK_SPLIT_REF:
            chunks: list[Any] = split.payload["chunks"]
            return chunks
        p = split.payload
        key = (p["job"], p["task"])
        got = self._listings.get(key)
        if got is None and all(self.data.is_complete(c) for c in self.listings(split)):
            got = self._read(p["listing"], f"{p['task']}: the split listing")
            TaskSplit.from_payload({**p, "chunks": got})  # InvalidEvent names what is wrong
            if [len(c) for c in got] != p["sizes"]:
                raise BanzaiError(f"{p['task']}: the split listing {p['listing']} does not "
                                  "match its sizes")
            if p.get("kept_listing"):
                kept = self._read(p["kept_listing"], f"{p['task']}: the kept listing")
                TaskSplit.from_payload({**p, "chunks": [], "kept": kept})
                self._kept[key] = kept
            self._listings[key] = got
        return got

    def _read(self, cid: str, what: str) -> Any:
        """The JSON a listing's CID holds: a member named it, so its bytes are any content
        (BanzaiError naming it if they are not JSON within the nesting bound)."""
        return loads(b"".join(self.store.cat(cid)), f"{what} {cid}", error=BanzaiError)

    def kept(self, split: Event) -> Mapping[str, Any] | None:
        """The results a split keeps for the items it left out (read after `chunks`), or
        None for a split that keeps none (of an older peer: its assembly reads the cache)."""
        p = split.payload
        if p.get("kept_listing"):
            key = (p["job"], p["task"])
            if key not in self._kept and self.chunks(split) is None:
                raise BanzaiError(f"{p['task']}: the kept listing {p['kept_listing']} is "
                                  "not here")
            return self._kept[key]
        kept: Mapping[str, Any] | None = p.get("kept")
        return kept

    def cached_output(self, key: str) -> str | None:
        """A cached whole output for `key` that is here or a live peer provides (one whose
        providers all left the mesh is computed again, not waited for)."""
        cached = self.state.outputs.get(key)
        if cached is not None and (self.store.has(cached)
                                   or provided(self.state, cached, self.live())):
            return cached
        return None

    def input(self, job: str, spec: TaskSpec) -> str | None:
        """The input CID: none, the one dependency's output, or a merge of several."""
        outs = [(d, self.state.task_done[(job, d)].payload["output"]) for d in spec.depends]
        if not outs:
            return None
        if len(outs) == 1:
            return str(outs[0][1])
        merged: dict[str, str] = {}
        for dep, cid in outs:
            for e in self.files(cid, prefix=dep):
                have = merged.setdefault(e[0], e[1])
                if have != e[1]:
                    raise BanzaiError(
                        f"inputs of {spec.name} conflict at {e[0]!r}: {dep} has other content")
        out = self.store.make_dir(merged)
        self.data.mark(out)
        return out

    def files(self, cid: str, prefix: str, bound: int | None = None,
              ) -> Sequence[tuple[str, str]]:
        """Files under `cid` as (relpath, cid); a file output is named after its task. Asked
        at every split, PARTIAL and assembly: the listing of one of the last few inputs is
        remembered (a CID's listing never changes; FILTER_LONGER's 400 files took 2-4 ms of
        the splitter's loop to list, at each of its 9 assemblies), and the input's files
        themselves are not read. TooLarge naming `cid` past `bound` entries: by default
        `max_input_entries` (where this peer decides a split); an existing split's PARTIALs
        and assembly pass `max_assembly_entries`."""
        bound = self.max_input_entries if bound is None else bound
        if cid in self._files:
            self._files.move_to_end(cid)
            listing = self._files[cid]
            if listing is not None and len(listing) > bound:  # (listed under a higher bound)
                raise too_many_entries(cid, bound)
        else:
            listing = (tuple(self.store.file_cids(cid, bound))
                       if self.store.stat(cid).kind == "dir" else None)
            self._files[cid] = listing
            self._listed += len(listing or ())
            while len(self._files) > MAX_LISTING_MEMOS or self._listed > MAX_LISTED_FILES:
                self._listed -= len(self._files.popitem(last=False)[1] or ())
        return [(prefix, cid)] if listing is None else listing

    def items(self, cid: str, spec: TaskSpec, tdef: TaskDef, bound: int | None = None,
              ) -> list[tuple[str, str]]:
        """A per-item task's items under `cid` as (relpath, cid): the files matching its
        `items`, or for a task of `groups` the directories that hold such files, each as a
        directory of those files alone (made here; files at the root are one item named as
        a file input is), in path order."""
        if not tdef.groups:
            return [(path, c) for path, c in self.files(cid, item_name(spec))
                    if tdef.matches(path)]
        key = (cid, tdef.items, item_name(spec))
        memo = self._groups.get(key)
        if memo is not None and all(self.store.has(g) for _, g in memo):  # (not collected)
            self._groups.move_to_end(key)
            return list(memo)
        out = self._make_groups(cid, spec, tdef, bound)
        self._groups[key] = out
        while len(self._groups) > MAX_GROUP_MEMOS:
            self._groups.popitem(last=False)
        return list(out)

    def _make_groups(self, cid: str, spec: TaskSpec, tdef: TaskDef,
                     bound: int | None = None) -> list[tuple[str, str]]:
        """The groups of `items`, made (each directory's make_dir reads the block of every
        file in it, for its size: 129 MFCC files here cost about 0.05 s, once at the split
        and again before the assembling step, which `items` memoises)."""
        files = self.files(cid, item_name(spec), bound)
        by_dir: dict[str, dict[str, str]] = {}
        for path, c in files:
            if tdef.matches(path):
                d, _, name = path.rpartition("/")
                by_dir.setdefault(d, {})[name] = c
        out = []
        for d in sorted(by_dir):
            group = self.store.make_dir(by_dir[d])
            self.data.mark(group)
            out.append((d or item_name(spec), group))
        return out

    def split(self, job: str, task: str, tdef: TaskDef, spec: TaskSpec, input_cid: str | None,
              slots: int) -> dict[str, Any]:
        """The TASK_SPLIT payload: one whole chunk, or the input items not cached yet in
        chunks sized for `slots` slots (of a task of `groups`: one item per chunk, largest
        first, so that each peer takes the next as it frees: groups are few and unequal),
        then, for a task with a `reduce`, one empty chunk: the assembling step. A per-item
        task's split keeps the cached results of the items it left out (`kept`; a whole
        task's keeps none)."""
        chunks: list[list[list[str]]]
        kept: dict[str, Any] = {}
        if spec.split_args and tdef.split_arg is not None:
            chunks = value_chunks(tdef, spec.params)
        elif not tdef.per_item:
            chunks = [[]]
        else:
            if input_cid is None:
                raise BanzaiError(f"{task}: a per-item task needs an input")
            misses: list[list[str]] = []
            live = self.live()
            for path, cid in self.items(input_cid, spec, tdef):
                k = self.item_key(job, task, tdef, spec, cid)
                if spec.cache and item_cached(self.state, self.store, k, live):
                    kept[k] = self.state.cache[k]
                else:
                    misses.append([path, cid])
            if tdef.groups:  # largest first: each directory's own block holds its size
                chunks = [[m] for m in longest_first(misses,
                                                     lambda m: self.store.stat(m[1]).size)]
            else:
                chunks = chunk_items(misses, max(slots, 1), self.min_chunk_items,
                                     self.max_chunk_items)
            if tdef.reduce is not None:
                chunks.append([])
        # (`kept` in every split of this release, empty for a whole task: a split without
        # it is an older peer's, which pauses the deletion of item entries, `Compactor._reap`)
        return {"job": job, "task": task, "input": input_cid, "chunks": chunks, "kept": kept}

    def assembly(self, job: str, task: str, tdef: TaskDef, spec: TaskSpec, split: Event,
                 chunks: Sequence[Sequence[Sequence[str]]], partial: bool = False) -> Assembly:
        """What the task's output is made of, from its done chunks (`chunks`: the split's
        items); per item, the result recorded by its chunk's run, else the cached one.
        `partial`: of a per-item task whose chunks are not all done, the results so far
        (recorded by done chunks, by running ones' CACHE_PUTs, or cached). A task with a
        `reduce` is made of its last chunk's output (`items_assembly`: the reduce's input)."""
        if not tdef.per_item or tdef.reduce is not None:
            last = len(chunks) - 1 if tdef.reduce is not None else 0
            out = chunk_done(self.state.chunk(job, task, last))
            assert out is not None
            cid = str(out.payload["output"])
            return Assembly({}, {cid: last}, None, cid)
        return self.items_assembly(job, task, tdef, spec, split, chunks, partial)

    def values_assembly(self, job: str, task: str, n: int) -> Assembly:
        """The output of a task split by its values (`value_chunks`), from its `n` done
        chunks' outputs, all here: their merge (`merged_outputs`). The first listing of
        these outputs: within `max_input_entries` in all (TooLarge naming the task, the
        chunk and the bound: the scheduler then fails the task, `Scheduler._fail_task`)."""
        outputs = []
        made_by: dict[str, int | None] = {}
        listed = 0
        for i in range(n):
            done = chunk_done(self.state.chunk(job, task, i))
            assert done is not None
            out = str(done.payload["output"])
            if self.store.stat(out).kind != "dir":
                raise BanzaiError(f"{task}: the output of chunk {i} is a file, not a directory "
                                  "to merge")
            try:
                outputs.append(self.files(out, task, self.max_input_entries - listed))
            except TooLarge:
                raise TooLarge(f"{task}: the outputs of its chunks 0-{i} hold more than "
                               f"{self.max_input_entries} files and directories in all, the "
                               "most the merge of a task split by its values may hold",
                               field="output") from None
            listed += len(outputs[-1])
            made_by[out] = i
        return Assembly(merged_outputs(task, outputs), made_by, None)

    def items_assembly(self, job: str, task: str, tdef: TaskDef, spec: TaskSpec, split: Event,
                       chunks: Sequence[Sequence[Sequence[str]]], partial: bool = False,
                       ) -> Assembly:
        """A per-item task's results as its output would hold them (see `assembly`;
        `chunks`: those that compute items). An item the split left out has the result it
        kept; of a split that kept none (an older peer's), the cached one, and without a
        cache entry (deleted by compaction) it is `lost`: no output is made of it.
        The same as the last one while the split's done chunks and the cache entries it read
        are (a task of `groups` is made again: few items, and `items` may make the groups
        again); the caller does not change it."""
        sk = (job, task, *split.id)
        at = (split.id, len(chunks), partial, self.state.chunks.done_epoch(sk))
        memo = self._assemblies.get((job, task))
        if (memo is not None and memo[0] == at and not tdef.groups
                and all(self.state.cache.get(k, _ABSENT) == v for k, v in memo[1].items())):
            return memo[2]
        read: dict[str, Any] = {}  # cache key -> its entry as read (_ABSENT: none)
        a = self._items_assembly(job, task, tdef, spec, split, chunks, partial, read)
        self._assemblies[(job, task)] = (at, read, a)
        return a

    def _items_assembly(self, job: str, task: str, tdef: TaskDef, spec: TaskSpec,
                        split: Event, chunks: Sequence[Sequence[Sequence[str]]], partial: bool,
                        read: dict[str, Any]) -> Assembly:
        """`items_assembly` made, noting in `read` each cache entry it read."""

        def cached(k: str) -> Any:
            v = read[k] = self.state.cache.get(k, _ABSENT)
            return None if v is _ABSENT else v

        chunk_of = {cid: i for i, items in enumerate(chunks) for _, cid in items}
        pinned = self.kept(split)
        fresh: dict[str, Any] = {}
        done = self.state.chunks.done((job, task, *split.id))  # (the index: not every chunk)
        made = [i for i in sorted(done) if i < len(chunks)]
        assert partial or len(made) == len(chunks)
        for i in made:
            fresh.update(done[i].payload.get("cache") or {})
        a = Assembly({}, {}, None)
        matched = kept = 0
        inp = split.payload["input"]
        ceiling = self.max_assembly_entries  # (its split was made: RR-4 of session 51)
        listed = ([(path, cid, True) for path, cid in self.items(inp, spec, tdef, ceiling)]
                  if tdef.groups else
                  [(path, cid, tdef.matches(path))
                   for path, cid in self.files(inp, item_name(spec), ceiling)])
        for path, cid, match in listed:
            if not match:
                if tdef.passthrough:
                    a.entries[path] = cid
                continue
            matched += 1
            k = self.item_key(job, task, tdef, spec, cid)
            if pinned is not None and cid not in chunk_of:
                r = pinned.get(k)
            else:
                r = fresh.get(k) or cached(k)
                if r is None and cid not in chunk_of and read[k] is _ABSENT:
                    a.lost.append(path)
            if r:
                kept += 1
                a.entries[rpath := posixpath.join(posixpath.dirname(path), r["n"])] = r["c"]
                a.made_by[r["c"]] = chunk_of.get(cid)
                a.results.add(rpath)
        a.of = matched
        if not kept:
            a.warning = (f"{task}: kept no item of the {matched} input item(s) matching "
                         f"{tdef.items!r}; the output holds no {tdef.items} result")
        return a

    def output(self, a: Assembly) -> str:
        """The output CID of an assembly whose results are all here."""
        if a.whole is not None:
            return a.whole
        output = self.store.make_dir(a.entries)
        self.data.mark(output)
        return output


class Assembly:
    """A task's output to be: its entries (path -> CID), the chunk that made each result
    (None: it came from the cache), a warning; `whole` for a whole-input task's output."""

    def __init__(self, entries: dict[str, str], made_by: dict[str, int | None],
                 warning: str | None, whole: str | None = None) -> None:
        self.entries = entries
        self.made_by = made_by
        self.warning = warning
        self.whole = whole
        self.results: set[str] = set()  # the entries that are item results (not passed on)
        self.of = 0  # input items matching the task (a per-item task's)
        # items an older peer's split left out whose cache entry is gone (no output is made)
        self.lost: list[str] = []
