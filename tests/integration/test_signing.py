"""Signed events and membership between real peers on loopback (issue 10 item 4): a data dir
of 0.1.0 upgraded in place is caught up by a fresh peer; forged, replayed and wrongly signed
frames sent by an insider (it holds the mesh secret) are dropped and counted in /api/health;
a revoked member's new events are refused. One mesh of three peers for the whole module."""

from __future__ import annotations

import json
import secrets
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from peer.log import Event, EventType
from peer.log.signing import Identity
from peer.mesh.wire import Kind, events_body, pack_frames
from tests.conftest import BIN, PeerProc, start_peer
from tests.gossip_client import GossipClient
from tests.helpers import get_json as get
from tests.helpers import post_json as post
from tests.helpers import wait_mesh
from tests.integration.test_mesh import until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]  # 3 peers start in setup

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "datadir-v0.1.0"
FIXTURE_JOBS = {j["id"] for j in json.loads(
    (FIXTURE.parent / "datadir-v0.1.0.json").read_text())["jobs"].values()}
MESH = f"sign-{secrets.token_hex(6)}"


class Mesh:
    def __init__(self, root: Path) -> None:
        self.secret = secrets.token_hex(32).encode()
        self.secret_file = root / "secret"
        self.secret_file.write_bytes(self.secret)
        self.root = root
        self.peers: list[PeerProc] = []

    def start(self, name: str, *extra: str) -> PeerProc:
        join = [f for p in self.peers for f in ("--join", get(p.url + "/api/health")
                                                ["gossip_address"])]
        p = start_peer(self.root / name, "--no-mdns", "--secret-file", str(self.secret_file),
                       "--slots", "1", *join, *extra, mesh=MESH, timeout_s=120)
        self.peers.append(p)
        return p


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    root = tmp_path_factory.mktemp("signing")
    shutil.copytree(FIXTURE, root / "old")
    m = Mesh(root)
    try:
        m.start("old")  # the data dir of 0.1.0, upgraded in place
        m.start("fresh")
        m.start("leaver")
        wait_mesh(m.peers, 3)
        yield m
    finally:
        for p in m.peers:
            p.kill(signal.SIGTERM)


def health(p: PeerProc) -> dict[str, Any]:
    h: dict[str, Any] = get(p.url + "/api/health")
    return h


def test_a_fresh_peer_catches_up_the_upgraded_history(mesh: Mesh) -> None:
    old, fresh, _ = mesh.peers
    until(lambda: {j["id"] for j in get(fresh.url + "/api/jobs")["jobs"]} >= FIXTURE_JOBS,
          "the fresh peer never got the jobs of the 0.1.0 data dir")
    h = health(fresh)
    assert h["security"]["refused"] == {} and h["gossip"]["events_refused"] == 0
    assert health(old)["peer"] == "9b79d67a1e23336a"  # the 0.1.0 id stays
    assert len(h["peer"]) == 20  # a new peer's id certifies its key
    # a skew is read from a probe's answer, and a peer probes one member per period
    others = {health(p)["peer"] for p in mesh.peers} - {h["peer"]}
    until(lambda: set(health(fresh)["security"]["skew_ms"]) == others,
          lambda: f"skews {health(fresh)['security']['skew_ms']} never covered {others}")


class Intruder:
    """An insider: it holds the mesh secret and an identity of its own, and talks to `target`
    through tests/gossip_client.py (CURVE with the mesh's keys, like any member)."""

    def __init__(self, mesh: Mesh, target: PeerProc) -> None:
        self.client = GossipClient(MESH, mesh.secret, reply_to="127.0.0.1:9", identity=True)
        self.me = self.client.me()
        self.id = self.client.sender
        self.addr = str(health(target)["gossip_address"])

    def send(self, kind: Kind, body: bytes, sender: str | None = None) -> None:
        self.client.send(self.addr, kind, body, sender=sender)

    def heartbeat(self, inc: int, ctr: int, sender: str | None = None) -> None:
        self.client.heartbeat(self.addr, {"free_slots": 0}, sender=sender, inc=inc, ctr=ctr)

    def events(self, events: list[Event], origin_signer: str, tamper: bool = False,
               key: Identity | None = None) -> None:
        """EVENTS signed by `key` (ours by default) as if by `origin_signer`."""
        self.client.sign(events, origin_signer, key)
        frames, _ = pack_frames(events, 1 << 20, 512)
        evs, batches = frames[0]
        if tamper:
            b = json.loads(batches[0])
            b["g"] = bytes(64).hex()
            batches = [json.dumps(b).encode()]
        self.send(Kind.EVENTS, events_body(evs, 0, batches))

    def close(self) -> None:
        self.client.close()


def submitted(origin: str, job: str) -> Event:
    return Event(origin, 10_000, 1, EventType.JOB_SUBMITTED, {"job": job, "workflow": {
        "name": "forged", "tasks": [{"name": "t", "call": "T_WRITE", "args": [1],
                                     "params": {}, "depends": []}]}})


def test_forged_replayed_and_wrongly_signed_frames_are_dropped_and_counted(mesh: Mesh) -> None:
    old, fresh, _ = mesh.peers
    victim = health(old)["peer"]
    before = health(fresh)["gossip"]
    x = Intruder(mesh, fresh)
    try:
        x.heartbeat(1, 5)  # its own identity: admitted
        x.heartbeat(1, 5)  # the same heartbeat replayed
        x.heartbeat(1, 4)  # an older one
        x.heartbeat(1, 6, sender=victim)  # under another member's id, with its own key
        x.send(Kind.HEARTBEAT, b'{"info":{"free_slots":0}}', sender=victim)  # unsigned
        job = "j" + secrets.token_hex(6)
        x.events([submitted(victim, job)], victim)  # speaks for the victim
        x.events([Event(x.id, 1, 1, EventType.JOB_CANCELLED, {"job": job, "reason": "x"})],
                 x.id, tamper=True)  # its own event, wrongly signed

        def counted() -> dict[str, Any] | None:
            h = health(fresh)
            g, refused = h["gossip"], h["security"]["refused"]
            ok = (g["dropped_replayed"] >= before["dropped_replayed"] + 2
                  and g["dropped_key_conflict"] >= before["dropped_key_conflict"] + 1
                  and g["dropped_unsigned"] >= before["dropped_unsigned"] + 1
                  and refused.get(victim, {}).get("key_conflict", 0) >= 1
                  and refused.get(x.id, {}).get("bad_signature", 0) >= 1)
            return h if ok else None
        h = until(counted, lambda: f"not all counted: {health(fresh)}")
        assert h["security"]["key_conflicts"][victim] == {"other_key": 2}  # heartbeat, batch
    finally:
        x.close()
    for p in mesh.peers:  # the forged job reached no peer's state
        assert not any(j["id"] == job for j in get(p.url + "/api/jobs")["jobs"])


def test_a_revoked_members_new_events_are_refused(mesh: Mesh) -> None:
    old, fresh, leaver = mesh.peers
    lid = health(leaver)["peer"]
    out = subprocess.run([str(BIN / "banzai"), "--peer", old.url, "mesh", "revoke", lid],
                         capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    for p in (old, fresh):
        until(lambda p=p: lid in health(p)["security"]["revoked"],
              f"{p.url} never learned the revocation")
        until(lambda p=p: next(x for x in get(p.url + "/api/peers")["peers"]
                               if x["id"] == lid)["state"] == "revoked",
              "the mesh view does not show the member as revoked")
    # the leaver's own frames are refused at the door...
    until(lambda: all(health(p)["gossip"]["dropped_revoked"] > 0 for p in (old, fresh)),
          "the revoked member's frames were never refused")
    # ...and its new events, signed with its real key, are refused when another member relays
    x = Intruder(mesh, fresh)
    job = "j" + secrets.token_hex(6)
    try:
        x.events([submitted(lid, job)], lid, key=Identity.load(leaver.data_dir / "identity.key"))
        until(lambda: health(fresh)["security"]["refused"].get(lid, {}).get("revoked", 0) >= 1,
              lambda: f"never refused: {health(fresh)['security']}")
    finally:
        x.close()
    assert job not in {j["id"] for j in get(fresh.url + "/api/jobs")["jobs"]}
    # the remaining members still work together
    job2 = post(fresh.url + "/api/jobs", [{"call": "T_WRITE", "args": [2]}])["job"]
    until(lambda: get(f"{old.url}/api/jobs/{job2}")["state"] == "done"
          if job2 in {j["id"] for j in get(old.url + "/api/jobs")["jobs"]} else False,
          "the remaining members did not run a job")
