"""Deterministic scheduler simulation: Schedulers on an in-memory mesh with a fake clock, runner,
store and data. Single-threaded, no processes, no sockets, no sleeps: time moves only when
`JobMesh.advance` is called; `settle` runs every peer's rounds until nothing more happens.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import posixpath
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

from peer.errors import BanzaiError, NotFound, StoreError
from peer.ipfs.store import Entry, StoreConfig, too_many_entries
from peer.jobs.ports import SchedulerConfig
from peer.jobs.scheduler import Scheduler
from peer.jobs.spec import Workflow, from_obj, workflow_from_json
from peer.log import (
    ARG_SPLITS,
    ARGSPLITS_FEATURE,
    CLAIMED_FEATURE,
    DONE_FEATURE,
    IMPLICIT_SPLITS,
    LOCAL_FEATURE,
    SPLITS_FEATURE,
    Event,
    EventType,
    MeshState,
    facts,
)
from peer.log.clock import FakeClock
from peer.log.ids import bind
from peer.log.lanes import LANE_PARTS, lane, lane_of
from peer.log.turns import TurnBuilder
from tasks.registry import TaskDef

T = TypeVar("T")
PREVIOUS_TOP_KEYS = ("name", "tasks")  # the workflow keys a peer of the previous release knows


async def inline(fn: Callable[[], T]) -> T:
    """An Offload that runs the call on the loop (the fakes never block)."""
    return fn()


def _without_args(doc: Any) -> Workflow:
    """A stored workflow as a peer of the release before ARGSPLITS_FEATURE reads it: one
    saying `"splits": "args"` as a newer peer's, all of it kept and none of it run."""
    args = isinstance(doc, Mapping) and doc.get("splits") == ARG_SPLITS
    return workflow_from_json(doc, known=PREVIOUS_TOP_KEYS) if args else workflow_from_json(doc)


# -- store and data --------------------------------------------------------------------------
@dataclass
class Content:
    """What every peer could fetch: file bytes and directory listings by CID."""

    files: dict[str, bytes] = field(default_factory=dict)
    dirs: dict[str, dict[str, str]] = field(default_factory=dict)


class MemoryStore:
    """A Store over shared Content; `local` holds the CIDs this peer has."""

    def __init__(self, content: Content) -> None:
        self.content = content
        self.local: set[str] = set()
        self.pinned: set[str] = set()
        # while set, `stat` and `file_cids` fail with this StoreError (a disk that fails);
        # `refused` counts them
        self.broken: str | None = None
        self.refused = 0
        # CIDs whose blocks went missing here (another program's gc, say) while `local`
        # still says they are held: `stat` and `file_cids` raise NotFound until fetched again
        self.lost: set[str] = set()

    def add_bytes(self, data: bytes, cid_version: int = 1) -> str:
        cid = "bafkfile" + hashlib.sha256(data).hexdigest()[:32]
        self.content.files[cid] = data
        self.local.add(cid)
        return cid

    def make_dir(self, entries: Mapping[str, str], cid_version: int = 1) -> str:
        listing = dict(sorted(entries.items()))
        cid = "bafydir" + hashlib.sha256(json.dumps(listing).encode()).hexdigest()[:32]
        self.content.dirs[cid] = listing
        self.local.add(cid)
        return cid

    def stat(self, cid: str) -> Entry:
        self._check(cid)
        if cid in self.content.dirs:
            return Entry("", cid, 0, "dir")
        if cid in self.content.files:
            return Entry("", cid, len(self.content.files[cid]), "file")
        raise BanzaiError(f"no such CID {cid}")

    def walk(self, cid: str) -> Iterator[Entry]:
        for path, sub in self.content.dirs[cid].items():
            if sub in self.content.dirs:
                yield from (Entry(posixpath.join(path, e.path), e.cid, e.size, e.kind)
                            for e in self.walk(sub))
            else:
                yield Entry(path, sub, len(self.content.files.get(sub, b"")), "file")

    def file_cids(self, cid: str, limit: int | None = None) -> list[tuple[str, str]]:
        self._check(cid)
        out = [(e.path, e.cid) for e in self.walk(cid)]
        if limit is not None and len(out) > limit:  # (files alone: the sim's dirs are flat)
            raise too_many_entries(cid, limit)
        return out

    def _check(self, cid: str) -> None:
        if self.broken is not None:
            self.refused += 1
            raise StoreError(self.broken)
        if cid in self.lost and cid in self.local:
            raise NotFound(f"a block of {cid} is not in this peer's store")

    def has(self, cid: str) -> bool:
        return cid in self.local

    def cat(self, cid: str, offset: int = 0, length: int | None = None) -> Iterator[bytes]:
        data = self.content.files[cid][offset:]
        yield data if length is None else data[:length]

    def pin(self, cid: str) -> None:
        self.pinned.add(cid)

    def pin_many(self, cids: Sequence[str]) -> None:
        self.pinned.update(cids)


class MemoryData:
    """A Data fetcher that completes DAGs from the shared content at once, or waits while
    `stall` is set (then `release` lets the waiting fetches finish)."""

    def __init__(self, store: MemoryStore) -> None:
        self.store = store
        self.stall = False
        self.fetched: list[str] = []
        self._waiting: list[asyncio.Future[None]] = []

    def is_complete(self, cid: str) -> bool:
        return cid in self.store.local

    def mark(self, cid: str) -> None:
        self.store.local.add(cid)

    def unmark(self, cid: str) -> None:  # (here the memo is `local` itself: walked, fetched)
        self.store.local.discard(cid)

    async def ensure(self, cids: Sequence[str], hints: Sequence[str] = ()) -> None:
        if self.stall:
            fut = asyncio.get_running_loop().create_future()
            self._waiting.append(fut)
            await fut
        for cid in cids:
            if cid not in self.store.local:
                self.store.lost.discard(cid)
                self.store.stat(cid)  # BanzaiError if nobody has it
                self.fetched.append(cid)
                self.store.local.add(cid)

    def release(self) -> None:
        self.stall = False
        for fut in self._waiting:
            if not fut.done():
                fut.set_result(None)
        self._waiting.clear()


# -- the runner ------------------------------------------------------------------------------
@dataclass
class FakeResult:
    ok: bool
    value: Any = None
    error: str | None = None
    exit_kind: str = "ok"
    duration_s: float = 0.0
    no_slot: bool = False


class FakeRunner:
    """A Runner whose runs hang until the test ends them with `finish`, `fail` or `explode`
    (or at once with `auto`); `cancel` ends a run as the executor does (not ok, cancelled)."""

    def __init__(self, store: MemoryStore, slots: int = 1, auto: bool = False) -> None:
        self.store = store
        self._slots = slots
        self.auto = auto
        self.started: list[str] = []  # run keys, in the order the runs were handed over
        self.targets: dict[str, str] = {}  # run key -> the executor target it was given
        self.payloads: dict[str, Any] = {}
        self.cancelled: list[str] = []
        self.messages: dict[str, Callable[[str, tuple[Any, ...]], None]] = {}
        self._pending: dict[str, asyncio.Future[FakeResult]] = {}

    @property
    def slots(self) -> int:
        return self._slots

    @slots.setter
    def slots(self, n: int) -> None:  # (as Executor.slots drops while given-up workers hold some)
        self._slots = n

    @property
    def running(self) -> list[str]:
        return list(self._pending)

    async def run(self, key: str, target: str, payload: Any, *, timeout_s: float | None = None,
                  on_message: Callable[[str, tuple[Any, ...]], None] | None = None,
                  ) -> FakeResult:
        fut: asyncio.Future[FakeResult] = asyncio.get_running_loop().create_future()
        self.started.append(key)
        self.targets[key] = target
        self.payloads[key] = payload
        if on_message is not None:
            self.messages[key] = on_message
        self._pending[key] = fut
        if self.auto:
            self.finish(key)
        try:
            return await fut
        finally:
            self._pending.pop(key, None)

    def cancel(self, key: str) -> bool:
        fut = self._pending.get(key)
        if fut is None or fut.done():
            return False
        self.cancelled.append(key)
        fut.set_result(FakeResult(False, error="cancelled", exit_kind="cancelled"))
        return True

    def finish(self, key: str, value: Any = None, duration_s: float = 0.01) -> None:
        """End a run successfully, with `value` or an output made from its payload, having
        run `duration_s` (its CHUNK_DONE's `s`)."""
        self._pending[key].set_result(FakeResult(True, value if value is not None
                                                 else self._output(key),
                                                 duration_s=duration_s))

    def fail(self, key: str, kind: str = "crash", error: str = "worker died",
             no_slot: bool = False) -> None:
        """End a run unsuccessfully: `kind` is the executor's exit kind (error, crash...);
        `no_slot`: it never started, no worker slot could run it."""
        self._pending[key].set_result(FakeResult(False, error=error, exit_kind=kind,
                                                 no_slot=no_slot))

    def explode(self, key: str, exc: BaseException | None = None) -> None:
        """Make the executor call itself raise."""
        self._pending[key].set_exception(exc or RuntimeError("executor bug"))

    def _output(self, key: str) -> dict[str, Any]:
        p = self.payloads[key]
        if p["items"] is None:
            n = int(p["params"].get("files", 1))
            return {"output": self.store.make_dir({
                f"f{i:04d}.txt": self.store.add_bytes(f"{key} file {i}".encode())
                for i in range(n)})}
        items = {path: {"n": posixpath.basename(path),
                        "c": self.store.add_bytes(f"{key} {cid}".encode())}
                 for path, cid in p["items"]}
        return {"items": items, "inputs": p["items"]}


# -- the mesh --------------------------------------------------------------------------------
@dataclass
class SimPeer:
    peer_id: str
    state: MeshState
    store: MemoryStore
    data: MemoryData
    runner: FakeRunner
    sched: Scheduler
    hlc: int = 0
    emitted: list[Event] = field(default_factory=list)
    turn: TurnBuilder | None = None
    opened: float = 0.0  # when its open turn was opened (`JobMesh.hold_s`)
    refused: int = 0  # lane events that came of jobs it is no member of (`JobMesh.lanes`)


class JobMesh:
    """n peers with their own state and Scheduler; what one emits reaches the others after
    `delay_s` (per link), unless the link is cut, either end is silent or `hold` keeps it."""

    def __init__(self, n: int, catalog: Mapping[str, TaskDef], cfg: SchedulerConfig | None = None,
                 *, slots: int = 1, auto: bool = False, batch: bool = False,
                 old: Collection[str] = (), members: bool = True,
                 unclaiming: Collection[str] = (), valueless: Collection[str] = (),
                 hold_s: float = 0.0,
                 lanes: bool = False) -> None:
        self.catalog = catalog
        # Partial replication on (docs/design/partial-replication.md; `MeshState.lanes_on`):
        # peer and job ids of their real forms (a lane is named by both; job ids bound to
        # their submitters, self-certifying peer ids: session 46, helper f), a submission names
        # its `members`, a member's task events of a lanes job go to its lane of the job, and
        # a peer that is no member drops them as they come (its door's `not_member`, counted
        # in `SimPeer.refused`; kept back while it does not know the job yet, as job
        # anti-entropy would bring them again then)
        self.lanes = lanes
        self.batch = batch  # a peer's events of one round are parts of one TURN, as Node's
        # As Node's HOLD_MAX_S (with `batch`): a peer's turn stays open while its scheduler
        # holds the flush (`backlog`, `outcomes_pending`), at most this long (0: never)
        self.hold_s = hold_s
        # Peers of the previous release: they do not announce SPLITS_FEATURE and read a
        # workflow's `splits` as a newer peer's key (their fold is this release's: the
        # implicit splits it makes are never used, their scheduler runs none of such a job)
        self.old = frozenset(old)
        # Peers of the release before CLAIMED_FEATURE: they announce the rest of this one's
        self.unclaiming = frozenset(unclaiming)
        # Peers of the release before ARGSPLITS_FEATURE (a95f359): they announce the rest of
        # this one's and read a workflow's `"splits": "args"` as a newer peer's key (their
        # scheduler runs none of such a job)
        self.valueless = frozenset(valueless)
        self.cfg = cfg or SchedulerConfig(store=StoreConfig("/nonexistent"))
        self.clock = FakeClock()
        self.content = Content()
        self.peers: dict[str, SimPeer] = {}
        self.delay_s: dict[tuple[str, str], float] = {}
        self.cut: set[frozenset[str]] = set()
        self.silent: set[str] = set()
        # (event, to) -> keep it back (a TURN: if any of its parts is)
        self.hold: Callable[[Event, str], bool] | None = None
        # (peer, its heartbeat info) -> the info the others get (a buggy or older peer)
        self.tamper: Callable[[str, dict[str, Any]], dict[str, Any]] | None = None
        self._queue: list[tuple[float, str, Event]] = []  # (due, destination, event)
        self._jobs = 0
        self._info: dict[str, Mapping[str, Any]] = {}  # peer -> its last heartbeat's info
        for i in range(n):
            self._add(f"{i:x}" * 20 if lanes else f"p{i}", slots, auto)
        if members:
            for pid in self.peers:
                self.announce(pid)
            self.deliver()
        self.heartbeats()

    def _add(self, pid: str, slots: int, auto: bool) -> None:
        store = MemoryStore(self.content)
        data = MemoryData(store)
        runner = FakeRunner(store, slots, auto)
        state = MeshState(lanes_on=self.lanes, me=pid)
        peer = SimPeer(pid, state, store, data, runner, self._scheduler(pid, state, store, data,
                                                                        runner))
        peer.turn = TurnBuilder(state, lambda: self._tick(peer))
        self.peers[pid] = peer

    def _scheduler(self, pid: str, state: MeshState, store: MemoryStore, data: MemoryData,
                   runner: FakeRunner) -> Scheduler:
        parse = (partial(workflow_from_json, known=PREVIOUS_TOP_KEYS) if pid in self.old
                 else _without_args if pid in self.valueless else workflow_from_json)
        return Scheduler(self.cfg, pid, state, lambda t, p: self.emit(pid, t, p), store, runner,
                         self.catalog, data, peers=lambda: self.infos(pid), clock=self.clock,
                         offload=inline, parse=parse,
                         catch_up=lambda job, peer, fallback: self.pair_round(pid, peer, job))

    def __getitem__(self, pid: str) -> SimPeer:
        return self.peers[pid]

    # -- links and liveness ----------------------------------------------------------------
    def linked(self, a: str, b: str) -> bool:
        return a not in self.silent and b not in self.silent and frozenset((a, b)) not in self.cut

    def partition(self, *groups: set[str]) -> None:
        """Cut every link between peers of different groups."""
        for g in groups:
            for h in groups:
                if g is not h:
                    self.cut |= {frozenset((a, b)) for a in g for b in h}

    def heal(self) -> None:
        self.cut.clear()
        self.silent.clear()

    def slow_links(self, delay_s: float) -> None:
        """Every link delivers `delay_s` after the event is sent."""
        for a in self.peers:
            for b in self.peers:
                if a != b:
                    self.delay_s[(a, b)] = delay_s

    def infos(self, pid: str) -> dict[str, Mapping[str, Any]]:
        """What `pid` knows of the live peers it hears: their last heartbeat's info."""
        return {q: self._info[q] for q in self.peers if q != pid and self.linked(pid, q)}

    def heartbeats(self) -> None:
        """Every peer hears from every peer it is linked to (its load; renewing its leases)."""
        for b, p in self.peers.items():
            info: dict[str, Any] = {"calls": sorted(self.catalog), "slots": p.runner.slots,
                                    # (as Node.local_info: none while claims are held)
                                    "free_slots": 0 if p.sched.claims_held
                                    else p.sched.free_slots,
                                    "running": [list(k) for k in p.sched.running],
                                    "working": p.sched.next_working(),
                                    "features": self._features(b)}
            self._info[b] = self.tamper(b, info) if self.tamper else info
        for a in self.peers:
            for b in self.peers:
                if a != b and self.linked(a, b):
                    self.peers[a].sched.heard(b, self._info[b].get("running"))
        for a in self.peers:
            self.vectors(a)

    def vectors(self, pid: str) -> None:
        """While `pid` settles after a restart (`Scheduler.settling`), the vectors of the
        peers it is linked to, as their digests bring them (`Scheduler.heads_seen`): of
        their mesh streams (`Node.heads_noted`), and of the lanes of each job both are
        members of (a pair round's, `Node._pair_seen`)."""
        sched = self.peers[pid].sched
        for b, q in self.peers.items():
            if not sched.settling or b == pid or not self.linked(pid, b):
                continue
            sched.heads_seen(b, {o: n for o, n in q.state.heads.items() if lane_of(o) is None},
                             mesh=True)
            for job in q.state.members_of:
                if q.state.member_of(job, b) and q.state.member_of(job, pid):
                    sched.heads_seen(b, q.state.lane_heads([job]))

    def announce(self, pid: str, labels: Mapping[str, str] | None = None) -> Event:
        """`pid`'s MEMBER event, as Node emits one at start (`members`: every peer does),
        with `labels` (`--label`) if given."""
        p = self.peers[pid]
        return self.emit(pid, EventType.MEMBER, {
            "name": pid, "http": "", "calls": sorted(self.catalog), "slots": p.runner.slots,
            "cores": 1, "mem_mb": 1024, "gpu": False, "features": self._features(pid),
            **({"labels": dict(labels)} if labels else {})})

    def _features(self, pid: str) -> list[str]:
        """What `pid` announces (its MEMBER and heartbeats): nothing of this release if old."""
        return [] if pid in self.old else [
            SPLITS_FEATURE, DONE_FEATURE, LOCAL_FEATURE,
            *(() if pid in self.unclaiming else (CLAIMED_FEATURE,)),
            *(() if pid in self.valueless else (ARGSPLITS_FEATURE,))]

    # -- events ----------------------------------------------------------------------------
    def emit(self, pid: str, typ: EventType, payload: dict[str, Any]) -> Event:
        """What Node.emit does: fold, tell the local scheduler, send to the others."""
        p = self.peers[pid]
        assert p.turn is not None
        origin = self._origin_of(p, typ, payload)
        if self.batch and p.turn.holds(typ):
            if not p.turn.open:
                p.opened = self.clock()
            ev, closed = p.turn.add(origin, typ, payload)
            for c in closed:
                self._send(pid, c)
        else:
            self._close_turn(p)
            ev = Event(origin, p.state.heads.get(origin, 0) + 1, self._tick(p), typ, payload)
            p.state.apply(ev)
            self._send(pid, ev)
        for single in facts(ev):
            p.sched.poke(single)
        return ev

    def _origin_of(self, p: SimPeer, typ: EventType, payload: Mapping[str, Any]) -> str:
        """As Node's: a task event of a lanes job we are a member of goes to our lane of it."""
        job = payload.get("job")
        if (self.lanes and typ in LANE_PARTS and job in p.state.members_of
                and p.state.member_of(job, p.peer_id)):
            return lane(p.peer_id, job)
        return p.peer_id

    def _tick(self, p: SimPeer) -> int:
        p.hlc = max(p.hlc + 1, int(self.clock() * 1000) << 16)
        return p.hlc

    def _send(self, pid: str, ev: Event) -> None:
        self.peers[pid].emitted.append(ev)
        for q in self.peers:
            if q != pid:
                self._queue.append((self.clock() + self.delay_s.get((pid, q), 0.0), q, ev))

    def _close_turn(self, p: SimPeer, held: bool = False) -> None:
        """End `p`'s open turn (what Node does at the end of a loop turn): it goes out;
        `held`: unless Node would hold it (`hold_s`)."""
        if (held and p.turn is not None and p.turn.open and self.clock() - p.opened < self.hold_s
                and (p.sched.backlog or p.sched.outcomes_pending)):
            return
        for ev in p.turn.close() if p.turn is not None else ():
            self._send(p.peer_id, ev)

    def close_turns(self) -> None:
        for p in self.peers.values():
            self._close_turn(p, held=True)

    def deliver(self) -> int:
        """Hand over every event whose delay has passed on a live link; the count."""
        self.close_turns()
        now, keep, n = self.clock(), [], 0
        for due, dst, ev in self._queue:
            in_lane = lane_of(ev.origin)
            if due > now or not self.linked(in_lane[0] if in_lane else ev.origin, dst) or (
                    self.hold and any(self.hold(e, dst) for e in ev.singles)):
                keep.append((due, dst, ev))
                continue
            p = self.peers[dst]
            if in_lane is not None and not p.state.member_of(in_lane[1], dst):
                p.refused += 1  # (the door's `not_member`)
                continue
            if in_lane is not None and in_lane[1] not in p.state.members_of:
                keep.append((due, dst, ev))  # (its job not known here yet)
                continue
            if p.state.apply(ev):
                p.hlc = max(p.hlc, ev.hlc)
                for single in facts(ev):  # as Node tells its listeners: each part of a
                    p.sched.poke(single)  # TURN, a CHUNK_DONE's implied TASK_DONE after it
                n += 1
        self._queue = keep
        return n

    def pair(self, src: str, dst: str, job: str) -> None:
        """One way of a pair round of lanes job `job` (`pair_round`): `src`'s events of the
        job's lanes that `dst`'s heads lack go to `dst`, after the link's delay, if both are
        live and linked and `src` holds the lanes (the sim has no periodic pair rounds: this
        is the one way the lane events sent before `dst` was a member reach it)."""
        s = self.peers[src].state
        if not self.linked(src, dst) or not s.member_of(job, src):
            return
        due = self.clock() + self.delay_s.get((src, dst), 0.0)
        evs = s.events_after(self.peers[dst].state.lane_heads([job]), len(s.events), [job])
        self._queue.extend((due, dst, ev) for ev in evs)
        self.peers[dst].sched.heads_seen(src, s.lane_heads([job]))  # (its digest's vector)

    def pair_round(self, a: str, b: str, job: str) -> None:
        """A pair round of lanes job `job` between `a` and `b` (`Scheduler.catch_up`: each
        gets what it lacks of what the other holds, `pair` both ways)."""
        self.pair(b, a, job)
        self.pair(a, b, job)

    def submit(self, pid: str, tasks: list[dict[str, Any]], implicit: bool | None = False,
               local: bool | None = None, claimed: bool | None = None,
               members: Sequence[str] | None = None) -> str:
        """Submit a DAG-form workflow at peer `pid`; its job id. `implicit`: whether it says
        its tasks without input have implicit splits (None: as Node decides, if `pid` and
        every live peer it hears announce SPLITS_FEATURE; not by default: a task is split
        by a peer, as in a mesh with a peer of the previous release). `local`: whether its
        JOB_SUBMITTED says `local` (None: as Node decides, `Node.local_first`); `claimed`:
        whether it says `claimed` with it (None: as Node decides, `Node.claims_first`).
        `members`: a lanes job's, its home first (default with `lanes`: `pid` and the next
        peer)."""
        self._jobs += 1
        # (with lanes, bound to `pid`, as Node's while every member takes them: peer.log.ids)
        job = bind(f"j{self._jobs:012x}", pid) if self.lanes else f"j{self._jobs}"
        wf = from_obj({"name": "sim", "tasks": tasks}, self.catalog)
        if implicit is None:
            implicit = pid not in self.old and all(
                SPLITS_FEATURE in info.get("features", ()) for info in self.infos(pid).values())
        if implicit:
            wf = dataclasses.replace(wf, splits=IMPLICIT_SPLITS)
        if local is None:
            local = implicit and pid not in self.old and all(
                LOCAL_FEATURE in info.get("features", ()) for info in self.infos(pid).values()
            ) and self.peers[pid].sched.takes_first(job, wf)
        if claimed is None:
            claimed = local and all(CLAIMED_FEATURE in info.get("features", ())
                                    for info in self.infos(pid).values()
                                    ) and self.peers[pid].sched.claims_first(job, wf)
        payload: dict[str, Any] = {"job": job, "workflow": wf.to_json()}
        if local:
            payload["local"] = True
            if claimed:
                payload["claimed"] = True
        if members is not None:
            payload["members"] = list(members)
        elif self.lanes:
            ids = list(self.peers)
            payload["members"] = [pid, ids[(ids.index(pid) + 1) % len(ids)]]
        self.emit(pid, EventType.JOB_SUBMITTED, payload)
        return job

    def events(self, typ: EventType, pid: str = "p0", **match: Any) -> list[Event]:
        """Events of `typ` in `pid`'s state as folded (a TURN's parts, the TASK_DONE a
        CHUNK_DONE implies) whose payload has the `match` items, in order."""
        self.close_turns()
        evs = [e for b in self.peers[pid].state.events.values() for e in facts(b)
               if e.type == typ and all(e.payload.get(k) == v for k, v in match.items())]
        return sorted(evs, key=lambda e: e.order)

    def sent(self, typ: EventType, **match: Any) -> list[Event]:
        """Events of `typ` that the peers sent (a TURN's parts; nothing only folded, such as
        the TASK_DONE a CHUNK_DONE implies) whose payload has the `match` items."""
        self.close_turns()
        return [e for p in self.peers.values() for ev in p.emitted for e in ev.singles
                if e.type == typ and all(e.payload.get(k) == v for k, v in match.items())]

    # -- time ------------------------------------------------------------------------------
    async def settle(self, max_rounds: int = 500) -> None:
        """Deliver, step every live peer and let their tasks run, until nothing changes."""
        quiet = 0
        for _ in range(max_rounds):
            before = self._signature()
            self.deliver()
            for pid, p in self.peers.items():
                if pid not in self.silent:
                    p.sched.step()
            await asyncio.sleep(0)
            self.close_turns()
            quiet = quiet + 1 if self._signature() == before else 0
            if quiet >= 4:
                return
        raise AssertionError(f"the mesh did not settle in {max_rounds} rounds")

    def _signature(self) -> tuple[int, ...]:
        return (len(self._queue), *(len(p.state.events) for p in self.peers.values()),
                *(len(p.runner.started) for p in self.peers.values()),
                *(len(p.runner.running) for p in self.peers.values()),
                *(len(p.sched.runs) for p in self.peers.values()))

    async def advance(self, dt: float) -> None:
        """Let `dt` seconds pass (heartbeats flow on live links), then settle."""
        self.clock.advance(dt)
        self.heartbeats()
        await self.settle()

    # -- restarts and shutdown -----------------------------------------------------------------
    async def restart(self, pid: str) -> None:
        """Stop `pid`'s scheduler (its runs end unrecorded) and start a new one on its state,
        as a peer restarting on its data dir does."""
        p = self.peers[pid]
        await p.sched.close()
        p.runner = FakeRunner(p.store, p.runner.slots, p.runner.auto)
        p.sched = self._scheduler(pid, p.state, p.store, p.data, p.runner)
        p.sched.recover()
        self.vectors(pid)  # (its first digests: at once from the peers it is linked to)

    async def close(self) -> None:
        for p in self.peers.values():
            p.data.release()
            await p.sched.close()
        await asyncio.sleep(0)
