"""`banzai-peer`: run one peer until SIGINT/SIGTERM (or print the mesh's join command).
Sets the process's cache and temp directories under the data dir before anything starts.
Imports the daemon (aiohttp, peer.node, peer.http) in its functions, not at the top: each
executor worker and its forkserver import this module again (the script's own import)."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import os
import signal
import socket
import ssl
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from peer import fdlimit, gcpace
from peer.config import PeerConfig, from_args
from peer.dataentry import TMP_DIR, ensure_dir
from peer.errors import BanzaiError, ConfigError

if TYPE_CHECKING:
    from aiohttp import web

    from peer.node import Node

log = logging.getLogger("banzai")
HTTP_SHUTDOWN_S = 1.0  # a request handler still running at shutdown (`shut_down`) is given
# this long, then cancelled


def _ssl(cfg: PeerConfig) -> ssl.SSLContext | None:
    if cfg.tls_cert is None or cfg.tls_key is None:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        ctx.load_cert_chain(cfg.tls_cert, cfg.tls_key)
    except (OSError, ssl.SSLError) as e:
        raise ConfigError(f"tls: cannot load {cfg.tls_cert} / {cfg.tls_key}: {e}",
                          field="tls_cert") from None
    return ctx


def login_url(base: str, token: str) -> str:
    return f"{base}/login?token={token}"


async def serve(cfg: PeerConfig, stop: asyncio.Event) -> None:
    from peer.http.app import GATE, make_app
    from peer.http.limits import serve as serve_http
    from peer.http.tokens import load_or_create_token, local_urls, remove_runtime, write_runtime
    from peer.node import Node

    node = Node(cfg)
    app = make_app(node)
    host, port = cfg.http_addr
    ctx = _ssl(cfg)
    # through the gate of slow and many clients (peer/http/limits.py)
    runner, site = await serve_http(app, app[GATE], host, port, ssl_context=ctx,
                                    access_log=None, shutdown_timeout=HTTP_SHUTDOWN_S)
    bound = site.port
    if host in ("0.0.0.0", "::", ""):  # advertise an address other peers can reach
        host = cfg.mdns_interfaces[0] if cfg.mdns_interfaces else socket.gethostbyname(
            socket.gethostname())
    shown = f"[{host}]" if ":" in host else host
    scheme = "https" if ctx else "http"
    node.http_url = f"{scheme}://{shown}:{bound}"
    try:  # lets the CLI of this user find the token (optional: --token-file does too)
        runtime: Path | None = write_runtime(
            cfg.runtime_dir, local_urls(scheme, cfg.http_addr[0], bound, node.http_url),
            cfg.data_dir)
    except OSError as e:
        runtime = None
        log.warning("cannot write a runtime file in %s: %s", cfg.runtime_dir, e)
    try:
        await node.start()
        print_join(node, cfg)
        token = load_or_create_token(cfg.data_dir)
        print(f"banzai-peer {node.peer_id} ({node.name}) ready", flush=True)
        print(f"web UI: {node.http_url}/", flush=True)
        print(f"api:    {node.http_url}/api  gateway: {node.http_url}/ipfs/", flush=True)
        print(f"login:  {login_url(node.http_url, token)}", flush=True)
        await stop.wait()
    finally:
        log.info("shutting down")
        if runtime is not None:
            remove_runtime(runtime)
        await shut_down(runner, node)


async def shut_down(runner: web.AppRunner, node: Node) -> None:
    """Stop serving in the order that answers the requests under way: first no new
    connection or request (the site stops listening; a connection kept alive closes once its
    request under way is answered), then the node closes (an acknowledgement's fsync under way
    is waited for, at most CLOSE_SYNC_S, and answered by its outcome: `Node._sync_last`),
    then the HTTP runner, whose handlers still running get its shutdown_timeout before they
    are cancelled (an event stream's, a slow download's). With the runner closed first, a
    handler awaiting an fsync longer than that was cancelled: its client got no answer,
    though its submission was on disk."""
    for site in list(runner.sites):
        await site.stop()
    if runner.server is not None:
        runner.server.pre_shutdown()
    try:
        await node.close()
    finally:
        await runner.cleanup()


def print_join(node: Node, cfg: PeerConfig) -> None:
    """A new mesh's join command, once (it holds the secret: not repeated in every log)."""
    from peer.mesh.keyring import join_command

    src = node.mesh_secrets
    if src.source == "generated":
        print(f"new mesh: its secret is in {src.path} (mode 0600). To join another peer "
              f"to this mesh, run there:\n  {join_command(src.primary, cfg.mesh_name)}",
              flush=True)
    else:
        print(f"mesh secret: {src.path} ({src.source}); banzai-peer --print-join prints "
              "the command that joins another peer", flush=True)


def _numba_default_cache_writable() -> bool:
    """numba caches compiled functions next to their modules (librosa's) when it may write
    there; only a peer that may not (a read-only install, systemd's ProtectSystem=strict)
    needs a cache of its own under its data dir."""
    spec = importlib.util.find_spec("librosa")
    origin = spec.origin if spec is not None else None
    return origin is not None and os.access(Path(origin).parent, os.W_OK)


def private_dirs(data_dir: Path) -> None:
    """Point every cache and temp directory the peer and its workers (numba, matplotlib,
    XDG caches, tempfile) would write to under the data dir, unless the environment already
    names one: a peer can then run with everything but its data dir read-only (systemd
    ProtectSystem=strict, ProtectHome=read-only; docs/security.md)."""
    ensure_dir(data_dir, "the data dir", mode=0o700)
    mode = data_dir.stat().st_mode & 0o777
    if mode & 0o077:
        log.warning("data dir %s is open to other users (mode %o): they can read the event "
                    "log and the blocks; chmod 700 it (docs/security.md)", data_dir, mode)
    dirs = {"TMPDIR": TMP_DIR, "XDG_CACHE_HOME": "cache", "MPLCONFIGDIR": "cache/matplotlib"}
    if not _numba_default_cache_writable():  # else keep numba's shared, already warm cache:
        dirs["NUMBA_CACHE_DIR"] = "cache/numba"  # a fresh one costs every worker a recompile
    for var, sub in dirs.items():
        if not os.environ.get(var):
            path = ensure_dir(data_dir / sub, f"{var}'s directory", real=sub == TMP_DIR,
                              mode=0o700)
            os.environ[var] = str(path)
    tempfile.tempdir = None  # tempfile caches its directory: look again


def print_login(cfg: PeerConfig) -> None:
    """--print-login: the login URL of the running peer of cfg.data_dir, else the one it
    will have (from --http); never starts a peer."""
    from peer.http.tokens import find_record, load_or_create_token

    token = load_or_create_token(cfg.data_dir)
    rec = find_record(cfg.data_dir, cfg.runtime_dir)
    if rec is not None:
        base = str(rec["url"])
    else:
        host, port = cfg.http_addr
        scheme = "https" if cfg.tls_cert else "http"
        base = f"{scheme}://{'localhost' if host in ('0.0.0.0', '::', '') else host}:{port}"
        print("banzai-peer: no running peer uses this data dir; the URL once it runs:",
              file=sys.stderr)
    print(login_url(base, token), flush=True)


def main(argv: Sequence[str] | None = None) -> None:
    from peer.ipfs.blocks import tune_allocator
    from peer.mesh.keyring import join_command
    from peer.node import mesh_secrets

    try:
        cfg, ns = from_args(argv)
    except BanzaiError as e:
        print(f"banzai-peer: {e.message}", file=sys.stderr)
        sys.exit(2)
    logging.basicConfig(level=cfg.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    tune_allocator()  # block reads: see peer/ipfs/blocks.py
    gcpace.apply(gcpace.GcPace(cfg.gc_young_allocs))  # collections less often: peer/gcpace.py
    fdlimit.raise_open_files()  # many clients: peer/fdlimit.py
    try:
        private_dirs(cfg.data_dir)
        if ns.print_join:
            print(join_command(mesh_secrets(cfg).primary, cfg.mesh_name))
            return
        if ns.print_login:
            print_login(cfg)
            return
    except BanzaiError as e:
        print(f"banzai-peer: {e.message}", file=sys.stderr)
        sys.exit(2)
    except OSError as e:
        print(f"banzai-peer: cannot use the data dir: {e}", file=sys.stderr)
        sys.exit(1)

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await serve(cfg, stop)

    try:
        asyncio.run(run())
    except BanzaiError as e:
        print(f"banzai-peer: {e.message}", file=sys.stderr)
        sys.exit(2)
    except OSError as e:
        print(f"banzai-peer: cannot start: {e}", file=sys.stderr)
        sys.exit(1)
    with contextlib.suppress(Exception):
        logging.shutdown()


if __name__ == "__main__":
    main()
