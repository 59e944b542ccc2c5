"""EmbeddedStore: add, walk/ls/stat/resolve/cat, make_dir, materialize, blocks, pins and gc."""

from __future__ import annotations

import logging
import multiprocessing
import os
import stat
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from peer.cids import parse_cid, sha256_cid
from peer.errors import ArgError, BadCID, IntegrityError, NotFound, StoreError
from peer.ipfs import EmbeddedStore, Entry, StoreConfig, dagpb, open_store
from peer.ipfs.unixfs import HAMT_THRESHOLD_BYTES

HELLO_V0 = "QmZULkCELmmk5XNfCgTnCyFgAVxBRBXyDHGGMVoLFLiXEN"
HELLO_V1 = "bafkreicysg23kiwv34eg2d7qweipxwosdo2py4ldv42nbauguluen5v6am"
EMPTY_DIR_V1 = "bafybeiczsscdsbs7ffqz55asqdf3smv6klcw3gofszvwlyarci47bgf354"


@pytest.fixture
def store(tmp_path: Path) -> EmbeddedStore:
    return EmbeddedStore(tmp_path / "store")


def _tree(root: Path) -> Path:
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "a.txt").write_bytes(b"hello\n")
    (root / "sub" / "b.bin").write_bytes(bytes(range(256)) * 10)
    (root / "sub" / "deeper" / "é ü.txt").write_text("unicode\n", encoding="utf-8")
    (root / "empty").mkdir()
    (root / ".hidden").write_bytes(b"h")
    return root


def test_add_bytes_vectors(store: EmbeddedStore) -> None:
    assert store.add_bytes(b"hello\n", cid_version=0) == HELLO_V0
    assert store.add_bytes(b"hello\n") == HELLO_V1
    assert b"".join(store.cat(HELLO_V0)) == b"hello\n"
    assert b"".join(store.cat(HELLO_V1, 1, 3)) == b"ell"


def test_add_path_file_and_missing(store: EmbeddedStore, tmp_path: Path) -> None:
    f = tmp_path / "hello.txt"
    f.write_bytes(b"hello\n")
    assert store.add_path(f) == HELLO_V1
    with pytest.raises(NotFound):
        store.add_path(tmp_path / "nope")


def test_add_path_refuses_symlink(store: EmbeddedStore, tmp_path: Path) -> None:
    d = tmp_path / "d"
    d.mkdir()
    (d / "link").symlink_to("/etc/passwd")
    with pytest.raises(StoreError, match="symlink"):
        store.add_path(d)


def test_bad_cid_version(store: EmbeddedStore) -> None:
    with pytest.raises(StoreError, match="cid_version"):
        store.add_bytes(b"x", cid_version=2)


def test_walk_ls_stat(store: EmbeddedStore, tmp_path: Path) -> None:
    root = store.add_path(_tree(tmp_path / "t"))
    walked = list(store.walk(root))
    assert [e.path for e in walked] == [".hidden", "a.txt", "sub/b.bin", "sub/deeper/é ü.txt"]
    assert walked[1] == Entry("a.txt", HELLO_V1, 6, "file")
    assert all(e.kind == "file" for e in walked)
    listing = store.ls(root)
    assert [(e.path, e.kind) for e in listing] == [
        (".hidden", "file"),
        ("a.txt", "file"),
        ("empty", "dir"),
        ("sub", "dir"),
    ]
    top = store.stat(root)
    assert top.kind == "dir" and top.path == "" and top.size > 2560
    assert store.stat(HELLO_V1) == Entry("", HELLO_V1, 6, "file")
    assert list(store.walk(HELLO_V1)) == [Entry("", HELLO_V1, 6, "file")]
    assert store.ls(HELLO_V1) == []


def test_dir_links_are_the_stored_links_unread(store: EmbeddedStore, tmp_path: Path) -> None:
    root = store.add_path(_tree(tmp_path / "t"))
    links = list(store.dir_links(root))
    assert [(lk.name, lk.cid) for lk in links] == [(e.path, e.cid) for e in store.ls(root)]
    assert [lk.tsize for lk in links] == [store.dag_size(e.cid) for e in store.ls(root)]
    assert list(store.dir_links(HELLO_V1)) == []


def _stored_dir(store: EmbeddedStore, links: dict[str, str]) -> str:
    """A directory block of `links` (name -> CID) written as it is: names are not checked."""
    pb = tuple(dagpb.PBLink(parse_cid(c).binary, name, 1) for name, c in links.items())
    block = dagpb.encode_node(dagpb.PBNode(pb, dagpb.DIRECTORY_DATA))
    c = str(sha256_cid(block, "dag-pb", 1))
    store.put_block(c, block)
    return c


@pytest.mark.parametrize("name", ["../file", "..", "a/b", "/etc/x", ""])
def test_unsafe_names_are_listed_but_never_written_or_walked(
        store: EmbeddedStore, tmp_path: Path, name: str) -> None:
    """A name the gateway's TAR may write inside its root (`../file` of foobar/directory, as
    the conformance fixture inside-root.car) never becomes a path of a task's inputs."""
    store.add_bytes(b"hello\n")
    root = _stored_dir(store, {"foobar": _stored_dir(store, {
        "directory": _stored_dir(store, {name: HELLO_V1})})})
    directory = store.resolve(root, "foobar/directory")
    assert [lk.name for lk in store.dir_links(directory)] == [name]
    assert store.stat(directory).kind == "dir"
    dest = tmp_path / "in" / "job"
    with pytest.raises(StoreError, match="unsafe or empty directory entry name"):
        store.materialize(root, dest)
    assert [p for p in (tmp_path / "in").rglob("*") if not p.is_dir()] == []
    with pytest.raises(StoreError, match="unsafe"):
        list(store.walk(root))
    with pytest.raises(StoreError, match="unsafe"):
        store.ls(directory)


def test_resolve(store: EmbeddedStore, tmp_path: Path) -> None:
    root = store.add_path(_tree(tmp_path / "t"))
    assert store.resolve(root, "a.txt") == HELLO_V1
    assert store.resolve(root, "") == root
    assert store.resolve(root, "/sub/deeper/") == store.resolve(
        store.resolve(root, "sub"), "deeper"
    )
    assert store.stat(store.resolve(root, "sub/deeper/é ü.txt")).size == 8
    with pytest.raises(NotFound):
        store.resolve(root, "sub/missing")
    with pytest.raises(NotFound):
        store.resolve(root, "a.txt/below-a-file")
    for bad in ("sub/../a.txt", "..", "sub//b.bin", "./a.txt"):
        with pytest.raises(ArgError):
            store.resolve(root, bad)
    with pytest.raises(BadCID):
        store.resolve("not-a-cid", "a.txt")


def test_resolve_path_and_dag_size(store: EmbeddedStore, tmp_path: Path) -> None:
    root = store.add_path(_tree(tmp_path / "t"))
    sub = store.resolve(root, "sub")
    assert store.resolve_path(root, "") == [root]
    assert store.resolve_path(root, "/sub/deeper/") == [root, sub, store.resolve(sub, "deeper")]
    with pytest.raises(ArgError):
        store.resolve_path(root, "sub/../a.txt")
    # a directory's size in its parent's listing is its link Tsize: the cumulative DAG bytes
    assert store.dag_size(sub) == next(e.size for e in store.ls(root) if e.path == "sub")
    assert store.dag_size(store.resolve(root, "a.txt")) == 6  # one raw block: its bytes


def test_open_store_picks_the_backend_named_in_the_config(tmp_path: Path) -> None:
    from peer.errors import ConfigError
    from peer.ipfs.kubo import KuboStore

    plain = open_store(StoreConfig(str(tmp_path / "e")))
    assert type(plain) is EmbeddedStore
    # kubo: the embedded store stays the working store; opening it asks nothing of Kubo
    cfg = StoreConfig(str(tmp_path / "k"), "kubo", "/ip4/127.0.0.1/tcp/1")
    kubo = open_store(cfg)
    assert isinstance(kubo, KuboStore) and kubo.client.url == "http://127.0.0.1:1"
    cid = kubo.add_bytes(b"hello\n")
    assert cid == HELLO_V1 and EmbeddedStore(tmp_path / "k").has(cid)
    # what a work order carries opens the same store in a worker
    assert StoreConfig.from_json(cfg.to_json()) == cfg
    for bad in ({"kind": "s3"}, {"kind": "kubo"}):
        with pytest.raises(ConfigError):
            StoreConfig(str(tmp_path / "x"), **bad)
    with pytest.raises(ConfigError, match="ipfs_api"):
        open_store(StoreConfig(str(tmp_path / "x"), "kubo", "not-a-url"))


def test_materialize_round_trip(store: EmbeddedStore, tmp_path: Path) -> None:
    src = _tree(tmp_path / "t")
    root = store.add_path(src)
    out = tmp_path / "out" / "copy"
    store.materialize(root, out)
    assert store.add_path(out) == root
    assert (out / "sub" / "deeper" / "é ü.txt").read_text(encoding="utf-8") == "unicode\n"
    assert (out / "empty").is_dir()
    store.materialize(HELLO_V1, tmp_path / "one.txt")
    assert (tmp_path / "one.txt").read_bytes() == b"hello\n"


def test_make_dir(store: EmbeddedStore, tmp_path: Path) -> None:
    src = _tree(tmp_path / "t")
    root = store.add_path(src)
    sub = store.resolve(root, "sub")
    made = store.make_dir(
        {
            "a.txt": HELLO_V1,
            "sub": sub,
            ".hidden": store.add_bytes(b"h"),
            "empty": store.make_dir({}),
        }
    )
    assert made == root
    nested = store.make_dir({"x/y/z.txt": HELLO_V1, "x/w.txt": HELLO_V1})
    assert [e.path for e in store.walk(nested)] == ["x/w.txt", "x/y/z.txt"]
    assert store.make_dir({}) == EMPTY_DIR_V1


def test_make_dir_errors(store: EmbeddedStore) -> None:
    with pytest.raises(NotFound):
        store.make_dir({"a": "bafkreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm"})
    store.add_bytes(b"hello\n")
    with pytest.raises(ArgError):
        store.make_dir({"a": HELLO_V1, "a/b": HELLO_V1})
    with pytest.raises(ArgError):
        store.make_dir({"../a": HELLO_V1})
    with pytest.raises(ArgError):
        store.make_dir({"": HELLO_V1})


def test_hamt_sized_directory_is_sharded(store: EmbeddedStore, tmp_path: Path) -> None:
    """make_dir above boxo's threshold writes a HAMT that every reader walks like a dir."""
    store.add_bytes(b"hello\n")
    name_len = 200
    count = HAMT_THRESHOLD_BYTES // (name_len + 36) + 1
    entries = {f"{i:0{name_len}d}": HELLO_V1 for i in range(count)}
    root = store.make_dir(entries)
    assert dagpb.decode_unixfs(dagpb.decode_node(store.get_block(root)).data or b"").type == (
        dagpb.DataType.HAMT_SHARD)
    listed = store.ls(root)
    assert [e.path for e in listed] == sorted(entries)
    assert {e.cid for e in listed} == {HELLO_V1}
    assert [e.path for e in store.walk(root)] == sorted(entries)
    name = sorted(entries)[count // 2]
    assert store.resolve(root, name) == HELLO_V1
    assert b"".join(store.cat(store.resolve(root, name))) == b"hello\n"
    with pytest.raises(NotFound):
        store.resolve(root, "x" * name_len)
    assert store.stat(root).kind == "dir"
    store.materialize(root, tmp_path / "out")
    assert sorted(os.listdir(tmp_path / "out")) == sorted(entries)
    store.pin(root)
    assert store.gc().blocks == 0
    below = dict(list(entries.items())[: count - 2])
    below_root = store.make_dir(below)
    assert dagpb.decode_unixfs(dagpb.decode_node(store.get_block(below_root)).data or b"").type == (
        dagpb.DataType.DIRECTORY)


def test_blocks(store: EmbeddedStore) -> None:
    store.put_block(HELLO_V1, b"hello\n")
    assert store.has(HELLO_V1)
    assert store.get_block(HELLO_V1) == b"hello\n"
    with pytest.raises(IntegrityError):
        store.put_block(HELLO_V1.replace("cy", "cz"), b"hello\n")
    with pytest.raises(NotFound):
        store.get_block("bafkreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm")
    assert not store.has("bafkreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm")


def test_same_bytes_v0_and_v1_share_a_block(store: EmbeddedStore) -> None:
    d0 = store.make_dir({}, cid_version=0)
    assert store.get_block(d0) == store.get_block(EMPTY_DIR_V1) == b"\x0a\x02\x08\x01"


def test_pins_and_gc(store: EmbeddedStore, tmp_path: Path) -> None:
    kept = store.add_path(_tree(tmp_path / "t"), pin=True)
    loose = store.add_bytes(b"garbage" * 1000)
    assert store.pins() == [kept]
    assert store.gc().blocks == 1
    assert not store.has(loose)
    assert len(list(store.walk(kept))) == 4
    store.pin(HELLO_V1)  # already stored as a.txt
    store.unpin(kept)
    assert store.pins() == [HELLO_V1]
    assert store.gc().blocks > 0
    assert store.has(HELLO_V1) and not store.has(kept)
    with pytest.raises(NotFound):
        store.unpin(kept)
    with pytest.raises(NotFound):
        store.pin(kept)  # incomplete DAG cannot be pinned
    store.unpin(HELLO_V1)
    assert store.gc().blocks == 1 and store.pins() == []


def test_stale_temp_files_are_not_blocks(store: EmbeddedStore) -> None:
    store.add_bytes(b"x")
    shard = next(p for p in (store.root / "blocks").iterdir() if p.is_dir())
    (shard / ".partial.123.abc.tmp").write_bytes(b"junk")
    assert store.gc().blocks == 1  # the block; the fresh temp file is left alone
    assert (shard / ".partial.123.abc.tmp").exists()


def test_a_file_in_a_shard_that_is_no_block_is_left_alone_and_logged_once(
        store: EmbeddedStore, caplog: pytest.LogCaptureFixture) -> None:
    cid = store.add_bytes(b"x")
    shard = store.blocks.path(parse_cid(cid).key).parent
    other = "01" if shard.name != "01" else "02"
    strays = [shard / "notes.txt", shard / ("00" * 33 + other)]  # (the latter: another shard's)
    for p in strays:
        p.write_text("not a block")
    with caplog.at_level(logging.WARNING):
        assert store.gc().blocks == 1 and store.gc().blocks == 0  # the block alone
    assert all(p.exists() for p in strays) and store.used_bytes() == 0
    assert caplog.text.count("notes.txt is not a block file: left alone") == 1
    assert len(store.blocks.strays) == 2


def _worker(root: str, seed: int) -> str:
    s = EmbeddedStore(Path(root))
    cid = s.add_bytes(bytes([seed]) * 300_000 + b"shared" * 100)
    s.pin(cid)
    return cid


def test_several_processes_share_a_root(tmp_path: Path) -> None:
    root = tmp_path / "shared"
    ctx = multiprocessing.get_context("spawn" if os.name != "posix" else "fork")
    with ctx.Pool(3) as pool:
        cids = pool.starmap(_worker, [(str(root), i) for i in range(6)])
    s = EmbeddedStore(root)
    assert sorted(s.pins()) == sorted(cids)
    assert s.gc().blocks == 0
    for i, cid in enumerate(cids):
        assert b"".join(s.cat(cid)) == bytes([i]) * 300_000 + b"shared" * 100


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.binary(max_size=600_000), version=st.sampled_from([0, 1]))
def test_add_then_cat_returns_the_bytes(store: EmbeddedStore, data: bytes, version: int) -> None:
    cid = store.add_bytes(data, cid_version=version)
    assert b"".join(store.cat(cid)) == data
    assert store.stat(cid).size == len(data)


# -- bounds (issue 11 item 6) -------------------------------------------------------------------
def test_materialize_is_bounded_naming_the_cid(tmp_path: Path) -> None:
    from peer.errors import TooLarge

    src = tmp_path / "src"
    src.mkdir()
    (src / "a.bin").write_bytes(bytes(600))
    (src / "b.bin").write_bytes(bytes(600))
    store = EmbeddedStore(tmp_path / "store", max_materialize_bytes=1200)
    root = store.add_path(src)
    store.materialize(root, tmp_path / "ok")
    assert (tmp_path / "ok" / "b.bin").stat().st_size == 600
    small = EmbeddedStore(tmp_path / "store", max_materialize_bytes=1199)
    with pytest.raises(TooLarge, match=f"{root} holds more than 1199 bytes") as e:
        small.materialize(root, tmp_path / "no")
    assert e.value.field == "cid"
    assert not (tmp_path / "no" / "b.bin").exists()  # refused before the file that passes it


def test_materialize_refuses_deep_trees_without_recursion(tmp_path: Path) -> None:
    from peer.errors import TooLarge
    from peer.ipfs.embedded import MAX_DIR_DEPTH
    from peer.ipfs.unixfs import Importer

    store = EmbeddedStore(tmp_path / "store")
    importer = Importer(store.blocks, 1)
    node = importer.directory({})
    for _ in range(1200):  # deeper than any path: built block by block, not on disk
        node = importer.directory({"d": node})
    with pytest.raises(TooLarge, match=f"{node.cid} nests directories more than {MAX_DIR_DEPTH}"):
        store.materialize(str(node.cid), tmp_path / "deep")


# -- lifecycle (issue 11 item 4): explicit pins, gc roots, grace, stats, the start sweep ----


def test_explicit_pins_are_those_a_user_made(store: EmbeddedStore, tmp_path: Path) -> None:
    added = store.add_path(_tree(tmp_path / "t"), pin=True)  # banzai add, /api/v0/add
    output = store.add_bytes(b"a task output")
    store.pin(output)  # the scheduler's and the replicator's pins
    user = store.add_bytes(b"pinned by pin add")
    store.pin(user, explicit=True)
    assert sorted(store.pins()) == sorted([added, output, user])
    assert sorted(store.explicit_pins()) == sorted([added, user])
    store.unpin(user)
    assert user not in store.explicit_pins() and user not in store.pins()
    store.pin(user)  # pinned again, as an output this time: not explicit
    assert user not in store.explicit_pins()


def test_gc_reports_what_it_freed_and_keeps_roots(store: EmbeddedStore) -> None:
    kept = store.add_bytes(b"k" * 1000)
    rooted = store.add_bytes(b"r" * 2000)  # a running job's data: not pinned, passed as root
    loose = store.add_bytes(b"l" * 3000)
    store.pin(kept)
    stats = store.gc(roots=[rooted, "not a cid"])
    assert (stats.blocks, stats.bytes) == (1, 3000)
    assert stats.removed == (loose,)  # a raw leaf's CIDv1 is what Kubo's repo gc names
    assert store.has(kept) and store.has(rooted) and not store.has(loose)


def test_gc_grace_keeps_recent_blocks_and_blocks_found_again(store: EmbeddedStore) -> None:
    old = store.add_bytes(b"o" * 100)
    path = store.blocks.path(parse_cid(old).key)
    os.utime(path, (1, 1))  # written long ago
    fresh = store.add_bytes(b"f" * 100)
    assert store.gc(grace_s=300).removed == (old,)
    assert store.has(fresh)
    again = store.add_bytes(b"a" * 100)
    os.utime(store.blocks.path(parse_cid(again).key), (1, 1))
    assert store.add_bytes(b"a" * 100) == again  # an add finds it there: it is fresh again
    assert store.gc(grace_s=300).blocks == 0
    assert store.gc(grace_s=0).blocks == 2


def test_used_bytes_counts_every_block(store: EmbeddedStore) -> None:
    assert store.used_bytes() == 0
    store.add_bytes(b"x" * 1234)
    store.add_bytes(b"y" * 10)
    assert store.used_bytes() == 1244


def test_sweep_at_start_removes_what_a_crash_left(store: EmbeddedStore) -> None:
    store.add_bytes(b"x")
    shard = next(p for p in (store.root / "blocks").iterdir() if p.is_dir())
    (shard / ".partial.123.abc.tmp").write_bytes(b"junk")
    (store.root / "staging" / "99-deadbeef").mkdir(parents=True)
    assert store.sweep() == {"staging": 1, "temp_files": 1}
    assert not (shard / ".partial.123.abc.tmp").exists()
    assert list((store.root / "staging").iterdir()) == []
    assert store.sweep() == {"staging": 0, "temp_files": 0}


def test_pin_many_pins_every_dag_with_one_directory_fsync(
        store: EmbeddedStore, monkeypatch: pytest.MonkeyPatch) -> None:
    cids = [store.add_bytes(f"output {i}".encode()) for i in range(5)]
    synced: list[int] = []  # (the inode of each directory fsynced: by path or descriptor)
    real = os.fsync

    def fsync(fd: int) -> None:
        found = os.fstat(fd)
        if stat.S_ISDIR(found.st_mode):
            synced.append(found.st_ino)
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    store.pin(cids[0])
    assert len(synced) == 1  # a lone pin: its own directory fsync
    synced.clear()
    store.pin_many(cids + cids[1:2])  # one pinned already, one named twice
    assert sorted(store.pins()) == sorted(cids)
    assert synced == [(store.root / "pins").stat().st_ino]  # once for the four new pins
    synced.clear()
    store.pin_many(cids)  # all pinned: nothing to make durable
    assert synced == []
    assert store.explicit_pins() == []  # outputs' pins, which retention may drop


def test_pin_many_pins_nothing_if_one_dag_is_incomplete(store: EmbeddedStore,
                                                        tmp_path: Path) -> None:
    whole = store.add_bytes(b"whole")
    root = store.add_path(_tree(tmp_path / "t"))
    store.blocks.path(parse_cid(store.ls(root)[0].cid).key).unlink()  # a child block gone
    with pytest.raises(NotFound):
        store.pin_many([whole, root])
    assert store.pins() == []


def test_completeness_reads_the_linking_blocks_only(
        store: EmbeddedStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """is_complete and pin check every block of the DAG is stored, but read (and hash) only
    the blocks that link: a raw leaf, a file's data, is looked up. A missing leaf, or a
    missing node below the root, still makes the DAG incomplete."""
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(600_000))  # a dag-pb root over three raw leaves
    small = store.add_bytes(b"one raw block")
    d = store.make_dir({"big.bin": store.add_path(big), "s.txt": small})
    read: list[str] = []
    real = store.blocks.get
    monkeypatch.setattr(store.blocks, "get", lambda c: (read.append(str(c)), real(c))[1])
    assert store.is_complete(d) and store.is_complete(small)
    store.pin_many([d])
    big_root = next(e.cid for e in store.ls(d) if e.path.endswith("big.bin"))
    assert sorted(read) == sorted([d, big_root] * 2)  # the directory and the file's root
    leaves = [c for c, _ in store.dag(big_root)][1:]
    assert len(leaves) == 3 and all(c.startswith("b") for c in leaves)  # CIDv1 raw
    store.blocks.path(parse_cid(leaves[1]).key).unlink()
    assert not store.is_complete(d) and not store.is_complete(big_root)
    assert store.is_complete(small)
    store.blocks.path(parse_cid(small).key).unlink()
    assert not store.is_complete(small)
    assert not store.is_complete("not a cid")


def test_a_small_add_fsyncs_its_one_directory_without_a_thread_hop(
        store: EmbeddedStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """One block: its shard directory is fsynced before add_bytes returns, on the calling
    thread (after the shards' parent if the shard is new); the pool only for several."""
    import threading

    import peer.ipfs.blocks as blocks

    synced: list[tuple[Path, bool]] = []
    real = blocks.fsync_dir
    monkeypatch.setattr(blocks, "fsync_dir", lambda d: (
        synced.append((d, threading.current_thread() is threading.main_thread())), real(d)))
    for data in (b"first", b"second"):
        synced.clear()
        shard = store.blocks.path(parse_cid(store.add_bytes(data)).key).parent
        assert synced[-1][0].samefile(shard)
        assert [d.name for d, _ in synced[:-1]] in ([], ["blocks"])  # a new shard's parent
        assert all(on_caller for _, on_caller in synced)

# -- a batch of adds made durable by one syncfs (issue 12: EXTRACT_MFCC per file) ------------
def _files(d: Path, n: int) -> list[Path]:
    d.mkdir()
    for i in range(n):
        (d / f"f{i}").write_text(f"content {i}\n")
    return sorted(d.iterdir())


def test_a_batch_makes_its_blocks_durable_with_syncfs_before_they_appear(
        store: EmbeddedStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import peer.ipfs.blocks as blocks

    if blocks._syncfs_fn is None:
        pytest.skip("no syncfs here")
    monkeypatch.setattr(blocks, "dirty_bytes", lambda: 0)  # nothing else waits for write-back
    calls: list[str] = []
    real_syncfs, real_dir = blocks.syncfs, blocks.fsync_dir
    monkeypatch.setattr(blocks, "_fsync_file", lambda p: calls.append("fsync file"))
    monkeypatch.setattr(blocks, "syncfs", lambda d: (calls.append("syncfs"), real_syncfs(d)))
    monkeypatch.setattr(blocks, "fsync_dir", lambda d: (calls.append("dir"), real_dir(d)))
    with store.adding() as add:
        cids = [add(f) for f in _files(tmp_path / "in", 10)]
        assert not any(store.has(c) for c in cids)  # not under their names before the sync
        assert calls == []
    # one syncfs for the blocks' data, then the renames, one more for them: no fsync per
    # file or directory
    assert calls == ["syncfs", "syncfs"]
    assert [b"".join(store.cat(c)) for c in cids] == [f.read_bytes() for f in
                                                      _files(tmp_path / "again", 10)]


def test_a_batch_whose_syncfs_fails_leaves_no_block_and_no_temp_file(
        store: EmbeddedStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import peer.ipfs.blocks as blocks

    if blocks._syncfs_fn is None:
        pytest.skip("no syncfs here")
    monkeypatch.setattr(blocks, "dirty_bytes", lambda: 0)

    def failing(d: Path) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(blocks, "syncfs", failing)
    with pytest.raises(StoreError), store.adding() as add:
        cids = [add(f) for f in _files(tmp_path / "in", 3)]
    assert not any(store.has(c) for c in cids)  # nothing to announce: nothing there
    assert not [p for p in store.blocks.dir.rglob("*.tmp")]
    with pytest.raises(RuntimeError), store.adding() as add:  # a batch that fails itself
        add(tmp_path / "in" / "f0")
        raise RuntimeError("the task failed")
    store.add_bytes(b"the next write on this thread")  # forgets the failed batch
    assert not [p for p in store.blocks.dir.rglob("*.tmp")]


def test_without_syncfs_a_batch_fsyncs_each_block(
        store: EmbeddedStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import peer.ipfs.blocks as blocks

    fsynced: list[Path] = []
    real = blocks._fsync_file
    monkeypatch.setattr(blocks, "_syncfs_fn", None)
    monkeypatch.setattr(blocks, "_fsync_file", lambda p: (fsynced.append(p), real(p)))
    with store.adding() as add:
        cids = [add(f) for f in _files(tmp_path / "in", 4)]
    assert len(fsynced) == 4 and all(store.has(c) for c in cids)


def test_a_batch_fsyncs_its_own_files_when_other_writes_wait_for_write_back(
        store: EmbeddedStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A syncfs would wait for every dirty page of the file system (beside a neighbour's
    200 MB: 107 ms against 16-17 here): above SYNCFS_DIRTY_MAX_BYTES beyond the batch's own
    at its commit, its files are fsynced, renamed, then its directories; at or below it,
    one syncfs each time."""
    import peer.ipfs.blocks as blocks

    if blocks._syncfs_fn is None:
        pytest.skip("no syncfs here")
    calls: list[str] = []
    real_file, real_syncfs, real_dir = blocks._fsync_file, blocks.syncfs, blocks.fsync_dir
    monkeypatch.setattr(blocks, "_fsync_file", lambda p: (calls.append("file"), real_file(p)))
    monkeypatch.setattr(blocks, "syncfs", lambda d: (calls.append("syncfs"), real_syncfs(d)))
    monkeypatch.setattr(blocks, "fsync_dir", lambda d: (calls.append("dir"), real_dir(d)))
    cap = blocks.SYNCFS_DIRTY_MAX_BYTES
    # (dirty at the commit less the batch's own, syncfs?)
    for n, (others, expect_syncfs) in enumerate(((cap + 1, False), (cap, True))):
        files = []
        for i in range(4):  # new blocks each time
            f = tmp_path / f"in{n}" / f"f{i}"
            f.parent.mkdir(exist_ok=True)
            f.write_text(f"content {n} {i}\n")
            files.append(f)
        own = sum(f.stat().st_size for f in files)  # each file one block of its bytes
        read_with: list[int] = []  # temp files present when the dirty figure is read

        def dirty(d: int = others + own, seen: list[int] = read_with) -> int:
            seen.append(len(list(store.blocks.dir.rglob("*.tmp"))))
            return d

        monkeypatch.setattr(blocks, "dirty_bytes", dirty)
        calls.clear()
        with store.adding() as add:
            cids = [add(f) for f in files]
        assert all(store.has(c) for c in cids)
        # read once, at the commit (every block written): a task's own files written before
        # its blocks (and removed since) must not count as a neighbour's
        assert read_with == [4]
        if expect_syncfs:
            assert calls == ["syncfs", "syncfs"]
        else:  # the files' data, then (after the renames) their directories
            assert calls[:4] == ["file"] * 4 and set(calls[4:]) == {"dir"} and calls[4:]


def test_a_shard_another_process_made_has_its_root_entry_fsynced_at_first_use(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker that made a shard directory may have died before its sync: the next process
    to put a block there fsyncs the root (the shard's entry) too, not the shard alone."""
    import peer.ipfs.blocks as blocks
    from peer.cids import Cid, sha256_cid

    def raw(data: bytes) -> Cid:
        return sha256_cid(data, "raw", 1)

    first = raw(b"block 0")
    shard = first.key[-2:]
    second = next(d for i in range(1, 5000)
                  if raw(d := f"block {i}".encode()).key[-2:] == shard)  # its shard too
    made = EmbeddedStore(tmp_path / "store")
    made.blocks.put(first, b"block 0")
    made.blocks.sync()  # (a process that dies before this sync leaves the same shard)
    synced: list[Path] = []
    real = blocks.fsync_dir
    monkeypatch.setattr(blocks, "fsync_dir", lambda d: (synced.append(d), real(d)))
    other = EmbeddedStore(tmp_path / "store")  # another process: its own shard memo
    other.blocks.put(raw(second), second)
    other.blocks.sync()
    assert other.blocks.dir in synced and other.blocks.path(first.key).parent in synced


def test_dirty_bytes_reads_dirty_and_writeback_of_meminfo(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import peer.ipfs.blocks as blocks

    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal: 100 kB\nDirty:  3 kB\nWriteback:   2 kB\n"
                       "WritebackTmp: 50 kB\n")
    monkeypatch.setattr(blocks, "_MEMINFO", meminfo)
    assert blocks.dirty_bytes() == 5 * 1024
    monkeypatch.setattr(blocks, "_MEMINFO", tmp_path / "absent")
    assert blocks.dirty_bytes() is None


def test_file_cids_lists_as_walk_does_without_reading_one_block_files(
        store: EmbeddedStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A per-item task's input is listed at its split, every PARTIAL and its assembly:
    walk read (and hashed) every file's block for a size the planner does not use."""
    root = _tree(tmp_path / "t")
    (root / "sub" / "big.bin").write_bytes(os.urandom(600_000))  # several blocks: a dag-pb root
    cid = store.add_path(root)
    expected = [(e.path, e.cid) for e in store.walk(cid)]
    read: list[int] = []
    real = store.blocks.get
    monkeypatch.setattr(store.blocks, "get", lambda c: (read.append(c.codec), real(c))[1])
    assert store.file_cids(cid) == expected
    assert 0x55 not in read  # no raw block (a file's content) was read, directories were
    leaf = next(c for p, c in expected if p == "a.txt")
    assert store.file_cids(leaf) == [("", leaf)]
    big = parse_cid(next(c for p, c in expected if p == "sub/big.bin"))
    store.blocks.path(big.key).write_bytes(b"corrupt")  # a dag-pb node is still verified
    with pytest.raises(IntegrityError):
        store.file_cids(cid)


def test_make_dir_reads_each_dag_pb_child_once_for_its_size(
        store: EmbeddedStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A per-item task's PARTIALs and assembly rebuild its output directory from every output
    so far: a dag-pb output's block is read (and verified) for its size the first time only;
    a raw one (a one-block file) is not read: its size is its block file's length."""
    files = {f"o{i}.npy": store.add_bytes(f"output {i}\n".encode() * 50) for i in range(6)}
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(600_000))  # a dag-pb root: its size is its links' too
    files["big.bin"] = store.add_path(big)
    read: list[str] = []
    real = store.blocks.get
    monkeypatch.setattr(store.blocks, "get", lambda c: (read.append(str(c)), real(c))[1])
    first = store.make_dir(dict(list(files.items())[:3]))
    whole = store.make_dir(files)
    assert read == [files["big.bin"]]  # once; the raw leaves not at all
    fresh = EmbeddedStore(tmp_path / "store")  # nothing remembered: the same directories
    assert (fresh.make_dir(dict(list(files.items())[:3])), fresh.make_dir(files)) == (first,
                                                                                     whole)
    assert store.dag_size(files["big.bin"]) == fresh.dag_size(files["big.bin"]) > 600_000
    store.gc()  # nothing pinned: every block goes
    with pytest.raises(NotFound):
        store.dag_size(files["o0.npy"])
