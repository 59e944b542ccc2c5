"""Mesh admission with real peers on loopback: the first peer's generated secret and join
command, a peer without the secret, mDNS TXT without secret material, and a second local
user who can neither read the secret nor join (issue 10, item 4)."""

from __future__ import annotations

import asyncio
import base64
import os
import re
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from peer.mesh.discovery import Discovery, DiscoveryConfig, build_txt, mesh_hash
from peer.mesh.keyring import SECRET_FILE_NAME, decode_token, derive
from tests.conftest import BIN, ROOT, START_TIMEOUT_S, PeerProc, start_peer
from tests.helpers import get_json, local_user, wait_mesh

pytestmark = pytest.mark.integration
MESH = f"admit-{uuid.uuid4().hex[:10]}"


def until(cond: Callable[[], Any], what: str, timeout_s: float = 30) -> Any:
    deadline = time.monotonic() + timeout_s
    while not (got := cond()):
        assert time.monotonic() < deadline, what
        time.sleep(0.05)
    return got


def gossip(p: PeerProc) -> dict[str, int]:
    g: dict[str, int] = get_json(p.url + "/api/health")["gossip"]
    return g


def peer_ids(p: PeerProc) -> set[str]:
    return {x["id"] for x in get_json(p.url + "/api/peers")["peers"]}


@pytest.fixture(scope="module")
def root() -> Iterator[Path]:
    """A world-traversable directory (0755), so that file modes alone keep others out."""
    d = Path(tempfile.mkdtemp(prefix="banzai-admit-"))
    d.chmod(0o755)
    yield d
    subprocess.run(["rm", "-rf", str(d)], check=False)


@pytest.fixture(scope="module")
def first(root: Path) -> Iterator[PeerProc]:
    """The first peer of a new mesh: no secret given, it makes one."""
    p = start_peer(root / "first", mesh=MESH, shared_secret=False)
    yield p
    p.kill()


@pytest.fixture(scope="module")
def token(first: PeerProc) -> str:
    m = until(lambda: re.search(r"BANZAI_JOIN_TOKEN=(\S+) banzai-peer --mesh-name (\S+)",
                                first.output), "no join command printed")
    assert m.group(2) == MESH
    return m.group(1)


def test_first_peer_makes_a_private_secret_and_its_join_command_joins(
        first: PeerProc, token: str, root: Path) -> None:
    stored = first.data_dir / SECRET_FILE_NAME
    assert stored.stat().st_mode & 0o777 == 0o600
    assert decode_token(token) == stored.read_bytes().strip()
    # --print-join prints the same command again (no peer needed)
    out = subprocess.run([str(BIN / "banzai-peer"), "--data-dir", str(first.data_dir),
                          "--mesh-name", MESH, "--print-join"], capture_output=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60, check=True)
    want = f"BANZAI_JOIN_TOKEN={token} banzai-peer --mesh-name {MESH}"
    assert out.stdout.decode().strip() == want
    second = start_peer(root / "second", mesh=MESH, env={"BANZAI_JOIN_TOKEN": token})
    try:
        wait_mesh([first, second], 2)
        kept = second.data_dir / SECRET_FILE_NAME
        assert kept.read_bytes() == stored.read_bytes()
        assert kept.stat().st_mode & 0o777 == 0o600
        assert token not in second.output  # a joined peer does not print the token again
    finally:
        second.kill()


def test_peer_without_the_secret_never_joins_and_is_refused(first: PeerProc, root: Path) -> None:
    ga = get_json(first.url + "/api/health")["gossip_address"]
    before = gossip(first)["refused_handshakes"]
    # same mesh name, found by mDNS, told to --join: it has only a secret of its own
    outsider = start_peer(root / "outsider", "--join", ga, mesh=MESH, shared_secret=False)
    try:
        until(lambda: gossip(first)["refused_handshakes"] >= before + 2,
              "the outsider's handshakes were not refused")
        until(lambda: "uses a mesh secret this peer does not hold" in outsider.output,
              "the outsider never saw the first peer by mDNS")
        oid = get_json(outsider.url + "/api/health")["peer"]
        assert oid not in peer_ids(first)
        assert peer_ids(outsider) == {oid}
        g = gossip(first)
        assert g["dropped_bad_mac"] == g["dropped_bad_frame"] == 0  # nothing got that far
    finally:
        outsider.kill()


def test_mdns_txt_carries_no_secret_material(first: PeerProc) -> None:
    secret = (first.data_dir / SECRET_FILE_NAME).read_bytes().strip()
    keys = derive(secret)
    txt = asyncio.run(_browse(get_json(first.url + "/api/health")["peer"]))
    assert txt["kid"] == keys.key_id and txt["mesh"] == mesh_hash(MESH)
    values = " ".join(f"{k}={v}" for k, v in txt.items()).encode()
    forbidden = [secret, base64.urlsafe_b64encode(secret).rstrip(b"="), keys.server_secret,
                 keys.client_secret, keys.client_public, keys.server_public]
    for f in forbidden:
        assert f[:12] not in values, (f, txt)


async def _browse(peer_id: str) -> Mapping[str, str]:
    """The TXT record of `peer_id`, as a browser on 127.0.0.1 sees it."""
    seen: dict[str, Mapping[str, str]] = {}
    txt = build_txt(gossip="127.0.0.1:9", http_port=9)
    d = Discovery(DiscoveryConfig(interfaces=("127.0.0.1",), ttl_s=30), "browser-" +
                  uuid.uuid4().hex[:8], txt, lambda _a, t: seen.__setitem__(t["id"], t),
                  lambda _a: None, mesh_hash(MESH))
    async with d:
        deadline = time.monotonic() + 20
        while peer_id not in seen:
            assert time.monotonic() < deadline, f"{peer_id} not seen by mDNS: {seen}"
            await asyncio.sleep(0.05)
    return seen[peer_id]


def test_second_local_user_can_neither_read_the_secret_nor_join(
        first: PeerProc, root: Path) -> None:
    first.data_dir.chmod(0o755)  # the files' own modes must keep the other user out
    with local_user() as user:
        # neither the mesh secret nor the HTTP token (without it every write is a 401:
        # test_security_http) can be read by another local user
        for f in (first.data_dir / SECRET_FILE_NAME, first.data_dir / "http-token"):
            r = user.run("cat", str(f))
            assert r.returncode != 0 and b"Permission denied" in r.stderr, r
        data = root / "other-user"
        data.mkdir()
        os.chown(data, user.uid, user.gid)
        ga = get_json(first.url + "/api/health")["gossip_address"]
        before = gossip(first)["refused_handshakes"]
        env = {"PATH": os.environ["PATH"], "HOME": str(user.home), "PYTHONPATH": str(ROOT),
               "PYTHONDONTWRITEBYTECODE": "1", "BANZAI_WARM_WORKERS": "0"}
        log = root / "other-user.log"
        scratch = root / "scratch"
        scratch.mkdir()
        with log.open("wb") as out:
            proc = subprocess.Popen(user.sandbox(
                str(BIN / "banzai-peer"), "--data-dir", str(data / "peer"), "--http",
                "127.0.0.1:0", "--mdns-interface", "127.0.0.1", "--mesh-name", MESH,
                "--join", ga, "--slots", "1", scratch=scratch), env=env, stdout=out,
                stderr=subprocess.STDOUT, cwd=ROOT, stdin=subprocess.DEVNULL)
        try:
            until(lambda: "web UI:" in log.read_text() or proc.poll() is not None,
                  "the other user's peer did not start", START_TIMEOUT_S)
            assert proc.poll() is None, log.read_text()
            until(lambda: gossip(first)["refused_handshakes"] >= before + 2,
                  "the other user's handshakes were not refused")
            m = re.search(r"banzai-peer (\w+) \(", log.read_text())
            assert m is not None and m.group(1) not in peer_ids(first)
        finally:
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
