"""TAR streams of UnixFS content (the gateway's ?format=tar): the target named by `name`, its
directories and files below it, read through the Store; a pure generator, reads may block."""

from __future__ import annotations

import posixpath
import tarfile
from collections.abc import Iterator
from typing import Protocol

from peer.errors import NotAcceptable, TooLarge
from peer.ipfs.store import DirLink, Entry

BLOCK = tarfile.BLOCKSIZE  # 512: headers and data are padded to it
MAX_TAR_DEPTH = 256  # nested directories in one TAR (as materialize: no deeper tree is written)


class TarSource(Protocol):
    def stat(self, cid: str) -> Entry: ...
    def dir_links(self, cid: str) -> list[DirLink]: ...  # names as stored, unchecked
    def cat(self, cid: str, offset: int = 0, length: int | None = None) -> Iterator[bytes]: ...


def _header(name: str, kind: bytes, size: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.type, info.size = kind, size
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


def _file(store: TarSource, name: str, entry: Entry) -> Iterator[bytes]:
    yield _header(name, tarfile.REGTYPE, entry.size)
    yield from store.cat(entry.cid)
    if entry.size % BLOCK:
        yield b"\0" * (BLOCK - entry.size % BLOCK)


def entry_path(root: str, parent: str, name: str) -> str:
    """Where entry `name` of directory `parent` goes in a TAR rooted at `root`: joined and
    cleaned as boxo's TarWriter does (`r/a` + `../b` is `r/b`, `r/a` + `/b` is `r/a/b`);
    NotAcceptable when that path is not strictly inside `root` (boxo: "relative UnixFS paths
    outside the root are not allowed, use CAR instead") or the name holds a NUL byte."""
    path = posixpath.normpath(f"{parent}/{name}")
    if "\x00" in name or not path.startswith(root + "/"):
        raise NotAcceptable(f"entry {name!r} of {parent!r} lands outside the TAR's root "
                            f"{root!r}: relative UnixFS paths outside the root are not "
                            "allowed, use CAR instead", field="format")
    return path


def tar_stream(store: TarSource, cid: str, name: str) -> Iterator[bytes]:
    """A POSIX (pax) TAR of `cid` as `name`: a file, or a directory with every entry below
    it, depth first in name order. Entry names are joined to their directory's path as boxo
    does (entry_path): a name such as `../x` that stays inside the root is written there; one
    that leaves it ends the stream with NotAcceptable (before the first byte when it is an
    entry of `cid` itself: each directory's names are checked before its header)."""
    stack = [(cid, name, 0)]
    while stack:
        c, path, depth = stack.pop()
        entry = store.stat(c)
        if entry.kind == "file":
            yield from _file(store, path, entry)
            continue
        if depth >= MAX_TAR_DEPTH:
            raise TooLarge(f"{cid} nests directories more than {MAX_TAR_DEPTH} deep",
                           field="cid")
        below = [(link.cid, entry_path(name, path, link.name), depth + 1)
                 for link in store.dir_links(c)]
        yield _header(path, tarfile.DIRTYPE, 0)
        stack.extend(reversed(below))
    yield b"\0" * (2 * BLOCK)
