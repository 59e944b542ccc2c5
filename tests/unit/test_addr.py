"""HOST:PORT parsing and formatting shared by the mesh modules."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from peer.mesh.addr import format_addr, parse_addr


@pytest.mark.parametrize(("addr", "want"), [
    ("127.0.0.1:7000", ("127.0.0.1", 7000)), ("[::1]:0", ("::1", 0)),
    ("peer.lan:65535", ("peer.lan", 65535)), ("fe80::1:80", ("fe80::1", 80)),
    ("[fe80::1%eth0]:9", ("fe80::1%eth0", 9)), ("peer.lan.:1", ("peer.lan", 1)),
    ("0.0.0.0:7", ("0.0.0.0", 7)), ("*:7", ("*", 7)), ("my_host-2:7", ("my_host-2", 7)),
])
def test_parse(addr: str, want: tuple[str, int]) -> None:
    assert parse_addr(addr) == want


@pytest.mark.parametrize("addr", ["", "host", ":80", "host:", "host:x", "host:65536",
                                  "host:-1", "[]:80", "a b:80", "a/b:80", "a;b:80",
                                  "127.0(0.1:9", "a..b:80", "-a:80", "a-:80", "x" * 64 + ":80",
                                  "[fe80::zz]:80", "a:b:80", "h\u00e9te:80", ".:80"])
def test_parse_rejects(addr: str) -> None:
    with pytest.raises(ValueError):
        parse_addr(addr)


@settings(max_examples=50, deadline=None)
@given(host=st.sampled_from(["127.0.0.1", "::1", "fe80::1", "peer.lan", "10.0.0.5"]),
       port=st.integers(0, 65535))
def test_format_is_the_inverse_of_parse(host: str, port: int) -> None:
    addr = format_addr(host, port)
    assert parse_addr(addr) == (host, port)
    assert addr.startswith("[") == (":" in host)
