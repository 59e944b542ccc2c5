"""Helpers for the web UI tests: the system Chromium, a small cached corpus served on
127.0.0.1, console-error collection, canvas checks and screenshots."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-quic",
                 "--no-first-run"]
ARTIFACTS = ROOT / "test-artifacts" / "webui"
DOC_SHOTS = ROOT / "docs" / "screenshots"
CORPUS_DIR = ROOT / ".cache" / "webui-corpus"
SPEAKER = "awb"
CORPUS_ZIP = f"cmu_us_{SPEAKER}_arctic-0.90-release.zip"
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}


def build_corpus(utterances: int = 12) -> Path:
    """1 speaker x `utterances` synthetic ARCTIC zip (cached by make_corpus's manifest)."""
    CORPUS_DIR.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, str(ROOT / "scripts" / "make_corpus.py"), "--speakers", SPEAKER,
                    "--utterances", str(utterances), "--out", str(CORPUS_DIR)],
                   check=True, capture_output=True, cwd=ROOT, timeout=300)
    return CORPUS_DIR


@contextmanager
def serve_corpus(directory: Path) -> Iterator[str]:
    """Serve `directory` on 127.0.0.1 (scripts/serve_dir.py); yields the base URL."""
    spec = importlib.util.spec_from_file_location("serve_dir", ROOT / "scripts" / "serve_dir.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    with mod.serve(directory) as url:
        yield url


def api(base: str, path: str, body: bytes | None = None, method: str | None = None,
        content_type: str = "application/json") -> Any:
    req = urllib.request.Request(f"{base}/api/{path}", data=body, method=method,
                                 headers={"Content-Type": content_type} if body else {})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


@dataclass
class Console:
    """Console errors and page errors seen by one page; `allow` holds expected substrings."""

    errors: list[str] = field(default_factory=list)
    allow: list[str] = field(default_factory=list)

    def attach(self, page: Any) -> None:
        def on_console(msg: Any) -> None:
            if msg.type == "error":
                loc = msg.location.get("url", "") if msg.location else ""
                self.errors.append(f"console.error: {msg.text} ({loc})")

        page.on("console", on_console)
        page.on("pageerror", lambda exc: self.errors.append(f"pageerror: {exc}"))

    def unexpected(self) -> list[str]:
        return [e for e in self.errors if not any(a in e for a in self.allow)]


# Fraction of pixels that are painted and the number of distinct colours of a canvas.
CANVAS_STATS = """(c) => {
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let painted = 0; const colours = new Set();
  for (let i = 0; i < d.length; i += 4) {
    if (d[i + 3] === 0) continue;
    painted++;
    if (colours.size < 512) colours.add((d[i] << 16) | (d[i + 1] << 8) | d[i + 2]);
  }
  return {painted: painted / (c.width * c.height), colours: colours.size, w: c.width, h: c.height};
}"""


def shot(page: Any, name: str, docs: bool = False, full_page: bool = False) -> Path:
    """Save a screenshot under test-artifacts/webui; `docs` ones also refresh
    docs/screenshots when BANZAI_UPDATE_SCREENSHOTS=1 (so a test run leaves the tree clean)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    if docs and os.environ.get("BANZAI_UPDATE_SCREENSHOTS") == "1":
        DOC_SHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, DOC_SHOTS / f"{name}.png")
    return path


@contextmanager
def launched_chromium() -> Iterator[Any]:
    """The system Chromium, headless, under Playwright (imported here: a test module skips
    at its top when Playwright or Chromium is missing, before it asks for this)."""
    from playwright import sync_api

    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


def stop_ui_peer(p: Any) -> None:
    """Stop a UI test module's peer (a tests.conftest.PeerProc) with SIGTERM, then let its
    output pump reach EOF and close the pipe (no ResourceWarning)."""
    p.kill(signal.SIGTERM)
    time.sleep(0.2)
    if p.proc.stdout is not None:
        p.proc.stdout.close()


def require_browser() -> Any:
    """Skip the calling test module (at its import) unless Playwright and Debian's Chromium
    are installed (`scripts/setup.sh --test` installs both); Playwright's sync API if so."""
    import pytest

    sync_api = pytest.importorskip("playwright.sync_api",
                                   reason="the playwright package is not installed")
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium); the web UI tests "
                    "need it", allow_module_level=True)
    return sync_api
