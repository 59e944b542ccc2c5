"""The kind of an entry of the data dir (a directory, a regular file), checked where the
peer opens it: an entry of the wrong kind (a file where a directory belongs, a directory
where a file does, a symlink to nothing) refuses the start with a DataError naming it and
what to do, not a traceback from the first call that meets it. A symlink to an entry of the
right kind counts as that entry (a data dir or a store on another disk is an admin's
choice), except where the peer deletes what a directory holds (`real`): such a symlink is
refused, never followed."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path
from typing import Literal

from peer.errors import DataError

Kind = Literal["directory", "file"]
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
        fix = "the peer deletes what it holds, so it must be a directory of its own here: "
    else:
        fix = ""
    raise DataError(f"{path} ({what}) is {found}, not a {kind}: {fix}{_FIX}",
                    field=path.name)


def ensure_dir(path: Path, what: str, *, real: bool = False, mode: int = 0o777) -> Path:
    """`path`, a directory made (with its parents, `mode`) if absent; DataError as
    `check_entry` says if it is something else, OSError if it cannot be made."""
    check_entry(path, "directory", what, real=real)
    path.mkdir(mode=mode, parents=True, exist_ok=True)
    return path


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


__all__ = ["TMP_DIR", "check_entry", "ensure_dir", "remove"]
