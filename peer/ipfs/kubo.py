"""Kubo backend (`--store kubo`): KuboStore, a thin asyncio client of the Kubo RPC API and
KuboMirror, which copies the working store's DAGs into Kubo. Client and mirror are loop-owned.

Why a thin aiohttp client rather than a library: `ipfshttpclient` is synchronous, was last
released in 2021, sends `raw-leaves=false` by default (so its CIDv1 adds differ from Kubo's
CLI and ours) and refuses Kubo versions past 0.8 without patching; `aioipfs` is untested
after Kubo 0.28. The calls needed are a dozen POSTs to `/api/v0/...`.

Design (why the embedded store stays the working store: peer.ipfs.store): `KuboStore` is the
EmbeddedStore (the peer and its workers read and write it) plus the client of its Kubo node,
and the peer's `KuboMirror`
  (a) imports into Kubo, pinned, every DAG the node hands it (`mirror`: what this peer
      computed or provides, chosen by peer.ipfs.replicate.mirrored), as the CAR of
      `export_car`, so Kubo holds and pins exactly the same CIDs;
  (b) is tried first when a DAG is missing locally (`dag/export`, verified block by block by
      `EmbeddedStore.import_car`): online (bitswap) when a provider of it advertises a Kubo
      node or no peer provides it, else offline (Kubo's own repo only, no waiting);
  (c) advertises Kubo's swarm addresses in this peer's heartbeats and `swarm/connect`s to
      the Kubo nodes other live peers advertise, so Kubo nodes exchange blocks by bitswap.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Callable,
    Coroutine,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from peer.errors import BanzaiError, ConfigError, StoreError
from peer.ipfs.embedded import EmbeddedStore
from peer.ipfs.store import MAX_MATERIALIZE_ENTRIES
from peer.privfile import read_private, replace_private

log = logging.getLogger("banzai.kubo")

_MULTIADDR = re.compile(r"^/(ip4|ip6|dns|dns4|dns6)/([^/]+)/tcp/(\d+)(/http)?/?$")
_MAX_ADDRS = 8  # Kubo swarm addresses carried in a heartbeat
_MAX_REPLY = 1 << 20  # bound on a JSON reply


def parse_api_url(value: str) -> str:
    """`http(s)://HOST:PORT` or a multiaddr `/ip4/HOST/tcp/PORT` -> base URL; ConfigError."""
    v = value.strip()
    m = _MULTIADDR.match(v)
    if m:
        host = f"[{m.group(2)}]" if m.group(1) == "ip6" else m.group(2)
        v = f"http://{host}:{m.group(3)}"
    try:
        u = urlsplit(v)
        port = u.port
    except ValueError:
        port = None
        u = urlsplit("")
    if u.scheme not in ("http", "https") or not u.hostname or port is None \
            or u.path not in ("", "/") or u.query:
        raise ConfigError(f"ipfs_api: expected http://HOST:PORT or /ip4/HOST/tcp/PORT, "
                          f"got {value!r}", field="ipfs_api")
    return v.rstrip("/")


class KuboError(StoreError):
    """Kubo refused a call or could not be reached."""


def _bool(b: bool) -> str:
    return "true" if b else "false"


class KuboClient:
    """Async client of one Kubo RPC API (`/api/v0`); every failure is a KuboError naming it."""

    def __init__(self, api: str, *, timeout_s: float = 300.0) -> None:
        self.url = parse_api_url(api)
        self.timeout_s = timeout_s
        self._session: aiohttp.ClientSession | None = None

    def _s(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=None, connect=5))
        return self._session

    async def call(self, cmd: str, params: Sequence[tuple[str, str]] = (), *,
                   data: Any = None, timeout_s: float | None = None,
                   max_bytes: int = _MAX_REPLY) -> bytes:
        """POST `/api/v0/<cmd>`; the reply body (at most `max_bytes`) or KuboError."""
        where = f"Kubo RPC API at {self.url}"
        timeout = aiohttp.ClientTimeout(total=timeout_s or self.timeout_s, connect=5)
        try:
            async with self._s().post(f"{self.url}/api/v0/{cmd}", params=list(params),
                                      data=data, timeout=timeout) as r:
                body = await _read(r, max_bytes, where)
                if r.status == 200:
                    return body
        except aiohttp.ClientError as e:
            raise KuboError(f"{where} unreachable: {e}") from None
        except TimeoutError:
            raise KuboError(f"{where}: {cmd} timed out") from None
        if r.status == 404:
            raise KuboError(f"{where}: no command {cmd} (HTTP 404; is it a Kubo RPC API?)")
        try:
            msg = str(json.loads(body)["Message"])
        except (ValueError, KeyError, TypeError):
            msg = f"HTTP {r.status}: {body[:200].decode(errors='replace')}"
        raise KuboError(f"{where}: {cmd}: {msg}")

    async def json(self, cmd: str, params: Sequence[tuple[str, str]] = (), **kw: Any) -> Any:
        body = await self.call(cmd, params, **kw)
        try:
            return json.loads(body)
        except ValueError:
            raise KuboError(f"Kubo RPC API at {self.url}: {cmd}: bad JSON reply") from None

    async def version(self) -> str:
        return str((await self.json("version"))["Version"])

    async def id(self) -> dict[str, Any]:
        """{"ID": peer id, "Addresses": [multiaddr/p2p/ID, ...], ...}."""
        return dict(await self.json("id"))

    async def add(self, path: Path, *, cid_version: int = 1, pin: bool = True) -> str:
        """Add a file or directory tree (hidden files included); returns the root CID."""
        params = [("cid-version", str(cid_version)), ("pin", _bool(pin)),
                  ("raw-leaves", _bool(cid_version == 1)), ("quieter", "true")]
        mw = aiohttp.MultipartWriter("form-data")
        # Files as async streams: aiohttp 3.14 stalls on several file-object parts.
        for rel, f in await asyncio.to_thread(lambda: list(_walk(Path(path)))):
            part = mw.append(b"" if f is None else _file_chunks(f),
                             {"Content-Type": "application/octet-stream" if f
                              else "application/x-directory"})
            part.set_content_disposition("form-data", name="file", filename=rel)
        body = await self.call("add", params, data=mw, max_bytes=256 << 20)
        try:
            return str(json.loads(body.decode().strip().splitlines()[-1])["Hash"])
        except (ValueError, IndexError, KeyError, TypeError):
            raise KuboError(f"Kubo RPC API at {self.url}: add: bad reply {body[:200]!r}",
                            ) from None

    async def cat(self, path: str, offset: int = 0, length: int | None = None, *,
                  max_bytes: int = 1 << 30) -> bytes:
        """The bytes of a file (`CID` or `CID/sub/path`)."""
        params = [("arg", path), ("offset", str(offset))]
        if length is not None:
            params.append(("length", str(length)))
        return await self.call("cat", params, max_bytes=max_bytes)

    async def ls(self, path: str) -> list[dict[str, Any]]:
        """One level of a directory: [{"Name", "Hash", "Size", "Type"}, ...]."""
        reply = await self.json("ls", [("arg", path)], max_bytes=64 << 20)
        return [dict(link) for o in reply["Objects"] for link in o["Links"] or ()]

    async def pin_add(self, cid: str) -> None:
        await self.call("pin/add", [("arg", cid)])

    async def pin_rm(self, cid: str) -> None:
        await self.call("pin/rm", [("arg", cid)])

    async def pin_ls(self, cid: str | None = None) -> dict[str, str]:
        """CID -> pin type ("recursive", "direct", "indirect"); {} if `cid` is not pinned."""
        try:
            reply = await self.json("pin/ls", [("arg", cid)] if cid else [("type", "recursive")],
                                    max_bytes=256 << 20)
        except KuboError as e:
            if cid and "not pinned" in e.message:
                return {}
            raise
        return {k: str(v["Type"]) for k, v in (reply.get("Keys") or {}).items()}

    async def dag_export(self, cid: str, *, offline: bool = False, timeout_s: float = 60.0,
                         max_bytes: int = 8 << 30) -> bytes:
        """The CARv1 of the DAG under `cid`; online lets Kubo fetch blocks by bitswap."""
        params = [("arg", cid), ("offline", _bool(offline)), ("timeout", f"{timeout_s:g}s")]
        return await self.call("dag/export", params, timeout_s=timeout_s + 5,
                               max_bytes=max_bytes)

    async def dag_import(self, car: bytes | AsyncIterable[bytes], *,
                         pin: bool = True) -> list[str]:
        """Import a CAR (bytes or a stream of chunks); returns its roots, pinned with `pin`."""
        mw = aiohttp.MultipartWriter("form-data")
        part = mw.append(_once(car) if isinstance(car, bytes) else car,
                         {"Content-Type": "application/vnd.ipld.car"})
        part.set_content_disposition("form-data", name="file", filename="dag.car")
        body = await self.call("dag/import", [("pin-roots", _bool(pin))], data=mw)
        try:
            objs = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
            done = [(str(o["Root"]["Cid"]["/"]), o["Root"].get("PinErrorMsg"))
                    for o in objs if "Root" in o]
        except (ValueError, KeyError, TypeError):
            raise KuboError(f"Kubo RPC API at {self.url}: dag/import: bad reply "
                            f"{body[:200]!r}") from None
        for cid, err in done:
            if err:
                raise KuboError(f"Kubo RPC API at {self.url}: dag/import: pin {cid}: {err}")
        return [cid for cid, _ in done]

    async def repo_gc(self, *, timeout_s: float = 600.0) -> int:
        """Kubo's own `repo gc`; returns how many blocks it removed."""
        body = await self.call("repo/gc", [("quiet", "true")], timeout_s=timeout_s,
                               max_bytes=256 << 20)
        return sum(1 for line in body.splitlines() if line.strip())

    async def swarm_connect(self, addr: str, *, timeout_s: float = 10.0) -> None:
        await self.call("swarm/connect", [("arg", addr), ("timeout", f"{timeout_s:g}s")],
                        timeout_s=timeout_s + 5)

    async def swarm_peers(self) -> list[str]:
        """Peer IDs of the Kubo nodes connected now."""
        reply = await self.json("swarm/peers", max_bytes=16 << 20)
        return [str(p["Peer"]) for p in reply.get("Peers") or ()]

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


async def _read(r: aiohttp.ClientResponse, max_bytes: int, where: str) -> bytes:
    buf = bytearray()
    async for chunk in r.content.iter_chunked(1 << 20):
        buf += chunk
        if len(buf) > max_bytes:
            raise KuboError(f"{where}: reply larger than {max_bytes} bytes")
    return bytes(buf)


def _walk(root: Path) -> Iterator[tuple[str, Path | None]]:
    """(relative name, file or None for a directory), parents before children, name order."""
    if root.is_symlink() or not (root.is_file() or root.is_dir()):
        raise StoreError(f"cannot add {root}: not a regular file or directory")
    yield root.name, (root if root.is_file() else None)
    if root.is_dir():
        for child in sorted(root.iterdir(), key=lambda p: p.name):
            for rel, f in _walk(child):
                yield f"{root.name}/{rel}", f


# -- the private swarm -----------------------------------------------------------------
SWARM_KEY_FILE = "swarm.key"  # in a Kubo repo: read by `ipfs daemon` at start only
SWARM_KEY_COPY = "kubo-swarm.key"  # in the data dir, for an operator to copy
MAX_SWARM_KEY_BYTES = 4096  # (a key is 3 lines, about 100 bytes)


def _read_swarm_key(path: Path) -> bytes | None:
    """The swarm key file at `path` (None if there is none), made 0600 if others may read it."""
    try:
        return read_private(path, "swarm key", "they may join the mesh's private IPFS swarm",
                            MAX_SWARM_KEY_BYTES)
    except FileNotFoundError:
        return None


def _public_bootstrap(repo: Path) -> bool:
    """True if the repo's config bootstraps to peers or has AutoConf on (Kubo's defaults),
    which a Kubo in a private swarm cannot use (it may refuse to start). A config of another
    shape (not an object, or its AutoConf not one) is not known to be private: True."""
    try:
        cfg = json.loads((repo / "config").read_text())
    except (OSError, ValueError, RecursionError):
        return False
    if not isinstance(cfg, dict):
        return True
    auto = cfg.get("AutoConf") or {}
    if not isinstance(auto, dict):
        return True
    return bool(cfg.get("Bootstrap")) or auto.get("Enabled") is not False


def private_swarm(swarm_key: str, repo: Path | None, api: str, data_dir: Path) -> bool:
    """Keep the Kubo node at `api` in the mesh's private swarm (`swarm_key`, the swarm.key
    text derived from the mesh secret). With `repo` (the peer manages that Kubo repo) its
    swarm.key is written when it differs; else the key goes to DATA_DIR/kubo-swarm.key and the
    operator is told how to install it. Returns True if Kubo must restart to take the key."""
    if repo is None:
        copy = data_dir / SWARM_KEY_COPY
        if _read_swarm_key(copy) != swarm_key.encode():
            replace_private(copy, swarm_key.encode())
        log.warning(
            "Kubo at %s is not managed by this peer (no --kubo-repo), so it may be in the public "
            "IPFS network and announce this mesh's CIDs there. To keep it in the mesh's private "
            "swarm: copy %s to its repo as swarm.key (IPFS_PATH/swarm.key, default "
            "~/.ipfs/swarm.key), run `ipfs bootstrap rm --all` and `ipfs config --json "
            "AutoConf.Enabled false`, and restart it; or start this peer with --kubo-repo "
            "IPFS_PATH to have it write the key; or --kubo-public-swarm to keep Kubo public.",
            api, copy)
        return False
    target = repo / SWARM_KEY_FILE
    try:
        same = _read_swarm_key(target) == swarm_key.encode()
    except OSError as e:
        raise ConfigError(f"--kubo-repo: cannot read {target}: {e}", field="kubo_repo") from None
    if not (repo / "config").is_file():
        raise ConfigError(f"--kubo-repo: {repo} is not a Kubo repo (no config file)",
                          field="kubo_repo")
    if _public_bootstrap(repo):
        log.warning("Kubo repo %s bootstraps to public peers or has AutoConf on, which a "
                    "private swarm cannot use: run `IPFS_PATH=%s ipfs bootstrap rm --all` and "
                    "`ipfs config --json AutoConf.Enabled false`, then restart Kubo", repo, repo)
    if same:
        log.info("Kubo repo %s holds the mesh's swarm key: a private swarm", repo)
        return False
    replace_private(target, swarm_key.encode())
    log.warning("wrote the mesh's swarm key to %s: restart the Kubo daemon at %s so that it "
                "joins the mesh's private swarm (Kubo reads swarm.key only at start)", target, api)
    return True


# -- the store and its mirror ----------------------------------------------------------
class KuboStore(EmbeddedStore):
    """The Kubo-backed Store: the embedded working store at `root`, mirrored by the peer's
    KuboMirror into the Kubo node at `api` (`client`; opening one makes no request)."""

    def __init__(self, root: Path, api: str,
                 max_materialize_entries: int = MAX_MATERIALIZE_ENTRIES) -> None:
        super().__init__(root, max_materialize_entries=max_materialize_entries)
        self.client = KuboClient(api)


PeerInfos = Callable[[], Mapping[str, Mapping[str, Any]]]


def kubo_info(info: Mapping[str, Any]) -> tuple[str, list[str]] | None:
    """(Kubo peer id, swarm multiaddrs) from a peer's heartbeat info, if valid."""
    k = info.get("kubo")
    if not isinstance(k, Mapping) or not isinstance(k.get("id"), str) \
            or not isinstance(k.get("addrs"), list) or not 0 < len(k["id"]) <= 128:
        return None
    addrs = [a for a in k["addrs"][:_MAX_ADDRS]
             if isinstance(a, str) and a.startswith("/") and len(a) <= 256]
    return (k["id"], addrs) if addrs else None


class KuboMirror:
    """Write-through mirror of one peer's outputs into Kubo, and Kubo as a first source."""

    def __init__(self, store: KuboStore, self_id: str, peers: PeerInfos,
                 providers: Callable[[str], Iterable[str]], *, fetch_timeout_s: float = 20.0,
                 connect_every_s: float = 1.0, max_bytes: int = 8 << 30) -> None:
        self.client = store.client
        self.store = store
        self.self_id = self_id
        self.peers = peers  # live peers other than this one -> heartbeat info
        self.providers = providers
        self.fetch_timeout_s = fetch_timeout_s
        self.connect_every_s = connect_every_s
        self.max_bytes = max_bytes
        self.kubo_id = ""
        self.addrs: list[str] = []
        self.pushed: set[str] = set()  # CIDs imported and pinned into Kubo
        self.fetched: set[str] = set()  # CIDs that came from Kubo
        self._bg: set[asyncio.Task[None]] = set()
        self._pushing: set[str] = set()
        self._push_slots = asyncio.Semaphore(2)  # concurrent imports into Kubo

    async def start(self) -> None:
        """Check the API and learn Kubo's identity; ConfigError naming the URL if unusable."""
        try:
            version = await self.client.version()
            ident = await self.client.id()
        except (KuboError, KeyError, TypeError) as e:
            msg = e.message if isinstance(e, KuboError) else f"{self.client.url}: bad reply"
            raise ConfigError(f"--ipfs-api: {msg}", field="ipfs_api") from None
        if not isinstance(ident.get("ID"), str):
            raise ConfigError(f"--ipfs-api: {self.client.url} gave no Kubo node ID",
                              field="ipfs_api")
        self.kubo_id = ident["ID"]
        self.addrs = [str(a) for a in ident.get("Addresses") or ()][:_MAX_ADDRS]
        log.info("Kubo %s at %s: node %s, swarm %s", version, self.client.url, self.kubo_id,
                 " ".join(self.addrs) or "(none)")
        self._spawn(self._sync_pins())
        self._spawn(self._connect_loop())

    def info(self) -> dict[str, Any]:
        """What heartbeats carry about this peer's Kubo node."""
        return {"kubo": {"id": self.kubo_id, "addrs": self.addrs}} if self.kubo_id else {}

    def mirror(self, cids: Iterable[str]) -> None:
        """Import these DAGs into Kubo, pinned, in the background (once each); never blocks."""
        for cid in cids:
            if cid not in self.pushed and cid not in self._pushing:
                self._spawn(self.push(cid))

    async def push(self, cid: str) -> None:
        """Import the local DAG of `cid` into Kubo, pinned (logs failures, never raises)."""
        self._pushing.add(cid)
        try:
            async with self._push_slots:
                car = await asyncio.to_thread(self.store.export_car, cid)  # NotFound up front
                roots = await self.client.dag_import(_chunks(car))
            self.pushed.add(cid)
            log.info("mirrored %s into Kubo (roots %s)", cid, ",".join(roots))
        except Exception as e:  # best effort in the background: a block lost mid-stream too
            log.warning("could not mirror %s into Kubo: %s", cid, e)
        finally:
            self._pushing.discard(cid)

    async def fetch(self, cid: str, hints: Sequence[str] = (),
                    max_bytes: int | None = None) -> bool:
        """Fetcher source: make `cid` local from Kubo, its CAR at most `max_bytes` (else the
        mirror's bound); False (never raises) if Kubo can't."""
        online = self._online(cid, hints)
        max_bytes = self.max_bytes if max_bytes is None else max_bytes
        try:
            car = await self.client.dag_export(cid, offline=not online,
                                               timeout_s=self.fetch_timeout_s,
                                               max_bytes=max_bytes)
            await asyncio.to_thread(self.store.import_car, [car], max_bytes=max_bytes)
        except BanzaiError as e:
            log.debug("Kubo does not have %s (%s): %s", cid, "online" if online else "offline",
                      e)
            return False
        self.fetched.add(cid)
        log.info("fetched %s from Kubo (%d bytes, %s)", cid, len(car),
                 "bitswap" if online else "local repo")
        return True

    def _online(self, cid: str, hints: Sequence[str]) -> bool:
        """Ask Kubo to search the network only where a Kubo may hold the data."""
        infos = self.peers()
        provs = {p for c in (cid, *hints) for p in self.providers(c)} - {self.self_id}
        return not provs or any(kubo_info(infos.get(p, {})) for p in provs)

    async def _sync_pins(self) -> None:
        """Mirror what the working store had pinned before this start and Kubo lacks."""
        try:
            have = await self.client.pin_ls()
        except BanzaiError as e:
            log.warning("cannot list Kubo pins: %s", e)
            return
        self.pushed.update(have)
        for cid in await asyncio.to_thread(self.store.pins):
            if cid not in have:
                await self.push(cid)

    async def unpin(self, cids: Sequence[str]) -> None:
        """Retention unpinned these here: unpin them in Kubo too (logs failures, never
        raises; a CID Kubo does not pin is fine)."""
        for cid in cids:
            self.pushed.discard(cid)
            try:
                await self.client.pin_rm(cid)
            except KuboError as e:
                log.debug("Kubo pin rm %s: %s", cid, e)

    async def gc(self) -> None:
        """Run Kubo's repo gc after ours, so Kubo's copy of unpinned outputs goes too."""
        try:
            n = await self.client.repo_gc()
        except KuboError as e:
            log.warning("Kubo repo gc: %s", e)
            return
        if n:
            log.info("Kubo repo gc removed %d block(s)", n)

    async def _connect_loop(self) -> None:
        while True:
            try:
                await self.connect_peers()
            except BanzaiError as e:
                log.debug("kubo swarm: %s", e)
            await asyncio.sleep(self.connect_every_s)

    async def connect_peers(self) -> list[str]:
        """Swarm-connect to the Kubo nodes of live peers not connected yet; returns them."""
        want = {k[0]: k[1] for i in self.peers().values()
                if (k := kubo_info(i)) is not None and k[0] != self.kubo_id}
        if not want:
            return []
        connected = set(await self.client.swarm_peers())
        done = []
        for kid, addrs in want.items():
            if kid in connected:
                continue
            for addr in addrs:
                full = addr if "/p2p/" in addr else f"{addr}/p2p/{kid}"
                try:
                    await self.client.swarm_connect(full)
                except KuboError as e:
                    log.debug("kubo swarm connect %s: %s", full, e)
                    continue
                log.info("Kubo swarm connected to %s", full)
                done.append(kid)
                break
        return done

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        t = asyncio.create_task(coro)
        self._bg.add(t)
        t.add_done_callback(self._bg.discard)

    async def close(self) -> None:
        for t in list(self._bg):
            t.cancel()
        await asyncio.gather(*self._bg, return_exceptions=True)
        await self.client.close()


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data  # a stream: aiohttp warns about large bytes bodies


async def _file_chunks(path: Path, size: int = 1 << 20) -> AsyncIterator[bytes]:
    with path.open("rb") as f:
        while data := await asyncio.to_thread(f.read, size):
            yield data


async def _chunks(it: Iterator[bytes], batch: int = 1 << 20) -> AsyncIterator[bytes]:
    """A blocking byte iterator read in a thread, about `batch` bytes at a time."""

    def take() -> bytes:
        buf = bytearray()
        for piece in it:
            buf += piece
            if len(buf) >= batch:
                break
        return bytes(buf)

    while data := await asyncio.to_thread(take):
        yield data
