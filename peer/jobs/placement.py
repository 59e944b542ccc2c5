"""Placement by capabilities: a task's `requires` (checked in workflows) against what each
peer announces in its MEMBER event (kinds, calls, cores, memory, GPU, operator labels).
Pure functions, safe anywhere.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from peer.errors import SpecError

KEYS = ("kind", "mem_mb", "cores", "gpu", "calls", "labels")
DEFAULT_KINDS = ("python",)  # what a peer announcing no kinds (0.1.0 .. this one) runs
LABEL_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
MAX_LABEL_VALUE_CHARS = 128
MAX_REQUIRED_CALLS = 64
MAX_LABELS = 32


def json_type(value: Any) -> str:
    """The JSON name of a value's type, for messages (also spec.py's)."""
    if value is None:
        return "null"
    for t, name in ((bool, "boolean"), (int, "integer"), (float, "number"), (str, "string"),
                    (list, "list"), (Mapping, "object")):
        if isinstance(value, t):
            return name
    return type(value).__name__


def _count(value: Any, field: str, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= (1 << 31) - 1:
        raise SpecError(f"{field}: {what} must be a positive integer, got {json_type(value)} "
                        f"{value!r}"[:300], field=field)
    return value


def check_label(key: Any, value: Any, field: str) -> tuple[str, str]:
    """A label KEY=VALUE's parts, checked (an operator's `--label` or a requirement)."""
    if not isinstance(key, str) or not LABEL_RE.fullmatch(key):
        raise SpecError(f"{field}: a label name is 1 to 64 of A-Z a-z 0-9 _ . -, got "
                        f"{key!r}"[:300], field=field)
    if not isinstance(value, str) or len(value) > MAX_LABEL_VALUE_CHARS or "," in value:
        raise SpecError(f"{field}: a label value is a string of at most "
                        f"{MAX_LABEL_VALUE_CHARS} characters without commas, got "
                        f"{json_type(value)}"[:300], field=field)
    return key, value


def parse_requires(value: Any, field: str) -> dict[str, Any]:
    """The canonical form of a task's `requires` object; SpecError naming the bad field.
    Keys: kind (str), mem_mb and cores (positive ints), gpu (bool), calls (task names the
    peer must run), labels (name -> value the peer must be labelled with)."""
    if not isinstance(value, Mapping):
        raise SpecError(f"{field}: must be an object such as {{\"mem_mb\": 2000}}, got "
                        f"{json_type(value)}", field=field)
    out: dict[str, Any] = {}
    for k, v in value.items():
        f = f"{field}.{k}"
        if k == "kind":
            if not isinstance(v, str) or not LABEL_RE.fullmatch(v):
                raise SpecError(f"{f}: must be a kind name such as \"python\", got "
                                f"{json_type(v)}", field=f)
            out[k] = v
        elif k in ("mem_mb", "cores"):
            out[k] = _count(v, f, "mem_mb (MiB)" if k == "mem_mb" else "cores")
        elif k == "gpu":
            if not isinstance(v, bool):
                raise SpecError(f"{f}: must be true or false, got {json_type(v)}", field=f)
            if v:
                out[k] = True  # gpu: false asks for nothing
        elif k == "calls":
            out[k] = _calls(v, f)
        elif k == "labels":
            out[k] = _labels(v, f)
        else:
            raise SpecError(f"{f}: unknown requirement {k!r} (allowed: {', '.join(KEYS)})",
                            field=f)
    return {k: out[k] for k in sorted(out) if out[k] not in ([], {})}


def _calls(v: Any, field: str) -> list[str]:
    if not isinstance(v, list) or len(v) > MAX_REQUIRED_CALLS:
        raise SpecError(f"{field}: must be a list of at most {MAX_REQUIRED_CALLS} task names, "
                        f"got {json_type(v)}", field=field)
    for j, c in enumerate(v):
        if not isinstance(c, str) or not 1 <= len(c) <= 256:
            raise SpecError(f"{field}[{j}]: must be a task name, got {json_type(c)}",
                            field=f"{field}[{j}]")
    return sorted(set(v))


def _labels(v: Any, field: str) -> dict[str, str]:
    if not isinstance(v, Mapping) or len(v) > MAX_LABELS:
        raise SpecError(f"{field}: must be an object of at most {MAX_LABELS} labels "
                        f"(name -> value), got {json_type(v)}", field=field)
    return dict(sorted(check_label(k, x, f"{field}.{k}") for k, x in v.items()))


def unmet(requires: Mapping[str, Any], caps: Mapping[str, Any] | None) -> str | None:
    """The first requirement a peer announcing `caps` (its MEMBER payload; None: not heard
    yet) does not meet, as words; None if it meets them all."""
    if not requires:
        return None
    if caps is None:
        return "its capabilities are not known yet"
    kind = requires.get("kind")
    kinds = caps.get("kinds") or DEFAULT_KINDS
    if kind is not None and kind not in kinds:
        return f"kind {kind!r} (it runs {', '.join(kinds)})"
    for k, unit in (("mem_mb", " MiB of memory"), ("cores", " cores")):
        if k in requires and int(caps.get(k, 0) or 0) < requires[k]:
            return f"{requires[k]}{unit} (it has {int(caps.get(k, 0) or 0)})"
    if requires.get("gpu") and not caps.get("gpu"):
        return "a GPU (it has none)"
    missing = [c for c in requires.get("calls", ()) if c not in caps.get("calls", ())]
    if missing:
        return f"the task(s) {', '.join(missing)}"
    labels = caps.get("labels") or {}
    for k, v in (requires.get("labels") or {}).items():
        if labels.get(k) != v:
            return f"label {k}={v}" + (f" (it has {k}={labels[k]})" if k in labels else "")
    return None


def suited(requires: Mapping[str, Any], peers: Iterable[str],
           members: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The peers of `peers` whose announced capabilities (`members`: peer -> MEMBER payload)
    meet `requires`, in the given order."""
    return [p for p in peers if unmet(requires, members.get(p)) is None]


def no_peer_reason(requires: Mapping[str, Any], peers: Iterable[str],
                   members: Mapping[str, Mapping[str, Any]], names: Mapping[str, str]
                   ) -> str:
    """Why no live peer of `peers` can run a task that requires `requires` (for the job
    view: the first unmet requirement of each peer, by name)."""
    why = [f"{names.get(p) or p[:12]} lacks {unmet(requires, members.get(p))}"
           for p in sorted(peers)]
    shown = "; ".join(why[:6]) + (f"; and {len(why) - 6} more" if len(why) > 6 else "")
    return f"waiting for a live peer that meets its requires: {shown}"
