"""Throw-away test networks in Linux network namespaces, and banzai-peer processes in them.

Topology of one `TestNet` (all names carry a per-net tag `bzt-<pid>-<hex6>`):

    namespace <tag>-br : bridge br0, one port v<i> per host, no address, nothing else
    namespace <tag>-h<i>: lo up, eth0 = 10.213.0.<10+i>/24, veth peer of <tag>-br:v<i>

The veth pairs are created directly between the bridge namespace and the host
namespaces (`ip -n <tag>-br link add v<i> type veth peer name eth0 netns <tag>-h<i>`),
so no interface, address or route is ever added to the root namespace, and the test
subnet 10.213.0.0/24 exists only inside the namespaces: traffic to it cannot reach the
host's interfaces. mDNS is bound to each namespace's eth0 address (the only non-loopback
interface a namespace has anyway).

How the test process reaches the peers' HTTP APIs: it stays in the root namespace and
opens each TCP socket inside the peer's namespace (`setns(2)` on the calling thread,
`socket()`, `setns` back; a socket keeps the namespace it was created in). Requests go
to the peer's own address from inside its own namespace, so they work even while that
peer is cut off from the bridge. Anything more (a ZeroMQ client, ...) runs as a
subprocess under `ip netns exec`.

A partition is "link down" on the bridge side of a host's veth (`cut`/`heal`): frames
to and from that host are silently dropped (sch_netem is not always available, see
`netem_available`).

Cleanup (`TestNet.destroy`, also run at interpreter exit and for leftovers of dead test
processes by `sweep_stale`): SIGKILL every process in each namespace (`ip netns pids`),
then `ip netns del`; each step has a timeout and errors are collected, never raised
halfway. Deleting a namespace destroys its veth ends and the bridge.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import http.client
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.conftest import START_TIMEOUT_S, mesh_secret_file

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
SUBNET = "10.213.0"  # /24; exists only inside the namespaces of a TestNet
PREFIX = "bzt-"  # every namespace this module creates starts with this
CMD_TIMEOUT_S = 10.0
CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)
_live: dict[str, TestNet] = {}  # tag -> net not yet destroyed (for atexit)
_live_lock = threading.Lock()


def ip(*args: str, check: bool = True, timeout: float = CMD_TIMEOUT_S,
       ) -> subprocess.CompletedProcess[str]:
    """Run `ip ARGS` (bounded); raises RuntimeError with stderr when `check` and it fails."""
    r = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=timeout,
                       stdin=subprocess.DEVNULL)
    if check and r.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {r.stderr.strip() or r.returncode}")
    return r


def unavailable_reason() -> str | None:
    """Why namespace tests cannot run here (None if they can). Creates and deletes a probe."""
    if sys.platform != "linux":
        return "network namespaces need Linux"
    if os.geteuid() != 0:
        return "network namespace tests need root (ip netns add)"
    if shutil.which("ip") is None:
        return "iproute2 `ip` is not installed"
    probe = f"{PREFIX}probe-{os.getpid()}-{secrets.token_hex(3)}"
    try:
        r = ip("netns", "add", probe, check=False)
        if r.returncode != 0:
            return f"`ip netns add` failed: {r.stderr.strip()}"
        r = ip("-n", probe, "link", "add", "name", "pbr", "type", "bridge", check=False)
        if r.returncode != 0:
            return f"cannot create a bridge in a namespace: {r.stderr.strip()}"
        r = ip("-n", probe, "link", "add", "name", "pva", "type", "veth", "peer", "name", "pvb",
               check=False)
        if r.returncode != 0:
            return f"cannot create a veth pair in a namespace: {r.stderr.strip()}"
        if not Path(f"/run/netns/{probe}").exists():
            return "/run/netns/<name> is missing after `ip netns add`"
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"`ip netns` is unusable: {e}"
    finally:
        with contextlib.suppress(Exception):
            ip("netns", "del", probe, check=False)
    return None


def netem_available(ns: str) -> bool:
    """True if `tc ... netem` works (needs sch_netem, absent on some CI kernels)."""
    if shutil.which("tc") is None:
        return False
    r = subprocess.run(["tc", "-n", ns, "qdisc", "add", "dev", "lo", "root", "netem",
                        "delay", "1ms"], capture_output=True, timeout=CMD_TIMEOUT_S)
    if r.returncode == 0:
        subprocess.run(["tc", "-n", ns, "qdisc", "del", "dev", "lo", "root"],
                       capture_output=True, timeout=CMD_TIMEOUT_S)
    return r.returncode == 0


# -- entering a namespace for one socket ---------------------------------------------------
def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"setns: {os.strerror(e)}")


@contextlib.contextmanager
def in_netns(ns: str) -> Iterator[None]:
    """Run the body with the calling thread in namespace `ns` (back in its own after)."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        target = os.open(f"/run/netns/{ns}", os.O_RDONLY)
        try:
            _setns(target)
        finally:
            os.close(target)
        try:
            yield
        finally:
            _setns(own)  # if this failed the thread would stay in the test net: loud error
    finally:
        os.close(own)


def ns_socket(ns: str, family: int = socket.AF_INET,
              kind: int = socket.SOCK_STREAM) -> socket.socket:
    """A socket that lives in namespace `ns` (the caller's thread never stays there)."""
    with in_netns(ns):
        return socket.socket(family, kind)


class _NsHTTPConnection(http.client.HTTPConnection):
    def __init__(self, ns: str, host: str, port: int, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self._ns = ns

    def connect(self) -> None:
        s = ns_socket(self._ns)
        try:
            s.settimeout(self.timeout)
            s.connect((self.host, self.port))
        except BaseException:
            s.close()
            raise
        self.sock = s


class HTTPError(Exception):
    def __init__(self, status: int, body: bytes, url: str) -> None:
        super().__init__(f"HTTP {status} from {url}: {body[:300]!r}")
        self.status = status
        self.body = body


def request(ns: str, url: str, method: str = "GET", body: Any = None,
            timeout: float = 10.0, raw: bool = False, token: str | None = None) -> Any:
    """One HTTP request from inside `ns` (with the peer's `token`); JSON in and out (bytes
    if `raw`)."""
    u = urllib.parse.urlsplit(url)
    conn = _NsHTTPConnection(ns, u.hostname or "", u.port or 80, timeout)
    try:
        data = b"" if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if body is not None else {}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        conn.request(method, u.path + (f"?{u.query}" if u.query else ""), body=data,
                     headers=headers)
        resp = conn.getresponse()
        payload = resp.read()
    finally:
        conn.close()
    if resp.status >= 400:
        raise HTTPError(resp.status, payload, url)
    return payload if raw else json.loads(payload)


# -- the network ---------------------------------------------------------------------------
@dataclass
class TestNet:
    """A bridge namespace plus `n` host namespaces on 10.213.0.0/24; see the module doc."""

    n: int
    tag: str = field(default_factory=lambda: f"{PREFIX}{os.getpid()}-{secrets.token_hex(3)}")
    created: list[str] = field(default_factory=list)
    __test__ = False  # not a pytest class

    @property
    def bridge_ns(self) -> str:
        return f"{self.tag}-br"

    def ns(self, i: int) -> str:
        return f"{self.tag}-h{i}"

    @staticmethod
    def addr(i: int) -> str:
        return f"{SUBNET}.{10 + i}"

    def create(self) -> TestNet:
        """Build the network (on any failure: everything created so far is removed)."""
        with _live_lock:
            _live[self.tag] = self
        try:
            br = self.bridge_ns
            self._add_ns(br)
            ip("-n", br, "link", "add", "name", "br0", "type", "bridge")
            # link-local multicast (mDNS) is flooded anyway; no snooping surprises
            ip("-n", br, "link", "set", "br0", "type", "bridge", "mcast_snooping", "0")
            ip("-n", br, "link", "set", "br0", "up")
            ip("-n", br, "link", "set", "lo", "up")
            for i in range(self.n):
                h = self.ns(i)
                self._add_ns(h)
                ip("-n", br, "link", "add", "name", f"v{i}", "type", "veth", "peer", "name", "eth0",
                   "netns", h)
                ip("-n", br, "link", "set", f"v{i}", "master", "br0")
                ip("-n", br, "link", "set", f"v{i}", "up")
                ip("-n", h, "link", "set", "lo", "up")
                ip("-n", h, "addr", "add", f"{self.addr(i)}/24", "dev", "eth0")
                ip("-n", h, "link", "set", "eth0", "up")
            self.wait_ready()
        except BaseException:
            self.destroy()
            raise
        return self

    def _add_ns(self, name: str) -> None:
        ip("netns", "add", name)
        self.created.append(name)

    def wait_ready(self, timeout_s: float = 10.0) -> None:
        """Until every host can bind its address (IPv4 needs no DAD) and the bridge
        ports forward (a new port goes through no STP states: STP is off by default)."""
        deadline = time.monotonic() + timeout_s
        for i in range(self.n):
            while True:
                out = ip("-n", self.ns(i), "-o", "link", "show", "eth0").stdout
                if "LOWER_UP" in out and "state UP" in out:
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{self.ns(i)}: eth0 not up: {out}")
                time.sleep(0.02)

    # -- partitions --------------------------------------------------------------------
    def cut(self, i: int) -> None:
        """Cut host i off: its bridge port goes down, frames both ways are dropped."""
        ip("-n", self.bridge_ns, "link", "set", f"v{i}", "down")

    def heal(self, i: int) -> None:
        ip("-n", self.bridge_ns, "link", "set", f"v{i}", "up")

    # -- processes ---------------------------------------------------------------------
    def exec_args(self, i: int, *cmd: str) -> list[str]:
        """argv running `cmd` in host i's namespace."""
        return ["ip", "netns", "exec", self.ns(i), *cmd]

    def run(self, i: int, *cmd: str, timeout: float = 30.0, input: bytes | None = None,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(self.exec_args(i, *cmd), capture_output=True, timeout=timeout,
                              input=input, cwd=ROOT,
                              env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})

    # -- cleanup -----------------------------------------------------------------------
    def destroy(self) -> list[str]:
        """Kill every process in the namespaces, delete them; returns the errors (bounded,
        never raises)."""
        errors: list[str] = []
        for name in reversed(self.created):
            errors += destroy_ns(name)
        self.created.clear()
        with _live_lock:
            _live.pop(self.tag, None)
        return errors


def ns_pids(name: str) -> list[int]:
    r = ip("netns", "pids", name, check=False)
    return [int(x) for x in r.stdout.split() if x.isdigit()]


def destroy_ns(name: str, timeout_s: float = 10.0) -> list[str]:
    """SIGKILL the processes of namespace `name`, then delete it. Bounded; never raises."""
    errors: list[str] = []
    deadline = time.monotonic() + timeout_s
    try:
        while (pids := ns_pids(name)) and time.monotonic() < deadline:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.05)
        if pids:
            errors.append(f"{name}: processes {pids} survived SIGKILL")
        r = ip("netns", "del", name, check=False)
        if r.returncode != 0 and Path(f"/run/netns/{name}").exists():
            errors.append(f"{name}: ip netns del: {r.stderr.strip()}")
    except (OSError, subprocess.TimeoutExpired) as e:
        errors.append(f"{name}: {e}")
    return errors


def sweep_stale() -> list[str]:
    """Delete namespaces left by test processes that died without cleaning up (their pid,
    part of the name, is gone). Namespaces of live processes are left alone."""
    removed: list[str] = []
    try:
        names = ip("netns", "list", check=False).stdout.split("\n")
    except (OSError, subprocess.TimeoutExpired):
        return removed
    for line in names:
        name = line.split(" ")[0]
        m = re.match(rf"{re.escape(PREFIX)}(?:probe-)?(\d+)-", name)
        if m and not Path(f"/proc/{m.group(1)}").exists():
            destroy_ns(name)
            removed.append(name)
    return removed


@atexit.register
def _destroy_all() -> None:
    with _live_lock:
        nets = list(_live.values())
    for net in nets:
        net.destroy()


# -- peers in namespaces -------------------------------------------------------------------
@dataclass
class NsPeer:
    """A banzai-peer process in host namespace `net.ns(host)`; its HTTP API is at `url`."""

    net: TestNet
    host: int
    name: str
    data_dir: Path
    args: list[str]
    env: dict[str, str]
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    url: str = ""

    @property
    def ns(self) -> str:
        return self.net.ns(self.host)

    @property
    def addr(self) -> str:
        return self.net.addr(self.host)

    @property
    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    @property
    def token(self) -> str:
        """The peer's HTTP token: it is bound beyond loopback, so reads need it too."""
        return (self.data_dir / "http-token").read_text().strip()

    def get(self, path: str, timeout: float = 10.0) -> Any:
        return request(self.ns, self.url + path, timeout=timeout, token=self.token)

    def post(self, path: str, body: Any = None, timeout: float = 30.0) -> Any:
        return request(self.ns, self.url + path, "POST", body, timeout=timeout,
                       token=self.token)

    def raw(self, path: str, timeout: float = 30.0) -> bytes:
        out: bytes = request(self.ns, self.url + path, raw=True, timeout=timeout,
                             token=self.token)
        return out

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def spawn(self) -> None:
        """Start the process (output appended to `log`); `wait_url` waits for its URL."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._log_start = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(self.net.exec_args(self.host, *self.args), stdout=out,
                                         stderr=subprocess.STDOUT, env=self.env, cwd=ROOT,
                                         stdin=subprocess.DEVNULL)
        self.url = ""

    def wait_url(self, timeout_s: float = START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        assert self.proc is not None
        while time.monotonic() < deadline:
            with self.log.open("rb") as f:
                f.seek(self._log_start)
                text = f.read().decode(errors="replace")
            m = re.search(r"web UI: (http://\S+?)/?$", text, re.M)
            if m:
                self.url = m.group(1)
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"banzai-peer {self.name} in {self.ns} did not start:\n{text}")

    def kill(self, sig: int = signal.SIGKILL, timeout_s: float = 15.0) -> None:
        """Signal the peer (the `ip netns exec` process execs it: same pid) and reap it."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


class PeerSet:
    """Start peers in the namespaces of one TestNet, one per host, all in one mesh."""

    def __init__(self, net: TestNet, tmp: Path, mesh: str | None = None) -> None:
        self.net = net
        self.tmp = tmp
        self.mesh = mesh or f"nstest-{secrets.token_hex(6)}"
        self.peers: list[NsPeer] = []

    def make(self, host: int, *extra: str, name: str | None = None,
             env: dict[str, str] | None = None, lease_s: float = 3.0) -> NsPeer:
        """A peer for host `host` (not started): HTTP, gossip and mDNS on its ns address."""
        name = name or f"p{host}"
        data = self.tmp / name
        a = self.net.addr(host)
        if not any(x.startswith(("--secret-file", "--join-token")) for x in extra):
            extra = ("--secret-file", str(mesh_secret_file(self.mesh)), *extra)  # one mesh
        args = [str(BIN / "banzai-peer"), "--data-dir", str(data), "--http", f"{a}:0",
                "--gossip", f"{a}:0", "--mdns-interface", a, "--mesh-name", self.mesh,
                "--task-module", "tests.fixture_tasks", "--lease-s", f"{lease_s:g}",
                "--log-level", "INFO", *extra]
        full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
        p = NsPeer(self.net, host, name, data, args, full_env, self.tmp / f"{name}.log")
        self.peers.append(p)
        return p

    def start(self, peers: Sequence[NsPeer], timeout_s: float = START_TIMEOUT_S) -> list[NsPeer]:
        """Spawn all, then wait for all (they start in parallel)."""
        for p in peers:
            p.spawn()
        for p in peers:
            p.wait_url(timeout_s)
        return list(peers)

    def close(self) -> None:
        """SIGTERM every peer first, then reap each: they shut down at the same time."""
        procs = [p.proc for p in self.peers if p.proc is not None and p.proc.poll() is None]
        for proc in procs:
            with contextlib.suppress(Exception):
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            with contextlib.suppress(Exception):
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)


# -- waiting -------------------------------------------------------------------------------
def until(cond: Callable[[], Any], timeout_s: float, what: str | Callable[[], str],
          every_s: float = 0.1) -> Any:
    """Poll `cond` until truthy (returned) or fail after `timeout_s` naming `what`.
    Exceptions from `cond` (a peer restarting) count as "not yet"."""
    deadline = time.monotonic() + timeout_s
    last: BaseException | None = None
    while True:
        try:
            v = cond()
            if v:
                return v
        except (OSError, HTTPError, http.client.HTTPException, ValueError) as e:
            last = e
        if time.monotonic() >= deadline:
            msg = what() if callable(what) else what
            raise AssertionError(f"timed out after {timeout_s:g} s: {msg}"
                                 + (f" (last error: {last})" if last else ""))
        time.sleep(every_s)


__all__ = ["PREFIX", "SUBNET", "HTTPError", "NsPeer", "PeerSet", "TestNet", "destroy_ns",
           "in_netns", "netem_available", "ns_socket", "request", "sweep_stale",
           "unavailable_reason", "until"]
