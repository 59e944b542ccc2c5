"""The ZAP handler of one ZeroMQ context: admits CURVE clients whose key the keyring accepts
and counts the others. Owned by the event loop (one task answering on the context's inproc
ZAP endpoint); the decision itself is `Keyring.admits`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import zmq
import zmq.asyncio

log = logging.getLogger("banzai.zap")

ZAP_ENDPOINT = "inproc://zeromq.zap.01"  # fixed by the ZAP specification (RFC 27)
ZAP_VERSION = b"1.0"
Decide = Callable[[bytes, bytes], bool]  # (mechanism, client key) -> admitted


def zap_reply(request: list[bytes], decide: Decide) -> tuple[list[bytes], bool]:
    """The reply frames to one ZAP request and whether it admits the client."""
    if len(request) < 6 or request[0] != ZAP_VERSION:
        rid = request[1] if len(request) > 1 else b""
        return [ZAP_VERSION, rid, b"500", b"bad ZAP request", b"", b""], False
    rid, mechanism, creds = request[1], request[5], request[6:]
    ok = decide(mechanism, creds[0] if creds else b"")
    if ok:
        return [ZAP_VERSION, rid, b"200", b"OK", b"mesh", b""], True
    return [ZAP_VERSION, rid, b"400", b"not a key of this mesh", b"", b""], False


class ZapHandler:
    """Answers ZAP requests of `ctx` with `decide`; `denied` counts refused clients."""

    def __init__(self, ctx: zmq.asyncio.Context, decide: Decide) -> None:
        self._ctx = ctx
        self._decide = decide
        self._sock: zmq.asyncio.Socket | None = None
        self._task: asyncio.Task[None] | None = None
        self.admitted = 0
        self.denied = 0

    def start(self) -> None:
        """Bind the ZAP endpoint (before any CURVE socket binds) and serve it."""
        s = self._ctx.socket(zmq.REP)
        s.setsockopt(zmq.LINGER, 0)
        s.bind(ZAP_ENDPOINT)
        self._sock = s
        self._task = asyncio.get_running_loop().create_task(self._serve())

    async def _serve(self) -> None:
        assert self._sock is not None
        while True:
            try:
                request = await self._sock.recv_multipart()
            except zmq.ZMQError as e:
                log.debug("ZAP handler stopped: %s", e)
                return
            reply, ok = zap_reply(request, self._decide)
            if ok:
                self.admitted += 1
            else:
                self.denied += 1  # counted by the transport too; debug: a flood must not fill logs
                log.debug("refused a gossip connection from %s: %s",
                         request[3].decode(errors="replace") if len(request) > 3 else "?",
                         reply[3].decode())
            await self._sock.send_multipart(reply)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._sock is not None:
            self._sock.close(linger=0)
            self._sock = None


__all__ = ["ZAP_ENDPOINT", "Decide", "ZapHandler", "zap_reply"]
