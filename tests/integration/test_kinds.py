"""Task kinds with real components: shell tasks run real processes in a peer's workers, api
tasks call a real aiohttp service on 127.0.0.1 (allowed with --fetch-allow 127.0.0.1/32),
container tasks run real podman containers of an image built locally from busybox
(scripts/build-test-image.sh); one peer for the module, a second without --allow-shell
where a test needs it. Container tests skip (with the reason) only when podman cannot run."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web

from peer.config import PeerConfig
from peer.errors import SpecError
from peer.http.views import job_view
from peer.jobs import kinds
from peer.jobs.kind_container import OWNER_LABEL, usable
from peer.jobs.spec import parse, resolve_images
from peer.log import EventType
from peer.node import Node

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

FINAL = ("done", "failed", "cancelled")
SECRET = "s3cr3t-" + uuid.uuid4().hex  # a value that must appear nowhere but in the process


def _cfg(d: Path, **kw: Any) -> PeerConfig:
    return PeerConfig(data_dir=d, slots=2, task_modules=("tests.fixture_tasks",), mdns=False,
                      warm_workers=False, **kw)


ROOT = Path(__file__).resolve().parents[2]
IMAGE = "localhost/busybox:test"


def _podman() -> str | None:
    """Why container tests cannot run here (None: they can; the image is built if missing)."""
    if shutil.which("podman") is None:
        return "podman is not installed (scripts/setup.sh --test installs it)"
    why = usable("podman")
    if why is not None:
        return why
    r = subprocess.run(["bash", str(ROOT / "scripts/build-test-image.sh"), "podman"],
                       capture_output=True, text=True, timeout=120, check=False)
    return None if r.returncode == 0 else f"cannot build {IMAGE}: {r.stderr.strip()[-300:]}"


NO_PODMAN = _podman()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def node(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Node]:
    d = tmp_path_factory.mktemp("kinds")
    secrets = d / "secrets"
    secrets.write_text(f"# test secrets\nAPI_TOKEN={SECRET}\n")
    n = Node(_cfg(d / "p", allow_shell=True, task_timeout_s=3.0, worker_memory_mb=1500,
                  max_attempts=1, task_log_max_bytes=4096, task_secrets_file=secrets,
                  fetch_allow=("127.0.0.1/32",), allow_containers=NO_PODMAN is None))
    await n.start()
    yield n
    await n.close()


def submit(node: Node, pipeline: Any) -> str:
    wf = parse(json.dumps(pipeline), node.catalog)
    if any(t.call == "container" for t in wf.tasks):  # as POST /api/jobs does
        wf = resolve_images(wf, {p: m.payload.get("images") or {}
                                 for p, m in node.state.members.items()})
    job = f"j{uuid.uuid4().hex[:8]}"
    node.emit(EventType.JOB_SUBMITTED, {"job": job, "workflow": wf.to_json()})
    return job


async def until(cond: Callable[[], object], what: str, timeout_s: float = 30) -> None:
    """Poll until `cond()` holds; the deadline only fails a state that never comes."""
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.01)


async def wait(node: Node, job: str) -> dict[str, Any]:
    await until(lambda: job_view(node.state, job, 1)["state"] in FINAL, f"job {job} never ended")
    return job_view(node.state, job, 1)


def cat(node: Node, cid: str, path: str) -> str:
    return b"".join(node.store.cat(node.store.resolve(cid, path))).decode()


def task_done(node: Node, job: str, task: str) -> dict[str, Any]:
    return node.state.task_done[(job, task)].payload


def shell(cmd: str, **kw: Any) -> dict[str, Any]:
    return {"name": kw.pop("name", "sh"), "shell": cmd, **kw}


async def test_shell_task_reads_its_input_and_writes_its_output(node: Node) -> None:
    job = submit(node, {"tasks": [
        {"name": "w", "call": "T_WRITE", "args": [3, "x"]},
        shell("cat {in}/*.txt | wc -l > {out}/lines; read v; echo \"$v-$GREETING\" > {out}/s;"
              " stat -c %a {in} > {out}/mode; pwd > {out}/cwd; echo to-stdout;"
              " echo to-stderr >&2", env={"GREETING": "hi"}, stdin="from-stdin\n",
              depends=["w"])]})
    v = await wait(node, job)
    assert v["state"] == "done", v
    out = v["outputs"]["sh"]
    assert cat(node, out, "lines").strip() == "3"
    assert cat(node, out, "s") == "from-stdin-hi\n"
    assert cat(node, out, "mode").strip() == "555"  # the input is materialized read-only
    cwd = Path(cat(node, out, "cwd").strip())
    assert cwd.is_relative_to(node.cfg.data_dir / "work") and not cwd.exists()  # fresh, gone
    log = node.scheduler.logs[(job, "sh")]
    assert "to-stdout" in log and "to-stderr" in log


async def test_a_command_that_exits_non_zero_fails_with_its_stderr(node: Node) -> None:
    v = await wait(node, submit(node, [shell("echo first; echo 'it broke' >&2; exit 3")]))
    assert v["state"] == "failed"
    err = v["tasks"][0]["error"]
    assert "exited with status 3" in err and "it broke" in err, err


async def test_timeout_and_memory_limit_apply_to_shell_tasks(node: Node) -> None:
    slow = submit(node, [shell("sleep 60", name="slow")])
    hog = submit(node, [shell("python3 -c 'x = bytearray(3 << 30)'", name="hog")])
    v = await wait(node, slow)
    assert v["state"] == "failed" and "timed out" in v["tasks"][0]["error"], v
    v = await wait(node, hog)
    assert v["state"] == "failed" and "MemoryError" in v["tasks"][0]["error"], v


def _processes_with(marker: str) -> list[int]:
    out = []
    for pid in os.listdir("/proc"):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if pid.isdigit() and marker.encode() in cmd:
            out.append(int(pid))
    return out


async def test_cancel_kills_the_whole_process_group(node: Node) -> None:
    marker = f"banzai-cancel-{uuid.uuid4().hex[:8]}"
    # a child of the shell and a grandchild in the background: both must end
    job = submit(node, [shell(f"(sleep 3600; echo {marker}) & sh -c 'sleep 3600; : {marker}'")])
    await until(lambda: len(_processes_with(marker)) >= 2, "the command never started")
    node.emit(EventType.JOB_CANCELLED, {"job": job, "reason": "test"})
    await until(lambda: not _processes_with(marker), "processes outlived the cancel")
    assert (await wait(node, job))["state"] == "cancelled"


async def test_the_log_is_bounded_with_a_note(node: Node) -> None:
    job = submit(node, [shell("i=0; while [ $i -lt 2000 ]; do echo line-$i; i=$((i+1)); done")])
    assert (await wait(node, job))["state"] == "done"
    log = node.scheduler.logs[(job, "sh")]
    assert "line-0" in log and "line-1999" not in log
    assert sum(len(x) + 1 for x in log[:-1]) <= 4096
    assert "log truncated" in log[-1]


async def test_secrets_reach_the_command_and_nothing_else(node: Node) -> None:
    job = submit(node, [shell("echo \"token=$TOKEN\"; echo \"$TOKEN\" >&2; printf %s \"$TOKEN\""
                              " > {out}/t", env={"TOKEN": {"secret": "API_TOKEN"}})])
    v = await wait(node, job)
    assert v["state"] == "done", v
    assert cat(node, v["outputs"]["sh"], "t") == SECRET  # the process had it
    assert "token=***" in node.scheduler.logs[(job, "sh")]
    failing = submit(node, [shell("echo \"$TOKEN\" >&2; exit 1",
                                  env={"TOKEN": {"secret": "API_TOKEN"}})])
    v2 = await wait(node, failing)
    assert v2["state"] == "failed" and "***" in v2["tasks"][0]["error"]
    events = json.dumps([e.payload for e in node.state.events.values()])
    assert SECRET not in events  # not in the log (workflow, errors, keys)
    assert SECRET not in json.dumps([v, v2, list(node.scheduler.logs[(job, "sh")])])  # not in views
    stored = task_done(node, job, "sh")
    logs = [e.payload["log"] for x in node.state.events.values() for e in x.singles
            if e.type == EventType.CHUNK_DONE and e.payload["job"] == job]
    assert SECRET not in b"".join(node.store.cat(logs[0])).decode()  # the stored task log
    assert stored["key"] is not None


async def test_a_shell_task_cannot_read_what_makes_its_peer_a_member(node: Node) -> None:
    """Review r1 of session 48, F1: any user of any peer submits shell tasks, which run on
    every --allow-shell peer as its account. Confined (bwrap), the command sees none of the
    data dir but its own run dir, not the task secrets file, and no process of the peer's:
    its mesh secret, identity key, HTTP token and command line stay out of its reach."""
    if node.shell_box is None:
        pytest.skip(f"shell tasks run unconfined here: {node.shell_unconfined} "
                    "(scripts/setup.sh installs bubblewrap)")
    d = node.cfg.data_dir
    secrets = node.cfg.task_secrets_file
    assert secrets is not None and (d / "mesh.secret").is_file() and (d / "identity.key").is_file()
    peer_pid = os.getpid()  # (this Node runs in the test's process)
    job = submit(node, [shell(
        f"for f in {d}/mesh.secret {d}/identity.key {secrets} /proc/{peer_pid}/cmdline; do"
        f" if cat \"$f\" > /dev/null 2>&1; then echo \"read $f\"; fi; done > {{out}}/read;"
        f" ls -a {d} > {{out}}/listing; ls /proc | grep -c '^[0-9]' > {{out}}/pids;"
        f" pwd > {{out}}/cwd", cache=False)])
    v = await wait(node, job)
    assert v["state"] == "done", v
    out = v["outputs"]["sh"]
    assert cat(node, out, "read") == ""  # nothing of the four could be read
    assert cat(node, out, "listing").split() == [".", "..", "work"]  # its own run dir only
    assert int(cat(node, out, "pids")) < 10  # its own processes, not the machine's
    assert Path(cat(node, out, "cwd").strip()).is_relative_to(d / "work")
    assert node.shell_confinement() == "confined"  # (/api/health's `shell`)


async def test_a_secret_the_peer_lacks_fails_the_task_by_name(node: Node) -> None:
    v = await wait(node, submit(node, [shell("true", env={"T": {"secret": "NOPE"}})]))
    assert v["state"] == "failed" and "no secret 'NOPE'" in v["tasks"][0]["error"], v


async def test_cache_covers_the_command_and_env_and_can_be_turned_off(node: Node) -> None:
    cmd = "date +%s%N > {out}/t"
    first = submit(node, [shell(cmd, env={"A": "1"})])
    assert (await wait(node, first))["state"] == "done"
    again = submit(node, [shell(cmd, env={"A": "1"})])
    assert (await wait(node, again))["state"] == "done"
    assert task_done(node, again, "sh")["cached"] is True
    assert task_done(node, again, "sh")["output"] == task_done(node, first, "sh")["output"]
    other_env = submit(node, [shell(cmd, env={"A": "2"})])
    assert (await wait(node, other_env))["state"] == "done"
    assert task_done(node, other_env, "sh")["cached"] is False
    fresh = submit(node, [shell(cmd, env={"A": "1"}, cache=False)])
    assert (await wait(node, fresh))["state"] == "done"
    done = task_done(node, fresh, "sh")
    assert done["cached"] is False and done["key"] is None  # never put into the cache either
    assert done["output"] != task_done(node, first, "sh")["output"]


async def test_only_peers_that_allow_shell_announce_and_run_it(
        node: Node, tmp_path: Path) -> None:
    assert "shell" in node.capabilities()["kinds"] and "shell" in node.capabilities()["calls"]
    plain = Node(_cfg(tmp_path / "plain"))
    await plain.start()
    try:
        caps = plain.capabilities()
        assert "shell" not in caps["kinds"] and "shell" not in caps["calls"]
        job = submit(plain, [shell("true")])  # accepted: another peer may run it
        await until(lambda: (job, "sh") in plain.scheduler.waiting(), "no reason shown")
        assert "no live peer runs shell tasks" in plain.scheduler.waiting()[(job, "sh")]
        assert "--allow-shell" in plain.scheduler.waiting()[(job, "sh")]
        assert job_view(plain.state, job, 1)["state"] not in FINAL
        assert plain.scheduler.executions == 0
    finally:
        await plain.close()


# -- api tasks against a real service -------------------------------------------------------
class Service:
    """The protocol of docs/executors.md; `mode` (the first path segment) picks a behaviour:
    ok, flaky (each PUT fails once with 503), e500, garbage, never (runs forever)."""

    def __init__(self) -> None:
        self.inputs: dict[str, dict[str, bytes]] = {}
        self.posts: dict[str, int] = {}
        self.puts: dict[tuple[str, str], int] = {}
        self.polls = 0
        self.runs: dict[str, dict[str, Any]] = {}

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_put("/{mode}/in/{path:.+}", self.put)
        app.router.add_post("/{mode}/run", self.run)
        app.router.add_get("/{mode}/status/{id}", self.status)
        app.router.add_get("/{mode}/status/{id}/result", self.result)
        app.router.add_get("/{mode}/status/{id}/out/{path:.+}", self.file)
        return app

    async def put(self, r: web.Request) -> web.Response:
        mode, path = r.match_info["mode"], r.match_info["path"]
        self.puts[mode, path] = self.puts.get((mode, path), 0) + 1
        if mode == "flaky" and self.puts[mode, path] == 1:
            return web.Response(status=503, text="busy")
        self.inputs.setdefault(mode, {})[path] = await r.read()
        return web.Response(status=204)

    async def run(self, r: web.Request) -> web.Response:
        mode = r.match_info["mode"]
        self.posts[mode] = self.posts.get(mode, 0) + 1
        if mode == "e500":
            return web.Response(status=500, text="kaboom")
        rid = uuid.uuid4().hex[:8]
        self.runs[rid] = {"params": await r.json(), "polls": 0}
        return web.json_response({"accepted": True}, status=202,
                                 headers={"Location": f"status/{rid}"})

    async def status(self, r: web.Request) -> web.Response:
        mode, run = r.match_info["mode"], self.runs[r.match_info["id"]]
        run["polls"] += 1
        if mode == "garbage":
            return web.Response(text="<html>oops</html>")
        if mode == "never" or run["polls"] < 3:
            return web.json_response({"state": "running", "progress": 0.5})
        return web.json_response({"state": "done"})

    async def result(self, r: web.Request) -> web.Response:
        mode, run = r.match_info["mode"], self.runs[r.match_info["id"]]
        files = self.inputs.get(mode, {})
        return web.json_response({"files": ["summary/count.txt"], "params": run["params"],
                                  "inputs": sorted(files)})

    async def file(self, r: web.Request) -> web.Response:
        files = self.inputs.get(r.match_info["mode"], {})
        total = sum(len(v) for v in files.values())
        return web.Response(text=f"{len(files)} files, {total} bytes\n")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def service() -> AsyncIterator[tuple[Service, str]]:
    svc = Service()
    runner = web.AppRunner(svc.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield svc, f"http://127.0.0.1:{port}"
    await runner.cleanup()


def api(url: str, **kw: Any) -> dict[str, Any]:
    return {"name": kw.pop("name", "svc"), "kind": "api", "url": url, **kw}


async def test_api_task_puts_inputs_posts_params_and_fetches_results(
        node: Node, service: tuple[Service, str]) -> None:
    svc, base = service
    for mode in ("ok", "flaky"):  # flaky: every PUT is refused once and retried
        job = submit(node, {"tasks": [
            {"name": "w", "call": "T_WRITE", "args": [3, mode]},
            api(f"{base}/{mode}", params={"threshold": 5}, depends=["w"])]})
        v = await wait(node, job)
        assert v["state"] == "done", v
        out = v["outputs"]["svc"]
        result = json.loads(cat(node, out, "result.json"))
        assert result["params"] == {"threshold": 5}
        assert result["inputs"] == ["f0000.txt", "f0001.txt", "f0002.txt"]
        size = sum(len(f"file {i} {mode}\n") for i in range(3))
        assert cat(node, out, "summary/count.txt") == f"3 files, {size} bytes\n"
    assert svc.posts["ok"] == svc.posts["flaky"] == 1
    assert [svc.puts["ok", f"f000{i}.txt"] for i in range(3)] == [1, 1, 1]
    assert [svc.puts["flaky", f"f000{i}.txt"] for i in range(3)] == [2, 2, 2]


async def test_api_errors_fail_the_task_clearly(node: Node, service: tuple[Service, str]
                                                ) -> None:
    svc, base = service
    jobs = {m: submit(node, [api(f"{base}/{m}", name=m)]) for m in ("e500", "garbage", "never")}
    refused = submit(node, [api("http://10.255.255.1:9/x", name="private")])
    errors = {m: (await wait(node, j))["tasks"][0]["error"] for m, j in jobs.items()}
    assert "POST" in errors["e500"] and "answered 500: kaboom" in errors["e500"]
    assert svc.posts["e500"] == 1  # a POST is not idempotent: never retried
    assert "answered garbage, not JSON" in errors["garbage"]
    assert "timed out" in errors["never"]
    err = (await wait(node, refused))["tasks"][0]["error"]
    assert "private" in err and "--fetch-allow" in err, err


# -- container tasks with podman -------------------------------------------------------------
needs_podman = pytest.mark.skipif(NO_PODMAN is not None, reason=f"podman: {NO_PODMAN}")


def containers_of(node: Node) -> list[str]:
    r = subprocess.run(["podman", "ps", "-aq", "--filter", f"label={OWNER_LABEL}={node.peer_id}"],
                       capture_output=True, text=True, timeout=60, check=True)
    return r.stdout.split()


def box(command: str, **kw: Any) -> dict[str, Any]:
    return {"name": kw.pop("name", "box"), "image": IMAGE, "command": command, **kw}


@needs_podman
async def test_container_task_runs_with_in_out_env_stdin_and_no_network(node: Node) -> None:
    caps = node.capabilities()
    assert "container" in caps["kinds"] and caps["images"][IMAGE].startswith("sha256:")
    pipeline = {"tasks": [
        {"name": "w", "call": "T_WRITE", "args": [3, "box"]},
        box("cat /in/*.txt | wc -l > /out/lines; cat > /out/stdin; echo $GREETING;"
            " ls /sys/class/net > /out/net; touch /in/x 2>/dev/null || echo ro > /out/ro",
            env={"GREETING": "hello-box"}, stdin="abc", depends=["w"])]}
    job = submit(node, pipeline)
    v = await wait(node, job)
    assert v["state"] == "done", v
    out = v["outputs"]["box"]
    assert cat(node, out, "lines").strip() == "3"
    assert cat(node, out, "stdin") == "abc"
    assert cat(node, out, "net").split() == ["lo"]  # --network none
    assert cat(node, out, "ro").strip() == "ro"  # /in is read-only
    assert "hello-box" in node.scheduler.logs[(job, "box")]
    image = node.scheduler.workflow(job).task("box").params["image"]
    assert image == f"{IMAGE}@{caps['images'][IMAGE]}"  # resolved to one digest at submission
    again = submit(node, pipeline)
    assert (await wait(node, again))["state"] == "done"
    assert task_done(node, again, "box")["cached"] is True
    assert not containers_of(node)  # --rm


@needs_podman
async def test_container_bad_input_fails_clearly(node: Node) -> None:
    with pytest.raises(SpecError) as err:
        submit(node, [box("true", image="localhost/no-such-image:1")])
    assert err.value.field == "tasks[0].image" and "held by no peer" in err.value.message
    fail = submit(node, [box("echo broken >&2; exit 4", name="fail")])
    hog = submit(node, [box("dd if=/dev/zero of=/dev/null bs=100M count=1", name="hog",
                            mem_mb=32)])
    err1 = (await wait(node, fail))["tasks"][0]["error"]
    assert "exited with status 4" in err1 and "broken" in err1, err1
    err2 = (await wait(node, hog))["tasks"][0]["error"]
    assert "status 137" in err2 and "out of memory" in err2, err2


@needs_podman
async def test_container_is_removed_on_cancel_and_timeout(node: Node) -> None:
    job = submit(node, [box("sleep 3600", name="long")])
    await until(lambda: containers_of(node), "the container never started")
    node.emit(EventType.JOB_CANCELLED, {"job": job, "reason": "test"})
    await until(lambda: not containers_of(node), "the container outlived the cancel")
    assert (await wait(node, job))["state"] == "cancelled"
    slow = submit(node, [box("sleep 60", name="slow")])  # the task timeout is 3 s
    v = await wait(node, slow)
    assert v["state"] == "failed" and "timed out" in v["tasks"][0]["error"]
    await until(lambda: not containers_of(node), "the container outlived the timeout")


@needs_podman
async def test_leftover_containers_are_swept_at_start() -> None:
    owner = f"sweep-{uuid.uuid4().hex[:8]}"
    subprocess.run(["podman", "run", "-d", "--network", "none", "--label",
                    f"{OWNER_LABEL}={owner}", IMAGE, "sleep", "3600"],
                   capture_output=True, timeout=60, check=True)
    images = await asyncio.to_thread(kinds.start_containers, "podman", owner)
    assert images is not None and IMAGE in images
    r = subprocess.run(["podman", "ps", "-aq", "--filter", f"label={OWNER_LABEL}={owner}"],
                       capture_output=True, text=True, timeout=60, check=True)
    assert r.stdout.split() == []


@needs_podman
@pytest.mark.skipif(shutil.which("unshare") is None, reason="no unshare (util-linux)")
@pytest.mark.parametrize(("asked", "allowed", "interfaces"), [
    (True, True, ["eth0", "lo"]), (True, False, ["lo"]), (False, True, ["lo"])])
async def test_network_only_when_asked_and_allowed_in_a_namespace_of_its_own(
        asked: bool, allowed: bool, interfaces: list[str]) -> None:
    # podman's bridge (and its firewall rules) is made inside a network namespace this test
    # creates: nothing is added to the machine's own network
    probe = ["unshare", "--net", "--fork", "sh", "-c",
             'ip link set lo up 2>/dev/null; exec "$@"', "sh", sys.executable, "-m",
             "tests.integration.container_net_probe", IMAGE, str(int(asked)), str(int(allowed))]
    r = await asyncio.to_thread(subprocess.run, probe, capture_output=True, text=True,
                                timeout=120, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == interfaces
