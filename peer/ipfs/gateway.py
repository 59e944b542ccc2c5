"""IPFS HTTP path + trustless gateway: GET/HEAD /ipfs/{cid}[/path] over a Store; HTTP only (paths,
ranges, DAG and CAR traversal are store methods).

Store calls run in worker threads (asyncio.to_thread) and file bytes are streamed in batches of
blocks read ahead by a worker thread while the loop writes the previous batch, so the event loop
never blocks; only store content is ever read. The subdomain gateway (CID.ipfs.HOST, names and
redirects in peer/ipfs/subdomain.py) is a middleware over the same handler.

Responses: UnixFS files (Range, ETag, If-None-Match), directories (index.html, else an HTML
listing for browsers or JSON `{"Hash", "Links": [{"Name", "Hash", "Size", "Type"}]}` for
`Accept: application/json` / `?format=json|dag-json`, Type being "file" or "dir"),
`?format=raw|car` / `Accept: application/vnd.ipld.raw|car` trustless responses (the path's
target block, with Range; CARs are depth-first without duplicates, with the path's blocks first,
dag-scope=all) and `?format=tar` / `Accept: application/x-tar` (peer/ipfs/tarstream.py). A
codec the content does not have (`?format=dag-cbor` of a UnixFS file) is 406 (IPIP-0524), except
DAG-CBOR <-> DAG-JSON with `codec_conversion` (opt-in, as boxo's AllowCodecConversion);
`Cache-Control: only-if-cached` answers 412 for content this peer does not hold.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import html
import json
import logging
import math
import mimetypes
import re
from collections.abc import Awaitable, Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import chain, islice
from urllib.parse import quote

from aiohttp import web
from aiohttp.typedefs import Middleware

from peer.cids import DAG_PB, parse_cid
from peer.errors import (
    ArgError,
    BadCID,
    BanzaiError,
    IpnsError,
    NotAcceptable,
    NotCached,
    NotFound,
    Unavailable,
)
from peer.errors_http import HttpError, Surface, http_error, unexpected
from peer.ipfs import ipld, ipns, subdomain
from peer.ipfs.store import CarOptions, DagScope, DirLink, Entry, Store
from peer.ipfs.tarstream import tar_stream
from peer.ipfs.unixfs import check_name

log = logging.getLogger(__name__)

CACHE_IMMUTABLE = "public, max-age=29030400, immutable"
RAW_TYPE = "application/vnd.ipld.raw"
CAR_TYPE = "application/vnd.ipld.car"
CAR_CONTENT_TYPE = "application/vnd.ipld.car; version=1; order=dfs; dups=n"
JSON_TYPE = "application/json"
PAGE_ROWS = 1000  # entries of a JSON listing's page without ?limit= (`listing_page`)
MAX_PAGE_ROWS = 10_000  # the most ?limit= asks for: a page is read whole before the status
TAR_TYPE = "application/x-tar"
# ?format= values and the Accept media types that ask for them (the query wins over Accept)
_FORMATS = ("raw", "car", "tar", "json", "dag-json", "dag-cbor", "cbor", "ipns-record")
_ACCEPT_FORMATS = {RAW_TYPE: "raw", CAR_TYPE: "car", TAR_TYPE: "tar",
                   ipns.RECORD_TYPE: "ipns-record",
                   "application/vnd.ipld.dag-json": "dag-json",
                   "application/vnd.ipld.dag-cbor": "dag-cbor", "application/cbor": "cbor"}
# formats naming a codec: content of another codec is 406 (only a directory's JSON listing
# answers ?format=dag-json, as before)
_CODEC_FORMATS = ("dag-json", "dag-cbor", "cbor")
# Blocks of these codecs are served as they are stored (no decoding, no conversion):
# codec -> (Content-Type, disposition, file extension); a DAG codec's bytes may also be asked
# for under its plain twin's format (dag-json as json, dag-cbor as cbor), any other -> 406.
_DATA_CODECS = {"json": ("application/json", "inline", "json"),
                "cbor": ("application/cbor", "attachment", "cbor"),
                "dag-json": ("application/vnd.ipld.dag-json", "inline", "json"),
                "dag-cbor": ("application/vnd.ipld.dag-cbor", "attachment", "cbor")}
_SAME_BYTES = {"json": ("json",), "cbor": ("cbor",), "dag-json": ("dag-json", "json"),
               "dag-cbor": ("dag-cbor", "cbor")}
# With codec conversion on: (block codec, format asked) -> the codec it is re-encoded in
_CONVERSIONS = {("dag-cbor", "dag-json"): "dag-json", ("dag-cbor", "json"): "dag-json",
                ("dag-json", "dag-cbor"): "dag-cbor", ("dag-json", "cbor"): "dag-cbor"}
SNIFF_BYTES = 512
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
_EXT_TYPES = {
    ".wav": "audio/wav",
    ".npy": "application/octet-stream",
    ".npz": "application/octet-stream",
    ".json": "application/json",
    ".js": "text/javascript",
    ".mjs": "text/javascript",
    ".css": "text/css",
    ".html": "text/html",
    ".htm": "text/html",
    ".txt": "text/plain",
    ".md": "text/markdown",
    ".csv": "text/csv",
    ".svg": "image/svg+xml",
    ".wasm": "application/wasm",
    ".flac": "audio/flac",
    ".mp3": "audio/mpeg",
    ".ogg": "audio/ogg",
    ".yaml": "application/yaml",
    ".yml": "application/yaml",
    ".toml": "application/toml",
}
_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"%PDF-", "application/pdf"),
    (b"\x93NUMPY", "application/octet-stream"),
    (b"fLaC", "audio/flac"),
    (b"OggS", "audio/ogg"),
    (b"ID3", "audio/mpeg"),
    (b"PK\x03\x04", "application/zip"),
    (b"\x1f\x8b", "application/gzip"),
    (b"\x00asm", "application/wasm"),
)


Fetch = Callable[[str], Awaitable[bool]]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# Exports (TARs, CARs) read their batches in a pool of threads of their own, never the
# default pool that every other store call of the peer runs in; the exports that may write
# content again (a TAR, a CAR with dups=y: dag.Expansion bounds each) run at most
# EXPANDING_EXPORTS at once, one more is answered 503 (session 48, review r1 F2). CARs
# without duplicates (the mesh's fetches) are never refused: they wait their batch's turn.
EXPORT_THREADS = 4
EXPANDING_EXPORTS = 4
EXPORTS_RETRY_AFTER_S = 5


class Exports:
    """The exports' thread pool and the turns of expanding exports (loop-owned count)."""

    def __init__(self, threads: int = EXPORT_THREADS, slots: int = EXPANDING_EXPORTS) -> None:
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix="banzai-export")
        self.slots = slots
        self.running = 0

    def enter(self) -> None:
        """Take a turn, or Unavailable (503) while every one is taken."""
        if self.running >= self.slots:
            raise Unavailable(f"{self.running} TAR or dups=y CAR exports are running on this "
                              f"peer, its most at once: retry later (or ask for ?format=car "
                              "without duplicates)", field="format")
        self.running += 1

    def leave(self) -> None:
        self.running -= 1

    async def close(self, _app: web.Application | None = None) -> None:
        await asyncio.to_thread(self.pool.shutdown, True, cancel_futures=True)


EXPORTS: web.AppKey[Exports] = web.AppKey("exports")
# Requests made by peers fetching data carry this header: they never trigger a fetch in
# turn, so two peers lacking a block cannot ask each other for it forever.
PEER_FETCH_HEADER = "X-Banzai-Fetch"


def add_routes(app: web.Application, store: Store, fetch: Fetch | None = None,
               names: ipns.IpnsNames | None = None, codec_conversion: bool = False,
               subdomains: subdomain.SubdomainConfig | None = None) -> None:
    """Register GET and HEAD /ipfs/{cid} and /ipfs/{cid}/{path} on `app`, and /ipns/{name}[/path]
    with `names` (the IPNS records this peer holds). With `fetch`, a CID missing here is
    fetched from the mesh (fetch(cid) -> True if now local) first. `codec_conversion` answers
    DAG-CBOR blocks as DAG-JSON and back when asked (the specs answer 406: IPIP-0524).
    `subdomains` adds the subdomain gateway: a middleware (appended to the app's, so after the
    access check) that serves Hosts `{cid}.ipfs.{host}` / `{key}.ipns.{host}` and redirects
    /ipfs/ and /ipns/ paths on `host` there. /ipfs/?uri= and /ipns/?uri= redirect ipfs:// and
    ipns:// URIs (browsers' protocol handlers) to their paths."""
    exports = Exports()
    app[EXPORTS] = exports  # (POST /api/car's too)
    app.on_cleanup.append(exports.close)
    gateway = Gateway(store, fetch, names, codec_conversion, exports)
    app.router.add_get("/ipfs/", protocol_handler)
    app.router.add_get("/ipns/", protocol_handler)
    app.router.add_get("/ipfs/{cid}", gateway.handle)
    app.router.add_get("/ipfs/{cid}/{path:.*}", gateway.handle)
    app.router.add_route("OPTIONS", "/ipfs/{cid}", preflight)
    app.router.add_route("OPTIONS", "/ipfs/{cid}/{path:.*}", preflight)
    if names is not None:
        app.router.add_get("/ipns/{name}", gateway.handle_ipns)
        app.router.add_get("/ipns/{name}/{path:.*}", gateway.handle_ipns)
        app.router.add_route("OPTIONS", "/ipns/{name}", preflight)
        app.router.add_route("OPTIONS", "/ipns/{name}/{path:.*}", preflight)
    if subdomains is not None and subdomains.hosts:
        app.middlewares.append(subdomain_middleware(gateway, subdomains))


def subdomain_middleware(gateway: Gateway, cfg: subdomain.SubdomainConfig) -> Middleware:
    """Serve requests whose Host is a content Host (at any path), and answer GET/HEAD of
    /ipfs/{cid}[/rest] and /ipns/{name}[/rest] on a gateway host (or one named by
    X-Forwarded-Host) with a 301 to the content Host when `cfg.redirect`."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        content = subdomain.parse_host(request.headers.get("Host", ""), cfg.hosts)
        if content is not None:
            return await gateway.handle_subdomain(request, content)
        if cfg.redirect and request.method in ("GET", "HEAD") and request.path.startswith(
                ("/ipfs/", "/ipns/")):
            redirect = path_redirect(request, cfg.hosts)
            if redirect is not None:
                return redirect
        return await handler(request)

    return middleware


def request_scheme(request: web.Request) -> str:
    """https if the request came over TLS or through a proxy that says so (X-Forwarded-Proto),
    else http: the scheme of a redirect's Location."""
    forwarded = request.headers.get("X-Forwarded-Proto", "").strip().lower()
    return forwarded if forwarded in ("http", "https") else request.scheme


def path_redirect(request: web.Request, hosts: frozenset[str]) -> web.Response | None:
    """The 301 of a path request on a gateway host to its content Host; None if the Host is
    not a gateway host or the path names no root. X-Forwarded-Host is followed only when it
    names a gateway host too: the access check has already accepted the Host, and the header
    can only choose which of this peer's gateway hosts the Location names. An /ipfs/ root that
    is not a CID, or a CID too long for a DNS label, is a 400 (plain text, as boxo)."""
    forwarded = request.headers.get("X-Forwarded-Host", "")
    parent = ((subdomain.gateway_host(forwarded, hosts) if forwarded else None)
              or subdomain.gateway_host(request.headers.get("Host", ""), hosts))
    if parent is None:
        return None
    try:
        location = subdomain.redirect_url(request_scheme(request), parent,
                                          request.rel_url.raw_path,
                                          request.rel_url.raw_query_string)
    except BadCID as exc:
        return _text_error(400, f'invalid path "{request.path}": {exc.message}')
    except ArgError as exc:
        return _text_error(400, exc.message)
    if location is None:
        return None
    return web.Response(status=301, headers={"Location": location} | CORS)


async def protocol_handler(request: web.Request) -> web.Response:
    """GET /ipfs/?uri=ipfs://CID/path (and ipns://): a 301 to the URI's content path."""
    try:
        uri = request.query.get("uri")
        if not uri:
            raise ArgError(f"{request.path} needs a root, or ?uri=ipfs://CID/path (an ipfs:// "
                           "or ipns:// URI) to be redirected to its path", field="uri")
        location = subdomain.protocol_redirect(uri)
    except ArgError as exc:
        return _error(http_error(exc, Surface.GATEWAY))
    return web.Response(status=301, headers={"Location": location} | CORS)


def sniff_type(name: str, head: bytes) -> str:
    """Content-Type from the file name's extension, else from the first bytes."""
    dot = name.rfind(".")
    if dot > 0:
        ext = name[dot:].lower()
        known = _EXT_TYPES.get(ext) or mimetypes.types_map.get(ext)
        if known:
            return _with_charset(known)
    return _with_charset(_sniff_bytes(head))


def _sniff_bytes(head: bytes) -> str:
    for magic, mime in _MAGIC:
        if head.startswith(magic):
            return mime
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "audio/wav"
    lowered = head[:64].lstrip().lower()
    if lowered.startswith((b"<!doctype html", b"<html")):
        return "text/html"
    if lowered.startswith(b"<svg") or (lowered.startswith(b"<?xml") and b"<svg" in head):
        return "image/svg+xml"
    if lowered[:1] in (b"{", b"[") and _looks_like_json(head):
        return "application/json"
    if b"\x00" in head:
        return "application/octet-stream"
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 3:  # a multi-byte character cut at the end is fine
            return "application/octet-stream"
    return "text/plain"


_JSON_START = re.compile(rb'\s*(\{\s*["}]|\[\s*[\[{"\d\-tfn\]])')


def _looks_like_json(head: bytes) -> bool:
    """All of a short file parses as JSON, or a longer one's first bytes open a JSON value."""
    if len(head) >= SNIFF_BYTES:
        return _JSON_START.match(head) is not None
    try:
        json.loads(head)
    except ValueError:
        return False
    return True


def _with_charset(mime: str) -> str:
    return f"{mime}; charset=utf-8" if mime.startswith("text/") else mime


_RANGE_DIGITS = 19  # more digits than any file size (< 2**63): such a number means "beyond"


def _beyond(digits: str) -> bool:
    """True if `digits` (a '-' and leading zeros aside) are more than _RANGE_DIGITS: a number
    past every file, never to convert (int() refuses 4,300 digits, and is slow past that)."""
    return len(digits.removeprefix("-").lstrip("0")) > _RANGE_DIGITS


def _int(digits: str) -> int:
    """int(digits) of a number not _beyond, its leading zeros dropped first (int() counts
    them in its limit of 4,300 digits)."""
    sign, digits = ("-", digits[1:]) if digits.startswith("-") else ("", digits)
    return int(sign + (digits.lstrip("0") or "0"))


def _range_number(digits: str) -> int:
    """A Range position; one _beyond every file (e.g. 4,300 digits) reads as 10**19."""
    return 10**_RANGE_DIGITS if _beyond(digits) else _int(digits)


def parse_range(header: str, size: int) -> tuple[int, int] | None:
    """[start, end) of one `bytes=` range; None to serve it all; ArgError if unsatisfiable
    (the gateway answers 416). Positions past the file are clamped as RFC 9110 says."""
    m = _RANGE.match(header.strip())
    if m is None:
        return None  # multiple or foreign ranges: serve the whole file (allowed by RFC 9110)
    first, last = m.groups()
    if not first and not last:
        return None
    if not first:
        n = _range_number(last)
        if n == 0 or size == 0:
            raise ArgError("unsatisfiable range", field="range")
        return max(0, size - n), size
    start = _range_number(first)
    end = size if not last else min(size, _range_number(last) + 1)
    if start >= size or (last and _range_number(last) < start):
        raise ArgError("unsatisfiable range", field="range")
    return start, end


def etag_matches(if_none_match: str, etag: str) -> bool:
    """True if an If-None-Match header matches `etag` (weak comparison, `*` included)."""
    for tag in if_none_match.split(","):
        tag = tag.strip()
        if tag == "*" or tag.removeprefix("W/") == etag.removeprefix("W/"):
            return True
    return False


def _accepts(request: web.Request) -> list[str]:
    return [
        part.split(";")[0].strip().lower() for part in request.headers.get("Accept", "").split(",")
    ]


def response_format(request: web.Request) -> str:
    """One of _FORMATS or "" (UnixFS) from ?format= then Accept; ArgError if unknown."""
    fmt = request.query.get("format", "").lower()
    if fmt:
        if fmt in _FORMATS:
            return fmt
        raise ArgError(f"unsupported format {fmt!r} ({', '.join(_FORMATS)})", field="format")
    accepts = _accepts(request)
    for media in accepts:
        if media in _ACCEPT_FORMATS:
            return _ACCEPT_FORMATS[media]
    if JSON_TYPE in accepts and "text/html" not in accepts:
        return "json"
    return ""


def only_if_cached(request: web.Request) -> bool:
    """True if the request says `Cache-Control: only-if-cached` (never fetch, 412 if absent)."""
    directives = request.headers.get("Cache-Control", "").lower().split(",")
    return "only-if-cached" in (d.strip() for d in directives)


_DAG_SCOPES: dict[str, DagScope] = {"all": "all", "entity": "entity", "block": "block"}
_ENTITY_BYTES = re.compile(r"^(-?\d+):(-?\d+|\*)$")


def car_options(request: web.Request) -> CarOptions:
    """CarOptions from ?dag-scope=, ?entity-bytes= and the Accept CAR parameters; ArgError."""
    raw_scope = request.query.get("dag-scope", "all")
    scope = _DAG_SCOPES.get(raw_scope)
    if scope is None:
        raise ArgError(f"invalid dag-scope {raw_scope!r} (all, entity, block)",
                       field="dag-scope")
    entity: tuple[int, int | None] | None = None
    raw = request.query.get("entity-bytes")
    if raw is not None:
        m = _ENTITY_BYTES.match(raw)
        if m is None or any(_beyond(g) for g in m.groups()):
            raise ArgError(f"invalid entity-bytes {raw[:100]!r} (from:to, to may be *; "
                           f"at most {_RANGE_DIGITS} digits each)", field="entity-bytes")
        first, last = _int(m.group(1)), None if m.group(2) == "*" else _int(m.group(2))
        if first >= 0 and last is not None and 0 <= last < first:
            raise ArgError(f"invalid entity-bytes {raw!r}: to < from", field="entity-bytes")
        entity = (first, last)  # only used with dag-scope=entity (ignored otherwise, as Kubo)
    dups = request.query.get("car-dups") or _car_param(request, "dups")  # the query wins
    return CarOptions(scope, entity, dups.lower() == "y")


def _car_param(request: web.Request, name: str) -> str:
    for part in request.headers.get("Accept", "").split(","):
        media, *params = (p.strip() for p in part.split(";"))
        if media.lower() != CAR_TYPE:
            continue
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == name:
                return value.strip().lower()
    return ""


def check_raw_path(raw_path: str) -> None:
    """ArgError if the request path has '.' or '..' segments, raw or percent-encoded."""
    for segment in raw_path.split("/"):
        if segment.lower().replace("%2e", ".") in (".", ".."):
            raise ArgError("'.' and '..' are not allowed in IPFS paths", field="path")


@dataclass(frozen=True)
class Target:
    """What a request names: a root CID, a path below it, and how long its answer may be
    cached (immutable for /ipfs/, the record's TTL for /ipns/). On the subdomain gateway:
    `gateway_host`, the host (and port) the content Host is a subdomain of (listings link
    there), and `content_path`, the /ipfs/ or /ipns/ path the request stands for."""

    root: str
    path: str
    cache_control: str = CACHE_IMMUTABLE
    gateway_host: str = ""
    content_path: str = ""


@dataclass
class Plan:
    """What to send, decided off the event loop."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None
    stream: Iterator[bytes] | None = None
    length: int | None = None
    export: bool = False  # read in the export pool (a TAR, a CAR)
    expands: bool = False  # and it may write content again (a TAR, dups=y): a turn first


class Gateway:
    """Request handler; the store is only touched from worker threads."""

    def __init__(self, store: Store, fetch: Fetch | None = None,
                 names: ipns.IpnsNames | None = None, codec_conversion: bool = False,
                 exports: Exports | None = None) -> None:
        self.store = store
        self.fetch = fetch
        self.names = names
        self.codec_conversion = codec_conversion
        self.exports = Exports() if exports is None else exports

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """Serve one /ipfs request; errors become JSON bodies with their status, never a 500."""
        target = Target(request.match_info["cid"], request.match_info.get("path", ""))
        return await self.serve(request, target)

    async def handle_subdomain(self, request: web.Request,
                               content: subdomain.ContentHost) -> web.StreamResponse:
        """Serve a request whose Host is `content`: its root at `/`, every path below it (an
        /ipfs/ or /api/ path too is a path in the content). A root not in its canonical label
        is redirected there; one no DNS label can hold is a 400 (plain text, as boxo)."""
        if request.method == "OPTIONS":
            return await preflight(request)
        try:
            label = subdomain.served_label(content)
        except ArgError as exc:
            return _text_error(400, exc.message)
        raw = request.rel_url
        if label is not None:
            location = subdomain.content_redirect(request_scheme(request), content, label,
                                                  raw.raw_path, raw.raw_query_string)
            return web.Response(status=301, headers={"Location": location} | CORS)
        path = request.path[1:]
        content_path = f"/{content.ns}/{content.root}{raw.raw_path}"
        if content.ns == "ipns":
            return await self.serve_ipns(request, content.root, path, content.parent,
                                         content_path)
        return await self.serve(request, Target(content.root, path,
                                                gateway_host=content.parent,
                                                content_path=content_path))

    async def handle_ipns(self, request: web.Request) -> web.StreamResponse:
        """Serve one /ipns request (serve_ipns)."""
        return await self.serve_ipns(request, request.match_info["name"],
                                     request.match_info.get("path", ""))

    async def serve_ipns(self, request: web.Request, name: str, rest: str,
                         gateway_host: str = "", content_path: str = "") -> web.StreamResponse:
        """Serve IPNS name `name` with `rest` below it: a name written as a base58 key is
        redirected to its CID form; the name's record (?format=ipns-record), or the content
        its value names."""
        try:
            check_raw_path(request.rel_url.raw_path)
            if self.names is None:
                raise NotFound("this gateway serves no IPNS names", field="name")
            key, is_cid = ipns.parse_name(name)
            if not is_cid:  # the rest of the path as sent: `name` may be %-escaped there
                _, slash, tail = request.rel_url.raw_path.removeprefix("/ipns/").partition("/")
                location = f"/ipns/{ipns.canonical(key)}{slash}{tail}"
                if request.rel_url.raw_query_string:
                    location += "?" + request.rel_url.raw_query_string
                return web.Response(status=302, headers={"Location": location} | CORS)
            record = await asyncio.to_thread(self.names.resolve, name)
            if response_format(request) == "ipns-record":
                return await _send(request, _record_plan(request, name, record), self.exports)
            target = _ipns_target(record, rest, gateway_host, content_path)
        except BanzaiError as exc:
            return _error(http_error(exc, Surface.GATEWAY))
        return await self.serve(request, target)

    async def serve(self, request: web.Request, target: Target) -> web.StreamResponse:
        """Serve `target`; errors become JSON bodies with their status, never a 500."""
        try:
            check_raw_path(request.rel_url.raw_path)
            try:
                plan = await asyncio.to_thread(self.plan, request, target)
            except NotFound as exc:
                if only_if_cached(request):
                    raise NotCached(f"not in this peer's store (only-if-cached): {exc.message}",
                                    field=exc.field) from exc
                if self.fetch is None or request.headers.get(PEER_FETCH_HEADER):
                    raise
                if not await self.fetch(target.root):
                    raise
                plan = await asyncio.to_thread(self.plan, request, target)
        except BanzaiError as exc:
            return _error(http_error(exc, Surface.GATEWAY))
        except Exception:
            log.exception("gateway: unexpected error serving %s", request.rel_url)
            return _error(unexpected(Surface.GATEWAY))
        return await _send(request, plan, self.exports)

    def plan(self, request: web.Request, target: Target) -> Plan:
        """Resolve the request for `target` into a Plan (blocking store calls)."""
        root, path = target.root, target.path
        parse_cid(root)
        fmt = response_format(request)
        if fmt == "ipns-record":
            raise ArgError("?format=ipns-record is for /ipns/ names", field="format")
        if "//" in path:
            raise ArgError("empty path segments are not allowed", field="path")
        cids = self.store.resolve_path(root, path)
        headers = {
            "X-Ipfs-Path": target.content_path or request.rel_url.raw_path,
            "X-Ipfs-Roots": ",".join(cids),
            "Cache-Control": target.cache_control,
        }
        if fmt == "raw":
            return self._raw(cids[-1], request, headers)
        if fmt == "car":
            return self._car(cids, path, request, headers)
        codec = parse_cid(cids[-1]).codec
        if codec in _DATA_CODECS:
            return self._data_block(cids[-1], codec, fmt, request, headers)
        if fmt in _CODEC_FORMATS:
            self._check_codec(cids[-1], fmt)
        if fmt == "tar":
            return self._tar(cids[-1], request, headers)
        entry = self.store.stat(cids[-1])
        if entry.kind == "dir":
            return self._dir(entry, request, headers, fmt, target)
        name = path.rstrip("/").rsplit("/", 1)[-1] if path else ""  # typed by its own name
        return self._file(entry, name, request, headers)

    def _check_codec(self, cid: str, fmt: str) -> None:
        """NotAcceptable unless content `cid` can be answered in codec `fmt` (IPIP-0524)."""
        c = parse_cid(cid)
        if fmt == "dag-json" and c.codec == DAG_PB and self.store.stat(cid).kind == "dir":
            return  # the directory's JSON listing
        raise NotAcceptable(f"{c} has codec {c.codec}: it cannot be answered as {fmt}",
                            field="format")

    def _raw(self, cid: str, request: web.Request, headers: dict[str, str]) -> Plan:
        """The path's target block as it is stored (Range supported)."""
        etag = f'"{cid}.raw"'
        headers |= {
            "Content-Type": RAW_TYPE,
            "ETag": etag,
            "X-Content-Type-Options": "nosniff",
            "Content-Disposition": _disposition(request, f"{cid}.bin", attachment=True),
            "Accept-Ranges": "bytes",
        }
        if etag_matches(request.headers.get("If-None-Match", ""), etag):
            return Plan(304, headers)
        return _block_body(self.store.get_block(cid), request, headers)

    def _data_block(self, cid: str, codec: str, fmt: str, request: web.Request,
                    headers: dict[str, str]) -> Plan:
        """A block of a JSON or CBOR codec as it is stored, typed by the format asked for (or
        its codec); an HTML page for browsers that ask for no format; 406 for another codec."""
        if not fmt and "text/html" in _accepts(request):
            return self._data_html(cid, codec, request, headers)
        fmt = fmt or codec
        into = _CONVERSIONS.get((codec, fmt)) if self.codec_conversion else None
        if fmt not in _SAME_BYTES[codec] and into is None:
            hint = (" (this gateway converts DAG-CBOR and DAG-JSON only with "
                    "--gateway-codec-conversion; ?format=raw gives the block)"
                    if (codec, fmt) in _CONVERSIONS else "")
            raise NotAcceptable(f"{cid} has codec {codec}: it cannot be answered as {fmt}"
                                + hint, field="format")
        mime = _DATA_CODECS[fmt][0]
        _, disposition, ext = _DATA_CODECS[into or codec]
        etag = f'"{cid}.{fmt}"'
        headers |= {
            "Content-Type": mime,
            "ETag": etag,
            "Content-Disposition": _disposition(request, f"{cid}.{ext}",
                                                attachment=disposition == "attachment"),
            "Accept-Ranges": "bytes",
        }
        if etag_matches(request.headers.get("If-None-Match", ""), etag):
            return Plan(304, headers)
        block = self.store.get_block(cid)
        if into is not None:
            block = ipld.convert(parse_cid(cid), block, into)
        return _block_body(block, request, headers)

    def _data_html(self, cid: str, codec: str, request: web.Request,
                   headers: dict[str, str]) -> Plan:
        """A page showing a JSON or CBOR block to a browser (the text, or hex for CBOR)."""
        etag = f'"DagIndex-1_CID-{cid}"'
        headers.pop("Cache-Control", None)  # the page may change with this peer's version
        headers |= {"Content-Type": "text/html; charset=utf-8", "ETag": etag}
        if etag_matches(request.headers.get("If-None-Match", ""), etag):
            return Plan(304, headers)
        block = self.store.get_block(cid)
        shown = (block.decode("utf-8", "replace") if codec.endswith("json")
                 else block.hex(" ", -16))
        href = html.escape(f"/ipfs/{cid}?format={codec}")
        body = (f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>{cid}</title></head>'
                f"<body><h1>{html.escape(codec)} block <code>{cid}</code></h1>"
                f'<p>{len(block)} bytes: <a href="{href}">download</a></p>'
                f"<pre>{html.escape(shown)}</pre></body></html>")
        return Plan(200, headers, body=body.encode())

    def _tar(self, cid: str, request: web.Request, headers: dict[str, str]) -> Plan:
        """A TAR of the path's target, named by its CID (peer/ipfs/tarstream.py)."""
        etag = f'W/"{cid}.x-tar"'
        headers |= {
            "Content-Type": TAR_TYPE,
            "ETag": etag,
            "X-Content-Type-Options": "nosniff",
            "Content-Disposition": _disposition(request, f"{cid}.tar", attachment=True),
        }
        if etag_matches(request.headers.get("If-None-Match", ""), etag):
            return Plan(304, headers)
        return Plan(200, headers, stream=tar_stream(self.store, cid, cid), export=True,
                    expands=True)

    def _car(self, cids: list[str], path: str, request: web.Request,
             headers: dict[str, str]) -> Plan:
        opts = car_options(request)
        tag = hashlib.sha256(repr(("/".join(cids), opts)).encode()).hexdigest()[:16]
        default = len(cids) == 1 and opts == CarOptions()
        etag = f'"{cids[0]}.car"' if default else f'"{cids[0]}.{tag}.car"'
        headers |= {
            "Content-Type": f"{CAR_TYPE}; version=1; order=dfs; dups={'y' if opts.dups else 'n'}",
            "ETag": etag,
            "X-Content-Type-Options": "nosniff",
            "Content-Disposition": _disposition(request, f"{cids[0]}.car", attachment=True),
            "Vary": "Accept",
            "Accept-Ranges": "none",  # streamed: partial CARs go by dag-scope/entity-bytes
        }
        if etag_matches(request.headers.get("If-None-Match", ""), etag):
            return Plan(304, headers)
        # The CAR's root is the request's root (Kubo puts the path's terminal CID there; our
        # tests pin the root); NotFound comes before the first byte.
        return Plan(200, headers, stream=self.store.export_car(cids[0], path, opts),
                    export=True, expands=opts.dups)

    def _dir(self, entry: Entry, request: web.Request, headers: dict[str, str], fmt: str,
             target: Target) -> Plan:
        if fmt in ("json", "dag-json"):
            return self._listing_json(entry, request, headers)
        if not request.path.endswith("/"):
            location = request.rel_url.raw_path + "/"
            if request.rel_url.raw_query_string:
                location += "?" + request.rel_url.raw_query_string
            return Plan(301, headers | {"Location": location})
        try:
            index = self.store.resolve(entry.cid, "index.html")
        except NotFound:
            return self._listing_html(entry, request, headers, target)
        index_entry = self.store.stat(index)
        if index_entry.kind != "file":
            return self._listing_html(entry, request, headers, target)
        return self._file(index_entry, "index.html", request, headers, etag=f'"{entry.cid}"')

    def _listing_json(self, entry: Entry, request: web.Request, headers: dict[str, str]) -> Plan:
        page = listing_page(request)
        etag = f'"{entry.cid}.dir.json"'
        if page is not None:
            tag = hashlib.sha256(repr(page).encode()).hexdigest()[:16]
            etag = f'"{entry.cid}.dir.{tag}.json"'
        headers |= {"Content-Type": JSON_TYPE, "ETag": etag}
        if etag_matches(request.headers.get("If-None-Match", ""), etag):
            return Plan(304, headers)
        if page is not None:
            return self._listing_page(entry.cid, *page, headers)
        # Every entry's block is read for its row: one pass before the status makes a block
        # not held here NotFound while the request can still fetch the DAG from the mesh (a
        # partial DAG, as a peer that ran chunks of a large input holds, was a cut body for
        # good after its 512th entry; review rr of session 50, RR-1), nothing held at once
        missing = next((link.cid for link in self.store.dir_links(entry.cid)
                        if not self.store.has(link.cid)), None)
        if missing is not None:
            raise NotFound(f"block {missing} of directory {entry.cid} is not held here",
                           field="cid")
        links = self.store.dir_links(entry.cid)
        return Plan(200, headers, stream=_primed(self._json_rows(entry.cid, links)))

    def _listing_page(self, cid: str, limit: int, after: str | None,
                      headers: dict[str, str]) -> Plan:
        """One page of the JSON listing: its rows as the whole listing's, in its order, and
        `Next`, the cursor of the next page (None after the last). A page is read whole
        before the status (a block not held here is NotFound, fetched from the mesh), at most
        MAX_PAGE_ROWS rows: the shards before its cursor are not read (`dir_links`)."""
        entries, more = self.store.ls_page(cid, after, limit)  # (names checked, as ls)
        links = [{"Name": e.path, "Hash": e.cid, "Size": e.size, "Type": e.kind}
                 for e in entries]
        body = json.dumps({"Hash": cid, "Links": links, "Next": more}, ensure_ascii=False)
        return Plan(200, headers, body=body.encode())

    def _json_rows(self, cid: str, links: Iterable[DirLink]) -> Iterator[bytes]:
        """The JSON listing `{"Hash", "Links": [{"Name", "Hash", "Size", "Type"}]}` in pieces
        of LISTING_ROWS entries, in the directory's order (a HAMT's bucket order, as boxo
        lists it: never all held): each entry's own block is read for its kind and file
        size, nothing below it; StoreError at an unsafe name (`unixfs.check_name`)."""
        yield f'{{"Hash": {json.dumps(cid)}, "Links": ['.encode()
        sep = ""
        links = iter(links)  # (a list's islice would start again at each piece: RR-6)
        while rows := list(islice(links, LISTING_ROWS)):
            piece = []
            for link in rows:
                check_name(link.name)  # as ls: a name that could not be a path is refused
                child = self.store.stat(link.cid)
                size = child.size if child.kind == "file" else link.tsize
                piece.append(sep + json.dumps({"Name": link.name, "Hash": link.cid,
                                               "Size": size, "Type": child.kind},
                                              ensure_ascii=False))
                sep = ", "
            yield "".join(piece).encode()
        yield b"]}"

    def _listing_html(self, entry: Entry, request: web.Request, headers: dict[str, str],
                      target: Target) -> Plan:
        """Kubo's listing of the directory's links (each one's Tsize, as boxo: no child is
        read), streamed: the directory's own block and the first rows are read before the
        status, a HAMT's further sub-shards as their rows are reached (its rows in bucket
        order, as boxo's: never all held)."""
        etag = f'"DirIndex-1_CID-{entry.cid}"'
        headers |= {"Content-Type": "text/html; charset=utf-8", "ETag": etag}
        if etag_matches(request.headers.get("If-None-Match", ""), etag):
            return Plan(304, headers)
        links = self.store.dir_links(entry.cid)
        if target.gateway_host:
            page = render_listing(target.root, target.path, links, entry, target.gateway_host)
        else:
            page = render_listing(request.match_info.get("cid") or entry.cid,
                                  request.match_info.get("path", ""), links, entry)
        return Plan(200, headers, stream=_primed(page))

    def _file(self, entry: Entry, name: str, request: web.Request, headers: dict[str, str],
              etag: str | None = None) -> Plan:
        """A file (or a directory's index.html, under the directory's `etag`)."""
        etag = etag or f'"{entry.cid}"'
        head = b"" if "." in name else b"".join(self.store.cat(entry.cid, 0, SNIFF_BYTES))
        mime = sniff_type(name, head)
        headers |= {"Content-Type": mime, "ETag": etag, "Accept-Ranges": "bytes"}
        if "filename" in request.query or request.query.get("download") == "true":
            headers["Content-Disposition"] = _disposition(request, name or entry.cid, mime=mime)
        if etag_matches(request.headers.get("If-None-Match", ""), etag):
            return Plan(304, headers)
        return self._range(entry, request, headers)

    def _range(self, entry: Entry, request: web.Request, headers: dict[str, str]) -> Plan:
        size = entry.size
        header = request.headers.get("Range")
        try:
            span = parse_range(header, size) if header else None
        except ArgError:
            return Plan(416, headers | {"Content-Range": f"bytes */{size}"}, body=b"")
        if span is None:
            return Plan(200, headers, stream=self.store.cat(entry.cid), length=size)
        start, end = span
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
        stream = self.store.cat(entry.cid, start, end - start)
        return Plan(206, headers, stream=stream, length=end - start)


def listing_page(request: web.Request) -> tuple[int, str | None] | None:
    """The page of a directory's JSON listing asked for: (`?limit=`, `?after=`), or None for
    the whole listing, streamed (boxo's and Kubo's listings have no page; a page is ours, for
    a browser that lists a HAMT of millions a page at a time). ArgError naming the bad one."""
    raw, after = request.query.get("limit"), request.query.get("after")
    if raw is None and after is None:
        return None
    limit = PAGE_ROWS
    if raw is not None:
        if not (raw.isascii() and raw.isdecimal() and len(raw) <= 9  # (int() of 4,301
                and 1 <= int(raw) <= MAX_PAGE_ROWS):  # digits raises: RR-6, session 51)
            raise ArgError(f"limit: {raw[:40]!r} is not a number of entries from 1 to "
                           f"{MAX_PAGE_ROWS}", field="limit")
        limit = int(raw)
    if after == "":
        raise ArgError("after: empty; it is the name of the last entry of the page before "
                       "(its Next)", field="after")
    return limit, after


def _ipns_target(record: ipns.Record, rest: str, gateway_host: str = "",
                 content_path: str = "") -> Target:
    """The /ipfs/ content a record's value names, with `rest` below it, cached for its TTL."""
    if not record.value.startswith("/ipfs/"):
        raise IpnsError(f"the record's value {record.value!r} names another IPNS name, which "
                        "this gateway does not follow")
    root, _, sub = record.value[len("/ipfs/"):].partition("/")
    path = "/".join(p for p in (sub.strip("/"), rest) if p)
    return Target(root, path, f"public, max-age={record.ttl_ns // 1_000_000_000}",
                  gateway_host, content_path)


def _record_plan(request: web.Request, name: str, record: ipns.Record) -> Plan:
    """The record itself (?format=ipns-record), as the trustless gateway spec gives it."""
    headers = {
        "Content-Type": ipns.RECORD_TYPE,
        "ETag": f'"{ipns.record_etag(record.raw)}"',
        "Cache-Control": f"public, max-age={record.ttl_ns // 1_000_000_000}",
        "X-Ipfs-Path": request.rel_url.raw_path,
        "X-Content-Type-Options": "nosniff",
        "Content-Disposition": _disposition(request, f"{name}.ipns-record", attachment=True),
    }
    return Plan(200, headers, body=record.raw)


def _block_body(block: bytes, request: web.Request, headers: dict[str, str]) -> Plan:
    """One block's bytes as the body, or the one byte range asked for (206, 416)."""
    header = request.headers.get("Range")
    try:
        span = parse_range(header, len(block)) if header else None
    except ArgError:
        return Plan(416, headers | {"Content-Range": f"bytes */{len(block)}"}, body=b"")
    if span is None:
        return Plan(200, headers, body=block)
    start, end = span
    headers["Content-Range"] = f"bytes {start}-{end - 1}/{len(block)}"
    return Plan(206, headers, body=block[start:end])


def _disposition(request: web.Request, default: str, attachment: bool = False,
                 mime: str | None = None) -> str:
    """Content-Disposition for ?filename= and ?download=true. The name never changes the
    Content-Type; a name whose type differs from the content's (`x.html` on a text file) makes
    the response a download (attachment), so no name turns content into a page."""
    name = request.query.get("filename") or default
    renamed = mime is not None and "." in name and sniff_type(name, b"") != mime
    kind = ("attachment" if attachment or renamed or request.query.get("download") == "true"
            else "inline")
    ascii_name = "".join(ch if " " <= ch <= "~" and ch not in '"\\' else "_" for ch in name)
    return f"{kind}; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name, safe='')}"


def human_bytes(n: int) -> str:
    """`n` bytes as boxo's listing writes sizes (go-humanize's Bytes: SI units, 1 decimal
    below 10): 9 B, 1.2 kB, 83 MB."""
    if n < 10:
        return f"{n} B"
    e = min(math.floor(math.log(n) / math.log(1000)), len(_SI_UNITS) - 1)
    val = math.floor(n / 1000**e * 10 + 0.5) / 10
    return f"{val:.1f} {_SI_UNITS[e]}" if val < 10 else f"{val:.0f} {_SI_UNITS[e]}"


_SI_UNITS = ("B", "kB", "MB", "GB", "TB", "PB", "EB")
_PLAIN_NAME = re.compile(r"[A-Za-z0-9._~-]+")  # the same once %-encoded and HTML-escaped
LISTING_ROWS = 512  # rows per piece of a streamed listing


def _listing_row(base: str, link: DirLink, ipfs: str = "/ipfs/") -> str:
    name = link.name
    if _PLAIN_NAME.fullmatch(name):
        href, shown, filename = f"{base}/{name}", name, name
    else:
        quoted = quote(name, safe="")
        href, shown = html.escape(f"{base}/{quoted}"), html.escape(name)
        filename = html.escape(quote(quoted, safe=""))
    return (f'<tr><td><a href="{href}">{shown}</a></td>'
            f'<td title="Cumulative size of IPFS DAG (data + metadata)">'
            f"{human_bytes(link.tsize)}</td>"
            f'<td><a class="ipfs-hash" translate="no" href="{ipfs}{link.cid}?filename={filename}">'
            f"<code>{link.cid}</code></a></td></tr>")


def render_listing(root: str, path: str, links: Iterable[DirLink], entry: Entry,
                   gateway_host: str = "") -> Iterator[bytes]:
    """An HTML index of directory /ipfs/`root`/`path` in pieces (Kubo's layout: breadcrumbs,
    the directory's DAG size, a `..` backlink below the root, absolute links, each link's
    Tsize, each CID linked with its ?filename=); escaped. On the subdomain gateway
    (`gateway_host`), entries link to paths of the content's own origin, and breadcrumbs and
    CIDs to the path gateway of `//gateway_host` (boxo's layout)."""
    segments = [s for s in path.split("/") if s]
    quoted = [quote(seg, safe="") for seg in segments]
    ipfs = f"//{gateway_host}/ipfs/" if gateway_host else "/ipfs/"
    at = ipfs + root
    crumbs = [f'<a href="{html.escape(at)}">{html.escape(root)}</a>']
    for seg, q in zip(segments, quoted, strict=True):
        at += "/" + q
        crumbs.append(f'<a href="{html.escape(at)}">{html.escape(seg)}</a>')
    base = "".join("/" + q for q in quoted) if gateway_host else at  # where entries are
    title = html.escape("/ipfs/" + "/".join([root, *segments]) + "/")
    head = [f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>{title}</title></head>'
            f"<body><h1>Index of /ipfs/{'/'.join(crumbs)}</h1>"
            f"<p><code>{html.escape(entry.cid)}</code> {human_bytes(entry.size)}</p>"
            "<table><tr><th>Name</th><th>Size</th><th>CID</th></tr>"]
    if segments:
        head.append(f'<tr><td><a href="{html.escape(base)}/..">..</a></td><td></td><td></td>'
                    "</tr>")
    rows = iter(links)
    yield "".join(head).encode()
    while piece := list(islice(rows, LISTING_ROWS)):
        yield "".join([_listing_row(base, link, ipfs) for link in piece]).encode()
    yield b"</table></body></html>"


def _primed(stream: Iterator[bytes]) -> Iterator[bytes]:
    """`stream` with its first two pieces read now (a listing's head and first rows: a block
    missing there is NotFound while the request can still fetch it from the mesh and a status
    can still tell), the rest as it is pulled."""
    return chain(list(islice(stream, 2)), stream)


def _error(err: HttpError) -> web.Response:
    """The API's JSON error body, with the gateway's status (peer/errors_http.py) and CORS."""
    return web.json_response(err.json(), status=err.status, headers=CORS | ISOLATION)


# Content is never script in the UI's origin (issue 10): every /ipfs/ response is a sandbox
# without scripts, forms, plugins or popups, in an opaque origin (no cookies, no same-origin
# API calls), and browsers take its Content-Type as given instead of sniffing HTML in it.
# Media (WAV in <audio>), images and fetch() reads of content ignore both headers.
ISOLATION = {"Content-Security-Policy": "sandbox",
             "X-Content-Type-Options": "nosniff"}


# Content-addressed data is public and immutable: any origin may read it (a web UI served
# by one peer can use another peer as its gateway).
CORS = {"Access-Control-Allow-Origin": "*",
        "Access-Control-Allow-Methods": "GET, HEAD, OPTIONS",
        "Access-Control-Allow-Headers": "Content-Type, Range, User-Agent, X-Requested-With, Accept",
        "Access-Control-Expose-Headers":
            "Content-Range, Content-Length, ETag, X-Ipfs-Path, X-Ipfs-Roots, X-Chunked-Output, "
            "X-Stream-Output"}


def _text_error(status: int, message: str) -> web.Response:
    """An error of the subdomain gateway's Host and redirect step: plain text, as boxo's."""
    return web.Response(status=status, text=message + "\n", headers=CORS | ISOLATION)


async def preflight(request: web.Request) -> web.Response:
    return web.Response(status=204, headers=CORS)


async def _send(request: web.Request, plan: Plan, exports: Exports) -> web.StreamResponse:
    plan.headers.update(CORS | ISOLATION)
    if plan.stream is None:
        return web.Response(status=plan.status, headers=plan.headers, body=plan.body)
    body = request.method != "HEAD"
    turn = body and plan.expands
    if turn:
        try:
            exports.enter()
        except Unavailable as exc:
            await asyncio.to_thread(getattr(plan.stream, "close", lambda: None))
            busy = _error(http_error(exc, Surface.GATEWAY))
            busy.headers["Retry-After"] = str(EXPORTS_RETRY_AFTER_S)
            return busy
    try:
        return await _stream(request, plan, body, exports.pool if plan.export else None)
    finally:
        if turn:
            exports.leave()


async def _stream(request: web.Request, plan: Plan, body: bool,
                  pool: ThreadPoolExecutor | None) -> web.StreamResponse:
    assert plan.stream is not None
    loop = asyncio.get_running_loop()
    first = None
    if body:  # before the status is sent: a DAG too deep or corrupt at its start is an error
        try:
            first = await loop.run_in_executor(pool, next, plan.stream, None)
        except BanzaiError as exc:
            await loop.run_in_executor(pool, getattr(plan.stream, "close", lambda: None))
            return _error(http_error(exc, Surface.GATEWAY))
    resp = web.StreamResponse(status=plan.status, headers=plan.headers)
    if plan.length is not None:
        resp.content_length = plan.length
    await write_stream(request, resp, plan.stream, first=first, body=body, pool=pool)
    return resp


READ_AHEAD_BYTES = 1 << 20  # what one worker-thread hop pulls from a stream (>= 1 piece)


def _take(stream: Iterator[bytes], max_bytes: int) -> list[bytes]:
    """The next pieces of `stream`, at least one and about `max_bytes` in all; [] at its end.
    A worker thread's side: reading and verifying blocks blocks."""
    pieces: list[bytes] = []
    n = 0
    for piece in stream:
        pieces.append(piece)
        n += len(piece)
        if n >= max_bytes:
            break
    return pieces


async def write_stream(request: web.Request, resp: web.StreamResponse, stream: Iterator[bytes],
                       *, first: bytes | None = None, body: bool = True,
                       pool: ThreadPoolExecutor | None = None) -> None:
    """Prepare `resp` and write `stream` (after `first`); content that vanishes or breaks
    mid-stream cuts the connection, after a last line naming why when the response has no
    Content-Length (a TAR or CAR: boxo writes the error there too, trailers being unread by
    browsers; the archive is corrupt, and the transfer incomplete, either way). The stream is
    pulled in worker threads (of `pool`, else the default pool) about READ_AHEAD_BYTES at a
    time, the next batch while this one is written (so at most two batches are in memory,
    and one thread at a time touches the stream). It is always closed, once no thread holds
    it."""
    loop = asyncio.get_running_loop()
    pending: asyncio.Future[list[bytes]] | None = None
    take = functools.partial(loop.run_in_executor, pool, _take, stream, READ_AHEAD_BYTES)
    try:
        await resp.prepare(request)
        if body:
            pending = take()
            if first is not None:
                await resp.write(first)
            while batch := await pending:
                pending = take()
                for piece in batch:
                    await resp.write(piece)
            pending = None
        await resp.write_eof()
    except BanzaiError as exc:
        pending = None  # the failed read was the pending one: no thread holds the stream
        log.warning("gateway: aborted %s: %s", request.rel_url, exc.message)
        if resp.content_length is None:
            with contextlib.suppress(ConnectionError):
                await resp.write(f"\n\n[Gateway Error: {exc.message}]\n".encode())
        if request.transport is not None:
            request.transport.close()
    except ConnectionResetError:  # the client left (a fetch that gave up): nothing to answer
        log.debug("gateway: the client of %s left", request.rel_url)
    finally:
        if pending is not None:  # a read ahead still runs: let it end before closing
            with contextlib.suppress(Exception):
                await pending
        close = getattr(stream, "close", None)
        if close is not None:
            await loop.run_in_executor(pool, close)
