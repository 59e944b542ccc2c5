"""The worker's per-item chunk path (peer/jobs/runner.py) on a real EmbeddedStore, and the peer's
handling of its item messages (peer/jobs/runs.py, on the in-memory mesh): results are announced
only once their outputs are durable, and batched."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from peer.cids import parse_cid
from peer.errors import IntegrityError
from peer.ipfs.blocks import BlockBatch
from peer.ipfs.embedded import EmbeddedStore
from peer.ipfs.store import StoreConfig
from peer.jobs import runner, scratch
from peer.jobs.ports import SchedulerConfig
from peer.jobs.sim import JobMesh
from peer.log import EventType
from tasks import registry
from tasks.registry import KEEP, TaskDef


class Ctx:
    """What the executor's ctx offers the runner; records the messages in order."""

    def __init__(self, workdir: Path, trail: list[tuple[Any, ...]]) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True)
        self.trail = trail

    def progress(self, fraction: float) -> None:
        self.trail.append(("progress", fraction))

    def log(self, message: str) -> None:
        self.trail.append(("log", message))

    def metric(self, name: str, step: int, value: float) -> None:
        pass

    def send(self, kind: str, *args: Any) -> None:
        self.trail.append((kind, *args))


def _chunk(tmp_path: Path, files: int) -> tuple[EmbeddedStore, dict[str, Any]]:
    """A store (the one runner.run opens for this root) holding `files` small files, and the
    work order of one CHECKSUM chunk over them."""
    cfg = StoreConfig(str(tmp_path / "store"))
    store = runner._store(cfg.to_json())
    assert isinstance(store, EmbeddedStore)
    src = tmp_path / "src"
    src.mkdir()
    for i in range(files):
        (src / f"f{i:02d}.txt").write_text(f"file {i}\n")
    root = store.add_path(src)
    items = sorted([e.path, e.cid] for e in store.walk(root) if e.kind == "file")
    return store, {"store": cfg.to_json(), "modules": [], "call": "CHECKSUM",
                   "params": {"algorithm": "sha256"}, "input": root, "items": items,
                   "fetch_allow": [], "kind": {}}


def _spy(monkeypatch: pytest.MonkeyPatch, trail: list[tuple[Any, ...]]) -> None:
    """Record each block a batch of adds writes and each batch's commit in `trail`, in order."""
    put, commit = BlockBatch.put_trusted, BlockBatch.commit

    def spied_put(self: BlockBatch, c: Any, data: bytes) -> None:
        trail.append(("put", str(c)))
        put(self, c, data)

    def spied_commit(self: BlockBatch) -> None:
        commit(self)
        trail.append(("synced",))

    monkeypatch.setattr(BlockBatch, "put_trusted", spied_put)
    monkeypatch.setattr(BlockBatch, "commit", spied_commit)


@pytest.mark.parametrize("flush_s", [0.0, 3600.0])
def test_item_results_are_announced_only_once_their_outputs_are_durable(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, flush_s: float) -> None:
    monkeypatch.setattr(runner, "_FLUSH_S", flush_s)
    store, payload = _chunk(tmp_path, 6)
    trail: list[tuple[Any, ...]] = []
    _spy(monkeypatch, trail)
    out = runner.run(payload, Ctx(tmp_path / "run", trail))  # type: ignore[arg-type]
    assert [p for p, _ in out["inputs"]] == [p for p, _ in payload["items"]]
    synced: set[str] = set()
    written: set[str] = set()
    announced: list[str] = []
    for kind, *args in trail:
        if kind == "put":
            written.add(args[0])
        elif kind == "synced":
            synced |= written
        elif kind == "items":
            for path, _cid, result in args[0]:
                assert result["c"] in synced, f"{path}'s output announced before its sync"
                announced.append(path)
    assert announced == [p for p, _ in payload["items"]]  # every item once, in order
    messages = [t for t in trail if t[0] == "items"]
    syncs = [t for t in trail if t[0] == "synced"]
    if flush_s:  # a chunk shorter than the flush interval: one sync, one message
        assert len(messages) == 1 and len(syncs) == 1
    else:  # every item is a batch of its own
        assert len(messages) == 6 and len(syncs) == 6
    for path, cid in payload["items"]:  # the outputs are the task's, as add_path stores them
        data = b"".join(store.cat(cid))
        text = b"".join(store.cat(out["items"][path]["c"])).decode()
        assert text == f"{hashlib.sha256(data).hexdigest()}  {path.rsplit('/', 1)[-1]}\n"


def test_a_chunks_last_items_are_a_batch_of_their_own(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The batch before them is committed while they compute: the chunk's end waits for a
    commit of a few items only. Each batch is announced once durable, in order."""
    monkeypatch.setattr(runner, "_FLUSH_S", 3600.0)
    _, payload = _chunk(tmp_path, 12)
    trail: list[tuple[Any, ...]] = []
    _spy(monkeypatch, trail)
    out = runner.run(payload, Ctx(tmp_path / "run", trail))  # type: ignore[arg-type]
    messages = [[path for path, _, _ in t[1]] for t in trail if t[0] == "items"]
    paths = [p for p, _ in payload["items"]]
    assert messages == [paths[:-runner._TAIL_ITEMS], paths[-runner._TAIL_ITEMS:]]
    assert len([t for t in trail if t[0] == "synced"]) == 2
    assert sorted(out["items"]) == sorted(paths)


def test_a_failing_item_announces_nothing_of_its_unsynced_batch(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner, "_FLUSH_S", 3600.0)
    _, payload = _chunk(tmp_path, 3)
    payload["items"][1][1] = "bafkreiaheqdfvsfwin2qysg2nd3n4upuu7oyiwtnuvai2oi3lesbeuh42q"  # absent
    trail: list[tuple[Any, ...]] = []
    with pytest.raises(Exception, match="not in the store"):
        runner.run(payload, Ctx(tmp_path / "run", trail))  # type: ignore[arg-type]
    assert [t for t in trail if t[0] == "items"] == []


async def test_a_message_of_many_items_is_recorded_in_one_cache_put() -> None:
    cfg = SchedulerConfig(store=StoreConfig("/nonexistent"), stagger_s=0.05)
    mesh = JobMesh(1, registry.load(("tests.fixture_tasks",)), cfg)
    try:
        job = mesh.submit("p0", [{"name": "w", "call": "T_WRITE", "params": {"files": 3}},
                                 {"name": "u", "call": "T_UPPER", "depends": ["w"]}])
        await mesh.settle()
        mesh["p0"].runner.finish(f"{job}/w/0/0")
        await mesh.advance(max(cfg.stagger_s * 2, cfg.tick_s))
        key = f"{job}/u/0/0"
        items = mesh["p0"].runner.payloads[key]["items"]
        mesh.clock.advance(cfg.progress_interval_s)
        mesh["p0"].runner.messages[key]("items", (
            [[path, cid, {"n": path, "c": f"bafkout{i}"}] for i, (path, cid) in enumerate(items)],))
        await mesh.settle()
        [put] = mesh.events(EventType.CACHE_PUT)
        assert sorted(r["c"] for r in put.payload["cache"].values()) == [
            f"bafkout{i}" for i in range(len(items))]
    finally:
        await mesh.close()


def _peek(seen: list[tuple[bool, bytes]], scribble: bool = False) -> TaskDef:
    def peek(ctx: Any, src: Path, out_dir: Path) -> Any:
        seen.append((src.is_symlink(), src.read_bytes()))
        if scribble:  # a task writing to its input changes its own copy only
            src.write_bytes(b"scribbled")
        return KEEP

    return TaskDef(name="PEEK", version="1", fn=peek, args=(), per_item=True)


@pytest.mark.parametrize("tmpfs", [True, False])
def test_a_python_task_gets_private_copies_of_its_items_and_cannot_change_the_store(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tmpfs: bool) -> None:
    if not tmpfs:  # no tmpfs: the scratch goes to the run's work directory
        monkeypatch.setattr(scratch, "TMPFS", str(tmp_path / "absent"))
    store, payload = _chunk(tmp_path, 2)
    big = tmp_path / "big.bin"
    big.write_bytes(bytes(range(256)) * 2048)  # 512 KiB: two leaves and a root node
    payload["items"].append(["big.bin", store.add_path(big)])
    seen: list[tuple[bool, bytes]] = []
    monkeypatch.setattr(runner, "_task", lambda call, modules: _peek(seen, scribble=True))
    out = runner.run({**payload, "params": {}}, Ctx(tmp_path / "run", []))  # type: ignore[arg-type]
    assert [s for s, _ in seen] == [False, False, False]  # copies, never the block's file
    assert [d for _, d in seen] == [b"".join(store.cat(c)) for _, c in payload["items"]]
    assert {p: r["c"] for p, r in out["items"].items()} == dict(payload["items"])
    for (_, c), (_, data) in zip(payload["items"], seen, strict=True):  # unchanged, valid
        assert b"".join(store.cat(c)) == data
    assert not (tmp_path / "run" / "items").exists() or not any(
        (tmp_path / "run" / "items").iterdir())
    assert [d for d in Path(scratch.TMPFS).glob(f"{scratch.PREFIX}{os.getpid()}-*")] == []


def test_a_corrupt_block_never_reaches_the_task(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    store, payload = _chunk(tmp_path, 1)
    (_, cid), = payload["items"]
    store.blocks.path(parse_cid(cid).key).write_bytes(b"not what was stored\n")
    seen: list[tuple[bool, bytes]] = []
    monkeypatch.setattr(runner, "_task", lambda call, modules: _peek(seen))
    with pytest.raises(IntegrityError):
        runner.run({**payload, "params": {}}, Ctx(tmp_path / "run", []))  # type: ignore[arg-type]
    assert seen == []


@pytest.mark.parametrize("has_syncfs", [True, False])
def test_a_batch_makes_its_renames_durable_before_it_ends(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, has_syncfs: bool) -> None:
    import peer.ipfs.blocks as blocks

    if has_syncfs and blocks._syncfs_fn is None:
        pytest.skip("no syncfs here")
    if not has_syncfs:
        monkeypatch.setattr(blocks, "_syncfs_fn", None)
    monkeypatch.setattr(blocks, "dirty_bytes", lambda: 0)  # nothing else waits for write-back
    store = EmbeddedStore(tmp_path / "store")
    trail: list[tuple[str, Path]] = []
    real_dir, real_syncfs, real_replace = blocks.fsync_dir, blocks.syncfs, os.replace
    monkeypatch.setattr(blocks, "fsync_dir", lambda d: (trail.append(("dir", d)), real_dir(d)))
    monkeypatch.setattr(blocks, "syncfs", lambda d: (trail.append(("syncfs", d)), real_syncfs(d)))
    monkeypatch.setattr(blocks.os, "replace", lambda a, b: (trail.append(("rename", Path(b))),
                                                            real_replace(a, b)))
    files = []
    for i in range(12):
        f = tmp_path / f"f{i}"
        f.write_text(f"content {i}\n")
        files.append(f)
    with store.adding() as add:
        cids = [add(f) for f in files]
        assert trail == []  # nothing synced or renamed per add
    renamed = [i for i, (kind, _) in enumerate(trail) if kind == "rename"]
    assert len(renamed) == len(cids)
    after = trail[renamed[-1] + 1:]  # what made the renames durable
    if has_syncfs:  # the data before the renames, the renames after: one syncfs each
        assert [k for k, _ in trail if k != "rename"] == ["syncfs", "syncfs"]
        assert after == [("syncfs", store.blocks.dir)]
    else:  # every shard directory fsynced after the last rename
        shards = {store.blocks.path(parse_cid(c).key).parent for c in cids}
        assert shards <= {d for kind, d in after if kind == "dir"}


def test_a_batch_added_on_one_thread_is_committed_on_another(tmp_path: Path) -> None:
    import fcntl
    import threading

    store = EmbeddedStore(tmp_path / "store")
    (tmp_path / "f").write_text("made here, committed there\n")
    batch = store.add_batch()
    cid = batch.add(tmp_path / "f")
    assert not store.has(cid)
    t = threading.Thread(target=batch.commit)
    t.start()
    t.join()
    assert b"".join(store.cat(cid)) == b"made here, committed there\n"
    fd = os.open(tmp_path / "store" / "lock", os.O_RDWR)
    try:  # the store's shared lock was let go: gc could take it (without waiting)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        os.close(fd)


def test_a_batch_with_nothing_new_to_write_does_not_sync(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """FILTER_LONGER's chunks keep or drop their items: no output, no syncfs."""
    import peer.ipfs.blocks as blocks

    store = EmbeddedStore(tmp_path / "store")
    (tmp_path / "f").write_text("there already\n")
    store.add_path(tmp_path / "f")
    calls: list[str] = []
    monkeypatch.setattr(blocks, "syncfs", lambda d: calls.append("syncfs"))
    monkeypatch.setattr(blocks, "fsync_dir", lambda d: calls.append("dir"))
    with store.adding() as add:
        add(tmp_path / "f")
    with store.adding():
        pass
    assert calls == []


def _same_place(ctx: Any, src: Path, out_dir: Path) -> Any:
    """Writes every item's output to one path outside its output directory."""
    dest = ctx.workdir / "same.txt"
    dest.write_bytes(b"copy of " + src.read_bytes())
    return dest


def test_an_output_outside_its_directory_is_imported_before_the_next_item_runs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner, "_FLUSH_S", 3600.0)
    store, payload = _chunk(tmp_path, 4)
    monkeypatch.setattr(runner, "_task", lambda call, modules: TaskDef(
        name="SAME", version="1", fn=_same_place, args=(), per_item=True))
    trail: list[tuple[Any, ...]] = []
    out = runner.run({**payload, "params": {}}, Ctx(tmp_path / "run", trail))  # type: ignore[arg-type]
    for path, cid in payload["items"]:
        assert b"".join(store.cat(out["items"][path]["c"])) == b"copy of " + b"".join(
            store.cat(cid))
    assert len([t for t in trail if t[0] == "items"]) == 1  # one batch: each imported at once


def test_a_failed_batch_sync_fails_the_chunk_and_announces_nothing_of_that_batch(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from peer.errors import StoreError

    monkeypatch.setattr(runner, "_FLUSH_S", 0.0)  # one item per batch
    _, payload = _chunk(tmp_path, 4)
    trail: list[tuple[Any, ...]] = []
    commit, calls = BlockBatch.commit, []

    def failing_second(self: BlockBatch) -> None:
        calls.append(1)
        if len(calls) == 2:
            raise StoreError("disk gone")
        commit(self)

    monkeypatch.setattr(BlockBatch, "commit", failing_second)
    with pytest.raises(StoreError, match="disk gone"):
        runner.run(payload, Ctx(tmp_path / "run", trail))  # type: ignore[arg-type]
    announced = [path for t in trail if t[0] == "items" for path, _, _ in t[1]]
    assert announced == [payload["items"][0][0]]  # the first batch only, synced


def test_scratch_left_on_tmpfs_by_a_dead_worker_is_swept(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import subprocess
    import sys

    monkeypatch.setattr(scratch, "TMPFS", str(tmp_path / "shm"))
    (tmp_path / "shm").mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    left = tmp_path / "shm" / f"{scratch.PREFIX}{dead}-x1"
    live = tmp_path / "shm" / f"{scratch.PREFIX}{os.getppid()}-x2"
    other = tmp_path / "shm" / "someone-else"
    for d in (left, live, other):
        (d / "b0").mkdir(parents=True)
    _, payload = _chunk(tmp_path, 1)
    runner.run(payload, Ctx(tmp_path / "run", []))  # type: ignore[arg-type]
    assert not left.exists() and live.exists() and other.exists()


def _in_place(ctx: Any, src: Path, out_dir: Path) -> Any:
    """Changes its own copy of the input and returns it as the output."""
    src.write_bytes(b"changed " + src.read_bytes())
    return src


def test_an_input_changed_in_place_and_returned_is_the_output(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store, payload = _chunk(tmp_path, 3)
    big = tmp_path / "big.bin"
    big.write_bytes(bytes(range(256)) * 2048)  # two leaves: a copy on the work directory
    payload["items"].append(["big.bin", store.add_path(big)])
    monkeypatch.setattr(runner, "_task", lambda call, modules: TaskDef(
        name="INPLACE", version="1", fn=_in_place, args=(), per_item=True))
    out = runner.run({**payload, "params": {}}, Ctx(tmp_path / "run", []))  # type: ignore[arg-type]
    for path, cid in payload["items"]:
        original = b"".join(store.cat(cid))  # the store's block is unchanged
        assert b"".join(store.cat(out["items"][path]["c"])) == b"changed " + original


def _removes_its_dirs(ctx: Any, src: Path, out_dir: Path) -> Any:
    """Writes its output beside the run, then removes its own input and output directories."""
    dest = ctx.workdir / f"{src.name}.out"
    dest.write_bytes(b"seen " + src.read_bytes())
    src.unlink()
    src.parent.rmdir()
    out_dir.rmdir()
    return dest


def test_a_task_that_removes_its_own_directories_does_not_break_the_next_item(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store, payload = _chunk(tmp_path, 3)
    monkeypatch.setattr(runner, "_task", lambda call, modules: TaskDef(
        name="RMDIRS", version="1", fn=_removes_its_dirs, args=(), per_item=True))
    out = runner.run({**payload, "params": {}}, Ctx(tmp_path / "run", []))  # type: ignore[arg-type]
    for path, cid in payload["items"]:
        assert b"".join(store.cat(out["items"][path]["c"])) == b"seen " + b"".join(
            store.cat(cid))


def _links_its_input_dir(kept: Path, seen: list[bool]) -> Any:
    def task(ctx: Any, src: Path, out_dir: Path) -> Any:
        """Points the chunk's input directory (`in` beside its output directory) at `kept`."""
        inp = out_dir.parent / "in"
        seen.append(inp.is_symlink())
        dest = ctx.workdir / f"{src.name}.out"
        dest.write_bytes(b"seen " + src.read_bytes())
        if not inp.is_symlink():
            shutil.rmtree(inp)
            inp.symlink_to(kept)
        return dest
    return task


def test_a_task_that_points_the_input_directory_elsewhere_never_has_an_item_put_there(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shm: Path) -> None:
    """(Session 37's list: `_batch` left a symlink a task put at the scratch's `in` while
    the item was on the work directory, a large one on tmpfs scratch.) The next item, one
    raw block, was written through it into the directory it points at."""
    kept = tmp_path / "kept"
    kept.mkdir()
    store, payload = _chunk(tmp_path, 2)
    big = tmp_path / "big.bin"
    big.write_bytes(bytes(range(256)) * 2048)  # two leaves: on the work directory, first
    payload["items"].insert(0, ["big.bin", store.add_path(big)])
    seen: list[bool] = []
    monkeypatch.setattr(runner, "_task", lambda call, modules: TaskDef(
        name="LINKIN", version="1", fn=_links_its_input_dir(kept, seen), args=(),
        per_item=True))
    out = runner.run({**payload, "params": {}}, Ctx(tmp_path / "run", []))  # type: ignore[arg-type]
    assert seen == [False, False, False] and list(kept.iterdir()) == []
    for path, cid in payload["items"]:
        assert b"".join(store.cat(out["items"][path]["c"])) == b"seen " + b"".join(
            store.cat(cid))


# -- a whole task's output ---------------------------------------------------------------------

def _tree(dest: Path) -> None:
    """Files of one block and of several (600 KB: three 256 KiB leaves), in subdirectories."""
    for spk in ("a", "b"):
        (dest / spk).mkdir(parents=True)
        for i in range(3):
            (dest / spk / f"{i}.wav").write_bytes(f"{spk} {i}\n".encode() * (50 + i))
        (dest / spk / "long.wav").write_bytes(bytes(range(256)) * 2400)


def _tree_writer() -> TaskDef:
    def write(ctx: Any, inp: Path | None, out: Path) -> None:
        _tree(out)

    return TaskDef(name="TREE", version="1", fn=write, args=(), needs_input=False)


def _whole(tmp_path: Path) -> dict[str, Any]:
    return {"store": StoreConfig(str(tmp_path / "store")).to_json(), "modules": [],
            "call": "TREE", "params": {}, "input": None, "items": None, "fetch_allow": [],
            "kind": {}, "inline_max_bytes": 0}


def test_a_whole_output_is_made_durable_as_one_batch_not_a_fsync_per_block(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """FETCH_FESTVOX's output is 440 blocks: a fsync each (on the add_path pool) cost a
    journal commit each. Its CID is add_path's: the same blocks, the same DAG."""
    import peer.ipfs.blocks as blocks

    monkeypatch.setattr(blocks, "dirty_bytes", lambda: 0)  # nothing else waits for write-back
    fsyncs: list[Path] = []
    real = blocks._fsync_file
    monkeypatch.setattr(blocks, "_fsync_file", lambda p: (fsyncs.append(p), real(p)))
    trail: list[tuple[Any, ...]] = []
    _spy(monkeypatch, trail)
    monkeypatch.setattr(runner, "_task", lambda call, modules: _tree_writer())
    out = runner.run(_whole(tmp_path), Ctx(tmp_path / "run", []))  # type: ignore[arg-type]
    puts = [t for t in trail if t[0] == "put"]
    assert len(puts) >= 10 and trail[-1] == ("synced",)  # every block, then one commit
    assert [t for t in trail if t[0] == "synced"] == [("synced",)]
    if blocks._syncfs_fn is not None:
        assert fsyncs == []
    _tree(tmp_path / "copy")
    assert out["output"] == EmbeddedStore(tmp_path / "other").add_path(tmp_path / "copy")
    store = runner._store(_whole(tmp_path)["store"])
    assert store.is_complete(out["output"])


def test_a_whole_outputs_files_are_removed_before_its_commit(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The commit's sync of the file system would otherwise write them back to disk, only
    for the run's cleanup to delete them (57 MB for FETCH_FESTVOX)."""
    left: list[list[str]] = []
    commit = BlockBatch.commit

    def spied(self: BlockBatch) -> None:
        run = tmp_path / "run"
        left.append(sorted(str(p.relative_to(run)) for p in run.rglob("*")))
        commit(self)

    monkeypatch.setattr(BlockBatch, "commit", spied)
    monkeypatch.setattr(runner, "_task", lambda call, modules: _tree_writer())
    out = runner.run(_whole(tmp_path), Ctx(tmp_path / "run", []))  # type: ignore[arg-type]
    assert left == [[]]
    store = runner._store(_whole(tmp_path)["store"])
    assert sorted(e.path for e in store.walk(out["output"]) if e.kind == "file") == [
        f"{s}/{n}" for s in ("a", "b") for n in ("0.wav", "1.wav", "2.wav", "long.wav")]


def test_a_whole_output_whose_commit_fails_fails_the_run_and_leaves_no_block(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import peer.ipfs.blocks as blocks
    from peer.errors import StoreError

    def fail(d: Path) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(blocks, "syncfs", fail)
    monkeypatch.setattr(blocks, "_fsync_file", fail)
    monkeypatch.setattr(runner, "_task", lambda call, modules: _tree_writer())
    with pytest.raises(StoreError, match="Input/output error"):
        runner.run(_whole(tmp_path), Ctx(tmp_path / "run", []))  # type: ignore[arg-type]
    store = runner._store(_whole(tmp_path)["store"])
    assert isinstance(store, EmbeddedStore)
    assert [p for p in store.blocks.dir.rglob("*") if p.is_file()] == []


def _links_its_output(kept: Path) -> Any:
    def task(ctx: Any, src: Path, out_dir: Path) -> Any:
        """Writes its output beside the run, then points its output directory at `kept`."""
        dest = ctx.workdir / f"{src.name}.out"
        dest.write_bytes(b"seen " + src.read_bytes())
        if not out_dir.is_symlink():  # (the last item's link stays, if the peer keeps it)
            out_dir.rmdir()
            out_dir.symlink_to(kept)
        return dest
    return task


def test_a_task_that_points_its_output_directory_elsewhere_never_has_that_emptied(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """(Review: the per-item `empty(out)` followed a symlink the task put there.) The link is
    removed, the directory it points at kept whole, and the next items run."""
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "precious").write_text("mine")
    store, payload = _chunk(tmp_path, 3)
    monkeypatch.setattr(runner, "_task", lambda call, modules: TaskDef(
        name="LINKOUT", version="1", fn=_links_its_output(kept), args=(), per_item=True))
    out = runner.run({**payload, "params": {}}, Ctx(tmp_path / "run", []))  # type: ignore[arg-type]
    assert (kept / "precious").read_text() == "mine"
    for path, cid in payload["items"]:
        assert b"".join(store.cat(out["items"][path]["c"])) == b"seen " + b"".join(
            store.cat(cid))
