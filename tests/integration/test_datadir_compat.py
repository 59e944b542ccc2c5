"""A data dir written by release 0.1.0 (tests/fixtures/datadir-v0.1.0) opens in today's peer
with nothing lost: its jobs, states, outputs and cache, and its event rows byte for byte.

tests/fixtures/README.md says how the fixture was made; datadir-v0.1.0.json is what it holds.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import BIN, ROOT, PeerProc, start_peer
from tests.fixtures.make_datadir import contents
from tests.helpers import JsonApi

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
RELEASE = "0.1.0"
MANIFEST: dict[str, Any] = json.loads((FIXTURES / f"datadir-v{RELEASE}.json").read_text())
JOBS: dict[str, Any] = MANIFEST["jobs"]
API = JsonApi(job_timeout_s=90)


def rows(db: Path, mode: str = "mode=ro") -> set[tuple[Any, ...]]:
    """Every event row as stored, read-only ("immutable=1" also writes no -shm beside it)."""
    c = sqlite3.connect(f"file:{db}?{mode}", uri=True)
    try:
        return set(c.execute("SELECT origin, seq, hlc, type, payload FROM events"))
    finally:
        c.close()


@pytest.fixture(scope="module")
def opened(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[PeerProc, Any]]:
    """Today's peer on a copy of the fixture, and its job list as first served."""
    data = tmp_path_factory.mktemp("compat") / "datadir"
    shutil.copytree(FIXTURES / f"datadir-v{RELEASE}", data)
    peer = start_peer(data)
    try:
        status, listed = API.api("GET", f"{peer.url}/api/jobs")
        assert status == 200, listed
        yield peer, listed["jobs"]
    finally:
        peer.kill(signal.SIGTERM)


def test_the_peer_keeps_its_identity_and_every_event_row(opened: tuple[PeerProc, Any]) -> None:
    peer, _ = opened
    _, health = API.api("GET", f"{peer.url}/api/health")
    assert health["peer"] == MANIFEST["peer_id"]
    assert health["jobs"] >= len(JOBS)
    before = rows(FIXTURES / f"datadir-v{RELEASE}" / "events.sqlite", "immutable=1")
    assert len(before) > len(JOBS)
    assert before <= rows(peer.data_dir / "events.sqlite")  # none rewritten, none dropped


def test_every_job_is_listed_with_its_state(opened: tuple[PeerProc, Any]) -> None:
    _, listed = opened
    assert {j["id"]: j["state"] for j in listed} == {j["id"]: j["state"] for j in JOBS.values()}
    assert {j["state"] for j in JOBS.values()} == {"done", "failed", "cancelled"}


@pytest.mark.parametrize("key", sorted(JOBS))
def test_each_job_view_has_its_tasks_and_outputs(opened: tuple[PeerProc, Any], key: str) -> None:
    peer, _ = opened
    want = JOBS[key]
    status, view = API.api("GET", f"{peer.url}/api/jobs/{want['id']}")
    assert status == 200, view
    assert view["state"] == want["state"]
    assert view["outputs"] == want["outputs"]
    got = {t["name"]: {"state": t["state"], "output": t["output"], "cached": t["cached"],
                       "error": t["error"]} for t in view["tasks"]}
    assert got == want["tasks"]


@pytest.mark.parametrize("cid", sorted(MANIFEST["contents"]))
def test_outputs_read_through_the_gateway_with_the_same_bytes(opened: tuple[PeerProc, Any],
                                                              cid: str) -> None:
    peer, _ = opened
    assert contents(peer.url, cid) == MANIFEST["contents"][cid]


@pytest.mark.parametrize("key", sorted(k for k, j in JOBS.items() if j["state"] == "done"))
def test_resubmitting_is_answered_from_the_cache(opened: tuple[PeerProc, Any], key: str) -> None:
    peer, _ = opened
    old = JOBS[key]
    job = API.submit(peer.url, old["workflow"])
    view = API.wait(peer.url, job)
    assert view["state"] == "done", view
    assert view["outputs"] == old["outputs"]
    for t in view["tasks"]:  # looked up in the 0.1.0 cache: never split into work, claimed, run
        assert t["chunks"] == [] and t["attempts"] == 0 and t["peers"] == [], t
        assert t["cached"], t
    # the jobs of 0.1.0 kept their states through this peer's scheduling passes
    _, listed = API.api("GET", f"{peer.url}/api/jobs")
    states = {j["id"]: j["state"] for j in listed["jobs"]}
    assert all(states[j["id"]] == j["state"] for j in JOBS.values())


def _edit_meta(data: Path) -> Path:
    db = data / "events.sqlite"
    c = sqlite3.connect(db)
    c.execute("UPDATE meta SET v = ? WHERE k = 'peer_id'", ("a" * 2_000_000,))
    c.commit()
    c.close()
    return db


def _job_index_by_hand(data: Path) -> Path:
    db = data / "events.sqlite"
    c = sqlite3.connect(db)
    c.execute("CREATE TABLE job_index (job, state)")  # (0.1.0 had no job index)
    c.commit()
    c.close()
    return db


def _log_a_directory(data: Path) -> Path:
    db = data / "events.sqlite"
    db.unlink()
    db.mkdir()
    return db


def _lock_a_directory(data: Path) -> Path:
    lock = data / "store" / "lock"
    lock.unlink()
    lock.mkdir()
    return lock


@pytest.mark.parametrize("damage,message", [
    (_edit_meta, ": meta 'peer_id' holds 'aaaa"),
    (_log_a_directory, ": unable to open database file: it is a directory"),
    (_lock_a_directory, " (the store's lock file) is a directory, not a file: "),
    (_job_index_by_hand, ": its table job_index has the columns ('job', 'state'), not ("),
], ids=["peer_id_2mb", "log_a_directory", "store_lock_a_directory", "job_index_by_hand"])
def test_a_hostile_data_dir_stops_the_start_with_one_line_naming_the_file(
        tmp_path: Path, damage: Any, message: str) -> None:
    """A 0.1.0 data dir damaged so that the peer cannot start safely: it exits 2 with one
    line naming the file and what is wrong, no traceback (a 2 MB peer id raised
    struct.error, a directory in place of the log sqlite3.OperationalError, one in place of
    the store's lock file IsADirectoryError, a job_index table made by hand with other
    columns sqlite3.OperationalError)."""
    data = tmp_path / "datadir"
    shutil.copytree(FIXTURES / f"datadir-v{RELEASE}", data)
    path = damage(data)
    run = subprocess.run(
        [str(BIN / "banzai-peer"), "--data-dir", str(data), "--http", "127.0.0.1:0",
         "--mdns-interface", "127.0.0.1", "--mesh-name", f"compat-{tmp_path.name}"],
        capture_output=True, text=True, timeout=120, cwd=ROOT, stdin=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(ROOT), "BANZAI_WARM_WORKERS": "0"})
    assert run.returncode == 2, run.stderr[-3000:]
    assert "Traceback" not in run.stderr, run.stderr[-3000:]
    line = run.stderr.strip().splitlines()[-1]
    assert line.startswith("banzai-peer: ") and str(path) in line and message in line, line
