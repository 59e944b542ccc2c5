"""`ipfs dag put`'s nodes made into blocks (decoded, checked, encoded again), and the process
that makes a big request's: `json.loads` and cbor2's C decoder hold the GIL for the whole of
a node (0.4-0.6 s for 4 MiB), so in a thread of the peer they hold its event loop as long
(every other request, the gossip); in a process of their own they hold nothing of it.

`Blocks.make` blocks: call it in a worker thread, one request at a time (`KuboRpc._blocks`).
"""

from __future__ import annotations

import multiprocessing
import threading
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from peer.cids import sha256_cid
from peer.errors import BadDag, StoreError
from peer.ipfs import ipld

# A request's nodes of more bytes than this, all told, are made in the process; fewer are
# made in the calling thread (the GIL held for tens of ms at most; a process costs a few ms)
IN_PROCESS_BYTES = 256 << 10


def put_all(nodes: list[bytes], in_codec: str, out_codec: str,
            limit: int) -> list[tuple[str, bytes]]:
    return [put_block(data, in_codec, out_codec, limit) for data in nodes]


def put_block(data: bytes, in_codec: str, out_codec: str, limit: int) -> tuple[str, bytes]:
    """(CID, block) of one dag/put node; BadDag saying what is wrong with it."""
    if in_codec == "dag-cbor":
        value = ipld.check_cbor(data, "input")
    else:
        value = ipld.decode_json(data, "input", links=in_codec == "dag-json")
    if in_codec == out_codec == "dag-cbor":
        block = data  # check_cbor found it the canonical encoding of its value: no second one
    else:
        block = ipld.encode_cbor(value) if out_codec == "dag-cbor" else ipld.encode_json(value)
    if len(block) > limit:
        raise BadDag(f"dag/put: the block would be {len(block)} bytes, over {limit} (UnixFS "
                     "`add` chunks big data; allow-big-block raises the bound)", field="file")
    return str(sha256_cid(block, out_codec, 1)), block


class Blocks:
    """`put_all`, in one worker process for a request over IN_PROCESS_BYTES: made at the
    first such request, from the forkserver (as the executor's workers: the peer runs an
    event loop and threads), a new one after each request (the memory a decode took goes
    with it); ended by `close`."""

    def __init__(self) -> None:
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()  # (`make` runs in worker threads, `close` in another)
        self._closed = False

    def make(self, nodes: list[bytes], in_codec: str, out_codec: str,
             limit: int) -> list[tuple[str, bytes]]:
        """`put_all(nodes, ...)`; its errors as raised (BadDag naming the rule). A process
        that dies while it makes them (killed) is a StoreError; one that died idle is
        replaced."""
        if sum(map(len, nodes)) <= IN_PROCESS_BYTES:
            return put_all(nodes, in_codec, out_codec, limit)
        made = self._submit(nodes, in_codec, out_codec, limit)
        try:
            return made.result()
        except BrokenProcessPool as e:
            self._drop()
            raise StoreError("dag/put: the process making the blocks ended before it answered "
                             "(killed?)", field="file") from e

    def _submit(self, *call: Any) -> Future[list[tuple[str, bytes]]]:
        with self._lock:
            if self._closed:
                raise StoreError("dag/put: the peer is stopping", field="file")
            for _ in range(2):
                if self._pool is None:
                    self._pool = ProcessPoolExecutor(
                        1, mp_context=multiprocessing.get_context("forkserver"),
                        max_tasks_per_child=1)
                try:
                    return self._pool.submit(put_all, *call)
                except BrokenProcessPool:  # (its idle process died: a new one)
                    self._pool.shutdown(wait=False)
                    self._pool = None
            raise StoreError("dag/put: no process to make the blocks in", field="file")

    def _drop(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False)

    def close(self) -> None:
        """End the process (after the request it is making, if any). Blocks."""
        with self._lock:
            self._closed = True
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
