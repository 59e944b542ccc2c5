"""Pipeline specs: parse JSON/YAML (list or DAG form) into a checked, ordered Workflow.

Pure (no I/O); every error is a SpecError or ArgError whose `field` names its place.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import heapq
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from peer import jsontext
from peer.cids import parse_cid
from peer.errors import ArgError, BadCID, BanzaiError, NotFound, SpecError, TooLarge
from peer.jobs import kinds, kindspec
from peer.jobs.placement import KEYS, json_type, parse_requires
from peer.log import ARG_SPLITS, IMPLICIT_SPLITS, SPLIT_BY_ARGS
from tasks.registry import Arg, TaskDef

if TYPE_CHECKING:
    import yaml

DEFAULT_NAME = "pipeline"
SOURCE_BASE = "source"  # generated name of an unnamed {"cid": ...} node
MAX_NAME_CHARS = 128
MAX_WORKFLOW_NAME_CHARS = 200
MAX_CID_CHARS = 256  # base58 decoding is quadratic: bound it before parse_cid
MAX_TASKS = 1000  # tasks of one workflow (PeerConfig.max_tasks_per_job)
MAX_WORKFLOW_BYTES = 2_000_000  # its canonical JSON, as stored in the log (max_workflow_bytes)
MAX_INT_BITS = 64  # a pipeline's integers: |n| < 2**64 (YAML reads integers of any size)
NAME_RE = re.compile(r"[A-Za-z0-9_.-]+")

_LIST_KEYS = ("args", "cache", "call", "cid", "name", "params", "requires",
              *kindspec.TASK_KEYS)
_DAG_KEYS = (*_LIST_KEYS, "depends")
# A stored task's keys: `"split": SPLIT_BY_ARGS` too, which only the peer a job is submitted
# to writes (on a task it splits by its values, `Workflow.splits` ARG_SPLITS: app.submit)
_SPLIT_KEY = "split"
_STORED_KEYS = (*_DAG_KEYS, _SPLIT_KEY)
_TOP_KEYS = ("name", "tasks", "splits")
# The top-level key a lanes job's workflow carries (`"lanes": 1`, docs/design/
# partial-replication.md, section 6): written by the peer a job is submitted to while lanes
# are on (Node.lanes_members), never accepted from a user (`from_obj`). A peer with lanes
# on knows it (LANES_TOP_KEYS); one with lanes off, as an older one, takes it for a newer
# peer's key: it keeps such a job and plans none of it (it sees none of its claims).
LANES_KEY = "lanes"
LANES_TOP_KEYS = (*_TOP_KEYS, LANES_KEY)
# a top-level key known only with one of these values
_KNOWN_VALUES = {"splits": (IMPLICIT_SPLITS, ARG_SPLITS), LANES_KEY: (1,)}
_JSON_TYPES = frozenset({"application/json", "text/json"})
_YAML_TYPES = frozenset({"application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml"})


@dataclass(frozen=True)
class TaskSpec:
    """One node: a catalog call with checked params, or a source of existing data by CID."""

    name: str
    call: str | None
    params: Mapping[str, Any]
    depends: tuple[str, ...]
    cid: str | None = None
    cache: bool = True  # False: never taken from the cache nor put into it ("cache": false)
    requires: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # placement
    # A stored task with keys this version does not know (a newer peer's: `newer` names
    # them) is kept as it was stored, never run here (workflow_from_json).
    newer: tuple[str, ...] = ()
    stored: Mapping[str, Any] | None = None
    # Split by the values of its call's `split_arg` (stored as `"split": SPLIT_BY_ARGS`):
    # a task without input that a peer splits into chunks of those values (peer.jobs.planner)
    split_args: bool = False
    # Why this version runs no stored source task (whose CID an earlier release took and
    # `parse_cid` refuses now: workflow_from_json) nor any task reading its output: they fail
    # with this reason (Scheduler._evaluate)
    flaw: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The canonical DAG-form object of this task (`cache` only when false)."""
        if self.stored is not None:
            return dict(self.stored)
        if self.cid is not None:
            return {"name": self.name, "cid": self.cid}
        params = {k: list(v) if isinstance(v, list) else v for k, v in self.params.items()}
        out: dict[str, Any] = {"name": self.name, "call": self.call, "params": params,
               "depends": list(self.depends)}
        if not self.cache:
            out["cache"] = False
        if self.requires:  # absent when empty: older workflows keep their stored form
            out["requires"] = dict(self.requires)
        if self.split_args:
            out[_SPLIT_KEY] = SPLIT_BY_ARGS
        return out


@dataclass(frozen=True)
class Workflow:
    """A checked pipeline; `tasks` are topologically ordered, in the user's order where possible."""

    name: str
    tasks: tuple[TaskSpec, ...]
    newer: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # unknown top-level keys
    # IMPLICIT_SPLITS: its tasks without input have an implicit split (peer.log.fold); set by
    # the peer a job is submitted to, only while every live member folds them (Node.submit_form);
    # ARG_SPLITS: the same but for its tasks marked `split_args` (Node.arg_splits)
    splits: str | None = None
    # A lanes job's (its JOB_SUBMITTED names its `members`): `"lanes": 1` (LANES_KEY)
    lanes: bool = False

    def task(self, name: str) -> TaskSpec:
        """The task called `name`; NotFound if there is none."""
        index: dict[str, TaskSpec] | None = self.__dict__.get("_index")
        if index is None:  # built once; the dataclass is frozen, so set it directly
            index = {t.name: t for t in self.tasks}
            object.__setattr__(self, "_index", index)
        t = index.get(name)
        if t is None:
            raise NotFound(f"workflow {self.name!r} has no task {name!r}", field="task")
        return t

    def flaw(self, name: str) -> str | None:
        """Why task `name` fails here: it is a stored source this version refuses
        (`TaskSpec.flaw`), or reads one's output; None if neither."""
        t = self.task(name)
        return next((f for d in (name, *t.depends) if (f := self.task(d).flaw) is not None),
                    None)

    def without_cache(self) -> Workflow:
        """This workflow with `"cache": false` on every task (banzai submit --no-cache)."""
        return dataclasses.replace(self, tasks=tuple(
            t if t.cid is not None else dataclasses.replace(t, cache=False) for t in self.tasks))

    def to_json(self) -> dict[str, Any]:
        """Canonical DAG form; `from_obj(wf.to_json(), catalog) == wf`."""
        out = {"name": self.name, "tasks": [t.to_json() for t in self.tasks], **self.newer}
        if self.splits is not None:
            out["splits"] = self.splits
        if self.lanes:
            out[LANES_KEY] = 1
        return out


@dataclass
class _Raw:
    """A task object after its shape is checked, before names and depends are resolved."""

    index: int
    name: str | None = None
    call: str | None = None
    args: list[Any] | None = None
    params: dict[str, Any] | None = None
    cid: str | None = None
    depends: list[str] | None = None
    cache: bool = True
    kind_params: dict[str, Any] | None = None  # an external kind's normalised params
    requires: dict[str, Any] | None = None
    cid_flaw: str | None = None  # why `parse_cid` refuses a stored source's CID (_check_cid)

    @property
    def where(self) -> str:
        return f"tasks[{self.index}]"


def with_splits(wf: Workflow, catalog: Mapping[str, TaskDef], implicit: bool, by_args: bool,
                ) -> Workflow:
    """`wf` as the peer it is submitted to stores it: with implicit splits (IMPLICIT_SPLITS)
    if `implicit`; if `by_args` too, its tasks without input of several values of their
    call's `split_arg` marked `split_args` and the workflow ARG_SPLITS (only if it has one)."""
    if not implicit:
        return dataclasses.replace(wf, splits=None)
    tasks = tuple(dataclasses.replace(t, split_args=True) if by_args and _splits_by_values(
        t, catalog) else t for t in wf.tasks)
    marked = any(t.split_args for t in tasks)
    return dataclasses.replace(wf, tasks=tasks, splits=ARG_SPLITS if marked else IMPLICIT_SPLITS)


def _splits_by_values(t: TaskSpec, catalog: Mapping[str, TaskDef]) -> bool:
    tdef = catalog.get(t.call or "")
    return (not t.depends and t.cid is None and tdef is not None and tdef.split_arg is not None
            and len(t.params[tdef.split_arg]) > 1)


def resolve_images(wf: Workflow, holders: Mapping[str, Mapping[str, str]]) -> Workflow:
    """`wf` with each container task's image resolved to one digest (`name@sha256:ID`) from
    the images peers announce (peer -> name -> sha256:ID); SpecError naming the task's image
    field if no peer holds it or peers hold different images under its name."""
    from peer.jobs.kind_container import resolve  # the runtime's naming rules

    out = []
    for i, t in enumerate(wf.tasks):
        if t.call == "container":
            try:
                image = resolve(str(t.params["image"]), holders)
            except BanzaiError as e:
                raise SpecError(f"tasks[{i}].image: {e.message}",
                                field=f"tasks[{i}].image") from None
            t = dataclasses.replace(t, params={**t.params, "image": image})
        out.append(t)
    return dataclasses.replace(wf, tasks=tuple(out))


# -- decoding ---------------------------------------------------------------------------------


def parse(body: bytes | str, catalog: Mapping[str, TaskDef], *, content_type: str | None = None,
          max_bytes: int = 1_000_000, max_tasks: int = MAX_TASKS,
          max_workflow_bytes: int = MAX_WORKFLOW_BYTES) -> Workflow:
    """Decode a JSON or YAML pipeline (by `content_type`, else JSON then YAML) and check it.

    Bounds: the body (`max_bytes`), its tasks (`max_tasks`) and the canonical JSON of the
    checked workflow (`max_workflow_bytes`, what the log stores); YAML anchors and aliases
    are refused (an alias expands without bound).
    """
    size = len(body)  # a str has at least as many UTF-8 bytes as characters
    if isinstance(body, str) and size <= max_bytes:
        size = len(body.encode("utf-8", "surrogatepass"))
    if size > max_bytes:
        raise TooLarge(f"the pipeline is larger than the limit of {max_bytes} bytes")
    text = jsontext.text(body, "the pipeline", error=SpecError)
    wf = from_obj(_load(text, _format(content_type)), catalog, max_tasks=max_tasks)
    stored = len(json.dumps(wf.to_json(), separators=(",", ":")).encode("utf-8", "surrogatepass"))
    if stored > max_workflow_bytes:
        raise TooLarge(f"tasks: the checked workflow takes {stored} bytes, over the limit of "
                       f"{max_workflow_bytes} bytes", field="tasks")
    return wf


def _format(content_type: str | None) -> str | None:
    """'json', 'yaml' or None (sniff) from a media type such as 'application/json; charset=x'."""
    if content_type is None:
        return None
    mt = content_type.split(";", 1)[0].strip().lower()
    if mt in _JSON_TYPES or mt.endswith("+json"):
        return "json"
    if mt in _YAML_TYPES or mt.endswith("+yaml"):
        return "yaml"
    return None  # text/plain, form-encoded (curl -d), octet-stream: sniff


def _load(text: str, fmt: str | None) -> Any:
    if not text.strip():
        raise SpecError("empty pipeline: the body is empty")
    try:
        doc = _decode(text, fmt)
    except RecursionError:  # not caught below: JSON this deep is not retried as YAML
        raise SpecError(f"the pipeline is nested too deeply: deeper than {jsontext.MAX_DEPTH} "
                        "levels") from None
    jsontext.check(doc, "the pipeline", error=SpecError)  # JSON or YAML alike
    _check_ints(doc)
    return doc


def _check_ints(doc: Any) -> None:
    """SpecError naming the place of an integer wider than MAX_INT_BITS (a key's too)."""
    found = jsontext.wide_int(doc, MAX_INT_BITS)
    if found is None:
        return
    path, bits, key = found
    if isinstance(doc, list):  # list form: its items are the tasks
        path = ["tasks", *path]
    field = jsontext.show_path(path[:6])
    what = "a key is an integer" if key else "an integer"
    raise SpecError(f"{jsontext.show_path(path)}: {what} of {bits} bits; a pipeline's integers "
                    f"hold at most {MAX_INT_BITS} bits", field=field)


def _decode(text: str, fmt: str | None) -> Any:
    if fmt == "json":
        return jsontext.parse(text, error=SpecError)
    if fmt == "yaml":
        return _load_yaml(text)
    try:
        return jsontext.parse(text, error=SpecError)
    except SpecError as json_error:
        try:
            return _load_yaml(text)
        except SpecError:
            if text.lstrip().startswith(("[", "{")):
                raise json_error from None  # it meant to be JSON: its error is the precise one
            raise


@functools.cache
def _safe_loader() -> type[yaml.SafeLoader]:
    """yaml.SafeLoader without anchors and aliases: an alias copies a subtree by reference,
    so a small document could expand to gigabytes of JSON (the "billion laughs"). Made on
    the first YAML pipeline: a peer's start need not import yaml."""
    import yaml

    class _SafeLoader(yaml.SafeLoader):
        def compose_node(self, parent: Any, index: Any) -> Any:
            ev = self.peek_event()  # type: ignore[no-untyped-call]
            what = ("an alias (*)" if isinstance(ev, yaml.AliasEvent)
                    else "an anchor (&)" if getattr(ev, "anchor", None) is not None else None)
            if what is not None:
                mark = ev.start_mark
                raise SpecError(f"invalid YAML at line {mark.line + 1}, column "
                                f"{mark.column + 1}: {what} is not allowed in a pipeline; "
                                "write the value out")
            return super().compose_node(parent, index)

    return _SafeLoader


def _load_yaml(text: str) -> Any:
    import yaml

    try:
        return yaml.load(text, Loader=_safe_loader())
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise SpecError(f"invalid YAML{where}: {exc.problem or exc.context}") from None
    except (yaml.YAMLError, ValueError) as exc:  # ValueError: e.g. a bad date
        raise SpecError(f"invalid YAML: {exc}") from None


# -- shape of the document --------------------------------------------------------------------


def from_obj(obj: Any, catalog: Mapping[str, TaskDef], *, max_tasks: int | None = None
             ) -> Workflow:
    """Check an already-decoded pipeline (list form or DAG form) against the catalog;
    TooLarge past `max_tasks` tasks (`parse` passes its bound; None: no bound)."""
    dag = isinstance(obj, Mapping)
    if isinstance(obj, list):
        name, items = DEFAULT_NAME, obj
    elif dag:
        if LANES_KEY in obj:  # (`splits` too is the submitting peer's to set: ignored)
            raise SpecError(f"{LANES_KEY}: the top-level key {LANES_KEY!r} is set by the peer "
                            "a job is submitted to, not by a submission: remove it",
                            field=LANES_KEY)
        name, items, _, _ = _top(obj)
    else:
        raise SpecError("a pipeline must be a list of tasks or an object "
                        f'{{"name": ..., "tasks": [...]}}, got {json_type(obj)}')
    if not items:
        raise SpecError("tasks: empty pipeline, there are no tasks", field="tasks")
    if max_tasks is not None and len(items) > max_tasks:
        raise TooLarge(f"tasks: {len(items)} tasks, over the limit of {max_tasks} per job",
                       field="tasks")
    raws = [_shape(i, item, _DAG_KEYS if dag else _LIST_KEYS) for i, item in enumerate(items)]
    names = _names(raws)
    if not dag:  # each task takes the previous one's output
        for r in raws:
            r.depends = [] if r.cid is not None or r.index == 0 else [names[r.index - 1]]
    specs = [_spec(r, names[r.index], catalog) for r in raws]
    for r, s in zip(raws, specs, strict=True):
        _check_depth(r, s)
    if all(s.call is None for s in specs):
        raise SpecError("tasks: the pipeline has no task to run, only cid sources", field="tasks")
    _check_refs(raws, specs)
    for r, s in zip(raws, specs, strict=True):
        if (s.call is not None and not s.depends and r.kind_params is None
                and catalog[s.call].needs_input):
            raise _needs_input(r, s, catalog, dag)
    return Workflow(name=name, tasks=tuple(specs[i] for i in _toposort(raws, specs)))


def workflow_from_json(doc: Any, known: Sequence[str] = _TOP_KEYS) -> Workflow:
    """Rebuild a Workflow from `Workflow.to_json()` output without a catalog.

    For documents `parse` already checked (e.g. from the event log): params are kept as
    stored; only the shape and the graph are checked again. Keys this version does not
    know were checked by a newer peer (docs/architecture.md, "Workflows of newer peers"):
    a task that has any (or whose `requires` or kind params have any, or whose workflow
    has any at the top) is kept as stored, with `newer` naming them, and never run here.
    `known`: the top-level keys this version knows (a test passes an older version's; a
    peer with lanes on, LANES_TOP_KEYS); one of _KNOWN_VALUES only with the value it names.
    """
    if not isinstance(doc, Mapping):
        raise SpecError(f"a workflow must be an object, got {json_type(doc)}")
    known = [k for k in known if k not in _KNOWN_VALUES
             or any(_is(doc.get(k), v) for v in _KNOWN_VALUES[k])]
    top = {str(k): v for k, v in doc.items() if k not in known}
    name, items, splits, lanes = _top({k: v for k, v in doc.items() if k in known})
    newer = [(*(f"workflow.{k}" for k in sorted(top)), *_newer_keys(item)) for item in items]
    raws = [_opaque(i, item) if newer[i] else _shape(i, item, _STORED_KEYS, stored=True)
            for i, item in enumerate(items)]
    for r in raws:
        if r.args is not None:
            raise SpecError(f"{r.where}.args: the canonical form has params, not args",
                            field=f"{r.where}.args")
    names = _names(raws)
    specs = [TaskSpec(name=names[r.index], call=r.call,
                      params=dict(r.kind_params if r.kind_params is not None else r.params or {}),
                      depends=tuple(r.depends or ()), cid=r.cid, cache=r.cache,
                      requires=r.requires or {}, newer=newer[r.index],
                      stored=dict(items[r.index]) if newer[r.index] else None,
                      split_args=(splits == ARG_SPLITS and not newer[r.index]
                                  and _SPLIT_KEY in items[r.index]),
                      flaw=(f"task {names[r.index]!r}: its source {r.cid_flaw}"
                            if r.cid_flaw else None))
             for r in raws]
    _check_refs(raws, specs)
    return Workflow(name=name, tasks=tuple(specs[i] for i in _toposort(raws, specs)),
                    newer=top, splits=splits, lanes=lanes)


def _is(value: Any, want: Any) -> bool:
    """`value` is `want`, of its type too (`true` is not the 1 of `"lanes": 1`)."""
    return type(value) is type(want) and value == want


class Workflows:
    """The workflows last rebuilt by `workflow_from_json`, by the identity of their stored
    document (an event payload's own object, never mutated): a peer's door checks a received
    JOB_SUBMITTED's workflow and its planner needs the same workflow a moment later
    (rebuilding one of 1,000 tasks costs tens of milliseconds). A frame may carry many
    submissions, all checked at the door before the planner reads any, so the memo holds up
    to `max_entries` workflows of at most `max_tasks` tasks together (the least recently
    used leave first; the newest is always held). Loop-owned."""

    def __init__(self, max_entries: int = 64, max_tasks: int = 20_000,
                 known: Sequence[str] = _TOP_KEYS) -> None:
        self.max_entries = max_entries
        self.known = tuple(known)  # the top-level keys known (`workflow_from_json`)
        self.max_tasks = max_tasks
        self.built = 0  # documents rebuilt (misses)
        self._tasks = 0  # tasks of the workflows held
        # id(doc) -> (doc, its workflow); the document is held so that its id is not reused
        self._memo: dict[int, tuple[Any, Workflow]] = {}

    def workflow(self, doc: Any) -> Workflow:
        """`workflow_from_json(doc, known)`, rebuilt only if `doc` is held (SpecError as there:
        nothing is remembered of a document that fails)."""
        hit = self._memo.pop(id(doc), None)  # its id is this doc's: a held doc's id is not reused
        if hit is not None:
            self._memo[id(doc)] = hit  # the most recently used last
            return hit[1]
        wf = workflow_from_json(doc, self.known)
        self.built += 1
        self._memo[id(doc)] = (doc, wf)
        self._tasks += len(wf.tasks)
        while len(self._memo) > 1 and (len(self._memo) > self.max_entries
                                       or self._tasks > self.max_tasks):
            self._tasks -= len(self._memo.pop(next(iter(self._memo)))[1].tasks)
        return wf


def _newer_keys(item: Any) -> tuple[str, ...]:
    """The keys of a stored task object that this version does not know."""
    if not isinstance(item, Mapping):
        return ()
    out = [str(k) for k in item if k not in _DAG_KEYS
           and not (k == _SPLIT_KEY and _is(item[k], SPLIT_BY_ARGS))]
    requires, call, params = item.get("requires"), item.get("call"), item.get("params")
    if isinstance(requires, Mapping):
        out += [f"requires.{k}" for k in requires if k not in KEYS]
    if isinstance(call, str) and call in kindspec.FIELDS and isinstance(params, Mapping):
        out += [f"params.{k}" for k in params if k not in kindspec.FIELDS[call]]
    return tuple(out)


def _opaque(index: int, item: Mapping[str, Any]) -> _Raw:
    """A stored task of a newer version: only its name and depends are read (the graph)."""
    raw = _Raw(index)
    raw.name = _task_name(item.get("name"), f"{raw.where}.name")
    raw.depends = _depends(item.get("depends", []), f"{raw.where}.depends")
    call = item.get("call")
    raw.call = call if isinstance(call, str) else None
    return raw


def _top(obj: Mapping[Any, Any]) -> tuple[str, list[Any], str | None, bool]:
    """A workflow's top level: its name, tasks, `splits` and whether it is a lanes job (a
    stored workflow's LANES_KEY, passed only as `workflow_from_json` knows it)."""
    for k in obj:
        if k not in LANES_TOP_KEYS:
            raise SpecError(f"{k}: unknown top-level key {k!r} (allowed: name, tasks, splits)",
                            field=str(k))
    splits = obj.get("splits")
    if splits is not None and splits not in _KNOWN_VALUES["splits"]:
        raise SpecError(f"splits: must be {IMPLICIT_SPLITS!r} or {ARG_SPLITS!r}, got "
                        f"{splits!r}"[:200], field="splits")
    name = obj.get("name", DEFAULT_NAME)
    if not isinstance(name, str) or not name.strip() or len(name) > MAX_WORKFLOW_NAME_CHARS:
        got = (f"{name[:40]!r} ({len(name)} characters)" if isinstance(name, str)
               else json_type(name))
        raise SpecError(f"name: the workflow name must be a non-empty string of at most "
                        f"{MAX_WORKFLOW_NAME_CHARS} characters, got {got}", field="name")
    if "tasks" not in obj:
        raise SpecError('tasks: missing key "tasks" (the list of tasks)', field="tasks")
    items = obj["tasks"]
    if not isinstance(items, list):
        raise SpecError(f"tasks: must be a list of tasks, got {json_type(items)}", field="tasks")
    return name, items, splits, LANES_KEY in obj


def _shape(index: int, item: Any, allowed: tuple[str, ...], stored: bool = False) -> _Raw:
    """A task object's shape checked; `stored`: one of a stored workflow (a source's CID
    that an earlier release took is kept: `_check_cid`)."""
    raw = _Raw(index)
    where = raw.where
    if not isinstance(item, Mapping):
        raise SpecError(f"{where}: a task must be an object, got {json_type(item)}", field=where)
    for k in item:
        if k not in allowed:
            hint = (" (depends is for the DAG form {\"name\": ..., \"tasks\": [...]}; "
                    "in a list each task takes the previous one's output)"
                    if k == "depends" else f" (allowed: {_allowed(allowed)})")
            raise SpecError(f"{where}.{k}: unknown key {k!r}{hint}", field=f"{where}.{k}")
    if "name" in item:
        raw.name = _task_name(item["name"], f"{where}.name")
    if "cache" in item:
        if not isinstance(item["cache"], bool):
            raise SpecError(f"{where}.cache: must be true or false, got {json_type(item['cache'])}",
                            field=f"{where}.cache")
        raw.cache = item["cache"]
    kind = kindspec.kind_of(item, where)
    if "cid" in item:
        _shape_source(raw, item, stored)
    elif kind != "python":
        _shape_kind(raw, item, kind)
    else:
        for k in kindspec.TASK_KEYS:
            if k in item and k != "kind":
                raise SpecError(f"{where}.{k}: a python task takes no {k} (a shell, container "
                                'or api task does: set "kind")', field=f"{where}.{k}")
        _shape_call(raw, item)
    if "depends" in item:
        raw.depends = _depends(item["depends"], f"{where}.depends")
    return raw


def _allowed(keys: tuple[str, ...]) -> str:
    fields = set(kindspec.TASK_KEYS) - {"kind"}
    general = sorted(k for k in keys if k not in fields)
    return (f"{', '.join(general)}; a shell, container or api task also: "
            f"{', '.join(sorted(fields))}")


def _task_name(value: Any, field: str) -> str:
    if not isinstance(value, str):
        raise SpecError(f"{field}: a task name must be a string, got {json_type(value)}",
                        field=field)
    if (not NAME_RE.fullmatch(value) or value in (".", "..")
            or len(value) > MAX_NAME_CHARS):
        raise SpecError(f"{field}: bad task name {value!r}: use 1 to {MAX_NAME_CHARS} of "
                        "A-Z a-z 0-9 _ . - (not '.' or '..')", field=field)
    return value


def _shape_source(raw: _Raw, item: Mapping[str, Any], stored: bool) -> None:
    for k in ("call", "args", "params", "depends", "cache", "requires", *kindspec.TASK_KEYS):
        if k in item:
            raise SpecError(f"{raw.where}.{k}: a cid source takes no {k} (it is existing data)",
                            field=f"{raw.where}.{k}")
    raw.cid, raw.cid_flaw = _check_cid(item["cid"], f"{raw.where}.cid", stored)


def _shape_kind(raw: _Raw, item: Mapping[str, Any], kind: str) -> None:
    """A task of an external kind: `call` is the kind; its fields become its params."""
    where = raw.where
    call = item.get("call", kind)
    if not isinstance(call, str) or kindspec.ALIASES.get(call, call) != kind:
        raise SpecError(f"{where}.call: a {kind} task has no call (it is {call!r}); "
                        "drop call or kind", field=f"{where}.call")
    if "args" in item:
        raise SpecError(f"{where}.args: a {kind} task takes no positional args",
                        field=f"{where}.args")
    raw.call = kind
    raw.kind_params = kindspec.normalise(kind, item, where)
    _shape_requires(raw, item)
    try:
        json.dumps(raw.kind_params, allow_nan=False)
    except ValueError:
        raise SpecError(f"{where}: NaN and infinities are not allowed (JSON has none)",
                        field=where) from None


def _shape_call(raw: _Raw, item: Mapping[str, Any]) -> None:
    where = raw.where
    if "call" not in item:
        raise SpecError(f"{where}.call: missing call (the task to run) or cid (existing data)",
                        field=f"{where}.call")
    call = item["call"]
    if not isinstance(call, str):
        raise SpecError(f"{where}.call: must be a task name string, got {json_type(call)}",
                        field=f"{where}.call")
    raw.call = call
    if "args" in item and "params" in item:
        raise SpecError(f"{where}: give either args (a list) or params (an object), not both",
                        field=where)
    if "args" in item:
        if not isinstance(item["args"], list):
            raise SpecError(f"{where}.args: must be a list, got {json_type(item['args'])}",
                            field=f"{where}.args")
        raw.args = item["args"]
    if "params" in item:
        if not isinstance(item["params"], Mapping):
            raise SpecError(f"{where}.params: must be an object, got {json_type(item['params'])}",
                            field=f"{where}.params")
        raw.params = dict(item["params"])
    _shape_requires(raw, item)


def _shape_requires(raw: _Raw, item: Mapping[str, Any]) -> None:
    """Where a task of any kind may run (placement.py)."""
    if "requires" in item:
        raw.requires = parse_requires(item["requires"], f"{raw.where}.requires")


def _depends(value: Any, field: str) -> list[str]:
    if not isinstance(value, list):
        raise SpecError(f"{field}: must be a list of task names, got {json_type(value)}",
                        field=field)
    seen: set[str] = set()
    for j, d in enumerate(value):
        if not isinstance(d, str):
            raise SpecError(f"{field}[{j}]: must be a task name string, got {json_type(d)}",
                            field=f"{field}[{j}]")
        if d in seen:
            raise SpecError(f"{field}[{j}]: {d!r} is listed twice", field=f"{field}[{j}]")
        seen.add(d)
    return list(value)


def _check_cid(value: Any, field: str, stored: bool = False) -> tuple[str, str | None]:
    """Validate a CID string (`parse_cid`: a truncated digest too); return it canonical (v0 as
    is, v1 in base32) and None. Of a stored workflow (`stored`), one that an earlier release
    took (`parse_cid`'s `lenient`) is returned as it is, with why it is not valid now."""
    if not isinstance(value, str):
        raise SpecError(f"{field}: a CID must be a string, got {json_type(value)}", field=field)
    if not value or len(value) > MAX_CID_CHARS:
        raise SpecError(f"{field}: {value[:40]!r} is not a valid CID (length {len(value)})",
                        field=field)
    try:
        return str(parse_cid(value)), None
    except BadCID as exc:  # (its message names the CID and what is wrong)
        if stored and _earlier_cid(value):
            return value, f"{value!r} is not a valid CID ({exc}; an earlier release took it)"
        raise SpecError(f"{field}: {value!r} is not a valid CID ({exc})", field=field) from None


def _earlier_cid(value: str) -> bool:
    """Did releases before session 40 take CID text `value` (a truncated digest)?"""
    try:
        parse_cid(value, lenient=True)
    except BadCID:
        return False
    return True


# -- names, calls, arguments ------------------------------------------------------------------


def _names(raws: Sequence[_Raw]) -> list[str]:
    """Explicit names (unique) first; unnamed tasks get `call` lowercased, then `_2`, `_3`."""
    taken: dict[str, int] = {}
    for r in raws:
        if r.name is not None:
            if r.name in taken:
                raise SpecError(f"{r.where}.name: duplicate task name {r.name!r} "
                                f"(also tasks[{taken[r.name]}])", field=f"{r.where}.name")
            taken[r.name] = r.index
    out = []
    last: dict[str, int] = {}  # base -> last suffix tried: linear, not quadratic, in repeats
    for r in raws:
        name = r.name
        if name is None:
            base = _base_name(r.call) if r.call is not None else SOURCE_BASE
            n = last.get(base, 1)
            name = base if n == 1 else f"{base}_{n}"
            while name in taken:
                n += 1
                name = f"{base}_{n}"
            taken[name], last[base] = r.index, n
        out.append(name)
    return out


def _base_name(call: str) -> str:
    base = re.sub(r"[^a-z0-9_.-]+", "_", call.lower()).strip(".")[: MAX_NAME_CHARS - 8]
    return base or "task"


def _spec(raw: _Raw, name: str, catalog: Mapping[str, TaskDef]) -> TaskSpec:
    depends = tuple(raw.depends or ())
    if raw.call is None:
        return TaskSpec(name=name, call=None, params={}, depends=(), cid=raw.cid)
    if raw.kind_params is not None:
        return TaskSpec(name=name, call=raw.call, params=raw.kind_params, depends=depends,
                        cache=raw.cache, requires=raw.requires or {})
    td = catalog.get(raw.call)
    if td is None:
        raise SpecError(_unknown(f"{raw.where}.call", "task", raw.call, catalog),
                        field=f"{raw.where}.call")
    kinds.check(td, f"{raw.where}.call")
    _check_finite(raw)
    try:
        params = td.bind(raw.args, raw.params, raw.where)
    except ArgError as exc:
        raise _relocate(exc, raw, td) from exc
    return TaskSpec(name=name, call=raw.call, params=params, depends=depends, cache=raw.cache,
                    requires=raw.requires or {})


# How deeply a task's canonical JSON may nest: a JOB_SUBMITTED's payload holds it three
# levels down (payload, workflow, tasks) and nests at most jsontext.MAX_DEPTH levels.
MAX_TASK_DEPTH = jsontext.MAX_DEPTH - 3


def _check_depth(raw: _Raw, spec: TaskSpec) -> None:
    """SpecError naming the place if the task as stored (`TaskSpec.to_json`: an api task's
    params are its body) nests deeper than an event may hold."""
    doc = spec.to_json()
    if jsontext.nesting(doc, MAX_TASK_DEPTH) > MAX_TASK_DEPTH:
        path = jsontext.deep_path(doc, MAX_TASK_DEPTH) or []
        raise SpecError(f"{jsontext.show_path(path, raw.where)}: nested too deeply: a task "
                        f"nests at most {MAX_TASK_DEPTH} levels (its job is an event of at "
                        f"most {jsontext.MAX_DEPTH})",
                        field=jsontext.show_path(path[:6], raw.where))


def _unknown(field: str, what: str, value: str, known: Mapping[str, Any] | Sequence[str]) -> str:
    names = sorted(known)
    close = difflib.get_close_matches(value, names, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    listed = ", ".join(names) if len(names) <= 40 else ", ".join(names[:40]) + ", ..."
    return f"{field}: unknown {what} {value!r}{hint} (known: {listed or 'none'})"


def _check_finite(raw: _Raw) -> None:
    """Reject NaN and infinities (JSON has none; they poison cache keys)."""
    values: list[tuple[str, Any]] = [
        *((f"{raw.where}.args[{k}]", v) for k, v in enumerate(raw.args or ())),
        *((f"{raw.where}.params.{k}", v) for k, v in (raw.params or {}).items())]
    for field, value in values:
        items = value if isinstance(value, list) else [value]
        for k, v in enumerate(items):
            if isinstance(v, float) and not math.isfinite(v):
                at = f"{field}[{k}]" if isinstance(value, list) else field
                raise ArgError(f"{at}: {v} is not a finite number", field=at)


def _relocate(exc: ArgError, raw: _Raw, td: TaskDef) -> ArgError:
    """Point an ArgError from `bind` (`tasks[i].<arg>`) at `tasks[i].args[k]` or `.params.<arg>`.

    The message is made to start with the field it names.
    """
    prefix = f"{raw.where}."
    if exc.field is None or not exc.field.startswith(prefix):
        return exc  # e.g. from a task's own `check`
    arg = next((a for a in td.args if a.name == exc.field[len(prefix):]), None)
    field = exc.field if arg is None else _arg_field(raw, td, arg)
    message = exc.message
    for old in (exc.field, raw.where):
        message = message.removeprefix(f"{old}: ")
    return ArgError(f"{field}: {message}", field=field)


def _arg_field(raw: _Raw, td: TaskDef, arg: Arg) -> str:
    if raw.params is not None:
        return f"{raw.where}.params.{arg.name}"
    pos = td.args.index(arg)
    args = raw.args or []
    if pos >= len(args):
        return f"{raw.where}.args"  # missing: too few positional arguments
    if arg.variadic:
        single = dataclasses.replace(arg, variadic=False)
        for k, v in enumerate(args[pos:]):
            try:
                single.check(v, "")
            except ArgError:
                return f"{raw.where}.args[{pos + k}]"
    return f"{raw.where}.args[{pos}]"


# -- the graph --------------------------------------------------------------------------------


def _check_refs(raws: Sequence[_Raw], specs: Sequence[TaskSpec]) -> None:
    """Every dependency names another task of the workflow."""
    names = [s.name for s in specs]
    known = set(names)
    for r, s in zip(raws, specs, strict=True):
        for j, d in enumerate(s.depends):
            field = f"{r.where}.depends[{j}]"
            if d == s.name:
                raise SpecError(f"{field}: task {d!r} depends on itself", field=field)
            if d not in known:
                raise SpecError(_unknown(field, "task", d, names), field=field)


def _needs_input(raw: _Raw, spec: TaskSpec, catalog: Mapping[str, TaskDef],
                 dag: bool) -> SpecError:
    producers = sorted(n for n, td in catalog.items() if not td.needs_input)
    start = ", ".join(producers) or "none in the catalog"
    if not dag:  # list form: only the first task has no predecessor
        return SpecError(f"{raw.where}: {spec.call} needs an input but nothing comes before it; "
                         f'start with {{"cid": ...}} or a task that needs none ({start})',
                         field=raw.where)
    field = f"{raw.where}.depends"
    return SpecError(f"{field}: {spec.call} needs an input: list the tasks it takes it from "
                     f"(or a {{\"cid\": ...}} source)", field=field)


def _toposort(raws: Sequence[_Raw], specs: Sequence[TaskSpec]) -> list[int]:
    """Kahn's algorithm taking the lowest user index first: stable for an ordered input."""
    pos = {s.name: i for i, s in enumerate(specs)}
    waiting = [len(s.depends) for s in specs]
    users: list[list[int]] = [[] for _ in specs]
    for i, s in enumerate(specs):
        for d in s.depends:
            users[pos[d]].append(i)
    ready = [i for i, w in enumerate(waiting) if w == 0]
    heapq.heapify(ready)
    order: list[int] = []
    while ready:
        i = heapq.heappop(ready)
        order.append(i)
        for u in users[i]:
            waiting[u] -= 1
            if waiting[u] == 0:
                heapq.heappush(ready, u)
    if len(order) < len(specs):
        raise _cycle(raws, specs, pos, set(order))
    return order


def _cycle(raws: Sequence[_Raw], specs: Sequence[TaskSpec], pos: Mapping[str, int],
           done: set[int]) -> SpecError:
    """Follow unfinished depends from an unfinished task until one repeats: that is a cycle."""
    path: list[int] = []
    seen: dict[int, int] = {}
    cur = min(set(range(len(specs))) - done)
    while cur not in seen:
        seen[cur] = len(path)
        path.append(cur)
        cur = next(pos[d] for d in specs[cur].depends if pos[d] not in done)
    loop = path[seen[cur]:]
    first = loop.index(min(loop))
    loop = loop[first:] + loop[:first]
    nxt = specs[loop[1 % len(loop)]].name
    field = f"{raws[loop[0]].where}.depends[{specs[loop[0]].depends.index(nxt)}]"
    names = [specs[i].name for i in [*loop, loop[0]]]
    if len(names) > 12:  # keep the message readable
        names = [*names[:10], f"... ({len(loop)} tasks)", names[-1]]
    chain = " -> ".join(names)
    return SpecError(f"{field}: cycle in depends: {chain} (each task depends on the next)",
                     field=field)
