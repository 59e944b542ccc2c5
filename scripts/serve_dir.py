#!/usr/bin/env python3
"""Serve a directory over HTTP on 127.0.0.1 (threaded; port 0 picks a free port).

    python scripts/serve_dir.py corpus --port 8765      # prints http://127.0.0.1:8765/

As a module: `with serve(path) as base_url: ...` (base_url ends with "/").
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import http.server
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def serve(directory: Path, port: int = 0,
          handler: type[http.server.BaseHTTPRequestHandler] | None = None) -> Iterator[str]:
    """Serve `directory` (or use `handler`) in a background thread; yield the base URL."""
    h: Any = handler or functools.partial(_QuietHandler, directory=str(directory))
    httpd = http.server.ThreadingHTTPServer((HOST, port), h)
    httpd.daemon_threads = True
    t = threading.Thread(target=httpd.serve_forever, args=(0.05,), name="serve_dir",
                         daemon=True)
    t.start()
    try:
        yield f"http://{HOST}:{httpd.server_address[1]}/"
    finally:
        httpd.shutdown()
        httpd.server_close()
        t.join(timeout=5)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Serve a directory on 127.0.0.1.")
    ap.add_argument("directory", type=Path)
    ap.add_argument("--port", type=int, default=0, help="0 picks a free port")
    a = ap.parse_args(argv)
    with serve(a.directory, a.port) as url:
        print(url, flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
