"""The subdomain gateway's names (specs.ipfs.tech/http-gateways/subdomain-gateway/): which Host
is `{root}.{ipfs|ipns}.{gateway host}`, the DNS-safe label of a CID or IPNS key, and where a path
request on a gateway host is redirected. Pure functions, any thread.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass
from urllib.parse import quote, unquote_to_bytes, urlsplit

import multibase

from peer.cids import Cid, parse_cid
from peer.errors import ArgError, BadCID
from peer.ipfs import ipns

NAMESPACES = ("ipfs", "ipns")
DNS_LABEL_MAX = 63  # RFC 1034: the most characters of one DNS label
# What Go's url.URL.String() leaves unescaped in a path (boxo builds its Location with it);
# letters, digits and "-._~" are always safe.
_PATH_SAFE = "/$&+,:;=@"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_DNS_NAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")


@dataclass(frozen=True)
class SubdomainConfig:
    """The gateway hosts (names, lower case, without port) whose `*.ipfs.` and `*.ipns.`
    subdomains serve content, and whether /ipfs/ and /ipns/ paths on them are redirected there
    (only where anyone may read content: another origin does not get the UI's session)."""

    hosts: frozenset[str] = frozenset({"localhost"})
    redirect: bool = True


@dataclass(frozen=True)
class ContentHost:
    """A Host of the subdomain form: `root` (as written) in namespace `ns` on `parent` (the
    gateway's own host, with its port if the Host had one)."""

    root: str
    ns: str
    parent: str


def split_port(host: str) -> tuple[str, str]:
    """(name, ":port" or "") of a Host header value; IPv6 literals keep their brackets, and
    an unbracketed one (more than one ':') is all name. The one reading of a Host, the
    access rule's (peer/http/auth.py) and the gateway's: ArgError if a port is there but is
    not ASCII digits, as no reading of such a Host is the right one (an empty port is none,
    as RFC 3986 says)."""
    h = host.strip()
    if h.startswith("["):
        end = h.find("]")
        name, port = (h, "") if end < 0 else (h[:end + 1], h[end + 1:])
    elif h.count(":") > 1:
        name, port = h, ""
    else:
        name, sep, digits = h.partition(":")
        port = sep + digits
    if port == ":":  # an empty port is no port (RFC 3986 3.2.3)
        return name, ""
    if port and not (port[0] == ":" and port[1:].isascii() and port[1:].isdigit()):
        raise ArgError(f"Host {h[:100]!r}: the port must be ASCII digits", field="host")
    return name, port


def gateway_host(host: str, parents: Collection[str]) -> str | None:
    """`host` (name and port) if its name is one of `parents` (lower case, no port); None
    for any other value, a malformed one included."""
    try:
        name, _ = split_port(host)
    except ArgError:
        return None
    return host.strip() if name.rstrip(".").lower() in parents else None


def parse_host(host: str, parents: Collection[str]) -> ContentHost | None:
    """The subdomain form of a Host header, or None; ArgError for a malformed port. Labels
    are read from the left, as boxo does: the first `{ns}.{parent}` suffix whose parent is a
    gateway host wins, and everything before it is the root (a DNSLink name may hold dots)."""
    name, port = split_port(host)
    labels = name.rstrip(".").split(".")
    for i in range(2, len(labels)):
        parent = ".".join(labels[i:])
        if parent.lower() in parents and labels[i - 1].lower() in NAMESPACES:
            root = ".".join(labels[:i - 1])
            return ContentHost(root, labels[i - 1].lower(), parent + port) if root else None
    return None


def _libp2p_key(root: str) -> Cid | None:
    """An /ipns/ root as a CIDv1 libp2p-key (a CID of any codec, or a base58 peer ID), or None
    for anything else (a DNSLink name)."""
    try:
        c = parse_cid(root)
    except BadCID:
        try:
            key, _ = ipns.parse_name(root)
        except ArgError:
            return None
        return key
    return Cid(1, ipns.LIBP2P_KEY, c.multihash)


def dns_label(c: Cid, ns: str) -> str:
    """`c` as one case-insensitive DNS label: CIDv1 in base32 (/ipfs/) or base36 (/ipns/, as
    IPNS writes keys), base36 if base32 is too long; ArgError if even that exceeds 63."""
    v1 = Cid(1, c.codec, c.multihash)
    label = ipns.canonical(v1) if ns == "ipns" else str(v1)
    if len(label) > DNS_LABEL_MAX:
        label = str(multibase.encode("base36", v1.binary).decode())
    if len(label) > DNS_LABEL_MAX:
        raise ArgError(f"CID incompatible with DNS label length limit of {DNS_LABEL_MAX}: "
                       f"{label}", field="host")
    return label


def canonical_root(ns: str, root: str) -> str | None:
    """The label a root is served under: a CID (or IPNS key) as dns_label writes it; a DNS
    name (DNSLink) with each '-' doubled and each '.' as '-' (boxo's inlining, so a name fits
    one label); None for anything else under /ipns/. BadCID for an /ipfs/ root that is not a
    CID, ArgError if the label would be longer than a DNS label."""
    if ns == "ipns":
        key = _libp2p_key(root)
        if key is not None:
            return dns_label(key, ns)
        if _DNS_NAME.fullmatch(root) is None:
            return None
        label = root.replace("-", "--").replace(".", "-")
        if len(label) > DNS_LABEL_MAX:
            raise ArgError("DNSLink representation incompatible with DNS label length limit "
                           f"of {DNS_LABEL_MAX}: {label}", field="host")
        return label
    return dns_label(parse_cid(root), ns)


def served_label(content: ContentHost) -> str | None:
    """The label to redirect a content Host to, or None if it is served as it is. An /ipfs/
    CID is served as written unless longer than a DNS label (then base36 may fit); an /ipns/
    key always under its canonical label (CIDv1 libp2p-key in base36, as boxo fixes other
    codecs and peer IDs). ArgError if no label can hold it; other roots are served as
    written (and fail there)."""
    if content.ns == "ipns":
        key = _libp2p_key(content.root)
        if key is None:
            return None
        label = dns_label(key, "ipns")
        return None if label == content.root else label
    try:
        c = parse_cid(content.root)
    except BadCID:
        return None
    return dns_label(c, content.ns) if len(content.root) > DNS_LABEL_MAX else None


def redirect_url(scheme: str, parent: str, raw_path: str, raw_query: str) -> str | None:
    """Where a request for `raw_path` (/ipfs/{cid}[/rest] or /ipns/{name}[/rest], as sent) on
    gateway host `parent` goes: `{scheme}://{label}.{ns}.{parent}/{rest}[?query]`, the rest
    re-escaped as boxo does. None for other paths; BadCID for an /ipfs/ root that is not a
    CID; ArgError for one too long for a DNS label."""
    parts = raw_path.split("/", 3)
    if len(parts) < 3 or parts[0] or parts[1] not in NAMESPACES or not parts[2]:
        return None
    ns, root = parts[1], unquote_to_bytes(parts[2]).decode("utf-8", "replace")
    label = canonical_root(ns, root)
    if label is None:
        return None
    rest = quote(unquote_to_bytes(parts[3]), safe=_PATH_SAFE) if len(parts) == 4 else ""
    query = f"?{raw_query}" if raw_query else ""
    return f"{scheme}://{label}.{ns}.{parent}/{rest}{query}"


def content_redirect(scheme: str, content: ContentHost, label: str, raw_path: str,
                     raw_query: str) -> str:
    """The URL of the same request on the canonical label of its content Host."""
    query = f"?{raw_query}" if raw_query else ""
    return f"{scheme}://{label}.{content.ns}.{content.parent}{raw_path or '/'}{query}"


def protocol_redirect(uri: str) -> str:
    """The content path of an ipfs:// or ipns:// URI (?uri=, as browsers' protocol handlers
    send it): /ipfs/{cid}/{path}[?query]; ArgError for another scheme or no root."""
    try:
        u = urlsplit(uri)
    except ValueError as exc:
        raise ArgError(f"invalid uri {uri!r}: {exc}", field="uri") from None
    if u.scheme not in NAMESPACES or not u.netloc:
        raise ArgError(f"invalid uri {uri!r}: an ipfs:// or ipns:// URI is expected, e.g. "
                       "ipfs://CID/path", field="uri")
    segments: list[str] = []
    for s in unquote_to_bytes(u.path).split(b"/"):
        if s == b"..":
            if segments:
                segments.pop()
        elif s and s != b".":
            segments.append(quote(s, safe=_PATH_SAFE.replace("/", "")))
    path = "/".join(["", u.scheme, quote(u.netloc, safe=":@"), *segments])
    return path + (f"?{quote(u.query, safe='=&')}" if u.query else "")


__all__ = ["DNS_LABEL_MAX", "ContentHost", "SubdomainConfig", "canonical_root",
           "content_redirect", "dns_label", "gateway_host", "parse_host", "protocol_redirect",
           "redirect_url", "served_label", "split_port"]
