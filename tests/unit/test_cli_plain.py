"""`banzai` prints what peers send as plain text (review r1 of session 49, F1): a job, task
or peer name or an error holding rich markup (`[/]`) or terminal escapes (OSC 0 title, OSC 52
clipboard, CSI cursor moves, OSC 8 links) neither crashes the CLI nor reaches the terminal
raw. A real Node (not started) whose log holds such strings, through its app (aiohttp's test
client, loopback only) and the CLI's commands; the bytes printed are read back."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from peer import cli
from peer.log import EventType
from peer.node import Node
from tests.unit.api_client import api_client
from tests.unit.test_compaction import _open

ESC = "\x1b"
NAME = f"nightly[/]{ESC}]0;owned{ESC}\\{ESC}]52;c;cm0gLXJmIH4K{ESC}\\{ESC}[1A{ESC}[2K"
ERROR = f"boom [/red] {ESC}[2J{ESC}]8;;http://evil.example/{ESC}\\click{ESC}]8;;{ESC}\\ :smile:"
PEER = f"victim-A{ESC}]0;owned\x07[link=http://evil.example/]x[/link]\u202e"


@pytest.fixture
def hostile(tmp_path: Path, opened: list[Node]) -> tuple[Node, str]:
    """A peer whose log holds a job named NAME whose task failed with ERROR, and whose own
    MEMBER names it PEER (any member may gossip such strings; the spec lets a user submit
    the name)."""
    n = _open(tmp_path / "a", opened)
    n.emit(EventType.MEMBER, {**n.capabilities(), "name": PEER, "http": PEER})
    job = "j0000000000a1"
    n.emit(EventType.JOB_SUBMITTED, {"job": job, "workflow": {"name": NAME, "tasks": [
        {"name": "t", "call": "ECHO", "params": {"text": "x"}}]}})
    split = n.emit(EventType.TASK_SPLIT, {"job": job, "task": "t", "input": None,
                                          "chunks": [[]]})
    base = {"job": job, "task": "t", "split": list(split.id), "chunk": 0, "attempt": 0}
    n.emit(EventType.CLAIM, base)
    n.emit(EventType.CHUNK_FAILED, {**base, "error": ERROR * 400, "kind": "error"})
    return n, job


def _wide(monkeypatch: pytest.MonkeyPatch) -> None:
    """Consoles wide enough that no cell is cut (a cut could split a sequence)."""
    for c in (cli.out, cli.console):
        monkeypatch.setattr(c, "_width", 2000)


def _printed(capsys: pytest.CaptureFixture[str]) -> str:
    got = capsys.readouterr()
    return got.out + got.err


async def test_status_and_peers_print_hostile_names_and_errors_as_plain_text(
        hostile: tuple[Node, str], capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """On 6c66b4c1: `banzai status` raised MarkupError ("closing tag '[/]'...") and `banzai
    peers` wrote ESC ] 0 ; owned raw. Now each command ends, its output holds no ESC, no
    BEL and no bidi override, the names are there with their escapes made visible, and the
    1.2 MB error is cut. (`submit --wait`'s watch of a job now ends, its names plain.)"""
    node, job = hostile
    _wide(monkeypatch)
    async with api_client(node) as c:
        client = cli.Client(str(c.make_url("")), c.session)
        assert await cli.cmd_status(client, argparse.Namespace(job=None)) == 0
        listing = _printed(capsys)
        assert await cli.cmd_status(client, argparse.Namespace(job=job)) == 1  # (failed)
        one = _printed(capsys)
        assert await cli.cmd_peers(client, argparse.Namespace()) == 0
        peers = _printed(capsys)
        view = await cli.watch(client, job)  # (`submit --wait`'s bars: the job has ended)
        cli.print_outputs(view, client.base)
        outputs = _printed(capsys)
    for shown in (listing, one, peers, outputs):
        assert ESC not in shown and "\x07" not in shown and "\u202e" not in shown
    assert "nightly[/]\\x1b]0;owned\\x1b\\" in listing
    assert "boom [/red] \\x1b[2J\\x1b]8;;http://evil.example/" in one
    assert "victim-A\\x1b]0;owned\\x07[link=http://evil.example/]x[/link]\\u202e" in peers
    assert "boom [/red]" in outputs and ":smile:" in outputs  # (no emoji code read either)
    assert "characters cut)" in outputs and len(outputs) < 3 * cli.SHOWN_CHARS


async def test_a_refused_submit_quoting_markup_gives_the_peers_message_and_exit_2(
        tmp_path: Path, opened: list[Node], capsys: pytest.CaptureFixture[str]) -> None:
    """On 6c66b4c1 a task named `a[/b]` (refused by the peer with a 400 naming the field)
    ended in a MarkupError traceback, exit 1: now the peer's message, plain, and exit 2."""
    node = _open(tmp_path / "a", opened)
    wf = tmp_path / "bad.json"
    wf.write_text(json.dumps({"name": "n", "tasks": [
        {"name": f"a[/b]{ESC}[2J", "call": "ECHO", "params": {"text": "x"}}]}))
    args = argparse.Namespace(file=str(wf), no_cache=False, wait=False, publish=None)
    async with api_client(node) as c:
        client = cli.Client(str(c.make_url("")), c.session)
        with pytest.raises(cli.CliError) as e:
            await cli.cmd_submit(client, args)
    assert e.value.code == 2
    cli.report(e.value)
    shown = _printed(capsys)
    assert shown.startswith("banzai: ") and "a[/b]\\x1b[2J" in shown and ESC not in shown
    assert "[at tasks[0].name]" in shown, shown
