"""Named Ed25519 keys for IPNS names, kept in the data dir (`keys/NAME.key`, 32 raw bytes, mode
0600); the key named `self` is the peer's identity key (`identity.key`). Files are written by
rename, so it is safe from several threads and processes.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from peer.dataentry import ensure_dir
from peer.errors import ArgError, Conflict, DataError, NotFound
from peer.ipfs import ipns
from peer.log.owner import KEY_FILE as IDENTITY_FILE  # the peer's identity (Identity)
from peer.log.signing import read_key, write_key

log = logging.getLogger("banzai.ipns")

SELF = "self"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass(frozen=True)
class KeyInfo:
    """A named key and its IPNS name (CIDv1 libp2p-key, base36), as `ipfs key list -l`."""

    name: str
    id: str


def check_name(name: str) -> str:
    """`name` if it can name a key (1-64 of letters, digits, `.`, `_`, `-`); ArgError."""
    if not _NAME.match(name):
        raise ArgError(f"bad key name {name!r}: 1 to 64 letters, digits, '.', '_' or '-', "
                       "starting with a letter or digit", field="name")
    return name


class Keystore:
    """The keys under `data_dir`: `self` (the identity) and those made by `gen`."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir)
        self.dir = self.data_dir / "keys"
        self._bad: set[str] = set()  # names of key files that hold no key (logged once)

    def path(self, name: str) -> Path:
        """The file of the key `name` (`identity.key` for `self`); ArgError for a bad name."""
        if name == SELF:
            return self.data_dir / IDENTITY_FILE
        return self.dir / f"{check_name(name)}.key"

    def gen(self, name: str) -> KeyInfo:
        """Make a new Ed25519 key `name`; Conflict if one exists (`self` always does)."""
        path = self.path(name)
        if path.exists():
            raise Conflict(f"key {name!r} already exists", field="name")
        ensure_dir(self.dir, "the IPNS keys' directory", mode=0o700)  # (a file: DataError)
        sk = Ed25519PrivateKey.generate()
        try:
            write_key(path, sk)  # never replaces a key made meanwhile
        except FileExistsError:
            raise Conflict(f"key {name!r} already exists", field="name") from None
        return KeyInfo(name, ipns.key_name(sk.public_key()))

    def get(self, name: str) -> Ed25519PrivateKey:
        """The private key `name`; NotFound if there is none, DataError if its file does not
        hold one (peer.log.signing.read_key)."""
        try:
            return read_key(self.path(name))
        except FileNotFoundError:
            raise NotFound(f"no key {name!r} (banzai key gen {name})", field="key") from None

    def list(self) -> list[KeyInfo]:
        """Every key: `self` first, then the others by name; a key file that holds no key is
        left out (logged once)."""
        names = [SELF] if self.path(SELF).exists() else []
        if self.dir.is_dir():
            names += sorted(p.stem for p in self.dir.glob("*.key") if _NAME.match(p.stem))
        out: list[KeyInfo] = []
        for n in names:
            try:
                out.append(KeyInfo(n, ipns.key_name(self.get(n).public_key())))
            except NotFound:  # removed meanwhile
                continue
            except DataError as e:
                if n not in self._bad:
                    self._bad.add(n)
                    log.warning("key %r left out: %s", n, e.message)
        return out

    def by_id(self) -> dict[str, str]:
        """IPNS name -> key name, for the keys held here."""
        return {k.id: k.name for k in self.list()}
