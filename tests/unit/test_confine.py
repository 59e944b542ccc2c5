"""peer.jobs.confine: the bwrap command line a confined shell task runs under, and the probe
(a real bwrap when installed; scripts/setup.sh installs bubblewrap)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from peer.jobs import confine


def test_wrap_hides_before_it_binds_the_run_dir_back() -> None:
    s = {"bwrap": "/usr/bin/bwrap", "hide_dirs": ["/d"], "hide_files": ["/etc/s"]}
    argv = confine.wrap(["/bin/sh", "-c", "x"], s, Path("/d/work/r1"))
    assert argv[0] == "/usr/bin/bwrap" and argv[-4:] == ["--", "/bin/sh", "-c", "x"]
    assert argv.index("--tmpfs") < argv.index("--bind")  # (bwrap mounts in order)
    assert argv[argv.index("--tmpfs") + 1] == "/d"
    assert argv[argv.index("--bind") + 1:argv.index("--bind") + 3] == ["/d/work/r1"] * 2
    assert argv[argv.index("--ro-bind"):][:3] == ["--ro-bind", "/dev/null", "/etc/s"]
    assert "--unshare-pid" in argv and argv[argv.index("--proc") + 1] == "/proc"


def test_no_bwrap_means_no_box_and_says_why(tmp_path: Path) -> None:
    box, why = confine.box([tmp_path], [], bwrap=str(tmp_path / "no-such-bwrap"))
    assert box is None and "no-such-bwrap" in why


@pytest.mark.skipif(shutil.which("bwrap") is None,
                    reason="bwrap is not installed (scripts/setup.sh installs bubblewrap)")
def test_a_confined_command_sees_its_run_dir_and_none_of_the_rest(tmp_path: Path) -> None:
    data, elsewhere = tmp_path / "data", tmp_path / "etc"
    run = data / "work" / "r1"
    run.mkdir(parents=True)
    elsewhere.mkdir()
    (data / "mesh.secret").write_text("s")
    (elsewhere / "secrets").write_text("API=v")
    inside = data / "identity.key"  # (a file in a hidden dir: hidden with it, not bound)
    inside.write_text("k")
    box, why = confine.box([data, tmp_path / "missing"], [elsewhere / "secrets", inside])
    if box is None:
        pytest.skip(f"bwrap cannot confine here: {why}")
    assert box["hide_dirs"] == [str(data.resolve())]
    assert box["hide_files"] == [str((elsewhere / "secrets").resolve())]
    r = subprocess.run(confine.wrap(
        ["/bin/sh", "-c", f"ls -A {data}; ls {data}/work; cat {elsewhere}/secrets;"
                          f" echo hi > {run}/made"], box, run),
        capture_output=True, text=True, timeout=30, check=False)
    assert r.stdout.split() == ["work", "r1"], r
    assert "API=v" not in r.stdout and f"{elsewhere}/secrets" in r.stderr  # (cat failed)
    assert (run / "made").read_text() == "hi\n"  # the run dir is the real one
    assert (data / "mesh.secret").read_text() == "s"  # nothing outside was touched
