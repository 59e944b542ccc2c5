"""peer.jobs.kindspec through the workflow parser: shell, container and api tasks, their
shorthands, the seed's placement in params, and every bad input named by its field."""

from __future__ import annotations

import json
from typing import Any

import pytest

from peer.errors import SpecError
from peer.jobs import kinds
from peer.jobs.planner import cache_key
from peer.jobs.spec import from_obj, parse, workflow_from_json
from tasks.registry import TaskDef

CATALOG: dict[str, TaskDef] = {}


def one(task: dict[str, Any]) -> Any:
    return from_obj({"tasks": [task]}, CATALOG).tasks[0]


SHELL = {"name": "r", "shell": "sox {in}/x.wav -r 8000 {out}/x.wav"}


@pytest.mark.parametrize("task", [
    SHELL,
    {**SHELL, "kind": "shell"},
    {"name": "r", "kind": "shell", "params": {"shell": SHELL["shell"]}},  # the seed's placement
    {"name": "r", "call": "shell", "params": {"shell": SHELL["shell"], "env": {},
                                             "stdin": ""}},  # the canonical form
])
def test_shell_forms_are_one_task(task: dict[str, Any]) -> None:
    t = one(task)
    assert t.call == "shell"
    assert t.params == {"shell": SHELL["shell"], "env": {}, "stdin": ""}


@pytest.mark.parametrize("task", [
    {"name": "c", "image": "localhost/busybox:test", "command": ["wc", "-l"]},
    {"name": "c", "kind": "docker", "params": {"image": "localhost/busybox:test",
                                               "command": ["wc", "-l"]}},
    {"name": "c", "kind": "container", "image": "localhost/busybox:test",
     "command": ["wc", "-l"], "network": False},
])
def test_container_forms_and_the_docker_alias(task: dict[str, Any]) -> None:
    t = one(task)
    assert t.call == "container"
    assert t.params["image"] == "localhost/busybox:test"
    assert t.params["command"] == ["wc", "-l"] and t.params["network"] is False


def test_api_params_are_the_body() -> None:
    t = one({"name": "a", "kind": "api", "url": "http://svc.example/v1/", "params": {"k": 1}})
    assert t.params == {"url": "http://svc.example/v1", "body": {"k": 1}}
    assert one({"name": "a", "call": "api", "params": t.params}).params == t.params


def test_canonical_form_round_trips_with_cache_and_secrets() -> None:
    wf = from_obj({"tasks": [{**SHELL, "cache": False, "env": {"K": {"secret": "S"}}},
                             {"name": "c", "image": "x/y:1", "depends": ["r"]}]}, CATALOG)
    doc = wf.to_json()
    assert doc["tasks"][0]["cache"] is False and "cache" not in doc["tasks"][1]
    assert from_obj(doc, CATALOG) == wf == workflow_from_json(json.loads(json.dumps(doc)))
    assert kinds.KIND_TASKS["shell"].needs_input is False


def test_a_kind_task_keeps_its_requires() -> None:
    """`requires` is placement for any kind (it was dropped from shell/container/api tasks)."""
    wf = from_obj({"tasks": [{**SHELL, "requires": {"labels": {"site": "lab2"}, "mem_mb": 500}},
                             {"name": "c", "image": "x/y:1", "requires": {"gpu": True}}]},
                  CATALOG)
    assert dict(wf.tasks[0].requires) == {"labels": {"site": "lab2"}, "mem_mb": 500}
    assert dict(wf.tasks[1].requires) == {"gpu": True}
    doc = json.loads(json.dumps(wf.to_json()))
    assert doc["tasks"][0]["requires"]["mem_mb"] == 500
    assert workflow_from_json(doc) == wf
    with pytest.raises(SpecError) as e:
        from_obj({"tasks": [{**SHELL, "requires": {"ram": 1}}]}, CATALOG)
    assert e.value.field == "tasks[0].requires.ram"


def test_yaml_works_too() -> None:
    wf = parse("tasks:\n  - name: r\n    shell: echo hi > {out}/x\n    env: {A: b}\n", CATALOG)
    assert wf.tasks[0].params["env"] == {"A": "b"}


def test_cache_key_covers_command_env_and_input_but_only_secret_names() -> None:
    d = kinds.KIND_TASKS["shell"]
    base = one({**SHELL, "env": {"K": {"secret": "S"}}}).params
    keys = {cache_key(d, base, "bafyin"), cache_key(d, base, "bafyother"),
            cache_key(d, {**base, "shell": "true"}, "bafyin"),
            cache_key(d, {**base, "env": {"K": "v"}}, "bafyin")}
    assert len(keys) == 4
    assert cache_key(d, base, "bafyin") == cache_key(d, dict(base), "bafyin")


@pytest.mark.parametrize(("task", "field", "words"), [
    ({"name": "x", "kind": "kube", "shell": "true"}, "tasks[0].kind", "unknown kind 'kube'"),
    ({"name": "x", "kind": 3}, "tasks[0].kind", "must be a string"),
    ({"name": "x", "kind": "shell"}, "tasks[0].shell", "missing shell"),
    ({"name": "x", "kind": "shell", "shell": "  "}, "tasks[0].shell", "must not be empty"),
    ({"name": "x", "kind": "container"}, "tasks[0].image", "missing image"),
    ({"name": "x", "kind": "api"}, "tasks[0].url", "missing url"),
    ({"name": "x", "kind": "api", "url": "file:///etc/passwd"}, "tasks[0].url", "http://"),
    ({"name": "x", "image": "Bad Image!"}, "tasks[0].image", "not an image reference"),
    ({"name": "x", "image": "a/b", "command": [1]}, "tasks[0].command", "list of strings"),
    ({"name": "x", "image": "a/b", "mem_mb": -1}, "tasks[0].mem_mb", "positive integer"),
    ({"name": "x", "image": "a/b", "network": "yes"}, "tasks[0].network", "true or false"),
    ({"name": "x", "shell": "true", "image": "a/b"}, "tasks[0].image", "a shell task takes no"),
    ({"name": "x", "shell": "true", "env": {"1A": "x"}}, "tasks[0].env.1A", "bad variable"),
    ({"name": "x", "shell": "true", "env": {"A": 1}}, "tasks[0].env.A", "must be a string"),
    ({"name": "x", "shell": "true", "env": {"A": {"secret": "a b"}}}, "tasks[0].env.A",
     '{"secret": "NAME"}'),
    ({"name": "x", "shell": "true", "params": {"shell": "false"}}, "tasks[0].params.shell",
     "given twice"),
    ({"name": "x", "shell": "true", "args": [1]}, "tasks[0].args", "no positional args"),
    ({"name": "x", "shell": "true", "call": "ECHO"}, "tasks[0].call", "has no call"),
    ({"name": "x", "shell": "true", "cache": "no"}, "tasks[0].cache", "true or false"),
    ({"name": "x", "call": "ECHO", "env": {}}, "tasks[0].env", "a python task takes no env"),
    ({"name": "x", "cid": "bafkqaaa", "shell": "true"}, "tasks[0].shell", "a cid source"),
])
def test_bad_kind_tasks_name_their_field(task: dict[str, Any], field: str, words: str) -> None:
    with pytest.raises(SpecError) as err:
        one(task)
    assert err.value.field == field
    assert words in err.value.message and err.value.message.startswith(field), err.value.message


# -- container images, limits and what a work order carries --------------------------------
A = "sha256:" + "a" * 64
B = "sha256:" + "b" * 64


def test_a_tag_resolves_to_the_one_digest_peers_hold() -> None:
    from peer.jobs.kind_container import resolve
    holders = {"p1": {"localhost/busybox:test": A}, "p2": {"localhost/busybox:test": A},
               "p3": {}}
    assert resolve("localhost/busybox:test", holders) == f"localhost/busybox:test@{A}"
    assert resolve("busybox:test", holders) == f"busybox:test@{A}"  # localhost/ is implied
    assert resolve(f"x/y@{A}", holders) == f"x/y@{A}"  # a digest is kept as named


@pytest.mark.parametrize(("image", "holders", "words"), [
    ("localhost/nope:1", {"p1": {"localhost/busybox:test": A}}, "held by no peer"),
    (f"x/y@{B}", {"p1": {"localhost/busybox:test": A}}, "no peer holds an image of this"),
    ("localhost/busybox:test", {"p1": {"localhost/busybox:test": A},
                                "p2": {"localhost/busybox:test": B}},
     "different digests on different peers"),
])
def test_bad_images_name_the_problem(image: str, holders: Any, words: str) -> None:
    from peer.jobs.kind_container import ImageMissing, resolve
    with pytest.raises(ImageMissing) as err:
        resolve(image, holders)
    assert words in err.value.message
    if "different" in words:
        assert "p1" in err.value.message and "p2" in err.value.message


def test_resolve_images_names_the_task_field() -> None:
    from peer.jobs.spec import resolve_images
    wf = from_obj({"tasks": [SHELL, {"name": "c", "image": "localhost/nope:1"}]}, CATALOG)
    with pytest.raises(SpecError) as err:
        resolve_images(wf, {"p1": {}})
    assert err.value.field == "tasks[1].image"


def test_network_only_when_asked_and_allowed_and_memory_capped() -> None:
    from peer.jobs.kind_container import _limits
    p = one({"name": "c", "image": "a/b", "network": True, "mem_mb": 4096}).params
    assert _limits(p, {"allow_network": False, "mem_mb": 1000})[:2] == ["--network", "none"]
    assert _limits(p, {"allow_network": True})[1] != "none"
    assert "1000m" in _limits(p, {"mem_mb": 1000})  # the task asks more than the peer allows
    assert _limits({**p, "network": False}, {"allow_network": True})[:2] == ["--network",
                                                                               "none"]


def test_a_work_order_carries_only_the_secrets_its_task_names() -> None:
    peer = kinds.peer_settings(log_max_bytes=4096, secrets={"A": "1", "B": "2"},
                               runtime="podman", network=False, images={"x": A})
    p = one({**SHELL, "env": {"K": {"secret": "A"}, "L": "plain"}}).params
    got = kinds.work_settings(kinds.KIND_TASKS["shell"], p, peer, "j/t/0/1")
    assert got["secrets"] == {"A": "1"} and got["run"] == "j/t/0/1" and "images" not in got
    assert kinds.work_settings(TaskDef(name="P", version="1", fn=print, args=()), p,
                               peer) == {}


@pytest.mark.parametrize("stdout", [
    json.dumps([{"Id": "a" * 64, "Names": ["localhost/busybox:test"]},
                {"Id": "b" * 64, "Names": None}]),  # podman: a list
    json.dumps({"ID": "sha256:" + "a" * 64, "Repository": "localhost/busybox", "Tag": "test"})
    + "\n" + json.dumps({"ID": "sha256:" + "b" * 64, "Repository": "<none>", "Tag": "<none>"}),
])
def test_images_reads_podman_and_docker_listings(stdout: str,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import subprocess

    from peer.jobs import kind_container
    monkeypatch.setattr(kind_container, "_cli", lambda runtime, *args: subprocess.
                        CompletedProcess(args, 0, stdout, ""))
    assert kind_container.images("x") == {"localhost/busybox:test": A}
