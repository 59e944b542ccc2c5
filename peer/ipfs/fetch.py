"""Data between peers: make a DAG complete locally by fetching it as a CAR from a provider's
trustless gateway, every block verified by the store. Many DAGs wanted at once (the items
of a chunk, the item outputs to assemble) come in one CAR per provider from its
`POST /api/car`; whatever that leaves missing is fetched one DAG per request.
Loop-owned; store work in threads."""

from __future__ import annotations

import asyncio
import logging
import tempfile
import threading
from collections import OrderedDict, defaultdict
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import IO, Any

import aiohttp

from peer.cids import parse_cid, verify
from peer.errors import BanzaiError, NotFound, TooLarge
from peer.ipfs.car import MAX_BLOCK_BYTES
from peer.ipfs.gateway import PEER_FETCH_HEADER
from peer.ipfs.store import Store

log = logging.getLogger("banzai.fetch")

BATCH_CIDS = 512  # DAGs per POST /api/car request (the peer accepts up to 1024)
MAX_COMPLETE = 2048  # DAGs remembered complete here, the latest used (a miss walks the DAG)
MAX_CONNECTIONS_PER_PEER = 16  # open at once to one peer (aiohttp's pool: 100 in all, none per
# host), well under a peer's 128 per address (peer/http/limits.py); more requests wait


class RecentSet:
    """A memo of CIDs (e.g. DAGs known complete here) bounded to the `max_entries` added or
    found last: a long-lived peer must not remember every output it ever made (issue 11).
    Thread-safe: DAG walks run in threads."""

    def __init__(self, max_entries: int = MAX_COMPLETE) -> None:
        self.max_entries = max_entries
        self._cids: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()

    def __contains__(self, cid: object) -> bool:
        with self._lock:
            if cid not in self._cids:
                return False
            self._cids.move_to_end(cid)  # type: ignore[arg-type]
            return True

    def __len__(self) -> int:
        return len(self._cids)

    def add(self, cid: str) -> None:
        with self._lock:
            self._cids[cid] = None
            self._cids.move_to_end(cid)
            while len(self._cids) > self.max_entries:
                self._cids.popitem(last=False)

    def update(self, cids: Iterable[str]) -> None:
        for c in cids:
            self.add(c)

    def discard(self, cid: str) -> None:
        with self._lock:
            self._cids.pop(cid, None)

    def clear(self) -> None:
        with self._lock:
            self._cids.clear()


class Fetcher:
    """`ensure(cids)` returns once every DAG is complete locally, or raises NotFound."""

    def __init__(self, store: Store, urls: Callable[[], Mapping[str, str]],
                 providers: Callable[[str], Iterable[str]], self_id: str,
                 timeout_s: float = 300.0, max_bytes: int = 8 << 30,
                 headers: Mapping[str, str] | None = None) -> None:
        self.store = store
        self.urls = urls  # live peer id -> http base url
        self.providers = providers
        self.self_id = self_id
        self.timeout_s = timeout_s
        self.max_bytes = max_bytes
        # the mesh credential (peer.http.tokens.mesh_headers): peers bound beyond loopback
        # serve content to members of the mesh only
        self.headers = {**(headers or {}), PEER_FETCH_HEADER: "1"}
        self.complete = RecentSet()
        self.fetched_bytes = 0
        self._session: aiohttp.ClientSession | None = None
        self._inflight: dict[tuple[str, int | None], asyncio.Task[None]] = {}  # (cid, bound)
        # Tried before other peers' gateways: (cid, hints, max_bytes: the most bytes of its
        # CAR, None for the source's own bound) -> True if it stored the DAG.
        self.first: list[Callable[[str, Sequence[str], int | None], Awaitable[bool]]] = []
        # Writes a DAG this peer keeps in memory (another peer's inline output) into the
        # store, in a thread: True if it did. Tried before anything is fetched.
        self.local: Callable[[str], bool] | None = None

    def mark(self, cid: str) -> None:
        """Note a DAG known to be complete here (e.g. one this peer produced)."""
        self.complete.add(cid)

    def unmark(self, cid: str) -> None:
        """Forget that `cid` was complete here (its blocks' write failed): walked again."""
        self.complete.discard(cid)

    def is_complete(self, cid: str) -> bool:
        """True if every block under `cid` is stored (memoised; the store reads its linking
        blocks, not its raw leaves)."""
        if cid in self.complete:
            return True
        if not self.store.is_complete(cid):
            return False
        self.complete.add(cid)
        return True

    async def ensure(self, cids: Sequence[str], hints: Sequence[str] = (),
                     max_bytes: int | None = None) -> None:
        """Fetch every DAG of `cids` that is incomplete here; `hints` are CIDs whose
        providers probably hold them too (e.g. the directory an item came from).
        `max_bytes`: the most bytes of one CAR (else the fetcher's); TooLarge if every
        peer tried answered and sent more (bytes counted before they are verified: no
        proof of the DAG's size), NotFound if none served it (one that failed otherwise
        may serve it later)."""
        wanted = list(dict.fromkeys(cids))

        def incomplete() -> list[str]:  # one thread hop for the whole list
            return [c for c in wanted if not self.is_complete(c) and not self._written(c)]

        missing = await asyncio.to_thread(incomplete)
        if len(missing) > 1:
            await self._batches(missing, hints, max_bytes)
            missing = await asyncio.to_thread(incomplete)
        await asyncio.gather(*(self._one(c, hints, max_bytes) for c in missing))

    def _written(self, cid: str) -> bool:
        """True if `cid` was kept in memory here and is now complete in the store."""
        return self.local is not None and self.local(cid) and self.is_complete(cid)

    async def _batches(self, cids: list[str], hints: Sequence[str],
                       max_bytes: int | None = None) -> None:
        """Fetch `cids` in one CAR per provider (at most BATCH_CIDS per request); failures
        are left to the per-DAG path."""
        urls = self.urls()
        groups: dict[str, list[str]] = defaultdict(list)
        for c in cids:
            if sources := self._sources(c, hints, urls):
                groups[sources[0]].append(c)

        async def fetch(base: str, group: list[str]) -> None:
            for i in range(0, len(group), BATCH_CIDS):
                part = group[i:i + BATCH_CIDS]
                try:
                    await self._import(f"{base}/api/car", {"cids": part}, max_bytes)
                except (aiohttp.ClientError, TimeoutError, BanzaiError) as e:
                    log.info("%d DAGs in one CAR from %s: %s (fetching one by one)",
                             len(part), base, e)

        await asyncio.gather(*(fetch(b, g) for b, g in groups.items()))

    async def _one(self, cid: str, hints: Sequence[str], max_bytes: int | None = None) -> None:
        """Fetch `cid`, sharing a fetch of it within the same bound under way."""
        key = (cid, max_bytes)
        task = self._inflight.get(key)
        if task is None:
            task = asyncio.create_task(self._fetch(cid, hints, max_bytes))
            self._inflight[key] = task
            task.add_done_callback(lambda _: self._inflight.pop(key, None))
        await asyncio.shield(task)

    def _sources(self, cid: str, hints: Sequence[str],
                 urls: Mapping[str, str] | None = None) -> list[str]:
        urls = self.urls() if urls is None else urls
        order: list[str] = []
        for c in (cid, *hints):
            order += [p for p in self.providers(c) if p in urls and p not in order]
        order += [p for p in urls if p not in order]
        return [urls[p] for p in order if p != self.self_id]

    async def _fetch(self, cid: str, hints: Sequence[str], max_bytes: int | None = None) -> None:
        errors: list[str] = []
        too_large = 0  # (of the len(errors) sources that failed)
        for source in self.first:
            if (await source(cid, hints, max_bytes)
                    and await asyncio.to_thread(self.is_complete, cid)):
                return
        for base in self._sources(cid, hints):
            try:
                await self._import(f"{base}/ipfs/{cid}?format=car", None, max_bytes)
                if await asyncio.to_thread(self.is_complete, cid):
                    return
                errors.append(f"{base}: incomplete CAR")
            except (aiohttp.ClientError, TimeoutError, BanzaiError) as e:
                errors.append(f"{base}: {e}")
                too_large += isinstance(e, TooLarge)
        # (a bound the caller chose: its answer, once every peer tried sent more than it)
        if errors and too_large == len(errors) and max_bytes is not None:
            raise TooLarge(f"{cid}: a CAR of more than {max_bytes} bytes ({'; '.join(errors[:3])})")
        raise NotFound(f"no live peer could provide {cid}"
                       + (f" ({'; '.join(errors[:3])})" if errors else " (no peers known)"))

    async def _import(self, url: str, body: Any = None, max_bytes: int | None = None) -> None:
        """GET `url` (POST `body` as JSON if given), a CAR of at most `max_bytes` (else the
        fetcher's), and import it, every block verified (nothing stored unless the whole
        CAR is valid)."""
        max_bytes = self.max_bytes if max_bytes is None else max_bytes
        with tempfile.TemporaryFile() as spool:  # bounded memory, whatever the size
            size = await self._get(url, spool, body, max_bytes)
            spool.seek(0)
            chunks = iter(lambda: spool.read(1 << 20), b"")
            await asyncio.to_thread(self.store.import_car, chunks, max_bytes=max_bytes)
        self.fetched_bytes += size

    async def _get(self, url: str, out: IO[bytes], body: Any = None,
                   max_bytes: int | None = None) -> int:
        """Stream `url` into `out` (at most max_bytes); returns the byte count."""
        max_bytes = self.max_bytes if max_bytes is None else max_bytes
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout_s, connect=5),
                connector=aiohttp.TCPConnector(limit_per_host=MAX_CONNECTIONS_PER_PEER))
        size = 0
        method = "GET" if body is None else "POST"
        async with self._session.request(method, url, json=body,
                                         headers=self.headers) as r:
            if r.status != 200:
                raise NotFound(f"HTTP {r.status}")
            async for chunk in r.content.iter_chunked(1 << 20):
                size += len(chunk)
                if size > max_bytes:
                    raise TooLarge(f"{url}: more than {max_bytes} bytes")
                out.write(chunk)
        return size

    async def fetch_block(self, cid: str) -> bytes | None:
        """One block's bytes from the first live peer that serves them, verified; None if
        none does (the store calls this to repair a corrupt block, and stores them)."""
        self.complete.clear()  # a block went missing here: the memo of complete DAGs is stale
        for base in self._sources(cid, ()):
            try:
                with tempfile.TemporaryFile() as spool:
                    await self._get(f"{base}/ipfs/{cid}?format=raw", spool,
                                    max_bytes=MAX_BLOCK_BYTES)
                    spool.seek(0)
                    data = spool.read()
                verify(parse_cid(cid), data)
                return data
            except (aiohttp.ClientError, TimeoutError, BanzaiError) as e:
                log.info("block %s from %s: %s", cid, base, e)
        return None

    async def try_ensure(self, cid: str) -> bool:
        """ensure([cid]) that reports failure as False (for the gateway)."""
        try:
            await self.ensure([cid])
        except BanzaiError:
            return False
        return True

    async def close(self) -> None:
        for t in list(self._inflight.values()):
            t.cancel()
        if self._session is not None:
            await self._session.close()

