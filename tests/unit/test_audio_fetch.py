"""FETCH_FESTVOX: downloads over loopback HTTP (allowed with fetch_allow as a peer's
--fetch-allow would), URLs it refuses, zip safety checks."""

from __future__ import annotations

import http.server
import io
import json
import random
import socket
import stat
import wave
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from peer.errors import ArgError
from tasks import audio
from tasks.audio_fetch import FetchError, FetchLimits, extract_festvox, parse_prompts, speaker_of
from tasks.registry import catalog
from tests.helpers import FakeCtx, load_script

FAST = FetchLimits(attempts=3, backoff_s=0.01, timeout_s=2.0)
LOOPBACK = ("127.0.0.1/32",)  # what the test peers pass as --fetch-allow


serve_dir = load_script("serve_dir")


def wav_bytes(frames: int = 160) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(b"\1\0" * frames)
    return buf.getvalue()


def arctic_zip(path: Path, speaker: str = "awb", n: int = 3) -> Path:
    root = f"cmu_us_{speaker}_arctic"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{root}/", b"")
        for i in range(1, n + 1):
            zf.writestr(f"{root}/wav/arctic_a{i:04d}.wav", wav_bytes(160 * i))
            zf.writestr(f"{root}/orig/arctic_a{i:04d}.wav", b"ignored: not under wav/")
        zf.writestr(f"{root}/etc/txt.done.data", "".join(
            f'( arctic_a{i:04d} "Sentence number {i}, etc." )\n' for i in range(1, n + 1)))
        zf.writestr(f"{root}/README", "festvox")
    return path


def fetch(tmp_path: Path, *urls: str, limits: FetchLimits = FAST,
          allow: tuple[str, ...] = LOOPBACK) -> tuple[Path, FakeCtx]:
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    ctx = FakeCtx(tmp_path, fetch_allow=allow)
    audio.fetch_festvox(ctx, None, out, urls=list(urls), limits=limits)
    return out, ctx


@pytest.fixture
def base(tmp_path: Path) -> Iterator[str]:
    """A 127.0.0.1 file server of tmp_path: its base URL."""
    with serve_dir.serve(tmp_path) as url:
        yield url


def test_fetch_layout(tmp_path: Path, base: str) -> None:
    arctic_zip(tmp_path / "cmu_us_awb_arctic-0.90-release.zip")
    out, ctx = fetch(tmp_path, base + "cmu_us_awb_arctic-0.90-release.zip")
    assert sorted(p.name for p in (out / "awb").iterdir()) == [
        "arctic_a0001.wav", "arctic_a0002.wav", "arctic_a0003.wav", "prompts.json"]
    prompts = json.loads((out / "awb" / "prompts.json").read_text())
    assert prompts["arctic_a0002"] == "Sentence number 2, etc."
    assert (out / "awb" / "arctic_a0003.wav").read_bytes() == wav_bytes(480)
    assert ctx.fractions[-1] == 1.0 and ctx.fractions == sorted(ctx.fractions)
    assert not list(tmp_path.glob("fetch-*.zip"))


def test_fetch_several_speakers(tmp_path: Path, base: str) -> None:
    arctic_zip(tmp_path / "a.zip", "awb")
    arctic_zip(tmp_path / "b.zip", "slt", n=2)
    out, ctx = fetch(tmp_path, base + "a.zip", base + "b.zip")
    assert sorted(p.name for p in out.iterdir()) == ["awb", "slt"]
    assert len(list((out / "slt").glob("*.wav"))) == 2
    assert "-> slt" in ctx.logs[-1]


def test_fetch_same_speaker_twice_fails(tmp_path: Path, base: str) -> None:
    arctic_zip(tmp_path / "a.zip")
    with pytest.raises(FetchError, match="already fetched"):
        fetch(tmp_path, base + "a.zip", base + "a.zip")


def test_fetch_http(tmp_path: Path) -> None:
    arctic_zip(tmp_path / "cmu_us_bdl_arctic-0.90-release.zip", "bdl")
    with serve_dir.serve(tmp_path) as base:
        out, _ = fetch(tmp_path, base + "cmu_us_bdl_arctic-0.90-release.zip")
    assert len(list((out / "bdl").glob("*.wav"))) == 3


def test_fetch_http_404(tmp_path: Path) -> None:
    with serve_dir.serve(tmp_path) as base, pytest.raises(FetchError, match="HTTP 404"):
        fetch(tmp_path, base + "missing.zip")


class LyingHandler(http.server.BaseHTTPRequestHandler):
    """Announces more bytes than it sends, then closes the connection."""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "1000")
        self.end_headers()
        self.wfile.write(b"PK\3\4" + b"\0" * 96)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class FlakyHandler(http.server.BaseHTTPRequestHandler):
    """503 on the first request, then the zip."""

    calls = 0
    body = b""

    def do_GET(self) -> None:
        type(self).calls += 1
        if self.calls == 1:
            self.send_error(503)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_fetch_truncated_download(tmp_path: Path) -> None:
    with serve_dir.serve(tmp_path, handler=LyingHandler) as base, \
            pytest.raises(FetchError, match=r"truncated download: got 100 of 1000 bytes"):
        fetch(tmp_path, base + "x.zip")


def test_fetch_retries_5xx(tmp_path: Path) -> None:
    FlakyHandler.body = arctic_zip(tmp_path / "cmu_us_rms_arctic.zip", "rms").read_bytes()
    with serve_dir.serve(tmp_path, handler=FlakyHandler) as base:
        out, _ = fetch(tmp_path, base + "cmu_us_rms_arctic.zip")
    assert FlakyHandler.calls == 2 and (out / "rms" / "prompts.json").exists()


def test_fetch_unreachable_port(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(FetchError, match=r"cannot connect.*gave up after 3 attempts"):
        fetch(tmp_path, f"http://127.0.0.1:{port}/x.zip")


def test_fetch_timeout(tmp_path: Path) -> None:
    with socket.socket() as s:  # accepts (backlog) but never answers
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        url = f"http://127.0.0.1:{s.getsockname()[1]}/x.zip"
        with pytest.raises(FetchError, match="timed out"):
            fetch(tmp_path, url, limits=FetchLimits(attempts=2, backoff_s=0.01, timeout_s=0.2))


ONLY_HTTP = "only http:// and https:// URLs are fetched (put local data in with `banzai add`)"


def test_local_paths_and_other_schemes_refused_alike(tmp_path: Path) -> None:
    """Whether a local file exists changes nothing: not the error, not its text."""
    real = arctic_zip(tmp_path / "cmu_us_awb_arctic.zip")
    urls = [str(real), real.as_uri(), "/nonexistent/cmu_us_awb_arctic.zip",
            "file:///nonexistent/x.zip", "C:\\corpus\\x.zip", "ftp://127.0.0.1/x.zip",
            "http:///x.zip", "x.zip"]
    for url in urls:
        with pytest.raises(FetchError) as e:
            fetch(tmp_path, url)
        assert str(e.value) == f"{url}: {ONLY_HTTP}"
    d = catalog()["FETCH_FESTVOX"]
    for url in urls:  # refused at submission too, the argument named
        with pytest.raises(ArgError) as a:
            d.bind(["http://127.0.0.1:8765/a.zip", url], None, "tasks[0]")
        assert a.value.field == "tasks[0].urls[1]" and ONLY_HTTP in a.value.message


def test_loopback_refused_without_fetch_allow(tmp_path: Path, base: str) -> None:
    arctic_zip(tmp_path / "a.zip")
    with pytest.raises(FetchError) as e:
        fetch(tmp_path, base + "a.zip", allow=())
    assert str(e.value) == (f"{base}a.zip: 127.0.0.1 (loopback): refused by the fetch address "
                            "policy (a peer allows such addresses with --fetch-allow CIDR)")
    out, _ = fetch(tmp_path, base + "a.zip", allow=("127.0.0.0/8",))
    assert (out / "awb" / "prompts.json").exists()


def zip_with(path: Path, *members: tuple[zipfile.ZipInfo | str, bytes],
             compression: int = zipfile.ZIP_STORED) -> Path:
    with zipfile.ZipFile(path, "w", compression) as zf:
        for name, data in members:
            zf.writestr(name, data)
    return path


def symlink_info(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.create_system = 3
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info


WAV = wav_bytes()
UNSAFE = [
    ("absolute", [("/etc/passwd.wav", WAV)], "unsafe member path"),
    ("dotdot", [("cmu_us_awb_arctic/wav/../../evil.wav", WAV)], "unsafe member path"),
    ("backslash", [("..\\evil.wav", WAV)], "unsafe member path"),
    ("drive", [("C:/evil.wav", WAV)], "unsafe member path"),
    ("symlink", [(symlink_info("cmu_us_awb_arctic/wav/link.wav"), b"/etc/passwd")],
     "symbolic link"),
    ("no wavs", [("cmu_us_awb_arctic/etc/txt.done.data", b'( a "b" )\n')], "no WAV files"),
]


def extract(tmp_path: Path, archive: Path, limits: FetchLimits = FAST) -> list[str]:
    """The unpacking half of FETCH_FESTVOX, on a zip already downloaded."""
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    return extract_festvox(archive, out, limits, archive.name, lambda f: None)


@pytest.mark.parametrize(("name", "members", "msg"), UNSAFE, ids=[u[0] for u in UNSAFE])
def test_unsafe_archives_rejected(tmp_path: Path, name: str, members: list[Any],
                                  msg: str) -> None:
    z = zip_with(tmp_path / "x.zip", *members)
    with pytest.raises(FetchError, match=msg):
        extract(tmp_path, z)
    assert not any((tmp_path / "out").iterdir())


def test_unsafe_archive_rejected_when_fetched(tmp_path: Path, base: str) -> None:
    zip_with(tmp_path / "x.zip", *UNSAFE[1][1])
    with pytest.raises(FetchError, match="unsafe member path"):
        fetch(tmp_path, base + "x.zip")
    assert not any((tmp_path / "out").iterdir())


def test_zip_bomb_ratio_rejected(tmp_path: Path) -> None:
    z = zip_with(tmp_path / "bomb.zip", ("cmu_us_awb_arctic/wav/a.wav", b"\0" * (8 << 20)),
                 compression=zipfile.ZIP_DEFLATED)
    with pytest.raises(FetchError, match=r"member 'cmu_us_awb_arctic/wav/a\.wav' has a "
                                         r"compression ratio over 100"):
        extract(tmp_path, z)


def test_ratio_checked_on_small_members(tmp_path: Path) -> None:
    """A member below the old 1 MiB floor, and many small members each within the slack."""
    z = zip_with(tmp_path / "one.zip", ("cmu_us_awb_arctic/wav/a.wav", b"\0" * (512 << 10)),
                 compression=zipfile.ZIP_DEFLATED)
    with pytest.raises(FetchError, match="has a compression ratio over 100"):
        extract(tmp_path, z)
    many = [(f"cmu_us_awb_arctic/wav/a{i:04d}.wav", b"\0" * (32 << 10)) for i in range(400)]
    z = zip_with(tmp_path / "many.zip", *many, compression=zipfile.ZIP_DEFLATED)
    with zipfile.ZipFile(z) as zf:  # each member alone passes
        assert all(i.file_size <= 100 * i.compress_size + FAST.ratio_slack_bytes
                   for i in zf.infolist())
    with pytest.raises(FetchError, match="the members together have a compression ratio over "
                                         "100 \\(zip bomb\\?\\)"):
        extract(tmp_path, z)
    assert not any((tmp_path / "out").iterdir())


def test_compressed_corpus_passes_the_ratio(tmp_path: Path) -> None:
    """Deflated WAVs, prompts and small text files: what a real festvox zip holds."""
    rng = random.Random(7)
    noise = bytes(rng.getrandbits(8) for _ in range(20_000))
    members = [(f"cmu_us_awb_arctic/wav/arctic_a{i:04d}.wav", wav_bytes(10) + noise)
               for i in range(20)]
    members += [("cmu_us_awb_arctic/etc/txt.done.data", b'( arctic_a0001 "x" )\n' * 50),
                ("cmu_us_awb_arctic/COPYING", b" " * 4000), ("cmu_us_awb_arctic/empty", b"")]
    z = zip_with(tmp_path / "ok.zip", *members, compression=zipfile.ZIP_DEFLATED)
    assert extract(tmp_path, z) == ["awb"]


def test_size_and_count_limits(tmp_path: Path) -> None:
    z = arctic_zip(tmp_path / "a.zip")
    with pytest.raises(FetchError, match="expands to"):
        extract(tmp_path, z, limits=FetchLimits(max_total_bytes=1000))
    with pytest.raises(FetchError, match="members exceed"):
        extract(tmp_path, z, limits=FetchLimits(max_files=3))


def test_not_a_zip_and_corrupt(tmp_path: Path, base: str) -> None:
    (tmp_path / "x.zip").write_bytes(b"<html>not found</html>")
    with pytest.raises(FetchError, match="not a zip archive"):
        fetch(tmp_path, base + "x.zip")
    good = arctic_zip(tmp_path / "g.zip").read_bytes()
    i = good.index(b"RIFF")  # corrupt a stored WAV: the CRC check fails while extracting
    (tmp_path / "c.zip").write_bytes(good[:i] + b"XXXX" + good[i + 4:])
    with pytest.raises(FetchError, match="corrupt zip"):
        extract(tmp_path, tmp_path / "c.zip")


@pytest.mark.parametrize(("root", "want"), [
    ("cmu_us_awb_arctic", "awb"), ("cmu_us_ksp_arctic", "ksp"), ("mydata", "mydata"),
    ("", "fallback")])
def test_speaker_of(root: str, want: str) -> None:
    assert speaker_of(root, "fallback") == want


def test_parse_prompts() -> None:
    text = ('( arctic_a0001 "Author of the danger trail, Philip Steels, etc." )\n'
            '(arctic_b0002 "He said \\"no\\"." )\n' "garbage\n")
    assert parse_prompts(text) == {
        "arctic_a0001": "Author of the danger trail, Philip Steels, etc.",
        "arctic_b0002": 'He said "no".'}


def test_fetch_registration() -> None:
    d = catalog()["FETCH_FESTVOX"]
    assert not d.needs_input and not d.per_item
    url = "http://127.0.0.1:8765/cmu_us_awb_arctic-0.90-release.zip"
    assert d.bind([url], None, "tasks[0]") == {"urls": [url]}


def test_urls_per_task_bounded() -> None:
    d = catalog()["FETCH_FESTVOX"]
    urls = [f"http://corpus.example/{i}.zip" for i in range(audio.MAX_URLS + 1)]
    assert d.bind(urls[:-1], None, "tasks[0]") == {"urls": urls[:-1]}
    with pytest.raises(ArgError) as e:
        d.bind(urls, None, "tasks[0]")
    assert e.value.field == "tasks[0].urls"
    assert f"{audio.MAX_URLS + 1} URLs, over the limit of {audio.MAX_URLS}" in e.value.message
