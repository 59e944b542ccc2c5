"""TAR streams of UnixFS content (the gateway's ?format=tar): the target named by `name`, its
directories and files below it, read through the Store; a pure generator, reads may block."""

from __future__ import annotations

import tarfile
from collections.abc import Iterator
from typing import Protocol

from peer.ipfs.store import Entry

BLOCK = tarfile.BLOCKSIZE  # 512: headers and data are padded to it


class TarSource(Protocol):
    def stat(self, cid: str) -> Entry: ...
    def walk(self, cid: str) -> Iterator[Entry]: ...  # files, depth first, paths checked
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


def tar_stream(store: TarSource, cid: str, name: str) -> Iterator[bytes]:
    """A POSIX (pax) TAR of `cid` as `name`: a file, or a directory with every file below it
    (entry names are checked by the store's walk: no '..', no '/')."""
    entry = store.stat(cid)
    if entry.kind == "file":
        yield from _file(store, name, entry)
    else:
        yield _header(name, tarfile.DIRTYPE, 0)
        made = {""}
        for e in store.walk(cid):
            parts = e.path.split("/")
            for i in range(1, len(parts)):
                d = "/".join(parts[:i])
                if d not in made:
                    made.add(d)
                    yield _header(f"{name}/{d}", tarfile.DIRTYPE, 0)
            yield from _file(store, f"{name}/{e.path}", e)
    yield b"\0" * (2 * BLOCK)
