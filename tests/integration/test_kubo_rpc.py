"""The Kubo RPC subset (/api/v0) driven by real clients: the Kubo CLI (`ipfs --api ...`, built by
scripts/install-kubo.sh) and ipfshttpclient 0.8.0a2 when installed. CIDs and CARs are compared
with Kubo run offline on a throw-away loopback-only repo and with EmbeddedStore; nothing leaves
127.0.0.1.
"""

from __future__ import annotations

import io
import json
import random
import subprocess
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from peer.ipfs import EmbeddedStore
from tests.conftest import PeerProc, start_peer
from tests.helpers import init_kubo_repo, kubo_binary

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

Kubo = Callable[..., bytes]


@pytest.fixture(scope="module")
def peer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PeerProc]:
    p = start_peer(tmp_path_factory.mktemp("rpc") / "p0", "--no-mdns")
    yield p
    p.kill()


def _port(peer: PeerProc) -> str:
    return peer.url.rsplit(":", 1)[1].strip("/")


@pytest.fixture(scope="module")
def kubo_env(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, str]]:
    binary = kubo_binary()
    if binary is None:
        pytest.skip("Kubo binary not found: run scripts/install-kubo.sh (or put `ipfs` on PATH)")
    return binary, init_kubo_repo(binary, tmp_path_factory.mktemp("kubo-repo"), "--offline")


def _runner(binary: str, env: dict[str, str], *prefix: str) -> Kubo:
    def run(*args: str, check: bool = True) -> bytes:
        done = subprocess.run([binary, *prefix, *args], env=env, capture_output=True, timeout=120)
        if check and done.returncode != 0:
            raise AssertionError(f"ipfs {' '.join(args)} failed: {done.stderr.decode()}")
        return done.stdout if check else done.stderr

    return run


@pytest.fixture(scope="module")
def cli(kubo_env: tuple[str, dict[str, str]], peer: PeerProc) -> Kubo:
    """The Kubo CLI as a client of the banzai peer, with its token (--api-auth)."""
    return _runner(*kubo_env, "--api", f"/ip4/127.0.0.1/tcp/{_port(peer)}",
                   f"--api-auth=bearer:{peer.token}")


@pytest.fixture(scope="module")
def offline(kubo_env: tuple[str, dict[str, str]]) -> Kubo:
    """Kubo itself, offline on its own repo (the reference)."""
    return _runner(*kubo_env, "--offline")


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tree") / "data"
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "empty").mkdir()
    (root / "a.txt").write_bytes(b"hello\n")
    (root / "big.bin").write_bytes(random.Random(7).randbytes(700_000))  # 3 chunks
    (root / "sub" / "b.txt").write_bytes(b"B\n")
    (root / "sub" / "deeper" / "ünï.json").write_text('{"x": 1}', encoding="utf-8")
    return root


@pytest.mark.parametrize("version", ["0", "1"])
def test_cli_add_matches_kubo_and_store(
    cli: Kubo, offline: Kubo, tree: Path, tmp_path: Path, version: str
) -> None:
    args = ["add", "-r", f"--cid-version={version}", str(tree)]
    ours = cli(*args).decode().splitlines()
    ref = offline(*args, "--only-hash").decode().splitlines()
    assert ours == ref  # every "added <cid> <name>" line, in Kubo's order
    root = ours[-1].split()[1]
    assert root == EmbeddedStore(tmp_path / "s").add_path(tree, cid_version=int(version))
    assert cli("add", "-Q", "-r", f"--cid-version={version}", str(tree)).decode().strip() == root
    wrapped = cli("add", "-r", "-w", "-Q", f"--cid-version={version}", str(tree))
    assert wrapped == offline("add", "-r", "-w", "-Q", "--only-hash", f"--cid-version={version}",
                              str(tree))


def test_cli_cat_pin_block_dag(cli: Kubo, offline: Kubo, tree: Path) -> None:
    root = cli("add", "-r", "-Q", "--cid-version=1", str(tree)).decode().strip()
    assert cli("cat", f"{root}/a.txt") == b"hello\n"
    big = (tree / "big.bin").read_bytes()
    assert cli("cat", f"/ipfs/{root}/big.bin") == big
    assert cli("cat", "--offset=262140", "--length=10", f"{root}/big.bin") == big[262140:262150]
    assert f"{root} recursive" in cli("pin", "ls", "--type=recursive").decode().splitlines()
    assert offline("add", "-r", "-Q", "--cid-version=1", str(tree)).decode().strip() == root
    assert cli("block", "get", root) == offline("block", "get", root)
    assert cli("dag", "export", root) == offline("dag", "export", root)  # byte-identical CAR
    assert cli("pin", "add", root).decode().strip() == f"pinned {root} recursively"


def test_cli_dag_import_of_kubo_car(cli: Kubo, offline: Kubo, tmp_path: Path) -> None:
    data = random.Random(11).randbytes(300_000)
    (tmp_path / "only-in-kubo.bin").write_bytes(data)
    cid = offline("add", "-Q", str(tmp_path / "only-in-kubo.bin")).decode().strip()
    car = tmp_path / "x.car"
    car.write_bytes(offline("dag", "export", cid))
    out = cli("dag", "import", str(car)).decode()
    assert f"Pinned root\t{cid}\tsuccess" in out
    assert cli("cat", cid) == data
    assert f"{cid} recursive" in cli("pin", "ls", "--type=recursive", cid).decode()


def test_cli_id_and_errors(cli: Kubo, peer: PeerProc) -> None:
    health = requests.get(f"{peer.url}/api/health", timeout=10).json()
    ident = json.loads(cli("id"))
    assert ident["ID"] == health["peer"]
    assert ident["AgentVersion"].startswith("banzai/")
    err = cli("cat", "bafybeiatsamrdu63sjqkfalea4gcnqtgnnmq3ezs4ungqhdi5yjshalksa", check=False)
    assert b"Error:" in err and b"not in the store" in err


def _post(peer: PeerProc, path: str, **kw: Any) -> requests.Response:
    kw["headers"] = {**peer.auth, **kw.get("headers", {})}
    return requests.post(f"{peer.url}/api/v0/{path}", timeout=30, **kw)


def test_http_shapes(peer: PeerProc) -> None:
    r = _post(peer, "add", params={"cid-version": "1"},
              files={"file": ("a.txt", b"hello\n")})
    assert r.status_code == 200 and r.headers["X-Chunked-Output"] == "1"
    hello = "bafkreicysg23kiwv34eg2d7qweipxwosdo2py4ldv42nbauguluen5v6am"
    assert r.text == f'{{"Name":"a.txt","Hash":"{hello}","Size":"6"}}\n'

    r = _post(peer, "cat")
    assert r.status_code == 400
    assert r.json() == {"Message": 'argument "ipfs-path" is required', "Code": 1, "Type": "error"}
    for bad in ("not-a-cid", "/ipns/example.com"):
        r = _post(peer, "cat", params={"arg": bad})
        assert r.status_code in (400, 501) and r.json()["Type"] == "error"
    r = _post(peer, "add", params={"cid-version": "1", "raw-leaves": "false"},
              files={"file": ("a.txt", b"x")})
    assert r.status_code == 501 and "raw-leaves" in r.json()["Message"]
    r = _post(peer, "dag/import", files={"file": ("x.car", b"\x05garbage")})
    assert r.status_code == 400 and r.json()["Type"] == "error"
    assert requests.get(f"{peer.url}/api/v0/version", headers=peer.auth,
                        timeout=10).status_code == 405
    assert requests.post(f"{peer.url}/api/v0/version", timeout=10).status_code == 401
    r = _post(peer, "id", headers={"Origin": "http://elsewhere.example"})
    assert r.status_code == 403
    v = _post(peer, "version").json()
    assert set(v) == {"Version", "Commit", "Repo", "System", "Golang"}
    r = _post(peer, "pin/ls", params={"type": "recursive"})
    assert r.json()["Keys"][hello] == {"Type": "recursive", "Name": ""}


def test_ipfshttpclient(peer: PeerProc, tree: Path) -> None:
    with warnings.catch_warnings():
        # 0.8.0a2 only *warns* (VersionMismatch) for daemons outside 0.5.0 <= v < 0.9.0, which
        # includes every Kubo since 2021 and our reported 0.39.0; urllib3 warns about its use too.
        warnings.simplefilter("ignore")
        ipfshttpclient = pytest.importorskip(
            "ipfshttpclient",
            reason="ipfshttpclient not installed (pip install ipfshttpclient==0.8.0a2)")
        client = ipfshttpclient.connect(f"/ip4/127.0.0.1/tcp/{_port(peer)}/http",
                                        headers=peer.auth)
        added = client.add(str(tree), recursive=True, cid_version=1, raw_leaves=True)
        root = added[-1]["Hash"]
        assert added[-1]["Name"] == "data"
        assert root == EmbeddedStore(tree.parent / "store").add_path(tree, cid_version=1)
        assert client.cat(f"{root}/a.txt") == b"hello\n"
        assert client.cat(f"{root}/a.txt", offset=1, length=3) == b"ell"
        assert client.add_bytes(b"hello\n") == "QmZULkCELmmk5XNfCgTnCyFgAVxBRBXyDHGGMVoLFLiXEN"
        assert root in client.pin.ls(type="recursive")["Keys"]
        assert client.pin.add(root)["Pins"] == [root]
        car = client.dag.export(root)
        assert client.dag.imprt(io.BytesIO(car))["Root"]["Cid"]["/"] == root
        assert client.id()["AgentVersion"].startswith("banzai/")
        client.close()
