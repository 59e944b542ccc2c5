"""The fetch address policy and HTTP(S) GETs under it: the guard against server-side request
forgery. Synchronous, no shared state. A name is resolved once, each address is checked and
the connection goes to a checked address (no DNS rebinding); every redirect is checked alike.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import ssl
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network
from typing import IO

from peer.errors import BanzaiError

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network
Resolver = Callable[[str, int], Sequence[str]]  # (host, port) -> IP address strings

SCHEMES = ("http", "https")
REDIRECTS = (301, 302, 303, 307, 308)
MAX_REDIRECTS = 5
# Instance metadata services (AWS, ECS task role, GCP/Azure share 169.254.169.254; AWS IPv6;
# Alibaba; Oracle): named apart so the error says what was at stake.
METADATA = frozenset(ip_address(a) for a in (
    "169.254.169.254", "169.254.170.2", "fd00:ec2::254", "100.100.100.200", "192.0.0.192"))
NAT64 = ip_network("64:ff9b::/96")


class PolicyError(BanzaiError):
    """A URL or address a fetch may not use (scheme, non-public address, redirects)."""


def system_resolver(host: str, port: int) -> list[str]:
    """The addresses of `host` from the system resolver (getaddrinfo), in its order."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    return [str(info[4][0]) for info in infos]


def _embedded_v4(addr: IPAddress) -> tuple[IPv4Address | None, bool]:
    """The IPv4 address an IPv6 address carries, and whether it stands for it alone
    (IPv4-mapped, NAT64) rather than besides its own IPv6 route (6to4)."""
    if not isinstance(addr, IPv6Address):
        return None, False
    if addr.ipv4_mapped is not None:
        return addr.ipv4_mapped, True
    if addr in NAT64:
        return IPv4Address(int(addr) & 0xFFFFFFFF), True
    return addr.sixtofour, False


def classify(addr: IPAddress) -> str | None:
    """Why `addr` is not a public address (e.g. "loopback"), or None if it is one."""
    checks = (
        (addr in METADATA, "cloud metadata"), (addr.is_unspecified, "unspecified"),
        (addr.is_loopback, "loopback"), (addr.is_link_local, "link-local"),
        (addr.is_multicast, "multicast"), (addr.is_private, "private"),
        (addr.is_reserved, "reserved"),
        (isinstance(addr, IPv6Address) and addr.is_site_local, "site-local"),
        (not addr.is_global, "not globally routable"))
    return next((why for hit, why in checks if hit), None)


@dataclass(frozen=True)
class AddressPolicy:
    """Which addresses a fetch may connect to: public ones, plus those in `allow`."""

    allow: tuple[IPNetwork, ...] = ()

    @classmethod
    def from_cidrs(cls, cidrs: Iterable[str]) -> AddressPolicy:
        """The policy of a peer's --fetch-allow values; PolicyError for one that is no CIDR."""
        nets: list[IPNetwork] = []
        for c in cidrs:
            try:
                nets.append(ip_network(c, strict=False))
            except ValueError:
                raise PolicyError(f"--fetch-allow: not an address or CIDR: {c!r}",
                                  field="fetch_allow") from None
        return cls(tuple(nets))

    def refusal(self, addr: IPAddress) -> str | None:
        """None if a fetch may connect to `addr`, else the reason it may not."""
        inner, alone = _embedded_v4(addr)
        candidates = [a for a in (addr, inner) if a is not None]
        if any(a in net for a in candidates for net in self.allow):
            return None
        # an IPv4-mapped or NAT64 address is its IPv4 address; 6to4 must pass on both
        for a in ([inner] if alone and inner is not None else candidates):
            why = classify(a)
            if why is not None:
                return why if a is addr else f"{why}, embedded {a}"
        return None

    def addresses(self, host: str, port: int, resolver: Resolver) -> list[str]:
        """The addresses of `host` this policy allows, in resolver order; PolicyError naming
        the first refused one if there is none."""
        try:
            found, where = [ip_address(host)], host
        except ValueError:
            found = [ip_address(a) for a in resolver(host, port)]
            where = f"{host} resolves to {found[0]}" if found else host
        ok = [str(a) for a in found if self.refusal(a) is None]
        if ok:
            return ok
        if not found:
            raise PolicyError(f"{host} has no address")
        first = found[0]
        raise PolicyError(f"{where} ({self.refusal(first)}): refused by the fetch address "
                          f"policy (a peer allows such addresses with --fetch-allow CIDR)")


@dataclass(frozen=True)
class _Target:
    scheme: str
    host: str
    port: int
    host_header: str
    path: str


def check_url(url: str) -> _Target:
    """Split an http(s) URL into what a request needs; PolicyError for anything else. The
    message never depends on the local file system (a path or file:// is never looked at)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme.lower() not in SCHEMES or not parts.hostname:
        raise PolicyError("only http:// and https:// URLs are fetched (put local data in "
                          "with `banzai add`)")
    try:
        port = parts.port
    except ValueError:
        raise PolicyError("invalid port in URL") from None
    host = parts.hostname
    shown = f"[{host}]" if ":" in host else host
    scheme = parts.scheme.lower()
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return _Target(scheme, host, port or (443 if scheme == "https" else 80),
                   shown + (f":{port}" if port else ""), path)


class _PinnedHTTPS(http.client.HTTPSConnection):
    """HTTPS to a given address, with the SNI and certificate check of the URL's name."""

    def __init__(self, addr: str, port: int, name: str, timeout: float,
                 context: ssl.SSLContext) -> None:
        super().__init__(addr, port, timeout=timeout, context=context)
        self._name = name
        self._tls = context

    def connect(self) -> None:
        http.client.HTTPConnection.connect(self)
        self.sock = self._tls.wrap_socket(self.sock, server_hostname=self._name)


def _connect(t: _Target, addrs: Sequence[str], timeout_s: float,
             tls: ssl.SSLContext | None) -> http.client.HTTPConnection:
    """A connection to the first of `addrs` that answers (the error of the last otherwise)."""
    last: OSError | None = None
    for addr in addrs:
        conn: http.client.HTTPConnection
        if t.scheme == "https":
            conn = _PinnedHTTPS(addr, t.port, t.host, timeout_s,
                                tls or ssl.create_default_context())
        else:
            conn = http.client.HTTPConnection(addr, t.port, timeout=timeout_s)
        try:
            conn.connect()
            return conn
        except OSError as e:
            conn.close()
            last = e
    assert last is not None
    raise last


@dataclass(frozen=True)
class HttpGet:
    """How GETs are made: the policy, per-operation timeout, redirect bound, resolver, TLS."""

    policy: AddressPolicy
    timeout_s: float = 60.0
    max_redirects: int = MAX_REDIRECTS
    resolver: Resolver = system_resolver
    tls: ssl.SSLContext | None = None  # None: the system's default trust
    user_agent: str = "banzai-fetch/1"

    @contextlib.contextmanager
    def open(self, url: str) -> Iterator[http.client.HTTPResponse]:
        """The response to GET `url` after at most `max_redirects` redirects, each target
        checked like the first. Statuses are the caller's to judge; OSError and
        http.client errors pass through; PolicyError for what the policy refuses."""
        for hop in range(self.max_redirects + 1):
            t = check_url(url) if hop == 0 else self._redirect_target(url)
            conn = _connect(t, self._addresses(t, url, hop), self.timeout_s, self.tls)
            with contextlib.closing(conn):  # after the caller is done with the final response
                conn.request("GET", t.path, headers={"Host": t.host_header,
                                                     "User-Agent": self.user_agent})
                with conn.getresponse() as resp:
                    location = resp.getheader("Location")
                    if resp.status not in REDIRECTS or not location:
                        yield resp
                        return
            url = urllib.parse.urljoin(url, location)
        raise PolicyError(f"more than {self.max_redirects} redirects")

    @contextlib.contextmanager
    def send(self, method: str, url: str, body: bytes | IO[bytes] = b"",
             headers: Mapping[str, str] | None = None) -> Iterator[http.client.HTTPResponse]:
        """The response to one request (any method, redirects not followed: the caller
        judges every status) to a URL and address the policy allows; errors as `open`."""
        t = check_url(url)
        conn = _connect(t, self._addresses(t, url, 0), self.timeout_s, self.tls)
        with contextlib.closing(conn):
            conn.request(method, t.path, body=body, headers={
                "Host": t.host_header, "User-Agent": self.user_agent, **(headers or {})})
            with conn.getresponse() as resp:
                yield resp

    def _addresses(self, t: _Target, url: str, hop: int) -> list[str]:
        try:
            return self.policy.addresses(t.host, t.port, self.resolver)
        except PolicyError as e:
            raise PolicyError(f"redirect to {url}: {e.message}" if hop else e.message) from None

    @staticmethod
    def _redirect_target(url: str) -> _Target:
        try:
            return check_url(url)
        except PolicyError as e:
            raise PolicyError(f"redirect to {url} refused: {e.message}") from None
