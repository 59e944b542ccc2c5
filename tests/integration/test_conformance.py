"""IPFS gateway conformance (github.com/ipfs/gateway-conformance, scripts/conformance.sh), and
a trustless-CAR parity check against Kubo's own gateway that runs even when the suite cannot be
installed. Everything listens on and talks to 127.0.0.1 only.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from peer.ipfs.car import read_car
from tests.conftest import PeerProc, start_peer
from tests.helpers import init_kubo_repo, kubo_binary

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

REPO = Path(__file__).resolve().parents[2]
# Passing path-unixfs-gateway tests last recorded in docs/conformance.md (0: not yet measured,
# because the suite could not be installed here).
PATH_UNIXFS_BASELINE = 0


def test_conformance_suite(tmp_path: Path) -> None:
    if shutil.which("go") is None and not Path("/usr/local/go/bin/go").exists():
        pytest.skip("the Go toolchain is required to run gateway-conformance (go test)")
    env = {**os.environ, "PATH": f"{os.environ.get('PATH', '')}:/usr/local/go/bin"}
    done = subprocess.run(["bash", str(REPO / "scripts" / "conformance.sh"), str(tmp_path)],
                          env=env, capture_output=True, text=True, timeout=200)  # fmt: skip
    summary = json.loads((tmp_path / "summary.json").read_text())
    if done.returncode == 2 and not summary.get("ran"):
        pytest.skip(f"gateway-conformance could not be installed: {summary.get('reason')}")
    assert summary.get("ran"), done.stderr
    trustless = {g: c for g, c in summary["groups"].items() if g.startswith("TestTrustless")}
    assert trustless, summary
    assert all(c.get("fail", 0) == 0 for c in trustless.values()), summary["failed"]
    path_pass = sum(c.get("pass", 0) for g, c in summary["groups"].items()
                    if not g.startswith("TestTrustless"))
    assert path_pass >= PATH_UNIXFS_BASELINE


KuboGateway = tuple[str, str, dict[str, str]]


@pytest.fixture(scope="module")
def kubo_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KuboGateway]:
    """An offline Kubo daemon on loopback (no swarm, no bootstrap, no mDNS): (binary, url, env)."""
    binary = kubo_binary()
    if binary is None:
        pytest.skip("Kubo binary not found: run scripts/install-kubo.sh (or put `ipfs` on PATH)")
    env = init_kubo_repo(binary, tmp_path_factory.mktemp("kubo-gw"))
    log = Path(env["IPFS_PATH"]) / "daemon.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([binary, "daemon", "--offline"], env=env, stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    url = ""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not url:
        for line in log.read_text(errors="replace").splitlines():
            if line.startswith("Gateway server listening on /ip4/127.0.0.1/tcp/"):
                url = "http://127.0.0.1:" + line.rsplit("/", 1)[1]
        time.sleep(0.1)
    if not url:
        proc.kill()
        pytest.fail("Kubo daemon did not start:\n" + log.read_text(errors="replace"))
    yield binary, url, env
    proc.send_signal(signal.SIGTERM)
    proc.wait(30)


@pytest.fixture(scope="module")
def peer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PeerProc]:
    p = start_peer(tmp_path_factory.mktemp("conf") / "p0", "--no-mdns")
    yield p
    p.kill()


QUERIES = ["", "&dag-scope=block", "&dag-scope=entity", "&dag-scope=all",
           "&dag-scope=entity&entity-bytes=0:1000", "&dag-scope=entity&entity-bytes=300000:*",
           "&dag-scope=entity&entity-bytes=-1000:*",
           "&dag-scope=entity&entity-bytes=262144:524288"]


def _blocks(url: str) -> list[str]:
    r = requests.get(url, timeout=30)
    assert r.status_code == 200, (url, r.text)
    _, blocks = read_car([r.content])
    return [str(c) for c, _ in blocks]


@pytest.mark.parametrize("version", ["0", "1"])
def test_trustless_car_blocks_match_kubo_gateway(
    kubo_gateway: KuboGateway, peer: PeerProc, tmp_path: Path, version: str
) -> None:
    binary, kubo_url, env = kubo_gateway
    tree = tmp_path / "e"
    (tree / "sub").mkdir(parents=True)
    (tree / "sub" / "big.bin").write_bytes(random.Random(5).randbytes(900_000))
    (tree / "sub" / "x.txt").write_bytes(b"hi\n")
    port = peer.url.rsplit(":", 1)[1].strip("/")
    add = ["add", "-r", "-Q", f"--cid-version={version}", str(tree)]
    ours = subprocess.run([binary, "--api", f"/ip4/127.0.0.1/tcp/{port}",
                           f"--api-auth=bearer:{peer.token}", *add], env=env,
                          check=True, capture_output=True, timeout=60).stdout.decode().strip()
    theirs = subprocess.run([binary, "--offline", *add], env=env, check=True,
                            capture_output=True, timeout=60).stdout.decode().strip()
    assert ours == theirs
    for path in ("", "/sub", "/sub/big.bin"):
        for query in QUERIES:
            suffix = f"/ipfs/{ours}{path}?format=car{query}"
            assert _blocks(peer.url + suffix) == _blocks(kubo_url + suffix), suffix
    r = requests.get(f"{peer.url}/ipfs/{ours}/sub?format=car&dag-scope=nope", timeout=10)
    assert r.status_code == 400
    r = requests.get(f"{peer.url}/ipfs/{ours}/sub",
                     headers={"Accept": "application/vnd.ipld.car; version=1; dups=y"}, timeout=10)
    assert r.headers["Content-Type"] == "application/vnd.ipld.car; version=1; order=dfs; dups=y"
