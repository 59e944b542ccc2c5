"""The HTTP side's attack suite (issue 10): cross-origin writes, foreign Hosts, missing or
wrong tokens on every state-changing route, reads of a peer bound beyond loopback, peers
fetching with the mesh credential, a page in Chromium against the API, the UI's login,
the CLI's token lookup and HTTPS. Two module-scoped peers: one on 127.0.0.1, one bound to
0.0.0.0 (beyond loopback) that the tests reach on 127.0.0.1 only."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import ssl
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from peer.cids import parse_cid
from peer.http.auth import Route, classify
from peer.http.openapi import OPENAPI
from peer.http.tokens import mesh_credential
from peer.ipfs.subdomain import dns_label
from tests.conftest import BIN, ROOT, PeerProc, start_peer
from tests.helpers import multipart, self_signed

pytestmark = pytest.mark.integration
EVIL = "http://evil.example"
PIPELINE = json.dumps([{"call": "T_SLEEP", "args": [30]}]).encode()


def raw(method: str, url: str, body: bytes | None = None,
        headers: dict[str, str] | None = None, context: ssl.SSLContext | None = None,
        ) -> tuple[int, bytes]:
    """One request with exactly these headers (not the harness's opener: no token added)."""
    handlers: list[Any] = [urllib.request.HTTPSHandler(context=context)] if context else []
    opener = urllib.request.build_opener(*handlers)
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with opener.open(req, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        with e:
            return e.code, e.read()


def _bearer(p: PeerProc, token: str | None = None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token or p.token}"}


def _start(tmp: Path, name: str, *flags: str, http: str = "127.0.0.1:0",
           mesh: str | None = None) -> PeerProc:
    return start_peer(tmp / name, "--slots", "1", "--no-mdns", *flags, http=http,
                      mesh=mesh or f"sec-{uuid.uuid4().hex[:10]}")


def _stop(p: PeerProc) -> None:
    p.kill(signal.SIGTERM)


@pytest.fixture(scope="module")
def loop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PeerProc]:
    p = _start(tmp_path_factory.mktemp("sec"), "loop")
    yield p
    _stop(p)


SECRET = b"a mesh secret for the test"
WIDE_MESH = f"sec-wide-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="module")
def secret_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sec") / "secret"
    path.write_bytes(SECRET)
    return path


@pytest.fixture(scope="module")
def wide(tmp_path_factory: pytest.TempPathFactory,
         secret_file: Path) -> Iterator[tuple[PeerProc, str]]:
    """A peer bound to 0.0.0.0 (so beyond loopback, whatever reaches it), with a mesh secret;
    yields it and its URL on 127.0.0.1 (the only address the tests use)."""
    p = _start(tmp_path_factory.mktemp("sec"), "wide", "--secret-file", str(secret_file),
               "--gossip", "127.0.0.1:0", http="0.0.0.0:0", mesh=WIDE_MESH)
    port = p.url.rsplit(":", 1)[1]
    yield p, f"http://127.0.0.1:{port}"
    _stop(p)


def _jobs(url: str, p: PeerProc) -> list[dict[str, Any]]:
    status, body = raw("GET", f"{url}/api/jobs", headers=_bearer(p))
    assert status == 200, body
    return list(json.loads(body)["jobs"])


def _submit(url: str, p: PeerProc) -> str:
    status, body = raw("POST", f"{url}/api/jobs", PIPELINE,
                       {**_bearer(p), "Content-Type": "application/json"})
    assert status == 201, body
    return str(json.loads(body)["job"])


def _error(status: int, body: bytes, want: int) -> dict[str, Any]:
    assert status == want, body[:300]
    err = json.loads(body)  # JSON with a message, never a traceback page
    assert "Traceback" not in body.decode()
    return dict(err)


# -- browsers' cross-origin requests -------------------------------------------------------
@pytest.mark.parametrize("origin", [EVIL, "null", "http://127.0.0.1:1"])
def test_cross_origin_writes_refused_and_nothing_created(loop: PeerProc, origin: str) -> None:
    """What a page elsewhere can send without a preflight: text/plain, multipart (a form);
    refused even with the token (a browser could hold a session), nothing created."""
    before = _jobs(loop.url, loop)
    running = _submit(loop.url, loop)
    for headers in ({}, _bearer(loop)):
        h = {**headers, "Origin": origin}
        err = _error(*raw("POST", f"{loop.url}/api/jobs", PIPELINE,
                          {**h, "Content-Type": "text/plain"}), 403)
        assert err["field"] == "origin" and "cross-origin" in err["message"]
        _error(*raw("POST", f"{loop.url}/api/jobs/{running}/cancel", b"", h), 403)
        content = uuid.uuid4().bytes
        body, ctype = multipart({"x.bin": content})
        _error(*raw("POST", f"{loop.url}/api/add", body, {**h, **ctype}), 403)
        _error(*raw("POST", f"{loop.url}/api/v0/add", body, {**h, **ctype}), 403)
    after = _jobs(loop.url, loop)
    assert len(after) == len(before) + 1  # only our own job
    mine = next(j for j in after if j["id"] == running)
    assert mine["state"] in ("pending", "running")  # not cancelled
    assert raw("POST", f"{loop.url}/api/jobs/{running}/cancel", b"", _bearer(loop))[0] == 200


def test_foreign_host_refused(loop: PeerProc) -> None:
    for path in ("/api/health", "/api/jobs", "/", "/ipfs/bafkqaaa"):
        err = _error(*raw("GET", f"{loop.url}{path}", headers={"Host": "evil.example"}), 403)
        assert err["field"] == "host" and "--allow-host" in err["message"]
    _error(*raw("POST", f"{loop.url}/api/jobs", PIPELINE,
                {**_bearer(loop), "Host": "rebound.example:80"}), 403)
    assert raw("GET", f"{loop.url}/api/health", headers={"Host": "localhost"})[0] == 200


def _plain(url: str, path: str, host: str, headers: dict[str, str] | None = None,
           method: str = "GET") -> tuple[int, http.client.HTTPMessage, bytes]:
    """One request to the peer at `url` (127.0.0.1) with this Host, redirects not followed
    (their targets, *.ipfs.localhost, are reached the same way: nothing is resolved)."""
    conn = http.client.HTTPConnection("127.0.0.1", int(url.rsplit(":", 1)[1]), timeout=30)
    try:
        conn.request(method, path, headers={"Host": host, **(headers or {})})
        r = conn.getresponse()
        return r.status, r.headers, r.read()
    finally:
        conn.close()


def test_subdomain_gateway_on_loopback(loop: PeerProc) -> None:
    """/ipfs/CID on localhost redirects to CID.ipfs.localhost, which serves the content at /
    in its own origin (still sandboxed) and nothing of the peer: no API, no login, no
    writes; the UI's session cookie is host-only, so content origins never get it."""
    status, body = raw("POST", f"{loop.url}/api/add?name=a.txt", b"subdomain", _bearer(loop))
    assert status == 201, body
    cid = json.loads(body)["cid"]
    port = loop.url.rsplit(":", 1)[1]
    label = dns_label(parse_cid(cid), "ipfs")
    status, headers, _ = _plain(loop.url, f"/ipfs/{cid}", f"localhost:{port}")
    assert status == 301 and headers["Location"] == f"http://{label}.ipfs.localhost:{port}/"
    content = f"{label}.ipfs.localhost:{port}"
    status, headers, body = _plain(loop.url, "/", content)
    assert (status, body) == (200, b"subdomain")
    assert headers["Content-Security-Policy"] == "sandbox"
    for path in ("/api/jobs", f"/login?token={loop.token}", "/"):
        status, headers, body = _plain(loop.url, path, content)
        assert "Set-Cookie" not in headers and b'"jobs"' not in body
        assert status == (200 if path == "/" else 404)
    assert _plain(loop.url, "/api/jobs", content, _bearer(loop), "POST")[0] == 403
    # 127.0.0.1 stays a path gateway (the UI's own origin serves sandboxed content as before)
    assert _plain(loop.url, f"/ipfs/{cid}", f"127.0.0.1:{port}")[::2] == (200, b"subdomain")
    status, headers, _ = _plain(loop.url, f"/login?token={loop.token}", f"localhost:{port}")
    assert status == 302 and "domain=" not in headers["Set-Cookie"].lower()


def test_subdomain_gateway_beyond_loopback_keeps_the_token(wide: tuple[PeerProc, str]) -> None:
    """Where content needs the token, localhost does not redirect (another origin would not
    get the UI's session); a content Host still needs the token."""
    w, url = wide
    cid = json.loads(raw("POST", f"{url}/api/add?name=s.txt", b"wide", _bearer(w))[1])["cid"]
    port = url.rsplit(":", 1)[1]
    status, _, body = _plain(url, f"/ipfs/{cid}", f"localhost:{port}", _bearer(w))
    assert (status, body) == (200, b"wide")
    content = f"{dns_label(parse_cid(cid), 'ipfs')}.ipfs.localhost:{port}"
    assert _plain(url, "/", content)[0] == 401
    assert _plain(url, "/", content, _bearer(w))[::2] == (200, b"wide")


def _state_changing() -> list[tuple[str, str]]:
    """Every non-GET route of the API document (a unit test keeps it equal to the app's
    routes), with sample path parameters."""
    out = []
    for path, ops in OPENAPI["paths"].items():
        for method in ops:
            if method != "get":
                out.append((method.upper(), re.sub(r"{\w+}", "x1", path)))
    assert len(out) >= 12
    return out


ROUTES = _state_changing()


def test_every_state_changing_route_needs_the_token(loop: PeerProc,
                                                    wide: tuple[PeerProc, str]) -> None:
    """No token or a wrong one: 401 on every route that writes, on loopback too; beyond
    loopback also on POST /api/car (a read, of content)."""
    w, wurl = wide
    for method, path in ROUTES:
        for peer, url in ((loop, loop.url), (w, wurl)):
            for headers in ({}, _bearer(peer, "wrong-" + "x" * 40)):
                status, body = raw(method, f"{url}{path}", b"{}",
                                   {**headers, "Content-Type": "application/json"})
                if classify(method, path) is Route.CONTENT and peer is loop:
                    assert status != 401, (method, path)  # a read: open on loopback
                    continue
                assert status == 401, (method, path, url, body[:200])
                assert b"token" in body
    assert {classify(m, p) for m, p in ROUTES} == {Route.WRITE, Route.CONTENT}


def test_reads_need_the_token_beyond_loopback(wide: tuple[PeerProc, str],
                                              loop: PeerProc) -> None:
    w, url = wide
    cid = json.loads(raw("POST", f"{url}/api/add?name=a.txt", b"hello", _bearer(w))[1])["cid"]
    for path in ("/api/jobs", "/api/peers", "/api/tasks", "/api/events", "/api/openapi.json",
                 f"/ipfs/{cid}"):
        err = _error(*raw("GET", f"{url}{path}"), 401)
        assert "beyond loopback" in err["message"]
        assert raw("GET", f"{url}{path}", headers=_bearer(w, "x" * 43))[0] == 401
    assert raw("GET", f"{url}/api/health")[0] == 200  # stays open
    assert raw("GET", f"{url}/api/jobs", headers=_bearer(w))[0] == 200
    assert raw("GET", f"{url}/ipfs/{cid}", headers=_bearer(w)) == (200, b"hello")
    # another peer of the mesh reads content with the mesh credential, not a user's token
    mesh = {"Authorization": f"BanzaiMesh {mesh_credential(SECRET)}"}
    assert raw("GET", f"{url}/ipfs/{cid}", headers=mesh) == (200, b"hello")
    assert raw("POST", f"{url}/api/car", json.dumps({"cids": [cid]}).encode(), mesh)[0] == 200
    wrong = {"Authorization": f"BanzaiMesh {mesh_credential(b'another mesh')}"}
    assert raw("GET", f"{url}/ipfs/{cid}", headers=wrong)[0] == 401
    assert raw("GET", f"{url}/api/jobs", headers=mesh)[0] == 401  # content only
    assert raw("POST", f"{url}/api/jobs", PIPELINE, mesh)[0] == 401
    # on loopback, reads stay open
    assert raw("GET", f"{loop.url}/api/jobs")[0] == 200


def test_a_peer_fetches_with_the_mesh_credential(wide: tuple[PeerProc, str], secret_file: Path,
                                                 tmp_path: Path) -> None:
    """A member of the wide peer's mesh (same secret) reads content only the wide peer holds
    through its own gateway: its fetcher authenticates with the mesh credential."""
    w, url = wide
    content = uuid.uuid4().bytes * 100
    status, body = raw("POST", f"{url}/api/add?name=only-on-wide.bin", content, _bearer(w))
    assert status == 201, body
    cid = json.loads(body)["cid"]
    gossip = json.loads(raw("GET", f"{url}/api/health")[1])["gossip_address"]
    b = _start(tmp_path, "member", "--secret-file", str(secret_file), "--join", gossip,
               mesh=WIDE_MESH)
    try:
        wait_alive(b, 2)
        assert raw("GET", f"{b.url}/ipfs/{cid}") == (200, content)
    finally:
        _stop(b)


def wait_alive(p: PeerProc, n: int, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        peers = json.loads(raw("GET", f"{p.url}/api/peers")[1])["peers"]
        if sum(x["state"] == "alive" for x in peers) >= n:
            return
        assert time.monotonic() < deadline, f"the mesh did not form: {peers}"
        time.sleep(0.1)


def test_print_login_and_the_cli_find_the_token(loop: PeerProc, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run([str(BIN / "banzai-peer"), "--print-login", "--data-dir",
                        str(loop.data_dir)], capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == loop.login_url
    assert f"login:  {loop.login_url}" in loop.output  # printed at start too
    # the CLI finds the token of a peer of this user on this machine (its runtime file)
    r = subprocess.run([str(BIN / "banzai"), "--peer", loop.url, "cancel", "jnope"],
                       capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 2 and "no job" in r.stderr, r.stderr  # authenticated: a 404
    lost = {**env, "BANZAI_RUNTIME_DIR": str(tmp_path / "empty")}
    r = subprocess.run([str(BIN / "banzai"), "--peer", loop.url, "cancel", "jnope"],
                       capture_output=True, text=True, env=lost, timeout=60)
    assert r.returncode == 2 and "--token-file" in r.stderr and "Traceback" not in r.stderr
    tf = loop.data_dir / "http-token"
    r = subprocess.run([str(BIN / "banzai"), "--peer", loop.url, "--token-file", str(tf),
                        "cancel", "jnope"], capture_output=True, text=True, env=lost, timeout=60)
    assert r.returncode == 2 and "no job" in r.stderr, r.stderr


# -- HTTPS -----------------------------------------------------------------------------------
def test_https(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    p = _start(tmp_path, "tls", "--tls-cert", str(cert), "--tls-key", str(key))
    try:
        assert p.url.startswith("https://127.0.0.1:")
        assert f"login:  https://127.0.0.1:{p.url.rsplit(':', 1)[1]}/login?token=" in p.output
        ctx = ssl.create_default_context(cafile=str(cert))
        status, body = raw("GET", f"{p.url}/api/health", context=ctx)
        assert status == 200 and json.loads(body)["ok"]
        assert raw("POST", f"{p.url}/api/jobs", PIPELINE, context=ctx)[0] == 401
        assert raw("GET", p.login_url, context=ctx)[0] == 200  # redirected to the UI
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        r = subprocess.run([str(BIN / "banzai"), "--peer", p.url, "--cacert", str(cert),
                            "submit", "-"], input=PIPELINE.decode(), capture_output=True,
                           text=True, env=env, timeout=60)
        assert r.returncode == 0 and r.stdout.strip().startswith("j"), r.stderr
        with pytest.raises(OSError):  # plain http to the TLS port fails
            raw("GET", p.url.replace("https://", "http://") + "/api/health")
    finally:
        _stop(p)


# -- in Chromium ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    pytest.importorskip("playwright.sync_api")
    from tests.integration.webui_helpers import CHROMIUM, launched_chromium

    if not CHROMIUM.exists():
        pytest.skip(f"needs {CHROMIUM}")
    with launched_chromium() as b:
        yield b


PAGE = b"<!DOCTYPE html><html><head><title>page</title></head><body>hi</body></html>"
FETCHES = """async () => {
  const out = [], job = '[{"call": "T_SLEEP", "args": [1]}]';
  for (const init of [
      {method: "POST", headers: {"Content-Type": "text/plain"}, body: job},
      {method: "POST", credentials: "include", body: job},
      {method: "GET", credentials: "include"}]) {
    try { const r = await fetch("/api/jobs", init);
          out.push(r.status); }
    catch (e) { out.push("blocked"); }
  }
  return out;
}"""


def test_uploaded_page_in_chromium_cannot_call_the_api_or_read_the_cookie(
        browser: Any, loop: PeerProc) -> None:
    ctx = browser.new_context()
    try:
        page = ctx.new_page()
        page.goto(loop.login_url)  # logged in: the session cookie is set
        assert any(c["name"].startswith("banzai-session-") and c["httpOnly"]
                   and c["sameSite"] == "Strict" for c in ctx.cookies())
        assert page.evaluate("document.cookie") == ""  # HttpOnly: not readable by script
        before = len(_jobs(loop.url, loop))
        cid = json.loads(raw("POST", f"{loop.url}/api/add?name=page.html", PAGE,
                             _bearer(loop))[1])["cid"]
        page.goto(f"{loop.url}/ipfs/{cid}?filename=page.html")
        assert page.evaluate("self.origin") == "null"  # sandboxed: an opaque origin
        assert page.evaluate(
            "(() => { try { return document.cookie; } catch (e) { return e.name; } })()"
        ) == "SecurityError"
        got = page.evaluate(FETCHES)
        assert all(g == "blocked" or g in (401, 403) for g in got), got
        assert len(_jobs(loop.url, loop)) == before  # no job was created
    finally:
        ctx.close()


def test_login_in_the_ui_then_submit(browser: Any, loop: PeerProc) -> None:
    """Not logged in: submitting asks for the token (the API answered 401); after the
    login the same form submits the job. The login URL works as well."""
    expect = pytest.importorskip("playwright.sync_api").expect
    ctx = browser.new_context()
    try:
        page = ctx.new_page()
        page.goto(f"{loop.url}/#/submit")
        page.locator("#tab-text").click()
        page.locator("#pipeline-text").fill('[{"call": "T_SLEEP", "args": [0]}]')
        page.click("#submit-pipeline")
        dialog = page.locator(".login-dialog")
        expect(dialog).to_be_visible()
        expect(dialog).to_contain_text("token")
        page.locator("#login-token").fill("wrong-token-" + "x" * 30)
        dialog.locator('button[type="submit"]').click()
        expect(dialog.locator(".field-error")).to_contain_text("wrong token")
        page.locator("#login-token").fill(loop.token)
        dialog.locator('button[type="submit"]').click()
        expect(page.locator(".login-dialog")).to_have_count(0)  # reloaded, logged in
        page.locator("#tab-text").click()
        page.locator("#pipeline-text").fill('[{"call": "T_SLEEP", "args": [0]}]')
        page.click("#submit-pipeline")
        page.wait_for_url(re.compile(r"#/jobs/j[0-9a-f]+(\.[0-9a-f]+)?$"))
        job = page.url.rsplit("/", 1)[1]
        assert any(j["id"] == job for j in _jobs(loop.url, loop))
    finally:
        ctx.close()


def test_mesh_view_links_only_http_urls(browser: Any) -> None:
    """The mesh view's link to a peer comes from gossip: only http(s) URLs become links."""
    ctx = browser.new_context()
    try:
        page = ctx.new_page()  # the function is pure: load it from its file and call it
        js = (ROOT / "webui" / "js" / "ui.js").read_text()
        start = js.index("export function safeHttpUrl")  # (to the end of its body)
        fn = js[start:js.index("\n}\n", start) + 2].removeprefix("export ")
        check = page.evaluate(f"""() => {{ {fn}; return [
            safeHttpUrl("http://10.0.0.2:8700"), safeHttpUrl("https://lab.example/x/"),
            safeHttpUrl("javascript:alert(1)"), safeHttpUrl("data:text/html,hi"),
            safeHttpUrl("JaVaScRiPt:alert(1)"), safeHttpUrl(" http://a"), safeHttpUrl(""),
            safeHttpUrl(null), safeHttpUrl("http://user:pw@host/")]; }}""")
        assert check == ["http://10.0.0.2:8700/", "https://lab.example/x/", None, None, None,
                         "http://a/", None, None, None]
    finally:
        ctx.close()
