"""The REST API of a real banzai-peer process over HTTP on 127.0.0.1 (issue 2)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from peer.http.openapi import OPENAPI
from peer.ipfs import EmbeddedStore
from tests.conftest import PeerProc
from tests.helpers import FINAL, JsonApi, auth_headers, launch, multipart, stop

pytestmark = pytest.mark.integration
PIPE = [{"call": "T_WRITE", "args": [4]}, {"call": "T_UPPER", "args": []},
        {"call": "T_CONCAT"}]
_API = JsonApi(timeout=20, job_timeout_s=30)
http, api, submit, wait, cat = _API.http, _API.api, _API.submit, _API.wait, _API.cat


@pytest.fixture(scope="module")
def peer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PeerProc]:
    """One peer shared by the tests of this module (they use distinct jobs)."""
    p = launch(tmp_path_factory.mktemp("api") / "p0", "--slots", "2",
               "--mesh-name", f"api-{uuid.uuid4().hex[:12]}", fresh_log=True)
    yield p
    stop(p)


# -- tests -------------------------------------------------------------------------------
def test_health_tasks_peers_and_openapi(peer: PeerProc) -> None:
    status, health = api("GET", f"{peer.url}/api/health")
    assert status == 200 and health["ok"] is True and health["peer"]
    status, tasks = api("GET", f"{peer.url}/api/tasks")
    by_call = {t["call"]: t for t in tasks["tasks"]}
    assert {"ECHO", "T_WRITE", "T_CONCAT", "T_SLEEP"} <= set(by_call)
    assert [a["name"] for a in by_call["T_WRITE"]["args"]] == ["files", "tag"]
    assert by_call["T_UPPER"]["per_item"] is True and by_call["T_WRITE"]["doc"]
    status, peers = api("GET", f"{peer.url}/api/peers")
    me = [p for p in peers["peers"] if p["self"]]
    assert len(me) == 1 and me[0]["id"] == health["peer"]
    assert me[0]["slots"] == 2 and me[0]["http"] == peer.url and "T_CONCAT" in me[0]["calls"]
    status, doc = api("GET", f"{peer.url}/api/openapi.json")
    assert status == 200 and doc == json.loads(json.dumps(OPENAPI))


def test_submit_runs_a_job_with_a_full_view(peer: PeerProc) -> None:
    _, health = api("GET", f"{peer.url}/api/health")
    status, body = api("POST", f"{peer.url}/api/jobs", PIPE)
    assert status == 201 and body["job"].startswith("j") and body["url"].endswith(body["job"])
    job = body["job"]
    view = wait(peer.url, job)
    assert view["state"] == "done", view
    assert view["id"] == job and view["progress"] == 1.0
    assert view["submitted_by"] == health["peer"]
    assert view["submitted_ms"] <= view["finished_ms"] and view["duration_s"] >= 0
    assert [t["name"] for t in view["tasks"]] == ["t_write", "t_upper", "t_concat"]
    for t in view["tasks"]:
        assert t["state"] == "done" and t["progress"] == 1.0 and t["error"] is None
        assert t["attempts"] == 1 and t["peers"] == [health["peer"]]
        assert t["output"] == view["outputs"][t["name"]]
        assert view["submitted_ms"] <= t["started_ms"] <= t["finished_ms"]
        assert t["chunks"] and all(c["peer"] == health["peer"] for c in t["chunks"])
    assert view["tasks"][1]["params"] == {"suffix": ""}
    assert view["tasks"][1]["depends"] == ["t_write"]
    text = cat(peer.url, view["outputs"]["t_concat"]).decode()
    assert text == "".join(f"FILE {i} \n" for i in range(4))
    assert cat(peer.url, view["outputs"]["t_upper"], "/f0002.txt") == b"FILE 2 \n"
    # the list, newest first, in the short form
    status, jobs = api("GET", f"{peer.url}/api/jobs")
    assert status == 200
    listed = {j["id"]: j for j in jobs["jobs"]}
    assert listed[job]["state"] == "done" and listed[job]["outputs"] == view["outputs"]
    assert {t["name"] for t in listed[job]["tasks"]} == {"t_write", "t_upper", "t_concat"}
    order = [j["submitted_ms"] for j in jobs["jobs"]]
    assert order == sorted(order, reverse=True)


def test_yaml_dag_with_params_and_cid_source(peer: PeerProc) -> None:
    body, headers = multipart({"in/a.txt": b"hello\n", "in/b.txt": b"world\n"})
    status, added = api("POST", f"{peer.url}/api/add", body, headers=headers)
    assert status == 201, added
    yaml = (f"name: dag-test\ntasks:\n  - name: src\n    cid: {added['cid']}\n"
            "  - name: up\n    call: T_UPPER\n    params: {suffix: '!'}\n    depends: [src]\n"
            "  - name: cat\n    call: T_CONCAT\n    depends: [up]\n")
    status, sub = api("POST", f"{peer.url}/api/jobs", yaml.encode(),
                      headers={"Content-Type": "application/yaml"})
    assert status == 201, sub
    view = wait(peer.url, sub["job"])
    assert view["state"] == "done" and view["name"] == "dag-test", view
    assert view["outputs"]["src"] == added["cid"]
    assert cat(peer.url, view["outputs"]["up"], "/b.txt") == b"WORLD\n!"
    assert cat(peer.url, view["outputs"]["cat"]) == b"HELLO\n!WORLD\n!"


def test_task_log_and_metrics(peer: PeerProc) -> None:
    job = submit(peer.url, [{"call": "T_WRITE", "args": [2, "log"]}, {"call": "T_CONCAT"}])
    view = wait(peer.url, job)
    assert view["state"] == "done"
    base = f"{peer.url}/api/jobs/{job}/tasks"
    status, log = api("GET", f"{base}/t_concat/log")
    assert status == 200 and log["lines"] == ["concatenated into all.txt"]
    status, _, text = http("GET", f"{base}/t_concat/log?format=text")
    assert status == 200 and text == b"concatenated into all.txt\n"
    status, metrics = api("GET", f"{base}/t_concat/metrics")
    size = len(cat(peer.url, view["outputs"]["t_concat"]))
    assert status == 200 and metrics["metrics"] == [["bytes", 0, float(size)]]
    status, empty = api("GET", f"{base}/t_write/log")
    assert status == 200 and empty["lines"] == []
    status, err = api("GET", f"{base}/nope/log")
    assert status == 404 and err["field"] == "task" and "t_concat" in err["message"]
    status, err = api("GET", f"{peer.url}/api/jobs/jnope/tasks/t_concat/metrics")
    assert status == 404 and err["field"] == "job"
    status, err = api("GET", f"{peer.url}/api/jobs/jnope")
    assert status == 404 and err["field"] == "job" and err["message"]


def _scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    status, headers, text = http("GET", f"{url}/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text.decode()) for s in fam.samples}


def test_prometheus_metrics_follow_the_work(peer: PeerProc) -> None:
    before = _scrape(peer.url)
    assert before[("banzai_members", (("state", "self"),))] == 1
    assert before[("banzai_slots", ())] == 2
    runs = before.get(("banzai_task_duration_seconds_count", ()), 0.0)
    job = submit(peer.url, [{"call": "T_WRITE", "args": [2, "prom"]}, {"call": "T_CONCAT"}])
    assert wait(peer.url, job)["state"] == "done"
    after = _scrape(peer.url)
    assert after[("banzai_task_duration_seconds_count", ())] == runs + 2
    assert after[("banzai_claims_total", (("by", "self"),))] >= 2
    assert after[("banzai_log_events", ())] > before[("banzai_log_events", ())]
    assert after[("banzai_log_bytes", ())] > 0
    assert after[("banzai_log_free_bytes", ())] >= 0  # (given back after compaction passes)
    assert ("banzai_log_vacuumed_pages_total", ()) in after
    status, _, body = http("GET", f"{peer.url}/api/health")
    assert status == 200 and json.loads(body)["log"]["file"]["log_incremental"] == 1


def test_cancel_running_job_then_409_when_finished(peer: PeerProc) -> None:
    job = submit(peer.url, [{"call": "T_SLEEP", "args": [3600]}])  # ends only if killed
    wait(peer.url, job, states=("running",))
    status, body = api("POST", f"{peer.url}/api/jobs/{job}/cancel")
    assert status == 200 and body == {"job": job, "state": "cancelled"}
    assert wait(peer.url, job, timeout_s=30)["state"] == "cancelled"
    deadline = time.monotonic() + 30  # fails only if the worker is never stopped
    while True:  # the worker is killed and the slot freed (how soon: scripts/bench_latency.py)
        _, peers = api("GET", f"{peer.url}/api/peers")
        me = next(p for p in peers["peers"] if p["self"])
        if not me["running"] and me["free_slots"] == 2:
            break
        assert time.monotonic() < deadline, me
        time.sleep(0.02)
    _, view = api("GET", f"{peer.url}/api/jobs/{job}")
    chunk = view["tasks"][0]["chunks"][0]
    assert chunk["state"] != "done" and chunk["error"] == "cancelled", chunk  # the cancel ended it
    status, again = api("POST", f"{peer.url}/api/jobs/{job}/cancel")  # idempotent
    assert status == 200, again
    done = submit(peer.url, [{"call": "ECHO", "args": [f"x{uuid.uuid4()}"]}])
    assert wait(peer.url, done)["state"] == "done"
    status, err = api("POST", f"{peer.url}/api/jobs/{done}/cancel")
    assert status == 409 and err["field"] == "job" and "done" in err["message"]
    status, err = api("POST", f"{peer.url}/api/jobs/jnope/cancel")
    assert status == 404 and err["field"] == "job"


def _local_cid(path: Path, version: int, tmp: Path) -> str:
    store = EmbeddedStore(tmp / f"local-store-{uuid.uuid4().hex}")
    return store.add_path(path, cid_version=version)


def test_add_raw_file_v0_and_v1_match_the_local_store(peer: PeerProc, tmp_path: Path) -> None:
    data = bytes(range(256)) * 4000  # ~1 MB: several 256 KiB chunks
    f = tmp_path / "blob.bin"
    f.write_bytes(data)
    url = f"{peer.url}/api/add?name=blob.bin"
    status, v1 = api("POST", url, data, headers={"Content-Type": "application/octet-stream"})
    assert status == 201 and v1["cid"].startswith("bafy") and v1["name"] == "blob.bin"
    status, v0 = api("POST", url + "&cid-version=0", data)
    assert status == 201 and v0["cid"].startswith("Qm")
    assert v1["cid"] == _local_cid(f, 1, tmp_path)
    assert v0["cid"] == _local_cid(f, 0, tmp_path)
    small = tmp_path / "small.txt"
    small.write_bytes(b"small\n")
    status, s = api("POST", f"{peer.url}/api/add?cid-version=1", b"small\n")
    assert status == 201 and s["cid"].startswith("bafk") and s["name"] == "upload"
    assert s["cid"] == _local_cid(small, 1, tmp_path)
    assert cat(peer.url, v1["cid"]) == data and cat(peer.url, v0["cid"]) == data
    pins = set((peer.data_dir / "store" / "pins").iterdir())
    assert {v1["cid"], v0["cid"], s["cid"]} <= {p.name for p in pins}
    status, err = api("POST", f"{peer.url}/api/add?cid-version=2", b"x")
    assert status == 400 and err["field"] == "cid-version"


def _tree(root: Path) -> Path:
    d = root / "corpus"
    (d / "sub" / "deeper").mkdir(parents=True)
    (d / "a.wav").write_bytes(b"RIFF" + bytes(300_000))
    (d / "b.txt").write_text("bee\n")
    (d / "sub" / "c.txt").write_text("see\n")
    (d / "sub" / "deeper" / "d e%.txt").write_text("dee\n")  # space and % survive
    return d


async def _multipart_add(url: str, d: Path, version: int) -> dict[str, Any]:
    form = aiohttp.FormData()
    for f in sorted(p for p in d.rglob("*") if p.is_file()):
        form.add_field("file", f.read_bytes(), filename=f"{d.name}/{f.relative_to(d)}",
                       content_type="application/octet-stream")
    async with aiohttp.ClientSession(headers=auth_headers(url)) as s, \
            s.post(f"{url}/api/add?cid-version={version}", data=form) as r:
        assert r.status == 201, await r.text()
        return dict(await r.json())


async def test_add_multipart_directory_matches_the_local_store(peer: PeerProc,
                                                               tmp_path: Path) -> None:
    d = _tree(tmp_path)
    v1 = await _multipart_add(peer.url, d, 1)
    v0 = await _multipart_add(peer.url, d, 0)
    assert v1["cid"].startswith("bafy") and v0["cid"].startswith("Qm")
    assert v1["name"] == "corpus"
    assert v1["cid"] == _local_cid(d, 1, tmp_path)
    assert v0["cid"] == _local_cid(d, 0, tmp_path)
    body = await asyncio.to_thread(cat, peer.url, v1["cid"], "/sub/deeper/d%20e%25.txt")
    assert body == b"dee\n"


def test_add_multipart_with_unescaped_names(peer: PeerProc, tmp_path: Path) -> None:
    """A client like curl -F sends names with '/' verbatim."""
    d = tmp_path / "dir"
    (d / "x").mkdir(parents=True)
    (d / "one.txt").write_text("1")
    (d / "x" / "two.txt").write_text("2")
    body, headers = multipart({"dir/one.txt": b"1", "dir/x/two.txt": b"2"})
    status, out = api("POST", f"{peer.url}/api/add", body, headers=headers)
    assert status == 201, out
    assert out["cid"] == _local_cid(d, 1, tmp_path)


async def _read_events(resp: aiohttp.ClientResponse, job: str, out: list[dict[str, Any]],
                       ) -> None:
    kind = ""
    async for raw in resp.content:
        line = raw.decode().rstrip("\n")
        if line.startswith("event: "):
            kind = line[7:]
        elif line.startswith("data: "):
            ev = json.loads(line[6:])
            assert ev["type"] == kind
            out.append(ev)
            if ev["type"] == "task_done" and ev.get("job") == job and \
                    ev.get("task") == "t_concat":
                return


async def test_events_stream_while_a_job_runs(peer: PeerProc) -> None:
    timeout = aiohttp.ClientTimeout(total=30, sock_read=20)
    async with aiohttp.ClientSession(timeout=timeout) as s, \
            s.get(f"{peer.url}/api/events") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        assert (await asyncio.wait_for(resp.content.readline(), 5)).startswith(b": connected")
        pipeline = [{"call": "T_WRITE", "args": [3, uuid.uuid4().hex]}, {"call": "T_UPPER"},
                    {"call": "T_CONCAT"}]
        job = await asyncio.to_thread(submit, peer.url, pipeline)
        events: list[dict[str, Any]] = []
        await asyncio.wait_for(_read_events(resp, job, events), 20)
    mine = [e for e in events if e.get("job") == job]
    types = [e["type"] for e in mine]
    assert types[0] == "job_submitted"
    assert {"task_split", "claim", "chunk_done", "task_done"} <= set(types)
    done = [e for e in mine if e["type"] == "task_done"]
    assert [e["task"] for e in done] == ["t_write", "t_upper", "t_concat"]
    assert all(e["output"] and e["origin"] for e in done)
    hlcs = [e["hlc"] for e in mine]
    assert hlcs == sorted(hlcs)
    # the peer keeps serving after the stream was closed
    status, health = await asyncio.to_thread(api, "GET", f"{peer.url}/api/health")
    assert status == 200 and health["ok"]


def test_unknown_routes_and_methods_are_json_errors(peer: PeerProc) -> None:
    status, err = api("GET", f"{peer.url}/api/nothing-here")
    assert status == 404 and err["message"]
    status, err = api("DELETE", f"{peer.url}/api/jobs")
    assert status == 405 and err["message"]


# -- state that survives restarts --------------------------------------------------------
def _counted(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def test_kill_9_keeps_jobs_and_recomputes_nothing(tmp_path: Path) -> None:
    counter = tmp_path / "executions.txt"
    env = {"BANZAI_TEST_COUNTER": str(counter)}
    data, mesh = tmp_path / "p", f"restart-{uuid.uuid4().hex[:12]}"
    p = launch(data, "--slots", "2", "--mesh-name", mesh, env=env, fresh_log=True)
    try:
        pipeline = [{"call": "T_WRITE", "args": [6, "restart"]}, {"call": "T_UPPER"},
                    {"call": "T_CONCAT"}]
        job = submit(p.url, pipeline)
        first = wait(p.url, job)
        assert first["state"] == "done", first
        runs = _counted(counter)
        assert runs.count("T_WRITE") == 1 and runs.count("T_CONCAT") == 1
        assert len([r for r in runs if r.startswith("T_UPPER ")]) == 6
    finally:
        stop(p)  # SIGKILL: no clean shutdown
    assert p.proc.returncode == -9
    q = launch(data, "--slots", "2", "--mesh-name", mesh, env=env, fresh_log=True)
    try:
        _, jobs = api("GET", f"{q.url}/api/jobs")
        assert [j["id"] for j in jobs["jobs"]] == [job]
        again = wait(q.url, job, timeout_s=5)
        assert again["state"] == "done" and again["outputs"] == first["outputs"]
        assert cat(q.url, first["outputs"]["t_concat"]).startswith(b"FILE 0 RESTART")
        second = wait(q.url, submit(q.url, pipeline))
        assert second["state"] == "done" and second["outputs"] == first["outputs"]
        assert all(t["cached"] for t in second["tasks"])
        assert _counted(counter) == runs  # nothing ran again
    finally:
        stop(q)


def test_kill_9_mid_job_then_the_job_completes_after_restart(tmp_path: Path) -> None:
    counter = tmp_path / "executions.txt"
    env = {"BANZAI_TEST_COUNTER": str(counter)}
    data, mesh = tmp_path / "p", f"resume-{uuid.uuid4().hex[:12]}"
    p = launch(data, "--slots", "2", "--mesh-name", mesh, env=env, fresh_log=True)
    pipeline = [{"call": "T_WRITE", "args": [8, "slow"]}, {"call": "T_SLOW_ITEMS", "args": [0.4]}]
    try:
        job = submit(p.url, pipeline)
        deadline = time.monotonic() + 20
        while not any(r.startswith("T_SLOW_ITEMS") for r in _counted(counter)):
            assert time.monotonic() < deadline, "the slow task never started"
            time.sleep(0.02)
        view = wait(p.url, job, states=("running", *FINAL))
        assert view["state"] == "running", view
    finally:
        stop(p)
    q = launch(data, "--slots", "2", "--mesh-name", mesh, env=env, fresh_log=True)
    try:
        view = wait(q.url, job, timeout_s=30)
        assert view["state"] == "done", view
        slow = view["tasks"][1]
        assert slow["state"] == "done" and slow["error"] is None
        names = sorted(f"f{i:04d}.txt" for i in range(8))
        _, _, listing = http("GET", f"{q.url}/ipfs/{slow['output']}?format=json",
                             headers={"Accept": "application/json"})
        assert sorted(link["Name"] for link in json.loads(listing)["Links"]) == names
        assert cat(q.url, slow["output"], "/f0007.txt") == b"file 7 slow\n"
        assert _counted(counter).count("T_WRITE") == 1  # finished work was not redone
    finally:
        stop(q)


def test_more_jobs_than_slots_all_complete(peer: PeerProc) -> None:
    jobs = [submit(peer.url, [{"call": "T_SLEEP", "args": [0.3]}]) for _ in range(4)]
    views = [wait(peer.url, j, timeout_s=8) for j in jobs]
    assert [v["state"] for v in views] == ["done"] * 4
    # The job list pages: ?limit= and the cursor `next` walk it newest first.
    _, everything = api("GET", f"{peer.url}/api/jobs")
    seen: list[str] = []
    status, page = api("GET", f"{peer.url}/api/jobs?limit=3")
    while True:
        assert status == 200 and len(page["jobs"]) <= 3
        seen += [j["id"] for j in page["jobs"]]
        if page["next"] is None:
            break
        status, page = api("GET", f"{peer.url}/api/jobs?limit=3&cursor={page['next']}")
    assert seen == [j["id"] for j in everything["jobs"]] and set(jobs) <= set(seen)
    status, err = api("GET", f"{peer.url}/api/jobs?limit=0")
    assert status == 400 and err["field"] == "limit"


def test_car_of_many_cids_in_one_request_and_its_errors(peer: PeerProc, tmp_path: Path,
                                                        ) -> None:
    """POST /api/car serves several DAGs at once; a Fetcher uses it for a batch (one request
    for 40 DAGs), verifying every block; bad bodies get 4xx naming the field."""
    from peer.ipfs.fetch import Fetcher

    blobs = [f"item {i} {uuid.uuid4()}\n".encode() * (1 + i * 1000) for i in range(40)]
    cids = []
    for i, b in enumerate(blobs):
        status, added = api("POST", f"{peer.url}/api/add?name=f{i}.txt", b)
        assert status == 201
        cids.append(added["cid"])
    _, health = api("GET", f"{peer.url}/api/health")
    local = EmbeddedStore(tmp_path / "store")
    fetcher = Fetcher(local, lambda: {health["peer"]: peer.url}, lambda _c: {health["peer"]},
                      "me")
    urls: list[str] = []
    get = fetcher._get

    async def spy(url: str, *a: Any) -> int:
        urls.append(url)
        return await get(url, *a)

    fetcher._get = spy  # type: ignore[method-assign]

    async def go() -> None:
        try:
            await fetcher.ensure(cids)
        finally:
            await fetcher.close()

    asyncio.run(go())
    assert urls == [f"{peer.url}/api/car"]  # one request, no per-DAG fallback
    assert [b"".join(local.cat(c)) for c in cids] == blobs
    assert fetcher.fetched_bytes > sum(map(len, blobs))

    def post(body: bytes) -> tuple[int, Any]:
        return api("POST", f"{peer.url}/api/car", body,
                   headers={"Content-Type": "application/json"})

    status, err = post(b"{nope")
    assert status == 400 and err["field"] == "body"
    status, err = post(json.dumps({"cids": []}).encode())
    assert status == 400 and err["field"] == "cids"
    status, err = post(json.dumps({"cids": [cids[0], cids[1], "bafy-nope"]}).encode())
    assert status == 400 and err["field"] == "cids[2]" and "bafy-nope" in err["message"]
    status, err = post(json.dumps({"cids": [cids[0]] * 1025}).encode())
    assert status == 413 and err["field"] == "cids"
    missing = "bafkreiaxnnnb7qz2focittuqq3ya25q7rcv3bqynnczfzako47346wosmu"
    status, err = post(json.dumps({"cids": [missing]}).encode())
    assert status == 404
    status, headers, raw = http("POST", f"{peer.url}/api/car",
                                json.dumps({"cids": [missing, cids[0]]}).encode())
    assert status == 200 and headers["Content-Type"].startswith("application/vnd.ipld.car")
    assert local.import_car([raw]) == [cids[0]]  # only the held root
