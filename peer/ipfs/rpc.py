"""A subset of the Kubo RPC API (/api/v0/...) over a Store, for IPFS clients.

Routes (POST only, as Kubo): add, cat, pin/add, pin/ls, pin/rm, repo/gc, dag/put, dag/export,
dag/import, block/get, id, version. Request options and response bodies follow Kubo 0.39:
newline-delimited JSON for streamed objects (`X-Chunked-Output: 1`), raw bytes with
`X-Stream-Output: 1` for readers.
Errors are Kubo's `{"Message", "Code", "Type": "error"}`, but with 400 for bad input or missing
content (Kubo answers 500 for every error) and 501 for options this store cannot honour; 404 is
never used because Kubo's clients read it as "command not found" (the map: peer/errors_http.py).

Store calls run in worker threads; uploads and CARs are spooled to a temp directory first.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import platform
import sys
import tempfile
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol
from urllib.parse import unquote, urlsplit

from aiohttp import BodyPartReader, MultipartReader, web
from aiohttp.http_exceptions import BadHttpMessage

from peer import __version__, jsontext
from peer.dataentry import remove_tree
from peer.errors import (
    ArgError,
    BadCID,
    BadDag,
    BanzaiError,
    Forbidden,
    IpnsError,
    NotFound,
    TooLarge,
    Unsupported,
)
from peer.errors_http import HttpError, Surface, http_error, unexpected
from peer.ipfs import car, parse_cid
from peer.ipfs.dagput import Blocks
from peer.ipfs.gateway import write_stream
from peer.ipfs.ipns import MAX_RECORD_BYTES, RPC_ORIGIN, IpnsNames
from peer.ipfs.publish import IpnsService, parse_duration
from peer.ipfs.store import Entry, GcStats, Store
from peer.ipfs.unixfs import MAX_DEPTH
from peer.log import EventType

log = logging.getLogger(__name__)
# The Kubo release whose RPC shapes this module follows; reported as `Version` so clients that
# select behaviour by daemon version pick the current one.
KUBO_COMPAT_VERSION = "0.39.0"
AGENT = f"banzai/{__version__}"
CHUNK = 1 << 20
STREAM_HEADERS = {"Trailer": "X-Stream-Error", "Vary": "Origin"}
JSON_STREAM = {**STREAM_HEADERS, "Content-Type": "application/json", "X-Chunked-Output": "1"}
BYTES_STREAM = {**STREAM_HEADERS, "Content-Type": "text/plain", "X-Stream-Output": "1"}
# `ipfs add` options whose non-default values change CIDs or storage in ways we cannot honour.
_ADD_FIXED = {
    "trickle": "false", "only-hash": "false", "inline": "false", "nocopy": "false",
    "fscache": "false", "preserve-mode": "false", "preserve-mtime": "false",
}
_ADD_VALUES = {"chunker": ("size-262144",), "hash": ("sha2-256",)}
_DIR_TYPE = "application/x-directory"
# dag/put: the codecs read and written (Kubo also reads and writes others through plugins)
_PUT_INPUT = ("dag-json", "dag-cbor", "json")
_PUT_STORE = ("dag-cbor", "dag-json")
MAX_BLOCK_BYTES = 1 << 20  # Kubo's bound on a block (bitswap's), unless allow-big-block
MAX_BIG_BLOCK_BYTES = 4 << 20  # ours with allow-big-block (the store's block bound)
# dag/put: the input of one node is at most this many times the block bound, unless it is
# DAG-CBOR kept as DAG-CBOR (then it is the block, and the bound is the block's). Kubo bounds
# only the block it made, after decoding and encoding; we bound the input first (4 MiB of
# it took seconds of CPU and 70-80 MB of memory to decode). Compact DAG-JSON is about twice
# the DAG-CBOR block it makes at most (`[0,0,...]`), DAG-CBOR up to 4.5 times its DAG-JSON
# (arrays of 64-bit floats such as 1.0): 4 leaves room for whitespace. A node past it is
# refused even where Kubo would make a block within the bound.
MAX_PUT_INPUT_FACTOR = 4
_TRUE = ("1", "t", "true", "")
_FALSE = ("0", "f", "false")


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
OnAdded = Callable[[list[str]], None]
Collect = Callable[[], Awaitable[GcStats]]
# Kubo's message (boxo pinner.ErrNotPinned): clients match on it.
NOT_PINNED = "not pinned or pinned indirectly"


class _Config(Protocol):
    @property
    def data_dir(self) -> Path: ...
    @property
    def max_upload_bytes(self) -> int: ...


class _Collector(Protocol):
    async def collect(self) -> GcStats: ...  # gc keeping what live jobs use, grace period


class Host(Protocol):
    """What node_options reads from a peer.node.Node."""

    @property
    def peer_id(self) -> str: ...
    @property
    def cfg(self) -> _Config: ...
    @property
    def janitor(self) -> _Collector: ...
    @property
    def ipns(self) -> IpnsService: ...  # IPNS keys, records and publishing
    def emit(self, typ: EventType, payload: dict[str, Any]) -> Any: ...
    def durable_now(self, ev: Any) -> None: ...  # raises (StorageFull...) unless on disk
    def flush(self) -> None: ...
    def unpinned(self, cids: list[str]) -> None: ...  # e.g. unpin in Kubo too
    async def inline_landed(self) -> None: ...  # the inline outputs' pins written so far


def node_options(node: Host) -> dict[str, Any]:
    """add_routes keyword arguments for a peer: its id, data dir, upload bound, and a PROVIDE
    event for every root added or pinned (so other peers can fetch it from this one)."""

    def provide(cids: list[str]) -> None:
        node.durable_now(node.emit(EventType.PROVIDE, {"cids": cids}))

    return {"peer_id": node.peer_id, "tmp_dir": node.cfg.data_dir,
            "max_upload_bytes": node.cfg.max_upload_bytes, "on_added": provide,
            "on_removed": node.unpinned, "collect": node.janitor.collect,
            "names": node.ipns.names, "ipns": node.ipns, "settle": node.inline_landed}


def add_routes(
    app: web.Application,
    store: Store,
    *,
    peer_id: str = "",
    tmp_dir: Path | None = None,
    max_upload_bytes: int = 4 * 1024**3,
    on_added: OnAdded | None = None,
    on_removed: OnAdded | None = None,
    collect: Collect | None = None,
    names: IpnsNames | None = None,
    refused: Counter[str] | None = None,
    ipns: IpnsService | None = None,
    settle: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Register POST /api/v0/{add,cat,pin/add,pin/ls,pin/rm,repo/gc,dag/export,dag/import,
    block/get,id,version} and, with `names` (the IPNS records this peer holds), routing/put
    and name/resolve.

    Uploads are spooled under `tmp_dir` (default: the system temp dir), at most
    `max_upload_bytes` per request; `on_added(cids)` is told about new roots (e.g. to provide),
    `on_removed(cids)` about removed pins; `collect` is repo/gc (default: the store's gc);
    `refused` counts bad input refused, by command and reason (for /api/health); `settle`
    is awaited before a pin command reads or changes the pins (a peer's inline outputs: their
    pins are written by a thread shortly after the output is done).
    """
    rpc = KuboRpc(store, peer_id, tmp_dir, max_upload_bytes, on_added)
    rpc.refused = refused if refused is not None else Counter()
    rpc.on_removed = on_removed
    rpc.collect = collect or (lambda: asyncio.to_thread(store.gc))
    if settle is not None:
        rpc.settle = settle
    routes: dict[str, Handler] = {
        "add": rpc.add, "cat": rpc.cat, "pin/add": rpc.pin_add, "pin/ls": rpc.pin_ls,
        "pin/rm": rpc.pin_rm, "repo/gc": rpc.repo_gc,
        "dag/put": rpc.dag_put, "dag/export": rpc.dag_export, "dag/import": rpc.dag_import,
        "block/get": rpc.block_get,
        "id": rpc.id, "version": rpc.version,
    }
    if names is not None:
        ipns_rpc = IpnsRpc(names, rpc.refused)
        routes |= {"routing/put": ipns_rpc.routing_put, "name/resolve": ipns_rpc.name_resolve}
    if ipns is not None:
        keys_rpc = KeysRpc(ipns)
        keys_rpc.store = store
        routes |= {"key/gen": keys_rpc.key_gen, "key/list": keys_rpc.key_list,
                   "key/ls": keys_rpc.key_list, "name/publish": keys_rpc.name_publish}
    for name, handler in routes.items():
        app.router.add_post(f"/api/v0/{name}", _guarded(handler))
    app.on_cleanup.append(rpc.close)


# --- errors and options ------------------------------------------------------------------------


def kubo_error(err: HttpError) -> web.Response:
    """Kubo's error body ({"Message", "Code", "Type": "error"}) with the mapped status."""
    body = json.dumps(err.kubo_json(), separators=(",", ":"))
    return web.Response(text=body + "\n", status=err.status, content_type="application/json",
                        headers={"Vary": "Origin"})


def _guarded(handler: Handler) -> Handler:
    """Refuse cross-origin browser requests (as Kubo) and map errors to Kubo's shape; the
    statuses come from peer.errors_http (no 404 here: Kubo's clients read it as "command not
    found")."""

    async def run(request: web.Request) -> web.StreamResponse:
        try:
            origin = request.headers.get("Origin")
            if origin and urlsplit(origin).netloc != request.host:
                raise Forbidden("cross-origin RPC requests are not allowed", field="origin")
            return await handler(request)
        except BanzaiError as exc:
            return kubo_error(http_error(exc, Surface.RPC))
        except OSError as exc:  # disk full, permissions: the peer's fault
            log.error("kubo rpc: %s %s failed: %s", request.method, request.path, exc)
            return kubo_error(unexpected(Surface.RPC, request.path))

    return run


def flag(request: web.Request, name: str, default: bool) -> bool:
    """A boolean query option as Kubo parses it (strconv.ParseBool; a bare `?name` is true)."""
    raw = request.query.get(name)
    if raw is None:
        return default
    value = raw.lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ArgError(f"option {name!r}: cannot parse {raw!r} as a boolean", field=name)


def integer(request: web.Request, name: str, default: int | None) -> int | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ArgError(f"option {name!r}: {raw!r} is not an integer", field=name) from None
    if value < 0:
        raise ArgError(f"option {name!r} must be >= 0, got {value}", field=name)
    return value


def args(request: web.Request, name: str = "arg") -> list[str]:
    values = request.query.getall("arg", [])
    if not values:
        raise ArgError(f'argument "{name}" is required', field="arg")
    return values


def split_path(arg: str) -> tuple[str, str]:
    """(root CID, inner path) of `CID[/path]` or `/ipfs/CID[/path]`; BadCID for a bad root."""
    text = arg.strip()
    if text.startswith("/ipns/"):
        raise Unsupported("/ipns/ paths are not supported by this peer", field="arg")
    text = text.removeprefix("/ipfs/").lstrip("/")
    root, _, rest = text.partition("/")
    return str(parse_cid(root)), rest


def add_options(request: web.Request) -> tuple[int, bool, bool, bool]:
    """(cid_version, pin, wrap, quieter) of an add request; 501 for options we cannot honour."""
    version = request.query.get("cid-version", "0")
    if version not in ("0", "1"):
        raise ArgError(f"cid-version must be 0 or 1, got {version!r}", field="cid-version")
    for name, default in _ADD_FIXED.items():
        if flag(request, name, default == "true"):
            raise Unsupported(f"add: option {name}=true is not supported", field=name)
    for name, allowed in _ADD_VALUES.items():
        value = request.query.get(name)
        if value and value not in allowed:
            raise Unsupported(f"add: {name}={value!r} is not supported ({allowed[0]} only)",
                              field=name)
    raw_leaves = flag(request, "raw-leaves", version == "1")
    if raw_leaves != (version == "1"):
        raise Unsupported(
            f"add: raw-leaves={str(raw_leaves).lower()} with cid-version={version} is not "
            "supported (raw leaves go with CIDv1, dag-pb leaves with CIDv0)", field="raw-leaves")
    return (int(version), flag(request, "pin", True), flag(request, "wrap-with-directory", False),
            flag(request, "quieter", False))


# --- add: spooling multipart uploads -----------------------------------------------------------


@dataclass
class Spool:
    """Multipart parts written below `dir`; `tops` are the top-level names in arrival order."""

    dir: Path
    limit: int
    total: int = 0
    anonymous: int = 0

    def __post_init__(self) -> None:
        self.tops: list[str] = []

    def target(self, filename: str | None) -> tuple[Path, str]:
        if not filename:  # stdin-like part: Kubo names it after its CID
            self.anonymous += 1
            rel = f"\x00{self.anonymous}"
        else:
            rel = part_rel(filename)
        top = rel.split("/")[0]
        if top not in self.tops:
            self.tops.append(top)
        return self.dir / rel.replace("\x00", ".stdin-"), rel

    async def part(self, part: BodyPartReader) -> None:
        ctype = part.headers.get("Content-Type", "")
        dest, rel = self.target(part.filename)
        if ctype.startswith(_DIR_TYPE):
            with upload_name(rel):
                dest.mkdir(parents=True, exist_ok=True)
            return
        if ctype.startswith("application/symlink"):
            raise Unsupported(f"add: symlinks are not supported ({part.filename})", field="file")
        with open_upload(dest, rel) as f:
            while chunk := await part.read_chunk(CHUNK):
                self.total += len(chunk)
                if self.total > self.limit:
                    raise TooLarge(f"upload larger than {self.limit} bytes", field="body")
                f.write(chunk)


def part_rel(filename: str) -> str:
    """A multipart part's file name (%-escaped, as clients send it) as a `safe_rel` path;
    ArgError if its %-escapes are not UTF-8 (unquote's default would put U+FFFD in their
    place: another name than the one sent)."""
    try:
        name = unquote(filename, errors="strict")
    except UnicodeDecodeError:
        raise ArgError(f"file name '{shown_name(filename)[:200]}' is not UTF-8 (its %-escaped "
                       "bytes)", field="filename") from None
    return safe_rel(name)


def shown_name(name: str) -> str:
    """`name` for a message: what is not UTF-8 in it (bytes of a header, which aiohttp reads
    as lone surrogates) as \\xNN escapes."""
    try:
        return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a lone surrogate that was no byte
        return name.encode("utf-8", "backslashreplace").decode("utf-8")


def safe_rel(name: str) -> str:
    """An upload's file name as a relative path ('/'-separated; '\\' read as '/'); ArgError
    for one that is empty, climbs out ('..'), holds a NUL, is deeper than unixfs.MAX_DEPTH
    directories or is not UTF-8 (a header's byte such as \\xff: the store names files in
    UTF-8, and the answer is JSON)."""
    if not jsontext.is_text(name):
        raise ArgError(f"file name '{shown_name(name)[:200]}' is not UTF-8", field="filename")
    parts = [p for p in name.replace("\\", "/").split("/") if p not in ("", ".")]
    if not parts or ".." in parts or any("\x00" in p for p in parts):
        raise ArgError(f"bad file name {name!r}", field="filename")
    if len(parts) > MAX_DEPTH:  # (a DAG this peer reads back no deeper; and mkdir recursed)
        raise ArgError(f"file name '{shown_name(name)[:200]}...' is {len(parts)} levels deep, "
                       f"more than {MAX_DEPTH}", field="filename")
    return "/".join(parts)


@contextlib.contextmanager
def upload_name(rel: str) -> Iterator[None]:
    """Around creating `rel` (a safe_rel) in an upload's directory: what the file system
    refuses of the name (another part's file where it needs a directory, or the reverse; a
    name longer than the file system takes) is ArgError naming it, not an OSError."""
    try:
        yield
    except (FileExistsError, NotADirectoryError, IsADirectoryError):
        raise ArgError(f"file name {rel[:200]!r} collides with an earlier part's: a name "
                       "cannot be both a file and a directory", field="filename") from None
    except OSError as exc:
        if exc.errno != errno.ENAMETOOLONG:
            raise
        raise ArgError(f"file name {rel[:200]!r} is too long for the file system",
                       field="filename") from None


def open_upload(dest: Path, rel: str) -> BinaryIO:
    """`dest`, the upload's file `rel`, opened to write (its directories made); ArgError for
    a name the file system refuses (upload_name)."""
    with upload_name(rel):
        dest.parent.mkdir(parents=True, exist_ok=True)
        return dest.open("wb")


@contextlib.contextmanager
def multipart_framing() -> Iterator[None]:
    """Around reading a multipart body with aiohttp: a body that breaks its framing (no
    boundary, a body not matching it, a malformed part header, cut short) is ArgError, not
    aiohttp's ValueError or BadHttpMessage."""
    try:
        yield
    except (ValueError, BadHttpMessage) as exc:
        raise ArgError(f"malformed multipart body: {str(exc)[:200]}", field="body") from None


async def spool_multipart(request: web.Request, spool: Spool) -> None:
    if not request.content_type.startswith("multipart/"):
        raise ArgError("expected a multipart/form-data body (as `ipfs add` sends)", field="body")
    with multipart_framing():
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if isinstance(part, MultipartReader):  # nested multipart (old go-ipfs clients)
                while (inner := await part.next()) is not None:
                    if isinstance(inner, BodyPartReader):
                        await spool.part(inner)
                continue
            await spool.part(part)
    if not spool.tops:
        raise ArgError("add: no file parts in the request", field="file")


# --- add: computing Kubo's output events --------------------------------------------------------


def _name_key(e: Entry) -> bytes:
    return e.path.encode("utf-8")


def tree_events(store: Store, name: str, cid: str) -> list[dict[str, str]]:
    """Kubo's add events for one top-level node: files depth first, then dirs post-order."""
    if store.stat(cid).kind == "file":
        return [event(name, cid, store.dag_size(cid))]
    files: list[dict[str, str]] = []
    dirs: list[dict[str, str]] = []

    def walk(path: str, c: str, size: int) -> None:
        for e in sorted(store.ls(c), key=_name_key):
            child = f"{path}/{e.path}" if path else e.path
            if e.kind == "file":
                files.append(event(child, e.cid, store.dag_size(e.cid)))
            else:
                walk(child, e.cid, e.size)
        dirs.append(event(path, c, size))

    walk(name, cid, store.dag_size(cid))
    return files + dirs


def event(name: str, cid: str, size: int) -> dict[str, str]:
    return {"Name": name, "Hash": cid, "Size": str(size)}


def add_spooled(store: Store, spool: Spool, version: int, pin: bool,
                wrap: bool) -> tuple[list[dict[str, str]], list[str]]:
    """Import what was spooled: (events in Kubo's order, the last being a root; the roots)."""
    events: list[dict[str, str]] = []
    if wrap:
        root = store.add_path(spool.dir, cid_version=version, pin=pin)
        for top in spool.tops:
            name = top.replace("\x00", ".stdin-")
            events += tree_events(store, name, store.resolve(root, name))
        return [*events, event("", root, store.dag_size(root))], [root]
    roots = []
    for top in spool.tops:
        path = spool.dir / top.replace("\x00", ".stdin-")
        cid = store.add_path(path, cid_version=version, pin=pin)
        events += tree_events(store, cid if top.startswith("\x00") else top, cid)
        roots.append(cid)
    return events, roots


# --- the handlers ------------------------------------------------------------------------------


async def _settled() -> None:
    """Nothing to wait for before reading the pins (a store without background pins)."""


class KuboRpc:
    """Handlers; blocking store work runs in worker threads."""

    def __init__(self, store: Store, peer_id: str, tmp_dir: Path | None, max_upload: int,
                 on_added: OnAdded | None) -> None:
        self.store = store
        self.peer_id = peer_id
        self.tmp_dir = tmp_dir
        self.max_upload = max_upload
        self.on_added = on_added
        self.on_removed: OnAdded | None = None
        self.collect: Collect = lambda: asyncio.to_thread(store.gc)
        self.settle: Callable[[], Awaitable[None]] = _settled
        self.refused: Counter[str] = Counter()
        self.converting = asyncio.Semaphore(1)  # dag/put's nodes into blocks: one request at once
        self.blocks = Blocks()  # (a big request's made in a process of their own)

    def _tmp(self, prefix: str) -> Path:
        if self.tmp_dir is not None:
            self.tmp_dir.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=prefix, dir=self.tmp_dir))

    def _provide(self, cids: list[str]) -> None:
        """Tell `on_added` of roots just pinned here (a PROVIDE: other peers may fetch them
        from this one). Never of one left unpinned: the collector may remove it any time."""
        if self.on_added is not None and cids:
            self.on_added(cids)

    async def add(self, request: web.Request) -> web.StreamResponse:
        """`ipfs add`: multipart files/dirs -> ndjson {"Name","Hash","Size"}, root last."""
        version, pin, wrap, quieter = add_options(request)
        flag(request, "progress", False)  # accepted; no progress events are sent
        tmp = self._tmp("kubo-add-")
        try:
            spool = Spool(tmp, self.max_upload)
            await spool_multipart(request, spool)
            events, roots = await asyncio.to_thread(
                add_spooled, self.store, spool, version, pin, wrap)
        finally:
            await asyncio.to_thread(remove_tree, tmp, ignore_errors=True)
        if quieter:
            events = events[-1:]
        if pin:  # only what is pinned is provided (as dag/put, block/put, dag/import)
            self._provide(roots)
        return await send_json_lines(request, events)

    async def cat(self, request: web.Request) -> web.StreamResponse:
        """`ipfs cat`: file bytes of each arg, from `offset`, at most `length` in all."""
        offset = integer(request, "offset", 0) or 0
        length = integer(request, "length", None)
        targets = args(request, "ipfs-path")
        files = await asyncio.to_thread(self._files, targets)
        size = sum(e.size for e in files)
        todo = max(0, size - offset) if length is None else max(0, min(length, size - offset))
        return await send_bytes(request, self._cat(files, offset, todo), todo)

    def _files(self, targets: list[str]) -> list[Entry]:
        out = []
        for arg in targets:
            root, rest = split_path(arg)
            entry = self.store.stat(self.store.resolve(root, rest))
            if entry.kind != "file":
                raise ArgError(f"{arg} is a directory, not a file", field="arg")
            out.append(entry)
        return out

    def _cat(self, files: list[Entry], offset: int, todo: int) -> Iterator[bytes]:
        for entry in files:
            if todo <= 0:
                return
            if offset >= entry.size:
                offset -= entry.size
                continue
            take = min(todo, entry.size - offset)
            yield from self.store.cat(entry.cid, offset, take)
            todo -= take
            offset = 0

    async def block_get(self, request: web.Request) -> web.StreamResponse:
        """`ipfs block get`: the raw bytes of one block."""
        (target,) = args(request, "cid")[:1]
        block = await asyncio.to_thread(self._block, target)
        return await send_bytes(request, iter([block]), len(block))

    def _block(self, target: str) -> bytes:
        root, rest = split_path(target)
        return self.store.get_block(self.store.resolve(root, rest) if rest else root)

    async def pin_add(self, request: web.Request) -> web.StreamResponse:
        """`ipfs pin add`: recursive pins only -> {"Pins": [cid...]}."""
        if not flag(request, "recursive", True):
            raise Unsupported("pin/add: direct (non-recursive) pins are not supported",
                              field="recursive")
        flag(request, "progress", False)
        targets = args(request, "ipfs-path")
        await self.settle()
        pinned = await asyncio.to_thread(self._pin_all, targets)
        self._provide(pinned)
        return web.json_response({"Pins": pinned}, headers={"Vary": "Origin"})

    def _pin_all(self, targets: list[str]) -> list[str]:
        cids = []
        for arg in targets:
            root, rest = split_path(arg)
            cids.append(self.store.resolve(root, rest) if rest else root)
        for cid in cids:
            self.store.pin(cid, explicit=True)
        return cids

    async def pin_rm(self, request: web.Request) -> web.StreamResponse:
        """`ipfs pin rm`: remove recursive pins -> {"Pins": [cid...]}, and {"Notes": {cid:
        why}} for the pins an earlier release made under a CID refused now (`_earlier_pin`:
        not Kubo's); Kubo's error for an arg that is not pinned (then nothing is unpinned).
        The blocks go at the next gc."""
        flag(request, "recursive", True)
        targets = args(request, "ipfs-path")
        await self.settle()  # else a pin written after this unpin would undo it
        removed, notes = await asyncio.to_thread(self._unpin_all, targets)
        if self.on_removed is not None:
            self.on_removed(removed)
        body: dict[str, Any] = {"Pins": removed, **({"Notes": notes} if notes else {})}
        return web.json_response(body, headers={"Vary": "Origin"})

    def _unpin_all(self, targets: list[str]) -> tuple[list[str], dict[str, str]]:
        pinned = set(self.store.pins())
        cids, notes = [], {}
        earlier: dict[str, str] | None = None  # (read once, at the first arg refused)
        for arg in targets:
            try:
                root, rest = split_path(arg)
            except BadCID as e:
                if earlier is None:
                    earlier = self.store.earlier_pins()
                cid, why = _earlier_pin(arg, e, earlier)
                notes[cid] = (f"pinned by an earlier release under a CID refused now ({why}): "
                              "unpinned, its blocks go at the next gc")
                cids.append(cid)
                continue
            cid = self.store.resolve(root, rest) if rest else str(parse_cid(root))
            if cid not in pinned:
                raise NotFound(NOT_PINNED, field="arg")
            cids.append(cid)
        for cid in dict.fromkeys(cids):
            with contextlib.suppress(NotFound):  # unpinned meanwhile
                self.store.unpin(cid, lenient=cid in notes)
        return list(dict.fromkeys(cids)), notes


    async def repo_gc(self, request: web.Request) -> web.StreamResponse:
        """`ipfs repo gc`: one {"Key": {"/": cid}} line per removed block (CIDv1 raw, as Kubo),
        keeping what live jobs use and blocks written in the grace period."""
        flag(request, "quiet", False)
        flag(request, "stream-errors", False)
        stats = await self.collect()
        return await send_json_lines(request, [{"Key": {"/": c}} for c in stats.removed])

    async def pin_ls(self, request: web.Request) -> web.StreamResponse:
        """`ipfs pin ls`: {"Keys": {cid: {"Type", "Name"}}}, or ndjson with `stream=true`."""
        kind = request.query.get("type", "all")
        if kind not in ("all", "recursive", "direct", "indirect"):
            raise ArgError(f"invalid type {kind!r}, must be one of direct, indirect, recursive "
                           "or all", field="type")
        await self.settle()
        keys = await asyncio.to_thread(self._pin_keys, kind, request.query.getall("arg", []))
        if flag(request, "stream", False):
            lines = [{"Cid": cid, "Type": t, "Name": ""} for cid, t in keys.items()]
            return await send_json_lines(request, lines)
        body = {"Keys": {cid: {"Type": t, "Name": ""} for cid, t in keys.items()}}
        return web.json_response(body, headers={"Vary": "Origin"})

    def _pin_keys(self, kind: str, targets: list[str]) -> dict[str, str]:
        pins = self.store.pins()
        recursive = {parse_cid(c).key: c for c in pins}
        want_indirect = kind in ("all", "indirect") or bool(targets)
        indirect = self._indirect(pins, recursive) if want_indirect else {}
        if targets:
            return self._pin_lookup(targets, recursive, indirect, kind)
        out: dict[str, str] = {}
        if kind in ("all", "recursive"):
            out |= {c: "recursive" for c in pins}
        if kind in ("all", "indirect"):
            out |= dict.fromkeys(indirect, "indirect")
        return out

    def _indirect(self, pins: list[str], recursive: dict[str, str]) -> dict[str, str]:
        """cid -> the pin it is reachable through, for blocks below pins (not pins themselves)."""
        out: dict[str, str] = {}
        for root in pins:
            try:
                for cid, _ in self.store.dag(root):
                    key = parse_cid(cid).key
                    if key not in recursive and cid not in out:
                        out[cid] = root
            except NotFound:
                continue
        return out

    def _pin_lookup(self, targets: list[str], recursive: dict[str, str],
                    indirect: dict[str, str], kind: str) -> dict[str, str]:
        out: dict[str, str] = {}
        for arg in targets:
            root, rest = split_path(arg)
            cid = self.store.resolve(root, rest) if rest else root
            key = parse_cid(cid).key
            if key in recursive and kind in ("all", "recursive"):
                out[cid] = "recursive"
            elif cid in indirect and kind in ("all", "indirect"):
                out[cid] = f"indirect through {indirect[cid]}"
            else:
                raise ArgError(f"path '{arg}' is not pinned", field="arg")
        return out

    async def dag_put(self, request: web.Request) -> web.StreamResponse:
        """`ipfs dag put`: each multipart file is one node in `input-codec`, stored as one
        block in `store-codec` (CIDv1, sha2-256) -> one {"Cid": {"/": cid}} line each. A
        DAG-CBOR input must be canonical (400 naming the rule it breaks; Kubo re-encodes it):
        nothing is stored unless every node is valid."""
        in_codec = request.query.get("input-codec", "dag-json")
        out_codec = request.query.get("store-codec", "dag-cbor")
        if in_codec not in _PUT_INPUT:
            raise Unsupported(f"dag/put: input-codec {in_codec!r} is not supported "
                              f"({', '.join(_PUT_INPUT)})", field="input-codec")
        if out_codec not in _PUT_STORE:
            raise Unsupported(f"dag/put: store-codec {out_codec!r} is not supported "
                              f"({', '.join(_PUT_STORE)})", field="store-codec")
        if request.query.get("hash", "sha2-256") != "sha2-256":
            raise Unsupported("dag/put: hash sha2-256 only", field="hash")
        pin = flag(request, "pin", False)
        limit = MAX_BIG_BLOCK_BYTES if flag(request, "allow-big-block", False) \
            else MAX_BLOCK_BYTES
        most = limit if in_codec == out_codec == "dag-cbor" else MAX_PUT_INPUT_FACTOR * limit
        try:
            nodes = await _parts(request, min(self.max_upload, 16 * MAX_BIG_BLOCK_BYTES),
                                 part_max=(most, lambda: _over_input(most, limit, out_codec)))
            blocks = await self._blocks(nodes, in_codec, out_codec, limit)
        except BadDag as exc:
            self.refused[f"dag/put.{in_codec}"] += 1
            log.info("dag/put refused: %s", exc.message)
            raise
        cids = await asyncio.to_thread(self._put_blocks, blocks, pin)
        if pin:
            self._provide(cids)
        return await send_json_lines(request, [{"Cid": {"/": c}} for c in cids])

    async def _blocks(self, nodes: list[bytes], in_codec: str, out_codec: str,
                      limit: int) -> list[tuple[str, bytes]]:
        """The (CID, block) of each dag/put node, made in a worker thread (a big request's
        in a process, peer.ipfs.dagput: in a thread, json's and cbor2's C decoders hold the
        GIL, and so the loop, for up to half a second), one request's nodes at a time:
        decoding and encoding a node is up to seconds of CPU (on the loop, every other
        request waited), and several at once would take the default pool's threads that
        store calls wait for. The turn is held until the thread ends, even when the request
        is cancelled meanwhile."""
        await self.converting.acquire()
        try:
            work = asyncio.get_running_loop().run_in_executor(
                None, self.blocks.make, nodes, in_codec, out_codec, limit)
        except BaseException:
            self.converting.release()
            raise
        work.add_done_callback(self._blocks_done)
        return await asyncio.shield(work)

    async def close(self, app: web.Application | None = None) -> None:
        """End dag/put's process (the app's cleanup)."""
        await asyncio.to_thread(self.blocks.close)

    def _blocks_done(self, work: asyncio.Future[list[tuple[str, bytes]]]) -> None:
        self.converting.release()
        if not work.cancelled():
            work.exception()  # retrieved, also when the request that waited for it is gone

    def _put_blocks(self, blocks: list[tuple[str, bytes]], pin: bool) -> list[str]:
        for cid, data in blocks:
            self.store.put_block(cid, data, checked=True)  # (`_blocks` made them: no second
            if pin:  # decoding, in this process, holding the GIL)
                self.store.pin(cid, explicit=True)
        return [cid for cid, _ in blocks]

    async def dag_export(self, request: web.Request) -> web.StreamResponse:
        """`ipfs dag export`: a CARv1 of the DAG under one CID."""
        (target,) = args(request, "root")[:1]
        root, rest = split_path(target)
        if rest:
            root = await asyncio.to_thread(self.store.resolve, root, rest)
        stream = await asyncio.to_thread(self.store.export_car, root)
        return await send_bytes(request, stream, None)

    async def dag_import(self, request: web.Request) -> web.StreamResponse:
        """`ipfs dag import`: CAR files (multipart) -> one {"Root": ...} line per root."""
        pin_roots = flag(request, "pin-roots", True)
        stats = flag(request, "stats", False)
        tmp = self._tmp("kubo-dag-import-")
        try:
            spool = Spool(tmp, self.max_upload)
            await spool_multipart(request, spool)
            files = [p for p in sorted(tmp.rglob("*")) if p.is_file()]
            result = await asyncio.to_thread(self._import, files, pin_roots, stats)
        finally:
            await asyncio.to_thread(remove_tree, tmp, ignore_errors=True)
        lines: list[dict[str, Any]] = []
        if pin_roots:
            lines = [{"Root": {"Cid": {"/": cid}, "PinErrorMsg": err}} for cid, err in result[0]]
        if stats:
            lines.append({"Stats": {"BlockCount": result[1], "BlockBytesCount": result[2]}})
        if pin_roots:  # only what is pinned is provided (as Kubo's pinned strategy)
            self._provide([cid for cid, err in result[0] if not err])
        return await send_json_lines(request, lines)

    def _import(self, files: list[Path], pin_roots: bool,
                stats: bool) -> tuple[list[tuple[str, str]], int, int]:
        roots: list[str] = []
        count = size = 0
        for path in files:
            with path.open("rb") as f:
                chunks = iter(lambda: f.read(CHUNK), b"")
                roots += self.store.import_car(chunks, max_bytes=self.max_upload)
            if stats:
                count, size = _count_blocks(path, count, size)
        results = []
        for root in dict.fromkeys(roots):
            err = ""
            if pin_roots:
                try:
                    self.store.pin(root, explicit=True)
                except NotFound as exc:
                    err = f"pin: {exc.message}"
            results.append((root, err))
        return results, count, size

    async def id(self, request: web.Request) -> web.StreamResponse:
        """`ipfs id`: this peer (banzai's id; no libp2p key or addresses)."""
        wanted = request.query.get("arg")
        if wanted and wanted != self.peer_id:
            raise ArgError(f"peer {wanted!r} is unknown here (only this peer can be described)",
                           field="arg")
        body = {"ID": self.peer_id, "PublicKey": "", "Addresses": [], "AgentVersion": AGENT,
                "ProtocolVersion": "banzai/1", "Protocols": []}
        return web.json_response(body, headers={"Vary": "Origin"})

    async def version(self, request: web.Request) -> web.StreamResponse:
        """`ipfs version`: the Kubo RPC level emulated, and banzai's own version as Commit."""
        body = {"Version": KUBO_COMPAT_VERSION, "Commit": AGENT, "Repo": "0",
                "System": f"{platform.machine()}/{sys.platform}",
                "Golang": f"none (python {platform.python_version()})"}
        return web.json_response(body, headers={"Vary": "Origin"})


def _ipns_arg(request: web.Request) -> str:
    """The name of an `/ipns/NAME` (or bare NAME) argument."""
    (arg,) = args(request, "key")[:1]
    return arg.strip().removeprefix("/ipns/").strip("/")


def _over_input(most: int, limit: int, out_codec: str) -> BadDag:
    """The refusal of a dag/put node whose input is over `most` bytes, before it is decoded."""
    hint = ("UnixFS `add` chunks big data; allow-big-block raises the bound"
            if limit < MAX_BIG_BLOCK_BYTES else "UnixFS `add` chunks big data; allow-big-block "
            "is on")
    if most == limit:
        return BadDag(f"dag/put: a node of over {most} bytes of canonical DAG-CBOR: its block "
                      f"would be over {limit} bytes ({hint})", field="file")
    return BadDag(f"dag/put: a node's input is over {most} bytes ({MAX_PUT_INPUT_FACTOR} times "
                  f"the block bound): its {out_codec} block would be too big for {limit} bytes "
                  f"({hint})", field="file")


class IpnsRpc:
    """routing/put (an IPNS record for a name, validated before it is kept) and name/resolve."""

    def __init__(self, names: IpnsNames, refused: Counter[str] | None = None) -> None:
        self.names = names
        self.refused: Counter[str] = refused if refused is not None else Counter()

    async def routing_put(self, request: web.Request) -> web.StreamResponse:
        """`ipfs routing put /ipns/NAME FILE`: keep a valid record; 400 saying why if not."""
        name = _ipns_arg(request)
        record = await _one_part(request, MAX_RECORD_BYTES)
        try:
            await asyncio.to_thread(self.names.put, name, record, RPC_ORIGIN)  # (one share)
        except (IpnsError, ArgError) as exc:
            self.refused["routing/put"] += 1
            log.info("routing/put %s refused: %s", name[:80], exc.message)
            raise
        return await send_json_lines(request, [
            {"Extra": "", "ID": "", "Responses": None, "Type": 5}])

    async def name_resolve(self, request: web.Request) -> web.StreamResponse:
        """`ipfs name resolve /ipns/NAME`: the path the name's record holds."""
        record = await asyncio.to_thread(self.names.resolve, _ipns_arg(request))
        return web.json_response({"Path": record.value}, headers={"Vary": "Origin"})


class KeysRpc:
    """key/gen, key/list and name/publish over the peer's keys and IPNS service."""

    def __init__(self, ipns: IpnsService) -> None:
        self.ipns = ipns

    async def key_gen(self, request: web.Request) -> web.StreamResponse:
        """`ipfs key gen NAME`: a new Ed25519 key -> {"Name", "Id"} (Id: its IPNS name)."""
        (name,) = args(request, "name")[:1]
        if request.query.get("type", "ed25519") != "ed25519":
            raise Unsupported("key/gen: only ed25519 keys are supported", field="type")
        info = await asyncio.to_thread(self.ipns.keys.gen, name)
        return web.json_response({"Name": info.name, "Id": info.id}, headers={"Vary": "Origin"})

    async def key_list(self, request: web.Request) -> web.StreamResponse:
        """`ipfs key list`: {"Keys": [{"Name", "Id"}]}, `self` first."""
        keys = await asyncio.to_thread(self.ipns.keys.list)
        return web.json_response({"Keys": [{"Name": k.name, "Id": k.id} for k in keys]},
                                 headers={"Vary": "Origin"})

    async def name_publish(self, request: web.Request) -> web.StreamResponse:
        """`ipfs name publish --key NAME /ipfs/CID`: a signed record every peer holds ->
        {"Name", "Value"}. `resolve` (true) checks the content is here; `lifetime`, `ttl`."""
        (value,) = args(request, "ipfs-path")[:1]
        root, rest = split_path(value)
        path = f"/ipfs/{root}" + (f"/{rest}" if rest else "")
        if flag(request, "resolve", True):
            await asyncio.to_thread(self.ipns_check, root, rest)
        lifetime = parse_duration(request.query.get("lifetime", "48h"), "lifetime")
        ttl = parse_duration(request.query.get("ttl", "1h"), "ttl")
        name = await self.ipns.publish(request.query.get("key", "self"), path, lifetime, ttl)
        return web.json_response({"Name": name, "Value": path}, headers={"Vary": "Origin"})

    def ipns_check(self, root: str, rest: str) -> None:
        """NotFound unless the path to publish resolves in this peer's store."""
        store = self.store
        if store is not None:
            store.resolve(root, rest) if rest else store.stat(root)

    store: Store | None = None


async def _one_part(request: web.Request, max_bytes: int) -> bytes:
    """The bytes of the first multipart part (at most `max_bytes`; TooLarge past it)."""
    if not request.content_type.startswith("multipart/"):
        raise ArgError("a multipart body with the record is required", field="file")
    with multipart_framing():
        reader = await request.multipart()
        part = await reader.next()
        if part is None or not isinstance(part, BodyPartReader):
            raise ArgError("a multipart body with the record is required", field="file")
        data = bytearray()
        while chunk := await part.read_chunk(8192):
            data += chunk
            if len(data) > max_bytes:
                raise TooLarge(f"an IPNS record is at most {max_bytes} bytes", field="file")
    return bytes(data)


async def _parts(request: web.Request, max_bytes: int,
                 part_max: tuple[int, Callable[[], BanzaiError]] | None = None) -> list[bytes]:
    """The bytes of every multipart part, at most `max_bytes` in all (TooLarge past it);
    `part_max`: (the most bytes of one part, the error past them), checked as it arrives."""
    most, too_big = part_max if part_max is not None else (max_bytes, None)
    if not request.content_type.startswith("multipart/"):
        raise ArgError("a multipart body with the node(s) is required", field="file")
    out: list[bytes] = []
    total = 0
    with multipart_framing():
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader):
                raise ArgError("nested multipart bodies are not supported here", field="file")
            data = bytearray()
            while chunk := await part.read_chunk(CHUNK):
                data += chunk
                total += len(chunk)
                if total > max_bytes:
                    raise TooLarge(f"dag/put: more than {max_bytes} bytes of input",
                                   field="file")
                if too_big is not None and len(data) > most:
                    raise too_big()
            out.append(bytes(data))
    if not out:
        raise ArgError('argument "object data" is required', field="file")
    return out


def _count_blocks(path: Path, count: int, size: int) -> tuple[int, int]:
    """Add the blocks (and their data bytes) of a CAR file to `count` and `size`."""
    with path.open("rb") as f:
        _, blocks = car.read_car(iter(lambda: f.read(CHUNK), b""), None)
        for _, data in blocks:
            count, size = count + 1, size + len(data)
    return count, size


# --- responses ---------------------------------------------------------------------------------


async def send_json_lines(request: web.Request, items: list[dict[str, Any]]) -> web.StreamResponse:
    """`items` as newline-delimited JSON, each encoded before the response starts (an error
    there is an error answer, not a second response written into this one's body)."""
    lines = [json_line(item) for item in items]
    resp = web.StreamResponse(headers=JSON_STREAM)
    await resp.prepare(request)
    for line in lines:
        await resp.write(line)
    await resp.write_eof()
    return resp


def json_line(item: dict[str, Any]) -> bytes:
    """One line of JSON in UTF-8; a lone surrogate in a string (UTF-8 cannot hold one) becomes
    U+FFFD, as Go's encoder writes a string that is not UTF-8."""
    text = json.dumps(item, ensure_ascii=False, separators=(",", ":"))
    try:
        return text.encode() + b"\n"
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace").encode() + b"\n"


async def send_bytes(request: web.Request, stream: Iterator[bytes],
                     size: int | None) -> web.StreamResponse:
    """Stream `stream` (pulled in worker threads); on a mid-stream error the connection is cut."""
    headers = dict(BYTES_STREAM)
    if size is not None:
        headers["X-Content-Length"] = str(size)
    first = await asyncio.to_thread(next, stream, None)  # errors before any byte -> JSON
    resp = web.StreamResponse(headers=headers)
    if first is None:
        first = b""
    await write_stream(request, resp, stream, first=first)
    return resp


def _earlier_pin(arg: str, error: BadCID, earlier: Mapping[str, str]) -> tuple[str, str]:
    """`arg` (a CID, or /ipfs/ and a CID) as one of the pins an earlier release made under a
    CID `parse_cid` refuses now (`earlier`: `Store.earlier_pins`; nothing else can remove
    them), and why it is refused; else `error` (the strict parse's) is raised."""
    try:
        cid = str(parse_cid(arg.strip().removeprefix("/ipfs/").strip("/"), lenient=True))
    except BadCID:
        raise error from None
    why = earlier.get(cid)
    if why is None:
        raise error
    return cid, why
