"""Shared fixtures: factories for real banzai-peer processes on loopback."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


@dataclass
class PeerProc:
    """A running banzai-peer process; `url` is its HTTP base."""

    proc: subprocess.Popen[str]
    url: str
    data_dir: Path
    args: list[str]
    env: dict[str, str]
    output: list[str] = field(default_factory=list)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(10)


# Peers of one test run share a mesh name no other run (or concurrent test) uses.
MESH = f"test-{uuid.uuid4().hex[:12]}"


def start_peer(data_dir: Path, *extra: str, env: dict[str, str] | None = None,
               http: str = "127.0.0.1:0", timeout_s: float = 60,
               mesh: str | None = None) -> PeerProc:
    """Start banzai-peer and wait until it prints its URL. mDNS stays on loopback."""
    args = [str(BIN / "banzai-peer"), "--data-dir", str(data_dir), "--http", http,
            "--task-module", "tests.fixture_tasks", "--log-level", "INFO",
            "--mdns-interface", "127.0.0.1", "--mesh-name", mesh or MESH, *extra]
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=full_env, cwd=ROOT)
    lines: list[str] = []
    deadline = time.monotonic() + timeout_s
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        m = re.match(r"web UI: (http://\S+?)/?$", line.strip())
        if m:
            p = PeerProc(proc, m.group(1), data_dir, args, full_env, lines)
            _drain(p)
            return p
    proc.kill()
    raise RuntimeError("banzai-peer did not start:\n" + "".join(lines))


def _drain(p: PeerProc) -> None:
    import threading

    def pump() -> None:
        assert p.proc.stdout is not None
        for line in p.proc.stdout:
            p.output.append(line)

    threading.Thread(target=pump, daemon=True).start()


@pytest.fixture
def peer_factory(tmp_path: Path) -> Iterator[object]:
    """Start peers with start(name, *flags); all are killed at teardown."""
    started: list[PeerProc] = []

    mesh = f"test-{uuid.uuid4().hex[:12]}"  # peers of one test form their own mesh

    def start(name: str = "p0", *extra: str, env: dict[str, str] | None = None,
              http: str = "127.0.0.1:0") -> PeerProc:
        p = start_peer(tmp_path / name, *extra, env=env, http=http, mesh=mesh)
        started.append(p)
        return p

    yield start
    for p in started:
        p.kill(signal.SIGTERM)
