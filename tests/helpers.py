"""Helpers shared by the tests: JSON over HTTP with timeouts, waiting for jobs and meshes,
peers whose output pumps are joined, the seed-pipeline corpus, throw-away Kubo repos and a
task context for calling task functions directly."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import (
    AsyncIterator,
    Callable,
    Collection,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import pytest

from peer.errors import NotFound
from peer.jobs.sim import JobMesh
from peer.log import Event, EventType
from scripts.scriptlib import TaskCtx as FakeCtx
from scripts.scriptlib import auth_headers, load_script, lone_peer
from tests.conftest import ROOT, PeerProc, start_peer

__all__ = ["FINAL", "FakeCtx", "JsonApi", "LocalUser", "auth_headers", "get_json",
           "init_kubo_repo", "kubo_binary", "launch", "load_script", "local_user", "lone_peer",
           "multipart", "post_json", "self_signed", "serve_corpus", "stop", "wait_job",
           "wait_mesh"]

FINAL = ("done", "failed", "cancelled")


class _Closable(Protocol):
    async def close(self) -> None: ...


class _Feedable(Protocol):
    def feed(self, chunk: bytes) -> None: ...


_Closes = TypeVar("_Closes", bound=_Closable)
_Spool = TypeVar("_Spool", bound=_Feedable)


# -- JSON over HTTP ----------------------------------------------------------------------
def multipart(files: dict[str, bytes]) -> tuple[bytes, dict[str, str]]:
    """A multipart body with file names verbatim (as curl -F sends them)."""
    boundary = "----banzai" + uuid.uuid4().hex
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
             f'filename="{rel}"\r\nContent-Type: application/octet-stream\r\n\r\n'
             .encode() + content + b"\r\n" for rel, content in files.items()]
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def get_json(url: str, timeout: float = 10) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read())


def post_json(url: str, body: Any = None, timeout: float = 30) -> Any:
    data = json.dumps(body).encode() if body is not None else b""
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())


def wait_mesh(peers: list[PeerProc], n: int, timeout_s: float = 30) -> None:
    """Until every peer sees n alive peers (itself included)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        alive = [sum(1 for p in get_json(x.url + "/api/peers")["peers"] if p["state"] == "alive")
                 for x in peers]
        if min(alive) >= n:
            return
        time.sleep(0.2)
    raise AssertionError(f"mesh did not form: alive counts {alive}")


def wait_job(peer: PeerProc, job: str, timeout_s: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        v: dict[str, Any] = get_json(f"{peer.url}/api/jobs/{job}")
        if v["state"] in FINAL:
            return v
        time.sleep(0.1)
    raise AssertionError(f"job {job} not finished on {peer.url}")


@dataclass(frozen=True)
class JsonApi:
    """A peer's REST API that answers errors too: `timeout` per request, `job_timeout_s` for
    `wait` unless it is given one."""

    timeout: float = 30
    job_timeout_s: float = 30

    def http(self, method: str, url: str, data: bytes | None = None,
             headers: dict[str, str] | None = None, timeout: float | None = None,
             ) -> tuple[int, dict[str, str], bytes]:
        req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
        timeout = self.timeout if timeout is None else timeout
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, dict(r.headers), r.read()
        except urllib.error.HTTPError as e:
            with e:  # the error holds the response: close it (ResourceWarning otherwise)
                return e.code, dict(e.headers), e.read()

    def api(self, method: str, url: str, body: Any = None, **kw: Any) -> tuple[int, Any]:
        data = body if body is None or isinstance(body, bytes) else json.dumps(body).encode()
        status, headers, raw = self.http(method, url, data, **kw)
        assert headers.get("Content-Type", "").startswith("application/json"), (status, raw[:300])
        return status, json.loads(raw)

    def submit(self, url: str, pipeline: Any) -> str:
        status, body = self.api("POST", f"{url}/api/jobs", pipeline)
        assert status == 201, body
        return str(body["job"])

    def wait(self, url: str, job: str, states: tuple[str, ...] = FINAL,
             timeout_s: float | None = None) -> dict[str, Any]:
        deadline = time.monotonic() + (self.job_timeout_s if timeout_s is None else timeout_s)
        while True:
            status, view = self.api("GET", f"{url}/api/jobs/{job}")
            assert status == 200, view
            if view["state"] in states:
                return dict(view)
            assert time.monotonic() < deadline, f"job {job} stuck: {view}"
            time.sleep(0.05)

    def cat(self, url: str, cid: str, path: str = "") -> bytes:
        status, _, body = self.http("GET", f"{url}/ipfs/{cid}{path}")
        assert status == 200, body[:200]
        return body


# -- peers whose output pumps are joined -------------------------------------------------
_PUMPS: dict[int, list[threading.Thread]] = {}


def until(fn: Any, timeout_s: float = 60) -> Any:
    """fn()'s first truthy value, polled every 0.2 s; AssertionError after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        v = fn()
        if v:
            return v
        time.sleep(0.2)
    raise AssertionError(f"not within {timeout_s} s")


# -- test bodies shared by unit tests (session 52: `duplicates` listed them in several) ----


@asynccontextmanager
async def closing(mesh: _Closes) -> AsyncIterator[_Closes]:
    """`mesh` (a simulated mesh: peer.jobs.sim.JobMesh), closed on the way out whatever
    happens (`async with closing(JobMesh(...)) as mesh:` for try/finally mesh.close())."""
    try:
        yield mesh
    finally:
        await mesh.close()


@asynccontextmanager
async def meshes(catalog: Any, cfg: Any, **defaults: Any
                 ) -> AsyncIterator[Callable[..., JobMesh]]:
    """A maker of simulated meshes (`make(n=2, cfg=cfg, **kw)`: a JobMesh of `n` peers on
    `catalog`, `defaults` under `kw`), each closed on the way out (a fixture's body)."""
    made: list[JobMesh] = []

    def make(n: int = 2, cfg: Any = cfg, **kw: Any) -> JobMesh:
        mesh = JobMesh(n, catalog, cfg, **{**defaults, **kw})
        made.append(mesh)
        return mesh

    try:
        yield make
    finally:
        for m in made:
            await m.close()


def spooled(make: Callable[[io.BytesIO], _Spool], body: bytes,
            cuts: Iterable[int] | None = None) -> tuple[_Spool, io.BytesIO]:
    """(a snapshot spool `make(out)` fed `body` cut at `cuts` (any order; repeats and cuts
    past the end are fine), the rest last; `out`, what it wrote)."""
    out = io.BytesIO()
    spool = make(out)
    at = 0
    for c in sorted(cuts or []):
        spool.feed(body[at:c])
        at = max(at, c)
    spool.feed(body[at:])
    return spool, out


class _NoStats:
    def as_dict(self) -> dict[str, int]:
        return {}


class RecordingGossip:
    """What a Node and /api/health use of gossip, faked: no peer is live, and the frames
    pushed are recorded (`frames`)."""

    address = "127.0.0.1:1"
    stats = _NoStats()

    def __init__(self) -> None:
        self.frames: list[list[Event]] = []

    def broadcast(self, events: Sequence[Event]) -> None:
        self.frames.append(list(events))

    def live_peers(self) -> dict[str, Any]:
        return {}

    async def close(self) -> None:
        return None


class ReplicaFakes:
    """What a `peer.ipfs.replicate.Replicator` is given as its store, fetcher and emitter,
    faked: the CIDs fetched (each in `flaky` fails once, NotFound), pinned and the events
    emitted (by `me`, seqs from 1)."""

    def __init__(self, flaky: Sequence[str] = (), me: str = "me") -> None:
        self.me = me
        self.fetched: list[str] = []
        self.pinned: list[str] = []
        self.emitted: list[tuple[EventType, dict[str, Any]]] = []
        self.flaky = set(flaky)

    async def ensure(self, cids: Sequence[str], hints: Sequence[str] = ()) -> None:
        self.fetched += [c for c in cids if c not in self.flaky]
        if failed := self.flaky & set(cids):
            self.flaky -= failed
            raise NotFound(f"no live peer could provide {sorted(failed)}")

    def is_complete(self, cid: str) -> bool:
        return cid in self.fetched

    def pin(self, cid: str) -> None:
        self.pinned.append(cid)

    def pin_many(self, cids: Sequence[str]) -> None:
        self.pinned.extend(cids)

    def emit(self, typ: EventType, payload: dict[str, Any]) -> Event:
        self.emitted.append((typ, payload))
        return Event(self.me, len(self.emitted), 0, typ, payload)


def launch(data: Path, *flags: str, env: dict[str, str] | None = None,
           fresh_log: bool = False) -> PeerProc:
    """start_peer, remembering the thread that pumps this peer's output. `fresh_log` moves a
    previous run's log aside first (else a restart appends to it)."""
    log = data.with_name(data.name + ".log")
    if fresh_log and log.exists():
        log.rename(log.with_name(f"{log.name}.{time.monotonic_ns()}"))
    before = set(threading.enumerate())
    p = start_peer(data, *flags, env=env)
    _PUMPS[id(p)] = [t for t in threading.enumerate()
                     if t not in before and t.name.endswith("(pump)")]
    return p


def stop(*peers: PeerProc) -> None:
    """Kill the peers, let their output pumps reach EOF, then close the pipes."""
    for p in peers:
        p.kill()
    for p in peers:
        for t in _PUMPS.pop(id(p), []):
            t.join(5)
        if p.proc.stdout is not None:
            p.proc.stdout.close()


# -- the seed pipeline's corpus ----------------------------------------------------------
@contextmanager
def serve_corpus(corpus: Path, speakers: Sequence[str], utterances: int) -> Iterator[str]:
    """Build (or reuse) the espeak-ng ARCTIC corpus in `corpus` and serve it on 127.0.0.1;
    yields the base URL (ends with /). Skips the test when it cannot be built."""
    mc = load_script("make_corpus")
    zips = [corpus / mc.zip_name(s) for s in speakers]
    if shutil.which("espeak-ng") is not None:
        mc.build_corpus(corpus, list(speakers), utterances, seed=0)  # reused when up to date
    elif not all(z.exists() for z in zips):
        pytest.skip("needs espeak-ng (scripts/setup.sh --test) to build the test corpus")
    with load_script("serve_dir").serve(corpus) as url:
        yield url


# -- Kubo --------------------------------------------------------------------------------
KUBO_LOOPBACK = {  # a throw-away repo that listens on 127.0.0.1 only and dials nobody
    "Addresses.API": '"/ip4/127.0.0.1/tcp/0"',
    "Addresses.Gateway": '"/ip4/127.0.0.1/tcp/0"',
    "Addresses.Swarm": "[]",
    "Bootstrap": "[]",
    "Discovery.MDNS.Enabled": "false",
}


def kubo_binary() -> str | None:
    """.cache/kubo/bin/ipfs (scripts/install-kubo.sh), else `ipfs` on PATH, else None."""
    local = ROOT / ".cache" / "kubo" / "bin" / "ipfs"
    if local.is_file() and os.access(local, os.X_OK):
        return str(local)
    return shutil.which("ipfs")


def init_kubo_repo(binary: str, repo: Path, *config_flags: str,
                   config_timeout: float = 60, profile: str = "test") -> dict[str, str]:
    """`ipfs init --profile=PROFILE` in `repo`, configured by KUBO_LOOPBACK (`ipfs
    *config_flags config ...`); returns the environment that points `ipfs` at it."""
    env = {**os.environ, "IPFS_PATH": str(repo)}
    subprocess.run([binary, "init", f"--profile={profile}", "-e"], env=env, check=True,
                   capture_output=True, timeout=120)  # fmt: skip
    for key, value in KUBO_LOOPBACK.items():
        subprocess.run([binary, *config_flags, "config", "--json", key, value], env=env,
                       check=True, capture_output=True, timeout=config_timeout)  # fmt: skip
    return env


# -- a second local user -----------------------------------------------------------------
@dataclass(frozen=True)
class LocalUser:
    """A throw-away unprivileged user with a home directory."""

    name: str
    uid: int
    gid: int
    home: Path

    def run(self, *cmd: str, env: dict[str, str] | None = None, timeout: float = 30,
            ) -> subprocess.CompletedProcess[bytes]:
        """`cmd` as this user (setpriv: no root privileges, its own groups), output captured."""
        return subprocess.run(self.wrap(*cmd), env=env, capture_output=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)

    def wrap(self, *cmd: str) -> list[str]:
        return ["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", "--init-groups",
                "--inh-caps=-all", "--", *cmd]

    def sandbox(self, *cmd: str, setup: Sequence[str] = (), scratch: Path) -> list[str]:
        """`cmd` as this user in a mount namespace of its own, after the shell lines `setup`
        (run as root there), with this interpreter reachable (`reach_python`)."""
        script = "\n".join(["set -e", "mount --make-rprivate /", *reach_python(scratch),
                            *setup, 'exec "$@"'])
        return ["unshare", "--mount", "sh", "-c", script, "sandbox", *self.wrap(*cmd)]


def reach_python(scratch: Path) -> list[str]:
    """Shell lines for a mount namespace that let other users run this interpreter when it
    lives under a directory only root may enter (here: pyenv in /root): that directory is
    replaced there by an empty tmpfs holding only the interpreter's tree. `scratch`: an
    empty directory to stage the bind mount."""
    real = Path(os.path.realpath(sys.executable))
    closed = next((d for d in reversed(real.parents) if not os.stat(d).st_mode & 0o001), None)
    if closed is None:
        return []
    keep = real.parents[len(real.parents) - len(closed.parents) - 2]  # the child on the path
    return [f"mount --bind {keep} {scratch}", f"mount -t tmpfs -o mode=0755 tmpfs {closed}",
            f"mkdir -p {keep}", f"mount --bind {scratch} {keep}"]


@contextmanager
def local_user(prefix: str = "bzt") -> Iterator[LocalUser]:
    """A new user (useradd; removed with its home after); skips unless root with useradd."""
    if os.geteuid() != 0 or shutil.which("useradd") is None or shutil.which("setpriv") is None:
        pytest.skip("needs root, useradd and setpriv to create a second local user")
    import pwd

    name = f"{prefix}{os.getpid() % 100000}{uuid.uuid4().hex[:4]}"
    subprocess.run(["useradd", "--create-home", "--shell", "/usr/sbin/nologin", name],
                   check=True, capture_output=True, timeout=30)
    try:
        pw = pwd.getpwnam(name)
        yield LocalUser(name, pw.pw_uid, pw.pw_gid, Path(pw.pw_dir))
    finally:
        subprocess.run(["userdel", "--remove", name], capture_output=True, timeout=30)


def logged_events(db_path: Path, types: Sequence[int]) -> list[tuple[int, int, dict[str, Any]]]:
    """(hlc, type, payload) of the events of `types` that a peer's log holds (read-only),
    with each TURN (one peer's events of one loop turn) opened into its parts."""
    import sqlite3

    from peer.log import EventType
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=5)
    try:
        rows = db.execute("SELECT hlc, type, payload FROM events").fetchall()
    finally:
        db.close()
    out = []
    for hlc, typ, payload in rows:
        p = json.loads(payload)
        parts = p.get("parts", []) if typ == EventType.TURN else [[typ, p]]
        out.extend((int(hlc), int(t), q) for t, q in parts if t in types)
    return out


def event_heads(db_path: Path) -> dict[str, tuple[int, int]]:
    """origin -> (number of events, highest seq) in a peer's SQLite event log (read-only; the
    API does not expose the version vector)."""
    import sqlite3

    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=5)
    try:
        rows = db.execute("SELECT origin, COUNT(*), MAX(seq) FROM events GROUP BY origin")
        return {o: (n, s) for o, n, s in rows}
    finally:
        db.close()


def lanes_members(db_path: Path) -> dict[str, set[str]]:
    """Lanes job -> its members (its JOB_SUBMITTED's `members`, every JOB_MEMBERS's `add`) as
    a peer's log holds them (read-only); a job held in full by every peer is absent."""
    from peer.log import EventType

    out: dict[str, set[str]] = {}
    for _, typ, d in logged_events(db_path, (EventType.JOB_SUBMITTED, EventType.JOB_MEMBERS)):
        names = d.get("members" if typ == EventType.JOB_SUBMITTED else "add")
        if names:
            out.setdefault(d["job"], set()).update(names)
    return out


def lanes_held_alike(heads: Sequence[Mapping[str, tuple[int, int]]], ids: Sequence[str],
                     members: Mapping[str, Collection[str]]) -> bool:
    """Of each lanes job, do its members hold the same lanes with the same heads (`heads`:
    each peer's `event_heads`, of the peer of `ids` at the same place; `members`:
    `lanes_members`), and no other peer any (docs/design/partial-replication.md, section
    3)?"""
    from peer.log.lanes import lane_of

    by_job: dict[str, list[dict[str, tuple[int, int]]]] = {}  # job -> each peer's lanes of it
    for k, hs in enumerate(heads):
        for o, h in hs.items():
            if (lane := lane_of(o)) is not None:
                by_job.setdefault(lane[1], [{} for _ in heads])[k][o] = h
    for job, lanes in by_job.items():
        want = members.get(job, set())
        if any(lane for i, lane in zip(ids, lanes, strict=True) if i not in want):
            return False  # (a non-member holds a lane of it)
        held = [lane for i, lane in zip(ids, lanes, strict=True) if i in want]
        if not held or any(lane != held[0] for lane in held):
            return False
    return True


# -- TLS -------------------------------------------------------------------------------------
def self_signed(tmp: Path) -> tuple[Path, Path]:
    """A fresh self-signed certificate for 127.0.0.1 and its key (0600), written in `tmp`."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    return cert_path, key_path


def car_form(blocks: Sequence[tuple[Any, bytes]], root: Any) -> tuple[bytes, dict[str, str]]:
    """A CAR of `blocks` under `root` as the multipart form POST /api/v0/dag/import takes:
    (body, headers)."""
    from peer.ipfs import car

    data = car.frame(car.encode_header([root])) + b"".join(
        car.block_section(c, b) for c, b in blocks)
    boundary = "b" + uuid.uuid4().hex
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="x.car"\r\n'
            "Content-Type: application/vnd.ipld.car\r\n\r\n").encode() + data + \
        f"\r\n--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}
