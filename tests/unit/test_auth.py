"""The access rule (peer/http/auth.py) as a table, the token file and runtime records
(peer/http/tokens.py), and the middleware with the login flow through aiohttp's client."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from peer.config import PeerConfig
from peer.errors import ArgError, Forbidden, Unauthorized
from peer.http import tokens
from peer.http.app import errors, make_app, quiet_client_errors
from peer.http.auth import Auth, Cred, Facts, Policy, Route, classify, decide, host_kind
from peer.ipfs.subdomain import parse_host
from peer.node import Node

LOOP = Policy.for_bind("127.0.0.1")
WIDE = Policy.for_bind("0.0.0.0", allow_hosts=("lab.example.org",))
WIDE_PUBLIC = Policy.for_bind("0.0.0.0", public_gateway=True)
NO_SUB = Policy.for_bind("127.0.0.1", subdomain_hosts=())
GW = Policy.for_bind("127.0.0.1", subdomain_hosts=("GW.lab.example",))
H = "127.0.0.1:8700"
OK, E400, E401, E403 = None, ArgError, Unauthorized, Forbidden
V, W, N = Cred.VALID, Cred.WRONG, Cred.NONE


def f(method: str, path: str, host: str | None = H, origin: str | None = None,
      user: Cred = N, cookie: bool = False, csrf: bool = False, mesh: Cred = N,
      scheme: str = "http") -> Facts:
    return Facts(method, path, host, origin, scheme, user, cookie, csrf, mesh)


CASES: list[tuple[str, Facts, Policy, type[Exception] | None]] = [
    # writes need the token, on loopback too
    ("submit, no token", f("POST", "/api/jobs"), LOOP, E401),
    ("submit, wrong token", f("POST", "/api/jobs", user=W), LOOP, E401),
    ("submit, bearer", f("POST", "/api/jobs", user=V), LOOP, OK),
    ("cancel, no token", f("POST", "/api/jobs/j1/cancel"), LOOP, E401),
    ("add, no token", f("POST", "/api/add"), LOOP, E401),
    ("delete, no token", f("DELETE", "/api/jobs/j1"), LOOP, E401),
    ("kubo add, no token", f("POST", "/api/v0/add"), LOOP, E401),
    ("kubo dag import, bearer", f("POST", "/api/v0/dag/import", user=V), LOOP, OK),
    ("kubo cat, no token", f("POST", "/api/v0/cat"), LOOP, E401),
    ("write, mesh credential only", f("POST", "/api/jobs", mesh=V), WIDE, E401),
    # session cookie: CSRF header needed for writes, not reads
    ("submit, cookie without csrf", f("POST", "/api/jobs", user=V, cookie=True), LOOP, E403),
    ("submit, cookie and csrf", f("POST", "/api/jobs", user=V, cookie=True, csrf=True),
     LOOP, OK),
    ("read, cookie", f("GET", "/api/jobs", user=V, cookie=True), WIDE, OK),
    ("submit, stale cookie", f("POST", "/api/jobs", user=W, cookie=True), LOOP, E401),
    # Origin on writes: foreign and null refused, even with the token
    ("cross-origin submit", f("POST", "/api/jobs", origin="http://evil.example", user=V),
     LOOP, E403),
    ("null origin submit", f("POST", "/api/jobs", origin="null", user=V), LOOP, E403),
    ("other port is another origin", f("POST", "/api/jobs", origin="http://127.0.0.1:9999",
                                       user=V), LOOP, E403),
    ("https origin vs http peer", f("POST", "/api/jobs", origin="https://127.0.0.1:8700",
                                    user=V), LOOP, E403),
    ("same-origin submit", f("POST", "/api/jobs", origin="http://127.0.0.1:8700", user=V),
     LOOP, OK),
    ("cross-origin login", f("POST", "/login", origin="http://evil.example"), LOOP, E403),
    ("cross-origin GET is not a write", f("GET", "/api/jobs", origin="http://evil.example"),
     LOOP, OK),
    # Host allowlist
    ("foreign Host", f("GET", "/api/jobs", host="evil.example:8700"), LOOP, E403),
    ("foreign Host, health", f("GET", "/api/health", host="evil.example"), LOOP, E403),
    ("no Host", f("GET", "/api/jobs", host=None), LOOP, E403),
    ("localhost", f("GET", "/api/jobs", host="localhost:8700"), LOOP, OK),
    ("[::1]", f("GET", "/api/jobs", host="[::1]:8700"), LOOP, OK),
    ("LAN address on a loopback peer", f("GET", "/api/jobs", host="10.1.2.3:8700"), LOOP,
     E403),
    ("LAN address on a wildcard peer", f("GET", "/api/health", host="10.1.2.3:8700"), WIDE,
     OK),
    ("--allow-host name", f("GET", "/api/health", host="lab.example.org:8700"), WIDE, OK),
    ("name not allowed", f("GET", "/api/health", host="rebind.example.com:8700"), WIDE,
     E403),
    ("subdomain gateway read", f("GET", "/ipfs/x", host="bafy.ipfs.localhost:8700"), LOOP, OK),
    ("subdomain ipns read", f("GET", "/ipns/x", host="k51.ipns.localhost:8700"), LOOP, OK),
    ("subdomain of a foreign name", f("GET", "/ipfs/x", host="bafy.ipfs.evil.example"), LOOP,
     E403),
    # every path of a content Host is a path in the content (the API is not served there)
    ("subdomain host: /api/ is a content path", f("GET", "/api/jobs", host="bafy.ipfs.localhost"),
     LOOP, OK),
    ("subdomain host beyond loopback needs the token", f("GET", "/", host="bafy.ipfs.localhost"),
     WIDE, E401),
    ("subdomain host beyond loopback, bearer", f("GET", "/", host="bafy.ipfs.localhost",
                                                 user=V), WIDE, OK),
    ("subdomain host, public gateway", f("GET", "/", host="bafy.ipfs.localhost"), WIDE_PUBLIC,
     OK),
    ("subdomain of an --allow-host name", f("GET", "/", host="bafy.ipfs.lab.example.org"), WIDE,
     E403),
    ("subdomain of an address", f("GET", "/", host="bafy.ipfs.127.0.0.1"), LOOP, E403),
    ("subdomain gateway turned off", f("GET", "/ipfs/x", host="bafy.ipfs.localhost"), NO_SUB,
     E403),
    ("a named gateway host", f("GET", "/ipfs/x", host="gw.lab.example:8700"), GW, OK),
    ("a named gateway host's subdomain", f("GET", "/x", host="bafy.ipfs.gw.lab.example"), GW,
     OK),
    ("subdomain host cannot write", f("POST", "/api/jobs", host="bafy.ipfs.localhost",
                                      user=V), LOOP, E403),
    # a Host whose port is not digits: no reading of it is the right one (the gateway's
    # would serve the API where the rule saw content); an empty port is none (RFC 3986):
    # a content Host, which the gateway serves as content too (the reading test below)
    ("Host with an empty port", f("GET", "/api/jobs", host="bafy.ipfs.localhost:"),
     WIDE_PUBLIC, OK),
    ("Host with a port of letters", f("GET", "/api/jobs", host="bafy.ipfs.localhost:x"),
     WIDE_PUBLIC, E400),
    ("peer Host with a port of letters", f("GET", "/api/health", host="127.0.0.1:x"), LOOP,
     E400),
    # reads: open on loopback, the token beyond
    ("read on loopback", f("GET", "/api/jobs"), LOOP, OK),
    ("read beyond loopback, no token", f("GET", "/api/jobs"), WIDE, E401),
    ("read beyond loopback, wrong token", f("GET", "/api/peers", user=W), WIDE, E401),
    ("read beyond loopback, bearer", f("GET", "/api/jobs", user=V), WIDE, OK),
    ("metrics follow reads", f("GET", "/metrics"), WIDE, E401),
    ("health stays open", f("GET", "/api/health"), WIDE, OK),
    ("UI files stay open", f("GET", "/ui/js/app.js"), WIDE, OK),
    ("index stays open", f("GET", "/"), WIDE, OK),
    ("session endpoint open", f("GET", "/api/session"), WIDE, OK),
    ("login open", f("GET", "/login"), WIDE, OK),
    # content: open on loopback; beyond: token, mesh credential or --public-gateway
    ("gateway on loopback", f("GET", "/ipfs/bafy"), LOOP, OK),
    ("gateway beyond loopback", f("GET", "/ipfs/bafy"), WIDE, E401),
    ("gateway beyond loopback, mesh", f("GET", "/ipfs/bafy", mesh=V), WIDE, OK),
    ("gateway beyond loopback, wrong mesh", f("GET", "/ipfs/bafy", mesh=W), WIDE, E401),
    ("gateway beyond loopback, bearer", f("GET", "/ipfs/bafy", user=V), WIDE, OK),
    ("public gateway", f("GET", "/ipfs/bafy"), WIDE_PUBLIC, OK),
    ("car batch, mesh", f("POST", "/api/car", mesh=V), WIDE, OK),
    ("car batch beyond loopback", f("POST", "/api/car"), WIDE, E401),
    ("car batch on loopback", f("POST", "/api/car"), LOOP, OK),
    ("public gateway does not open the API", f("GET", "/api/jobs"), WIDE_PUBLIC, E401),
]


@pytest.mark.parametrize(("facts", "policy", "want"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_rule(facts: Facts, policy: Policy, want: type[Exception] | None) -> None:
    got = decide(facts, policy)
    if want is None:
        assert got is None, got.message if got else ""
    else:
        assert isinstance(got, want), got
        assert got.message  # says what is missing


def test_refusals_say_how_to_log_in() -> None:
    err = decide(f("POST", "/api/jobs"), LOOP)
    assert err is not None and "--print-login" in err.message and "Bearer" in err.message
    err = decide(f("GET", "/", host="evil.example"), LOOP)
    assert err is not None and "--allow-host evil.example" in err.message


@pytest.mark.parametrize(("method", "path", "route"), [
    ("GET", "/api/jobs", Route.API_READ), ("POST", "/api/jobs", Route.WRITE),
    ("PUT", "/anything", Route.WRITE), ("POST", "/api/v0/version", Route.WRITE),
    ("GET", "/ipfs/x/y", Route.CONTENT), ("HEAD", "/ipfs/x", Route.CONTENT),
    ("POST", "/api/car", Route.CONTENT), ("GET", "/api/health", Route.OPEN),
    ("GET", "/nowhere", Route.API_READ),
])
def test_classify(method: str, path: str, route: Route) -> None:
    assert classify(method, path) is route


def test_policy_of_binds() -> None:
    assert Policy.for_bind("127.0.0.1").loopback_only
    assert Policy.for_bind("::1").loopback_only
    assert Policy.for_bind("localhost").loopback_only
    assert not Policy.for_bind("0.0.0.0").loopback_only  # beyond loopback, even if reached
    assert not Policy.for_bind("10.0.0.5").loopback_only  # on 127.0.0.1
    assert host_kind("10.0.0.5:1", Policy.for_bind("10.0.0.5")) == "peer"
    assert host_kind("10.0.0.6:1", Policy.for_bind("10.0.0.5")) is None
    assert LOOP.content_open and WIDE_PUBLIC.content_open and not WIDE.content_open


def test_subdomain_hosts_of_a_policy() -> None:
    assert LOOP.subdomain_hosts == {"localhost"} and NO_SUB.subdomain_hosts == frozenset()
    assert GW.subdomain_hosts == {"gw.lab.example"} and "gw.lab.example" in GW.names
    assert host_kind("bafy.ipfs.localhost:1", LOOP) == "content"
    assert host_kind("bafy.ipfs.localhost:1", GW) is None


@pytest.mark.parametrize("host", [
    "bafy.ipfs.localhost", "bafy.ipfs.localhost:1", "BAFY.IPFS.LOCALHOST.:1",
    "bafy.ipfs.localhost:", "bafy.ipfs.localhost:x", "bafy.ipfs.localhost:1:2",
    "bafy.ipfs.localhost::1", "[::1]:x", "bafy.ipfs.[::1]", "a.ipfs.b.ipfs.localhost",
    "localhost:1", "127.0.0.1:1", "::1",
])
def test_host_kind_and_the_gateway_read_a_host_alike(host: str) -> None:
    """The rule's content Host is the gateway's (its middleware serves it as content), and a
    Host one refuses the other refuses too."""

    def read(how: Any) -> object:
        try:
            return how()
        except ArgError:
            return ArgError

    kind = read(lambda: host_kind(host, WIDE_PUBLIC))
    served = read(lambda: parse_host(host, WIDE_PUBLIC.subdomain_hosts))
    if kind is ArgError or served is ArgError:
        assert kind is ArgError and served is ArgError, (kind, served)
    else:
        assert (kind == "content") == (served is not None), (kind, served)


# -- tokens ------------------------------------------------------------------------------
def test_token_file_is_private_and_kept(tmp_path: Path) -> None:
    t = tokens.load_or_create_token(tmp_path / "d")
    path = tmp_path / "d" / tokens.TOKEN_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(t) >= 32 and tokens.load_or_create_token(tmp_path / "d") == t  # kept
    path.chmod(0o644)
    assert tokens.load_or_create_token(tmp_path / "d") == t
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # tightened


def test_session_and_csrf_are_bound_to_the_token() -> None:
    cookie = tokens.new_session("t" * 40)
    nonce = tokens.session_nonce("t" * 40, cookie)
    assert nonce and tokens.session_nonce("u" * 40, cookie) is None
    assert tokens.session_nonce("t" * 40, nonce + ".00") is None
    assert tokens.session_nonce("t" * 40, "\udcff.00") is None  # a header's byte 0xff
    assert not tokens.same("\ud800", "t" * 40)  # a JSON body's lone surrogate
    assert tokens.csrf_token("t" * 40, nonce) != tokens.csrf_token("u" * 40, nonce)


def test_mesh_credential() -> None:
    assert tokens.mesh_credential(None) is None and tokens.mesh_headers(None) == {}
    a, b = tokens.mesh_credential(b"s1"), tokens.mesh_credential(b"s2")
    assert a and b and a != b and a == tokens.mesh_credential(b"s1")
    assert tokens.mesh_headers(b"s1") == {"Authorization": f"BanzaiMesh {a}"}


def test_runtime_files_map_urls_to_tokens(tmp_path: Path) -> None:
    data, rt = tmp_path / "data", tmp_path / "rt"
    token = tokens.load_or_create_token(data)
    urls = tokens.local_urls("http", "127.0.0.1", 8123, "http://127.0.0.1:8123")
    path = tokens.write_runtime(rt, urls, data)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(rt.stat().st_mode) == 0o700
    assert tokens.find_token("http://localhost:8123/", rt) == token
    assert tokens.find_token("http://127.0.0.1:8124", rt) is None
    rec = tokens.find_record(data, rt)
    assert rec is not None and rec["url"] == "http://127.0.0.1:8123"
    stale = rt / "peer-999999999.json"  # no such process: skipped, pruned at the next write
    stale.write_text(path.read_text().replace(str(os.getpid()), "999999999"))
    assert len(list(tokens.running_peers(rt))) == 1
    tokens.write_runtime(rt, urls, data)
    assert not stale.exists()
    tokens.remove_runtime(path)
    assert tokens.find_token("http://127.0.0.1:8123", rt) is None


# -- the middleware and the login flow ---------------------------------------------------
TOKEN = "x" * 43


async def _ok(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


@pytest.fixture
async def client(aiohttp_client: Any) -> Any:
    auth = Auth(TOKEN, Policy.for_bind("127.0.0.1"), [tokens.mesh_credential(b"s") or ""])
    app = web.Application(middlewares=[auth.middleware, errors])
    auth.add_routes(app)
    app.router.add_post("/api/jobs", _ok)
    app.router.add_post("/api/v0/add", _ok)
    app.router.add_get("/", _ok)
    return await aiohttp_client(app)


async def test_middleware_answers_json(client: Any) -> None:
    r = await client.post("/api/jobs", data=b"[]")
    assert r.status == 401 and r.headers["WWW-Authenticate"].startswith("Bearer")
    body = await r.json()
    assert body["error"] == "Unauthorized" and "token" in body["message"]
    r = await client.post("/api/v0/add")
    assert r.status == 401 and (await r.json())["Type"] == "error"  # Kubo's shape
    r = await client.post("/api/jobs", headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status == 200


@pytest.mark.parametrize("encoding", ["deflate", "gzip"])
async def test_a_body_whose_content_encoding_fails_is_answered_400(
        client: Any, caplog: pytest.LogCaptureFixture, encoding: str) -> None:
    """Junk under a Content-Encoding (helper-164's fuzzing: a 500 with a traceback, on
    /login without a token too; the `errors` middleware answers every route) is a 400 that
    names the body."""
    quiet_client_errors()  # (as make_app does)
    r = await client.post("/login", data=b"token=not-compressed-at-all", headers={
        "Content-Encoding": encoding,
        "Content-Type": "application/x-www-form-urlencoded"})
    assert r.status == 400
    body = await r.json()
    assert body["field"] == "body" and "could not be read" in body["message"]
    await asyncio.sleep(0.05)  # (aiohttp drains the rest of the body after the answer)
    assert not [x for x in caplog.records if x.levelno >= logging.ERROR]


@pytest.mark.parametrize("line", [b"GET /api/jobs?limit=  3  HTTP/1.1",
                                  b"GET /" + b"a" * 9000 + b" HTTP/1.1", b"\xff\xfe junk"])
async def test_a_malformed_request_line_is_answered_400_and_logged_without_a_traceback(
        client: Any, caplog: pytest.LogCaptureFixture, line: bytes) -> None:
    """aiohttp logged each at ERROR with a traceback, before any token check: a way to
    flood the log (helper-164); one DEBUG line now."""
    quiet_client_errors()  # (as make_app does)
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    writer.write(line + b"\r\nHost: 127.0.0.1\r\n\r\n")
    await writer.drain()
    head = await asyncio.wait_for(reader.read(64), 10)
    writer.close()
    assert head.startswith(b"HTTP/1.") and head[9:12] == b"400"
    assert not [x for x in caplog.records if x.levelno >= logging.ERROR]


async def test_login_gives_an_httponly_strict_cookie_and_csrf(client: Any) -> None:
    r = await client.get("/login?token=wrong", allow_redirects=False)
    assert r.status == 401
    r = await client.get(f"/login?token={TOKEN}", allow_redirects=False)
    assert r.status == 302 and r.headers["Location"] == "/"
    set_cookie = r.headers["Set-Cookie"]
    assert "HttpOnly" in set_cookie and "SameSite=Strict" in set_cookie
    session = await (await client.get("/api/session")).json()
    assert session["authenticated"] and session["csrf"]
    r = await client.post("/api/jobs", data=b"[]")  # the cookie alone is not enough
    assert r.status == 403 and (await r.json())["field"] == "csrf"
    r = await client.post("/api/jobs", data=b"[]", headers={"X-CSRF-Token": "nope"})
    assert r.status == 403
    r = await client.post("/api/jobs", data=b"[]", headers={"X-CSRF-Token": session["csrf"]})
    assert r.status == 200
    await client.post("/logout")
    assert not (await (await client.get("/api/session")).json())["authenticated"]


async def _raw(port: int, request: bytes) -> tuple[int, dict[str, Any]]:
    """Status and JSON body of a request sent as bytes (aiohttp's client sends UTF-8 only)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


@pytest.mark.parametrize("credential", [
    b"Authorization: Bearer \xff", b"Authorization: Bearer \xed\xa0\x80",
    b"Authorization: BanzaiMesh \xff", b"Cookie: banzai-session-PORT=\xff.x",
    b"Cookie: banzai-session-PORT=x.\xff"])
async def test_credentials_not_utf8_are_wrong_credentials(client: Any, credential: bytes) -> None:
    port = client.server.port
    credential = credential.replace(b"PORT", str(port).encode())
    status, body = await _raw(port, b"POST /api/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                              + credential + b"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
    assert status == 401 and body["field"] == "token", body
    status, body = await _raw(port, b"GET /api/session HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                              + credential + b"\r\nConnection: close\r\n\r\n")
    assert status == 200 and not body["authenticated"]


async def test_login_prompt_posts_the_token(client: Any) -> None:
    r = await client.post("/login", json={"token": "wrong"})
    assert r.status == 401
    r = await client.post("/login", data=b'{"token": "\\ud800"}')  # a lone surrogate: not
    assert r.status == 400 and "lone surrogate" in (await r.json())["message"]  # text (jsontext)
    for body in (b"[" * 4000, b'{"token": ', b"\xff"):  # not JSON: 400, not a 500
        r = await client.post("/login", data=body)
        assert r.status == 400 and (await r.json())["field"] == "body"
    r = await client.post("/login", data=b"[" * 5000)  # over 4 KiB: a token is short
    assert r.status == 413 and (await r.json())["field"] == "body"
    r = await client.post("/login", json={"token": TOKEN})
    body = await r.json()
    assert r.status == 200 and body["csrf"]
    r = await client.post("/api/jobs", headers={"X-CSRF-Token": body["csrf"]})
    assert r.status == 200


@pytest.mark.parametrize(("host", "field"), [("bafy.ipfs.localhost:", "cid"),
                                             ("bafy.ipfs.localhost:x", "host")])
async def test_the_api_of_a_public_gateway_needs_the_token_whatever_the_host(
        aiohttp_client: Any, tmp_path: Path, host: str, field: str) -> None:
    """A content Host is served as content (an empty port is none: "bafy" is no CID), a
    malformed one is refused: neither reaches the API without the token."""
    node = Node(PeerConfig(data_dir=tmp_path / "peer", slots=1, mdns=False, http="0.0.0.0:8700",
                           public_gateway=True))
    try:
        client = await aiohttp_client(make_app(node))
        for path in ("/api/jobs", "/api/peers", "/metrics"):
            r = await client.get(path, headers={"Host": host})
            assert r.status == 400 and (await r.json())["field"] == field, (path, r.status)
            r = await client.get(path, headers={"Host": "127.0.0.1"})
            assert r.status == 401, path
    finally:
        node.log.close()
