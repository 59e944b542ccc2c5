"""IPFS gateway conformance (the vendored github.com/ipfs/gateway-conformance, built by
scripts/install-conformance.sh, driven by scripts/conformance.py) against a peer with every fixture
imported, and a trustless-CAR parity check against Kubo's own gateway. Everything listens on and
talks to 127.0.0.1 only.
"""

from __future__ import annotations

import random
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from peer.ipfs.car import read_car
from scripts.scriptlib import load_script
from tests.conftest import PeerProc, start_peer
from tests.helpers import init_kubo_repo, kubo_binary

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

conformance = load_script("conformance")


@pytest.fixture(scope="module")
def suite() -> Any:
    """The built suite (scripts/setup.sh --test builds it; built here if it was not)."""
    if not conformance.go_available():
        pytest.skip("the Go toolchain is required to build and run gateway-conformance")
    return conformance.install()  # a failed build with Go present is an error, not a skip


def test_conformance_suite(suite: Any, peer: PeerProc, tmp_path: Path) -> None:
    """Specs trustless-gateway, path-gateway and subdomain-gateway: every check passes except
    those listed in conformance_known_failures.txt, and every listed check still fails (the
    list only shrinks)."""
    fixtures = conformance.extract_fixtures(suite, tmp_path / "fixtures")
    imported = conformance.import_fixtures(peer.url, fixtures)
    assert not [r for r in imported["refused"] if ".car:" in r], imported["refused"]
    done = conformance.run(suite, peer.url, tmp_path / "results.json")
    results = conformance.leaf_results(tmp_path / "results.json")
    assert results, done.stdout + done.stderr
    new, stale = conformance.compare(results, conformance.read_known_failures())
    assert not new, f"checks failing that are not in conformance_known_failures.txt: {new}"
    assert not stale, ("checks listed in conformance_known_failures.txt that no longer fail "
                       f"(remove them: python scripts/conformance.py --update): {stale}")


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
    p = start_peer(tmp_path_factory.mktemp("conf") / "p0", "--no-mdns", *conformance.PEER_FLAGS)
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
