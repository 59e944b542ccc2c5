"""peer.privfile: the one reader and writers of files only their owner may read, and the
three files that use them (the identity key, the mesh secret, the API token)."""

from __future__ import annotations

import errno
import logging
import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from peer.errors import ConfigError
from peer.http import tokens
from peer.log.signing import Identity
from peer.mesh.keyring import SECRET_FILE_NAME, SecretError, load_secrets
from peer.privfile import create_private, read_private, replace_private


def mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def refuse_chmod(monkeypatch: pytest.MonkeyPatch) -> None:
    """A read-only mount (a container's secret) or a file of another owner: every chmod
    fails, whichever call makes it."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(os, "chmod", refuse)
    monkeypatch.setattr(os, "fchmod", refuse)


def test_a_file_others_may_read_is_made_private_with_a_warning(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"abc")
    path.chmod(0o644)
    with caplog.at_level(logging.WARNING):
        assert read_private(path, "the thing", "they may hold it") == b"abc"
    assert mode(path) == 0o600
    assert (f"the thing {path} is readable by other users (mode 644): they may hold it; "
            "made it 600") in caplog.text


def test_a_private_file_is_read_without_a_warning(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "f"
    replace_private(path, b"x" * 10)
    with caplog.at_level(logging.WARNING):
        assert read_private(path, "f", "r", limit=4) == b"x" * 5  # limit + 1: too long shows
    assert caplog.text == ""


def test_writers_make_private_files_whole_and_leave_no_temporary(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    create_private(a, b"one")
    with pytest.raises(FileExistsError):
        create_private(a, b"two")  # never replaced
    replace_private(b, b"one")
    replace_private(b, b"two")
    assert (a.read_bytes(), b.read_bytes()) == (b"one", b"two")
    assert mode(a) == mode(b) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]


def _identity(d: Path) -> Callable[[], object]:
    return lambda: Identity.load(d / "identity.key").key


def _secret(d: Path) -> Callable[[], object]:
    return lambda: load_secrets(d).secrets


def _token(d: Path) -> Callable[[], object]:
    return lambda: tokens.load_or_create_token(d)


@pytest.mark.parametrize(("load", "name"), [(_identity, "identity.key"),
                                            (_secret, SECRET_FILE_NAME),
                                            (_token, tokens.TOKEN_FILE)])
def test_a_file_that_cannot_be_made_private_still_loads(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch,
        load: Callable[[Path], Callable[[], object]], name: str) -> None:
    """Before, only the identity key survived this: the mesh secret and the API token stopped
    the start with a traceback on a read-only mount with a 0644 file."""
    first = load(tmp_path)()
    (tmp_path / name).chmod(0o644)
    refuse_chmod(monkeypatch)
    with caplog.at_level(logging.WARNING):
        assert load(tmp_path)() == first
    assert "could not make it 600 (Read-only file system): do so by hand" in caplog.text


@pytest.mark.parametrize("raw", [b"", b"short\n", b"\xff" * 40, b"t" * 5000])
def test_a_token_file_that_is_not_a_token_is_an_error_naming_it(tmp_path: Path,
                                                                raw: bytes) -> None:
    path = tmp_path / tokens.TOKEN_FILE
    path.write_bytes(raw)
    with pytest.raises(ConfigError, match=f"{path}: not a token"):
        tokens.load_or_create_token(tmp_path)
    assert path.read_bytes() == raw  # left for the operator to delete


def test_a_write_that_fails_leaves_no_copy_behind(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    for write in (create_private, replace_private):
        with pytest.raises(OSError, match="No space"):
            write(tmp_path / "mesh.secret", b"s" * 32)
    assert list(tmp_path.iterdir()) == []


def test_a_file_only_its_owner_may_write_keeps_that(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"k")
    path.chmod(0o444)
    read_private(path, "f", "r")
    assert mode(path) == 0o400  # others' bits removed, the owner's not added


def test_a_secrets_file_too_long_is_refused_not_cut(tmp_path: Path) -> None:
    f = tmp_path / "secrets"
    f.write_bytes(b"s" * (2 << 20) + b"\n")
    with pytest.raises(SecretError, match=f"secret_file {f}: longer than"):
        load_secrets(tmp_path / "d", secret_file=f)


def test_two_first_starts_on_one_data_dir_keep_one_secret(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another process made the secret between our look and our write: its secret is the
    mesh's (before, the last writer's replaced it, so the two held different secrets)."""
    import peer.mesh.keyring as keyring

    theirs = b"t" * 43
    made = keyring.create_private

    def race(path: Path, data: bytes) -> None:
        made(path, theirs + b"\n")
        made(path, data)  # ours: FileExistsError

    monkeypatch.setattr(keyring, "create_private", race)
    got = load_secrets(tmp_path)
    assert got.secrets == (theirs,) and got.source == "data_dir"
    assert (tmp_path / SECRET_FILE_NAME).read_bytes() == theirs + b"\n"
