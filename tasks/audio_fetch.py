"""Download festvox (CMU ARCTIC) zips with bounded retries and unpack them safely.

Synchronous: runs inside a worker process. Downloads go through the fetch address policy
(tasks/fetch_policy.py). Every failure raises FetchError with a message saying what went
wrong (refused by the policy, unreachable, HTTP status, timeout, truncated, not a zip...).
"""

from __future__ import annotations

import http.client
import json
import re
import shutil
import socket
import ssl
import stat
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from peer.errors import BanzaiError
from tasks.fetch_policy import (
    MAX_REDIRECTS,
    AddressPolicy,
    HttpGet,
    PolicyError,
    Resolver,
    system_resolver,
)

CHUNK_BYTES = 1 << 16
SPEAKER_DIR = re.compile(r"^cmu_[a-z]+_([A-Za-z0-9]+)_arctic$")
PROMPT_LINE = re.compile(r'^\(\s*(\S+)\s+"(.*)"\s*\)\s*$')
Progress = Callable[[float], None]


class FetchError(BanzaiError):
    """A download or archive could not be fetched or is unsafe/unusable."""

    status = 502


@dataclass(frozen=True)
class FetchLimits:
    """Bounds on one fetch: retries, timeouts and what an archive may expand to."""

    attempts: int = 3
    backoff_s: float = 0.5  # sleep backoff_s * 2**k before retry k+1
    timeout_s: float = 60.0  # per socket operation
    max_download_bytes: int = 4 << 30
    max_total_bytes: int = 4 << 30  # uncompressed, whole archive
    max_files: int = 100_000
    max_ratio: float = 100.0  # uncompressed/compressed, of each member and the archive
    ratio_slack_bytes: int = 64 << 10  # uncompressed bytes a ratio check lets pass on top
    max_redirects: int = MAX_REDIRECTS


class _Transient(Exception):
    """A failure worth retrying (connection reset/refused, 5xx, timeout, truncation)."""


def download(url: str, dest: Path, limits: FetchLimits, progress: Progress,
             policy: AddressPolicy, resolver: Resolver = system_resolver) -> Path:
    """Download `url` (http or https, under the address `policy`) into `dest`."""
    get = HttpGet(policy, timeout_s=limits.timeout_s, max_redirects=limits.max_redirects,
                  resolver=resolver)
    last = ""
    for attempt in range(limits.attempts):
        if attempt:
            time.sleep(limits.backoff_s * 2 ** (attempt - 1))
        try:
            _http_get(get, url, dest, limits, progress)
            return dest
        except _Transient as e:
            last = str(e)
    raise FetchError(f"{url}: {last} (gave up after {limits.attempts} attempts)")


def _http_get(get: HttpGet, url: str, dest: Path, limits: FetchLimits,
              progress: Progress) -> None:
    try:
        with get.open(url) as resp:
            if resp.status >= 500 or resp.status == 429:
                raise _Transient(f"HTTP {resp.status} {resp.reason}")
            if resp.status != 200:
                raise FetchError(f"{url}: HTTP {resp.status} {resp.reason}")
            _stream(resp, dest, limits, progress)
    except PolicyError as e:
        raise FetchError(f"{url}: {e.message}") from None
    except ssl.SSLCertVerificationError as e:
        raise FetchError(f"{url}: TLS certificate not trusted: {e.verify_message}") from e
    except socket.gaierror as e:
        raise FetchError(f"{url}: host unreachable: {e.strerror or e}") from e
    except TimeoutError as e:
        raise _Transient(f"timed out after {limits.timeout_s:g} s") from e
    except ConnectionError as e:
        raise _Transient(f"cannot connect: {e.strerror or e}") from e
    except (OSError, http.client.HTTPException) as e:
        raise _Transient(f"connection failed: {type(e).__name__} {e}") from e


def _stream(resp: http.client.HTTPResponse, dest: Path, limits: FetchLimits,
            progress: Progress) -> None:
    length_hdr = resp.headers.get("Content-Length")
    expected = int(length_hdr) if length_hdr and length_hdr.isdigit() else None
    if expected is not None and expected > limits.max_download_bytes:
        raise FetchError(f"download of {expected} bytes exceeds {limits.max_download_bytes}")
    got = 0
    with open(dest, "wb") as f:
        try:
            while chunk := resp.read(CHUNK_BYTES):
                got += len(chunk)
                if got > limits.max_download_bytes:
                    raise FetchError(f"download exceeds {limits.max_download_bytes} bytes")
                f.write(chunk)
                if expected:
                    progress(got / expected)
        except http.client.IncompleteRead as e:
            got += len(e.partial)
            raise _Transient(f"truncated download: got {got} of {expected} bytes") from e
    if expected is not None and got != expected:
        raise _Transient(f"truncated download: got {got} of {expected} bytes")


def check_archive(zf: zipfile.ZipFile, limits: FetchLimits, name: str) -> list[zipfile.ZipInfo]:
    """Return the members of `zf` or raise FetchError if any is unsafe or the total too big."""
    infos = zf.infolist()
    if len(infos) > limits.max_files:
        raise FetchError(f"{name}: {len(infos)} members exceed the limit of {limits.max_files}")
    total = packed = 0
    for info in infos:
        _check_member(info, limits, name)
        total += info.file_size
        packed += info.compress_size
    if total > limits.max_total_bytes:
        raise FetchError(f"{name}: expands to {total} bytes, over {limits.max_total_bytes}")
    if _over_ratio(total, packed, limits):  # many small members, each within its slack
        raise FetchError(f"{name}: the members together have a compression ratio over "
                         f"{limits.max_ratio:g} (zip bomb?)")
    return infos


def _over_ratio(size: int, packed: int, limits: FetchLimits) -> bool:
    """Whether `size` bytes from `packed` exceed the ratio, beyond a slack for small files
    (a short text or silence compresses far beyond any audio; it is no bomb)."""
    return size > limits.max_ratio * packed + limits.ratio_slack_bytes


def _check_member(info: zipfile.ZipInfo, limits: FetchLimits, name: str) -> None:
    member = info.filename
    parts = PurePosixPath(member).parts
    if (member.startswith(("/", "\\")) or "\\" in member or ".." in parts
            or re.match(r"^[A-Za-z]:", member)):
        raise FetchError(f"{name}: unsafe member path {member!r}")
    mode = info.external_attr >> 16
    if info.create_system == 3 and stat.S_ISLNK(mode):
        raise FetchError(f"{name}: member {member!r} is a symbolic link")
    if _over_ratio(info.file_size, info.compress_size, limits):
        raise FetchError(f"{name}: member {member!r} has a compression ratio over "
                         f"{limits.max_ratio:g} (zip bomb?)")


def speaker_of(root: str, fallback: str) -> str:
    """`cmu_us_awb_arctic` -> `awb`; any other top directory keeps its name."""
    m = SPEAKER_DIR.match(root)
    return m.group(1) if m else (root or fallback)


def parse_prompts(text: str) -> dict[str, str]:
    """Parse festival `etc/txt.done.data` lines `( utt_id "text" )` into {utt_id: text}."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        m = PROMPT_LINE.match(line.strip())
        if m:
            out[m.group(1)] = m.group(2).replace('\\"', '"')
    return out


def _plan(infos: list[zipfile.ZipInfo], fallback: str
          ) -> tuple[dict[str, dict[str, zipfile.ZipInfo]], dict[str, zipfile.ZipInfo]]:
    """Map speaker -> {wav name: member} (preferring `<root>/wav/`) and speaker -> prompts."""
    wavs: dict[str, dict[str, zipfile.ZipInfo]] = {}
    prompts: dict[str, zipfile.ZipInfo] = {}
    all_wavs = [i for i in infos if not i.is_dir() and i.filename.lower().endswith(".wav")]
    preferred = [i for i in all_wavs if PurePosixPath(i.filename).parent.name == "wav"]
    for info in preferred or all_wavs:
        p = PurePosixPath(info.filename)
        spk = speaker_of(p.parts[0] if len(p.parts) > 1 else "", fallback)
        if p.name in wavs.setdefault(spk, {}):
            raise FetchError(f"{fallback}: two members named {p.name} for speaker {spk}")
        wavs[spk][p.name] = info
    for info in infos:
        p = PurePosixPath(info.filename)
        if p.name == "txt.done.data":
            prompts[speaker_of(p.parts[0] if len(p.parts) > 1 else "", fallback)] = info
    return wavs, prompts


def extract_festvox(archive: Path, out: Path, limits: FetchLimits, name: str,
                    progress: Progress) -> list[str]:
    """Unpack the WAVs of a festvox zip into `out/<speaker>/`; return the speakers."""
    if not zipfile.is_zipfile(archive):
        raise FetchError(f"{name}: not a zip archive")
    fallback = re.sub(r"(-[0-9.]+-release)?\.zip$", "", Path(name).name) or "speaker"
    try:
        with zipfile.ZipFile(archive) as zf:
            wavs, prompts = _plan(check_archive(zf, limits, name), fallback)
            if not wavs:
                raise FetchError(f"{name}: the zip holds no WAV files")
            total = sum(len(v) for v in wavs.values())
            done = 0
            for spk in sorted(wavs):
                d = out / spk
                if d.exists():
                    raise FetchError(f"{name}: speaker {spk!r} already fetched from another URL")
                d.mkdir(parents=True)
                for fname, info in sorted(wavs[spk].items()):
                    with zf.open(info) as src, open(d / fname, "wb") as dst:
                        shutil.copyfileobj(src, dst, CHUNK_BYTES)
                    done += 1
                    progress(done / total)
                text = zf.read(prompts[spk]).decode("utf-8", "replace") if spk in prompts else ""
                utts = {Path(f).stem for f in wavs[spk]}
                table = {k: v for k, v in parse_prompts(text).items() if k in utts}
                (d / "prompts.json").write_text(
                    json.dumps(table, indent=1, sort_keys=True, ensure_ascii=False) + "\n")
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as e:
        raise FetchError(f"{name}: corrupt zip archive: {e}") from e
    return sorted(wavs)
