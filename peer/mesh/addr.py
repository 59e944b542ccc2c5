"""Mesh addresses "host:port" (IPv6 as "[::1]:port"): parsing and formatting shared by the
transport, the wire codec, membership and discovery. Pure functions, safe from any thread."""

from __future__ import annotations

import functools
import ipaddress
import re

WILDCARD_HOSTS = ("0.0.0.0", "*", "::")  # bind hosts that are no address to advertise
_LABEL = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")


@functools.lru_cache(maxsize=4096)
def parse_addr(addr: str) -> tuple[str, int]:
    """Split "host:port" (IPv6 as "[::1]:port"); ValueError if malformed."""
    host, sep, port_s = addr.rpartition(":")
    if not sep or not host or not port_s.isdigit():
        raise ValueError(f"address must be HOST:PORT, got {addr!r}")
    port = int(port_s)
    if not 0 <= port <= 65535:
        raise ValueError(f"port out of range in {addr!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not _valid_host(host):
        raise ValueError(f"bad host in {addr!r}: not an IP address or a DNS name")
    return host, port


def _valid_host(host: str) -> bool:
    """An IP literal (IPv6 with a zone too), a wildcard, or a DNS name of letters, digits,
    '-' and '_' labels: what libzmq's tcp:// endpoints take (a frame's address is checked
    here, before any socket sees it)."""
    if host in WILDCARD_HOSTS:
        return True
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        pass
    name = host[:-1] if host.endswith(".") else host
    return 0 < len(name) <= 253 and all(_LABEL.fullmatch(x) for x in name.split("."))


def format_addr(host: str, port: int) -> str:
    """The inverse of `parse_addr`: "host:port", with an IPv6 host in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


__all__ = ["WILDCARD_HOSTS", "format_addr", "parse_addr"]
