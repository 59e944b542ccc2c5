"""What the HTTP edge reads from the peer that hosts it: narrow protocols, met by
peer.node.Node (mypy checks it where main.py calls make_app). Used on the event loop only."""

from __future__ import annotations

from collections.abc import Callable, Generator, Mapping, MutableSequence, Sequence
from pathlib import Path
from typing import Any, Protocol

from peer.errors import StoreError
from peer.http.limits import LimitSettings
from peer.ipfs.publish import IpnsService
from peer.ipfs.store import GcStats, Store
from peer.jobs.spec import Workflow
from peer.log import Event, EventType, MeshState
from tasks.registry import TaskDef


class HttpConfig(LimitSettings, Protocol):
    """The settings the app reads."""

    @property
    def data_dir(self) -> Path: ...  # uploads are spooled under it
    @property
    def max_attempts(self) -> int: ...
    @property
    def max_body_bytes(self) -> int: ...
    @property
    def task_log_max_bytes(self) -> int: ...  # a run record's bound follows it (RR-1)
    @property
    def max_upload_bytes(self) -> int: ...
    @property
    def max_tasks_per_job(self) -> int: ...
    @property
    def max_workflow_bytes(self) -> int: ...
    @property
    def http_addr(self) -> tuple[str, int]: ...  # the bound HOST, PORT
    @property
    def allow_hosts(self) -> tuple[str, ...]: ...
    @property
    def public_gateway(self) -> bool: ...
    @property
    def subdomain_hosts(self) -> tuple[str, ...]: ...
    @property
    def gateway_codec_conversion(self) -> bool: ...
    @property
    def tls_cert(self) -> Path | None: ...
    @property
    def secret(self) -> bytes | None: ...  # the mesh secret: peers' HTTP credential


class Fetcher(Protocol):
    def mark(self, cid: str) -> None: ...  # a DAG known complete here
    async def try_ensure(self, cid: str) -> bool: ...  # fetch from the mesh; True if now here
    async def ensure(self, cids: Sequence[str], hints: Sequence[str] = (),
                     max_bytes: int | None = None) -> None: ...  # fetch each DAG not complete
    # here (a CAR of at most max_bytes); NotFound if no live peer served it, TooLarge


class RunRecords(Protocol):
    """Log lines and metrics of the runs in progress here, by (job, task)."""

    @property
    def logs(self) -> Mapping[tuple[str, str], Sequence[str]]: ...
    @property
    def metrics(self) -> Mapping[tuple[str, str], Sequence[Sequence[Any]]]: ...
    def waiting(self) -> Mapping[tuple[str, str], str]: ...


class GossipStats(Protocol):
    def as_dict(self) -> Mapping[str, int]: ...


class GossipView(Protocol):
    @property
    def address(self) -> str: ...
    @property
    def stats(self) -> GossipStats: ...
    def live_peers(self) -> Mapping[str, Mapping[str, Any]]: ...  # peer id -> info, "status"
    def left_peers(self) -> frozenset[str]: ...


class DiscoveryView(Protocol):
    def health(self) -> dict[str, object]: ...


class CycleReport(Protocol):
    def to_json(self) -> dict[str, Any]: ...


class Lifecycle(Protocol):
    """Storage lifecycle (peer.jobs.janitor.Janitor)."""

    def delete_job(self, job: str) -> Event: ...  # its JOB_DELETED; NotFound; Conflict while live
    async def cycle(self) -> CycleReport: ...  # retention and gc now
    async def collect(self) -> GcStats: ...  # gc alone (Kubo's repo gc)
    held_back: tuple[str, ...]  # what held the last gc back (nothing collected)

    def bounds(self) -> dict[str, Any]: ...  # the retention bounds set, and what is unbounded


Listener = Callable[[Event], None]


class MeshSecretsView(Protocol):
    @property
    def secrets(self) -> Sequence[bytes]: ...  # the first is served, every one accepted


class JobPages(Protocol):
    """The job index as the job list reads it (peer.log.jobindex.JobIndex)."""

    def page_apart(self, limit: int, before: tuple[int, str, int] | None,
                   ) -> list[tuple[tuple[int, str, int], dict[str, Any]]]: ...  # (order,
    # summary) of compacted jobs older than `before`, newest first: in any thread


class Archive(Protocol):
    """Compacted jobs and the snapshots served to peers catching up (peer.catchup.CatchUp)."""

    @property
    def index(self) -> JobPages: ...  # the job index (read in a worker thread: page_apart)

    def job_record(self, job: str) -> dict[str, Any] | None: ...  # a compacted job's view
    async def fetch_record(self, job: str) -> dict[str, Any] | None: ...  # a thin one's,
    # fetched from a member and checked
    async def fetch_view(self, job: str, members: Sequence[str], chunks_from: int,
                         check: Callable[[Any], object],
                         ) -> tuple[str, bytes]: ...  # a lanes job's view (its bytes) from
    # the first of its live members whose answer `check` passes; Unavailable naming them
    def record_texts(self, job: str) -> list[str] | None: ...  # ?v=3&record=: its full texts
    def snapshot_stream(self, v: int = 2, part: str | None = None,
                        ) -> Generator[bytes, None, None]: ...  # GET /api/snapshot: signed
    # snapshot + events (v=1: one JSON body; ?v=2 or 3: streamed; v=3&part=jobs|rows: a part)
    def digest_reader(self, per_job: bool = False, v: int = 2,
                      ) -> Callable[[], Mapping[str, Any]]: ...  # ?digest=1: heads, floors,
    # digest (per_job: one per compacted job), read in a thread


class Host(Protocol):
    """The peer as the app and its views see it."""

    @property
    def peer_id(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def cfg(self) -> HttpConfig: ...
    @property
    def catalog(self) -> Mapping[str, TaskDef]: ...
    @property
    def state(self) -> MeshState: ...  # the folded mesh state: read, never written
    @property
    def mesh_secrets(self) -> MeshSecretsView: ...  # what peers' HTTP credentials derive from
    @property
    def store(self) -> Store: ...  # every call may block
    @property
    def fetcher(self) -> Fetcher: ...
    @property
    def scheduler(self) -> RunRecords: ...
    @property
    def gossip(self) -> GossipView | None: ...  # None before start
    @property
    def discovery(self) -> DiscoveryView | None: ...  # None without mDNS
    @property
    def heard_at(self) -> Mapping[str, float]: ...  # peer id -> local monotonic time heard
    @property
    def infos(self) -> Mapping[str, Mapping[str, Any]]: ...  # peer id -> last heartbeat
    @property
    def listeners(self) -> MutableSequence[Listener]: ...  # called with every new event
    @property
    def janitor(self) -> Lifecycle: ...
    @property
    def ipns(self) -> IpnsService: ...  # IPNS keys, records, publishing
    @property
    def catchup(self) -> Archive: ...  # compacted jobs' records, snapshots served

    def emit(self, typ: EventType, payload: dict[str, Any]) -> Event: ...
    def flush(self) -> None: ...  # emitted events to disk (a failed write stays queued)
    async def durable(self, ev: Event) -> None: ...  # raises (StorageFull...) unless on disk
    def refusal(self) -> StoreError | None: ...  # why a change is refused now (log failing)
    def durable_now(self, ev: Event) -> None: ...  # the same, blocking (the Kubo RPC's add)
    def unpinned(self, cids: list[str]) -> None: ...  # a user removed pins (Kubo: there too)
    async def inline_landed(self) -> None: ...  # the inline outputs' pins written so far
    async def submitted(self, ev: Event) -> int: ...  # live peers that hold `ev` (bounded wait)
    def implicit_splits(self) -> bool: ...  # every live peer folds implicit splits
    def arg_splits(self) -> bool: ...  # and splits by values (ARG_SPLITS)
    def new_job_id(self) -> str: ...  # a new job's id (bound to us while all take bound ids)
    def lanes_members(self, job: str, wf: Workflow) -> list[str] | None: ...  # its `members`
    def local_first(self, job: str, wf: Workflow) -> bool: ...  # JOB_SUBMITTED's `local`
    def claims_first(self, job: str, wf: Workflow) -> bool: ...  # and `claimed` (with `local`)
    def local_info(self, step: bool = True) -> Mapping[str, Any]: ...  # our heartbeat info
    def durability(self) -> Mapping[str, Any]: ...  # log error, claims held, unwritten events
    def events_made(self) -> int: ...  # our stream's seq and our lanes' (/metrics)
    def log_health(self) -> Mapping[str, Any]: ...  # events, heads digest, refused, quarantined
    def inline_health(self) -> Mapping[str, int] | None: ...  # inline blocks kept, refused
    def security(self) -> Mapping[str, Any]: ...  # identity, refusals, revocations, skews
    def shell_confinement(self) -> str | None: ...  # how shell tasks run (None: none here)
    def revoke(self, peer_id: str, reason: str) -> Event: ...  # NotFound, Conflict
    def load(self) -> Mapping[str, int]: ...  # runs, queues, slots, bytes fetched (/metrics)
    @property
    def workers(self) -> Mapping[str, int]: ...  # slots usable ready given_up failed_starts
