"""`banzai-peer`: run one peer until SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import sys
from collections.abc import Sequence

from aiohttp import web

from peer.config import PeerConfig, from_args
from peer.errors import BanzaiError
from peer.http.app import make_app
from peer.node import Node

log = logging.getLogger("banzai")


async def serve(cfg: PeerConfig, stop: asyncio.Event) -> None:
    node = Node(cfg)
    runner = web.AppRunner(make_app(node), access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    host, port = cfg.http_addr
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = runner.addresses[0][1] if runner.addresses else port
    if host in ("0.0.0.0", "::", ""):  # advertise an address other peers can reach
        host = cfg.mdns_interfaces[0] if cfg.mdns_interfaces else socket.gethostbyname(
            socket.gethostname())
    shown = f"[{host}]" if ":" in host else host
    node.http_url = f"http://{shown}:{bound}"
    try:
        await node.start()
        print(f"banzai-peer {node.peer_id} ({node.name}) ready", flush=True)
        print(f"web UI: {node.http_url}/", flush=True)
        print(f"api:    {node.http_url}/api  gateway: {node.http_url}/ipfs/", flush=True)
        await stop.wait()
    finally:
        log.info("shutting down")
        await runner.cleanup()
        await node.close()


def main(argv: Sequence[str] | None = None) -> None:
    try:
        cfg, _ = from_args(argv)
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
