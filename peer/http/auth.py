"""Who may call which route, as Jupyter server does it: `decide` is the pure rule over the
facts of one request (Host, Origin, method, path, credentials); `Auth.middleware` gathers
those facts and answers refusals through peer/errors_http.py; `Auth.add_routes` adds the
login routes (token -> HttpOnly SameSite=Strict cookie + CSRF token). Loop-only, no state
beyond the token."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import socket
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import Enum
from urllib.parse import urlsplit

from aiohttp import web

from peer import jsontext
from peer.errors import (
    ArgError,
    BanzaiError,
    Forbidden,
    RequestTimeout,
    TooLarge,
    Unauthorized,
)
from peer.errors_http import Surface, http_error
from peer.http.tokens import MESH_SCHEME, csrf_token, new_session, same, session_nonce
from peer.ipfs.subdomain import parse_host, split_port

log = logging.getLogger("banzai.auth")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
HOW_TO_LOGIN = ("open the login URL banzai-peer printed at start (`banzai-peer --print-login "
                "--data-dir DIR` prints it again), or send 'Authorization: Bearer TOKEN' with "
                "the token from the file http-token in the peer's data dir")

LOGIN_MAX_BODY_BYTES = 4096  # POST /login's body ({"token": T}, T of 43 characters), read
# before any token check: bounded in size and time (login_timeout_s), not by --max-body-bytes
WRONG_TOKEN = Unauthorized("wrong token: " + HOW_TO_LOGIN, field="token")


class Route(Enum):
    """What a request asks for, as far as access goes."""

    OPEN = "open"  # /api/health, the UI's static files, login: anyone whose Host is ours
    API_READ = "api-read"  # reads of /api/ (and /metrics): the token beyond loopback
    MESH_READ = "mesh-read"  # GET /api/snapshot: as API_READ, or the mesh credential
    CONTENT = "content"  # /ipfs/, /ipns/, POST /api/car: also the mesh credential
    WRITE = "write"  # every state-changing route, every /api/v0/ route: the token, always


class Cred(Enum):
    NONE = 0
    VALID = 1
    WRONG = 2


@dataclass(frozen=True)
class Policy:
    """The peer's side of the rule, fixed at start."""

    names: frozenset[str]  # Host names and addresses of this peer (lower case, no port)
    loopback_only: bool  # bound to loopback addresses only
    public_gateway: bool = False  # /ipfs/ reads open to anyone (--public-gateway)
    any_address: bool = False  # bound to a wildcard: any IP-literal Host is ours
    subdomain_hosts: frozenset[str] = frozenset()  # their *.ipfs. and *.ipns. serve content

    @staticmethod
    def for_bind(bind_host: str, allow_hosts: Iterable[str] = (),
                 public_gateway: bool = False,
                 subdomain_hosts: Iterable[str] = ("localhost",)) -> Policy:
        """The policy of a peer bound to `bind_host`; names: the bound address, localhost,
        the loopback addresses, `allow_hosts`, the subdomain gateway's hosts and, beyond
        loopback, this machine's name."""
        wildcard = bind_host in ("", "0.0.0.0", "::", "*")
        loop = not wildcard and is_loopback(bind_host)
        subdomains = frozenset(h.strip().lower() for h in subdomain_hosts) - {""}
        names = {"localhost", bind_host.strip("[]").lower(), *(h.lower() for h in allow_hosts),
                 *subdomains}
        if not loop:
            names.add(socket.gethostname().lower())
        names.discard("")
        return Policy(frozenset(names), loop, public_gateway, wildcard, subdomains)

    @property
    def content_open(self) -> bool:
        """Anyone may read content (no token): the subdomain gateway's redirects are useful
        only then, as another origin does not get the UI's session cookie."""
        return self.loopback_only or self.public_gateway


@dataclass(frozen=True)
class Facts:
    """One request as the rule sees it."""

    method: str
    path: str
    host: str | None  # the Host header
    origin: str | None  # the Origin header
    scheme: str = "http"
    user: Cred = Cred.NONE  # the token: as a Bearer header, or a session cookie
    by_cookie: bool = False  # `user` came from the session cookie (then CSRF applies)
    csrf: bool = False  # the request carries the session's CSRF token
    mesh: Cred = Cred.NONE  # the mesh credential (peers fetching from each other)


def is_loopback(host: str) -> bool:
    h = host.strip("[]").lower()
    if h == "localhost":
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False


def classify(method: str, path: str) -> Route:
    """The access class of a route (unknown paths included: they answer 404 past the rule)."""
    if path.startswith("/api/v0/"):
        return Route.WRITE  # Kubo's RPC is an admin API: every command needs the token
    if path in ("/login", "/logout", "/api/session"):
        return Route.OPEN  # their own checks: the token in the body, the session
    if path.startswith(("/ipfs/", "/ipns/")) or (method == "POST" and path == "/api/car"):
        return Route.CONTENT  # POST /api/car reads: a CAR of held DAGs
    if method not in SAFE_METHODS:
        return Route.WRITE
    if path == "/api/health" or path in ("/", "/favicon.ico") or path.startswith("/ui/"):
        return Route.OPEN
    if path == "/api/snapshot":
        return Route.MESH_READ  # a peer behind the compaction horizon catching up
    return Route.API_READ


def split_host(value: str) -> str:
    """The host of a Host header (no port, no IPv6 brackets), lower case; ArgError for a
    malformed port (split_port: the gateway reads the Host the same way)."""
    name, _ = split_port(value)
    if name.startswith("[") and name.endswith("]"):
        name = name[1:-1]
    return name.lower()


def host_kind(host: str, policy: Policy) -> str | None:
    """"peer" for a Host of this peer, "content" for the subdomain gateway form
    (CID.ipfs.NAME, KEY.ipns.NAME of a subdomain gateway host NAME: whatever the gateway's
    parse_host takes), None for a foreign Host; ArgError for a malformed port."""
    h = split_host(host).rstrip(".")
    try:
        ip = ipaddress.ip_address(h)
    except ValueError:
        ip = None
    if ip is not None:
        return "peer" if policy.any_address or ip.is_loopback or h in policy.names else None
    if h in policy.names:
        return "peer"
    return "content" if parse_host(host, policy.subdomain_hosts) is not None else None


def same_origin(origin: str, scheme: str, host: str) -> bool:
    """Origin is scheme://host:port of the peer as this request reached it."""
    try:
        o = urlsplit(origin)
        h = urlsplit(f"{scheme}://{host}")
        default = {"http": 80, "https": 443}
        return (o.scheme == scheme and (o.hostname or "") == (h.hostname or "")
                and (o.port or default.get(o.scheme)) == (h.port or default.get(scheme)))
    except ValueError:
        return False


def _needs_token(what: str, facts: Facts) -> BanzaiError:
    if facts.user is Cred.WRONG:
        return Unauthorized(f"{what}: the token or session is wrong or expired; "
                            + HOW_TO_LOGIN, field="token")
    return Unauthorized(f"{what} needs the peer's token: " + HOW_TO_LOGIN, field="token")


def _check_host_origin(facts: Facts, policy: Policy) -> tuple[BanzaiError | None, Route]:
    """The refusal for the request's Host or Origin, if any, and its access class: every path
    of a content Host (the subdomain gateway) is a path in the content."""
    route = classify(facts.method, facts.path)
    if not facts.host:
        return Forbidden("the request has no Host header", field="host"), route
    try:
        kind = host_kind(facts.host, policy)
    except ArgError as exc:
        return exc, route
    if kind is None:
        return Forbidden(f"Host {split_host(facts.host)!r} is not a name of this peer "
                         "(DNS rebinding is refused); if it is, start the peer with "
                         f"--allow-host {split_host(facts.host)}", field="host"), route
    if kind == "content":
        if facts.method not in SAFE_METHODS:
            return Forbidden("a subdomain gateway host serves content reads only",
                             field="host"), route
        route = Route.CONTENT
    if facts.method not in SAFE_METHODS and facts.origin is not None and not same_origin(
            facts.origin, facts.scheme, facts.host):
        return Forbidden(f"cross-origin request refused: Origin {facts.origin!r} is not this "
                         "peer's; use the peer's own web UI or the CLI", field="origin"), route
    return None, route


def decide(facts: Facts, policy: Policy) -> BanzaiError | None:
    """None if the request may proceed, else the error to answer (400 for a malformed Host,
    401 or 403)."""
    refused, route = _check_host_origin(facts, policy)
    if refused is not None or route is Route.OPEN:
        return refused
    user_ok = facts.user is Cred.VALID
    if route is Route.WRITE:
        if not user_ok:
            return _needs_token(f"{facts.method} {facts.path}", facts)
        if facts.by_cookie and not facts.csrf:
            return Forbidden(f"{facts.method} {facts.path} with a session cookie needs its "
                             f"CSRF token in the {CSRF_HEADER} header (from GET /api/session)",
                             field="csrf")
        return None
    if policy.loopback_only or user_ok:
        return None
    if route is Route.CONTENT:
        if policy.public_gateway or facts.mesh is Cred.VALID:
            return None
        return _needs_token("reading content from a peer bound beyond loopback (without "
                            "--public-gateway)", facts)
    if route is Route.MESH_READ and facts.mesh is Cred.VALID:
        return None
    return _needs_token("reading the API of a peer bound beyond loopback", facts)


def _surface(path: str) -> Surface:
    if path.startswith("/api/v0/"):
        return Surface.RPC
    return Surface.GATEWAY if path.startswith(("/ipfs/", "/ipns/")) else Surface.API


class Auth:
    """The token check of one peer's app: `middleware` first in the app's list."""

    def __init__(self, token: str, policy: Policy, mesh_credentials: Sequence[str] = (),
                 secure_cookie: bool = False, login_timeout_s: float = 10.0,
                 abandon_body: Callable[[web.Request], None] = lambda _request: None) -> None:
        self.token = token
        self.policy = policy
        self.mesh = tuple(mesh_credentials)  # one per accepted mesh secret (rotation)
        self.secure_cookie = secure_cookie
        self.login_timeout_s = login_timeout_s  # POST /login's whole body, from its handler's
        # start (the app passes http_header_timeout_s: a token is as short as a header block)
        self.abandon_body = abandon_body  # the rest of a request's body will not be read
        # (Gate.abandon_body: its connection closes after the response); must not block

    def cookie_name(self, request: web.Request) -> str:
        """Per port, as Jupyter: two peers on one host keep their own sessions."""
        sock = request.transport.get_extra_info("sockname") if request.transport else None
        port = sock[1] if isinstance(sock, tuple) and len(sock) >= 2 else 0
        return f"banzai-session-{port}"

    def _nonce(self, request: web.Request) -> str | None:
        cookie = request.cookies.get(self.cookie_name(request))
        return session_nonce(self.token, cookie) if cookie else None

    def facts(self, request: web.Request) -> Facts:
        auth = request.headers.get("Authorization", "")
        scheme, _, value = auth.partition(" ")
        user, by_cookie, csrf, mesh = Cred.NONE, False, False, Cred.NONE
        if scheme.lower() == "bearer":
            user = Cred.VALID if same(value.strip(), self.token) else Cred.WRONG
        elif scheme == MESH_SCHEME:
            ok = any(same(value.strip(), c) for c in self.mesh)
            mesh = Cred.VALID if ok else Cred.WRONG
        elif request.cookies.get(self.cookie_name(request)):
            nonce = self._nonce(request)
            user, by_cookie = (Cred.VALID if nonce else Cred.WRONG), True
            sent = request.headers.get(CSRF_HEADER, "")
            csrf = bool(nonce and sent and same(sent, csrf_token(self.token, nonce)))
        return Facts(request.method, request.path, request.headers.get("Host"),
                     request.headers.get("Origin"), request.scheme, user, by_cookie, csrf,
                     mesh)

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        refused = decide(self.facts(request), self.policy)
        return await handler(request) if refused is None else self.refuse(request, refused)

    def refuse(self, request: web.Request, refused: BanzaiError) -> web.Response:
        """The JSON answer (the shape of the request's surface) to a refused request."""
        surface = _surface(request.path)
        err = http_error(refused, surface)
        log.info("refused %s %s: %s", request.method, request.path, refused.message)
        body = err.kubo_json() if surface is Surface.RPC else err.json()
        headers = {"WWW-Authenticate": 'Bearer realm="banzai"'} if err.status == 401 else {}
        return web.json_response(body, status=err.status, headers=headers)

    # -- login ---------------------------------------------------------------------------
    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/login", self.login_get)
        app.router.add_post("/login", self.login_post)
        app.router.add_post("/logout", self.logout)
        app.router.add_get("/api/session", self.session)

    def _is_token(self, token: object) -> bool:
        return isinstance(token, str) and bool(token) and same(token, self.token)

    def _login(self, request: web.Request, resp: web.StreamResponse) -> str:
        """Set the session cookie on `resp`; returns the session's CSRF token."""
        cookie = new_session(self.token)
        resp.set_cookie(self.cookie_name(request), cookie, httponly=True, samesite="Strict",
                        secure=self.secure_cookie, path="/")
        return csrf_token(self.token, cookie.partition(".")[0])

    async def login_get(self, request: web.Request) -> web.StreamResponse:
        """GET /login?token=T (the printed login URL): the session cookie, then the UI."""
        if not self._is_token(request.query.get("token")):
            return self.refuse(request, WRONG_TOKEN)
        resp = web.Response(status=302, headers={"Location": "/", "Cache-Control": "no-store"})
        self._login(request, resp)
        return resp

    async def login_post(self, request: web.Request) -> web.Response:
        """POST /login {"token": T} (the UI's login prompt): the cookie and the CSRF token."""
        body = jsontext.loads(await self._login_body(request), "the body", field="body")
        if not self._is_token(body.get("token") if isinstance(body, dict) else None):
            return self.refuse(request, WRONG_TOKEN)
        resp = web.Response(content_type="application/json", headers={"Cache-Control": "no-store"})
        csrf = self._login(request, resp)
        resp.text = json.dumps({"authenticated": True, "csrf": csrf})
        return resp

    async def _login_body(self, request: web.Request) -> bytes:
        """POST /login's body, whole within LOGIN_MAX_BODY_BYTES and login_timeout_s of the
        handler's start; past either, TooLarge (413) or RequestTimeout (408), and the rest is
        not read: the answer closes the connection."""
        limit, timeout_s = LOGIN_MAX_BODY_BYTES, self.login_timeout_s
        too_large = TooLarge(f"the login body is larger than {limit} bytes: send "
                             '{"token": "..."} only', field="body")
        try:
            if (request.content_length or 0) > limit:
                raise too_large
            data = bytearray()
            async with asyncio.timeout(timeout_s):
                while chunk := await request.content.read(limit + 1 - len(data)):
                    data += chunk
                    if len(data) > limit:
                        raise too_large
        except TooLarge:
            self.abandon_body(request)
            raise
        except TimeoutError:
            self.abandon_body(request)
            raise RequestTimeout(f"the login body did not arrive within {timeout_s:g} s "
                                 "(http_header_timeout_s)", field="body") from None
        return bytes(data)

    async def logout(self, request: web.Request) -> web.Response:
        resp = web.json_response({"authenticated": False})
        resp.del_cookie(self.cookie_name(request), path="/")
        return resp

    async def session(self, request: web.Request) -> web.Response:
        """GET /api/session: whether this browser is logged in, its CSRF token, and whether
        this peer's reads need a login (so the UI asks before the first 401)."""
        nonce = self._nonce(request)
        return web.json_response(
            {"authenticated": nonce is not None,
             "csrf": csrf_token(self.token, nonce) if nonce else None,
             "reads_need_login": not self.policy.loopback_only},
            headers={"Cache-Control": "no-store"})


__all__ = ["CSRF_HEADER", "Auth", "Cred", "Facts", "Policy", "Route", "classify", "decide",
           "host_kind", "is_loopback", "same_origin", "split_host"]
