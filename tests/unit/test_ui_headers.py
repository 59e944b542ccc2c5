"""Session 49, review r1 F6: the web UI's answers (`/`, `/ui/...`) carry a
Content-Security-Policy (its own scripts and its import map's hash only, no framing),
X-Frame-Options and nosniff; the gateway's keep their own (`sandbox`), the API's none of
these. Fails on 6c66b4c1 (no such headers). The browser side (the UI runs under it, framing
is refused) is tests/integration/test_webui_hostile.py."""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path

from peer.config import PeerConfig
from peer.http.uiheaders import ui_headers
from peer.node import Node
from tests.unit.api_client import api_client

WEBUI = Path(__file__).resolve().parents[2] / "webui"


async def test_the_ui_is_served_with_a_csp_that_frames_it_nowhere(tmp_path: Path) -> None:
    node = Node(PeerConfig(data_dir=tmp_path / "peer", slots=1, mdns=False))
    try:
        async with api_client(node) as c:
            for path in ("/", "/ui/js/app.js", "/ui/css/app.css"):
                r = await c.get(path)
                assert r.status == 200, path
                csp = r.headers["Content-Security-Policy"]
                assert "frame-ancestors 'none'" in csp and "object-src 'none'" in csp, path
                assert "base-uri 'none'" in csp and "script-src 'self' 'sha256-" in csp, path
                assert "'unsafe-inline'" not in csp.split("script-src", 1)[1].split(";")[0]
                assert r.headers["X-Frame-Options"] == "DENY", path
                assert r.headers["X-Content-Type-Options"] == "nosniff", path
            r = await c.get("/api/health")
            assert "Content-Security-Policy" not in r.headers
            cid = (await (await c.post("/api/add?name=x.html", data=b"<p>x</p>")).json())["cid"]
            r = await c.get(f"/ipfs/{cid}")
            assert r.headers["Content-Security-Policy"] == "sandbox"
    finally:
        node.log.close()


def test_the_csp_allows_the_index_import_map_by_its_hash() -> None:
    """Chromium runs an inline import map only if the policy names its hash (or allows
    every inline script, which this one does not)."""
    text = (WEBUI / "index.html").read_text(encoding="utf-8")
    (importmap,) = re.findall(r'<script type="importmap">(.*?)</script>', text, re.S)
    digest = base64.b64encode(hashlib.sha256(importmap.encode()).digest()).decode()
    assert f"script-src 'self' 'sha256-{digest}';" in ui_headers(WEBUI)["Content-Security-Policy"]
