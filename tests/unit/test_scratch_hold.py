"""Review rr's RR-9 (session 51, helper g): the tmpfs watch probes live workers' directories
(`scratch.holders`: a flock a moment); a worker between its `mkdtemp` and its `hold` while a
probe held the lock ran on disk and left its empty directory on the tmpfs, unheld, until a
sweep. `on_tmpfs` tries its fresh directory's hold again."""

from __future__ import annotations

import fcntl
import os
import tempfile
from pathlib import Path

import pytest

from peer.jobs import scratch


def _probed(monkeypatch: pytest.MonkeyPatch, shm: Path, released_after: int) -> list[int]:
    """mkdtemp as `on_tmpfs` calls it, then a probe (as `_held`'s) holding the new
    directory's lock until `released_after` pauses have passed; the pauses counted."""
    pauses: list[int] = []
    probe: list[int] = []
    real = tempfile.mkdtemp

    def mkdtemp(prefix: str, dir: str) -> str:
        d = real(prefix=prefix, dir=dir)
        fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        probe.append(fd)
        return d

    def pause(_s: float) -> None:
        pauses.append(1)
        if len(pauses) == released_after and probe:
            os.close(probe.pop())

    monkeypatch.setattr(scratch, "TMPFS", str(shm))
    monkeypatch.setattr(scratch.tempfile, "mkdtemp", mkdtemp)
    monkeypatch.setattr(scratch, "_pause", pause, raising=False)
    return pauses


def test_a_hold_refused_by_a_moments_probe_is_tried_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On 093917e5: None (the run on disk) and the directory left on the tmpfs."""
    shm = tmp_path / "shm"
    shm.mkdir()
    pauses = _probed(monkeypatch, shm, released_after=2)
    d = scratch.on_tmpfs(0, scratch.Sweeps())
    assert d is not None and d.parent == shm and len(pauses) == 2
    assert scratch.holders(shm, {os.getpid()}) == {os.getpid()}  # held by this process
    scratch.remove(d)
    assert list(shm.iterdir()) == []


def test_a_hold_refused_throughout_leaves_no_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shm = tmp_path / "shm"
    shm.mkdir()
    pauses = _probed(monkeypatch, shm, released_after=0)  # (never released)
    assert scratch.on_tmpfs(0, scratch.Sweeps()) is None
    assert len(pauses) == scratch.HOLD_TRIES - 1
    assert list(shm.iterdir()) == []


def test_a_fresh_directory_swept_before_its_hold_is_made_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A sweep of a process to which this PID looks gone (another PID namespace sharing the
    directory) may remove a fresh directory before its hold: another is made, for a run's
    tmpfs directory as for an executor's run directories (`made_and_held`, one loop for
    both: on a04f558d `on_tmpfs` gave None, the run on disk)."""
    shm = tmp_path / "shm"
    shm.mkdir()
    made: list[str] = []
    real = tempfile.mkdtemp

    def mkdtemp(prefix: str, dir: str) -> str:
        d = real(prefix=prefix, dir=dir)
        made.append(d)
        if len(made) == 1:
            os.rmdir(d)  # (swept at once)
        return d

    monkeypatch.setattr(scratch, "TMPFS", str(shm))
    monkeypatch.setattr(scratch.tempfile, "mkdtemp", mkdtemp)
    d = scratch.on_tmpfs(0, scratch.Sweeps())
    assert d is not None and str(d) == made[1] and len(made) == 2
    assert scratch.holders(shm, {os.getpid()}) == {os.getpid()}
    scratch.remove(d)
    assert list(shm.iterdir()) == []
