"""Shell tasks confined with bubblewrap (`bwrap`): a command submitted by any user of any peer
must not read what makes this peer a member (review r1 of session 48, F1).

A shell task runs as the peer's own account, so without confinement it reads the data dir
(`mesh.secret`, `identity.key`, `http-token`, the event log), the `--secret-file`, the
`--task-secrets-file`, the Kubo repo's keys and, through /proc, the peer's command line and
environment. Confined, the command sees the machine's file system as it is (its tools,
libraries, /tmp, the network) except: each hidden directory is an empty tmpfs, each hidden
file cannot be opened, /proc is a new PID namespace's (the command sees its own processes
only), and the run's own work dir is bound back where it was (its input, output and cwd).

bubblewrap is what Flatpak runs its apps in: unprivileged (user namespaces), small, and
maintained; `unshare(1)` alone would need a shell prelude to re-bind the work dir under a
tmpfs that hides it. Pure argv building plus one blocking probe at the peer's start.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["box", "wrap"]

PROBE_TIMEOUT_S = 10.0


def box(hide_dirs: Iterable[Path], hide_files: Iterable[Path], bwrap: str | None = None,
        ) -> tuple[dict[str, Any] | None, str]:
    """Blocking, once at a peer's start with --allow-shell: (the settings `wrap` takes, "")
    if bwrap confines a command here, else (None, why not). Paths that do not exist are
    left out (nothing to hide); a file inside a hidden directory is hidden with it."""
    exe = bwrap or shutil.which("bwrap")
    if exe is None:
        return None, "bwrap is not installed (Debian: apt-get install bubblewrap)"
    dirs = sorted({str(p.resolve()) for p in hide_dirs if p.is_dir()})
    files = sorted({str(p.resolve()) for p in hide_files if p.is_file()
                    and not any(Path(str(p.resolve())).is_relative_to(d) for d in dirs)})
    settings = {"bwrap": exe, "hide_dirs": dirs, "hide_files": files}
    try:
        r = subprocess.run(wrap(["/bin/true"], settings, Path("/")), capture_output=True,
                           timeout=PROBE_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        return None, f"{exe} cannot run: {e}"
    if r.returncode != 0:
        why = r.stderr.decode("utf-8", "replace").strip()[-300:]
        return None, f"{exe} cannot confine a command here: {why or r.returncode}"
    return settings, ""


def wrap(argv: Sequence[str], settings: Mapping[str, Any], workdir: Path) -> list[str]:
    """`argv` run under bwrap: the hidden paths hidden, a new PID namespace and /proc,
    `workdir` bound back read-write (after the hiding, so it shows through a hidden dir)."""
    out = [str(settings["bwrap"]), "--dev-bind", "/", "/", "--unshare-pid", "--proc", "/proc",
           "--die-with-parent"]
    for d in settings.get("hide_dirs", ()):
        out += ["--tmpfs", d]
    for f in settings.get("hide_files", ()):
        out += ["--ro-bind", "/dev/null", f]
    if workdir != Path("/"):
        out += ["--bind", str(workdir), str(workdir)]
    return [*out, "--", *argv]
