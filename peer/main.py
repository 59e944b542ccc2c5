"""`banzai-peer`: run one peer until SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import ssl
import sys
from collections.abc import Sequence
from pathlib import Path

from aiohttp import web

from peer.config import PeerConfig, from_args
from peer.errors import BanzaiError, ConfigError
from peer.http.app import make_app
from peer.http.tokens import (
    find_record,
    load_or_create_token,
    local_urls,
    remove_runtime,
    write_runtime,
)
from peer.node import Node

log = logging.getLogger("banzai")


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
    node = Node(cfg)
    runner = web.AppRunner(make_app(node), access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    host, port = cfg.http_addr
    ctx = _ssl(cfg)
    site = web.TCPSite(runner, host, port, ssl_context=ctx)
    await site.start()
    bound = runner.addresses[0][1] if runner.addresses else port
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
        await runner.cleanup()
        await node.close()


def print_login(cfg: PeerConfig) -> None:
    """--print-login: the login URL of the running peer of cfg.data_dir, else the one it
    will have (from --http); never starts a peer."""
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
    try:
        cfg, ns = from_args(argv)
        if ns.print_login:
            print_login(cfg)
            return
    except BanzaiError as e:
        print(f"banzai-peer: {e.message}", file=sys.stderr)
        sys.exit(2)
    logging.basicConfig(level=cfg.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")

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
