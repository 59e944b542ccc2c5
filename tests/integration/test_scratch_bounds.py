"""The bounds of what a run writes beyond its memory limit, with real peers (root needed).

A task that fills the tmpfs its output is on: a peer in a mount namespace of its own, whose
/dev/shm is a tmpfs of TMPFS_MIB, with a floor of FLOOR_MIB (a run on the tmpfs is stopped
below half of it). The run is stopped as a storage failure naming the tmpfs and its figures,
its directory there is gone, its retry writes to disk. And a task that writes past the
per-run bound on disk (a data dir on a small tmpfs of its own, the test's file system) fails
naming the bound, its directory gone."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from peer.jobs import scratch
from tests.conftest import PeerProc, start_peer
from tests.helpers import FINAL, JsonApi, stop
from tests.integration.tmpfs import mounted_tmpfs

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

API = JsonApi(job_timeout_s=60)
TMPFS_MIB = 64
FLOOR_MIB = 32  # a run goes on the tmpfs with 32 MiB free; it is stopped below 16 MiB
FILL_MIB = 52  # below 16 MiB free, short of ENOSPC; then the task waits HOLD_S
HOLD_S = 3.0
# A mount namespace whose /dev/shm is a small tmpfs, then the peer (exec: same process).
WRAP = ["unshare", "--mount", "sh", "-c",
        "set -e; mount --make-rprivate /; "
        f"mount -t tmpfs -o size={TMPFS_MIB}m tmpfs {scratch.TMPFS}; exec \"$@\"", "wrap"]


@pytest.fixture
def peer(tmp_path: Path) -> Iterator[PeerProc]:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare to give the peer a small tmpfs of its own")
    probe = subprocess.run([*WRAP, "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs in a mount namespace here: {probe.stderr.strip()}")
    p = start_peer(tmp_path / "p0", "--slots", "1", "--tmpfs-free-min-mb", str(FLOOR_MIB),
                   wrap=WRAP)
    try:
        yield p
    finally:
        stop(p)


def _ours(shm: Path) -> list[str]:
    """The workers' directories on the peer's tmpfs."""
    return [n for n in os.listdir(shm) if n.startswith(scratch.PREFIX)]


def _where(p: PeerProc, view: dict[str, Any]) -> str:
    """Where the task wrote its output (its where.txt)."""
    return API.cat(p.url, view["tasks"][0]["output"], "/where.txt").decode().strip()


def test_a_run_filling_the_tmpfs_is_stopped_its_directory_removed_and_retried_on_disk(
        peer: PeerProc) -> None:
    shm = Path(f"/proc/{peer.proc.pid}/root{scratch.TMPFS}")  # the peer's, in its namespace
    st = os.statvfs(shm)
    assert st.f_blocks * st.f_frsize == TMPFS_MIB << 20  # the small tmpfs, not the host's
    first = API.wait(peer.url, API.submit(peer.url, [{"call": "T_FILL", "args": [0, 0, "a"]}]))
    assert first["state"] == "done"
    assert not _where(peer, first).startswith(scratch.TMPFS)  # a call not run here: disk
    job = API.submit(peer.url, [{"call": "T_FILL", "args": [FILL_MIB, HOLD_S, "b"]}])
    error, seen_on_tmpfs = None, False
    deadline = time.monotonic() + 60
    while error is None:  # until its first attempt's failure is recorded
        assert time.monotonic() < deadline, "no failure recorded"
        seen_on_tmpfs |= bool(_ours(shm))
        _, view = API.api("GET", f"{peer.url}/api/jobs/{job}")
        assert view["state"] not in FINAL, view  # it ends only after a stopped attempt
        error = view["tasks"][0]["chunks"][0]["error"] if view["tasks"][0]["chunks"] else None
        time.sleep(0.02)
    assert seen_on_tmpfs  # its output went on the tmpfs: the call's last output was small
    # The storage failure names the tmpfs and the figures (not ENOSPC: it never filled up)
    assert f"tmpfs {scratch.TMPFS} below its floor of {FLOOR_MIB / 2:.1f} MiB" in error, error
    assert "MemAvailable" in error
    assert _ours(shm) == []
    done = API.wait(peer.url, job)
    assert done["state"] == "done", done
    task = done["tasks"][0]
    assert task["attempts"] == 2  # the stopped attempt and its retry
    assert not _where(peer, done).startswith(scratch.TMPFS)  # the retry wrote to disk
    chunk = task["chunks"][0]
    assert chunk["state"] == "done"


DISK_MIB = 128  # the data dir's file system
SCRATCH_MAX_GB = 0.01  # 10 MB (9.53 MiB) per run


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs of DISK_MIB at tmp_path/disk: a file system whose use only the peer changes."""
    with mounted_tmpfs(tmp_path / "disk", DISK_MIB << 20) as mnt:
        yield mnt


def _bytes_under(d: Path) -> int:
    return sum(f.stat().st_size for f in d.rglob("*") if f.is_file())


def test_a_run_past_its_disk_bound_is_stopped_and_fails_naming_it(small_disk: Path) -> None:
    p = start_peer(small_disk, "--slots", "1", "--task-scratch-max-gb", str(SCRATCH_MAX_GB))
    try:
        job = API.submit(p.url, [{"call": "T_FILL", "args": [16, HOLD_S, "disk"]}])
        view = API.wait(p.url, job)
        assert view["state"] == "failed", view
        task = view["tasks"][0]
        assert task["attempts"] == 1  # the task's fault: not retried
        assert "exceeded this peer's bound of 9.53 MiB per run" in task["error"], task
        assert str(small_disk / "work") in task["error"]  # where it wrote
        assert _bytes_under(small_disk / "work") < 1 << 20  # its files are gone
    finally:
        stop(p)
