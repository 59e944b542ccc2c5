"""The headers of the web UI's answers (`/` and `/ui/...`)."""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Awaitable, Callable
from importlib import resources
from pathlib import Path

from aiohttp import web


def ui_headers(webui: Path | None = None) -> dict[str, str]:
    """Session 49, review r1 F6: the UI was served with none, so a page of another port of
    the same host name framed the logged-in UI (clickjacking). A Content-Security-Policy
    that runs the UI's own scripts and its index's import map (by its hash) only, frames it
    nowhere, and lets the browser read blocks and media from an external gateway
    (Settings); the same refusal of framing for older browsers; no sniffing of types."""
    root = webui or Path(str(resources.files("webui")))
    text = (root / "index.html").read_text(encoding="utf-8")
    maps = re.findall(r'<script type="importmap">(.*?)</script>', text, re.S)
    hashes = "".join(f" 'sha256-{base64.b64encode(hashlib.sha256(m.encode()).digest()).decode()}'"
                     for m in maps)
    csp = ("default-src 'self'; script-src 'self'" + hashes + "; style-src 'self' "
           "'unsafe-inline'; img-src 'self' data: http: https:; media-src 'self' http: "
           "https:; connect-src 'self' http: https:; object-src 'none'; base-uri 'none'; "
           "form-action 'self'; frame-ancestors 'none'")
    return {"Content-Security-Policy": csp, "X-Frame-Options": "DENY",
            "X-Content-Type-Options": "nosniff"}


def ui_headers_hook(webui: Path | None = None,
                    ) -> Callable[[web.Request, web.StreamResponse], Awaitable[None]]:
    """An `on_response_prepare` hook: `ui_headers` on every answer to `/` and `/ui/...`
    (the gateway's `/ipfs/` answers keep their own: `sandbox`)."""
    headers = ui_headers(webui)

    async def prepare(request: web.Request, response: web.StreamResponse) -> None:
        if request.path == "/" or request.path.startswith("/ui/"):
            for k, v in headers.items():
                response.headers.setdefault(k, v)
    return prepare
