"""The fetch address policy: a table of addresses with a stub resolver (no packet leaves the
machine: refused addresses are never connected to, and the only servers are on 127.0.0.1),
redirects checked hop by hop, and the connection going to the address that was checked."""

from __future__ import annotations

import http.server
import shutil
import ssl
import subprocess
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from ipaddress import ip_address
from pathlib import Path
from typing import Any, ClassVar

import pytest

from tasks.fetch_policy import AddressPolicy, HttpGet, PolicyError, check_url
from tests.helpers import load_script

serve_dir = load_script("serve_dir")
LOOPBACK_ONLY = AddressPolicy.from_cidrs(["127.0.0.1/32"])


def stub(table: dict[str, Sequence[str]], calls: list[str] | None = None
         ) -> Any:
    """A resolver answering from `table` (KeyError for other names), recording its calls."""
    def resolve(host: str, port: int) -> Sequence[str]:
        if calls is not None:
            calls.append(host)
        return table[host]
    return resolve


# -- the address table -------------------------------------------------------------------
REFUSED = [
    ("127.0.0.1", "loopback"), ("127.9.9.9", "loopback"), ("::1", "loopback"),
    ("169.254.169.254", "cloud metadata"), ("169.254.170.2", "cloud metadata"),
    ("fd00:ec2::254", "cloud metadata"), ("100.100.100.200", "cloud metadata"),
    ("169.254.1.1", "link-local"), ("fe80::1", "link-local"),
    ("10.1.2.3", "private"), ("172.16.0.1", "private"), ("172.31.255.255", "private"),
    ("192.168.1.1", "private"), ("fd12:3456::1", "private"), ("fc00::1", "private"),
    ("224.0.0.251", "multicast"), ("239.1.1.1", "multicast"), ("ff02::fb", "multicast"),
    ("0.0.0.0", "unspecified"), ("::", "unspecified"),
    ("240.0.0.1", "private"), ("255.255.255.255", "private"),  # reserved, within is_private
    ("100.64.0.1", "not globally routable"), ("198.18.0.1", "private"),
    ("192.0.2.1", "private"), ("fec0::1", "site-local"),
    ("::ffff:127.0.0.1", "loopback, embedded 127.0.0.1"),
    ("::ffff:169.254.169.254", "cloud metadata, embedded 169.254.169.254"),
    ("::ffff:10.0.0.1", "private, embedded 10.0.0.1"),
    ("2002:7f00:1::1", "loopback, embedded 127.0.0.1"),
    ("64:ff9b::a00:1", "private, embedded 10.0.0.1"),
]


@pytest.mark.parametrize(("addr", "why"), REFUSED)
def test_refused_addresses(addr: str, why: str) -> None:
    policy = AddressPolicy()
    assert policy.refusal(ip_address(addr)) == why
    with pytest.raises(PolicyError) as e:
        policy.addresses("corpus.test", 80, stub({"corpus.test": [addr]}))
    assert e.value.message == (
        f"corpus.test resolves to {ip_address(addr)} ({why}): refused by the fetch address policy "
        "(a peer allows such addresses with --fetch-allow CIDR)")


@pytest.mark.parametrize("addr", ["93.184.216.34", "8.8.8.8", "2606:4700::1111",
                                  "::ffff:93.184.216.34", "2002:5db8:d822::1",
                                  "64:ff9b::5db8:d822"])
def test_public_addresses_allowed(addr: str) -> None:
    policy = AddressPolicy()
    assert policy.refusal(ip_address(addr)) is None
    assert policy.addresses("corpus.test", 443, stub({"corpus.test": [addr]})) == [
        str(ip_address(addr))]


@pytest.mark.parametrize(("cidrs", "addr", "allowed"), [
    (["127.0.0.1/32"], "127.0.0.1", True),
    (["127.0.0.1/32"], "127.0.0.2", False),
    (["127.0.0.1/32"], "::ffff:127.0.0.1", True),  # the mapped form of an allowed address
    (["127.0.0.1/32"], "::1", False),
    (["10.0.0.0/8"], "10.20.30.40", True),
    (["10.0.0.0/8"], "169.254.169.254", False),
    (["192.168.1.0/24", "fd00::/8"], "fd12::1", True),
    (["192.168.1.0/24"], "192.168.2.1", False),
    (["169.254.169.254"], "169.254.169.254", True),  # a bare address is a /32
    (["::1/128"], "::1", True),
])
def test_fetch_allow_cidrs(cidrs: list[str], addr: str, allowed: bool) -> None:
    policy = AddressPolicy.from_cidrs(cidrs)
    assert (policy.refusal(ip_address(addr)) is None) is allowed


def test_bad_cidr_named() -> None:
    with pytest.raises(PolicyError, match="not an address or CIDR: 'localhost'"):
        AddressPolicy.from_cidrs(["localhost"])


def test_literal_addresses_skip_the_resolver_and_mixed_answers_keep_the_allowed() -> None:
    def no_dns(host: str, port: int) -> Sequence[str]:
        raise AssertionError("an address literal was resolved")
    with pytest.raises(PolicyError, match=r"^169\.254\.169\.254 \(cloud metadata\): refused"):
        AddressPolicy().addresses("169.254.169.254", 80, no_dns)
    mixed = stub({"corpus.test": ["10.0.0.1", "93.184.216.34", "::1"]})
    assert AddressPolicy().addresses("corpus.test", 80, mixed) == ["93.184.216.34"]


@pytest.mark.parametrize("url", ["file:///etc/passwd", "/etc/passwd", "etc/passwd",
                                 "ftp://example.com/x.zip", "gopher://example.com/",
                                 "http://", "https:///x.zip", "C:\\x.zip"])
def test_only_http_urls(url: str) -> None:
    with pytest.raises(PolicyError, match=r"^only http:// and https:// URLs are fetched"):
        check_url(url)


def test_check_url_parts() -> None:
    t = check_url("HTTPS://user:pw@[::1]:8443/a/b.zip?x=1#frag")
    assert (t.scheme, t.host, t.port, t.host_header, t.path) == (
        "https", "::1", 8443, "[::1]:8443", "/a/b.zip?x=1")
    t = check_url("http://corpus.test")
    assert (t.port, t.host_header, t.path) == (80, "corpus.test", "/")


# -- real requests to 127.0.0.1 ----------------------------------------------------------
class Recorder(http.server.BaseHTTPRequestHandler):
    """Answers `body` and records each request's Host header; /hop/N redirects to /hop/N-1
    and /to?u=URL redirects to URL."""

    hosts: ClassVar[list[str]] = []
    body = b"corpus"

    def do_GET(self) -> None:
        type(self).hosts.append(self.headers["Host"])
        if self.path.startswith("/to?u="):
            return self._redirect(self.path.removeprefix("/to?u="))
        if self.path.startswith("/hop/") and self.path != "/hop/0":
            return self._redirect(f"/hop/{int(self.path.rsplit('/', 1)[1]) - 1}")
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def _redirect(self, location: str) -> None:
        self.send_response(302)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    """A 127.0.0.1 server of Recorder: its base URL (ends with /)."""
    Recorder.hosts = []
    with serve_dir.serve(tmp_path, handler=Recorder) as url:
        yield url


def get(url: str, policy: AddressPolicy = LOOPBACK_ONLY, **kw: Any) -> bytes:
    with HttpGet(policy, timeout_s=5, **kw).open(url) as resp:
        assert resp.status == 200
        return resp.read()


def test_allowed_loopback_fetch(server: str) -> None:
    assert get(server + "x.zip") == b"corpus"
    with pytest.raises(PolicyError, match=r"^127\.0\.0\.1 \(loopback\): refused"):
        get(server + "x.zip", AddressPolicy())
    assert len(Recorder.hosts) == 1  # the refused request never reached the server


def test_connects_to_the_address_it_checked_with_the_name_as_host(server: str) -> None:
    """The name is resolved once per request, and the server sees the name: a second
    resolution (DNS rebinding) has no chance, and a name real DNS does not know works."""
    port = server.rsplit(":", 1)[1].rstrip("/")
    calls: list[str] = []
    resolver = stub({"corpus.test": ["127.0.0.2", "127.0.0.1"]}, calls)
    assert get(f"http://corpus.test:{port}/x.zip", resolver=resolver) == b"corpus"
    assert calls == ["corpus.test"] and Recorder.hosts == [f"corpus.test:{port}"]


@pytest.mark.parametrize(("target", "words"), [
    ("http://127.0.0.2:{port}/x.zip", "127.0.0.2 (loopback): refused by the fetch address"),
    ("http://[::1]:{port}/x.zip", "::1 (loopback): refused by the fetch address policy"),
    ("http://evil.test:{port}/x.zip", "evil.test resolves to 127.0.0.2 (loopback): refused"),
    ("ftp://127.0.0.1/x.zip", "refused: only http:// and https:// URLs are fetched"),
    ("file:///etc/passwd", "refused: only http:// and https:// URLs are fetched"),
])
def test_redirect_targets_are_checked(server: str, target: str, words: str) -> None:
    """The first hop is allowed (127.0.0.1/32); where it redirects to is not."""
    port = server.rsplit(":", 1)[1].rstrip("/")
    url = target.format(port=port)
    resolver = stub({"evil.test": ["127.0.0.2"]})
    with pytest.raises(PolicyError) as e:
        get(f"{server}to?u={url}", resolver=resolver)
    assert e.value.message.startswith(f"redirect to {url}") and words in e.value.message
    assert len(Recorder.hosts) == 1  # only the first hop was requested


def test_redirects_followed_within_the_policy_and_bounded(server: str) -> None:
    assert get(server + "hop/5") == b"corpus"
    Recorder.hosts = []
    with pytest.raises(PolicyError, match="more than 5 redirects"):
        get(server + "hop/6")
    assert len(Recorder.hosts) == 6
    assert get(server + "hop/2", max_redirects=2) == b"corpus"


# -- HTTPS: the checked address, the URL's name for SNI and the certificate ---------------
@contextmanager
def https_server(tmp_path: Path, name: str
                 ) -> Iterator[tuple[int, ssl.SSLContext, list[str | None]]]:
    """A TLS server on 127.0.0.1 with a self-signed certificate for `name`; yields its port,
    a client context trusting only that certificate, and the names clients asked for (SNI)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run([openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", f"/CN={name}", "-addext",
                    f"subjectAltName=DNS:{name}"], check=True, capture_output=True)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)
    sni: list[str | None] = []
    server_ctx.sni_callback = lambda sock, sname, ctx: sni.append(sname)  # type: ignore[func-returns-value]
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    httpd.daemon_threads = True
    httpd.socket = server_ctx.wrap_socket(httpd.socket, server_side=True)
    t = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    t.start()
    try:
        yield httpd.server_address[1], ssl.create_default_context(cafile=str(cert)), sni
    finally:
        httpd.shutdown()
        httpd.server_close()
        t.join(timeout=5)


def test_https_pinned_to_the_checked_address_with_the_names_sni(tmp_path: Path) -> None:
    Recorder.hosts = []
    with https_server(tmp_path, "corpus.test") as (port, tls, sni):
        resolver = stub({"corpus.test": ["127.0.0.1"], "other.test": ["127.0.0.1"]})
        assert get(f"https://corpus.test:{port}/x.zip", resolver=resolver,
                   tls=tls) == b"corpus"
        assert Recorder.hosts == [f"corpus.test:{port}"]
        with pytest.raises(ssl.SSLCertVerificationError, match=r"other\.test"):
            get(f"https://other.test:{port}/x.zip", resolver=resolver, tls=tls)
    assert sni == ["corpus.test", "other.test"]  # each URL's own name, never the address
