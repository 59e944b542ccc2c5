"""Mesh addresses "host:port" (IPv6 as "[::1]:port"): parsing and formatting shared by the
transport, the wire codec, membership and discovery. Pure functions, safe from any thread."""

from __future__ import annotations

import functools
import ipaddress
import re

WILDCARD_HOSTS = ("0.0.0.0", "*", "::")  # bind hosts that are no address to advertise
_LABEL = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")
_NUMERIC = re.compile(r"[0-9]+|0[xX][0-9A-Fa-f]*")  # a label inet_aton reads as a number


@functools.lru_cache(maxsize=4096)
def parse_addr(addr: str) -> tuple[str, int]:
    """Split "host:port" (IPv6 as "[::1]:port") into its canonical parts: an IP in
    ipaddress's form, a host name lowercased (one socket, one spelling: every per-address
    bound is keyed on it); ValueError if malformed, if the port has leading zeros, or if the
    host looks numeric and is no IP (`127.1`, `2130706433`: libzmq reads them as IPs)."""
    host, sep, port_s = addr.rpartition(":")
    if not sep or not host or not port_s.isdigit():
        raise ValueError(f"address must be HOST:PORT, got {addr!r}")
    if len(port_s) > 1 and port_s.startswith("0"):
        raise ValueError(f"port with leading zeros in {addr!r}")
    port = int(port_s)
    if not 0 <= port <= 65535:
        raise ValueError(f"port out of range in {addr!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    canon = _canonical_host(host)
    if canon is None:
        raise ValueError(f"bad host in {addr!r}: not an IP address in its usual form nor a "
                         "DNS name (whose last label is not numeric)")
    return canon, port


def canonical_addr(addr: str) -> str:
    """`addr` in its one spelling ("host:port" of `parse_addr`'s parts); ValueError if
    malformed."""
    return format_addr(*parse_addr(addr))


def _canonical_host(host: str) -> str | None:
    """An IP literal (IPv6 with a zone too) in ipaddress's form, a wildcard, or a DNS name
    of letters, digits, '-' and '_' labels, lowercased: what libzmq's tcp:// endpoints take
    (a frame's address is checked here, before any socket sees it). None if it is none of
    them, or a name whose last label is numeric (no top-level domain is: getaddrinfo reads
    `127.1`, `2130706433` or `0x7f000001` as an IPv4 address)."""
    if host in WILDCARD_HOSTS:
        return host
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    name = host[:-1] if host.endswith(".") else host
    if not (0 < len(name) <= 253 and all(_LABEL.fullmatch(x) for x in name.split("."))):
        return None
    if _NUMERIC.fullmatch(name.rsplit(".", 1)[-1]):
        return None
    return name.lower()  # (a trailing dot names the same host)


def format_addr(host: str, port: int) -> str:
    """The inverse of `parse_addr`: "host:port", with an IPv6 host in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


__all__ = ["WILDCARD_HOSTS", "canonical_addr", "format_addr", "parse_addr"]
