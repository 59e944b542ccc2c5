"""Peer settings from flags, BANZAI_* environment variables and a TOML file.

Each setting is declared once, as a PeerConfig field (type, default, `setting(help)`
metadata); its flag, variable, TOML key and parsing derive from it (SPECS). Precedence:
flag > environment > TOML file > default. Invalid values raise ConfigError.
"""

from __future__ import annotations

import argparse
import ipaddress
import math
import os
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from types import UnionType
from typing import Any, Union, cast, get_args, get_origin, get_type_hints

from peer.errors import ConfigError, SpecError
from peer.gcpace import MAX_YOUNG_ALLOCS
from peer.ipfs.store import MAX_MATERIALIZE_ENTRIES
from peer.jobs.placement import check_label
from peer.jobs.ports import MAX_INPUT_ENTRIES, RESTART_HOLD_S
from peer.mesh.addr import parse_addr


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "banzai"


def default_runtime_dir() -> Path:
    """Where running peers leave their runtime files (URL -> token file) for local clients:
    $XDG_RUNTIME_DIR/banzai, else $XDG_DATA_HOME/banzai-runtime."""
    if os.environ.get("XDG_RUNTIME_DIR"):
        return Path(os.environ["XDG_RUNTIME_DIR"]) / "banzai"
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "banzai-runtime"


def parse_hostport(value: str, what: str) -> tuple[str, int]:
    """Split HOST:PORT (IPv6 as [::1]:PORT); port 0 means any free port."""
    host, sep, port = value.rpartition(":")
    if not sep or not host:
        raise ConfigError(f"{what}: expected HOST:PORT, got {value!r}", field=what)
    host = host.strip("[]")
    try:
        p = int(port)
    except ValueError:
        raise ConfigError(f"{what}: port must be a number, got {port!r}", field=what) from None
    if not 0 <= p <= 65535:
        raise ConfigError(f"{what}: port {p} out of range 0..65535", field=what)
    return host, p


def default_worker_memory_mb() -> int:
    """Half of the machine's physical memory in MiB, at least 2048 (librosa and numba
    reserve about 1 GiB of address space at import)."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20
    except (ValueError, OSError):  # no such sysconf name on this platform
        total = 0
    return max(2048, total // 2)


@dataclass(frozen=True)
class Setting:
    """How a user sets one PeerConfig field, kept in the field's metadata. The flag
    (--FIELD-NAME unless named here), BANZAI_FIELD_NAME, the TOML key `field_name` and the
    parsing are derived from the field's name and type (see SPECS)."""

    help: str
    flag: str = ""  # tuple fields: a repeatable singular, e.g. --task-module
    choices: tuple[str, ...] = ()
    # a switch whose form that sets its default parses too, unlisted (one whose default may
    # change: a script says either way explicitly). Not every switch: each added name takes
    # prefixes an earlier release's abbreviations used (`--mdns eth0`, `--w 1`: review r2,
    # session 43, F1)
    both_forms: bool = False


def setting(help: str, *, flag: str = "", choices: tuple[str, ...] = (),
            both_forms: bool = False) -> dict[str, Setting]:
    """The metadata of a PeerConfig field: `field(default=..., metadata=setting(...))`."""
    return {"setting": Setting(help, flag, choices, both_forms)}


# Settings the peer turns into integers (bytes, milliseconds) as it starts: inf raised
# OverflowError there (a traceback; in every compaction pass for the horizon): finite only.
FINITE = {"store_max_gb": "GB", "task_scratch_max_gb": "GB (0 = no bound)",
          "log_vacuum_min_free_mb": "MB", "max_clock_drift_s": "seconds",
          "compact_horizon_days": "days"}
# The HTTP side's limits on slow or many clients (peer/http/limits.py, HttpLimits)
HTTP_LIMITS = ("http_header_timeout_s", "http_idle_timeout_s", "http_body_idle_s",
               "http_max_connections", "http_max_connections_per_address",
               "http_max_event_streams", "http_write_timeout_s", "http_max_snapshot_serves",
               "http_snapshot_wait_s")
# The smallest job lanes were measured to save CPU on (3 peers, jobs of 1-64 ECHO tasks): below
# it none, and its end reaches non-members end_grace_s late (docs/benchmarks.md, "Session 40,
# helper c")
LANES_MIN_JOB_TASKS = 32
MAX_INLINE_OUTPUT_BYTES = 16384  # an event carries 4/3 of it, to every peer


def _check_inline(n: int) -> None:
    if not 0 <= n <= MAX_INLINE_OUTPUT_BYTES:
        raise ConfigError(f"inline_output_max_bytes: must be from 0 to "
                          f"{MAX_INLINE_OUTPUT_BYTES}, got {n}", field="inline_output_max_bytes")


@dataclass(frozen=True)
class PeerConfig:
    """Everything a peer needs to start; validated at construction. Each field is a setting
    declared once: its flag, environment variable and TOML key derive from it."""

    data_dir: Path = field(default_factory=default_data_dir, metadata=setting(
        "data directory (default: $XDG_DATA_HOME/banzai)"))
    http: str = field(default="127.0.0.1:8700", metadata=setting(
        "HOST:PORT of the web UI, API and gateway (default 127.0.0.1:8700; 0=any)"))
    allow_hosts: tuple[str, ...] = field(default=(), metadata=setting(
        "a name this peer's HTTP side is reached by, besides its bound address, localhost "
        "and the machine's name; requests with another Host are refused (repeatable)",
        flag="--allow-host"))
    public_gateway: bool = field(default=False, metadata=setting(
        "serve /ipfs/ reads without the token also when bound beyond loopback (on loopback "
        "they are always open)"))
    subdomain_hosts: tuple[str, ...] = field(default=("localhost",), metadata=setting(
        "a host whose subdomains CID.ipfs.HOST and KEY.ipns.HOST serve that content at / (the "
        "subdomain gateway: one origin per root); where anyone may read content, /ipfs/CID "
        "and /ipns/KEY on HOST redirect there (repeatable; default localhost, as Kubo; an "
        "empty value turns it off)", flag="--subdomain-host"))
    gateway_codec_conversion: bool = field(default=False, metadata=setting(
        "answer DAG-CBOR blocks as DAG-JSON and back when ?format= or Accept asks (as Kubo's "
        "Gateway.AllowCodecConversion; the gateway specs answer 406 Not Acceptable: IPIP-0524)"))
    tls_cert: Path | None = field(default=None, metadata=setting(
        "PEM certificate (chain) to serve HTTPS with; needs --tls-key"))
    tls_key: Path | None = field(default=None, metadata=setting(
        "PEM private key of --tls-cert"))
    runtime_dir: Path = field(default_factory=default_runtime_dir, metadata=setting(
        "where a running peer leaves peer-PID.json (its URL and token file) for the banzai "
        "CLI of the same user (default: $XDG_RUNTIME_DIR/banzai)"))
    gossip: str = field(default="127.0.0.1:0", metadata=setting(
        "HOST:PORT of the gossip socket (default 127.0.0.1:0)"))
    mdns_interfaces: tuple[str, ...] = field(default=(), metadata=setting(
        "address of an interface for mDNS (repeatable)", flag="--mdns-interface"))
    mdns: bool = field(default=True, metadata=setting(
        "do not announce or browse with mDNS (use --join)"))
    join: tuple[str, ...] = field(default=(), metadata=setting(
        "HOST:PORT of a static peer (repeatable)"))
    gossip_max_connections: int = field(default=128, metadata=setting(
        "gossip connections proven open at once (the least recently used is closed when "
        "another is proven; raise it for a mesh of more peers); addresses not yet reached "
        "(mDNS sightings, joins) have 32 more of their own and never close these "
        "(default 128)"))
    secret_file: Path | None = field(default=None, metadata=setting(
        "file holding the mesh secret, one per line: the first is served, all are accepted "
        "(a rotation); default: the data dir's mesh.secret, generated by the first peer"))
    join_token: str | None = field(default=None, metadata=setting(
        "join token printed by a peer of the mesh (banzai-peer --print-join); its secret is "
        "stored in the data dir. Prefer BANZAI_JOIN_TOKEN: other local users see flags"))
    store: str = field(default="embedded", metadata=setting(
        "content store backend", choices=("embedded", "kubo")))
    ipfs_api: str | None = field(default=None, metadata=setting(
        "Kubo RPC API URL, for --store kubo"))
    kubo_repo: Path | None = field(default=None, metadata=setting(
        "the repo (IPFS_PATH) of the Kubo node at --ipfs-api when this peer manages it: the "
        "peer writes the mesh's swarm key there (swarm.key) so that Kubo runs in the mesh's "
        "private swarm"))
    kubo_public_swarm: bool = field(default=False, metadata=setting(
        "let Kubo stay in the public IPFS network (no swarm key derived from the mesh secret); "
        "by default a Kubo-backed peer keeps its Kubo in the mesh's private swarm"))
    slots: int = field(default_factory=lambda: os.cpu_count() or 1, metadata=setting(
        "concurrent task slots (default: CPU count)"))
    log_level: str = field(default="INFO", metadata=setting("DEBUG, INFO, WARNING or ERROR"))
    mesh_name: str = field(default="banzai", metadata=setting(
        "name of the mesh; peers of other meshes are ignored"))
    peer_name: str | None = field(default=None, metadata=setting(
        "name of this peer in the web UI and CLI (default: HOSTNAME-ID)"))
    task_modules: tuple[str, ...] = field(default=(), metadata=setting(
        "extra Python module to import for tasks (repeatable)", flag="--task-module"))
    labels: tuple[str, ...] = field(default=(), metadata=setting(
        "a capability KEY=VALUE this peer announces (e.g. site=lab2); tasks that state "
        "\"requires\": {\"labels\": {KEY: VALUE}} run only on peers labelled so "
        "(repeatable)", flag="--label"))
    fetch_allow: tuple[str, ...] = field(default=(), metadata=setting(
        "CIDR that fetching tasks (FETCH_FESTVOX) may reach although it is loopback, "
        "private, link-local or otherwise not public, e.g. 127.0.0.1/32 (repeatable)"))
    task_timeout_s: float = field(default=3600.0, metadata=setting(
        "default per-task timeout in seconds"))
    worker_memory_mb: int = field(default_factory=default_worker_memory_mb, metadata=setting(
        "address-space limit (RLIMIT_AS) of each worker process in MiB; a task that needs "
        "more fails with MemoryError (default: half the machine's memory, at least 2048)"))
    tmpfs_free_min_mb: int = field(default=256, metadata=setting(
        "a python task's scratch goes on tmpfs (/dev/shm, which is RAM) only while it and the "
        "machine's available memory have this many MiB free; a run writing there is stopped "
        "(failed as storage, retried on disk) once either falls below half of it (default "
        "256; 0 = no floor)"))
    task_scratch_max_gb: float | None = field(default=None, metadata=setting(
        "bound on the files one task run writes in its work directory on disk, in GB (10^9 "
        "bytes); a run past it is stopped and fails (checked when the disk's use grew by as "
        "much; default: half the data dir's disk's free space at the peer's start; 0 = no "
        "bound)"))
    allow_shell: bool = field(default=False, metadata=setting(
        "run shell tasks (a workflow's commands, run as this peer's user) here; off by "
        "default, announced to the mesh"))
    allow_containers: bool = field(default=False, metadata=setting(
        "run container tasks here (with --container-runtime); off by default, announced "
        "with the images this peer holds"))
    container_runtime: str = field(default="podman", metadata=setting(
        "the container runtime's CLI (default podman)", choices=("podman", "docker")))
    container_network: bool = field(default=False, metadata=setting(
        "let container tasks that ask for it (\"network\": true) use the network; without "
        "it every container runs with --network none"))
    task_log_max_bytes: int = field(default=10 << 20, metadata=setting(
        "bound on the log kept of one task run (a shell or container task's STDOUT and "
        "STDERR: the rest is dropped with a note; every run's lines held and stored: its "
        "first and its last lines, a marker where lines were cut; default 10 MiB)"))
    task_secrets_file: Path | None = field(default=None, metadata=setting(
        "file of NAME=VALUE lines: the secrets workflows name in a task's env "
        "({\"secret\": \"NAME\"}); values never enter the log, the UI or cache keys"))
    partial_outputs: bool = field(default=True, metadata=setting(
        "do not publish per-item tasks' outputs as they grow (progressive answers: a partial "
        "output CID in the job view after each chunk, cached items first)"))
    warm_workers: bool = field(default=True, metadata=setting(
        "do not run the tasks' warm-ups (e.g. librosa's imports) once in the executor's "
        "forkserver; each worker then pays them on its first task"))
    max_attempts: int = field(default=3, metadata=setting(
        "attempts of a task chunk before it fails (default 3)"))
    lease_s: float = field(default=10.0, metadata=setting("claim lease in seconds"))
    restart_hold_s: float = field(default=RESTART_HOLD_S, metadata=setting(
        "after a restart on a data dir whose log holds unfinished work, claim nothing new "
        "for up to this many seconds: in each lanes job until this peer holds what a live "
        "member of that job holds of its lanes, in the others until it holds what a live "
        "peer holds of the mesh (the replayed log misses what the mesh did meanwhile; "
        f"claims made from it lose to the others' earlier ones; default {RESTART_HOLD_S:g}; "
        "0 = no hold)"))
    lanes: bool = field(default=True, metadata=setting(
        "do not use lanes (partial replication, docs/design/partial-replication.md): every "
        "peer then holds every job's task events. With lanes (the default since session 44; "
        "--lanes says so) a job's task events go to its members only (2 peers) while every "
        "live peer of the mesh announces lanes-v1, and the others keep its submission and "
        "end; while a live peer lacks lanes (an earlier release's, or --no-lanes) new jobs "
        "are replicated in full",
        both_forms=True))
    lanes_min_job_tasks: int = field(default=LANES_MIN_JOB_TASKS, metadata=setting(
        "with lanes on, a job of fewer tasks than this (a per-item task counts as more: its "
        "items are listed only at its split) is held in full by every peer, as without "
        "lanes: lanes save such a job no CPU, and its end reaches the other peers later "
        f"(default {LANES_MIN_JOB_TASKS}; 0: every job in lanes)"))
    max_body_bytes: int = field(default=1_000_000, metadata=setting(
        "largest API request body, e.g. a pipeline, in bytes (default 1000000)"))
    max_input_entries: int = field(default=MAX_INPUT_ENTRIES, metadata=setting(
        "most files and directories a task's input may hold to be split per item or merged "
        "here (a split names every item: ~670 bytes an item while it is made); past it the "
        f"task fails naming its input and this bound (default {MAX_INPUT_ENTRIES})"))
    max_materialize_entries: int = field(default=MAX_MATERIALIZE_ENTRIES, metadata=setting(
        "most files and directories a task's input (or one item of it) may hold to be written "
        "to its scratch directory, an inode each (tmpfs memory); past it the run fails naming "
        f"the input and this bound (default {MAX_MATERIALIZE_ENTRIES})"))
    max_tasks_per_job: int = field(default=1000, metadata=setting(
        "most tasks in one submitted pipeline (default 1000)"))
    max_workflow_bytes: int = field(default=2_000_000, metadata=setting(
        "largest checked pipeline as stored in the event log, in bytes (default 2000000)"))
    submit_acks: int = field(default=1, metadata=setting(
        "live peers that must hold a new job before POST /api/jobs returns (default 1)"))
    ack_timeout_s: float = field(default=5.0, metadata=setting(
        "longest wait for --submit-acks peers, in seconds (default 5)"))
    max_upload_bytes: int = field(default=4 * 1024**3, metadata=setting(
        "largest upload to /api/add or /api/v0/add, in bytes (default 4 GiB)"))
    http_header_timeout_s: float = field(default=10.0, metadata=setting(
        "a request's headers must arrive within this many seconds of the HTTP connection's "
        "opening (on a kept-alive connection: of their first byte), else it is closed "
        "(default 10)"))
    http_idle_timeout_s: float = field(default=60.0, metadata=setting(
        "a kept-alive HTTP connection that sends no request for this many seconds is closed "
        "(default 60)"))
    http_body_idle_s: float = field(default=30.0, metadata=setting(
        "a request body from which no byte arrives for this many seconds is answered 408; "
        "an upload that keeps progressing is never cut (default 30)"))
    http_write_timeout_s: float = field(default=60.0, metadata=setting(
        "an HTTP connection whose client reads none of a response for this many seconds "
        "(the peer's send buffer stays full) is closed; a download that keeps progressing is "
        "never cut (default 60)"))
    http_max_connections: int = field(default=1024, metadata=setting(
        "open HTTP connections at most; one more is closed at once (default 1024)"))
    http_max_connections_per_address: int = field(default=128, metadata=setting(
        "open HTTP connections from one remote address at most, loopback included (a reverse "
        "proxy on this machine is one address: raise it there); one more is closed at once "
        "(default 128)"))
    http_max_event_streams: int = field(default=64, metadata=setting(
        "concurrent /api/events subscribers (the web UI holds one per open tab); one more is "
        "answered 503 (default 64)"))
    http_max_snapshot_serves: int = field(default=2, metadata=setting(
        "concurrent GET /api/snapshot serves (a peer behind the compaction horizon catching "
        "up, a second member's digest), each reading the log in a thread for seconds on a big "
        "log; one more waits --http-snapshot-wait-s for a turn (default 2)"))
    http_snapshot_wait_s: float = field(default=10.0, metadata=setting(
        "a snapshot request past --http-max-snapshot-serves waits this many seconds for a "
        "turn, then is answered 503; the asking peer retries later (default 10)"))
    max_clock_drift_s: float = field(default=300.0, metadata=setting(
        "how far ahead of this machine's clock another peer's event may be stamped, in "
        "seconds; later ones are refused and counted in /api/health (default 300)"))
    inline_output_max_bytes: int = field(default=1024, metadata=setting(
        "a task output (with its run record) of at most this many bytes rides inside its "
        "completion event, durable with the log, kept by every peer, never fetched; 0 = "
        "off (default 1024)"))
    replicas: int = field(default=2, metadata=setting(
        "peers that pin each output: its producer and N-1 others (default 2; 1 = off)"))
    keep_outputs_days: float | None = field(default=None, metadata=setting(
        "unpin task outputs of jobs that finished more than this many days ago (default: "
        "keep them); explicit pins and what live jobs use are always kept"))
    store_max_gb: float | None = field(default=None, metadata=setting(
        "bound on the store in GB (10^9 bytes): above it, outputs of finished jobs are "
        "unpinned, oldest job first, and collected (default: no bound)"))
    keep_jobs_days: float | None = field(default=None, metadata=setting(
        "delete the records of jobs that finished more than this many days ago, on every "
        "peer (default: keep them; `banzai jobs rm` deletes one)"))
    compact_recent_tasks: int = field(default=1000, metadata=setting(
        "finished jobs stay in memory, newest first, while their tasks add up to at most "
        "this; older ones become one compact record in the log's job index, read on demand "
        "(default 1000)"))
    compact_horizon_days: float = field(default=7.0, metadata=setting(
        "a finished job's events leave the log once every live peer holds them, or this many "
        "days after it ended even if one does not (it then catches up from a snapshot; "
        "default 7)"))
    compact_provider_sets_max: int = field(default=4096, metadata=setting(
        "provider sets (who holds a CID) changed in memory by events of no job (PROVIDE, "
        "UNPROVIDE: uploads, replicas, garbage collection) kept there; past this many, the "
        "oldest half go to the job index, read back on demand (default 4096)"))
    compact_read_back_entries: int = field(default=4096, metadata=setting(
        "entries of compacted jobs' cache (cached outputs, items, providers) read back from "
        "the job index that memory keeps, per table (5 tables, about 0.5 KB each); past "
        "this, the first read goes first and is read again when asked (default 4096)"))
    log_vacuum_min_free_mb: float = field(default=64.0, metadata=setting(
        "the log's SQLite file gives the pages compaction frees back to the disk, a few MB "
        "after each pass; a file written by an earlier release cannot until it is rewritten "
        "once (VACUUM), at a start where its free pages exceed this many MiB and its disk "
        "has twice its size free (default 64)"))
    gc_interval_s: float = field(default=600.0, metadata=setting(
        "seconds between storage cycles: retention, garbage collection (default 600; 0 = "
        "only on demand, `banzai gc`)"))
    gc_grace_s: float = field(default=300.0, metadata=setting(
        "blocks written less than this many seconds ago are never collected, so an add in "
        "progress is safe (default 300)"))
    malloc_trim_interval_s: float = field(default=30.0, metadata=setting(
        "after a storage cycle (--gc-interval-s), give the memory the C allocator holds free "
        "back to the system (glibc's malloc_trim), at most once per this many seconds "
        "(default 30; 0 = never; nothing off glibc)"))
    gc_young_allocs: int = field(default=50_000, metadata=setting(
        "Python's cyclic garbage collector runs a young collection after this many net "
        "allocations of container objects (middle and old ones proportionally less often, "
        "and a sweep after each storage cycle: peer.gcpace); at Python's own 700, receiving "
        "a large job's tasks cost 1.7x as much (default 50000; 0 = Python's own "
        "thresholds; at most 100000000)"))

    def __post_init__(self) -> None:
        parse_hostport(self.http, "http")
        parse_hostport(self.gossip, "gossip")
        for j in self.join:
            parse_hostport(j, "join")
            try:
                parse_addr(j)  # the mesh's rule too (a numeric host that is no IP is refused)
            except ValueError as e:
                raise ConfigError(f"join: {e}", field="join") from None
        for spec in SPECS:
            value = getattr(self, spec.name)
            if spec.setting.choices and value not in spec.setting.choices:
                raise ConfigError(f"{spec.name}: expected {' or '.join(spec.setting.choices)}, "
                                  f"got {value!r}", field=spec.name)
        self._check_store()
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("tls: --tls-cert and --tls-key go together", field="tls_cert")
        self._check_bounds()
        self._check_hold()
        self._check_http()
        self._check_lifecycle()
        self.label_map()  # ConfigError naming a bad label
        for cidr in self.fetch_allow:
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError:
                raise ConfigError(f"fetch_allow: not an address or CIDR: {cidr!r}",
                                  field="fetch_allow") from None

    def label_map(self) -> dict[str, str]:
        """The `--label` settings as name -> value (ConfigError on a bad one)."""
        out: dict[str, str] = {}
        for item in self.labels:
            key, sep, value = item.partition("=")
            try:
                if not sep:
                    raise SpecError(f"expected KEY=VALUE, got {item!r}")
                check_label(key, value, "labels")
            except SpecError as e:
                raise ConfigError(f"labels: {e.message.removeprefix('labels: ')}",
                                  field="labels") from None
            out[key] = value
        return out

    def _check_store(self) -> None:
        if self.store == "kubo" and not self.ipfs_api:
            raise ConfigError("store kubo needs --ipfs-api URL", field="ipfs_api")
        if self.store == "kubo" and self.ipfs_api:
            from peer.ipfs.kubo import parse_api_url
            parse_api_url(self.ipfs_api)

    def _check_hold(self) -> None:
        if not (self.restart_hold_s >= 0 and math.isfinite(self.restart_hold_s)):  # (NaN too)
            raise ConfigError(f"restart_hold_s (--restart-hold-s): must be a number of seconds, "
                              f"0 or more (0: no hold), got {self.restart_hold_s}",
                              field="restart_hold_s")

    def _check_bounds(self) -> None:
        if self.replicas < 1:
            raise ConfigError(f"replicas: must be at least 1, got {self.replicas}",
                              field="replicas")
        _check_inline(self.inline_output_max_bytes)
        if self.slots < 1:
            raise ConfigError(f"slots: must be at least 1, got {self.slots}", field="slots")
        if self.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ConfigError(f"log_level: unknown level {self.log_level!r}", field="log_level")
        for name, least in (("max_tasks_per_job", 1), ("max_workflow_bytes", 1),
                            ("max_body_bytes", 1), ("lanes_min_job_tasks", 0),
                            ("max_input_entries", 1), ("max_materialize_entries", 1),
                            ("gossip_max_connections", 1)):
            if getattr(self, name) < least:
                raise ConfigError(f"{name}: must be at least {least}, got "
                                  f"{getattr(self, name)}", field=name)
        if self.max_attempts < 1:
            raise ConfigError("max_attempts: must be at least 1", field="max_attempts")
        if not self.max_clock_drift_s >= 0:
            raise ConfigError(f"max_clock_drift_s: must be >= 0, got {self.max_clock_drift_s}",
                              field="max_clock_drift_s")
        if self.lease_s <= 0:
            raise ConfigError(f"lease_s: must be positive, got {self.lease_s}", field="lease_s")
        if self.task_timeout_s <= 0:
            raise ConfigError(f"task_timeout_s: must be positive, got {self.task_timeout_s}",
                              field="task_timeout_s")
        if self.task_log_max_bytes < 1024:
            raise ConfigError(f"task_log_max_bytes: must be at least 1024, got "
                              f"{self.task_log_max_bytes}", field="task_log_max_bytes")
        if self.worker_memory_mb <= 0:
            raise ConfigError(f"worker_memory_mb: must be positive, got {self.worker_memory_mb}",
                              field="worker_memory_mb")

    def _check_http(self) -> None:
        for name in HTTP_LIMITS:  # as peer.http.limits.HttpLimits checks them
            if not getattr(self, name) > 0:  # (NaN too)
                raise ConfigError(f"{name}: must be positive, got {getattr(self, name)}",
                                  field=name)

    def _check_lifecycle(self) -> None:
        for name in ("keep_outputs_days", "store_max_gb", "keep_jobs_days", "gc_interval_s",
                     "gc_grace_s", "compact_recent_tasks", "compact_provider_sets_max",
                     "log_vacuum_min_free_mb", "malloc_trim_interval_s", "gc_young_allocs",
                     "tmpfs_free_min_mb", "task_scratch_max_gb"):
            value = getattr(self, name)
            if value is not None and not value >= 0:  # (NaN too)
                raise ConfigError(f"{name}: must not be negative, got {value}", field=name)
        for name, unit in FINITE.items():
            value = getattr(self, name)
            if value is not None and not math.isfinite(value):
                raise ConfigError(f"{name}: must be a number of {unit}, got {value}", field=name)
        if self.gc_young_allocs > MAX_YOUNG_ALLOCS:
            raise ConfigError(f"gc_young_allocs: must be at most {MAX_YOUNG_ALLOCS}, got "
                              f"{self.gc_young_allocs}", field="gc_young_allocs")
        if self.compact_read_back_entries < 1:
            raise ConfigError("compact_read_back_entries: must be at least 1, got "
                              f"{self.compact_read_back_entries}",
                              field="compact_read_back_entries")
        if not self.compact_horizon_days > 0:
            raise ConfigError("compact_horizon_days: must be positive, got "
                              f"{self.compact_horizon_days}", field="compact_horizon_days")

    @property
    def http_addr(self) -> tuple[str, int]:
        return parse_hostport(self.http, "http")

    @property
    def task_secrets(self) -> dict[str, str]:
        """The secrets of --task-secrets-file (NAME=VALUE lines; # comments, blank lines)."""
        if self.task_secrets_file is None:
            return {}
        try:
            text = self.task_secrets_file.read_text("utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"task_secrets_file: cannot read {self.task_secrets_file}: {e}",
                              field="task_secrets_file") from None
        out: dict[str, str] = {}
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            name, sep, value = line.partition("=")
            if not sep or not name.strip():
                raise ConfigError(f"task_secrets_file: line {n} is not NAME=VALUE",
                                  field="task_secrets_file")
            out[name.strip()] = value
        return out

    @property
    def secret(self) -> bytes | None:
        if self.secret_file is None:
            return None
        try:
            return self.secret_file.read_bytes().strip()
        except OSError as e:
            raise ConfigError(f"secret_file: cannot read {self.secret_file}: {e.strerror}",
                              field="secret_file") from None


@dataclass(frozen=True)
class SettingSpec:
    """One setting as the user sees it, derived from a PeerConfig field."""

    name: str  # the field, and the TOML key (`-` may stand for `_`)
    kind: type  # str, int, float, bool, Path or tuple (of str)
    default: Any  # dataclasses.MISSING for a computed default
    setting: Setting

    @property
    def env(self) -> str:
        return "BANZAI_" + self.name.upper()

    @property
    def flag(self) -> str:
        if self.setting.flag:
            return self.setting.flag
        if self.kind is bool:
            return self.bool_flag(self.default is not True)
        return "--" + self.name.replace("_", "-")

    def bool_flag(self, on: bool) -> str:
        """A boolean setting's flag that turns it on (`--NAME`) or off (`--no-NAME`)."""
        dashed = self.name.replace("_", "-")
        return f"--{dashed}" if on else f"--no-{dashed}"

    def parse(self, value: Any) -> Any:
        """A TOML, environment or flag value as the field's type; ConfigError naming the
        field if it is not one, never a silent coercion (a TOML `slots = 2.9`, `mdns = "on"`
        and `heartbeat_s = nan` were taken as 2, False and nan before)."""
        got = _PARSERS[self.kind](value)
        if got is _BAD:
            raise ConfigError(f"{self.name}: invalid value {value!r} (expected "
                              f"{_EXPECTED[self.kind]})", field=self.name)
        return got


_BAD: Any = object()
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})


def _parse_int(v: Any) -> Any:
    if isinstance(v, str):
        try:
            return int(v.strip())
        except ValueError:
            return _BAD
    if isinstance(v, float) and v.is_integer():
        return int(v)
    return v if type(v) is int else _BAD


def _parse_float(v: Any) -> Any:
    if isinstance(v, str):
        try:
            v = float(v.strip())
        except ValueError:
            return _BAD
    if type(v) not in (int, float) or math.isnan(v):  # (inf: e.g. no timeout, if allowed)
        return _BAD
    return float(v)


def _parse_bool(v: Any) -> Any:
    if isinstance(v, bool):
        return v
    if type(v) is int and v in (0, 1):  # TOML `mdns = 0`
        return bool(v)
    word = v.strip().lower() if isinstance(v, str) else None
    return True if word in _TRUE else False if word in _FALSE else _BAD


def _parse_tuple(v: Any) -> Any:
    if isinstance(v, str):
        return tuple(x.strip() for x in v.split(",") if x.strip())
    if isinstance(v, (list, tuple)) and all(isinstance(x, str) for x in v):
        return tuple(v)
    return _BAD


_PARSERS: dict[type, Callable[[Any], Any]] = {
    str: lambda v: v if isinstance(v, str) else _BAD,
    int: _parse_int,
    float: _parse_float,
    bool: _parse_bool,
    Path: lambda v: Path(v).expanduser() if isinstance(v, (str, Path)) else _BAD,
    tuple: _parse_tuple,
}
_EXPECTED = {str: "a string", int: "a whole number", float: "a number",
             bool: "true or false (1/0, yes/no, on/off)", Path: "a path",
             tuple: "a list of strings, or one string of comma-separated values"}


def _kind(hint: Any) -> type:
    """The type a field's values parse to: `X | None` is X, `tuple[str, ...]` is tuple."""
    args = [a for a in get_args(hint) if a is not type(None)]
    if get_origin(hint) in (UnionType, Union) and len(args) == 1:
        hint = args[0]
    kind = get_origin(hint) or hint
    if kind not in (str, int, float, bool, Path, tuple):
        raise TypeError(f"PeerConfig: no parser for {hint!r}")
    return cast(type, kind)


def _specs() -> tuple[SettingSpec, ...]:
    hints = get_type_hints(PeerConfig)
    return tuple(SettingSpec(f.name, _kind(hints[f.name]), f.default, f.metadata["setting"])
                 for f in fields(PeerConfig))


SPECS = _specs()


def load(flags: Mapping[str, Any], env: Mapping[str, str] | None = None,
         toml_path: Path | None = None) -> PeerConfig:
    """Merge the sources into a PeerConfig."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    path = toml_path or (Path(env["BANZAI_CONFIG"]) if env.get("BANZAI_CONFIG") else None)
    by_name = {s.name: s for s in SPECS}
    if path is not None:
        for k, v in _read_toml(path).items():
            key = k.replace("-", "_")
            if key not in by_name:
                raise ConfigError(f"config file {path}: unknown setting {k!r}", field=k)
            values[key] = by_name[key].parse(v)
    for spec in SPECS:
        if spec.env in env:
            values[spec.name] = spec.parse(env[spec.env])
    for name, v in flags.items():
        if v is not None and v != [] and v != ():
            values[name] = by_name[name].parse(v)
    return PeerConfig(**values)


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_bytes().decode("utf-8"))
    except OSError as e:
        raise ConfigError(f"config file {path}: {e.strerror}", field="config") from None
    except UnicodeDecodeError as e:  # (TOML is UTF-8; read_text took the locale's codec)
        raise ConfigError(f"config file {path}: not UTF-8 text (byte {e.start}: "
                          f"{e.object[e.start:e.start + 1]!r}); TOML files are UTF-8",
                          field="config") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {path}: {e}", field="config") from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="banzai-peer",
        description="Run a Banzai peer: a worker of the brokerless mesh with an IPFS gateway "
        "and the web UI. Every flag also reads BANZAI_<NAME> from the environment.")
    p.add_argument("--config", type=Path, help="TOML file with settings (also BANZAI_CONFIG)")
    for spec in SPECS:
        opts: dict[str, Any] = {"dest": spec.name, "help": spec.setting.help}
        if spec.kind is tuple:
            opts |= {"action": "append", "default": []}
        elif spec.kind is bool:
            opts |= {"action": "store_const", "const": spec.default is not True, "default": None}
            if spec.setting.both_forms:  # its form that sets the default too, unlisted
                p.add_argument(spec.bool_flag(spec.default is True), dest=spec.name,
                               action="store_const", const=spec.default is True,
                               help=argparse.SUPPRESS)
        elif spec.kind in (int, float):
            opts["type"] = spec.kind
        if spec.setting.choices:
            opts["choices"] = list(spec.setting.choices)
        p.add_argument(spec.flag, **opts)
    p.add_argument("--demo", action="store_true", help="build a corpus and run the seed pipeline")
    p.add_argument("--print-join", action="store_true",
                   help="print the command that joins another peer to this mesh, and exit")
    p.add_argument("--print-login", action="store_true",
                   help="print the login URL of the peer of --data-dir and exit")
    return p


def from_args(argv: Sequence[str] | None = None) -> tuple[PeerConfig, argparse.Namespace]:
    ns = build_parser().parse_args(argv)
    flags = {k: v for k, v in vars(ns).items()
             if k not in ("config", "demo", "print_join", "print_login")}
    return load(flags, toml_path=ns.config), ns


__all__ = ["SPECS", "PeerConfig", "Setting", "SettingSpec", "build_parser",
           "default_runtime_dir", "default_worker_memory_mb", "from_args", "load",
           "parse_hostport", "replace", "setting"]
