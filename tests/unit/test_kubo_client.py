"""KuboClient and KuboMirror against a fake Kubo RPC API (aiohttp, in process)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from peer import config
from peer.errors import ConfigError
from peer.ipfs import EmbeddedStore
from peer.ipfs.kubo import (
    KuboClient,
    KuboError,
    KuboMirror,
    KuboStore,
    kubo_info,
    parse_api_url,
    private_swarm,
)
from peer.ipfs.replicate import mirrored
from peer.log import Event, EventType


class FakeKubo:
    """Records every call; replies as Kubo 0.39 does (500 + JSON Message on errors)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[tuple[str, str]]]] = []
        self.parts: list[tuple[str, str, bytes]] = []  # filename, content type, body
        self.pins: dict[str, str] = {}
        self.cars: dict[str, bytes] = {}
        self.imported: list[bytes] = []
        self.connected: list[str] = []

    async def handle(self, request: web.Request) -> web.StreamResponse:
        cmd = request.match_info["cmd"]
        self.calls.append((cmd, list(request.query.items())))
        if request.content_type.startswith("multipart/"):
            reader = await request.multipart()
            while (part := await reader.next()) is not None:
                disp = part.headers.get("Content-Disposition", "")
                name = unquote(disp.split('filename="', 1)[1].rstrip('"'))
                self.parts.append((name, part.headers.get("Content-Type", ""),
                                   await part.read()))  # type: ignore[union-attr]
        handler = getattr(self, "cmd_" + cmd.replace("/", "_"), None)
        if handler is None:
            return web.Response(status=404, text="404 page not found")
        try:
            reply = await handler(request)
            return reply if isinstance(reply, web.Response) else web.json_response(reply)
        except LookupError as e:
            return web.json_response({"Message": str(e.args[0]), "Code": 0, "Type": "error"},
                                     status=500)

    def exports(self) -> list[dict[str, str]]:
        return [dict(q) for c, q in self.calls if c == "dag/export"]

    async def cmd_version(self, r: web.Request) -> Any:
        return {"Version": "0.39.0"}

    async def cmd_id(self, r: web.Request) -> Any:
        return {"ID": "12D3KooWSelf", "Addresses": ["/ip4/127.0.0.1/tcp/4001/p2p/12D3KooWSelf"]}

    async def cmd_add(self, r: web.Request) -> Any:
        return {"Name": "x", "Hash": "bafyroot"}

    async def cmd_pin_ls(self, r: web.Request) -> Any:
        arg = r.query.get("arg")
        if arg and arg not in self.pins:
            raise LookupError(f"path '{arg}' is not pinned")
        return {"Keys": {k: {"Type": v} for k, v in self.pins.items()
                         if arg in (None, k)}}

    async def cmd_dag_import(self, r: web.Request) -> Any:
        self.imported.append(self.parts[-1][2])
        roots = [c for c, car in self.cars.items() if car == self.parts[-1][2]]
        if not roots:
            raise LookupError("unexpected CAR")
        self.pins[roots[0]] = "recursive"
        return {"Root": {"Cid": {"/": roots[0]}, "PinErrorMsg": ""}}

    async def cmd_dag_export(self, r: web.Request) -> Any:
        car = self.cars.get(r.query["arg"])
        if car is None or (r.query["offline"] == "true" and r.query["arg"] not in self.pins):
            raise LookupError("block was not found locally (offline)")
        return web.Response(body=car)

    async def cmd_pin_rm(self, r: web.Request) -> Any:
        if self.pins.pop(r.query["arg"], None) is None:
            raise LookupError("not pinned or pinned indirectly")
        return {"Pins": [r.query["arg"]]}

    async def cmd_repo_gc(self, r: web.Request) -> Any:
        gone = [c for c in self.cars if c not in self.pins]
        for c in gone:
            del self.cars[c]
        return web.Response(text="".join(f'{{"Key":{{"/":"{c}"}}}}\n' for c in gone))

    async def cmd_swarm_peers(self, r: web.Request) -> Any:
        return {"Peers": [{"Peer": p} for p in self.connected]}

    async def cmd_swarm_connect(self, r: web.Request) -> Any:
        self.connected.append(r.query["arg"].rsplit("/p2p/", 1)[1])
        return {"Strings": ["connect success"]}


Serve = Callable[[], Awaitable[tuple[FakeKubo, str]]]


@pytest.fixture
async def fake() -> AsyncIterator[Serve]:
    servers: list[TestServer] = []

    async def serve() -> tuple[FakeKubo, str]:
        k = FakeKubo()
        app = web.Application(client_max_size=64 << 20)
        app.router.add_post("/api/v0/{cmd:.+}", k.handle)
        s = TestServer(app, host="127.0.0.1")
        await s.start_server()
        servers.append(s)
        return k, f"http://127.0.0.1:{s.port}"

    yield serve
    for s in servers:
        await s.close()


@pytest.mark.parametrize(("given", "url"), [
    ("http://127.0.0.1:5001", "http://127.0.0.1:5001"),
    ("http://127.0.0.1:5001/", "http://127.0.0.1:5001"),
    ("/ip4/127.0.0.1/tcp/5001", "http://127.0.0.1:5001"),
    ("/ip6/::1/tcp/5001", "http://[::1]:5001"),
    ("/dns4/kubo.local/tcp/5001/http", "http://kubo.local:5001"),
])
def test_api_url_forms(given: str, url: str) -> None:
    assert parse_api_url(given) == url


@pytest.mark.parametrize("bad", ["", "127.0.0.1:5001", "ftp://h:1", "http://h", "http://h:x",
                                 "http://h:1/api/v0", "/ip4/1.2.3.4/udp/1"])
def test_bad_api_url_is_a_config_error(bad: str) -> None:
    with pytest.raises(ConfigError, match="ipfs_api"):
        parse_api_url(bad)


def test_config_replicas_and_ipfs_api() -> None:
    assert config.load({}, env={}).replicas == 2
    assert config.load({}, env={"BANZAI_REPLICAS": "3"}).replicas == 3
    assert config.from_args(["--replicas", "1"])[0].replicas == 1
    with pytest.raises(ConfigError, match="replicas"):
        config.load({"replicas": 0}, env={})
    with pytest.raises(ConfigError, match="not-a-url"):
        config.load({"store": "kubo", "ipfs_api": "not-a-url"}, env={})


async def test_add_sends_a_kubo_multipart_tree(fake: Serve, tmp_path: Path) -> None:
    k, url = await fake()
    root = tmp_path / "d"
    (root / "sub" / "empty").mkdir(parents=True)
    (root / "a b%.txt").write_bytes(b"a")
    (root / "sub" / "z.bin").write_bytes(b"z" * 3_000_000)
    c = KuboClient(url)
    try:
        assert await c.add(root) == "bafyroot"
    finally:
        await c.close()
    q = dict(k.calls[0][1])
    assert (q["cid-version"], q["raw-leaves"], q["pin"]) == ("1", "true", "true")
    assert [(n, t) for n, t, _ in k.parts] == [
        ("d", "application/x-directory"), ("d/a b%.txt", "application/octet-stream"),
        ("d/sub", "application/x-directory"), ("d/sub/empty", "application/x-directory"),
        ("d/sub/z.bin", "application/octet-stream")]
    assert k.parts[-1][2] == b"z" * 3_000_000


async def test_errors_name_the_api(fake: Serve) -> None:
    k, url = await fake()
    c = KuboClient(url)
    try:
        with pytest.raises(KuboError, match=f"{url}: no command nope"):
            await c.call("nope")
        assert await c.pin_ls("bafyx") == {}
        k.pins["bafyx"] = "recursive"
        assert await c.pin_ls("bafyx") == {"bafyx": "recursive"}
        with pytest.raises(KuboError, match=f"{url}: dag/export: block was not found"):
            await c.dag_export("bafyx", offline=True)
    finally:
        await c.close()
    dead = KuboClient("http://127.0.0.1:1")
    with pytest.raises(KuboError, match=r"http://127.0.0.1:1 unreachable"):
        await dead.version()
    await dead.close()


async def test_mirror_start_fails_clearly_when_unreachable(tmp_path: Path) -> None:
    m = KuboMirror(KuboStore(tmp_path, "http://127.0.0.1:1"), "me", dict, lambda c: ())
    with pytest.raises(ConfigError, match=r"--ipfs-api: .*http://127.0.0.1:1 unreachable"):
        await m.start()
    await m.close()


def _done(origin: str, cid: str, cached: bool = False) -> Event:
    return Event(origin, 1, 1, EventType.TASK_DONE,
                 {"job": "j", "task": "t", "output": cid, "cached": cached})


async def test_mirror_pushes_own_outputs_and_fetches_first(fake: Serve, tmp_path: Path) -> None:
    k, url = await fake()
    store = KuboStore(tmp_path / "s", url)
    mine = store.add_bytes(b"mine\n" * 100_000)
    store.pin(mine)
    theirs_store = EmbeddedStore(tmp_path / "t")
    theirs = theirs_store.add_bytes(b"theirs\n")
    k.cars = {mine: b"".join(store.export_car(mine)),
              theirs: b"".join(theirs_store.export_car(theirs))}
    infos: dict[str, dict[str, Any]] = {
        "p1": {"kubo": {"id": "12D3KooWOther", "addrs": ["/ip4/127.0.0.1/tcp/4002"]}},
        "p2": {}}
    provs = {theirs: {"p2"}}
    m = KuboMirror(store, "me", lambda: infos, lambda c: provs.get(c, set()),
                   connect_every_s=0.01)
    await m.start()
    try:
        assert m.info() == {"kubo": {"id": "12D3KooWSelf",
                                     "addrs": ["/ip4/127.0.0.1/tcp/4001/p2p/12D3KooWSelf"]}}
        m.mirror(mirrored(_done("p1", theirs), "me"))  # not ours: ignored
        m.mirror(mirrored(_done("me", mine, cached=True), "me"))  # cached: ignored
        for _ in range(100):  # the start-up pin sync mirrors `mine` once
            if mine in k.pins and "12D3KooWOther" in k.connected:
                break
            await asyncio.sleep(0.02)
        assert k.imported == [k.cars[mine]] and k.pins == {mine: "recursive"}
        assert k.connected[0] == "12D3KooWOther"
        # theirs: its only provider has no Kubo -> offline, and Kubo doesn't have it
        assert not await m.fetch(theirs)
        assert k.exports()[-1]["offline"] == "true"
        provs[theirs] = {"p1"}  # a provider with Kubo -> online (bitswap)
        # (review r0, session 39: the fetcher's caller's bound, not the mirror's 8 GiB)
        assert not await m.fetch(theirs, (), len(k.cars[theirs]) - 1)
        assert await m.fetch(theirs)
        assert k.exports()[-1]["offline"] == "false"
        assert theirs in store.pins() or store.has(theirs)
    finally:
        await m.close()


@pytest.mark.parametrize(("event", "want"), [
    (_done("me", "bafyout"), ["bafyout"]),  # computed here
    (_done("me", "bafyout", cached=True), []),  # found in the cache: mirrored when computed
    (_done("p1", "bafyout"), []),  # another peer's output: its own Kubo mirrors it
    (Event("me", 2, 2, EventType.PROVIDE, {"cids": ["bafya", "bafyb"]}), ["bafya", "bafyb"]),
    (Event("p1", 2, 2, EventType.PROVIDE, {"cids": ["bafya"]}), []),
    (Event("me", 3, 3, EventType.JOB_CANCELLED, {"job": "j", "reason": ""}), []),
])
def test_mirrored_is_what_this_peer_computed_or_provides(event: Event, want: list[str]) -> None:
    assert mirrored(event, "me") == want


def test_kubo_info_rejects_junk() -> None:
    ok = {"kubo": {"id": "12D3", "addrs": ["/ip4/1.2.3.4/tcp/1", 5, "x"]}}
    assert kubo_info(ok) == ("12D3", ["/ip4/1.2.3.4/tcp/1"])
    for bad in ({}, {"kubo": "x"}, {"kubo": {"id": 1, "addrs": []}},
                {"kubo": {"id": "a", "addrs": []}}, {"kubo": {"id": "", "addrs": ["/x"]}}):
        assert kubo_info(bad) is None


async def test_unpinned_outputs_go_from_kubo_too(fake: Serve, tmp_path: Path) -> None:
    """Retention's unpins reach Kubo (a CID Kubo never pinned is no error), then its repo gc."""
    kubo, url = await fake()
    store = KuboStore(tmp_path / "s", url)
    mirror = KuboMirror(store, "me", peers=dict, providers=lambda c: ())
    try:
        kubo.cars = {"bafyout": b"car", "bafykept": b"car2"}
        kubo.pins = {"bafyout": "recursive", "bafykept": "recursive"}
        mirror.pushed.update(kubo.pins)
        await mirror.unpin(["bafyout", "bafynever"])
        assert kubo.pins == {"bafykept": "recursive"} and mirror.pushed == {"bafykept"}
        await mirror.gc()
        assert set(kubo.cars) == {"bafykept"}
        assert await store.client.repo_gc() == 0
    finally:
        await store.client.close()


def test_private_swarm_writes_the_key_into_a_managed_repo(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    repo = tmp_path / "kubo"
    repo.mkdir()
    (repo / "config").write_text('{"Bootstrap": [], "AutoConf": {"Enabled": false}}')
    key = "/key/swarm/psk/1.0.0/\n/base16/\n" + "ab" * 32 + "\n"
    assert private_swarm(key, repo, "http://127.0.0.1:5001", tmp_path / "data") is True
    assert (repo / "swarm.key").read_text() == key
    assert (repo / "swarm.key").stat().st_mode & 0o777 == 0o600
    assert "restart the Kubo daemon" in caplog.text and "public peers" not in caplog.text
    assert private_swarm(key, repo, "http://127.0.0.1:5001", tmp_path / "data") is False
    (repo / "config").write_text('{"Bootstrap": ["auto"]}')
    private_swarm(key, repo, "http://127.0.0.1:5001", tmp_path / "data")
    assert "bootstraps to public peers" in caplog.text
    with pytest.raises(ConfigError, match="not a Kubo repo"):
        private_swarm(key, tmp_path / "nowhere", "http://127.0.0.1:5001", tmp_path / "data")


@pytest.mark.parametrize("config", ["[]", '"text"', "3", '{"AutoConf": "on"}',
                                    '{"AutoConf": [], "Bootstrap": []}'])
def test_a_kubo_config_of_another_shape_is_warned_of_not_a_traceback(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, config: str) -> None:
    """Review r1 L3: a JSON list (or AutoConf a string) raised AttributeError out of the
    start (`--store kubo --kubo-repo`); such a config is not known to be private."""
    repo = tmp_path / "kubo"
    repo.mkdir()
    (repo / "config").write_text(config)
    key = "/key/swarm/psk/1.0.0/\n/base16/\n" + "ab" * 32 + "\n"
    assert private_swarm(key, repo, "http://127.0.0.1:5001", tmp_path / "data") is True
    assert "bootstraps to public peers or has AutoConf on" in caplog.text


def test_private_swarm_tells_how_to_configure_a_kubo_it_does_not_manage(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    data = tmp_path / "data"
    data.mkdir()
    key = "/key/swarm/psk/1.0.0/\n/base16/\n" + "cd" * 32 + "\n"
    assert private_swarm(key, None, "http://127.0.0.1:5001", data) is False
    assert (data / "kubo-swarm.key").read_text() == key
    assert "--kubo-repo" in caplog.text and "swarm.key" in caplog.text
