"""A directory of many entries (a HAMT of millions, a lab's dataset) is listed a page at a time
(`Store.ls_page`, the gateway's JSON listing `?limit=&after=`), written to a task's scratch dir
as it is read (`materialize`) and listed for planning within a bound (`file_cids`' limit): each
holds a page, a shard per level or the bound, never the whole directory."""

from __future__ import annotations

import tracemalloc
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from peer.cids import DAG_PB, Cid, sha256_cid
from peer.errors import ArgError, BadDag, TooLarge
from peer.ipfs import EmbeddedStore, dagpb, hamt, parse_cid
from peer.ipfs.gateway import MAX_PAGE_ROWS, add_routes
from peer.jobs.planner import Planner
from peer.log import MeshState

Client = TestClient[Any, Any]
MakeClient = Callable[[web.Application], Awaitable[Client]]
N = 3000  # entries: ~12 a bucket of 256, so nearly every bucket is a sub-shard


@pytest.fixture
def store(tmp_path: Path) -> EmbeddedStore:
    return EmbeddedStore(tmp_path / "store")


def _hamt(store: EmbeddedStore, n: int = N, content: bytes = b"hello\n") -> str:
    """A HAMT directory of `n` entries (one file under `n` names)."""
    leaf = parse_cid(store.add_bytes(content))
    built = hamt.build([hamt.Link(f"item{i:05d}.wav", leaf, len(content)) for i in range(n)], 1)
    for c, block in built.blocks:
        store.put_block(str(c), block)
    return str(built.root)


def _pages(store: EmbeddedStore, root: str, limit: int) -> list[list[str]]:
    pages, after = [], None
    for _ in range(N + 2):  # (bounded: a page holds one entry at least)
        page, after = store.ls_page(root, after, limit)
        pages.append([e.path for e in page])
        if after is None:
            return pages
        assert after == page[-1].path  # the cursor is the last name
    raise AssertionError("the pages did not end")


@pytest.mark.parametrize("sharded", [True, False])
def test_pages_list_every_entry_once_in_the_listing_order(store: EmbeddedStore,
                                                          sharded: bool) -> None:
    root = (_hamt(store) if sharded else
            store.make_dir({f"f{i:03d}": store.add_bytes(b"%d" % i) for i in range(250)}))
    whole = [link.name for link in store.dir_links(root)]
    pages = _pages(store, root, 700)
    assert [len(p) for p in pages[:-1]] == [700] * (len(pages) - 1) and 0 < len(pages[-1]) <= 700
    assert [name for p in pages for name in p] == whole  # bucket order for a HAMT, as boxo's
    first, _ = store.ls_page(root, None, 3)
    assert first == store.ls(root)[:3] or sharded  # rows as ls gives them (ls: name order)
    assert all(e.kind == "file" and e.size > 0 for e in first)


def test_a_page_reads_no_shard_before_its_cursor(store: EmbeddedStore,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The cursor's hash says where it is: resuming reads the shards on its way, not the
    ~256 sub-shards before it (nor any entry's block past the page's)."""
    root = _hamt(store)
    names = [link.name for link in store.dir_links(root)]
    reads: list[Cid] = []
    real = store._reader.get

    def get(c: Cid) -> bytes:
        reads.append(c)
        return real(c)

    monkeypatch.setattr(store._reader, "get", get)
    page, after = store.ls_page(root, names[2500], 10)
    assert [e.path for e in page] == names[2501:2511] and after == names[2510]
    shards = {c for c in reads if c.codec == DAG_PB}
    assert 2 <= len(shards) <= 6  # the root, the cursor's sub-shard, the next one or two
    whole = len({c for c in store.dag(root) if c[0] != root})  # (not ~200: every sub-shard)
    assert whole > 100


def test_a_cursor_that_is_no_entry_is_refused_naming_it(store: EmbeddedStore) -> None:
    root = _hamt(store, 300)
    basic = store.make_dir({"a": store.add_bytes(b"a")})
    for where in (root, basic):
        with pytest.raises(ArgError, match="'nope' is no entry of") as e:
            store.ls_page(where, "nope", 10)
        assert e.value.field == "after"
    with pytest.raises(ArgError) as e:
        store.ls_page(store.add_bytes(b"a file"), "x", 10)
    assert e.value.field == "after"
    with pytest.raises(ArgError) as e:
        store.ls_page(root, None, 0)
    assert e.value.field == "limit"


@pytest.fixture
async def client(aiohttp_client: MakeClient, store: EmbeddedStore) -> Client:
    app = web.Application()
    add_routes(app, store)
    return await aiohttp_client(app)


async def test_the_json_listing_pages_with_limit_and_after(client: Client,
                                                           store: EmbeddedStore) -> None:
    root = _hamt(store, 1200)
    whole = await (await client.get(f"/ipfs/{root}/?format=json")).json()
    assert "Next" not in whole and len(whole["Links"]) == 1200  # no page asked: boxo's listing
    got, url = [], f"/ipfs/{root}/?format=json&limit=500"
    etags = set()
    for _ in range(5):
        r = await client.get(url)
        assert r.status == 200 and r.headers["Content-Type"] == "application/json"
        etags.add(r.headers["ETag"])
        body = await r.json()
        assert body["Hash"] == root and len(body["Links"]) <= 500
        got += body["Links"]
        if body["Next"] is None:
            break
        assert body["Next"] == body["Links"][-1]["Name"]
        url = f"/ipfs/{root}/?format=json&limit=500&after={body['Next']}"
    assert got == whole["Links"] and len(etags) == 3  # each page its own ETag
    default = await (await client.get(f"/ipfs/{root}/?format=json&after={got[0]['Name']}")).json()
    assert default["Links"] == got[1:1001]  # 1000 rows without ?limit=


@pytest.mark.parametrize(("query", "field"), [
    ("limit=0", "limit"), ("limit=-3", "limit"), ("limit=x", "limit"), ("limit=1.5", "limit"),
    (f"limit={MAX_PAGE_ROWS + 1}", "limit"), ("limit=%C2%B2", "limit"),
    ("limit=" + "9" * 5000, "limit"), ("limit=" + "0" * 5000 + "1", "limit"),  # (RR-6)
    ("after=", "after"), ("after=item99999.wav", "after"), ("limit=5&after=..", "after"),
])
async def test_a_bad_page_is_a_400_naming_it(client: Client, store: EmbeddedStore,
                                             query: str, field: str) -> None:
    root = _hamt(store, 300)
    r = await client.get(f"/ipfs/{root}/?format=json&{query}")
    assert r.status == 400, query
    body = await r.json()
    assert body["field"] == field and body["message"].startswith(f"{field}: "), body


def _peak(run: Callable[[], object]) -> int:
    """Peak Python allocations while `run` runs. Run the same once before: a first read fills
    process-wide tables (pathlib's interned names) that are no part of what `run` holds."""
    tracemalloc.start()
    try:
        run()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_materialize_writes_a_hamt_as_it_is_read(store: EmbeddedStore, tmp_path: Path) -> None:
    """A task's input, written to its scratch dir, holds a shard per level, not the entries:
    the code before sorted every entry first (~2 MB for 3,000 of them, ~56 MB for 100,000)."""
    root = _hamt(store)
    store.materialize(root, tmp_path / "warm")
    peak = _peak(lambda: store.materialize(root, tmp_path / "out"))
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        f"item{i:05d}.wav" for i in range(N)]
    assert (tmp_path / "out" / "item02999.wav").read_bytes() == b"hello\n"
    assert peak < 600_000, peak


def test_planning_lists_no_more_than_its_bound(store: EmbeddedStore) -> None:
    """Past the bound, the listing stops (memory holds the bound, not the directory) and says
    which input and which bound; within it, the listing is whole and in name order."""
    root = _hamt(store)
    with pytest.raises(TooLarge, match=f"{root} holds more than 100 files and directories"):
        store.file_cids(root, 100)  # (and a warm-up for `_peak`)

    def refused() -> None:
        with pytest.raises(TooLarge):
            store.file_cids(root, 100)

    peak = _peak(refused)
    assert peak < 600_000, peak
    listed = store.file_cids(root, N)
    assert [p for p, _ in listed] == [f"item{i:05d}.wav" for i in range(N)]
    nested = store.make_dir({"a": root, "b": store.add_bytes(b"b")})
    with pytest.raises(TooLarge):
        store.file_cids(nested, N + 1)  # N + 2 entries under it: its dir "a" counts


def test_a_per_item_split_of_an_input_past_the_bound_fails_naming_both(
        store: EmbeddedStore) -> None:
    """The planner's listing of a task's input (`Planner.files`, what a per-item split and a
    merge of inputs read) is bounded by `max_input_entries`; the task fails with this."""
    root = _hamt(store, 300)

    class Data:
        def mark(self, cid: str) -> None:
            pass

    planner = Planner(MeshState(), store, Data(), 1, 64,  # type: ignore[arg-type]
                      max_input_entries=299)
    with pytest.raises(TooLarge, match=f"{root} holds more than 299"):
        planner.files(root, "input")
    assert len(Planner(MeshState(), store, Data(), 1, 64,  # type: ignore[arg-type]
                       max_input_entries=300).files(root, "input")) == 300



async def test_a_job_whose_per_item_input_passes_the_bound_fails_that_task_saying_so(
) -> None:
    """Through the scheduler (in-memory mesh, fake clock): T_UPPER over T_WRITE's 24 files,
    with a planner bound of 10, fails with the message naming the input and the bound (a
    chunk's error), and no split of its items is made."""
    from peer.ipfs.store import StoreConfig
    from peer.jobs.ports import SchedulerConfig
    from peer.jobs.sim import JobMesh
    from peer.log import EventType
    from tasks import registry
    from tests.unit.split_helpers import write_then_upper

    catalog = registry.load(("tests.fixture_tasks",))
    mesh = JobMesh(2, catalog, SchedulerConfig(store=StoreConfig("/nonexistent"), tick_s=0.25,
                                               lease_s=10.0))
    try:
        for p in mesh.peers.values():
            p.sched.planner.max_input_entries = 10
        job, _, _ = await write_then_upper(mesh, files=24)
        [written] = mesh.events(EventType.TASK_DONE, job=job, task="w")
        failed = mesh.events(EventType.CHUNK_FAILED, job=job, task="u")
        assert failed and all(f.payload["kind"] == "error" for f in failed)
        assert f"{written.payload['output']} holds more than 10 files and directories" in (
            failed[0].payload["error"])
        splits = mesh.events(EventType.TASK_SPLIT, job=job, task="u")
        assert [s.payload["chunks"] for s in splits] == [[[]]]  # (the failure's own record)
    finally:
        await mesh.close()


def _follow(store: EmbeddedStore, root: str, limit: int) -> list[str] | str:
    """The names a client following `Next` gets (at most 20 pages), or "refused: <message>"
    at a BadDag, or "loop" if the pages do not end."""
    got: list[str] = []
    after = None
    for _ in range(20):  # (bounded: a loop is what this looks for)
        try:
            page, after = store.ls_page(root, after, limit)
        except BadDag as e:
            return f"refused: {e}"
        got += [e.path for e in page]
        if after is None:
            return got
    return "loop"


def _put(store: EmbeddedStore, block: bytes) -> str:
    c = str(sha256_cid(block, DAG_PB, 1))
    store.put_block(c, block)
    return c


@pytest.mark.parametrize("limit", [1, 2, 3, 4])
def test_a_directory_of_duplicate_names_pages_to_its_end_or_is_refused(
        store: EmbeddedStore, limit: int) -> None:
    """(Review rr of session 51, RR-7.) dag-pb allows two links of one name: [A, B, C, B, D]
    paged after the second B resumed after the first, [C, B] again and again. A page whose
    cursor names two entries is refused (BadDag naming it), never a loop."""
    leaf = parse_cid(store.add_bytes(b"x")).binary
    root = _put(store, dagpb.encode_node(dagpb.PBNode(tuple(
        dagpb.PBLink(leaf, name, 1) for name in "ABCBD"),
        dagpb.encode_unixfs(dagpb.UnixFSData(dagpb.DataType.DIRECTORY)))))
    got = _follow(store, root, limit)
    assert got == ["A", "B", "C", "B", "D"] or (
        isinstance(got, str) and got.startswith("refused") and "'B'" in got), got
    with pytest.raises(BadDag, match="'B' more than once") as e:
        store.ls_page(root, "B", 2)
    assert e.value.field == "after"


@pytest.mark.parametrize("limit", [1, 2, 3, 4])
def test_a_hamt_holding_an_entry_outside_its_bucket_pages_without_a_loop(
        store: EmbeddedStore, limit: int) -> None:
    """A hostile HAMT: its third entry renamed as its first, so that a page ending there
    resumed at that name's hash, the first bucket: pages [b] [x] [b] [x]... for ever. The
    pages end, or one is refused naming the name, never a loop or a skip."""
    leaf = parse_cid(store.add_bytes(b"x"))
    built = hamt.build([hamt.Link(n, leaf, 1) for n in ("a", "b", "c", "d")], 1)
    [(_, block)] = built.blocks  # (4 names: one shard, each in a bucket of its own)
    node = dagpb.decode_node(block)
    links = list(node.links)
    first = (links[0].name or "")[2:]
    links[2] = dagpb.PBLink(links[2].hash, (links[2].name or "")[:2] + first, links[2].tsize)
    root = _put(store, dagpb.encode_node(dagpb.PBNode(tuple(links), node.data)))
    whole = [lk.name for lk in store.dir_links(root)]
    assert len(whole) == 4 and whole[0] == whole[2] == first
    got = _follow(store, root, limit)
    assert got == whole or (
        isinstance(got, str) and got.startswith("refused") and repr(first) in got), got


def test_materialize_is_bounded_in_entries_naming_the_cid(tmp_path: Path) -> None:
    """(Review rr of session 51, RR-10.) A streamed materialize counted bytes only: a HAMT of
    millions of empty files wrote an inode each. Past `max_materialize_entries` files and
    directories below the CID it fails naming both, before the entry that passes it."""
    store = EmbeddedStore(tmp_path / "store", max_materialize_entries=300)
    root = _hamt(store, 300)
    store.materialize(root, tmp_path / "ok")
    assert len(list((tmp_path / "ok").iterdir())) == 300
    nested = store.make_dir({"a": root, "b": store.add_bytes(b"b")})  # 302 entries below it
    with pytest.raises(TooLarge, match=f"{nested} holds more than 300 files and directories"
                       ) as e:
        store.materialize(nested, tmp_path / "no")
    assert e.value.field == "cid"
    assert len(list((tmp_path / "no" / "a").iterdir())) == 299  # (refused before the last)


def test_the_input_bound_is_a_peer_setting(tmp_path: Path, opened: list[Any]) -> None:
    """--max-input-entries (a lab's dataset of more files per job than the default may
    raise it, at ~670 bytes an item while a split is made) reaches the peer's planner; an
    existing split's ceiling stays at least MAX_ASSEMBLY_ENTRIES. (Before: a constant.)"""
    import dataclasses

    from peer.config import from_args
    from peer.jobs.planner import MAX_ASSEMBLY_ENTRIES
    from peer.jobs.ports import MAX_INPUT_ENTRIES
    from peer.node import Node

    assert from_args([])[0].max_input_entries == MAX_INPUT_ENTRIES
    for raised in (1_000_000, 10):
        cfg, _ = from_args(["--max-input-entries", str(raised)])
        node = Node(dataclasses.replace(cfg, data_dir=tmp_path / str(raised), mdns=False))
        opened.append(node)
        planner = node.scheduler.planner
        assert planner.max_input_entries == raised
        assert planner.max_assembly_entries == max(MAX_ASSEMBLY_ENTRIES, 8 * raised)


def test_materialize_and_planning_read_a_hamts_root_shard_once(store: EmbeddedStore,
                                                               tmp_path: Path) -> None:
    """`file_cids` and `materialize` read a HAMT's root shard once (session 51's reread: its
    kind was read, then its entries read it again), and each sub-shard once."""
    root = _hamt(store, 600)
    outer = store.make_dir({"d": root})
    reads: dict[Cid, int] = {}
    get = store._reader.get

    def counted(c: Cid) -> bytes:
        reads[c] = reads.get(c, 0) + 1
        return get(c)

    store._reader.get = counted
    for run in (lambda: store.file_cids(outer), lambda: store.materialize(outer, tmp_path / "m")):
        reads.clear()
        run()
        shards = {c: n for c, n in reads.items() if c.codec == DAG_PB}
        assert shards[parse_cid(root)] == 1
        assert set(shards.values()) == {1}, shards


def test_the_materialize_bound_is_a_peer_setting_that_reaches_its_workers(
        tmp_path: Path, opened: list[Any]) -> None:
    """--max-materialize-entries (RR-10's bound had no flag; the input bound has one) reaches
    the peer's store and the store a work order names, which its worker opens (`runner`),
    and a bad value is refused naming it."""
    import dataclasses

    from peer.config import from_args
    from peer.errors import ConfigError
    from peer.ipfs.store import MAX_MATERIALIZE_ENTRIES
    from peer.jobs import runner
    from peer.node import Node

    assert from_args([])[0].max_materialize_entries == MAX_MATERIALIZE_ENTRIES
    cfg, _ = from_args(["--max-materialize-entries", "10"])
    node = Node(dataclasses.replace(cfg, data_dir=tmp_path / "d", mdns=False))
    opened.append(node)
    worker = runner._store(node.scheduler.cfg.store.to_json())  # as a work order carries it
    root = node.store.make_dir({f"f{i}": node.store.add_bytes(b"%d" % i) for i in range(11)})
    for store in (node.store, worker):
        with pytest.raises(TooLarge, match=f"{root} holds more than 10 files and directories"):
            store.materialize(root, tmp_path / "m")
    with pytest.raises(ConfigError, match="max_materialize_entries: must be at least 1") as e:
        dataclasses.replace(cfg, max_materialize_entries=0)
    assert e.value.field == "max_materialize_entries"


@pytest.mark.parametrize("limit", [1, 2, 3, 4])
def test_a_hamt_entry_outside_its_bucket_then_one_held_twice_ends_no_page(
        store: EmbeddedStore, limit: int) -> None:
    """Session 51 helper h's Left: a HAMT whose third entry is renamed as its first (outside
    its bucket) and whose fourth as its second (so that what follows the misplaced entry is
    what follows the true one: the resume check passed). A page ending at the misplaced
    entry resumed at the true one: with limit 1 a client following `Next` looped for ever
    ([a] [b] [a] [b]...); with 3 a cursor was given there, the next page refused. Now no page
    ends at an entry outside its bucket (one hash a page): the pages a client follows are
    the listing's, in order, up to a refusal naming that entry."""
    leaf = parse_cid(store.add_bytes(b"x"))
    built = hamt.build([hamt.Link(n, leaf, 1) for n in ("a", "b", "c", "d", "e")], 1)
    [(_, block)] = built.blocks  # (5 names: one shard, each in a bucket of its own)
    node = dagpb.decode_node(block)
    links = list(node.links)
    for i in (2, 3):
        name = (links[i - 2].name or "")[2:]
        links[i] = dagpb.PBLink(links[i].hash, (links[i].name or "")[:2] + name, links[i].tsize)
    root = _put(store, dagpb.encode_node(dagpb.PBNode(tuple(links), node.data)))
    whole = [lk.name for lk in store.dir_links(root)]
    assert whole[:2] == whole[2:4] and len(whole) == 5
    got: list[str] = []
    after = None
    for _ in range(20):  # (bounded: a loop is what this looks for)
        try:
            page, after = store.ls_page(root, after, limit)
        except BadDag as e:
            assert "outside the bucket" in str(e), e
            assert f"its entry {whole[len(got) + limit - 1]!r}" in str(e), e
            break
        got += [e.path for e in page]
        if after is None:
            break
    else:
        raise AssertionError(f"the pages did not end: {got}")
    assert got == whole[:len(got)], got  # (in order: nothing repeated or skipped)
    assert len(got) + limit in (3, 4)  # (refused at the page ending at the third or fourth)


def test_a_cursor_is_still_given_at_every_entry_of_a_true_hamt(store: EmbeddedStore) -> None:
    """The placement check refuses no page of a HAMT as built (sub-shards two levels deep)."""
    root = _hamt(store, 600)
    for limit in (1, 7):
        assert sum(len(p) for p in _pages(store, root, limit)) == 600
