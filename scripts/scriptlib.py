"""Helpers shared by the scripts and the tests: loading a sibling script, a lone banzai-peer
process, a plain task context and a one-line machine description.

Scripts import it as `scriptlib` (scripts/ is on sys.path when one runs), the tests as
`scripts.scriptlib` (tests/helpers.py).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import platform
import re
import secrets
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import ModuleType

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def load_script(name: str) -> ModuleType:
    """Import scripts/<name>.py (not a package) once, as module `banzai_scripts_<name>`."""
    key = f"banzai_scripts_{name}"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, ROOT / "scripts" / f"{name}.py")
        assert spec and spec.loader
        sys.modules[key] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[key])
    return sys.modules[key]


def source_digest(code: Path = ROOT) -> str:
    """12 hex digits of SHA-256 over the paths and bytes of `code`'s peer/ and tasks/ Python
    sources: what a benchmark's peers run, wherever the tree lies. The same for a checkout,
    a clone and a `git archive` of one commit; it tells runs of two trees apart when git
    cannot (an archive has no commit) and when a checkout moved between runs."""
    h = hashlib.sha256()
    for path in sorted(p for pkg in ("peer", "tasks") for p in (code / pkg).rglob("*.py")):
        try:
            data = path.read_bytes()
        except FileNotFoundError:  # removed since the listing: the tree is being edited
            continue
        h.update(path.relative_to(code).as_posix().encode() + b"\0")
        h.update(data + b"\0")
    return h.hexdigest()[:12]


def mesh_secret_file(directory: Path) -> Path:
    """A new mesh secret in `directory`/mesh.secret (mode 0600): peers started with
    `--secret-file` on it form one mesh (every mesh has a secret; docs/security.md)."""
    path = directory / "mesh.secret"
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_urlsafe(32) + "\n")
    return path


# -- a peer's token, sent by every urllib request of this process to that peer -----------------
PEER_TOKENS: dict[str, str] = {}  # "host:port" -> the token of the peer there
_INSTALLED: list[bool] = []  # the opener is installed (once per process)


class _PeerToken(urllib.request.BaseHandler):
    """Adds `Authorization: Bearer TOKEN` to urllib requests to a peer remember_peer knows
    (unless the request has its own Authorization)."""

    handler_order = 400

    def http_request(self, req: urllib.request.Request) -> urllib.request.Request:
        token = PEER_TOKENS.get(req.host)
        if token and not req.has_header("Authorization"):
            req.add_unredirected_header("Authorization", f"Bearer {token}")
        return req

    https_request = http_request


def peer_token(data_dir: Path) -> str:
    """The token of the peer of `data_dir` (the file http-token it creates at start)."""
    return (data_dir / "http-token").read_text().strip()


def remember_peer(url: str, data_dir: Path) -> str:
    """From now on urllib.request.urlopen sends the token of the peer of `data_dir` with every
    request to `url`'s host:port (this process installs the opener once); returns it."""
    token = PEER_TOKENS[urllib.parse.urlsplit(url).netloc] = peer_token(data_dir)
    if not _INSTALLED:
        urllib.request.install_opener(urllib.request.build_opener(_PeerToken()))
        _INSTALLED.append(True)
    return token


def auth_headers(url: str) -> dict[str, str]:
    """{"Authorization": "Bearer TOKEN"} for a remembered peer's URL (aiohttp, requests)."""
    token = PEER_TOKENS.get(urllib.parse.urlsplit(url).netloc)
    return {"Authorization": f"Bearer {token}"} if token else {}


async def peer_auth(req: aiohttp.ClientRequest, handler: aiohttp.ClientHandlerType,
                    ) -> aiohttp.ClientResponse:
    """aiohttp client middleware (`ClientSession(middlewares=(peer_auth,))`): the token of
    a remembered peer on every request to it."""
    for k, v in auth_headers(str(req.url)).items():
        req.headers.setdefault(k, v)
    return await handler(req)


def wait_workers_ready(url: str, timeout_s: float = 180) -> None:
    """Wait until the peer at `url` has every worker ready (its forkserver warmed up), so a
    benchmark measures a warm peer, not its start-up; a peer that does not say is ready."""
    deadline = time.monotonic() + timeout_s
    while True:
        with urllib.request.urlopen(url + "/api/health", timeout=10) as r:
            workers = json.load(r).get("workers")
        if not workers or workers["ready"] >= workers["slots"]:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url}: workers not ready after {timeout_s:g} s: {workers}")
        time.sleep(0.1)


@contextlib.contextmanager
def lone_peer(data_dir: Path, log: Path, slots: int, *, mesh_prefix: str, log_level: str,
              extra: Sequence[str] = (), stop_timeout_s: float = 30, code: Path = ROOT,
              ) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """A banzai-peer alone on 127.0.0.1 (no mDNS, a mesh name of its own), its output to
    `log`; yields (process, URL) once it prints its URL; SIGTERM at exit. `code`: the
    source tree it runs (another checkout, for an A/B)."""
    args = [str(BIN / "banzai-peer"), "--data-dir", str(data_dir), "--http", "127.0.0.1:0",
            "--no-mdns", "--mesh-name", f"{mesh_prefix}-{secrets.token_hex(6)}",
            "--slots", str(slots), "--log-level", log_level, *extra]
    with log.open("wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, cwd=code,
                                env={**os.environ, "PYTHONPATH": str(code)})
    try:
        deadline = time.monotonic() + 60
        while (m := re.search(r"^web UI: (http://\S+?)/?$", log.read_text(), re.M)) is None:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("banzai-peer did not start:\n" + log.read_text())
            time.sleep(0.05)
        remember_peer(m.group(1), data_dir)
        wait_workers_ready(m.group(1))
        yield proc, m.group(1)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(stop_timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


class TaskCtx:
    """A task context outside a peer: records log lines, progress fractions and metrics;
    `fetch_allow` is the --fetch-allow of the peer it stands for."""

    def __init__(self, workdir: Path, fetch_allow: tuple[str, ...] = ()) -> None:
        self.workdir = workdir
        self.fetch_allow = fetch_allow
        self.logs: list[str] = []
        self.fractions: list[float] = []
        self.metrics: list[tuple[str, int, float]] = []

    def progress(self, fraction: float) -> None:
        self.fractions.append(fraction)

    def log(self, message: str) -> None:
        self.logs.append(message)

    def metric(self, name: str, step: int, value: float) -> None:
        self.metrics.append((name, step, value))


def machine() -> str:
    """CPUs, RAM, Python and OS in one line."""
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next((ln.split(":", 1)[1].strip() for ln in cpuinfo if ln.startswith("model name")),
               platform.processor())
    meminfo = Path("/proc/meminfo").read_text().splitlines()
    mem = next(int(ln.split()[1]) for ln in meminfo if ln.startswith("MemTotal"))
    return (f"{os.cpu_count()} CPUs ({cpu}), {mem / 2**20:.1f} GiB RAM, "
            f"Python {platform.python_version()}, {platform.system()} {platform.release()}")
