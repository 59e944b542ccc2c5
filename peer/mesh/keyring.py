"""Mesh secrets and the CURVE keys derived from them: secret files, join tokens, key ids and
the admission rule. Pure but for reading and writing secret files; safe from any thread.

Every mesh has a secret (a line of at least 16 bytes; generated ones hold 256 random bits).
From each secret, scrypt (a slow KDF, so that a key id, which is public, does not let anyone
test guesses of a hand-written secret quickly) then HKDF-SHA256 derive two Curve25519
keypairs: the mesh's server keypair (every gossip ROUTER binds with it) and its client
keypair (every DEALER connects with it). Holding the secret is the only way to hold them.
The key id announced over mDNS and in heartbeats is a hash of the server public key.

A keyring holds one to four secrets: the first is the one this peer serves; every one is
accepted (a rotation, docs/security.md). A ZAP request is admitted when its client public
key is the client key of one of them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import secrets
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import zmq
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt
from zmq.utils import z85

from peer.privfile import create_private, read_private, replace_private

log = logging.getLogger("banzai.keyring")

SECRET_FILE_NAME = "mesh.secret"  # in the data dir, mode 0600
MIN_SECRET_BYTES = 16
MAX_SECRETS = 4
MAX_SECRETS_FILE_BYTES = 64 * 1024
TOKEN_PREFIX = "bzj1_"  # a join token: version 1
_SCRYPT_SALT = b"banzai mesh secret v1"
_SCRYPT_N = 2**14  # 16 MiB, ~50 ms: once per secret and process


class SecretError(ValueError):
    """A secret, secrets file or join token is malformed."""


@dataclass(frozen=True)
class CurveKeys:
    """The CURVE keys of one mesh secret (z85 text, as libzmq takes them)."""

    key_id: str  # 16 hex digits of SHA-256 over the server public key: public
    server_public: bytes
    server_secret: bytes = field(repr=False)
    client_public: bytes = field(repr=False)
    client_secret: bytes = field(repr=False)

    @property
    def client_public_raw(self) -> bytes:
        """The 32-byte client public key, as a ZAP request carries it."""
        return z85.decode(self.client_public)


def _keypair(seed: bytes) -> tuple[bytes, bytes]:
    secret = z85.encode(seed)
    return zmq.curve_public(secret), secret


@lru_cache(maxsize=16)
def _master(secret: bytes) -> bytes:
    """The scrypt master key of `secret` (cached: the KDF is slow on purpose)."""
    return Scrypt(salt=_SCRYPT_SALT, length=32, n=_SCRYPT_N, r=8, p=1).derive(secret)


def _expand(secret: bytes, info: bytes) -> bytes:
    """32 bytes for one purpose (`info`, a label of its own) from the secret's master key."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                info=info).derive(_master(secret))


@lru_cache(maxsize=16)
def derive(secret: bytes) -> CurveKeys:
    """The keys of `secret` (cached: the KDF is slow on purpose)."""

    def expand(info: bytes) -> bytes:
        return _expand(secret, info)

    spub, ssec = _keypair(expand(b"banzai curve server key"))
    cpub, csec = _keypair(expand(b"banzai curve client key"))
    kid = hashlib.sha256(b"banzai key id\0" + spub).hexdigest()[:16]
    return CurveKeys(kid, spub, ssec, cpub, csec)


def kubo_swarm_key(secret: bytes) -> str:
    """The swarm.key file (a libp2p private network's pre-shared key, PSK v1, hex) of the mesh
    of `secret`, for its peers' Kubo nodes: its own HKDF label, so it tells nothing of the
    CURVE keys (and they nothing of it)."""
    key = _expand(secret, b"banzai kubo swarm key v1")
    return f"/key/swarm/psk/1.0.0/\n/base16/\n{key.hex()}\n"


class Keyring:
    """The secrets a peer holds: it serves the first, accepts them all."""

    def __init__(self, mesh_secrets: Sequence[bytes]) -> None:
        if not 1 <= len(mesh_secrets) <= MAX_SECRETS:
            raise SecretError(f"a keyring holds 1 to {MAX_SECRETS} secrets")
        for s in mesh_secrets:
            check_secret(s)
        self.keys = tuple(derive(s) for s in mesh_secrets)
        self._admitted = frozenset(k.client_public_raw for k in self.keys)

    @property
    def serving(self) -> CurveKeys:
        """The keys this peer's ROUTER binds with and announces."""
        return self.keys[0]

    @property
    def key_ids(self) -> tuple[str, ...]:
        return tuple(k.key_id for k in self.keys)

    def for_key_id(self, key_id: str) -> CurveKeys | None:
        """The keys to reach a peer that serves `key_id`; None if we lack its secret."""
        return next((k for k in self.keys if k.key_id == key_id), None)

    def admits(self, mechanism: bytes, client_key: bytes) -> bool:
        """The ZAP decision: a CURVE client whose public key derives from a secret we hold."""
        return mechanism == b"CURVE" and client_key in self._admitted


# -- secrets, files and tokens ---------------------------------------------------------


def check_secret(secret: bytes) -> bytes:
    if len(secret) < MIN_SECRET_BYTES:
        raise SecretError(f"a mesh secret needs at least {MIN_SECRET_BYTES} bytes")
    if b"\n" in secret or secret != secret.strip():
        raise SecretError("a mesh secret is one line without surrounding blanks")
    return secret


def new_secret() -> bytes:
    """256 random bits, URL-safe text (43 characters)."""
    return secrets.token_urlsafe(32).encode()


def parse_secrets(data: bytes) -> tuple[bytes, ...]:
    """The secrets of a secrets file: one per non-empty line, the served one first."""
    lines = tuple(line.strip() for line in data.splitlines() if line.strip())
    if not lines:
        raise SecretError("no secret in the file")
    if len(lines) > MAX_SECRETS:
        raise SecretError(f"at most {MAX_SECRETS} secrets (one per line)")
    return tuple(check_secret(s) for s in lines)


def encode_token(secret: bytes) -> str:
    """A join token: the secret and a 4-byte checksum (catches a truncated paste)."""
    check_secret(secret)
    raw = secret + hashlib.sha256(secret).digest()[:4]
    return TOKEN_PREFIX + base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_token(token: str) -> bytes:
    """The secret of a join token; SecretError if it is not one."""
    token = token.strip()
    if not token.startswith(TOKEN_PREFIX):
        raise SecretError(f"a join token starts with {TOKEN_PREFIX}")
    body = token[len(TOKEN_PREFIX):]
    try:
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    except ValueError:
        raise SecretError("the join token is not base64url") from None
    secret, check = raw[:-4], raw[-4:]
    if not hmac.compare_digest(hashlib.sha256(secret).digest()[:4], check):
        raise SecretError("the join token is damaged (checksum)")
    return check_secret(secret)


def _read_secrets_file(path: Path, what: str) -> tuple[bytes, ...]:
    try:
        data = read_private(path, what, "other local users may hold the mesh secret; "
                            "consider a rotation", MAX_SECRETS_FILE_BYTES)
    except OSError as e:
        raise SecretError(f"{what}: cannot read {path}: {e.strerror}") from None
    if len(data) > MAX_SECRETS_FILE_BYTES:
        raise SecretError(f"{what} {path}: longer than {MAX_SECRETS_FILE_BYTES} bytes, not a "
                          f"secrets file (at most {MAX_SECRETS} secrets, one per line)")
    try:
        return parse_secrets(data)
    except SecretError as e:
        raise SecretError(f"{what} {path}: {e}") from None


@dataclass(frozen=True)
class MeshSecrets:
    """The secrets a peer starts with and where they came from."""

    secrets: tuple[bytes, ...]
    source: str  # "secret_file", "join_token", "data_dir" or "generated"
    path: Path | None  # the file holding them

    @property
    def primary(self) -> bytes:
        return self.secrets[0]


def load_secrets(data_dir: Path, secret_file: Path | None = None,
                 join_token: str | None = None) -> MeshSecrets:
    """The mesh secrets: `secret_file` if given; else a join token's secret, stored in the
    data dir; else the data dir's secret; else a new one, stored there (0600)."""
    if secret_file is not None and join_token:
        raise SecretError("give --secret-file or --join-token, not both")
    if secret_file is not None:
        return MeshSecrets(_read_secrets_file(secret_file, "secret_file"), "secret_file",
                           secret_file)
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    stored = data_dir / SECRET_FILE_NAME
    if join_token:
        secret = decode_token(join_token)
        if not stored.exists() or _read_secrets_file(stored, "mesh secret") != (secret,):
            replace_private(stored, secret + b"\n")
            log.info("joined: the mesh secret of the join token is now in %s", stored)
        return MeshSecrets((secret,), "join_token", stored)
    if stored.exists():
        return MeshSecrets(_read_secrets_file(stored, "mesh secret"), "data_dir", stored)
    secret = new_secret()
    try:
        create_private(stored, secret + b"\n")
    except FileExistsError:  # made meanwhile (another process on this data dir): that one
        return MeshSecrets(_read_secrets_file(stored, "mesh secret"), "data_dir", stored)
    return MeshSecrets((secret,), "generated", stored)


def join_command(secret: bytes, mesh_name: str = "banzai") -> str:
    """The command that joins another peer to the mesh of `secret`. The token goes in the
    environment: a command line is visible to every local user (ps), an environment not."""
    name = "" if mesh_name == "banzai" else f" --mesh-name {shlex.quote(mesh_name)}"
    return f"BANZAI_JOIN_TOKEN={encode_token(secret)} banzai-peer{name}"


__all__ = ["MAX_SECRETS", "MIN_SECRET_BYTES", "SECRET_FILE_NAME", "TOKEN_PREFIX", "CurveKeys",
           "Keyring", "MeshSecrets", "SecretError", "check_secret", "decode_token", "derive",
           "encode_token", "join_command", "kubo_swarm_key", "load_secrets", "new_secret",
           "parse_secrets"]
