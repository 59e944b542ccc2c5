"""The `snapshot_pending` rows are read back as hostile (a data-dir fuzz review, session 32):
a row naming a file outside the data dir's snapshots/ must never make the peer read or
delete it, and a wrong-typed row must not end the compaction loop nor /api/health."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from peer.cids import sha256_cid
from peer.config import PeerConfig
from peer.log.jobindex import SPOOL_DIR, JobIndex, spool_name
from peer.log.snapframe import row_frames
from peer.node import Node

NAME = spool_name(bytes(range(16)))


def _index(tmp_path: Path) -> JobIndex:
    spool = tmp_path / SPOOL_DIR
    spool.mkdir(exist_ok=True)
    return JobIndex(sqlite3.connect(":memory:", isolation_level=None), spool)


def _rows(index: JobIndex) -> list[tuple[object, ...]]:
    return index._db.execute("SELECT path, at, signer FROM snapshot_pending").fetchall()


def _insert(index: JobIndex, *row: object) -> None:
    index._db.execute("INSERT INTO snapshot_pending VALUES (?, ?, ?)", row)


@pytest.mark.parametrize("path", ["victim", "../victim", "/{tmp}/victim", f"/{{tmp}}/{NAME}",
                                  f"{{tmp}}/{SPOOL_DIR}/../{NAME}", "", None, b"blob", 7])
def test_a_row_naming_a_file_outside_the_spool_dir_is_deleted_and_the_file_kept(
        tmp_path: Path, path: object, caplog: pytest.LogCaptureFixture) -> None:
    index = _index(tmp_path)
    for name in ("victim", NAME):
        (tmp_path / name).write_bytes(b"precious")
    if isinstance(path, str):
        path = path.replace("/{tmp}", str(tmp_path)).replace("{tmp}", str(tmp_path))
    _insert(index, path, 0, "signer")
    with caplog.at_level(logging.WARNING):
        assert index.snapshots_pending() == []
    assert _rows(index) == []
    assert (tmp_path / "victim").read_bytes() == (tmp_path / NAME).read_bytes() == b"precious"
    (msg,) = [r.getMessage() for r in caplog.records]
    assert "snapshot_pending row 1" in msg
    assert index.snapshots_pending() == []  # (said once)


def test_a_symlink_in_the_spool_dir_is_not_followed(tmp_path: Path) -> None:
    index = _index(tmp_path)
    (tmp_path / "victim").write_bytes(b"precious")
    (tmp_path / SPOOL_DIR / NAME).symlink_to(tmp_path / "victim")
    _insert(index, NAME, 0, "signer")
    assert index.snapshots_pending() == [] and _rows(index) == []
    assert (tmp_path / "victim").read_bytes() == b"precious"


@pytest.mark.parametrize("row", [(NAME, "x", "signer"), (NAME, -1, "signer"),
                                 (NAME, 1.5, "signer"), (NAME, 0, b"blob"),
                                 (NAME, 0, ""), (NAME, 0, "s" * 300), (None, 0, "signer")])
def test_a_wrong_typed_row_is_deleted(tmp_path: Path, row: tuple[object, ...]) -> None:
    index = _index(tmp_path)
    _insert(index, *row)
    assert index.snapshots_pending() == [] and _rows(index) == []


def test_a_row_of_an_earlier_release_inside_the_spool_dir_is_kept_under_its_name(
        tmp_path: Path) -> None:
    index = _index(tmp_path)
    spool = tmp_path / SPOOL_DIR / NAME
    spool.write_bytes(b"")
    _insert(index, str(spool), 5, "signer")  # (as releases before session 32 wrote it)
    assert index.snapshots_pending() == [(str(spool), 5, "signer")]
    assert _rows(index) == [(NAME, 5, "signer")]
    index.put_rows([], str(spool), None)
    assert _rows(index) == []


def test_the_index_stores_a_spool_by_its_name_and_refuses_another_place(tmp_path: Path) -> None:
    index = _index(tmp_path)
    index.spooled(str(tmp_path / SPOOL_DIR / NAME), "signer", "owed")
    assert _rows(index) == [(NAME, 0, "signer")]
    with pytest.raises(ValueError):
        index.spooled(str(tmp_path / NAME), "signer", "owed")


def test_a_hostile_row_neither_deletes_a_file_nor_breaks_health_nor_the_loop(
        tmp_path: Path, opened: list[Node]) -> None:
    n = Node(PeerConfig(data_dir=tmp_path / "d", slots=1, mdns=False))
    opened.append(n)
    victim = tmp_path / NAME  # (a spool file's name, outside snapshots/)
    victim.write_bytes(b"".join(row_frames([("p", [("bafyx", "peerA")])])))
    n.index._db.execute("INSERT INTO snapshot_pending VALUES (?, 0, 'signer')", (str(victim),))
    n.index._db.execute("INSERT INTO snapshot_pending VALUES ('x', 'x', x'00')")
    assert n.log_health()["compaction"]["snapshots_pending"] == 0
    while n.compactor.ingest():
        pass
    assert victim.exists() and not _rows(n.index)
    n.index._db.execute("INSERT INTO snapshot_pending VALUES (NULL, 'x', x'00')")
    n.index._db.execute("INSERT INTO snapshot_pending VALUES (?, 0, 'signer')", (str(victim),))
    n.cfg.data_dir.joinpath(SPOOL_DIR).mkdir(exist_ok=True)

    async def first_turns() -> None:  # the loop's first steps: its sweep of snapshots/
        n.catchup.start()
        for _ in range(5):
            await asyncio.sleep(0)
        assert all(not t.done() for t in n.catchup._bg)  # (the loop did not end)
        await n.catchup.close()

    asyncio.run(first_turns())
    assert victim.exists() and not _rows(n.index)
    assert os.listdir(n.cfg.data_dir / SPOOL_DIR) == []


def test_the_sweep_does_not_delete_through_a_linked_spool_dir(
        tmp_path: Path, opened: list[Node]) -> None:
    """snapshots/ a symbolic link elsewhere: the start's sweep of unlisted spool files
    would delete files of that name in the link's target (helper-176's review)."""
    n = Node(PeerConfig(data_dir=tmp_path / "d", slots=1, mdns=False))
    opened.append(n)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / NAME).write_bytes(b"not ours")
    spool = n.cfg.data_dir / SPOOL_DIR
    if spool.exists():
        spool.rmdir()
    spool.symlink_to(elsewhere)

    async def first_turns() -> None:
        n.catchup.start()
        for _ in range(5):
            await asyncio.sleep(0)
        await n.catchup.close()

    asyncio.run(first_turns())
    assert (elsewhere / NAME).read_bytes() == b"not ours"


def test_a_row_of_an_earlier_release_in_a_data_dir_since_moved_is_kept_under_its_name(
        tmp_path: Path) -> None:
    """Its path names the data dir's old place: the spool file is in ours, by that name
    (helper-176's review: the row was deleted, then the start's sweep removed the file)."""
    index = _index(tmp_path)
    (tmp_path / SPOOL_DIR / NAME).write_bytes(b"")
    _insert(index, f"/elsewhere/old/{SPOOL_DIR}/{NAME}", 5, "signer")
    assert index.snapshots_pending() == [(str(tmp_path / SPOOL_DIR / NAME), 5, "signer")]
    assert _rows(index) == [(NAME, 5, "signer")]


@pytest.mark.parametrize("err", [errno.EACCES, errno.EIO])
def test_a_spool_file_that_cannot_be_examined_keeps_its_row_and_is_logged_once(
        tmp_path: Path, err: int, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """Only a spool file known to be absent (taken as lost when read) or of the wrong kind
    drops its row: a transient lstat error (EACCES, EIO) deleted it, and its rows with it."""
    index = _index(tmp_path)
    spool = tmp_path / SPOOL_DIR / NAME
    spool.write_bytes(b"")
    _insert(index, NAME, 5, "signer")
    real = os.lstat

    def lstat(path: Any, *args: Any, **kwargs: Any) -> os.stat_result:
        if Path(path) == spool:
            raise OSError(err, os.strerror(err), str(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(os, "lstat", lstat)
    with caplog.at_level(logging.WARNING):
        for _ in range(2):
            assert index.snapshots_pending() == [(str(spool), 5, "signer")]
    assert _rows(index) == [(NAME, 5, "signer")]
    (msg,) = [r.getMessage() for r in caplog.records]  # (once)
    assert f"the spool file {spool} cannot be examined" in msg and os.strerror(err) in msg
    assert "row is kept" in msg


CID = str(sha256_cid(b"spooled", "raw", 1))
FRAMES = b"".join(row_frames([("p", [(CID, "peerA")])]))  # a spool's provider row


def _pending_node(tmp_path: Path, opened: list[Node]) -> tuple[Node, Path]:
    """A node with one pending spool of FRAMES (its rows not taken yet)."""
    n = Node(PeerConfig(data_dir=tmp_path / "d", slots=1, mdns=False))
    opened.append(n)
    path = n.cfg.data_dir / SPOOL_DIR / NAME
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(FRAMES)
    n.index._db.execute("INSERT INTO snapshot_pending VALUES (?, 0, 'signer')", (NAME,))
    return n, path


def test_a_spool_in_a_spool_dir_made_a_symlink_is_neither_read_nor_removed_there(
        tmp_path: Path, opened: list[Node], caplog: pytest.LogCaptureFixture) -> None:
    """snapshots/ replaced by a symbolic link elsewhere after the spool moved in (checked a
    directory of its own then): the ingest read the spool by its path, through the link,
    taking the rows of its target's file of that name (not a checked snapshot's); only its
    removal was refused. Now the read is refused too, with a warning naming snapshots/:
    its rows are left out (`snapshot_lost`), the file there left alone."""
    n, path = _pending_node(tmp_path, opened)
    elsewhere = tmp_path / "elsewhere"
    path.parent.rename(elsewhere)
    path.parent.symlink_to(elsewhere)
    with caplog.at_level(logging.WARNING):
        assert not n.compactor.ingest()
    assert list(n.index.providers()) == [] and _rows(n.index) == []
    assert n.keyring.refused.by_origin["signer"]["snapshot_lost"] == 1
    assert (elsewhere / NAME).read_bytes() == FRAMES and path.parent.is_symlink()
    assert (f"the rest of the snapshot of signer is left out: {path.parent} (the dir of "
            "snapshots being taken) is a symlink, not a directory") in caplog.text


@pytest.mark.parametrize("kind", ["symlink", "directory"])
def test_a_spool_replaced_after_its_check_is_neither_read_through_nor_removed(
        tmp_path: Path, opened: list[Node], kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The ingest opens a spool O_NOFOLLOW and reads only a regular file: a symlink put
    there after `snapshots_pending` checked it was read through (its target's rows taken),
    a directory raised out of the ingest when it was to be removed."""
    n, path = _pending_node(tmp_path, opened)
    pending = n.index.snapshots_pending()  # (checked: a regular file)
    canary = tmp_path / "canary"
    canary.mkdir()
    (canary / NAME).write_bytes(FRAMES)
    path.unlink()
    if kind == "symlink":
        path.symlink_to(canary / NAME)
    else:
        path.mkdir()
    monkeypatch.setattr(n.index, "snapshots_pending", lambda: pending)  # (as checked)
    assert not n.compactor.ingest()
    assert list(n.index.providers()) == [] and _rows(n.index) == []
    assert n.keyring.refused.by_origin["signer"]["snapshot_lost"] == 1
    assert (path.is_symlink() if kind == "symlink" else path.is_dir())  # (left alone)
    assert (canary / NAME).read_bytes() == FRAMES


def test_a_spool_that_cannot_be_read_now_keeps_its_rows_pending(
        tmp_path: Path, opened: list[Node], monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """A transient error opening a pending spool (EIO) dropped its row and deleted it: its
    rows wait now (one warning), and are taken once it can be read."""
    n, path = _pending_node(tmp_path, opened)
    real = os.open

    def fake_open(p: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if Path(p) == path or (kwargs.get("dir_fd") is not None and p == path.name):
            raise OSError(errno.EIO, os.strerror(errno.EIO), str(p))
        return real(p, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", fake_open)
    with caplog.at_level(logging.WARNING):
        assert not n.compactor.ingest() and not n.compactor.ingest()
    assert _rows(n.index) == [(NAME, 0, "signer")] and path.read_bytes() == FRAMES
    (msg,) = [r.getMessage() for r in caplog.records if "cannot be read" in r.getMessage()]
    assert str(path) in msg and "Input/output error" in msg
    monkeypatch.undo()
    while n.compactor.ingest():
        pass
    assert list(n.index.providers()) == [(CID, "peerA")] and _rows(n.index) == []
    assert not path.exists() and "signer" not in n.keyring.refused.by_origin


def test_the_sweep_of_snapshots_removes_a_link_or_a_directory_not_the_loop(
        tmp_path: Path, opened: list[Node]) -> None:
    """An unlisted entry of snapshots/ named as a spool that is a directory ended the
    compaction loop at its start (IsADirectoryError); a symlink goes itself, not what it
    points to."""
    n = Node(PeerConfig(data_dir=tmp_path / "d", slots=1, mdns=False))
    opened.append(n)
    canary = tmp_path / "canary"
    canary.mkdir()
    (canary / NAME).write_bytes(b"not ours")
    spool = n.cfg.data_dir / SPOOL_DIR
    spool.mkdir(exist_ok=True)
    (spool / f"{'d' * 32}.frames").mkdir()
    (spool / f"{'d' * 32}.frames" / "x").write_bytes(b"")
    (spool / NAME).symlink_to(canary / NAME)

    async def first_turns() -> None:
        n.catchup.start()
        for _ in range(5):
            await asyncio.sleep(0)
        assert n.catchup._bg and all(not t.done() for t in n.catchup._bg)  # (running)
        await n.catchup.close()

    asyncio.run(first_turns())
    assert os.listdir(spool) == [] and (canary / NAME).read_bytes() == b"not ours"


def test_a_spool_that_stays_unreadable_holds_back_no_later_one(
        tmp_path: Path, opened: list[Node], monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """`ingest` read only the first pending spool: one that stayed unreadable (EACCES)
    held every later snapshot's rows back for good, and the loop's `_ingest` recorded
    `rows_indexed_after_take` though it took none. Now the next spool is read, the
    unreadable one stays pending (one warning), and the time is recorded only with rows."""
    n, path = _pending_node(tmp_path, opened)
    later = path.with_name(spool_name(bytes(range(1, 17))))
    cid = str(sha256_cid(b"later", "raw", 1))
    later.write_bytes(b"".join(row_frames([("p", [(cid, "peerB")])])))
    n.index._db.execute("INSERT INTO snapshot_pending VALUES (?, 0, 'later')", (later.name,))
    real = os.open

    def fake_open(p: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if Path(p) == path or (kwargs.get("dir_fd") is not None and p == path.name):
            raise OSError(errno.EACCES, os.strerror(errno.EACCES), str(p))
        return real(p, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", fake_open)
    with caplog.at_level(logging.WARNING):
        asyncio.run(n.catchup._ingest())
        assert "rows_indexed_after_take" in n.catchup.catch_up_s
        assert list(n.index.providers()) == [(cid, "peerB")] and not later.exists()
        del n.catchup.catch_up_s["rows_indexed_after_take"]
        asyncio.run(n.catchup._ingest())  # (only the unreadable one is left)
    assert "rows_indexed_after_take" not in n.catchup.catch_up_s
    assert _rows(n.index) == [(NAME, 0, "signer")] and path.read_bytes() == FRAMES
    (msg,) = [r.getMessage() for r in caplog.records if "cannot be read" in r.getMessage()]
    assert str(path) in msg
    monkeypatch.undo()
    while n.compactor.ingest():
        pass
    assert sorted(n.index.providers()) == sorted([(CID, "peerA"), (cid, "peerB")])
    assert _rows(n.index) == []
