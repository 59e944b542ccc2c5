"""JSON text from the network (request bodies, pipelines) decoded so that every malformed
input is a BanzaiError naming what it is and where: never a UnicodeDecodeError, a
RecursionError (nesting deeper than the stack) or a ValueError (an integer over Python's
digit limit). Pure functions, any thread."""

from __future__ import annotations

import json
from typing import Any

from peer.errors import ArgError, BanzaiError


def text(data: bytes | str, what: str, *, error: type[BanzaiError] = ArgError,
         field: str | None = None) -> str:
    """`data` as text: UTF-8, a byte order mark dropped; `error` if it is not UTF-8."""
    if isinstance(data, str):
        return data.removeprefix("\ufeff")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise error(f"{what} is not UTF-8 text (bad byte at offset {exc.start})",
                    field=field) from None


def parse(text: str, *, error: type[BanzaiError] = ArgError, field: str | None = None) -> Any:
    """json.loads(text), a syntax error or an integer over the digit limit as `error`.
    RecursionError is left to the caller (a pipeline's sniffing does not retry as YAML what
    is too deep as JSON); `loads` turns it into `error`."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise error(f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}",
                    field=field) from None
    except ValueError as exc:  # e.g. an integer over the digit limit
        raise error(f"invalid JSON: {exc}", field=field) from None


def loads(data: bytes | str, what: str, *, error: type[BanzaiError] = ArgError,
          field: str | None = None) -> Any:
    """`data` (e.g. a request's body, `what`) as JSON; every malformed input is `error`
    with `field`."""
    try:
        return parse(text(data, what, error=error, field=field), error=error, field=field)
    except RecursionError:
        raise error(f"{what} is nested too deeply", field=field) from None


__all__ = ["loads", "parse", "text"]
