"""Bad input gets a clear error and leaves a real peer running, with earlier outputs readable."""

from __future__ import annotations

import http.client as httpclient
import json
import os
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import PeerProc
from tests.helpers import JsonApi, car_form, launch, stop

pytestmark = pytest.mark.integration
_API = JsonApi(timeout=30, job_timeout_s=40)
http, api, submit, wait = _API.http, _API.api, _API.submit, _API.wait

def raw_get(peer: PeerProc, path: str) -> tuple[int, bytes]:
    """GET a path verbatim (no client-side normalisation of '..' or %2e)."""
    host, port = peer.url.removeprefix("http://").rsplit(":", 1)
    conn = httpclient.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


@dataclass
class Ctx:
    peer: PeerProc
    baseline: str  # output CID of a job that ran before any bad input
    baseline_bytes: bytes


@pytest.fixture(scope="module")
def ctx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ctx]:
    p = launch(tmp_path_factory.mktemp("bad") / "p0", "--slots", "2",
                   "--task-timeout-s", "1", "--worker-memory-mb", "1500",
                   "--mesh-name", f"bad-{uuid.uuid4().hex[:12]}")
    try:
        view = wait(p.url, submit(p.url, [{"call": "T_WRITE", "args": [3, "base"]},
                                          {"call": "T_CONCAT"}]))
        assert view["state"] == "done", view
        cid = view["outputs"]["t_concat"]
        yield Ctx(p, cid, b"file 0 base\nfile 1 base\nfile 2 base\n")
    finally:
        stop(p)


@pytest.fixture
def peer(ctx: Ctx) -> Iterator[PeerProc]:
    """The shared peer; after each test it must still be healthy and serve old outputs."""
    yield ctx.peer
    assert ctx.peer.proc.poll() is None, "the peer died"
    status, health = api("GET", f"{ctx.peer.url}/api/health")
    assert status == 200 and health["ok"] is True
    status, _, body = http("GET", f"{ctx.peer.url}/ipfs/{ctx.baseline}")
    assert status == 200 and body == ctx.baseline_bytes


def pins(p: PeerProc) -> set[str]:
    """The pins kept as files (uploads, stored outputs; inline outputs' are rows of the
    store's inline pack)."""
    return set(os.listdir(p.data_dir / "store" / "pins"))


def upload_pins(p: PeerProc) -> set[str]:
    """The pin files but the task outputs of the jobs run here (a stored output's pin is a
    file too)."""
    _, listing = api("GET", f"{p.url}/api/jobs")
    outs: set[str] = set()
    for j in listing["jobs"]:
        _, v = api("GET", f"{p.url}/api/jobs/{j['id']}")
        outs |= {str(t["output"]) for t in v["tasks"] if t.get("output")}
    return pins(p) - outs


# -- pipelines ---------------------------------------------------------------------------
CYCLE = {"tasks": [{"name": "a", "call": "T_CONCAT", "depends": ["b"]},
                   {"name": "b", "call": "T_CONCAT", "depends": ["a"]}]}


@pytest.mark.parametrize(("body", "ctype", "field", "words"), [
    (b'[{"call": "T_WRITE", "args": [1]', "application/json", None, ["invalid JSON", "line 1"]),
    (b"- call: T_WRITE\n  args: [1\n", "application/yaml", None, ["invalid YAML", "line"]),
    (b"[1]", "application/json", "tasks[0]", ["object"]),
    (b'[{"call": "T_WRITE", "args": 3}]', "application/json", "tasks[0].args", ["list"]),
    (b'[{"call": "T_WRITE", "args": [1]}, {"call": "NOPE"}]', "application/json",
     "tasks[1].call", ["NOPE", "known", "T_WRITE", "ECHO"]),
    (b'[{"call": "T_WRITE", "args": [1, "x", 3]}]', "application/json", "tasks[0].args",
     ["files", "tag"]),
    (b'[{"call": "T_WRITE", "args": ["three"]}]', "application/json", "tasks[0].args[0]",
     ["files", "int"]),
    (b'[{"call": "T_WRITE", "params": {"files": 1, "colour": 2}}]', "application/json",
     None, ["colour"]),
    (json.dumps(CYCLE).encode(), "application/json", None, ["cycle", "a", "b"]),
    (b"", "application/json", None, []),
    (b"\xff\xfe\x00garbage", "application/json", None, []),
    (b"42", "application/json", None, []),
])
def test_bad_pipelines_are_400_with_message_and_field(
        peer: PeerProc, body: bytes, ctype: str, field: str | None, words: list[str]) -> None:
    _, before = api("GET", f"{peer.url}/api/jobs")
    status, err = api("POST", f"{peer.url}/api/jobs", body, headers={"Content-Type": ctype})
    assert status == 400, err
    assert err["error"] in ("SpecError", "ArgError") and err["message"]
    for w in words:
        assert w in err["message"], err
    if field is not None:
        assert err["field"] == field, err
    if "field" in err:
        assert err["field"].startswith("tasks"), err
    _, after = api("GET", f"{peer.url}/api/jobs")
    assert len(after["jobs"]) == len(before["jobs"])  # nothing was submitted


def test_50_mb_body_is_413_json_before_the_body_is_sent(peer: PeerProc) -> None:
    """The peer answers once the body passes its limit (1 MB): the client announced 50 MB
    but sends only 1.1 MB, so an answer at all shows that it never waits for the rest."""
    host, port = peer.url.removeprefix("http://").rsplit(":", 1)
    head = (b"POST /api/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\n%s\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n"
            % (_auth(peer), 50 * 2**20))
    with socket.create_connection((host, int(port)), timeout=30) as s:
        s.sendall(head + b"[" + b" " * 1_100_000)  # then nothing: the peer must not wait
        r = httpclient.HTTPResponse(s)
        r.begin()
        status, raw = r.status, r.read()
    assert status == 413, raw[:300]
    err = json.loads(raw)
    assert err["error"] == "TooLarge" and "too large" in err["message"]
    assert err["field"] == "body"


@pytest.mark.parametrize("path", [
    "/ipfs/not-a-cid", "/ipfs/bafyNOTBASE32!!", "/ipfs/Qm123", "/ipfs/bafkqaaa%00",
])
def test_malformed_cid_is_400(peer: PeerProc, path: str) -> None:
    status, raw = raw_get(peer, path)
    assert status == 400, raw[:300]
    err = json.loads(raw)
    assert err["field"] == "cid" and err["message"]


def test_dot_dot_in_gateway_paths_is_400(peer: PeerProc, ctx: Ctx) -> None:
    job = submit(peer.url, [{"call": "T_WRITE", "args": [2, "dots"]}])
    out = wait(peer.url, job)["outputs"]["t_write"]
    ok, body = raw_get(peer, f"/ipfs/{out}/f0001.txt")
    assert ok == 200 and body == b"file 1 dots\n"
    for path in (f"/ipfs/{out}/../f0001.txt", f"/ipfs/{out}/%2e%2e/f0001.txt",
                 f"/ipfs/{out}/%2E%2E/f0001.txt", f"/ipfs/{out}/x/%2e%2e/f0001.txt",
                 f"/ipfs/{out}/%2e%2e", f"/ipfs/{out}/./f0001.txt",
                 f"/ipfs/{out}/f0001.txt/.."):
        status, raw = raw_get(peer, path)
        assert status == 400, (path, status, raw[:200])
        err = json.loads(raw)
        assert err["field"] == "path" and ".." in err["message"], err
    # '..' right after /ipfs/ never escapes into the file system
    for path in ("/ipfs/../../etc/passwd", "/ipfs/%2e%2e/%2e%2e/etc/passwd"):
        status, raw = raw_get(peer, path)
        assert status in (400, 404) and b"root:" not in raw, (path, status)


def test_bad_upload_names_are_400(peer: PeerProc) -> None:
    before = upload_pins(peer)
    status, err = api("POST", f"{peer.url}/api/add?name=../evil", b"x")
    assert status == 400 and err["field"] == "filename"
    boundary = "b" + uuid.uuid4().hex
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
            f'filename="d/%2e%2e/evil"\r\n\r\nx\r\n--{boundary}--\r\n').encode()
    status, err = api("POST", f"{peer.url}/api/add", body,
                      headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert status == 400 and err["field"] == "filename"
    body = f'--{boundary}\r\nContent-Disposition: form-data; name="file"\r\n\r\nx\r\n' \
           f"--{boundary}--\r\n"
    status, err = api("POST", f"{peer.url}/api/add", body.encode(),
                      headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert status == 400 and err["field"] == "body"
    assert upload_pins(peer) == before
    assert not (peer.data_dir.parent / "evil").exists()


def _auth(peer: PeerProc) -> bytes:
    """The Authorization header line (without CRLF) of a hand-written request."""
    return f"Authorization: Bearer {peer.token}".encode()


def _upload_bytes(peer: PeerProc) -> int:
    """Bytes in the peer's temporary upload directories (0 when there are none)."""
    return sum(f.stat().st_size for d in peer.data_dir.glob("upload-*") for f in d.rglob("*")
               if f.is_file())


def _interrupt(peer: PeerProc, head: bytes, sent: bytes) -> None:
    """Send part of an upload, wait (bounded) until the peer wrote some of it, hang up."""
    host, port = peer.url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(head + sent)
        deadline = time.monotonic() + 30
        while _upload_bytes(peer) == 0:
            assert time.monotonic() < deadline, "the peer never started writing the upload"
            time.sleep(0.02)


def _settled(peer: PeerProc) -> None:
    """Wait (bounded) until the peer removed its temporary upload directories."""
    deadline = time.monotonic() + 10
    while any(n.startswith("upload-") for n in os.listdir(peer.data_dir)):
        assert time.monotonic() < deadline, os.listdir(peer.data_dir)
        time.sleep(0.05)


def test_interrupted_uploads_leave_no_pin(peer: PeerProc) -> None:
    before = upload_pins(peer)
    payload = os.urandom(3 * 2**20)
    head = (b"POST /api/add?name=part.bin HTTP/1.1\r\nHost: 127.0.0.1\r\n%s\r\n"
            b"Content-Type: application/octet-stream\r\nContent-Length: 50000000\r\n\r\n"
            % _auth(peer))
    _interrupt(peer, head, payload)
    boundary = "b" + uuid.uuid4().hex
    part = (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
            f'filename="dir/a.bin"\r\nContent-Type: application/octet-stream\r\n\r\n').encode()
    head = (f"POST /api/add HTTP/1.1\r\nHost: 127.0.0.1\r\n{_auth(peer).decode()}\r\n"
            f"Content-Length: 50000000\r\n"
            f"Content-Type: multipart/form-data; boundary={boundary}\r\n\r\n").encode()
    _interrupt(peer, head, part + payload)
    _settled(peer)
    assert upload_pins(peer) == before
    # a complete upload of the same bytes still works afterwards
    status, out = api("POST", f"{peer.url}/api/add?name=part.bin", payload)
    assert status == 201 and upload_pins(peer) == before | {out["cid"]}


@pytest.mark.parametrize(("call", "args", "words", "attempts"), [
    ("T_RAISE", ["bad thing"], "ValueError: bad thing", 1),
    ("T_EXIT", [1], "exited with code 1", 3),
    ("T_SLEEP", [], "timed out", 3),
])
def test_failing_tasks_fail_the_job_not_the_peer(peer: PeerProc, call: str, args: list[Any],
                                                 words: str, attempts: int) -> None:
    view = wait(peer.url, submit(peer.url, [{"call": call, "args": args}]))
    assert view["state"] == "failed", view
    t = view["tasks"][0]
    assert t["state"] == "failed" and words in t["error"], t
    assert t["attempts"] == attempts and t["output"] is None
    assert view["finished_ms"] is not None
    _, peers = api("GET", f"{peer.url}/api/peers")
    me = next(p for p in peers["peers"] if p["self"])
    deadline = time.monotonic() + 5
    while me["free_slots"] != 2:  # the killed worker was replaced
        assert time.monotonic() < deadline, me
        time.sleep(0.05)
        _, peers = api("GET", f"{peer.url}/api/peers")
        me = next(p for p in peers["peers"] if p["self"])
    ok = wait(peer.url, submit(peer.url, [{"call": "T_WRITE", "args": [1, uuid.uuid4().hex]}]))
    assert ok["state"] == "done", ok["tasks"][0]["error"]


@pytest.mark.parametrize("url", ["http://127.0.0.1:9/cmu_us_awb_arctic.zip",
                                 "http://localhost:9/cmu_us_awb_arctic.zip",
                                 "http://[::1]:9/cmu_us_awb_arctic.zip"])
def test_fetch_of_loopback_fails_naming_the_address_policy(peer: PeerProc, url: str) -> None:
    """This peer has no --fetch-allow: a loopback URL is refused before any connection."""
    view = wait(peer.url, submit(peer.url, [{"call": "FETCH_FESTVOX", "args": [url]}]))
    assert view["state"] == "failed", view
    t = view["tasks"][0]
    assert t["state"] == "failed" and t["attempts"] == 1, t
    assert f"{url}: " in t["error"] and "(loopback): refused by the fetch address policy" in \
        t["error"] and "--fetch-allow" in t["error"], t
    assert "Traceback" not in t["error"]


def test_fetch_of_local_files_is_refused_at_submission(peer: PeerProc, tmp_path: Path) -> None:
    """file:// and paths are 400 with the argument named, the same whether the file exists."""
    real = tmp_path / "cmu_us_awb_arctic.zip"
    real.write_bytes(b"PK\5\6" + bytes(18))
    urls = [real.as_uri(), str(real), "file:///nonexistent/x.zip", "/nonexistent/x.zip",
            "/etc/passwd", "ftp://127.0.0.1/x.zip"]
    _, before = api("GET", f"{peer.url}/api/jobs")
    for url in urls:
        status, err = api("POST", f"{peer.url}/api/jobs",
                          [{"call": "FETCH_FESTVOX", "args": [url]}])
        assert status == 400 and err["error"] == "ArgError", err
        assert err["field"] == "tasks[0].urls[0]", err
        assert err["message"] == (f"tasks[0].urls[0]: {url!r}: only http:// and https:// URLs "
                                  "are fetched (put local data in with `banzai add`)"), err
    _, after = api("GET", f"{peer.url}/api/jobs")
    assert after == before


def test_builtin_task_runs_under_a_short_timeout(peer: PeerProc) -> None:
    view = wait(peer.url, submit(peer.url, [{"call": "ECHO", "args": [uuid.uuid4().hex]}]))
    assert view["state"] == "done", view["tasks"][0]["error"]


def test_memory_hog_is_stopped_by_the_limit(tmp_path: Path) -> None:
    """A task allocating without bound is killed by --worker-memory-mb; the peer lives on.

    A peer of its own: under the shared peer's 1 s timeout the hog would be timed out first.
    """
    p = launch(tmp_path / "hog", "--slots", "2", "--worker-memory-mb", "1500",
                   "--mesh-name", f"hog-{uuid.uuid4().hex[:12]}")
    try:
        first = wait(p.url, submit(p.url, [{"call": "T_WRITE", "args": [1, "hog"]}]))
        view = wait(p.url, submit(p.url, [{"call": "T_HOG", "args": []}]))
        assert view["state"] == "failed", view
        t = view["tasks"][0]
        assert "memory" in t["error"].lower() and t["attempts"] == 3, t
        assert p.proc.poll() is None
        status, health = api("GET", f"{p.url}/api/health")
        assert status == 200 and health["ok"]
        status, _, body = http("GET", f"{p.url}/ipfs/{first['outputs']['t_write']}/f0000.txt")
        assert status == 200 and body == b"file 0 hog\n"
        ok = wait(p.url, submit(p.url, [{"call": "T_WRITE", "args": [2, "after"]}]))
        assert ok["state"] == "done"
    finally:
        stop(p)


def test_bad_requests_elsewhere(peer: PeerProc) -> None:
    status, err = api("GET", f"{peer.url}/api/jobs/" + "x" * 5000)
    assert status == 404 and err["field"] == "job"
    status, err = api("POST", f"{peer.url}/api/add?cid-version=abc", b"x")
    assert status == 400 and err["field"] == "cid-version"
    status, err = api("GET", f"{peer.url}/api/jobs/jnope/tasks/x/log")
    assert status == 404 and err["field"] == "job"


def test_data_dir_has_no_leftovers(peer: PeerProc) -> None:
    _settled(peer)
    names = set(os.listdir(peer.data_dir))
    assert "store" in names and not any(n.startswith("upload-") for n in names)
    assert not any(Path(peer.data_dir, "store").glob("**/*.tmp"))


# -- bounds (issue 11 item 6) ------------------------------------------------------------------
def test_yaml_alias_bomb_is_400_naming_the_place(peer: PeerProc) -> None:
    """A 61 KB YAML of nested aliases once became a 20 MB event: refused, nothing stored."""
    lines = ['a: &a ["T_WRITE", "T_WRITE", "T_WRITE", "T_WRITE", "T_WRITE"]']
    lines += [f"{chr(97 + i)}: &{chr(97 + i)} [{', '.join([f'*{chr(96 + i)}'] * 9)}]"
              for i in range(1, 9)]
    body = ("\n".join(lines) + "\ntasks:\n  - call: T_WRITE\n    args: *i\n").encode()
    _, before = api("GET", f"{peer.url}/api/jobs")
    status, err = api("POST", f"{peer.url}/api/jobs", body,
                      headers={"Content-Type": "application/yaml"})
    assert status == 400 and err["error"] == "SpecError", err
    assert err["message"] == ("invalid YAML at line 1, column 4: an anchor (&) is not allowed "
                              "in a pipeline; write the value out"), err
    _, after = api("GET", f"{peer.url}/api/jobs")
    assert len(after["jobs"]) == len(before["jobs"])


def test_too_many_tasks_are_413_naming_tasks(peer: PeerProc) -> None:
    _, before = api("GET", f"{peer.url}/api/jobs")
    status, err = api("POST", f"{peer.url}/api/jobs",
                      [{"call": "T_WRITE", "args": [1]}, *[{"call": "T_CONCAT"}] * 1000])
    assert status == 413 and err["error"] == "TooLarge", err
    assert err["field"] == "tasks" and "1001 tasks, over the limit of 1000 per job" in \
        err["message"], err
    _, after = api("GET", f"{peer.url}/api/jobs")
    assert len(after["jobs"]) == len(before["jobs"])


def test_resampling_a_10_hz_wav_to_384_khz_fails_naming_file_and_rates(peer: PeerProc,
                                                                        tmp_path: Path) -> None:
    import numpy as np
    import soundfile as sf

    wav = tmp_path / "low.wav"
    sf.write(wav, np.zeros(100, dtype=np.float32), 10, subtype="PCM_16")  # 10 s at 10 Hz
    boundary = "b" + uuid.uuid4().hex
    body = b"".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{n}"\r\n\r\n'
        .encode() + data + b"\r\n" for n, data in (("low.wav", wav.read_bytes()),
                                                   ("notes.txt", b"x")))
    status, added = api("POST", f"{peer.url}/api/add", body + f"--{boundary}--\r\n".encode(),
                        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert status == 201, added
    view = wait(peer.url, submit(peer.url, [
        {"cid": added["cid"]},
        {"call": "EXTRACT_MFCC", "params": {"sample_rate": 384000}}]))
    assert view["state"] == "failed", view
    t = next(t for t in view["tasks"] if t["name"] == "extract_mfcc")
    assert t["state"] == "failed" and t["attempts"] == 1, t
    assert ("low.wav: its rate of 10 Hz is too low to resample to sample_rate 384000 Hz"
            in t["error"]), t


def _import_car(peer: PeerProc, blocks: list[tuple[Any, bytes]], root: Any) -> None:
    body, headers = car_form(blocks, root)
    status, _, raw = http("POST", f"{peer.url}/api/v0/dag/import", body, headers=headers)
    assert status == 200, raw[:300]


def _file_node(children: list[tuple[Any, int]], filesize: int | None = None) -> tuple[Any, bytes]:
    from peer.cids import DAG_PB, sha256_cid
    from peer.ipfs import dagpb

    sizes = tuple(n for _, n in children)
    fs = dagpb.UnixFSData(dagpb.DataType.FILE, None,
                          sum(sizes) if filesize is None else filesize, sizes)
    block = dagpb.encode_node(dagpb.PBNode(
        tuple(dagpb.PBLink(c.binary, "", n) for c, n in children), dagpb.encode_unixfs(fs)))
    return sha256_cid(block, DAG_PB, 1), block


def test_a_1200_level_chain_is_413_naming_its_root(peer: PeerProc) -> None:
    from peer.cids import RAW, sha256_cid

    leaf = sha256_cid(b"x", RAW, 1)
    blocks: list[tuple[Any, bytes]] = [(leaf, b"x")]
    c = leaf
    for _ in range(1200):
        c, block = _file_node([(c, 1)])
        blocks.append((c, block))
    _import_car(peer, blocks, c)
    status, _, raw = http("GET", f"{peer.url}/ipfs/{c}")
    err = json.loads(raw)
    assert status == 413 and err["error"] == "TooLarge", err
    assert err["message"].startswith(f"the file DAG {c} is more than 64 levels deep"), err


def test_a_file_claiming_240_tb_is_refused_as_corrupt(peer: PeerProc) -> None:
    from peer.cids import RAW, sha256_cid

    leaf = sha256_cid(b"tiny", RAW, 1)
    root, block = _file_node([(leaf, 4)], filesize=240 * 10**12)
    liar, liar_block = _file_node([(leaf, 240 * 10**12)])  # sums up, the leaf does not
    _import_car(peer, [(root, block), (liar, liar_block), (leaf, b"tiny")], root)
    status, _, raw = http("GET", f"{peer.url}/ipfs/{root}")
    err = json.loads(raw)
    assert status == 502 and err["error"] == "IntegrityError", err
    assert err["message"] == (f"corrupt UnixFS file {root}: it declares 240000000000000 bytes "
                              "but its data and blocksizes hold 4"), err
    status, _, raw = http("GET", f"{peer.url}/ipfs/{liar}")
    err = json.loads(raw)
    assert status == 502 and f"declares 240000000000000 bytes for its link to {leaf}, which " \
        "holds 4" in err["message"], err


def test_range_of_4300_digits_is_416(peer: PeerProc, ctx: Ctx) -> None:
    url = f"{peer.url}/ipfs/{ctx.baseline}"
    status, headers, _ = http("GET", url, headers={"Range": "bytes=" + "9" * 4300 + "-"})
    assert status == 416 and headers["Content-Range"] == f"bytes */{len(ctx.baseline_bytes)}"
    status, _, body = http("GET", url, headers={"Range": "bytes=5-" + "9" * 4300})
    assert status == 206 and body == ctx.baseline_bytes[5:]
