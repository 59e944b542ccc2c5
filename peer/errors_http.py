"""The one map from error types to HTTP status and body, for the REST API, the gateway and
the Kubo RPC subset. Pure data and functions (no aiohttp, no I/O): any layer, any thread."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import TypeVar

from peer.errors import (
    ArgError,
    BadDag,
    BanzaiError,
    Conflict,
    DataError,
    Forbidden,
    IntegrityError,
    IpnsError,
    LogUnwritable,
    NotAcceptable,
    NotCached,
    NotFound,
    RequestTimeout,
    StorageFull,
    StoreError,
    StoreUnwritable,
    TooLarge,
    Unauthorized,
    Unavailable,
    Unsupported,
)

_V = TypeVar("_V")


class Surface(Enum):
    """Where an error is answered; each surface has a column in STATUS and a body shape."""

    API = 0  # /api/...: JSON {"error": type, "message", "field"?}
    GATEWAY = 1  # /ipfs/...: the same JSON, with CORS headers
    RPC = 2  # /api/v0/...: Kubo's {"Message", "Code", "Type": "error"}


# Status per error type and surface (API, gateway, Kubo RPC); a type not listed takes the
# row of its nearest listed base class.
# - The gateway answers 502 for what the store cannot do: the store is its upstream.
# - The RPC never answers 404 (Kubo's clients read it as "command not found") and treats
#   everything the store refuses (missing content, malformed or corrupt CARs, directories
#   too large to import) as the request's fault: 400. Kubo itself answers 500 to all.
# - The API answers 503 to data the peer stored that does not read back (DataError: its
#   message names the file and the rows): the request is sound, the data dir needs mending
#   (restored from a backup, the rows removed), which is not the peer's bug (500).
STATUS: Mapping[type[BanzaiError], tuple[int, int, int]] = {
    BanzaiError: (400, 400, 400),  # SpecError, ArgError, ConfigError, BadCID, task errors
    Unauthorized: (401, 401, 401),
    Forbidden: (403, 403, 403),
    NotFound: (404, 404, 400),
    NotCached: (412, 412, 400),  # the gateway's only-if-cached answer
    NotAcceptable: (406, 406, 400),
    IpnsError: (400, 502, 400),  # resolving a name is the gateway's upstream
    Conflict: (409, 409, 400),
    TooLarge: (413, 413, 413),
    StoreError: (500, 502, 400),
    DataError: (503, 502, 400),  # the peer's stored data needs mending (its file named)
    IntegrityError: (502, 502, 400),
    StorageFull: (507, 507, 500),  # 507 Insufficient Storage; Kubo answers 500
    LogUnwritable: (503, 502, 500),  # the request is sound: the peer cannot store it now
    StoreUnwritable: (503, 502, 500),  # (its disk does not take writes now)
    BadDag: (422, 422, 400),  # the content named is malformed, whoever stored it
    Unsupported: (501, 501, 501),
    RequestTimeout: (408, 408, 408),  # a body that stopped arriving (peer/http/limits.py)
    Unavailable: (503, 503, 503),  # a bound of concurrent clients reached (event streams)
}

# Kubo's error Code (its cmds.ErrorType): 1 = client error (a bad argument), else 0.
KUBO_CODE: Mapping[type[BanzaiError], int] = {BanzaiError: 0, ArgError: 1}

# What an error that is not a BanzaiError (a bug, a disk failure) becomes: the status, the
# error type shown and the message; the traceback goes to the peer's log, never to a client.
UNEXPECTED: Mapping[Surface, tuple[int, str, str]] = {
    Surface.API: (500, "InternalError", "internal error (see the peer's log)"),
    Surface.GATEWAY: (502, "StoreError", "the gateway cannot serve this request"),
    Surface.RPC: (500, "InternalError", "{path}: the peer cannot complete this request"),
}


@dataclass(frozen=True)
class HttpError:
    """An error as answered over HTTP: status, error type, user-facing message, field."""

    status: int
    kind: str
    message: str
    field: str | None = None
    code: int = 0  # Kubo's Code

    def json(self) -> dict[str, object]:
        """Body of the API and the gateway: {"error", "message", "field"?}."""
        out: dict[str, object] = {"error": self.kind, "message": self.message}
        if self.field is not None:
            out["field"] = self.field
        return out

    def kubo_json(self) -> dict[str, object]:
        """Body of the Kubo RPC: {"Message", "Code", "Type": "error"}."""
        return {"Message": self.message, "Code": self.code, "Type": "error"}


def _row(table: Mapping[type[BanzaiError], _V], exc: BanzaiError) -> _V:
    for cls in type(exc).__mro__:
        if issubclass(cls, BanzaiError) and cls in table:
            return table[cls]
    raise AssertionError("BanzaiError is in every table")  # pragma: no cover


def status_of(exc: BanzaiError, surface: Surface) -> int:
    """The HTTP status of `exc` on `surface`."""
    return _row(STATUS, exc)[surface.value]


def http_error(exc: BanzaiError, surface: Surface) -> HttpError:
    """`exc` as answered on `surface`."""
    return HttpError(status_of(exc, surface), type(exc).__name__, exc.message, exc.field,
                     _row(KUBO_CODE, exc))


def unexpected(surface: Surface, path: str = "") -> HttpError:
    """An unexpected exception as answered on `surface` (`path`: the request's path)."""
    status, kind, message = UNEXPECTED[surface]
    return HttpError(status, kind, message.format(path=path))


__all__ = ["KUBO_CODE", "STATUS", "UNEXPECTED", "HttpError", "Surface", "http_error",
           "status_of", "unexpected"]
