"""TAR streams of UnixFS content (the gateway's ?format=tar): the target named by `name`, its
directories and files below it, read through the Store; a pure generator, reads may block."""

from __future__ import annotations

import posixpath
import tarfile
from collections.abc import Iterable, Iterator
from itertools import chain, islice
from typing import Protocol

from peer.errors import NotAcceptable, TooLarge
from peer.ipfs.dag import Expansion
from peer.ipfs.store import DirLink, Entry

BLOCK = tarfile.BLOCKSIZE  # 512: headers and data are padded to it
MAX_TAR_DEPTH = 256  # nested directories in one TAR (as materialize: no deeper tree is written)
NAMES_AHEAD = 512  # a directory's first entries, their names checked before its header


class TarSource(Protocol):
    def stat(self, cid: str) -> Entry: ...
    def dir_links(self, cid: str) -> Iterable[DirLink]: ...  # names as stored, unchecked
    def cat(self, cid: str, offset: int = 0, length: int | None = None) -> Iterator[bytes]: ...


def _header(name: str, kind: bytes, size: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.type, info.size = kind, size
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


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


def tar_stream(store: TarSource, cid: str, name: str,
               repeat_allowance: int | None = None) -> Iterator[bytes]:
    """A POSIX (pax) TAR of `cid` as `name`: a file, or a directory with every entry below
    it, depth first in each directory's order (a HAMT's bucket order, as boxo's), entries read
    as they are reached (a directory's are never all held). Entry names are joined to their
    directory's path as boxo does (entry_path): a name such as `../x` that stays inside the
    root is written there; one that leaves it ends the stream with NotAcceptable (before the
    first byte when it is among the first NAMES_AHEAD entries of `cid` itself: those are
    checked before a directory's header). An entry whose CID this TAR has written already
    (under another name) is written again within a bound (dag.Expansion, `repeat_allowance`
    or dag.REPEAT_ALLOWANCE beyond the bytes of distinct entries): past it the stream ends
    with TooLarge, before that entry."""
    expansion = Expansion("a TAR", repeat_allowance)
    written: set[str] = set()  # the CIDs of the entries written (bounded by the blocks read)
    # One frame per directory open on the way down: its entries not written yet, read from
    # the store as they are reached (a HAMT of millions is never held), and their depth.
    frames: list[tuple[Iterator[tuple[str, str]], int]] = [(iter([(cid, name)]), 0)]
    while frames:
        below, depth = frames[-1]
        step = next(below, None)
        if step is None:
            frames.pop()
            continue
        c, path = step
        entry = store.stat(c)
        if entry.kind == "file":
            header = _header(path, tarfile.REGTYPE, entry.size)
            _count(expansion, written, c, len(header) + entry.size + _pad(entry.size), path)
            yield header
            yield from store.cat(entry.cid)
            if entry.size % BLOCK:
                yield b"\0" * _pad(entry.size)
            continue
        if depth >= MAX_TAR_DEPTH:
            raise TooLarge(f"{cid} nests directories more than {MAX_TAR_DEPTH} deep",
                           field="cid")
        header = _header(path, tarfile.DIRTYPE, 0)
        _count(expansion, written, c, len(header), path)
        links = _below(store, c, name, path)
        ahead = list(islice(links, NAMES_AHEAD))  # their names checked before the header
        yield header
        frames.append((chain(ahead, links), depth + 1))
    yield b"\0" * (2 * BLOCK)


def _below(store: TarSource, c: str, root: str, path: str) -> Iterator[tuple[str, str]]:
    """(cid, TAR path) of each entry of directory `c` at `path`, read as they are pulled."""
    for link in store.dir_links(c):
        yield link.cid, entry_path(root, path, link.name)


def _pad(size: int) -> int:
    return -size % BLOCK


def _count(expansion: Expansion, written: set[str], cid: str, n: int, path: str) -> None:
    """Count an entry of `n` bytes of the TAR (header, data, padding) as written once or
    again (TooLarge past the bound, before it is written)."""
    if cid in written:
        expansion.again(n, repr(path))
    else:
        written.add(cid)
        expansion.once(n)
