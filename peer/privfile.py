"""Files only their owner may read: the mesh secret, the API token, identity keys, Kubo's
swarm key, SWIM's incarnation mark. One reader and two writers, so that every such file is
treated alike: written whole or not at all and durably (a temporary file, fsynced, moved or
linked in place, the directory fsynced), mode 0600 from its creation, and a file other users
may read is made 0600 when read, with a warning. A chmod that fails (a read-only mount, such
as a container's secret, or a file of another owner) is warned about, not fatal: the file is
still the peer's."""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path

from peer.dataentry import check_entry

log = logging.getLogger(__name__)

SECURITY_DOC = "docs/security.md"


def read_private(path: Path, what: str, risk: str, limit: int = 1 << 20) -> bytes:
    """The bytes of `path` (at most `limit` + 1 of them, so that a caller can tell a file that
    is too long). A file other users may read is made 0600 and a warning names `what`, the
    mode and `risk` (what those users may have done with it). DataError naming `path` if it
    is not a regular file (a directory, a symlink to nothing), OSError if it cannot be read."""
    check_entry(path, "file", what)
    with path.open("rb") as f:
        mode = os.fstat(f.fileno()).st_mode & 0o777
        data = f.read(limit + 1)
        if mode & 0o077:
            try:
                os.fchmod(f.fileno(), mode & 0o700)
                done = f"made it {mode & 0o700:o}"
            except OSError as e:
                done = f"could not make it {mode & 0o700:o} ({e.strerror}): do so by hand"
            log.warning("%s %s is readable by other users (mode %o): %s; %s (%s)",
                        what, path, mode, risk, done, SECURITY_DOC)
    return data


def replace_private(path: Path, data: bytes) -> None:
    """`data` at `path` (mode 0600), replacing what was there in one step."""
    tmp = _temporary(path, data)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _sync_dir(path)


def create_private(path: Path, data: bytes) -> None:
    """`data` at a new file `path` (mode 0600), whole or not at all; FileExistsError if `path`
    exists (such a file, a key or a token, is never replaced). On a file system without hard
    links (vfat, some FUSE) it is written in place, which a crash can leave short."""
    tmp = _temporary(path, data)
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise
    except OSError:
        _write(path, data, os.O_EXCL)
    finally:
        tmp.unlink(missing_ok=True)
    _sync_dir(path)


def _sync_dir(path: Path) -> None:
    """The directory entry of `path` made durable (a rename or link is not, until then)."""
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _temporary(path: Path, data: bytes) -> Path:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        _write(tmp, data, os.O_EXCL)
    except BaseException:  # (a full disk): no copy of a secret is left behind
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def _write(path: Path, data: bytes, flag: int) -> None:
    """`data` in a file made at `path` (mode 0600; `flag`: O_EXCL or O_TRUNC), fsynced."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | flag, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


__all__ = ["create_private", "read_private", "replace_private"]
