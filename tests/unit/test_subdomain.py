"""The subdomain gateway: Host parsing, DNS labels and redirects (peer/ipfs/subdomain.py, pure)
and the gateway's middleware over a real EmbeddedStore through aiohttp's test client."""

from __future__ import annotations

import ctypes.util
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from hypothesis import given
from hypothesis import strategies as st

from peer.cids import DAG_PB, RAW, Cid, parse_cid
from peer.errors import ArgError, BadCID
from peer.ipfs import EmbeddedStore, ipns
from peer.ipfs.gateway import add_routes, render_listing
from peer.ipfs.store import DirLink, Entry
from peer.ipfs.subdomain import (
    DNS_LABEL_MAX,
    ContentHost,
    SubdomainConfig,
    canonical_root,
    dns_label,
    gateway_host,
    parse_host,
    protocol_redirect,
    redirect_url,
    served_label,
    split_port,
)

Client = TestClient[Any, Any]
MakeClient = Callable[[web.Application], Awaitable[Client]]
LOCAL = frozenset({"localhost"})
V0 = "QmbWqxBEKC3P8tqsKc98xmWNzrzDtRLMiMPL8wBuTGsMnR"
V0_AS_V1 = "bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi"
ED25519 = "12D3KooWLQzUv2FHWGVPXTXSZpdHs7oHbXub2G5WC8Tx4NQhyd2d"
SHA512 = Cid(1, RAW, b"\x13\x40" + bytes(64))  # no DNS label can hold it


@pytest.mark.parametrize(("host", "want"), [
    ("bafy.ipfs.localhost:8700", ContentHost("bafy", "ipfs", "localhost:8700")),
    ("k51.ipns.localhost", ContentHost("k51", "ipns", "localhost")),
    ("BAFY.IPFS.LocalHost:1", ContentHost("BAFY", "ipfs", "LocalHost:1")),
    ("bafy.ipfs.localhost.", ContentHost("bafy", "ipfs", "localhost")),
    ("en.wikipedia-on-ipfs.org.ipns.localhost:80",
     ContentHost("en.wikipedia-on-ipfs.org", "ipns", "localhost:80")),
    ("a.ipfs.b.ipfs.localhost", ContentHost("a.ipfs.b", "ipfs", "localhost")),
    ("localhost:8700", None), ("ipfs.localhost", None), (".ipfs.localhost", None),
    ("bafy.ipfs.evil.example", None), ("bafy.ipfs.127.0.0.1", None), ("[::1]:8700", None),
    ("bafy.ipld.localhost", None), ("", None),
])
def test_parse_host(host: str, want: ContentHost | None) -> None:
    assert parse_host(host, LOCAL) == want


def test_parse_host_of_another_gateway_host() -> None:
    hosts = frozenset({"gw.lab.example"})
    assert parse_host("bafy.ipfs.gw.lab.example:8080", hosts) == ContentHost(
        "bafy", "ipfs", "gw.lab.example:8080")
    assert parse_host("bafy.ipfs.localhost", hosts) is None
    assert gateway_host("GW.lab.example:8080", hosts) == "GW.lab.example:8080"
    assert gateway_host("localhost:8080", hosts) is None


@pytest.mark.parametrize(("host", "want"), [
    ("localhost:8700", ("localhost", ":8700")), ("localhost", ("localhost", "")),
    ("[::1]:80", ("[::1]", ":80")), ("[::1]", ("[::1]", "")), ("::1", ("::1", "")),
    ("localhost:", ("localhost", "")), ("[::1]:", ("[::1]", "")),  # an empty port is none
])
def test_split_port(host: str, want: tuple[str, str]) -> None:
    assert split_port(host) == want


@pytest.mark.parametrize("host", ["a:b", "bafy.ipfs.localhost:x", "localhost:\uff18",
                                  "[::1]x", "[::1]:y"])
def test_a_port_not_of_ascii_digits_is_refused(host: str) -> None:
    with pytest.raises(ArgError, match="port must be ASCII digits") as info:
        split_port(host)
    assert info.value.field == "host"
    with pytest.raises(ArgError):
        parse_host(host, LOCAL)  # the access rule reads the Host the same way (test_auth.py)
    assert gateway_host(host, LOCAL) is None


@pytest.mark.parametrize(("path", "query", "want"), [
    (f"/ipfs/{V0_AS_V1}", "", f"http://{V0_AS_V1}.ipfs.localhost:8080/"),
    (f"/ipfs/{V0_AS_V1}/", "", f"http://{V0_AS_V1}.ipfs.localhost:8080/"),
    (f"/ipfs/{V0}/", "", f"http://{V0_AS_V1}.ipfs.localhost:8080/"),
    (f"/ipfs/{V0}/a/b.txt", "x=1&y", f"http://{V0_AS_V1}.ipfs.localhost:8080/a/b.txt?x=1&y"),
    (f"/ipfs/{V0}/Portugal%252C+Espa%C3%B1a=Peninsula%20Ib%C3%A9rica.txt", "",
     f"http://{V0_AS_V1}.ipfs.localhost:8080/Portugal%252C+Espa%C3%B1a=Peninsula%20Ib%C3%A9rica"
     ".txt"),
    ("/ipns/en.wikipedia-on-ipfs.org/wiki/", "",
     "http://en-wikipedia--on--ipfs-org.ipns.localhost:8080/wiki/"),
    ("/ipfs/", "uri=ipfs://x", None), ("/ipfs", "", None), ("/api/jobs", "", None),
    ("/ipns/not a name/", "", None),
])
def test_redirect_url(path: str, query: str, want: str | None) -> None:
    assert redirect_url("http", "localhost:8080", path, query) == want


def test_redirect_of_an_ipns_key_is_its_base36_libp2p_key() -> None:
    key, _ = ipns.parse_name(ED25519)
    label = ipns.canonical(key)
    assert redirect_url("https", "localhost:1", f"/ipns/{ED25519}", "") == (
        f"https://{label}.ipns.localhost:1/")
    as_dag_pb = Cid(1, DAG_PB, key.multihash)  # another codec: fixed to libp2p-key
    assert redirect_url("http", "h", f"/ipns/{as_dag_pb}/x", "") == f"http://{label}.ipns.h/x"
    assert label.startswith("k") and len(label) <= DNS_LABEL_MAX


def test_invalid_and_too_long_roots() -> None:
    with pytest.raises(BadCID):
        redirect_url("http", "localhost", "/ipfs/QmInvalidCID", "")
    with pytest.raises(ArgError, match="CID incompatible with DNS label length limit of 63"):
        redirect_url("http", "localhost", f"/ipfs/{SHA512}/", "")
    with pytest.raises(ArgError, match="incompatible with DNS label length limit of 63"):
        canonical_root("ipns", "a" * 40 + "." + "b" * 30)


def test_served_label() -> None:
    key, _ = ipns.parse_name(ED25519)
    canonical = ipns.canonical(key)
    assert served_label(ContentHost(V0_AS_V1, "ipfs", "localhost")) is None
    assert served_label(ContentHost(V0, "ipfs", "localhost")) is None  # fits: as boxo
    assert served_label(ContentHost(canonical, "ipns", "localhost")) is None
    assert served_label(ContentHost(str(Cid(1, DAG_PB, key.multihash)), "ipns", "h")) == canonical
    assert served_label(ContentHost(str(key), "ipns", "h")) == canonical  # base32: too long
    assert served_label(ContentHost("example.org", "ipns", "h")) is None  # DNSLink: as written
    with pytest.raises(ArgError, match="DNS label length limit of 63"):
        served_label(ContentHost(str(SHA512), "ipfs", "h"))


@given(st.binary(min_size=32, max_size=32), st.sampled_from([RAW, DAG_PB]),
       st.sampled_from([0, 1]))
def test_dns_label_is_a_lower_case_cidv1_of_the_same_hash(digest: bytes, codec: str,
                                                           version: int) -> None:
    c = Cid(version if codec == DAG_PB else 1, codec, b"\x12\x20" + digest)
    label = dns_label(c, "ipfs")
    assert label == label.lower() and len(label) <= DNS_LABEL_MAX
    back = parse_cid(label)
    assert (back.version, back.codec, back.multihash) == (1, codec, c.multihash)
    assert parse_host(f"{label}.ipfs.localhost:8080", LOCAL) == ContentHost(
        label, "ipfs", "localhost:8080")


@given(st.lists(st.text(st.characters(codec="utf-8", exclude_characters="/"), min_size=1,
                        max_size=8), min_size=1, max_size=4))
def test_redirect_keeps_the_path(segments: list[str]) -> None:
    from urllib.parse import quote

    raw = "/".join(quote(s, safe="") for s in segments)
    url = redirect_url("http", "localhost", f"/ipfs/{V0}/{raw}", "")
    assert url is not None
    parts = urlsplit(url)
    assert parts.hostname == f"{V0_AS_V1}.ipfs.localhost"
    assert unquote(parts.path) == "/" + "/".join(unquote(quote(s, safe="")) for s in segments)


@pytest.mark.parametrize(("uri", "want"), [
    (f"ipfs://{V0}/wiki/Diego_Maradona.html", f"/ipfs/{V0}/wiki/Diego_Maradona.html"),
    ("ipns://en.wikipedia-on-ipfs.org", "/ipns/en.wikipedia-on-ipfs.org"),
    (f"ipfs://{V0}/../../etc/passwd", f"/ipfs/{V0}/etc/passwd"),
    (f"ipfs://{V0}/a b?x=1", f"/ipfs/{V0}/a%20b?x=1"),
])
def test_protocol_redirect(uri: str, want: str) -> None:
    assert protocol_redirect(uri) == want


@pytest.mark.parametrize("uri", ["https://evil.example/", "ipfs:///x", "javascript:alert(1)"])
def test_protocol_redirect_refuses(uri: str) -> None:
    with pytest.raises(ArgError):
        protocol_redirect(uri)


def test_listing_on_a_subdomain_links_as_boxo() -> None:
    """The conformance suite's expectations for a listing at {cid}.ipfs.{host}/ą/ę/."""
    entry = Entry("", "bafydir", 10, "dir")
    links = [DirLink("file-źł.txt", "bafyfile", 5), DirLink("plain", "bafyplain", 1)]
    page = b"".join(render_listing("bafyroot", "ą/ę/", links, entry, "localhost:8080")).decode()
    assert ('/ipfs/<a href="//localhost:8080/ipfs/bafyroot">bafyroot</a>/<a href="//localhost:'
            '8080/ipfs/bafyroot/%C4%85">ą</a>/<a href="//localhost:8080/ipfs/bafyroot/%C4%85/%C4'
            '%99">ę</a>') in page
    assert '<a href="/%C4%85/%C4%99/..">..</a>' in page
    assert '<a href="/%C4%85/%C4%99/file-%C5%BA%C5%82.txt">file-źł.txt</a>' in page
    assert '<a href="/%C4%85/%C4%99/plain">plain</a>' in page
    assert ('<a class="ipfs-hash" translate="no" href="//localhost:8080/ipfs/bafyfile?filename='
            'file-%25C5%25BA%25C5%2582.txt">') in page
    top = b"".join(render_listing("bafyroot", "", links, entry, "localhost:8080")).decode()
    assert '<a href="/plain">plain</a>' in top and ">..</a>" not in top


# -- through the gateway ----------------------------------------------------------------------
@pytest.fixture
def store(tmp_path: Path) -> EmbeddedStore:
    s = EmbeddedStore(tmp_path / "store")
    src = tmp_path / "src"
    (src / "ipfs" / "sub").mkdir(parents=True)
    (src / "hello.txt").write_bytes(b"hello\n")
    (src / "ipfs" / "sub" / "f.txt").write_bytes(b"deep\n")
    s.root_cid = s.add_path(src)  # type: ignore[attr-defined]
    return s


def _root(store: EmbeddedStore) -> str:
    return str(store.root_cid)  # type: ignore[attr-defined]


async def _client(make: MakeClient, store: EmbeddedStore, cfg: SubdomainConfig) -> Client:
    app = web.Application()

    async def api(request: web.Request) -> web.Response:
        return web.json_response({"api": True})

    app.router.add_get("/api/jobs", api)
    add_routes(app, store, subdomains=cfg)
    return await make(app)


async def test_path_request_on_a_gateway_host_redirects(aiohttp_client: MakeClient,
                                                        store: EmbeddedStore) -> None:
    client = await _client(aiohttp_client, store, SubdomainConfig())
    root = _root(store)
    label = dns_label(parse_cid(root), "ipfs")
    r = await client.get(f"/ipfs/{root}/hello.txt?x=1", headers={"Host": "localhost:9"},
                         allow_redirects=False)
    assert r.status == 301
    assert r.headers["Location"] == f"http://{label}.ipfs.localhost:9/hello.txt?x=1"
    r = await client.get(f"/ipfs/{root}", allow_redirects=False,
                         headers={"Host": "localhost:9", "X-Forwarded-Proto": "https"})
    assert r.headers["Location"] == f"https://{label}.ipfs.localhost:9/"
    # another Host of the peer is a path gateway, unless a proxy names a gateway host
    r = await client.get(f"/ipfs/{root}/hello.txt", headers={"Host": "127.0.0.1:9"})
    assert r.status == 200 and await r.read() == b"hello\n"
    r = await client.get(f"/ipfs/{root}", allow_redirects=False, headers={
        "Host": "127.0.0.1:9", "X-Forwarded-Host": "localhost:9"})
    assert r.headers["Location"] == f"http://{label}.ipfs.localhost:9/"
    r = await client.get(f"/ipfs/{root}/hello.txt", headers={
        "Host": "127.0.0.1:9", "X-Forwarded-Host": "evil.example"})
    assert r.status == 200  # a foreign X-Forwarded-Host never names the Location
    r = await client.get("/ipfs/QmInvalidCID", headers={"Host": "localhost:9"})
    assert r.status == 400 and 'invalid path "/ipfs/QmInvalidCID"' in await r.text()
    r = await client.get(f"/ipfs/{SHA512}", headers={"Host": "localhost:9"})
    assert r.status == 400
    assert "CID incompatible with DNS label length limit of 63" in await r.text()


async def test_content_host_serves_the_root(aiohttp_client: MakeClient,
                                            store: EmbeddedStore) -> None:
    client = await _client(aiohttp_client, store, SubdomainConfig())
    root = _root(store)
    host = {"Host": f"{root}.ipfs.localhost:9"}
    r = await client.get("/hello.txt", headers=host)
    assert r.status == 200 and await r.read() == b"hello\n"
    assert r.headers["Content-Security-Policy"] == "sandbox"
    assert r.headers["X-Ipfs-Path"] == f"/ipfs/{root}/hello.txt"
    r = await client.get("/ipfs/sub/f.txt", headers=host)  # a path in the content
    assert r.status == 200 and await r.read() == b"deep\n"
    r = await client.get("/api/jobs", headers=host)  # never the API
    assert r.status == 404
    r = await client.get("/ipfs/sub", headers=host, allow_redirects=False)
    assert r.status == 301 and r.headers["Location"] == "/ipfs/sub/"
    r = await client.get("/", headers=host)
    page = await r.text()
    assert '<a href="/hello.txt">hello.txt</a>' in page and ">..</a>" not in page
    assert f'href="//localhost:9/ipfs/{root}"' in page
    r = await client.get("/ipfs/sub/", headers=host)
    assert '<a href="/ipfs/sub/..">..</a>' in await r.text()
    r = await client.get("/", headers={"Host": f"{SHA512}.ipfs.localhost"})
    assert r.status == 400


async def test_no_redirect_where_content_needs_a_login(aiohttp_client: MakeClient,
                                                        store: EmbeddedStore) -> None:
    client = await _client(aiohttp_client, store, SubdomainConfig(LOCAL, redirect=False))
    root = _root(store)
    r = await client.get(f"/ipfs/{root}/hello.txt", headers={"Host": "localhost:9"})
    assert r.status == 200 and await r.read() == b"hello\n"
    r = await client.get("/hello.txt", headers={"Host": f"{root}.ipfs.localhost:9"})
    assert r.status == 200 and await r.read() == b"hello\n"


async def test_without_gateway_hosts_nothing_changes(aiohttp_client: MakeClient,
                                                      store: EmbeddedStore) -> None:
    client = await _client(aiohttp_client, store, SubdomainConfig(frozenset()))
    r = await client.get(f"/ipfs/{_root(store)}/hello.txt", headers={"Host": "localhost:9"})
    assert r.status == 200
    r = await client.get("/api/jobs", headers={"Host": f"{_root(store)}.ipfs.localhost:9"})
    assert await r.json() == {"api": True}


async def test_protocol_handler_redirect(aiohttp_client: MakeClient,
                                         store: EmbeddedStore) -> None:
    client = await _client(aiohttp_client, store, SubdomainConfig())
    for host in ("localhost:9", "127.0.0.1:9"):
        r = await client.get("/ipfs/", params={"uri": f"ipfs://{V0}/wiki/x.html"},
                             headers={"Host": host}, allow_redirects=False)
        assert r.status == 301 and r.headers["Location"] == f"/ipfs/{V0}/wiki/x.html"
    r = await client.get("/ipfs/", params={"uri": "https://evil.example/"})
    assert r.status == 400
    r = await client.get("/ipns/")
    assert r.status == 400


# -- the allocator setting the gateway's file path relies on (peer/ipfs/blocks.py) -----------
def test_tune_allocator_defers_to_malloc_settings_in_the_environment(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from peer.ipfs.blocks import tune_allocator

    monkeypatch.setenv("MALLOC_ARENA_MAX", "2")
    assert tune_allocator() is False
    monkeypatch.delenv("MALLOC_ARENA_MAX")
    assert tune_allocator() is (ctypes.util.find_library("c") is not None and _glibc())


def _glibc() -> bool:
    import platform

    return platform.libc_ver()[0] == "glibc"


_ARENAS = """
import ctypes, threading
from peer.ipfs.blocks import tune_allocator
assert tune_allocator()
keep = []
def work():  # a thread's allocations above pymalloc's size, below the mmap threshold
    keep.extend(bytearray(1 << 20) for _ in range(4))
threads = [threading.Thread(target=work) for _ in range(3)]
for t in threads: t.start()
for t in threads: t.join()
ctypes.CDLL(None).malloc_stats()  # one "Arena N:" block per arena, to stderr
"""


@pytest.mark.skipif(not _glibc(), reason="glibc's arenas")
def test_tune_allocator_keeps_one_arena_for_every_thread() -> None:
    """Threads that allocate MiBs (executor threads serving a snapshot) share the one arena
    malloc_trim gives back, instead of each keeping an arena of its own (+15 MB each)."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    done = subprocess.run([sys.executable, "-c", _ARENAS], capture_output=True, text=True,
                          timeout=60, check=True, env=env)
    assert done.stderr.count("Arena ") == 1, done.stderr

