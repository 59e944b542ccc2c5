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

import contextlib
import errno
import logging
import os
import secrets
import stat
from pathlib import Path
from typing import BinaryIO, Literal

from peer.errors import DataError

log = logging.getLogger(__name__)

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


def read_file(path: Path, what: str, max_bytes: int) -> bytes:
    """The bytes of the regular file `path` (`what` it is), opened as `open_file` does (never
    through a symlink, never waiting on a FIFO: DataError naming it), at most `max_bytes` + 1
    of them: more than `max_bytes` says the file is over the caller's bound, which it need
    not read whole. The read allocates the file's size + 1 up to the bound, not the bound
    (a small file, a block of a few bytes, costs its size). FileNotFoundError if absent,
    OSError if it cannot be read."""
    with open_file(path, what) as f:
        size = os.fstat(f.fileno()).st_size  # (read(n) allocates n first)
        return f.read(min(size, max_bytes) + 1)


def remove(path: Path) -> None:
    """Remove the entry `path` (nothing if absent) and never what a symlink points to: a
    symlink is removed itself, a directory with what it holds (`remove_tree`: of any depth,
    following no link in it; what cannot be removed is left, logged). OSError if a file
    cannot be removed."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):  # (a symlink put here meanwhile is removed itself)
        remove_tree(path, ignore_errors=True)
    else:
        os.unlink(path)


def open_real_dir(directory: str | Path, what: str) -> int:
    """A descriptor of the directory `directory` (`what` it is), opened never through a
    symlink at it (one the peer deletes or moves entries in, so `check_entry`'s `real`):
    DataError naming it if it is one or not a directory; OSError if it cannot be opened
    (FileNotFoundError: it is absent). The caller closes it."""
    try:
        return os.open(directory, DIR_NOFOLLOW)
    except OSError as e:
        if e.errno in (errno.ENOTDIR, errno.ELOOP):  # (a symlink: ENOTDIR with O_DIRECTORY)
            check_entry(Path(directory), "directory", what, real=True)
        raise  # (a directory again meanwhile, or absent: not ours to say more)


def unlink_in(directory: str | Path, name: str, what: str) -> None:
    """Remove the entry `name` (not a directory) of `directory`, never through a symlink at
    `directory` (`open_real_dir`): DataError naming it if it is one or not a directory;
    OSError if `name` cannot be removed (FileNotFoundError: it is gone)."""
    fd = open_real_dir(directory, what)
    try:
        os.unlink(name, dir_fd=fd)
    finally:
        os.close(fd)

# -- removing a tree of hostile entries (what a run left) ------------------------------------

def remove_tree(path: Path | str, *, ignore_errors: bool = False) -> None:
    """Remove `path` and everything under it, as `empty` does (a symlink or file at `path` is
    removed itself; nothing if it is absent), then the directory. Raises the first OSError
    once all else that could be was removed, or with `ignore_errors` logs it (one line
    naming `path`)."""
    try:
        empty(path)
        with contextlib.suppress(FileNotFoundError):  # (none if `path` was no directory)
            os.rmdir(path)
    except FileNotFoundError:  # (a directory being walked was removed by another: gone)
        return
    except OSError as e:
        if not ignore_errors:
            raise
        log.warning("cannot remove %s: %s", path, e)


def empty(path: Path | str) -> None:
    """Remove everything under the directory `path`, leaving it. A symlink at `path` is
    removed itself, never followed (a task could point it at a directory the worker may
    write), and so is a file; nothing if it is absent. Iterative and by descriptors: a tree
    of any depth (no recursion; a few descriptors open at a time), nothing under it reached
    through a symlink, a directory a task made unreadable or unwritable (mode 0) made the
    owner's again first. Raises the first OSError once all else that could be was removed."""
    top = _open_or_unlink(path)
    if top is not None:
        try:
            _clear(top)
        finally:
            os.close(top)


def _open_or_unlink(path: Path | str) -> int | None:
    """A descriptor of the directory `path`; None once what is at `path` is removed if it is
    not a directory (a symlink: never followed) or absent."""
    try:
        return _open_dir(path)
    except FileNotFoundError:
        return None
    except NotADirectoryError:  # O_DIRECTORY|O_NOFOLLOW: a file, or a symlink to a directory
        pass
    except OSError as e:
        if e.errno != errno.ELOOP:  # (ELOOP: a symlink to something else)
            raise
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    return None


def _open_dir(name: Path | str, dir_fd: int | None = None) -> int:
    """A descriptor of the directory `name` (in `dir_fd`), never through a symlink; if its
    mode keeps its owner out (a task's chmod 0), made the owner's (rwx) first."""
    try:
        fd = os.open(name, DIR_NOFOLLOW, dir_fd=dir_fd)
    except PermissionError:
        try:  # (follow_symlinks=False: a symlink put there meanwhile is refused, not chmodded)
            os.chmod(name, stat.S_IRWXU, dir_fd=dir_fd, follow_symlinks=False)
        except (ValueError, NotImplementedError):  # (a symlink: Linux has no lchmod)
            raise NotADirectoryError(f"not a directory: {name}") from None
        fd = os.open(name, DIR_NOFOLLOW, dir_fd=dir_fd)
    try:
        mode = os.fstat(fd).st_mode
        if mode & stat.S_IRWXU != stat.S_IRWXU:  # (entries are unlinked by name: w and x)
            os.fchmod(fd, stat.S_IMODE(mode) | stat.S_IRWXU)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _clear(top: int) -> None:
    """Remove everything under the directory open as `top` (left open), depth first without
    recursion: a directory is entered by a descriptor opened from its parent's (O_NOFOLLOW),
    its parent's closed meanwhile; once empty it is left through "..", checked to be the
    directory entered from (else the tree was moved meanwhile: OSError), and removed. Held
    per level: the names of the subdirectories still to remove. Raises the first OSError
    once all else that could be was removed."""
    first: OSError | None = None
    fd = top
    names, first = _unlink_files(fd, first)
    # per level above `fd`: its (st_dev, st_ino), its subdirectories left, the one entered
    above: list[tuple[tuple[int, int], list[str], str]] = []
    try:
        while True:
            if names:
                name = names.pop()
                try:
                    child = _open_dir(name, fd)
                except FileNotFoundError:
                    continue
                except OSError as e:
                    first = first or e
                    continue
                st = os.fstat(fd)
                above.append(((st.st_dev, st.st_ino), names, name))
                if fd != top:
                    os.close(fd)
                fd = child
                names, first = _unlink_files(fd, first)
                continue
            if not above:
                break
            ident, names, name = above.pop()
            parent = top if not above else os.open("..", DIR_NOFOLLOW, dir_fd=fd)
            st = os.fstat(parent)
            os.close(fd)
            fd = parent
            if (st.st_dev, st.st_ino) != ident:
                raise OSError(f"a directory was moved while it was being removed (at {name})")
            try:
                os.rmdir(name, dir_fd=fd)
            except FileNotFoundError:
                pass
            except OSError as e:
                first = first or e
    finally:
        if fd != top:
            os.close(fd)
    if first is not None:
        raise first


def _unlink_files(fd: int, first: OSError | None) -> tuple[list[str], OSError | None]:
    """Unlink every entry of the directory open as `fd` that is not a directory (a symlink:
    itself); the names of its subdirectories, and `first` or the first error met here."""
    subdirs: list[str] = []
    with os.scandir(fd) as it:
        for e in it:
            try:
                if e.is_dir(follow_symlinks=False):
                    subdirs.append(e.name)
                else:
                    os.unlink(e.name, dir_fd=fd)
            except FileNotFoundError:
                continue
            except OSError as err:
                first = first or err
    return subdirs, first


__all__ = ["DIR_NOFOLLOW", "TMP_DIR", "check_entry", "empty", "ensure_dir", "open_dir",
           "open_file", "open_new", "open_real_dir", "read_file", "remove", "remove_tree",
           "temp_file", "unlink_in"]
