"""The start sweeps never delete through a symlink (peer.dataentry.remove, check_entry): a
data dir whose work/ is a symlink refuses the start naming it (the janitor's sweep and the
executor's each followed it and deleted what it points to), and an entry removed that is a
symlink goes itself; what it points to, a canary dir outside the data dir, stays untouched."""

from __future__ import annotations

from pathlib import Path

import pytest

from peer.dataentry import remove
from peer.errors import DataError
from peer.ipfs.embedded import EmbeddedStore
from peer.jobs.executor import Executor, ExecutorConfig
from peer.jobs.janitor import sweep_stale


@pytest.fixture
def canary(tmp_path: Path) -> Path:
    """A directory outside the data dir holding what must never be deleted."""
    d = tmp_path / "canary"
    (d / "banzai-exec-1-abc").mkdir(parents=True)
    (d / "banzai-exec-1-abc" / "kept").write_bytes(b"another program's\n")
    (d / "kept").write_bytes(b"another program's\n")
    return d


def _untouched(canary: Path) -> bool:
    return ((canary / "kept").read_bytes() == b"another program's\n"
            and (canary / "banzai-exec-1-abc" / "kept").read_bytes() == b"another program's\n")


def test_a_work_dir_that_is_a_symlink_refuses_the_start_sweep(
        tmp_path: Path, canary: Path) -> None:
    data = tmp_path / "peer"
    store = EmbeddedStore(data / "store")
    (data / "work").symlink_to(canary)
    with pytest.raises(DataError, match=f"{data / 'work'} .*is a symlink, not a directory"):
        sweep_stale(data, store)
    assert _untouched(canary)


def test_remove_takes_a_link_a_file_or_a_tree_and_never_what_a_link_points_to(
        tmp_path: Path, canary: Path) -> None:
    (tmp_path / "link").symlink_to(canary)
    (tmp_path / "tree" / "sub").mkdir(parents=True)
    (tmp_path / "tree" / "sub" / "link").symlink_to(canary)
    (tmp_path / "file").write_bytes(b"x")
    for name in ("link", "tree", "file", "absent"):
        remove(tmp_path / name)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["canary"]
    assert _untouched(canary)


async def test_an_executor_refuses_a_work_dir_that_is_a_symlink(
        tmp_path: Path, canary: Path) -> None:
    (tmp_path / "work").symlink_to(canary)
    (canary / "banzai-exec-99999999-zz").mkdir()  # a "gone" executor's, in the canary
    ex = Executor(ExecutorConfig(slots=1, work_dir=str(tmp_path / "work")))
    with pytest.raises(DataError, match="is a symlink, not a directory"):
        await ex.start()
    assert _untouched(canary) and (canary / "banzai-exec-99999999-zz").is_dir()
