"""The inline marker (<data dir>/inline-durable): the inline blocks and pins of the events
logged up to a position of the log (an `events` rowid, and the key of its event) were made
durable at a clean close or a periodic mark. Written then, read at start as hostile input;
synchronous."""

from __future__ import annotations

import json
import logging
import os
import stat
from collections.abc import Callable
from pathlib import Path

from peer.ipfs.blocks import fsync_dir, write_atomic

log = logging.getLogger("banzai.inline")

NAME = "inline-durable"
VERSION = 1
MAX_BYTES = 4096  # a marker is a few dozen bytes: anything longer is not one

Key = tuple[str, int]  # an event's (origin, seq)


def write_mark(data_dir: Path, rowid: int, key: Key | None) -> None:
    """Record, durably and atomically, that the inline writes of the events logged up to
    position `rowid` (holding the event `key`; None for 0, an empty log) are on disk: call
    once they are. OSError (StorageFull) if it cannot."""
    text = json.dumps({"version": VERSION, "rowid": rowid,
                       "key": None if key is None else list(key)}, separators=(",", ":"))
    write_atomic(data_dir / NAME, text.encode("utf-8"))
    fsync_dir(data_dir)


def read_mark(data_dir: Path, key_at: Callable[[int], Key | None]) -> int | None:
    """The position the marker records if the log holds it still (`key_at(rowid)`, the key
    of the event at that position or None, names the marker's event); None if there is no
    marker, or (with a warning) if it is unreadable, garbled or not the log's: the caller
    then restores every event."""
    path = data_dir / NAME
    try:  # no symlink followed, no FIFO waited for: a regular file or nothing
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        return None
    except OSError as e:
        log.warning("inline marker %s unreadable (every inline output is restored): %s",
                    path, e)
        return None
    try:
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise ValueError("not a regular file")
            raw = f.read(MAX_BYTES + 1)
        rowid, key = _parse(raw)
        if key_at(rowid) != key:
            raise ValueError(f"position {rowid} does not hold the marked event in the log")
    except (OSError, ValueError, RecursionError) as e:  # UnicodeDecodeError, JSONDecodeError
        log.warning("inline marker %s ignored (every inline output is restored): %.200s",
                    path, e)
        return None
    return rowid


def _parse(raw: bytes) -> tuple[int, Key | None]:
    """The marker's (rowid, key); ValueError if it is not a marker of this version."""
    if len(raw) > MAX_BYTES:
        raise ValueError(f"longer than {MAX_BYTES} bytes")
    obj = json.loads(raw)
    if not isinstance(obj, dict) or obj.get("version") != VERSION:
        raise ValueError("not a marker of this version")
    rowid, key = obj.get("rowid"), obj.get("key")
    if type(rowid) is not int or not 0 <= rowid < 1 << 63:
        raise ValueError(f"position {rowid!r:.40} is not a rowid")
    if key is None and rowid == 0:
        return 0, None
    if not (isinstance(key, list) and len(key) == 2 and isinstance(key[0], str)
            and type(key[1]) is int):
        raise ValueError(f"event key {key!r:.80} is not an (origin, seq)")
    return rowid, (key[0], key[1])
