"""Shared fixtures: factories for real banzai-peer processes on loopback. Every urllib
request of the tests to a started peer carries its token (scripts/scriptlib.remember_peer);
other clients take `PeerProc.auth`."""

from __future__ import annotations

import atexit
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import settings

from scripts.scriptlib import peer_token, remember_peer

# No timed assertions: hypothesis's default 200 ms deadline per example failed a property
# test (720 folds an example) on a loaded 2-core machine; a slow example is a benchmark's
# business. A test's own @settings still sets its examples.
settings.register_profile("banzai", deadline=None)
settings.load_profile("banzai")

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


@dataclass
class PeerProc:
    """A running banzai-peer process; `url` is its HTTP base, its output goes to `log`."""

    proc: subprocess.Popen[bytes]
    url: str
    data_dir: Path
    args: list[str]
    env: dict[str, str]
    log: Path

    @property
    def token(self) -> str:
        """The peer's HTTP token (file http-token in its data dir)."""
        return peer_token(self.data_dir)

    @property
    def login_url(self) -> str:
        return f"{self.url}/login?token={self.token}"

    @property
    def auth(self) -> dict[str, str]:
        """Headers that authenticate a request to this peer (aiohttp, requests)."""
        return {"Authorization": f"Bearer {self.token}"}

    @property
    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        stop_peers([self], sig)


def stop_peers(peers: Iterable[PeerProc], sig: int = signal.SIGTERM) -> None:
    """`PeerProc.kill(sig)` of every peer, the signals sent first: the peers shut down at
    the same time, not one after another. Before, each live peer's /api/health is read:
    a listener's exception there (`log.listener_errors`, logged and swallowed by the peer:
    Node._tell) fails the caller once the peers are stopped (session 48). A peer that does
    not answer within 3 s is not read."""
    live = [p for p in peers if p.proc.poll() is None]
    failing = _listener_errors(live)
    for p in live:
        p.proc.send_signal(sig)
    for p in live:
        try:
            p.proc.wait(15)
        except subprocess.TimeoutExpired:
            p.proc.kill()
            p.proc.wait(5)
    if failing:
        raise AssertionError(
            "a listener raised in a peer (its log has the traceback): log.listener_errors "
            + ", ".join(f"{p.log.name}: {n}" for p, n in failing))


def _listener_errors(peers: Iterable[PeerProc]) -> list[tuple[PeerProc, int]]:
    """The peers whose /api/health counts a listener's exception, with the count."""
    out: list[tuple[PeerProc, int]] = []
    for p in peers:
        try:
            try:
                with urllib.request.urlopen(f"{p.url}/api/health", timeout=3) as r:
                    body = json.load(r)
            except urllib.error.HTTPError as e:  # (503: unhealthy, the same body: read it)
                with e:
                    body = json.load(e)
            n = body.get("log", {}).get("listener_errors", 0)
        except (OSError, ValueError, AttributeError):
            continue  # (hung, stopped, TLS of its own, or an older release's answer)
        if n:
            out.append((p, n))
    return out


# Peers of one test run share a mesh name no other run (or concurrent test) uses.
MESH = f"test-{uuid.uuid4().hex[:12]}"


_SECRETS = Path(tempfile.mkdtemp(prefix="banzai-test-secrets-"))
atexit.register(shutil.rmtree, _SECRETS, ignore_errors=True)


_SECRETS_LOCK = threading.Lock()  # peers of one mesh may be started from several threads


def mesh_secret_file(mesh: str) -> Path:
    """The secret file every peer of mesh `mesh` starts with (made once, mode 0600)."""
    path = _SECRETS / f"{mesh}.secret"
    with _SECRETS_LOCK:
        if path.exists():
            return path
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(32) + "\n")
    return path


def _names_secret(extra: tuple[str, ...], env: dict[str, str] | None) -> bool:
    return (any(a.startswith(("--secret-file", "--join-token")) for a in extra)
            or any(k in (env or {}) for k in ("BANZAI_SECRET_FILE", "BANZAI_JOIN_TOKEN")))


# A peer starts in seconds; on a machine saturated by other work it can take a minute.
START_TIMEOUT_S = float(os.environ.get("BANZAI_TEST_START_TIMEOUT_S", "60"))


def start_peer(data_dir: Path, *extra: str, env: dict[str, str] | None = None,
               http: str = "127.0.0.1:0", timeout_s: float = START_TIMEOUT_S,
               mesh: str | None = None, shared_secret: bool = True,
               wrap: Sequence[str] = (), cwd: Path = ROOT) -> PeerProc:
    """Start banzai-peer and wait until it prints its URL. mDNS stays on loopback. Peers of
    one mesh name share a secret file (`shared_secret`) unless the flags or `env` name a
    secret or a join token. `wrap`: a command that execs the peer's (its arguments follow),
    e.g. one that makes a mount namespace first. `cwd`: the peer's working directory, which
    its workers import from first (CPython 3.11's forkserver runs `-c` and ignores the
    `sys_path` it is given): a peer of another release runs in that release's tree."""
    mesh = mesh or MESH
    if shared_secret and not _names_secret(extra, env):
        extra = ("--secret-file", str(mesh_secret_file(mesh)), *extra)
    args = [*wrap, str(BIN / "banzai-peer"), "--data-dir", str(data_dir), "--http", http,
            "--task-module", "tests.fixture_tasks", "--log-level", "INFO",
            "--mdns-interface", "127.0.0.1", "--mesh-name", mesh, *extra]
    # Warm workers off unless a test asks: the suite starts ~100 peers, few run EXTRACT_MFCC,
    # and the warm-up (librosa, numba) adds ~1 s of CPU to each start on this 2-core host.
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), "BANZAI_WARM_WORKERS": "0",
                **(env or {})}
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)  # as the peer makes it
    log = data_dir.with_name(data_dir.name + ".log")
    start = log.stat().st_size if log.exists() else 0  # a restart appends to the same log
    with log.open("ab") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=full_env,
                                cwd=cwd, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with log.open("rb") as f:
            f.seek(start)
            text = f.read().decode(errors="replace")
        m = re.search(r"web UI: (https?://\S+?)/?$", text, re.M)
        if m:  # urllib requests of the tests carry its token from now on
            remember_peer(m.group(1), data_dir)
            return PeerProc(proc, m.group(1), data_dir, args, full_env, log)
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    proc.wait(5)
    raise RuntimeError("banzai-peer did not start:\n" + log.read_text(errors="replace"))


@pytest.fixture
def peer_factory(tmp_path: Path) -> Iterator[object]:
    """Start peers with start(name, *flags); all are killed at teardown."""
    started: list[PeerProc] = []

    mesh = f"test-{uuid.uuid4().hex[:12]}"  # peers of one test form their own mesh

    def start(name: str = "p0", *extra: str, env: dict[str, str] | None = None,
              http: str = "127.0.0.1:0", shared_secret: bool = True) -> PeerProc:
        p = start_peer(tmp_path / name, *extra, env=env, http=http, mesh=mesh,
                       shared_secret=shared_secret)
        started.append(p)
        return p

    yield start
    stop_peers(started)


@pytest.fixture(autouse=True)
def _listener_guard(request: pytest.FixtureRequest,
                    monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every in-process Node a test makes is looked at when the test ends: a listener's
    exception (logged and counted, not raised: Node._tell) fails the test, unless it is
    marked `listener_errors` (it expects them). Session 48: swallowed, they could hide a
    bug from a test that does not read `listener_errors`."""
    from peer.node import Node

    made: list[Node] = []
    init = Node.__init__

    def recorded(self: Node, *args: object, **kwargs: object) -> None:
        init(self, *args, **kwargs)  # type: ignore[arg-type]
        made.append(self)

    monkeypatch.setattr(Node, "__init__", recorded)
    yield
    failing = [(n.cfg.data_dir, n.listener_errors) for n in made if n.listener_errors]
    if failing and request.node.get_closest_marker("listener_errors") is None:
        pytest.fail("a listener raised (see the captured log): listener_errors "
                    + ", ".join(f"{d}: {c}" for d, c in failing)
                    + " (mark the test listener_errors if it expects them)", pytrace=False)
