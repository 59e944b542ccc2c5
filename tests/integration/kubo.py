"""Test helper: throw-away Kubo daemons on loopback.

`start_kubo(repo)` runs `ipfs daemon` on a fresh `ipfs init --profile=test` repo with the API,
gateway and swarm on 127.0.0.1 (ports chosen by the OS, read back from the repo's `api` and
`gateway` files), no bootstrap peers, no mDNS, no routing (bitswap only between peers it is
told to connect to), no AutoConf, AutoTLS, relays or telemetry: nothing leaves loopback.
`kubo_binary()` skips the test when neither the binary nor Go (to build it) is present.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def kubo_binary() -> str:
    """The Kubo binary (built by scripts/install-kubo.sh if Go is there), or skip the test."""
    import pytest

    local = ROOT / ".cache" / "kubo" / "bin" / "ipfs"
    if local.is_file() and os.access(local, os.X_OK):
        return str(local)
    if found := shutil.which("ipfs"):
        return found
    if shutil.which("go") is None:
        pytest.skip("Kubo binary absent (.cache/kubo/bin/ipfs, ipfs on PATH) and Go absent "
                    "to build it: run scripts/install-kubo.sh on a machine with Go")
    done = subprocess.run(["bash", str(ROOT / "scripts" / "install-kubo.sh")],
                          capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        pytest.skip(f"scripts/install-kubo.sh failed: {done.stderr[-500:]}")
    return done.stdout.strip().splitlines()[-1]


_SETTINGS = {
    "Addresses.API": '"/ip4/127.0.0.1/tcp/0"',
    "Addresses.Gateway": '"/ip4/127.0.0.1/tcp/0"',
    "Addresses.Swarm": '["/ip4/127.0.0.1/tcp/0"]',
    "Addresses.Announce": "[]",
    "Bootstrap": "[]",
    "Discovery.MDNS.Enabled": "false",
    "Routing.Type": '"none"',
    "Routing.DelegatedRouters": "[]",
    "AutoConf.Enabled": "false",
    "AutoTLS.Enabled": "false",
    "AutoNAT.ServiceMode": '"disabled"',
    "Swarm.RelayClient.Enabled": "false",
    "Swarm.RelayService.Enabled": "false",
    "Swarm.DisableNatPortMap": "true",
    "Plugins.Plugins.telemetry.Config": '{"Mode": "off"}',
}


@dataclass
class KuboDaemon:
    """A running `ipfs daemon`: `api` is its RPC base URL, `gateway` its gateway URL."""

    proc: subprocess.Popen[bytes]
    repo: Path
    api: str
    gateway: str
    log: Path

    def rpc(self, cmd: str, *args: str, timeout_s: float = 30, **opts: str) -> Any:
        """POST /api/v0/<cmd>?arg=...; the JSON reply (or raw bytes if not JSON)."""
        q = urllib.parse.urlencode([("arg", a) for a in args] + list(opts.items()))
        req = urllib.request.Request(f"{self.api}/api/v0/{cmd}?{q}", data=b"", method="POST")
        try:
            with urllib.request.urlopen(req, timeout=timeout_s) as r:
                body = r.read()
        except urllib.error.HTTPError as e:
            raise AssertionError(f"kubo {cmd} {args}: {e.read()[:300]!r}") from None
        try:
            return json.loads(body)
        except ValueError:
            return body

    def pinned(self, cid: str) -> bool:
        try:
            return cid in self.rpc("pin/ls", cid)["Keys"]
        except AssertionError:
            return False

    def peer_id(self) -> str:
        return str(self.rpc("id")["ID"])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def _set(cfg: dict[str, Any], path: list[str], value: Any) -> None:
    for part in path[:-1]:
        if not isinstance(cfg.get(part), dict):
            cfg[part] = {}
        cfg = cfg[part]
    cfg[path[-1]] = value


def start_kubo(repo: Path, timeout_s: float = 60, swarm_key: str | None = None) -> KuboDaemon:
    """Init a loopback-only repo at `repo` and start its daemon; waits until it serves. With
    `swarm_key` (a swarm.key file's text) the daemon runs in that private swarm."""
    binary = kubo_binary()
    env = {**os.environ, "IPFS_PATH": str(repo), "IPFS_TELEMETRY": "off"}
    subprocess.run([binary, "init", "--profile=test", "-e"], env=env, check=True,
                   capture_output=True, timeout=120)
    cfg = json.loads((repo / "config").read_text())  # as `ipfs config --json`, in one write
    for key, value in _SETTINGS.items():
        _set(cfg, key.split("."), json.loads(value))
    (repo / "config").write_text(json.dumps(cfg, indent=2))
    if swarm_key is not None:
        (repo / "swarm.key").write_text(swarm_key)
    return _daemon(binary, repo, env, timeout_s)


def restart_kubo(k: KuboDaemon, timeout_s: float = 60) -> KuboDaemon:
    """Start the daemon of a stopped KuboDaemon's repo again (new ports)."""
    k.stop()
    env = {**os.environ, "IPFS_PATH": str(k.repo), "IPFS_TELEMETRY": "off"}
    return _daemon(kubo_binary(), k.repo, env, timeout_s)


def _daemon(binary: str, repo: Path, env: dict[str, str], timeout_s: float) -> KuboDaemon:
    log = repo.with_name(repo.name + ".log")
    start = log.stat().st_size if log.exists() else 0
    with log.open("ab") as out:
        proc = subprocess.Popen([binary, "daemon", "--enable-gc=false"], env=env, stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if "Daemon is ready" in log.read_bytes()[start:].decode(errors="replace"):
            api = (repo / "api").read_text().strip().split("/")  # /ip4/127.0.0.1/tcp/PORT
            gateway = (repo / "gateway").read_text().strip()
            return KuboDaemon(proc, repo, f"http://{api[2]}:{api[4]}", gateway, log)
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    proc.wait(5)
    raise RuntimeError("ipfs daemon did not start:\n" + log.read_text(errors="replace"))
