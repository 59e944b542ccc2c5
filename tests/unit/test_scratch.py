"""Where a run writes its files (peer/jobs/scratch.py): the peer's rule per call (a fake
runner on the in-memory mesh), the worker's tmpfs checks and the sweep of a dead worker's
directory (a fake clock, a real killed process), and runner.run's whole-task path on tmpfs
and on disk (a real EmbeddedStore)."""

from __future__ import annotations

import dataclasses
import fcntl
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from peer.dataentry import empty, remove_tree
from peer.errors import ConfigError
from peer.ipfs.store import StoreConfig
from peer.jobs import runner, scratch
from peer.jobs.ports import SchedulerConfig
from peer.jobs.sim import JobMesh
from peer.log import EventType
from tasks import registry
from tasks.registry import TaskDef

MIB = 1 << 20
CFG = SchedulerConfig(store=StoreConfig("/nonexistent"), stagger_s=0.05,
                      tmpfs_output_max_bytes=MIB)
TURN_S = max(CFG.stagger_s * 2, CFG.tick_s)


@pytest.mark.parametrize(("last_bytes", "max_bytes", "tmpfs"), [
    (None, MIB, False),  # never run here: disk
    (0, MIB, True),
    (12, MIB, True),
    (MIB, MIB, True),
    (MIB + 1, MIB, False),  # a big output: disk
    (12, 0, False),  # tmpfs outputs off
    (-1, MIB, False),
])
def test_which_outputs_go_on_tmpfs(last_bytes: int | None, max_bytes: int, tmpfs: bool) -> None:
    assert scratch.small_output(last_bytes, max_bytes) is tmpfs


# -- the peer's rule, per call, on the in-memory mesh -----------------------------------------

@pytest.fixture
async def mesh() -> AsyncIterator[JobMesh]:
    m = JobMesh(1, registry.load(("tests.fixture_tasks",)), CFG)
    yield m
    await m.close()


async def _run_once(mesh: JobMesh, end: Any) -> dict[str, Any]:
    """Submit a one-task job of T_WRITE, end its run with `end(runner, key)`; its payload."""
    tag = str(len(mesh["p0"].runner.started))  # a new run each time, not a cache hit
    job = mesh.submit("p0", [{"name": "w", "call": "T_WRITE",
                              "params": {"files": 1, "tag": tag}}])
    await mesh.settle()
    key = f"{job}/w/0/0"
    payload: dict[str, Any] = mesh["p0"].runner.payloads[key]
    end(mesh["p0"].runner, key)
    await mesh.advance(TURN_S)
    return payload


def _done(size: int | None) -> Any:
    def end(r: Any, key: str) -> None:
        value = {"output": r.store.add_bytes(key.encode())}
        r.finish(key, value if size is None else {**value, "bytes": size})
    return end


async def test_a_call_goes_on_tmpfs_after_a_small_output_and_back_to_disk_after_a_big_one(
        mesh: JobMesh) -> None:
    trail = []
    for end in (_done(12), _done(12), _done(2 * MIB), _done(MIB), _done(None), _done(5)):
        payload = await _run_once(mesh, end)
        trail.append(payload["tmpfs_output"])
        assert payload["tmpfs_output_max_bytes"] == MIB  # the worker counts up to here
        assert payload["tmpfs_free_min_bytes"] == CFG.tmpfs_free_min_bytes
    # unknown, small, small, big, small, not counted, small
    assert trail == [False, True, True, False, True, False]


async def test_a_failed_run_sends_its_calls_next_output_to_disk(mesh: JobMesh) -> None:
    await _run_once(mesh, _done(12))
    assert (await _run_once(mesh, lambda r, k: r.fail(k, "error", "OSError: No space left")))[
        "tmpfs_output"] is True
    assert (await _run_once(mesh, _done(12)))["tmpfs_output"] is False  # after the failure
    assert (await _run_once(mesh, _done(12)))["tmpfs_output"] is True


async def test_a_cancelled_run_leaves_its_calls_history_alone(mesh: JobMesh) -> None:
    await _run_once(mesh, _done(12))
    assert (await _run_once(mesh, lambda r, k: r.cancel(k)))["tmpfs_output"] is True
    assert (await _run_once(mesh, _done(12)))["tmpfs_output"] is True


STOPPED = "tmpfs /dev/shm below its floor of 128.0 MiB while this run wrote there (...)"


async def test_a_run_stopped_for_storage_sends_its_calls_next_output_to_disk() -> None:
    """The executor's watch stops a run that fills the tmpfs (kind storage): its retry, and
    its call's next runs until one succeeds, write on disk."""
    m = JobMesh(1, registry.load(("tests.fixture_tasks",)),
                dataclasses.replace(CFG, storage_retry_s=0.0))
    try:
        await _run_once(m, _done(12))
        r = m["p0"].runner
        job = m.submit("p0", [{"name": "w", "call": "T_WRITE", "params": {"files": 10 ** 8}}])
        await m.settle()
        assert r.payloads[f"{job}/w/0/0"]["tmpfs_output"] is True  # the last output was small
        r.fail(f"{job}/w/0/0", "storage", STOPPED)
        await m.advance(TURN_S)
        failed = [e.payload for e in m["p0"].emitted if e.type == EventType.CHUNK_FAILED]
        assert [(f["kind"], f["error"]) for f in failed] == [("storage", STOPPED)]
        assert r.payloads[f"{job}/w/0/1"]["tmpfs_output"] is False  # the retry: on disk
        r.finish(f"{job}/w/0/1", {"output": r.store.add_bytes(b"big"), "bytes": 2 * MIB})
        await m.advance(TURN_S)
        assert (await _run_once(m, _done(12)))["tmpfs_output"] is False
    finally:
        await m.close()


async def test_a_per_item_chunk_of_a_call_stopped_for_storage_keeps_its_scratch_on_disk(
        ) -> None:
    m = JobMesh(1, registry.load(("tests.fixture_tasks",)),
                dataclasses.replace(CFG, storage_retry_s=0.0))
    try:
        r = m["p0"].runner
        trail = []
        for tag, end in (("a", "ok"), ("b", "storage"), ("c", "ok")):
            job = m.submit("p0", [{"name": "w", "call": "T_WRITE",
                                   "params": {"files": 2, "tag": tag}},
                                  {"name": "u", "call": "T_UPPER", "depends": ["w"]}])
            await m.settle()
            r.finish(f"{job}/w/0/0")
            await m.advance(TURN_S)
            trail.append(r.payloads[f"{job}/u/0/0"]["tmpfs_items"])
            if end == "storage":
                r.fail(f"{job}/u/0/0", "storage", STOPPED)
                await m.advance(TURN_S)
                trail.append(r.payloads[f"{job}/u/0/1"]["tmpfs_items"])  # the retry
                r.finish(f"{job}/u/0/1")
            else:
                r.finish(f"{job}/u/0/0")
            await m.advance(TURN_S)
        assert trail == [True, True, False, True]  # on disk only after the storage failure
    finally:
        await m.close()


async def test_per_item_chunks_are_not_whole_outputs(mesh: JobMesh) -> None:
    job = mesh.submit("p0", [{"name": "w", "call": "T_WRITE", "params": {"files": 2}},
                             {"name": "u", "call": "T_UPPER", "depends": ["w"]}])
    await mesh.settle()
    mesh["p0"].runner.finish(f"{job}/w/0/0", {"output": mesh["p0"].runner.store.make_dir({
        "a.txt": mesh["p0"].runner.store.add_bytes(b"a")}), "bytes": 1})
    await mesh.advance(TURN_S)
    payload = mesh["p0"].runner.payloads[f"{job}/u/0/0"]
    assert "tmpfs_output" not in payload and payload["items"]


# -- the worker's checks -----------------------------------------------------------------------

def test_no_tmpfs_means_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scratch, "TMPFS", str(tmp_path / "absent"))
    assert scratch.on_tmpfs(0, scratch.Sweeps()) is None


def test_a_tmpfs_low_on_space_means_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "shm").mkdir()
    monkeypatch.setattr(scratch, "TMPFS", str(tmp_path / "shm"))
    st = os.statvfs(tmp_path / "shm")
    free = st.f_bavail * st.f_frsize
    assert scratch.on_tmpfs(free + (1 << 30), scratch.Sweeps()) is None
    d = scratch.on_tmpfs(0, scratch.Sweeps())
    assert d is not None and d.parent == tmp_path / "shm"
    assert d.name.startswith(f"{scratch.PREFIX}{os.getpid()}-")


def _killed_worker_dir(shm: Path) -> Path:
    """A process that makes its directory on `shm` as a worker does, then is SIGKILLed."""
    code = ("import os, signal; from peer.jobs import scratch; "
            f"scratch.TMPFS = {str(shm)!r}; d = scratch.on_tmpfs(0); (d / 'output').mkdir(); "
            "print(d, flush=True); os.kill(os.getpid(), signal.SIGKILL)")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert p.returncode == -9
    return Path(p.stdout.strip())


def test_a_killed_runs_tmpfs_directory_is_swept_at_most_once_per_interval(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shm = tmp_path / "shm"
    shm.mkdir()
    monkeypatch.setattr(scratch, "TMPFS", str(shm))
    now = [100.0]
    sweeps = scratch.Sweeps(interval_s=5.0, clock=lambda: now[0])
    first = _killed_worker_dir(shm)
    mine = scratch.on_tmpfs(0, sweeps)  # the first use in a process sweeps
    assert not first.exists() and mine is not None and mine.exists()
    second = _killed_worker_dir(shm)
    now[0] += 4.9
    assert scratch.on_tmpfs(0, sweeps) is not None and second.exists()  # not due yet
    now[0] += 0.1
    assert scratch.on_tmpfs(0, sweeps) is not None
    assert not second.exists() and mine.exists()  # ours lives: this process is alive
    assert sweeps.maybe(str(shm)) == 0


def test_a_dead_workers_leftover_is_swept_before_the_free_space_floor_is_checked(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Leftovers of killed runs are what fills a tmpfs: they must not keep it 'full'."""
    shm = tmp_path / "shm"
    shm.mkdir()
    monkeypatch.setattr(scratch, "TMPFS", str(shm))
    left = _killed_worker_dir(shm)
    seen: list[bool] = []
    real = os.statvfs
    monkeypatch.setattr(scratch.os, "statvfs", lambda p: (seen.append(left.exists()), real(p))[1])
    assert scratch.on_tmpfs(0, scratch.Sweeps()) is not None
    assert seen == [False]  # the space was measured after the sweep


def test_memory_short_means_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """tmpfs pages are RAM that the worker's memory limit does not count."""
    (tmp_path / "shm").mkdir()
    monkeypatch.setattr(scratch, "TMPFS", str(tmp_path / "shm"))
    info = tmp_path / "meminfo"
    info.write_text("MemTotal:       1000 kB\nMemAvailable:     512 kB\n")
    assert scratch.mem_available(str(info)) == 512 * 1024
    assert scratch.mem_available(str(tmp_path / "absent")) == 0
    monkeypatch.setattr(scratch, "mem_available", lambda: 512 * 1024)
    assert scratch.on_tmpfs(512 * 1024 + 1, scratch.Sweeps()) is None
    assert scratch.on_tmpfs(512 * 1024, scratch.Sweeps()) is not None


def test_the_sweep_skips_names_it_cannot_trust(tmp_path: Path) -> None:
    """The tmpfs is every user's: a pid no process can have, a symlink, a plain file."""
    huge = tmp_path / f"{scratch.PREFIX}99999999999999999999-x"
    huge.mkdir()
    target = tmp_path / "target"
    target.mkdir()
    (target / "keep").write_text("x")
    (tmp_path / f"{scratch.PREFIX}2147483646-link").symlink_to(target)
    (tmp_path / f"{scratch.PREFIX}2147483645-file").write_text("x")
    assert scratch.sweep(tmp_path) == 0
    assert huge.exists() and (target / "keep").exists()
    assert scratch.alive(10 ** 20)  # not a pid_t: not ours to remove


def test_the_executor_finds_and_removes_a_workers_directories_by_its_pid(
        tmp_path: Path) -> None:
    mine = [tmp_path / f"{scratch.PREFIX}4242-a", tmp_path / f"{scratch.PREFIX}4242-b"]
    theirs = tmp_path / f"{scratch.PREFIX}42421-a"
    for d in [*mine, theirs]:
        (d / "output").mkdir(parents=True)
        (d / "output" / "f").write_bytes(b"x")
    (tmp_path / f"{scratch.PREFIX}4243-file").write_text("x")  # not a directory
    (tmp_path / f"{scratch.PREFIX}4244-link").symlink_to(theirs)
    stale = tmp_path / f"{scratch.PREFIX}4245-a"  # a dead worker's: nobody holds it
    stale.mkdir()
    fds = [scratch.hold(d) for d in mine]
    assert scratch.holders(tmp_path, {4242, 4243, 4244, 4245, 7}) == {4242}
    for fd in fds:
        os.close(fd)
    assert scratch.remove_dirs(tmp_path, 4242) == 2
    assert not any(d.exists() for d in mine) and (theirs / "output" / "f").exists()
    assert scratch.remove_dirs(tmp_path / "absent", 4242) == 0


def test_the_sweeps_leave_a_directory_a_live_worker_holds(tmp_path: Path) -> None:
    """A live worker whose PID is another PID namespace's (a container sharing /dev/shm)
    looks dead here: its directory was removed under it by a worker's sweep, and by the
    executor's removal of a dead worker's of the same PID. A worker holds its directory
    locked (flock) while it uses it, and both pass over what is held."""
    pid = int(Path("/proc/sys/kernel/pid_max").read_text()) + 1  # (no process has it here)
    live = tmp_path / f"{scratch.PREFIX}{pid}-x"
    (live / "output").mkdir(parents=True)
    fd = os.open(live, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        assert scratch.sweep(tmp_path) == 0 and scratch.remove_dirs(tmp_path, pid) == 0
        assert (live / "output").is_dir()
    finally:
        os.close(fd)  # (the worker ends)
    assert scratch.sweep(tmp_path) == 1 and not live.exists()


def test_a_workers_directory_on_tmpfs_is_held_until_it_is_removed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shm = tmp_path / "shm"
    shm.mkdir()
    monkeypatch.setattr(scratch, "TMPFS", str(shm))
    d = scratch.on_tmpfs(0, scratch.Sweeps())
    assert d is not None
    other = os.open(d, os.O_RDONLY | os.O_DIRECTORY)  # (as another namespace's sweep)
    try:
        with pytest.raises(BlockingIOError):  # held while the worker uses it
            fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        scratch.remove(d)
        assert not d.exists()
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released with it
    finally:
        os.close(other)


@pytest.mark.parametrize(("free", "mem", "short"), [
    (100 * MIB, 100 * MIB, False), (100 * MIB - 1, 200 * MIB, True),
    (200 * MIB, 99 * MIB, True), (0, 1 << 40, True)])
def test_the_tmpfs_or_the_memory_below_the_floor_is_short(free: int, mem: int,
                                                         short: bool) -> None:
    space = scratch.Space(free, mem)
    assert space.short(100 * MIB) is short
    text = space.describe("/dev/shm", 100 * MIB)
    assert "tmpfs /dev/shm below its floor of 100.0 MiB" in text
    assert f"{free / MIB:.1f} MiB" in text and f"MemAvailable: {mem / MIB:.1f} MiB" in text


def test_space_reads_the_tmpfs_and_the_memory(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scratch, "TMPFS", str(tmp_path))
    monkeypatch.setattr(scratch, "mem_available", lambda: 12345)
    got = scratch.space()
    assert got is not None and got.mem_available_bytes == 12345 and got.tmpfs_free_bytes > 0
    monkeypatch.setattr(scratch, "TMPFS", str(tmp_path / "absent"))
    assert scratch.space() is None


def test_tree_bytes_stops_counting_above_its_bound(tmp_path: Path) -> None:
    for i in range(4):
        (tmp_path / "d" / str(i)).mkdir(parents=True)
        (tmp_path / "d" / str(i) / "f").write_bytes(b"x" * 100)
    os.symlink("/etc/passwd", tmp_path / "d" / "link")
    assert scratch.tree_bytes(tmp_path / "d", 1000) == 400
    assert 150 < scratch.tree_bytes(tmp_path / "d", 150) < 400
    assert scratch.tree_bytes(tmp_path / "d" / "0" / "f", 0) == 100
    assert scratch.tree_bytes(tmp_path / "absent", 10) == 0


def test_tree_bytes_on_disk_counts_blocks_and_stops_above_its_bound(tmp_path: Path) -> None:
    for i in range(20):
        (tmp_path / "d" / str(i % 4)).mkdir(parents=True, exist_ok=True)
        (tmp_path / "d" / str(i % 4) / f"f{i}").write_bytes(os.urandom(8192))
    (tmp_path / "d" / "link").symlink_to("/etc")
    full = scratch.tree_bytes(tmp_path / "d", 1 << 40, on_disk=True)
    assert full >= 20 * 8192
    assert 4 * 8192 < scratch.tree_bytes(tmp_path / "d", 4 * 8192, on_disk=True) < full
    assert scratch.tree_bytes(tmp_path / "absent", 10, on_disk=True) == 0
    quit = threading.Event()
    quit.set()
    assert scratch.tree_bytes(tmp_path / "d", 1 << 40, on_disk=True, quit=quit) < full


# -- runner.run's whole-task path --------------------------------------------------------------

class LazyCtx:
    """The executor's ctx as the runner sees it: `workdir` is made on first use."""

    def __init__(self, workdir: Path) -> None:
        self._dir, self.made = workdir, False

    @property
    def workdir(self) -> Path:
        if not self.made:
            self._dir.mkdir(parents=True)
            self.made = True
        return self._dir

    def progress(self, fraction: float) -> None:
        pass


def _writer(seen: list[Path], size: int) -> TaskDef:
    def write(ctx: Any, inp: Path | None, out: Path) -> Path:
        seen.append(out)
        if inp is not None:
            seen.append(inp)
        f = out / "out.bin"
        f.write_bytes(b"y" * size)
        return f

    return TaskDef(name="WRITE", version="1", fn=write, args=(), needs_input=False)


def _order(tmp_path: Path, tmpfs: bool, input_cid: str | None = None) -> dict[str, Any]:
    return {"store": StoreConfig(str(tmp_path / "store")).to_json(), "modules": [],
            "call": "WRITE", "params": {}, "input": input_cid, "items": None,
            "fetch_allow": [], "kind": {}, "inline_max_bytes": 1024, "tmpfs_output": tmpfs,
            "tmpfs_output_max_bytes": MIB, "tmpfs_free_min_bytes": 0}


@pytest.mark.parametrize("size", [10, 5000])  # inline, added to the store
def test_a_small_whole_output_is_written_on_tmpfs_and_nothing_on_disk(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, size: int) -> None:
    shm = tmp_path / "shm"
    shm.mkdir()
    monkeypatch.setattr(scratch, "TMPFS", str(shm))
    seen: list[Path] = []
    monkeypatch.setattr(runner, "_task", lambda call, modules: _writer(seen, size))
    ctx = LazyCtx(tmp_path / "run")
    out = runner.run(_order(tmp_path, True), ctx)  # type: ignore[arg-type]
    assert seen[0].parent.parent == shm and not ctx.made  # no run directory on disk
    assert out["bytes"] == size and ("inline" in out) is (size <= 1024)
    assert list(shm.iterdir()) == []  # removed once the run ended
    store = runner._store(_order(tmp_path, True)["store"])
    if size > 1024:
        assert b"".join(store.cat(out["output"])) == b"y" * size


@pytest.mark.parametrize("shm", ["absent", "full", None])  # None: the peer said disk
def test_a_whole_output_goes_to_disk_without_a_usable_tmpfs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shm: str | None) -> None:
    (tmp_path / "full").mkdir()
    monkeypatch.setattr(scratch, "TMPFS", str(tmp_path / (shm or "full")))
    seen: list[Path] = []
    monkeypatch.setattr(runner, "_task", lambda call, modules: _writer(seen, 10))
    ctx = LazyCtx(tmp_path / "run")
    order = {**_order(tmp_path, shm is not None), "tmpfs_free_min_bytes": 1 << 62}
    out = runner.run(order, ctx)  # type: ignore[arg-type]
    assert seen[0] == tmp_path / "run" / "output" and out["bytes"] == 10


def test_a_per_item_chunk_told_so_keeps_its_scratch_on_disk(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shm = tmp_path / "shm"
    shm.mkdir()
    monkeypatch.setattr(scratch, "TMPFS", str(shm))
    seen: list[Path] = []

    def upper(ctx: Any, src: Path, out_dir: Path) -> Path:
        seen.append(out_dir)
        (out_dir / "o").write_bytes(src.read_bytes().upper())
        return out_dir / "o"

    monkeypatch.setattr(runner, "_task", lambda call, modules: TaskDef(
        name="UP", version="1", fn=upper, args=(), per_item=True))
    store = runner._store(_order(tmp_path, False)["store"])
    items = [["a.txt", store.add_bytes(b"a")]]
    for tmpfs in (True, False):
        order = {**_order(tmp_path, False), "items": items, "tmpfs_items": tmpfs}
        runner.run(order, LazyCtx(tmp_path / f"run-{tmpfs}"))  # type: ignore[arg-type]
    assert [d.parent.parent for d in seen] == [shm, tmp_path / "run-False"]


def test_a_whole_tasks_input_is_materialized_on_disk_with_its_output_on_tmpfs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shm = tmp_path / "shm"
    shm.mkdir()
    monkeypatch.setattr(scratch, "TMPFS", str(shm))
    store = runner._store(_order(tmp_path, True)["store"])
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(3 * MIB))
    seen: list[Path] = []
    monkeypatch.setattr(runner, "_task", lambda call, modules: _writer(seen, 10))
    runner.run(_order(tmp_path, True, store.add_path(big)), LazyCtx(tmp_path / "run"))  # type: ignore[arg-type]
    out_dir, inp = seen
    assert out_dir.parent.parent == shm and inp == tmp_path / "run" / "input"


@pytest.mark.parametrize("name", ["tmpfs_output_max_bytes", "tmpfs_free_min_bytes",
                                  "local_wait_s", "stagger_s"])
@pytest.mark.parametrize("bad", [-1, float("nan")])
def test_a_negative_scheduler_setting_is_refused_by_name(name: str, bad: float) -> None:
    with pytest.raises(ConfigError, match=name):
        SchedulerConfig(StoreConfig("/nonexistent"), **{name: bad})


# -- the peer's settings -----------------------------------------------------------------------

@pytest.mark.parametrize(("gb", "want"), [(0.0, None), (0.5, 500_000_000), (1e-12, 1)])
def test_the_per_run_disk_bound_is_the_peers_setting(tmp_path: Path, gb: float,
                                                     want: int | None) -> None:
    from peer.config import PeerConfig
    from peer.node import scratch_bound

    assert scratch_bound(PeerConfig(data_dir=tmp_path, task_scratch_max_gb=gb)) == want


def test_the_per_run_disk_bound_is_half_the_free_disk_by_default(tmp_path: Path) -> None:
    from peer.config import PeerConfig
    from peer.node import scratch_bound

    st = os.statvfs(tmp_path)
    got = scratch_bound(PeerConfig(data_dir=tmp_path))
    assert got is not None and abs(got - st.f_bavail * st.f_frsize // 2) < 1 << 30


def test_a_per_item_chunk_whose_announcer_cannot_start_removes_its_scratch(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`_run_items` made its scratch dir (on tmpfs: held, `scratch.hold`), then its
    announcer; an announcer that raised (a thread that cannot start) left the dir and its
    held descriptor behind for good (session 34 review)."""
    shm = tmp_path / "shm"
    shm.mkdir()
    monkeypatch.setattr(scratch, "TMPFS", str(shm))

    def cannot_start(*args: Any) -> None:
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(runner, "_Announcer", cannot_start)
    tdef = dataclasses.replace(registry.load(()).get("CHECKSUM"), kind="python")
    ctx: Any = dataclasses.make_dataclass("Ctx", ["workdir"])(tmp_path / "work")
    held = len(os.listdir("/proc/self/fd"))
    with pytest.raises(RuntimeError, match="can't start new thread"):
        runner._run_items(None, tdef, {}, [["x"]], ctx, 0)  # type: ignore[arg-type]
    assert list(shm.iterdir()) == [] and len(os.listdir("/proc/self/fd")) == held


# -- removing what a run left (peer.dataentry's remove_tree, empty) ------------------------------

DEEP = 1_500  # levels: past shutil.rmtree's recursion in Python 3.11 (limit 1,000)


@pytest.fixture
def deep(tmp_path: Path) -> Iterator[Path]:
    """Where to make a `_deep_tree`: whatever stays there is removed after the test by rm -rf
    (fts: any depth), not left for pytest's own cleanup of its temp directories (rmtree:
    RecursionError)."""
    where = tmp_path / "deep"
    where.mkdir()
    yield where
    subprocess.run(["rm", "-rf", "--", str(where)], check=True)


def _deep_tree(top: Path, levels: int = DEEP) -> None:
    """`levels` nested directories under `top` (made by descriptors: the path is longer than
    PATH_MAX), a file in each."""
    top.mkdir()
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(levels):
            os.mkdir("d", dir_fd=fd)
            os.close(os.open("f", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd))
            fd, parent = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd), fd
            os.close(parent)
    finally:
        os.close(fd)


def test_a_tree_deeper_than_rmtrees_recursion_is_removed(deep: Path) -> None:
    """(Review: a task's deep tree raised RecursionError out of a run's cleanup and leaked
    its directory.)"""
    run = deep / "run"
    _deep_tree(run)
    scratch.remove(run)
    assert not run.exists()


def test_nothing_is_removed_through_a_symlink(tmp_path: Path) -> None:
    """A symlink under the tree, or at its top, is removed itself: its target stays."""
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "f").write_text("mine")
    run = tmp_path / "run"
    (run / "a").mkdir(parents=True)
    (run / "a" / "to-dir").symlink_to(kept)
    (run / "a" / "to-file").symlink_to(kept / "f")
    (run / "dangling").symlink_to(tmp_path / "nothing")
    link = tmp_path / "link"
    link.symlink_to(kept)
    remove_tree(run)
    remove_tree(link)
    remove_tree(tmp_path / "absent")
    assert not run.exists() and not os.path.lexists(link)
    assert (kept / "f").read_text() == "mine"


def test_emptying_a_symlink_removes_the_link_not_what_it_points_at(tmp_path: Path) -> None:
    """(Review: `empty(out)` emptied the directory a task pointed `out` at.)"""
    kept = tmp_path / "kept"
    (kept / "sub").mkdir(parents=True)
    (kept / "f").write_text("mine")
    out = tmp_path / "out"
    out.symlink_to(kept)
    empty(out)
    assert not os.path.lexists(out)
    assert (kept / "f").read_text() == "mine" and (kept / "sub").is_dir()


def _as_nobody(work: Any) -> int:
    """Run `work()` in a child process as an unprivileged user when this one is root (root
    removes what a mode forbids: a worker of a peer run as a user cannot); its exit code
    (0: `work` returned True)."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover (the child)
        code = 2
        try:
            if os.getuid() == 0:
                os.setgid(65534)
                os.setuid(65534)
            code = 0 if work() else 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def test_directories_a_task_made_unreadable_and_unwritable_are_removed() -> None:
    """(Review: a run's directory holding one a task made mode 0 stayed on the tmpfs.) The
    worker owns them: made the owner's again, then removed. (In the system temp directory:
    pytest's is closed to the other user.)"""
    base = Path(tempfile.mkdtemp(prefix="banzai-test-"))
    try:
        if os.getuid() == 0:
            os.chown(base, 65534, 65534)

        def work() -> bool:
            run = base / "run"
            (run / "a" / "b").mkdir(parents=True)
            (run / "a" / "b" / "f").write_text("x")
            (run / "ro").mkdir()
            (run / "ro" / "g").write_text("x")
            os.chmod(run / "ro", 0o500)
            os.chmod(run / "a" / "b", 0)
            os.chmod(run / "a", 0)
            scratch.remove(run)
            return not os.path.lexists(run)

        assert _as_nobody(work) == 0
    finally:
        shutil.rmtree(base)


def test_a_tree_removed_by_another_meanwhile_is_gone_not_an_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """Two removers of one run's moved-away directory (the executor's `_join`, a worker's
    trash thread): the directory one walks is removed by the other ("..": ENOENT)."""
    import peer.dataentry
    run = tmp_path / "run"
    (run / "a" / "b").mkdir(parents=True)
    real = os.open

    def gone(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if path == "..":
            raise FileNotFoundError(2, "No such file or directory")
        return real(path, flags, *args, **kwargs)

    monkeypatch.setattr(peer.dataentry.os, "open", gone)
    remove_tree(run, ignore_errors=True)
    remove_tree(run)
    assert "cannot remove" not in caplog.text
