"""A job view's published names (GET /api/jobs/{job} `published`): a pure function."""

from __future__ import annotations

from typing import Any

from peer.http.views import published_names

VIEW: dict[str, Any] = {"tasks": [{"name": "fetch", "output": "bafyA"},
                                  {"name": "learn", "output": "bafyB"},
                                  {"name": "report", "output": None}]}


def test_names_whose_value_is_an_output_or_below_it_in_task_order() -> None:
    held = {"k51z": "/ipfs/bafyB", "k51a": "/ipfs/bafyA/model.npz", "k51b": "/ipfs/bafyB/x",
            "k51other": "/ipfs/bafyC", "k51prefix": "/ipfs/bafyAA", "k51ipns": "/ipns/k51z"}
    assert published_names(VIEW, held) == [
        {"name": "k51a", "value": "/ipfs/bafyA/model.npz", "task": "fetch"},
        {"name": "k51b", "value": "/ipfs/bafyB/x", "task": "learn"},
        {"name": "k51z", "value": "/ipfs/bafyB", "task": "learn"},
    ]


def test_no_outputs_no_names() -> None:
    assert published_names({"tasks": [{"name": "t", "output": None}]},
                           {"k51z": "/ipfs/bafyA"}) == []
