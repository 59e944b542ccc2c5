"""Mesh secrets, join tokens, key derivation and the ZAP decision (pure; files in tmp)."""

from __future__ import annotations

import hashlib
import stat
from pathlib import Path

import pytest
import zmq
from zmq.utils import z85

from peer.mesh.keyring import (
    SECRET_FILE_NAME,
    Keyring,
    SecretError,
    decode_token,
    derive,
    encode_token,
    join_command,
    kubo_swarm_key,
    load_secrets,
    new_secret,
    parse_secrets,
)
from peer.mesh.zap import zap_reply

A = b"a-secret-of-the-mesh-" + b"a" * 22
B = b"b-secret-of-the-mesh-" + b"b" * 22


def test_derivation_is_deterministic_and_separates_secrets_and_roles() -> None:
    ka, kb = derive(A), derive(B)
    assert derive(A) == ka
    derive.cache_clear()
    assert derive(A) == ka  # not an artefact of the cache
    assert len({ka.server_public, ka.client_public, kb.server_public, kb.client_public}) == 4
    # each public key is the Curve25519 public key of its secret key
    assert zmq.curve_public(ka.server_secret) == ka.server_public
    assert zmq.curve_public(ka.client_secret) == ka.client_public
    assert len(z85.decode(ka.server_secret)) == 32
    # the key id is a hash of the server's public key: nothing secret in it
    assert ka.key_id == hashlib.sha256(b"banzai key id\0" + ka.server_public).hexdigest()[:16]
    assert ka.key_id != kb.key_id
    assert A not in repr(ka).encode() and ka.server_secret not in repr(ka).encode()


def test_keyring_serves_the_first_and_admits_the_client_keys_of_all() -> None:
    ring = Keyring([B, A])
    assert ring.serving == derive(B)
    assert ring.key_ids == (derive(B).key_id, derive(A).key_id)
    assert ring.for_key_id(derive(A).key_id) == derive(A)
    assert ring.for_key_id("0" * 16) is None
    for k in (derive(A), derive(B)):
        assert ring.admits(b"CURVE", k.client_public_raw)
        assert not ring.admits(b"CURVE", z85.decode(k.server_public))  # a server key is not
        assert not ring.admits(b"PLAIN", k.client_public_raw)
    other = derive(b"another-mesh-secret-xxxxxxxxxx")
    assert not ring.admits(b"CURVE", other.client_public_raw)
    assert not Keyring([A]).admits(b"CURVE", derive(B).client_public_raw)
    with pytest.raises(SecretError):
        Keyring([])
    with pytest.raises(SecretError):
        Keyring([b"short"])


@pytest.mark.parametrize(("request_frames", "status", "ok"), [
    ([b"1.0", b"7", b"banzai", b"127.0.0.1", b"", b"CURVE", derive(A).client_public_raw],
     b"200", True),
    ([b"1.0", b"7", b"banzai", b"127.0.0.1", b"", b"CURVE", derive(B).client_public_raw],
     b"400", False),
    ([b"1.0", b"7", b"banzai", b"127.0.0.1", b"", b"NULL"], b"400", False),
    ([b"0.9", b"7", b"banzai", b"127.0.0.1", b"", b"CURVE", b"x"], b"500", False),
    ([b"1.0"], b"500", False),
])
def test_zap_reply(request_frames: list[bytes], status: bytes, ok: bool) -> None:
    reply, admitted = zap_reply(request_frames, Keyring([A]).admits)
    assert admitted is ok
    assert reply[0] == b"1.0" and reply[2] == status and len(reply) == 6
    if len(request_frames) > 1:
        assert reply[1] == request_frames[1]


def test_secrets_file_and_token_formats() -> None:
    assert parse_secrets(A + b"\n\n" + B + b"\n") == (A, B)
    assert parse_secrets(b"  " + A + b"  \n") == (A,)
    for bad in (b"", b"\n \n", b"short\n", b"\n".join([A] * 5)):
        with pytest.raises(SecretError):
            parse_secrets(bad)
    s = new_secret()
    assert len(s) == 43 and parse_secrets(s) == (s,)
    token = encode_token(s)
    assert decode_token(token) == s and decode_token(f"  {token}\n") == s
    assert s.decode() not in token  # not the secret verbatim (but base64 of it: keep it secret)
    for bad_token in (token[:-3], token.replace("bzj1_", "bzj2_"), "bzj1_@@@", token + "AA"):
        with pytest.raises(SecretError):
            decode_token(bad_token)
    cmd = join_command(s, "lab 1")
    assert cmd == f"BANZAI_JOIN_TOKEN={token} banzai-peer --mesh-name 'lab 1'"
    assert join_command(s) == f"BANZAI_JOIN_TOKEN={token} banzai-peer"


def mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_first_peer_generates_a_private_secret_then_keeps_it(tmp_path: Path) -> None:
    first = load_secrets(tmp_path)
    assert first.source == "generated" and first.path == tmp_path / SECRET_FILE_NAME
    assert mode(tmp_path / SECRET_FILE_NAME) == 0o600
    again = load_secrets(tmp_path)
    assert again.source == "data_dir" and again.secrets == first.secrets
    assert load_secrets(tmp_path / "other").primary != first.primary


def test_join_token_is_stored_and_secret_file_wins(tmp_path: Path) -> None:
    token = encode_token(A)
    joined = load_secrets(tmp_path / "b", join_token=token)
    assert joined.secrets == (A,) and joined.source == "join_token"
    assert (tmp_path / "b" / SECRET_FILE_NAME).read_bytes() == A + b"\n"
    assert mode(tmp_path / "b" / SECRET_FILE_NAME) == 0o600
    assert load_secrets(tmp_path / "b").secrets == (A,)  # later starts need no token
    load_secrets(tmp_path / "b", join_token=encode_token(B))  # a new token replaces it
    assert load_secrets(tmp_path / "b").secrets == (B,)
    f = tmp_path / "rotation"
    f.write_bytes(B + b"\n" + A + b"\n")
    f.chmod(0o644)
    got = load_secrets(tmp_path / "c", secret_file=f)
    assert got.secrets == (B, A) and got.source == "secret_file"
    assert mode(f) == 0o600  # a secret readable by others is made private (and logged)
    assert not (tmp_path / "c" / SECRET_FILE_NAME).exists()
    with pytest.raises(SecretError, match="not both"):
        load_secrets(tmp_path / "c", secret_file=f, join_token=token)
    with pytest.raises(SecretError, match="cannot read"):
        load_secrets(tmp_path / "c", secret_file=tmp_path / "missing")


def test_kubo_swarm_key_is_a_psk_file_of_its_own_label() -> None:
    a, b = b"a" * 32, b"b" * 32
    text = kubo_swarm_key(a)
    head, base, hexkey, end = text.split("\n")
    assert (head, base, end) == ("/key/swarm/psk/1.0.0/", "/base16/", "")
    assert len(bytes.fromhex(hexkey)) == 32
    assert kubo_swarm_key(a) == text and kubo_swarm_key(b) != text
    keys = derive(a)  # a label of its own: none of the CURVE keys
    raw = bytes.fromhex(hexkey)
    assert raw not in (z85.decode(keys.server_secret), z85.decode(keys.client_secret))
