"""The workflow fields of the shell, container and api task kinds, checked and normalised into
the params that are stored, hashed into the cache key and handed to the worker. Pure.

A kind task's canonical form is `{"name", "call": KIND, "params": NORMALISED, "depends"}`,
so peers of older versions read (and never run) it; `normalise` of that form is itself.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from peer.errors import SpecError

EXTERNAL = ("api", "container", "shell")  # kinds run outside Python (peer/jobs/kind_*.py)
ALIASES = {"docker": "container", "podman": "container"}  # the seed calls it docker
KNOWN = ("python", *EXTERNAL)
# Task keys of the kinds, beside a task's name, depends, params and cache.
FIELDS: Mapping[str, tuple[str, ...]] = {
    "shell": ("shell", "env", "stdin"),
    "container": ("image", "command", "env", "stdin", "network", "mem_mb", "cpus"),
    "api": ("url", "body"),
}
REQUIRED = {"shell": "shell", "container": "image", "api": "url"}
TASK_KEYS = ("kind", *sorted({f for fs in FIELDS.values() for f in fs}))
ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
SECRET_NAME_RE = re.compile(r"[A-Za-z0-9_.-]{1,128}")
MAX_TEXT_CHARS = 1 << 20  # a command, stdin or env value
MAX_ENV = 256
IMAGE_RE = re.compile(r"[a-z0-9][a-z0-9._/:@-]{0,254}")
DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}")


def _kind_name(value: Any) -> str:
    return "null" if value is None else {bool: "boolean", int: "integer", float: "number",
                                          str: "string", list: "list", dict: "object"}.get(
        type(value), type(value).__name__)


def kind_of(item: Mapping[str, Any], where: str) -> str:
    """The kind a task object states or implies: `kind`, else `call` naming a kind, else the
    shorthand `shell` / `image` (or `docker`), else python. SpecError naming `kind` if unknown."""
    if "kind" in item:
        k = item["kind"]
        if not isinstance(k, str):
            raise SpecError(f"{where}.kind: must be a string, got {_kind_name(k)}",
                            field=f"{where}.kind")
        kind = ALIASES.get(k, k)
        if kind not in KNOWN:
            raise SpecError(f"{where}.kind: unknown kind {k!r} (known: {', '.join(KNOWN)}; "
                            "docker is container)", field=f"{where}.kind")
        return kind
    call = item.get("call")
    if isinstance(call, str) and ALIASES.get(call, call) in EXTERNAL:
        return ALIASES.get(call, call)
    if "shell" in item:
        return "shell"
    if "image" in item:
        return "container"
    return "python"


def normalise(kind: str, item: Mapping[str, Any], where: str) -> dict[str, Any]:
    """The params of a task of an EXTERNAL kind. Its fields are the task's keys, or (the
    seed's placement) the keys of its `params` when the kind's required field is not a key
    of the task itself; for api, `params` beside `url` is the body posted."""
    fields = dict(_fields(kind, item, where))
    req = REQUIRED[kind]
    if req not in fields:
        what = {"shell": "the command to run", "container": "the image to run",
                "api": "the service's base URL"}[kind]
        raise SpecError(f"{where}.{req}: missing {req} ({what}) of a {kind} task",
                        field=f"{where}.{req}")
    return {"shell": _shell, "container": _container, "api": _api}[kind](fields, where)


def _fields(kind: str, item: Mapping[str, Any], where: str) -> dict[str, Any]:
    allowed = FIELDS[kind]
    out: dict[str, Any] = {}
    for k in TASK_KEYS:
        if k in item and k != "kind":
            if k not in allowed:
                raise SpecError(f"{where}.{k}: a {kind} task takes no {k} (its fields: "
                                f"{', '.join(allowed)})", field=f"{where}.{k}")
            out[k] = item[k]
    params = item.get("params")
    if params is None:
        return out
    if not isinstance(params, Mapping):
        raise SpecError(f"{where}.params: must be an object, got {_kind_name(params)}",
                        field=f"{where}.params")
    if kind == "api" and "url" in out:  # the body posted to {url}/run
        if "body" in out:
            raise SpecError(f"{where}.params: give the body as params or body, not both",
                            field=f"{where}.params")
        out["body"] = dict(params)
        return out
    for k, v in params.items():
        field = f"{where}.params.{k}"
        if k not in allowed:
            raise SpecError(f"{field}: a {kind} task takes no {k} (its fields: "
                            f"{', '.join(allowed)})", field=field)
        if k in out:
            raise SpecError(f"{field}: {k} is given twice (as a key of the task and in "
                            "params)", field=field)
        out[k] = v
    return out


def _text(value: Any, field: str, *, empty: bool = True) -> str:
    if not isinstance(value, str):
        raise SpecError(f"{field}: must be a string, got {_kind_name(value)}", field=field)
    if not empty and not value.strip():
        raise SpecError(f"{field}: must not be empty", field=field)
    if len(value) > MAX_TEXT_CHARS or "\x00" in value:
        raise SpecError(f"{field}: must be at most {MAX_TEXT_CHARS} characters, without NUL",
                        field=field)
    return value


def _env(value: Any, field: str) -> dict[str, Any]:
    """{NAME: "value" | {"secret": NAME}}; a secret is kept by name only."""
    if not isinstance(value, Mapping):
        raise SpecError(f"{field}: must be an object of NAME: value, got {_kind_name(value)}",
                        field=field)
    if len(value) > MAX_ENV:
        raise SpecError(f"{field}: at most {MAX_ENV} variables", field=field)
    out: dict[str, Any] = {}
    for k, v in value.items():
        at = f"{field}.{k}"
        if not isinstance(k, str) or not ENV_NAME_RE.fullmatch(k):
            raise SpecError(f"{at}: bad variable name {k!r} (letters, digits and _, not "
                            "starting with a digit)", field=at)
        if isinstance(v, Mapping):
            if set(v) != {"secret"} or not isinstance(v["secret"], str) \
                    or not SECRET_NAME_RE.fullmatch(v["secret"]):
                raise SpecError(f'{at}: a secret is {{"secret": "NAME"}} (NAME of A-Z a-z '
                                "0-9 _ . -)", field=at)
            out[k] = {"secret": v["secret"]}
        else:
            out[k] = _text(v, at)
    return out


def _shell(f: Mapping[str, Any], where: str) -> dict[str, Any]:
    return {"shell": _text(f["shell"], f"{where}.shell", empty=False),
            "env": _env(f.get("env", {}), f"{where}.env"),
            "stdin": _text(f.get("stdin", ""), f"{where}.stdin")}


def _container(f: Mapping[str, Any], where: str) -> dict[str, Any]:
    image = f["image"]
    if not isinstance(image, str) or not IMAGE_RE.fullmatch(image):
        raise SpecError(f"{where}.image: not an image reference: {str(image)[:80]!r} (e.g. "
                        "localhost/busybox:test or NAME@sha256:...)", field=f"{where}.image")
    command = f.get("command", [])
    if isinstance(command, str):
        command = ["/bin/sh", "-c", _text(command, f"{where}.command", empty=False)]
    if not isinstance(command, list) or not all(isinstance(c, str) for c in command):
        raise SpecError(f"{where}.command: must be a list of strings (or one string run by "
                        f"/bin/sh -c), got {_kind_name(command)}", field=f"{where}.command")
    for i, c in enumerate(command):
        _text(c, f"{where}.command[{i}]")
    network = f.get("network", False)
    if not isinstance(network, bool):
        raise SpecError(f"{where}.network: must be true or false", field=f"{where}.network")
    return {"image": image, "command": list(command), "env": _env(f.get("env", {}),
                                                                 f"{where}.env"),
            "stdin": _text(f.get("stdin", ""), f"{where}.stdin"), "network": network,
            "mem_mb": _number(f.get("mem_mb"), f"{where}.mem_mb", integer=True),
            "cpus": _number(f.get("cpus"), f"{where}.cpus", integer=False)}


def _number(value: Any, field: str, *, integer: bool) -> Any:
    if value is None:
        return None
    ok = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok or not math.isfinite(value) or value <= 0:
        raise SpecError(f"{field}: must be a positive {'integer' if integer else 'number'}, "
                        f"got {value!r}", field=field)
    return value if integer else float(value)


def _api(f: Mapping[str, Any], where: str) -> dict[str, Any]:
    url = _text(f["url"], f"{where}.url", empty=False)
    if not url.lower().startswith(("http://", "https://")):
        raise SpecError(f"{where}.url: must be an http:// or https:// URL, got {url[:80]!r}",
                        field=f"{where}.url")
    body = f.get("body", {})
    if not isinstance(body, Mapping):
        raise SpecError(f"{where}.params: the body posted must be an object, got "
                        f"{_kind_name(body)}", field=f"{where}.params")
    return {"url": url.rstrip("/"), "body": dict(body)}


def secret_names(params: Mapping[str, Any]) -> list[str]:
    """The secrets a task's env refers to, by name."""
    env = params.get("env") or {}
    return sorted({v["secret"] for v in env.values() if isinstance(v, Mapping)})
