"""The OpenAPI document (peer/openapi.py) matches the routes make_app registers."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from peer.config import PeerConfig
from peer.http.app import make_app
from peer.http.openapi import OPENAPI
from peer.node import Node

METHODS = {"get", "put", "post", "delete", "patch", "options", "head", "trace"}


@pytest.fixture
def app(tmp_path: Path) -> Iterator[web.Application]:
    """The real app over a real (not started) Node on a temporary data dir."""
    node = Node(PeerConfig(data_dir=tmp_path / "peer", slots=1, mdns=False))
    try:
        yield make_app(node)
    finally:
        node.log.close()


def _routes(app: web.Application) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("path") or info.get("formatter") or ""
        if not path.startswith("/api/") or route.method == "HEAD":  # HEAD comes with GET
            continue
        out.setdefault(path, set()).add(route.method.lower())
    return out


def _documented() -> dict[str, set[str]]:
    return {p: {m for m in ops if m in METHODS} for p, ops in OPENAPI["paths"].items()}


def test_every_route_is_documented_and_vice_versa(app: web.Application) -> None:
    routes, doc = _routes(app), _documented()
    assert len(routes) >= 10
    assert set(routes) == set(doc), (set(routes) ^ set(doc))
    for path, methods in routes.items():
        assert methods == doc[path], path


def test_path_parameters_are_declared(app: web.Application) -> None:
    for path, ops in OPENAPI["paths"].items():
        names = re.findall(r"{(\w+)}", path)
        for method, op in ops.items():
            declared = [p["name"] for p in op.get("parameters", []) if p["in"] == "path"]
            assert declared == names, (path, method)
            assert all(p["required"] for p in op.get("parameters", []) if p["in"] == "path")


def _refs(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [r for k, v in value.items() for r in ([v] if k == "$ref" else _refs(v))]
    if isinstance(value, list):
        return [r for v in value for r in _refs(v)]
    return []


def test_document_is_well_formed() -> None:
    assert OPENAPI["openapi"].startswith("3.")
    assert OPENAPI["info"]["title"] and OPENAPI["info"]["version"]
    for path, ops in OPENAPI["paths"].items():
        assert path.startswith("/api/")
        for method, op in ops.items():
            assert method in METHODS
            assert op["summary"]
            codes = list(op["responses"])
            assert any(c.startswith("2") for c in codes), (path, method)
            assert all(re.fullmatch(r"[1-5]\d\d", c) for c in codes)
    for ref in _refs(OPENAPI):
        name = ref.removeprefix("#/components/schemas/")
        assert name in OPENAPI["components"]["schemas"], ref


def test_error_schema_matches_the_errors_the_api_returns() -> None:
    from peer.errors import NotFound
    from peer.errors_http import Surface, http_error

    err = OPENAPI["components"]["schemas"]["Error"]
    body = http_error(NotFound("no job 'x'", field="job"), Surface.API).json()
    assert set(err["required"]) <= set(body) <= set(err["properties"])


def test_submit_and_add_document_their_bodies_and_errors() -> None:
    jobs = OPENAPI["paths"]["/api/jobs"]["post"]
    assert "requestBody" in jobs and {"201", "400", "413"} <= set(jobs["responses"])
    add = OPENAPI["paths"]["/api/add"]["post"]
    assert {"201", "400", "413"} <= set(add["responses"])
    assert {p["name"] for p in add["parameters"]} == {"cid-version", "name"}
    cancel = OPENAPI["paths"]["/api/jobs/{job}/cancel"]["post"]
    assert {"404", "409"} <= set(cancel["responses"])
