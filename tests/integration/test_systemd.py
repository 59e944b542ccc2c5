"""contrib/banzai-peer.service: `systemd-analyze verify` accepts it, and (systemd is not PID 1
here) a real peer runs as an unprivileged user in what the unit gives it: its home read-only
but for its data dir, /tmp and /var/tmp read-only too, so that every write (numba's cache,
matplotlib, XDG caches, temp files) must go under the data dir (issue 10, item 6)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from scripts.scriptlib import remember_peer
from tests.conftest import BIN, ROOT
from tests.helpers import local_user

pytestmark = pytest.mark.integration
UNIT = ROOT / "contrib" / "banzai-peer.service"
HARDENING = ("NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=read-only",
             "ReadWritePaths=/var/lib/banzai", "PrivateTmp=yes", "PrivateDevices=yes",
             "CapabilityBoundingSet=", "RestrictAddressFamilies=", "SystemCallFilter=",
             "UMask=0077", "User=banzai")


def _unit_here(tmp: Path) -> Path:
    """The unit with ExecStart pointing at this checkout's banzai-peer (verify checks it)."""
    f = tmp / "banzai-peer.service"
    f.write_text(UNIT.read_text().replace("/opt/banzai/.venv/bin/banzai-peer",
                                          str(BIN / "banzai-peer")))
    return f


def test_unit_is_hardened_and_verifies(tmp_path: Path) -> None:
    text = UNIT.read_text()
    lines = {ln.strip() for ln in text.splitlines()}
    for opt in HARDENING:
        assert any(ln.startswith(opt) for ln in lines), opt
    assert "CapabilityBoundingSet=" in lines  # empty: no capability at all
    assert not any(ln.startswith("MemoryDenyWriteExecute=yes") for ln in lines)  # numba JITs
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze missing (scripts/setup.sh --test installs systemd)")
    unit = _unit_here(tmp_path)
    r = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr.decode()
    assert "banzai-peer.service" not in r.stderr.decode(), r.stderr.decode()
    r = subprocess.run(["systemd-analyze", "security", "--offline=yes", str(unit)],
                       capture_output=True, timeout=120)
    m = re.search(rb"Overall exposure level for banzai-peer.service: ([0-9.]+)", r.stdout)
    assert m is not None, r.stdout[-500:] + r.stderr
    assert float(m.group(1)) <= 2.0, r.stdout.decode()  # systemd rates <= 2 as "OK"


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


def _post(url: str, body: Any) -> Any:
    req = urllib.request.Request(url, data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


NUMBA_IMPORT = """
import os, sys
from pathlib import Path
if sys.argv[1:]:
    from peer.main import private_dirs
    private_dirs(Path(sys.argv[1]))
import librosa.util.utils  # numba: cache=True ufuncs compiled (and cached) at import
print(os.environ.get("NUMBA_CACHE_DIR", "-"))
"""


@pytest.mark.timeout(600)
def test_peer_runs_unprivileged_with_only_its_data_dir_writable(tmp_path: Path) -> None:
    for tool in ("unshare", "mount", "setpriv"):
        if shutil.which(tool) is None:
            pytest.skip(f"needs {tool}")
    with local_user("bzs") as user:
        data = user.home / "banzai"
        data.mkdir(mode=0o700)
        os.chown(data, user.uid, user.gid)
        before = set(user.home.rglob("*"))
        env = ["env", "-i", f"PATH={os.environ['PATH']}", f"HOME={user.home}",
               f"USER={user.name}", f"PYTHONPATH={ROOT}", "PYTHONDONTWRITEBYTECODE=1",
               "BANZAI_WARM_WORKERS=0",  # librosa's warm-up compiles for minutes here
               f"BANZAI_RUNTIME_DIR={data / 'run'}"]  # the unit's RuntimeDirectory=
        # a mount namespace of its own: home read-only but the data dir, no writable /tmp
        setup = [f"mount --bind {user.home} {user.home}", f"mount --bind {data} {data}",
                 f"mount -o remount,bind,ro {user.home}",
                 "mount -t tmpfs -o ro,size=64k tmpfs /tmp",
                 "mount -t tmpfs -o ro,size=64k tmpfs /var/tmp"]
        scratch = tmp_path / "scratch"
        scratch.mkdir()

        def sandbox(*cmd: str) -> list[str]:
            return user.sandbox(*env, *cmd, setup=setup, scratch=scratch)

        # numba in that sandbox: its cache has nowhere to go, unless under the data dir
        # (NUMBA_OPT=0: where the cache goes is checked, not the code compiled into it;
        # LLVM's optimisations would double the compile time)
        numba = ("NUMBA_OPT=0", str(BIN / "python"), "-c", NUMBA_IMPORT)
        r = subprocess.run(sandbox(*numba), capture_output=True, timeout=300)
        assert r.returncode != 0 and b"cannot cache" in r.stderr, r.stderr[-2000:]
        r = subprocess.run(sandbox(*numba, str(data)), capture_output=True, timeout=300)
        assert r.returncode == 0, r.stderr[-2000:]
        assert r.stdout.decode().strip() == str(data / "cache" / "numba")
        assert any((data / "cache" / "numba").rglob("*.nbi"))

        log = tmp_path / "peer.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(sandbox(str(BIN / "banzai-peer"), "--data-dir", str(data),
                                            "--http", "127.0.0.1:0", "--no-mdns", "--slots",
                                            "1", "--mesh-name", f"sandbox-{user.name}"),
                                    stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, cwd="/")
        try:
            url = _wait_url(proc, log)
            remember_peer(url, data)  # urllib sends the peer's token from now on
            deadline = time.monotonic() + 120
            job = _post(url + "/api/jobs", [{"call": "ECHO", "args": ["sandboxed"]}])["job"]
            while (v := _get(f"{url}/api/jobs/{job}"))["state"] not in ("done", "failed"):
                assert time.monotonic() < deadline and proc.poll() is None, log.read_text()
                time.sleep(0.1)
            assert v["state"] == "done", v
            cid = next(iter(v["outputs"].values()))
            with urllib.request.urlopen(f"{url}/ipfs/{cid}", timeout=10) as resp:
                assert resp.read() == b"sandboxed"
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        text = log.read_text()
        assert "Read-only file system" not in text and "Traceback" not in text, text
        assert (data / "mesh.secret").stat().st_mode & 0o777 == 0o600
        outside = {p for p in user.home.rglob("*") if data not in (p, *p.parents)}
        assert outside <= before, outside - before


def _wait_url(proc: subprocess.Popen[bytes], log: Path) -> str:
    deadline = time.monotonic() + 180
    while (m := re.search(r"^web UI: (http://\S+?)/?$", log.read_text(), re.M)) is None:
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
        time.sleep(0.1)
    return m.group(1)
