"""peer.jobs.spec: pipeline parsing and validation against a small fake catalog."""

from __future__ import annotations

import contextlib
import itertools
import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from peer.errors import ArgError, BanzaiError, NotFound, SpecError, TooLarge
from peer.errors_http import Surface, http_error, status_of
from peer.jobs.spec import TaskSpec, Workflow, from_obj, parse, workflow_from_json
from tasks.registry import Arg, TaskDef

CID0 = "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG"
CID1 = "bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi"
CID1_RAW = "bafkreidon73zkcrwdb5iafqtijxildoonbwnpv7dyd6ef3qdgads2jc4su"
CID1_B58 = "zb2rhe5P4gXftAwvA4eXQ5HJwsER2owDyS9sKaQRRVQPn93bA"  # same CID as CID1_RAW
URL = "http://festvox.org/cmu_arctic/cmu_arctic/packed/cmu_us_awb_arctic-0.90-release.zip"
# ../shared beside the clone (CI); from a git worktree nested deeper, the first one above it
SEEDS = next((p / "shared" / "seeds" for p in Path(__file__).resolve().parents[3:]
              if (p / "shared" / "seeds").is_dir()), Path("../shared/seeds"))


def _noop(*args: Any, **kwargs: Any) -> None:
    return None


def _fmin_below_fmax(params: Any) -> None:
    if params["fmin"] >= params["fmax"]:
        raise ArgError("fmin must be below fmax", field="custom.fmin")


def _def(name: str, *args: Arg, needs_input: bool = True, check: Any = None) -> TaskDef:
    # TaskDef directly, not @task: the decorator writes to the global registry
    return TaskDef(name=name, version="1", fn=_noop, args=args, needs_input=needs_input,
                   check=check)


CATALOG: dict[str, TaskDef] = {
    d.name: d for d in (
        _def("FETCH_FESTVOX", Arg("urls", "str", variadic=True), needs_input=False),
        _def("FILTER_LONGER", Arg("seconds", "float", min=0)),
        _def("EXTRACT_MFCC", Arg("fft_size", "int"), Arg("n_mels", "int"), Arg("fmin", "float"),
             Arg("fmax", "float"), Arg("sample_rate", "int"), Arg("n_mfcc", "int", default=13),
             check=_fmin_below_fmax),
        _def("LEARN"),
    )
}

SEED_LIST = [
    {"call": "FETCH_FESTVOX", "args": [URL]},
    {"call": "FILTER_LONGER", "args": [5]},
    {"call": "EXTRACT_MFCC", "args": [32, 24, 1, 8000, 16000]},
    {"call": "LEARN", "args": []},
]


def _seed_body() -> str:
    text = (SEEDS / "000_df014897833f8723.txt").read_text()
    m = re.search(r"```\n(\[.*?\])\n```", text, re.S)
    assert m is not None
    return m.group(1)


def _dag(*tasks: dict[str, Any], name: str = "wf") -> dict[str, Any]:
    return {"name": name, "tasks": list(tasks)}


# -- good pipelines ---------------------------------------------------------------------------


def test_seed_pipeline_verbatim() -> None:
    wf = parse(_seed_body(), CATALOG)
    assert wf.name == "pipeline"
    assert [t.name for t in wf.tasks] == ["fetch_festvox", "filter_longer", "extract_mfcc",
                                          "learn"]
    assert [t.depends for t in wf.tasks] == [(), ("fetch_festvox",), ("filter_longer",),
                                             ("extract_mfcc",)]
    assert wf.task("fetch_festvox").params == {"urls": [URL]}
    assert wf.task("filter_longer").params == {"seconds": 5.0}
    mfcc = wf.task("extract_mfcc").params
    assert mfcc == {"fft_size": 32, "n_mels": 24, "fmin": 1.0, "fmax": 8000.0,
                    "sample_rate": 16000, "n_mfcc": 13}
    assert isinstance(mfcc["fmin"], float)
    assert wf == from_obj(SEED_LIST, CATALOG)


def test_list_names_params_and_repeats() -> None:
    wf = from_obj([
        {"call": "FETCH_FESTVOX", "args": ["a", "b"]},
        {"call": "FILTER_LONGER", "params": {"seconds": 1}},
        {"call": "FILTER_LONGER", "params": {"seconds": 2}, "name": "second"},
        {"call": "FILTER_LONGER", "args": [3]},
        {"call": "FILTER_LONGER", "args": [4]},
    ], CATALOG)
    assert [t.name for t in wf.tasks] == ["fetch_festvox", "filter_longer", "second",
                                          "filter_longer_2", "filter_longer_3"]
    assert wf.tasks[2].depends == ("filter_longer",)
    assert wf.tasks[0].params == {"urls": ["a", "b"]}


def test_generated_names_avoid_explicit_ones() -> None:
    wf = from_obj([{"call": "FETCH_FESTVOX", "args": ["u"]},
                   {"call": "LEARN", "name": "fetch_festvox_2"},
                   {"call": "LEARN", "name": "fetch_festvox"}], CATALOG)
    assert [t.name for t in wf.tasks] == ["fetch_festvox_3", "fetch_festvox_2", "fetch_festvox"]
    assert wf.tasks[1].depends == ("fetch_festvox_3",)


def test_list_cid_source() -> None:
    wf = from_obj([{"cid": CID1}, {"call": "FILTER_LONGER", "args": [5]}, {"call": "LEARN"}],
                  CATALOG)
    src = wf.tasks[0]
    assert src == TaskSpec(name="source", call=None, params={}, depends=(), cid=CID1)
    assert wf.task("filter_longer").depends == ("source",)


def test_cid_in_the_middle_starts_a_new_chain() -> None:
    wf = from_obj([{"call": "FETCH_FESTVOX", "args": ["u"]}, {"cid": CID0, "name": "corpus"},
                   {"call": "LEARN"}], CATALOG)
    assert wf.task("corpus").depends == ()
    assert wf.task("learn").depends == ("corpus",)


@pytest.mark.parametrize(("given", "stored"), [
    (CID0, CID0),
    (CID1, CID1),
    (CID1_RAW, CID1_RAW),
    (CID1_B58, CID1_RAW),  # CIDv1 is stored in base32, the store's form
    (CID1.upper(), CID1),  # base32upper
])
def test_cid_canonical(given: str, stored: str) -> None:
    wf = from_obj(_dag({"name": "corpus", "cid": given}, {"name": "l", "call": "LEARN",
                                                          "depends": ["corpus"]}), CATALOG)
    assert wf.task("corpus").cid == stored


def test_dag_with_fan_in_and_user_order() -> None:
    wf = from_obj(_dag(
        {"name": "corpus", "cid": CID1},
        {"name": "fetch", "call": "FETCH_FESTVOX", "args": [URL]},
        {"name": "short", "call": "FILTER_LONGER", "params": {"seconds": 1.5},
         "depends": ["corpus"]},
        {"name": "both", "call": "LEARN", "depends": ["short", "fetch"]},
        name="fan in"), CATALOG)
    assert wf.name == "fan in"
    assert [t.name for t in wf.tasks] == ["corpus", "fetch", "short", "both"]
    assert wf.task("both").depends == ("short", "fetch")


def test_dag_reordered_topologically_and_stably() -> None:
    wf = from_obj(_dag(
        {"name": "learn", "call": "LEARN", "depends": ["mfcc"]},
        {"name": "other", "call": "FETCH_FESTVOX", "args": ["x"]},
        {"name": "mfcc", "call": "EXTRACT_MFCC", "args": [1, 2, 3, 4, 5], "depends": ["src"]},
        {"name": "src", "call": "FETCH_FESTVOX", "args": ["y"]},
    ), CATALOG)
    assert [t.name for t in wf.tasks] == ["other", "src", "mfcc", "learn"]


def test_dag_name_optional_and_unnamed_tasks() -> None:
    wf = from_obj({"tasks": [{"call": "FETCH_FESTVOX", "args": ["u"]},
                             {"call": "LEARN", "depends": ["fetch_festvox"]}]}, CATALOG)
    assert wf.name == "pipeline"
    assert wf.tasks[1].depends == ("fetch_festvox",)


def test_yaml_dag() -> None:
    body = f"""
name: demo
tasks:
  - name: corpus
    cid: {CID1}
  - name: short
    call: FILTER_LONGER
    args: [5]
    depends: [corpus]
  - name: mfcc
    call: EXTRACT_MFCC
    params: {{fft_size: 512, n_mels: 40, fmin: 0, fmax: 8000, sample_rate: 16000}}
    depends: [short]
"""
    for ct in (None, "application/yaml", "text/x-yaml; charset=utf-8", "text/plain"):
        wf = parse(body, CATALOG, content_type=ct)
        assert [t.name for t in wf.tasks] == ["corpus", "short", "mfcc"]
        assert wf.task("mfcc").params["n_mfcc"] == 13


def test_yaml_list_form() -> None:
    body = "- call: FETCH_FESTVOX\n  args: [u]\n- {call: FILTER_LONGER, args: [5]}\n"
    assert parse(body.encode(), CATALOG).task("filter_longer").depends == ("fetch_festvox",)


def test_json_with_bom_and_media_type() -> None:
    body = "\ufeff" + json.dumps(SEED_LIST)
    for b in (body, body.encode()):
        wf = parse(b, CATALOG, content_type="application/vnd.banzai+json")
        assert wf == from_obj(SEED_LIST, CATALOG)


def test_round_trip() -> None:
    wf = from_obj([{"cid": CID1_B58}, *SEED_LIST[1:]], CATALOG)
    doc = wf.to_json()
    assert doc["tasks"][0] == {"name": "source", "cid": CID1_RAW}
    assert doc["tasks"][1] == {"name": "filter_longer", "call": "FILTER_LONGER",
                               "params": {"seconds": 5.0}, "depends": ["source"]}
    assert from_obj(doc, CATALOG) == wf
    assert parse(json.dumps(doc), CATALOG) == wf
    assert from_obj(wf.to_json(), CATALOG).to_json() == doc


def test_workflow_from_json_needs_no_catalog() -> None:
    wf = from_obj([{"cid": CID0}, *SEED_LIST[1:]], CATALOG)
    assert workflow_from_json(wf.to_json()) == wf
    doc = {"name": "x", "tasks": [{"name": "a", "call": "ELSEWHERE", "params": {"k": [1]},
                                   "depends": []}]}
    assert workflow_from_json(doc).task("a").params == {"k": [1]}


@pytest.mark.parametrize(("doc", "field"), [
    ([], None),
    ({"name": "x"}, "tasks"),
    ({"tasks": [{"name": "a", "call": "LEARN", "args": [1]}]}, "tasks[0].args"),
    ({"tasks": [{"name": "a", "call": "LEARN", "depends": ["b"]}]}, "tasks[0].depends[0]"),
    ({"tasks": [{"name": "a", "call": "LEARN", "depends": ["a"]}]}, "tasks[0].depends[0]"),
    ({"tasks": [{"name": "a", "cid": "Qm"}]}, "tasks[0].cid"),
])
def test_workflow_from_json_rejects_malformed(doc: Any, field: str | None) -> None:
    with pytest.raises(SpecError) as info:
        workflow_from_json(doc)
    assert info.value.field == field


def test_a_stored_source_an_earlier_release_took_is_kept_with_its_flaw() -> None:
    """(Session 41.) A truncated digest (`bafkreare2e`) that py-cid took at submit before
    session 40: a stored workflow keeps the task, its `flaw` naming it and the CID (it and
    the tasks reading it fail: Scheduler._unrunnable); a submission is refused as before."""
    doc = {"name": "x", "tasks": [
        {"name": "src", "cid": "bafkreare2e"},
        {"name": "e", "call": "ECHO", "params": {}, "depends": ["src"]},
        {"name": "f", "call": "ECHO", "params": {}, "depends": ["e"]}]}
    wf = workflow_from_json(doc)
    assert wf.task("src").cid == "bafkreare2e"
    assert wf.flaw("src") == wf.flaw("e") == wf.task("src").flaw
    assert wf.flaw("src") == (
        "task 'src': its source 'bafkreare2e' is not a valid CID (invalid CID 'bafkreare2e': "
        "its digest is 2 bytes, not the 32 of its hash function; an earlier release took it)")
    assert wf.flaw("f") is None  # (it waits for e, which fails)
    assert workflow_from_json(wf.to_json()) == wf
    with pytest.raises(SpecError, match="its digest is 2 bytes") as e:
        from_obj(doc, CATALOG)
    assert e.value.field == "tasks[0].cid"


def test_task_lookup() -> None:
    wf = from_obj(SEED_LIST, CATALOG)
    assert wf.task("learn").call == "LEARN"
    with pytest.raises(NotFound, match="no task 'nope'"):
        wf.task("nope")


def test_to_json_is_a_copy() -> None:
    wf = from_obj(SEED_LIST, CATALOG)
    wf.to_json()["tasks"][0]["params"]["urls"].append("x")
    assert wf.task("fetch_festvox").params == {"urls": [URL]}


# -- bad pipelines ----------------------------------------------------------------------------

GOOD0 = {"call": "FETCH_FESTVOX", "args": ["u"]}
F = "FETCH_FESTVOX"

BAD_OBJS: list[tuple[str, Any, type[BanzaiError], str | None, str]] = [
    # top level
    ("string", "hello", SpecError, None, "got string"),
    ("null", None, SpecError, None, "got null"),
    ("number", 3, SpecError, None, "got integer"),
    ("empty list", [], SpecError, "tasks", "empty pipeline"),
    ("empty dag", {"tasks": []}, SpecError, "tasks", "empty pipeline"),
    ("only sources", [{"cid": CID1}], SpecError, "tasks", "no task to run"),
    ("no tasks key", {"name": "x"}, SpecError, "tasks", 'missing key "tasks"'),
    ("tasks not list", {"tasks": {"a": 1}}, SpecError, "tasks", "got object"),
    ("top unknown key", {"tasks": [GOOD0], "version": 2}, SpecError, "version",
     "unknown top-level key 'version'"),
    ("bad wf name", {"name": 3, "tasks": [GOOD0]}, SpecError, "name", "workflow name"),
    ("empty wf name", {"name": " ", "tasks": [GOOD0]}, SpecError, "name", "got ' '"),
    # task objects
    ("element not object", [GOOD0, "LEARN"], SpecError, "tasks[1]", "must be an object"),
    ("element list", [[F]], SpecError, "tasks[0]", "got list"),
    ("unknown key", [GOOD0, {"call": "LEARN", "arg": []}], SpecError, "tasks[1].arg",
     "unknown key 'arg' (allowed: args, cache, call, cid, kind, name, params, requires; a "
     "shell, container or api task also: body, command, cpus, env, image, mem_mb, network, "
     "shell, stdin, url)"),
    ("unknown dag key", _dag(GOOD0, {"call": "LEARN", "needs": []}), SpecError, "tasks[1].needs",
     "unknown key 'needs' (allowed: args, cache, call, cid, depends, kind, name, params, "
     "requires;"),
    ("depends in list form", [GOOD0, {"call": "LEARN", "depends": []}], SpecError,
     "tasks[1].depends", "DAG form"),
    ("missing call", [{"args": [1]}], SpecError, "tasks[0].call", "missing call"),
    ("call not str", [{"call": 5}], SpecError, "tasks[0].call", "got integer"),
    ("unknown call", [GOOD0, {"call": "LEARNN"}], SpecError, "tasks[1].call",
     "unknown task 'LEARNN'; did you mean 'LEARN'? (known: EXTRACT_MFCC, FETCH_FESTVOX, "
     "FILTER_LONGER, LEARN)"),
    ("args not list", [{"call": F, "args": "u"}], SpecError, "tasks[0].args", "must be a list"),
    ("args null", [{"call": F, "args": None}], SpecError, "tasks[0].args", "got null"),
    ("params not object", [GOOD0, {"call": "FILTER_LONGER", "params": [5]}], SpecError,
     "tasks[1].params", "must be an object"),
    ("args and params", [GOOD0, {"call": "FILTER_LONGER", "args": [5],
                                 "params": {"seconds": 5}}],
     SpecError, "tasks[1]", "either args"),
    # names
    ("name not str", [{**GOOD0, "name": 1}], SpecError, "tasks[0].name", "must be a string"),
    ("name with slash", [{**GOOD0, "name": "a/b"}], SpecError, "tasks[0].name", "bad task name"),
    ("name empty", [{**GOOD0, "name": ""}], SpecError, "tasks[0].name", "bad task name"),
    ("name dotdot", [{**GOOD0, "name": ".."}], SpecError, "tasks[0].name", "bad task name"),
    ("name space", [{**GOOD0, "name": "a b"}], SpecError, "tasks[0].name", "bad task name"),
    ("name too long", [{**GOOD0, "name": "a" * 129}], SpecError, "tasks[0].name",
     "bad task name"),
    ("duplicate names", [{**GOOD0, "name": "x"}, {"call": "LEARN", "name": "x"}], SpecError,
     "tasks[1].name", "duplicate task name 'x' (also tasks[0])"),
    # arguments (TaskDef.bind, relocated to the exact place)
    ("too many args", [GOOD0, {"call": "FILTER_LONGER", "args": [5, 6]}], ArgError,
     "tasks[1].args", "at most 1 argument(s) (seconds), got 2"),
    ("args to LEARN", [GOOD0, {"call": "LEARN", "args": [1]}], ArgError, "tasks[1].args",
     "at most 0"),
    ("wrong type", [GOOD0, {"call": "FILTER_LONGER", "args": ["5"]}], ArgError,
     "tasks[1].args[0]", "seconds must be float, got str '5'"),
    ("bool is not float", [GOOD0, {"call": "FILTER_LONGER", "args": [True]}], ArgError,
     "tasks[1].args[0]", "seconds must be float"),
    ("below min", [GOOD0, {"call": "FILTER_LONGER", "args": [-1]}], ArgError,
     "tasks[1].args[0]", "seconds must be >= 0"),
    ("float for int", [GOOD0, {"call": "EXTRACT_MFCC", "args": [32, 24.5, 1, 8000, 16000]}],
     ArgError, "tasks[1].args[1]", "n_mels must be int, got float 24.5"),
    ("too few args", [GOOD0, {"call": "EXTRACT_MFCC", "args": [32, 24, 1]}], ArgError,
     "tasks[1].args", "missing required argument fmax"),
    ("no args at all", [GOOD0, {"call": "EXTRACT_MFCC"}], ArgError, "tasks[1].args",
     "missing required argument fft_size"),
    ("variadic empty", [{"call": F, "args": []}], ArgError, "tasks[0].args",
     "missing required argument urls"),
    ("variadic bad item", [{"call": F, "args": ["a", "b", 3]}], ArgError, "tasks[0].args[2]",
     "urls must be str, got int 3"),
    ("variadic via params not list", [{"call": F, "params": {"urls": "a"}}], ArgError,
     "tasks[0].params.urls", "non-empty list"),
    ("unknown param", [GOOD0, {"call": "FILTER_LONGER", "params": {"secs": 5}}], ArgError,
     "tasks[1].params.secs", "no argument 'secs' (known: seconds)"),
    ("missing param", [GOOD0, {"call": "FILTER_LONGER", "params": {}}], ArgError,
     "tasks[1].params.seconds", "missing required argument seconds"),
    ("param wrong type", [GOOD0, {"call": "FILTER_LONGER", "params": {"seconds": None}}],
     ArgError, "tasks[1].params.seconds", "got NoneType None"),
    ("nan arg", [GOOD0, {"call": "FILTER_LONGER", "args": [float("nan")]}], ArgError,
     "tasks[1].args[0]", "not a finite number"),
    ("inf param", [GOOD0, {"call": "FILTER_LONGER", "params": {"seconds": float("inf")}}],
     ArgError, "tasks[1].params.seconds", "not a finite number"),
    ("inf in variadic", [{"call": F, "args": ["a", float("-inf")]}], ArgError,
     "tasks[0].args[1]", "not a finite number"),
    ("task check", [GOOD0, {"call": "EXTRACT_MFCC", "args": [32, 24, 9000, 8000, 16000]}],
     ArgError, "tasks[1].custom.fmin", "fmin must be below fmax"),
    # sources
    ("bad cid", [{"cid": "bafyxx"}], SpecError, "tasks[0].cid", "not a valid CID"),
    ("cid not str", [{"cid": 12}], SpecError, "tasks[0].cid", "must be a string"),
    ("cid empty", [{"cid": ""}], SpecError, "tasks[0].cid", "not a valid CID"),
    ("cid huge", [{"cid": "z" + "2" * 5000}], SpecError, "tasks[0].cid", "not a valid CID"),
    ("cid with path", [{"cid": CID1 + "/a.wav"}], SpecError, "tasks[0].cid", "not a valid CID"),
    ("cid and call", [{"cid": CID1, "call": "LEARN"}], SpecError, "tasks[0].call",
     "a cid source takes no call"),
    ("cid and args", [{"cid": CID1, "args": []}], SpecError, "tasks[0].args", "takes no args"),
    ("dag cid and depends", _dag({"name": "a", "cid": CID1, "depends": []}), SpecError,
     "tasks[0].depends", "takes no depends"),
    # needs input
    ("filter first", [{"call": "FILTER_LONGER", "args": [5]}], SpecError, "tasks[0]",
     "FILTER_LONGER needs an input but nothing comes before it"),
    ("dag no depends", _dag({"name": "a", "call": "LEARN"}), SpecError, "tasks[0].depends",
     "LEARN needs an input"),
    ("dag empty depends", _dag(GOOD0, {"name": "a", "call": "LEARN", "depends": []}), SpecError,
     "tasks[1].depends", "needs an input"),
    # depends
    ("depends not list", _dag(GOOD0, {"call": "LEARN", "depends": "fetch_festvox"}), SpecError,
     "tasks[1].depends", "must be a list of task names"),
    ("depends item not str", _dag(GOOD0, {"call": "LEARN", "depends": [0]}), SpecError,
     "tasks[1].depends[0]", "got integer"),
    ("unknown dependency", _dag(GOOD0, {"call": "LEARN", "depends": ["fetch_festvx"]}),
     SpecError, "tasks[1].depends[0]",
     "unknown task 'fetch_festvx'; did you mean 'fetch_festvox'?"),
    ("dependency twice", _dag(GOOD0, {"call": "LEARN",
                                      "depends": ["fetch_festvox", "fetch_festvox"]}),
     SpecError, "tasks[1].depends[1]", "listed twice"),
    ("self dependency", _dag(GOOD0, {"name": "l", "call": "LEARN",
                                     "depends": ["fetch_festvox", "l"]}),
     SpecError, "tasks[1].depends[1]", "task 'l' depends on itself"),
    ("two cycle", _dag(GOOD0, {"name": "a", "call": "LEARN", "depends": ["b"]},
                       {"name": "b", "call": "LEARN", "depends": ["a"]}),
     SpecError, "tasks[1].depends[0]", "cycle in depends: a -> b -> a"),
    ("three cycle", _dag({"name": "c", "call": "LEARN", "depends": ["b"]},
                         {"name": "a", "call": "LEARN", "depends": ["fetch_festvox", "c"]},
                         {"name": "b", "call": "LEARN", "depends": ["a"]}, GOOD0),
     SpecError, "tasks[0].depends[0]", "cycle in depends: c -> b -> a -> c"),
]


@pytest.mark.parametrize(("obj", "exc", "field", "message"),
                         [pytest.param(*row[1:], id=row[0]) for row in BAD_OBJS])
def test_bad_pipeline(obj: Any, exc: type[BanzaiError], field: str | None, message: str) -> None:
    with pytest.raises(exc) as info:
        from_obj(obj, CATALOG)
    assert type(info.value) is exc
    assert info.value.field == field
    assert message in info.value.message
    if field is not None and not field.startswith("custom"):
        assert info.value.message.startswith(f"{field}: ")


BAD_BODIES: list[tuple[str, bytes | str, str | None, str]] = [
    ("json syntax", '[{"call": "LEARN",}]', "application/json",
     "invalid JSON at line 1, column 19"),
    ("json multiline", '[\n  {"call": "LEARN"\n  "args": []}\n]', None,
     "invalid JSON at line 3, column 3"),
    ("json truncated", "[1,", None, "invalid JSON at line 1"),
    ("yaml syntax", "- call: LEARN\n  args: [1\n", None, "invalid YAML at line"),
    ("yaml tab", "tasks:\n\t- call: X\n", None, "invalid YAML at line 2"),
    ("yaml two docs", "- a\n---\n- b\n", None, "invalid YAML at line 2"),
    ("yaml bad date", "a: 2020-13-45\n", None, "invalid YAML"),
    ("json type forced", "- call: LEARN\n", "application/json", "invalid JSON at line 1"),
    ("yaml type forced", '{"call": "LEARN"', "application/x-yaml", "invalid YAML"),
    ("empty body", b"", None, "empty pipeline"),
    ("blank body", "  \n ", "application/json", "empty pipeline"),
    ("not utf8", b'[{"call": "\xff"}]', None, "not UTF-8 text (bad byte at offset 11)"),
    ("deep json", "[" * 100_000, None, "nested too deeply"),
    ("deep yaml", "- " * 100_000, None, "nested too deeply"),
    ("deep yaml mapping", "{a: " * 100_000, "text/yaml", "nested too deeply"),
    ("huge int", "[" + "9" * 5000 + "]", "application/json", "invalid JSON"),
    ("scalar yaml", "just words", None, "got string"),
]


@pytest.mark.parametrize(("body", "content_type", "message"),
                         [pytest.param(*row[1:], id=row[0]) for row in BAD_BODIES])
def test_bad_body(body: bytes | str, content_type: str | None, message: str) -> None:
    with pytest.raises(SpecError) as info:
        parse(body, CATALOG, content_type=content_type)
    assert info.value.field is None
    assert message in info.value.message


def test_long_cycle_message_is_shortened() -> None:
    n = 50
    doc = _dag(*({"name": f"t{i}", "call": "LEARN", "depends": [f"t{(i + 1) % n}"]}
                 for i in range(n)))
    with pytest.raises(SpecError) as info:
        from_obj(doc, CATALOG)
    assert info.value.field == "tasks[0].depends[0]"
    assert "t0 -> t1 -> " in info.value.message
    assert "-> t9 -> ... (50 tasks) -> t0 (" in info.value.message


def test_many_repeated_calls_are_named_in_linear_time() -> None:
    wf = from_obj([GOOD0, *[{"call": "LEARN"}] * 3000], CATALOG)
    assert wf.tasks[-1].name == "learn_3000"
    assert wf.tasks[-1].depends == ("learn_2999",)


def test_json_looking_body_reports_the_json_error() -> None:
    with pytest.raises(SpecError, match="invalid JSON at line 1, column 20"):
        parse('[{"call": "LEARN"  "args": []}]', CATALOG)


def test_flow_yaml_is_not_json_but_parses() -> None:
    wf = parse("[{call: FETCH_FESTVOX, args: [u]}, {call: LEARN,}]", CATALOG)
    assert [t.name for t in wf.tasks] == ["fetch_festvox", "learn"]


def test_json_nan_rejected_at_its_place() -> None:
    with pytest.raises(ArgError) as info:
        parse(f'[{{"cid": "{CID1}"}}, {{"call": "FILTER_LONGER", "args": [NaN]}}]', CATALOG)
    assert info.value.field == "tasks[1].args[0]"


@pytest.mark.parametrize("body", [b"x" * 101, "x" * 101, "é" * 51])
def test_too_large(body: bytes | str) -> None:
    with pytest.raises(TooLarge, match="limit of 100 bytes") as info:
        parse(body, CATALOG, max_bytes=100)
    assert status_of(info.value, Surface.API) == 413


def test_at_the_limit_is_fine() -> None:
    body = json.dumps(SEED_LIST)
    assert parse(body, CATALOG, max_bytes=len(body)).tasks[0].call == "FETCH_FESTVOX"


def test_errors_serialise_with_field() -> None:
    with pytest.raises(SpecError) as info:
        from_obj([GOOD0, {"call": "NOPE"}], CATALOG)
    assert http_error(info.value, Surface.API).json()["field"] == "tasks[1].call"


# -- properties -------------------------------------------------------------------------------

PROP = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def dags(draw: st.DrawFn) -> tuple[list[dict[str, Any]], list[int]]:
    """A random DAG in generation (topological) order, and a random presentation order."""
    n = draw(st.integers(1, 12))
    tasks: list[dict[str, Any]] = []
    for i in range(n):
        deps = sorted(draw(st.sets(st.integers(0, i - 1), max_size=i))) if i else []
        if deps:
            task = {"call": "LEARN", "depends": [f"t{d}" for d in deps]}
        elif i == 0:  # at least one task to run
            task = {"call": "FETCH_FESTVOX", "args": ["u"]}
        else:
            task = draw(st.sampled_from([{"call": "FETCH_FESTVOX", "args": ["u"]},
                                         {"cid": CID1}]))
        tasks.append({"name": f"t{i}", **task})
    order = draw(st.permutations(range(n)))
    return tasks, list(order)


def _assert_topological(wf: Workflow) -> None:
    seen: set[str] = set()
    for t in wf.tasks:
        assert set(t.depends) <= seen, f"{t.name} before its depends"
        seen.add(t.name)


@PROP
@given(dags())
def test_random_dags_come_out_topologically_ordered(dag: tuple[list[dict[str, Any]],
                                                               list[int]]) -> None:
    tasks, order = dag
    shuffled = [tasks[i] for i in order]
    wf = from_obj({"name": "r", "tasks": shuffled}, CATALOG)
    _assert_topological(wf)
    assert sorted(t.name for t in wf.tasks) == sorted(t["name"] for t in tasks)
    in_order = from_obj({"name": "r", "tasks": tasks}, CATALOG)
    assert [t.name for t in in_order.tasks] == [t["name"] for t in tasks]  # stable
    assert from_obj(wf.to_json(), CATALOG) == wf
    assert workflow_from_json(wf.to_json()) == wf


@PROP
@given(dags(), st.data())
def test_random_back_edge_is_a_cycle(dag: tuple[list[dict[str, Any]], list[int]],
                                     data: st.DataObject) -> None:
    tasks, order = dag
    n = len(tasks)
    if n < 2:
        return
    a = data.draw(st.integers(0, n - 2))
    b = data.draw(st.integers(a + 1, n - 1))
    tb = tasks[b] = {"name": f"t{b}", "call": "LEARN",
                     "depends": sorted({*tasks[b].get("depends", []), f"t{a}"})}
    ta = tasks[a] = {"name": f"t{a}", "call": "LEARN",
                     "depends": [*tasks[a].get("depends", []), f"t{b}"]}  # the back edge
    with pytest.raises(SpecError) as info:
        from_obj({"tasks": [tasks[i] for i in order]}, CATALOG)
    m = re.search(r"cycle in depends: (\S+(?: -> \S+)+) \(", info.value.message)
    assert m is not None, info.value.message
    chain = m.group(1).split(" -> ")
    assert chain[0] == chain[-1]
    assert {ta["name"], tb["name"]} <= set(chain)
    deps = {t["name"]: t.get("depends", []) for t in tasks}
    for x, y in itertools.pairwise(chain):
        assert y in deps[x]
    assert info.value.field is not None
    assert re.fullmatch(r"tasks\[\d+\]\.depends\[\d+\]", info.value.field)


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8)
    | st.sampled_from([F, "LEARN", "FILTER_LONGER", "EXTRACT_MFCC", CID1, "t0", "fetch_festvox",
                       "call", "args", "params", "cid", "name", "depends", "tasks"]),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(
        st.sampled_from(["call", "args", "params", "cid", "name", "depends", "tasks", "x"]),
        kids, max_size=4),
    max_leaves=20)


@PROP
@given(JSONISH)
def test_arbitrary_documents_fail_only_with_user_errors(obj: Any) -> None:
    try:
        wf = from_obj(obj, CATALOG)
    except (SpecError, ArgError) as exc:
        assert exc.message
    else:
        _assert_topological(wf)


@PROP
@given(st.text(max_size=200) | st.binary(max_size=200))
def test_arbitrary_bodies_fail_only_with_user_errors(body: str | bytes) -> None:
    with contextlib.suppress(SpecError, ArgError):
        parse(body, CATALOG)


@PROP
@given(st.text(max_size=80) | st.from_regex(r"[bBzfQ][A-Za-z0-9]{0,70}", fullmatch=True))
def test_arbitrary_cids_are_checked(cid: str) -> None:
    try:
        wf = from_obj([{"cid": cid}, {"call": "LEARN"}], CATALOG)
    except SpecError as exc:
        assert exc.field == "tasks[0].cid"
    else:
        assert wf.tasks[0].cid


# -- bounds (issue 11 item 6) -------------------------------------------------------------------
def test_yaml_alias_bomb_is_refused_naming_the_place() -> None:
    body = 'a: &a ["x", "x", "x", "x", "x", "x", "x", "x", "x"]\n'
    for i in range(1, 9):
        body += f"{chr(97 + i)}: &{chr(97 + i)} [*{chr(96 + i)}, *{chr(96 + i)}, *{chr(96 + i)}]\n"
    with pytest.raises(SpecError, match=r"line 1, column 4: an anchor \(&\) is not allowed"):
        parse(body, CATALOG, content_type="application/yaml")


def test_yaml_alias_is_refused_naming_the_place() -> None:
    body = "name: x\ntasks:\n  - call: FETCH_FESTVOX\n    args: [u]\n  - *t\n"
    with pytest.raises(SpecError, match=r"line 5, column 5: an alias \(\*\) is not allowed"):
        parse(body, CATALOG)


def test_too_many_tasks_are_refused() -> None:
    body = json.dumps([GOOD0, *[{"call": "LEARN"}] * 10])
    assert len(parse(body, CATALOG, max_tasks=11).tasks) == 11
    with pytest.raises(TooLarge, match="tasks: 11 tasks, over the limit of 10 per job") as e:
        parse(body, CATALOG, max_tasks=10)
    assert e.value.field == "tasks"


def test_the_stored_workflow_is_bounded() -> None:
    body = json.dumps([GOOD0, *[{"call": "LEARN"}] * 10])
    stored = len(json.dumps(parse(body, CATALOG).to_json(), separators=(",", ":")))
    assert len(parse(body, CATALOG, max_workflow_bytes=stored).tasks) == 11
    with pytest.raises(TooLarge, match=f"takes {stored} bytes, over the limit of {stored - 1}"):
        parse(body, CATALOG, max_workflow_bytes=stored - 1)


@pytest.mark.parametrize(("body", "field"), [
    ("- call: LEARN\n  x: " + "0x" + "f" * 4000 + "\n", "tasks[0].x"),
    (f"- cid: {CID1}\n- call: EXTRACT_MFCC\n  args: [0b" + "1" * 65 + ", 24, 1, 8000, 16000]\n",
     "tasks[1].args[0]"),
    ("tasks:\n- call: LEARN\n  requires: {mem_mb: " + "1" + ":59" * 2000 + "}\n",
     "tasks[0].requires.mem_mb"),
    ("name: " + "-0x" + "f" * 17 + "\ntasks: [{call: LEARN}]\n", "name"),
    ('[{"call": "FILTER_LONGER", "args": [1' + "0" * 4000 + "]}]", "tasks[0].args[0]"),
])
def test_integers_are_bounded_naming_their_place(body: str, field: str) -> None:
    """An integer of a pipeline holds at most 64 bits: YAML reads hex, binary and base-60
    integers of any size, whose str() (an error message, the stored JSON) raised ValueError
    past Python's 4,300 digits."""
    with pytest.raises(SpecError) as info:
        parse(body, CATALOG)
    assert info.value.field == field
    assert info.value.message.startswith(f"{field}: an integer of ")
    assert "at most 64 bits" in info.value.message


@pytest.mark.parametrize("value", [2**64 - 1, -(2**64 - 1), 0x7FFF_FFFF_FFFF_FFFF])
def test_integers_within_64_bits_pass(value: int) -> None:
    wf = parse(f"- cid: {CID1}\n- call: EXTRACT_MFCC\n  args: [{value}, 24, 1, 8000, 16000]\n",
               CATALOG)
    assert wf.tasks[1].params["fft_size"] == value


def test_a_wide_integer_key_is_named_by_its_object() -> None:
    """YAML keys may be integers: str() of a wide one would raise where the place is named."""
    with pytest.raises(SpecError) as info:
        parse("- call: LEARN\n  params:\n    ? 0x" + "f" * 4000 + "\n    : 1\n", CATALOG)
    assert info.value.field == "tasks[0].params"
    assert info.value.message.startswith("tasks[0].params: a key is an integer of 16000 bits")
