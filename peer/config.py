"""Peer settings from flags, BANZAI_* environment variables and a TOML file.

Precedence: flag > environment > TOML file > default. Invalid values raise ConfigError.
"""

from __future__ import annotations

import argparse
import os
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from peer.errors import ConfigError


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "banzai"


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


@dataclass(frozen=True)
class PeerConfig:
    """Everything a peer needs to start; validated at construction."""

    data_dir: Path = field(default_factory=default_data_dir)
    http: str = "127.0.0.1:8700"
    gossip: str = "127.0.0.1:0"
    mdns_interfaces: tuple[str, ...] = ()
    mdns: bool = True
    join: tuple[str, ...] = ()
    secret_file: Path | None = None
    store: str = "embedded"
    ipfs_api: str | None = None
    slots: int = field(default_factory=lambda: os.cpu_count() or 1)
    log_level: str = "INFO"
    mesh_name: str = "banzai"
    peer_name: str | None = None
    task_modules: tuple[str, ...] = ()
    task_timeout_s: float = 3600.0
    worker_memory_mb: int | None = None
    max_attempts: int = 3
    lease_s: float = 10.0
    max_body_bytes: int = 1_000_000
    submit_acks: int = 1  # live peers that must hold a submission before it is acknowledged
    ack_timeout_s: float = 5.0
    max_upload_bytes: int = 4 * 1024**3
    replicas: int = 2  # peers that pin each output: the producer and replicas-1 others

    def __post_init__(self) -> None:
        parse_hostport(self.http, "http")
        parse_hostport(self.gossip, "gossip")
        for j in self.join:
            parse_hostport(j, "join")
        if self.store not in ("embedded", "kubo"):
            raise ConfigError(f"store: expected embedded or kubo, got {self.store!r}",
                              field="store")
        if self.store == "kubo" and not self.ipfs_api:
            raise ConfigError("store kubo needs --ipfs-api URL", field="ipfs_api")
        if self.store == "kubo" and self.ipfs_api:
            from peer.ipfs.kubo import parse_api_url
            parse_api_url(self.ipfs_api)
        if self.replicas < 1:
            raise ConfigError(f"replicas: must be at least 1, got {self.replicas}",
                              field="replicas")
        if self.slots < 1:
            raise ConfigError(f"slots: must be at least 1, got {self.slots}", field="slots")
        if self.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ConfigError(f"log_level: unknown level {self.log_level!r}", field="log_level")
        if self.max_attempts < 1:
            raise ConfigError("max_attempts: must be at least 1", field="max_attempts")
        if self.lease_s <= 0:
            raise ConfigError(f"lease_s: must be positive, got {self.lease_s}", field="lease_s")
        if self.task_timeout_s <= 0:
            raise ConfigError(f"task_timeout_s: must be positive, got {self.task_timeout_s}",
                              field="task_timeout_s")
        if self.worker_memory_mb is not None and self.worker_memory_mb <= 0:
            raise ConfigError(f"worker_memory_mb: must be positive, got {self.worker_memory_mb}",
                              field="worker_memory_mb")

    @property
    def http_addr(self) -> tuple[str, int]:
        return parse_hostport(self.http, "http")

    @property
    def secret(self) -> bytes | None:
        if self.secret_file is None:
            return None
        try:
            return self.secret_file.read_bytes().strip()
        except OSError as e:
            raise ConfigError(f"secret_file: cannot read {self.secret_file}: {e.strerror}",
                              field="secret_file") from None


_LISTS = {"mdns_interfaces", "join", "task_modules"}
_ENV_NAMES = {f.name: "BANZAI_" + f.name.upper() for f in fields(PeerConfig)}


def _coerce(name: str, value: Any) -> Any:
    """Convert a TOML/env/flag value to the field's type."""
    try:
        if name in _LISTS:
            if isinstance(value, str):
                return tuple(v.strip() for v in value.split(",") if v.strip())
            return tuple(str(v) for v in value)
        if name in ("data_dir", "secret_file"):
            return Path(value).expanduser()
        if name in ("slots", "max_attempts", "max_body_bytes", "max_upload_bytes",
                    "worker_memory_mb", "submit_acks", "replicas"):
            return int(value)
        if name in ("task_timeout_s", "lease_s", "ack_timeout_s"):
            return float(value)
        if name == "mdns":
            return value if isinstance(value, bool) else str(value).lower() in ("1", "true", "yes")
        return str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name}: invalid value {value!r}", field=name) from None


def load(flags: Mapping[str, Any], env: Mapping[str, str] | None = None,
         toml_path: Path | None = None) -> PeerConfig:
    """Merge the sources into a PeerConfig."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    path = toml_path or (Path(env["BANZAI_CONFIG"]) if env.get("BANZAI_CONFIG") else None)
    if path is not None:
        try:
            data = tomllib.loads(path.read_text())
        except OSError as e:
            raise ConfigError(f"config file {path}: {e.strerror}", field="config") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"config file {path}: {e}", field="config") from None
        known = {f.name for f in fields(PeerConfig)}
        for k, v in data.items():
            key = k.replace("-", "_")
            if key not in known:
                raise ConfigError(f"config file {path}: unknown setting {k!r}", field=k)
            values[key] = _coerce(key, v)
    for name, var in _ENV_NAMES.items():
        if var in env:
            values[name] = _coerce(name, env[var])
    for name, v in flags.items():
        if v is not None and v != [] and v != ():
            values[name] = _coerce(name, v)
    return PeerConfig(**values)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="banzai-peer",
        description="Run a Banzai peer: a worker of the brokerless mesh with an IPFS gateway "
        "and the web UI. Every flag also reads BANZAI_<NAME> from the environment.")
    a = p.add_argument
    a("--config", type=Path, help="TOML file with settings (also BANZAI_CONFIG)")
    a("--data-dir", help="data directory (default: $XDG_DATA_HOME/banzai)")
    a("--http", help="HOST:PORT of the web UI, API and gateway (default 127.0.0.1:8700; 0=any)")
    a("--gossip", help="HOST:PORT of the gossip socket (default 127.0.0.1:0)")
    a("--mdns-interface", dest="mdns_interfaces", action="append", default=[],
      help="address of an interface for mDNS (repeatable)")
    a("--no-mdns", dest="mdns", action="store_const", const=False, default=None,
      help="do not announce or browse with mDNS (use --join)")
    a("--join", action="append", default=[], help="HOST:PORT of a static peer (repeatable)")
    a("--secret-file", help="file holding the mesh secret (authenticates gossip frames)")
    a("--store", choices=["embedded", "kubo"], help="content store backend")
    a("--ipfs-api", help="Kubo RPC API URL, for --store kubo")
    a("--slots", type=int, help="concurrent task slots (default: CPU count)")
    a("--log-level", help="DEBUG, INFO, WARNING or ERROR")
    a("--mesh-name", help="name of the mesh; peers of other meshes are ignored")
    a("--task-module", dest="task_modules", action="append", default=[],
      help="extra Python module to import for tasks (repeatable)")
    a("--task-timeout-s", type=float, help="default per-task timeout in seconds")
    a("--worker-memory-mb", type=int, help="address-space limit of each worker process")
    a("--lease-s", type=float, help="claim lease in seconds")
    a("--submit-acks", type=int,
      help="live peers that must hold a new job before POST /api/jobs returns (default 1)")
    a("--replicas", type=int,
      help="peers that pin each output: its producer and N-1 others (default 2; 1 = off)")
    a("--demo", action="store_true", help="build a corpus and run the seed pipeline")
    return p


def from_args(argv: Sequence[str] | None = None) -> tuple[PeerConfig, argparse.Namespace]:
    ns = build_parser().parse_args(argv)
    flags = {k: v for k, v in vars(ns).items() if k not in ("config", "demo")}
    return load(flags, toml_path=ns.config), ns


__all__ = ["PeerConfig", "build_parser", "from_args", "load", "parse_hostport", "replace"]
