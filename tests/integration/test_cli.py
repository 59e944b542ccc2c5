"""The `banzai` CLI as a subprocess against a real peer on 127.0.0.1 (issue 2)."""

from __future__ import annotations

import filecmp
import json
import os
import socket
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from peer.ipfs import EmbeddedStore
from tests.conftest import BIN, ROOT, PeerProc
from tests.helpers import get_json, launch, multipart, post_json, stop, wait_mesh

pytestmark = pytest.mark.integration
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "250", "NO_COLOR": "1"}


def banzai(*args: str, peer: PeerProc | None = None, timeout: float = 60,
           env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    pre = ["--peer", peer.url] if peer is not None else []
    return subprocess.run([str(BIN / "banzai"), *pre, *args], capture_output=True, text=True,
                          timeout=timeout, env={**ENV, **(env or {})}, cwd=ROOT)


def no_traceback(r: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in r.stderr + r.stdout, r.stderr


CLI_MESH = f"cli-{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="module")
def peer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PeerProc]:
    p = launch(tmp_path_factory.mktemp("cli") / "p0", "--slots", "2",
                   "--mesh-name", CLI_MESH)
    yield p
    stop(p)


def _write(path: Path, obj: Any) -> Path:
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return path


def test_submit_wait_prints_output_cids(peer: PeerProc, tmp_path: Path) -> None:
    f = _write(tmp_path / "p.json", [{"call": "T_WRITE", "args": [3, "cli"]},
                                     {"call": "T_CONCAT"}])
    r = banzai("submit", str(f), "--wait", peer=peer)
    assert r.returncode == 0, r.stderr
    no_traceback(r)
    lines = [ln.split() for ln in r.stdout.splitlines() if ln.strip()]  # name, CID, URL
    assert [ln[0] for ln in lines] == ["t_write", "t_concat"]
    job = r.stderr.split("submitted job ")[1].split()[0]
    view = get_json(f"{peer.url}/api/jobs/{job}")
    assert view["state"] == "done"
    for name, cid, url in lines:
        assert cid == view["outputs"][name]
        assert url == f"{peer.url}/ipfs/{cid}/"
    with urllib.request.urlopen(f"{peer.url}/ipfs/{view['outputs']['t_concat']}") as resp:
        assert resp.read() == b"file 0 cli\nfile 1 cli\nfile 2 cli\n"


def test_submit_no_cache_runs_every_task_again(peer: PeerProc, tmp_path: Path) -> None:
    f = _write(tmp_path / "nc.json", [{"call": "T_WRITE", "args": [2, "nocache"]}])
    views = []
    for flags in ((), (), ("--no-cache",)):
        r = banzai("submit", str(f), "--wait", *flags, peer=peer)
        assert r.returncode == 0, r.stderr
        job = r.stderr.split("submitted job ")[1].split()[0]
        views.append(get_json(f"{peer.url}/api/jobs/{job}"))
    assert [v["tasks"][0]["cached"] for v in views] == [False, True, False]


def test_submit_yaml_without_wait_prints_the_job(peer: PeerProc, tmp_path: Path) -> None:
    f = _write(tmp_path / "p.yaml", f"- call: ECHO\n  args: [yaml-{uuid.uuid4().hex}]\n")
    r = banzai("submit", str(f), peer=peer)
    assert r.returncode == 0, r.stderr
    job = r.stdout.strip()
    assert job.startswith("j") and get_json(f"{peer.url}/api/jobs/{job}")["id"] == job


def test_failing_pipeline_exits_1_with_the_error(peer: PeerProc, tmp_path: Path) -> None:
    f = _write(tmp_path / "fail.json", [{"call": "T_RAISE", "args": ["cli-boom"]}])
    r = banzai("submit", str(f), "--wait", peer=peer)
    assert r.returncode == 1
    assert "ValueError: cli-boom" in r.stderr and "failed" in r.stderr
    no_traceback(r)
    job = r.stderr.split("submitted job ")[1].split()[0]
    # where what it printed before it failed is read (session 51)
    url = f"{peer.url}/api/jobs/{job}/tasks/t_raise/log?format=text"
    assert f"its log: {url}" in r.stderr, r.stderr
    with urllib.request.urlopen(url, timeout=10) as got:
        lines = got.read().decode().splitlines()
    assert lines == [
        "about to fail", "[banzai] attempt 0 failed: ValueError: cli-boom"]
    s = banzai("status", job, peer=peer)
    assert s.returncode == 1 and "failed" in s.stdout


@pytest.mark.parametrize(("content", "name", "words"), [
    ('[{"call": "T_WRITE", "args": [1]', "bad.json", "invalid JSON"),
    ("- call: [\n", "bad.yaml", "invalid YAML"),
    ('[{"call": "NOPE", "args": []}]', "unknown.json", "T_WRITE"),
    ('[{"call": "T_WRITE", "args": ["three"]}]', "type.json", "files"),
    (None, "missing.json", "cannot read"),
])
def test_bad_file_exits_2_with_a_readable_message(peer: PeerProc, tmp_path: Path,
                                                  content: str | None, name: str,
                                                  words: str) -> None:
    f = tmp_path / name
    if content is not None:
        f.write_text(content)
    r = banzai("submit", str(f), "--wait", peer=peer)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert words in r.stderr and r.stderr.startswith("banzai: ")
    no_traceback(r)


def test_status_lists_and_shows_jobs(peer: PeerProc, tmp_path: Path) -> None:
    f = _write(tmp_path / "s.json", [{"call": "T_WRITE", "args": [2, "status"]},
                                     {"call": "T_UPPER"}])
    job = banzai("submit", str(f), peer=peer).stdout.strip()
    deadline = time.monotonic() + 20
    while get_json(f"{peer.url}/api/jobs/{job}")["state"] != "done":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    r = banzai("status", peer=peer)
    assert r.returncode == 0 and job in r.stdout and "done" in r.stdout
    r = banzai("status", job, peer=peer)
    assert r.returncode == 0, r.stderr
    assert f"job {job} done 100%" in r.stdout
    out = get_json(f"{peer.url}/api/jobs/{job}")["outputs"]
    assert "t_write" in r.stdout and "t_upper" in r.stdout and out["t_upper"] in r.stdout
    r = banzai("status", "jnope", peer=peer)
    assert r.returncode == 2 and "no job 'jnope'" in r.stderr
    no_traceback(r)


def test_cancel(peer: PeerProc, tmp_path: Path) -> None:
    f = _write(tmp_path / "sleep.json", [{"call": "T_SLEEP", "args": [60]}])
    job = banzai("submit", str(f), peer=peer).stdout.strip()
    r = banzai("cancel", job, peer=peer)
    assert r.returncode == 0 and f"cancelled {job}" in r.stdout
    deadline = time.monotonic() + 5
    while get_json(f"{peer.url}/api/jobs/{job}")["state"] != "cancelled":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    done = _write(tmp_path / "echo.json", [{"call": "ECHO", "args": [uuid.uuid4().hex]}])
    finished = banzai("submit", str(done), "--wait", peer=peer)
    assert finished.returncode == 0
    job2 = finished.stderr.split("submitted job ")[1].split()[0]
    r = banzai("cancel", job2, peer=peer)
    assert r.returncode == 2 and "already done" in r.stderr
    no_traceback(r)


def _tree(root: Path) -> Path:
    d = root / "wavs"
    (d / "spk1").mkdir(parents=True)
    (d / "spk2" / "deep").mkdir(parents=True)
    for i in range(5):
        (d / "spk1" / f"a{i}.wav").write_bytes(os.urandom(30_000 + i))
    (d / "spk2" / "deep" / "b c.wav").write_bytes(os.urandom(600_000))  # > 2 chunks
    (d / "README").write_text("corpus\n")
    return d


def _same_tree(a: Path, b: Path) -> None:
    cmp = filecmp.dircmp(a, b)
    assert not cmp.left_only and not cmp.right_only and not cmp.funny_files
    _, mismatch, errors = filecmp.cmpfiles(a, b, cmp.common_files, shallow=False)
    assert not mismatch and not errors
    for sub in cmp.common_dirs:
        _same_tree(a / sub, b / sub)


def test_add_and_get_round_trip(peer: PeerProc, tmp_path: Path) -> None:
    local = EmbeddedStore(tmp_path / "local-store")
    f = tmp_path / "blob.bin"
    f.write_bytes(os.urandom(700_000))
    r1 = banzai("add", str(f), peer=peer)
    r0 = banzai("add", str(f), "--cid-version", "0", peer=peer)
    assert r1.returncode == 0 and r0.returncode == 0, r1.stderr + r0.stderr
    cid1, cid0 = r1.stdout.strip(), r0.stdout.strip()
    assert cid1.startswith("bafy") and cid1 == local.add_path(f)
    assert cid0.startswith("Qm") and cid0 == local.add_path(f, cid_version=0)
    out = tmp_path / "out.bin"
    g = banzai("get", cid0, "-o", str(out), peer=peer)
    assert g.returncode == 0, g.stderr
    assert out.read_bytes() == f.read_bytes()
    d = _tree(tmp_path)
    rd = banzai("add", str(d), peer=peer)
    assert rd.returncode == 0, rd.stderr
    cid = rd.stdout.strip()
    assert cid == local.add_path(d)
    assert banzai("add", str(d), "--cid-version", "0", peer=peer).stdout.strip() \
        == local.add_path(d, cid_version=0)
    dest = tmp_path / "fetched"
    g = banzai("get", cid, "-o", str(dest), peer=peer)
    assert g.returncode == 0, g.stderr
    _same_tree(d, dest)
    r = banzai("add", str(tmp_path / "nothing-here"), peer=peer)
    assert r.returncode == 2 and "no such file" in r.stderr
    r = banzai("add", str(f), "--cid-version", "2", peer=peer)
    assert r.returncode == 2  # argparse usage error
    r = banzai("get", "not-a-cid", "-o", str(tmp_path / "x"), peer=peer)
    assert r.returncode == 2 and "not-a-cid" in r.stderr
    no_traceback(r)


def test_tasks_and_peers(peer: PeerProc) -> None:
    r = banzai("tasks", peer=peer)
    assert r.returncode == 0, r.stderr
    for call in ("ECHO", "T_WRITE", "T_CONCAT", "T_UPPER"):
        assert call in r.stdout
    assert "per-item" in r.stdout and "files:int" in r.stdout
    r = banzai("peers", peer=peer)
    me = get_json(f"{peer.url}/api/health")["peer"]
    assert r.returncode == 0 and me in r.stdout and "alive" in r.stdout
    r = banzai("tasks", env={"BANZAI_PEER": peer.url})  # the default peer from the env
    assert r.returncode == 0 and "T_CONCAT" in r.stdout


def test_key_gen_ls_publish_and_every_peer_resolves(peer: PeerProc, tmp_path: Path) -> None:
    """banzai key gen / key ls / publish; the record is gossiped, so another peer's gateway
    serves /ipns/NAME (fetching the content from the mesh)."""
    r = banzai("key", "gen", "latest-model", peer=peer)
    assert r.returncode == 0, r.stderr
    name = r.stdout.split()[0]
    assert name.startswith("k51") and "latest-model" in r.stdout
    r = banzai("key", "ls", peer=peer)
    assert [line.split()[1] for line in r.stdout.splitlines()] == ["self", "latest-model"]
    assert banzai("key", "gen", "latest-model", peer=peer).returncode != 0  # exists
    model = _write(tmp_path / "model.json", {"weights": [1, 2, 3]})
    cid = banzai("add", str(model), peer=peer).stdout.strip()
    r = banzai("publish", "--key", "latest-model", cid, peer=peer)
    assert r.returncode == 0, r.stderr
    assert f"/ipns/{name} -> /ipfs/{cid}" in r.stdout
    assert get_json(f"{peer.url}/ipns/{name}") == {"weights": [1, 2, 3]}
    pipeline = _write(tmp_path / "p.json", [{"call": "T_WRITE", "args": [1, "ipns"]}])
    r = banzai("submit", str(pipeline), "--wait", "--publish", "latest-model", peer=peer)
    assert r.returncode == 0 and f"/ipns/{name} -> /ipfs/" in r.stdout, r.stderr
    published = r.stdout.split(f"/ipns/{name} -> /ipfs/")[1].split()[0]
    job = get_json(f"{peer.url}/api/jobs?limit=1")["jobs"][0]["id"]
    assert get_json(f"{peer.url}/api/jobs/{job}")["published"] == [  # what the UI shows
        {"name": name, "value": f"/ipfs/{published}", "task": "t_write"}]
    r = banzai("publish", "--key", "latest-model", cid, peer=peer)  # back to the model
    assert r.returncode == 0 and published != cid
    assert get_json(f"{peer.url}/api/jobs/{job}")["published"] == []  # the name moved on
    assert banzai("submit", str(pipeline), "--publish", "k", peer=peer).returncode == 2
    other = launch(tmp_path / "p1", "--slots", "1", "--mesh-name", CLI_MESH)
    try:
        wait_mesh([peer, other], 2)
        deadline = time.monotonic() + 30
        while True:
            try:
                assert get_json(f"{other.url}/ipns/{name}") == {"weights": [1, 2, 3]}
                break
            except (AssertionError, OSError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
    finally:
        stop(other)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


SOME_CID = "bafkreiaheqdfvsfwin2qysg2nd3n4upuu7oyiwtnuvai2oi3lesbeuh42q"


@pytest.mark.parametrize("args", [("tasks",), ("status",), ("peers",), ("cancel", "j1"),
                                  ("get", SOME_CID)])
def test_unreachable_peer_exits_1(args: tuple[str, ...]) -> None:
    url = f"http://127.0.0.1:{_closed_port()}"
    r = subprocess.run([str(BIN / "banzai"), "--peer", url, *args], capture_output=True,
                       text=True, timeout=30, env=ENV, cwd=ROOT)
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert f"cannot reach the peer at {url}" in r.stderr
    no_traceback(r)


def test_usage_errors_exit_2() -> None:
    r = subprocess.run([str(BIN / "banzai")], capture_output=True, text=True, timeout=30,
                       env=ENV, cwd=ROOT)
    assert r.returncode == 2 and "usage" in r.stderr


def _add_dir(peer: PeerProc, files: dict[str, bytes]) -> str:
    body, headers = multipart(files)
    req = urllib.request.Request(peer.url + "/api/add", data=body, headers=headers)
    with urllib.request.urlopen(req, timeout=30) as r:
        return str(json.loads(r.read())["cid"])


def test_submit_wait_prints_partial_outputs_cached_items_first(
        peer: PeerProc, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Progressive answers: a per-item task publishes its output as it grows (the items
    found in the cache at once), `submit --wait` prints each partial CID, the gateway serves
    it, and the final CID is that of a peer run without progressive answers."""
    tag = uuid.uuid4().hex
    old = {f"in/f{i:02d}.txt": f"{tag} {i}\n".encode() for i in range(4)}
    new = {f"in/f{i:02d}.txt": f"{tag} {i}\n".encode() for i in range(4, 12)}
    first = post_json(peer.url + "/api/jobs", [{"cid": _add_dir(peer, old)},
                                               {"call": "T_SLOW_ITEMS", "args": [0.3]}])
    pipe = {"name": f"progressive-{tag}", "tasks": [
        {"name": "src", "cid": _add_dir(peer, {**old, **new})},
        {"name": "s", "call": "T_SLOW_ITEMS", "args": [0.3], "depends": ["src"]}]}
    deadline = time.monotonic() + 60
    while get_json(f"{peer.url}/api/jobs/{first['job']}")["state"] != "done":
        assert time.monotonic() < deadline, "the first job did not finish"
        time.sleep(0.1)

    cli = subprocess.Popen([str(BIN / "banzai"), "--peer", peer.url, "submit",
                            str(_write(tmp_path / "p.json", pipe)), "--wait"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
                           cwd=ROOT)
    try:
        first_seen, job_id = None, None
        while cli.poll() is None and first_seen is None:
            job_id = next((j["id"] for j in get_json(f"{peer.url}/api/jobs")["jobs"]
                           if j["name"] == pipe["name"]), None)
            if job_id:
                t = get_json(f"{peer.url}/api/jobs/{job_id}")["tasks"][1]
                if t["partial"]:
                    first_seen = (t["partial"], [c["state"] for c in t["chunks"]])
            time.sleep(0.03)
        stdout, stderr = cli.communicate(timeout=90)
    finally:
        cli.kill()
    assert cli.returncode == 0, stderr
    assert first_seen is not None, "no partial output was ever shown"
    part, states = first_seen
    assert part["of"] == 12 and part["items"] >= 4, part  # the 4 cached items at once
    assert "done" not in states, states  # ... before any chunk of the 8 others was done
    lines = [ln.split() for ln in stdout.splitlines() if ln.strip()]  # tabs come expanded
    partials = [ln for ln in lines if ln[1] == "partial"]  # name, partial, n/of, CID, URL
    assert partials and all(ln[0] == "s" for ln in partials), stdout
    assert part["output"] in {ln[3] for ln in partials}, stdout
    assert partials[0][2].endswith("/12") and partials[0][4].endswith(f"/ipfs/{partials[0][3]}/")
    with urllib.request.urlopen(f"{peer.url}/ipfs/{partials[0][3]}/f00.txt") as r:
        assert r.read() == f"{tag} 0\n".encode()  # a result of the cache, served
    final = next(ln[1] for ln in lines if ln[0] == "s" and ln[1] != "partial")
    view = get_json(f"{peer.url}/api/jobs/{job_id}")
    assert view["outputs"]["s"] == final and view["tasks"][1]["partial"] is None

    plain = launch(tmp_path_factory.mktemp("plain") / "p0", "--slots", "2", "--no-mdns",
                   "--no-partial-outputs", "--mesh-name", f"plain-{tag}")
    try:
        pipe["tasks"][0]["cid"] = _add_dir(plain, {**old, **new})
        job = post_json(plain.url + "/api/jobs", pipe)["job"]
        deadline = time.monotonic() + 60
        while (v := get_json(f"{plain.url}/api/jobs/{job}"))["state"] != "done":
            assert time.monotonic() < deadline, "the run without progress did not finish"
            assert v["tasks"][1]["partial"] is None  # no progressive answers there
            time.sleep(0.1)
        assert v["outputs"]["s"] == final  # the same CID as with progressive answers
    finally:
        stop(plain)
