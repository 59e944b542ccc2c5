"""peer.jobs.kinds: the executor-kind seam (target per kind, worker-side dispatch, checks)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from peer.errors import SpecError
from peer.jobs import kinds
from peer.jobs.spec import from_obj
from tasks.registry import Arg, TaskDef


class _Ctx:
    workdir = Path()

    def progress(self, fraction: float) -> None: ...
    def log(self, message: str) -> None: ...
    def metric(self, name: str, step: int, value: float) -> None: ...


def _add(ctx: Any, inp: Path | None, out: Path, *, a: int, b: int) -> dict[str, Any]:
    return {"inp": inp, "out": out, "sum": a + b}


def _def(kind: str = "python", name: str = "ADD") -> TaskDef:
    return TaskDef(name=name, version="1", fn=_add, args=(Arg("a", "int"), Arg("b", "int")),
                   needs_input=False, kind=kind)


def echo_invoke(tdef: TaskDef, ctx: Any, inp: Path | None, out: Path, params: Any) -> Any:
    """The Invoke of the test-only kind `echo`: returns what it was given."""
    return ("echo", tdef.name, inp, out, dict(params))


def test_python_is_the_default_kind_and_runs_through_the_runner() -> None:
    tdef = TaskDef(name="X", version="1", fn=_add, args=())
    assert tdef.kind == "python" and tdef.to_json()["kind"] == "python"
    assert kinds.target(tdef) == "peer.jobs.runner:run" == kinds.RUNNER
    assert kinds.check(tdef) is kinds.KINDS["python"]


def test_python_kind_calls_the_function_with_params() -> None:
    got = kinds.invoke(_def(), _Ctx(), Path("in"), Path("out"), {"a": 2, "b": 3})
    assert got == {"inp": Path("in"), "out": Path("out"), "sum": 5}


def test_a_new_kind_is_one_entry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(kinds.KINDS, "echo",  # type: ignore[index]
                        kinds.Kind("some.module:run_echo", f"{__name__}:echo_invoke"))
    tdef = _def("echo", "E")
    assert kinds.target(tdef) == "some.module:run_echo"
    got = kinds.invoke(tdef, _Ctx(), None, Path("o"), {"k": 1})
    assert got == ("echo", "E", None, Path("o"), {"k": 1})


def test_unknown_kind_names_the_task() -> None:
    tdef = _def("kube", "RESAMPLE")
    with pytest.raises(SpecError) as err:
        kinds.check(tdef, "tasks[0].call")
    assert err.value.message == ("tasks[0].call: task RESAMPLE has an unknown executor kind "
                                 "'kube' (known: api, container, python, shell)")
    assert err.value.field == "tasks[0].call"
    with pytest.raises(SpecError, match="task RESAMPLE has an unknown executor kind"):
        kinds.invoke(tdef, _Ctx(), None, Path("o"), {})  # a worker fails the run with it
    assert kinds.target(tdef) == kinds.RUNNER  # ... so the scheduler itself never raises


def test_submit_rejects_a_task_of_unknown_kind() -> None:
    catalog = {"ADD": _def(), "RESAMPLE": _def("kube", "RESAMPLE")}
    assert from_obj([{"call": "ADD", "params": {"a": 1, "b": 2}}], catalog)
    with pytest.raises(SpecError) as err:
        from_obj([{"call": "ADD", "args": [1, 2]}, {"call": "RESAMPLE", "args": [1, 2]}],
                 catalog)
    assert err.value.field == "tasks[1].call"
    assert "task RESAMPLE has an unknown executor kind 'kube'" in err.value.message


@pytest.mark.parametrize("kind", ["", None, 3])
def test_taskdef_rejects_a_kind_that_is_not_a_name(kind: Any) -> None:
    with pytest.raises(ValueError, match="kind"):
        dataclasses.replace(_def(), kind=kind)


@pytest.mark.parametrize(("raw", "shown"), [
    (b"[" * 100_000 + b"]" * 100_000, "nested too deeply: deeper than 128 levels"),
    (b"[" * 129 + b"]" * 129, "nested too deeply: deeper than 128 levels"),
    (b"\xff", "answered garbage, not JSON"), (b"[1]", "JSON that is not an object")])
def test_an_api_answer_past_the_nesting_bound_fails_its_task_naming_it(raw: bytes,
                                                                       shown: str) -> None:
    """An external API's answer becomes a task's output (encoded again later, at a deeper
    stack): nested past the stack it raised RecursionError out of the task before; past
    the stored bound (128 levels) or not JSON, it is an ApiError naming the request."""
    from peer.jobs.kind_api import ApiError, _decode

    with pytest.raises(ApiError, match=shown) as caught:
        _decode(raw, "GET http://127.0.0.1:9/x")
    assert "GET http://127.0.0.1:9/x" in str(caught.value)
    at_bound = _decode(b'{"a": ' + b"[" * 127 + b"]" * 127 + b"}", "GET x")  # 128 levels
    assert isinstance(at_bound["a"], list)
