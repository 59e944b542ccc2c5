"""The `api` kind, worker side: one run of an HTTP service by the protocol of
docs/executors.md (PUT inputs, POST the params, poll the status, GET the result and its
files). Blocks its executor worker; every URL passes the fetch address policy (--fetch-allow),
and only idempotent steps (PUT, GET) are retried, with backoff.
"""

from __future__ import annotations

import http.client
import json
import os
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar

from peer.errors import BanzaiError
from peer.jsontext import MAX_STORED_DEPTH, check
from tasks.fetch_policy import AddressPolicy, HttpGet
from tasks.registry import TaskContext, TaskDef

T = TypeVar("T")
ATTEMPTS = 4  # of an idempotent step, before the run fails
BACKOFF_S = 0.2  # first wait between attempts, doubled after each
POLL_S = (0.05, 2.0)  # first and longest wait between status polls
MAX_JSON_BYTES = 16 << 20
_CHUNK = 1 << 16
_RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})


class ApiError(BanzaiError):
    """An api task's service answered an error, garbage, or not at all."""


class _Transient(ApiError):
    """A failure worth another attempt of an idempotent step (a 5xx, a reset connection)."""


def invoke(tdef: TaskDef, ctx: TaskContext, inp: Path | None, out: Path,
           params: Mapping[str, Any]) -> None:
    """Run the service once: out/ gets result.json and the files the result lists."""
    client = HttpGet(AddressPolicy.from_cidrs(ctx.fetch_allow), timeout_s=60.0,
                     user_agent="banzai-api/1")
    base = params["url"]
    for rel, path in _files(inp):
        url = f"{base}/in/{urllib.parse.quote(rel)}"
        _retry(lambda p=path, u=url: _put(client, u, p), f"PUT {url}")  # type: ignore[misc]
    ctx.log(f"[banzai] api: POST {base}/run")
    status_url = _run(client, base, params.get("body") or {})
    result_url = _poll(client, status_url, ctx)
    result = _retry(lambda: _get_json(client, result_url), f"GET {result_url}")
    (out / "result.json").write_text(json.dumps(result, sort_keys=True, indent=1))
    files = result.get("files", [])
    if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
        raise ApiError(f"GET {result_url}: \"files\" must be a list of paths")
    for rel in files:
        dest = out / _safe(rel, result_url)
        url = urllib.parse.urljoin(status_url + "/", f"out/{urllib.parse.quote(rel)}")
        _retry(lambda d=dest, u=url: _download(client, u, d), f"GET {url}")  # type: ignore[misc]


def _files(inp: Path | None) -> Iterator[tuple[str, Path]]:
    if inp is None:
        return
    if inp.is_file():
        yield inp.name, inp
        return
    for d, dirs, names in os.walk(inp):
        dirs.sort()
        for n in sorted(names):
            p = Path(d, n)
            yield p.relative_to(inp).as_posix(), p


def _safe(rel: str, where: str) -> str:
    parts = PurePosixPath(rel).parts
    if not parts or rel.startswith("/") or any(p in ("..", ".") for p in parts):
        raise ApiError(f"GET {where}: bad output path {rel!r}")
    return rel


def _retry(step: Callable[[], T], what: str) -> T:
    """Run an idempotent step; a transient failure is retried ATTEMPTS times with backoff."""
    wait = BACKOFF_S
    for attempt in range(1, ATTEMPTS + 1):
        try:
            return step()
        except (_Transient, OSError, http.client.HTTPException) as e:
            if attempt == ATTEMPTS:
                raise ApiError(f"{what} failed {ATTEMPTS} times, last: {_reason(e)}") from None
            time.sleep(wait)
            wait *= 2
    raise AssertionError("unreachable")


def _reason(e: BaseException) -> str:
    return e.message if isinstance(e, BanzaiError) else f"{type(e).__name__}: {e}"


def _judge(resp: http.client.HTTPResponse, what: str, ok: tuple[int, ...]) -> None:
    if resp.status in ok:
        return
    text = resp.read(512).decode("utf-8", "replace").strip()
    detail = f"{what} answered {resp.status}" + (f": {text}" if text else "")
    raise (_Transient if resp.status in _RETRY_STATUSES else ApiError)(detail)


def _put(client: HttpGet, url: str, path: Path) -> None:
    with path.open("rb") as f, client.send("PUT", url, f, {
            "Content-Length": str(path.stat().st_size),
            "Content-Type": "application/octet-stream"}) as resp:
        _judge(resp, f"PUT {url}", (200, 201, 204))
        resp.read()


def _run(client: HttpGet, base: str, body: Mapping[str, Any]) -> str:
    """POST the params once (not idempotent: never retried); the status URL it answers."""
    url = f"{base}/run"
    data = json.dumps(body).encode()
    try:
        with client.send("POST", url, data, {"Content-Type": "application/json",
                                              "Content-Length": str(len(data))}) as resp:
            if resp.status != 202:
                _judge(resp, f"POST {url}", ())
            location = resp.getheader("Location")
            raw = resp.read(MAX_JSON_BYTES)
    except (OSError, http.client.HTTPException) as e:
        raise ApiError(f"POST {url} failed: {_reason(e)}") from None
    if not location:
        doc = _decode(raw, f"POST {url}")
        location = doc.get("status") if isinstance(doc.get("status"), str) else None
    if not location:
        raise ApiError(f"POST {url} answered 202 without a status URL (Location header or "
                       "\"status\")")
    return urllib.parse.urljoin(url, location)


def _poll(client: HttpGet, url: str, ctx: TaskContext) -> str:
    """Poll the status until done (the task's timeout bounds the wait); the result URL."""
    wait = POLL_S[0]
    while True:
        doc = _retry(lambda: _get_json(client, url), f"GET {url}")
        state = doc.get("state")
        if state == "done":
            result = doc.get("result")
            return urllib.parse.urljoin(url, result) if isinstance(result, str) \
                else f"{url}/result"
        if state == "failed":
            raise ApiError(f"the service failed the run: {str(doc.get('error', ''))[:2000]}")
        if state not in ("queued", "running"):
            raise ApiError(f"GET {url}: unknown state {str(state)[:80]!r} (queued, running, "
                           "done or failed)")
        if isinstance(doc.get("progress"), (int, float)):
            ctx.progress(min(max(float(doc["progress"]), 0.0), 0.99))
        time.sleep(wait)
        wait = min(wait * 1.5, POLL_S[1])


def _get_json(client: HttpGet, url: str) -> dict[str, Any]:
    with client.send("GET", url) as resp:
        _judge(resp, f"GET {url}", (200,))
        raw = resp.read(MAX_JSON_BYTES + 1)
    return _decode(raw, f"GET {url}")


def _decode(raw: bytes, what: str) -> dict[str, Any]:
    if len(raw) > MAX_JSON_BYTES:
        raise ApiError(f"{what}: the JSON answer is larger than {MAX_JSON_BYTES} bytes")
    try:
        doc = json.loads(raw)
    except ValueError:  # not UTF-8 or JSON
        shown = raw[:80].decode("utf-8", "replace")
        raise ApiError(f"{what} answered garbage, not JSON: {shown!r}") from None
    except RecursionError:
        raise ApiError(f"{what}'s answer is nested too deeply: deeper than "
                       f"{MAX_STORED_DEPTH} levels") from None
    check(doc, f"{what}'s answer", error=ApiError, limit=MAX_STORED_DEPTH)  # (its output is
    # encoded again at a deeper stack)
    if not isinstance(doc, dict):
        raise ApiError(f"{what} answered JSON that is not an object")
    return doc


def _download(client: HttpGet, url: str, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    with client.send("GET", url) as resp, dest.open("wb") as f:
        _judge(resp, f"GET {url}", (200,))
        while chunk := resp.read(_CHUNK):
            f.write(chunk)
