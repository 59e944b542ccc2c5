"""The kind of an entry of the data dir (a directory, a regular file), checked where the
peer opens it: an entry of the wrong kind (a file where a directory belongs, a directory
where a file does, a symlink to nothing) refuses the start with a DataError naming it and
what to do, not a traceback from the first call that meets it. A symlink to an entry of the
right kind counts as that entry (a data dir or a store on another disk is an admin's
choice), except where the peer deletes what a directory holds (`real`): such a symlink is
refused, never followed. A spool made or read there is opened without following a symlink
(`open_new`, `open_file`), a sweep removes an entry by `remove` (a link goes itself), and a
file is removed from a directory the peer deletes in by `unlink_in` (never through a link
put at the directory)."""

from __future__ import annotations

import errno
import os
import secrets
import shutil
import stat
from pathlib import Path
from typing import BinaryIO, Literal

from peer.errors import DataError

Kind = Literal["directory", "file"]
DIR_NOFOLLOW = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC  # (a directory's
# descriptor, never through a symlink at its path: ELOOP or ENOTDIR if one is there)
TMP_DIR = "tmp"  # the data dir's temp dir (TMPDIR unless set, snapshot spools): swept at start

_FIX = ("something replaced it (or it was edited by hand): move it aside (keep it if it may "
        "hold something of value) and start the peer again")


def _found(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISREG(mode):
        return "a file"
    if stat.S_ISLNK(mode):
        return "a symlink"
    return "a special file (a FIFO, socket or device)"


def check_entry(path: Path, kind: Kind, what: str, *, real: bool = False) -> None:
    """Nothing if `path` is absent or is a `kind` ("file": a regular one), a symlink to one
    counting as one unless `real`; else DataError naming `path`, what it is and what to do."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return  # (the caller makes it, or reports it missing)
    except NotADirectoryError:  # a parent is a file
        st = None
    found = _found(st.st_mode) if st is not None else "under a file, not a directory"
    if st is not None and stat.S_ISLNK(st.st_mode) and not real:
        try:
            st = os.stat(path)
            found = f"a symlink to {_found(st.st_mode)}"
        except OSError as e:
            st = None
            found = f"a symlink to nothing usable ({e.strerror}: {os.readlink(path)!r})"
    if st is not None and _found(st.st_mode) == f"a {kind}":
        return
    if real and kind == "directory":
        fix = ("the peer deletes what it holds, so it must be a directory of its own here "
               "(to keep it on another disk, mount that disk here: a bind mount, not a "
               "symlink): ")
    else:
        fix = ""
    raise _refused(path, what, f"is {found}, not a {kind}: {fix}")


def _refused(path: Path, what: str, wrong: str) -> DataError:
    return DataError(f"{path} ({what}) {wrong}{_FIX}", field=path.name)


def ensure_dir(path: Path, what: str, *, real: bool = False, mode: int = 0o777) -> Path:
    """`path`, a directory made (with its parents, `mode`) if absent; DataError as
    `check_entry` says if it is something else, OSError if it cannot be made."""
    check_entry(path, "directory", what, real=real)
    path.mkdir(mode=mode, parents=True, exist_ok=True)
    return path


def open_new(path: Path, what: str, dir_fd: int | None = None) -> BinaryIO:
    """A new file `path` (mode 0o600) open to write; never one that exists, nor through a
    symlink put there (DataError naming it and what is there); OSError if it cannot be
    made. `dir_fd`: a descriptor of its directory (`open_dir`), where it is made whatever
    is put at the directory's path meanwhile."""
    name = path if dir_fd is None else path.name
    try:
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600, dir_fd=dir_fd)
    except FileExistsError:
        try:
            found = _found(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
        except OSError:
            found = "something"
        raise _refused(path, what, f"is {found} already, where the peer makes a new file: "
                       ) from None
    return os.fdopen(fd, "wb")


def open_dir(path: Path, what: str, mode: int = 0o700) -> int:
    """A descriptor of the directory `path` of the peer's own (made, `mode`, if absent),
    opened without following a symlink: files made in it by the descriptor (`temp_file`)
    are made there whatever is put at `path` after its check (no check-then-use race).
    DataError naming it if it is anything else (a symlink, put there even after the check);
    OSError if it cannot be made or opened. The caller closes it."""
    ensure_dir(path, what, real=True, mode=mode)
    try:
        return os.open(path, DIR_NOFOLLOW)
    except OSError as e:
        if e.errno not in (errno.ELOOP, errno.ENOTDIR):
            raise
        check_entry(path, "directory", what, real=True)  # (names what is there now)
        raise _refused(path, what, "was replaced while the peer opened it: ") from None


def temp_file(dir_fd: int) -> BinaryIO:
    """A new unnamed file (mode 0o600) open to read and write in the directory `dir_fd`
    (`open_dir`): made O_EXCL under a random name, never through a symlink, and unlinked at
    once; OSError if it cannot be made."""
    for _ in range(100):  # (a name taken already: another random one, as mkstemp does)
        name = f".tmp-{os.getpid()}-{secrets.token_hex(8)}"
        try:
            fd = os.open(name, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                         | os.O_CLOEXEC, 0o600, dir_fd=dir_fd)
        except FileExistsError:
            continue
        try:
            os.unlink(name, dir_fd=dir_fd)
            return os.fdopen(fd, "w+b")
        except BaseException:
            os.close(fd)
            raise
    raise FileExistsError(errno.EEXIST, "no free name for a temp file")


def open_file(path: Path, what: str, dir_fd: int | None = None) -> BinaryIO:
    """The regular file `path` open to read, never through a symlink: DataError naming it
    if it is anything else (a symlink, a directory, a FIFO); FileNotFoundError if it is
    absent, OSError if it cannot be read. `dir_fd`: a descriptor of its directory
    (`open_dir`), where it is read whatever is put at the directory's path meanwhile."""
    try:  # (O_NONBLOCK: a FIFO does not block the open; a file's reads do not care)
        fd = os.open(path if dir_fd is None else path.name,
                     os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=dir_fd)
    except OSError as e:
        if e.errno != errno.ELOOP:
            raise
        raise _refused(path, what, "is a symlink, not a file: ") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise _refused(path, what, f"is {_found(mode)}, not a file: ")
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "rb")


def remove(path: Path) -> None:
    """Remove the entry `path` (nothing if absent) and never what a symlink points to: a
    symlink is removed itself, a directory with what it holds (shutil.rmtree's walk by
    descriptors follows no link in it; what cannot be removed is left). OSError if a file
    cannot be removed."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):  # (rmtree refuses a symlink put here meanwhile)
        shutil.rmtree(path, ignore_errors=True)
    else:
        os.unlink(path)


def unlink_in(directory: str | Path, name: str, what: str) -> None:
    """Remove the entry `name` (not a directory) of `directory`, never through a symlink at
    `directory` (`what` it is: one the peer deletes in, so `check_entry`'s `real`): DataError
    naming it if it is one or not a directory; OSError if `name` cannot be removed
    (FileNotFoundError: it is gone)."""
    try:
        fd = os.open(directory, DIR_NOFOLLOW)
    except OSError as e:
        if e.errno in (errno.ENOTDIR, errno.ELOOP):  # (a symlink: ENOTDIR with O_DIRECTORY)
            check_entry(Path(directory), "directory", what, real=True)
        raise  # (a directory again meanwhile, or absent: not ours to say more)
    try:
        os.unlink(name, dir_fd=fd)
    finally:
        os.close(fd)


__all__ = ["DIR_NOFOLLOW", "TMP_DIR", "check_entry", "ensure_dir", "open_dir", "open_file",
           "open_new", "remove", "temp_file", "unlink_in"]
