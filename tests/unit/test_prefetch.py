"""Fetching a chunk's items ahead of its claim (issue 12: on two pinned peers the peer without
EXTRACT_MFCC's input fetched each chunk's WAVs for 0.03-0.06 s before its worker ran): a peer
without the input, its slot running a chunk of the task, fetches the items of the split's last
open chunk, claims that one next and runs it without a fetch; the fetch stops when another
peer takes the chunk. The Fetcher's side: bounded in bytes, and an ensure of the same DAGs
waits for it instead of fetching them twice."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import pytest

from peer.errors import TooLarge
from peer.ipfs.embedded import EmbeddedStore
from peer.ipfs.fetch import Fetcher
from peer.ipfs.store import StoreConfig
from peer.jobs.ports import SchedulerConfig
from peer.jobs.prefetch import Prefetch
from peer.jobs.sim import JobMesh
from peer.log import EventType
from tasks import registry
from tests.unit.split_helpers import chunks_running_on_both, write_then_upper

CATALOG = registry.load(("tests.fixture_tasks",))
CFG = SchedulerConfig(store=StoreConfig("/nonexistent"), stagger_s=0.05, tick_s=0.25,
                      queue_ahead=1, max_chunk_items=4)


async def _chunks_running_on_both(cfg: SchedulerConfig = CFG,
                                  ) -> tuple[JobMesh, str, str, str]:
    """Two one-slot peers; T_WRITE's 24 files on one of them (the holder), then T_UPPER over
    them in 6 chunks of 4: the holder runs chunk 0, the other peer (after its stagger,
    fetching its items) chunk 1. The mesh, the job, the holder and the other peer."""
    mesh = JobMesh(2, CATALOG, cfg, slots=1, batch=True)
    job, holder, other = await chunks_running_on_both(mesh, cfg)
    assert mesh[holder].runner.running == [f"{job}/u/0/0"]
    assert mesh[other].runner.running == [f"{job}/u/1/0"]
    return mesh, job, holder, other


def _items(mesh: JobMesh, pid: str, job: str, chunk: int) -> list[str]:
    return [cid for _, cid in mesh[pid].state.splits[(job, "u")].payload["chunks"][chunk]]


async def test_a_peer_without_the_input_fetches_its_next_chunks_items_ahead() -> None:
    """While its chunk runs, the other peer fetches the items of the last open chunk (5: the
    holder takes them from the first); the holder fetches nothing ahead. When its slot
    frees, the other peer claims chunk 5 and its run fetches nothing."""
    mesh, job, holder, other = await _chunks_running_on_both()
    try:
        h, o = mesh[holder], mesh[other]
        assert o.data.ahead == _items(mesh, other, job, 5)
        assert o.sched.prefetch is not None and o.sched.prefetch.target == (job, "u", 5)
        assert h.data.ahead == []
        fetched = len(o.data.fetched)
        o.runner.finish(o.runner.running[0])
        await mesh.settle()  # no time passes: the holder is busy (its heartbeat says so)
        assert o.runner.running == [f"{job}/u/5/0"]
        assert len(o.data.fetched) == fetched  # its items were here
        assert o.sched.prefetch.target == (job, "u", 4)  # and the next one's, ahead
        assert o.data.ahead[-4:] == _items(mesh, other, job, 4)
        h.runner.finish(h.runner.running[0])
        await mesh.settle()
        assert h.runner.running[0] == f"{job}/u/2/0"  # the holder from the first
    finally:
        await mesh.close()


async def test_a_fetch_ahead_waits_for_the_runs_own_fetch() -> None:
    """The other peer's run is still fetching its items: nothing is fetched ahead beside
    that fetch (two at once would share the link and the holder's core); once the worker
    runs, the next chunk's items are."""
    mesh = JobMesh(2, CATALOG, CFG, slots=1, batch=True)
    try:
        job, _, other = await write_then_upper(mesh)
        o = mesh[other]
        o.data.stall = True  # its fetches hang
        await mesh.advance(CFG.stagger_s * 2)
        assert (job, "u", 1, 0) in o.sched.runs and o.runner.running == []  # fetching
        assert o.data.ahead == [] and o.sched.prefetch is not None
        assert o.sched.prefetch.target is None
        o.data.release()
        await mesh.settle()
        assert o.runner.running == [f"{job}/u/1/0"]
        assert o.sched.prefetch.target == (job, "u", 5)
    finally:
        await mesh.close()


async def test_the_fetch_ahead_stops_when_the_holder_takes_that_chunk() -> None:
    """The other peer's chunk runs long; the holder runs chunks 2, 3 and 4, then claims
    chunk 5, whose items the other peer fetched ahead: the other peer forgets it (and
    fetches chunk 5's items no more); every chunk runs once and the task completes."""
    mesh, job, holder, other = await _chunks_running_on_both()
    try:
        h, o = mesh[holder], mesh[other]
        assert o.sched.prefetch is not None and o.sched.prefetch.target == (job, "u", 5)
        for _ in range(5):  # the holder from the first (one queued behind its slot)
            if f"{job}/u/5/0" in h.runner.running:
                break
            h.runner.finish(h.runner.running[0])
            await mesh.settle()
        assert f"{job}/u/5/0" in h.runner.running
        assert o.sched.prefetch.target is None and o.sched.prefetch.cancelled == 0  # done
        for _ in range(4):
            for p in (o, h):
                if p.runner.running:
                    p.runner.finish(p.runner.running[0])
            await mesh.settle()
        assert (job, "u") in h.state.task_done
        ran = [e.payload["chunk"] for p in mesh.peers
               for e in mesh.events(EventType.CHUNK_DONE, p, job=job, task="u") if e.origin == p]
        assert sorted(ran) == list(range(6))
    finally:
        await mesh.close()


async def test_nothing_is_fetched_ahead_beyond_the_bounds() -> None:
    """A chunk of more than prefetch_max_items items, or prefetch_max_bytes 0: nothing."""
    for cfg in (SchedulerConfig(**{**CFG.__dict__, "prefetch_max_items": 3}),
                SchedulerConfig(**{**CFG.__dict__, "prefetch_max_bytes": 0})):
        mesh, _, _, other = await _chunks_running_on_both(cfg)
        try:
            assert mesh[other].data.ahead == []
        finally:
            await mesh.close()


# -- Prefetch on its own --------------------------------------------------------------------
class HangingFetch:
    """A FetchAhead whose fetches hang until cancelled; records what was asked."""

    def __init__(self) -> None:
        self.asked: list[list[str]] = []
        self.cancelled = 0

    async def fetch_ahead(self, cids: Sequence[str], hints: Sequence[str],
                          max_bytes: int) -> int:
        self.asked.append(list(cids))
        try:
            await asyncio.get_running_loop().create_future()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        return 0


async def test_one_chunk_at_a_time_cancelled_when_taken_kept_when_claimed() -> None:
    f = HangingFetch()
    p = Prefetch(CFG, f)
    p.want(("j", "t", 3), ["a", "b"], ["in"])
    p.want(("j", "t", 3), ["a", "b"], ["in"])  # the same chunk: not asked again
    await asyncio.sleep(0)
    assert f.asked == [["a", "b"]] and p.chunk_for("j", "t") == 3
    p.want(("j", "t", 2), ["c"], ["in"])  # another chunk: the first stops
    await asyncio.sleep(0)
    assert f.cancelled == 1 and p.chunk_for("j", "t") == 2
    p.taken(("j", "t", 1))  # not the one fetched ahead
    await asyncio.sleep(0)
    assert p.target == ("j", "t", 2)
    p.taken(("j", "t", 2))
    await asyncio.sleep(0)
    assert f.cancelled == 2 and p.target is None
    p.want(("j", "t", 0), ["d"], ["in"])
    await asyncio.sleep(0)
    p.claimed(("j", "t", 0))  # ours: its fetch goes on, for the run to use
    await asyncio.sleep(0)
    assert f.cancelled == 2 and p.target is None
    p.want(("j", "u", 0), ["e"], ["in"])
    await asyncio.sleep(0)
    p.drop("j")
    await asyncio.sleep(0)
    assert f.cancelled == 3
    await p.close()  # the claimed one's too
    assert f.cancelled == 4


# -- the Fetcher's side -----------------------------------------------------------------------
def _fetcher(tmp_path: Path, calls: list[list[str]], gate: asyncio.Event | None = None,
             asked: asyncio.Event | None = None) -> tuple[Fetcher, EmbeddedStore, list[str]]:
    """A Fetcher on an empty store whose one provider serves `src`'s DAGs as CARs (its
    HTTP call faked: the size bound as the real one's; `asked` set at each request, the
    answer held until `gate` is set), and three files there."""
    src = EmbeddedStore(tmp_path / "src")
    cids = [src.add_bytes(bytes([i]) * 5000) for i in range(3)]
    f = Fetcher(EmbeddedStore(tmp_path / "dst"), lambda: {"src": "http://src"},
                lambda c: {"src"}, "me")

    async def get(url: str, out: IO[bytes], body: Any = None,
                  max_bytes: int | None = None) -> int:
        calls.append(list(body["cids"]))
        if asked is not None:
            asked.set()
        if gate is not None:
            await gate.wait()
        data = b"".join(src.export_cars(body["cids"]))
        if max_bytes is not None and len(data) > max_bytes:
            raise TooLarge(f"{url}: more than {max_bytes} bytes")
        out.write(data)
        return len(data)

    f._get = get  # type: ignore[method-assign]
    return f, src, cids


async def test_a_fetch_ahead_is_bounded_in_bytes(tmp_path: Path) -> None:
    calls: list[list[str]] = []
    f, _, cids = _fetcher(tmp_path, calls)
    try:
        assert await f.fetch_ahead(cids, [], max_bytes=10_000) == 0  # a CAR of 15 kB: dropped
        assert not any(f.is_complete(c) for c in cids) and calls == [cids]
        got = await f.fetch_ahead(cids, [], max_bytes=20_000)
        assert 15_000 < got <= 20_000 and all(f.is_complete(c) for c in cids)
        assert await f.fetch_ahead(cids, [], max_bytes=20_000) == 0  # complete: not asked
        assert len(calls) == 2
    finally:
        await f.close()


async def test_an_ensure_waits_for_a_fetch_ahead_of_the_same_dags(tmp_path: Path) -> None:
    calls: list[list[str]] = []
    gate, asked = asyncio.Event(), asyncio.Event()
    f, _, cids = _fetcher(tmp_path, calls, gate, asked)
    try:
        ahead = asyncio.create_task(f.fetch_ahead(cids, [], max_bytes=1 << 20))
        await asyncio.wait_for(asked.wait(), 5)  # (after a thread: the completeness check)
        assert calls == [cids]
        ensure = asyncio.create_task(f.ensure(cids))
        await asyncio.sleep(0)  # it runs up to its wait
        assert not ensure.done() and calls == [cids]  # waiting, not fetching
        gate.set()
        await asyncio.wait_for(ensure, 5)
        assert await ahead > 0 and calls == [cids]  # fetched once
        assert all(f.is_complete(c) for c in cids)
    finally:
        await f.close()


async def test_an_ensure_fetches_itself_once_the_fetch_ahead_was_cancelled(
        tmp_path: Path) -> None:
    calls: list[list[str]] = []
    gate, asked = asyncio.Event(), asyncio.Event()
    f, _, cids = _fetcher(tmp_path, calls, gate, asked)
    try:
        ahead = asyncio.create_task(f.fetch_ahead(cids, [], max_bytes=1 << 20))
        await asyncio.wait_for(asked.wait(), 5)
        ensure = asyncio.create_task(f.ensure(cids))
        await asyncio.sleep(0)
        ahead.cancel()
        gate.set()
        await asyncio.wait_for(ensure, 5)
        assert all(f.is_complete(c) for c in cids) and len(calls) == 2
        with pytest.raises(asyncio.CancelledError):
            await ahead
    finally:
        await f.close()


async def test_a_peer_without_the_input_first_claims_the_chunk_with_most_items_here() -> None:
    """The other peer already holds the items of chunk 4 (a step it ran passed them
    through): with its slot free it claims that chunk rather than chunk 1, and fetches
    none of its items; the holder still takes the chunks from the first."""
    mesh = JobMesh(2, CATALOG, CFG, slots=1, batch=True)
    try:
        job, holder, other = await write_then_upper(mesh)
        h, o = mesh[holder], mesh[other]
        assert h.runner.running == [f"{job}/u/0/0"] and o.runner.running == []
        o.store.local.update(_items(mesh, other, job, 4))
        await mesh.advance(CFG.stagger_s * 2)
        assert o.runner.running == [f"{job}/u/4/0"]
        assert not set(o.data.fetched) & set(_items(mesh, other, job, 4))
        h.runner.finish(h.runner.running[0])
        await mesh.settle()
        assert h.runner.running[0] == f"{job}/u/1/0"
    finally:
        await mesh.close()
