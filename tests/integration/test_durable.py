"""Durable acknowledgements with real peers: a data dir on a small tmpfs that fills up during
a job (507, health 503, nothing lost, the job completes once space is freed), a log whose
writes fail otherwise (503 to a POST and in health), and a flipped byte in a block file
(detected on read, repaired from a second peer, or a clear error without one)."""

from __future__ import annotations

import errno
import json
import os
import re
import resource
import secrets
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from peer.cids import parse_cid
from peer.ipfs import EmbeddedStore
from peer.log import EventLog, fold
from tests.conftest import PeerProc, start_peer
from tests.helpers import JsonApi, wait_mesh
from tests.integration.tmpfs import mounted_tmpfs

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

API = JsonApi(job_timeout_s=60)
TMPFS_BYTES = 8 << 20
START_S = 120  # a peer's start on a loaded 2-core host (starts are usually a few seconds)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs of TMPFS_BYTES at tmp_path/full (the peer's data dir; its log stays outside)."""
    with mounted_tmpfs(tmp_path / "full", TMPFS_BYTES) as mnt:
        yield mnt


def _fill(path: Path) -> None:
    """Write `path` until the file system is full."""
    block = b"\0" * (1 << 16)
    with open(path, "wb", buffering=0) as f:
        try:
            while True:
                f.write(block)
        except OSError as e:
            assert e.errno == errno.ENOSPC, e
        # the last partial write may have left a few bytes: take them too
        try:
            while True:
                f.write(b"\0" * 512)
        except OSError:
            pass


def _until(cond: Any, what: str, timeout_s: float = 60) -> Any:
    deadline = time.monotonic() + timeout_s
    while not (got := cond()):
        assert time.monotonic() < deadline, what
        time.sleep(0.05)
    return got


def _view(peer: PeerProc, job: str) -> dict[str, Any]:
    status, v = API.api("GET", f"{peer.url}/api/jobs/{job}")
    assert status == 200, v
    return dict(v)


def test_a_full_disk_answers_507_loses_nothing_and_the_job_completes_once_freed(
        small_disk: Path) -> None:
    # outputs go through the block store (an inline one needs no disk of its own)
    peer = start_peer(small_disk, "--slots", "1", "--no-mdns", "--max-attempts", "1",
                      "--inline-output-max-bytes", "0", timeout_s=START_S)
    try:
        before = API.submit(peer.url, [{"call": "ECHO", "args": ["acknowledged"]}])
        done = API.wait(peer.url, before)
        assert done["state"] == "done", done
        # acknowledged, then the disk fills while its task runs
        during = API.submit(peer.url, [{"call": "T_SLEEP", "args": [1.0]},
                                       {"call": "ECHO", "args": ["after"]}])
        ballast = small_disk / "ballast"
        _fill(ballast)
        status, body = API.api("POST", f"{peer.url}/api/jobs", [{"call": "ECHO", "args": ["x"]}])
        assert status == 507 and body["error"] == "StorageFull", body
        assert "disk is full" in body["message"], body
        refused = re.search(r"job (j[0-9a-f]+(?:\.[0-9a-f]+)?)", body["message"])
        assert refused, body
        status, body = API.api("POST", f"{peer.url}/api/add?name=f.txt", b"new data")
        assert status == 507 and body["error"] == "StorageFull", body
        status, health = API.api("GET", f"{peer.url}/api/health")
        assert health["durability"]["write_error"], health
        assert status == 503 and health["ok"] is False, health  # (it was 200, ok: true)
        assert "events cannot be stored" in health["reason"], health
        assert "disk is full" in health["reason"], health
        # the running task meets the full disk: a failure that does not count (max 1 attempt)
        _until(lambda: "disk is full" in str(_view(peer, during)["tasks"][0]["chunks"][0]
                                             ["error"]), "no disk-full failure")
        assert _view(peer, during)["state"] != "failed"
        ballast.unlink()  # space is freed
        v = API.wait(peer.url, during)
        assert v["state"] == "done", v
        assert v["tasks"][0]["chunks"][0]["attempts"] >= 2, v
        later = API.wait(peer.url, refused.group(1))  # the refused job was kept and ran
        assert later["state"] == "done", later
        status, health = API.api("GET", f"{peer.url}/api/health")
        assert status == 200 and health["ok"] is True, health
        assert health["durability"] == {"log_error": None, "claims_held": False,
                                        "unwritten_events": 0, "write_error": None,
                                        "unsynced_received": 0, "sync_error": None,
                                        "corrupt_blocks": 0}, health
    finally:
        peer.kill()  # kill -9: whatever was acknowledged must be on disk
    log = EventLog(small_disk / "events.sqlite")  # what a restart would read
    try:
        state = fold(log.load())
    finally:
        log.close()
    for job, ref in ((before, done), (during, v), (refused.group(1), later)):
        assert job in state.jobs
        outputs = {t: state.task_done[(job, t)].payload["output"] for t in ref["outputs"]}
        assert outputs == ref["outputs"], (job, outputs)
    store = EmbeddedStore(small_disk / "store")
    assert b"".join(store.cat(done["outputs"]["echo"])) == b"acknowledged"


def test_an_unwritable_log_makes_health_503_and_a_post_a_clear_error_and_loses_nothing(
        tmp_path: Path) -> None:
    """The log's writes fail, the disk not full: the peer's file size limit (RLIMIT_FSIZE,
    lowered from outside, no root) makes every write past one byte fail (EFBIG; SQLite's
    "disk I/O error", as on a data dir remounted read-only or a failing disk). /api/health
    answers 503 naming it, a POST a 503 LogUnwritable naming the job it keeps (not a 500),
    and every later POST meanwhile a 503 with Retry-After that keeps nothing (a resend is
    safe: no job made per retry, no queue growing); once writes work again the one job kept
    is written and runs, and health is 200."""
    peer = start_peer(tmp_path / "p", "--slots", "1", "--no-mdns", timeout_s=START_S)
    try:
        pid = peer.proc.pid
        soft, hard = resource.prlimit(pid, resource.RLIMIT_FSIZE)
        resource.prlimit(pid, resource.RLIMIT_FSIZE, (1, hard))
        try:
            status, body = API.api("POST", f"{peer.url}/api/jobs",
                                   [{"call": "ECHO", "args": ["kept"]}])
            assert status == 503 and body["error"] == "LogUnwritable", body
            assert "cannot write its event log" in body["message"], body
            kept = re.search(r"job (j[0-9a-f]+(?:\.[0-9a-f]+)?)", body["message"])
            assert kept, body
            status, health = API.api("GET", f"{peer.url}/api/health")
            assert status == 503 and health["ok"] is False, health
            assert "cannot write the event log" in health["reason"], health
            assert health["durability"]["write_error"], health
            for _ in range(5):  # a client retrying the 503
                status, headers, raw = API.http(
                    "POST", f"{peer.url}/api/jobs",
                    json.dumps([{"call": "ECHO", "args": ["resent"]}]).encode())
                body = json.loads(raw)
                assert status == 503 and body["error"] == "LogUnwritable", body
                assert "nothing was kept" in body["message"], body
                assert not re.search(r"job j[0-9a-f]+", body["message"]), body  # none named
                assert int(headers["Retry-After"]) > 0, headers
            status, jobs = API.api("GET", f"{peer.url}/api/jobs")  # none held in memory
            assert [j["id"] for j in jobs["jobs"]] == [kept.group(1)], jobs
        finally:
            resource.prlimit(pid, resource.RLIMIT_FSIZE, (soft, hard))
        v = API.wait(peer.url, kept.group(1))  # written once the log takes writes again
        assert v["state"] == "done", v  # (it may have run from memory: the retry writes it)
        _until(lambda: API.api("GET", f"{peer.url}/api/health")[0] == 200, "health stays 503")
        status, health = API.api("GET", f"{peer.url}/api/health")
        assert status == 200 and health["ok"] is True and health["reason"] is None, health
        status, jobs = API.api("GET", f"{peer.url}/api/jobs")  # and none run since
        assert [j["id"] for j in jobs["jobs"]] == [kept.group(1)], jobs
    finally:
        peer.kill()


def _moved(tasks: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
    """The tasks once the second is claimed (the old code) or held back with its reason."""
    return tasks if tasks[1]["waiting"] or tasks[1]["state"] != "pending" else None


def test_a_peer_whose_log_cannot_be_written_claims_no_new_work_and_loses_no_event(
        tmp_path: Path) -> None:
    """Review r1 M3: while the log's writes fail (RLIMIT_FSIZE, as above) the scheduler
    claimed on, its CLAIMs kept in memory and unseen, so another peer would claim and run
    the same chunks. Now it claims nothing new: the job kept runs its first task (claimed by
    its own JOB_SUBMITTED) and waits at the second, whose view says why; health says so;
    an upload is a 503 naming what failed (it was a 500). Once writes work again health is
    200, the task runs (its input, written again), and every event is in the log after a
    kill -9."""
    peer = start_peer(tmp_path / "p", "--slots", "1", "--no-mdns", "--max-attempts", "1",
                      timeout_s=START_S)
    wf = [{"call": "ECHO", "args": ["first"]}, {"call": "ECHO", "args": ["second"]}]
    try:
        pid = peer.proc.pid
        soft, hard = resource.prlimit(pid, resource.RLIMIT_FSIZE)
        resource.prlimit(pid, resource.RLIMIT_FSIZE, (1, hard))
        try:
            status, body = API.api("POST", f"{peer.url}/api/jobs", wf)
            assert status == 503 and body["error"] == "LogUnwritable", body
            job = re.search(r"job (j[0-9a-f]+(?:\.[0-9a-f]+)?)", body["message"])
            assert job, body
            a, b = _until(lambda: _moved(_view(peer, job.group(1))["tasks"]),
                          "b neither claimed nor held back")
            assert (a["state"], b["state"]) == ("done", "pending"), (a, b)
            assert "event log cannot be written" in b["waiting"], b
            status, health = API.api("GET", f"{peer.url}/api/health")
            assert status == 503 and health["durability"]["claims_held"] is True, health
            assert health["reason"].startswith(
                "events cannot be stored: cannot write the event log "), health
            assert "claims no new work" in health["reason"], health
            status, body = API.api("POST", f"{peer.url}/api/add?name=f.txt", b"new data")
            assert (status, body["error"]) == (503, "StoreUnwritable"), body
            assert "cannot write the upload to " in body["message"], body
        finally:
            resource.prlimit(pid, resource.RLIMIT_FSIZE, (soft, hard))
        _until(lambda: API.api("GET", f"{peer.url}/api/health")[0] == 200, "health stays 503")
        status, health = API.api("GET", f"{peer.url}/api/health")
        assert health["durability"]["claims_held"] is False, health

        def second_done() -> dict[str, Any] | None:
            second = _view(peer, job.group(1))["tasks"][1]
            return second if second["state"] == "done" else None

        # (The first task's output was an inline block whose write failed in the outage:
        # it was held nowhere until a restart, and the second task waited for a peer to
        # fetch it from, on a mesh of one: review r2 of session 45, M1.)
        _until(second_done, "the task held back does not run once writes work again")
    finally:
        peer.kill()
    log = EventLog(tmp_path / "p" / "events.sqlite")  # what a restart would read: every
    try:  # event of the outage (kept in memory, written once the log took writes)
        state = fold(log.load())
    finally:
        log.close()
    assert job.group(1) in state.jobs
    assert state.task_done[(job.group(1), a["name"])].payload["output"] == a["output"]


def _read(url: str) -> tuple[int, bytes]:
    """GET `url`: its status and body (0 if it did not answer within 10 s)."""
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, b""
    except OSError:
        return 0, b""


def test_an_inline_output_whose_block_write_failed_is_written_once_the_store_takes_writes(
        tmp_path: Path) -> None:
    """Session 46, helper e: the block store alone full (its own tmpfs; the log writable all
    along, so no log outage ends): an inline output whose write failed was held nowhere (on
    a mesh of one: unreadable, and a task reading it failed) until a restart. Now a retry
    writes it once space is freed, and the gateway serves it, with no restart."""
    d = tmp_path / "p"
    d.mkdir(mode=0o700)
    with mounted_tmpfs(d / "store", TMPFS_BYTES) as store:
        peer = start_peer(d, "--slots", "1", "--no-mdns", timeout_s=START_S)
        try:
            ballast = store / "ballast"
            _fill(ballast)
            job = API.submit(peer.url, [{"call": "ECHO", "args": ["kept"]}])
            out = API.wait(peer.url, job)["outputs"]["echo"]
            _until(lambda: "inline blocks of 1 output(s) not written" in (
                tmp_path / "p.log").read_text(), "the inline write did not fail")
            status, health = API.api("GET", f"{peer.url}/api/health")
            assert health["durability"]["write_error"] is None, (status, health)  # log: fine
            assert _read(f"{peer.url}/ipfs/{out}")[0] != 200  # held nowhere
            ballast.unlink()  # space is freed
            _until(lambda: _read(f"{peer.url}/ipfs/{out}") == (200, b"kept"),
                   "the output is not written again once the store takes writes")
        finally:
            peer.kill()


@pytest.fixture
def two_peers(tmp_path: Path) -> Iterator[tuple[PeerProc, PeerProc]]:
    secret = tmp_path / "secret"
    secret.write_text(secrets.token_hex(32))
    mesh = f"durable-{secrets.token_hex(6)}"
    with ThreadPoolExecutor(2) as pool:  # started side by side: half the wait
        started = [pool.submit(start_peer, tmp_path / name, "--secret-file", str(secret),
                               "--slots", "1", mesh=mesh, timeout_s=START_S) for name in "ab"]
    peers = [f.result() for f in started if f.exception() is None]
    try:
        assert len(peers) == 2, [f.exception() for f in started]
        wait_mesh(peers, 2)
        yield peers[0], peers[1]
    finally:
        for p in peers:
            p.kill()


def _add(peer: PeerProc, data: bytes) -> str:
    status, body = API.api("POST", f"{peer.url}/api/add?name=data.bin", data)
    assert status == 201, body
    return str(body["cid"])


def _flip(path: Path, at: int) -> None:
    with open(path, "r+b") as f:
        f.seek(at)
        byte = f.read(1)
        f.seek(at)
        f.write(bytes([byte[0] ^ 0x40]))


def _blocks(store_dir: Path, cid: str) -> list[tuple[str, Path]]:
    store = EmbeddedStore(store_dir)
    return [(c, store.blocks.path(parse_cid(c).key)) for c, _ in store.dag(cid)]


def test_a_flipped_byte_is_detected_and_repaired_from_a_second_peer(
        two_peers: tuple[PeerProc, PeerProc], tmp_path: Path) -> None:
    a, b = two_peers
    data = os.urandom(600_000)  # three 256 KiB leaves under a root
    cid = _add(a, data)
    assert API.cat(b.url, cid) == data  # b fetches it from a: now both hold every block
    path = _blocks(a.data_dir / "store", cid)[1][1]  # a leaf (the root comes first)
    good = path.read_bytes()
    _flip(path, 1000)
    assert API.cat(a.url, cid) == data  # detected, fetched again from b, served whole
    assert path.read_bytes() == good  # and stored again
    status, health = API.api("GET", f"{a.url}/api/health")
    assert health["durability"]["corrupt_blocks"] == 1, health

    # without a second holder the read fails with a clear error (never corrupt bytes)
    only = _add(a, b"held by one peer only " + os.urandom(64))
    (_, lone), = _blocks(a.data_dir / "store", only)
    _flip(lone, 3)
    status, _, raw = API.http("GET", f"{a.url}/ipfs/{only}")
    body = json.loads(raw)
    assert status == 502 and body["error"] == "IntegrityError", body
    assert "corrupt" in body["message"] and only in body["message"], body
    status, health = API.api("GET", f"{a.url}/api/health")
    assert health["durability"]["corrupt_blocks"] == 2, health
