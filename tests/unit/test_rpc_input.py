"""The Kubo RPC (peer/ipfs/rpc.py) with big and malformed input: a dag/put node over the input
bound is refused before it is decoded, decoding runs off the event loop (a big request's in a
process of its own), a string that is not text is a 400 naming its place (never a 500), and
JSON lines never break mid-stream. Uploads'
file names: tests/unit/test_app.py."""

from __future__ import annotations

import asyncio
import importlib
import io
import multiprocessing
import struct
import threading
from collections import Counter
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import pytest
from aiohttp import FormData, web
from aiohttp.test_utils import TestClient, TestServer

from peer.cids import sha256_cid
from peer.errors import StoreError
from peer.ipfs import EmbeddedStore, gateway, ipld, rpc

Client = TestClient[Any, Any]
FACTOR = 4  # rpc.MAX_PUT_INPUT_FACTOR: a node's input is at most this times the block bound


def _zeros_cbor(count: int) -> bytes:
    """Canonical DAG-CBOR of an array of `count` zeros (count >= 2**16)."""
    return b"\x9a" + struct.pack(">I", count) + b"\x00" * count


def _zeros_json(count: int) -> bytes:
    return b"[" + b",".join([b"0"] * count) + b"]"


@pytest.fixture
async def put(aiohttp_client: Any, tmp_path: Path) -> Any:
    """POST one node to dag/put; the app's refused counter is `put.refused`."""
    store = EmbeddedStore(tmp_path / "store")
    refused: Counter[str] = Counter()
    app = web.Application()
    rpc.add_routes(app, store, refused=refused)
    gateway.add_routes(app, store, codec_conversion=True)
    client: Client = await aiohttp_client(app)

    async def post(data: bytes, query: str = "") -> Any:
        form = FormData()
        form.add_field("file", io.BytesIO(data), filename="node")
        return await client.post(f"/api/v0/dag/put{query}", data=form)

    post.refused = refused  # type: ignore[attr-defined]
    post.client = client  # type: ignore[attr-defined]
    post.store = store  # type: ignore[attr-defined]
    return post


def _no_decoding(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Make every dag/put decoder record its call (and refuse: none should run)."""
    calls: list[str] = []

    def refuse(name: str) -> Any:
        def decoder(*args: Any, **kwargs: Any) -> Any:
            calls.append(name)
            raise AssertionError(f"{name} ran")
        return decoder

    for name in ("check_cbor", "decode_json", "encode_cbor", "encode_json"):
        monkeypatch.setattr(ipld, name, refuse(name))
    return calls


@pytest.mark.parametrize(("query", "data", "message"), [
    # canonical DAG-CBOR stored as DAG-CBOR is its own block: one byte over is over
    ("?input-codec=dag-cbor", _zeros_cbor(rpc.MAX_BLOCK_BYTES - 4),
     f"its block would be over {rpc.MAX_BLOCK_BYTES} bytes"),
    ("?input-codec=dag-cbor&allow-big-block=true", _zeros_cbor(rpc.MAX_BIG_BLOCK_BYTES - 4),
     f"its block would be over {rpc.MAX_BIG_BLOCK_BYTES} bytes"),
    # another conversion: past MAX_PUT_INPUT_FACTOR times the block bound
    ("", _zeros_json(FACTOR * rpc.MAX_BLOCK_BYTES // 2 + 1),
     f"input is over {FACTOR * rpc.MAX_BLOCK_BYTES} bytes"),
    ("?input-codec=dag-cbor&store-codec=dag-json",
     _zeros_cbor(FACTOR * rpc.MAX_BLOCK_BYTES),
     f"input is over {FACTOR * rpc.MAX_BLOCK_BYTES} bytes"),
])
async def test_a_node_over_the_input_bound_is_refused_before_it_is_decoded(
        put: Any, monkeypatch: pytest.MonkeyPatch, query: str, data: bytes,
        message: str) -> None:
    """4 MiB of DAG-CBOR kept the loop 19.7 s (fuzz30/runs/stall.py) and 16 MiB of DAG-JSON
    was refused 28 s later: decoded and encoded whole before the block's size was looked at."""
    calls = _no_decoding(monkeypatch)
    r = await put(data, query)
    body = await r.json()
    assert r.status == 400 and body["Type"] == "error", body
    assert message in body["Message"] and "allow-big-block" in body["Message"], body
    assert calls == []
    assert sum(put.refused.values()) == 1
    assert rpc.MAX_PUT_INPUT_FACTOR == FACTOR


async def test_nodes_within_the_bounds_still_land(put: Any) -> None:
    """At the bounds: a canonical DAG-CBOR block of exactly the block bound, and DAG-JSON
    input of MAX_PUT_INPUT_FACTOR times it that makes a smaller block."""
    block = _zeros_cbor(rpc.MAX_BLOCK_BYTES - 5)
    assert len(block) == rpc.MAX_BLOCK_BYTES
    r = await put(block, "?input-codec=dag-cbor")
    assert r.status == 200, await r.text()
    cid = str(sha256_cid(block, "dag-cbor", 1))
    assert (await r.json(content_type=None))["Cid"]["/"] == cid
    assert put.store.get_block(cid) == block
    spaced = b"[" + b" " * (FACTOR * rpc.MAX_BLOCK_BYTES - 6) + b"0, 1]"
    assert len(spaced) == FACTOR * rpc.MAX_BLOCK_BYTES
    r = await put(spaced, "")
    assert r.status == 200, await r.text()
    assert put.store.get_block((await r.json(content_type=None))["Cid"]["/"]) == b"\x82\x00\x01"


async def test_decoding_runs_off_the_event_loop(put: Any, monkeypatch: pytest.MonkeyPatch
                                                ) -> None:
    """While a node is being decoded, another request is answered: the decoder here waits
    until that answer came (on the loop, nothing else can run until its wait gives up)."""
    loop = asyncio.get_running_loop()
    entered: asyncio.Future[None] = loop.create_future()
    answered = threading.Event()
    seen: list[str] = []
    real = ipld.decode_json

    def slow_decode(*args: Any, **kwargs: Any) -> Any:
        loop.call_soon_threadsafe(entered.set_result, None)
        answered.wait(10)  # a bound for the old code only: it blocks the loop until then
        seen.append("decoded")
        return real(*args, **kwargs)

    monkeypatch.setattr(ipld, "decode_json", slow_decode)
    putting = asyncio.ensure_future(put(b'{"a": 1}'))
    await entered  # the put is in the decoder
    r = await put.client.post("/api/v0/version")
    assert r.status == 200
    seen.append("answered")
    answered.set()
    r = await putting
    assert r.status == 200, await r.text()
    assert seen == ["answered", "decoded"]


def _recording(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Make every dag/put decoder and encoder of this process record its call (and go on)."""
    calls: list[str] = []

    def record(name: str, real: Any) -> Any:
        def coder(*args: Any, **kwargs: Any) -> Any:
            calls.append(name)
            return real(*args, **kwargs)
        return coder

    for name in ("check_cbor", "decode_json", "encode_cbor", "encode_json"):
        monkeypatch.setattr(ipld, name, record(name, getattr(ipld, name)))
    return calls


BIG = _zeros_json(300 << 10)  # 600 KiB of DAG-JSON: over dagput.IN_PROCESS_BYTES


async def test_a_big_request_is_made_in_a_process_of_its_own(
        put: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """json's and cbor2's C decoders hold the GIL, and so the loop, for a whole node (0.4-0.6 s
    for 4 MiB, even in a thread): a request of more than IN_PROCESS_BYTES is decoded and
    encoded in another process (this process's coders, recording here, never run); a small
    one in a thread of this process (a process costs more than its decoding)."""
    dagput = importlib.import_module("peer.ipfs.dagput")
    assert len(BIG) > dagput.IN_PROCESS_BYTES
    block = ipld.encode_cbor(ipld.decode_json(BIG, "input", links=True))
    calls = _recording(monkeypatch)
    r = await put(BIG)
    assert r.status == 200, await r.text()
    cid = str(sha256_cid(block, "dag-cbor", 1))
    assert (await r.json(content_type=None))["Cid"]["/"] == cid
    assert put.store.get_block(cid) == block and calls == []
    r = await put(b"[0, 1]")
    assert r.status == 200 and calls == ["decode_json", "encode_cbor"]


@pytest.mark.parametrize(("doc", "query", "says"), [
    (BIG[:-1] + b",]", "", "malformed DAG-JSON"),
    (BIG[:-1] + b',"\\ud800"]', "?store-codec=dag-json", "lone surrogate"),
    (_zeros_json(750 << 10), "?store-codec=dag-json", "the block would be"),
    (b"\xa2\x61b\x01\x61a\x5a" + struct.pack(">I", 300 << 10) + b"\x00" * (300 << 10),
     "?input-codec=dag-cbor", "out of order"),  # {"b": 1, "a": 300 KiB of bytes}
])
async def test_a_big_request_is_refused_as_a_small_one_would_be(
        put: Any, monkeypatch: pytest.MonkeyPatch, doc: bytes, query: str, says: str) -> None:
    """The same status and message (the rule broken, named) from the process as from a
    thread of this one, and the refusal counted."""
    dagput = importlib.import_module("peer.ipfs.dagput")
    answers = []
    for bound in (dagput.IN_PROCESS_BYTES, 1 << 30):  # the process, then this one's thread
        monkeypatch.setattr(dagput, "IN_PROCESS_BYTES", bound)
        r = await put(doc, query)
        answers.append((r.status, await r.json()))
    assert answers[0] == answers[1] and answers[0][0] == 400, answers
    assert says in answers[0][1]["Message"], answers
    assert sum(put.refused.values()) == 2


async def test_the_process_ends_with_the_app(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """The process a big request was made in (and its replacement, idle) ends when the app
    is cleaned up (the peer stops)."""
    dagput = importlib.import_module("peer.ipfs.dagput")
    made: list[multiprocessing.process.BaseProcess] = []

    class Recorded(ProcessPoolExecutor):  # every process the pool starts, as it starts it
        def _spawn_process(self) -> None:  # (the one after a request starts meanwhile)
            super()._spawn_process()  # type: ignore[misc]
            made.extend(p for p in self._processes.values() if p not in made)

    monkeypatch.setattr(dagput, "ProcessPoolExecutor", Recorded)
    app = web.Application()
    rpc.add_routes(app, EmbeddedStore(tmp_path / "store"))
    async with TestClient(TestServer(app)) as client:
        form = FormData()
        form.add_field("file", io.BytesIO(BIG), filename="node")
        r = await client.post("/api/v0/dag/put", data=form)
        assert r.status == 200, await r.text()
        assert made
    assert not any(p.is_alive() for p in made)


def test_a_process_killed_while_it_makes_the_blocks_is_an_error_then_replaced(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Its request fails (StoreError: a 500 of the RPC), the next one gets a new process."""
    dagput = importlib.import_module("peer.ipfs.dagput")
    pools: list[Any] = []

    class Pool:  # a fake ProcessPoolExecutor: its first task's process is killed
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            pools.append(self)
            self.down = False

        def submit(self, fn: Any, *args: Any) -> Future[Any]:
            f: Future[Any] = Future()
            if len(pools) == 1:
                f.set_exception(BrokenProcessPool("killed"))
            else:
                f.set_result(fn(*args))
            return f

        def shutdown(self, wait: bool = True, **kwargs: Any) -> None:
            self.down = True

    monkeypatch.setattr(dagput, "ProcessPoolExecutor", Pool)
    blocks = dagput.Blocks()
    with pytest.raises(StoreError, match="ended before it answered"):
        blocks.make([BIG], "dag-json", "dag-cbor", rpc.MAX_BLOCK_BYTES)
    (cid, _), = blocks.make([BIG], "dag-json", "dag-cbor", rpc.MAX_BLOCK_BYTES)
    assert cid.startswith("bafyrei") and len(pools) == 2 and pools[0].down
    blocks.close()
    assert pools[1].down
    with pytest.raises(StoreError, match="stopping"):
        blocks.make([BIG], "dag-json", "dag-cbor", rpc.MAX_BLOCK_BYTES)


@pytest.mark.parametrize(("doc", "place"), [
    (b'"\\ud800"', "the top level"),
    (b'{"a": ["x", "\\udc00"]}', "a[1]"),
    (b'{"k": {"\\ud83d": 1}}', "k.\\ud83d"),
    (b'{"b": "\\ud83d\\ude00", "c": "ok\\udfff"}', "c"),
])
@pytest.mark.parametrize("codec", ["dag-cbor", "dag-json"])
async def test_a_lone_surrogate_is_a_400_naming_its_place(put: Any, doc: bytes, place: str,
                                                         codec: str) -> None:
    """`"\\ud800"` is valid JSON but not text: UTF-8 (DAG-CBOR's and DAG-JSON's) cannot hold
    it, and its encoding raised UnicodeEncodeError (a 500). Kubo stores U+FFFD in its place;
    we refuse it, as we refuse bytes that are not UTF-8."""
    r = await put(doc, f"?store-codec={codec}")
    body = await r.json()
    assert r.status == 400 and body["Type"] == "error", body
    assert f"the string at {place}" in body["Message"] and "lone surrogate" in body["Message"]
    assert put.refused == Counter({"dag/put.dag-json": 1})


async def test_a_surrogate_pair_is_text(put: Any) -> None:
    r = await put(b'"\\ud83d\\ude00"', "?store-codec=dag-json")
    assert r.status == 200, await r.text()
    assert put.store.get_block((await r.json(content_type=None))["Cid"]["/"]) == \
        '"\U0001f600"'.encode()


async def test_converting_a_stored_block_with_a_lone_surrogate_is_a_422(put: Any) -> None:
    """A DAG-JSON block from a CAR (dag/import checks DAG-CBOR blocks only) may hold one: the
    gateway's conversion to DAG-CBOR names the block, where it answered 500."""
    block = b'{"a":"\\ud800"}'
    cid = str(sha256_cid(block, "dag-json", 1))
    put.store.put_block(cid, block)
    r = await put.client.get(f"/ipfs/{cid}?format=dag-cbor")
    assert r.status == 422, await r.text()
    assert "the string at a holds a lone surrogate" in await r.text()


def test_the_encoders_refuse_a_lone_surrogate_as_bad_dag() -> None:
    from peer.errors import BadDag

    for encode in (ipld.encode_cbor, ipld.encode_json):
        with pytest.raises(BadDag, match=r"the string at x\[0\] holds a lone surrogate"):
            encode({"x": ["\udcff"]})


async def test_json_lines_hold_no_lone_surrogate(aiohttp_client: Any) -> None:
    """Every line is encoded before the response starts, a lone surrogate as U+FFFD (as Go's
    encoder writes a string that is not UTF-8): the encode raised after the headers were
    sent, and aiohttp wrote a 500 into the started body."""

    async def lines(request: web.Request) -> web.StreamResponse:
        return await rpc.send_json_lines(request, [{"Name": "ok"}, {"Name": "a\udcffb\ud83d"}])

    app = web.Application()
    app.router.add_post("/lines", lines)
    client: Client = await aiohttp_client(app)
    r = await client.post("/lines")
    assert r.status == 200
    assert await r.read() == '{"Name":"ok"}\n{"Name":"a\ufffdb\ufffd"}\n'.encode()
