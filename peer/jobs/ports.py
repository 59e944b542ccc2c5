"""The scheduler's configuration and the narrow protocols its parts need of the peer (store,
executor, data fetcher, clock): each declared once, here. Implementations are called from the
event loop: no method may block it.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Protocol, TypeVar

from peer.errors import ConfigError
from peer.ipfs.store import StoreConfig
from peer.log import Event, EventType

T = TypeVar("T")


# Entries (files and directories, at every level) a task's input may hold to be listed for a
# per-item split or a merge of inputs (`Planner.files`; the default of --max-input-entries):
# a split names every item in its event (or its stored listing), so that list is whole by
# nature; past this bound the task fails, naming the input and the bound, before more is
# read. A split of 100,000 items peaked at 67 MB of Python allocations here (its listing
# alone 35 MB: docs/benchmarks.md, session 51 helper e), so this bound keeps one split under
# ~170 MB
MAX_INPUT_ENTRIES = 250_000
# The longest a restarted peer waits to hold what the other members did meanwhile before it
# claims (SchedulerConfig.restart_hold_s, --restart-hold-s): its catch-up took ~2 s
# (docs/benchmarks.md, "Session 51, helper i")
RESTART_HOLD_S = 3.0


@dataclass(frozen=True)
class SchedulerConfig:
    store: StoreConfig  # what the work orders carry: workers open the same store
    task_modules: tuple[str, ...] = ()
    fetch_allow: tuple[str, ...] = ()  # CIDRs fetching tasks may reach (--fetch-allow)
    max_attempts: int = 3
    lease_s: float = 10.0
    stagger_s: float = 0.05  # delay per rank before claiming (rendezvous stagger)
    # delay per rank before splitting a task whose input several live peers hold: the first
    # (its producer) splits at once, the others only if no split came meanwhile
    split_wait_s: float = 0.2
    # a task without input (any peer may split it): split_wait_s and this much more per task
    # of its job (at most split_wait_job_max_s more), per rank. Its first peer splits in one
    # pass over the job all the tasks it comes first for, and they reach the others after
    # that pass: three peers on two cores took longer than 0.2 s over a job of 1,000 tasks
    # and split up to a quarter of them twice. The bound keeps a hung first peer's tasks of
    # a huge job from waiting long for another to split them.
    split_wait_per_task_s: float = 0.0005
    split_wait_job_max_s: float = 5.0
    task_timeout_s: float = 3600.0
    # A run handed to the runner that has not ended this long after its timeouts (its own and
    # those of the runs queued ahead of it: task_timeout_s * (1 + queue_ahead)) fails as a
    # crash and its slot is freed: a worker that never ends, or none that can start, must not
    # hold the claim for ever (the executor's own bounds end a run sooner: kill_grace_s and
    # stuck_after_s after its timeout).
    run_end_grace_s: float = 120.0
    max_chunk_items: int = 64
    max_input_entries: int = MAX_INPUT_ENTRIES  # (--max-input-entries)
    min_chunk_items: int = 4
    progress_interval_s: float = 0.5
    tick_s: float = 0.25
    # A peer restarted on a log that holds work (`Scheduler.recover`) claims nothing new for
    # up to this long, in each lanes job of its until a pair round shows it holds what a
    # member of that job holds of its lanes, in the rest until a digest shows it holds what
    # a member holds of the mesh streams (`Scheduler.heads_seen`): its replayed view misses
    # what the mesh did meanwhile, and its claims from it lost to earlier ones, the runs
    # wasted (session 51, helper i; per job since session 52, helper e). 0: off
    # (--restart-hold-s)
    restart_hold_s: float = RESTART_HOLD_S
    fetch_attempts: int = 3  # failed fetches of a task's results before recomputing them
    fetch_backoff_s: float = 1.0  # wait after a failed fetch, doubled after each further one
    fetch_max_backoff_s: float = 30.0
    max_split_bytes: int = 8 << 20  # larger chunk lists go as a listing (TASK_SPLIT_REF)
    storage_retry_s: float = 1.0  # an attempt failed by a full disk is recorded after this
    # The peer's settings for external kinds (kinds.settings): log bound, secret values,
    # container runtime and network; sent to the worker with each work order, never logged
    kind_settings: Mapping[str, Any] = field(default_factory=dict, hash=False, repr=False)
    partial_outputs: bool = True  # publish per-item outputs as they grow (PARTIAL events)
    # a whole output (and its run record) of at most this many bytes of blocks rides in its
    # CHUNK_DONE (peer.ipfs.inline) rather than being added to the store; 0: never
    inline_max_bytes: int = 0
    # runs claimed per slot beyond it, queued in the executor, of starved tasks this peer
    # comes first for whose call's last run here took at most queue_ahead_max_s, behind a run
    # of such a call (`Runs.frees_soon`: never behind a long run alone): its worker
    # starts the next at once, and a backlog's outcomes and claims go out in few TURN events
    # (the flush is held while one is queued); 0: none. The bound keeps a peer that frees
    # meanwhile from waiting long for work queued here.
    queue_ahead: int = 0
    queue_ahead_max_s: float = 0.05
    # ... or, a per-item chunk whose items are here (a split's input that this peer holds),
    # whose call's last run here took at most this much per item it ran: a peer without the
    # items fetches each before running it (bench_mesh's per-file map on 3 peers: 0.5-3.6 ms
    # more per item than the holder's run), so its wait is worth it whatever the chunk's
    # length, which the splitter chose (56 CHECKSUM items: 18-40 ms, 45-170 ms on a loaded
    # host, where the fixed bound left the holder claiming one chunk at a time)
    queue_ahead_item_max_s: float = 0.005
    # a lone peer queues a run of any length behind its slots (nobody else could take it):
    # only where a core is left for the peer's own work beside its workers. On a peer whose
    # slots fill its cores (pinned to one), the peer's recording of one run would preempt
    # the next run's compute: LEARN's fits took 8-10 % longer on one pinned core.
    queue_alone: bool = False
    # a whole python task writes its output on tmpfs (peer.jobs.scratch: no ext4 metadata
    # work per run) if its call's last output here was at most tmpfs_output_max_bytes (a
    # call not run here yet, or with a larger last output, writes to disk; 0: never) and
    # the tmpfs has tmpfs_free_min_bytes free; per-item scratch on tmpfs needs that floor too
    tmpfs_output_max_bytes: int = 1 << 20
    tmpfs_free_min_bytes: int = 256 << 20
    # a peer without a split's input waits this much longer than its stagger for a chunk
    # whose call the input's holders ran short (their CHUNK_DONEs: at most
    # queue_ahead_max_s, or queue_ahead_item_max_s per item of a per-item chunk): fetching
    # the chunk's items would take it longer than a holder takes to run the chunk
    # (FILTER_LONGER reads WAV headers); the bound keeps a holder busy with other work from
    # holding the task up
    local_wait_s: float = 0.5
    # a lanes job (docs/design/partial-replication.md 5.3) whose ready, unclaimed chunks hold
    # more than this much work per slot of its live members (each chunk estimated by its
    # call's last run) gets more members from its home, at most one JOB_MEMBERS a job per this
    spread_s: float = 1.0
    # a lanes job's home emits its JOB_ENDED once the job stayed finished in its fold this
    # long (made again from the fold then): two anti-entropy rounds, by which the other
    # members' last lane events lost in a push reach it (a non-member sees the end this late)
    end_grace_s: float = 2.0

    def __post_init__(self) -> None:
        """Every count, size and duration is zero or more (ConfigError names the first not)."""
        for f in fields(self):
            value = getattr(self, f.name)
            if (isinstance(value, (int, float)) and not isinstance(value, bool)
                    and not value >= 0):  # also NaN
                raise ConfigError(f"scheduler setting {f.name} must be zero or more, "
                                  f"not {value!r}")


class RunResultLike(Protocol):
    ok: bool
    value: Any
    error: str | None
    exit_kind: str
    duration_s: float
    no_slot: bool  # it never started: no worker slot could run it (Executor's RunResult)


class Runner(Protocol):
    """What the scheduler needs of the executor."""

    @property
    def slots(self) -> int: ...
    async def run(self, key: str, target: str, payload: Any, *, timeout_s: float | None = None,
                  on_message: Callable[[str, tuple[Any, ...]], None] | None = None,
                  ) -> Any: ...
    def cancel(self, key: str) -> bool: ...


class Data(Protocol):
    """What the scheduler needs to get data from other peers (peer.ipfs.fetch.Fetcher)."""

    def is_complete(self, cid: str) -> bool: ...
    def mark(self, cid: str) -> None: ...
    def unmark(self, cid: str) -> None: ...
    async def ensure(self, cids: Sequence[str], hints: Sequence[str] = ()) -> None: ...


class Clock(Protocol):
    """Monotonic seconds (time.monotonic; a fake clock in tests)."""

    def __call__(self) -> float: ...


class Offload(Protocol):
    """Runs a blocking call off the loop (asyncio.to_thread; inline in tests)."""

    def __call__(self, fn: Callable[[], T], /) -> Coroutine[Any, Any, T]: ...


PeerInfos = Callable[[], Mapping[str, Mapping[str, Any]]]  # live others -> heartbeat info
Emit = Callable[[EventType, dict[str, Any]], Event]


class CatchUp(Protocol):
    """Asks `peer`, a member of lanes job `job`, for the job's lanes now (a pair round;
    design 5.3); with `fallback`, another live member sharing the job when `peer` is no live
    lanes partner (the joiner's ask of its adder), else nobody then."""

    def __call__(self, job: str, peer: str, *, fallback: bool) -> None: ...
