"""peer/errors_http.py: the one map from error types to HTTP status and body, per surface."""

from __future__ import annotations

import inspect
from typing import Any, cast

import pytest

from peer import errors
from peer.errors import (
    ArgError,
    BadCID,
    BanzaiError,
    ConfigError,
    Conflict,
    DataError,
    Forbidden,
    IntegrityError,
    IpnsError,
    NotAcceptable,
    NotCached,
    NotFound,
    RequestTimeout,
    SpecError,
    StoreError,
    TooLarge,
    Unavailable,
    Unsupported,
)
from peer.errors_http import STATUS, HttpError, Surface, http_error, status_of, unexpected
from peer.ipfs.kubo import KuboError
from peer.ipfs.store import Store


class TaskFailure(BanzaiError):
    """A task library's own error (as tasks/ define them)."""


API, GATEWAY, RPC = Surface.API, Surface.GATEWAY, Surface.RPC


@pytest.mark.parametrize(("error", "api", "gateway", "rpc"), [
    (BanzaiError, 400, 400, 400),
    (SpecError, 400, 400, 400),
    (ArgError, 400, 400, 400),
    (ConfigError, 400, 400, 400),
    (BadCID, 400, 400, 400),
    (TaskFailure, 400, 400, 400),
    (Forbidden, 403, 403, 403),
    (NotFound, 404, 404, 400),  # Kubo's clients read 404 as "command not found"
    (NotCached, 412, 412, 400),
    (NotAcceptable, 406, 406, 400),
    (IpnsError, 400, 502, 400),
    (Conflict, 409, 409, 400),
    (TooLarge, 413, 413, 413),
    (StoreError, 500, 502, 400),  # the store is the gateway's upstream
    (DataError, 503, 502, 400),  # the peer's stored data needs mending, not the request
    (KuboError, 500, 502, 400),
    (IntegrityError, 502, 502, 400),
    (Unsupported, 501, 501, 501),
    (RequestTimeout, 408, 408, 408),
    (Unavailable, 503, 503, 503),
])
def test_status_per_surface(error: type[BanzaiError], api: int, gateway: int, rpc: int) -> None:
    exc = error("boom", field="x")
    assert (status_of(exc, API), status_of(exc, GATEWAY), status_of(exc, RPC)) == (
        api, gateway, rpc)


def test_every_error_type_is_mapped_and_declares_no_status_of_its_own() -> None:
    types = [c for _, c in inspect.getmembers(errors, inspect.isclass)
             if issubclass(c, BanzaiError)]
    assert len(types) >= 11
    for cls in types:
        assert "status" not in vars(cls), f"{cls.__name__}: statuses live in STATUS only"
        status_of(cls("x"), API)  # resolves through the class's bases
    assert all(400 <= s < 600 for row in STATUS.values() for s in row)


def test_bodies() -> None:
    err = http_error(NotFound("no job 'j1'", field="job"), API)
    assert err == HttpError(404, "NotFound", "no job 'j1'", "job", 0)
    assert err.json() == {"error": "NotFound", "message": "no job 'j1'", "field": "job"}
    assert http_error(TooLarge("too big"), GATEWAY).json() == {"error": "TooLarge",
                                                               "message": "too big"}
    rpc = http_error(ArgError('argument "ipfs-path" is required', field="arg"), RPC)
    assert rpc.kubo_json() == {"Message": 'argument "ipfs-path" is required', "Code": 1,
                               "Type": "error"}
    assert http_error(Unsupported("no"), RPC).kubo_json()["Code"] == 0


def test_unexpected_errors_never_show_a_traceback() -> None:
    assert unexpected(API) == HttpError(500, "InternalError",
                                        "internal error (see the peer's log)")
    assert unexpected(GATEWAY).status == 502 and unexpected(GATEWAY).kind == "StoreError"
    rpc = unexpected(RPC, "/api/v0/add")
    assert rpc.status == 500 and rpc.message.startswith("/api/v0/add: ")


# -- the three surfaces answer from the map ----------------------------------------------
async def test_surfaces_answer_from_the_map(aiohttp_client: Any) -> None:
    from aiohttp import web

    from peer.http.app import errors as api_errors
    from peer.ipfs import rpc

    async def fails(request: web.Request) -> web.Response:
        raise {"conflict": Conflict("job j1 is already done", field="job"),
               "bug": RuntimeError("secret detail")}[request.match_info["what"]]

    app = web.Application(middlewares=[api_errors])
    app.router.add_get("/api/{what}", fails)
    rpc.add_routes(app, cast(Store, object()))
    client = await aiohttp_client(app)
    r = await client.get("/api/conflict")
    assert r.status == 409 and await r.json() == {
        "error": "Conflict", "message": "job j1 is already done", "field": "job"}
    r = await client.get("/api/bug")
    assert r.status == 500 and await r.json() == unexpected(API).json()
    assert "secret" not in await r.text()
    r = await client.post("/api/v0/cat")  # no ?arg=: a bad argument
    assert r.status == 400 and (await r.json())["Code"] == 1
    r = await client.post("/api/v0/version", headers={"Origin": "http://elsewhere.example"})
    assert r.status == 403 and await r.json() == {
        "Message": "cross-origin RPC requests are not allowed", "Code": 0, "Type": "error"}
