"""Credentials of the HTTP side: the peer's access token (a 0600 file in its data dir), the
runtime files that tell a CLI on the same machine which token file belongs to which URL
(as Jupyter's jpserver-PID.json), the web session's cookie and CSRF values, and the mesh
credential peers fetch from each other with. Pure functions and small file I/O; any thread."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import ipaddress
import json
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

from peer.errors import ConfigError
from peer.privfile import create_private, read_private

TOKEN_FILE = "http-token"
MAX_TOKEN_BYTES = 4096
MESH_SCHEME = "BanzaiMesh"  # Authorization: BanzaiMesh <credential> (peer to peer)
_MESH_CONTEXT = b"banzai-http-v1"


# -- the access token ------------------------------------------------------------------------
def token_path(data_dir: Path) -> Path:
    return data_dir / TOKEN_FILE


def load_or_create_token(data_dir: Path) -> str:
    """The peer's token, created (32 random bytes, file mode 0600, whole or not at all) on
    first use; a token file readable by others is made 0600 with a warning."""
    path = token_path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        raw = _read_token_file(path)
    except FileNotFoundError:
        with contextlib.suppress(FileExistsError):  # made meanwhile: that one is ours
            create_private(path, (secrets.token_urlsafe(32) + "\n").encode())
        raw = _read_token_file(path)
    try:
        token = raw.decode().strip()
    except UnicodeDecodeError:
        token = ""
    if len(token) < 16 or len(raw) > MAX_TOKEN_BYTES:
        raise ConfigError(f"{path}: not a token (empty, shorter than 16 characters, longer "
                          "than 4 KiB or not UTF-8); delete the file to get a new one",
                          field="token")
    return token


def _read_token_file(path: Path) -> bytes:
    return read_private(path, "API token", "they may drive this peer's API", MAX_TOKEN_BYTES)


def read_token(path: Path) -> str | None:
    """The token in `path`, or None if it cannot be read (missing, another user's)."""
    try:
        token = path.read_text().strip()
    except OSError:
        return None
    return token or None


def _utf8(s: str | bytes) -> bytes:
    """`s` as bytes, whatever it holds: bytes of a request that are not UTF-8 (a header's,
    a JSON body's escapes) arrive as lone surrogates, which a plain encode() refuses."""
    return s.encode("utf-8", "surrogatepass") if isinstance(s, str) else s


def _mac(key: str | bytes, msg: str | bytes) -> str:
    return hmac.new(_utf8(key), _utf8(msg), hashlib.sha256).hexdigest()


def same(a: str, b: str) -> bool:
    """Constant-time comparison of two secrets (False, never an error, for any strings)."""
    return hmac.compare_digest(_utf8(a), _utf8(b))


# -- the web session -------------------------------------------------------------------------
def new_session(token: str) -> str:
    """A session cookie value: a random nonce and its MAC under the token (stateless: it
    stays valid across restarts, and dies with the token)."""
    nonce = secrets.token_urlsafe(16)
    return f"{nonce}.{_mac(token, 'session:' + nonce)}"


def session_nonce(token: str, cookie: str) -> str | None:
    """The nonce of a valid session cookie, else None."""
    nonce, _, mac = cookie.partition(".")
    return nonce if nonce and same(mac, _mac(token, "session:" + nonce)) else None


def csrf_token(token: str, nonce: str) -> str:
    """The CSRF token of a session: the UI sends it in X-CSRF-Token on every write."""
    return _mac(token, "csrf:" + nonce)


def mesh_credential(secret: bytes | None) -> str | None:
    """What peers of a mesh prove membership with over HTTP: HMAC(secret, banzai-http-v1);
    None without a mesh secret."""
    return None if not secret else _mac(secret, _MESH_CONTEXT)


def mesh_headers(secret: bytes | None) -> dict[str, str]:
    cred = mesh_credential(secret)
    return {} if cred is None else {"Authorization": f"{MESH_SCHEME} {cred}"}


# -- runtime files: URL -> token file, for clients on the same machine -----------------------
def _norm(url: str) -> tuple[str, str, int] | None:
    try:
        u = urlsplit(url)
        port = u.port or (443 if u.scheme == "https" else 80)
    except ValueError:
        return None
    host = (u.hostname or "").lower()
    return (u.scheme, host, port) if host else None


def local_urls(scheme: str, bind_host: str, port: int, advertised: str) -> list[str]:
    """The URLs a client on this machine may use for a peer bound to `bind_host`."""
    urls = [advertised.rstrip("/")]
    wildcard = bind_host in ("0.0.0.0", "::", "")
    loop = wildcard or bind_host == "localhost" or _is_loopback(bind_host)
    names = ["127.0.0.1", "localhost", "[::1]"] if loop else []
    if not wildcard:
        names.append(f"[{bind_host}]" if ":" in bind_host else bind_host)
    urls += [f"{scheme}://{h}:{port}" for h in names]
    return list(dict.fromkeys(urls))


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host == "localhost"


def write_runtime(runtime_dir: Path, urls: list[str], data_dir: Path) -> Path:
    """peer-PID.json (mode 0600, in a 0700 directory): this process serves `urls` with the
    token in `data_dir`. Removed by remove_runtime at a clean stop; stale ones are skipped."""
    runtime_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = runtime_dir / f"peer-{os.getpid()}.json"
    body = {"pid": os.getpid(), "url": urls[0], "urls": urls,
            "data_dir": str(data_dir.resolve()), "token_file": str(token_path(data_dir).resolve())}
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(body, f)
    _prune(runtime_dir)
    return path


def remove_runtime(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def running_peers(runtime_dir: Path) -> Iterator[dict[str, object]]:
    """The runtime records of peers whose process is alive."""
    try:
        paths = sorted(runtime_dir.glob("peer-*.json"))
    except OSError:
        return
    for p in paths:
        try:
            rec = json.loads(p.read_text())
        except (OSError, ValueError, RecursionError):  # (not one of ours: any content)
            continue
        if isinstance(rec, dict) and isinstance(rec.get("pid"), int) and _alive(rec["pid"]):
            yield rec


def _prune(runtime_dir: Path) -> None:
    alive = {rec["pid"] for rec in running_peers(runtime_dir)}
    for p in runtime_dir.glob("peer-*.json"):
        pid = p.stem.removeprefix("peer-")
        if pid.isdigit() and int(pid) not in alive:
            remove_runtime(p)


def find_token(url: str, runtime_dir: Path) -> str | None:
    """The token of the running peer on this machine that serves `url`, if this user may
    read its token file."""
    want = _norm(url)
    for rec in running_peers(runtime_dir):
        urls = rec.get("urls")
        if isinstance(urls, list) and want in {_norm(str(u)) for u in urls}:
            token = read_token(Path(str(rec.get("token_file"))))
            if token:
                return token
    return None


def find_record(data_dir: Path, runtime_dir: Path) -> dict[str, object] | None:
    """The runtime record of the running peer that uses `data_dir`, if any."""
    want = str(data_dir.resolve())
    return next((r for r in running_peers(runtime_dir) if r.get("data_dir") == want), None)


__all__ = ["MESH_SCHEME", "TOKEN_FILE", "csrf_token", "find_record",
           "find_token", "load_or_create_token", "local_urls", "mesh_credential",
           "mesh_headers", "new_session", "read_token", "remove_runtime", "running_peers",
           "same", "session_nonce", "token_path", "write_runtime"]
