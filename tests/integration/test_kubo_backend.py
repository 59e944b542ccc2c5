"""`--store kubo` against real Kubo daemons on loopback (tests/integration/kubo.py).

A mixed mesh (one Kubo-backed peer, one embedded) exchanges outputs both ways with the same
CIDs as an embedded-only run and the Kubo node pins what its peer produced; two Kubo-backed
peers get their Kubo nodes swarm-connected and move data between them by bitswap.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from peer.ipfs import EmbeddedStore
from peer.ipfs.kubo import KuboClient
from peer.mesh.keyring import kubo_swarm_key, parse_secrets
from tests.conftest import BIN, ROOT, PeerProc
from tests.helpers import get_json as get
from tests.helpers import post_json as post
from tests.helpers import wait_job, wait_mesh
from tests.integration.kubo import KuboDaemon, kubo_binary, restart_kubo, start_kubo

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


@pytest.fixture
def kubo(tmp_path: Path) -> Iterator[Callable[..., KuboDaemon]]:
    """Start throw-away Kubo daemons with kubo(name[, swarm_key]), restart one with
    kubo(name, again=daemon); all are stopped at teardown."""
    kubo_binary()
    started: list[KuboDaemon] = []

    def start(name: str, swarm_key: str | None = None,
              again: KuboDaemon | None = None) -> KuboDaemon:
        """A new daemon, or `again`'s repo restarted."""
        k = restart_kubo(again) if again else start_kubo(tmp_path / f"kubo-{name}",
                                                          swarm_key=swarm_key)
        started.append(k)
        return k

    yield start
    for k in started:
        k.stop()


def job(peer: PeerProc, pipeline: list[dict[str, Any]], timeout_s: float = 60,
        ) -> dict[str, Any]:
    j = post(peer.url + "/api/jobs", pipeline)["job"]
    try:
        v = wait_job(peer, j, timeout_s)
    except AssertionError:
        v = get(f"{peer.url}/api/jobs/{j}")
        raise AssertionError(f"job {j} not finished: {v['tasks']}") from None
    assert v["state"] == "done", [(t["name"], t.get("error")) for t in v["tasks"]]
    return v


def until(pred: Callable[[], Any], what: str, timeout_s: float = 20) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if got := pred():
            return got
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_client_matches_embedded_store(kubo: Callable[[str], KuboDaemon],
                                       tmp_path: Path) -> None:
    """add (file, tree), cat, ls, pins and CARs both ways agree with EmbeddedStore."""
    k = kubo("solo")
    src = tmp_path / "src"
    (src / "sub" / "empty").mkdir(parents=True)
    (src / ".hidden").write_bytes(b"dot\n")
    (src / "sub" / "naïve +%.txt").write_text("é\n")
    (src / "sub" / "big.bin").write_bytes(bytes(range(256)) * 2000)
    store = EmbeddedStore(tmp_path / "store")

    async def go() -> None:
        c = KuboClient(k.api)
        try:
            assert await c.version() == "0.39.0"
            for p in (src / ".hidden", src / "sub" / "big.bin", src):
                assert await c.add(p) == store.add_path(p)
            root = store.add_path(src)
            assert await c.cat(f"{root}/sub/naïve +%.txt") == "é\n".encode()
            assert [e["Name"] for e in await c.ls(root)] == [".hidden", "sub"]
            assert (await c.pin_ls(root))[root] == "recursive"
            await c.pin_rm(root)
            assert await c.pin_ls(root) == {}
            only_here = store.add_bytes(b"only in the embedded store\n" * 50_000)
            assert await c.dag_import(b"".join(store.export_car(only_here))) == [only_here]
            assert await c.pin_ls(only_here) == {only_here: "recursive"}
            car = await c.dag_export(root, offline=True)
            assert EmbeddedStore(tmp_path / "fresh").import_car([car], pin=True) == [root]
        finally:
            await c.close()

    asyncio.run(go())


@pytest.mark.parametrize("api", ["http://127.0.0.1:1", "not-a-url"])
def test_bad_ipfs_api_is_a_clear_error(tmp_path: Path, api: str) -> None:
    done = subprocess.run(
        [str(BIN / "banzai-peer"), "--data-dir", str(tmp_path / "d"), "--http", "127.0.0.1:0",
         "--no-mdns", "--store", "kubo", "--ipfs-api", api],
        capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 2, done.stderr
    assert api in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert re.search(rf"^banzai-peer: .*{re.escape(api)}", done.stderr, re.M), done.stderr


def start_all(peer_factory: Any, specs: dict[str, tuple[str, ...]]) -> list[PeerProc]:
    """Start peers concurrently (a peer takes seconds to start on a loaded machine)."""
    with ThreadPoolExecutor(len(specs)) as pool:
        return list(pool.map(lambda kv: peer_factory(kv[0], "--slots", "1", *kv[1]),
                             specs.items()))


def occupy(peer: PeerProc) -> tuple[str, str]:
    """Take the one free slot of a two-peer mesh with a T_SLEEP job: (job, peer running it)."""
    j = post(peer.url + "/api/jobs", [{"call": "T_SLEEP"}])["job"]

    def runner() -> str | None:  # from the peers' own "running" (robust to split races)
        return next((p["id"] for p in get(peer.url + "/api/peers")["peers"]
                     if any(r[0] == j for r in p.get("running") or ())), None)

    return j, until(runner, "a sleeper to start")


def _embedded_only(tmp: Path, texts: list[str]) -> list[str]:
    """CIDs of T_WRITE, T_UPPER and T_CONCAT computed with one EmbeddedStore, no mesh."""
    store = EmbeddedStore(tmp / "ref-store")
    cids = []
    transforms: list[Callable[[str], str]] = [str, str.upper]
    for i, transform in enumerate(transforms):
        d = tmp / f"ref-{i}"
        d.mkdir()
        for n, text in enumerate(texts):
            (d / f"f{n:04d}.txt").write_text(transform(text))
        cids.append(store.add_path(d))
    return [*cids, store.add_bytes("".join(texts).upper().encode())]


def test_mixed_mesh_exchanges_both_ways(peer_factory: Any, kubo: Callable[..., KuboDaemon],
                                        tmp_path: Path) -> None:
    """Job 1 on one peer, job 2 (its output as input) on the other, job 3 back on the first:
    each placed by filling the other peer's only slot with a sleeper. The Kubo peer does not
    manage its Kubo's repo: it tells the operator how to make it private."""
    ka = kubo("a")
    kp, ep = start_all(peer_factory, {"kp": ("--store", "kubo", "--ipfs-api", ka.api),
                                      "ep": ()})
    assert "is not managed by this peer (no --kubo-repo)" in kp.output
    assert (kp.data_dir / "kubo-swarm.key").read_text() == _swarm_key(kp)
    assert not (ka.repo / "swarm.key").exists()
    steps: list[dict[str, Any]] = [{"call": "T_WRITE", "args": [3, "mixed"]}, {"call": "T_UPPER"},
                                   {"call": "T_CONCAT"}]
    want = _embedded_only(tmp_path, [f"file {i} mixed\n" for i in range(3)])
    wait_mesh([kp, ep], 2)
    by_id = {get(p.url + "/api/health")["peer"]: p for p in (kp, ep)}

    s1, busy = occupy(kp)
    first = next(p for i, p in by_id.items() if i != busy)
    x = job(first, steps[:1])["outputs"]["t_write"]
    s2, _ = occupy(first)  # now both are busy
    post(f"{kp.url}/api/jobs/{s1}/cancel")
    second = by_id[busy]
    v2 = job(second, [{"cid": x}, steps[1]])
    y = v2["outputs"]["t_upper"]
    s3, _ = occupy(second)
    post(f"{kp.url}/api/jobs/{s2}/cancel")
    v3 = job(first, [{"cid": y}, steps[2]])
    z = v3["outputs"]["t_concat"]
    post(f"{kp.url}/api/jobs/{s3}/cancel")

    assert [x, y, z] == want
    assert v2["tasks"][1]["peers"] == [busy] and v3["tasks"][1]["peers"] != [busy]
    until(lambda: all(ka.pinned(c) for c in (x, y, z)),
          "Kubo to pin every output (its peer's own and the replicas)")
    if first is ep:  # ep made x and z (small, not per-item: inline), and Kubo pins them
        assert get(kp.url + "/api/health")["inline"]["kept"] >= 2
    assert ka.rpc("cat", z) == b"FILE 0 MIXED\nFILE 1 MIXED\nFILE 2 MIXED\n"


def _swarm_key(peer: PeerProc) -> str:
    """The swarm key of a peer's mesh (from the secret file it was started with)."""
    secret_file = Path(peer.args[peer.args.index("--secret-file") + 1])
    return kubo_swarm_key(parse_secrets(secret_file.read_bytes())[0])


def test_two_kubo_peers_connect_and_use_bitswap(peer_factory: Any,
                                                kubo: Callable[..., KuboDaemon]) -> None:
    """Heartbeats make the Kubo nodes connect; a replica then moves by bitswap. Both run in
    the mesh's private swarm: A's repo got its swarm key from its peer (--kubo-repo, then
    restarted as the peer asks), B's was installed by hand; a Kubo outside cannot connect."""
    ka, outsider = kubo("a"), kubo("outsider")
    pa = peer_factory("pa", "--slots", "1", "--store", "kubo", "--ipfs-api", ka.api,
                      "--kubo-repo", str(ka.repo))
    key = _swarm_key(pa)
    assert (ka.repo / "swarm.key").read_text() == key
    assert "restart the Kubo daemon" in pa.output
    pa.kill(signal.SIGTERM)
    ka = kubo("a", again=ka)
    assert "Swarm is limited to private network of peers with the swarm key" in \
        ka.log.read_text()
    kb = kubo("b", key)
    # outputs above the inline bound (0 here) replicate by CID: bitswap between the Kubos
    no_inline = ("--inline-output-max-bytes", "0")
    pa, pb = start_all(peer_factory, {
        "pa": ("--store", "kubo", "--ipfs-api", ka.api, "--kubo-repo", str(ka.repo),
               *no_inline),
        "pb": ("--store", "kubo", "--ipfs-api", kb.api, "--kubo-repo", str(kb.repo),
               *no_inline)})
    assert "holds the mesh's swarm key" in pa.output
    # A Kubo outside the private swarm: no handshake. Its attempt fails at once or hangs until
    # the command's timeout (who writes first on the PSK-encrypted stream decides); 2 s is
    # some 300 times what a handshake of two members takes on loopback (5-7 ms).
    with pytest.raises(AssertionError):
        outsider.rpc("swarm/connect", f"{kb.rpc('id')['Addresses'][0]}", timeout="2s",
                     timeout_s=15)
    wait_mesh([pa, pb], 2)
    a_id = ka.peer_id()
    until(lambda: any(p["Peer"] == a_id for p in kb.rpc("swarm/peers")["Peers"] or ()),
          "the Kubo nodes to be swarm-connected by their peers")
    with pytest.raises(AssertionError):  # still no handshake from outside
        outsider.rpc("swarm/connect", f"{kb.rpc('id')['Addresses'][0]}", timeout="2s",
                     timeout_s=15)

    # Blocks only Kubo A holds (added to it directly) are exported by Kubo B: bitswap.
    only_a = pa.data_dir.parent / "only-a.bin"
    only_a.write_bytes(bytes(range(256)) * 3000)  # 3 blocks
    cid = subprocess.run([kubo_binary(), "add", "-Q", "--cid-version=1", str(only_a)],
                         env={**os.environ, "IPFS_PATH": str(ka.repo)}, capture_output=True,
                         text=True, check=True, timeout=30).stdout.strip()
    car = kb.rpc("dag/export", cid, timeout="20s", timeout_s=30)
    assert EmbeddedStore(pa.data_dir.parent / "check").import_car([car], pin=True) == [cid]

    # An output made by one peer is replicated by the other through its Kubo (bitswap).
    v = job(pa, [{"call": "T_WRITE", "args": [2, "swarm"]}])
    x, maker = v["outputs"]["t_write"], v["tasks"][0]["peers"][0]
    other = pb if get(pa.url + "/api/health")["peer"] == maker else pa
    until(lambda: re.search(rf"fetched {x} from Kubo \(\d+ bytes, bitswap\)", other.output),
          "the replica to come from Kubo by bitswap")
    until(lambda: ka.pinned(x) and kb.pinned(x), "both Kubo nodes to pin the output")
