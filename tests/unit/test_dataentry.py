"""An entry of the data dir of the wrong kind (a file where a directory belongs, a directory
where a file does, a symlink to nothing) refuses the start with a DataError naming it
(peer.dataentry), where each opener met it first with a traceback (fuzz_datadir F4-F7, F16);
a data dir, a store or a store's directory that is a symlink to a directory elsewhere (another
disk) still opens; the temp dir, which the start sweeps, is refused as a symlink."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from peer.errors import DataError
from peer.http import tokens
from peer.ipfs.embedded import EmbeddedStore
from peer.jobs.janitor import sweep_stale
from peer.log.signing import Identity
from peer.main import private_dirs
from tests.unit.test_scratch import _deep_tree
from tests.unit.test_scratch import deep as deep  # (a fixture)


def _file(p: Path) -> None:
    p.write_bytes(b"not a directory\n")


def _dir(p: Path) -> None:
    p.mkdir()


def _to_file(p: Path) -> None:
    (p.parent / "elsewhere").write_bytes(b"a file of another program\n")
    p.symlink_to(p.parent / "elsewhere")


def _to_dir(p: Path) -> None:
    (p.parent / "elsewhere").mkdir()
    (p.parent / "elsewhere" / "1-abc").mkdir()  # another program's, "abandoned"
    p.symlink_to(p.parent / "elsewhere")


def _to_nothing(p: Path) -> None:
    p.symlink_to(p.parent / "gone")


@pytest.mark.parametrize("entry,make,found", [
    ("blocks", _file, "is a file, not a directory"),
    ("pins", _to_dir, "is a symlink, not a directory: the peer deletes what it holds"),
    ("pins-explicit", _file, "is a file, not a directory"),
    ("lock", _dir, "is a directory, not a file"),
    ("inline.sqlite", _dir, "is a directory, not a file"),
    ("blocks", _to_nothing, "is a symlink to nothing usable"),
    ("staging", _file, "is a file, not a directory"),
    ("staging", _to_dir, "is a symlink, not a directory: the peer deletes what it holds"),
])
def test_a_store_entry_of_the_wrong_kind_refuses_the_open_naming_it(
        tmp_path: Path, entry: str, make: Callable[[Path], None], found: str) -> None:
    root = tmp_path / "store"
    EmbeddedStore(root).blocks.pack.close()
    path = root / entry
    if path.is_dir():
        shutil.rmtree(path)
    path.unlink(missing_ok=True)
    make(path)
    with pytest.raises(DataError) as e:
        EmbeddedStore(root).sweep()  # (the start's: staging/ is swept)
    assert str(path) in e.value.message and found in e.value.message
    assert "move it aside" in e.value.message
    if (root / "elsewhere").is_dir():
        assert (root / "elsewhere" / "1-abc").is_dir()  # not swept through the symlink


@pytest.mark.parametrize("linked", ["store", "store/blocks"])
def test_a_store_or_its_block_dir_may_be_a_symlink_to_another_disk(
        tmp_path: Path, linked: str) -> None:
    disk = tmp_path / "disk"
    disk.mkdir()
    (tmp_path / "data" / linked).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / "data" / linked).symlink_to(disk)
    cid = EmbeddedStore(tmp_path / "data" / "store").add_bytes(b"kept on another disk\n")
    again = EmbeddedStore(tmp_path / "data" / "store")
    assert b"".join(again.cat(cid)) == b"kept on another disk\n" and any(disk.rglob("*"))


@pytest.mark.parametrize("read", [
    lambda d: tokens.load_or_create_token(d),
    lambda d: Identity.load(d / "identity.key"),
], ids=["http-token", "identity.key"])
def test_a_private_file_that_is_a_directory_refuses_naming_it(
        tmp_path: Path, read: Callable[[Path], object]) -> None:
    for name in (tokens.TOKEN_FILE, "identity.key"):
        (tmp_path / name).mkdir()
    with pytest.raises(DataError, match="is a directory, not a file: something replaced"):
        read(tmp_path)


@pytest.mark.parametrize("make", [_file, "to_dir"])
def test_a_temp_dir_not_of_its_own_refuses_the_start_and_nothing_is_swept_through_it(
        tmp_path: Path, make: Callable[[Path], None] | str) -> None:
    data = tmp_path / "peer"
    store = EmbeddedStore(data / "store")
    other = tmp_path / "another-programs-dir"
    other.mkdir()
    (other / "snapshot-1-0.rows").write_bytes(b"not the peer's")
    if make == "to_dir":
        (data / "tmp").symlink_to(other)
    else:
        assert callable(make)
        make(data / "tmp")
    with pytest.raises(DataError, match=f"{data / 'tmp'} .*temp dir.*not a directory"):
        sweep_stale(data, store)
    assert (other / "snapshot-1-0.rows").read_bytes() == b"not the peer's"


def test_private_dirs_refuse_a_temp_dir_that_is_a_symlink(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("TMPDIR", "XDG_CACHE_HOME", "MPLCONFIGDIR", "NUMBA_CACHE_DIR"):
        monkeypatch.delenv(var, raising=False)
    data = tmp_path / "peer"
    data.mkdir()
    (tmp_path / "other").mkdir()
    (data / "tmp").symlink_to(tmp_path / "other")
    with pytest.raises(DataError, match="is a symlink, not a directory"):
        private_dirs(data)


def test_the_start_sweep_removes_a_killed_runs_tree_of_any_depth(deep: Path) -> None:
    """(Review: a run directory a killed peer left in work/, holding a tree deeper than
    shutil.rmtree's recursion, raised RecursionError out of the start sweep: the peer did
    not start.)"""
    data = deep / "peer"
    store = EmbeddedStore(data / "store")
    (data / "work").mkdir()
    _deep_tree(data / "work" / "banzai-exec-1-a1b2c3d4")
    assert sweep_stale(data, store) == {"work dirs": 1}
    assert list((data / "work").iterdir()) == []


def test_read_file_reads_at_most_one_byte_past_its_bound_and_only_what_a_small_file_holds(
        tmp_path: Path) -> None:
    """dataentry.read_file (session 48: the three bounded reads of session 47, a record, the
    published names, a block, share it): a file over the bound reads bound + 1 bytes; a
    small one allocates its size, not the bound; no symlink, no FIFO, no directory."""
    import os
    import tracemalloc

    from peer.dataentry import read_file

    small, big = tmp_path / "small", tmp_path / "big"
    small.write_bytes(b"ten bytes!")
    big.write_bytes(b"x" * 5000)
    assert read_file(small, "a small file", 1 << 20) == b"ten bytes!"
    assert read_file(big, "a big file", 100) == b"x" * 101
    tracemalloc.start()
    try:
        read_file(small, "a small file", 256 << 20)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20  # (not the 256 MiB bound)
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "link").symlink_to(small)
    (tmp_path / "dir").mkdir()
    for name, kind in (("fifo", "a FIFO"), ("link", "a symlink"), ("dir", "a directory")):
        with pytest.raises(DataError, match=f"{tmp_path / name}.*{kind}"):
            read_file(tmp_path / name, "a test file", 100)
    with pytest.raises(FileNotFoundError):
        read_file(tmp_path / "absent", "a test file", 100)
