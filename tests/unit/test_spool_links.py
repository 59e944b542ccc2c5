"""Catch-up's spools (peer.catchup) under the data dir's tmp/ are made O_EXCL, never through a
symlink: a symlink planted at a download's spool name after the start, or a tmp/ replaced by
one, is refused with a warning naming the path (the download is not made), where it was
followed (a file elsewhere truncated and written, spools written in a directory elsewhere);
so is a snapshots/ that is a symlink when a checked spool moves in.
What the links point to, a canary dir outside the data dir, stays untouched."""

from __future__ import annotations

import importlib
import itertools
import logging
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from peer.config import PeerConfig
from peer.errors import DataError
from peer.node import Node

catchup_mod = importlib.import_module("peer.catchup")
KEPT = b"another program's file\n"


@pytest.fixture
def canary(tmp_path: Path) -> Path:
    d = tmp_path / "canary"
    d.mkdir()
    (d / "kept").write_bytes(KEPT)
    return d


@pytest.fixture
async def url() -> AsyncIterator[str]:
    """A member that answers any snapshot request with a (malformed) stream."""
    async def snapshot(request: web.Request) -> web.Response:
        return web.Response(body=b"a snapshot stream\n", content_type="application/x-ndjson")

    app = web.Application()
    app.router.add_get("/api/snapshot", snapshot)
    async with TestServer(app, host="127.0.0.1") as server:
        yield str(server.make_url("")).rstrip("/")


def _node(tmp_path: Path, opened: list[Node], url: str,
          monkeypatch: pytest.MonkeyPatch) -> Node:
    n = Node(PeerConfig(data_dir=tmp_path / "peer", slots=1, mdns=False))
    opened.append(n)
    monkeypatch.setattr(n, "peer_urls", lambda: {"other": url})
    monkeypatch.setattr(n, "live_peers", lambda: {"other": {"http": url}})
    monkeypatch.setattr(catchup_mod, "_SPOOLS", itertools.count())  # the names: known
    return n


def _untouched(canary: Path) -> bool:
    return sorted(p.name for p in canary.iterdir()) == ["kept"] and (
        (canary / "kept").read_bytes() == KEPT)


def _serve_refused(n: Node, tmp: Path) -> None:
    """A snapshot served by `n` (its events spooled in tmp/) is refused, naming tmp/."""
    lines = n.catchup.snapshot_stream(3)
    try:
        with pytest.raises(DataError, match=f"{tmp} .*is a symlink, not a directory"):
            next(lines)
    finally:
        lines.close()


async def test_a_symlink_planted_at_a_download_spools_name_is_refused_not_followed(
        tmp_path: Path, opened: list[Node], canary: Path, url: str,
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    n = _node(tmp_path, opened, url, monkeypatch)
    tmp = tmp_path / "peer" / "tmp"
    tmp.mkdir(exist_ok=True)
    pid = os.getpid()
    planted = [tmp / f"snapshot-{pid}-0.rows", tmp / f"snapshot-rows-{pid}-1.frames"]
    for p in planted:
        p.symlink_to(canary / "kept")
    with caplog.at_level(logging.WARNING, logger="banzai.catchup"):
        await n.catchup._catch_up("other")
        assert not await n.catchup._rows_from(url, "other")
    assert "no snapshot from other: " in caplog.text and f"no snapshot rows from {url}: " in (
        caplog.text)
    for p in planted:
        assert f"{p} (a snapshot download's spool) is a symlink already" in caplog.text
    assert _untouched(canary)


async def test_a_temp_dir_made_a_symlink_after_the_start_is_refused_by_every_spool(
        tmp_path: Path, opened: list[Node], canary: Path, url: str,
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    n = _node(tmp_path, opened, url, monkeypatch)
    tmp = tmp_path / "peer" / "tmp"
    if tmp.is_dir():
        shutil.rmtree(tmp)
    tmp.symlink_to(canary)
    _serve_refused(n, tmp)
    with caplog.at_level(logging.WARNING, logger="banzai.catchup"):
        await n.catchup._catch_up("other")
    assert f"no snapshot from other: {tmp} (the peer's temp dir) is a symlink" in caplog.text
    assert _untouched(canary)


def test_a_snapshots_dir_that_is_a_symlink_is_refused_when_a_spool_moves_in(
        tmp_path: Path, opened: list[Node], canary: Path, url: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    n = _node(tmp_path, opened, url, monkeypatch)
    (tmp_path / "peer" / "snapshots").symlink_to(canary)  # (its files are deleted once taken)
    rows = tmp_path / "rows"
    rows.write_bytes(b"checked rows")
    trailer: Any = SimpleNamespace(content_digest=lambda: b"\x01" * 32)
    with pytest.raises(DataError, match=r"snapshots .*is a symlink, not a directory"):
        n.catchup._keep_spool(rows, trailer)
    assert _untouched(canary) and rows.read_bytes() == b"checked rows"


@pytest.mark.parametrize("planted", ["spool", "place"])
def test_a_spool_moving_in_is_not_followed_nor_put_over_a_directory(
        tmp_path: Path, opened: list[Node], canary: Path, url: str,
        monkeypatch: pytest.MonkeyPatch, planted: str) -> None:
    """The checked spool moved into snapshots/ by os.replace, then fsynced by its path: a
    symlink put at the spool was moved in and followed (a FIFO's open blocks the loop), a
    directory at its place raised IsADirectoryError. Each is a DataError naming the path
    now, nothing moved, what the link points to untouched."""
    n = _node(tmp_path, opened, url, monkeypatch)
    trailer: Any = SimpleNamespace(content_digest=lambda: b"\x01" * 32)
    rows = tmp_path / "rows"
    keep = tmp_path / "peer" / "snapshots"
    if planted == "spool":
        rows.symlink_to(canary / "kept")
        match = f"{rows} .*is a symlink, not a file"
    else:
        rows.write_bytes(b"checked rows")
        keep.mkdir()
        place = keep / catchup_mod.spool_name(b"\x01" * 32)
        place.mkdir()
        match = f"{place} .*is a directory, not a file"
    with pytest.raises(DataError, match=match):
        n.catchup._keep_spool(rows, trailer)
    assert _untouched(canary) and (rows.is_symlink() if planted == "spool" else (
        rows.read_bytes() == b"checked rows" and place.is_dir()))


async def test_a_temp_dir_made_a_symlink_right_after_its_check_is_refused_not_followed(
        tmp_path: Path, opened: list[Node], canary: Path, url: str,
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """tmp/ was checked (not a symlink), then opened again by its path to make a spool in
    it (`tempfile.TemporaryFile(dir=tmp)`, `open_new(tmp / name)`): a symlink put there in
    between was followed (a served snapshot's events spooled, a download's spool made, in a
    directory elsewhere). Now the spools are made by a descriptor of tmp/ opened without
    following a symlink: the swap is refused, naming tmp/."""
    n = _node(tmp_path, opened, url, monkeypatch)
    tmp = tmp_path / "peer" / "tmp"
    checks: list[Path] = []

    def swapped(check: Any) -> Any:
        def ensure(path: Path, *args: Any, **kw: Any) -> Any:
            out = check(path, *args, **kw)
            if path == tmp:  # the race: tmp/ replaced by a symlink just after its check
                checks.append(path)
                shutil.rmtree(tmp)
                tmp.symlink_to(canary)
            return out
        return ensure

    dataentry_mod = importlib.import_module("peer.dataentry")
    for mod in (catchup_mod, dataentry_mod):
        if hasattr(mod, "ensure_dir"):
            monkeypatch.setattr(mod, "ensure_dir", swapped(mod.ensure_dir))
    _serve_refused(n, tmp)
    tmp.unlink()
    with caplog.at_level(logging.WARNING, logger="banzai.catchup"):
        await n.catchup._catch_up("other")
    assert f"no snapshot from other: {tmp} (the peer's temp dir) is a symlink" in caplog.text
    assert len(checks) == 2 and _untouched(canary)
